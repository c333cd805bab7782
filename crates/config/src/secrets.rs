//! Secrets kept in the data directory: generated once, readable only by their owner.
//!
//! Never returns a built-in default: a key either comes from the configuration (value or file) or
//! is generated from the OS random source and stored with mode 0600.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngCore;

/// Errors while reading or creating a secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret file {0} is empty")]
    Empty(PathBuf),
}

/// Returns the token HMAC key: `value` if set, else the contents of `file`, else the key in
/// `data_dir/secrets/jwt.key`, created with 32 random bytes (hex) on first use.
pub fn load_or_create_jwt_key(
    value: Option<&str>,
    file: Option<&Path>,
    data_dir: &Path,
) -> Result<Vec<u8>, SecretError> {
    load_or_create_secret("jwt.key", value, file, data_dir)
}

/// Returns the operator token (what `/metrics` asks for): `value` if set, else the contents of
/// `file`, else `data_dir/secrets/operator.token`, created with 32 random bytes (hex) on first
/// use.
pub fn load_or_create_operator_token(
    value: Option<&str>,
    file: Option<&Path>,
    data_dir: &Path,
) -> Result<String, SecretError> {
    load_or_create_secret("operator.token", value, file, data_dir)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// `value`, else the contents of `file`, else `data_dir/secrets/<name>`, made on first use.
fn load_or_create_secret(
    name: &str,
    value: Option<&str>,
    file: Option<&Path>,
    data_dir: &Path,
) -> Result<Vec<u8>, SecretError> {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        return Ok(v.as_bytes().to_vec());
    }
    if let Some(path) = file {
        return read_secret(path);
    }
    let path = data_dir.join("secrets").join(name);
    if path.exists() {
        return read_secret(&path);
    }
    let io = |source| SecretError::Io {
        path: path.clone(),
        source,
    };
    let dir = path.parent().expect("secret path has a parent");
    create_private_dir(dir).map_err(io)?;
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let text = hex::encode(key);
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    fs::rename(&tmp, &path).map_err(io)?;
    Ok(text.into_bytes())
}

/// Creates `dir` (and its parents) and makes it private to its owner (0700).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The id of this server (`data_dir/server.id`, 16 random bytes in hex, made on first use).
/// Not a secret: it names what this server owns in shared places (container labels).
pub fn load_or_create_server_id(data_dir: &Path) -> Result<String, SecretError> {
    let path = data_dir.join("server.id");
    if path.exists() {
        return read_secret(&path).map(|b| String::from_utf8_lossy(&b).into_owned());
    }
    let io = |source| SecretError::Io {
        path: path.clone(),
        source,
    };
    create_private_dir(data_dir).map_err(io)?;
    let mut raw = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let id = hex::encode(raw);
    let tmp = data_dir.join(".server.id.tmp");
    fs::write(&tmp, &id).map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)?;
    Ok(id)
}

fn read_secret(path: &Path) -> Result<Vec<u8>, SecretError> {
    let raw = fs::read(path).map_err(|source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let trimmed = String::from_utf8_lossy(&raw)
        .trim_end_matches(['\n', '\r'])
        .to_string();
    if trimmed.is_empty() {
        return Err(SecretError::Empty(path.to_path_buf()));
    }
    Ok(trimmed.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_jwt_key(None, None, dir.path()).unwrap();
        let b = load_or_create_jwt_key(None, None, dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        let c = load_or_create_jwt_key(None, None, tempfile::tempdir().unwrap().path()).unwrap();
        assert_ne!(a, c, "two data dirs never share a key");
    }

    #[test]
    fn secrets_and_their_directory_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let t = load_or_create_operator_token(None, None, dir.path()).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(
            load_or_create_operator_token(None, None, dir.path()).unwrap(),
            t
        );
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("secrets")), 0o700);
        assert_eq!(mode(&dir.path().join("secrets/operator.token")), 0o600);
        assert_ne!(
            load_or_create_jwt_key(None, None, dir.path()).unwrap(),
            t.as_bytes()
        );
    }

    #[test]
    fn value_wins() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            load_or_create_jwt_key(Some("memo.io"), None, dir.path()).unwrap(),
            b"memo.io"
        );
    }
}
