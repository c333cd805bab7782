//! The parsers of this dialect that read untrusted bytes, as plain functions for the fuzz
//! targets (`crates/fuzz`). Not an API: each function runs exactly the code a request runs
//! (extractors included) and returns what the handler would go on with; nothing here is used by
//! the server itself.

use axum::body::Body;
use futures::executor::block_on;
use http::{HeaderMap, Method};
use stratus_unixfs::Cid;

pub use crate::form::{boundary_of, Form, FormError, FormPart, MAX_HELD, MAX_PARTS, READ_BURST};

/// What `Range` (with `If-Range`) asks of a file of some length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// Answer the whole file (200).
    Full,
    /// Answer bytes `start..=end` (206).
    Partial(u64, u64),
    /// 416.
    Unsatisfiable,
}

/// The answer to `headers` (`Range`, `If-Range`) for a file of `len` bytes with this `etag`.
pub fn range(headers: &HeaderMap, len: u64, etag: &str) -> Range {
    match crate::gateway::parse_range(headers, len, etag) {
        crate::gateway::RangeAnswer::Full => Range::Full,
        crate::gateway::RangeAnswer::Partial(s, e) => Range::Partial(s, e),
        crate::gateway::RangeAnswer::Unsatisfiable => Range::Unsatisfiable,
    }
}

/// Whether `If-None-Match` in `headers` matches `etag` (a 304).
pub fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    crate::gateway::etag_matches(headers, etag)
}

/// What a download request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// `file`, `raw` or `car`.
    pub format: &'static str,
    /// `?filename=`.
    pub filename: Option<String>,
}

/// A download's query string and `Accept` header, read as `GET /{target}/{cid}` reads them, or
/// the 400's description.
pub fn download(query: &str, headers: &HeaderMap) -> Result<Download, String> {
    let q: crate::gateway::GetQuery = stratus_api_request::fuzz_query_string(query)?;
    let format = crate::gateway::requested_format(&q, headers).map_err(describe)?;
    Ok(Download {
        format: match format {
            crate::gateway::Format::File => "file",
            crate::gateway::Format::Raw => "raw",
            crate::gateway::Format::Car => "car",
        },
        filename: q.filename,
    })
}

/// The `Content-Disposition` of a download named `name`.
pub fn disposition(name: &str) -> http::HeaderValue {
    crate::gateway::disposition(name)
}

/// The stored name of an uploaded file whose multipart `filename` is `raw`.
pub fn clean_name(raw: Option<&str>) -> Option<String> {
    crate::storage::clean_name(raw)
}

/// A CID from a path segment or `after=`, or the 400's description.
pub fn cid(text: &str) -> Result<Cid, String> {
    crate::storage::parse_cid("", text).map_err(describe)
}

/// `?profile=` of an upload.
pub fn upload_query(query: &str) -> Result<Option<String>, String> {
    let q: crate::storage::UploadQuery = stratus_api_request::fuzz_query_string(query)?;
    Ok(q.profile)
}

/// `?limit=&after=` of a listing; `after` is checked as the handler checks it.
pub fn list_query(query: &str) -> Result<(Option<u32>, Option<String>), String> {
    let q: crate::storage::ListQuery = stratus_api_request::fuzz_query_string(query)?;
    if let Some(a) = q.after.as_deref().filter(|a| !a.is_empty()) {
        crate::storage::check_after(a).map_err(describe)?;
    }
    Ok((q.limit, q.after))
}

/// The four fields of `POST /login` from its body.
pub fn login_body(body: &[u8]) -> Result<[String; 4], String> {
    let r = block_on(crate::login::login_request(Body::from(body.to_vec())))
        .map_err(|e| e.to_string())?;
    Ok([r.address, r.nonce, r.domain, r.signature])
}

/// `(pkgid, amount)` of a purchase: `POST` reads `body` (the query string when there is none),
/// `GET` the query string.
pub fn purchase(post: bool, query: &str, body: &[u8]) -> Result<(u64, i64), String> {
    let q: crate::billing::BuyRequest = stratus_api_request::fuzz_query_string(query)?;
    let method = if post { Method::POST } else { Method::GET };
    block_on(crate::billing::purchase_request(
        &method,
        q,
        Body::from(body.to_vec()),
    ))
    .map_err(describe)
}

fn describe(e: crate::error::MemoError) -> String {
    format!("{} {}", e.status().as_u16(), e.detail.unwrap_or_default())
}
