//! `/{mefs|ipfs}/…`: upload, listing, storage space, balance, delete.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::Json;
use http::{header, HeaderMap};
use serde::{Deserialize, Serialize};
use stratus_api_request::BodyEnd;
use stratus_app::App;
use stratus_unixfs::{Cid, Profile};
use time::format_description::well_known::Rfc3339;

use crate::error::{Kind, MemoError, MemoResult};
use crate::extract::MemoCaller;
use crate::extract::{P, Q};
use crate::form::{self, Form, FormError};

/// The target named in the path, or 518 `storage not support`.
pub(crate) fn check_target(app: &App, target: &str) -> MemoResult<()> {
    if app.storage.target(target).is_some() {
        Ok(())
    } else {
        Err(MemoError::new(
            Kind::StorageNotSupport,
            "storage not support",
        ))
    }
}

/// A CID from a request (a path segment or `after=`), or a 400. Text longer than any CID
/// ([`stratus_unixfs::cid::MAX_TEXT_LEN`]) is refused before it is decoded, and only its start
/// is echoed back.
pub(crate) fn parse_cid(what: &str, text: &str) -> MemoResult<Cid> {
    text.parse().map_err(|e| {
        let shown: String = text.chars().take(MAX_CID_SHOWN).collect();
        let more = if shown.len() < text.len() { "…" } else { "" };
        MemoError::new(
            Kind::BadRequest,
            format!("{what}invalid CID {shown:?}{more}: {e}"),
        )
    })
}

/// A listing's `after`: a `NextAfter` position (digits) or a CID.
pub(crate) fn check_after(after: &str) -> MemoResult<()> {
    if !after.bytes().all(|b| b.is_ascii_digit()) {
        parse_cid("after: ", after)?;
    }
    Ok(())
}

/// How much of a malformed CID an error message repeats.
const MAX_CID_SHOWN: usize = stratus_unixfs::cid::MAX_TEXT_LEN;

#[derive(Deserialize)]
pub(crate) struct UploadQuery {
    pub(crate) profile: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct Uploaded {
    cid: String,
}

/// The last path component of an uploaded file name (browsers may send `C:\fakepath\x`).
pub(crate) fn clean_name(raw: Option<&str>) -> Option<String> {
    let raw = raw?;
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    (!cleaned.is_empty() && cleaned != "." && cleaned != "..").then_some(cleaned)
}

/// A request body that can be drained after the multipart parser gave up on it. The lock is
/// parking_lot's: a panic while polling never poisons it (the stream itself stays usable).
#[derive(Clone)]
struct SharedBody(Arc<parking_lot::Mutex<axum::body::BodyDataStream>>);

impl futures::Stream for SharedBody {
    type Item = Result<bytes::Bytes, axum::Error>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let mut inner = self.0.lock();
        std::pin::Pin::new(&mut *inner).poll_next(cx)
    }
}

/// Up to this much of an unread body (or this long) is discarded before an error is sent (so a
/// client that is still sending reads the answer instead of a connection reset).
const DRAIN_BYTES: u64 = 1 << 30;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

async fn drain(body: SharedBody) {
    use futures::StreamExt;
    let mut body = body;
    let mut left = DRAIN_BYTES;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = body.next().await {
            left = left.saturating_sub(chunk.len() as u64);
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

/// `POST /{target}/` with a multipart field `file` → `{"cid": …}`.
pub(crate) async fn upload(
    State(app): State<Arc<App>>,
    P(target): P<String>,
    Q(q): Q<UploadQuery>,
    MemoCaller(caller): MemoCaller,
    body_end: Option<axum::Extension<BodyEnd>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Uploaded>, axum::response::Response> {
    use axum::response::IntoResponse;
    let body = SharedBody(Arc::new(parking_lot::Mutex::new(body.into_data_stream())));
    let expects_continue = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let body_end = body_end.map(|e| e.0);
    let (result, body_touched) = receive(
        &app,
        &target,
        q,
        &caller,
        &headers,
        body.clone(),
        body_end.as_ref(),
    )
    .await;
    match result {
        Ok(cid) => Ok(Json(Uploaded { cid })),
        Err(e) => {
            // A client waiting for `100 Continue` has sent nothing: nothing to drain.
            if body_touched || !expects_continue {
                drain(body).await;
            }
            let mut resp = e.into_response();
            resp.headers_mut()
                .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
            Err(resp)
        }
    }
}

/// Reads the form and stores the file; says whether the body was read at all.
async fn receive(
    app: &App,
    target: &str,
    q: UploadQuery,
    caller: &stratus_model::auth::Caller,
    headers: &HeaderMap,
    body: SharedBody,
    body_end: Option<&BodyEnd>,
) -> (MemoResult<String>, bool) {
    let early = async {
        check_target(app, target)?;
        let profile = match q.profile.as_deref() {
            None | Some("") => None,
            Some(p) => Some(Profile::by_name(p).ok_or_else(|| {
                MemoError::new(
                    Kind::BadRequest,
                    format!("unknown profile {p}; use memo, kubo, kubo-v0 or unixfs-v1-2025"),
                )
            })?),
        };
        let ctype = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let boundary = form::boundary_of(ctype).ok_or_else(|| {
            MemoError::new(
                Kind::BadRequest,
                "Content-Type must be multipart/form-data with a boundary",
            )
        })?;
        // A declared length far beyond the space left is refused before any byte is read.
        if let Some(len) = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            let usage = app.storage.usage(&caller.account.id, target).await?;
            let (free, extra) = app.storage.limit(&caller.account.id, target).await?;
            let left = free.saturating_add(extra).saturating_sub(usage.used);
            if len > left.saturating_add(1 << 20) {
                return Err(stratus_model::Error::QuotaExceeded {
                    used: usage.used,
                    limit: free.saturating_add(extra),
                    wanted: len,
                }
                .into());
            }
        }
        Ok::<_, MemoError>((profile, boundary))
    };
    let (profile, boundary) = match early.await {
        Ok(v) => v,
        Err(e) => return (Err(e), false),
    };
    // Largest form field other than `file`.
    const FIELD_LIMIT: usize = 64 << 10;
    let mut form = Form::new(body.clone(), &boundary);
    let malformed = |why: &dyn std::fmt::Display| {
        MemoError::new(Kind::BadRequest, format!("malformed multipart body: {why}"))
    };
    let bad = |e: FormError| malformed(&e.0);
    let result = async {
        let mut upload = None;
        while let Some(part) = form.next_part().await.map_err(bad)? {
            if part.name != "file" {
                // Other fields (the screenshot's `paytype`) are read and ignored.
                let mut size = 0;
                while let Some(chunk) = form.chunk().await.map_err(bad)? {
                    size += chunk.len();
                    if size > FIELD_LIMIT {
                        return Err(malformed(&format_args!(
                            "field {:?} is larger than {} KiB",
                            part.name,
                            FIELD_LIMIT >> 10
                        )));
                    }
                }
                continue;
            }
            if upload.is_some() {
                return Err(MemoError::new(Kind::BadRequest, "more than one file field"));
            }
            let name = clean_name(part.filename.as_deref());
            let mut up = app
                .storage
                .begin_upload(
                    &caller.account.id,
                    target,
                    name.as_deref().unwrap_or(""),
                    profile,
                )
                .await?;
            while let Some(chunk) = form.chunk().await.map_err(bad)? {
                up.write(chunk).await?;
            }
            upload = Some(up);
        }
        let up =
            upload.ok_or_else(|| MemoError::new(Kind::BadRequest, "the form has no file field"))?;
        // The closing boundary is not the end of the request: only a body that ended where its
        // Content-Length (or last chunk) says it ends is published.
        read_to_end(body, body_end).await?;
        Ok(up.finish().await?.cid)
    }
    .await;
    (result, true)
}

/// Most bytes read after the closing boundary (the epilogue, ignored).
const MAX_EPILOGUE_BYTES: usize = 64 << 10;

/// Reads what follows the closing boundary to the body's end, and checks with the connection
/// that the body ended where the request said it would (not where the client hung up).
async fn read_to_end(mut body: SharedBody, body_end: Option<&BodyEnd>) -> MemoResult<()> {
    use futures::StreamExt;
    let cut = |why: &dyn std::fmt::Display| {
        MemoError::new(
            Kind::BadRequest,
            format!("the request body was cut short: {why}"),
        )
    };
    let mut left = MAX_EPILOGUE_BYTES;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| cut(&e))?;
        left = left.checked_sub(chunk.len()).ok_or_else(|| {
            MemoError::new(
                Kind::BadRequest,
                format!(
                    "malformed multipart body: more than {} KiB after the closing boundary",
                    MAX_EPILOGUE_BYTES >> 10
                ),
            )
        })?;
    }
    if body_end.is_some_and(|e| !e.reached()) {
        return Err(cut(&"it did not reach its announced length"));
    }
    Ok(())
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    /// Page size; `max-keys`/`MaxKeys` as S3 clients say it. Default 1,000, at most 10,000.
    #[serde(alias = "max-keys", alias = "MaxKeys", alias = "maxkeys")]
    pub(crate) limit: Option<u32>,
    /// Where the previous page ended (its `NextAfter`), or a CID; `marker` as S3 clients say it.
    #[serde(alias = "marker", alias = "Marker")]
    pub(crate) after: Option<String>,
}

#[derive(Serialize)]
struct UserDefined {
    encryption: &'static str,
    etag: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ObjectOut {
    name: String,
    size: u64,
    cid: String,
    mod_time: String,
    user_defined: UserDefined,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Listing {
    address: String,
    storage: String,
    object: Vec<ObjectOut>,
    /// Present when more objects follow: pass it as `after` for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<String>,
}

/// RFC 3339 UTC with second precision, as the original renders `ModTime`.
pub(crate) fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// `GET /{target}/listobjects[?limit=&after=]`.
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    P(target): P<String>,
    Q(q): Q<ListQuery>,
    MemoCaller(caller): MemoCaller,
) -> MemoResult<Json<Listing>> {
    check_target(&app, &target)?;
    if let Some(a) = q.after.as_deref().filter(|a| !a.is_empty()) {
        check_after(a)?;
    }
    let page = app
        .storage
        .list(&caller.account.id, &target, q.limit, q.after.as_deref())
        .await?;
    Ok(Json(Listing {
        address: caller.address_text(),
        storage: target,
        object: page
            .objects
            .into_iter()
            .map(|o| ObjectOut {
                name: o.name,
                size: o.size,
                cid: o.cid,
                mod_time: rfc3339(o.created_at),
                user_defined: UserDefined {
                    encryption: "none",
                    etag: "cid",
                },
            })
            .collect(),
        next_after: page.next,
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Space {
    used: String,
    available: String,
    free: String,
    files: String,
}

/// `GET /{target}/storage` → `{"Used","Available","Free","Files"}` as decimal strings.
pub(crate) async fn space(
    State(app): State<Arc<App>>,
    P(target): P<String>,
    MemoCaller(caller): MemoCaller,
) -> MemoResult<Json<Space>> {
    check_target(&app, &target)?;
    let usage = app.storage.usage(&caller.account.id, &target).await?;
    let (free, extra) = app.storage.limit(&caller.account.id, &target).await?;
    Ok(Json(Space {
        used: usage.used.to_string(),
        available: extra.to_string(),
        free: free.to_string(),
        files: usage.files.to_string(),
    }))
}

#[derive(Serialize)]
pub(crate) struct Deleted {
    state: &'static str,
    cid: String,
}

#[derive(Deserialize)]
pub(crate) struct DeleteQuery {
    /// Only the record with this name (else every record of the CID).
    name: Option<String>,
}

/// `DELETE /{target}/{cid}[?name=]`: removes the caller's records of the CID (or the one with
/// that name).
pub(crate) async fn delete(
    State(app): State<Arc<App>>,
    P((target, cid)): P<(String, String)>,
    Q(q): Q<DeleteQuery>,
    MemoCaller(caller): MemoCaller,
) -> MemoResult<Json<Deleted>> {
    check_target(&app, &target)?;
    let parsed = parse_cid("", &cid)?;
    let canonical = parsed.to_string();
    app.storage
        .delete(
            &caller.account.id,
            &target,
            &canonical,
            q.name.as_deref().filter(|n| !n.is_empty()),
        )
        .await
        .map_err(|e| match e {
            stratus_model::Error::NotFound(_) => match q.name.as_deref() {
                Some(n) if !n.is_empty() => MemoError::new(
                    Kind::NotFound,
                    format!("you store no object {canonical} named {n:?}"),
                ),
                _ => MemoError::new(Kind::NotFound, format!("you store no object {canonical}")),
            },
            other => other.into(),
        })?;
    Ok(Json(Deleted {
        state: "success",
        cid: canonical,
    }))
}
