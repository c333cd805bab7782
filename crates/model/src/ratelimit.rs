//! Rate limits: token buckets keyed by client IP or account ([`Limiter`], on `governor`), and the
//! guard against password guessing ([`LoginGuard`]) that slows attackers down without locking
//! owners out.
//!
//! What is shared between the nodes of a deployment and what is not:
//!
//! - **Shared (in the store):** the login lockout per account and client address, and the lock on
//!   wrong old passwords of a password change ([`SharedFailures`], table `login_failures`); the
//!   per-account request budgets ([`SharedLimiter`], table `rate_buckets`). A lock earned, or a
//!   budget spent, through one node holds on every node.
//! - **Per node (in memory):** the per-client-address token buckets ([`Limiter`]), the lock on
//!   an address spraying many accounts, and the per-account slowdown queue (it holds waiting
//!   requests, which only exist on one node). A scaled-out deployment gives each client address
//!   these budgets once per node.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use stratus_config::Rate;
use tokio::time::Instant;

use crate::clock::SharedClock;
use crate::db::Db;
use crate::{Error, Result};

/// governor's keyed limiter (`DefaultKeyedRateLimiter<String>` with the default clock).
type Keyed<C> =
    RateLimiter<String, DefaultKeyedStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A keyed token-bucket limiter: each key may spend `burst` requests at once, refilled at
/// `per_minute` (governor's GCRA, which is exactly that bucket). `per_minute = 0` or a disabled
/// configuration lets everything through. [`Limiter::sweep`] forgets the keys whose bucket is full
/// again, so memory stays bounded by the keys seen between two sweeps.
///
/// Production uses governor's default (monotonic) clock; tests pass a fake one.
#[derive(Debug, Clone)]
pub struct Limiter<C: Clock = DefaultClock> {
    inner: Option<Arc<Keyed<C>>>,
}

impl Limiter {
    pub fn new(rate: Rate, disabled: bool) -> Self {
        Self::with_clock(rate, disabled, DefaultClock::default())
    }
}

impl<C: Clock> Limiter<C> {
    /// A limiter reading time from `clock`.
    pub fn with_clock(rate: Rate, disabled: bool, clock: C) -> Self {
        let quota = NonZeroU32::new(rate.per_minute)
            .filter(|_| !disabled)
            .map(|per_minute| {
                Quota::per_minute(per_minute)
                    .allow_burst(NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN))
            });
        Limiter {
            inner: quota.map(|q| Arc::new(RateLimiter::dashmap_with_clock(q, clock))),
        }
    }

    /// Takes one token for `key`, or says how long to wait (whole seconds, at least 1).
    pub fn check(&self, key: &str) -> Result<()> {
        let Some(limiter) = &self.inner else {
            return Ok(());
        };
        limiter.check_key(&key.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            Error::RateLimited {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }

    /// Forgets the keys whose bucket is full again (they are as good as new).
    pub fn sweep(&self) {
        if let Some(limiter) = &self.inner {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |l| l.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A keyed token bucket kept in the store, so that every node spends from the same budget: the
/// per-account limits ([`SharedLimiter::check`] is one statement). The same bucket as
/// [`Limiter`]'s (GCRA: `burst` at once, refilled at `per_minute`), on the nodes' clocks (which
/// should agree, as for token expiry). Its rows live until their bucket is full again;
/// [`SharedLimiter::sweep`] deletes those.
#[derive(Debug, Clone)]
pub struct SharedLimiter {
    db: Db,
    clock: SharedClock,
    kind: &'static str,
    /// Milliseconds per token; `None`: unlimited.
    interval: Option<i64>,
    /// How far ahead of now the bucket may run: `burst` tokens.
    tolerance: i64,
}

impl SharedLimiter {
    /// A budget called `kind` (`login` or `tokens`, as the table's check allows).
    pub fn new(db: Db, clock: SharedClock, kind: &'static str, rate: Rate, disabled: bool) -> Self {
        let interval = (rate.per_minute > 0 && !disabled)
            .then(|| (60_000 / i64::from(rate.per_minute)).max(1));
        SharedLimiter {
            db,
            clock,
            kind,
            interval,
            tolerance: interval.unwrap_or(0) * i64::from(rate.burst.max(1)),
        }
    }

    /// Takes one token for `key`, or says how long to wait (whole seconds, at least 1).
    pub async fn check(&self, key: &str) -> Result<()> {
        let Some(t) = self.interval else {
            return Ok(());
        };
        let now = self.clock.now_ms();
        // The new arrival time is max(tat, now) + t; it is taken only if it stays within
        // `tolerance` of now (no row comes back otherwise).
        let taken: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO rate_buckets (kind, key, tat) VALUES ($1, $2, $3 + $4) \
             ON CONFLICT (kind, key) DO UPDATE SET \
               tat = (CASE WHEN rate_buckets.tat > $3 THEN rate_buckets.tat ELSE $3 END) + $4 \
             WHERE (CASE WHEN rate_buckets.tat > $3 THEN rate_buckets.tat ELSE $3 END) + $4 \
                   <= $3 + $5 \
             RETURNING tat",
        )
        .bind(self.kind)
        .bind(key)
        .bind(now)
        .bind(t)
        .bind(self.tolerance)
        .fetch_optional(self.db.w())
        .await?;
        if taken.is_some() {
            return Ok(());
        }
        let tat: Option<(i64,)> =
            sqlx::query_as("SELECT tat FROM rate_buckets WHERE kind = $1 AND key = $2")
                .bind(self.kind)
                .bind(key)
                .fetch_optional(self.db.r())
                .await?;
        let wait_ms = tat.map_or(t, |(tat,)| tat + t - self.tolerance - now);
        Err(Error::RateLimited {
            retry_after_secs: ((wait_ms.max(1) as u64).div_ceil(1000)).max(1),
        })
    }

    /// Deletes the buckets that are full again; returns how many.
    pub async fn sweep(&self) -> Result<u64> {
        let r = sqlx::query("DELETE FROM rate_buckets WHERE kind = $1 AND tat <= $2")
            .bind(self.kind)
            .bind(self.clock.now_ms())
            .execute(self.db.w())
            .await?;
        Ok(r.rows_affected())
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

impl Failures {
    fn locked(&self, now: Instant) -> Option<Duration> {
        self.locked_until.filter(|u| *u > now).map(|u| u - now)
    }
}

/// Consecutive failures per key; after `after` of them each further failure locks the key for
/// twice as long as the last (1 s, 2 s, 4 s, …, at most `max`). Records are forgotten once they
/// have been quiet for `forget`, and at most `capacity` keys are tracked (past it new keys are
/// not recorded, so random keys cannot grow memory).
#[derive(Debug)]
struct Backoff {
    after: u32,
    max: Duration,
    forget: Duration,
    capacity: usize,
    map: DashMap<String, Failures>,
}

impl Backoff {
    fn new(after: u32, max: Duration, forget: Duration, capacity: usize) -> Self {
        Backoff {
            after: after.max(1),
            max,
            forget,
            capacity,
            map: DashMap::new(),
        }
    }

    fn locked(&self, key: &str, now: Instant) -> Option<Duration> {
        self.map.get(key).and_then(|f| f.locked(now))
    }

    fn failed(&self, key: &str, now: Instant) -> u32 {
        if !self.map.contains_key(key) && self.map.len() >= self.capacity {
            return 0;
        }
        let mut f = self.map.entry(key.to_string()).or_insert(Failures {
            count: 0,
            last: now,
            locked_until: None,
        });
        f.count = f.count.saturating_add(1);
        f.last = now;
        if f.count >= self.after {
            let exp = (f.count - self.after).min(20);
            let lock = Duration::from_secs(1u64 << exp).min(self.max);
            f.locked_until = Some(now + lock);
        }
        f.count
    }

    fn count(&self, key: &str) -> u32 {
        self.map.get(key).map_or(0, |f| f.count)
    }

    fn clear(&self, key: &str) {
        self.map.remove(key);
    }

    fn sweep(&self, now: Instant) {
        self.map.retain(|_, f| {
            let quiet_since = f.locked_until.map_or(f.last, |u| u.max(f.last));
            now.saturating_duration_since(quiet_since) < self.forget
        });
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// What the per-account slowdown knows of one account.
#[derive(Debug)]
struct AccountWatch {
    /// Failures from addresses the account does not trust, since the last success.
    failures: u32,
    last_failure: Instant,
    /// Addresses the owner logged in from lately, with when.
    trusted: Vec<(String, Instant)>,
    /// One attempt at a time from untrusted addresses while the account is under attack.
    gate: Arc<tokio::sync::Semaphore>,
    waiting: usize,
}

/// Most addresses an account remembers as its owner's.
const TRUSTED_PER_ACCOUNT: usize = 8;
/// How long a successful login makes an address trusted.
const TRUST_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most attempts queued for one account's slot before further ones are told to retry.
const QUEUE_PER_ACCOUNT: usize = 16;
/// Longest pause before an attempt on an account under attack.
const MAX_SLOWDOWN: Duration = Duration::from_secs(2);

/// One attempt waiting for its account's slot.
struct Queued<'a> {
    accounts: &'a DashMap<String, AccountWatch>,
    account: &'a str,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if let Some(mut w) = self.accounts.get_mut(self.account) {
            w.waiting = w.waiting.saturating_sub(1);
        }
    }
}

/// Held while a password is checked; lets the next queued attempt on the account go when dropped.
#[derive(Debug)]
pub struct LoginPermit {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Slows password guessing without letting anyone lock an owner out.
///
/// - **Per account and address**: after `after` consecutive failures from one address, that
///   address's attempts on that account are locked for 1 s, 2 s, 4 s … up to `max`. The owner's
///   own address is not affected by an attacker's failures.
/// - **Per address**: an address failing on many accounts (password spraying) is locked after
///   `4 × after` failures, with the same doubling.
/// - **Per account, a slowdown, never a denial**: once an account has `after` recent failures from
///   addresses it does not trust, attempts from such addresses wait their turn, one at a time,
///   after a pause that doubles up to 2 s; at most 16 wait (further ones are told to retry in a
///   second). Addresses the owner logged in from in the last 30 days skip the queue.
/// - Records are forgotten after `2 × max` without failures (at least 15 minutes), and each table
///   is bounded, so random usernames cannot grow memory.
///
/// Failures of the password check of a password change are kept apart (per account and address),
/// and the login locks never apply to an owner holding a valid token.
#[derive(Debug, Clone)]
pub struct LoginGuard {
    after: u32,
    disabled: bool,
    pairs: Arc<Backoff>,
    addresses: Arc<Backoff>,
    changes: Arc<Backoff>,
    accounts: Arc<DashMap<String, AccountWatch>>,
    forget: Duration,
    capacity: usize,
    /// Where the per-account-and-address records live when they are shared (else `pairs` and
    /// `changes` in memory).
    shared: Option<SharedFailures>,
}

impl LoginGuard {
    pub fn new(after: u32, max: Duration, disabled: bool) -> Self {
        Self::with_capacity(after, max, disabled, 100_000)
    }

    /// [`LoginGuard::new`] with a bound on every table.
    pub fn with_capacity(after: u32, max: Duration, disabled: bool, capacity: usize) -> Self {
        let after = after.max(1);
        let forget = (max * 2).max(Duration::from_secs(15 * 60));
        LoginGuard {
            after,
            disabled,
            pairs: Arc::new(Backoff::new(after, max, forget, capacity)),
            addresses: Arc::new(Backoff::new(after.saturating_mul(4), max, forget, capacity)),
            changes: Arc::new(Backoff::new(after, max, forget, capacity)),
            accounts: Arc::new(DashMap::new()),
            forget,
            capacity,
            shared: None,
        }
    }

    /// Keeps the per-account-and-address records (logins and password changes) in `db`, shared
    /// with every node on it, on `clock`'s time.
    pub fn shared(mut self, db: Db, clock: SharedClock, max: Duration) -> Self {
        self.shared = Some(SharedFailures {
            db,
            clock,
            after: self.after,
            max,
            forget: self.forget,
            capacity: self.capacity as i64,
            rows: Arc::new(std::sync::atomic::AtomicI64::new(0)),
        });
        self
    }

    fn pair(account: &str, address: &str) -> String {
        format!("{address}\u{0}{account}")
    }

    fn refuse(d: Duration) -> Error {
        Error::RateLimited {
            retry_after_secs: d.as_secs_f64().ceil().max(1.0) as u64,
        }
    }

    /// Lets a password attempt on `account` from `address` go ahead (perhaps after a wait), or
    /// says how long to wait. Hold the permit while the password is checked.
    pub async fn admit(&self, account: &str, address: &str) -> Result<LoginPermit> {
        let none = LoginPermit { _permit: None };
        if self.disabled {
            return Ok(none);
        }
        let now = Instant::now();
        let locked = match &self.shared {
            Some(sh) => sh.locked(Kind::Login, account, address).await?,
            None => self.pairs.locked(&Self::pair(account, address), now),
        };
        if let Some(d) = locked {
            return Err(Self::refuse(d));
        }
        if let Some(d) = self.addresses.locked(address, now) {
            return Err(Self::refuse(d));
        }
        let (gate, pause) = {
            let Some(mut w) = self.accounts.get_mut(account) else {
                return Ok(none);
            };
            if w.failures < self.after || w.trusted.iter().any(|(a, _)| a == address) {
                return Ok(none);
            }
            if w.waiting >= QUEUE_PER_ACCOUNT {
                return Err(Self::refuse(Duration::from_secs(1)));
            }
            w.waiting += 1;
            let exp = (w.failures - self.after).min(10);
            let pause = (Duration::from_millis(125) * (1u32 << exp)).min(MAX_SLOWDOWN);
            (w.gate.clone(), pause)
        };
        // Counted out again however the wait ends (the client may go away while it waits).
        let _queued = Queued {
            accounts: &self.accounts,
            account,
        };
        let permit = gate.acquire_owned().await;
        tokio::time::sleep(pause).await;
        Ok(LoginPermit {
            _permit: permit.ok(),
        })
    }

    /// The slowdown record of `account`, made if there is room for it.
    fn watch(
        &self,
        account: &str,
        now: Instant,
    ) -> Option<dashmap::mapref::one::RefMut<'_, String, AccountWatch>> {
        if !self.accounts.contains_key(account) && self.accounts.len() >= self.capacity {
            return None;
        }
        Some(
            self.accounts
                .entry(account.to_string())
                .or_insert_with(|| AccountWatch {
                    failures: 0,
                    last_failure: now,
                    trusted: Vec::new(),
                    gate: Arc::new(tokio::sync::Semaphore::new(1)),
                    waiting: 0,
                }),
        )
    }

    /// A wrong password (or unknown account) for `account` from `address`.
    pub async fn failed(&self, account: &str, address: &str) {
        if self.disabled {
            return;
        }
        let now = Instant::now();
        match &self.shared {
            Some(sh) => sh.record(Kind::Login, account, address).await,
            None => {
                self.pairs.failed(&Self::pair(account, address), now);
            }
        }
        self.addresses.failed(address, now);
        let Some(mut w) = self.watch(account, now) else {
            return;
        };
        if !w.trusted.iter().any(|(a, _)| a == address) {
            w.failures = w.failures.saturating_add(1);
        }
        w.last_failure = now;
    }

    /// The right password for `account` from `address`: that address's record is cleared and the
    /// address is trusted by the account from now on.
    pub async fn succeeded(&self, account: &str, address: &str) {
        if self.disabled {
            return;
        }
        let now = Instant::now();
        match &self.shared {
            Some(sh) => sh.clear(Kind::Login, account, address).await,
            None => self.pairs.clear(&Self::pair(account, address)),
        }
        let Some(mut w) = self.watch(account, now) else {
            return;
        };
        w.failures = 0;
        w.trusted.retain(|(a, _)| a != address);
        w.trusted.push((address.to_string(), now));
        if w.trusted.len() > TRUSTED_PER_ACCOUNT {
            w.trusted.remove(0);
        }
    }

    /// Refuses a password change's check while `account` has failed it too often from `address`.
    pub async fn check_change(&self, account: &str, address: &str) -> Result<()> {
        if self.disabled {
            return Ok(());
        }
        let locked = match &self.shared {
            Some(sh) => sh.locked(Kind::Change, account, address).await?,
            None => self
                .changes
                .locked(&Self::pair(account, address), Instant::now()),
        };
        match locked {
            Some(d) => Err(Self::refuse(d)),
            None => Ok(()),
        }
    }

    /// A wrong old password in a password change.
    pub async fn change_failed(&self, account: &str, address: &str) {
        if self.disabled {
            return;
        }
        match &self.shared {
            Some(sh) => sh.record(Kind::Change, account, address).await,
            None => {
                self.changes
                    .failed(&Self::pair(account, address), Instant::now());
            }
        }
    }

    /// Forgets what has been quiet for long (in the store too, when shared).
    pub async fn sweep(&self) -> Result<()> {
        if let Some(sh) = &self.shared {
            sh.sweep().await?;
        }
        self.sweep_memory();
        Ok(())
    }

    fn sweep_memory(&self) {
        let now = Instant::now();
        self.pairs.sweep(now);
        self.addresses.sweep(now);
        self.changes.sweep(now);
        self.accounts.retain(|_, w| {
            w.trusted
                .retain(|(_, at)| now.saturating_duration_since(*at) < TRUST_FOR);
            w.waiting > 0
                || !w.trusted.is_empty()
                || now.saturating_duration_since(w.last_failure) < self.forget
        });
    }

    /// Records kept now (every table), for tests and metrics.
    pub fn records(&self) -> usize {
        self.pairs.len() + self.addresses.len() + self.changes.len() + self.accounts.len()
    }

    /// Consecutive failures recorded for `account` from `address`.
    pub async fn failures(&self, account: &str, address: &str) -> Result<u32> {
        match &self.shared {
            Some(sh) => sh.count(Kind::Login, account, address).await,
            None => Ok(self.pairs.count(&Self::pair(account, address))),
        }
    }
}

/// Which password check a shared failure record counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Login,
    Change,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Login => "login",
            Kind::Change => "change",
        }
    }
}

/// The `SET` list that counts one more failure of a `login_failures` row (`$4`: now, `$5`: the
/// time before which a quiet run is over and starts again at 1).
const COUNT_FAILURE: &str = "\
    failures = CASE WHEN login_failures.last_failure <= $5 AND login_failures.locked_until <= $5 \
               THEN 1 ELSE login_failures.failures + 1 END, \
    window_start = CASE WHEN login_failures.last_failure <= $5 \
                        AND login_failures.locked_until <= $5 \
                   THEN $4 ELSE login_failures.window_start END, \
    last_failure = $4";

/// The per-account-and-address failure records in the store (`login_failures`), so that every
/// node sees the same counts and locks. Same rules as the in-memory ones: after `after`
/// consecutive failures each further one locks for twice as long as the last (1 s, 2 s, …, at
/// most `max`); a run that has been quiet for `forget` (no failure and no lock) starts again.
///
/// The table is bounded like the in-memory ones: while it holds `capacity` records (as last
/// counted by this node's sweep, plus the records this node added since), a failure for a pair
/// without a record adds none; pairs already recorded go on counting. Random usernames from many
/// addresses cannot grow it past `capacity` plus what the nodes add between two sweeps.
#[derive(Debug, Clone)]
pub struct SharedFailures {
    db: Db,
    clock: SharedClock,
    after: u32,
    max: Duration,
    forget: Duration,
    capacity: i64,
    /// Records in the table: counted at each sweep, raised by each record this node adds.
    rows: Arc<std::sync::atomic::AtomicI64>,
}

impl SharedFailures {
    fn ms(d: Duration) -> i64 {
        d.as_millis().min(i64::MAX as u128) as i64
    }

    /// How long `account` is still locked for `address`.
    async fn locked(&self, kind: Kind, account: &str, address: &str) -> Result<Option<Duration>> {
        let now = self.clock.now_ms();
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT locked_until FROM login_failures \
             WHERE kind = $1 AND account = $2 AND address = $3",
        )
        .bind(kind.as_str())
        .bind(account)
        .bind(address)
        .fetch_optional(self.db.r())
        .await?;
        Ok(row
            .filter(|(until,)| *until > now)
            .map(|(until,)| Duration::from_millis((until - now) as u64)))
    }

    /// Counts a failure (one statement), then sets the lock it earns; errors are logged (a
    /// failed login is refused either way).
    async fn record(&self, kind: Kind, account: &str, address: &str) {
        if let Err(e) = self.try_record(kind, account, address).await {
            tracing::warn!(error = %e, "cannot record a failed password check");
        }
    }

    async fn try_record(&self, kind: Kind, account: &str, address: &str) -> Result<u32> {
        let now = self.clock.now_ms();
        let quiet_since = now.saturating_sub(Self::ms(self.forget));
        let full = self.rows.load(std::sync::atomic::Ordering::Relaxed) >= self.capacity;
        let n = if full {
            self.count_existing(kind, account, address, now, quiet_since)
                .await?
        } else {
            self.upsert(kind, account, address, now, quiet_since)
                .await?
        };
        let Some(n) = n else { return Ok(0) };
        let n = n.clamp(0, u32::MAX as i64) as u32;
        if n >= self.after {
            let exp = (n - self.after).min(20);
            let until =
                now.saturating_add(Self::ms(Duration::from_secs(1u64 << exp).min(self.max)));
            // Only ever lengthens a lock (a concurrent failure may have set a longer one).
            sqlx::query(
                "UPDATE login_failures SET locked_until = $4 \
                 WHERE kind = $1 AND account = $2 AND address = $3 AND locked_until < $4",
            )
            .bind(kind.as_str())
            .bind(account)
            .bind(address)
            .bind(until)
            .execute(self.db.w())
            .await?;
        }
        Ok(n)
    }

    /// Counts a failure of a pair, recorded or not (one statement); returns the run's length.
    async fn upsert(
        &self,
        kind: Kind,
        account: &str,
        address: &str,
        now: i64,
        quiet_since: i64,
    ) -> Result<Option<i64>> {
        let (n,): (i64,) = sqlx::query_as(&format!(
            "INSERT INTO login_failures \
               (kind, account, address, failures, window_start, last_failure, locked_until) \
             VALUES ($1, $2, $3, 1, $4, $4, 0) \
             ON CONFLICT (kind, account, address) DO UPDATE SET {COUNT_FAILURE} \
             RETURNING failures"
        ))
        .bind(kind.as_str())
        .bind(account)
        .bind(address)
        .bind(now)
        .bind(quiet_since)
        .fetch_one(self.db.w())
        .await?;
        if n == 1 {
            // A new record (or a run started again: counted too, until the next sweep counts).
            self.rows.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(Some(n))
    }

    /// Counts a failure of a pair only if it is recorded (the table is full); `None` if not.
    async fn count_existing(
        &self,
        kind: Kind,
        account: &str,
        address: &str,
        now: i64,
        quiet_since: i64,
    ) -> Result<Option<i64>> {
        let row: Option<(i64,)> = sqlx::query_as(&format!(
            "UPDATE login_failures SET {COUNT_FAILURE} \
             WHERE kind = $1 AND account = $2 AND address = $3 RETURNING failures"
        ))
        .bind(kind.as_str())
        .bind(account)
        .bind(address)
        .bind(now)
        .bind(quiet_since)
        .fetch_optional(self.db.w())
        .await?;
        Ok(row.map(|(n,)| n))
    }

    async fn clear(&self, kind: Kind, account: &str, address: &str) {
        let r = sqlx::query(
            "DELETE FROM login_failures WHERE kind = $1 AND account = $2 AND address = $3",
        )
        .bind(kind.as_str())
        .bind(account)
        .bind(address)
        .execute(self.db.w())
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot clear failed password checks");
        }
    }

    async fn count(&self, kind: Kind, account: &str, address: &str) -> Result<u32> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT failures FROM login_failures WHERE kind = $1 AND account = $2 AND address = $3",
        )
        .bind(kind.as_str())
        .bind(account)
        .bind(address)
        .fetch_optional(self.db.r())
        .await?;
        Ok(row.map_or(0, |(n,)| n.clamp(0, u32::MAX as i64) as u32))
    }

    /// Deletes the records quiet for `forget` (no failure, no lock); returns how many.
    async fn sweep(&self) -> Result<u64> {
        let quiet_since = self.clock.now_ms().saturating_sub(Self::ms(self.forget));
        let r = sqlx::query(
            "DELETE FROM login_failures WHERE last_failure <= $1 AND locked_until <= $1",
        )
        .bind(quiet_since)
        .execute(self.db.w())
        .await?;
        let (left,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM login_failures")
            .fetch_one(self.db.r())
            .await?;
        self.rows.store(left, std::sync::atomic::Ordering::Relaxed);
        Ok(r.rows_affected())
    }

    /// Records kept (tests).
    #[cfg(test)]
    async fn stored(&self) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM login_failures")
            .fetch_one(self.db.r())
            .await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use governor::clock::FakeRelativeClock;

    fn limiter(per_minute: u32, burst: u32) -> (Limiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            Limiter::with_clock(Rate::new(per_minute, burst), false, clock.clone()),
            clock,
        )
    }

    fn retry_after(l: &Limiter<FakeRelativeClock>, key: &str) -> u64 {
        match l.check(key) {
            Err(Error::RateLimited { retry_after_secs }) => retry_after_secs,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn buckets_refill_per_key() {
        let (l, clock) = limiter(60, 2);
        l.check("a").unwrap();
        l.check("a").unwrap();
        assert_eq!(retry_after(&l, "a"), 1, "the burst is spent");
        l.check("b").unwrap();
        clock.advance(Duration::from_millis(999));
        assert_eq!(
            retry_after(&l, "a"),
            1,
            "a partial token rounds up to a second"
        );
        clock.advance(Duration::from_millis(1));
        l.check("a").unwrap();
        assert_eq!(retry_after(&l, "a"), 1);
        // A long pause refills up to the burst, never beyond it.
        clock.advance(Duration::from_secs(3600));
        l.check("a").unwrap();
        l.check("a").unwrap();
        assert_eq!(retry_after(&l, "a"), 1);
    }

    #[test]
    fn retry_after_counts_whole_seconds_to_the_next_token() {
        let (l, clock) = limiter(1, 1);
        l.check("k").unwrap();
        assert_eq!(retry_after(&l, "k"), 60);
        clock.advance(Duration::from_millis(30_500));
        assert_eq!(retry_after(&l, "k"), 30);
        clock.advance(Duration::from_millis(29_500));
        l.check("k").unwrap();
        // 120 a minute with a burst of 40: one token every half second.
        let (l, _) = limiter(120, 40);
        for _ in 0..40 {
            l.check("ip").unwrap();
        }
        assert_eq!(retry_after(&l, "ip"), 1);
    }

    #[test]
    fn a_burst_of_zero_still_lets_one_through() {
        let (l, _) = limiter(60, 0);
        l.check("k").unwrap();
        assert_eq!(retry_after(&l, "k"), 1);
    }

    #[test]
    fn disabled_or_zero_rate_limits_nothing() {
        let off = Limiter::new(Rate::new(1, 1), true);
        let zero = Limiter::new(Rate::new(0, 1), false);
        for _ in 0..1000 {
            off.check("k").unwrap();
            zero.check("k").unwrap();
        }
        assert!(off.is_empty() && zero.is_empty());
    }

    #[test]
    fn sweep_forgets_full_buckets_only() {
        let (l, clock) = limiter(60, 10);
        for i in 0..1000 {
            l.check(&format!("10.0.{}.{}", i / 256, i % 256)).unwrap();
        }
        for _ in 0..10 {
            l.check("busy").unwrap();
        }
        assert_eq!(l.len(), 1001);
        // Three seconds later the one-token buckets are full again; `busy` is still 7 short.
        clock.advance(Duration::from_secs(3));
        l.sweep();
        assert_eq!(l.len(), 1, "only the key still being refilled is kept");
        for _ in 0..3 {
            l.check("busy").unwrap();
        }
        assert_eq!(retry_after(&l, "busy"), 1, "its state survived the sweep");
        clock.advance(Duration::from_secs(15));
        l.sweep();
        assert!(l.is_empty());
        // A forgotten key starts again with a full burst.
        for _ in 0..10 {
            l.check("busy").unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn locks_are_per_account_and_address() {
        let g = LoginGuard::new(3, Duration::from_secs(900), false);
        for _ in 0..3 {
            g.admit("alice", "10.0.0.9").await.unwrap();
            g.failed("alice", "10.0.0.9").await;
        }
        assert!(
            g.admit("alice", "10.0.0.9").await.is_err(),
            "the attacker is locked"
        );
        // The owner, from an address the account trusts, is not.
        g.succeeded("alice", "10.0.0.1").await;
        g.admit("alice", "10.0.0.1").await.unwrap();
        tokio::time::advance(Duration::from_millis(1001)).await;
        g.admit("alice", "10.0.0.9").await.unwrap();
        g.failed("alice", "10.0.0.9").await;
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(
            g.admit("alice", "10.0.0.9").await.is_err(),
            "the second lock is 2 s"
        );
        g.admit("alice", "10.0.0.1").await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_spraying_many_accounts_is_locked() {
        let g = LoginGuard::new(2, Duration::from_secs(60), false);
        for i in 0..8 {
            g.failed(&format!("user{i}"), "10.0.0.9").await;
        }
        assert!(g.admit("someone-else", "10.0.0.9").await.is_err());
        g.admit("someone-else", "10.0.0.8").await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_account_under_attack_slows_new_addresses_but_never_refuses_trusted_ones() {
        let g = LoginGuard::new(3, Duration::from_secs(900), false);
        g.succeeded("alice", "10.0.0.1").await;
        for i in 0..10 {
            g.failed("alice", &format!("10.1.0.{i}")).await;
        }
        let start = Instant::now();
        g.admit("alice", "10.0.0.1").await.unwrap();
        assert_eq!(Instant::now(), start, "the owner's address skips the queue");
        let p = g.admit("alice", "10.2.0.1").await.unwrap();
        assert!(Instant::now() > start, "a new address waits");
        assert!(Instant::now() - start <= MAX_SLOWDOWN);
        drop(p);
        // A success from anywhere ends the slowdown.
        g.succeeded("alice", "10.2.0.1").await;
        let t = Instant::now();
        g.admit("alice", "10.3.0.1").await.unwrap();
        assert_eq!(Instant::now(), t);
    }

    #[tokio::test(start_paused = true)]
    async fn records_are_forgotten_and_bounded() {
        let g = LoginGuard::with_capacity(5, Duration::from_secs(60), false, 100);
        for i in 0..1000 {
            g.failed(
                &format!("random-{i}"),
                &format!("10.0.{}.{}", i / 256, i % 256),
            )
            .await;
        }
        assert!(g.records() <= 400, "bounded: {}", g.records());
        tokio::time::advance(Duration::from_secs(16 * 60)).await;
        g.sweep().await.unwrap();
        assert_eq!(g.records(), 0, "every quiet record is forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn password_change_failures_are_kept_apart() {
        let g = LoginGuard::new(2, Duration::from_secs(60), false);
        for _ in 0..5 {
            g.failed("alice", "10.0.0.9").await;
        }
        g.check_change("alice", "10.0.0.1").await.unwrap();
        g.change_failed("alice", "10.0.0.9").await;
        g.change_failed("alice", "10.0.0.9").await;
        assert!(g.check_change("alice", "10.0.0.9").await.is_err());
        g.check_change("alice", "10.0.0.1").await.unwrap();
    }

    /// Two nodes (two guards) on one database with one clock.
    async fn shared_guards_on(db: Db) {
        use crate::clock::ManualClock;
        let clock = ManualClock::new(1_700_000_000_000);
        let max = Duration::from_secs(60);
        let node = |db: &Db| {
            LoginGuard::new(3, max, false).shared(db.clone(), Arc::new(clock.clone()), max)
        };
        let (a, b) = (node(&db), node(&db));
        for _ in 0..2 {
            a.admit("alice", "10.0.0.9").await.unwrap();
            a.failed("alice", "10.0.0.9").await;
        }
        b.admit("alice", "10.0.0.9").await.unwrap();
        b.failed("alice", "10.0.0.9").await;
        assert_eq!(a.failures("alice", "10.0.0.9").await.unwrap(), 3);
        // The third failure (on node B) locks for 1 s, on both nodes.
        for g in [&a, &b] {
            match g.admit("alice", "10.0.0.9").await {
                Err(Error::RateLimited { retry_after_secs }) => assert_eq!(retry_after_secs, 1),
                other => panic!("expected a lock, got {other:?}"),
            }
        }
        // Not the owner's address, not another account.
        a.admit("alice", "10.0.0.1").await.unwrap();
        b.admit("bob", "10.0.0.9").await.unwrap();
        clock.advance_ms(1_001);
        a.admit("alice", "10.0.0.9").await.unwrap();
        a.failed("alice", "10.0.0.9").await;
        clock.advance_ms(1_500);
        assert!(
            b.admit("alice", "10.0.0.9").await.is_err(),
            "the second lock is 2 s"
        );
        clock.advance_ms(600);
        b.admit("alice", "10.0.0.9").await.unwrap();
        // A success clears the record everywhere.
        b.succeeded("alice", "10.0.0.9").await;
        assert_eq!(a.failures("alice", "10.0.0.9").await.unwrap(), 0);
        // Password-change failures are kept apart, shared too.
        a.failed("carol", "10.0.0.9").await;
        for _ in 0..3 {
            a.change_failed("carol", "10.0.0.9").await;
        }
        assert!(b.check_change("carol", "10.0.0.9").await.is_err());
        b.check_change("carol", "10.0.0.8").await.unwrap();
        // A run quiet for `forget` (15 min here) starts again, and is swept.
        let sh = a.shared.clone().unwrap();
        assert_eq!(sh.stored().await.unwrap(), 2);
        clock.advance_ms(15 * 60 * 1000 + 2_000);
        a.failed("carol", "10.0.0.9").await;
        assert_eq!(a.failures("carol", "10.0.0.9").await.unwrap(), 1);
        b.sweep().await.unwrap();
        assert_eq!(
            sh.stored().await.unwrap(),
            1,
            "only the fresh record is kept"
        );
    }

    /// Two nodes (two limiters) on one database spend one budget.
    async fn shared_limiter_on(db: Db) {
        use crate::clock::ManualClock;
        let clock = ManualClock::new(1_700_000_000_000);
        let rate = Rate::new(6, 3); // 3 at once, then one per 10 s
        let node =
            || SharedLimiter::new(db.clone(), Arc::new(clock.clone()), "tokens", rate, false);
        let (a, b) = (node(), node());
        a.check("alice").await.unwrap();
        b.check("alice").await.unwrap();
        a.check("alice").await.unwrap();
        for l in [&a, &b] {
            match l.check("alice").await {
                Err(Error::RateLimited { retry_after_secs }) => assert_eq!(retry_after_secs, 10),
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
        b.check("bob").await.unwrap();
        clock.advance_ms(4_000);
        match b.check("alice").await {
            Err(Error::RateLimited { retry_after_secs }) => assert_eq!(retry_after_secs, 6),
            other => panic!("expected a refusal, got {other:?}"),
        }
        clock.advance_ms(6_000);
        b.check("alice").await.unwrap();
        assert!(
            a.check("alice").await.is_err(),
            "one token came back, not two"
        );
        // Full buckets are forgotten; a disabled limiter lets everything through.
        clock.advance_ms(60_000);
        assert_eq!(a.sweep().await.unwrap(), 2);
        let off = SharedLimiter::new(db.clone(), Arc::new(clock.clone()), "login", rate, true);
        for _ in 0..10 {
            off.check("alice").await.unwrap();
        }
    }

    #[tokio::test]
    async fn shared_limiter_spends_one_budget_on_every_node_sqlite() {
        let t = crate::testdb::TestDb::sqlite().await;
        shared_limiter_on(t.db.clone()).await;
    }

    #[tokio::test]
    async fn shared_limiter_spends_one_budget_on_every_node_postgres() {
        let Some(t) = crate::testdb::TestDb::postgres().await else {
            return;
        };
        shared_limiter_on(t.db.clone()).await;
        t.drop().await;
    }

    /// Random pairs stop adding records at the bound; recorded pairs go on counting and locking.
    async fn shared_records_are_bounded_on(db: Db) {
        use crate::clock::ManualClock;
        let clock = ManualClock::new(1_700_000_000_000);
        let max = Duration::from_secs(60);
        let g = LoginGuard::with_capacity(3, max, false, 10).shared(
            db.clone(),
            Arc::new(clock.clone()),
            max,
        );
        g.failed("alice", "10.0.0.9").await;
        for i in 0..50 {
            g.failed(&format!("random-{i}"), &format!("10.1.0.{i}"))
                .await;
        }
        let sh = g.shared.clone().unwrap();
        assert_eq!(sh.stored().await.unwrap(), 10, "bounded");
        g.failed("alice", "10.0.0.9").await;
        g.failed("alice", "10.0.0.9").await;
        assert_eq!(g.failures("alice", "10.0.0.9").await.unwrap(), 3);
        assert!(g.admit("alice", "10.0.0.9").await.is_err(), "still locks");
        // Once quiet records are swept, new pairs are recorded again.
        clock.advance_ms(15 * 60 * 1000 + 2_000);
        g.sweep().await.unwrap();
        g.failed("bob", "10.0.0.7").await;
        assert_eq!(g.failures("bob", "10.0.0.7").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn shared_records_are_bounded_sqlite() {
        let t = crate::testdb::TestDb::sqlite().await;
        shared_records_are_bounded_on(t.db.clone()).await;
    }

    #[tokio::test]
    async fn shared_records_are_bounded_postgres() {
        let Some(t) = crate::testdb::TestDb::postgres().await else {
            return;
        };
        shared_records_are_bounded_on(t.db.clone()).await;
        t.drop().await;
    }

    #[tokio::test]
    async fn shared_lockout_holds_on_every_node_sqlite() {
        let t = crate::testdb::TestDb::sqlite().await;
        shared_guards_on(t.db.clone()).await;
    }

    #[tokio::test]
    async fn shared_lockout_holds_on_every_node_postgres() {
        let Some(t) = crate::testdb::TestDb::postgres().await else {
            return;
        };
        shared_guards_on(t.db.clone()).await;
        t.drop().await;
    }
}
