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
    /// Credit an account (operators): a ledger entry with your reason.
    Credit {
        /// Username, wallet address or account id.
        #[arg(long)]
        account: String,
        /// Amount in the smallest unit of the asset (decimal).
        #[arg(long)]
        amount: String,
        #[arg(long)]
        reason: String,
        /// External reference; the same reference is applied at most once (safe to retry).
        #[arg(long)]
        reference: Option<String>,
    },
    /// Ledger tools.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Chain watcher tools.
    Chain {
        #[command(subcommand)]
        command: ChainCommand,
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
    /// Move this embedded deployment (SQLite and local blobs in the data dir) to PostgreSQL and
    /// the storage targets the configuration names (e.g. S3 through
    /// STRATUS_STORAGE__TARGETS__MEFS__BACKEND=s3 …): every table and every blob, verified.
    /// The server must be stopped; the target database must be empty.
    MoveStore {
        /// The PostgreSQL database to move to (postgres://user:password@host/db).
        #[arg(long)]
        to_database: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum LedgerCommand {
    /// Re-derive every balance from the entries; exits non-zero on a mismatch.
    Verify,
}

#[derive(Subcommand, Debug)]
pub enum ChainCommand {
    /// Scan again from a block (deposits already recorded are never credited twice).
    Rescan {
        #[arg(long)]
        from: u64,
    },
    /// Show the watcher's cursor.
    Status,
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
    if let AdminCommand::MoveStore { to_database } = &command {
        return super::move_store::run(cfg, to_database).await;
    }
    // Every other tool works on the configured store (`database.url` or the embedded file):
    // `App::open` opens it through `stratus_app::open_database`.
    let app = App::open(cfg).await.context("opening data directory")?;
    let result = match command {
        AdminCommand::User { command } => user(&app, command).await,
        AdminCommand::Fsck { repair, json } => fsck(&app, repair, json).await,
        AdminCommand::Credit {
            account,
            amount,
            reason,
            reference,
        } => credit(&app, &account, &amount, &reason, reference).await,
        AdminCommand::Ledger {
            command: LedgerCommand::Verify,
        } => verify(&app).await,
        AdminCommand::Chain { command } => chain(&app, command).await,
        AdminCommand::MoveStore { .. } => unreachable!("handled above"),
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

async fn credit(
    app: &App,
    account: &str,
    amount: &str,
    reason: &str,
    reference: Option<String>,
) -> anyhow::Result<()> {
    let a = app
        .auth
        .accounts()
        .find_any(account)
        .await?
        .with_context(|| format!("no account {account}"))?;
    let amount: stratus_config::Amount = amount
        .parse()
        .map_err(|e| anyhow::anyhow!("--amount: {e}"))?;
    if reason.trim().is_empty() {
        bail!("--reason must not be empty");
    }
    let reference = format!(
        "admin:{}",
        reference.unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
    );
    let posted = app
        .billing
        .ledger()
        .post(stratus_model::billing::Posting {
            account_id: &a.id,
            kind: stratus_model::billing::EntryKind::Credit,
            amount,
            reason: "admin",
            reference: &reference,
            memo: reason,
        })
        .await?;
    match posted {
        stratus_model::billing::Posted::New(e) => println!(
            "credited {} to {}; balance {} (entry {}, reference {})",
            e.amount, a.id, e.balance_after, e.id, e.reference
        ),
        stratus_model::billing::Posted::Duplicate(e) => println!(
            "reference {} was applied before (entry {}); nothing changed",
            e.reference, e.id
        ),
    }
    Ok(())
}

async fn verify(app: &App) -> anyhow::Result<()> {
    let v = app.billing.ledger().verify().await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    if !v.mismatches.is_empty() {
        bail!("{} account(s) do not balance", v.mismatches.len());
    }
    Ok(())
}

async fn chain(app: &App, command: ChainCommand) -> anyhow::Result<()> {
    match command {
        ChainCommand::Rescan { from } => {
            app.deposits.rescan_from(from).await?;
            println!("the watcher will scan again from block {from}");
        }
        ChainCommand::Status => match app.deposits.cursor_block().await? {
            Some(b) => println!("processed up to block {b}"),
            None => println!("nothing processed yet"),
        },
    }
    Ok(())
}
