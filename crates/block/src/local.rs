//! A directory of blobs: `<root>/<last two characters of the name>/<name>`.
//!
//! Writes go to `<root>/.staging/<uuid>`; commit is `fsync` of the file, `rename` into place and
//! `fsync` of the directory, so a blob either exists whole and durable or not at all. While an
//! upload streams in, its bytes go to the device around the page cache from a writer thread of
//! their own (see [`crate::direct`]), so the disk works while the bytes are still being hashed and
//! the final `fsync` finds little left to do.
//!
//! Reads are positioned reads (`pread`) of [`READ_CHUNK`] bytes into fresh buffers on the
//! blocking pool, one chunk read ahead of the socket. Each read must return every byte asked
//! for: a blob that was truncated or became unreadable after its commit fails that download
//! with an error (the response is cut short, never padded or wrong), and nothing else. (Blobs
//! were once served from `mmap`: a truncated file then raised SIGBUS and killed the server.)

use std::fs::{self, File};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use crate::direct::DirectFile;
use crate::{check_key, check_node, BlobError, BlobStore, ByteStream, Staging};

/// Size of the pieces a download is read in.
const READ_CHUNK: usize = 1 << 20;
/// Pieces read ahead of the one being sent.
const READ_AHEAD: usize = 1;

/// The error for a blob shorter than a read needs.
fn short(len: u64, range: &Range<u64>) -> BlobError {
    BlobError::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("blob has {len} bytes, {}..{} asked", range.start, range.end),
    ))
}

/// Reads exactly `range` of `file` (blocking). A file that ends early is an error.
fn read_exact_at(file: &File, range: Range<u64>) -> Result<Bytes, BlobError> {
    let want = (range.end - range.start) as usize;
    let mut buf = Vec::with_capacity(want);
    while buf.len() < want {
        let at = range.start + buf.len() as u64;
        let spare = rustix::buffer::spare_capacity(&mut buf);
        match rustix::io::pread(file, spare, at) {
            Ok(0) => {
                let len = file.metadata().map(|m| m.len()).unwrap_or(at);
                return Err(short(len, &range));
            }
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(BlobError::Io(e.into())),
        }
    }
    // The allocation may hold more than asked, and a read may fill it.
    buf.truncate(want);
    Ok(Bytes::from(buf))
}

/// Blobs in a local directory.
#[derive(Debug)]
pub struct LocalBlobs {
    id: String,
    root: PathBuf,
    staging: PathBuf,
    quarantine: PathBuf,
}

impl LocalBlobs {
    /// Opens (creating) the directory.
    pub fn open(root: &Path) -> Result<LocalBlobs, BlobError> {
        let staging = root.join(".staging");
        let quarantine = root.join(".quarantine");
        fs::create_dir_all(&staging)?;
        fs::create_dir_all(&quarantine)?;
        let root = root.canonicalize()?;
        Ok(LocalBlobs {
            id: format!("local:{}", root.display()),
            staging: root.join(".staging"),
            quarantine: root.join(".quarantine"),
            root,
        })
    }

    /// Where blob `key` lives.
    pub fn path_of(&self, key: &str) -> PathBuf {
        let shard = &key[key.len().saturating_sub(2)..];
        self.root.join(shard).join(key)
    }

    /// The staging directory (tests look at it).
    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }
}

/// The node a staging file (`<node>.<uuid>`) belongs to; a name from before staging was per
/// node (`<uuid>`) is a node of its own.
fn staging_owner(name: &str) -> &str {
    name.split_once('.').map_or(name, |(node, _)| node)
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

struct LocalStaging {
    file: Option<DirectFile>,
    path: PathBuf,
    written: u64,
    target: PathBuf,
}

impl Staging for LocalStaging {
    fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        self.file
            .as_mut()
            .expect("staging file is open until commit")
            .write(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn commit(mut self: Box<Self>, key: &str) -> Result<(), BlobError> {
        check_key(key)?;
        self.file.take().expect("open").finish()?;
        let dest = self.target.join(&key[key.len() - 2..]);
        fs::create_dir_all(&dest)?;
        let dest_file = dest.join(key);
        if dest_file.exists() {
            // Same name, same content: keep the copy that is already durable.
            let _ = fs::remove_file(&self.path);
        } else {
            fs::rename(&self.path, &dest_file)?;
            fsync_dir(&dest)?;
        }
        // Nothing left to clean up on drop.
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for LocalStaging {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            self.file.take();
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for LocalBlobs {
    fn id(&self) -> &str {
        &self.id
    }

    fn stage(&self, node: &str) -> Result<Box<dyn Staging>, BlobError> {
        check_node(node)?;
        let path = self
            .staging
            .join(format!("{node}.{}", uuid::Uuid::new_v4().simple()));
        let file = DirectFile::create(&path)?;
        Ok(Box::new(LocalStaging {
            file: Some(file),
            path,
            written: 0,
            target: self.root.clone(),
        }))
    }

    async fn read(&self, key: &str, range: Range<u64>) -> Result<ByteStream, BlobError> {
        check_key(key)?;
        let path = self.path_of(key);
        let key = key.to_string();
        let (file, len) = tokio::task::spawn_blocking(move || -> Result<(File, u64), BlobError> {
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(BlobError::NotFound(key))
                }
                Err(e) => return Err(e.into()),
            };
            let len = file.metadata()?.len();
            Ok((file, len))
        })
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))??;
        if range.end > len || range.start > range.end {
            // The file is shorter than the metadata says: never truncate silently.
            return Err(short(len, &range));
        }
        let file = Arc::new(file);
        let chunks = (range.start..range.end)
            .step_by(READ_CHUNK)
            .map(move |at| at..(at + READ_CHUNK as u64).min(range.end));
        let reads = futures::stream::iter(chunks).map(move |chunk| {
            let file = file.clone();
            async move {
                tokio::task::spawn_blocking(move || read_exact_at(&file, chunk))
                    .await
                    .map_err(|e| BlobError::Io(std::io::Error::other(e)))?
            }
        });
        Ok(Box::pin(reads.buffered(READ_AHEAD + 1)))
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, BlobError> {
        check_key(key)?;
        match tokio::fs::metadata(self.path_of(key)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        check_key(key)?;
        let path = self.path_of(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {
                let dir = path.parent().expect("sharded").to_path_buf();
                tokio::task::spawn_blocking(move || fsync_dir(&dir))
                    .await
                    .map_err(|e| BlobError::Io(std::io::Error::other(e)))??;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn quarantine(&self, key: &str) -> Result<(), BlobError> {
        check_key(key)?;
        let dest = self.quarantine.join(format!(
            "{key}.{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
        ));
        match tokio::fs::rename(self.path_of(key), &dest).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn keys(&self) -> Result<Vec<String>, BlobError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for shard in fs::read_dir(&root)? {
                let shard = shard?;
                let name = shard.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') || !shard.file_type()?.is_dir() {
                    continue;
                }
                for f in fs::read_dir(shard.path())? {
                    out.push(f?.file_name().to_string_lossy().into_owned());
                }
            }
            out.sort();
            Ok(out)
        })
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))?
    }

    async fn clean_staging(&self, node: &str) -> Result<u64, BlobError> {
        check_node(node)?;
        let dir = self.staging.clone();
        let node = node.to_string();
        tokio::task::spawn_blocking(move || {
            let mut n = 0;
            for e in fs::read_dir(&dir)? {
                let e = e?;
                if staging_owner(&e.file_name().to_string_lossy()) == node {
                    fs::remove_file(e.path())?;
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))?
    }

    async fn staging_nodes(&self) -> Result<Vec<String>, BlobError> {
        let dir = self.staging.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = std::collections::BTreeSet::new();
            for e in fs::read_dir(&dir)? {
                out.insert(staging_owner(&e?.file_name().to_string_lossy()).to_string());
            }
            Ok(out.into_iter().collect())
        })
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))?
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    async fn read_all(s: &LocalBlobs, key: &str, r: Range<u64>) -> Result<Vec<u8>, BlobError> {
        let mut st = s.read(key, r).await?;
        let mut out = Vec::new();
        while let Some(c) = st.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn stage_commit_read_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalBlobs::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let key = "bafkreiexamplekey01";
        let mut st = s.stage("nodea").unwrap();
        st.write(&data[..1000]).unwrap();
        st.write(&data[1000..]).unwrap();
        assert_eq!(st.written(), data.len() as u64);
        assert_eq!(std::fs::read_dir(s.staging_dir()).unwrap().count(), 1);
        st.commit(key).unwrap();
        assert_eq!(std::fs::read_dir(s.staging_dir()).unwrap().count(), 0);
        assert_eq!(s.size(key).await.unwrap(), Some(data.len() as u64));
        assert_eq!(read_all(&s, key, 0..data.len() as u64).await.unwrap(), data);
        assert_eq!(
            read_all(&s, key, 5..1_500_000).await.unwrap(),
            &data[5..1_500_000]
        );
        // Reading past the end is an error, never a short answer.
        assert!(read_all(&s, key, 0..data.len() as u64 + 1).await.is_err());
        assert_eq!(s.keys().await.unwrap(), vec![key.to_string()]);
        s.delete(key).await.unwrap();
        assert_eq!(s.size(key).await.unwrap(), None);
        assert!(matches!(
            s.read(key, 0..1).await.err().unwrap(),
            BlobError::NotFound(_)
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn dropped_staging_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalBlobs::open(dir.path()).unwrap();
        {
            let mut st = s.stage("nodea").unwrap();
            st.write(b"partial").unwrap();
        }
        assert_eq!(std::fs::read_dir(s.staging_dir()).unwrap().count(), 0);
        // A crash leaves files behind: clean_staging removes the node's own only.
        std::fs::write(s.staging_dir().join("nodea.leftover"), b"x").unwrap();
        std::fs::write(s.staging_dir().join("nodeb.inflight"), b"x").unwrap();
        std::fs::write(s.staging_dir().join("legacy"), b"x").unwrap();
        assert_eq!(
            s.staging_nodes().await.unwrap(),
            vec!["legacy".to_string(), "nodea".into(), "nodeb".into()]
        );
        assert_eq!(s.clean_staging("nodea").await.unwrap(), 1);
        assert_eq!(
            s.staging_nodes().await.unwrap(),
            vec!["legacy".to_string(), "nodeb".into()]
        );
        assert_eq!(s.clean_staging("legacy").await.unwrap(), 1);
        assert_eq!(s.staging_nodes().await.unwrap(), vec!["nodeb".to_string()]);
        assert!(s.clean_staging("../x").await.is_err());
        assert!(s.keys().await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_blob_truncated_during_a_read_fails_the_read_with_a_true_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalBlobs::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..8 * READ_CHUNK as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        let key = "bafkreitruncatedkey";
        let mut st = s.stage("nodea").unwrap();
        st.write(&data).unwrap();
        st.commit(key).unwrap();
        let mut stream = s.read(key, 0..data.len() as u64).await.unwrap();
        let mut got = stream.next().await.unwrap().unwrap().to_vec();
        std::fs::OpenOptions::new()
            .write(true)
            .open(s.path_of(key))
            .unwrap()
            .set_len(1000)
            .unwrap();
        let mut failed = false;
        while let Some(piece) = stream.next().await {
            match piece {
                Ok(b) => got.extend_from_slice(&b),
                Err(e) => {
                    assert!(e.to_string().contains("bytes"), "{e}");
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "a truncated blob must fail the read");
        assert!(got.len() < data.len());
        assert_eq!(got, &data[..got.len()], "what was sent is a true prefix");
        // Reading it again fails before any byte.
        assert!(s.read(key, 0..data.len() as u64).await.is_err());
    }

    #[test]
    fn keys_are_checked() {
        for bad in ["../etc/passwd", "a/b", "short", ""] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }
}
