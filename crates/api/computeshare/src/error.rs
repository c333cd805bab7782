//! ComputeShare errors: `{"code":<status>,"reason":"<UPPER_SNAKE>","message":"…","metadata":{}}`
//! with the HTTP status equal to `code`. The 401 messages are those of the original (go-kratos
//! JWT middleware): `JWT token is missing`, `Token is invalid`, `JWT token has expired`.
//!
//! Internal errors and unavailable dependencies never show their cause: the message is a generic
//! text (for an unavailable capability, which one) with the request id under which the cause is
//! logged, also given as `metadata.requestId`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{HeaderValue, StatusCode};
use serde::Serialize;
use stratus_api_request::{request_id, BodyError};
use stratus_model::{AuthFailure, Error, Field};

/// An error in the ComputeShare format.
#[derive(Debug)]
pub struct CsError {
    pub status: StatusCode,
    pub reason: Cow<'static, str>,
    pub message: String,
    pub metadata: BTreeMap<&'static str, String>,
    pub retry_after: Option<u64>,
}

impl CsError {
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        CsError {
            status,
            reason: Cow::Borrowed(reason),
            message: message.into(),
            metadata: BTreeMap::new(),
            retry_after: None,
        }
    }

    pub fn bad_request(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason, message)
    }

    pub fn not_found(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, reason, message)
    }

    /// An answer whose cause is only in the log, under request id `id`.
    fn hidden(status: StatusCode, reason: &'static str, text: &str, id: String) -> Self {
        let mut e = Self::new(status, reason, format!("{text} (request id {id})"));
        e.metadata.insert("requestId", id);
        e
    }

    /// A 400 naming the offending field.
    pub fn invalid(field: &'static str, message: impl std::fmt::Display) -> Self {
        let mut e = Self::bad_request("INVALID_ARGUMENT", format!("{field}: {message}"));
        e.metadata.insert("field", field.to_string());
        e
    }
}

/// ComputeShare's name of a field the core refused: its path in the request body.
fn wire_field(f: Field) -> &'static str {
    match f {
        Field::Username => "username",
        Field::Password => "password",
        Field::OldPassword => "oldPassword",
        Field::InstanceName => "instance.name",
        Field::Spec => "instance.specId",
        Field::Image => "instance.imageId",
        Field::Duration => "instance.duration",
        Field::PublicKey => "instance.publicKey",
        Field::InstancePassword => "instance.password",
        Field::Compose => "instance.dockerCompose",
        Field::Mappings => "networkMapping",
        Field::MappingName => "networkMapping.name",
        Field::MappingProtocol => "networkMapping.protocol",
        Field::MappingPort => "networkMapping.computerPort",
        // The ledger's (a sandbox's charge) go by their domain names; no ComputeShare request
        // carries the others.
        Field::Amount
        | Field::Reference
        | Field::Package
        | Field::Quantity
        | Field::ListAfter
        | Field::Range
        | Field::File
        | Field::StorageTarget => f.name(),
    }
}

#[derive(Serialize)]
struct Body<'a> {
    code: u16,
    reason: &'a str,
    message: &'a str,
    metadata: &'a BTreeMap<&'static str, String>,
}

impl IntoResponse for CsError {
    fn into_response(self) -> Response {
        let body = Body {
            code: self.status.as_u16(),
            reason: &self.reason,
            message: &self.message,
            metadata: &self.metadata,
        };
        let mut resp = (self.status, Json(&body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

impl From<AuthFailure> for CsError {
    fn from(f: AuthFailure) -> Self {
        let msg = match f {
            AuthFailure::MissingToken => "JWT token is missing",
            AuthFailure::Expired => "JWT token has expired",
            AuthFailure::Revoked => "Token has been revoked",
            AuthFailure::WrongTokenType => "Token is invalid",
            AuthFailure::BadCredentials => {
                return CsError::bad_request("PASSWORD_ERROR", "wrong username or password")
            }
            // Proving a wallet (linking): the token is fine, the proof is not.
            AuthFailure::EmptyParameter => {
                return CsError::bad_request("INVALID_ARGUMENT", "There is an empty parameter")
            }
            AuthFailure::WrongDomain => return wallet_refused("Got wrong domain"),
            AuthFailure::WrongNonce => return wallet_refused("Got wrong nonce"),
            AuthFailure::WrongAddress => return wallet_refused("Got wrong address"),
            AuthFailure::WrongSignature => return wallet_refused("Got wrong signature"),
            _ => "Token is invalid",
        };
        CsError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", msg)
    }
}

/// A wallet proof that does not verify, in the words of the wallet login it comes from.
fn wallet_refused(message: &'static str) -> CsError {
    CsError::bad_request("WALLET_VERIFICATION_FAILED", message)
}

impl From<Error> for CsError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid { field, message } => CsError::invalid(wire_field(field), message),
            Error::Unauthenticated(f) => f.into(),
            Error::Forbidden(m) => CsError::new(StatusCode::FORBIDDEN, "FORBIDDEN", m),
            Error::NotFound(what) => CsError::not_found("NOT_FOUND", format!("{what} not found")),
            Error::Conflict(m) => CsError::new(StatusCode::CONFLICT, "CONFLICT", m),
            Error::RateLimited { retry_after_secs } => {
                let mut e = CsError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TOO_MANY_REQUESTS",
                    format!("too many requests, retry in {retry_after_secs} s"),
                );
                e.retry_after = Some(retry_after_secs);
                e
            }
            e @ Error::InsufficientBalance { .. } => CsError::new(
                StatusCode::PAYMENT_REQUIRED,
                "INSUFFICIENT_BALANCE",
                e.to_string(),
            ),
            e @ Error::QuotaExceeded { .. } => CsError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "QUOTA_EXCEEDED",
                e.to_string(),
            ),
            Error::StorageFull(m) => {
                tracing::error!(error = %m, "the disk is full");
                CsError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "INSUFFICIENT_STORAGE",
                    "the server is out of storage space; nothing was changed, try again later",
                )
            }
            Error::Unavailable { what, cause } => CsError::hidden(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                &what,
                request_id::report_unavailable(&what, &cause),
            ),
            Error::Internal(m) => CsError::hidden(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "internal error, please try again",
                request_id::report_internal(&m),
            ),
        }
    }
}

impl From<BodyError> for CsError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge(_) => CsError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BODY_TOO_LARGE",
                e.to_string(),
            ),
            _ => CsError::bad_request("INVALID_ARGUMENT", e.to_string()),
        }
    }
}

/// Handler result.
pub type CsResult<T> = Result<T, CsError>;
