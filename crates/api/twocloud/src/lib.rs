//! The TwoCloud dialect (`002_5609deec085e634c.txt`): `POST /twocloud/tokens` with HTTP Basic
//! `username:password` answers `{"duration": <seconds>, "token": "…"}`. A valid token given as the
//! Basic username (password ignored) also gets a fresh token, as in the original. Errors are
//! `{"code": <status>, "msg": "…"}`; a 401 carries `WWW-Authenticate: Basic`.
//!
//! A renewed token belongs to the family of the token it was renewed with and dies with it.
//! `DELETE /twocloud/tokens` with a token (Bearer, bare, or as the Basic username) revokes that
//! token's family; with `?all=true`, every token of the account.

use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Serialize;
use stratus_api_request::request_id;
use stratus_app::App;
use stratus_model::auth::PasswordDialect;
use stratus_model::token::basic_credentials;
use stratus_model::{AuthFailure, Error, Field};

/// An error in the TwoCloud format.
#[derive(Debug)]
pub struct TcError {
    status: StatusCode,
    msg: String,
    retry_after: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: u16,
    msg: &'a str,
}

impl IntoResponse for TcError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(ErrorBody {
                code: self.status.as_u16(),
                msg: &self.msg,
            }),
        )
            .into_response();
        let h = resp.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Authentication Required\""),
            );
        }
        if let Some(s) = self.retry_after {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

impl From<Error> for TcError {
    fn from(e: Error) -> Self {
        let (status, msg, retry_after) = match e {
            Error::Unauthenticated(f) => (
                StatusCode::UNAUTHORIZED,
                format!("Unauthorized Access: {}", auth_text(f)),
                None,
            ),
            Error::Invalid { field, message } => (
                StatusCode::BAD_REQUEST,
                format!("{}: {message}", wire_field(field)),
                None,
            ),
            Error::RateLimited { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too Many Requests: retry in {retry_after_secs} s"),
                Some(retry_after_secs),
            ),
            Error::StorageFull(m) => {
                tracing::error!(error = %m, "the disk is full");
                (
                    StatusCode::INSUFFICIENT_STORAGE,
                    "Insufficient Storage: the server is out of storage space".to_string(),
                    None,
                )
            }
            // The cause is logged under the request id, never sent.
            Error::Internal(m) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "Internal Server Error (request id {})",
                    request_id::report_internal(&m)
                ),
                None,
            ),
            Error::Unavailable { what, cause } => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "Service Unavailable: {what} (request id {})",
                    request_id::report_unavailable(&what, &cause)
                ),
                None,
            ),
            other => (StatusCode::BAD_REQUEST, other.to_string(), None),
        };
        TcError {
            status,
            msg,
            retry_after,
        }
    }
}

/// TwoCloud's text for a refused credential (after `Unauthorized Access: `).
fn auth_text(f: AuthFailure) -> &'static str {
    match f {
        AuthFailure::MissingToken => "Token is Null",
        AuthFailure::MalformedToken => "Invalid token payload",
        AuthFailure::BadSignature | AuthFailure::UnknownAccount => "Invalid token",
        AuthFailure::Expired => "Token is expired",
        AuthFailure::Revoked => "Token has been revoked",
        AuthFailure::WrongTokenType => "Wrong token type",
        AuthFailure::BadCredentials => "wrong username or password",
        // TwoCloud has no wallet login; these keep the texts of the wallet logins.
        AuthFailure::EmptyParameter => "There is an empty parameter",
        AuthFailure::WrongDomain => "Got wrong domain",
        AuthFailure::WrongNonce => "Got wrong nonce",
        AuthFailure::WrongAddress => "Got wrong address",
        AuthFailure::WrongSignature => "Got wrong signature",
    }
}

/// TwoCloud's name of a field the core refused: the credential fields are its own, the rest
/// (no TwoCloud request carries them) go by their domain names.
fn wire_field(f: Field) -> &'static str {
    match f {
        Field::Username => "username",
        Field::Password => "password",
        other => other.name(),
    }
}

fn unauthorized(msg: &str) -> TcError {
    TcError {
        status: StatusCode::UNAUTHORIZED,
        msg: format!("Unauthorized Access: {msg}"),
        retry_after: None,
    }
}

#[derive(Serialize)]
struct Issued {
    duration: u64,
    token: String,
}

#[derive(serde::Deserialize)]
struct BodyCredentials {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// `(username, password)` from HTTP Basic, or from a JSON or form body when there is no
/// `Authorization` header.
pub(crate) async fn credentials(
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<(String, String), TcError> {
    Ok(match headers.get(http::header::AUTHORIZATION) {
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| unauthorized("malformed Authorization header"))?;
            let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(unauthorized("HTTP Basic credentials are required"));
            }
            basic_credentials(rest).ok_or_else(|| unauthorized("malformed Basic credentials"))?
        }
        // The document's parameter table names `username` and `password`: without Basic, they
        // are read from a JSON or form body.
        None => match stratus_api_request::json_or_form_body::<BodyCredentials>(body).await {
            Ok(c) if !c.username.is_empty() => (c.username, c.password),
            _ => return Err(unauthorized("HTTP Basic credentials are required")),
        },
    })
}

/// `POST /twocloud/tokens`: credentials by HTTP Basic (or `username`/`password` in the body).
async fn tokens(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Issued>, TcError> {
    let (username, password) = credentials(&headers, body).await?;
    let ttl = app.auth.config().twocloud_token_ttl;
    // A token as the username: renew it (the original's verify_password tried tokens first).
    if username.matches('.').count() == 2 {
        if let Ok(caller) = app.auth.authenticate(&username).await {
            let token = app
                .auth
                .reissue(peer.ip(), &caller, PasswordDialect::TwoCloud)
                .await?;
            return Ok(Json(Issued {
                duration: ttl,
                token,
            }));
        }
    }
    let (_, token) = app
        .auth
        .password_login(peer.ip(), &username, &password, PasswordDialect::TwoCloud)
        .await?;
    Ok(Json(Issued {
        duration: ttl,
        token,
    }))
}

#[derive(serde::Deserialize)]
struct RevokeQuery {
    #[serde(default)]
    all: Option<String>,
}

/// `DELETE /twocloud/tokens[?all=true]`: revokes the presented token's family, or every token of
/// the account. `204` on success.
async fn revoke(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<RevokeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<StatusCode, TcError> {
    let all = match query {
        Ok(q) => matches!(q.0.all.as_deref(), Some("true" | "1" | "yes")),
        Err(e) => {
            return Err(TcError {
                status: StatusCode::BAD_REQUEST,
                msg: format!("query string: {}", e.body_text()),
                retry_after: None,
            })
        }
    };
    let token =
        stratus_api_request::token(&headers).ok_or_else(|| unauthorized("Token is Null"))?;
    let caller = app.auth.authenticate_any(&token).await?;
    if all {
        app.auth.logout_everywhere(&caller).await?;
    } else {
        app.auth.logout(&caller).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn not_found() -> TcError {
    TcError {
        status: StatusCode::NOT_FOUND,
        msg: "Not Found".into(),
        retry_after: None,
    }
}

async fn method_not_allowed() -> TcError {
    TcError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        msg: "Method Not Allowed".into(),
        retry_after: None,
    }
}

/// The credentials reader of `POST /twocloud/tokens`, for the fuzz targets (`crates/fuzz`). Not
/// an API: nothing in the server uses it.
#[doc(hidden)]
pub mod fuzzing {
    /// `(username, password)` as the handler reads them from the `Authorization` header (raw
    /// bytes, when present) or the body, or the 401's message.
    pub fn credentials(
        authorization: Option<&[u8]>,
        body: &[u8],
    ) -> Result<(String, String), String> {
        let mut headers = http::HeaderMap::new();
        if let Some(v) = authorization {
            let v = http::HeaderValue::from_bytes(v).map_err(|e| e.to_string())?;
            headers.insert(http::header::AUTHORIZATION, v);
        }
        futures::executor::block_on(super::credentials(
            &headers,
            axum::body::Body::from(body.to_vec()),
        ))
        .map_err(|e| e.msg)
    }
}

/// The dialect's routes; mount under `/twocloud`.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/tokens", post(tokens).delete(revoke))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}
