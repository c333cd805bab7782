//! Login nonces for wallet sign-in.
//!
//! A nonce is 32 random bytes shown as 64 lower-case hex digits. It lives `ttl` seconds, is used
//! at most once, and is bound to the first address that presents it: another address can never
//! use it afterwards, even with a valid signature. Nonces live in memory (they are short-lived and
//! worthless after a restart); the store is bounded, so a flood cannot exhaust memory: at the
//! bound, the oldest nonce makes room (a flood would have to issue the whole bound within the few
//! seconds a real user takes to sign, to push that user's nonce out). Nonces are kept in issue
//! order, which is also expiry order, so dropping the expired ones ([`Nonces::purge`], called by
//! the server's housekeeping and on issue) costs what it drops, never a scan of the store.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use rand::RngCore;
use tokio::time::Instant;

use crate::wallet::Address;
use crate::Result;

#[derive(Debug)]
struct Slot {
    expires: Instant,
    /// The address of the first login attempt that used this nonce.
    bound: Option<Address>,
}

/// Nonces oldest first, with their expiry.
type Order = VecDeque<([u8; 32], Instant)>;

/// The outstanding nonces.
#[derive(Debug, Clone)]
pub struct Nonces {
    map: Arc<DashMap<[u8; 32], Slot>>,
    /// Every nonce in `map`, oldest first, with its expiry (some may be used up already).
    order: Arc<Mutex<Order>>,
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
            order: Arc::new(Mutex::new(VecDeque::new())),
            ttl,
            max: max.max(1),
        }
    }

    fn order(&self) -> MutexGuard<'_, Order> {
        self.order.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the expired nonces at the front of `order`, and more while it holds `keep` or more.
    fn trim(&self, order: &mut Order, now: Instant, keep: usize) {
        while let Some(&(key, expires)) = order.front() {
            if expires > now && order.len() < keep {
                break;
            }
            order.pop_front();
            self.map.remove(&key);
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Creates a new nonce (at the bound, the oldest one makes room).
    pub fn issue(&self) -> Result<String> {
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let now = Instant::now();
        let expires = now + self.ttl;
        let mut order = self.order();
        self.trim(&mut order, now, self.max);
        // Inserted under the lock, so `order` and `map` never disagree about what is outstanding.
        self.map.insert(
            raw,
            Slot {
                expires,
                bound: None,
            },
        );
        order.push_back((raw, expires));
        Ok(hex::encode(raw))
    }

    /// Checks that `nonce` is outstanding and may be used by `address` (binding it on first use).
    /// Returns false for an unknown, expired or foreign nonce.
    pub fn check_and_bind(&self, nonce: &str, address: Address) -> bool {
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
    pub fn consume(&self, nonce: &str, address: Address) -> bool {
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
        let mut order = self.order();
        self.trim(&mut order, Instant::now(), usize::MAX);
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

    const A: Address = Address::new([0xaa; 20]);
    const B: Address = Address::new([0xbb; 20]);

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
    async fn bounded_with_the_oldest_making_room() {
        let n = Nonces::new(Duration::from_secs(30), 3);
        let first = n.issue().unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = n.issue().unwrap();
        let third = n.issue().unwrap();
        let fourth = n.issue().unwrap();
        assert_eq!(n.len(), 3);
        assert!(!n.check_and_bind(&first, A), "the oldest made room");
        for k in [&second, &third, &fourth] {
            assert!(n.check_and_bind(k, A));
        }
        // A used-up nonce leaves the store at once; its place in the order goes at expiry.
        assert!(n.consume(&second, A));
        assert_eq!(n.len(), 2);
        tokio::time::advance(Duration::from_secs(30)).await;
        n.purge();
        assert_eq!(n.len(), 0);
        let fifth = n.issue().unwrap();
        assert!(n.check_and_bind(&fifth, A));
    }
}
