//! Which stratus servers on this host are alive, by server id (`compute.owner`), for the
//! nftables tables they own.
//!
//! A server proves it is alive by holding an abstract Unix socket named after its id
//! (`@stratus/owner/<id>`) for as long as it runs: the kernel lets go of it the moment the
//! process dies, however it dies (`SIGKILL` included), so nothing has to be renewed, and a
//! reused PID or another PID or mount namespace cannot fake it. Abstract socket names belong
//! to the network namespace, which is exactly where nftables tables live: a server sees the
//! liveness of every server whose tables it sees. Another server is alive when a datagram
//! socket can connect to that name.
//!
//! Claiming an id a live process holds fails: two servers with one id would take each other's
//! tables for their own stale ones. Owners are letters, digits and `-` (a server id is hex);
//! tables are named `<prefix><owner>_<n>`.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;

/// This process's claim of an owner id; released when the last holder drops it.
#[derive(Debug)]
pub struct Claim {
    owner: String,
    _socket: UnixDatagram,
}

impl Claim {
    /// The owner id.
    pub fn owner(&self) -> &str {
        &self.owner
    }
}

fn address(owner: &str) -> io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(format!("stratus/owner/{owner}").as_bytes())
}

/// Whether `owner` can name tables: letters, digits and `-`, 1 to 64.
pub fn valid_owner(owner: &str) -> bool {
    !owner.is_empty()
        && owner.len() <= 64
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Claims `owner` for this process (shared by every gateway and firewall of the process).
/// Fails when another live process holds it.
pub fn claim(owner: &str) -> io::Result<Arc<Claim>> {
    static CLAIMS: OnceLock<Mutex<Vec<Weak<Claim>>>> = OnceLock::new();
    if !valid_owner(owner) {
        return Err(io::Error::other(format!(
            "owner {owner:?} cannot name nftables tables: letters, digits and '-' only, at most 64"
        )));
    }
    let mut claims = CLAIMS.get_or_init(Default::default).lock();
    claims.retain(|w| w.strong_count() > 0);
    if let Some(c) = claims
        .iter()
        .filter_map(Weak::upgrade)
        .find(|c| c.owner == owner)
    {
        return Ok(c);
    }
    let socket = UnixDatagram::bind_addr(&address(owner)?).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                e.kind(),
                format!("another live process on this host runs as server {owner}"),
            )
        } else {
            e
        }
    })?;
    let c = Arc::new(Claim {
        owner: owner.to_string(),
        _socket: socket,
    });
    claims.push(Arc::downgrade(&c));
    Ok(c)
}

/// A claim for a process that has no server id (tools and tests): a random one.
pub fn claim_anonymous() -> io::Result<Arc<Claim>> {
    static ANON: OnceLock<String> = OnceLock::new();
    let owner = ANON.get_or_init(|| {
        let mut bytes = [0u8; 8];
        if getrandom(&mut bytes).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            bytes = ((t as u64) ^ u64::from(std::process::id())).to_le_bytes();
        }
        format!(
            "anon-{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    });
    claim(owner)
}

fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// Whether the server that owns a table named after `owner` is alive. Tables that earlier
/// versions named after a process id (a number of at most 7 digits; server ids are 32 hex
/// digits) are judged by that process, so that a host running both versions during an upgrade
/// keeps the older servers' tables; every other owner by its claim.
pub fn table_owner_alive(owner: &str) -> bool {
    if owner.len() <= 7 && owner.bytes().all(|b| b.is_ascii_digit()) {
        return std::path::Path::new("/proc").join(owner).exists();
    }
    is_alive(owner)
}

/// Whether a live process on this host holds `owner`.
pub fn is_alive(owner: &str) -> bool {
    let Ok(addr) = address(owner) else {
        return false;
    };
    let Ok(probe) = UnixDatagram::unbound() else {
        // Cannot tell: never take a live server's tables for dead ones.
        return true;
    };
    match probe.connect_addr(&addr) {
        Ok(()) => true,
        Err(e) => e.kind() != io::ErrorKind::ConnectionRefused,
    }
}

/// The owner and sequence number of a table named `<prefix><owner>_<n>`.
pub fn parse_table<'a>(name: &'a str, prefix: &str) -> Option<(&'a str, u32)> {
    let rest = name.strip_prefix(prefix)?;
    let (owner, n) = rest.rsplit_once('_')?;
    let n = n.parse().ok()?;
    valid_owner(owner).then_some((owner, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_seen_alive_until_dropped() {
        let owner = "test-liveness-0f3a";
        assert!(!is_alive(owner));
        let c = claim(owner).unwrap();
        assert!(is_alive(owner));
        let again = claim(owner).unwrap();
        assert!(Arc::ptr_eq(&c, &again), "shared within the process");
        drop((c, again));
        assert!(!is_alive(owner));
    }

    #[test]
    fn tables_of_earlier_versions_are_judged_by_their_process() {
        assert!(table_owner_alive(&std::process::id().to_string()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!table_owner_alive(&pid.to_string()));
        assert!(!table_owner_alive("0123456789abcdef0123456789abcdef"));
    }

    #[test]
    fn owners_and_table_names() {
        assert!(valid_owner("0123abcdef"));
        assert!(!valid_owner("a_b") && !valid_owner("") && !valid_owner("a b"));
        assert!(claim("bad owner").is_err());
        assert_eq!(
            parse_table("stratus_abc-1_7", "stratus_"),
            Some(("abc-1", 7))
        );
        assert_eq!(
            parse_table("stratus_guard_ff00_0", "stratus_guard_"),
            Some(("ff00", 0))
        );
        assert_eq!(parse_table("stratus_123_x", "stratus_"), None);
        assert_eq!(parse_table("other_1_2", "stratus_"), None);
    }
}
