//! Running the host's packet-filter programs (`nft`, `conntrack`, `iptables`).
//!
//! Owns starting a program with an optional script on its standard input and turning a failure
//! into an error that carries the program's own message. Used by the gateway's kernel
//! forwarding and by the sandbox firewall; it never decides what a rule says.

use std::io;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Runs `nft -f -` with `script` (one atomic transaction).
pub(crate) async fn nft(script: &str) -> io::Result<()> {
    run("nft", &["-f", "-"], Some(script)).await.map(drop)
}

/// Runs a program, feeding `stdin`; its standard output, or an error with its standard error.
pub(crate) async fn run(program: &str, args: &[&str], stdin: Option<&str>) -> io::Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).await?;
        drop(pipe);
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Names of the tables of `family` (`ip`, `inet`) whose name starts with `prefix`.
pub(crate) async fn tables(family: &str, prefix: &str) -> io::Result<Vec<String>> {
    let json = run("nft", &["-j", "list", "tables", family], None).await?;
    let v: serde_json::Value = serde_json::from_str(&json).map_err(io::Error::other)?;
    Ok(v["nftables"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["table"]["name"].as_str())
                .filter(|n| n.starts_with(prefix))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default())
}

/// Whether the process that a `<prefix><pid>_<n>` table is named after is gone.
pub(crate) fn owner_is_dead(table: &str, prefix: &str) -> bool {
    table
        .strip_prefix(prefix)
        .and_then(|rest| rest.split('_').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
}
