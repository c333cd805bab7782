//! `stratus serve`.

use std::net::SocketAddr;

use anyhow::Context;
use stratus_app::App;
use tracing_subscriber::EnvFilter;

use crate::ServerOpts;

pub async fn run(opts: ServerOpts, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("STRATUS_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let mut cfg = super::load_config(&opts)?;
    if let Some(l) = listen {
        cfg.listen = l;
    }
    let listen = cfg.listen;
    // Installed first: a SIGTERM during start-up stops the server once it is consistent.
    let shutdown = stratus_server::shutdown_signal();
    tracing::info!(data_dir = %cfg.data_dir.display(), "opening data directory");
    let app = App::open(cfg).await.context("starting services")?;
    // Held while serving: `stratus admin move-store` never runs beside a live server.
    let _lock = super::move_store::lock_data_dir(&app.config.data_dir, false)?;
    app.recover()
        .await
        .context("recovering from an interrupted run")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    stratus_server::serve(app, listener, shutdown)
        .await
        .context("serving")?;
    Ok(())
}
