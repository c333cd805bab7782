//! Storage on a real S3-compatible server: a single-node Garage started for the test (built once
//! by `scripts/garage.sh`, which `scripts/test.sh` runs), with a throwaway configuration in a temp
//! dir. Upload, ranged download, delete and fsck go through it; an upload cancelled mid-stream,
//! and one cut by a crash, leave no incomplete multipart upload behind (as Debian's `awscli`
//! lists them); and an `http://` endpoint without `allow_http` stops the server with advice.

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{data, json, put, repo_root, Server, ServerBuilder, BIN, KEY_A};

const BUCKET: &str = "stratus";
const REGION: &str = "garage";

/// A single-node Garage on loopback, killed on drop.
pub(crate) struct Garage {
    child: Child,
    dir: tempfile::TempDir,
    bin: PathBuf,
    endpoint: String,
    key_id: String,
    secret: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The Garage binary `scripts/garage.sh` builds (or `STRATUS_GARAGE`).
fn garage_bin() -> PathBuf {
    if let Ok(p) = std::env::var("STRATUS_GARAGE") {
        return PathBuf::from(p);
    }
    let out = Command::new(repo_root().join("scripts/garage.sh"))
        .arg("--path")
        .output()
        .expect("scripts/garage.sh");
    let bin = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(
        bin.exists(),
        "Garage is not built: run scripts/garage.sh (scripts/test.sh does; it builds once, \
         in about 8 minutes, and caches the binary at {})",
        bin.display()
    );
    bin
}

impl Garage {
    pub(crate) fn start() -> Garage {
        let bin = garage_bin();
        let dir = tempfile::tempdir().unwrap();
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let secret: String = crate::harness::data(32, rpc as u64)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let path = dir.path().display();
        std::fs::write(
            dir.path().join("garage.toml"),
            format!(
                r#"
metadata_dir = "{path}/meta"
data_dir = "{path}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("garage.log")).unwrap();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(dir.path().join("garage.toml"))
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start garage");
        let mut g = Garage {
            child,
            dir,
            bin,
            endpoint: format!("http://127.0.0.1:{s3}"),
            key_id: String::new(),
            secret: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !g.cli(&["status"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "garage did not start: {}",
                std::fs::read_to_string(g.dir.path().join("garage.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let id = g.ok(&["node", "id", "-q"]);
        let id = id.trim().split('@').next().unwrap().to_string();
        g.ok(&["layout", "assign", "-z", "dc1", "-c", "1G", &id]);
        g.ok(&["layout", "apply", "--version", "1"]);
        let key: Value =
            serde_json::from_str(&g.ok(&["json-api", "CreateKey", r#"{"name":"stratus"}"#]))
                .unwrap();
        g.key_id = key["accessKeyId"].as_str().unwrap().to_string();
        g.secret = key["secretAccessKey"].as_str().unwrap().to_string();
        g.ok(&["bucket", "create", BUCKET]);
        g.ok(&[
            "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "stratus",
        ]);
        // The bucket answers S3 requests.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !g
            .aws(&["s3api", "list-objects-v2", "--bucket", BUCKET])
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "the bucket never answered");
            std::thread::sleep(Duration::from_millis(200));
        }
        g
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }

    /// Runs a garage command that must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "garage {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs Debian's awscli against the bucket.
    fn aws(&self, args: &[&str]) -> std::process::Output {
        Command::new("aws")
            .args(args)
            .args(["--endpoint-url", &self.endpoint, "--region", REGION])
            .args(["--output", "json"])
            .env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .stdin(Stdio::null())
            .output()
            .expect("aws (Debian's awscli; scripts/test.sh installs it)")
    }

    fn aws_json(&self, args: &[&str]) -> Value {
        let out = self.aws(args);
        assert!(
            out.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if out.stdout.iter().all(|b| b.is_ascii_whitespace()) {
            return json!({});
        }
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Keys of the incomplete multipart uploads in the bucket (all of them, any prefix).
    pub(crate) fn incomplete_uploads(&self) -> Vec<String> {
        let v = self.aws_json(&["s3api", "list-multipart-uploads", "--bucket", BUCKET]);
        v["Uploads"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|u| u["Key"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Keys of the objects under `prefix`.
    pub(crate) fn objects(&self, prefix: &str) -> Vec<String> {
        let v = self.aws_json(&[
            "s3api",
            "list-objects-v2",
            "--bucket",
            BUCKET,
            "--prefix",
            prefix,
        ]);
        v["Contents"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|o| o["Key"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The environment that binds the `mefs` target to this bucket.
    pub(crate) fn target_env(&self) -> Vec<(String, String)> {
        [
            ("BACKEND", "s3"),
            ("BUCKET", BUCKET),
            ("ENDPOINT", self.endpoint.as_str()),
            ("REGION", REGION),
            ("ACCESS_KEY_ID", self.key_id.as_str()),
            ("SECRET_ACCESS_KEY", self.secret.as_str()),
            ("ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| {
            (
                format!("STRATUS_STORAGE__TARGETS__MEFS__{k}"),
                v.to_string(),
            )
        })
        .collect()
    }

    pub(crate) fn server(&self) -> ServerBuilder {
        let mut b = Server::builder();
        for (k, v) in self.target_env() {
            b = b.env(&k, &v);
        }
        b
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `stratus admin fsck --json` with the same target configuration.
fn fsck(g: &Garage, s: &Server) -> (bool, Value) {
    let mut cmd = s.admin();
    cmd.args(["fsck", "--json"]);
    for (k, v) in g.target_env() {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "fsck output ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        }),
    )
}

/// Starts an upload of `total` bytes on a raw connection and sends the first `sent` of them.
pub(crate) fn partial_upload(s: &Server, token: &str, total: &[u8], sent: usize) -> TcpStream {
    let head = "--B0und\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n";
    let tail = "\r\n--B0und--\r\n";
    let len = head.len() + total.len() + tail.len();
    let mut conn = TcpStream::connect(s.addr).unwrap();
    write!(
        conn,
        "POST /mefs/ HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\nContent-Type: multipart/form-data; boundary=B0und\r\nContent-Length: {len}\r\n\r\n{head}"
    )
    .unwrap();
    conn.write_all(&total[..sent]).unwrap();
    conn
}

#[test]
fn storage_on_garage_uploads_reads_ranges_deletes_and_checks() {
    let g = Garage::start();
    let s = g.server().start();
    let (_, t, _) = s.wallet_login(KEY_A);
    // Three parts of 8 MiB and a short one.
    let bytes = data(30_000_000, 17);
    let cid = put(&s, &t, "mefs", "big.bin", bytes.clone());
    assert_eq!(g.objects("blobs/"), vec![format!("blobs/{cid}")]);
    assert!(g.objects("staging/").is_empty());
    assert!(g.incomplete_uploads().is_empty());
    let whole = s.get(&format!("/mefs/{cid}")).send().unwrap();
    assert_eq!(whole.status(), 200);
    assert!(whole.bytes().unwrap().as_ref() == bytes.as_slice());
    let r = s
        .get(&format!("/mefs/{cid}"))
        .header("Range", "bytes=8388000-16777300")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert!(r.bytes().unwrap().as_ref() == &bytes[8_388_000..=16_777_300]);
    let (ok, report) = fsck(&g, &s);
    assert!(ok, "{report}");
    assert_eq!(report["checked"], 1);
    assert_eq!(report["issues"], json!([]));
    // Small files too (one part).
    let small = put(&s, &t, "mefs", "a.txt", b"hello garage".to_vec());
    assert_eq!(
        s.get(&format!("/mefs/{small}"))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "hello garage"
    );
    let (st, v) = json(
        s.delete(&format!("/mefs/{cid}"))
            .header("Authorization", &t),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(g.objects("blobs/"), vec![format!("blobs/{small}")]);
    assert_eq!(s.get(&format!("/mefs/{cid}")).send().unwrap().status(), 404);
    // Bytes changed behind stratus's back are found.
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), b"hello gArage").unwrap();
    let key = format!("blobs/{small}");
    g.aws_json(&[
        "s3api",
        "put-object",
        "--bucket",
        BUCKET,
        "--key",
        &key,
        "--body",
        tmp.path().to_str().unwrap(),
    ]);
    let (ok, report) = fsck(&g, &s);
    assert!(!ok);
    assert_eq!(report["issues"][0]["cid"], small.as_str(), "{report}");
    assert_eq!(report["issues"][0]["kind"], "mismatch", "{report}");
}

#[test]
fn on_garage_a_cancelled_upload_and_a_crashed_one_leave_no_incomplete_multipart_upload() {
    let g = Garage::start();
    let mut s = g.server().start();
    let (_, t, _) = s.wallet_login(KEY_A);
    let bytes = data(40_000_000, 23);

    // Cancelled: the client goes away after 20 MB (two parts sent).
    let conn = partial_upload(&s, &t, &bytes, 20_000_000);
    wait_for("the staged multipart upload", || {
        g.incomplete_uploads()
            .iter()
            .any(|k| k.starts_with("staging/"))
    });
    drop(conn);
    wait_for("the cancelled upload to be aborted", || {
        g.incomplete_uploads().is_empty()
    });
    assert!(g.objects("").is_empty(), "no object either");

    // Crashed: the server dies mid-upload; an upload this server did not start (another key
    // prefix) is not touched by the clean-up at start.
    let foreign = g.aws_json(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        BUCKET,
        "--key",
        "elsewhere/not-ours",
    ]);
    assert!(foreign["UploadId"].is_string(), "{foreign}");
    let conn = partial_upload(&s, &t, &bytes, 20_000_000);
    wait_for("the staged multipart upload", || {
        g.incomplete_uploads()
            .iter()
            .any(|k| k.starts_with("staging/"))
    });
    s.kill();
    drop(conn);
    assert!(
        g.incomplete_uploads()
            .iter()
            .any(|k| k.starts_with("staging/")),
        "a crash leaves the multipart upload behind"
    );
    s.restart();
    assert_eq!(
        g.incomplete_uploads(),
        vec!["elsewhere/not-ours".to_string()],
        "aborted at start, only under staging/"
    );
    let (_, l) = json(s.get("/mefs/listobjects").header("Authorization", &t));
    assert_eq!(l["Object"], json!([]));
    // And the upload then succeeds.
    let cid = put(&s, &t, "mefs", "big.bin", bytes.clone());
    let back = s.get(&format!("/mefs/{cid}")).send().unwrap();
    assert!(back.bytes().unwrap().as_ref() == bytes.as_slice());
    assert_eq!(
        g.incomplete_uploads(),
        vec!["elsewhere/not-ours".to_string()]
    );
}

#[test]
fn an_http_endpoint_without_allow_http_stops_the_server_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("STRATUS_STORAGE__TARGETS__MEFS__BACKEND", "s3")
        .env("STRATUS_STORAGE__TARGETS__MEFS__BUCKET", "b")
        .env(
            "STRATUS_STORAGE__TARGETS__MEFS__ENDPOINT",
            "http://127.0.0.1:9",
        )
        .env("STRATUS_STORAGE__TARGETS__MEFS__REGION", "garage")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("allow_http = true"), "{text}");
    assert!(text.contains("http://127.0.0.1:9"), "{text}");
    assert!(!text.contains("builder error"), "{text}");
}
