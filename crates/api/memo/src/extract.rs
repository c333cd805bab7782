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
            Err(e) if e.is_auth() => Err(e.with_nonce(app.auth.courtesy_nonce())),
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
