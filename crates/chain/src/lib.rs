//! Recharge from an Ethereum chain: a watcher that reports confirmed deposits to stratus's
//! deposit address, in the native coin or in one ERC-20 token.
//!
//! - [`rpc`]: a small JSON-RPC client over HTTP (timeouts, retries with backoff, checked decoding).
//! - [`encoding`]: hex quantities, data, hashes, addresses and `uint256` as the JSON-RPC API
//!   writes them, parsed strictly into alloy's types.
//! - [`scan`]: pure functions from blocks, receipts and logs to [`Deposit`]s and [`Anomaly`]s,
//!   and the confirmation rule ([`scan::safe_head`]).
//! - [`watcher`]: the [`Watcher`] loop and the [`DepositStore`] trait its caller implements.
//!
//! This crate owns no database and never credits an account: it hands every confirmed transfer to
//! the store, which keeps the scan cursor, de-duplicates by [`Deposit::reference`] and decides
//! which account a sender's wallet belongs to.
//!
//! Wiring, in the server:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # async fn wire(cfg: &stratus_config::Config, store: Arc<dyn stratus_chain::DepositStore>)
//! # -> Result<(), stratus_chain::WatchError> {
//! let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
//! let task = match stratus_chain::WatcherConfig::from_chain_config(&cfg.chain)? {
//!     Some(wc) => Some(stratus_chain::Watcher::new(wc, store)?.spawn(stop_rx)),
//!     None => None, // no rpc_url: recharge from the chain is off
//! };
//! // … serve …
//! let _ = stop_tx.send(true);
//! if let Some(t) = task {
//!     let _ = t.await;
//! }
//! # Ok(()) }
//! ```

pub mod encoding;
pub mod rpc;
pub mod scan;
pub mod watcher;

/// The workspace's one set of Ethereum types (EIP-55 `Display` for addresses).
pub use alloy_primitives::{Address, B256, U256};
/// Re-exported so that implementations of [`DepositStore`] use the same macro version.
pub use async_trait::async_trait;
pub use encoding::{parse_address, HexError};
pub use rpc::{RetryPolicy, RpcClient, RpcError};
pub use scan::{safe_head, Anomaly, AnomalyKind, Deposit, ScanOutput};
pub use watcher::{
    Asset, DepositStore, PollReport, StoreError, WatchError, Watcher, WatcherConfig,
    DEFAULT_BATCH_BLOCKS, DEFAULT_POLL_INTERVAL,
};
