//! Reading the parts of an HTTP request that every dialect needs, without deciding how errors
//! look: the client address (for rate limits), the token from `Authorization`, and a JSON body
//! read with a size cap whatever its `Content-Type` (the MEMO screenshots send JSON as text).
//! Each dialect turns a [`BodyError`], or the message of a malformed query string or path
//! ([`query`], [`path`]), into its own error format. [`request_id`] gives the answers that hide
//! an internal cause the id under which that cause is logged.

pub mod request_id;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts};
use http::request::Parts;
use http::HeaderMap;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

/// Whether a request's body was read to its end: every byte its `Content-Length` announced (or
/// the last chunk of a chunked body) arrived. The connection layer puts one in every request's
/// extensions and sets it when the body stream ends; a body cut short (the client closed the
/// connection) ends with an error instead and never sets it. A handler that must not act on a
/// partial body (an upload) checks it after reading the body.
#[derive(Debug, Clone)]
pub struct BodyEnd(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl BodyEnd {
    /// Wraps the flag the connection sets at the body's end.
    pub fn new(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Self {
        BodyEnd(flag)
    }

    /// Whether the body was read to its end.
    pub fn reached(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Largest JSON request body accepted.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// The peer address of the connection (loopback when unknown, e.g. in unit tests).
pub fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The token in the `Authorization` header (Bearer, bare, or Basic with the token as username).
pub fn token(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    stratus_model::token::token_from_authorization(v)
}

/// The query string parsed as `T`, or why it could not be (a message for a 400).
pub async fn query<T: DeserializeOwned + Send, S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<T, String> {
    axum::extract::Query::<T>::from_request_parts(parts, state)
        .await
        .map(|q| q.0)
        .map_err(|e| format!("query string: {}", e.body_text()))
}

/// `query_string` as the dialects' `Q` extractor reads it from a request to `/x?<query_string>`:
/// the entry the fuzz targets drive (a refusal is the 400's text, prefixed `400 `).
#[doc(hidden)]
pub fn fuzz_query_string<T: DeserializeOwned + Send>(query_string: &str) -> Result<T, String> {
    let uri = format!("/x?{query_string}");
    let req = http::Request::get(uri.as_str())
        .body(())
        .map_err(|e| format!("not a URI: {e}"))?;
    let (mut parts, ()) = req.into_parts();
    futures::executor::block_on(query::<T, ()>(&mut parts, &()))
        .map_err(|message| format!("400 {message}"))
}

/// The path parameters parsed as `T`, or why they could not be (a message for a 400).
pub async fn path<T: DeserializeOwned + Send, S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<T, String> {
    axum::extract::Path::<T>::from_request_parts(parts, state)
        .await
        .map(|p| p.0)
        .map_err(|e| format!("path: {}", e.body_text()))
}

/// Why a JSON body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("request body could not be read: {0}")]
    Read(String),
    #[error("request body is empty")]
    Empty,
    #[error("request body is not valid JSON: {0}")]
    Json(String),
}

/// Reads at most [`MAX_JSON_BODY`] bytes and parses them as `T`.
pub async fn json_body<T: DeserializeOwned>(body: Body) -> Result<T, BodyError> {
    json_object(&small_body(body).await?)
}

/// Like [`json_body`], but a body that is not a JSON object is read as HTML form fields
/// (`a=1&b=2`, what `curl -d` and HTML forms send), for the login routes whose documents name
/// parameters without saying how they travel.
pub async fn json_or_form_body<T: DeserializeOwned>(body: Body) -> Result<T, BodyError> {
    let bytes = small_body(body).await?;
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None | Some(b'{') => json_object(&bytes),
        Some(_) => serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| BodyError::Json(format!("neither a JSON object nor form fields: {e}"))),
    }
}

/// Parses `bytes` as a JSON object.
fn json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(BodyError::Empty),
        Some(b'{') => {}
        Some(_) => return Err(BodyError::Json("expected a JSON object".into())),
    }
    serde_json::from_slice(bytes).map_err(|e| BodyError::Json(e.to_string()))
}

/// The whole body of a small request (at most [`MAX_JSON_BODY`] bytes).
async fn small_body(body: Body) -> Result<axum::body::Bytes, BodyError> {
    Ok(Limited::new(body, MAX_JSON_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                BodyError::TooLarge(MAX_JSON_BODY)
            } else {
                BodyError::Read(e.to_string())
            }
        })?
        .to_bytes())
}
