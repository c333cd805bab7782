//! `/v1/balance`, `/v1/ledger`, `/v1/user/wallet`: money in the ComputeShare dialect.

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use stratus_app::App;
use stratus_model::auth::WalletLogin;

use crate::error::CsResult;
use crate::extract::{ok, Body, ClientIp, CsCaller, Q};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BalanceOut {
    /// Smallest unit of the asset, as a decimal string.
    balance: String,
    asset: String,
    decimals: u32,
    wallet_address: String,
}

/// `GET /v1/balance`.
pub async fn balance(
    State(app): State<Arc<App>>,
    CsCaller(c): CsCaller,
) -> CsResult<impl IntoResponse> {
    let b = app.billing.ledger().balance(&c.account.id).await?;
    let cfg = app.billing.config();
    Ok(ok(BalanceOut {
        balance: b.to_string(),
        asset: cfg.asset_symbol.clone(),
        decimals: cfg.asset_decimals,
        wallet_address: c.account.address_text(),
    }))
}

#[derive(Deserialize)]
pub struct PageQuery {
    page: Option<u32>,
    size: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EntryOut {
    id: i64,
    kind: &'static str,
    amount: String,
    reason: String,
    reference: String,
    memo: String,
    balance_after: String,
    /// Unix milliseconds as a string (the original's int64 convention).
    created_time: String,
}

#[derive(Serialize)]
struct PageOut<T> {
    list: Vec<T>,
    total: u64,
    page: u32,
    size: u32,
}

/// `GET /v1/ledger?page=&size=`: the caller's entries, newest first.
pub async fn ledger(
    State(app): State<Arc<App>>,
    CsCaller(c): CsCaller,
    Q(q): Q<PageQuery>,
) -> CsResult<impl IntoResponse> {
    let page = q.page.unwrap_or(1).max(1);
    let size = q.size.unwrap_or(20).clamp(1, 1000);
    let (entries, total) = app
        .billing
        .ledger()
        .history(&c.account.id, page, size)
        .await?;
    Ok(ok(PageOut {
        list: entries
            .into_iter()
            .map(|e| EntryOut {
                id: e.id,
                kind: match e.kind {
                    stratus_model::billing::EntryKind::Credit => "credit",
                    stratus_model::billing::EntryKind::Debit => "debit",
                },
                amount: e.amount.to_string(),
                reason: e.reason,
                reference: e.reference,
                memo: e.memo,
                balance_after: e.balance_after.to_string(),
                created_time: e.created_at.to_string(),
            })
            .collect(),
        total,
        page,
        size,
    }))
}

#[derive(Deserialize)]
pub struct LinkRequest {
    #[serde(default)]
    pub(crate) address: String,
    #[serde(default)]
    pub(crate) nonce: String,
    #[serde(default)]
    pub(crate) domain: Option<String>,
    #[serde(default)]
    pub(crate) signature: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Linked {
    wallet_address: String,
    /// Deposits made from the wallet before it was linked, now credited.
    credited: String,
    balance: String,
}

/// `POST /v1/user/wallet {address, nonce, signature[, domain]}`: links a wallet to the caller's
/// account, proven by signing a nonce from `GET /getnonce` exactly as for wallet login.
pub async fn link_wallet(
    State(app): State<Arc<App>>,
    ClientIp(ip): ClientIp,
    CsCaller(c): CsCaller,
    Body(req): Body<LinkRequest>,
) -> CsResult<impl IntoResponse> {
    let domain = req.domain.unwrap_or_else(|| app.config.auth.domain.clone());
    let address = app
        .auth
        .prove_wallet(
            ip,
            &WalletLogin {
                address: req.address,
                nonce: req.nonce,
                domain,
                signature: req.signature,
            },
        )
        .await?;
    let credited = app
        .billing
        .link_wallet(app.auth.accounts(), &c.account, address)
        .await?;
    let balance = app.billing.ledger().balance(&c.account.id).await?;
    Ok(ok(Linked {
        wallet_address: address.to_string(),
        credited: credited.to_string(),
        balance: balance.to_string(),
    }))
}
