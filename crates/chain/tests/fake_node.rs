//! The JSON-RPC client and the watcher against a scripted HTTP node: failures a dev node does not
//! produce on demand (HTTP 503, hangs, range limits, duplicate logs, a node behind, junk).

mod support;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};
use stratus_chain::encoding::address_lower;
use stratus_chain::scan::TRANSFER_TOPIC;
use stratus_chain::{
    Address, Asset, RetryPolicy, RpcClient, RpcError, WatchError, Watcher, WatcherConfig,
};
use support::MemStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the scripted node answers to one request.
enum Reply {
    Result(Value),
    Error(i64, &'static str),
    Status(u16),
    Hang,
}

type Handler = Arc<dyn Fn(&Value, usize) -> Reply + Send + Sync>;

/// A one-request-per-connection HTTP server answering JSON-RPC calls with `handler`.
struct FakeNode {
    url: String,
    requests: Arc<Mutex<Vec<Value>>>,
}

impl FakeNode {
    async fn start(handler: impl Fn(&Value, usize) -> Reply + Send + Sync + 'static) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let log = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (handler, log) = (handler.clone(), log.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, handler, log).await;
                });
            }
        });
        FakeNode { url, requests }
    }

    fn count(&self, method: &str) -> usize {
        let r = self.requests.lock();
        r.iter().filter(|q| q["method"] == method).count()
    }

    fn calls(&self, method: &str) -> Vec<Value> {
        let r = self.requests.lock();
        r.iter()
            .filter(|q| q["method"] == method)
            .cloned()
            .collect()
    }
}

async fn serve(
    mut sock: TcpStream,
    handler: Handler,
    log: Arc<Mutex<Vec<Value>>>,
) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while buf.len() < header_end + len {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let req: Value = serde_json::from_slice(&buf[header_end..header_end + len]).unwrap();
    let nth = {
        let mut l = log.lock();
        l.push(req.clone());
        l.len()
    };
    let (status, body) = match handler(&req, nth) {
        Reply::Result(v) => (200, json!({"jsonrpc": "2.0", "id": req["id"], "result": v})),
        Reply::Error(code, message) => (
            200,
            json!({"jsonrpc": "2.0", "id": req["id"], "error": {"code": code, "message": message}}),
        ),
        Reply::Status(s) => (s, json!("overloaded")),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return Ok(());
        }
    };
    let body = body.to_string();
    let resp = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(resp.as_bytes()).await?;
    sock.shutdown().await
}

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
    }
}

fn client(url: &str, attempts: u32) -> RpcClient {
    RpcClient::with_options(url, Duration::from_secs(5), fast_retry(attempts)).unwrap()
}

#[tokio::test]
async fn transient_http_errors_are_retried() {
    let node = FakeNode::start(|_, nth| {
        if nth <= 2 {
            Reply::Status(503)
        } else {
            Reply::Result(json!("0x10"))
        }
    })
    .await;
    assert_eq!(client(&node.url, 3).block_number().await.unwrap(), 16);
    assert_eq!(node.count("eth_blockNumber"), 3);
}

#[tokio::test]
async fn retries_give_up_with_the_last_error() {
    let node = FakeNode::start(|_, _| Reply::Status(503)).await;
    let err = client(&node.url, 3).block_number().await.unwrap_err();
    assert!(matches!(err, RpcError::Http { status: 503, .. }), "{err}");
    assert_eq!(node.count("eth_blockNumber"), 3);
}

#[tokio::test]
async fn json_rpc_errors_are_not_retried() {
    let node = FakeNode::start(|_, _| Reply::Error(-32602, "invalid params")).await;
    let err = client(&node.url, 5).chain_id().await.unwrap_err();
    assert!(matches!(err, RpcError::Rpc { code: -32602, .. }), "{err}");
    assert!(err.to_string().contains("invalid params"));
    assert_eq!(node.count("eth_chainId"), 1);
}

#[tokio::test]
async fn malformed_answers_are_errors() {
    let node = FakeNode::start(|req, _| match req["method"].as_str().unwrap() {
        "eth_blockNumber" => Reply::Result(json!("12")),
        _ => Reply::Result(json!("0xzz")),
    })
    .await;
    let c = client(&node.url, 3);
    let err = c.block_number().await.unwrap_err();
    assert!(matches!(err, RpcError::Decode { .. }), "{err}");
    assert!(err.to_string().contains("0x prefix"), "{err}");
    assert!(c.chain_id().await.is_err());
    assert_eq!(
        node.count("eth_blockNumber"),
        1,
        "decode errors are not retried"
    );
}

#[tokio::test]
async fn requests_time_out() {
    let node = FakeNode::start(|_, _| Reply::Hang).await;
    let c = RpcClient::with_options(&node.url, Duration::from_millis(200), fast_retry(2)).unwrap();
    let t = Instant::now();
    let err = c.block_number().await.unwrap_err();
    assert!(matches!(err, RpcError::Transport { .. }), "{err}");
    assert!(err.is_transient());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(node.count("eth_blockNumber"), 2);
}

fn config(url: &str, asset: Asset) -> WatcherConfig {
    let mut c = WatcherConfig::new(url, deposit(), asset, 1);
    c.poll_interval = Duration::from_millis(20);
    c.retry = fast_retry(2);
    c.request_timeout = Duration::from_secs(2);
    c
}

fn deposit() -> Address {
    Address::repeat_byte(0xd0)
}
fn token() -> Address {
    Address::repeat_byte(0x70)
}
fn sender() -> Address {
    Address::repeat_byte(0x5e)
}

fn h(n: u64) -> String {
    format!("0x{n:064x}")
}

/// A Transfer log of `token()` from `sender()` to `deposit()` in block `block`.
fn transfer_log(block: u64, amount: u64) -> Value {
    json!({
        "address": address_lower(&token()),
        "topics": [TRANSFER_TOPIC.to_string(), sender().into_word().to_string(),
                   deposit().into_word().to_string()],
        "data": format!("0x{amount:064x}"),
        "blockNumber": format!("{block:#x}"),
        "blockHash": h(block + 0x1000),
        "transactionHash": h(block),
        "logIndex": "0x0",
        "transactionIndex": "0x0",
        "removed": false,
    })
}

fn header(n: u64) -> Value {
    json!({"number": format!("{n:#x}"), "hash": h(n + 0x1000), "parentHash": h(n + 0xfff)})
}

fn quantity(v: &Value) -> u64 {
    stratus_chain::encoding::parse_u64(v.as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn large_log_ranges_are_split_and_duplicate_logs_dropped() {
    // A node that refuses log queries over more than 100 blocks and answers one log twice.
    let node = FakeNode::start(|req, _| {
        let p = &req["params"];
        match req["method"].as_str().unwrap() {
            "eth_chainId" => Reply::Result(json!("0x539")),
            "eth_blockNumber" => Reply::Result(json!("0x3e8")), // 1000
            "eth_getBlockByNumber" => Reply::Result(header(quantity(&p[0]))),
            "eth_getLogs" => {
                let (from, to) = (quantity(&p[0]["fromBlock"]), quantity(&p[0]["toBlock"]));
                if to - from + 1 > 100 {
                    return Reply::Error(-32005, "query returned more than 10000 results");
                }
                let mut logs = Vec::new();
                for (b, amount) in [(50, 5), (150, 15), (150, 15), (700, 70)] {
                    if (from..=to).contains(&b) {
                        logs.push(transfer_log(b, amount));
                    }
                }
                Reply::Result(Value::Array(logs))
            }
            m => panic!("unexpected {m}"),
        }
    })
    .await;
    let store = Arc::new(MemStore::new());
    let w = Watcher::new(
        config(&node.url, Asset::Erc20 { contract: token() }),
        store.clone(),
    )
    .unwrap();
    let r = w.poll_once().await.unwrap();
    assert_eq!(r.cursor, Some(1000));
    assert_eq!(r.batches, 3); // 0..=499, 500..=999, 1000..=1000
    let got: Vec<(u64, u128)> = r
        .deposits
        .iter()
        .map(|d| (d.block_number, d.amount))
        .collect();
    assert_eq!(got, vec![(50, 5), (150, 15), (700, 70)]);
    assert_eq!(r.deposits[0].reference, format!("{}:0", h(50)));
    assert_eq!(r.deposits[0].from, sender());
    assert_eq!(store.times_received(&format!("{}:0", h(150))), 1);
    // Every answered query covered at most 100 blocks, and together they cover 0..=1000 once.
    let mut covered = Vec::new();
    for q in node.calls("eth_getLogs") {
        let f = &q["params"][0];
        assert_eq!(f["address"], address_lower(&token()));
        assert_eq!(f["topics"][0], TRANSFER_TOPIC.to_string());
        assert_eq!(f["topics"][1], Value::Null);
        let (from, to) = (quantity(&f["fromBlock"]), quantity(&f["toBlock"]));
        if to - from < 100 {
            covered.push((from, to));
        }
    }
    covered.sort();
    assert_eq!(covered.first().unwrap().0, 0);
    assert_eq!(covered.last().unwrap().1, 1000);
    assert!(
        covered.windows(2).all(|w| w[0].1 + 1 == w[1].0),
        "{covered:?}"
    );
}

#[tokio::test]
async fn a_node_behind_its_head_is_not_trusted() {
    // eth_blockNumber says 20, but block 20 is not there (a load balancer mixing nodes).
    let node = FakeNode::start(|req, _| match req["method"].as_str().unwrap() {
        "eth_chainId" => Reply::Result(json!("0x539")),
        "eth_blockNumber" => Reply::Result(json!("0x14")),
        "eth_getBlockByNumber" => Reply::Result(Value::Null),
        "eth_getLogs" => Reply::Result(json!([])),
        m => panic!("unexpected {m}"),
    })
    .await;
    let store = Arc::new(MemStore::new());
    let w = Watcher::new(
        config(&node.url, Asset::Erc20 { contract: token() }),
        store.clone(),
    )
    .unwrap();
    let err = w.poll_once().await.unwrap_err();
    assert!(matches!(err, WatchError::Inconsistent(_)), "{err}");
    assert_eq!(store.cursor_now(), None);
    assert_eq!(node.count("eth_getLogs"), 0);

    let w = Watcher::new(config(&node.url, Asset::Native), store.clone()).unwrap();
    assert!(matches!(
        w.poll_once().await.unwrap_err(),
        WatchError::Inconsistent(_)
    ));
    assert_eq!(store.cursor_now(), None);
}

#[tokio::test]
async fn the_run_loop_survives_an_unreachable_node_and_stops_on_shutdown() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let store = Arc::new(MemStore::new());
    let w = Watcher::new(config(&url, Asset::Native), store.clone()).unwrap();
    assert!(matches!(w.poll_once().await, Err(WatchError::Rpc(_))));

    let (stop, rx) = watch::channel(false);
    let task = w.spawn(rx);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !task.is_finished(),
        "transient failures must not end the loop"
    );
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("stops promptly")
        .unwrap()
        .unwrap();

    // Dropping the sender stops it too.
    let w = Watcher::new(config(&url, Asset::Native), store.clone()).unwrap();
    let (stop, rx) = watch::channel(false);
    let task = w.spawn(rx);
    drop(stop);
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("stops promptly")
        .unwrap()
        .unwrap();
    assert_eq!(store.cursor_now(), None);
}

#[tokio::test]
async fn a_hanging_node_does_not_delay_shutdown() {
    let node = FakeNode::start(|_, _| Reply::Hang).await;
    let mut cfg = config(&node.url, Asset::Native);
    cfg.request_timeout = Duration::from_secs(20);
    let w = Watcher::new(cfg, Arc::new(MemStore::new())).unwrap();
    let (stop, rx) = watch::channel(false);
    let task = w.spawn(rx);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(node.count("eth_chainId"), 1);
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("stops while a request hangs")
        .unwrap()
        .unwrap();
}
