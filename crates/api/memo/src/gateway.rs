//! `GET|HEAD /{target}/{cid}`: downloads, with the conventions IPFS gateways follow.
//!
//! No token is needed (content addressing). The file streams with `Content-Type` from its name:
//! `?filename=`; else, for a caller whose token shows it stores the file, the name it stored it
//! under (then the answer is `private` to caches); else the name every owner gave it when they
//! all gave the same one, or the CID (see `Storage::resolve`) — one account's name is never
//! shown to another;
//! `Content-Disposition: attachment`, `Content-Length`, a strong `ETag` of the CID, immutable
//! caching, single byte ranges (206/416) and `If-None-Match` (304). Trustless forms:
//! `?format=raw` / `Accept: application/vnd.ipld.raw` answers one block (any block of a stored
//! DAG), `?format=car` / `Accept: application/vnd.ipld.car` the DAG as CARv1, depth-first, without
//! duplicates.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use stratus_app::App;
use stratus_model::storage::Resolved;

use crate::error::{Kind, MemoError, MemoResult};
use crate::extract::{P, Q};
use crate::storage::{check_target, parse_cid};

const IMMUTABLE: &str = "public, max-age=29030400, immutable";
const CAR_TYPE: &str = "application/vnd.ipld.car; version=1; order=dfs; dups=n";
const RAW_TYPE: &str = "application/vnd.ipld.raw";

#[derive(Deserialize)]
pub(crate) struct GetQuery {
    pub(crate) format: Option<String>,
    /// The name to download under (as IPFS gateways do); else the stored object's name.
    pub(crate) filename: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    File,
    Raw,
    Car,
}

pub(crate) fn requested_format(q: &GetQuery, headers: &HeaderMap) -> MemoResult<Format> {
    match q.format.as_deref() {
        Some("raw") => return Ok(Format::Raw),
        Some("car") => return Ok(Format::Car),
        Some("") | None => {}
        Some(other) => {
            return Err(MemoError::new(
                Kind::BadRequest,
                format!("unsupported format {other:?}; use raw or car"),
            ))
        }
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    for part in accept.split(',') {
        let mime = part.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case(RAW_TYPE) {
            return Ok(Format::Raw);
        }
        if mime.eq_ignore_ascii_case("application/vnd.ipld.car") {
            return Ok(Format::Car);
        }
    }
    Ok(Format::File)
}

/// `attachment; filename="…"`, with an RFC 5987 form for names that are not plain ASCII.
pub(crate) fn disposition(name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| match c {
            '"' | '\\' => '_',
            c if c.is_ascii() && !c.is_ascii_control() => c,
            _ => '_',
        })
        .collect();
    let mut v = format!("attachment; filename=\"{ascii}\"");
    if !name.is_ascii() {
        let mut enc = String::new();
        for b in name.bytes() {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                enc.push(b as char);
            } else {
                enc.push_str(&format!("%{b:02X}"));
            }
        }
        v.push_str(&format!("; filename*=UTF-8''{enc}"));
    }
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

pub(crate) fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

/// A parsed `Range` header against a length.
pub(crate) enum RangeAnswer {
    Full,
    Partial(u64, u64),
    Unsatisfiable,
}

pub(crate) fn parse_range(headers: &HeaderMap, len: u64, etag: &str) -> RangeAnswer {
    let Some(v) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeAnswer::Full;
    };
    if let Some(ir) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        if ir.trim() != etag {
            return RangeAnswer::Full;
        }
    }
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        // Several ranges: answer the whole file (allowed by RFC 9110).
        return RangeAnswer::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (true, true) => return RangeAnswer::Full,
        (true, false) => match b.parse::<u64>() {
            Ok(0) => return RangeAnswer::Unsatisfiable,
            Ok(n) => Some((len.saturating_sub(n), len.saturating_sub(1))),
            Err(_) => return RangeAnswer::Full,
        },
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else {
                return RangeAnswer::Full;
            };
            let end = if b.is_empty() {
                len.saturating_sub(1)
            } else {
                match b.parse::<u64>() {
                    Ok(e) if e >= start => e.min(len.saturating_sub(1)),
                    _ => return RangeAnswer::Full,
                }
            };
            Some((start, end))
        }
    };
    match parsed {
        Some((s, e)) if len > 0 && s < len && s <= e => RangeAnswer::Partial(s, e),
        _ => RangeAnswer::Unsatisfiable,
    }
}

fn base(status: StatusCode, etag: &str) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header(header::ETAG, etag)
        .header(header::CACHE_CONTROL, IMMUTABLE)
        .header("X-Content-Type-Options", "nosniff")
}

/// `GET|HEAD /{target}/{cid}`.
pub(crate) async fn download(
    State(app): State<Arc<App>>,
    P((target, cid_text)): P<(String, String)>,
    Q(q): Q<GetQuery>,
    method: Method,
    headers: HeaderMap,
) -> MemoResult<Response> {
    check_target(&app, &target)?;
    let cid = parse_cid("", &cid_text)?;
    let format = requested_format(&q, &headers)?;
    let r =
        app.storage.resolve(&target, &cid).await?.ok_or_else(|| {
            MemoError::new(Kind::NotFound, format!("no object {cid} in {target}"))
        })?;
    let head = method == Method::HEAD;
    let resp = match format {
        Format::File => {
            let own = own_name(&app, &target, &r, &headers).await;
            file(&app, &r, q.filename.as_deref(), own, &headers, head).await?
        }
        Format::Raw => raw(&app, &r, &headers, head).await?,
        Format::Car => car(&app, r, &headers, head),
    };
    Ok(resp)
}

/// The name the caller stored the file under, when the request carries a valid token of an
/// account that stores it (a bad or stale token is not an error here: downloads need none).
async fn own_name(app: &App, target: &str, r: &Resolved, headers: &HeaderMap) -> Option<String> {
    if !r.is_root() {
        return None;
    }
    let token = stratus_api_request::token(headers)?;
    let caller = app.auth.authenticate(&token).await.ok()?;
    app.storage
        .own_name(&caller.account.id, target, &r.root)
        .await
        .ok()
        .flatten()
}

async fn file(
    app: &App,
    r: &Resolved,
    filename: Option<&str>,
    own: Option<String>,
    headers: &HeaderMap,
    head: bool,
) -> MemoResult<Response> {
    let etag = format!("\"{}\"", r.cid);
    // A name only its owner sees must not be kept by shared caches.
    let private = own.is_some();
    let name = match filename {
        Some(f) if !f.is_empty() => {
            if f.chars().any(char::is_control) || f.contains(['/', '\\']) || f.len() > 255 {
                return Err(MemoError::new(
                    Kind::BadRequest,
                    "filename: at most 255 bytes, no control characters or slashes",
                ));
            }
            f.to_string()
        }
        _ => own
            .or_else(|| r.name.clone())
            .unwrap_or_else(|| r.cid.to_string()),
    };
    if etag_matches(headers, &etag) {
        return Ok(base(StatusCode::NOT_MODIFIED, &etag)
            .body(Body::empty())
            .expect("valid response"));
    }
    let ctype = mime_guess::from_path(&name)
        .first_raw()
        .unwrap_or("application/octet-stream");
    let len = r.len;
    let (status, range) = match parse_range(headers, len, &etag) {
        RangeAnswer::Full => (StatusCode::OK, 0..len),
        RangeAnswer::Partial(s, e) => (StatusCode::PARTIAL_CONTENT, s..e + 1),
        RangeAnswer::Unsatisfiable => {
            return Ok(base(StatusCode::RANGE_NOT_SATISFIABLE, &etag)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .header(header::ACCEPT_RANGES, "bytes")
                .body(Body::empty())
                .expect("valid response"))
        }
    };
    let mut b = base(status, &etag);
    if private {
        if let Some(h) = b.headers_mut() {
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=29030400, immutable"),
            );
        }
        b = b.header(header::VARY, "Authorization");
    }
    let mut b = b
        .header(header::CONTENT_TYPE, ctype)
        .header(header::CONTENT_DISPOSITION, disposition(&name))
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, range.end - range.start);
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{len}", range.start, range.end - 1),
        );
    }
    let body = if head {
        Body::empty()
    } else {
        let n = range.end - range.start;
        metrics::counter!("stratus_storage_download_bytes_total", "target" => r.target.clone())
            .increment(n);
        Body::from_stream(app.storage.read_file(r, range).await?)
    };
    Ok(b.body(body).expect("valid response"))
}

async fn raw(app: &App, r: &Resolved, headers: &HeaderMap, head: bool) -> MemoResult<Response> {
    let etag = format!("\"{}.raw\"", r.cid);
    if etag_matches(headers, &etag) {
        return Ok(base(StatusCode::NOT_MODIFIED, &etag)
            .body(Body::empty())
            .expect("valid response"));
    }
    let b = base(StatusCode::OK, &etag)
        .header(header::CONTENT_TYPE, RAW_TYPE)
        .header(
            header::CONTENT_DISPOSITION,
            disposition(&format!("{}.bin", r.cid)),
        )
        .header(header::CONTENT_LENGTH, r.block_len())
        .header(header::VARY, "Accept");
    let body = if head {
        Body::empty()
    } else {
        Body::from_stream(app.storage.read_block(r).await?)
    };
    Ok(b.body(body).expect("valid response"))
}

fn car(app: &App, r: Resolved, headers: &HeaderMap, head: bool) -> Response {
    let etag = format!("\"{}.car\"", r.cid);
    if etag_matches(headers, &etag) {
        return base(StatusCode::NOT_MODIFIED, &etag)
            .body(Body::empty())
            .expect("valid response");
    }
    let b = base(StatusCode::OK, &etag)
        .header(header::CONTENT_TYPE, CAR_TYPE)
        .header(
            header::CONTENT_DISPOSITION,
            disposition(&format!("{}.car", r.cid)),
        )
        .header(header::VARY, "Accept");
    let body = if head {
        Body::empty()
    } else {
        Body::from_stream(app.storage.car(r))
    };
    b.body(body).expect("valid response").into_response()
}
