//! Password hashing with argon2id, off the async runtime.
//!
//! Hashing is deliberately slow, so it runs on blocking threads and at most `parallel` hashes run
//! at once (by default one core is left for everything else): a flood of logins queues here
//! instead of starving the request handlers.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::{Error, Result};

/// Longest accepted password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Hashes and verifies passwords.
#[derive(Debug, Clone)]
pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when the user is unknown so that the answer
    /// takes as long as for a known user.
    dummy_hash: Arc<String>,
}

impl Passwords {
    pub fn new(memory_kib: u32, iterations: u32, parallel: usize) -> Result<Self> {
        let params = Params::new(memory_kib, iterations, 1, None).map_err(Error::internal)?;
        let parallel = if parallel == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get().saturating_sub(1))
                .unwrap_or(1)
                .max(1)
        } else {
            parallel
        };
        let dummy = hash_blocking(&params, &uuid::Uuid::new_v4().to_string())?;
        Ok(Passwords {
            params,
            permits: Arc::new(Semaphore::new(parallel)),
            dummy_hash: Arc::new(dummy),
        })
    }

    /// Checks a new password's shape.
    pub fn validate_new(password: &str) -> Result<()> {
        if password.chars().count() < 8 {
            return Err(Error::invalid(
                crate::Field::Password,
                "must be at least 8 characters long",
            ));
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(Error::invalid(
                crate::Field::Password,
                "must be at most 1024 bytes",
            ));
        }
        Ok(())
    }

    /// Returns the PHC string of an argon2id hash with a random salt.
    pub async fn hash(&self, password: &str) -> Result<String> {
        let _permit = self.permits.acquire().await.map_err(Error::internal)?;
        let params = self.params.clone();
        let pw = password.to_string();
        tokio::task::spawn_blocking(move || hash_blocking(&params, &pw))
            .await
            .map_err(Error::internal)?
    }

    /// Verifies `password` against `hash`; with `None` (unknown user) burns the same time and
    /// returns false.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        let _permit = self.permits.acquire().await.map_err(Error::internal)?;
        let known = hash.is_some();
        let hash = hash
            .map(str::to_string)
            .unwrap_or_else(|| (*self.dummy_hash).clone());
        let pw = password.to_string();
        let ok = tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash).map_err(Error::internal)?;
            Ok::<bool, Error>(
                Argon2::default()
                    .verify_password(pw.as_bytes(), &parsed)
                    .is_ok(),
            )
        })
        .await
        .map_err(Error::internal)??;
        Ok(ok && known)
    }
}

fn hash_blocking(params: &Params, password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(Error::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let p = Passwords::new(1024, 1, 1).unwrap();
        let h = p.hash("correct horse").await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(p.verify("correct horse", Some(&h)).await.unwrap());
        assert!(!p.verify("wrong horse", Some(&h)).await.unwrap());
        assert!(!p.verify("correct horse", None).await.unwrap());
        let h2 = p.hash("correct horse").await.unwrap();
        assert_ne!(h, h2, "salted");
    }
}
