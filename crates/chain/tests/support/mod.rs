//! Test tooling: a real ganache dev node started per test, a compiled ERC-20 test token, and an
//! in-memory `DepositStore` that models how the core crate is expected to credit deposits.
//!
//! The node packages live in `tests/peers` (`npm ci` there, or `scripts/test.sh`). When `node` or
//! the packages are missing, the tests fail with a message saying so: they never skip.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};
use stratus_chain::encoding::{address_lower, parse_address, parse_b256};
use stratus_chain::{
    async_trait, Address, Asset, Deposit, DepositStore, RetryPolicy, RpcClient, StoreError,
    WatcherConfig, B256,
};

/// `tests/peers` at the workspace root.
pub fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers")
}

fn require_node() {
    let ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`node` is not on PATH: the chain tests need Node.js (apt-get install nodejs npm), \
         then `cd tests/peers && npm ci` (scripts/test.sh does both)"
    );
}

fn require_package(rel: &str) -> PathBuf {
    let p = peers_dir().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run `cd tests/peers && npm ci` (scripts/test.sh does it)",
        p.display()
    );
    p
}

/// A ganache process on a free local port, killed on drop.
pub struct Ganache {
    child: Child,
    pub url: String,
    pub rpc: RpcClient,
    /// The ten deterministic, unlocked accounts.
    pub accounts: Vec<Address>,
}

impl Drop for Ganache {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

impl Ganache {
    /// Starts ganache (deterministic accounts, one block per transaction) and waits until it
    /// answers.
    pub async fn start() -> Ganache {
        require_node();
        let bin = require_package("node_modules/ganache/dist/node/cli.js");
        let mut last_err = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new("node")
                .arg(&bin)
                .args(["--server.host", "127.0.0.1", "--server.port"])
                .arg(port.to_string())
                .args([
                    "--wallet.deterministic",
                    "--miner.instamine",
                    "eager",
                    "--logging.quiet",
                    "--chain.chainId",
                    "1337",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn ganache");
            let url = format!("http://127.0.0.1:{port}");
            let rpc = RpcClient::with_options(
                &url,
                Duration::from_secs(10),
                RetryPolicy {
                    attempts: 1,
                    ..RetryPolicy::default()
                },
            )
            .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_err = format!("ganache exited with {status} (port {port} taken?)");
                    break;
                }
                if rpc.chain_id().await.is_ok() {
                    let accounts: Vec<String> =
                        rpc.request("eth_accounts", json!([])).await.unwrap();
                    let accounts: Vec<Address> =
                        accounts.iter().map(|a| parse_address(a).unwrap()).collect();
                    assert_eq!(accounts.len(), 10);
                    return Ganache {
                        child,
                        url,
                        rpc,
                        accounts,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = "ganache did not answer within 30 s".into();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("cannot start ganache: {last_err}");
    }

    pub async fn head(&self) -> u64 {
        self.rpc.block_number().await.unwrap()
    }

    /// Mines `n` empty blocks.
    pub async fn mine(&self, n: u64) {
        for _ in 0..n {
            let _: Value = self.rpc.request("evm_mine", json!([])).await.unwrap();
        }
    }

    /// Sends a transaction from an unlocked account; it is mined at once. Returns its hash.
    pub async fn send(&self, tx: Value) -> B256 {
        let hash: String = self
            .rpc
            .request("eth_sendTransaction", json!([tx]))
            .await
            .expect("eth_sendTransaction");
        parse_b256(&hash).unwrap()
    }

    /// Sends `value` wei from `from` to `to`.
    pub async fn send_value(&self, from: Address, to: Address, value: u128) -> B256 {
        self.send(json!({
            "from": address_lower(&from),
            "to": address_lower(&to),
            "value": format!("{value:#x}"),
            "gas": "0x30000",
        }))
        .await
    }

    pub async fn receipt(&self, tx: &B256) -> Value {
        let r: Value = self
            .rpc
            .request("eth_getTransactionReceipt", json!([tx.to_string()]))
            .await
            .unwrap();
        assert!(!r.is_null(), "no receipt for {tx}");
        r
    }

    /// The receipt's status (1 success, 0 reverted).
    pub async fn status(&self, tx: &B256) -> u64 {
        let r = self.receipt(tx).await;
        stratus_chain::encoding::parse_u64(r["status"].as_str().unwrap()).unwrap()
    }

    pub async fn block_of(&self, tx: &B256) -> (u64, [u8; 32]) {
        let r = self.receipt(tx).await;
        let n = stratus_chain::encoding::parse_u64(r["blockNumber"].as_str().unwrap()).unwrap();
        let h = parse_b256(r["blockHash"].as_str().unwrap()).unwrap();
        (n, h.0)
    }

    /// Deploys the test token with `supply` (a 256-bit big-endian word) minted to `from`.
    pub async fn deploy_token(&self, from: Address, supply: [u8; 32]) -> Address {
        let data = format!("{}{}", token_artifact().bytecode, hex::encode(supply));
        let tx = self
            .send(json!({"from": address_lower(&from), "data": data, "gas": "0x2dc6c0"}))
            .await;
        let r = self.receipt(&tx).await;
        assert_eq!(r["status"], "0x1", "token deployment failed: {r}");
        parse_address(r["contractAddress"].as_str().unwrap()).unwrap()
    }

    /// Calls `token.transfer(to, amount)` from `from`.
    pub async fn token_transfer(
        &self,
        token: Address,
        from: Address,
        to: Address,
        amount: [u8; 32],
    ) -> B256 {
        let data = format!(
            "0x{}{}{}",
            selector("transfer(address,uint256)"),
            hex::encode(to.into_word()),
            hex::encode(amount)
        );
        self.call_token(token, from, data).await
    }

    /// Calls `token.approve(spender, amount)` from `from`.
    pub async fn token_approve(
        &self,
        token: Address,
        from: Address,
        spender: Address,
        amount: u128,
    ) -> B256 {
        let data = format!(
            "0x{}{}{}",
            selector("approve(address,uint256)"),
            hex::encode(spender.into_word()),
            hex::encode(word(amount))
        );
        self.call_token(token, from, data).await
    }

    /// Calls `token.transferFrom(owner, to, amount)` from `spender`.
    pub async fn token_transfer_from(
        &self,
        token: Address,
        spender: Address,
        owner: Address,
        to: Address,
        amount: u128,
    ) -> B256 {
        let data = format!(
            "0x{}{}{}{}",
            selector("transferFrom(address,address,uint256)"),
            hex::encode(owner.into_word()),
            hex::encode(to.into_word()),
            hex::encode(word(amount))
        );
        self.call_token(token, spender, data).await
    }

    async fn call_token(&self, token: Address, from: Address, data: String) -> B256 {
        let tx = self
            .send(json!({"from": address_lower(&from), "to": address_lower(&token), "data": data, "gas": "0x30000"}))
            .await;
        assert_eq!(self.status(&tx).await, 1, "token call {tx} reverted");
        tx
    }

    /// `token.balanceOf(who)` as a 256-bit word.
    pub async fn token_balance(&self, token: Address, who: Address) -> [u8; 32] {
        let data = format!(
            "0x{}{}",
            selector("balanceOf(address)"),
            hex::encode(who.into_word())
        );
        let out: String = self
            .rpc
            .request(
                "eth_call",
                json!([{"to": address_lower(&token), "data": data}, "latest"]),
            )
            .await
            .unwrap();
        stratus_chain::encoding::parse_fixed::<32>(&out).unwrap()
    }

    /// A watcher configuration against this node (fast polling, quick retries).
    pub fn watcher_config(
        &self,
        deposit: Address,
        asset: Asset,
        confirmations: u64,
    ) -> WatcherConfig {
        let mut c = WatcherConfig::new(self.url.clone(), deposit, asset, confirmations);
        c.poll_interval = Duration::from_millis(50);
        c.expected_chain_id = Some(1337);
        c.retry = RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
        };
        c
    }
}

/// A `uint256` word holding `v`.
pub fn word(v: u128) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[16..].copy_from_slice(&v.to_be_bytes());
    out
}

/// A `uint256` word holding `2^bit`.
pub fn pow2(bit: u32) -> [u8; 32] {
    assert!(bit < 256);
    let mut out = [0u8; 32];
    out[31 - (bit / 8) as usize] = 1 << (bit % 8);
    out
}

/// The 4-byte function selector of a signature, as hex.
pub fn selector(signature: &str) -> String {
    hex::encode(&alloy_primitives::keccak256(signature.as_bytes())[..4])
}

/// The compiled test token.
pub struct Artifact {
    pub bytecode: String,
}

/// Compiles `tests/peers/TestToken.sol` with solc-js once per test binary.
pub fn token_artifact() -> &'static Artifact {
    static ARTIFACT: OnceLock<Artifact> = OnceLock::new();
    ARTIFACT.get_or_init(|| {
        require_node();
        require_package("node_modules/solc/package.json");
        let dir = peers_dir();
        let out = Command::new("node")
            .current_dir(&dir)
            .args(["compile.js", "TestToken.sol", "TestToken"])
            .output()
            .expect("run node compile.js");
        assert!(
            out.status.success(),
            "compiling TestToken.sol failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("compile.js prints JSON");
        let bytecode = v["bytecode"].as_str().expect("bytecode").to_string();
        assert!(bytecode.len() > 100, "empty bytecode");
        Artifact { bytecode }
    })
}

/// The store's view of one deposit.
#[derive(Debug, Clone)]
pub struct Stored {
    pub deposit: Deposit,
    /// The account it was credited to, once its wallet is linked.
    pub credited_to: Option<String>,
}

#[derive(Default)]
struct MemState {
    cursor: Option<u64>,
    deposits: BTreeMap<String, Stored>,
    /// Every reference ever handed to `commit`, repeats included.
    received: Vec<String>,
    commits: Vec<(u64, usize)>,
    links: HashMap<Address, String>,
    balances: HashMap<String, u128>,
    anomalies: Vec<String>,
}

/// An in-memory `DepositStore` with the semantics expected from the core crate:
///
/// - `commit` records each deposit once by reference (a repeat must be identical and changes
///   nothing) and moves the cursor, all under one lock (atomic);
/// - a deposit from a linked wallet is credited at once, others stay recorded and uncredited;
/// - `link` ties a wallet to an account and credits its uncredited deposits;
/// - no deposit is ever credited twice.
#[derive(Default)]
pub struct MemStore {
    state: Mutex<MemState>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Links `wallet` to `account`, crediting what the wallet deposited before.
    pub fn link(&self, wallet: Address, account: &str) {
        let mut s = self.state.lock();
        s.links.insert(wallet, account.to_string());
        let mut credit = 0u128;
        for st in s.deposits.values_mut() {
            if st.deposit.from == wallet && st.credited_to.is_none() {
                st.credited_to = Some(account.to_string());
                credit += st.deposit.amount;
            }
        }
        *s.balances.entry(account.to_string()).or_default() += credit;
    }

    pub fn balance(&self, account: &str) -> u128 {
        let s = self.state.lock();
        s.balances.get(account).copied().unwrap_or(0)
    }

    pub fn cursor_now(&self) -> Option<u64> {
        self.state.lock().cursor
    }

    /// Moves the cursor (as an operator forcing a re-scan would).
    pub fn set_cursor(&self, c: Option<u64>) {
        self.state.lock().cursor = c;
    }

    pub fn deposits(&self) -> Vec<Stored> {
        self.state.lock().deposits.values().cloned().collect()
    }

    pub fn get(&self, reference: &str) -> Option<Stored> {
        self.state.lock().deposits.get(reference).cloned()
    }

    /// How many times `commit` was handed `reference`.
    pub fn times_received(&self, reference: &str) -> usize {
        let s = self.state.lock();
        s.received.iter().filter(|r| *r == reference).count()
    }

    pub fn commits(&self) -> Vec<(u64, usize)> {
        self.state.lock().commits.clone()
    }

    pub fn anomalies(&self) -> Vec<String> {
        self.state.lock().anomalies.clone()
    }

    /// Sum of all balances: must equal the sum of credited deposits.
    pub fn total_credited(&self) -> u128 {
        let s = self.state.lock();
        let total: u128 = s.balances.values().sum();
        let credited: u128 = s
            .deposits
            .values()
            .filter(|d| d.credited_to.is_some())
            .map(|d| d.deposit.amount)
            .sum();
        assert_eq!(total, credited, "balances and credited deposits disagree");
        total
    }
}

#[async_trait]
impl DepositStore for MemStore {
    async fn cursor(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.state.lock().cursor)
    }

    async fn commit(&self, block: u64, deposits: &[Deposit]) -> Result<(), StoreError> {
        let mut s = self.state.lock();
        let mut in_batch = HashSet::new();
        for d in deposits {
            assert!(
                in_batch.insert(d.reference.clone()),
                "the watcher sent {} twice in one batch",
                d.reference
            );
            assert!(
                d.block_number <= block,
                "deposit beyond the committed block"
            );
        }
        for d in deposits {
            s.received.push(d.reference.clone());
            if let Some(existing) = s.deposits.get(&d.reference) {
                assert_eq!(
                    existing.deposit, *d,
                    "same reference, different deposit: {}",
                    d.reference
                );
                continue; // idempotent: already recorded (and credited if linked)
            }
            let account = s.links.get(&d.from).cloned();
            if let Some(a) = &account {
                *s.balances.entry(a.clone()).or_default() += d.amount;
            }
            s.deposits.insert(
                d.reference.clone(),
                Stored {
                    deposit: d.clone(),
                    credited_to: account,
                },
            );
        }
        s.cursor = Some(block);
        s.commits.push((block, deposits.len()));
        Ok(())
    }

    async fn record_anomalies(
        &self,
        anomalies: &[stratus_chain::Anomaly],
    ) -> Result<(), StoreError> {
        let mut s = self.state.lock();
        for a in anomalies {
            if !s.anomalies.contains(&a.reference) {
                s.anomalies.push(a.reference.clone());
            }
        }
        Ok(())
    }
}
