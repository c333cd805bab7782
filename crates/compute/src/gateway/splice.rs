//! Zero-copy forwarding on Linux: socket → pipe → socket with `splice(2)`.
//!
//! Owns the pipes of one connection and the readiness dance with tokio: wait until the source is
//! readable, splice what is there into the pipe, then splice the pipe into the destination as it
//! becomes writable. The pipe is always drained before it is filled again, so `EAGAIN` on the
//! filling side always means "the socket has nothing" and never "the pipe is full".
//! It must never block a runtime thread: every call uses `SPLICE_F_NONBLOCK` on non-blocking
//! sockets. The system calls go through `rustix` (no `unsafe` here).

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::pipe::{fcntl_getpipe_size, fcntl_setpipe_size, pipe_with, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::{Counters, Direction};

/// Pipe capacity asked for (the kernel may keep its default of 64 KiB).
const PIPE_SIZE: usize = 1024 * 1024;

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        // Best effort: a larger pipe means fewer system calls per megabyte.
        let _ = fcntl_setpipe_size(&write, PIPE_SIZE);
        Ok(Pipe { read, write })
    }

    fn capacity(&self) -> usize {
        fcntl_getpipe_size(&self.write)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(64 * 1024)
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

fn splice(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    // Sockets and pipes have no offsets.
    Ok(rustix::pipe::splice(
        from,
        None,
        to,
        None,
        len,
        SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
    )?)
}

fn shutdown_write(s: &TcpStream) -> io::Result<()> {
    match rustix::net::shutdown(s, rustix::net::Shutdown::Write) {
        Ok(()) => Ok(()),
        // The peer may be gone already; the other direction will notice.
        Err(rustix::io::Errno::NOTCONN) => Ok(()),
        Err(e) => Err(e.into()),
    }
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
            match src.try_io(Interest::READABLE, || splice(src, &pipe.write, chunk)) {
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
            match dst.try_io(Interest::WRITABLE, || splice(&pipe.read, dst, left)) {
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
