//! Blobs in any `object_store` (S3-compatible stores: Garage, MinIO, AWS S3).
//!
//! Staging is a multipart upload to `staging/<uuid>` fed in parts of at least 8 MiB (S3's minimum
//! is 5 MiB); commit completes it and renames it to `blobs/<name>` (copy + delete where the store
//! has no rename). An upload that is dropped is aborted. A multipart upload is durable once the
//! store acknowledges completion, which is what commit waits for.

use std::ops::Range;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, MultipartUpload, ObjectStore, PutPayload};
use tokio::runtime::Handle;

use crate::{check_key, BlobError, BlobStore, ByteStream, Staging};

const PART: usize = 8 << 20;

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
}

impl ObjectStoreBlobs {
    pub fn new(id: String, store: Arc<dyn ObjectStore>) -> Self {
        ObjectStoreBlobs { id, store }
    }

    fn blob_path(key: &str) -> Path {
        Path::from(format!("blobs/{key}"))
    }
}

struct RemoteStaging {
    rt: Handle,
    store: Arc<dyn ObjectStore>,
    path: Path,
    upload: Option<Box<dyn MultipartUpload>>,
    buf: Vec<u8>,
    written: u64,
}

impl RemoteStaging {
    fn flush_part(&mut self) -> Result<(), BlobError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let payload = PutPayload::from(std::mem::replace(&mut self.buf, Vec::with_capacity(PART)));
        let upload = self.upload.as_mut().expect("open until commit");
        let fut = upload.put_part(payload);
        self.rt.block_on(fut).map_err(remote)
    }
}

impl Staging for RemoteStaging {
    fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        self.buf.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.buf.len() >= PART {
            self.flush_part()?;
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn commit(mut self: Box<Self>, key: &str) -> Result<(), BlobError> {
        check_key(key)?;
        self.flush_part()?;
        let mut upload = self.upload.take().expect("open until commit");
        self.rt.block_on(upload.complete()).map_err(remote)?;
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
        if let Some(mut up) = self.upload.take() {
            let _ = self.rt.block_on(up.abort());
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for ObjectStoreBlobs {
    fn id(&self) -> &str {
        &self.id
    }

    fn stage(&self) -> Result<Box<dyn Staging>, BlobError> {
        let rt = Handle::current();
        let path = Path::from(format!("staging/{}", uuid::Uuid::new_v4().simple()));
        let upload = rt
            .block_on(self.store.put_multipart(&path))
            .map_err(remote)?;
        Ok(Box::new(RemoteStaging {
            rt,
            store: self.store.clone(),
            path,
            upload: Some(upload),
            buf: Vec::with_capacity(PART),
            written: 0,
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

    async fn clean_staging(&self) -> Result<u64, BlobError> {
        let prefix = Path::from("staging");
        let stale: Vec<Path> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(remote)?;
        for p in &stale {
            let _ = self.store.delete(p).await;
        }
        Ok(stale.len() as u64)
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
            let mut st = s2.stage().unwrap();
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
            let mut st = s3.stage().unwrap();
            st.write(b"never committed").unwrap();
        })
        .await
        .unwrap();
        assert_eq!(s.clean_staging().await.unwrap(), 0);
        s.delete("bafybeiremotetest").await.unwrap();
        assert_eq!(s.size("bafybeiremotetest").await.unwrap(), None);
    }
}
