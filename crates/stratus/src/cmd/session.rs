//! `stratus login`, `whoami`, `logout`.

use std::path::PathBuf;

use anyhow::Context;
use stratus_client::{read_wallet_key, Authed, Client};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("how").required(true).args(["username", "wallet_key_file"])))]
pub struct LoginArgs {
    /// Server URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "STRATUS_SERVER")]
    server: String,
    /// Log in with this username and a password (prompted, or from stdin with --password-stdin).
    #[arg(long)]
    username: Option<String>,
    /// Read the password from the first line of stdin.
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// Log in with the Ethereum wallet whose hex private key is in this file.
    #[arg(long)]
    wallet_key_file: Option<PathBuf>,
    /// Domain the wallet signs over (the server's `auth.domain`).
    #[arg(long, default_value = "memo.io")]
    domain: String,
}

pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let session = if let Some(username) = &args.username {
        let pw = if args.password_stdin {
            super::read_stdin_line()?
        } else {
            rpassword::prompt_password("password: ").context("reading password")?
        };
        client.login_password(username, &pw).await?
    } else {
        let path = args.wallet_key_file.as_ref().expect("clap requires one");
        let key = read_wallet_key(path)?;
        client.login_wallet(&key, &args.domain).await?
    };
    let saved = session.save()?;
    match &session.address {
        Some(a) => println!("logged in to {} as wallet {a}", session.server),
        None => println!(
            "logged in to {} as {}",
            session.server,
            args.username.as_deref().unwrap_or("")
        ),
    }
    eprintln!("session saved in {}", saved.display());
    Ok(())
}

pub async fn whoami() -> anyhow::Result<()> {
    let mut a = Authed::load()?;
    let me = a.whoami().await?;
    println!("server:   {}", a.session.server);
    println!("account:  {}", me["id"].as_str().unwrap_or(""));
    let username = me["username"].as_str().unwrap_or("");
    if !username.is_empty() {
        println!("username: {username}");
    }
    let wallet = me["walletAddress"].as_str().unwrap_or("");
    if !wallet.is_empty() {
        println!("wallet:   {wallet}");
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct LogoutArgs {
    /// Revoke every token of the account (every session, on every device), not only this one.
    #[arg(long)]
    all: bool,
}

pub async fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let mut a = Authed::load()?;
    a.logout(args.all).await?;
    if args.all {
        println!("revoked every token of the account on {}", a.session.server);
    } else {
        println!("logged out of {}", a.session.server);
    }
    Ok(())
}
