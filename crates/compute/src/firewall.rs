//! The host firewall of sandboxes: a loopback guard for the whole host, and the egress policy
//! of every sandbox network.
//!
//! Owns one nftables table per runtime (`inet stratus_guard_<owner>_<n>`, named after the
//! server's id, never its process id), installed whatever the gateway's forwarding mode:
//! - *Loopback guard* (as Kubernetes does since CVE-2020-8558): a packet for 127.0.0.0/8 (or
//!   `::1`) that arrives on any interface but `lo` is dropped unless it belongs to a gateway
//!   DNAT (`ct status dnat`), and so is one that claims a loopback source. A bridge with
//!   `route_localnet=1` (kernel forwarding sets it) would otherwise deliver a hand-built frame
//!   for 127.0.0.1 to whatever listens on the host's loopback.
//! - *Egress policy*, keyed by the instance's bridge interface (set `sandboxes`, one element
//!   per instance, added before its containers start and removed with it). From a sandbox:
//!   nothing new reaches the host itself (any of its addresses; replies to connections the host
//!   opened, such as the gateway's relay, pass); within its own bridge everything passes (its
//!   services reach each other); another instance's bridge never; IPv6 never; then `deny`
//!   CIDRs are dropped, `allow` CIDRs pass, the host's DNS resolvers pass on port 53, and
//!   special-purpose ranges ([`BLOCKED_RANGES`]: private, link-local — cloud metadata —,
//!   shared, loopback, multicast, documentation…) are dropped. The internet passes.
//!
//! The chains only drop: Docker's own rules (its `FORWARD` policy, `DOCKER-USER`, isolation
//! chains) still decide on whatever passes here, so nothing Docker refuses is opened. Bridged
//! traffic seen through `br_netfilter` has the bridge as both input and output interface, which
//! is what lets an instance's containers talk to each other.
//!
//! A table whose server is gone (see [`crate::liveness`]; for this server's own id: a table
//! this process did not make) — crashed, or stopped gracefully while sandboxes still ran —
//! stays while any of its sandbox bridges still exists (the sandboxes it guards keep running; a
//! restarted server admits them into its own table, which takes them out of the dead one), and is
//! deleted once none does.

use std::collections::HashSet;
use std::io;
use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use ipnet::Ipv4Net;
use parking_lot::Mutex;
use stratus_config::EgressConfig;

use nftables::batch::Batch;
use nftables::expr::{
    BinaryOperation, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix,
    SetItem, CT,
};
use nftables::schema::{Chain, NfListObject, Rule, Set, SetFlag, SetType, SetTypeValue};
use nftables::stmt::{Counter, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::liveness::{self, Claim};
use crate::nft::{self, apply, concat, elements, string, tables};

const TABLE_PREFIX: &str = "stratus_guard_";

/// IPv4 ranges a sandbox never reaches unless `egress.allow` says so: every special-purpose
/// range of the IANA registry that is not globally reachable, and multicast.
pub const BLOCKED_RANGES: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/3",
];

/// Why the firewall cannot be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("compute.egress.{list}: {value:?} is not an IPv4 CIDR (sandboxes have no IPv6)")]
    InvalidCidr { list: &'static str, value: String },
    #[error("{0}")]
    Nft(#[from] io::Error),
}

/// The egress policy, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Reachable although in a blocked range.
    pub allow: Vec<Ipv4Net>,
    /// Never reachable (wins over `allow`).
    pub deny: Vec<Ipv4Net>,
}

impl EgressPolicy {
    /// Parses `compute.egress`; a bare address is a /32.
    pub fn from_config(config: &EgressConfig) -> Result<EgressPolicy, FirewallError> {
        let parse = |list: &'static str, values: &[String]| {
            values
                .iter()
                .map(|v| {
                    let t = v.trim();
                    t.parse::<Ipv4Net>()
                        .or_else(|_| t.parse::<Ipv4Addr>().map(Ipv4Net::from))
                        .map(|n| n.trunc())
                        .map_err(|_| FirewallError::InvalidCidr {
                            list,
                            value: v.clone(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(EgressPolicy {
            allow: parse("allow", &config.allow)?,
            deny: parse("deny", &config.deny)?,
        })
    }
}

/// One runtime's firewall table.
#[derive(Debug)]
pub struct Firewall {
    table: String,
    /// The server id the table is named after, held while the table lives.
    claim: Arc<Claim>,
}

/// The firewall tables this process made and has not deleted.
fn live_tables() -> &'static Mutex<HashSet<String>> {
    static LIVE: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
}

/// Whether a firewall table's server is gone: dead, or this server itself when this process
/// did not make the table (a crashed or stopped run's).
fn owner_gone(name: &str, own: &Claim) -> bool {
    let Some((owner, _)) = liveness::parse_table(name, TABLE_PREFIX) else {
        return false;
    };
    if owner == own.owner() {
        return !live_tables().lock().contains(name);
    }
    !liveness::table_owner_alive(owner)
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: key.into(),
        family: None,
        dir: None,
    }))
}

fn prefix(net: &Ipv4Net) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(string(net.addr().to_string())),
        len: u32::from(net.prefix_len()),
    }))
}

fn is(left: Expression<'static>, op: Operator, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn counter() -> Statement<'static> {
    Statement::Counter(Counter::Anonymous(None))
}

fn drop_() -> Statement<'static> {
    Statement::Drop(None)
}

fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

/// `ct state established,related`.
fn established() -> Statement<'static> {
    is(
        ct("state"),
        Operator::IN,
        Expression::List(vec![string("established"), string("related")]),
    )
}

/// The firewall table, as one typed batch: its sets (the CIDR lists as typed prefixes) and
/// chains. In nft's words:
///
/// ```text
/// table inet T {
///   set sandboxes { type ifname; }
///   set intra { type ifname . ifname; }
///   set blocked4 / allow4 / deny4 / resolvers4 { type ipv4_addr; flags interval; … }
///   chain loopback_source { type filter hook prerouting priority raw; policy accept;
///     iif != "lo" ip saddr 127.0.0.0/8 counter drop }
///   chain input { type filter hook input priority filter - 10; policy accept;
///     iif != "lo" ip daddr 127.0.0.0/8 ct status & dnat == 0 counter drop
///     iif != "lo" ip6 daddr ::1 counter drop
///     iifname @sandboxes ct state established,related accept
///     iifname @sandboxes counter drop }
///   chain forward { type filter hook forward priority filter - 10; policy accept;
///     iifname != @sandboxes accept
///     ct state established,related accept
///     iifname . oifname @intra accept
///     oifname @sandboxes counter drop
///     meta nfproto != ipv4 counter drop
///     ip daddr @deny4 counter drop
///     ip daddr @allow4 accept
///     ip daddr @resolvers4 meta l4proto { tcp, udp } th dport 53 accept
///     ip daddr @blocked4 counter drop }
/// }
/// ```
fn definition(
    table: &str,
    blocked: &[Ipv4Net],
    policy: &EgressPolicy,
    resolvers: &[Ipv4Net],
) -> Batch<'static> {
    let t = || std::borrow::Cow::Owned(table.to_string());
    let fam = NfFamily::INet;
    let mut batch = Batch::new();
    batch.add(nft::table(fam, table));
    let set = |name: &'static str, kind: SetTypeValue<'static>, nets: Option<&[Ipv4Net]>| {
        NfListObject::Set(Box::new(Set {
            family: fam,
            table: t(),
            name: name.into(),
            handle: None,
            set_type: kind,
            policy: None,
            flags: nets.map(|_| [SetFlag::Interval].into_iter().collect()),
            elem: nets
                .filter(|n| !n.is_empty())
                .map(|n| n.iter().map(prefix).collect::<Vec<_>>().into()),
            timeout: None,
            gc_interval: None,
            size: None,
            comment: None,
        }))
    };
    batch.add(set(
        "sandboxes",
        SetTypeValue::Single(SetType::Ifname),
        None,
    ));
    batch.add(set(
        "intra",
        SetTypeValue::Concatenated(vec![SetType::Ifname, SetType::Ifname].into()),
        None,
    ));
    let v4 = || SetTypeValue::Single(SetType::Ipv4Addr);
    batch.add(set("blocked4", v4(), Some(blocked)));
    batch.add(set("allow4", v4(), Some(&policy.allow)));
    batch.add(set("deny4", v4(), Some(&policy.deny)));
    batch.add(set("resolvers4", v4(), Some(resolvers)));
    let chain = |name: &'static str, hook: NfHook, prio: i32| {
        NfListObject::Chain(Chain {
            family: fam,
            table: t(),
            name: name.into(),
            newname: None,
            handle: None,
            _type: Some(NfChainType::Filter),
            hook: Some(hook),
            prio: Some(prio),
            dev: None,
            policy: Some(NfChainPolicy::Accept),
        })
    };
    // Priorities `raw` (-300) and `filter - 10`.
    batch.add(chain("loopback_source", NfHook::Prerouting, -300));
    batch.add(chain("input", NfHook::Input, -10));
    batch.add(chain("forward", NfHook::Forward, -10));
    let rule = |chain: &'static str, expr: Vec<Statement<'static>>| {
        NfListObject::Rule(Rule {
            family: fam,
            table: t(),
            chain: chain.into(),
            expr: expr.into(),
            handle: None,
            index: None,
            comment: None,
        })
    };
    let loopback4 =
        || prefix(&Ipv4Net::new(std::net::Ipv4Addr::LOCALHOST, 8).expect("a valid prefix"));
    let not_lo = || is(meta(MetaKey::Iif), Operator::NEQ, string("lo"));
    let sandboxes = || string("@sandboxes");
    batch.add(rule(
        "loopback_source",
        vec![
            not_lo(),
            is(payload("ip", "saddr"), Operator::EQ, loopback4()),
            counter(),
            drop_(),
        ],
    ));
    let not_dnat = is(
        Expression::BinaryOperation(Box::new(BinaryOperation::AND(ct("status"), string("dnat")))),
        Operator::EQ,
        Expression::Number(0),
    );
    for expr in [
        vec![
            not_lo(),
            is(payload("ip", "daddr"), Operator::EQ, loopback4()),
            not_dnat,
            counter(),
            drop_(),
        ],
        vec![
            not_lo(),
            is(payload("ip6", "daddr"), Operator::EQ, string("::1")),
            counter(),
            drop_(),
        ],
        vec![
            is(meta(MetaKey::Iifname), Operator::EQ, sandboxes()),
            established(),
            accept(),
        ],
        vec![
            is(meta(MetaKey::Iifname), Operator::EQ, sandboxes()),
            counter(),
            drop_(),
        ],
    ] {
        batch.add(rule("input", expr));
    }
    let daddr_in = |set: &'static str| is(payload("ip", "daddr"), Operator::EQ, string(set));
    for expr in [
        vec![
            is(meta(MetaKey::Iifname), Operator::NEQ, sandboxes()),
            accept(),
        ],
        vec![established(), accept()],
        vec![
            is(
                concat(vec![meta(MetaKey::Iifname), meta(MetaKey::Oifname)]),
                Operator::EQ,
                string("@intra"),
            ),
            accept(),
        ],
        vec![
            is(meta(MetaKey::Oifname), Operator::EQ, sandboxes()),
            counter(),
            drop_(),
        ],
        vec![
            is(meta(MetaKey::Nfproto), Operator::NEQ, string("ipv4")),
            counter(),
            drop_(),
        ],
        vec![daddr_in("@deny4"), counter(), drop_()],
        vec![daddr_in("@allow4"), accept()],
        vec![
            daddr_in("@resolvers4"),
            is(
                meta(MetaKey::L4proto),
                Operator::EQ,
                Expression::Named(NamedExpression::Set(vec![
                    SetItem::Element(string("tcp")),
                    SetItem::Element(string("udp")),
                ])),
            ),
            is(payload("th", "dport"), Operator::EQ, Expression::Number(53)),
            accept(),
        ],
        vec![daddr_in("@blocked4"), counter(), drop_()],
    ] {
        batch.add(rule("forward", expr));
    }
    batch
}

/// The host's IPv4 DNS resolvers (from `/etc/resolv.conf`), which the engine's embedded DNS
/// server asks from inside each sandbox.
fn host_resolvers() -> Vec<Ipv4Addr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
        .filter(|a| !a.is_loopback() && !a.is_unspecified())
        .collect()
}

/// Whether a network interface of this name exists now.
pub(crate) fn interface_exists(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('/')
        && std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Checks an interface name before it goes into a batch (typed values: no quoting needed, but
/// a name no interface can have is refused).
fn checked(ifname: &str) -> io::Result<&str> {
    if ifname.is_empty()
        || ifname.len() > 15
        || !ifname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(io::Error::other(format!(
            "{ifname:?} is not an interface name"
        )));
    }
    Ok(ifname)
}

/// A bridge's elements: in `sandboxes`, and `bridge . bridge` in `intra`.
fn bridge_elements(
    table: &str,
    bridge: &str,
) -> io::Result<[nftables::schema::NfListObject<'static>; 2]> {
    let b = checked(bridge)?;
    Ok([
        elements(NfFamily::INet, table, "sandboxes", vec![string(b)]),
        elements(
            NfFamily::INet,
            table,
            "intra",
            vec![concat(vec![string(b), string(b)])],
        ),
    ])
}

impl Firewall {
    /// Checks `nft`, deletes tables of dead servers that guard nothing any more, and installs
    /// this runtime's table (loopback guard, egress policy, no sandbox yet), named after
    /// `owner` (the server id; `None`: a random id for this process).
    pub async fn install(
        policy: &EgressPolicy,
        owner: Option<&str>,
    ) -> Result<Firewall, FirewallError> {
        let claim = match owner {
            Some(o) => liveness::claim(o)?,
            None => liveness::claim_anonymous()?,
        };
        // A crashed run of this server may have left its table, still guarding its sandboxes:
        // it stays until they are taken over, so the new table gets another name.
        let table = nft::fresh_table_name(NfFamily::INet, TABLE_PREFIX, claim.owner()).await?;
        let blocked: Vec<Ipv4Net> = BLOCKED_RANGES
            .iter()
            .map(|r| r.parse().expect("valid built-in range"))
            .collect();
        let resolvers: Vec<Ipv4Net> = host_resolvers().into_iter().map(Ipv4Net::from).collect();
        let batch = definition(&table, &blocked, policy, &resolvers);
        live_tables().lock().insert(table.clone());
        if let Err(e) = apply(batch).await {
            live_tables().lock().remove(&table);
            return Err(e.into());
        }
        let fw = Firewall { table, claim };
        fw.collect_stale(None).await;
        Ok(fw)
    }

    /// The table's name (family `inet`).
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Puts a sandbox bridge under the egress policy (idempotent), and takes it out of the
    /// tables of dead processes that guarded it before.
    pub async fn admit(&self, bridge: &str) -> Result<(), FirewallError> {
        let mut batch = Batch::new();
        for obj in bridge_elements(&self.table, bridge)? {
            batch.add(obj);
        }
        apply(batch).await?;
        self.collect_stale(Some(bridge)).await;
        Ok(())
    }

    /// Takes a removed sandbox's bridge out of the policy.
    pub async fn release(&self, bridge: &str) {
        if let Err(e) = release_from(&self.table, bridge).await {
            tracing::warn!(table = %self.table, bridge, error = %e, "firewall: cannot release a sandbox bridge");
        }
    }

    /// The bridges under the policy now.
    pub async fn admitted(&self) -> Result<Vec<String>, FirewallError> {
        Ok(sandboxes_of(&self.table).await?)
    }

    /// Graceful stop: deletes the table, unless sandboxes it guards still run (they outlive the
    /// server and stay guarded until a restarted server takes them into its own table, which
    /// then deletes this one).
    pub async fn close(&self) {
        if let Ok(bridges) = sandboxes_of(&self.table).await {
            let live = bridges.iter().filter(|b| interface_exists(b)).count();
            if live > 0 {
                tracing::info!(table = %self.table, sandboxes = live, "firewall: kept, it still guards running sandboxes");
                return;
            }
        }
        self.remove().await;
    }

    /// Deletes the table.
    pub async fn remove(&self) {
        match nft::delete_table(NfFamily::INet, &self.table).await {
            Ok(()) => {
                live_tables().lock().remove(&self.table);
                tracing::info!(table = %self.table, "firewall: removed")
            }
            Err(e) => {
                tracing::warn!(table = %self.table, error = %e, "firewall: cannot delete its table")
            }
        }
    }

    /// Takes bridges that no longer exist out of this table (a sandbox removed while the
    /// server was down), and deletes the tables of dead servers that guard nothing any more.
    pub async fn prune(&self) {
        if let Ok(bridges) = sandboxes_of(&self.table).await {
            for b in bridges.iter().filter(|b| !interface_exists(b)) {
                tracing::info!(table = %self.table, bridge = %b, "firewall: released a bridge that is gone");
                self.release(b).await;
            }
        }
        self.collect_stale(None).await;
    }

    /// Deletes tables of dead processes whose bridges are all gone; with `adopted`, first takes
    /// that bridge out of them (this table guards it now).
    async fn collect_stale(&self, adopted: Option<&str>) {
        let Ok(names) = tables(NfFamily::INet, TABLE_PREFIX).await else {
            return;
        };
        for name in names {
            if name == self.table || !owner_gone(&name, &self.claim) {
                continue;
            }
            if let Some(b) = adopted {
                let _ = release_from(&name, b).await;
            }
            let guarded = match sandboxes_of(&name).await {
                Ok(list) => list.iter().any(|b| interface_exists(b)),
                Err(_) => continue,
            };
            if guarded {
                continue;
            }
            match nft::delete_table(NfFamily::INet, &name).await {
                Ok(()) => tracing::info!(table = %name, "firewall: removed a dead server's table"),
                Err(e) => tracing::debug!(table = %name, error = %e, "firewall: stale table"),
            }
        }
    }
}

/// Deletes a bridge's elements from `table` (nothing to delete is fine).
async fn release_from(table: &str, bridge: &str) -> io::Result<()> {
    for obj in bridge_elements(table, bridge)? {
        let mut batch = Batch::new();
        batch.delete(obj);
        if let Err(e) = apply(batch).await {
            let msg = e.to_string();
            if !msg.contains("No such file or directory") {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// The elements of `table`'s `sandboxes` set.
async fn sandboxes_of(table: &str) -> io::Result<Vec<String>> {
    Ok(set_names(
        &nft::set_elements(NfFamily::INet, table, "sandboxes").await?,
    ))
}

fn set_names(elems: &[Expression<'_>]) -> Vec<String> {
    elems
        .iter()
        .filter_map(|e| match e {
            Expression::String(name) => Some(name.to_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_lists_are_parsed() {
        let p = EgressPolicy::from_config(&EgressConfig {
            allow: vec!["10.1.2.3".into(), " 10.9.0.7/16 ".into()],
            deny: vec!["8.8.8.8/32".into()],
        })
        .unwrap();
        assert_eq!(
            p.allow,
            [
                "10.1.2.3/32".parse::<Ipv4Net>().unwrap(),
                "10.9.0.0/16".parse().unwrap()
            ]
        );
        assert_eq!(p.deny, ["8.8.8.8/32".parse::<Ipv4Net>().unwrap()]);
        for bad in ["fd00::/8", "10.0.0.0/33", "nope"] {
            let e = EgressPolicy::from_config(&EgressConfig {
                allow: vec![],
                deny: vec![bad.into()],
            })
            .unwrap_err();
            assert!(e.to_string().contains("compute.egress.deny"), "{e}");
        }
    }

    #[test]
    fn interface_names_are_checked_before_a_batch() {
        assert_eq!(checked("br-0123456789ab").unwrap(), "br-0123456789ab");
        for bad in ["", "a\"b", "x y", "a}b", "0123456789abcdef"] {
            assert!(checked(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_elements_are_read_from_nft_json() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"set": {"family": "inet", "name": "sandboxes", "table": "t", "type": "ifname", "handle": 1, "elem": ["br-a", "br-b"]}}]}"#;
        let listed: nftables::schema::Nftables = serde_json::from_str(json).unwrap();
        let elems = crate::nft::listed_set_elements(listed);
        assert_eq!(set_names(&elems), ["br-a", "br-b"]);
    }
}

/// The typed table against the rules as they were written in nft's own language: nft must
/// read both the same. Needs root and `ip` and `nft`; runs in a network namespace of its own.
#[cfg(test)]
mod nft_tests {
    use std::process::{Command, Stdio};

    use super::*;

    const WRITTEN: &str = "table inet T {
  set sandboxes { type ifname; }
  set intra { type ifname . ifname; }
  set blocked4 { type ipv4_addr; flags interval; elements = { 10.0.0.0/8, 127.0.0.0/8 }; }
  set allow4 { type ipv4_addr; flags interval; elements = { 10.1.2.3/32 }; }
  set deny4 { type ipv4_addr; flags interval; }
  set resolvers4 { type ipv4_addr; flags interval; elements = { 1.1.1.1/32 }; }
  chain loopback_source {
    type filter hook prerouting priority raw; policy accept;
    iif != \"lo\" ip saddr 127.0.0.0/8 counter drop
  }
  chain input {
    type filter hook input priority filter - 10; policy accept;
    iif != \"lo\" ip daddr 127.0.0.0/8 ct status ! dnat counter drop
    iif != \"lo\" ip6 daddr ::1 counter drop
    iifname @sandboxes ct state established,related accept
    iifname @sandboxes counter drop
  }
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    iifname != @sandboxes accept
    ct state established,related accept
    iifname . oifname @intra accept
    oifname @sandboxes counter drop
    meta nfproto != ipv4 counter drop
    ip daddr @deny4 counter drop
    ip daddr @allow4 accept
    ip daddr @resolvers4 meta l4proto { tcp, udp } th dport 53 accept
    ip daddr @blocked4 counter drop
  }
}
";

    fn in_ns(ns: &str, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip (iproute2)");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn nft_reads_the_typed_table_as_the_written_rules() {
        let ns = format!("stratus-fw-{}", std::process::id());
        assert!(Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap()
            .success());
        let result = std::panic::catch_unwind(|| {
            in_ns(
                &ns,
                &["nft", "-f", "-"],
                Some(&WRITTEN.replace("inet T", "inet written")),
            );
            let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
            let batch = definition(
                "typed",
                &[net("10.0.0.0/8"), net("127.0.0.0/8")],
                &EgressPolicy {
                    allow: vec![net("10.1.2.3/32")],
                    deny: vec![],
                },
                &[net("1.1.1.1/32")],
            );
            let json = serde_json::to_string(&batch.to_nftables()).unwrap();
            in_ns(&ns, &["nft", "-j", "-f", "-"], Some(&json));
            let written = in_ns(&ns, &["nft", "list", "table", "inet", "written"], None);
            let typed = in_ns(&ns, &["nft", "list", "table", "inet", "typed"], None);
            assert_eq!(typed.replace("typed", "written"), written);
        });
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    }
}
