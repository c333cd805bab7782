//! Starting and stopping a real `stratus serve`, and small helpers shared by the tests.
//!
//! The database: by default each server keeps the embedded SQLite database in its data dir.
//! When `STRATUS_TEST_PG` holds a base PostgreSQL URL (`scripts/test.sh` sets it for its second
//! run, from `scripts/postgres.sh`), every server gets a fresh PostgreSQL database of its own
//! instead (`STRATUS_DATABASE__URL`), kept across its restarts and dropped with it.
//! [`Cluster`] starts several servers on one shared PostgreSQL database behind a round-robin
//! TCP proxy.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_stratus");

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A running server.
pub struct Server {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    env: Vec<(String, String)>,
    /// Descriptor limit (soft and hard) the server runs under, if not the inherited one.
    nofile: Option<u64>,
    child: Option<Child>,
    pub log: PathBuf,
    /// The PostgreSQL database made for this server (dropped after the server is killed).
    db: Option<PgDatabase>,
}

/// Builds a server: environment overrides and a data dir.
#[derive(Default)]
pub struct ServerBuilder {
    env: Vec<(String, String)>,
    data_dir: Option<PathBuf>,
    nofile: Option<u64>,
}

impl ServerBuilder {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
    /// Turn off the rate limits (tests that do many logins).
    pub fn no_limits(self) -> Self {
        self.env("STRATUS_LIMITS__DISABLED", "true")
    }
    pub fn data_dir(mut self, d: &Path) -> Self {
        self.data_dir = Some(d.to_path_buf());
        self
    }
    /// Runs the server under this descriptor limit (soft and hard), through `prlimit`.
    pub fn nofile(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }
    pub fn start(self) -> Server {
        let (tmp, dir) = match self.data_dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().unwrap();
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let mut env = self.env;
        // A database of its own on PostgreSQL, unless the test chose one (a cluster does).
        let db = match test_pg() {
            Some(base) if !env.iter().any(|(k, _)| k == DATABASE_URL) => {
                let db = PgDatabase::create(&base);
                env.push((DATABASE_URL.to_string(), db.url.clone()));
                Some(db)
            }
            _ => None,
        };
        let mut s = Server {
            url: String::new(),
            addr: "127.0.0.1:1".parse().unwrap(),
            log: dir.join("server.log"),
            data_dir: dir,
            _tmp: tmp,
            env,
            nofile: self.nofile,
            child: None,
            db,
        };
        s.spawn(None);
        s
    }
}

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
            // Cheap password hashing keeps the tests fast; the parameters are not what is tested.
            .env("STRATUS_AUTH__ARGON2_MEMORY_KIB", "1024")
            .env("STRATUS_AUTH__ARGON2_ITERATIONS", "1")
    }

    pub fn start() -> Server {
        Self::builder().start()
    }

    fn spawn(&mut self, listen: Option<std::net::SocketAddr>) {
        let listen = listen
            .map(|a| a.to_string())
            .unwrap_or("127.0.0.1:0".into());
        let mut cmd = match self.nofile {
            Some(n) => {
                // prlimit sets the limits and executes the server in its place (same pid).
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.arg("serve")
            .arg("--listen")
            .arg(&listen)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("STRATUS_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start stratus");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log_path = self.log.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .unwrap();
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                if !sent && line.contains("stratus listening") {
                    if let Some(a) = line.split("address=").nth(1) {
                        let a = a.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send(a);
                        sent = true;
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "stratus did not start; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
        };
        self.addr = addr.parse().unwrap();
        self.url = format!("http://{addr}");
        self.child = Some(child);
    }

    /// The server's id (`<data_dir>/server.id`): its runtime objects' owner label and the name
    /// of its nftables tables.
    pub fn server_id(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("server.id"))
            .expect("the server id is made at first start")
            .trim()
            .to_string()
    }

    /// Starts the server again on the same port and data dir with extra environment (for
    /// this run only).
    pub fn restart_with(&mut self, env: &[(&str, &str)]) {
        self.kill();
        let saved = self.env.clone();
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let addr = self.addr;
        self.spawn(Some(addr));
        self.env = saved;
    }

    /// Waits (up to 60 s) for the server process to end by itself; its exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("server running");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("the server did not exit");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Leaves `key` out of the environment of the server's next starts.
    pub fn remove_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    /// A variable of the server's environment, as the test set it.
    pub fn env_var(&self, key: &str) -> Option<String> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the server with SIGKILL (a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server with SIGTERM and returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("server running");
        unsafe_signal(c.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("server did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a stopped server (see [`Server::terminate`]) again on the same port and data dir.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        let addr = self.addr;
        self.spawn(Some(addr));
    }

    /// Starts the server again on the same port with the same data dir.
    pub fn restart(&mut self) {
        self.kill();
        let addr = self.addr;
        self.spawn(Some(addr));
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        client().get(format!("{}{}", self.url, path))
    }
    pub fn post(&self, path: &str) -> RequestBuilder {
        client().post(format!("{}{}", self.url, path))
    }
    pub fn put(&self, path: &str) -> RequestBuilder {
        client().put(format!("{}{}", self.url, path))
    }
    pub fn head(&self, path: &str) -> RequestBuilder {
        client().head(format!("{}{}", self.url, path))
    }
    pub fn delete(&self, path: &str) -> RequestBuilder {
        client().delete(format!("{}{}", self.url, path))
    }

    /// `GET /metrics` with the operator token the server generated in its data dir.
    pub fn metrics(&self) -> String {
        let token = std::fs::read_to_string(self.data_dir.join("secrets/operator.token"))
            .expect("the operator token is generated at first start");
        let r = self
            .get("/metrics")
            .header("Authorization", format!("Bearer {}", token.trim()))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().unwrap()
    }

    /// Whether the server keeps its data in PostgreSQL (else in SQLite in its data dir).
    pub fn uses_pg(&self) -> bool {
        self.env_var(DATABASE_URL).is_some()
    }

    /// `stratus admin --data-dir <data dir>` on the server's database (its data dir and, on
    /// PostgreSQL, its `STRATUS_DATABASE__URL`); add the subcommand and run it.
    /// The server's log once `found` holds for it (or after 10 s, as it is then). Its output
    /// reaches the file through a pipe and a copying thread: a line may land a moment after the
    /// response, or after the process has exited.
    pub fn log_when(&self, found: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if found(&log) || std::time::Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn admin(&self) -> Command {
        let mut c = Command::new(BIN);
        c.args(["admin", "--data-dir"]).arg(&self.data_dir);
        if let Some(url) = self.env_var(DATABASE_URL) {
            c.env(DATABASE_URL, url);
        }
        c
    }

    /// Creates a password account with the admin command (on the live data dir).
    pub fn add_user(&self, username: &str, password: &str) {
        let out = self
            .admin()
            .args(["user", "add", "--username", username, "--password-stdin"])
            .env("STRATUS_AUTH__ARGON2_MEMORY_KIB", "1024")
            .env("STRATUS_AUTH__ARGON2_ITERATIONS", "1")
            .stdin_bytes(format!("{password}\n"));
        assert!(out.status.success(), "admin user add failed: {out:?}");
    }

    /// Registers an account over HTTP and logs it in: returns the ComputeShare token.
    pub fn user_token(&self, username: &str) -> String {
        let r = self
            .post("/api/v1/user/register")
            .json(&serde_json::json!({"username": username, "password": "password-123"}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().unwrap());
        self.login(username, "password-123")
    }

    /// `loginWithClient`; returns the token.
    pub fn login(&self, username: &str, password: &str) -> String {
        let (status, v) = json(
            self.post("/api/v1/user/loginWithClient")
                .json(&serde_json::json!({"username": username, "password": password})),
        );
        assert_eq!(status, 200, "{v}");
        v["data"]["token"].as_str().unwrap().to_string()
    }

    /// A full wallet login with eth-account; returns (address, access token, fresh token).
    pub fn wallet_login(&self, key: &str) -> (String, String, String) {
        let nonce = self.get("/getnonce").send().unwrap().text().unwrap();
        let addr = eth_address(key);
        let sig = eth_sign(key, &addr, &nonce, "memo.io");
        let (status, v) = json(self.post("/login").json(&serde_json::json!({
            "address": addr, "nonce": nonce, "domain": "memo.io", "signature": sig["sig01"],
        })));
        assert_eq!(status, 200, "{v}");
        (
            addr,
            v["access token"].as_str().unwrap().to_string(),
            v["fresh token"].as_str().unwrap().to_string(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

trait StdinBytes {
    fn stdin_bytes(&mut self, input: String) -> std::process::Output;
}

impl StdinBytes for Command {
    fn stdin_bytes(&mut self, input: String) -> std::process::Output {
        use std::io::Write;
        let mut child = self
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}

/// Runs a command with `input` on stdin.
pub fn run_with_stdin(cmd: &mut Command, input: &str) -> std::process::Output {
    cmd.stdin_bytes(input.to_string())
}

fn unsafe_signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Sends and returns (status, JSON body).
pub fn json(rb: RequestBuilder) -> (u16, Value) {
    let r: Response = rb.send().unwrap();
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text:?}"));
    (status, v)
}

/// The whole seconds a `429` response's `Retry-After` header asks for.
pub fn retry_after(r: &reqwest::blocking::Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Signs a login with the independent implementation (eth-account).
pub fn eth_sign(key: &str, address: &str, nonce: &str, domain: &str) -> Value {
    let script = repo_root().join("tests/peers/eth_sign.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([key, address, nonce, domain])
        .output()
        .expect("python3 with eth-account (run scripts/test.sh, which installs it)");
    assert!(
        out.status.success(),
        "eth_sign.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The EIP-55 address of a key, computed by eth-account.
pub fn eth_address(key: &str) -> String {
    eth_sign(key, "x", "x", "x")["address"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Well-known throwaway keys (never funded anywhere that matters).
pub const KEY_A: &str = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
pub const KEY_B: &str = "0x8da4ef21b864d2cc526dbdb2a120bd2874c36c9d0a1fb7f8c63d7f7a8b41de8f";

/// A 64-hex nonce string.
pub fn is_nonce(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Deterministic pseudo-random bytes (xorshift), different for each seed.
pub fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// `POST /{target}/[?profile=]` with a multipart `file` field; returns (status, JSON body).
pub fn upload(
    s: &Server,
    token: &str,
    target: &str,
    name: &str,
    bytes: Vec<u8>,
    profile: Option<&str>,
) -> (u16, Value) {
    let url = match profile {
        Some(p) => format!("/{target}/?profile={p}"),
        None => format!("/{target}/"),
    };
    let part = reqwest::blocking::multipart::Part::bytes(bytes).file_name(name.to_string());
    json(
        s.post(&url)
            .header("Authorization", token)
            .multipart(reqwest::blocking::multipart::Form::new().part("file", part)),
    )
}

/// Uploads and returns the CID (asserting success).
pub fn put(s: &Server, token: &str, target: &str, name: &str, bytes: Vec<u8>) -> String {
    let (st, v) = upload(s, token, target, name, bytes, None);
    assert_eq!(st, 200, "{v}");
    v["cid"].as_str().unwrap().to_string()
}

/// Runs a node script from tests/peers (installed by scripts/test.sh) and parses its JSON output.
pub fn node_peer(script: &str, args: &[&str]) -> Value {
    let dir = repo_root().join("tests/peers");
    assert!(
        dir.join("node_modules").exists(),
        "tests/peers/node_modules is missing: run scripts/test.sh (or npm ci in tests/peers)"
    );
    let out = Command::new("node")
        .current_dir(&dir)
        .arg(script)
        .args(args)
        .output()
        .expect("node (run scripts/test.sh, which installs it)");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Number of entries in a directory (0 if it does not exist).
pub fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Every blob file under the default local backend.
pub fn blob_files(data_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(data_dir.join("blobs")) {
        for shard in rd.flatten() {
            if shard.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
                out.push(f.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// A real Ethereum dev node (ganache from tests/peers), killed on drop. Accounts are given
/// explicitly (funded, unlocked) so tests know their keys; blocks are mined per transaction and
/// on demand with `evm_mine`.
pub struct Ganache {
    child: Child,
    pub url: String,
}

impl Drop for Ganache {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Ganache {
    pub fn start(funded_keys: &[&str]) -> Ganache {
        let cli = repo_root().join("tests/peers/node_modules/ganache/dist/node/cli.js");
        assert!(
            cli.exists(),
            "ganache is missing: run scripts/test.sh (or npm ci in tests/peers)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new("node");
        cmd.arg(&cli)
            .args([
                "--server.host",
                "127.0.0.1",
                "--server.port",
                &port.to_string(),
            ])
            .args(["--chain.chainId", "1337", "--miner.instamine", "eager"])
            .args(["--logging.quiet", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for k in funded_keys {
            cmd.arg("--wallet.accounts")
                .arg(format!("{k},1000000000000000000000"));
        }
        let child = cmd.spawn().expect("node");
        let g = Ganache {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while g
            .try_rpc("eth_blockNumber", serde_json::json!([]))
            .is_none()
        {
            assert!(Instant::now() < deadline, "ganache did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        g
    }

    fn try_rpc(&self, method: &str, params: Value) -> Option<Value> {
        let v: Value = client()
            .post(&self.url)
            .json(
                &serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
            )
            .send()
            .ok()?
            .json()
            .ok()?;
        Some(v)
    }

    /// A JSON-RPC call; panics on an error answer.
    pub fn rpc(&self, method: &str, params: Value) -> Value {
        let v = self.try_rpc(method, params).expect("ganache answers");
        assert!(v.get("error").is_none(), "{method}: {v}");
        v["result"].clone()
    }

    pub fn block_number(&self) -> u64 {
        let h = self.rpc("eth_blockNumber", serde_json::json!([]));
        u64::from_str_radix(h.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    }

    pub fn mine(&self, blocks: u32) {
        for _ in 0..blocks {
            self.rpc("evm_mine", serde_json::json!([]));
        }
    }

    /// Sends a transaction from an unlocked account; returns its receipt.
    pub fn send(&self, tx: Value) -> Value {
        let hash = self.rpc("eth_sendTransaction", serde_json::json!([tx]));
        self.rpc("eth_getTransactionReceipt", serde_json::json!([hash]))
    }

    /// Deploys tests/peers/TestToken.sol (compiled with solc-js) minting `supply` to `from`.
    pub fn deploy_token(&self, from: &str, supply: u128) -> String {
        let out = Command::new("node")
            .current_dir(repo_root().join("tests/peers"))
            .args(["compile.js", "TestToken.sol", "TestToken"])
            .output()
            .expect("node");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let compiled: Value = serde_json::from_slice(&out.stdout).unwrap();
        let data = format!("{}{:064x}", compiled["bytecode"].as_str().unwrap(), supply);
        let r = self.send(serde_json::json!({"from": from, "data": data, "gas": "0x2dc6c0"}));
        assert_eq!(r["status"], "0x1", "{r}");
        r["contractAddress"].as_str().unwrap().to_string()
    }

    /// `transfer(to, amount)` on an ERC-20 contract.
    pub fn token_transfer(&self, token: &str, from: &str, to: &str, amount: u128) -> Value {
        let data = format!(
            "0xa9059cbb{:0>64}{:064x}",
            to.trim_start_matches("0x").to_lowercase(),
            amount
        );
        let r = self
            .send(serde_json::json!({"from": from, "to": token, "data": data, "gas": "0x186a0"}));
        assert_eq!(r["status"], "0x1", "{r}");
        r
    }
}

/// The local test image (busybox with httpd and nc); built by scripts/test-image.sh once.
pub const TEST_IMAGE: &str = "stratus-test/busybox:latest";

/// Makes sure Docker answers and the test image exists (scripts/test.sh starts dockerd).
pub fn require_docker() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let ok = Command::new("docker")
            .arg("info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "Docker is not running: run scripts/test.sh (it installs and starts dockerd)"
        );
        let st = Command::new(repo_root().join("scripts/test-image.sh"))
            .status()
            .unwrap();
        assert!(st.success(), "cannot build the test image");
    });
}

/// A server for compute tests: Docker runtime, a public port range of its own on loopback, the
/// test image listed as a local image (it is on no registry).
pub fn compute_server() -> ServerBuilder {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    require_docker();
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    // Below the kernel's ephemeral range (32768–60999 by default): an outgoing connection of
    // any process (to PostgreSQL, say) may hold a port there, and the allocator rightly skips
    // a port it cannot bind, which tests of "the lowest free port" would take for a bug.
    let min = 20000 + n * 40;
    Server::builder()
        .env("STRATUS_COMPUTE__GATEWAY_BIND", "127.0.0.1")
        .env("STRATUS_COMPUTE__SERVER_IP", "127.0.0.1")
        .env("STRATUS_COMPUTE__PORT_MIN", &min.to_string())
        .env("STRATUS_COMPUTE__PORT_MAX", &(min + 39).to_string())
        .env(
            "STRATUS_COMPUTE__LOCAL_IMAGES",
            &format!("[\"{TEST_IMAGE}\"]"),
        )
}

/// Base64 of a compose file.
pub fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Names of the nftables tables of `family` whose name starts with `prefix`, sorted.
pub fn nft_tables(family: &str, prefix: &str) -> Vec<String> {
    let out = Command::new("nft")
        .args(["-j", "list", "tables", family])
        .output()
        .expect("nft is installed");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mut names: Vec<String> = v["nftables"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["table"]["name"].as_str())
                .filter(|n| n.starts_with(prefix))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Runs `docker` with args; returns stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The price of spec 1 for one month (the default catalog).
pub const SPEC1_PRICE: u128 = 10_000_000_000_000_000;

/// A token for `user`, whose account is credited with `months` months of spec 1.
pub fn funded(s: &Server, user: &str, months: u128) -> String {
    let t = s.user_token(user);
    let out = s
        .admin()
        .args([
            "credit",
            "--account",
            user,
            "--amount",
            &(SPEC1_PRICE * months).to_string(),
            "--reason",
            "t",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    t
}

/// The variable that points a server at its PostgreSQL database.
pub const DATABASE_URL: &str = "STRATUS_DATABASE__URL";

/// The base PostgreSQL URL every server's database is made through (`STRATUS_TEST_PG`), if set.
pub fn test_pg() -> Option<String> {
    std::env::var("STRATUS_TEST_PG")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// The base PostgreSQL URL for a test that needs PostgreSQL (`what`), or `None` after saying why
/// it is skipped: in `scripts/test.sh`'s SQLite pass (`STRATUS_PG_PASS_FOLLOWS`: the same test
/// runs in the PostgreSQL pass that follows), or when no PostgreSQL is configured and peers are
/// optional. Under `STRATUS_REQUIRE_PEERS` alone a missing PostgreSQL is a failure.
pub fn pg_or_skip(what: &str) -> Option<String> {
    if let Some(base) = test_pg() {
        return Some(base);
    }
    if std::env::var_os("STRATUS_PG_PASS_FOLLOWS").is_some() {
        eprintln!("skipped in the SQLite pass: {what} runs in the PostgreSQL pass");
        return None;
    }
    let why = format!(
        "{what} needs PostgreSQL: set STRATUS_TEST_PG to a base URL \
         (scripts/postgres.sh prints one; scripts/test.sh sets it)"
    );
    if std::env::var_os("STRATUS_REQUIRE_PEERS").is_some() {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    None
}

/// Whether the servers of this run keep their data in PostgreSQL. Tests of what only the
/// embedded SQLite database does (its file, its locks) call this first and return early,
/// saying so.
pub fn skip_under_pg(what: &str) -> bool {
    if test_pg().is_some() {
        eprintln!("skipped under PostgreSQL (STRATUS_TEST_PG is set): {what}");
        return true;
    }
    false
}

/// A database made for a test on a PostgreSQL server, dropped (best effort) on drop.
pub struct PgDatabase {
    /// Its URL (the base URL with the database name in the path).
    pub url: String,
    pub name: String,
    base: String,
}

/// `psql` (Debian's wrapper on the PATH, else a versioned installation).
fn psql() -> PathBuf {
    let on_path = Command::new("psql")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if on_path {
        return PathBuf::from("psql");
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("bin/psql"))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .expect("psql (scripts/postgres.sh installs PostgreSQL)")
}

impl PgDatabase {
    /// Creates `stratus_t_<random>` through `base` (any database URL on the server).
    pub fn create(base: &str) -> PgDatabase {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            ^ ((std::process::id() as u64) << 32)
            ^ N.fetch_add(1, Ordering::SeqCst).wrapping_mul(0x9E37_79B9);
        let name = format!("stratus_t_{}", hex::encode(data(8, seed)));
        let db = PgDatabase {
            url: stratus_store::with_database(base, &name),
            name,
            base: base.to_string(),
        };
        let out = db.psql(&format!("CREATE DATABASE {}", db.name));
        assert!(
            out.status.success(),
            "cannot create a test database through STRATUS_TEST_PG ({}): {}",
            base,
            String::from_utf8_lossy(&out.stderr)
        );
        db
    }

    fn psql(&self, sql: &str) -> std::process::Output {
        Command::new(psql())
            .arg(&self.base)
            .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("psql (scripts/postgres.sh installs PostgreSQL)")
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // FORCE ends the sessions still open (a server killed mid-request leaves none for long,
        // but an admin command may still be there).
        let out = self.psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
        if !out.status.success() {
            eprintln!(
                "could not drop test database {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A TCP proxy on 127.0.0.1 that hands each accepted connection to the next backend in turn
/// (skipping backends that refuse) and copies bytes both ways; when either side closes or
/// fails, both are closed. Stops, and closes what is open, on drop.
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    backends: std::sync::Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>>,
    /// Connections handed to each backend so far (same order as the backends).
    handed: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<(u64, std::net::TcpStream)>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(backends: Vec<std::net::SocketAddr>) -> Proxy {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        assert!(!backends.is_empty(), "a proxy needs a backend");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handed = Arc::new(Mutex::new(vec![0; backends.len()]));
        let backends = Arc::new(Mutex::new(backends));
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<(u64, TcpStream)>>> = Arc::default();
        let accept = {
            let (backends, handed, stop, open) =
                (backends.clone(), handed.clone(), stop.clone(), open.clone());
            std::thread::spawn(move || {
                let mut next = 0usize;
                let mut id = 0u64;
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let list = backends.lock().unwrap().clone();
                    let mut upstream = None;
                    for k in 0..list.len() {
                        let i = (next + k) % list.len();
                        if let Ok(s) = TcpStream::connect_timeout(&list[i], Duration::from_secs(5))
                        {
                            if let Some(h) = handed.lock().unwrap().get_mut(i) {
                                *h += 1;
                            }
                            next = i + 1;
                            upstream = Some(s);
                            break;
                        }
                    }
                    let Some(upstream) = upstream else {
                        next += 1;
                        continue; // every backend refused: the client sees a close
                    };
                    let _ = client.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    id += 1;
                    {
                        let mut o = open.lock().unwrap();
                        o.push((id, client.try_clone().unwrap()));
                        o.push((id, upstream.try_clone().unwrap()));
                    }
                    proxy_pipe(
                        client.try_clone().unwrap(),
                        upstream.try_clone().unwrap(),
                        id,
                        open.clone(),
                    );
                    proxy_pipe(upstream, client, id, open.clone());
                }
            })
        };
        Proxy {
            addr,
            backends,
            handed,
            stop,
            open,
            accept: Some(accept),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the backends (new connections only).
    pub fn set_backends(&self, backends: Vec<std::net::SocketAddr>) {
        assert!(!backends.is_empty(), "a proxy needs a backend");
        *self.handed.lock().unwrap() = vec![0; backends.len()];
        *self.backends.lock().unwrap() = backends;
    }

    /// How many connections each backend was handed so far.
    pub fn handed(&self) -> Vec<usize> {
        self.handed.lock().unwrap().clone()
    }
}

/// Copies `from` to `to` on a thread of its own; at the end of either, closes both and forgets
/// connection `id`.
fn proxy_pipe(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    id: u64,
    open: std::sync::Arc<std::sync::Mutex<Vec<(u64, std::net::TcpStream)>>>,
) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = from.shutdown(std::net::Shutdown::Both);
        let _ = to.shutdown(std::net::Shutdown::Both);
        open.lock().unwrap().retain(|(i, _)| *i != id);
    });
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for (_, s) in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Several `stratus serve` processes that share one PostgreSQL database and one token key
/// (`STRATUS_JWT_KEY`), each with its own data dir, behind one round-robin [`Proxy`]: "the
/// service" as clients see it. To share one S3 store too, give every node the same storage
/// target environment in the builder function (as `s3.rs`'s `Garage::target_env` does).
pub struct Cluster {
    /// The nodes; restart or kill them as single servers (a restart keeps the port).
    pub nodes: Vec<Server>,
    /// The service through the proxy: a [`Server`] whose URL is the proxy's, for the helpers
    /// that take a server (`user_token`, `put`, `funded`…); its data dir and admin command are
    /// node 0's. Never start, stop or restart it.
    pub service: Server,
    pub proxy: Proxy,
    /// The token key every node signs and checks with (64 hex digits).
    pub jwt_key: String,
    /// The shared database (dropped after the nodes and the proxy).
    db: Option<PgDatabase>,
}

impl Cluster {
    /// Starts `n` nodes on a fresh database made through `STRATUS_TEST_PG` (or, when only the
    /// shared PostgreSQL server is known, `STRATUS_PG_URL`). `builder(i, b)` adds node `i`'s
    /// own settings to its builder. Without PostgreSQL: `None` after saying why (the test
    /// returns), or a panic under `STRATUS_REQUIRE_PEERS` (scripts/test.sh), where nothing may
    /// be skipped.
    pub fn start(
        n: usize,
        builder: impl Fn(usize, ServerBuilder) -> ServerBuilder,
    ) -> Option<Cluster> {
        let base = pg_or_skip("a cluster")?;
        Some(Self::start_on(Some(PgDatabase::create(&base)), n, builder))
    }

    /// One node on the run's usual database (SQLite in its data dir, or a PostgreSQL database
    /// of its own under `STRATUS_TEST_PG`), behind the proxy: the cluster's plumbing (proxy,
    /// shared key, per-node URLs) where no PostgreSQL may be at hand.
    pub fn start_single(builder: impl Fn(usize, ServerBuilder) -> ServerBuilder) -> Cluster {
        Self::start_on(None, 1, builder)
    }

    fn start_on(
        db: Option<PgDatabase>,
        n: usize,
        builder: impl Fn(usize, ServerBuilder) -> ServerBuilder,
    ) -> Cluster {
        assert!(n >= 1, "a cluster has a node");
        assert!(
            db.is_some() || n == 1,
            "nodes without a shared database share nothing: more than one needs PostgreSQL"
        );
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            ^ std::process::id() as u64;
        let jwt_key = hex::encode(data(32, seed));
        let nodes: Vec<Server> = (0..n)
            .map(|i| {
                let mut b = Server::builder().env("STRATUS_JWT_KEY", &jwt_key);
                if let Some(db) = &db {
                    b = b.env(DATABASE_URL, &db.url);
                }
                builder(i, b).start()
            })
            .collect();
        let proxy = Proxy::start(nodes.iter().map(|s| s.addr).collect());
        let service = Server {
            url: proxy.url(),
            addr: proxy.addr,
            data_dir: nodes[0].data_dir.clone(),
            _tmp: None,
            env: nodes[0].env.clone(),
            nofile: None,
            child: None,
            log: nodes[0].log.clone(),
            db: None,
        };
        Cluster {
            nodes,
            service,
            proxy,
            jwt_key,
            db,
        }
    }

    /// The proxy's URL: the service.
    pub fn url(&self) -> &str {
        &self.service.url
    }

    /// Each node's own URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|s| s.url.clone()).collect()
    }

    /// The database the nodes use, if on PostgreSQL.
    pub fn database_url(&self) -> Option<String> {
        self.nodes[0].env_var(DATABASE_URL)
    }
}
