//! MEMO errors. The body is `{"Code":…,"Description":…,"HTTPStatusCode":…}`; the description is
//! the code's fixed text followed by the cause in parentheses, as the original renders it
//! (`Authentication Failed (Token is Null)`). Authentication failures carry a fresh nonce in a
//! `{"Nonce":…,"Error":{…}}` wrapper.
//!
//! Internal errors and unavailable dependencies never show their cause: the parentheses hold the
//! request id under which it is logged (and, when unavailable, which capability is).

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{HeaderValue, StatusCode};
use serde::Serialize;
use stratus_api_request::{request_id, BodyError};
use stratus_model::{AuthFailure, Error, Field};

/// One row of the document's error table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    BadRequest,
    Authentication,
    NotFound,
    MethodNotAllowed,
    TooManyRequests,
    PayloadTooLarge,
    Internal,
    /// 516: storing failed (including "insufficient space").
    Storage,
    /// 517: address missing.
    Address,
    /// 518: storage target not supported.
    StorageNotSupport,
    /// 519: balance too low.
    Balance,
    /// 520: the chain is not reachable.
    Eth,
    Unavailable,
}

impl Kind {
    fn parts(self) -> (u16, &'static str, &'static str) {
        match self {
            Kind::BadRequest => (400, "InvalidArgument", "Invalid Argument"),
            Kind::Authentication => (401, "Authentication", "Authentication Failed"),
            Kind::NotFound => (404, "NoSuchObject", "The specified object does not exist"),
            Kind::MethodNotAllowed => (
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource",
            ),
            Kind::TooManyRequests => (429, "TooManyRequests", "Too Many Requests"),
            Kind::PayloadTooLarge => (413, "EntityTooLarge", "Entity Too Large"),
            Kind::Internal => (
                500,
                "InternalError",
                "We encountered an internal error, please try again.",
            ),
            Kind::Storage => (516, "Storage", "Error storing file"),
            Kind::Address => (517, "Address", "Address Error"),
            Kind::StorageNotSupport => (518, "Storage", "Storage Error"),
            Kind::Balance => (519, "Balance", "Balance Error"),
            Kind::Eth => (520, "Eth", "Eth Error"),
            Kind::Unavailable => (503, "ServiceUnavailable", "Service Unavailable"),
        }
    }
}

/// An error in the MEMO format.
#[derive(Debug)]
pub struct MemoError {
    pub kind: Kind,
    pub detail: Option<String>,
    /// When set, the body is wrapped with this fresh nonce.
    pub nonce: Option<String>,
    pub retry_after: Option<u64>,
}

impl MemoError {
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        MemoError {
            kind,
            detail: Some(detail.into()),
            nonce: None,
            retry_after: None,
        }
    }

    /// Wraps the error with a fresh nonce (authentication failures).
    pub fn with_nonce(mut self, nonce: String) -> Self {
        self.nonce = Some(nonce);
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.kind.parts().0).expect("table statuses are valid")
    }

    pub fn is_auth(&self) -> bool {
        self.kind == Kind::Authentication
    }

    fn body(&self) -> ApiError {
        let (status, code, text) = self.kind.parts();
        ApiError {
            code,
            description: match &self.detail {
                Some(d) => format!("{text} ({d})"),
                None => text.to_string(),
            },
            status,
        }
    }
}

#[derive(Serialize)]
struct ApiError {
    #[serde(rename = "Code")]
    code: &'static str,
    #[serde(rename = "Description")]
    description: String,
    #[serde(rename = "HTTPStatusCode")]
    status: u16,
}

#[derive(Serialize)]
struct Wrapped {
    #[serde(rename = "Nonce")]
    nonce: String,
    #[serde(rename = "Error")]
    error: ApiError,
}

impl IntoResponse for MemoError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = self.body();
        let kind = self.kind;
        let mut resp = match self.nonce {
            Some(nonce) => (status, Json(Wrapped { nonce, error: body })).into_response(),
            None => (status, Json(body)).into_response(),
        };
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(s));
        }
        if status.canonical_reason().is_none() {
            // 516–520 have no standard phrase: send the table's text rather than none.
            let (_, _, text) = kind.parts();
            if let Ok(p) = hyper::ext::ReasonPhrase::try_from(text.as_bytes().to_vec()) {
                resp.extensions_mut().insert(p);
            }
        }
        resp
    }
}

impl From<AuthFailure> for MemoError {
    fn from(f: AuthFailure) -> Self {
        // The document's table names three token failures: `Token is Null`, `Invalid token
        // payload` and `Invalid token`. Every other reason a token is refused (expired, revoked,
        // the wrong type, an unknown account) is `Invalid token`.
        let text = match f {
            AuthFailure::MissingToken => "Token is Null",
            AuthFailure::MalformedToken => "Invalid token payload",
            AuthFailure::BadSignature
            | AuthFailure::Expired
            | AuthFailure::Revoked
            | AuthFailure::WrongTokenType
            | AuthFailure::UnknownAccount => "Invalid token",
            AuthFailure::BadCredentials => "wrong username or password",
            AuthFailure::EmptyParameter => "There is an empty parameter",
            AuthFailure::WrongDomain => "Got wrong domain",
            AuthFailure::WrongNonce => "Got wrong nonce",
            AuthFailure::WrongAddress => "Got wrong address",
            AuthFailure::WrongSignature => "Got wrong signature",
        };
        MemoError::new(Kind::Authentication, text)
    }
}

/// MEMO's name of a field the core refused: its query parameter or form field.
fn wire_field(f: Field) -> &'static str {
    match f {
        Field::Package => "pkgid",
        Field::Quantity | Field::Amount => "amount",
        Field::Reference => "reference",
        Field::ListAfter => "after",
        Field::Range => "range",
        Field::File => "file",
        // No MEMO request carries these.
        Field::Username
        | Field::Password
        | Field::OldPassword
        | Field::StorageTarget
        | Field::InstanceName
        | Field::Spec
        | Field::Image
        | Field::Duration
        | Field::PublicKey
        | Field::InstancePassword
        | Field::Compose
        | Field::Mappings
        | Field::MappingName
        | Field::MappingProtocol
        | Field::MappingPort => f.name(),
    }
}

impl From<Error> for MemoError {
    fn from(e: Error) -> Self {
        match e {
            Error::Unauthenticated(f) => f.into(),
            Error::Invalid { field, message } => MemoError::new(
                Kind::BadRequest,
                format!("{}: {message}", wire_field(field)),
            ),
            Error::Forbidden(m) => MemoError::new(Kind::Authentication, m),
            Error::NotFound(what) => MemoError::new(Kind::NotFound, format!("{what} not found")),
            Error::Conflict(m) => MemoError::new(Kind::BadRequest, m),
            Error::RateLimited { retry_after_secs } => {
                let mut e = MemoError::new(
                    Kind::TooManyRequests,
                    format!("retry in {retry_after_secs} s"),
                );
                e.retry_after = Some(retry_after_secs);
                e
            }
            e @ Error::InsufficientBalance { .. } => MemoError::new(Kind::Balance, e.to_string()),
            Error::QuotaExceeded { .. } => MemoError::new(Kind::Storage, "insufficient space"),
            Error::StorageFull(m) => {
                tracing::error!(error = %m, "the disk is full");
                MemoError::new(Kind::Storage, "insufficient space")
            }
            Error::Unavailable { what, cause } => {
                let id = request_id::report_unavailable(&what, &cause);
                MemoError::new(Kind::Unavailable, format!("{what}; request id {id}"))
            }
            Error::Internal(m) => {
                let id = request_id::report_internal(&m);
                MemoError::new(Kind::Internal, format!("request id {id}"))
            }
        }
    }
}

impl From<BodyError> for MemoError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge(_) => MemoError::new(Kind::PayloadTooLarge, e.to_string()),
            _ => MemoError::new(Kind::BadRequest, e.to_string()),
        }
    }
}

pub type MemoResult<T> = Result<T, MemoError>;
