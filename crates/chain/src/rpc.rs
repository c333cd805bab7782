//! A small Ethereum JSON-RPC 2.0 client over HTTP, and the chain objects it returns.
//!
//! It speaks only the methods the watcher needs (`eth_chainId`, `eth_blockNumber`,
//! `eth_getBlockByNumber`, `eth_getLogs`, `eth_getTransactionReceipt`) plus a generic
//! [`RpcClient::request`]. Every request has a timeout; transport failures, HTTP 408/429/5xx and
//! JSON-RPC internal errors are retried with exponential backoff, everything else is returned at
//! once. Answers are decoded into typed objects whose hex fields are checked
//! ([`crate::encoding`]); a malformed answer is an error, never a silently wrong value. Error
//! messages never contain the endpoint URL, which often embeds an API key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use alloy_primitives::{Address, B256, U256};

use crate::encoding::{address_lower, de_hex, format_u64};

/// A failed JSON-RPC call.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("invalid JSON-RPC endpoint: {0}")]
    InvalidUrl(String),
    #[error("{method}: cannot build the HTTP client: {source}")]
    Client {
        method: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method}: {source}")]
    Transport {
        method: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method}: HTTP status {status}: {body}")]
    Http {
        method: String,
        status: u16,
        body: String,
    },
    #[error("{method}: JSON-RPC error {code}: {message}")]
    Rpc {
        method: String,
        code: i64,
        message: String,
    },
    #[error("{method}: unexpected answer: {reason}")]
    Decode { method: String, reason: String },
}

impl RpcError {
    /// Whether trying again later may succeed (network, overload, node-internal trouble).
    pub fn is_transient(&self) -> bool {
        match self {
            RpcError::Transport { .. } => true,
            RpcError::Http { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            // -32603: internal error; -32005: "limit exceeded" (rate limits at hosted nodes).
            RpcError::Rpc { code, message, .. } => {
                *code == -32603
                    || (*code == -32005 && message.to_ascii_lowercase().contains("rate"))
            }
            RpcError::InvalidUrl(_) | RpcError::Client { .. } | RpcError::Decode { .. } => false,
        }
    }

    /// Whether the node refused an `eth_getLogs` range as too large (providers cap the number of
    /// blocks or results; codes and wording differ, so this looks at both).
    pub fn is_range_too_large(&self) -> bool {
        let RpcError::Rpc { code, message, .. } = self else {
            return false;
        };
        let m = message.to_ascii_lowercase();
        *code == -32005
            || [
                "range",
                "more than",
                "too many",
                "limit",
                "exceed",
                "too large",
            ]
            .iter()
            .any(|w| m.contains(w))
    }
}

/// How transient failures are retried inside one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all (1 = no retry).
    pub attempts: u32,
    /// Wait before the first retry; doubles each time.
    pub initial_backoff: Duration,
    /// Longest wait between two tries.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based).
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Default time limit of one HTTP request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A JSON-RPC client for one endpoint. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct RpcClient {
    http: reqwest::Client,
    url: reqwest::Url,
    next_id: Arc<AtomicU64>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("endpoint", &redact_url(self.url.as_str()))
            .finish()
    }
}

/// `scheme://host:port` of an endpoint, without path, query or credentials (which may hold keys).
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
            (Some(h), None) => format!("{}://{h}", u.scheme()),
            _ => format!("{}://", u.scheme()),
        },
        Err(_) => "<invalid url>".to_string(),
    }
}

impl RpcClient {
    /// A client with the default timeout and retry policy.
    pub fn new(url: &str) -> Result<RpcClient, RpcError> {
        Self::with_options(url, DEFAULT_REQUEST_TIMEOUT, RetryPolicy::default())
    }

    /// A client with an explicit per-request timeout and retry policy.
    pub fn with_options(
        url: &str,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> Result<RpcClient, RpcError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| RpcError::InvalidUrl(format!("{}: {e}", redact_url(url))))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(RpcError::InvalidUrl(format!(
                "{}: only http and https are supported",
                redact_url(url)
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|source| RpcError::Client {
                method: "connect",
                source,
            })?;
        Ok(RpcClient {
            http,
            url: parsed,
            next_id: Arc::new(AtomicU64::new(1)),
            retry: RetryPolicy {
                attempts: retry.attempts.max(1),
                ..retry
            },
        })
    }

    /// Calls `method` with `params`, retrying transient failures, and decodes `result` as `T`.
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, RpcError> {
        let mut retry = 0;
        loop {
            match self.request_once(method, &params).await {
                Ok(v) => {
                    return serde_json::from_value(v).map_err(|e| RpcError::Decode {
                        method: method.to_string(),
                        reason: e.to_string(),
                    })
                }
                Err(e) if e.is_transient() && retry + 1 < self.retry.attempts => {
                    let wait = self.retry.backoff(retry);
                    tracing::debug!(method, error = %e, ?wait, "transient JSON-RPC failure, retrying");
                    metrics::counter!("stratus_chain_rpc_retries_total", "method" => method.to_string())
                        .increment(1);
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn request_once(&self, method: &str, params: &Value) -> Result<Value, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let transport = |source: reqwest::Error| RpcError::Transport {
            method: method.to_string(),
            source: source.without_url(),
        };
        let resp = self
            .http
            .post(self.url.clone())
            .json(&body)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let body: String = text.chars().take(200).collect();
            return Err(RpcError::Http {
                method: method.to_string(),
                status: status.as_u16(),
                body,
            });
        }
        decode_response(method, id, &bytes)
    }

    /// `eth_chainId`.
    pub async fn chain_id(&self) -> Result<u64, RpcError> {
        let q: Quantity = self.request("eth_chainId", json!([])).await?;
        Ok(q.0)
    }

    /// `eth_blockNumber`: the number of the most recent block.
    pub async fn block_number(&self) -> Result<u64, RpcError> {
        let q: Quantity = self.request("eth_blockNumber", json!([])).await?;
        Ok(q.0)
    }

    /// `eth_getBlockByNumber(n, true)`: the block with its full transactions, `None` if unknown.
    pub async fn block_with_transactions(&self, number: u64) -> Result<Option<Block>, RpcError> {
        self.request("eth_getBlockByNumber", json!([format_u64(number), true]))
            .await
    }

    /// `eth_getBlockByNumber(n, false)`: the header only, `None` if unknown.
    pub async fn block_header(&self, number: u64) -> Result<Option<BlockHeader>, RpcError> {
        self.request("eth_getBlockByNumber", json!([format_u64(number), false]))
            .await
    }

    /// `eth_getLogs`.
    pub async fn logs(&self, filter: &LogFilter) -> Result<Vec<Log>, RpcError> {
        self.request("eth_getLogs", json!([filter.to_json()])).await
    }

    /// `eth_getTransactionReceipt`, `None` if the transaction is unknown or pending.
    pub async fn transaction_receipt(&self, hash: &B256) -> Result<Option<Receipt>, RpcError> {
        self.request("eth_getTransactionReceipt", json!([hash.to_string()]))
            .await
    }
}

/// Checks the JSON-RPC envelope of an answer to request `id` and returns its `result`.
pub fn decode_response(method: &str, id: u64, body: &[u8]) -> Result<Value, RpcError> {
    let decode = |reason: String| RpcError::Decode {
        method: method.to_string(),
        reason,
    };
    let v: Value = serde_json::from_slice(body).map_err(|e| decode(format!("not JSON: {e}")))?;
    let Value::Object(mut obj) = v else {
        return Err(decode("not a JSON-RPC response object".into()));
    };
    if let Some(err) = obj.get("error").filter(|e| !e.is_null()) {
        let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)")
            .chars()
            .take(300)
            .collect();
        return Err(RpcError::Rpc {
            method: method.to_string(),
            code,
            message,
        });
    }
    match obj.get("id") {
        Some(Value::Number(n)) if n.as_u64() == Some(id) => {}
        Some(Value::String(s)) if s.parse::<u64>().ok() == Some(id) => {}
        other => {
            return Err(decode(format!(
                "answer id {other:?} is not request id {id}"
            )))
        }
    }
    obj.remove("result")
        .ok_or_else(|| decode("neither result nor error".into()))
}

/// A quantity answer (`eth_blockNumber`, `eth_chainId`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Quantity(#[serde(deserialize_with = "de_hex::u64")] pub u64);

/// A block header: the fields the watcher uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockHeader {
    #[serde(deserialize_with = "de_hex::u64")]
    pub number: u64,
    #[serde(deserialize_with = "de_hex::b256")]
    pub hash: B256,
    #[serde(deserialize_with = "de_hex::b256")]
    pub parent_hash: B256,
}

/// A block with its full transactions (`eth_getBlockByNumber(n, true)`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Block {
    #[serde(deserialize_with = "de_hex::u64")]
    pub number: u64,
    #[serde(deserialize_with = "de_hex::b256")]
    pub hash: B256,
    #[serde(deserialize_with = "de_hex::b256")]
    pub parent_hash: B256,
    #[serde(default)]
    pub transactions: Vec<Transaction>,
}

/// A transaction inside a block: the fields the watcher uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transaction {
    #[serde(deserialize_with = "de_hex::b256")]
    pub hash: B256,
    #[serde(deserialize_with = "de_hex::address")]
    pub from: Address,
    /// `None` for a contract creation.
    #[serde(default, deserialize_with = "de_hex::opt_address")]
    pub to: Option<Address>,
    #[serde(deserialize_with = "de_hex::u256")]
    pub value: U256,
}

/// A transaction receipt: the fields the watcher uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    #[serde(deserialize_with = "de_hex::b256")]
    pub transaction_hash: B256,
    #[serde(deserialize_with = "de_hex::b256")]
    pub block_hash: B256,
    #[serde(deserialize_with = "de_hex::u64")]
    pub block_number: u64,
    /// 1 success, 0 failure; absent before the Byzantium fork (those receipts carry `root`).
    #[serde(default, deserialize_with = "de_hex::opt_u64")]
    pub status: Option<u64>,
}

/// An event log (`eth_getLogs`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Log {
    #[serde(deserialize_with = "de_hex::address")]
    pub address: Address,
    #[serde(deserialize_with = "de_hex::b256_list")]
    pub topics: Vec<B256>,
    #[serde(deserialize_with = "de_hex::data")]
    pub data: Vec<u8>,
    #[serde(deserialize_with = "de_hex::u64")]
    pub block_number: u64,
    #[serde(deserialize_with = "de_hex::b256")]
    pub block_hash: B256,
    #[serde(deserialize_with = "de_hex::b256")]
    pub transaction_hash: B256,
    #[serde(deserialize_with = "de_hex::u64")]
    pub log_index: u64,
    /// True when the log was dropped by a reorganization (only in subscriptions and filters).
    #[serde(default)]
    pub removed: bool,
}

/// An `eth_getLogs` filter over an inclusive block range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter {
    pub from_block: u64,
    pub to_block: u64,
    /// Emitting contracts (empty = any).
    pub addresses: Vec<Address>,
    /// Topic positions: `None` matches anything, `Some(list)` any of the listed values.
    pub topics: Vec<Option<Vec<B256>>>,
}

impl LogFilter {
    /// The JSON object `eth_getLogs` takes.
    pub fn to_json(&self) -> Value {
        let mut obj = serde_json::Map::new();
        obj.insert("fromBlock".into(), format_u64(self.from_block).into());
        obj.insert("toBlock".into(), format_u64(self.to_block).into());
        match self.addresses.as_slice() {
            [] => {}
            [one] => {
                obj.insert("address".into(), address_lower(one).into());
            }
            many => {
                obj.insert(
                    "address".into(),
                    many.iter().map(|a| Value::from(address_lower(a))).collect(),
                );
            }
        }
        let topics: Vec<Value> = self
            .topics
            .iter()
            .map(|t| match t {
                None => Value::Null,
                Some(list) if list.len() == 1 => list[0].to_string().into(),
                Some(list) => list.iter().map(|h| Value::from(h.to_string())).collect(),
            })
            .collect();
        if !topics.is_empty() {
            obj.insert("topics".into(), Value::Array(topics));
        }
        Value::Object(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TX: &str = "0xbda0fda8e0fc0c622441532b5d28ee01473a52d333acfc07e5ccb0c17ccb3241";
    const BH: &str = "0x817c1988e91ec1f0341df1f5a2126a2d4a31707da1daa86c4b6e3f64e01a20f1";

    #[test]
    fn envelope() {
        let ok = br#"{"jsonrpc":"2.0","id":7,"result":"0x539"}"#;
        assert_eq!(decode_response("m", 7, ok).unwrap(), json!("0x539"));
        assert!(matches!(
            decode_response("m", 8, ok),
            Err(RpcError::Decode { .. })
        ));
        let err = br#"{"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"no such method"}}"#;
        match decode_response("m", 7, err) {
            Err(e @ RpcError::Rpc { code: -32601, .. }) => assert!(!e.is_transient()),
            other => panic!("{other:?}"),
        }
        assert!(decode_response("m", 7, b"<html>").is_err());
        assert!(decode_response("m", 7, br#"{"jsonrpc":"2.0","id":7}"#).is_err());
        let null = br#"{"jsonrpc":"2.0","id":7,"result":null}"#;
        assert_eq!(decode_response("m", 7, null).unwrap(), Value::Null);
    }

    #[test]
    fn block_and_transactions() {
        let v = json!({
            "hash": BH, "parentHash": BH, "number": "0x2", "miner": "0x0000000000000000000000000000000000000000",
            "transactions": [
                {"type": "0x2", "hash": TX, "from": "0x90f8bf6a479f320ead074411a4b0e7944ea8c9c1",
                 "to": "0xe78a0f7e598cc8b0bb87894b0f60dd2a88d6a8ab", "value": "0x100", "gas": "0x30000", "input": "0x"},
                {"hash": TX, "from": "0x90f8bf6a479f320ead074411a4b0e7944ea8c9c1", "to": null, "value": "0x0"}
            ]
        });
        let b: Block = serde_json::from_value(v).unwrap();
        assert_eq!(b.number, 2);
        assert_eq!(b.hash.to_string(), BH);
        assert_eq!(b.transactions[0].value, U256::from(256));
        assert!(b.transactions[1].to.is_none());
        let bad = json!({"hash": BH, "parentHash": BH, "number": "2", "transactions": []});
        assert!(serde_json::from_value::<Block>(bad).is_err());
        let h: BlockHeader = serde_json::from_value(json!({
            "hash": BH, "parentHash": BH, "number": "0x10", "transactions": [TX]
        }))
        .unwrap();
        assert_eq!(h.number, 16);
    }

    #[test]
    fn receipts() {
        let r: Receipt = serde_json::from_value(json!({
            "transactionHash": TX, "blockHash": BH, "blockNumber": "0x2", "status": "0x0", "logs": []
        }))
        .unwrap();
        assert_eq!(r.status, Some(0));
        let old: Receipt = serde_json::from_value(json!({
            "transactionHash": TX, "blockHash": BH, "blockNumber": "0x2", "root": BH
        }))
        .unwrap();
        assert_eq!(old.status, None);
    }

    #[test]
    fn logs_and_filters() {
        let l: Log = serde_json::from_value(json!({
            "address": "0xe78a0f7e598cc8b0bb87894b0f60dd2a88d6a8ab", "blockHash": BH, "blockNumber": "0x1",
            "data": "0x000000000000000000000000000000000000000c9f2c9cd04674edea40000000",
            "logIndex": "0x0", "removed": false,
            "topics": ["0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef",
                       "0x0000000000000000000000000000000000000000000000000000000000000000",
                       "0x00000000000000000000000090f8bf6a479f320ead074411a4b0e7944ea8c9c1"],
            "transactionHash": TX, "transactionIndex": "0x0"
        }))
        .unwrap();
        assert_eq!(l.topics.len(), 3);
        assert_eq!(l.data.len(), 32);
        let f = LogFilter {
            from_block: 16,
            to_block: 515,
            addresses: vec![l.address],
            topics: vec![Some(vec![l.topics[0]]), None, Some(vec![l.topics[2]])],
        };
        assert_eq!(
            f.to_json(),
            json!({
                "fromBlock": "0x10", "toBlock": "0x203",
                "address": "0xe78a0f7e598cc8b0bb87894b0f60dd2a88d6a8ab",
                "topics": ["0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef", null,
                           "0x00000000000000000000000090f8bf6a479f320ead074411a4b0e7944ea8c9c1"]
            })
        );
    }

    #[test]
    fn error_classes() {
        let rpc = |code, message: &str| RpcError::Rpc {
            method: "eth_getLogs".into(),
            code,
            message: message.into(),
        };
        assert!(rpc(-32603, "internal").is_transient());
        assert!(!rpc(-32602, "invalid params").is_transient());
        assert!(rpc(-32005, "query returned more than 10000 results").is_range_too_large());
        assert!(rpc(-32602, "Log response size exceeded").is_range_too_large());
        assert!(!rpc(-32601, "method not found").is_range_too_large());
        let http = |status| RpcError::Http {
            method: "m".into(),
            status,
            body: String::new(),
        };
        assert!(http(503).is_transient() && http(429).is_transient());
        assert!(!http(404).is_transient() && !http(401).is_transient());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        assert_eq!(p.backoff(0), Duration::from_millis(100));
        assert_eq!(p.backoff(1), Duration::from_millis(200));
        assert_eq!(p.backoff(3), Duration::from_millis(800));
        assert_eq!(p.backoff(4), Duration::from_secs(1));
        assert_eq!(p.backoff(100), Duration::from_secs(1));
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("https://mainnet.example.io/v3/SECRETKEY"),
            "https://mainnet.example.io"
        );
        assert_eq!(
            redact_url("http://user:pw@127.0.0.1:8545/x?key=1"),
            "http://127.0.0.1:8545"
        );
        assert!(RpcClient::new("ftp://x").is_err());
        let e = RpcClient::new("not a url/SECRETKEY")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("SECRETKEY"), "{e}");
    }
}
