//! Tokens: HS256 JWTs with the claim set of the MEMO document, for every login flow.
//!
//! Claims are serialized in the document's order `{"type","aud","exp","iat","iss","sub"}` so that
//! a MEMO client sees byte-compatible tokens. `type` 1 is an access token, 2 a refresh ("fresh")
//! token; the two are never interchangeable. `sub` is the wallet address (EIP-55) for wallet logins
//! and the account id otherwise. Only `HS256` is accepted: `alg: none`, other algorithms, bad
//! padding or trailing data are refused before any claim is read.
//!
//! Revocation without extra claims: a logout stores the SHA-256 of the token until it would have
//! expired; a password change (or "log out everywhere") moves the account's `tokens_not_before`
//! past every earlier `iat`. Tokens minted from another token — the access token of a wallet
//! login and those from `/fresh` (children of the refresh token), TwoCloud tokens renewed with a
//! token — are linked to that token's family in the database; revoking any token of a family
//! revokes every token in it, so a session ends whole whichever of its tokens logs out.
//!
//! Tokens are verified synchronously against an in-memory set of revoked hashes. Every node keeps
//! its set current with a change feed: [`Tokens::poll_revocations`] (run every 250 ms by the
//! server's background tasks) reads the revocations recorded since the last poll (`revoked_at`,
//! unix ms, with a 2 s overlap so that transactions committing out of order, or nodes whose
//! clocks differ a little, are not missed). A family's revocation is recorded token by token, so
//! the feed carries families too. Password changes (`tokens_not_before`) reach other nodes through
//! the account cache, whose entries live under a second (see [`crate::account`]).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::Db;
use crate::{AuthFailure, Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// The fixed JOSE header, byte for byte as in the document: `{"alg":"HS256","typ":"JWT"}`.
const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Longest token text we look at.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Access or refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum TokenKind {
    Access = 1,
    Refresh = 2,
}

impl From<TokenKind> for u8 {
    fn from(k: TokenKind) -> u8 {
        k as u8
    }
}

impl TryFrom<u8> for TokenKind {
    type Error = String;
    fn try_from(v: u8) -> std::result::Result<Self, String> {
        match v {
            1 => Ok(TokenKind::Access),
            2 => Ok(TokenKind::Refresh),
            _ => Err(format!("unknown token type {v}")),
        }
    }
}

/// The claims, in the document's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "type")]
    pub kind: TokenKind,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub sub: String,
    /// A random id, on tokens of password logins only: two logins in the same second must not
    /// yield the same token (logout revokes one). Wallet tokens keep the document's claim set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// Signs and verifies tokens with one HMAC key.
#[derive(Clone)]
pub struct TokenKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    pub fn new(key: &[u8]) -> Self {
        TokenKey {
            mac: HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length"),
        }
    }

    /// Encodes and signs `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).expect("claims serialize");
        let mut out = String::with_capacity(HEADER_B64.len() + payload.len() * 4 / 3 + 48);
        out.push_str(HEADER_B64);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut out);
        let mut mac = self.mac.clone();
        mac.update(out.as_bytes());
        let sig = mac.finalize().into_bytes();
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(sig, &mut out);
        out
    }

    /// A 32-byte key for another purpose (`label`), derived from this key: every node sharing
    /// the token key derives the same one.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(b"stratus derived key\0");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Checks structure, algorithm and signature, then decodes the claims. Does not look at
    /// `exp`, `aud`, `iss` or revocation: see [`Tokens::verify`].
    pub fn decode(&self, token: &str) -> Result<Claims, AuthFailure> {
        if token.is_empty() {
            return Err(AuthFailure::MissingToken);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthFailure::MalformedToken);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthFailure::MalformedToken);
        };
        let header = URL_SAFE_NO_PAD
            .decode(h)
            .map_err(|_| AuthFailure::MalformedToken)?;
        #[derive(Deserialize)]
        struct Header {
            alg: String,
            #[serde(default)]
            typ: Option<String>,
            #[serde(default)]
            crit: Option<serde_json::Value>,
        }
        let header: Header =
            serde_json::from_slice(&header).map_err(|_| AuthFailure::MalformedToken)?;
        if header.alg != "HS256"
            || header.crit.is_some()
            || header
                .typ
                .as_deref()
                .is_some_and(|t| !t.eq_ignore_ascii_case("JWT"))
        {
            return Err(AuthFailure::BadSignature);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| AuthFailure::MalformedToken)?;
        let mut mac = self.mac.clone();
        mac.update(&token.as_bytes()[..h.len() + 1 + p.len()]);
        mac.verify_slice(&sig)
            .map_err(|_| AuthFailure::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| AuthFailure::MalformedToken)?;
        serde_json::from_slice(&payload).map_err(|_| AuthFailure::MalformedToken)
    }
}

/// SHA-256 of a token's text, hex (what the revocation list stores).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Takes a token out of an `Authorization` header value: `Bearer <t>`, a bare `<t>`, or
/// `Basic base64(<t>:<anything>)` (TwoCloud style). Returns `None` for an empty value.
pub fn token_from_authorization(value: &str) -> Option<String> {
    let v = value.trim();
    if v.is_empty() || v.eq_ignore_ascii_case("bearer") || v.eq_ignore_ascii_case("basic") {
        return None;
    }
    if let Some((scheme, rest)) = v.split_once(' ') {
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return (!rest.is_empty()).then(|| rest.to_string());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let (user, _) = basic_credentials(rest)?;
            return (!user.is_empty()).then_some(user);
        }
    }
    Some(v.to_string())
}

/// Decodes the credentials part of an HTTP Basic header (`base64(user:password)`).
pub fn basic_credentials(b64: &str) -> Option<(String, String)> {
    use base64::engine::general_purpose::STANDARD;
    let raw = STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Issues, verifies and revokes tokens.
#[derive(Debug, Clone)]
pub struct Tokens {
    key: TokenKey,
    domain: String,
    db: Db,
    revoked: Arc<DashMap<String, i64>>,
    /// The newest `revoked_at` the change feed has seen (unix ms).
    feed_cursor: Arc<AtomicI64>,
}

/// How far back each poll of the change feed looks before the newest revocation it saw.
pub const FEED_OVERLAP_MS: i64 = 2_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

/// A verified token.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Claims,
    /// The token text (for logout).
    pub token: String,
}

impl Tokens {
    /// Loads the unexpired revocations from the database.
    pub async fn new(key: TokenKey, domain: String, db: Db, now: i64) -> Result<Tokens> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT token_hash, expires_at, revoked_at FROM revoked_tokens WHERE expires_at > $1",
        )
        .bind(now)
        .fetch_all(db.r())
        .await?;
        let revoked = Arc::new(DashMap::new());
        let mut cursor = 0;
        for (h, e, at) in rows {
            revoked.insert(h, e);
            cursor = cursor.max(at);
        }
        Ok(Tokens {
            key,
            domain,
            db,
            revoked,
            feed_cursor: Arc::new(AtomicI64::new(cursor)),
        })
    }

    /// The change feed: takes in the revocations recorded (by any node) since the last poll,
    /// less [`FEED_OVERLAP_MS`]. Returns how many rows were read.
    pub async fn poll_revocations(&self) -> Result<usize> {
        let since = self
            .feed_cursor
            .load(Ordering::SeqCst)
            .saturating_sub(FEED_OVERLAP_MS);
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT token_hash, expires_at, revoked_at FROM revoked_tokens WHERE revoked_at > $1",
        )
        .bind(since)
        .fetch_all(self.db.r())
        .await?;
        let mut newest = 0;
        for (h, e, at) in &rows {
            self.revoked.insert(h.clone(), *e);
            newest = newest.max(*at);
        }
        self.feed_cursor.fetch_max(newest, Ordering::SeqCst);
        Ok(rows.len())
    }

    /// Whether the token with this hash is known here as revoked (tests, diagnostics).
    pub fn is_revoked_here(&self, hash: &str) -> bool {
        self.revoked.contains_key(hash)
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The key login nonces are signed with (derived from the token key, so shared by every
    /// node that shares the token key).
    pub fn nonce_key(&self) -> [u8; 32] {
        self.key.derive("login nonce")
    }

    /// Signs a token for `sub`, issued at `iat`, living `ttl` seconds, with exactly the
    /// document's claims (wallet logins).
    pub fn issue(&self, kind: TokenKind, sub: &str, iat: i64, ttl: u64) -> String {
        self.key.sign(&self.claims(kind, sub, iat, ttl, None))
    }

    /// Same as [`Tokens::issue`] plus a random `jti`, so every issued token is distinct.
    pub fn issue_unique(&self, kind: TokenKind, sub: &str, iat: i64, ttl: u64) -> String {
        let jti = uuid::Uuid::new_v4().simple().to_string();
        self.key.sign(&self.claims(kind, sub, iat, ttl, Some(jti)))
    }

    fn claims(
        &self,
        kind: TokenKind,
        sub: &str,
        iat: i64,
        ttl: u64,
        jti: Option<String>,
    ) -> Claims {
        Claims {
            kind,
            aud: self.domain.clone(),
            exp: iat.saturating_add(ttl.min(i64::MAX as u64) as i64),
            iat,
            iss: self.domain.clone(),
            sub: sub.to_string(),
            jti,
        }
    }

    /// Verifies signature, kind, audience, issuer, expiry and the revocation list.
    /// The account's `tokens_not_before` is checked by the caller that resolves `sub`.
    pub fn verify(&self, token: &str, kind: TokenKind, now: i64) -> Result<Verified, AuthFailure> {
        let claims = self.key.decode(token)?;
        if claims.aud != self.domain || claims.iss != self.domain {
            return Err(AuthFailure::BadSignature);
        }
        if claims.kind != kind {
            return Err(AuthFailure::WrongTokenType);
        }
        if claims.exp <= now {
            return Err(AuthFailure::Expired);
        }
        if !self.revoked.is_empty() && self.revoked.contains_key(&token_hash(token)) {
            return Err(AuthFailure::Revoked);
        }
        Ok(Verified {
            claims,
            token: token.to_string(),
        })
    }

    /// The family of the token with hash `h`: its root's hash and expiry (a root is its own).
    async fn family_of(&self, h: &str, exp: i64) -> Result<(String, i64)> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT family, family_expires_at FROM token_links WHERE token_hash = $1",
        )
        .bind(h)
        .fetch_optional(self.db.r())
        .await?;
        Ok(row.unwrap_or_else(|| (h.to_string(), exp)))
    }

    /// Records that `child` (expiring at `child_exp`) was minted from `parent`: it joins the
    /// parent's family and dies with it. A family revoked meanwhile takes the child along.
    pub async fn link(&self, child: &str, child_exp: i64, parent: &Verified) -> Result<()> {
        let (family, family_exp) = self
            .family_of(&token_hash(&parent.token), parent.claims.exp)
            .await?;
        self.link_to(child, child_exp, &family, family_exp).await
    }

    /// Records that `child` belongs to the family whose root is `root` (a token just issued).
    pub async fn link_to_root(
        &self,
        child: &str,
        child_exp: i64,
        root: &str,
        root_exp: i64,
    ) -> Result<()> {
        self.link_to(child, child_exp, &token_hash(root), root_exp)
            .await
    }

    async fn link_to(
        &self,
        child: &str,
        child_exp: i64,
        family: &str,
        family_exp: i64,
    ) -> Result<()> {
        let h = token_hash(child);
        if h == family {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO token_links (token_hash, family, expires_at, family_expires_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (token_hash) DO NOTHING",
        )
        .bind(&h)
        .bind(family)
        .bind(child_exp)
        .bind(family_exp)
        .execute(self.db.w())
        .await?;
        // The link is committed before we look: a revocation of the family on another node
        // either finds the link (and revokes the child) or committed its root first (seen here).
        let family_revoked = self.revoked.contains_key(family)
            || sqlx::query_as::<_, (i64,)>("SELECT 1 FROM revoked_tokens WHERE token_hash = $1")
                .bind(family)
                .fetch_optional(self.db.w())
                .await?
                .is_some();
        if family_revoked {
            self.revoke_hashes(&[(h, child_exp)]).await?;
        }
        Ok(())
    }

    /// Revokes the token and every token of its family until their expiry.
    pub async fn revoke(&self, verified: &Verified) -> Result<()> {
        let (family, family_exp) = self
            .family_of(&token_hash(&verified.token), verified.claims.exp)
            .await?;
        // The root first, committed before the members are read: a child linked meanwhile on
        // another node sees the root revoked (see `link_to`).
        self.revoke_hashes(&[
            (token_hash(&verified.token), verified.claims.exp),
            (family.clone(), family_exp),
        ])
        .await?;
        let dead: Vec<(String, i64)> =
            sqlx::query_as("SELECT token_hash, expires_at FROM token_links WHERE family = $1")
                .bind(&family)
                .fetch_all(self.db.w())
                .await?;
        self.revoke_hashes(&dead).await
    }

    async fn revoke_hashes(&self, dead: &[(String, i64)]) -> Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        let at = now_ms();
        let mut tx = self.db.w().begin().await?;
        for (h, exp) in dead {
            sqlx::query(
                "INSERT INTO revoked_tokens (token_hash, expires_at, revoked_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (token_hash) DO NOTHING",
            )
            .bind(h)
            .bind(exp)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        for (h, exp) in dead {
            self.revoked.insert(h.clone(), *exp);
        }
        Ok(())
    }

    /// Forgets revocations and family links of tokens that have expired anyway.
    pub async fn purge_expired(&self, now: i64) -> Result<u64> {
        let r = sqlx::query("DELETE FROM revoked_tokens WHERE expires_at <= $1")
            .bind(now)
            .execute(self.db.w())
            .await?;
        sqlx::query("DELETE FROM token_links WHERE expires_at <= $1")
            .bind(now)
            .execute(self.db.w())
            .await?;
        self.revoked.retain(|_, exp| *exp > now);
        Ok(r.rows_affected())
    }
}

impl From<AuthFailure> for Error {
    fn from(f: AuthFailure) -> Self {
        Error::Unauthenticated(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC_ACCESS: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0eXBlIjoxLCJhdWQiOiJtZW1vLmlvIiwiZXhwIjoxNjc3NDkwMTgyLCJpYXQiOjE2Nzc0ODkyODIsImlzcyI6Im1lbW8uaW8iLCJzdWIiOiIweEU3RTlmMTJmOTlhRDE3ZDQ3ODZiOUIxMjQ3QzA5N2U2M2NlYUY4RGIifQ.F0asDvu3LH3ccK6LAztBGF1TTzGw7Stc9gBEzVicuE4";
    const DOC_FRESH: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0eXBlIjoyLCJhdWQiOiJtZW1vLmlvIiwiZXhwIjoxNjc4MDk0MDgyLCJpYXQiOjE2Nzc0ODkyODIsImlzcyI6Im1lbW8uaW8iLCJzdWIiOiIweEU3RTlmMTJmOTlhRDE3ZDQ3ODZiOUIxMjQ3QzA5N2U2M2NlYUY4RGIifQ.PDxQ2orOlsES6fvkyR-xWc6M1yBY8RiFTcn8m5AGROc";
    const DOC_ADDR: &str = "0xE7E9f12f99aD17d4786b9B1247C097e63ceaF8Db";

    #[test]
    fn document_tokens_verify_with_the_document_key_and_are_reproduced_byte_for_byte() {
        let key = TokenKey::new(b"memo.io");
        let a = key.decode(DOC_ACCESS).unwrap();
        assert_eq!(a.kind, TokenKind::Access);
        assert_eq!(a.sub, DOC_ADDR);
        assert_eq!(a.exp - a.iat, 900);
        let f = key.decode(DOC_FRESH).unwrap();
        assert_eq!(f.kind, TokenKind::Refresh);
        assert_eq!(f.exp - f.iat, 7 * 24 * 3600);
        // Our encoder produces the very same bytes from the same claims.
        assert_eq!(key.sign(&a), DOC_ACCESS);
        assert_eq!(key.sign(&f), DOC_FRESH);
        // Any other key refuses them.
        assert_eq!(
            TokenKey::new(b"memo.io2").decode(DOC_ACCESS),
            Err(AuthFailure::BadSignature)
        );
    }

    #[test]
    fn refuses_other_algorithms_and_junk() {
        let key = TokenKey::new(b"k");
        let claims = Claims {
            kind: TokenKind::Access,
            aud: "memo.io".into(),
            exp: 10,
            iat: 1,
            iss: "memo.io".into(),
            sub: "x".into(),
            jti: None,
        };
        let good = key.sign(&claims);
        let (_, rest) = good.split_once('.').unwrap();
        let none = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            rest
        );
        assert_eq!(key.decode(&none), Err(AuthFailure::BadSignature));
        let none_nosig = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            rest.split_once('.').unwrap().0
        );
        assert_eq!(key.decode(&none_nosig), Err(AuthFailure::BadSignature));
        let hs512 = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512","typ":"JWT"}"#),
            rest
        );
        assert_eq!(key.decode(&hs512), Err(AuthFailure::BadSignature));
        assert_eq!(key.decode("a.b"), Err(AuthFailure::MalformedToken));
        assert_eq!(key.decode("a.b.c.d"), Err(AuthFailure::MalformedToken));
        assert_eq!(
            key.decode(&format!("{good}=")),
            Err(AuthFailure::MalformedToken)
        );
        // Tampered payload.
        let mut c2 = claims.clone();
        c2.sub = "y".into();
        let other = key.sign(&c2);
        let forged = format!(
            "{}.{}.{}",
            HEADER_B64,
            other.split('.').nth(1).unwrap(),
            good.split('.').nth(2).unwrap()
        );
        assert_eq!(key.decode(&forged), Err(AuthFailure::BadSignature));
    }

    #[test]
    fn authorization_forms() {
        assert_eq!(
            token_from_authorization("Bearer abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            token_from_authorization("bearer  abc ").as_deref(),
            Some("abc")
        );
        assert_eq!(token_from_authorization("abc").as_deref(), Some("abc"));
        // base64("tok:unused")
        assert_eq!(
            token_from_authorization("Basic dG9rOnVudXNlZA==").as_deref(),
            Some("tok")
        );
        assert_eq!(token_from_authorization("   "), None);
        assert_eq!(token_from_authorization("Bearer "), None);
    }

    /// Two nodes (two `Tokens`) on one database: revocations reach the other through the feed.
    async fn feed_on(db: Db) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let key = || TokenKey::new(b"shared");
        let a = Tokens::new(key(), "memo.io".into(), db.clone(), now)
            .await
            .unwrap();
        let b = Tokens::new(key(), "memo.io".into(), db.clone(), now)
            .await
            .unwrap();
        assert_eq!(a.nonce_key(), b.nonce_key());
        assert_ne!(a.nonce_key(), TokenKey::new(b"other").derive("login nonce"));

        let t = a.issue_unique(TokenKind::Access, "acct", now, 900);
        let v = a.verify(&t, TokenKind::Access, now).unwrap();
        b.verify(&t, TokenKind::Access, now).unwrap();
        a.revoke(&v).await.unwrap();
        assert_eq!(
            a.verify(&t, TokenKind::Access, now).unwrap_err(),
            AuthFailure::Revoked
        );
        b.verify(&t, TokenKind::Access, now).unwrap();
        assert!(b.poll_revocations().await.unwrap() >= 1);
        assert_eq!(
            b.verify(&t, TokenKind::Access, now).unwrap_err(),
            AuthFailure::Revoked
        );

        // A family: refresh token on A, access token minted from it on B; logout of the access
        // token on B ends the refresh token on A after A's next poll.
        let root = a.issue_unique(TokenKind::Refresh, "acct", now, 3600);
        let root_v = b.verify(&root, TokenKind::Refresh, now).unwrap();
        let child = b.issue_unique(TokenKind::Access, "acct", now, 900);
        b.link(&child, now + 900, &root_v).await.unwrap();
        let child_v = b.verify(&child, TokenKind::Access, now).unwrap();
        b.revoke(&child_v).await.unwrap();
        a.verify(&root, TokenKind::Refresh, now).unwrap();
        a.poll_revocations().await.unwrap();
        assert_eq!(
            a.verify(&root, TokenKind::Refresh, now).unwrap_err(),
            AuthFailure::Revoked
        );
        // A child linked on A to the family revoked on B (A has not polled since) dies at once.
        let late = a.issue_unique(TokenKind::Access, "acct", now, 900);
        let c = Tokens::new(key(), "memo.io".into(), db.clone(), now)
            .await
            .unwrap();
        let root2 = c.issue_unique(TokenKind::Refresh, "acct", now, 3600);
        let root2_v = c.verify(&root2, TokenKind::Refresh, now).unwrap();
        b.revoke(&root2_v).await.unwrap();
        a.link(&late, now + 900, &root2_v).await.unwrap();
        assert_eq!(
            a.verify(&late, TokenKind::Access, now).unwrap_err(),
            AuthFailure::Revoked
        );
        // The cursor only moves forward, and a poll with nothing new reads only the overlap.
        let before = a.feed_cursor.load(Ordering::SeqCst);
        a.poll_revocations().await.unwrap();
        assert!(a.feed_cursor.load(Ordering::SeqCst) >= before);
        // A node started later loads every live revocation.
        let d = Tokens::new(key(), "memo.io".into(), db.clone(), now)
            .await
            .unwrap();
        for tok in [&t, &child, &late] {
            assert_eq!(
                d.verify(tok, TokenKind::Access, now).unwrap_err(),
                AuthFailure::Revoked
            );
        }
    }

    #[tokio::test]
    async fn revocations_reach_other_nodes_through_the_feed_sqlite() {
        let t = crate::testdb::TestDb::sqlite().await;
        feed_on(t.db.clone()).await;
    }

    #[tokio::test]
    async fn revocations_reach_other_nodes_through_the_feed_postgres() {
        let Some(t) = crate::testdb::TestDb::postgres().await else {
            return;
        };
        feed_on(t.db.clone()).await;
        t.drop().await;
    }
}
