//! The client side of stratus: what the CLI does on behalf of a user.
//!
//! A [`Session`] (server URL and tokens) is kept in the user's config directory
//! (`$STRATUS_CLIENT_DIR` or `~/.config/stratus/session.json`, mode 0600). Wallet logins sign the
//! server's nonce exactly as go-ethereum's `crypto.Sign` does, and refresh the 15-minute access
//! token with the fresh token when the server says it expired.

pub mod session;
pub mod storage;

use std::path::Path;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use stratus_wallet as wallet;

pub use session::{Session, SessionKind};

/// Client errors, phrased for a person at a terminal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach {url}: {source}")]
    Connect { url: String, source: reqwest::Error },
    #[error("server answered {status}: {body}")]
    Server { status: StatusCode, body: String },
    #[error("unexpected answer from server: {0}")]
    Protocol(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// An HTTP client bound to one server.
#[derive(Debug, Clone)]
pub struct Client {
    pub base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(server: &str) -> Result<Client> {
        let base = server.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Usage(format!(
                "server URL must start with http:// or https://, got {server:?}"
            )));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("stratus-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(Client { base, http })
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{}", self.base, path))
    }

    /// Sends and turns transport failures and non-2xx answers into errors.
    pub async fn send(&self, rb: RequestBuilder) -> Result<Response> {
        let resp = rb.send().await.map_err(|source| ClientError::Connect {
            url: self.base.clone(),
            source,
        })?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            Err(ClientError::Server { status, body })
        }
    }

    pub async fn json<T: DeserializeOwned>(&self, rb: RequestBuilder) -> Result<T> {
        self.send(rb)
            .await?
            .json()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `POST /api/v1/user/loginWithClient`.
    pub async fn login_password(&self, username: &str, password: &str) -> Result<Session> {
        let v: Value = self
            .json(
                self.request(Method::POST, "/api/v1/user/loginWithClient")
                    .json(&serde_json::json!({"username": username, "password": password})),
            )
            .await?;
        let token = v["data"]["token"]
            .as_str()
            .ok_or_else(|| ClientError::Protocol(format!("no data.token in {v}")))?;
        Ok(Session {
            server: self.base.clone(),
            kind: SessionKind::Password,
            token: token.to_string(),
            refresh_token: None,
            address: None,
        })
    }

    /// `GET /getnonce`, sign, `POST /login`.
    pub async fn login_wallet(
        &self,
        key: &k256::ecdsa::SigningKey,
        domain: &str,
    ) -> Result<Session> {
        let address = wallet::address_of(key.verifying_key()).to_string();
        let nonce = self
            .send(self.request(Method::GET, "/getnonce"))
            .await?
            .text()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let nonce = nonce.trim().to_string();
        let digest = wallet::login_digest(&address, &nonce, domain);
        let sig = wallet::sign_digest(key, &digest);
        let v: Value = self
            .json(
                self.request(Method::POST, "/login")
                    .json(&serde_json::json!({
                        "address": address,
                        "nonce": nonce,
                        "domain": domain,
                        "signature": format!("0x{}", hex::encode(sig)),
                    })),
            )
            .await?;
        let access = v["access token"].as_str();
        let fresh = v["fresh token"].as_str();
        match (access, fresh) {
            (Some(a), Some(f)) => Ok(Session {
                server: self.base.clone(),
                kind: SessionKind::Wallet,
                token: a.to_string(),
                refresh_token: Some(f.to_string()),
                address: Some(address),
            }),
            _ => Err(ClientError::Protocol(format!("no tokens in {v}"))),
        }
    }

    /// `GET /fresh` with the fresh token.
    pub async fn refresh(&self, fresh: &str) -> Result<String> {
        let v: Value = self
            .json(
                self.request(Method::GET, "/fresh")
                    .header(reqwest::header::AUTHORIZATION, fresh),
            )
            .await?;
        v["access token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ClientError::Protocol(format!("no access token in {v}")))
    }
}

/// Reads a hex private key (with or without `0x`) from a file.
pub fn read_wallet_key(path: &Path) -> Result<k256::ecdsa::SigningKey> {
    let text = std::fs::read_to_string(path)?;
    let hex_part = text.trim().trim_start_matches("0x");
    let raw = hex::decode(hex_part)
        .map_err(|_| ClientError::Usage(format!("{}: not a hex private key", path.display())))?;
    k256::ecdsa::SigningKey::from_slice(&raw)
        .map_err(|_| ClientError::Usage(format!("{}: not a valid secp256k1 key", path.display())))
}

/// An authenticated client: a session and the client for its server.
#[derive(Debug)]
pub struct Authed {
    pub client: Client,
    pub session: Session,
}

impl Authed {
    /// Loads the saved session.
    pub fn load() -> Result<Authed> {
        let session = Session::load()?;
        Ok(Authed {
            client: Client::new(&session.server)?,
            session,
        })
    }

    /// Sends a request built by `build` with the access token; a wallet session whose access token
    /// expired is refreshed once and the request retried.
    pub async fn send(&mut self, build: impl Fn(&Client) -> RequestBuilder) -> Result<Response> {
        let first = self
            .client
            .send(build(&self.client).bearer_auth(&self.session.token))
            .await;
        match first {
            Err(ClientError::Server { status, .. })
                if status == StatusCode::UNAUTHORIZED && self.session.refresh_token.is_some() =>
            {
                let fresh = self.session.refresh_token.clone().unwrap_or_default();
                self.session.token = self.client.refresh(&fresh).await?;
                self.session.save()?;
                self.client
                    .send(build(&self.client).bearer_auth(&self.session.token))
                    .await
            }
            other => other,
        }
    }

    pub async fn json<T: DeserializeOwned>(
        &mut self,
        build: impl Fn(&Client) -> RequestBuilder,
    ) -> Result<T> {
        self.send(build)
            .await?
            .json()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `GET /api/v1/user`.
    pub async fn whoami(&mut self) -> Result<Value> {
        let v: Value = self
            .json(|c| c.request(Method::GET, "/api/v1/user"))
            .await?;
        Ok(v["data"].clone())
    }

    /// `POST /api/v1/user/logout` and forget the session.
    /// Revokes the session's tokens (with `everywhere`, every token of the account) and forgets
    /// the session.
    pub async fn logout(&mut self, everywhere: bool) -> Result<()> {
        let path = if everywhere {
            "/api/v1/user/logout?all=true"
        } else {
            "/api/v1/user/logout"
        };
        self.send(|c| c.request(Method::POST, path)).await?;
        Session::remove()?;
        Ok(())
    }
}
