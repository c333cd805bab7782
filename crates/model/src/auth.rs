//! Login flows and the one token check every API uses.
//!
//! Password logins (ComputeShare, TwoCloud), wallet logins (MEMO), refresh, logout and password
//! change all end in [`Auth`]. Every flow is rate limited per client IP and per account, and
//! failed password logins slow the account down. The flows return accounts and tokens; rendering
//! them (and their errors) is the API dialects' business.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use stratus_config::{AuthConfig, LimitsConfig};

use crate::account::{Account, Accounts};
use crate::clock::SharedClock;
use crate::nonce::Nonces;
use crate::password::Passwords;
use crate::ratelimit::{Limiter, LoginGuard, SharedLimiter};
use crate::token::{TokenKind, Tokens, Verified};
use crate::wallet::{self, parse_address, Address};
use crate::{AuthFailure, Error, Result};

/// A wallet login request, fields exactly as sent.
#[derive(Debug, Clone, Default)]
pub struct WalletLogin {
    pub address: String,
    pub nonce: String,
    pub domain: String,
    pub signature: String,
}

/// The result of a wallet login.
#[derive(Debug, Clone)]
pub struct WalletSession {
    pub account: Account,
    pub access_token: String,
    pub refresh_token: String,
}

/// An authenticated request's account and token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account: Arc<Account>,
    pub token: Verified,
}

impl Caller {
    /// The wallet the token was issued to (MEMO tokens) or the account's linked wallet.
    pub fn address_text(&self) -> String {
        match parse_address(&self.token.claims.sub) {
            Some(a) => a.to_string(),
            None => self.account.address_text(),
        }
    }
}

/// Which lifetime a password-login token gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordDialect {
    ComputeShare,
    TwoCloud,
}

/// The authentication service.
#[derive(Debug, Clone)]
pub struct Auth {
    cfg: AuthConfig,
    accounts: Accounts,
    tokens: Tokens,
    nonces: Nonces,
    passwords: Passwords,
    clock: SharedClock,
    login_ip: Limiter,
    /// Per account and address, in the store: every node spends from one budget.
    login_account: SharedLimiter,
    tokens_ip: Limiter,
    /// Per account, in the store.
    tokens_account: SharedLimiter,
    nonces_ip: Limiter,
    register_ip: Limiter,
    guard: LoginGuard,
}

/// Expiry of a token issued at `iat` living `ttl` seconds.
fn exp_of(iat: i64, ttl: u64) -> i64 {
    iat.saturating_add(ttl.min(i64::MAX as u64) as i64)
}

fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        // Limit IPv6 clients per /64: one host easily owns a whole prefix.
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

impl Auth {
    pub fn new(
        cfg: AuthConfig,
        limits: &LimitsConfig,
        accounts: Accounts,
        tokens: Tokens,
        clock: SharedClock,
    ) -> Result<Auth> {
        let off = limits.disabled;
        Ok(Auth {
            passwords: Passwords::new(
                cfg.argon2_memory_kib,
                cfg.argon2_iterations,
                cfg.argon2_parallel_hashes,
            )?,
            nonces: Nonces::new(
                &tokens.nonce_key(),
                Duration::from_secs(cfg.nonce_ttl),
                accounts.db().clone(),
            ),
            login_ip: Limiter::new(limits.login_per_ip, off),
            login_account: SharedLimiter::new(
                accounts.db().clone(),
                clock.clone(),
                "login",
                limits.login_per_account,
                off,
            ),
            tokens_ip: Limiter::new(limits.tokens_per_ip, off),
            tokens_account: SharedLimiter::new(
                accounts.db().clone(),
                clock.clone(),
                "tokens",
                limits.tokens_per_account,
                off,
            ),
            nonces_ip: Limiter::new(limits.nonces_per_ip, off),
            register_ip: Limiter::new(limits.register_per_ip, off),
            guard: LoginGuard::new(
                cfg.lockout_after_failures,
                Duration::from_secs(cfg.lockout_max_secs),
                off,
            )
            .shared(
                accounts.db().clone(),
                clock.clone(),
                Duration::from_secs(cfg.lockout_max_secs),
            ),
            cfg,
            accounts,
            tokens,
            clock,
        })
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }
    pub fn passwords(&self) -> &Passwords {
        &self.passwords
    }
    pub fn config(&self) -> &AuthConfig {
        &self.cfg
    }

    /// `iat` for a new token of `account`: never before its `tokens_not_before`.
    fn iat_for(&self, account: &Account) -> i64 {
        self.clock.now_secs().max(account.tokens_not_before)
    }

    /// Signs up a password account.
    pub async fn register(&self, ip: IpAddr, username: &str, password: &str) -> Result<Account> {
        if !self.cfg.registration {
            return Err(Error::Forbidden("registration is closed".into()));
        }
        self.register_ip.check(&ip_key(ip))?;
        crate::account::validate_username(username)?;
        Passwords::validate_new(password)?;
        let hash = self.passwords.hash(password).await?;
        self.accounts
            .create_with_password(username, &hash, self.clock.now_ms())
            .await
    }

    /// Creates a password account without limits or registration switch (operators).
    pub async fn create_account(&self, username: &str, password: &str) -> Result<Account> {
        crate::account::validate_username(username)?;
        Passwords::validate_new(password)?;
        let hash = self.passwords.hash(password).await?;
        self.accounts
            .create_with_password(username, &hash, self.clock.now_ms())
            .await
    }

    /// Checks a username and password and returns a token for the dialect.
    pub async fn password_login(
        &self,
        ip: IpAddr,
        username: &str,
        password: &str,
        dialect: PasswordDialect,
    ) -> Result<(Account, String)> {
        let ipk = ip_key(ip);
        self.login_ip.check(&ipk)?;
        // A name no account can have is refused before anything is recorded or hashed (the
        // guard's tables would otherwise keep whatever an attacker sends as a key).
        if password.is_empty() || crate::account::validate_username(username).is_err() {
            return Err(AuthFailure::BadCredentials.into());
        }
        let acct_key = format!("user:{username}");
        // Per account *and* address: an attacker's attempts never use up the owner's.
        self.login_account
            .check(&format!("{ipk} {acct_key}"))
            .await?;
        let permit = self.guard.admit(&acct_key, &ipk).await?;
        let found = self.accounts.by_username(username).await?;
        let hash = found.as_ref().and_then(|(_, h)| h.as_deref());
        let ok = self.passwords.verify(password, hash).await?;
        drop(permit);
        let account = match (ok, found) {
            (true, Some((a, _))) => a,
            _ => {
                self.guard.failed(&acct_key, &ipk).await;
                metrics::counter!("stratus_logins_total", "flow" => "password", "result" => "failure")
                    .increment(1);
                return Err(AuthFailure::BadCredentials.into());
            }
        };
        self.guard.succeeded(&acct_key, &ipk).await;
        self.tokens_ip.check(&ipk)?;
        self.tokens_account.check(&account.id).await?;
        let ttl = match dialect {
            PasswordDialect::ComputeShare => self.cfg.computeshare_token_ttl,
            PasswordDialect::TwoCloud => self.cfg.twocloud_token_ttl,
        };
        let token = self.tokens.issue_unique(
            TokenKind::Access,
            account.subject(),
            self.iat_for(&account),
            ttl,
        );
        metrics::counter!("stratus_logins_total", "flow" => "password", "result" => "success")
            .increment(1);
        Ok((account, token))
    }

    /// A new access token for an authenticated caller (TwoCloud: a token as Basic username). It
    /// belongs to the family of the caller's token and dies with it.
    pub async fn reissue(
        &self,
        ip: IpAddr,
        caller: &Caller,
        dialect: PasswordDialect,
    ) -> Result<String> {
        self.tokens_ip.check(&ip_key(ip))?;
        self.tokens_account.check(&caller.account.id).await?;
        let ttl = match dialect {
            PasswordDialect::ComputeShare => self.cfg.computeshare_token_ttl,
            PasswordDialect::TwoCloud => self.cfg.twocloud_token_ttl,
        };
        let iat = self.iat_for(&caller.account);
        let token = self
            .tokens
            .issue_unique(TokenKind::Access, caller.account.subject(), iat, ttl);
        self.tokens
            .link(&token, exp_of(iat, ttl), &caller.token)
            .await?;
        Ok(token)
    }

    /// A new login nonce for `ip`.
    pub fn new_nonce(&self, ip: IpAddr) -> Result<String> {
        self.nonces_ip.check(&ip_key(ip))?;
        Ok(self.nonces.issue(self.clock.now_ms()))
    }

    /// A nonce handed out with an authentication error (MEMO). Issuing stores nothing, so bad
    /// requests cannot push out the nonces users fetched to sign; it counts against the
    /// address's nonce budget, and past that budget the error carries an empty nonce.
    pub fn courtesy_nonce(&self, ip: IpAddr) -> String {
        if self.nonces_ip.check(&ip_key(ip)).is_err() {
            return String::new();
        }
        self.nonces.issue(self.clock.now_ms())
    }

    /// Checks a signed nonce (`keccak256(address ‖ nonce ‖ domain)`, go-ethereum signature) and
    /// uses the nonce up; returns the proven address. Shared by wallet login and wallet linking.
    pub async fn prove_wallet(&self, ip: IpAddr, req: &WalletLogin) -> Result<Address> {
        self.tokens_ip.check(&ip_key(ip))?;
        if req.address.is_empty()
            || req.nonce.is_empty()
            || req.domain.is_empty()
            || req.signature.is_empty()
        {
            return Err(AuthFailure::EmptyParameter.into());
        }
        if req.domain != self.cfg.domain {
            return Err(AuthFailure::WrongDomain.into());
        }
        let claimed = parse_address(&req.address).ok_or(AuthFailure::WrongAddress)?;
        let now = self.clock.now_ms();
        if !self.nonces.check_and_bind(&req.nonce, claimed, now).await? {
            return Err(AuthFailure::WrongNonce.into());
        }
        let digest = wallet::login_digest(&req.address, &req.nonce, &req.domain);
        let signer = wallet::recover_signer(&digest, &req.signature)?;
        if signer != claimed {
            return Err(AuthFailure::WrongAddress.into());
        }
        if !self
            .nonces
            .consume(&req.nonce, claimed, self.clock.now_ms())
            .await?
        {
            // Raced with another attempt that used the same nonce.
            return Err(AuthFailure::WrongNonce.into());
        }
        Ok(claimed)
    }

    /// Verifies a signed nonce and returns the wallet's account and tokens.
    pub async fn wallet_login(&self, ip: IpAddr, req: &WalletLogin) -> Result<WalletSession> {
        let claimed = self.prove_wallet(ip, req).await?;
        self.tokens_account
            .check(&wallet::address_lower(&claimed))
            .await?;
        let account = self
            .accounts
            .get_or_create_for_wallet(claimed, self.clock.now_ms())
            .await?;
        let iat = self.iat_for(&account);
        let sub = claimed.to_string();
        let access_token =
            self.tokens
                .issue(TokenKind::Access, &sub, iat, self.cfg.access_token_ttl);
        let refresh_token =
            self.tokens
                .issue(TokenKind::Refresh, &sub, iat, self.cfg.refresh_token_ttl);
        // One session: logging out with either token ends both.
        self.tokens
            .link_to_root(
                &access_token,
                exp_of(iat, self.cfg.access_token_ttl),
                &refresh_token,
                exp_of(iat, self.cfg.refresh_token_ttl),
            )
            .await?;
        metrics::counter!("stratus_logins_total", "flow" => "wallet", "result" => "success")
            .increment(1);
        Ok(WalletSession {
            access_token,
            refresh_token,
            account,
        })
    }

    /// Exchanges a refresh token for a new access token.
    pub async fn refresh(&self, ip: IpAddr, refresh_token: &str) -> Result<String> {
        self.tokens_ip.check(&ip_key(ip))?;
        let caller = self
            .authenticate_kind(refresh_token, TokenKind::Refresh)
            .await?;
        self.tokens_account.check(&caller.account.id).await?;
        let iat = self.iat_for(&caller.account);
        let ttl = self.cfg.access_token_ttl;
        let token = self
            .tokens
            .issue(TokenKind::Access, &caller.token.claims.sub, iat, ttl);
        self.tokens
            .link(&token, exp_of(iat, ttl), &caller.token)
            .await?;
        Ok(token)
    }

    /// The one token check: an access token, however it was obtained.
    pub async fn authenticate(&self, token: &str) -> Result<Caller> {
        self.authenticate_kind(token, TokenKind::Access).await
    }

    /// An access or a refresh token (logout accepts either).
    pub async fn authenticate_any(&self, token: &str) -> Result<Caller> {
        match self.authenticate_kind(token, TokenKind::Access).await {
            Err(Error::Unauthenticated(AuthFailure::WrongTokenType)) => {
                self.authenticate_kind(token, TokenKind::Refresh).await
            }
            other => other,
        }
    }

    async fn authenticate_kind(&self, token: &str, kind: TokenKind) -> Result<Caller> {
        let verified = self.tokens.verify(token, kind, self.clock.now_secs())?;
        let sub = &verified.claims.sub;
        let account = if let Some(addr) = parse_address(sub) {
            self.accounts.by_wallet(addr).await?.map(Arc::new)
        } else {
            self.accounts.get(sub).await?
        };
        let account = account.ok_or(AuthFailure::UnknownAccount)?;
        if verified.claims.iat < account.tokens_not_before {
            return Err(AuthFailure::Revoked.into());
        }
        Ok(Caller {
            account,
            token: verified,
        })
    }

    /// Revokes the token the caller used, with every token of its family (the session).
    pub async fn logout(&self, caller: &Caller) -> Result<()> {
        self.tokens.revoke(&caller.token).await
    }

    /// Revokes every token of the caller's account, however obtained (wallet-only accounts
    /// included). Tokens issued afterwards are valid.
    pub async fn logout_everywhere(&self, caller: &Caller) -> Result<()> {
        self.accounts
            .revoke_all(&caller.account, self.clock.now_secs() + 1)
            .await
    }

    /// Changes the password and revokes every earlier token of the account. The caller holds a
    /// valid token: failed logins never stand in the way; wrong old passwords are limited per
    /// account and address, apart from logins.
    pub async fn change_password(
        &self,
        ip: IpAddr,
        caller: &Caller,
        old: &str,
        new: &str,
    ) -> Result<()> {
        let ipk = ip_key(ip);
        let key = &caller.account.id;
        self.guard.check_change(key, &ipk).await?;
        let hash = self.accounts.password_hash(&caller.account.id).await?;
        if hash.is_none() {
            return Err(Error::invalid(
                crate::Field::OldPassword,
                "this account has no password",
            ));
        }
        if !self.passwords.verify(old, hash.as_deref()).await? {
            self.guard.change_failed(key, &ipk).await;
            return Err(Error::invalid(
                crate::Field::OldPassword,
                "the old password is wrong",
            ));
        }
        Passwords::validate_new(new)?;
        let new_hash = self.passwords.hash(new).await?;
        // Every token issued up to this second dies; new ones get iat >= now + 1.
        let not_before = self.clock.now_secs() + 1;
        self.accounts
            .set_password(&caller.account, &new_hash, not_before)
            .await
    }

    /// Sets a password for an account from the shell (operators).
    pub async fn reset_password(&self, account: &Account, new: &str) -> Result<()> {
        Passwords::validate_new(new)?;
        let new_hash = self.passwords.hash(new).await?;
        self.accounts
            .set_password(account, &new_hash, self.clock.now_secs() + 1)
            .await
    }

    /// Deletes the use records of long-expired nonces (called every few seconds, off the
    /// request path).
    pub async fn sweep_nonces(&self) -> Result<u64> {
        self.nonces.purge(self.clock.now_ms()).await
    }

    /// The login nonces (tests).
    pub fn nonces(&self) -> &Nonces {
        &self.nonces
    }

    /// The change feed of revocations: see [`Tokens::poll_revocations`].
    pub async fn poll_revocations(&self) -> Result<usize> {
        self.tokens.poll_revocations().await
    }

    /// The guard against password guessing (tests, metrics).
    pub fn login_guard(&self) -> &LoginGuard {
        &self.guard
    }

    /// Periodic housekeeping: idle limiter buckets, old revocations.
    pub async fn sweep(&self) -> Result<()> {
        for l in [
            &self.login_ip,
            &self.tokens_ip,
            &self.nonces_ip,
            &self.register_ip,
        ] {
            l.sweep();
        }
        self.login_account.sweep().await?;
        self.tokens_account.sweep().await?;
        self.guard.sweep().await?;
        self.tokens.purge_expired(self.clock.now_secs()).await?;
        Ok(())
    }
}
