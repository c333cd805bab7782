//! Extractors of the MEMO dialect. A failed token check answers with the wrapped error and a
//! fresh nonce, as the original did.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::request::Parts;
use stratus_app::App;
use stratus_model::auth::Caller;
use stratus_model::AuthFailure;

use crate::error::MemoError;

/// The authenticated caller.
pub struct MemoCaller(pub Caller);

impl FromRequestParts<Arc<App>> for MemoCaller {
    type Rejection = MemoError;
    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, MemoError> {
        let result = match stratus_api_request::token(&parts.headers) {
            None => Err(MemoError::from(AuthFailure::MissingToken)),
            Some(t) => app.auth.authenticate(&t).await.map_err(MemoError::from),
        };
        match result {
            Ok(c) => Ok(MemoCaller(c)),
            Err(e) if e.is_auth() => Err(e.with_nonce(
                app.auth
                    .courtesy_nonce(stratus_api_request::client_ip(parts)),
            )),
            Err(e) => Err(e),
        }
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

/// `Query` whose failure is a MEMO 400.
pub struct Q<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = MemoError;
    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, MemoError> {
        stratus_api_request::query(parts, s)
            .await
            .map(Q)
            .map_err(bad_request)
    }
}

/// `Path` whose failure is a MEMO 400.
pub struct P<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for P<T> {
    type Rejection = MemoError;
    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, MemoError> {
        stratus_api_request::path(parts, s)
            .await
            .map(P)
            .map_err(bad_request)
    }
}

fn bad_request(message: String) -> MemoError {
    MemoError::new(crate::error::Kind::BadRequest, message)
}
