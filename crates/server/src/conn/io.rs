//! The socket of one HTTP connection, as hyper sees it.
//!
//! Tells the connection's [`ConnState`] when bytes arrive (the start of a request header) and
//! when a write has to wait for a client that does not read, and closes gracefully: when hyper
//! shuts the connection down, the write side is closed first and whatever the client still sends
//! is read and discarded for up to the linger time, so that a client still sending a body it was
//! refused reads the answer instead of a connection reset (RFC 9112 §9.6).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::registry::ConnState;

/// Most bytes discarded while lingering.
const LINGER_MAX_BYTES: u64 = 64 << 20;

enum Closing {
    Open,
    /// The write side is closed; reading until end of stream, the deadline or the byte bound.
    Lingering {
        deadline: Pin<Box<Sleep>>,
        left: u64,
    },
    Closed,
}

/// A TCP stream that reports its activity to the connection's state.
pub(crate) struct TrackedIo {
    stream: TcpStream,
    state: Arc<ConnState>,
    linger: Duration,
    closing: Closing,
}

impl TrackedIo {
    pub(crate) fn new(stream: TcpStream, state: Arc<ConnState>, linger: Duration) -> Self {
        TrackedIo {
            stream,
            state,
            linger,
            closing: Closing::Open,
        }
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_read();
        }
        r
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.state.on_write(r.is_pending());
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.state.on_write(r.is_pending());
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match &mut self.closing {
                Closing::Closed => return Poll::Ready(Ok(())),
                Closing::Open => {
                    // Everything written so far goes out before the FIN.
                    if Pin::new(&mut self.stream).poll_shutdown(cx)?.is_pending() {
                        return Poll::Pending;
                    }
                    self.closing = if self.linger.is_zero() {
                        Closing::Closed
                    } else {
                        Closing::Lingering {
                            deadline: Box::pin(tokio::time::sleep(self.linger)),
                            left: LINGER_MAX_BYTES,
                        }
                    };
                }
                Closing::Lingering { deadline, left } => {
                    if deadline.as_mut().poll(cx).is_ready() {
                        self.closing = Closing::Closed;
                        continue;
                    }
                    let mut scratch = [0u8; 8192];
                    let mut buf = ReadBuf::new(&mut scratch);
                    let left = *left;
                    match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                            let n = buf.filled().len() as u64;
                            if n >= left {
                                self.closing = Closing::Closed;
                            } else if let Closing::Lingering { left, .. } = &mut self.closing {
                                *left -= n;
                            }
                        }
                        // End of stream or an error: the client is gone.
                        Poll::Ready(_) => self.closing = Closing::Closed,
                    }
                }
            }
        }
    }
}
