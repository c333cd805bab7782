//! Blob stores: where the bytes of stored files live.
//!
//! A blob is the content of one stored file, named by its root CID. Every backend goes through
//! [`BlobStore`]: bytes are first written to a *staging* area while they arrive (the name is not
//! known until the last byte is hashed), then [`Staging::commit`] makes them durable and moves
//! them under their name in one atomic step. A staging area that is dropped or aborted leaves
//! nothing behind; leftovers of a crash are removed by [`BlobStore::clean_staging`] at start.
//!
//! Staging areas belong to a *node* (the id of the server process that writes them; several
//! nodes may share one store): the node id is part of every staging name, a node's start cleans
//! only its own ([`BlobStore::clean_staging`]), and the leftovers of nodes that are gone are found
//! with [`BlobStore::staging_nodes`] and cleaned by whichever node collects garbage.
//!
//! Two backends: [`local::LocalBlobs`] (a directory; fsync, atomic rename, directory fsync) is the
//! embedded default; [`remote::ObjectStoreBlobs`] adapts any `object_store` (S3-compatible stores
//! such as Garage or MinIO) for deployments that scale out. This crate never touches metadata:
//! which blobs exist and who owns them is the metadata database's business.

mod direct;
pub mod local;
pub mod remote;

use std::fmt::Debug;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use stratus_config::BackendConfig;

/// Errors of a blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} not found")]
    NotFound(String),
    #[error("blob store i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("object store: {0}")]
    Remote(String),
    #[error("invalid blob key {0:?}")]
    BadKey(String),
    /// The backend's configuration cannot work; the message says how to fix it.
    #[error("{0}")]
    Config(String),
}

/// A stream of a blob's bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BlobError>> + Send>>;

/// Bytes being written under a name not yet known. All methods block: call them from a blocking
/// thread, never from an async task.
pub trait Staging: Send {
    /// Appends bytes.
    fn write(&mut self, data: &[u8]) -> Result<(), BlobError>;
    /// Bytes written so far.
    fn written(&self) -> u64;
    /// Makes the bytes durable and names them `key`. When `key` already exists the staged copy is
    /// discarded (same name, same content).
    fn commit(self: Box<Self>, key: &str) -> Result<(), BlobError>;
}

/// A place for blobs.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + Debug {
    /// A stable identity of the backend: two targets with the same identity share blobs.
    fn id(&self) -> &str;
    /// Opens a staging area owned by `node` (blocking; call from a blocking thread).
    fn stage(&self, node: &str) -> Result<Box<dyn Staging>, BlobError>;
    /// Streams `range` of blob `key`.
    async fn read(&self, key: &str, range: Range<u64>) -> Result<ByteStream, BlobError>;
    /// Size of blob `key`, or `None` if absent.
    async fn size(&self, key: &str) -> Result<Option<u64>, BlobError>;
    /// Removes blob `key` (absent is fine).
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
    /// Moves blob `key` aside (failed integrity check) without deleting it.
    async fn quarantine(&self, key: &str) -> Result<(), BlobError>;
    /// Every blob name (integrity checks).
    async fn keys(&self) -> Result<Vec<String>, BlobError>;
    /// Removes the leftovers of `node`'s interrupted writes (only `node`'s: other nodes sharing
    /// the store may be writing); returns how many.
    async fn clean_staging(&self, node: &str) -> Result<u64, BlobError>;
    /// The nodes that have something in the staging area (leftovers or writes in progress).
    /// Staging names from before staging was per node count as a node of their own, which is
    /// never alive.
    async fn staging_nodes(&self) -> Result<Vec<String>, BlobError>;
}

/// Checks that a key is a plain CID-like name (letters and digits only).
pub fn check_key(key: &str) -> Result<(), BlobError> {
    if key.len() < 8 || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(BlobError::BadKey(key.to_string()));
    }
    Ok(())
}

/// Checks that a node id can be part of a staging name (letters and digits only).
pub fn check_node(node: &str) -> Result<(), BlobError> {
    if node.is_empty() || node.len() > 128 || !node.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(BlobError::BadKey(node.to_string()));
    }
    Ok(())
}

/// Builds the store a backend configuration names. `data_dir` anchors relative local paths.
pub fn open(
    cfg: &BackendConfig,
    data_dir: &std::path::Path,
) -> Result<Arc<dyn BlobStore>, BlobError> {
    match cfg {
        BackendConfig::Local { path } => {
            let root = if path.is_absolute() {
                path.clone()
            } else {
                data_dir.join(path)
            };
            Ok(Arc::new(local::LocalBlobs::open(&root)?))
        }
        BackendConfig::S3 {
            bucket,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            allow_http,
        } => {
            if endpoint
                .get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
                && !allow_http
            {
                return Err(BlobError::Config(format!(
                    "the S3 endpoint {endpoint} is plain http:// but allow_http is not set: \
                     add `allow_http = true` to the target's configuration (environment: \
                     STRATUS_STORAGE__TARGETS__<TARGET>__ALLOW_HTTP=true) to send requests \
                     and keys unencrypted, or use an https:// endpoint"
                )));
            }
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_endpoint(endpoint)
                .with_region(region)
                .with_allow_http(*allow_http)
                .with_virtual_hosted_style_request(false);
            if let Some(k) = access_key_id {
                b = b.with_access_key_id(k);
            }
            if let Some(s) = secret_access_key {
                b = b.with_secret_access_key(s);
            }
            let store = Arc::new(
                b.build()
                    .map_err(|e| BlobError::Config(format!("S3 bucket {bucket}: {e}")))?,
            );
            let uploads =
                remote::S3Uploads::new(store.clone(), endpoint, bucket, region, *allow_http)?;
            Ok(Arc::new(remote::ObjectStoreBlobs::s3(
                format!("s3:{endpoint}/{bucket}"),
                store,
                uploads,
            )))
        }
    }
}
