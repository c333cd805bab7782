//! The deposit watcher: follows the chain behind its confirmation depth and hands confirmed
//! deposits to a [`DepositStore`] that the caller implements.
//!
//! One poll reads the head, derives the highest confirmed block ([`safe_head`]), and walks from
//! the stored cursor up to it in bounded batches. Each batch is scanned (native: blocks with their
//! transactions plus receipts of candidates; ERC-20: `eth_getLogs` on the token contract with the
//! deposit address as topic 2), de-duplicated, and committed to the store together with the new
//! cursor in one call, so a crash between batches loses nothing and repeats at most one batch.
//! Nothing inside the reorganization window is ever committed, so reorganizations shallower than
//! the confirmation depth need no undo. The watcher keeps no state of its own besides what the
//! store returns: any number of restarts, or two watchers on the same store, at worst hand the
//! store a reference it already has, which it must ignore.
//!
//! The watcher never credits anyone: deciding which account a sender's wallet belongs to, and
//! when, is the store's job.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use stratus_config::ChainConfig;
use tokio::sync::watch;

use alloy_primitives::Address;

use crate::encoding::parse_address;
use crate::rpc::{
    redact_url, LogFilter, RetryPolicy, RpcClient, RpcError, DEFAULT_REQUEST_TIMEOUT,
};
use crate::scan::{
    dedup_anomalies, dedup_deposits, erc20_deposits, native_candidates, native_deposits,
    next_range, safe_head, Anomaly, Deposit, ScanError, ScanOutput, TRANSFER_TOPIC,
};

/// Poll interval used when the configuration says 0.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Blocks per batch (one `eth_getLogs` call, or that many blocks fetched; one commit).
pub const DEFAULT_BATCH_BLOCKS: u64 = 500;
/// Blocks fetched at once when scanning native transfers.
const NATIVE_FETCH_CONCURRENCY: usize = 8;
/// Longest wait between polls after repeated failures.
const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(60);

/// A failure reported by a [`DepositStore`] implementation.
#[derive(Debug, thiserror::Error)]
#[error("deposit store: {0}")]
pub struct StoreError(pub Box<dyn std::error::Error + Send + Sync + 'static>);

impl StoreError {
    /// Wraps any error or message: `StoreError::new(sqlx_error)`, `StoreError::new("full")`.
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> StoreError {
        StoreError(e.into())
    }
}

/// Where confirmed deposits and the scan cursor are kept; implemented by the caller.
///
/// Every deposit the watcher ever reports must be kept, whether or not its sender's wallet is
/// linked to an account yet. `commit` may receive a reference it already has (after a restart, a
/// cursor moved back, or two watchers on one store): it must then change nothing for that
/// deposit. A failed `commit` must change nothing at all; the watcher will repeat the batch.
#[async_trait]
pub trait DepositStore: Send + Sync {
    /// Last fully processed block (None = never ran: start from config.start_block).
    async fn cursor(&self) -> Result<Option<u64>, StoreError>;

    /// Atomically: record these deposits (idempotent by `reference`) and move the cursor to `block`.
    async fn commit(&self, block: u64, deposits: &[Deposit]) -> Result<(), StoreError>;

    /// Transfers to the deposit address that cannot be credited as they are (an amount above
    /// `u128`, a malformed event), for an operator to look at. Called before the `commit` of the
    /// batch they belong to, so it may see the same reference again; the default only relies on
    /// the watcher's own error log and the `stratus_chain_anomalies_total` counter.
    async fn record_anomalies(&self, anomalies: &[Anomaly]) -> Result<(), StoreError> {
        let _ = anomalies;
        Ok(())
    }
}

/// What is being deposited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    /// The chain's native coin (ether): top-level transactions to the deposit address.
    Native,
    /// An ERC-20 token: `Transfer` events of this contract to the deposit address.
    Erc20 { contract: Address },
}

/// Everything the watcher needs, checked. Usually built with [`WatcherConfig::from_chain_config`].
#[derive(Clone, PartialEq, Eq)]
pub struct WatcherConfig {
    /// JSON-RPC endpoint (http or https). May contain an API key: never logged whole.
    pub rpc_url: String,
    pub deposit_address: Address,
    pub asset: Asset,
    /// At least 1; see [`safe_head`] for the exact rule.
    pub confirmations: u64,
    /// First block scanned when the store has no cursor yet.
    pub start_block: u64,
    pub poll_interval: Duration,
    /// Largest number of blocks per batch (one commit each).
    pub batch_blocks: u64,
    /// When set, the watcher refuses to run against a node of another chain.
    pub expected_chain_id: Option<u64>,
    /// Time limit of one JSON-RPC request.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for WatcherConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatcherConfig")
            .field("rpc_url", &redact_url(&self.rpc_url))
            .field("deposit_address", &self.deposit_address)
            .field("asset", &self.asset)
            .field("confirmations", &self.confirmations)
            .field("start_block", &self.start_block)
            .field("poll_interval", &self.poll_interval)
            .field("batch_blocks", &self.batch_blocks)
            .field("expected_chain_id", &self.expected_chain_id)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

impl WatcherConfig {
    /// A configuration with defaults for everything but the essentials.
    pub fn new(
        rpc_url: impl Into<String>,
        deposit_address: Address,
        asset: Asset,
        confirmations: u64,
    ) -> WatcherConfig {
        WatcherConfig {
            rpc_url: rpc_url.into(),
            deposit_address,
            asset,
            confirmations,
            start_block: 0,
            poll_interval: DEFAULT_POLL_INTERVAL,
            batch_blocks: DEFAULT_BATCH_BLOCKS,
            expected_chain_id: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry: RetryPolicy::default(),
        }
    }

    /// Reads the `[chain]` section: `Ok(None)` when no `rpc_url` is set (no watcher runs).
    ///
    /// `deposit_address` is required with `rpc_url`; an empty `token_contract` means the native
    /// coin; `confirmations` must be at least 1; `poll_interval_ms = 0` means
    /// [`DEFAULT_POLL_INTERVAL`].
    pub fn from_chain_config(c: &ChainConfig) -> Result<Option<WatcherConfig>, WatchError> {
        let nonempty = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let Some(rpc_url) = nonempty(&c.rpc_url) else {
            return Ok(None);
        };
        let bad = |m: String| WatchError::Config(m);
        let deposit = nonempty(&c.deposit_address).ok_or_else(|| {
            bad("chain.deposit_address is required when chain.rpc_url is set".into())
        })?;
        let deposit_address =
            parse_address(&deposit).map_err(|e| bad(format!("chain.deposit_address: {e}")))?;
        let asset = match nonempty(&c.token_contract) {
            None => Asset::Native,
            Some(t) => Asset::Erc20 {
                contract: parse_address(&t)
                    .map_err(|e| bad(format!("chain.token_contract: {e}")))?,
            },
        };
        let mut cfg = WatcherConfig::new(rpc_url, deposit_address, asset, c.confirmations);
        cfg.start_block = c.start_block;
        if c.poll_interval_ms > 0 {
            cfg.poll_interval = Duration::from_millis(c.poll_interval_ms);
        }
        cfg.validate()?;
        Ok(Some(cfg))
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), WatchError> {
        let bad = |m: &str| Err(WatchError::Config(m.to_string()));
        if self.confirmations == 0 {
            return bad("chain.confirmations must be at least 1 (1 = the head block counts)");
        }
        if self.deposit_address == Address::ZERO {
            return bad("chain.deposit_address must not be the zero address");
        }
        if self.asset
            == (Asset::Erc20 {
                contract: self.deposit_address,
            })
        {
            return bad("chain.token_contract must differ from chain.deposit_address");
        }
        if self.batch_blocks == 0 {
            return bad("batch_blocks must be at least 1");
        }
        if self.poll_interval.is_zero() {
            return bad("poll interval must not be zero");
        }
        RpcClient::new(&self.rpc_url)
            .map_err(|e| WatchError::Config(format!("chain.rpc_url: {e}")))?;
        Ok(())
    }
}

/// A failed poll, or a watcher that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("chain watcher configuration: {0}")]
    Config(String),
    #[error("chain node: {0}")]
    Rpc(#[from] RpcError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the node is on chain id {actual}, the watcher is configured for {expected}")]
    WrongChain { expected: u64, actual: u64 },
    #[error("the node answered inconsistently: {0}")]
    Inconsistent(String),
}

impl From<ScanError> for WatchError {
    fn from(e: ScanError) -> Self {
        WatchError::Inconsistent(e.to_string())
    }
}

impl WatchError {
    /// Errors that retrying cannot fix: [`Watcher::run`] returns them instead of polling again.
    pub fn is_fatal(&self) -> bool {
        matches!(self, WatchError::Config(_) | WatchError::WrongChain { .. })
    }
}

/// What one [`Watcher::poll_once`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// The node's head block.
    pub head: u64,
    /// The highest confirmed block (`None`: the chain is shorter than the confirmation depth).
    pub safe_head: Option<u64>,
    /// The store's cursor before and after the poll.
    pub cursor_before: Option<u64>,
    pub cursor: Option<u64>,
    /// Batches committed.
    pub batches: u32,
    /// Deposits committed during this poll, in chain order.
    pub deposits: Vec<Deposit>,
    /// Anomalies met during this poll.
    pub anomalies: Vec<Anomaly>,
}

/// Why a poll ended early.
enum Halt {
    Stop,
    Error(WatchError),
}

impl<E: Into<WatchError>> From<E> for Halt {
    fn from(e: E) -> Self {
        Halt::Error(e.into())
    }
}

/// Follows the chain and commits confirmed deposits to a [`DepositStore`].
pub struct Watcher {
    cfg: WatcherConfig,
    rpc: RpcClient,
    store: Arc<dyn DepositStore>,
    chain_checked: AtomicBool,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").field("cfg", &self.cfg).finish()
    }
}

impl Watcher {
    /// A watcher for `cfg` writing to `store`.
    pub fn new(cfg: WatcherConfig, store: Arc<dyn DepositStore>) -> Result<Watcher, WatchError> {
        cfg.validate()?;
        let rpc = RpcClient::with_options(&cfg.rpc_url, cfg.request_timeout, cfg.retry.clone())
            .map_err(|e| WatchError::Config(e.to_string()))?;
        describe_metrics();
        Ok(Watcher {
            cfg,
            rpc,
            store,
            chain_checked: AtomicBool::new(false),
        })
    }

    pub fn config(&self) -> &WatcherConfig {
        &self.cfg
    }

    /// The JSON-RPC client the watcher uses.
    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    /// Processes every block confirmed by now, batch by batch, and returns what was committed.
    pub async fn poll_once(&self) -> Result<PollReport, WatchError> {
        match self.poll(None).await {
            Ok(r) => Ok(r),
            Err(Halt::Error(e)) => Err(e),
            Err(Halt::Stop) => unreachable!("no stop signal without a receiver"),
        }
    }

    /// Polls every `poll_interval` until `shutdown` becomes true (or its sender is dropped).
    ///
    /// Failed polls are logged and retried with a growing delay (up to a minute); only a
    /// configuration error or a node on the wrong chain ends the loop with an error. Shutdown
    /// interrupts network waits at once, but never a store call in progress.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), WatchError> {
        tracing::info!(
            endpoint = %redact_url(&self.cfg.rpc_url),
            deposit_address = %self.cfg.deposit_address,
            asset = ?self.cfg.asset,
            confirmations = self.cfg.confirmations,
            "chain watcher started"
        );
        let mut failures: u32 = 0;
        loop {
            if *shutdown.borrow() {
                break;
            }
            match self.poll(Some(&mut shutdown)).await {
                Ok(_) => failures = 0,
                Err(Halt::Stop) => break,
                Err(Halt::Error(e)) if e.is_fatal() => {
                    tracing::error!(error = %e, "chain watcher cannot run");
                    return Err(e);
                }
                Err(Halt::Error(e)) => {
                    failures = failures.saturating_add(1);
                    metrics::counter!("stratus_chain_poll_errors_total").increment(1);
                    tracing::warn!(error = %e, failures, "chain watcher poll failed; will retry");
                }
            }
            let delay = failure_delay(self.cfg.poll_interval, failures);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(&mut shutdown) => break,
            }
        }
        tracing::info!("chain watcher stopped");
        Ok(())
    }

    /// Runs [`Watcher::run`] on a new task.
    pub fn spawn(
        self,
        shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<Result<(), WatchError>> {
        tokio::spawn(self.run(shutdown))
    }

    async fn poll(&self, mut stop: Option<&mut watch::Receiver<bool>>) -> Result<PollReport, Halt> {
        if !self.chain_checked.load(Ordering::Relaxed) {
            let id = interruptible(&mut stop, async { Ok(self.rpc.chain_id().await?) }).await?;
            if let Some(expected) = self.cfg.expected_chain_id {
                if expected != id {
                    return Err(Halt::Error(WatchError::WrongChain {
                        expected,
                        actual: id,
                    }));
                }
            }
            tracing::info!(chain_id = id, "chain watcher connected");
            self.chain_checked.store(true, Ordering::Relaxed);
        }

        let head = interruptible(&mut stop, async { Ok(self.rpc.block_number().await?) }).await?;
        let safe = safe_head(head, self.cfg.confirmations);
        metrics::gauge!("stratus_chain_head_block").set(head as f64);
        if let Some(s) = safe {
            metrics::gauge!("stratus_chain_safe_block").set(s as f64);
        }
        let mut cursor = self.store.cursor().await?;
        if let Some(c) = cursor {
            metrics::gauge!("stratus_chain_cursor_block").set(c as f64);
        }
        let mut report = PollReport {
            head,
            safe_head: safe,
            cursor_before: cursor,
            cursor,
            ..PollReport::default()
        };
        if cursor.is_some_and(|c| c > head) {
            tracing::warn!(
                cursor,
                head,
                "stored chain cursor is ahead of the node's head (node still syncing, or another chain?); waiting"
            );
            return Ok(report);
        }
        if cursor.is_none() && self.cfg.start_block == 0 && head > 100_000 {
            tracing::warn!(
                head,
                "chain watcher starts from genesis; set chain.start_block to the deposit address's first block"
            );
        }

        while let Some(range) =
            next_range(cursor, self.cfg.start_block, safe, self.cfg.batch_blocks)
        {
            let out = interruptible(&mut stop, self.scan(range.clone())).await?;
            let deposits = dedup_deposits(out.deposits);
            let anomalies = dedup_anomalies(out.anomalies);
            if !anomalies.is_empty() {
                for a in &anomalies {
                    tracing::error!(anomaly = %a, "transfer to the deposit address not credited");
                }
                metrics::counter!("stratus_chain_anomalies_total")
                    .increment(anomalies.len() as u64);
                self.store.record_anomalies(&anomalies).await?;
            }
            let end = *range.end();
            self.store.commit(end, &deposits).await?;
            metrics::gauge!("stratus_chain_cursor_block").set(end as f64);
            metrics::counter!("stratus_chain_deposits_total").increment(deposits.len() as u64);
            if deposits.is_empty() {
                tracing::debug!(from = range.start(), to = end, "chain blocks scanned");
            } else {
                tracing::info!(
                    from = range.start(),
                    to = end,
                    deposits = deposits.len(),
                    "chain deposits committed"
                );
            }
            cursor = Some(end);
            report.cursor = cursor;
            report.batches += 1;
            report.deposits.extend(deposits);
            report.anomalies.extend(anomalies);
            if stop.as_ref().is_some_and(|rx| *rx.borrow()) {
                return Err(Halt::Stop);
            }
        }
        Ok(report)
    }

    /// Scans an inclusive range of confirmed blocks.
    async fn scan(&self, range: RangeInclusive<u64>) -> Result<ScanOutput, WatchError> {
        match self.cfg.asset {
            Asset::Native => {
                let outs: Vec<ScanOutput> = futures::stream::iter(range)
                    .map(|n| self.scan_native_block(n))
                    .buffered(NATIVE_FETCH_CONCURRENCY)
                    .try_collect()
                    .await?;
                let mut all = ScanOutput::default();
                for o in outs {
                    all.extend(o);
                }
                Ok(all)
            }
            Asset::Erc20 { contract } => self.scan_erc20(range, contract).await,
        }
    }

    async fn scan_native_block(&self, number: u64) -> Result<ScanOutput, WatchError> {
        let block = self
            .rpc
            .block_with_transactions(number)
            .await?
            .ok_or_else(|| {
                WatchError::Inconsistent(format!(
                    "block {number} is confirmed but the node does not return it"
                ))
            })?;
        if block.number != number {
            return Err(WatchError::Inconsistent(format!(
                "asked for block {number}, got block {}",
                block.number
            )));
        }
        let mut receipts = HashMap::new();
        for tx in native_candidates(&block, &self.cfg.deposit_address) {
            let r = self
                .rpc
                .transaction_receipt(&tx.hash)
                .await?
                .ok_or(ScanError::MissingReceipt(tx.hash))?;
            receipts.insert(tx.hash, r);
        }
        Ok(native_deposits(
            &block,
            &self.cfg.deposit_address,
            &receipts,
        )?)
    }

    async fn scan_erc20(
        &self,
        range: RangeInclusive<u64>,
        token: Address,
    ) -> Result<ScanOutput, WatchError> {
        // A node behind the one that answered eth_blockNumber (load-balanced endpoints) would
        // answer an empty log list for blocks it does not have yet: make sure it has the range.
        let end = *range.end();
        if self.rpc.block_header(end).await?.is_none() {
            return Err(WatchError::Inconsistent(format!(
                "block {end} is confirmed but the node does not return it"
            )));
        }
        let mut pending = VecDeque::from([range.clone()]);
        let mut logs = Vec::new();
        while let Some(r) = pending.pop_front() {
            let filter = LogFilter {
                from_block: *r.start(),
                to_block: *r.end(),
                addresses: vec![token],
                topics: vec![
                    Some(vec![TRANSFER_TOPIC]),
                    None,
                    Some(vec![self.cfg.deposit_address.into_word()]),
                ],
            };
            match self.rpc.logs(&filter).await {
                Ok(mut l) => logs.append(&mut l),
                Err(e) if e.is_range_too_large() && r.start() < r.end() => {
                    let mid = r.start() + (r.end() - r.start()) / 2;
                    tracing::debug!(error = %e, from = r.start(), to = r.end(), "splitting eth_getLogs range");
                    pending.push_front(mid + 1..=*r.end());
                    pending.push_front(*r.start()..=mid);
                }
                Err(e) => return Err(e.into()),
            }
        }
        logs.sort_by_key(|l| (l.block_number, l.log_index));
        Ok(erc20_deposits(
            &logs,
            &token,
            &self.cfg.deposit_address,
            range,
        )?)
    }
}

/// Waits until the shutdown flag is true or its sender is gone.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Runs `fut`, unless the stop signal comes first.
async fn interruptible<T>(
    stop: &mut Option<&mut watch::Receiver<bool>>,
    fut: impl Future<Output = Result<T, WatchError>>,
) -> Result<T, Halt> {
    match stop {
        None => fut.await.map_err(Halt::Error),
        Some(rx) => tokio::select! {
            r = fut => r.map_err(Halt::Error),
            _ = stopped(rx) => Err(Halt::Stop),
        },
    }
}

/// The wait before the next poll: the interval, doubled for each consecutive failure (capped).
fn failure_delay(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    let factor = 1u32 << failures.min(16);
    interval
        .saturating_mul(factor / 2)
        .min(MAX_FAILURE_BACKOFF.max(interval))
}

fn describe_metrics() {
    metrics::describe_gauge!("stratus_chain_head_block", "Head block of the chain node");
    metrics::describe_gauge!(
        "stratus_chain_safe_block",
        "Highest block with enough confirmations"
    );
    metrics::describe_gauge!(
        "stratus_chain_cursor_block",
        "Last block whose deposits are committed"
    );
    metrics::describe_counter!(
        "stratus_chain_deposits_total",
        "Deposits handed to the store (a re-scan counts again)"
    );
    metrics::describe_counter!(
        "stratus_chain_anomalies_total",
        "Transfers to the deposit address that could not be credited"
    );
    metrics::describe_counter!("stratus_chain_poll_errors_total", "Failed polls");
    metrics::describe_counter!(
        "stratus_chain_rpc_retries_total",
        "JSON-RPC calls retried after a transient failure"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(rpc: Option<&str>, dep: Option<&str>, token: Option<&str>, conf: u64) -> ChainConfig {
        ChainConfig {
            rpc_url: rpc.map(Into::into),
            deposit_address: dep.map(Into::into),
            token_contract: token.map(Into::into),
            confirmations: conf,
            start_block: 7,
            poll_interval_ms: 0,
        }
    }

    const DEP: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    const TOKEN: &str = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359";

    #[test]
    fn config_from_the_chain_section() {
        assert_eq!(
            WatcherConfig::from_chain_config(&ChainConfig::default()).unwrap(),
            None
        );
        assert_eq!(
            WatcherConfig::from_chain_config(&chain(Some("  "), None, None, 0)).unwrap(),
            None
        );
        let c = WatcherConfig::from_chain_config(&chain(
            Some("http://127.0.0.1:8545"),
            Some(DEP),
            Some(""),
            12,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(c.asset, Asset::Native);
        assert_eq!(c.deposit_address.to_string(), DEP);
        assert_eq!(c.confirmations, 12);
        assert_eq!(c.start_block, 7);
        assert_eq!(c.poll_interval, DEFAULT_POLL_INTERVAL);
        let t = WatcherConfig::from_chain_config(&chain(
            Some("https://node.example/key"),
            Some(DEP),
            Some(TOKEN),
            1,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            t.asset,
            Asset::Erc20 {
                contract: parse_address(TOKEN).unwrap()
            }
        );
        assert!(!format!("{t:?}").contains("key"));
    }

    #[test]
    fn config_errors() {
        let err = |c: ChainConfig| {
            WatcherConfig::from_chain_config(&c)
                .unwrap_err()
                .to_string()
        };
        let url = Some("http://127.0.0.1:8545");
        assert!(err(chain(url, None, None, 1)).contains("deposit_address is required"));
        assert!(err(chain(url, Some("0x12"), None, 1)).contains("deposit_address"));
        assert!(err(chain(url, Some(DEP), Some("nope"), 1)).contains("token_contract"));
        assert!(err(chain(url, Some(DEP), None, 0)).contains("confirmations"));
        assert!(err(chain(url, Some(DEP), Some(DEP), 1)).contains("must differ"));
        assert!(err(chain(Some("ftp://x"), Some(DEP), None, 1)).contains("rpc_url"));
        assert!(err(chain(
            url,
            Some("0x0000000000000000000000000000000000000000"),
            None,
            1
        ))
        .contains("zero address"));
    }

    #[test]
    fn failure_delays_grow_and_are_capped() {
        let i = Duration::from_secs(2);
        assert_eq!(failure_delay(i, 0), i);
        assert_eq!(failure_delay(i, 1), i);
        assert_eq!(failure_delay(i, 2), Duration::from_secs(4));
        assert_eq!(failure_delay(i, 3), Duration::from_secs(8));
        assert_eq!(failure_delay(i, 30), MAX_FAILURE_BACKOFF);
        let long = Duration::from_secs(120);
        assert_eq!(failure_delay(long, 5), long);
    }
}
