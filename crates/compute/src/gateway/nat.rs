//! Kernel forwarding: the gateway's fast path, as nftables DNAT rules.
//!
//! Owns one nftables table per gateway (`ip stratus_<pid>_<n>`), holding:
//! - `targets`: public port → container address and port. A new connection to a public port in
//!   it is rewritten (DNAT) in the kernel and never reaches the gateway's listener; connections
//!   to a port without an entry (stopped instance, nothing resolved yet) still reach the
//!   listener, which answers as the user-space gateway does.
//! - `marks`: public port → connection mark `0x5354_0000 | port`, set on every forwarded
//!   connection. Counters, the loopback masquerade, the Docker `FORWARD` exemption and the
//!   killing of a closed mapping's connections all key on that mark.
//! - `bytes_in` / `bytes_out`: one counter per mark and direction (IP bytes, headers included).
//! - `conns`: per-port connection counts; a new connection over the mapping's cap is reset.
//!
//! Connections from this host to a loopback address are masqueraded and the container bridge
//! gets `route_localnet` (as Docker does for its own published ports without its proxy); the
//! sandbox firewall's loopback guard keeps anything else from using it, and a graceful teardown
//! turns it off again on the bridges this gateway turned it on.
//! Connections from elsewhere cross Docker's `FORWARD` chain, so a rule in `DOCKER-USER` accepts
//! marked connections.
//!
//! Everything is driven through the `nft` and `conntrack` programs (packages `nftables` and
//! `conntrack`); a table whose owning process is gone (a crashed server) is deleted when a
//! gateway sets up or opens a port, before that port can be routed by it.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::nft::{nft, owner_is_dead, run, tables};

/// High half of the connection mark of forwarded connections.
const MARK_TAG: u32 = 0x5354_0000;
const MARK_MASK: u32 = 0xffff_0000;
const TABLE_PREFIX: &str = "stratus_";

/// One gateway's nftables table.
#[derive(Debug)]
pub(crate) struct Kernel {
    table: String,
    /// Interfaces this gateway set `route_localnet` on.
    localnet: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// The connection mark of a public port's forwarded connections.
pub(crate) fn mark_of(port: u16) -> u32 {
    MARK_TAG | u32::from(port)
}

impl Kernel {
    /// Checks the tools, removes tables left by dead processes, and creates this gateway's
    /// table for ports bound on `bind` (unspecified: every local address), resetting new
    /// connections beyond `max_connections` per port.
    pub(crate) async fn setup(bind: Ipv4Addr, max_connections: usize) -> io::Result<Kernel> {
        run("conntrack", &["--version"], None).await?;
        collect_stale_tables().await;
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let table = format!(
            "{TABLE_PREFIX}{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let daddr = if bind.is_unspecified() {
            "fib daddr type local".to_string()
        } else {
            format!("ip daddr {bind}")
        };
        let over = max_connections.max(1);
        let script = format!(
            "table ip {table} {{
  map targets {{ type inet_service : ipv4_addr . inet_service; }}
  map marks {{ type inet_service : mark; }}
  set bytes_in {{ type mark; counter; }}
  set bytes_out {{ type mark; counter; }}
  set conns {{ type inet_service; flags dynamic; size 65536; }}
  chain limit_out {{
    type filter hook output priority -160;
    ct state new {daddr} tcp dport @targets add @conns {{ tcp dport ct count over {over} }} reject with tcp reset
  }}
  chain limit_pre {{
    type filter hook prerouting priority -160;
    ct state new {daddr} tcp dport @targets add @conns {{ tcp dport ct count over {over} }} reject with tcp reset
  }}
  chain nat_out {{
    type nat hook output priority -101;
    {daddr} tcp dport @targets ct mark set tcp dport map @marks dnat ip to tcp dport map @targets
  }}
  chain nat_pre {{
    type nat hook prerouting priority -101;
    {daddr} tcp dport @targets ct mark set tcp dport map @marks dnat ip to tcp dport map @targets
  }}
  chain nat_post {{
    type nat hook postrouting priority 99;
    ip saddr 127.0.0.0/8 ct mark and {MARK_MASK:#x} == {MARK_TAG:#x} masquerade
  }}
  chain count_in {{
    type filter hook postrouting priority 0;
    ct direction original ct mark @bytes_in
  }}
  chain count_out {{
    type filter hook prerouting priority 0;
    ct direction reply ct mark @bytes_out
  }}
}}
"
        );
        nft(&script).await?;
        exempt_from_docker_forward().await;
        Ok(Kernel {
            table,
            localnet: Default::default(),
        })
    }

    /// The table's name.
    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    /// Registers a mapping's public port: its mark and counters (no target yet). A table left
    /// by a dead server may still route this port (it listened there before dying): such
    /// tables go first.
    pub(crate) async fn add_port(&self, port: u16) -> io::Result<()> {
        collect_stale_tables().await;
        let (t, mark) = (&self.table, mark_of(port));
        nft(&format!(
            "add element ip {t} marks {{ {port} : {mark:#x} }}
add element ip {t} bytes_in {{ {mark:#x} }}
add element ip {t} bytes_out {{ {mark:#x} }}
"
        ))
        .await
    }

    /// Points new connections to `port` at `to` (or back at the listener with `None`), and
    /// ends the connections forwarded to `from` when there were any.
    pub(crate) async fn route(
        &self,
        port: u16,
        from: Option<SocketAddrV4>,
        to: Option<SocketAddrV4>,
    ) -> io::Result<()> {
        if from == to {
            return Ok(());
        }
        let t = &self.table;
        let mut script = String::new();
        if let Some(old) = from {
            script += &target_element("delete", t, port, old);
        }
        if let Some(new) = to {
            if let Some(dev) = allow_loopback_sources(*new.ip()) {
                self.localnet.lock().expect("localnet lock").insert(dev);
            }
            script += &target_element("add", t, port, new);
        }
        nft(&script).await?;
        if from.is_some() {
            kill_connections(port).await;
        }
        Ok(())
    }

    /// Forgets a mapping's port and ends its forwarded connections.
    pub(crate) async fn remove_port(&self, port: u16, routed: Option<SocketAddrV4>) {
        let (t, mark) = (&self.table, mark_of(port));
        let mut script = String::new();
        if let Some(old) = routed {
            script += &target_element("delete", t, port, old);
        }
        script += &format!(
            "delete element ip {t} marks {{ {port} : {mark:#x} }}
delete element ip {t} bytes_in {{ {mark:#x} }}
delete element ip {t} bytes_out {{ {mark:#x} }}
"
        );
        if let Err(e) = nft(&script).await {
            tracing::warn!(table = %t, port, error = %e, "gateway: cannot remove kernel route");
        }
        kill_connections(port).await;
    }

    /// Bytes forwarded so far per public port: (in, out), IP bytes.
    pub(crate) async fn counters(&self) -> io::Result<HashMap<u16, (u64, u64)>> {
        let mut out: HashMap<u16, (u64, u64)> = HashMap::new();
        for (set, inbound) in [("bytes_in", true), ("bytes_out", false)] {
            let json = run("nft", &["-j", "list", "set", "ip", &self.table, set], None).await?;
            for (mark, bytes) in parse_set_counters(&json)? {
                if mark & MARK_MASK != MARK_TAG {
                    continue;
                }
                let e = out.entry((mark & 0xffff) as u16).or_default();
                if inbound {
                    e.0 = bytes;
                } else {
                    e.1 = bytes;
                }
            }
        }
        Ok(out)
    }

    /// Deletes the table (every route at once). Connections already forwarded keep their
    /// translation until they end.
    pub(crate) async fn teardown(&self) {
        if let Err(e) = nft(&format!("delete table ip {}\n", self.table)).await {
            tracing::warn!(table = %self.table, error = %e, "gateway: cannot delete nftables table");
        }
        let devices: Vec<String> = self
            .localnet
            .lock()
            .expect("localnet lock")
            .drain()
            .collect();
        for dev in devices {
            let path = format!("/proc/sys/net/ipv4/conf/{dev}/route_localnet");
            // A bridge removed meanwhile has nothing left to reset.
            if std::path::Path::new(&path).exists() {
                if let Err(e) = std::fs::write(&path, "0") {
                    tracing::warn!(%dev, error = %e, "gateway: cannot reset route_localnet");
                }
            }
        }
    }
}

/// The nft command that adds or deletes (`op`) the route of `port` to `to` in `table`.
fn target_element(op: &str, table: &str, port: u16, to: SocketAddrV4) -> String {
    format!(
        "{op} element ip {table} targets {{ {port} : {} . {} }}\n",
        to.ip(),
        to.port()
    )
}

/// `(mark, bytes)` of every element of a `nft -j list set` answer.
fn parse_set_counters(json: &str) -> io::Result<Vec<(u32, u64)>> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(io::Error::other)?;
    let mut out = Vec::new();
    let items = v["nftables"].as_array().cloned().unwrap_or_default();
    for item in items {
        let Some(elems) = item["set"]["elem"].as_array() else {
            continue;
        };
        for e in elems {
            let elem = &e["elem"];
            let (Some(mark), Some(bytes)) =
                (elem["val"].as_u64(), elem["counter"]["bytes"].as_u64())
            else {
                continue;
            };
            out.push((mark as u32, bytes));
        }
    }
    Ok(out)
}

/// Ends every connection forwarded for `port` (its conntrack entries go; the next packet of
/// either side meets no socket and is answered with a reset).
async fn kill_connections(port: u16) {
    let mark = format!("{:#x}", mark_of(port));
    // Exit status 1 only means there was nothing to delete.
    if let Err(e) = run("conntrack", &["-D", "-p", "tcp", "--mark", &mark], None).await {
        let msg = e.to_string();
        if !msg.contains("0 flow entries") {
            tracing::warn!(port, error = %msg, "gateway: cannot end forwarded connections");
        }
    }
}

/// Deletes `stratus_<pid>_<n>` tables whose process is gone.
async fn collect_stale_tables() {
    let Ok(names) = tables("ip", TABLE_PREFIX).await else {
        return;
    };
    for name in names {
        if !owner_is_dead(&name, TABLE_PREFIX) {
            continue;
        }
        match nft(&format!("delete table ip {name}\n")).await {
            Ok(()) => tracing::info!(table = name, "gateway: removed a dead server's routes"),
            Err(e) => tracing::debug!(table = name, error = %e, "gateway: stale table"),
        }
    }
}

/// Lets connections marked by a stratus gateway through Docker's `FORWARD` chain (policy drop
/// for its bridges). Without Docker's iptables rules there is nothing to do.
async fn exempt_from_docker_forward() {
    let mark = format!("{MARK_TAG:#x}/{MARK_MASK:#x}");
    let rule = [
        "DOCKER-USER",
        "-m",
        "connmark",
        "--mark",
        &mark,
        "-j",
        "ACCEPT",
    ];
    if run("iptables", &[&["-C"], &rule[..]].concat(), None)
        .await
        .is_ok()
    {
        return;
    }
    if let Err(e) = run("iptables", &[&["-I"], &rule[..]].concat(), None).await {
        tracing::debug!(error = %e, "gateway: no DOCKER-USER chain to exempt forwarded connections from");
    }
}

/// Sets `route_localnet` on the interface that reaches `target`, so connections from a
/// loopback address on this host can be forwarded there; the interface, when it has it now.
fn allow_loopback_sources(target: Ipv4Addr) -> Option<String> {
    if target.is_loopback() {
        // Delivered on this host: no interface needs it (and the main routing table would name
        // the default route's).
        return None;
    }
    let dev = route_device(target)?;
    let path = format!("/proc/sys/net/ipv4/conf/{dev}/route_localnet");
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
        return Some(dev);
    }
    match std::fs::write(&path, "1") {
        Ok(()) => Some(dev),
        Err(e) => {
            tracing::warn!(%dev, error = %e, "gateway: cannot set route_localnet");
            None
        }
    }
}

/// The interface of the most specific IPv4 route to `target` (from `/proc/net/route`).
fn route_device(target: Ipv4Addr) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    best_route(&table, target)
}

fn best_route(table: &str, target: Ipv4Addr) -> Option<String> {
    let ip = u32::from(target);
    let mut best: Option<(u32, String)> = None;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        // Addresses are in host byte order of a little-endian machine: bytes reversed.
        let parse = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::swap_bytes);
        let (Some(dest), Some(mask)) = (parse(f[1]), parse(f[7])) else {
            continue;
        };
        if ip & mask == dest && best.as_ref().is_none_or(|(m, _)| mask.count_ones() > *m) {
            best = Some((mask.count_ones(), f[0].to_string()));
        }
    }
    best.map(|(_, dev)| dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_carry_the_port() {
        assert_eq!(mark_of(45001), 0x5354_afc9);
        assert_eq!(mark_of(45001) & MARK_MASK, MARK_TAG);
    }

    #[test]
    fn most_specific_route_wins() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
br-1\t000012AC\t00000000\t0001\t0\t0\t0\t00F0FFFF\t0\t0\t0
";
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            best_route(table, ip("172.17.0.2")).as_deref(),
            Some("docker0")
        );
        assert_eq!(best_route(table, ip("172.18.0.2")).as_deref(), Some("br-1"));
        assert_eq!(best_route(table, ip("8.8.8.8")).as_deref(), Some("eth0"));
    }

    #[test]
    fn counters_are_read_from_nft_json() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "ip", "name": "bytes_in", "table": "t", "type": "mark", "handle": 7, "elem": [{"elem": {"val": 1398059952, "counter": {"packets": 1638, "bytes": 104942784}}}]}}]}"#;
        assert_eq!(
            parse_set_counters(json).unwrap(),
            vec![(0x5354_b3b0, 104_942_784)]
        );
    }
}
