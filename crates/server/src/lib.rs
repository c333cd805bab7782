//! The stratus HTTP server.
//!
//! Mounts the three dialects on one listener (ComputeShare under `/api`, TwoCloud under
//! `/twocloud`, MEMO at the root), adds `GET /healthz` and Prometheus `GET /metrics` (for the
//! operator only: it asks for the operator token, or is served on a separate operator listener),
//! records per-route request metrics, turns panics into 500s, holds connections to the limits of
//! [`conn`], and shuts down gracefully: on SIGINT or SIGTERM it stops accepting, lets requests in
//! flight finish, stops background tasks and closes the database.

pub mod conn;
mod metrics_layer;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{header, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
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
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "unavailable", "error": e})),
        )
            .into_response(),
    }
}

async fn sqlx_ping(app: &App) -> Result<(), String> {
    app.auth
        .accounts()
        .count()
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn fallback(req: Request) -> Response {
    stratus_api_memo::not_found_response(req.uri().path()).await
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(serde_json::json!({"code": 500, "message": "internal error"})),
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
