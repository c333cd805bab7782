//! Routes of the MEMO dialect, mounted at the root.

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use stratus_app::App;

use crate::error::{Kind, MemoError};
use crate::{billing, gateway, login, storage};

/// The dialect's routes.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/getnonce", get(login::get_nonce))
        .route("/login", post(login::login))
        .route("/fresh", get(login::fresh))
        .route("/logout", post(login::logout))
        .route("/{target}", post(storage::upload))
        .route("/{target}/", post(storage::upload))
        .route("/{target}/listobjects", get(storage::list))
        .route("/{target}/storage", get(storage::space))
        .route("/{target}/balance", get(billing::balance))
        .route("/{target}/getprice", get(billing::get_price))
        .route("/{target}/pkginfos", get(billing::pkg_infos))
        .route(
            "/{target}/buypkg",
            get(billing::buy_pkg).post(billing::buy_pkg),
        )
        .route("/{target}/getbuypkgs", get(billing::get_buy_pkgs))
        .route(
            "/{target}/{cid}",
            get(gateway::download).delete(storage::delete),
        )
        .method_not_allowed_fallback(method_not_allowed)
}

/// A 405 in the MEMO format, naming the method.
async fn method_not_allowed(method: http::Method, uri: http::Uri) -> MemoError {
    MemoError::new(
        Kind::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// A 404 in the MEMO format as a response (the server's fallback).
pub async fn not_found_response(path: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    MemoError::new(Kind::NotFound, format!("no route for {path}")).into_response()
}
