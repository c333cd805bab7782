//! `stratus admin move-store`: moves an embedded deployment (SQLite and local blobs in the data
//! dir) to PostgreSQL and the storage targets the configuration names (S3), with nothing lost.
//!
//! Blobs are streamed first (a re-run skips those already there), then every table is copied in
//! one transaction into the empty, migrated target database, backend names rewritten to the new
//! stores; then row counts, the ledger and every object's bytes are checked on the new store.
//! A server holds a shared lock on `<data_dir>/serve.lock` while it runs; the move takes it
//! exclusively, so it never runs beside a live server.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use futures::StreamExt;
use sqlx::Row as _;
use stratus_block::BlobStore;
use stratus_config::{BackendConfig, Config};
use stratus_model::db::{Db, Location, Options};

/// Holds `<data_dir>/serve.lock` (shared: servers; exclusive: the move) until dropped.
pub fn lock_data_dir(data_dir: &Path, exclusive: bool) -> anyhow::Result<File> {
    use rustix::fs::{flock, FlockOperation};
    let path = data_dir.join("serve.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let op = if exclusive {
        FlockOperation::NonBlockingLockExclusive
    } else {
        FlockOperation::NonBlockingLockShared
    };
    match flock(&file, op) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) if exclusive => bail!(
            "a stratus server is running on {}: stop it before moving its store",
            data_dir.display()
        ),
        Err(rustix::io::Errno::WOULDBLOCK) => bail!(
            "{} is being moved to another store (stratus admin move-store)",
            data_dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// Where the blobs of one source backend go.
struct Route {
    from: Option<Arc<dyn BlobStore>>,
    to: Arc<dyn BlobStore>,
}

pub async fn run(cfg: Config, to_database: &str) -> anyhow::Result<()> {
    if cfg
        .database
        .url
        .as_deref()
        .is_some_and(|u| !u.starts_with("sqlite://"))
    {
        bail!(
            "move-store moves the embedded store of the data dir: unset database.url \
             (STRATUS_DATABASE__URL) and name the target with --to-database"
        );
    }
    if !stratus_store::postgres::accepts(to_database) {
        bail!("--to-database must be a postgres:// or postgresql:// URL");
    }
    let _lock = lock_data_dir(&cfg.data_dir, true)?;
    let source = stratus_app::open_database(&cfg)
        .await
        .context("opening the embedded store")?;
    let target = Db::open(Location::Url(to_database), &Options::default())
        .await
        .with_context(|| format!("opening {}", stratus_store::redact(to_database)))?;
    stratus_store::copy::ensure_empty(&target).await?;

    // Where each target's bytes go now.
    let mut stores: BTreeMap<String, Arc<dyn BlobStore>> = BTreeMap::new();
    for (name, t) in &cfg.storage.targets {
        let s = stratus_block::open(&t.backend, &cfg.data_dir)
            .with_context(|| format!("opening storage target {name}"))?;
        stores.insert(name.clone(), s);
    }
    let routes = routes(&source, &stores).await?;

    // Bytes first: a failed move leaves the target database empty and can simply run again.
    let blobs = sqlx::query("SELECT backend, cid, size, state FROM blobs ORDER BY backend, cid")
        .fetch_all(source.r())
        .await?;
    let (mut copied, mut bytes, mut skipped) = (0u64, 0u64, 0u64);
    for b in &blobs {
        let (backend, cid, size, state): (String, String, i64, String) =
            (b.get(0), b.get(1), b.get(2), b.get(3));
        let route = &routes[&backend];
        let Some(from) = &route.from else { continue };
        if state != "live" {
            // Pending, deleting or quarantined: no bytes to keep (the row moves as it is).
            skipped += 1;
            continue;
        }
        let size = size as u64;
        if route.to.size(&cid).await? == Some(size) {
            continue;
        }
        copy_blob(from.clone(), route.to.clone(), &cid, size)
            .await
            .with_context(|| format!("copying blob {cid} of {backend}"))?;
        copied += 1;
        bytes += size;
    }
    println!(
        "blobs: {copied} copied ({bytes} bytes), {} already there, {skipped} not live",
        blobs.len() as u64 - copied - skipped
    );

    let renames: BTreeMap<String, String> = routes
        .iter()
        .map(|(k, r)| (k.clone(), r.to.id().to_string()))
        .collect();
    let counts = stratus_store::copy::copy_all(&source, &target, &|_, column, v| {
        if column == "backend" {
            renames.get(&v).cloned().unwrap_or(v)
        } else {
            v
        }
    })
    .await
    .context("copying the tables")?;
    let rows: u64 = counts.values().sum();
    println!("tables: {} copied, {rows} rows", counts.len());

    verify(&source, &target, &stores).await?;
    source.close().await;
    target.close().await;
    print_next_steps(&cfg, to_database);
    Ok(())
}

/// For each backend named in the source, where its blobs come from and go to.
async fn routes(
    source: &Db,
    stores: &BTreeMap<String, Arc<dyn BlobStore>>,
) -> anyhow::Result<BTreeMap<String, Route>> {
    let names = sqlx::query(
        "SELECT backend FROM blobs UNION SELECT backend FROM objects \
         UNION SELECT backend FROM blocks",
    )
    .fetch_all(source.r())
    .await?;
    let mut out = BTreeMap::new();
    for n in names {
        let backend: String = n.get(0);
        let used: BTreeSet<String> =
            sqlx::query("SELECT DISTINCT target FROM objects WHERE backend = $1")
                .bind(&backend)
                .fetch_all(source.r())
                .await?
                .iter()
                .map(|r| r.get::<String, _>(0))
                .collect();
        let dests: BTreeMap<&str, &Arc<dyn BlobStore>> = stores
            .iter()
            .filter(|(name, _)| used.is_empty() || used.contains(*name))
            .map(|(_, s)| (s.id(), s))
            .collect();
        if let Some(t) = used.iter().find(|t| !stores.contains_key(*t)) {
            bail!("objects of target {t} exist, but the configuration has no target {t}");
        }
        let to = match dests.values().next() {
            Some(s) if dests.len() == 1 => (*s).clone(),
            _ => bail!(
                "the blobs of {backend} would go to {} different stores: give the targets that \
                 share it one bucket",
                dests.len()
            ),
        };
        let from = if to.id() == backend {
            None
        } else {
            let Some(root) = backend.strip_prefix("local:") else {
                bail!(
                    "blobs of {backend} are not in a local directory; move-store moves local blobs"
                );
            };
            let local = BackendConfig::Local { path: root.into() };
            Some(stratus_block::open(&local, Path::new("/"))?)
        };
        out.insert(backend, Route { from, to });
    }
    Ok(out)
}

/// The node name the move stages its uploads under: no server is running while it does, and
/// leftovers of an interrupted move are reclaimed like those of any gone node.
const MOVE_NODE: &str = "movestore";

/// Streams one blob from `from` to `to`; never more than one chunk in memory.
async fn copy_blob(
    from: Arc<dyn BlobStore>,
    to: Arc<dyn BlobStore>,
    cid: &str,
    size: u64,
) -> anyhow::Result<()> {
    let mut stream = from.read(cid, 0..size).await?;
    let handle = tokio::runtime::Handle::current();
    let cid = cid.to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut staging = to.stage(MOVE_NODE)?;
        while let Some(chunk) = handle.block_on(stream.next()) {
            let chunk = chunk?;
            // An S3 part may not be empty.
            if !chunk.is_empty() {
                staging.write(&chunk)?;
            }
        }
        if staging.written() != size {
            bail!("read {} bytes, the store records {size}", staging.written());
        }
        staging.commit(&cid)?;
        Ok(())
    })
    .await?
}

/// Row counts equal, the ledger balances, every object's bytes are in the new store.
async fn verify(
    source: &Db,
    target: &Db,
    stores: &BTreeMap<String, Arc<dyn BlobStore>>,
) -> anyhow::Result<()> {
    let (a, b) = (
        stratus_store::copy::count_rows(source).await?,
        stratus_store::copy::count_rows(target).await?,
    );
    for (table, n) in &a {
        if b.get(table) != Some(n) {
            bail!(
                "verify: table {table} has {n} rows in the source, {:?} in the target",
                b.get(table)
            );
        }
    }
    let ledger = stratus_model::billing::Ledger::new(
        target.clone(),
        Arc::new(stratus_model::clock::SystemClock),
    );
    let v = ledger.verify().await?;
    if !v.mismatches.is_empty() {
        bail!(
            "verify: {} account(s) do not balance in the target",
            v.mismatches.len()
        );
    }
    let objects = sqlx::query(
        "SELECT DISTINCT o.backend, o.cid, b.size FROM objects o \
         JOIN blobs b ON b.backend = o.backend AND b.cid = o.cid WHERE b.state = 'live'",
    )
    .fetch_all(target.r())
    .await?;
    let by_id: BTreeMap<&str, &Arc<dyn BlobStore>> = stores.values().map(|s| (s.id(), s)).collect();
    for o in &objects {
        let (backend, cid, size): (String, String, i64) = (o.get(0), o.get(1), o.get(2));
        let store = by_id
            .get(backend.as_str())
            .with_context(|| format!("verify: object {cid} names unknown backend {backend}"))?;
        let got = store.size(&cid).await?;
        if got != Some(size as u64) {
            bail!("verify: {cid} has {got:?} bytes in {backend}, the store records {size}");
        }
        // Readable, not only listed.
        let mut s = store.read(&cid, 0..(size as u64).min(1)).await?;
        while let Some(c) = s.next().await {
            c?;
        }
    }
    println!(
        "verified: row counts of {} tables, ledger of {} account(s), {} objects' blobs readable",
        a.len(),
        v.accounts,
        objects.len()
    );
    Ok(())
}

fn print_next_steps(cfg: &Config, url: &str) {
    println!();
    println!("The store is moved. Every node needs:");
    println!("  database.url = \"{}\"", stratus_store::redact(url));
    println!("    (env STRATUS_DATABASE__URL)");
    for (name, t) in &cfg.storage.targets {
        println!("  [storage.targets.{name}]");
        match &t.backend {
            BackendConfig::S3 {
                bucket,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
                allow_http,
            } => {
                println!("  backend = \"s3\"");
                println!("  bucket = \"{bucket}\"");
                println!("  endpoint = \"{endpoint}\"");
                println!("  region = \"{region}\"");
                if let Some(k) = access_key_id {
                    println!("  access_key_id = \"{k}\"");
                }
                if secret_access_key.is_some() {
                    println!("  secret_access_key = \"…\"  # the one you configured");
                }
                if *allow_http {
                    println!("  allow_http = true");
                }
            }
            BackendConfig::Local { path } => {
                println!("  backend = \"local\"  # one node only");
                println!("  path = \"{}\"", path.display());
            }
        }
        println!("  profile = \"{}\"", t.profile);
    }
    let key = cfg
        .jwt_key_file
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join("secrets").join("jwt.key"));
    println!(
        "  the token key, so that issued tokens stay valid: the contents of {} as \
         STRATUS_JWT_KEY, or that file as jwt_key_file, on every node",
        key.display()
    );
    println!(
        "  the operator token ({}), likewise as operator.token or operator.token_file",
        cfg.data_dir
            .join("secrets")
            .join("operator.token")
            .display()
    );
}
