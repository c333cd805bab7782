//! Integrity check: re-hash every stored blob and compare with the metadata.
//!
//! For each live blob the bytes are streamed through the importer with the blob's profile; the
//! root CID and size must match its name and record. Missing files, mismatches, unreadable files
//! and files nobody knows about are reported; with `repair`, mismatching blobs are moved aside (quarantined) and
//! marked so downloads stop serving them, and unknown files are quarantined too. A later upload
//! of the same content heals a quarantined blob.

use futures::StreamExt;
use serde::Serialize;
use stratus_unixfs::{Importer, Profile};

use super::Storage;
use crate::{Error, Result};

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FsckIssue {
    /// The metadata names a blob whose bytes are gone.
    Missing { backend: String, cid: String },
    /// The bytes do not hash to their name, or have another size.
    Mismatch {
        backend: String,
        cid: String,
        actual_cid: String,
        expected_size: u64,
        actual_size: u64,
    },
    /// The bytes cannot be read (an i/o error of the disk or the store).
    Unreadable {
        backend: String,
        cid: String,
        error: String,
    },
    /// Bytes in the store that no metadata names.
    Orphan { backend: String, key: String },
}

/// The outcome of a check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FsckReport {
    pub checked: u64,
    pub bytes: u64,
    pub issues: Vec<FsckIssue>,
    pub repaired: u64,
}

impl Storage {
    /// Checks every blob of every target; with `repair`, quarantines what does not match.
    pub async fn fsck(&self, repair: bool) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        let mut seen_backends = std::collections::HashSet::new();
        for t in self.targets() {
            let backend = t.store.id().to_string();
            if !seen_backends.insert(backend.clone()) {
                continue;
            }
            let blobs: Vec<(String, i64, String)> = sqlx::query_as(
                "SELECT cid, size, profile FROM blobs WHERE backend = $1 AND state = 'live' ORDER BY cid",
            )
            .bind(&backend)
            .fetch_all(self.db.r())
            .await?;
            let known: std::collections::HashSet<String> =
                sqlx::query_as::<_, (String,)>("SELECT cid FROM blobs WHERE backend = $1")
                    .bind(&backend)
                    .fetch_all(self.db.r())
                    .await?
                    .into_iter()
                    .map(|r| r.0)
                    .collect();
            for (cid, size, profile) in blobs {
                report.checked += 1;
                let issue = match t.store.size(&cid).await.map_err(Error::internal)? {
                    None => Some(FsckIssue::Missing {
                        backend: backend.clone(),
                        cid: cid.clone(),
                    }),
                    Some(actual_size) => {
                        let profile = Profile::by_name(&profile)
                            .ok_or_else(|| Error::internal(format!("unknown profile {profile}")))?;
                        let hashed = match t.store.read(&cid, 0..actual_size).await {
                            Ok(stream) => rehash(stream, profile).await,
                            Err(e) => Err(Error::internal(e)),
                        };
                        match hashed {
                            Ok(actual) => {
                                report.bytes += actual_size;
                                (actual != cid || actual_size != size as u64).then(|| {
                                    FsckIssue::Mismatch {
                                        backend: backend.clone(),
                                        cid: cid.clone(),
                                        actual_cid: actual,
                                        expected_size: size as u64,
                                        actual_size,
                                    }
                                })
                            }
                            // One damaged blob is reported; the check goes on with the others.
                            Err(e) => Some(FsckIssue::Unreadable {
                                backend: backend.clone(),
                                cid: cid.clone(),
                                error: e.to_string(),
                            }),
                        }
                    }
                };
                if let Some(issue) = issue {
                    tracing::error!(?issue, "integrity check failed");
                    if repair {
                        t.store.quarantine(&cid).await.map_err(Error::internal)?;
                        sqlx::query("UPDATE blobs SET state = 'quarantined' WHERE backend = $1 AND cid = $2")
                            .bind(&backend)
                            .bind(&cid)
                            .execute(self.db.w())
                            .await?;
                        report.repaired += 1;
                    }
                    report.issues.push(issue);
                }
            }
            for key in t.store.keys().await.map_err(Error::internal)? {
                if !known.contains(&key) {
                    if repair {
                        t.store.quarantine(&key).await.map_err(Error::internal)?;
                        report.repaired += 1;
                    }
                    report.issues.push(FsckIssue::Orphan {
                        backend: backend.clone(),
                        key,
                    });
                }
            }
        }
        Ok(report)
    }
}

/// Feeds a stream through the importer on a blocking thread; returns the root CID.
async fn rehash(mut stream: stratus_block::ByteStream, profile: Profile) -> Result<String> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let hasher = tokio::task::spawn_blocking(move || {
        let mut imp = Importer::without_events(profile);
        while let Some(b) = rx.blocking_recv() {
            imp.write(&b);
        }
        imp.finish().root.to_string()
    });
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(Error::internal)?;
        if tx.send(piece).await.is_err() {
            break;
        }
    }
    drop(tx);
    hasher.await.map_err(Error::internal)
}
