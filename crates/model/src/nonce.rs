//! Login nonces for wallet sign-in, valid on every node of a deployment.
//!
//! A nonce is 32 bytes shown as 64 lower-case hex digits: 8 bytes of issue time (unix
//! milliseconds, big-endian), 8 random bytes and the first 16 bytes of an HMAC-SHA256 of those
//! 16 under a key derived from the token key (shared configuration, so every node derives the same
//! key). Any node can therefore tell, without a lookup, that a nonce was issued by the deployment
//! and when; issuing one writes nothing anywhere (`GET /getnonce` is unauthenticated and hot).
//!
//! The semantics are unchanged: a nonce lives `ttl` seconds, is used at most once, and is bound
//! to the first address that presents it. Only the consumption side is stored (`login_nonces`):
//! the first login attempt inserts `(nonce, address, expires_at)` (`ON CONFLICT DO NOTHING`, then
//! reads the row back: another address is refused), a successful login marks it used with a
//! compare-and-set (`used = 0 → 1`; zero rows means a replay). Housekeeping deletes rows whose
//! nonce has expired (with a margin for clock skew between nodes: an expired nonce is refused
//! before the table is consulted, so the row is not needed afterwards).
//!
//! Earlier versions kept nonces in a bounded in-memory map, with a separate pool for the nonces
//! handed out with authentication errors so that a flood could not push out a user's nonce. With
//! nothing stored at issue there is nothing to push out, so both the bound and the second pool
//! are gone; issuing stays limited per client address.

use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::db::Db;
use crate::wallet::{address_lower, Address};
use crate::Result;

type HmacSha256 = Hmac<Sha256>;

/// How far in the future a nonce's issue time may lie (clock skew between nodes).
const MAX_SKEW_MS: i64 = 5_000;
/// How long after expiry a consumption row is kept (clock skew between nodes).
const PURGE_MARGIN_MS: i64 = 60_000;

/// Issues and checks nonces; records their use in the store.
#[derive(Clone)]
pub struct Nonces {
    mac: HmacSha256,
    ttl: Duration,
    db: Db,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces").field("ttl", &self.ttl).finish()
    }
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
    /// `key` is the nonce key (see [`crate::token::TokenKey::derive`]); every node must use the
    /// same one.
    pub fn new(key: &[u8], ttl: Duration, db: Db) -> Self {
        Nonces {
            mac: HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length"),
            ttl,
            db,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn ttl_ms(&self) -> i64 {
        self.ttl.as_millis().min(i64::MAX as u128) as i64
    }

    fn tag(&self, body: &[u8]) -> [u8; 16] {
        let mut mac = self.mac.clone();
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&full[..16]);
        tag
    }

    /// Creates a new nonce issued at `now_ms`. Pure computation: nothing is stored.
    pub fn issue(&self, now_ms: i64) -> String {
        let mut raw = [0u8; 32];
        raw[..8].copy_from_slice(&now_ms.to_be_bytes());
        rand::thread_rng().fill_bytes(&mut raw[8..16]);
        let tag = self.tag(&raw[..16]);
        raw[16..].copy_from_slice(&tag);
        hex::encode(raw)
    }

    /// When `nonce` expires (unix ms), if it is one of ours and still valid at `now_ms`.
    pub fn expiry(&self, nonce: &str, now_ms: i64) -> Option<i64> {
        let raw = parse(nonce)?;
        let mut mac = self.mac.clone();
        mac.update(&raw[..16]);
        mac.verify_truncated_left(&raw[16..]).ok()?;
        let issued = i64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        if issued > now_ms.saturating_add(MAX_SKEW_MS) {
            return None;
        }
        let expires = issued.saturating_add(self.ttl_ms());
        (expires > now_ms).then_some(expires)
    }

    /// Checks that `nonce` is valid and may be used by `address`, binding it to `address` if
    /// this is its first use. False for a foreign, expired, used or other-address nonce.
    pub async fn check_and_bind(&self, nonce: &str, address: Address, now_ms: i64) -> Result<bool> {
        let Some(expires) = self.expiry(nonce, now_ms) else {
            return Ok(false);
        };
        let addr = address_lower(&address);
        sqlx::query(
            "INSERT INTO login_nonces (nonce, address, expires_at, used) VALUES ($1, $2, $3, 0) \
             ON CONFLICT (nonce) DO NOTHING",
        )
        .bind(nonce)
        .bind(&addr)
        .bind(expires)
        .execute(self.db.w())
        .await?;
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT address, used FROM login_nonces WHERE nonce = $1")
                .bind(nonce)
                .fetch_optional(self.db.w())
                .await?;
        Ok(matches!(row, Some((a, 0)) if a == addr))
    }

    /// Uses up `nonce` (after a successful login): true exactly once, for the bound address.
    pub async fn consume(&self, nonce: &str, address: Address, now_ms: i64) -> Result<bool> {
        if self.expiry(nonce, now_ms).is_none() {
            return Ok(false);
        }
        let r = sqlx::query(
            "UPDATE login_nonces SET used = 1 WHERE nonce = $1 AND address = $2 AND used = 0",
        )
        .bind(nonce)
        .bind(address_lower(&address))
        .execute(self.db.w())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Deletes the consumption rows of nonces that expired a while ago; returns how many.
    pub async fn purge(&self, now_ms: i64) -> Result<u64> {
        let r = sqlx::query("DELETE FROM login_nonces WHERE expires_at <= $1")
            .bind(now_ms.saturating_sub(PURGE_MARGIN_MS))
            .execute(self.db.w())
            .await?;
        Ok(r.rows_affected())
    }

    /// Consumption rows stored now (tests).
    pub async fn stored(&self) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM login_nonces")
            .fetch_one(self.db.r())
            .await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb::TestDb;

    const A: Address = Address::new([0xaa; 20]);
    const B: Address = Address::new([0xbb; 20]);
    const T0: i64 = 1_700_000_000_000;

    async fn lifecycle_on(db: Db) {
        let n = Nonces::new(b"nonce key", Duration::from_secs(30), db.clone());
        let a = n.issue(T0);
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(n.stored().await.unwrap(), 0, "issuing writes nothing");
        assert!(
            !n.check_and_bind(&a.to_uppercase(), A, T0).await.unwrap(),
            "only the form handed out"
        );
        assert!(n.check_and_bind(&a, A, T0 + 1).await.unwrap());
        assert!(
            !n.check_and_bind(&a, B, T0 + 2).await.unwrap(),
            "bound to the first address"
        );
        assert!(!n.consume(&a, B, T0 + 2).await.unwrap());
        assert!(n.check_and_bind(&a, A, T0 + 3).await.unwrap());
        assert!(n.consume(&a, A, T0 + 4).await.unwrap());
        assert!(
            !n.check_and_bind(&a, A, T0 + 5).await.unwrap(),
            "single use"
        );
        assert!(!n.consume(&a, A, T0 + 5).await.unwrap());

        // Another node with the same key accepts the nonce and shares its state.
        let other = Nonces::new(b"nonce key", Duration::from_secs(30), db.clone());
        let b = n.issue(T0);
        assert!(other.check_and_bind(&b, B, T0 + 10).await.unwrap());
        assert!(!n.check_and_bind(&b, A, T0 + 11).await.unwrap());
        assert!(n.consume(&b, B, T0 + 12).await.unwrap());
        assert!(!other.consume(&b, B, T0 + 13).await.unwrap(), "no replay");

        // A node with another key does not know it; nor does anyone know a tampered one.
        let foreign = Nonces::new(b"other key", Duration::from_secs(30), db.clone());
        let c = n.issue(T0);
        assert!(!foreign.check_and_bind(&c, A, T0).await.unwrap());
        let mut tampered = c.clone().into_bytes();
        tampered[15] = if tampered[15] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(!n.check_and_bind(&tampered, A, T0).await.unwrap());
        assert!(!n.check_and_bind("nope", A, T0).await.unwrap());

        // Expiry: 30 s after issue; a nonce from the future is refused.
        assert!(n.expiry(&c, T0 + 29_999).is_some());
        assert!(
            !n.check_and_bind(&c, A, T0 + 30_000).await.unwrap(),
            "expired"
        );
        assert!(n.expiry(&n.issue(T0 + 60_000), T0).is_none());

        // Housekeeping drops the rows once their nonces are long expired.
        assert_eq!(n.stored().await.unwrap(), 2);
        assert_eq!(n.purge(T0 + 30_000).await.unwrap(), 0);
        assert_eq!(n.purge(T0 + 30_000 + PURGE_MARGIN_MS).await.unwrap(), 2);
        assert_eq!(n.stored().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn lifecycle_on_sqlite() {
        let t = TestDb::sqlite().await;
        lifecycle_on(t.db.clone()).await;
    }

    #[tokio::test]
    async fn lifecycle_on_postgres() {
        let Some(t) = TestDb::postgres().await else {
            return;
        };
        lifecycle_on(t.db.clone()).await;
        t.drop().await;
    }

    #[tokio::test]
    async fn concurrent_first_attempts_bind_one_address_and_consume_once() {
        let t = TestDb::sqlite().await;
        let n = Nonces::new(b"k", Duration::from_secs(30), t.db.clone());
        let nonce = n.issue(T0);
        let (x, y) = tokio::join!(
            n.check_and_bind(&nonce, A, T0),
            n.check_and_bind(&nonce, B, T0)
        );
        assert!(x.unwrap() ^ y.unwrap(), "exactly one address wins");
        let winner = if n.check_and_bind(&nonce, A, T0).await.unwrap() {
            A
        } else {
            B
        };
        let (x, y) = tokio::join!(n.consume(&nonce, winner, T0), n.consume(&nonce, winner, T0));
        assert!(x.unwrap() ^ y.unwrap(), "exactly one consumption");
    }
}
