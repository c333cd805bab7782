//! Routes of the ComputeShare dialect, relative to `/api`.

use std::sync::Arc;

use axum::routing::{get, post, put};
use axum::Router;
use http::StatusCode;
use stratus_app::App;

use crate::error::CsError;
use crate::{billing, catalog, compute, user};

/// The dialect's routes; mount under `/api`.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/user/loginWithClient", post(user::login_with_client))
        .route("/v1/user/register", post(user::register))
        .route("/v1/user", get(user::me))
        .route("/v1/user/password", put(user::change_password))
        .route("/v1/user/logout", post(user::logout))
        .route("/v1/user/wallet", post(billing::link_wallet))
        .route("/v1/balance", get(billing::balance))
        .route("/v1/ledger", get(billing::ledger))
        .route("/v1/compute/spec", get(catalog::specs))
        .route("/v1/compute/image", get(catalog::images))
        .route("/v1/compute/spec/price", get(catalog::spec_price))
        .route("/v1/sandbox", post(compute::sandbox))
        .route("/v1/instance", post(compute::create).get(compute::list))
        .route(
            "/v1/instance/{id}",
            get(compute::get).delete(compute::delete),
        )
        .route("/v1/instance/{id}/wait", get(compute::wait))
        .route("/v1/instance/{id}/{action}", put(compute::action))
        .route(
            "/v1/network-mappings",
            post(compute::create_mapping).get(compute::list_mappings),
        )
        .route("/v1/network-mappings/page", get(compute::list_mappings))
        .route(
            "/v1/network-mappings/{id}",
            get(compute::get_mapping)
                .put(compute::update_mapping)
                .delete(compute::delete_mapping),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found() -> CsError {
    CsError::not_found("NOT_FOUND", "no such route")
}

async fn method_not_allowed() -> CsError {
    CsError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "method not allowed on this route",
    )
}
