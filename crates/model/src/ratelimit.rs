//! Rate limits: token buckets keyed by client IP or account, and the per-account slowdown of
//! failed password logins.
//!
//! Buckets live in memory and are swept when idle; limits are per process (a scaled-out
//! deployment divides its budget by the number of servers).

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use stratus_config::Rate;
use tokio::time::Instant;

use crate::{Error, Result};

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A keyed token-bucket limiter.
#[derive(Debug, Clone)]
pub struct Limiter {
    rate: Rate,
    disabled: bool,
    buckets: Arc<DashMap<String, Bucket>>,
}

impl Limiter {
    pub fn new(rate: Rate, disabled: bool) -> Self {
        Limiter {
            rate,
            disabled: disabled || rate.per_minute == 0,
            buckets: Arc::new(DashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how long to wait.
    pub fn check(&self, key: &str) -> Result<()> {
        if self.disabled {
            return Ok(());
        }
        let now = Instant::now();
        let per_sec = self.rate.per_minute as f64 / 60.0;
        let burst = self.rate.burst.max(1) as f64;
        let mut b = self.buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_sec).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - b.tokens) / per_sec).ceil().max(1.0) as u64;
            Err(Error::RateLimited {
                retry_after_secs: wait,
            })
        }
    }

    /// Forgets buckets that have been full for a while.
    pub fn sweep(&self) {
        let now = Instant::now();
        let full_after = Duration::from_secs_f64(
            (self.rate.burst.max(1) as f64 * 60.0 / self.rate.per_minute.max(1) as f64) + 1.0,
        );
        self.buckets
            .retain(|_, b| now.duration_since(b.last) < full_after);
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    locked_until: Option<Instant>,
}

/// Slows down password guessing per account: after `after` consecutive failures, each further
/// failure locks the account's password login for twice as long as the last (1 s, 2 s, 4 s, …,
/// at most `max`). A success clears the record.
#[derive(Debug, Clone)]
pub struct LoginBackoff {
    after: u32,
    max: Duration,
    disabled: bool,
    map: Arc<DashMap<String, Failures>>,
}

impl LoginBackoff {
    pub fn new(after: u32, max: Duration, disabled: bool) -> Self {
        LoginBackoff {
            after: after.max(1),
            max,
            disabled,
            map: Arc::new(DashMap::new()),
        }
    }

    /// Refuses while the account is locked.
    pub fn check(&self, account: &str) -> Result<()> {
        if self.disabled {
            return Ok(());
        }
        if let Some(f) = self.map.get(account) {
            if let Some(until) = f.locked_until {
                let now = Instant::now();
                if until > now {
                    return Err(Error::RateLimited {
                        retry_after_secs: (until - now).as_secs_f64().ceil().max(1.0) as u64,
                    });
                }
            }
        }
        Ok(())
    }

    pub fn failed(&self, account: &str) {
        if self.disabled {
            return;
        }
        let mut f = self.map.entry(account.to_string()).or_insert(Failures {
            count: 0,
            locked_until: None,
        });
        f.count = f.count.saturating_add(1);
        if f.count >= self.after {
            let exp = (f.count - self.after).min(20);
            let lock = Duration::from_secs(1u64 << exp).min(self.max);
            f.locked_until = Some(Instant::now() + lock);
        }
    }

    pub fn succeeded(&self, account: &str) {
        self.map.remove(account);
    }

    /// Forgets records whose lock ended long ago.
    pub fn sweep(&self) {
        let now = Instant::now();
        let keep = self.max * 2;
        self.map.retain(|_, f| match f.locked_until {
            Some(u) => now.saturating_duration_since(u) < keep,
            None => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_refills() {
        let l = Limiter::new(Rate::new(60, 2), false);
        l.check("a").unwrap();
        l.check("a").unwrap();
        let Err(Error::RateLimited { retry_after_secs }) = l.check("a") else {
            panic!("third call must be limited")
        };
        assert_eq!(retry_after_secs, 1);
        l.check("b").unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        l.check("a").unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles() {
        let b = LoginBackoff::new(3, Duration::from_secs(10), false);
        for _ in 0..2 {
            b.failed("x");
            b.check("x").unwrap();
        }
        b.failed("x");
        assert!(b.check("x").is_err());
        tokio::time::advance(Duration::from_millis(1001)).await;
        b.check("x").unwrap();
        b.failed("x");
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(b.check("x").is_err(), "second lock is 2 s");
        b.succeeded("x");
        b.check("x").unwrap();
    }
}
