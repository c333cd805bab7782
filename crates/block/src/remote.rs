//! Blobs in any `object_store` (S3-compatible stores: Garage, MinIO, AWS S3).
//!
//! Staging is a multipart upload to `staging/<node>/<uuid>` streamed through `object_store`'s own
//! writer ([`WriteMultipart`]) in parts of 8 MiB (S3's minimum is 5 MiB), at most
//! [`PARTS_IN_FLIGHT`] at a time; commit completes it and renames it to `blobs/<name>` (copy +
//! delete where the store has no rename). A multipart upload is durable once the store
//! acknowledges completion, which is what commit waits for.
//!
//! Nothing is left behind on purpose: a staging area that fails, or is dropped before commit
//! (a cancelled upload), aborts its multipart upload — from a task of its own, so dropping never
//! blocks or needs to be on a particular thread. What a crash leaves (incomplete multipart
//! uploads under `staging/`, which S3 keeps and bills until they are aborted) is listed and
//! aborted by [`BlobStore::clean_staging`] at start (the node's own only: other nodes sharing the
//! bucket may be uploading), for S3 stores through [`S3Uploads`]; those of nodes that are gone
//! are found with [`BlobStore::staging_nodes`].

use std::ops::Range;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, WriteMultipart};
use serde::Deserialize;
use tokio::runtime::Handle;

use crate::{check_key, check_node, BlobError, BlobStore, ByteStream, Staging};

/// Size of one part.
const PART: usize = 8 << 20;
/// Parts being sent at once (memory held: about this many parts).
const PARTS_IN_FLIGHT: usize = 2;
/// Where staged uploads live (the prefix startup cleanup looks under).
const STAGING_PREFIX: &str = "staging/";

fn remote(e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { path, .. } => BlobError::NotFound(path),
        other => BlobError::Remote(other.to_string()),
    }
}

/// Blobs in an object store.
#[derive(Debug)]
pub struct ObjectStoreBlobs {
    id: String,
    store: Arc<dyn ObjectStore>,
    /// The multipart uploads of the bucket, for S3 stores.
    uploads: Option<S3Uploads>,
}

impl ObjectStoreBlobs {
    /// Any object store; only leftover objects are cleaned at start (a store that is not S3 has
    /// no listing of incomplete uploads).
    pub fn new(id: String, store: Arc<dyn ObjectStore>) -> Self {
        ObjectStoreBlobs {
            id,
            store,
            uploads: None,
        }
    }

    /// An S3 bucket: leftover incomplete multipart uploads are aborted at start too.
    pub fn s3(id: String, store: Arc<AmazonS3>, uploads: S3Uploads) -> Self {
        ObjectStoreBlobs {
            id,
            store,
            uploads: Some(uploads),
        }
    }

    fn blob_path(key: &str) -> Path {
        Path::from(format!("blobs/{key}"))
    }

    /// The incomplete multipart uploads under `staging/` (S3 stores only; empty otherwise):
    /// `(key, upload id)`.
    pub async fn incomplete_uploads(&self) -> Result<Vec<(String, String)>, BlobError> {
        match &self.uploads {
            Some(u) => u.list(STAGING_PREFIX).await,
            None => Ok(Vec::new()),
        }
    }
}

struct RemoteStaging {
    rt: Handle,
    store: Arc<dyn ObjectStore>,
    path: Path,
    writer: Option<WriteMultipart>,
    written: u64,
    /// Aborts what `writer` cannot (see [`RemoteStaging::commit`]).
    uploads: Option<S3Uploads>,
}

impl RemoteStaging {
    /// Aborts the multipart upload from a task of its own (never blocks the caller).
    fn abort(&mut self) {
        if let Some(writer) = self.writer.take() {
            let path = self.path.clone();
            self.rt.spawn(async move {
                if let Err(e) = writer.abort().await {
                    tracing::warn!(error = %e, %path, "cannot abort a staged multipart upload; it is aborted at the next start");
                }
            });
        }
    }
}

impl Staging for RemoteStaging {
    fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        let writer = self.writer.as_mut().expect("open until commit");
        // Sending parts is spawned on the runtime; this (blocking) thread waits for room.
        let room = self.rt.block_on(writer.wait_for_capacity(PARTS_IN_FLIGHT));
        if let Err(e) = room {
            self.abort();
            return Err(remote(e));
        }
        writer.write(data);
        self.written += data.len() as u64;
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn commit(mut self: Box<Self>, key: &str) -> Result<(), BlobError> {
        check_key(key)?;
        if self.written == 0 {
            // S3 refuses an empty part, and a multipart upload needs one: an empty blob is one
            // plain PUT, and the multipart upload is aborted.
            self.abort();
            let dest = ObjectStoreBlobs::blob_path(key);
            let store = self.store.clone();
            return self.rt.block_on(async move {
                store
                    .put(&dest, object_store::PutPayload::default())
                    .await
                    .map(|_| ())
                    .map_err(remote)
            });
        }
        let mut writer = self.writer.take().expect("open until commit");
        if let Err(e) = self.rt.block_on(writer.wait_for_capacity(0)) {
            self.writer = Some(writer);
            self.abort();
            return Err(remote(e));
        }
        // `finish` sends the last part and completes; a failed completion is aborted by it, but
        // a failed last part is not (the writer is gone by then): that one is found and aborted
        // by its key.
        if let Err(e) = self.rt.block_on(writer.finish()) {
            if let Some(uploads) = self.uploads.clone() {
                let key = self.path.to_string();
                self.rt.spawn(async move { uploads.abort_all(&key).await });
            }
            return Err(remote(e));
        }
        let dest = ObjectStoreBlobs::blob_path(key);
        let store = self.store.clone();
        let from = self.path.clone();
        self.rt.block_on(async move {
            match store.head(&dest).await {
                Ok(_) => store.delete(&from).await.map_err(remote),
                Err(object_store::Error::NotFound { .. }) => {
                    store.rename(&from, &dest).await.map_err(remote)
                }
                Err(e) => Err(remote(e)),
            }
        })
    }
}

impl Drop for RemoteStaging {
    fn drop(&mut self) {
        self.abort();
    }
}

#[async_trait::async_trait]
impl BlobStore for ObjectStoreBlobs {
    fn id(&self) -> &str {
        &self.id
    }

    fn stage(&self, node: &str) -> Result<Box<dyn Staging>, BlobError> {
        check_node(node)?;
        let rt = Handle::current();
        let path = Path::from(format!(
            "{STAGING_PREFIX}{node}/{}",
            uuid::Uuid::new_v4().simple()
        ));
        let upload = rt
            .block_on(self.store.put_multipart(&path))
            .map_err(remote)?;
        Ok(Box::new(RemoteStaging {
            rt,
            store: self.store.clone(),
            path,
            writer: Some(WriteMultipart::new_with_chunk_size(upload, PART)),
            written: 0,
            uploads: self.uploads.clone(),
        }))
    }

    async fn read(&self, key: &str, range: Range<u64>) -> Result<ByteStream, BlobError> {
        check_key(key)?;
        if range.is_empty() {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let opts = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..Default::default()
        };
        let r = self
            .store
            .get_opts(&Self::blob_path(key), opts)
            .await
            .map_err(remote)?;
        Ok(Box::pin(r.into_stream().map_err(remote)))
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, BlobError> {
        check_key(key)?;
        match self.store.head(&Self::blob_path(key)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        check_key(key)?;
        match self.store.delete(&Self::blob_path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(remote(e)),
        }
    }

    async fn quarantine(&self, key: &str) -> Result<(), BlobError> {
        check_key(key)?;
        let dest = Path::from(format!("quarantine/{key}"));
        match self.store.rename(&Self::blob_path(key), &dest).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(remote(e)),
        }
    }

    async fn keys(&self) -> Result<Vec<String>, BlobError> {
        let prefix = Path::from("blobs");
        let mut out: Vec<String> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location.filename().unwrap_or_default().to_string())
            .try_collect()
            .await
            .map_err(remote)?;
        out.sort();
        Ok(out)
    }

    async fn clean_staging(&self, node: &str) -> Result<u64, BlobError> {
        check_node(node)?;
        let stale: Vec<Path> = self
            .staged_objects()
            .await?
            .into_iter()
            .filter(|p| staging_owner(p.as_ref()) == Some(node))
            .collect();
        for p in &stale {
            let _ = self.store.delete(p).await;
        }
        let mut n = stale.len() as u64;
        if let Some(uploads) = &self.uploads {
            // `staging/<node>/…`, and a name from before staging was per node: `staging/<node>`.
            for (key, id) in uploads.list(STAGING_PREFIX).await? {
                if staging_owner(&key) == Some(node) {
                    n += uploads.abort(&key, &id).await;
                }
            }
        }
        Ok(n)
    }

    async fn staging_nodes(&self) -> Result<Vec<String>, BlobError> {
        let mut out = std::collections::BTreeSet::new();
        for p in self.staged_objects().await? {
            out.extend(staging_owner(p.as_ref()).map(str::to_string));
        }
        for (key, _) in self.incomplete_uploads().await? {
            out.extend(staging_owner(&key).map(str::to_string));
        }
        Ok(out.into_iter().collect())
    }
}

/// The node a staging key (`staging/<node>/<uuid>`) belongs to; a key from before staging was
/// per node (`staging/<uuid>`) is a node of its own.
fn staging_owner(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(STAGING_PREFIX)?;
    Some(rest.split_once('/').map_or(rest, |(node, _)| node))
}

impl ObjectStoreBlobs {
    /// Every completed object under `staging/` (a commit that did not get to its rename).
    async fn staged_objects(&self) -> Result<Vec<Path>, BlobError> {
        let prefix = Path::from(STAGING_PREFIX.trim_end_matches('/'));
        self.store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(remote)
    }
}

/// The incomplete multipart uploads of one S3 bucket: listed with `ListMultipartUploads`
/// (which `object_store` does not offer; the request is signed with its own signer and sent
/// with its own HTTP client) and aborted with `object_store`'s `abort_multipart`.
#[derive(Debug, Clone)]
pub struct S3Uploads {
    s3: Arc<AmazonS3>,
    client: HttpClient,
    /// `<endpoint>/<bucket>` (path-style requests).
    bucket_url: String,
    region: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListMultipartUploadsResult {
    #[serde(default, rename = "Upload")]
    uploads: Vec<UploadEntry>,
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_key_marker: Option<String>,
    #[serde(default)]
    next_upload_id_marker: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UploadEntry {
    key: String,
    upload_id: String,
}

/// Percent-encodes a query value as S3 signs it (unreserved characters stay).
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl S3Uploads {
    /// For the bucket `bucket` at `endpoint` (path-style), reached as `store` is.
    pub fn new(
        store: Arc<AmazonS3>,
        endpoint: &str,
        bucket: &str,
        region: &str,
        allow_http: bool,
    ) -> Result<S3Uploads, BlobError> {
        let client = ReqwestConnector::default()
            .connect(&ClientOptions::new().with_allow_http(allow_http))
            .map_err(remote)?;
        Ok(S3Uploads {
            s3: store,
            client,
            bucket_url: format!("{}/{}", endpoint.trim_end_matches('/'), bucket),
            region: region.to_string(),
        })
    }

    /// Every incomplete multipart upload whose key starts with `prefix`: `(key, upload id)`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, String)>, BlobError> {
        let mut out = Vec::new();
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut url = format!("{}?uploads=&prefix={}", self.bucket_url, encode(prefix));
            if let Some((key, id)) = &marker {
                url.push_str(&format!(
                    "&key-marker={}&upload-id-marker={}",
                    encode(key),
                    encode(id)
                ));
            }
            let mut req = http::Request::builder()
                .method(http::Method::GET)
                .uri(&url)
                .body(HttpRequestBody::empty())
                .map_err(|e| BlobError::Remote(format!("list multipart uploads: {e}")))?;
            let cred = self
                .s3
                .credentials()
                .get_credential()
                .await
                .map_err(remote)?;
            AwsAuthorizer::new(&cred, "s3", &self.region).authorize(&mut req, None);
            let resp = self
                .client
                .execute(req)
                .await
                .map_err(|e| BlobError::Remote(format!("list multipart uploads: {e}")))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .bytes()
                .await
                .map_err(|e| BlobError::Remote(format!("list multipart uploads: {e}")))?;
            if !status.is_success() {
                return Err(BlobError::Remote(format!(
                    "list multipart uploads: {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(512)])
                )));
            }
            let page: ListMultipartUploadsResult = quick_xml::de::from_reader(body.as_ref())
                .map_err(|e| {
                    BlobError::Remote(format!("list multipart uploads: unreadable answer: {e}"))
                })?;
            out.extend(page.uploads.into_iter().map(|u| (u.key, u.upload_id)));
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(k), Some(u)) => marker = Some((k, u)),
                _ => return Ok(out),
            }
        }
    }

    /// Aborts every incomplete multipart upload under `prefix`; returns how many.
    pub async fn abort_all(&self, prefix: &str) -> Result<u64, BlobError> {
        let mut n = 0;
        for (key, id) in self.list(prefix).await? {
            n += self.abort(&key, &id).await;
        }
        Ok(n)
    }

    /// Aborts one multipart upload; 1 when it is gone, 0 when the store refused (logged).
    pub async fn abort(&self, key: &str, id: &str) -> u64 {
        match self
            .s3
            .abort_multipart(&Path::from(key), &id.to_string())
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => 1,
            Err(e) => {
                tracing::warn!(error = %e, %key, "cannot abort a multipart upload");
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn the_adapter_round_trips_through_an_object_store() {
        let s = Arc::new(ObjectStoreBlobs::new(
            "mem".into(),
            Arc::new(InMemory::new()),
        ));
        let data: Vec<u8> = (0..(PART * 2 + 12345)).map(|i| (i % 253) as u8).collect();
        let s2 = s.clone();
        let d2 = data.clone();
        tokio::task::spawn_blocking(move || {
            let mut st = s2.stage("nodea").unwrap();
            for c in d2.chunks(100_000) {
                st.write(c).unwrap();
            }
            st.commit("bafybeiremotetest").unwrap();
        })
        .await
        .unwrap();
        assert_eq!(
            s.size("bafybeiremotetest").await.unwrap(),
            Some(data.len() as u64)
        );
        let got: Vec<u8> = s
            .read("bafybeiremotetest", 10..(PART as u64 + 10))
            .await
            .unwrap()
            .map_ok(|b| b.to_vec())
            .try_concat()
            .await
            .unwrap();
        assert_eq!(got, &data[10..PART + 10]);
        assert_eq!(
            s.keys().await.unwrap(),
            vec!["bafybeiremotetest".to_string()]
        );
        // An abandoned staging area is aborted.
        let s3 = s.clone();
        tokio::task::spawn_blocking(move || {
            let mut st = s3.stage("nodea").unwrap();
            st.write(b"never committed").unwrap();
        })
        .await
        .unwrap();
        assert_eq!(s.clean_staging("nodea").await.unwrap(), 0);
        assert!(s.staging_nodes().await.unwrap().is_empty());
        s.delete("bafybeiremotetest").await.unwrap();
        assert_eq!(s.size("bafybeiremotetest").await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_staging_area_dropped_on_the_runtime_does_not_panic() {
        // The upload worker is a blocking thread, but a staged upload may be dropped anywhere
        // (a cancelled request drops it on the runtime): dropping never blocks.
        let s = Arc::new(ObjectStoreBlobs::new(
            "mem".into(),
            Arc::new(InMemory::new()),
        ));
        let s2 = s.clone();
        let st = tokio::task::spawn_blocking(move || {
            let mut st = s2.stage("nodea").unwrap();
            st.write(&vec![7u8; PART + 1]).unwrap();
            st
        })
        .await
        .unwrap();
        drop(st);
        assert!(s.keys().await.unwrap().is_empty());
    }

    #[test]
    fn staging_keys_name_their_node() {
        assert_eq!(staging_owner("staging/nodea/0123"), Some("nodea"));
        assert_eq!(staging_owner("staging/0123"), Some("0123"));
        assert_eq!(staging_owner("blobs/bafy"), None);
    }

    #[test]
    fn query_values_are_encoded_as_s3_signs_them() {
        assert_eq!(encode("staging/ab-c_d.e~"), "staging%2Fab-c_d.e~");
        assert_eq!(encode("a b+c"), "a%20b%2Bc");
    }
}
