//! `/v1/sandbox`, `/v1/instance…`, `/v1/network-mappings…`: the document's sandbox call and the
//! original's instance and mapping routes. Another account's instance or mapping is a 404.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stratus_app::App;
use stratus_model::compute::{Instance, Mapping, MappingRequest, SandboxRequest, Status};
use stratus_model::Error;

use crate::error::{CsError, CsResult};
use crate::extract::{done, ok, Body, CsCaller, Success, P, Q};

/// A JSON integer that may also arrive as a numeric string.
#[derive(Debug, Clone, Default)]
pub struct Int(pub Option<i64>);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Int(match Value::deserialize(d)? {
            Value::Number(n) => Some(
                n.as_i64()
                    .ok_or_else(|| serde::de::Error::custom("not a whole number"))?,
            ),
            Value::String(s) if s.trim().is_empty() => None,
            Value::String(s) => Some(
                s.trim()
                    .parse()
                    .map_err(|_| serde::de::Error::custom("not a whole number"))?,
            ),
            Value::Null => None,
            _ => return Err(serde::de::Error::custom("not a whole number")),
        }))
    }
}

fn required(field: &'static str, v: &Int) -> CsResult<i64> {
    v.0.ok_or_else(|| CsError::invalid(field, "is required"))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct InstanceIn {
    #[serde(alias = "spec_id")]
    #[serde(rename = "specId")]
    spec_id: Int,
    #[serde(alias = "image_id")]
    #[serde(rename = "imageId")]
    image_id: Int,
    duration: Int,
    name: String,
    #[serde(alias = "public_key")]
    #[serde(rename = "publicKey")]
    public_key: Option<String>,
    password: Option<String>,
    #[serde(alias = "docker_compose")]
    #[serde(rename = "dockerCompose")]
    docker_compose: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct MappingIn {
    name: String,
    protocol: String,
    #[serde(alias = "computer_port")]
    #[serde(rename = "computerPort")]
    computer_port: Int,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SandboxIn {
    instance: Option<InstanceIn>,
    #[serde(alias = "network_mapping", alias = "networkMappings")]
    #[serde(rename = "networkMapping")]
    network_mapping: Vec<MappingIn>,
}

/// Decodes the base64 compose file (standard or URL-safe, padded or not, line breaks allowed).
fn decode_compose(b64: Option<&str>) -> CsResult<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text: String = b64
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if text.is_empty() {
        return Err(CsError::invalid(
            "instance.dockerCompose",
            "is required (base64 of a docker-compose.yml)",
        ));
    }
    let bytes = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(&text).ok())
        .ok_or_else(|| CsError::invalid("instance.dockerCompose", "is not valid base64"))?;
    String::from_utf8(bytes)
        .map_err(|_| CsError::invalid("instance.dockerCompose", "does not decode to UTF-8 text"))
}

fn mapping_requests(list: Vec<MappingIn>) -> CsResult<Vec<MappingRequest>> {
    list.into_iter()
        .map(|m| {
            Ok(MappingRequest {
                name: m.name,
                protocol: m.protocol,
                computer_port: required("networkMapping.computerPort", &m.computer_port)?,
            })
        })
        .collect()
}

pub(crate) fn sandbox_request(i: InstanceIn, mappings: Vec<MappingIn>) -> CsResult<SandboxRequest> {
    Ok(SandboxRequest {
        spec_id: required("instance.specId", &i.spec_id)?,
        image_id: required("instance.imageId", &i.image_id)?,
        duration_months: i.duration.0.unwrap_or(1),
        compose: decode_compose(i.docker_compose.as_deref())?,
        name: i.name,
        public_key: i.public_key.filter(|k| !k.trim().is_empty()),
        password: i.password,
        mappings: mapping_requests(mappings)?,
    })
}

/// The request a `POST /v1/sandbox` body makes.
pub(crate) fn sandbox_body(req: SandboxIn) -> CsResult<SandboxRequest> {
    let instance = req
        .instance
        .ok_or_else(|| CsError::invalid("instance", "is required"))?;
    sandbox_request(instance, req.network_mapping)
}

/// Maps "not found" to a 404 with a precise reason.
fn not_found(reason: &'static str) -> impl Fn(Error) -> CsError {
    move |e| match e {
        Error::NotFound(what) => CsError::not_found(reason, format!("{what} not found")),
        Error::Conflict(m) => CsError::new(StatusCode::CONFLICT, "INSTANCE_STATE", m),
        other => other.into(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SandboxMappingOut {
    id: String,
    name: String,
    computer_port: u16,
    server_ip: String,
    server_port: u16,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SandboxOut {
    instance_id: String,
    network_mappings: Vec<SandboxMappingOut>,
}

/// `POST /v1/sandbox`: one call creates the machine and its mappings; the answer carries every
/// mapping's public address at once (the machine boots in the background).
pub async fn sandbox(
    State(app): State<Arc<App>>,
    CsCaller(c): CsCaller,
    Body(req): Body<SandboxIn>,
) -> CsResult<impl IntoResponse> {
    let req = sandbox_body(req)?;
    let (i, maps) = app.compute.create_sandbox(&c.account.id, req).await?;
    Ok(ok(SandboxOut {
        instance_id: i.id,
        network_mappings: maps
            .into_iter()
            .map(|m| SandboxMappingOut {
                id: m.id,
                name: m.name,
                computer_port: m.computer_port,
                server_ip: m.server_ip,
                server_port: m.server_port,
            })
            .collect(),
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MappingOut {
    id: String,
    name: String,
    instance_id: String,
    /// The original's name for the instance id.
    computer_id: String,
    protocol: String,
    computer_port: u16,
    instance_port: u16,
    server_ip: String,
    server_port: u16,
    gateway_ip: String,
    gateway_port: u16,
    /// 2: active.
    status: i32,
    created_time: String,
}

fn mapping_out(m: Mapping) -> MappingOut {
    MappingOut {
        computer_id: m.instance_id.clone(),
        instance_id: m.instance_id,
        id: m.id,
        name: m.name,
        protocol: m.protocol,
        computer_port: m.computer_port,
        instance_port: m.computer_port,
        gateway_ip: m.server_ip.clone(),
        gateway_port: m.server_port,
        server_ip: m.server_ip,
        server_port: m.server_port,
        status: 2,
        created_time: m.created_at.to_string(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceOut {
    id: String,
    name: String,
    status: i64,
    status_name: &'static str,
    status_reason: String,
    /// Unix milliseconds as strings (the original's int64 convention).
    expiration_time: String,
    created_time: String,
    spec_id: i64,
    core: u32,
    memory: u32,
    image_id: i64,
    image_name: String,
    duration: u32,
    charged: String,
    network_mappings: Vec<MappingOut>,
    stats: Vec<Value>,
    container_id: String,
    command: String,
    agent_id: String,
}

async fn instance_out(app: &App, i: Instance) -> CsResult<InstanceOut> {
    let maps = app.compute.mappings_of(&i.id).await?;
    Ok(InstanceOut {
        image_name: app.compute.image_name(i.image_id),
        status: i.status.code(),
        status_name: i.status.name(),
        status_reason: i.status_reason,
        expiration_time: i.expires_at.to_string(),
        created_time: i.created_at.to_string(),
        spec_id: i.spec_id,
        core: i.cores,
        memory: i.memory_gib,
        image_id: i.image_id,
        duration: i.duration_months,
        charged: i.charged.to_string(),
        network_mappings: maps.into_iter().map(mapping_out).collect(),
        stats: Vec::new(),
        container_id: String::new(),
        command: String::new(),
        agent_id: String::new(),
        id: i.id,
        name: i.name,
    })
}

#[derive(Serialize)]
struct Created {
    id: String,
    name: String,
}

/// `POST /v1/instance`: an instance without mappings → `{id, name}`.
pub async fn create(
    State(app): State<Arc<App>>,
    CsCaller(c): CsCaller,
    Body(i): Body<InstanceIn>,
) -> CsResult<impl IntoResponse> {
    let req = sandbox_request(i, Vec::new())?;
    let (i, _) = app.compute.create_sandbox(&c.account.id, req).await?;
    Ok(ok(Created {
        id: i.id,
        name: i.name,
    }))
}

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    /// Page (from 1) and page size (default 100, at most 1,000).
    page: Option<u32>,
    size: Option<u32>,
}

fn parse_status(field: &'static str, s: &str) -> CsResult<Status> {
    s.trim()
        .parse::<i64>()
        .ok()
        .and_then(Status::from_i64)
        .ok_or_else(|| CsError::invalid(field, "must be a status code 0-10"))
}

/// The status filter of a listing: the original treats status 0 (however it is spelled: `00`,
/// `+0`) or absent as "all".
pub(crate) fn list_status(q: &ListQuery) -> CsResult<Option<Status>> {
    match q.status.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) if s.parse::<i64>() == Ok(0) => Ok(None),
        Some(s) => parse_status("status", s).map(Some),
    }
}

/// `GET /v1/instance[?status=&page=&size=]`.
pub async fn list(
    State(app): State<Arc<App>>,
    CsCaller(c): CsCaller,
    Q(q): Q<ListQuery>,
) -> CsResult<impl IntoResponse> {
    let status = list_status(&q)?;
    let mut out = Vec::new();
    let (page, size) = (q.page.unwrap_or(1), q.size.unwrap_or(100));
    for i in app
        .compute
        .instances(&c.account.id, status, page, size)
        .await?
    {
        out.push(instance_out(&app, i).await?);
    }
    Ok(ok(out))
}

/// `GET /v1/instance/{id}`.
pub async fn get(
    State(app): State<Arc<App>>,
    CsCaller(c): CsCaller,
    P(id): P<String>,
) -> CsResult<impl IntoResponse> {
    let r = app.compute.instance(&c.account.id, &id).await;
    instance_reply(&app, r).await
}

/// `DELETE /v1/instance/{id}`: answers with the instance (status 6 Deleting, or 7 once gone).
pub async fn delete(
    State(app): State<Arc<App>>,
    CsCaller(c): CsCaller,
    P(id): P<String>,
) -> CsResult<impl IntoResponse> {
    let r = app.compute.delete(&c.account.id, &id).await;
    instance_reply(&app, r).await
}

/// `PUT /v1/instance/{id}/{start|stop|restart}`: answers with the instance in its new status.
pub async fn action(
    State(app): State<Arc<App>>,
    CsCaller(c): CsCaller,
    P((id, action)): P<(String, String)>,
) -> CsResult<impl IntoResponse> {
    let r = match action.as_str() {
        "start" => app.compute.start(&c.account.id, &id).await,
        "stop" => app.compute.stop(&c.account.id, &id).await,
        "restart" => app.compute.restart(&c.account.id, &id).await,
        _ => return Err(CsError::not_found("NOT_FOUND", "no such route")),
    };
    instance_reply(&app, r).await
}

/// The success envelope around an instance, or its error (404 `INSTANCE_NOT_FOUND`, 409).
async fn instance_reply(
    app: &App,
    r: stratus_model::Result<Instance>,
) -> CsResult<Json<Success<InstanceOut>>> {
    let i = r.map_err(not_found("INSTANCE_NOT_FOUND"))?;
    Ok(ok(instance_out(app, i).await?))
}

#[derive(Deserialize)]
pub struct WaitQuery {
    status: Option<String>,
    timeout: Option<String>,
}

/// The status to wait for (1 when absent) and how long (30 s when absent, at most 300 s).
pub(crate) fn wait_request(q: &WaitQuery) -> CsResult<(Status, Duration)> {
    let want = parse_status("status", q.status.as_deref().unwrap_or("1"))?;
    let secs: f64 = match q.timeout.as_deref() {
        None | Some("") => 30.0,
        Some(t) => t
            .trim()
            .parse()
            .ok()
            .filter(|t: &f64| t.is_finite() && *t >= 0.0)
            .ok_or_else(|| CsError::invalid("timeout", "must be a number of seconds"))?,
    };
    Ok((want, Duration::from_secs_f64(secs.min(300.0))))
}

/// `GET /v1/instance/{id}/wait?status=1&timeout=30`: returns when the instance reaches the
/// status (200), a status it cannot leave (409), or the timeout (408).
pub async fn wait(
    State(app): State<Arc<App>>,
    CsCaller(c): CsCaller,
    P(id): P<String>,
    Q(q): Q<WaitQuery>,
) -> CsResult<axum::response::Response> {
    let (want, timeout) = wait_request(&q)?;
    let i = app
        .compute
        .wait(&c.account.id, &id, want, timeout)
        .await
        .map_err(not_found("INSTANCE_NOT_FOUND"))?;
    if i.status == want {
        return Ok(ok(instance_out(&app, i).await?).into_response());
    }
    let (status, reason) = if i.status.is_final() {
        (StatusCode::CONFLICT, "INSTANCE_STATE")
    } else {
        (StatusCode::REQUEST_TIMEOUT, "WAIT_TIMEOUT")
    };
    let mut e = CsError::new(
        status,
        reason,
        format!(
            "instance {} is {} ({}){}",
            i.id,
            i.status.name(),
            i.status.code(),
            if i.status_reason.is_empty() {
                String::new()
            } else {
                format!(": {}", i.status_reason)
            }
        ),
    );
    e.metadata.insert("status", i.status.code().to_string());
    Err(e)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct MappingCreate {
    name: String,
    protocol: String,
    #[serde(alias = "computer_id", alias = "instanceId", alias = "instance_id")]
    #[serde(rename = "computerId")]
    computer_id: String,
    #[serde(alias = "computer_port")]
    #[serde(rename = "computerPort")]
    computer_port: Int,
}

/// The original answers mapping writes with the mapping under `networkMapping`; clients of the
/// usual envelope read `data`: both are sent.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MappingReply {
    code: u16,
    message: &'static str,
    data: MappingOut,
    network_mapping: MappingOut,
}

fn mapping_reply(m: Mapping) -> Json<MappingReply> {
    Json(MappingReply {
        code: 200,
        message: "success",
        data: mapping_out(m.clone()),
        network_mapping: mapping_out(m),
    })
}

/// The instance id and the mapping a `POST /v1/network-mappings` body asks for.
pub(crate) fn mapping_create_request(req: MappingCreate) -> CsResult<(String, MappingRequest)> {
    let instance = req.computer_id.trim();
    if instance.is_empty() {
        return Err(CsError::invalid(
            "computerId",
            "is required (the instance id)",
        ));
    }
    Ok((
        instance.to_string(),
        MappingRequest {
            name: req.name,
            protocol: req.protocol,
            computer_port: required("computerPort", &req.computer_port)?,
        },
    ))
}

/// `POST /v1/network-mappings {name, protocol, computerId, computerPort}`.
pub async fn create_mapping(
    State(app): State<Arc<App>>,
    CsCaller(c): CsCaller,
    Body(req): Body<MappingCreate>,
) -> CsResult<impl IntoResponse> {
    let (instance, req) = mapping_create_request(req)?;
    let m = app
        .compute
        .create_mapping(&c.account.id, &instance, req)
        .await
        .map_err(not_found("INSTANCE_NOT_FOUND"))?;
    Ok(mapping_reply(m))
}

#[derive(Deserialize)]
pub struct MappingListQuery {
    page: Option<String>,
    size: Option<String>,
    #[serde(rename = "instanceId", alias = "computerId", alias = "instance_id")]
    instance_id: Option<String>,
}

#[derive(Serialize)]
struct MappingPage {
    list: Vec<MappingOut>,
    total: u64,
    page: u32,
    size: u32,
}

/// `GET /v1/network-mappings[/page]?page=&size=&instanceId=` → `{list, total, page, size}`.
pub async fn list_mappings(
    State(app): State<Arc<App>>,
    CsCaller(c): CsCaller,
    Q(q): Q<MappingListQuery>,
) -> CsResult<impl IntoResponse> {
    let num = |f: &'static str, v: Option<&str>, d: u32| -> CsResult<u32> {
        match v.map(str::trim) {
            None | Some("") => Ok(d),
            Some(s) => s
                .parse()
                .map_err(|_| CsError::invalid(f, "must be a whole number")),
        }
    };
    let page = num("page", q.page.as_deref(), 1)?.max(1);
    let size = num("size", q.size.as_deref(), 20)?.clamp(1, 1000);
    let instance = q
        .instance_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let (list, total) = app
        .compute
        .mappings(&c.account.id, instance, page, size)
        .await?;
    Ok(ok(MappingPage {
        list: list.into_iter().map(mapping_out).collect(),
        total,
        page,
        size,
    }))
}

/// `GET /v1/network-mappings/{id}`.
pub async fn get_mapping(
    State(app): State<Arc<App>>,
    CsCaller(c): CsCaller,
    P(id): P<String>,
) -> CsResult<impl IntoResponse> {
    let m = app
        .compute
        .mapping(&c.account.id, &id)
        .await
        .map_err(not_found("NETWORK_MAPPING_NOT_FOUND"))?;
    Ok(mapping_reply(m))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct MappingUpdate {
    pub(crate) name: Option<String>,
    pub(crate) protocol: Option<String>,
    #[serde(alias = "computer_port")]
    #[serde(rename = "computerPort")]
    pub(crate) computer_port: Int,
}

/// `PUT /v1/network-mappings/{id} {name?, computerPort?}`.
pub async fn update_mapping(
    State(app): State<Arc<App>>,
    CsCaller(c): CsCaller,
    P(id): P<String>,
    Body(u): Body<MappingUpdate>,
) -> CsResult<impl IntoResponse> {
    let m = app
        .compute
        .update_mapping(&c.account.id, &id, u.name, u.computer_port.0, u.protocol)
        .await
        .map_err(not_found("NETWORK_MAPPING_NOT_FOUND"))?;
    Ok(mapping_reply(m))
}

/// `DELETE /v1/network-mappings/{id}`: frees the port.
pub async fn delete_mapping(
    State(app): State<Arc<App>>,
    CsCaller(c): CsCaller,
    P(id): P<String>,
) -> CsResult<impl IntoResponse> {
    app.compute
        .delete_mapping(&c.account.id, &id)
        .await
        .map_err(not_found("NETWORK_MAPPING_NOT_FOUND"))?;
    Ok(done())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(status: Option<&str>) -> CsResult<Option<Status>> {
        list_status(&ListQuery {
            status: status.map(str::to_string),
            page: None,
            size: None,
        })
    }

    #[test]
    fn status_zero_lists_everything_however_it_is_spelled() {
        // Found by the computeshare_json fuzzer: `status=000` filtered on Creating (0) while
        // `status=0` listed every instance.
        for zero in ["0", "000", " 00 ", "+0", "-0"] {
            assert!(matches!(listing(Some(zero)), Ok(None)), "{zero:?}");
        }
        assert!(matches!(listing(None), Ok(None)));
        assert!(matches!(listing(Some("")), Ok(None)));
        assert!(matches!(listing(Some("1")), Ok(Some(s)) if s.code() == 1));
        assert!(matches!(listing(Some("01")), Ok(Some(s)) if s.code() == 1));
        assert!(listing(Some("11")).is_err());
        assert!(listing(Some("x")).is_err());
    }
}
