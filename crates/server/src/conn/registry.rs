//! Which connections are open, from where, and which one gives way when there is no room.
//!
//! Owns the connection cap and the fair share per client address. A new connection is admitted
//! while the server holds fewer than `max_total` connections and its address fewer than
//! `max_per_ip`. When a cap is reached, a connection that is not serving a request (idle between
//! requests, or still waiting for a request's header) gives way, the oldest first: from the new
//! connection's own address when that address is at its cap, else from the address holding the
//! most connections (never from an address holding fewer than the newcomer's would). A connection
//! in the middle of a request is never cut to make room; when nothing can give way the newcomer
//! is refused. So one address (or a few) holding connections open cannot keep others out, and a
//! busy NAT still gets up to `max_per_ip` connections.
//!
//! It never closes a socket itself: it flags a connection and wakes its task, which closes it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A client address as the caps count it: an IPv4 address, or an IPv6 /64 (one host easily owns
/// a whole prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct IpKey(u128);

impl IpKey {
    pub(crate) fn of(ip: IpAddr) -> IpKey {
        match ip {
            IpAddr::V4(v4) => IpKey(u32::from(v4) as u128),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpKey(u32::from(v4) as u128),
                None => IpKey((u128::from(v6) >> 64 << 64) | (1 << 32)),
            },
        }
    }
}

/// What a connection's task and its I/O share: the phase the connection is in and since when.
#[derive(Debug)]
pub(crate) struct ConnState {
    ip: IpKey,
    epoch: Instant,
    /// Requests being served (more than one only with HTTP/2).
    in_flight: AtomicU32,
    /// True from the first byte of a request's header until the request is handed over (and for a
    /// new connection, from the accept).
    reading_head: AtomicBool,
    /// Milliseconds since `epoch` when the current phase began.
    since_ms: AtomicU64,
    /// Milliseconds since `epoch` + 1 when a write started waiting for the client; 0 otherwise.
    write_blocked_ms: AtomicU64,
    /// Asked to close once it is not serving a request.
    shed: AtomicBool,
    /// Milliseconds since `epoch` at which the connection's task will next look at the phase (its
    /// timer); `u64::MAX` when it will not. A change of phase wakes the task only when the new
    /// phase's deadline comes sooner: a timer that fires early just finds the deadline moved and
    /// sleeps again, so a connection serving requests back to back costs no wake-up and no timer
    /// update per request (measured: two of each per request took 8-10 % off `GET /getnonce`).
    armed_ms: AtomicU64,
    timeouts: Timeouts,
    /// Wakes the connection's task to look at its phase again.
    pub(crate) wake: Notify,
}

/// What the connection's task should do at a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overdue {
    /// Idle between requests too long: close it gracefully.
    Idle,
    /// The request header did not arrive in time, or the client stopped reading the response:
    /// drop the connection.
    Stalled,
}

/// The three timeouts a connection is held to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
    pub send: Duration,
}

impl ConnState {
    fn new(ip: IpKey, epoch: Instant, timeouts: Timeouts) -> ConnState {
        let s = ConnState {
            ip,
            epoch,
            armed_ms: AtomicU64::new(u64::MAX),
            timeouts,
            in_flight: AtomicU32::new(0),
            reading_head: AtomicBool::new(true),
            since_ms: AtomicU64::new(0),
            write_blocked_ms: AtomicU64::new(0),
            shed: AtomicBool::new(false),
            wake: Notify::new(),
        };
        s.since_ms.store(s.now_ms(), Ordering::Relaxed);
        s
    }

    fn now_ms(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Wakes the task if `deadline_ms` comes before the time its timer is armed for.
    fn wake_if_sooner(&self, deadline_ms: u64) {
        // Pairs with the fence in `armed`: either the task sees the new phase when it re-reads
        // the deadline after arming, or this sees the time it armed.
        fence(Ordering::SeqCst);
        if deadline_ms < self.armed_ms.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }

    /// The connection's task armed its timer for `at` (`None`: not armed). It must read the
    /// deadline again afterwards (see [`ConnState::wake_if_sooner`]).
    pub(crate) fn armed(&self, at: Option<Instant>) {
        let ms = at.map_or(u64::MAX, |at| {
            // Rounded down: a wake-up is never skipped for a deadline in the same millisecond.
            at.saturating_duration_since(self.epoch).as_millis() as u64
        });
        self.armed_ms.store(ms, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    fn ms(d: Duration) -> u64 {
        d.as_millis() as u64
    }

    /// Serving at least one request.
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Asked to give way.
    pub(crate) fn shed_requested(&self) -> bool {
        self.shed.load(Ordering::Acquire)
    }

    /// Bytes arrived from the client.
    pub(crate) fn on_read(&self) {
        if !self.busy() && !self.reading_head.load(Ordering::Relaxed) {
            let now = self.now_ms();
            self.since_ms.store(now, Ordering::Relaxed);
            self.reading_head.store(true, Ordering::Release);
            self.wake_if_sooner(now + Self::ms(self.timeouts.header));
        }
    }

    /// A write could not proceed (the client is not reading) or went through.
    pub(crate) fn on_write(&self, blocked: bool) {
        let cur = self.write_blocked_ms.load(Ordering::Relaxed);
        if blocked && cur == 0 {
            let now = self.now_ms();
            self.write_blocked_ms.store(now + 1, Ordering::Relaxed);
            self.wake_if_sooner(now + Self::ms(self.timeouts.send));
        } else if !blocked && cur != 0 {
            self.write_blocked_ms.store(0, Ordering::Relaxed);
        }
    }

    /// A request's header has been read: it is being served.
    pub(crate) fn begin_request(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.reading_head.store(false, Ordering::Relaxed);
    }

    /// A request's answer has been sent (or abandoned).
    pub(crate) fn end_request(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let now = self.now_ms();
            self.since_ms.store(now, Ordering::Relaxed);
            self.wake_if_sooner(now + Self::ms(self.timeouts.idle));
        }
    }

    /// When the current phase runs out, and what is due then.
    pub(crate) fn deadline(&self) -> Option<(Instant, Overdue)> {
        let t = &self.timeouts;
        if self.busy() {
            return match self.write_blocked_ms.load(Ordering::Relaxed) {
                0 => None,
                ms => Some((self.at(ms - 1) + t.send, Overdue::Stalled)),
            };
        }
        let since = self.at(self.since_ms.load(Ordering::Relaxed));
        if self.reading_head.load(Ordering::Acquire) {
            Some((since + t.header, Overdue::Stalled))
        } else {
            Some((since + t.idle, Overdue::Idle))
        }
    }

    /// The start of the current phase, for choosing the oldest to give way.
    fn since(&self) -> u64 {
        self.since_ms.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct Inner {
    total: usize,
    /// Connections asked to give way that have not closed yet: room that is on its way.
    leaving: usize,
    by_ip: HashMap<IpKey, Vec<Arc<ConnState>>>,
}

/// The open connections of one listener.
#[derive(Debug)]
pub(crate) struct Registry {
    max_total: usize,
    max_per_ip: usize,
    timeouts: Timeouts,
    epoch: Instant,
    inner: Mutex<Inner>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its address holds `max_per_ip` connections, all serving requests.
    AddressFull,
    /// The server holds `max_total` connections and none can give way.
    ServerFull,
}

impl Registry {
    pub(crate) fn new(max_total: usize, max_per_ip: usize, timeouts: Timeouts) -> Registry {
        Registry {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            timeouts,
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
        }
    }

    pub(crate) fn max_total(&self) -> usize {
        self.max_total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state is a set of counters that every step leaves consistent: a panic elsewhere
        // must not stop the server from accepting.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection from `ip`, making room if a cap is reached. Connections already asked
    /// to give way count as room on its way, so a burst of newcomers while they close does not
    /// make more connections give way than needed, nor refuse anyone.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Arc<ConnState>, Refused> {
        let key = IpKey::of(ip);
        let mut inner = self.lock();
        let (mine, mine_leaving) = inner.by_ip.get(&key).map_or((0, 0), |l| {
            (l.len(), l.iter().filter(|s| s.shed_requested()).count())
        });
        if mine - mine_leaving >= self.max_per_ip {
            if !shed_oldest(inner.by_ip.get(&key)) {
                return Err(Refused::AddressFull);
            }
            inner.leaving += 1;
            metrics::counter!("stratus_http_connections_shed_total", "why" => "address_full")
                .increment(1);
        } else if inner.total - inner.leaving >= self.max_total {
            // Addresses holding the most connections give way first; never one holding fewer
            // than this address will.
            let mut crowded: Vec<(usize, IpKey)> = inner
                .by_ip
                .iter()
                .filter(|(_, v)| v.len() > mine)
                .map(|(k, v)| (v.len(), *k))
                .collect();
            crowded.sort_unstable_by_key(|c| std::cmp::Reverse(c.0));
            let made_room = crowded.iter().any(|(_, k)| shed_oldest(inner.by_ip.get(k)))
                || shed_oldest(inner.by_ip.get(&key));
            if !made_room {
                return Err(Refused::ServerFull);
            }
            inner.leaving += 1;
            metrics::counter!("stratus_http_connections_shed_total", "why" => "server_full")
                .increment(1);
        }
        let state = Arc::new(ConnState::new(key, self.epoch, self.timeouts));
        inner.total += 1;
        inner.by_ip.entry(key).or_default().push(state.clone());
        Ok(state)
    }

    /// Forgets a closed connection.
    pub(crate) fn release(&self, state: &Arc<ConnState>) {
        let mut inner = self.lock();
        if let Some(list) = inner.by_ip.get_mut(&state.ip) {
            if let Some(i) = list.iter().position(|s| Arc::ptr_eq(s, state)) {
                list.swap_remove(i);
                let empty = list.is_empty();
                if empty {
                    inner.by_ip.remove(&state.ip);
                }
                inner.total -= 1;
                if state.shed_requested() {
                    inner.leaving -= 1;
                }
            }
        }
    }

    /// Asks the oldest connection that is not serving a request, from any address, to give way
    /// (the process ran out of descriptors). False when there is none.
    pub(crate) fn shed_any(&self) -> bool {
        let mut inner = self.lock();
        let oldest = inner
            .by_ip
            .values()
            .flatten()
            .filter(|s| !s.busy() && !s.shed_requested())
            .min_by_key(|s| s.since())
            .cloned();
        match oldest {
            Some(s) => {
                request_shed(&s);
                inner.leaving += 1;
                true
            }
            None => false,
        }
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.lock().total
    }

    /// Asks every connection to close once it is not serving a request (shutdown).
    pub(crate) fn shed_all(&self) {
        let mut inner = self.lock();
        let mut flagged = 0;
        for s in inner.by_ip.values().flatten() {
            if !s.shed_requested() {
                request_shed(s);
                flagged += 1;
            }
        }
        inner.leaving += flagged;
    }
}

fn request_shed(s: &ConnState) {
    s.shed.store(true, Ordering::Release);
    s.wake.notify_one();
}

/// Asks the oldest connection of `list` that is not serving a request to give way.
fn shed_oldest(list: Option<&Vec<Arc<ConnState>>>) -> bool {
    let Some(list) = list else { return false };
    match list
        .iter()
        .filter(|s| !s.busy() && !s.shed_requested())
        .min_by_key(|s| s.since())
    {
        Some(s) => {
            request_shed(s);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(15),
        idle: Duration::from_secs(60),
        send: Duration::from_secs(60),
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_counts_per_64() {
        assert_eq!(
            IpKey::of(ip("2001:db8:1:2::1")),
            IpKey::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            IpKey::of(ip("2001:db8:1:2::1")),
            IpKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(IpKey::of(ip("::ffff:10.0.0.1")), IpKey::of(ip("10.0.0.1")));
        assert_ne!(IpKey::of(ip("::1")), IpKey::of(ip("0.0.0.1")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_address_gives_way_oldest_first_and_busy_ones_never() {
        let r = Registry::new(100, 2, T);
        let a1 = r.admit(ip("10.0.0.1")).unwrap();
        tokio::time::advance(Duration::from_millis(5)).await;
        let a2 = r.admit(ip("10.0.0.1")).unwrap();
        let a3 = r.admit(ip("10.0.0.1")).unwrap();
        assert!(a1.shed_requested() && !a2.shed_requested());
        r.release(&a1);
        a2.begin_request();
        a3.begin_request();
        assert_eq!(r.admit(ip("10.0.0.1")).unwrap_err(), Refused::AddressFull);
        // Other addresses are not affected.
        r.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(r.open(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_server_takes_room_from_the_most_crowded_address() {
        let r = Registry::new(4, 10, T);
        let crowd: Vec<_> = (0..3).map(|_| r.admit(ip("10.0.0.9")).unwrap()).collect();
        let other = r.admit(ip("10.0.0.1")).unwrap();
        let newcomer = r.admit(ip("10.0.0.2")).unwrap();
        assert!(crowd[0].shed_requested(), "the crowded address gives way");
        assert!(!other.shed_requested() && !newcomer.shed_requested());
        // When every connection of the crowded address is busy and nobody else holds more than
        // the newcomer would, the newcomer is refused.
        for c in &crowd {
            c.begin_request();
        }
        other.begin_request();
        newcomer.begin_request();
        assert_eq!(r.admit(ip("10.0.0.3")).unwrap_err(), Refused::ServerFull);
    }

    #[tokio::test(start_paused = true)]
    async fn connections_on_their_way_out_count_as_room() {
        let r = Registry::new(2, 10, T);
        let a = r.admit(ip("10.0.0.1")).unwrap();
        let b = r.admit(ip("10.0.0.1")).unwrap();
        // Full: the newcomer makes the oldest give way…
        let c = r.admit(ip("10.0.0.1")).unwrap();
        assert!(a.shed_requested() && !b.shed_requested());
        // …and a second newcomer, while the first leaver has not closed yet, the next one.
        let d = r.admit(ip("10.0.0.1")).unwrap();
        assert!(b.shed_requested() && !c.shed_requested());
        r.release(&a);
        r.release(&b);
        assert_eq!(r.open(), 2);
        // Nothing is leaving now, and the two left are busy: no room.
        c.begin_request();
        d.begin_request();
        assert_eq!(r.admit(ip("10.0.0.2")).unwrap_err(), Refused::ServerFull);
    }

    #[tokio::test(start_paused = true)]
    async fn phases_and_deadlines() {
        let t = Timeouts {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            send: Duration::from_secs(30),
        };
        let r = Registry::new(10, 10, t);
        let s = r.admit(ip("10.0.0.1")).unwrap();
        let born = Instant::now();
        // A new connection must send its header in time.
        assert_eq!(s.deadline(), Some((born + t.header, Overdue::Stalled)));
        s.begin_request();
        assert_eq!(s.deadline(), None, "a request being served has no deadline");
        s.on_write(true);
        assert_eq!(s.deadline(), Some((born + t.send, Overdue::Stalled)));
        s.on_write(false);
        tokio::time::advance(Duration::from_secs(5)).await;
        s.end_request();
        let idle = Instant::now();
        assert_eq!(s.deadline(), Some((idle + t.idle, Overdue::Idle)));
        tokio::time::advance(Duration::from_secs(1)).await;
        s.on_read();
        assert_eq!(
            s.deadline(),
            Some((Instant::now() + t.header, Overdue::Stalled)),
            "the header timeout counts from the first byte of the next request"
        );
    }

    /// Whether a wake-up is pending (takes it).
    async fn woken(s: &ConnState) -> bool {
        tokio::time::timeout(Duration::from_millis(1), s.wake.notified())
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_phase_change_wakes_the_task_only_for_a_sooner_deadline() {
        let r = Registry::new(10, 10, T);
        let s = r.admit(ip("10.0.0.1")).unwrap();
        // Nothing armed: the first idle deadline wakes the task.
        s.begin_request();
        s.end_request();
        assert!(woken(&s).await);
        s.armed(s.deadline().map(|d| d.0));
        // The next request's header is due sooner than the idle deadline: wake.
        tokio::time::advance(Duration::from_secs(1)).await;
        s.on_read();
        assert!(woken(&s).await);
        s.armed(s.deadline().map(|d| d.0));
        // Back-to-back requests move deadlines later only: no wake-up per request.
        for _ in 0..3 {
            s.begin_request();
            s.end_request();
            tokio::time::advance(Duration::from_millis(10)).await;
            s.on_read();
            assert!(!woken(&s).await);
        }
        // A client that stops reading the answer brings the send deadline forward of nothing
        // armed (the timer fired while the request was being served): wake.
        s.begin_request();
        s.armed(None);
        s.on_write(true);
        assert!(woken(&s).await);
    }
}
