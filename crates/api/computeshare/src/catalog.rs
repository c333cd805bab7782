//! `/v1/compute/spec`, `/v1/compute/image`, `/v1/compute/spec/price`: the catalog from config.

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use stratus_app::App;

use crate::error::{CsError, CsResult};
use crate::extract::{ok, Q};

#[derive(Serialize)]
struct SpecOut {
    id: i64,
    /// Cores.
    core: u32,
    /// GiB.
    memory: u32,
}

/// `GET /v1/compute/spec` → `[{id, core, memory}]`.
pub async fn specs(State(app): State<Arc<App>>) -> impl IntoResponse {
    ok(app
        .config
        .compute
        .specs
        .iter()
        .map(|s| SpecOut {
            id: s.id,
            core: s.core,
            memory: s.memory,
        })
        .collect::<Vec<_>>())
}

#[derive(Serialize)]
struct ImageOut {
    id: i64,
    name: String,
    image: String,
    tag: String,
    port: u16,
}

/// `GET /v1/compute/image` → `[{id, name, image, tag, port}]`.
pub async fn images(State(app): State<Arc<App>>) -> impl IntoResponse {
    ok(app
        .config
        .compute
        .images
        .iter()
        .map(|i| ImageOut {
            id: i.id,
            name: i.name.clone(),
            image: i.image.clone(),
            tag: i.tag.clone(),
            port: i.port,
        })
        .collect::<Vec<_>>())
}

#[derive(Deserialize)]
pub struct PriceQuery {
    #[serde(rename = "specId", alias = "spec_id")]
    spec_id: Option<String>,
}

#[derive(Serialize)]
struct PriceOut {
    /// Days the price covers.
    day: u32,
    /// Price for those days, in the smallest unit of the asset.
    cycle: u128,
    /// The same, as a decimal string (JSON numbers lose precision past 2^53).
    price: String,
}

/// `GET /v1/compute/spec/price?specId=` → `{day, cycle}`: the price of a spec per 30 days.
pub async fn spec_price(
    State(app): State<Arc<App>>,
    Q(q): Q<PriceQuery>,
) -> CsResult<impl IntoResponse> {
    let raw = q
        .spec_id
        .ok_or_else(|| CsError::invalid("specId", "is required"))?;
    let id: i64 = raw
        .trim()
        .parse()
        .map_err(|_| CsError::invalid("specId", "must be a number"))?;
    let spec = app
        .config
        .compute
        .specs
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| CsError::not_found("SPEC_NOT_FOUND", format!("no spec {id}")))?;
    Ok(ok(PriceOut {
        day: 30,
        cycle: spec.price.0,
        price: spec.price.to_string(),
    }))
}
