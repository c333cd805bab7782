//! The parsers of this dialect that read untrusted bytes, as plain functions for the fuzz
//! targets (`crates/fuzz`). Not an API: each function runs exactly the code a request runs (the
//! body and query extractors, then the handler's own checks) and returns what the handler would
//! hand to the core; nothing here is used by the server itself.

use std::time::Duration;

use axum::body::Body;
use futures::executor::block_on;
use serde::de::DeserializeOwned;
use stratus_model::compute::{MappingRequest, SandboxRequest};

use crate::error::CsError;

/// `(username, password)` of `loginWithClient` and `register`.
pub fn credentials(body: &[u8]) -> Result<(String, String), String> {
    let c: crate::user::Credentials = json(body)?;
    Ok((c.username, c.password))
}

/// `(old, new)` of `PUT /v1/user/password`.
pub fn password_change(body: &[u8]) -> Result<(String, String), String> {
    let p: crate::user::PasswordChange = json(body)?;
    Ok((p.old, p.new))
}

/// What `POST /v1/sandbox` hands to the core.
pub fn sandbox(body: &[u8]) -> Result<SandboxRequest, String> {
    crate::compute::sandbox_body(json(body)?).map_err(describe)
}

/// What `POST /v1/instance` hands to the core.
pub fn instance(body: &[u8]) -> Result<SandboxRequest, String> {
    crate::compute::sandbox_request(json(body)?, Vec::new()).map_err(describe)
}

/// The instance id and mapping of `POST /v1/network-mappings`.
pub fn mapping_create(body: &[u8]) -> Result<(String, MappingRequest), String> {
    crate::compute::mapping_create_request(json(body)?).map_err(describe)
}

/// What `PUT /v1/network-mappings/{id}` asks to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingChange {
    pub name: Option<String>,
    pub computer_port: Option<i64>,
    pub protocol: Option<String>,
}

/// The changes of `PUT /v1/network-mappings/{id}`.
pub fn mapping_update(body: &[u8]) -> Result<MappingChange, String> {
    let u: crate::compute::MappingUpdate = json(body)?;
    Ok(MappingChange {
        name: u.name,
        computer_port: u.computer_port.0,
        protocol: u.protocol,
    })
}

/// `(address, nonce, domain, signature)` of `POST /v1/user/wallet`.
pub fn link_wallet(body: &[u8]) -> Result<(String, String, Option<String>, String), String> {
    let l: crate::billing::LinkRequest = json(body)?;
    Ok((l.address, l.nonce, l.domain, l.signature))
}

/// The status code and timeout of `GET /v1/instance/{id}/wait?…`.
pub fn wait_query(query: &str) -> Result<(i64, Duration), String> {
    let q: crate::compute::WaitQuery = stratus_api_request::fuzz_query_string(query)?;
    let (status, timeout) = crate::compute::wait_request(&q).map_err(describe)?;
    Ok((status.code(), timeout))
}

/// The status filter of `GET /v1/instance?status=` (`None`: all).
pub fn instance_list_query(query: &str) -> Result<Option<i64>, String> {
    let q: crate::compute::ListQuery = stratus_api_request::fuzz_query_string(query)?;
    crate::compute::list_status(&q)
        .map(|s| s.map(|s| s.code()))
        .map_err(describe)
}

/// The query strings of the paged and catalog routes, read by their extractors.
pub fn other_queries(query: &str) -> Vec<Result<(), String>> {
    vec![
        stratus_api_request::fuzz_query_string::<crate::billing::PageQuery>(query).map(drop),
        stratus_api_request::fuzz_query_string::<crate::catalog::PriceQuery>(query).map(drop),
        stratus_api_request::fuzz_query_string::<crate::compute::MappingListQuery>(query).map(drop),
    ]
}

/// A body read by the dialect's `Body` extractor.
fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    block_on(stratus_api_request::json_body(Body::from(body.to_vec())))
        .map_err(|e| describe(e.into()))
}

fn describe(e: CsError) -> String {
    format!("{} {} {}", e.status.as_u16(), e.reason, e.message)
}
