//! `/v1/user…`: sign-up, the document's `loginWithClient`, the caller's profile, password change
//! and logout.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use stratus_app::App;
use stratus_model::auth::PasswordDialect;

use crate::error::CsResult;
use crate::extract::{done, ok, AnyCaller, Body, ClientIp, CsCaller, Q};

#[derive(Deserialize)]
pub struct Credentials {
    #[serde(default)]
    pub(crate) username: String,
    #[serde(default)]
    pub(crate) password: String,
}

#[derive(Serialize)]
struct Token {
    token: String,
}

/// `POST /v1/user/loginWithClient {username, password}` → `{token}` (10 years by default).
pub async fn login_with_client(
    State(app): State<Arc<App>>,
    ClientIp(ip): ClientIp,
    Body(c): Body<Credentials>,
) -> CsResult<impl axum::response::IntoResponse> {
    let (_, token) = app
        .auth
        .password_login(ip, &c.username, &c.password, PasswordDialect::ComputeShare)
        .await?;
    Ok(ok(Token { token }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Registered {
    id: String,
    username: String,
}

/// `POST /v1/user/register {username, password}` → `{id, username}`.
pub async fn register(
    State(app): State<Arc<App>>,
    ClientIp(ip): ClientIp,
    Body(c): Body<Credentials>,
) -> CsResult<impl axum::response::IntoResponse> {
    let a = app.auth.register(ip, &c.username, &c.password).await?;
    Ok(ok(Registered {
        id: a.id,
        username: c.username,
    }))
}

/// The caller as the original's `GET /v1/user` shows it, plus stratus's own fields.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    id: String,
    username: String,
    name: String,
    country_call_coding: String,
    telephone_number: String,
    icon: String,
    wallet_address: String,
    /// Unix milliseconds as a string (the original's protojson int64).
    create_date: String,
    last_login_date: String,
    pwd_config: bool,
}

/// `GET /v1/user`.
pub async fn me(CsCaller(c): CsCaller) -> CsResult<impl axum::response::IntoResponse> {
    let a = &c.account;
    let username = a.username.clone().unwrap_or_default();
    Ok(ok(Profile {
        id: a.id.clone(),
        name: username.clone(),
        telephone_number: username.clone(),
        username,
        country_call_coding: String::new(),
        icon: String::new(),
        wallet_address: a.address_text(),
        create_date: a.created_at.to_string(),
        last_login_date: (c.token.claims.iat * 1000).to_string(),
        pwd_config: a.has_password,
    }))
}

#[derive(Deserialize)]
pub struct PasswordChange {
    #[serde(default, alias = "old_password")]
    #[serde(rename = "oldPassword")]
    pub(crate) old: String,
    #[serde(default, alias = "new_password")]
    #[serde(rename = "newPassword")]
    pub(crate) new: String,
}

/// `PUT /v1/user/password {oldPassword, newPassword}`: revokes every earlier token.
pub async fn change_password(
    State(app): State<Arc<App>>,
    ClientIp(ip): ClientIp,
    CsCaller(c): CsCaller,
    Body(p): Body<PasswordChange>,
) -> CsResult<impl axum::response::IntoResponse> {
    app.auth.change_password(ip, &c, &p.old, &p.new).await?;
    Ok(done())
}

#[derive(Deserialize, Default)]
pub struct LogoutQuery {
    #[serde(default)]
    all: Option<String>,
}

/// `POST /v1/user/logout[?all=true]`: revokes the token used (an access or a refresh token) with
/// the tokens minted from it or it from (its session); with `all`, every token of the account.
pub async fn logout(
    State(app): State<Arc<App>>,
    AnyCaller(c): AnyCaller,
    Q(q): Q<LogoutQuery>,
) -> CsResult<impl axum::response::IntoResponse> {
    if matches!(q.all.as_deref(), Some("true" | "1" | "yes")) {
        app.auth.logout_everywhere(&c).await?;
    } else {
        app.auth.logout(&c).await?;
    }
    Ok(done())
}
