//! A directory of blobs: `<root>/<last two characters of the name>/<name>`.
//!
//! Writes go to `<root>/.staging/<uuid>`; commit is `fsync` of the file, `rename` into place and
//! `fsync` of the directory, so a blob either exists whole and durable or not at all. Reads run
//! on a blocking thread with large buffers and hand the bytes over through a small channel, so a
//! download holds at most a few megabytes whatever the file size.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use crate::{check_key, BlobError, BlobStore, ByteStream, Staging};

/// Read buffer size for downloads.
const READ_CHUNK: usize = 1 << 20;
/// Write buffer of a staging file: uploads arrive in small pieces, the disk wants big writes.
const WRITE_BUFFER: usize = 4 << 20;

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

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

struct LocalStaging {
    file: Option<BufWriter<File>>,
    path: PathBuf,
    written: u64,
    target: PathBuf,
}

impl LocalStaging {
    fn file(&mut self) -> &mut BufWriter<File> {
        self.file
            .as_mut()
            .expect("staging file is open until commit")
    }
}

impl Staging for LocalStaging {
    fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        self.file().write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn commit(mut self: Box<Self>, key: &str) -> Result<(), BlobError> {
        check_key(key)?;
        let file = self.file.take().expect("open");
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
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

    fn stage(&self) -> Result<Box<dyn Staging>, BlobError> {
        let path = self.staging.join(uuid::Uuid::new_v4().simple().to_string());
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Box::new(LocalStaging {
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            path,
            written: 0,
            target: self.root.clone(),
        }))
    }

    async fn read(&self, key: &str, range: Range<u64>) -> Result<ByteStream, BlobError> {
        check_key(key)?;
        let path = self.path_of(key);
        let key = key.to_string();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, BlobError>>(4);
        let mut file = match tokio::task::spawn_blocking(move || File::open(&path))
            .await
            .map_err(|e| BlobError::Io(std::io::Error::other(e)))?
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(key))
            }
            Err(e) => return Err(e.into()),
        };
        tokio::task::spawn_blocking(move || {
            let mut pos = range.start;
            if let Err(e) = file.seek(SeekFrom::Start(pos)) {
                let _ = tx.blocking_send(Err(e.into()));
                return;
            }
            while pos < range.end {
                let want = ((range.end - pos) as usize).min(READ_CHUNK);
                let mut buf = BytesMut::zeroed(want);
                let mut filled = 0;
                while filled < want {
                    match file.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e.into()));
                            return;
                        }
                    }
                }
                if filled < want {
                    // The file is shorter than the metadata says: never truncate silently.
                    let _ = tx.blocking_send(Err(BlobError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("blob ended at byte {}", pos + filled as u64),
                    ))));
                    return;
                }
                buf.truncate(filled);
                pos += filled as u64;
                if tx.blocking_send(Ok(buf.freeze())).is_err() {
                    return; // the reader went away
                }
            }
        });
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })))
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

    async fn clean_staging(&self) -> Result<u64, BlobError> {
        let dir = self.staging.clone();
        tokio::task::spawn_blocking(move || {
            let mut n = 0;
            for e in fs::read_dir(&dir)? {
                fs::remove_file(e?.path())?;
                n += 1;
            }
            Ok(n)
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
        let mut st = s.stage().unwrap();
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
            let mut st = s.stage().unwrap();
            st.write(b"partial").unwrap();
        }
        assert_eq!(std::fs::read_dir(s.staging_dir()).unwrap().count(), 0);
        // A crash leaves a file behind: clean_staging removes it.
        std::fs::write(s.staging_dir().join("leftover"), b"x").unwrap();
        assert_eq!(s.clean_staging().await.unwrap(), 1);
        assert!(s.keys().await.unwrap().is_empty());
    }

    #[test]
    fn keys_are_checked() {
        for bad in ["../etc/passwd", "a/b", "short", ""] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }
}
