//! Login nonces for wallet sign-in.
//!
//! A nonce is 32 random bytes shown as 64 lower-case hex digits. It lives `ttl` seconds, is used
//! at most once, and is bound to the first address that presents it: another address can never
//! use it afterwards, even with a valid signature. Nonces live in memory (they are short-lived and
//! worthless after a restart); the store is bounded, so a flood cannot exhaust memory. Expired
//! entries are dropped by [`Nonces::purge`], which the server's housekeeping calls every few
//! seconds, never on the request path.

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
    /// The 20-byte address of the first login attempt that used this nonce.
    bound: Option<[u8; 20]>,
}

/// The outstanding nonces.
#[derive(Debug, Clone)]
pub struct Nonces {
    map: Arc<DashMap<[u8; 32], Slot>>,
    ttl: Duration,
    max: usize,
}

fn parse(nonce: &str) -> Option<[u8; 32]> {
    let mut raw = [0u8; 32];
    // Only the exact form we hand out: 64 lower-case hex digits.
    if nonce.len() != 64 || nonce.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode_to_slice(nonce, &mut raw).ok()?;
    Some(raw)
}

impl Nonces {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Nonces {
            map: Arc::new(DashMap::new()),
            ttl,
            max: max.max(1),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Creates a new nonce.
    pub fn issue(&self) -> Result<String> {
        if self.map.len() >= self.max {
            self.purge();
            if self.map.len() >= self.max {
                return Err(Error::RateLimited {
                    retry_after_secs: self.ttl.as_secs().max(1),
                });
            }
        }
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        self.map.insert(
            raw,
            Slot {
                expires: Instant::now() + self.ttl,
                bound: None,
            },
        );
        Ok(hex::encode(raw))
    }

    /// Checks that `nonce` is outstanding and may be used by `address` (binding it on first use).
    /// Returns false for an unknown, expired or foreign nonce.
    pub fn check_and_bind(&self, nonce: &str, address: [u8; 20]) -> bool {
        let Some(key) = parse(nonce) else {
            return false;
        };
        match self.map.entry(key) {
            Entry::Vacant(_) => false,
            Entry::Occupied(mut e) => {
                if e.get().expires <= Instant::now() {
                    e.remove();
                    return false;
                }
                match e.get().bound {
                    Some(a) => a == address,
                    None => {
                        e.get_mut().bound = Some(address);
                        true
                    }
                }
            }
        }
    }

    /// Uses up `nonce` (after a successful login); false when it was already gone.
    pub fn consume(&self, nonce: &str, address: [u8; 20]) -> bool {
        let Some(key) = parse(nonce) else {
            return false;
        };
        self.map
            .remove_if(&key, |_, s| {
                s.expires > Instant::now() && s.bound == Some(address)
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

    const A: [u8; 20] = [0xaa; 20];
    const B: [u8; 20] = [0xbb; 20];

    #[tokio::test(start_paused = true)]
    async fn lifecycle() {
        let n = Nonces::new(Duration::from_secs(30), 10);
        let a = n.issue().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(
            !n.check_and_bind(&a.to_uppercase(), A),
            "only the form handed out"
        );
        assert!(n.check_and_bind(&a, A));
        assert!(!n.check_and_bind(&a, B), "bound to the first address");
        assert!(n.check_and_bind(&a, A));
        assert!(n.consume(&a, A));
        assert!(!n.check_and_bind(&a, A), "single use");
        assert!(!n.consume(&a, A));

        let b = n.issue().unwrap();
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(!n.check_and_bind(&b, A), "expired");
        assert!(!n.check_and_bind("nope", A));
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
