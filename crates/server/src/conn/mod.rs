//! Connections: accepting, admitting, timing out and closing them.
//!
//! Owns the accept loop of a listener and the life of each HTTP connection on it (HTTP/1.1, and
//! HTTP/2 with prior knowledge), so that slow or idle clients cannot hold the server's
//! descriptors:
//! - a connection must send a request's whole header within the header timeout, counted from
//!   its first byte (from the accept for a new connection), or it is dropped;
//! - a keep-alive connection idle for the idle timeout is closed;
//! - a request body that goes the body timeout without a byte fails the request;
//! - a response that the client stops reading for the send timeout drops the connection;
//! - the connection cap and the fair share per client address are kept by the
//!   [`registry`], which makes idle and half-sent connections give way, oldest first;
//! - when the process runs out of descriptors, an idle connection gives way and accepting goes on;
//! - a response to a request whose body was left unread says `Connection: close`, and closing
//!   lingers (see [`io`]).
//!
//! It never looks inside a request: routing and errors belong to the router it is given.

mod body;
mod io;
pub(crate) mod registry;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use http::{header, HeaderValue, Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use stratus_config::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use body::{GuardedBody, RequestGuard, TimedBody};
use io::TrackedIo;
use registry::{ConnState, Overdue, Registry, Timeouts};

/// Connections at most when neither the configuration nor the descriptor limit says less.
const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// The settings of one listener, resolved against the descriptor limit.
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) timeouts: Timeouts,
    pub(crate) body_timeout: Duration,
    pub(crate) linger: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_per_ip: usize,
    pub(crate) grace: Duration,
}

impl Settings {
    /// The configured limits, with the connection cap lowered to what the process's descriptor
    /// limit allows: half of the descriptors not yet open, so that the database, blobs, the
    /// gateway and the engine always have room.
    pub fn from_config(cfg: &ServerConfig) -> Settings {
        let budget = descriptor_budget();
        let wanted = match cfg.max_connections {
            0 => DEFAULT_MAX_CONNECTIONS,
            n => n,
        };
        let max_connections = wanted.min(budget).max(1);
        if cfg.max_connections > max_connections {
            tracing::warn!(
                configured = cfg.max_connections,
                allowed = max_connections,
                "server.max_connections is more than the descriptor limit allows; lowered"
            );
        }
        let secs = |s: u64| Duration::from_secs(s.max(1));
        Settings {
            timeouts: Timeouts {
                header: secs(cfg.header_read_timeout_secs),
                idle: secs(cfg.idle_timeout_secs),
                send: secs(cfg.body_read_timeout_secs.max(cfg.idle_timeout_secs)),
            },
            body_timeout: secs(cfg.body_read_timeout_secs),
            linger: Duration::from_secs(cfg.linger_secs),
            max_connections,
            max_per_ip: cfg.max_connections_per_ip.max(1),
            grace: Duration::from_secs(cfg.shutdown_grace_secs),
        }
    }
}

/// Half of the descriptors the process may still open (after raising its soft limit to the hard
/// one), at least 4.
fn descriptor_budget() -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        let raised = rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            lim = getrlimit(Resource::Nofile);
        }
    }
    let limit = lim.current.unwrap_or(u64::MAX).min(1 << 24) as usize;
    let open = std::fs::read_dir("/proc/self/fd").map_or(16, |d| d.count());
    (limit.saturating_sub(open) / 2).max(4)
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets requests
/// in flight finish for the grace period and closes every connection.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let settings = Arc::new(settings);
    let registry = Arc::new(Registry::new(
        settings.max_connections,
        settings.max_per_ip,
        settings.timeouts,
    ));
    tracing::info!(
        max_connections = registry.max_total(),
        per_address = settings.max_per_ip,
        "accepting connections"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match registry.admit(peer.ip()) {
                    Ok(state) => {
                        metrics::gauge!("stratus_http_connections").set(registry.open() as f64);
                        tasks.spawn(connection(
                            stream,
                            peer,
                            state,
                            registry.clone(),
                            router.clone(),
                            settings.clone(),
                            stop_rx.clone(),
                        ));
                    }
                    Err(why) => refuse(stream, why),
                },
                Err(e) => accept_failed(&e, &registry).await,
            },
        }
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop_tx.send(true);
    registry.shed_all();
    let drained = tokio::time::timeout(settings.grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = registry.open(),
            "requests still running after the shutdown grace period; closing them"
        );
        tasks.shutdown().await;
    }
    Ok(())
}

/// A connection that could not be admitted: a short 503 if the socket takes it, then close.
fn refuse(stream: TcpStream, why: registry::Refused) {
    metrics::counter!("stratus_http_connections_refused_total", "why" => match why {
        registry::Refused::AddressFull => "address_full",
        registry::Refused::ServerFull => "server_full",
    })
    .increment(1);
    let _ = stream.try_write(
        b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n\
          Content-Length: 0\r\n\r\n",
    );
}

/// An accept error: out of descriptors makes an idle connection give way; anything else is
/// retried after a short pause (never a busy loop, never the end of the server).
async fn accept_failed(e: &std::io::Error, registry: &Registry) {
    use rustix::io::Errno;
    let out_of_descriptors = e.raw_os_error().is_some_and(|code| {
        [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM]
            .iter()
            .any(|errno| errno.raw_os_error() == code)
    });
    if out_of_descriptors {
        let shed = registry.shed_any();
        tracing::warn!(error = %e, shed, "out of descriptors while accepting");
        metrics::counter!("stratus_http_accept_errors_total", "why" => "descriptors").increment(1);
        tokio::time::sleep(Duration::from_millis(10)).await;
    } else {
        tracing::debug!(error = %e, "accept failed");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Serves one connection until it ends, times out, gives way or the server stops.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<ConnState>,
    registry: Arc<Registry>,
    router: Router,
    settings: Arc<Settings>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(TrackedIo::new(stream, state.clone(), settings.linger));
    let service = {
        let state = state.clone();
        let body_timeout = settings.body_timeout;
        hyper::service::service_fn(move |req: Request<Incoming>| {
            handle(router.clone(), peer, state.clone(), body_timeout, req)
        })
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let timer = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(timer);
    // What the timer is armed for. It is moved only to a sooner time: one that fires early finds
    // the deadline moved on and is armed again (see `ConnState::wake_if_sooner`).
    let mut armed: Option<Instant> = None;
    // Set once the connection was asked to close gracefully: past it, it is dropped.
    let mut closing_by: Option<Instant> = None;
    macro_rules! close_gracefully {
        () => {
            if closing_by.is_none() {
                conn.as_mut().graceful_shutdown();
                closing_by = Some(Instant::now() + settings.linger + Duration::from_secs(1));
            }
        };
    }
    loop {
        let wake_at = |closing_by: Option<Instant>| match (state.deadline(), closing_by) {
            (Some((at, _)), Some(by)) => Some(at.min(by)),
            (Some((at, _)), None) => Some(at),
            (None, by) => by,
        };
        if let Some(at) = wake_at(closing_by) {
            if armed.is_none_or(|a| at < a) {
                timer.as_mut().reset(at);
                armed = Some(at);
                state.armed(armed);
                // A phase change between reading the deadline and publishing `armed` did not
                // wake the task: look again.
                if wake_at(closing_by).is_some_and(|again| again < at) {
                    continue;
                }
            }
        }
        tokio::select! {
            // The connection first, and no random choice of branch per wake-up: it is the branch
            // that is ready at almost every poll.
            biased;
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = state.wake.notified() => {
                if state.shed_requested() && !state.busy() {
                    close_gracefully!();
                }
            }
            _ = &mut timer, if armed.is_some() => {
                armed = None;
                state.armed(None);
                let now = Instant::now();
                if closing_by.is_some_and(|by| by <= now) {
                    break;
                }
                match state.deadline() {
                    Some((at, Overdue::Stalled)) if at <= now => {
                        metrics::counter!("stratus_http_connections_timed_out_total").increment(1);
                        break;
                    }
                    Some((at, Overdue::Idle)) if at <= now => {
                        close_gracefully!();
                    }
                    _ => {}
                }
            }
            _ = stop.changed(), if closing_by.is_none() => {
                close_gracefully!();
            }
        }
    }
    registry.release(&state);
    metrics::gauge!("stratus_http_connections").set(registry.open() as f64);
}

/// One request: marks the connection busy, gives the router the client address and a timed
/// body, and closes the connection after a response that left the request body unread.
async fn handle(
    router: Router,
    peer: SocketAddr,
    state: Arc<ConnState>,
    body_timeout: Duration,
    req: Request<Incoming>,
) -> Result<Response<GuardedBody>, Infallible> {
    state.begin_request();
    let guard = RequestGuard(state);
    let http1 = req.version() <= Version::HTTP_11;
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    let (body, finished) = TimedBody::new(body, body_timeout);
    parts
        .extensions
        .insert(stratus_api_request::BodyEnd::new(finished.clone()));
    let req = Request::from_parts(parts, Body::new(body));
    let resp = crate::with_request_id(router, req).await;
    let (mut parts, body) = resp.into_parts();
    if http1 && !finished.load(Ordering::Acquire) {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(Response::from_parts(parts, GuardedBody::new(body, guard)))
}
