//! Extractors of the ComputeShare dialect: the caller, the client address and the JSON body,
//! each failing with a [`CsError`].

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::Json;
use http::request::Parts;
use serde::de::DeserializeOwned;
use serde::Serialize;
use stratus_app::App;
use stratus_model::auth::Caller;
use stratus_model::AuthFailure;

use crate::error::CsError;

/// The authenticated caller.
pub struct CsCaller(pub Caller);

impl FromRequestParts<Arc<App>> for CsCaller {
    type Rejection = CsError;
    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, CsError> {
        let token = stratus_api_request::token(&parts.headers).ok_or(AuthFailure::MissingToken)?;
        Ok(CsCaller(app.auth.authenticate(&token).await?))
    }
}

/// The authenticated caller, by an access or a refresh token (logout).
pub struct AnyCaller(pub Caller);

impl FromRequestParts<Arc<App>> for AnyCaller {
    type Rejection = CsError;
    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, CsError> {
        let token = stratus_api_request::token(&parts.headers).ok_or(AuthFailure::MissingToken)?;
        Ok(AnyCaller(app.auth.authenticate_any(&token).await?))
    }
}

/// The client's IP address.
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(stratus_api_request::client_ip(parts)))
    }
}

/// A JSON body, whatever the declared content type.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = CsError;
    async fn from_request(req: Request, _: &S) -> Result<Self, CsError> {
        Ok(Body(stratus_api_request::json_body(req.into_body()).await?))
    }
}

/// `{"code":200,"message":"success","data":…}`.
#[derive(Serialize)]
pub struct Success<T> {
    code: u16,
    message: &'static str,
    /// `null` where there is nothing to answer with: clients always find the key.
    data: Option<T>,
}

/// Wraps `data` in the success envelope.
pub fn ok<T: Serialize>(data: T) -> Json<Success<T>> {
    Json(Success {
        code: 200,
        message: "success",
        data: Some(data),
    })
}

/// The success envelope with `"data": null`.
pub fn done() -> Json<Success<()>> {
    Json(Success {
        code: 200,
        message: "success",
        data: None,
    })
}

/// `Query` whose failure is a ComputeShare 400.
pub struct Q<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = CsError;
    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, CsError> {
        stratus_api_request::query(parts, s)
            .await
            .map(Q)
            .map_err(bad_request)
    }
}

/// `Path` whose failure is a ComputeShare 400.
pub struct P<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for P<T> {
    type Rejection = CsError;
    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, CsError> {
        stratus_api_request::path(parts, s)
            .await
            .map(P)
            .map_err(bad_request)
    }
}

fn bad_request(message: String) -> CsError {
    CsError::bad_request("INVALID_ARGUMENT", message)
}
