//! Login nonces for wallet sign-in.
//!
//! A nonce is 32 random bytes as 64 lower-case hex digits. It lives `ttl` seconds, is used at most
//! once, and is bound to the first address that presents it: another address can never use it
//! afterwards, even with a valid signature. Nonces live in memory (they are short-lived and
//! worthless after a restart); the store is bounded, so a flood cannot exhaust memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use rand::RngCore;
use tokio::time::Instant;

use crate::{Error, Result};

#[derive(Debug)]
struct Slot {
    expires: Instant,
    /// Lower-case address of the first login attempt that used this nonce.
    bound: Option<String>,
}

/// The outstanding nonces.
#[derive(Debug, Clone)]
pub struct Nonces {
    map: Arc<DashMap<String, Slot>>,
    ttl: Duration,
    max: usize,
    issued: Arc<AtomicU64>,
}

impl Nonces {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Nonces {
            map: Arc::new(DashMap::new()),
            ttl,
            max: max.max(1),
            issued: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Creates a new nonce.
    pub fn issue(&self) -> Result<String> {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        if n % 4096 == 0 || self.map.len() >= self.max {
            self.purge();
        }
        if self.map.len() >= self.max {
            return Err(Error::RateLimited {
                retry_after_secs: self.ttl.as_secs().max(1),
            });
        }
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let nonce = hex::encode(raw);
        self.map.insert(
            nonce.clone(),
            Slot {
                expires: Instant::now() + self.ttl,
                bound: None,
            },
        );
        Ok(nonce)
    }

    /// Checks that `nonce` is outstanding and may be used by `address` (binding it on first use).
    /// Returns false for an unknown, expired or foreign nonce.
    pub fn check_and_bind(&self, nonce: &str, address_lower: &str) -> bool {
        match self.map.entry(nonce.to_string()) {
            Entry::Vacant(_) => false,
            Entry::Occupied(mut e) => {
                if e.get().expires <= Instant::now() {
                    e.remove();
                    return false;
                }
                match &e.get().bound {
                    Some(a) => a == address_lower,
                    None => {
                        e.get_mut().bound = Some(address_lower.to_string());
                        true
                    }
                }
            }
        }
    }

    /// Uses up `nonce` (after a successful login); false when it was already gone.
    pub fn consume(&self, nonce: &str, address_lower: &str) -> bool {
        self.map
            .remove_if(nonce, |_, s| {
                s.expires > Instant::now() && s.bound.as_deref() == Some(address_lower)
            })
            .is_some()
    }

    /// Drops expired nonces.
    pub fn purge(&self) {
        let now = Instant::now();
        self.map.retain(|_, s| s.expires > now);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn lifecycle() {
        let n = Nonces::new(Duration::from_secs(30), 10);
        let a = n.issue().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(n.check_and_bind(&a, "0xaa"));
        assert!(!n.check_and_bind(&a, "0xbb"), "bound to the first address");
        assert!(n.check_and_bind(&a, "0xaa"));
        assert!(n.consume(&a, "0xaa"));
        assert!(!n.check_and_bind(&a, "0xaa"), "single use");
        assert!(!n.consume(&a, "0xaa"));

        let b = n.issue().unwrap();
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(!n.check_and_bind(&b, "0xaa"), "expired");
        assert!(!n.check_and_bind("nope", "0xaa"));
    }

    #[tokio::test(start_paused = true)]
    async fn bounded() {
        let n = Nonces::new(Duration::from_secs(30), 3);
        for _ in 0..3 {
            n.issue().unwrap();
        }
        assert!(matches!(n.issue(), Err(Error::RateLimited { .. })));
        tokio::time::advance(Duration::from_secs(31)).await;
        n.issue().unwrap();
        assert_eq!(n.len(), 1);
    }
}
