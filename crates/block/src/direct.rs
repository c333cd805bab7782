//! A staging file written around the page cache (`O_DIRECT`), in the background.
//!
//! An upload's bytes are copied into aligned buffers; each full buffer goes to a writer thread that
//! writes it straight to the device while the next one fills and the importer hashes. Compared
//! with ordinary writes this saves the kernel's page-cache copy, its page allocation and the
//! write-back pass, which on a two-core machine is the difference between the disk and the CPU
//! being the limit. The file's last, partial block is written zero-padded and the file is then
//! truncated to its real length.
//!
//! Where the file system refuses `O_DIRECT` (at open, or on a write), the file is written through
//! the page cache instead (opened without the flag, or the flag cleared with `fcntl`), so callers
//! never see the difference.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use rustix::fs::OFlags;
use rustix::io::Errno;

/// Alignment of buffers, offsets and lengths: covers 512-byte and 4 KiB logical blocks.
const ALIGN: usize = 4096;
/// Size of one buffer; the writer thread holds at most `BUFFERS - 1` of them at a time.
const BUF_SIZE: usize = 4 << 20;
/// Buffers per file: one filling, the others queued or being written.
const BUFFERS: usize = 3;

/// A buffer whose bytes start at an address aligned to [`ALIGN`]: a heap allocation one
/// alignment larger than needed, used from its first aligned byte. The allocation never grows,
/// so the address stays put when the buffer moves between threads.
struct AlignedBuf {
    mem: Vec<u8>,
    /// Where the aligned window starts in `mem`.
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new() -> AlignedBuf {
        let mem = vec![0u8; BUF_SIZE + ALIGN];
        let start = mem.as_ptr().align_offset(ALIGN);
        assert!(start < ALIGN, "a byte pointer can always be aligned");
        AlignedBuf { mem, start, len: 0 }
    }

    fn space(&self) -> usize {
        BUF_SIZE - self.len
    }

    /// Appends as much of `data` as fits; returns how much that was.
    fn fill(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.space());
        let at = self.start + self.len;
        self.mem[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// Zero-fills up to the next multiple of [`ALIGN`] (BUF_SIZE is one, so it fits).
    fn pad(&mut self) {
        let padded = self.len.next_multiple_of(ALIGN);
        self.mem[self.start + self.len..self.start + padded].fill(0);
        self.len = padded;
    }

    fn as_slice(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }
}

/// Whether an error means "this file system does not do `O_DIRECT`".
fn refused(e: &io::Error) -> bool {
    e.raw_os_error() == Some(Errno::INVAL.raw_os_error())
        || e.raw_os_error() == Some(Errno::OPNOTSUPP.raw_os_error())
}

/// Clears `O_DIRECT` on `file`: its later writes go through the page cache.
fn clear_direct(file: &File) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    rustix::fs::fcntl_setfl(file, flags - OFlags::DIRECT)?;
    Ok(())
}

/// Writes all of `data` at `offset`; where `O_DIRECT` is refused, clears it and writes again.
fn write_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    match file.write_all_at(data, offset) {
        Err(e) if refused(&e) => {
            tracing::debug!("O_DIRECT refused; writing through the page cache");
            clear_direct(file)?;
            file.write_all_at(data, offset)
        }
        r => r,
    }
}

/// Writes a new file front to back, off the caller's thread.
pub(crate) struct DirectFile {
    file: Arc<File>,
    /// The buffer being filled.
    cur: Option<AlignedBuf>,
    /// Buffers allocated so far (at most [`BUFFERS`]).
    allocated: usize,
    /// Bytes handed to the writer.
    submitted: u64,
    to_writer: Option<SyncSender<(AlignedBuf, u64)>>,
    returned: Option<Receiver<AlignedBuf>>,
    writer: Option<JoinHandle<io::Result<()>>>,
}

impl DirectFile {
    /// Creates `path` (which must not exist).
    pub(crate) fn create(path: &Path) -> io::Result<DirectFile> {
        Self::create_with(path, OFlags::DIRECT)
    }

    /// Creates `path` with extra open flags (`O_DIRECT`, or none to take the fallback path).
    fn create_with(path: &Path, flags: OFlags) -> io::Result<DirectFile> {
        let file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(flags.bits() as i32)
            .open(path)
        {
            Err(e) if refused(&e) => OpenOptions::new().write(true).create_new(true).open(path)?,
            r => r?,
        };
        Ok(DirectFile {
            file: Arc::new(file),
            cur: None,
            allocated: 0,
            submitted: 0,
            to_writer: None,
            returned: None,
            writer: None,
        })
    }

    /// Appends `data`.
    pub(crate) fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut buf = match self.cur.take() {
                Some(b) => b,
                None => self.empty_buffer()?,
            };
            let n = buf.fill(data);
            data = &data[n..];
            if buf.space() == 0 {
                self.submit(buf)?;
            } else {
                self.cur = Some(buf);
            }
        }
        Ok(())
    }

    /// A buffer to fill: a returned one, a new one, or the next one the writer frees.
    fn empty_buffer(&mut self) -> io::Result<AlignedBuf> {
        if let Some(rx) = &self.returned {
            if let Ok(b) = rx.try_recv() {
                return Ok(b);
            }
        }
        if self.allocated < BUFFERS {
            self.allocated += 1;
            return Ok(AlignedBuf::new());
        }
        let rx = self
            .returned
            .as_ref()
            .expect("buffers are out, so a writer runs");
        match rx.recv() {
            Ok(mut b) => {
                b.len = 0;
                Ok(b)
            }
            Err(_) => Err(self.writer_error()),
        }
    }

    fn submit(&mut self, buf: AlignedBuf) -> io::Result<()> {
        if self.to_writer.is_none() {
            let (tx, rx) = sync_channel::<(AlignedBuf, u64)>(BUFFERS);
            let (back_tx, back_rx) = sync_channel::<AlignedBuf>(BUFFERS);
            let file = self.file.clone();
            let writer = std::thread::Builder::new()
                .name("stratus-staging".into())
                .spawn(move || -> io::Result<()> {
                    for (mut buf, offset) in rx {
                        write_at(&file, buf.as_slice(), offset)?;
                        buf.len = 0;
                        let _ = back_tx.send(buf);
                    }
                    Ok(())
                })?;
            self.to_writer = Some(tx);
            self.returned = Some(back_rx);
            self.writer = Some(writer);
        }
        let len = buf.len as u64;
        let offset = self.submitted;
        if self
            .to_writer
            .as_ref()
            .expect("started above")
            .send((buf, offset))
            .is_err()
        {
            return Err(self.writer_error());
        }
        self.submitted += len;
        Ok(())
    }

    /// Why the writer thread stopped early.
    fn writer_error(&mut self) -> io::Error {
        self.to_writer = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("staging writer panicked"),
            _ => io::Error::other("staging writer stopped"),
        }
    }

    /// Waits for the writer thread; its error, if any.
    fn join_writer(&mut self) -> io::Result<()> {
        self.to_writer = None;
        match self.writer.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(io::Error::other("staging writer panicked")),
        }
    }

    /// Writes what is left, sets the exact length and makes the file durable.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.join_writer()?;
        let mut end = self.submitted;
        if let Some(mut buf) = self.cur.take() {
            let len = buf.len as u64;
            if len > 0 {
                buf.pad();
                write_at(&self.file, buf.as_slice(), self.submitted)?;
                end += len;
                if buf.len as u64 != len {
                    self.file.set_len(end)?;
                }
            }
        }
        self.file.sync_all()
    }
}

impl Drop for DirectFile {
    fn drop(&mut self) {
        // Stop the writer before the caller removes the file.
        let _ = self.join_writer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i.wrapping_mul(31) % 251) as u8).collect()
    }

    #[test]
    fn sizes_around_every_boundary_round_trip() {
        round_trips(OFlags::DIRECT);
    }

    #[test]
    fn the_page_cache_fallback_round_trips_too() {
        round_trips(OFlags::empty());
    }

    fn round_trips(flags: OFlags) {
        let dir = tempfile::tempdir().unwrap();
        for (i, n) in [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            ALIGN + 1,
            BUF_SIZE - 1,
            BUF_SIZE,
            BUF_SIZE + 1,
            3 * BUF_SIZE + 5000,
            BUFFERS * BUF_SIZE * 2 + 1,
        ]
        .into_iter()
        .enumerate()
        {
            let data = pattern(n);
            let path = dir.path().join(format!("f{i}"));
            let mut f = DirectFile::create_with(&path, flags).unwrap();
            // Uneven pieces, as they come off a socket.
            for piece in data.chunks(65_531) {
                f.write(piece).unwrap();
            }
            f.finish().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), data, "{n} bytes");
        }
    }

    #[test]
    fn a_write_refused_direct_is_written_through_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(OFlags::DIRECT.bits() as i32)
            .open(&path)
            .unwrap();
        // Neither the length nor the offset is aligned: O_DIRECT refuses it (EINVAL).
        write_at(&file, b"hello", 3).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0\0hello");
    }

    #[test]
    fn an_existing_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, b"keep").unwrap();
        assert!(DirectFile::create(&path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
    }

    #[test]
    fn dropping_midway_stops_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        let mut f = DirectFile::create(&path).unwrap();
        f.write(&pattern(2 * BUF_SIZE + 10)).unwrap();
        drop(f);
        std::fs::remove_file(&path).unwrap();
    }
}
