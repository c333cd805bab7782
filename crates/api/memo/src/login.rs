//! `/getnonce`, `/login` and `/fresh`: wallet sign-in as the document describes it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use stratus_api_request::BodyError;
use stratus_app::App;
use stratus_model::auth::WalletLogin;

use crate::error::{MemoError, MemoResult};
use crate::extract::ClientIp;

/// `GET /getnonce` → 64 lower-case hex digits as `text/plain`.
pub(crate) async fn get_nonce(
    State(app): State<Arc<App>>,
    ClientIp(ip): ClientIp,
) -> MemoResult<Response> {
    let nonce = app.auth.new_nonce(ip)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], nonce).into_response())
}

#[derive(Deserialize, Default)]
pub(crate) struct LoginRequest {
    #[serde(default)]
    pub(crate) address: String,
    #[serde(default)]
    pub(crate) nonce: String,
    #[serde(default)]
    pub(crate) domain: String,
    #[serde(default)]
    pub(crate) signature: String,
}

/// The login fields: JSON as documented, or form fields; no body at all is the document's "empty
/// parameter" (every field empty).
pub(crate) async fn login_request(body: Body) -> Result<LoginRequest, BodyError> {
    match stratus_api_request::json_or_form_body(body).await {
        Err(BodyError::Empty) => Ok(LoginRequest::default()),
        other => other,
    }
}

#[derive(Serialize)]
pub(crate) struct Session {
    #[serde(rename = "access token")]
    access: String,
    #[serde(rename = "fresh token")]
    fresh: String,
}

/// `POST /login {address, nonce, domain, signature}` → `{"access token", "fresh token"}`.
/// Every failure is wrapped with a fresh nonce.
pub(crate) async fn login(
    State(app): State<Arc<App>>,
    ClientIp(ip): ClientIp,
    body: Body,
) -> Result<Json<Session>, MemoError> {
    let wrap = |e: MemoError| {
        if e.retry_after.is_some() {
            e
        } else {
            e.with_nonce(app.auth.courtesy_nonce(ip))
        }
    };
    let req = login_request(body).await.map_err(|e| wrap(e.into()))?;
    let session = app
        .auth
        .wallet_login(
            ip,
            &WalletLogin {
                address: req.address,
                nonce: req.nonce,
                domain: req.domain,
                signature: req.signature,
            },
        )
        .await
        .map_err(|e| wrap(e.into()))?;
    Ok(Json(Session {
        access: session.access_token,
        fresh: session.refresh_token,
    }))
}

#[derive(Serialize)]
pub(crate) struct Refreshed {
    #[serde(rename = "access token")]
    access: String,
}

/// `GET /fresh` with the fresh token in `Authorization` → `{"access token"}`; any failure of the
/// token is `401 Illegal fresh token` as plain text.
pub(crate) async fn fresh(
    State(app): State<Arc<App>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    let Some(token) = stratus_api_request::token(&headers) else {
        return illegal();
    };
    match app.auth.refresh(ip, &token).await {
        Ok(access) => Json(Refreshed { access }).into_response(),
        // Our own faults are not the token's: a generic 500 or 503 with the request id.
        Err(
            e @ (stratus_model::Error::RateLimited { .. }
            | stratus_model::Error::Internal(_)
            | stratus_model::Error::Unavailable { .. }),
        ) => MemoError::from(e).into_response(),
        Err(_) => illegal(),
    }
}

fn illegal() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Illegal fresh token",
    )
        .into_response()
}

#[derive(Deserialize, Default)]
pub(crate) struct LogoutQuery {
    #[serde(default)]
    all: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct LoggedOut {
    state: &'static str,
}

/// `POST /logout[?all=true]` with an access or fresh token: revokes the session (the fresh token
/// and every access token minted from it), or with `all` every token of the account.
pub(crate) async fn logout(
    State(app): State<Arc<App>>,
    ClientIp(ip): ClientIp,
    crate::extract::Q(q): crate::extract::Q<LogoutQuery>,
    headers: HeaderMap,
) -> MemoResult<Json<LoggedOut>> {
    let wrap = |e: MemoError| {
        if e.is_auth() {
            e.with_nonce(app.auth.courtesy_nonce(ip))
        } else {
            e
        }
    };
    let token = stratus_api_request::token(&headers)
        .ok_or_else(|| wrap(stratus_model::AuthFailure::MissingToken.into()))?;
    let caller = app
        .auth
        .authenticate_any(&token)
        .await
        .map_err(|e| wrap(e.into()))?;
    if matches!(q.all.as_deref(), Some("true" | "1" | "yes")) {
        app.auth.logout_everywhere(&caller).await?;
    } else {
        app.auth.logout(&caller).await?;
    }
    Ok(Json(LoggedOut { state: "success" }))
}
