//! The saved login: server URL and tokens, in the user's config directory, readable only by the
//! user.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{ClientError, Result};

/// How the session was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    Password,
    Wallet,
}

/// A saved login.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub server: String,
    pub kind: SessionKind,
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Directory of the client's files: `$STRATUS_CLIENT_DIR`, else `<config dir>/stratus`.
pub fn client_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("STRATUS_CLIENT_DIR") {
        return Ok(PathBuf::from(d));
    }
    dirs::config_dir()
        .map(|d| d.join("stratus"))
        .ok_or_else(|| ClientError::Usage("no config directory; set STRATUS_CLIENT_DIR".into()))
}

fn path() -> Result<PathBuf> {
    Ok(client_dir()?.join("session.json"))
}

impl Session {
    pub fn load() -> Result<Session> {
        let p = path()?;
        let text = std::fs::read_to_string(&p).map_err(|_| {
            ClientError::Usage("not logged in: run `stratus login --server URL …` first".into())
        })?;
        serde_json::from_str(&text)
            .map_err(|e| ClientError::Usage(format!("{}: {e}; log in again", p.display())))
    }

    pub fn save(&self) -> Result<PathBuf> {
        let p = path()?;
        let dir = p.parent().expect("session path has a parent");
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(".session.json.tmp");
        let text = serde_json::to_string_pretty(self).expect("session serializes");
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &p)?;
        Ok(p)
    }

    pub fn remove() -> Result<()> {
        match std::fs::remove_file(path()?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}
