//! The stratus HTTP server.
//!
//! Mounts the three dialects on one listener (ComputeShare under `/api`, TwoCloud under
//! `/twocloud`, MEMO at the root), adds `GET /healthz` and Prometheus `GET /metrics` (for the
//! operator only: it asks for the operator token, or is served on a separate operator listener),
//! records per-route request metrics, turns panics into 500s, holds connections to the limits of
//! [`conn`], and shuts down gracefully: on SIGINT or SIGTERM it stops accepting, lets requests in
//! flight finish, stops background tasks and closes the database.
//!
//! No answer carries an internal cause (a panic's message, a database error): each says so in
//! generic words with a request id, logged with the cause and sent as `X-Request-Id`.

pub mod conn;
mod metrics_layer;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{header, HeaderValue, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use stratus_api_request::request_id;
use stratus_app::App;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global metrics recorder (once per process) and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ])
                .expect("bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests embedding several servers).
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The whole HTTP surface of stratus.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_with_token))
        .nest("/api", stratus_api_computeshare::router())
        .nest("/twocloud", stratus_api_twocloud::router())
        .merge(stratus_api_memo::router())
        .fallback(fallback)
        .layer(axum::middleware::from_fn(metrics_layer::record))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(app)
}

/// Runs one request through `router` with a request id slot; an answer that hid an error (the
/// slot was used) carries the id in `X-Request-Id`. The connection layer calls it for every
/// request of every listener (in place of a middleware layer: measured, one `from_fn` layer less
/// is 1-2 % of `GET /getnonce`).
pub(crate) async fn with_request_id<B>(router: Router, req: http::Request<B>) -> Response
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let slot = request_id::Slot::default();
    let mut resp = match request_id::scope(&slot, tower::ServiceExt::oneshot(router, req)).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if let Some(v) = slot.get().and_then(|id| HeaderValue::from_str(id).ok()) {
        resp.headers_mut().insert(request_id::HEADER, v);
    }
    resp
}

/// What the operator listener serves: `/metrics` and `/healthz`, without a token.
pub fn operator_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(app)
}

/// `GET /metrics` on the public listener: only with `Authorization: Bearer <operator token>`.
async fn metrics_with_token(State(app): State<Arc<App>>, headers: http::HeaderMap) -> Response {
    use subtle::ConstantTimeEq;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or("");
    let expected = app.operator_token.as_bytes();
    if presented.is_empty() || !bool::from(presented.as_bytes().ct_eq(expected)) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"stratus operator\"")],
            axum::Json(serde_json::json!({
                "code": 401,
                "message": "metrics are for the operator: send Authorization: Bearer <operator token> \
                            (see <data_dir>/secrets/operator.token) or use the operator listener"
            })),
        )
            .into_response();
    }
    metrics_text(State(app)).await
}

/// The Prometheus text of every metric, the gateway's per-mapping series included.
async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    let mut text = metrics_handle().render();
    app.compute.gateway().render_metrics(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    match sqlx_ping(&app).await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok"})),
        )
            .into_response(),
        Err(e) => {
            let id = request_id::report_unavailable("the database is unavailable", &e);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({
                    "status": "unavailable",
                    "error": format!("the database is unavailable (request id {id})"),
                    "requestId": id,
                })),
            )
                .into_response()
        }
    }
}

async fn sqlx_ping(app: &App) -> stratus_model::Result<()> {
    app.auth.accounts().count().await.map(|_| ())
}

async fn fallback(req: Request) -> Response {
    stratus_api_memo::not_found_response(req.uri().path()).await
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    let id = request_id::report_internal(&format_args!("a request handler panicked: {what}"));
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(serde_json::json!({
            "code": 500,
            "message": format!("internal error (request id {id})"),
            "requestId": id,
        })),
    )
        .into_response()
}

/// A future that resolves when SIGINT or SIGTERM arrives. The handlers are installed now, by
/// this call, so a signal sent as soon as the server answers its first request is never taken
/// by the default action (which would end the process without a graceful stop).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    #[cfg(unix)]
    let int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(term) => {},
                _ = wait(int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown signal received");
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, with background tasks running (and the
/// operator listener, when one is configured).
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let settings = conn::Settings::from_config(&app.config.server);
    let operator = match app.config.operator.listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("operator listener {addr}: {e}"))
        })?),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let background = tokio::spawn(app.clone().run_background(stop_rx.clone()));
    // Histogram samples accumulate until upkeep folds them in, scraped or not.
    let upkeep = {
        let handle = metrics_handle();
        let mut stop = stop_rx;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => handle.run_upkeep(),
                    _ = stop.changed() => break,
                }
            }
        })
    };
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "stratus listening");
    let operator = operator.map(|l| {
        let addr = l.local_addr().ok();
        tracing::info!(address = ?addr, "operator listener (metrics) listening");
        let mut stop = stop_tx.subscribe();
        let router = operator_router(app.clone());
        let settings = settings.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            conn::serve(l, router, settings, stopped).await
        })
    });
    conn::serve(listener, router(app.clone()), settings, shutdown).await?;
    let _ = stop_tx.send(true);
    if let Some(op) = operator {
        let _ = op.await;
    }
    let _ = background.await;
    let _ = upkeep.await;
    app.close().await;
    tracing::info!("stratus stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn boom() -> &'static str {
        panic!("secret at /var/lib/stratus/stratus.db")
    }

    /// The server's own layers around handlers that fail in the two ways a client must not see.
    fn app() -> Router {
        Router::new()
            .route("/panic", get(boom))
            .route(
                "/internal",
                get(|| async {
                    stratus_api_memo::error::MemoError::from(stratus_model::Error::internal(
                        "open /var/lib/stratus/blobs/ab: permission denied",
                    ))
                }),
            )
            .route("/ok", get(|| async { "fine" }))
            .layer(CatchPanicLayer::custom(panic_response))
    }

    async fn call(path: &str) -> (StatusCode, Option<String>, String) {
        let resp = with_request_id(
            app(),
            Request::get(path).body(axum::body::Body::empty()).unwrap(),
        )
        .await;
        let status = resp.status();
        let id = resp
            .headers()
            .get(request_id::HEADER)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, id, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_panic_answers_a_request_id_not_its_message() {
        let (status, id, body) = call("/panic").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let id = id.expect("X-Request-Id");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": 500, "message": format!("internal error (request id {id})"), "requestId": id})
        );
        assert!(
            !body.contains("secret") && !body.contains("/var/lib"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_dialect_error_gets_the_header_of_its_request_id() {
        let (status, id, body) = call("/internal").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let id = id.expect("X-Request-Id");
        assert!(body.contains(&format!("(request id {id})")), "{body}");
        assert!(
            !body.contains("/var/lib") && !body.contains("permission"),
            "{body}"
        );
        // Each request its own id; a success has none.
        let (_, other, _) = call("/internal").await;
        assert_ne!(other.unwrap(), id);
        let (status, none, body) = call("/ok").await;
        assert_eq!(
            (status, none, body.as_str()),
            (StatusCode::OK, None, "fine")
        );
    }
}
