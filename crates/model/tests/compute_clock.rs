//! Compute under an injected clock: expiry with the real Docker runtime, and a transition that
//! never finishes (a runtime that hangs) resolved by the sweeper — no real waiting for either.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use stratus_compute::{InstanceSpec, InstanceState, Runtime, RuntimeError};
use stratus_config::{Amount, BillingConfig, ComputeConfig};
use stratus_model::account::Accounts;
use stratus_model::billing::{Billing, EntryKind, Posting};
use stratus_model::clock::{Clock, ManualClock};
use stratus_model::compute::{Compute, MappingRequest, SandboxRequest, Status, MONTH_MS};
use stratus_model::db::Db;
use stratus_model::Error;

const WEB: &str = "services:
  web:
    image: stratus-test/busybox:latest
    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]
    ports: [\"80:80\"]
";

struct World {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    billing: Billing,
    compute: Compute,
    account: String,
}

async fn world(port_min: u16, timeout_secs: u64) -> World {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_sqlite(&dir.path().join("c.db")).await.unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let billing = Billing::new(
        db.clone(),
        Arc::new(clock.clone()),
        BillingConfig::default(),
    );
    let cfg = ComputeConfig {
        gateway_bind: "127.0.0.1".into(),
        port_min,
        port_max: port_min + 9,
        transition_timeout_secs: timeout_secs,
        owner: Some(format!("test-{}", uuid::Uuid::new_v4())),
        local_images: vec!["stratus-test/busybox:latest".into()],
        ..ComputeConfig::default()
    };
    let compute = Compute::new(db.clone(), Arc::new(clock.clone()), cfg, billing.clone()).unwrap();
    let account = Accounts::new(db)
        .create_with_password("owner", "h", 0)
        .await
        .unwrap()
        .id;
    billing
        .ledger()
        .post(Posting {
            account_id: &account,
            kind: EntryKind::Credit,
            amount: Amount(10u128.pow(18)),
            reason: "admin",
            reference: "seed",
            memo: "",
        })
        .await
        .unwrap();
    World {
        _dir: dir,
        clock,
        billing,
        compute,
        account,
    }
}

fn request() -> SandboxRequest {
    SandboxRequest {
        name: "web".into(),
        spec_id: 1,
        image_id: 1,
        duration_months: 1,
        compose: WEB.into(),
        mappings: vec![MappingRequest {
            name: "web".into(),
            protocol: "TCP".into(),
            computer_port: 80,
        }],
        ..SandboxRequest::default()
    }
}

async fn get(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    (!out.is_empty()).then_some(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_expires_when_its_duration_is_over() {
    let st = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/test-image.sh"
    ))
    .status()
    .expect("scripts/test-image.sh (needs Docker: run scripts/test.sh)");
    assert!(st.success());
    let w = world(44900, 300).await;
    assert!(w.compute.connect_runtime().await.unwrap());
    let (i, maps) = w
        .compute
        .create_sandbox(&w.account, request())
        .await
        .unwrap();
    let port = maps[0].server_port;
    let i = w
        .compute
        .wait(&w.account, &i.id, Status::Running, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(i.status, Status::Running);
    assert!(get(port).await.unwrap().contains("hello from stratus-test"));
    assert_eq!(i.expires_at - i.created_at, MONTH_MS);

    // One day before the end nothing happens.
    w.clock.advance_ms(MONTH_MS - 24 * 3600 * 1000);
    w.compute.sweep().await.unwrap();
    assert_eq!(
        w.compute.instance(&w.account, &i.id).await.unwrap().status,
        Status::Running
    );
    // At the end: stopped, marked expired, mappings closed and their ports free.
    w.clock.advance_ms(24 * 3600 * 1000);
    w.compute.sweep().await.unwrap();
    let e = w.compute.instance(&w.account, &i.id).await.unwrap();
    assert_eq!(e.status, Status::Expired);
    assert!(w.compute.mappings_of(&i.id).await.unwrap().is_empty());
    assert!(get(port).await.is_none());
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("port freed");
    let rt = stratus_compute::DockerRuntime::from_config(&ComputeConfig::default())
        .await
        .unwrap();
    assert_eq!(rt.state(&i.id).await.unwrap(), InstanceState::Stopped);
    // It cannot be started again; deleting frees everything.
    assert!(matches!(
        w.compute.start(&w.account, &i.id).await,
        Err(Error::Conflict(_))
    ));
    w.compute.delete(&w.account, &i.id).await.unwrap();
    w.compute
        .wait(&w.account, &i.id, Status::Deleted, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(rt.state(&i.id).await.unwrap(), InstanceState::Missing);
    let _ = w.clock.now_ms();
    rt.close().await;
    w.compute.close().await;
}

/// A runtime whose every operation hangs forever.
struct Hangs;

#[async_trait::async_trait]
impl Runtime for Hangs {
    async fn create(&self, _: &InstanceSpec) -> Result<(), RuntimeError> {
        std::future::pending().await
    }
    async fn start(&self, _: &str) -> Result<(), RuntimeError> {
        std::future::pending().await
    }
    async fn stop(&self, _: &str) -> Result<(), RuntimeError> {
        std::future::pending().await
    }
    async fn restart(&self, _: &str) -> Result<(), RuntimeError> {
        std::future::pending().await
    }
    async fn remove(&self, _: &str) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn state(&self, _: &str) -> Result<InstanceState, RuntimeError> {
        Ok(InstanceState::Missing)
    }
    async fn endpoint(&self, _: &str, _: u16) -> Result<Option<SocketAddr>, RuntimeError> {
        Ok(None)
    }
    async fn instances(&self) -> Result<Vec<String>, RuntimeError> {
        Ok(vec![])
    }
    async fn recover(&self, _: &str) -> Result<InstanceState, RuntimeError> {
        Ok(InstanceState::Missing)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_instance_stays_in_a_transitional_state_forever() {
    let w = world(44950, 60).await;
    w.compute.set_runtime(Arc::new(Hangs)).await;
    let before = w.billing.ledger().balance(&w.account).await.unwrap();
    let (i, maps) = w
        .compute
        .create_sandbox(&w.account, request())
        .await
        .unwrap();
    assert_eq!(i.status, Status::Creating);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Within the timeout, and within one more (a task still holds it): left alone.
    w.compute.sweep().await.unwrap();
    w.clock.advance_ms(61_000);
    w.compute.sweep().await.unwrap();
    assert_eq!(
        w.compute.instance(&w.account, &i.id).await.unwrap().status,
        Status::Creating
    );
    // Past twice the timeout: failed, refunded, its port freed.
    w.clock.advance_ms(60_000);
    w.compute.sweep().await.unwrap();
    let f = w.compute.instance(&w.account, &i.id).await.unwrap();
    assert_eq!(f.status, Status::Failed);
    assert!(f.status_reason.contains("too long"), "{}", f.status_reason);
    assert_eq!(
        w.billing.ledger().balance(&w.account).await.unwrap(),
        before
    );
    std::net::TcpListener::bind(("127.0.0.1", maps[0].server_port)).expect("port freed");
}
