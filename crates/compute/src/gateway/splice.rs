//! Zero-copy forwarding on Linux: socket → pipe → socket with `splice(2)`.
//!
//! Owns the pipes of one connection and the readiness dance with tokio: wait until the source is
//! readable, splice what is there into the pipe, then splice the pipe into the destination as it
//! becomes writable. The pipe is always drained before it is filled again, so `EAGAIN` on the
//! filling side always means "the socket has nothing" and never "the pipe is full".
//! It must never block a runtime thread: every call uses `SPLICE_F_NONBLOCK` on non-blocking
//! sockets.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::{Counters, Direction};

/// Pipe capacity asked for (the kernel may keep its default of 64 KiB).
const PIPE_SIZE: libc::c_int = 1024 * 1024;

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into the array we own.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let pipe = unsafe {
            Pipe {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        };
        // Best effort: a larger pipe means fewer system calls per megabyte.
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            libc::fcntl(pipe.write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
        }
        Ok(pipe)
    }

    fn capacity(&self) -> usize {
        // SAFETY: fcntl on a descriptor we own.
        let n = unsafe { libc::fcntl(self.write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        if n > 0 {
            n as usize
        } else {
            64 * 1024
        }
    }
}

/// The two pipes of a connection (one per direction).
pub(super) struct Pipes {
    inbound: Pipe,
    outbound: Pipe,
}

impl Pipes {
    pub(super) fn new() -> io::Result<Pipes> {
        Ok(Pipes {
            inbound: Pipe::new()?,
            outbound: Pipe::new()?,
        })
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: splice between descriptors we hold; null offsets (sockets and pipes have none).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn shutdown_write(s: &TcpStream) -> io::Result<()> {
    // SAFETY: shutdown on a socket we hold.
    let rc = unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_WR) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        // The peer may be gone already; the other direction will notice.
        if e.raw_os_error() != Some(libc::ENOTCONN) {
            return Err(e);
        }
    }
    Ok(())
}

async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    pipe: &Pipe,
    counters: &Counters,
    direction: Direction,
) -> io::Result<()> {
    let chunk = pipe.capacity();
    loop {
        let n = loop {
            src.readable().await?;
            match src.try_io(Interest::READABLE, || {
                splice(src.as_raw_fd(), pipe.write.as_raw_fd(), chunk)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return shutdown_write(dst);
        }
        let mut left = n;
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_raw_fd(), dst.as_raw_fd(), left)
            }) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        counters.add(direction, n);
    }
}

/// Forwards both directions until both have ended; an error in either ends both.
pub(super) async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    pipes: Pipes,
    counters: &Counters,
) -> io::Result<()> {
    tokio::try_join!(
        pump(client, upstream, &pipes.inbound, counters, Direction::In),
        pump(upstream, client, &pipes.outbound, counters, Direction::Out),
    )?;
    Ok(())
}
