//! One module per group of subcommands.

pub mod admin;
pub mod billing;
pub mod move_store;
pub mod sandbox;
pub mod serve;
pub mod session;
pub mod storage;

use anyhow::Context;
use stratus_config::Config;

use crate::ServerOpts;

/// Loads the configuration for `serve`/`admin`: defaults, file, environment, then flags.
pub fn load_config(opts: &ServerOpts) -> anyhow::Result<Config> {
    let mut cfg = Config::load(opts.config.as_deref()).context("loading configuration")?;
    if let Some(d) = &opts.data_dir {
        cfg.data_dir = d.clone();
    }
    Ok(cfg)
}

/// Reads one line (a password) from stdin, without the line ending.
pub fn read_stdin_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading stdin")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
