//! The stratus core: everything the product is, nothing of HTTP.
//!
//! Accounts (password and wallet), tokens, login nonces, wallet signatures, rate limits, stored
//! objects, the ledger and compute instances live here. API crates translate requests into calls
//! on these types and render the results in their dialect; this crate never formats a wire error.

pub mod account;
pub mod auth;
pub mod billing;
pub mod clock;
pub mod compute;
pub mod db;
pub mod error;
pub mod nonce;
pub mod password;
pub mod ratelimit;
pub mod storage;
#[cfg(test)]
mod testdb;
pub mod token;
pub mod wallet;

pub use error::{AuthFailure, Error, Field, Result};
