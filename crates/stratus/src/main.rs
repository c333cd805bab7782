//! The `stratus` command: the server (`serve`), operator tools (`admin`), and the client
//! commands a user runs against a server (`login`, `whoami`, …).

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// stratus: log in with a password or an Ethereum wallet, store files by content address, rent
/// sandbox machines, pay from a balance.
#[derive(Parser)]
#[command(name = "stratus", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the server's configuration comes from (shared by `serve` and `admin`).
#[derive(clap::Args, Debug, Clone)]
pub struct ServerOpts {
    /// TOML configuration file (embedded defaults otherwise).
    #[arg(long, env = "STRATUS_CONFIG")]
    config: Option<PathBuf>,
    /// Directory holding the database, blobs and secrets [default: ./stratus-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Files the server and operator tools create (database, blobs, secrets, staging) are readable
/// by their owner only, whatever the caller's umask.
fn private_files() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    ///
    /// Every configuration key can be overridden with a `STRATUS_<SECTION>__<KEY>` variable, for
    /// example `STRATUS_COMPUTE__GATEWAY_FORWARDING=userspace` (mapped ports relayed through
    /// stratus instead of the default `auto`: nftables DNAT in the kernel when stratus runs as
    /// root with `nft` and `conntrack` installed) or `STRATUS_COMPUTE__GATEWAY_BIND=127.0.0.1`.
    ///
    /// Connections are held to `[server]` limits: a request header must arrive within
    /// `header_read_timeout_secs` (15) of its first byte, an idle keep-alive connection closes
    /// after `idle_timeout_secs` (60), a body stalled for `body_read_timeout_secs` (30) fails, at
    /// most `max_connections` (from the descriptor limit) and `max_connections_per_ip` (1024)
    /// connections are open, idle and half-sent ones giving way first. `/metrics` needs
    /// `Authorization: Bearer <operator token>` (generated in `<data_dir>/secrets/operator.token`)
    /// unless served on `operator.listen` (e.g. `STRATUS_OPERATOR__LISTEN=127.0.0.1:9464`).
    /// Files in the data directory are created readable by their owner only.
    Serve {
        #[command(flatten)]
        opts: ServerOpts,
        /// Address to listen on [default: 0.0.0.0:8080].
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Operator tools that work directly on a data directory.
    Admin {
        #[command(flatten)]
        opts: ServerOpts,
        #[command(subcommand)]
        command: cmd::admin::AdminCommand,
    },
    /// Log in to a server and keep the token in the user's config directory.
    Login(cmd::session::LoginArgs),
    /// Show the account of the saved session.
    Whoami,
    /// Revoke the saved session's tokens and forget it (`--all`: every token of the account).
    Logout(cmd::session::LogoutArgs),
    /// Upload a file; prints its CID.
    Put(cmd::storage::PutArgs),
    /// Download a file by CID (the bytes are verified against the CID).
    Get(cmd::storage::GetArgs),
    /// List your stored files.
    Ls(cmd::storage::LsArgs),
    /// Delete one of your stored files.
    Rm(cmd::storage::RmArgs),
    /// Compute a file's CID offline, as the server would (no server needed).
    Cid(cmd::storage::CidArgs),
    /// Show your balance.
    Balance,
    /// List the storage packages for sale.
    Packages(cmd::billing::PackagesArgs),
    /// Buy a storage package.
    Buy(cmd::billing::BuyArgs),
    /// Show your ledger (newest first).
    Ledger(cmd::billing::LedgerArgs),
    /// Rent sandbox machines that run your docker-compose app behind public TCP ports.
    Sandbox {
        #[command(subcommand)]
        command: cmd::sandbox::SandboxCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stratus: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve { opts, listen } => {
                private_files();
                cmd::serve::run(opts, listen).await
            }
            Command::Admin { opts, command } => {
                private_files();
                cmd::admin::run(opts, command).await
            }
            Command::Login(args) => cmd::session::login(args).await,
            Command::Whoami => cmd::session::whoami().await,
            Command::Logout(args) => cmd::session::logout(args).await,
            Command::Put(a) => cmd::storage::put(a).await,
            Command::Get(a) => cmd::storage::get(a).await,
            Command::Ls(a) => cmd::storage::ls(a).await,
            Command::Rm(a) => cmd::storage::rm(a).await,
            Command::Cid(a) => cmd::storage::cid(a),
            Command::Balance => cmd::billing::balance().await,
            Command::Packages(a) => cmd::billing::packages(a).await,
            Command::Buy(a) => cmd::billing::buy(a).await,
            Command::Ledger(a) => cmd::billing::ledger(a).await,
            Command::Sandbox { command } => cmd::sandbox::run(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stratus: {e:#}");
            ExitCode::FAILURE
        }
    }
}
