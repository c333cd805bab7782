//! `stratus admin …`: operator tools working directly on the data directory.

use anyhow::{bail, Context};
use clap::Subcommand;
use stratus_app::App;

use crate::ServerOpts;

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Re-hash every stored blob against the metadata and report what does not match; exits
    /// non-zero when something is wrong.
    Fsck {
        /// Quarantine mismatching blobs (moved aside, no longer served) and unknown files.
        #[arg(long)]
        repair: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a password account.
    Add {
        #[arg(long)]
        username: String,
        /// Read the password from the first line of stdin (otherwise prompt).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password (revokes every earlier token of the account).
    Passwd {
        /// Username, wallet address or account id.
        #[arg(long)]
        account: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Show an account.
    Show {
        /// Username, wallet address or account id.
        account: String,
    },
}

fn password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        return super::read_stdin_line();
    }
    let a = rpassword::prompt_password("password: ").context("reading password")?;
    let b = rpassword::prompt_password("again: ").context("reading password")?;
    if a != b {
        bail!("the passwords differ");
    }
    Ok(a)
}

pub async fn run(opts: ServerOpts, command: AdminCommand) -> anyhow::Result<()> {
    let cfg = super::load_config(&opts)?;
    let app = App::open(cfg).await.context("opening data directory")?;
    let result = match command {
        AdminCommand::User { command } => user(&app, command).await,
        AdminCommand::Fsck { repair, json } => fsck(&app, repair, json).await,
    };
    app.close().await;
    result
}

async fn user(app: &App, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            username,
            password_stdin,
        } => {
            let pw = password(password_stdin)?;
            let a = app.auth.create_account(&username, &pw).await?;
            println!("created account {} ({})", a.id, username);
        }
        UserCommand::Passwd {
            account,
            password_stdin,
        } => {
            let a = app
                .auth
                .accounts()
                .find_any(&account)
                .await?
                .with_context(|| format!("no account {account}"))?;
            let pw = password(password_stdin)?;
            app.auth.reset_password(&a, &pw).await?;
            println!("password of {} changed; earlier tokens revoked", a.id);
        }
        UserCommand::Show { account } => {
            let a = app
                .auth
                .accounts()
                .find_any(&account)
                .await?
                .with_context(|| format!("no account {account}"))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "id": a.id,
                    "username": a.username,
                    "wallet": a.address_text(),
                    "createdAt": a.created_at,
                }))?
            );
        }
    }
    Ok(())
}

async fn fsck(app: &App, repair: bool, json: bool) -> anyhow::Result<()> {
    let report = app.storage.fsck(repair).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "checked {} blobs ({} bytes): {} problem(s){}",
            report.checked,
            report.bytes,
            report.issues.len(),
            if repair {
                format!(", {} quarantined", report.repaired)
            } else {
                String::new()
            }
        );
        for i in &report.issues {
            println!("  {}", serde_json::to_string(i)?);
        }
    }
    if !report.issues.is_empty() && !repair {
        bail!("integrity check found {} problem(s)", report.issues.len());
    }
    Ok(())
}
