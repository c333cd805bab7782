//! `/{mefs|ipfs}/getprice|pkginfos|buypkg|getbuypkgs|balance`: prices, packages, purchases and
//! the balance (the document lists them as "not implemented"; the shapes follow the later
//! versions of the original, with amounts as decimal strings because they overflow JSON
//! numbers).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::Json;
use http::Method;
use serde::{Deserialize, Serialize};
use stratus_app::App;
use stratus_config::PackageConfig;
use stratus_model::billing::Purchase;

use crate::error::{Kind, MemoError, MemoResult};
use crate::extract::MemoCaller;
use crate::extract::{P, Q};
use crate::storage::check_target;

const DAY_SECS: u64 = 24 * 3600;

/// `Kind` of the original: 0 for mefs, 1 for ipfs.
fn kind_of(target: &str) -> u8 {
    if target == "ipfs" {
        1
    } else {
        0
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Price {
    /// Price of one byte for one day, in the smallest unit of the asset.
    price: String,
    unit: &'static str,
    asset: String,
    decimals: u32,
}

/// `GET /{target}/getprice`.
pub(crate) async fn get_price(
    State(app): State<Arc<App>>,
    P(target): P<String>,
) -> MemoResult<Json<Price>> {
    check_target(&app, &target)?;
    let c = app.billing.config();
    Ok(Json(Price {
        price: c.storage_unit_price.to_string(),
        unit: "byte/day",
        asset: c.asset_symbol.clone(),
        decimals: c.asset_decimals,
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PackageOut {
    pkgid: u64,
    name: String,
    /// Duration in seconds.
    time: u64,
    days: u64,
    kind: u8,
    buysize: u64,
    /// Price of one package.
    amount: String,
    state: u8,
}

fn package_out(p: &PackageConfig, target: &str) -> PackageOut {
    PackageOut {
        pkgid: p.id,
        name: p.name.clone(),
        time: p.days * DAY_SECS,
        days: p.days,
        kind: kind_of(target),
        buysize: p.bytes,
        amount: p.price.to_string(),
        state: 1,
    }
}

/// `GET /{target}/pkginfos`: the packages for sale (no token needed).
pub(crate) async fn pkg_infos(
    State(app): State<Arc<App>>,
    P(target): P<String>,
) -> MemoResult<Json<Vec<PackageOut>>> {
    check_target(&app, &target)?;
    Ok(Json(
        app.billing
            .packages()
            .iter()
            .map(|p| package_out(p, &target))
            .collect(),
    ))
}

/// `pkgid` and `amount` as numbers or numeric strings (query strings carry strings).
#[derive(Deserialize, Default)]
pub(crate) struct BuyRequest {
    #[serde(default, alias = "pkgId", alias = "Pkgid")]
    pkgid: Option<serde_json::Value>,
    #[serde(default, alias = "Amount")]
    amount: Option<serde_json::Value>,
}

pub(crate) fn number(
    field: &'static str,
    v: Option<&serde_json::Value>,
    default: Option<i64>,
) -> MemoResult<i64> {
    let bad = || MemoError::new(Kind::BadRequest, format!("{field}: must be a whole number"));
    match v {
        None | Some(serde_json::Value::Null) => {
            default.ok_or_else(|| MemoError::new(Kind::BadRequest, format!("{field}: missing")))
        }
        Some(serde_json::Value::Number(n)) => n.as_i64().ok_or_else(bad),
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.trim().parse().map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PurchaseOut {
    id: i64,
    pkgid: u64,
    kind: u8,
    /// How many packages.
    count: u64,
    buysize: u64,
    /// What was paid.
    amount: String,
    /// Unix seconds.
    starttime: i64,
    endtime: i64,
    state: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    balance: Option<String>,
}

impl PurchaseOut {
    fn new(p: &Purchase, target: &str, state: u8, balance: Option<String>) -> PurchaseOut {
        PurchaseOut {
            id: p.id,
            pkgid: p.package_id,
            kind: kind_of(target),
            count: p.quantity,
            buysize: p.bytes,
            amount: p.price.to_string(),
            starttime: p.starts_at / 1000,
            endtime: p.ends_at / 1000,
            state,
            balance,
        }
    }
}

/// `POST /{target}/buypkg {pkgid, amount}` (JSON or form fields, or `?pkgid=&amount=` with no
/// body; `GET ?pkgid=&amount=` as the original).
pub(crate) async fn buy_pkg(
    State(app): State<Arc<App>>,
    P(target): P<String>,
    Q(q): Q<BuyRequest>,
    method: Method,
    MemoCaller(caller): MemoCaller,
    body: Body,
) -> MemoResult<Json<PurchaseOut>> {
    check_target(&app, &target)?;
    let (pkgid, amount) = purchase_request(&method, q, body).await?;
    let p = app
        .billing
        .buy(&caller.account.id, &target, pkgid, amount)
        .await?;
    let balance = p.balance_after.to_string();
    Ok(Json(PurchaseOut::new(&p, &target, 1, Some(balance))))
}

/// The package id and count of a purchase. POST: a JSON object or form fields; with no body,
/// the query string (as GET).
pub(crate) async fn purchase_request(
    method: &Method,
    q: BuyRequest,
    body: Body,
) -> MemoResult<(u64, i64)> {
    let req = if method == Method::POST {
        match stratus_api_request::json_or_form_body::<BuyRequest>(body).await {
            Ok(r) => r,
            Err(stratus_api_request::BodyError::Empty) => q,
            Err(e) => return Err(e.into()),
        }
    } else {
        q
    };
    let pkgid = number("pkgid", req.pkgid.as_ref(), None)?;
    let amount = number("amount", req.amount.as_ref(), Some(1))?;
    if pkgid < 0 {
        return Err(MemoError::new(Kind::BadRequest, "pkgid: no such package"));
    }
    Ok((pkgid as u64, amount))
}

/// `GET /{target}/getbuypkgs`: the caller's purchases with start and end times.
#[derive(Deserialize)]
pub(crate) struct PageQuery {
    /// Page (from 1) and page size (default 1,000, at most 10,000).
    page: Option<u32>,
    #[serde(alias = "limit")]
    size: Option<u32>,
}

pub(crate) async fn get_buy_pkgs(
    State(app): State<Arc<App>>,
    P(target): P<String>,
    Q(q): Q<PageQuery>,
    MemoCaller(caller): MemoCaller,
) -> MemoResult<Json<Vec<PurchaseOut>>> {
    check_target(&app, &target)?;
    let now = app.clock.now_ms();
    let size = q.size.unwrap_or(1000).clamp(1, 10_000);
    let list = app
        .billing
        .purchases_page(&caller.account.id, Some(&target), q.page.unwrap_or(1), size)
        .await?;
    Ok(Json(
        list.into_iter()
            .map(|p| PurchaseOut::new(&p, &target, u8::from(p.active_at(now)), None))
            .collect(),
    ))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Balance {
    address: String,
    balance: String,
}

/// `GET /{target}/balance` → `{"Address","Balance"}` (the ledger balance, smallest unit).
pub(crate) async fn balance(
    State(app): State<Arc<App>>,
    P(target): P<String>,
    MemoCaller(caller): MemoCaller,
) -> MemoResult<Json<Balance>> {
    check_target(&app, &target)?;
    let b = app.billing.ledger().balance(&caller.account.id).await?;
    Ok(Json(Balance {
        address: caller.address_text(),
        balance: b.to_string(),
    }))
}
