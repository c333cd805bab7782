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
