//! Configuration of a stratus server.
//!
//! Owns the shape of the TOML file, its embedded defaults, the `STRATUS_*` environment overrides
//! (`STRATUS_LISTEN`, `STRATUS_DATA_DIR`, and for nested keys `STRATUS_AUTH__MEMO_DOMAIN` style with
//! `__` between levels) and the secrets kept in the data directory. It never ships a fixed secret:
//! the token key is generated on first start unless given by `STRATUS_JWT_KEY` or
//! `STRATUS_JWT_KEY_FILE`.

mod amount;
mod secrets;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use amount::{Amount, ParseAmountError};
pub use secrets::{
    create_private_dir, load_or_create_jwt_key, load_or_create_operator_token,
    load_or_create_server_id, SecretError,
};

/// Errors while loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("configuration: {0}")]
    Figment(#[from] Box<figment::Error>),
}

/// The whole server configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address the HTTP API listens on (the storage document names port 8080).
    pub listen: SocketAddr,
    /// Directory holding the database, blobs and generated secrets.
    pub data_dir: PathBuf,
    /// HMAC key for tokens, given directly (prefer `jwt_key_file` or the generated key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_key: Option<String>,
    /// File holding the HMAC key for tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_key_file: Option<PathBuf>,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub storage: StorageConfig,
    pub billing: BillingConfig,
    pub chain: ChainConfig,
    pub compute: ComputeConfig,
    pub server: ServerConfig,
    pub operator: OperatorConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:8080".parse().expect("valid default address"),
            data_dir: PathBuf::from("./stratus-data"),
            jwt_key: None,
            jwt_key_file: None,
            database: DatabaseConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            storage: StorageConfig::default(),
            billing: BillingConfig::default(),
            chain: ChainConfig::default(),
            compute: ComputeConfig::default(),
            server: ServerConfig::default(),
            operator: OperatorConfig::default(),
        }
    }
}

/// How the HTTP listener treats connections: timeouts, caps and closing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ServerConfig {
    /// Seconds a client has to send a request's whole header, counted from its first byte (from
    /// the accept for a new connection). A connection that is late is closed.
    pub header_read_timeout_secs: u64,
    /// Seconds a keep-alive connection may stay idle between requests.
    pub idle_timeout_secs: u64,
    /// Seconds a request body may go without a byte arriving while the server waits for it.
    pub body_read_timeout_secs: u64,
    /// Longest time, in seconds, spent reading and discarding what a client still sends after
    /// the server answered and closed its side (lingering close, RFC 9112 §9.6).
    pub linger_secs: u64,
    /// Most connections open at once (0: as many as the descriptor limit allows, at most 16384).
    /// Never more than the descriptor limit allows.
    pub max_connections: usize,
    /// Most connections open at once from one client address (an IPv6 /64 counts as one).
    pub max_connections_per_ip: usize,
    /// Seconds requests in flight get to finish after a shutdown signal.
    pub shutdown_grace_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_read_timeout_secs: 15,
            idle_timeout_secs: 60,
            body_read_timeout_secs: 30,
            linger_secs: 5,
            max_connections: 0,
            max_connections_per_ip: 1024,
            shutdown_grace_secs: 30,
        }
    }
}

/// What only the operator may see: `/metrics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct OperatorConfig {
    /// A second listener (e.g. `127.0.0.1:9464`) that serves `/metrics` and `/healthz` without
    /// a token. Off by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// The token `/metrics` on the public listener asks for (`Authorization: Bearer <token>`).
    /// By default it is generated on first start and kept in `<data_dir>/secrets/operator.token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding that token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

/// Accounts, tokens and login flows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Whether `POST /api/v1/user/register` is open.
    pub registration: bool,
    /// Lifetime of `loginWithClient` tokens in seconds (the document says 10 years).
    pub computeshare_token_ttl: u64,
    /// Lifetime of `/twocloud/tokens` tokens in seconds (the document says 24 h).
    pub twocloud_token_ttl: u64,
    /// Lifetime of MEMO access tokens in seconds (15 min).
    pub access_token_ttl: u64,
    /// Lifetime of MEMO fresh (refresh) tokens in seconds (7 days).
    pub refresh_token_ttl: u64,
    /// The domain a wallet signs over and the `aud`/`iss` of MEMO tokens.
    pub domain: String,
    /// Lifetime of a login nonce in seconds.
    pub nonce_ttl: u64,
    /// Maximum number of outstanding nonces kept in memory (at the bound the oldest makes room).
    pub max_nonces: usize,
    /// Argon2id memory cost in KiB.
    pub argon2_memory_kib: u32,
    /// Argon2id iterations.
    pub argon2_iterations: u32,
    /// Password hashes computed at once (0 = cores - 1, at least 1).
    pub argon2_parallel_hashes: usize,
    /// Consecutive failed password logins after which an account is slowed down.
    pub lockout_after_failures: u32,
    /// Longest lock, in seconds, after repeated failures.
    pub lockout_max_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            registration: true,
            computeshare_token_ttl: 10 * 365 * 24 * 3600,
            twocloud_token_ttl: 24 * 3600,
            access_token_ttl: 15 * 60,
            refresh_token_ttl: 7 * 24 * 3600,
            domain: "memo.io".to_string(),
            nonce_ttl: 30,
            max_nonces: 1_000_000,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallel_hashes: 0,
            lockout_after_failures: 5,
            lockout_max_secs: 15 * 60,
        }
    }
}

/// A token-bucket rate: `burst` requests at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    pub const fn new(per_minute: u32, burst: u32) -> Self {
        Rate { per_minute, burst }
    }
}

/// Rate limits per client IP and per account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// Turn every limit off (benchmarks on loopback).
    pub disabled: bool,
    /// Password logins per client IP.
    pub login_per_ip: Rate,
    /// Password logins per account.
    pub login_per_account: Rate,
    /// Token issuance (logins of every kind, refreshes) per client IP.
    pub tokens_per_ip: Rate,
    /// Token issuance per account.
    pub tokens_per_account: Rate,
    /// Nonce issuance per client IP.
    pub nonces_per_ip: Rate,
    /// Account registrations per client IP.
    pub register_per_ip: Rate,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            disabled: false,
            login_per_ip: Rate::new(60, 20),
            login_per_account: Rate::new(20, 10),
            tokens_per_ip: Rate::new(120, 40),
            tokens_per_account: Rate::new(60, 20),
            nonces_per_ip: Rate::new(600, 120),
            register_per_ip: Rate::new(10, 5),
        }
    }
}

/// Where one storage target keeps its bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum BackendConfig {
    /// A directory (relative paths are inside the data dir).
    Local { path: PathBuf },
    /// An S3-compatible object store (Garage, MinIO, AWS).
    S3 {
        bucket: String,
        endpoint: String,
        region: String,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        #[serde(default)]
        allow_http: bool,
    },
}

/// One storage target (`mefs` or `ipfs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetConfig {
    #[serde(flatten)]
    pub backend: BackendConfig,
    /// Import profile used for uploads (`memo`, `kubo`, `kubo-v0`, `unixfs-v1-2025`).
    #[serde(default = "default_profile")]
    pub profile: String,
}

fn default_profile() -> String {
    "memo".to_string()
}

/// Content-addressed storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// Bytes every account may store without a package (the screenshot shows 10 GiB).
    pub free_bytes: u64,
    /// Storage targets by name.
    pub targets: BTreeMap<String, TargetConfig>,
    /// Largest single upload in bytes (0 = only the quota limits it).
    pub max_upload_bytes: u64,
    /// Page size of `listobjects` when no `limit` is given (the original's `MaxKeys`, 1000).
    /// A page never holds more than 10,000 objects.
    pub list_default_limit: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        let mut targets = BTreeMap::new();
        for name in ["mefs", "ipfs"] {
            targets.insert(
                name.to_string(),
                TargetConfig {
                    backend: BackendConfig::Local {
                        path: PathBuf::from("blobs"),
                    },
                    profile: default_profile(),
                },
            );
        }
        StorageConfig {
            free_bytes: 10 * 1024 * 1024 * 1024,
            targets,
            max_upload_bytes: 0,
            list_default_limit: 1000,
        }
    }
}

/// Where the metadata lives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/db` to share one PostgreSQL among several nodes
    /// (env `STRATUS_DATABASE__URL`); unset: an embedded SQLite file, `<data_dir>/stratus.db`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Connections per node (PostgreSQL), or readers (SQLite, which has one writer).
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            max_connections: 16,
        }
    }
}

/// A storage package for sale.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PackageConfig {
    pub id: u64,
    pub name: String,
    /// Bytes of space the package adds.
    pub bytes: u64,
    /// How long the package lasts.
    pub days: u64,
    /// Price in the smallest unit of the asset.
    pub price: Amount,
}

/// Prices and packages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BillingConfig {
    /// Name of the asset balances are counted in.
    pub asset_symbol: String,
    /// Decimals of the asset (18 for ether).
    pub asset_decimals: u32,
    /// Price of one byte of storage for one day, in the smallest unit.
    pub storage_unit_price: Amount,
    pub packages: Vec<PackageConfig>,
    /// Largest `amount` of one purchase.
    pub max_purchase_amount: u64,
}

impl Default for BillingConfig {
    fn default() -> Self {
        const GIB: u64 = 1024 * 1024 * 1024;
        BillingConfig {
            asset_symbol: "ETH".to_string(),
            asset_decimals: 18,
            storage_unit_price: Amount(1_000),
            packages: vec![
                PackageConfig {
                    id: 1,
                    name: "100 GiB / 30 days".to_string(),
                    bytes: 100 * GIB,
                    days: 30,
                    price: Amount(1_000_000_000_000_000),
                },
                PackageConfig {
                    id: 2,
                    name: "1 TiB / 365 days".to_string(),
                    bytes: 1024 * GIB,
                    days: 365,
                    price: Amount(50_000_000_000_000_000),
                },
            ],
            max_purchase_amount: 1000,
        }
    }
}

/// Recharge from an Ethereum chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ChainConfig {
    /// JSON-RPC endpoint; no watcher runs when empty.
    pub rpc_url: Option<String>,
    /// Address that receives deposits.
    pub deposit_address: Option<String>,
    /// ERC-20 contract whose transfers count; native coin when empty.
    pub token_contract: Option<String>,
    /// Blocks on top of a transfer before it is credited.
    pub confirmations: u64,
    /// Block to start scanning from when no cursor is stored yet.
    pub start_block: u64,
    /// Milliseconds between polls.
    pub poll_interval_ms: u64,
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            rpc_url: None,
            deposit_address: None,
            token_contract: None,
            confirmations: 12,
            start_block: 0,
            poll_interval_ms: 5000,
        }
    }
}

/// A compute spec from the catalog.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpecConfig {
    pub id: i64,
    pub core: u32,
    /// Memory in GiB.
    pub memory: u32,
    /// Price per 30 days in the smallest unit.
    pub price: Amount,
}

/// An image from the catalog.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageConfig {
    pub id: i64,
    pub name: String,
    pub image: String,
    pub tag: String,
    pub port: u16,
}

/// Compute sandboxes and the TCP gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ComputeConfig {
    /// Runtime: `docker` (or `none` to disable compute).
    pub runtime: String,
    /// Docker endpoint; empty means the local socket or `DOCKER_HOST`.
    pub docker_host: Option<String>,
    /// Owner label of this server's runtime objects; by default the server id kept in the data
    /// dir, so servers sharing an engine never touch each other's instances.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The compute host this node runs instances on (recorded with every instance and
    /// mapping); by default the server id kept in the data dir. Nodes sharing one database
    /// act only on their own host's instances and perform the actions other nodes record
    /// for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub specs: Vec<SpecConfig>,
    pub images: Vec<ImageConfig>,
    /// Public IP reported as `serverIp`.
    pub server_ip: String,
    /// Address the gateway binds its ports on.
    pub gateway_bind: String,
    /// How mapped connections are forwarded: `auto` (kernel when possible), `kernel` (nftables
    /// DNAT; needs root, `nft`, `conntrack`, an IPv4 bind) or `userspace` (splice relay).
    pub gateway_forwarding: String,
    pub port_min: u16,
    pub port_max: u16,
    pub max_mappings_per_instance: u32,
    pub max_services: u32,
    pub pids_limit: i64,
    /// Seconds an instance may stay in a transitional state.
    pub transition_timeout_secs: u64,
    /// Registries a compose `image:` may come from (`docker.io` is Docker Hub). An image counts
    /// as coming from a registry only when the engine pulled it from there.
    pub allowed_registries: Vec<String>,
    /// Images already on the engine that compose files may run without a registry
    /// (`["name:tag", …]`; `STRATUS_COMPUTE__LOCAL_IMAGES='["name:tag"]'`). They are never pulled.
    pub local_images: Vec<String>,
    /// Most volumes (named and anonymous) one compose file may declare.
    pub max_volumes: u32,
    /// Refuse to run sandboxes unless the host firewall (loopback guard and egress policy) is
    /// installed. `false` runs them without it: only where the operator isolates them otherwise.
    pub firewall: bool,
    /// What sandboxes may reach besides the internet.
    pub egress: EgressConfig,
}

/// Egress of sandboxes. By default a sandbox reaches the internet and its own instance only:
/// not the host, not other instances, not private, link-local or other special-purpose ranges.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct EgressConfig {
    /// IPv4 CIDRs sandboxes may reach although they are in a blocked range (a resolver or a
    /// service on a private network). Never opens the host itself or other instances.
    pub allow: Vec<String>,
    /// IPv4 CIDRs sandboxes may never reach; wins over `allow`.
    pub deny: Vec<String>,
}

impl Default for ComputeConfig {
    fn default() -> Self {
        ComputeConfig {
            runtime: "docker".to_string(),
            docker_host: None,
            owner: None,
            host: None,
            specs: vec![
                SpecConfig {
                    id: 1,
                    core: 2,
                    memory: 4,
                    price: Amount(10_000_000_000_000_000),
                },
                SpecConfig {
                    id: 2,
                    core: 4,
                    memory: 8,
                    price: Amount(20_000_000_000_000_000),
                },
            ],
            images: vec![ImageConfig {
                id: 1,
                name: "ubuntu".to_string(),
                image: "ubuntu".to_string(),
                tag: "20.04".to_string(),
                port: 22,
            }],
            server_ip: "127.0.0.1".to_string(),
            gateway_bind: "0.0.0.0".to_string(),
            gateway_forwarding: "auto".to_string(),
            port_min: 40001,
            port_max: 50000,
            max_mappings_per_instance: 10,
            max_services: 8,
            pids_limit: 512,
            transition_timeout_secs: 300,
            allowed_registries: vec!["docker.io".to_string()],
            local_images: Vec::new(),
            max_volumes: 16,
            firewall: true,
            egress: EgressConfig::default(),
        }
    }
}

impl Config {
    /// Loads embedded defaults, then `file` (if any), then `STRATUS_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, Env::prefixed("STRATUS_").split("__"))
    }

    fn load_with_env(file: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        let cfg: Config = fig.merge(env).extract().map_err(Box::new)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.auth.domain.is_empty() {
            return bad("auth.domain must not be empty".into());
        }
        if self.compute.port_min == 0 || self.compute.port_min > self.compute.port_max {
            return bad(format!(
                "compute.port_min..port_max is not a range: {}..{}",
                self.compute.port_min, self.compute.port_max
            ));
        }
        for (name, t) in &self.storage.targets {
            if !matches!(name.as_str(), "mefs" | "ipfs") {
                return bad(format!("storage target {name}: only mefs and ipfs exist"));
            }
            if !matches!(
                t.profile.as_str(),
                "memo" | "kubo" | "kubo-v0" | "unixfs-v1-2025"
            ) {
                return bad(format!(
                    "storage target {name}: unknown profile {}",
                    t.profile
                ));
            }
        }
        let mut ids = std::collections::HashSet::new();
        for p in &self.billing.packages {
            if !ids.insert(p.id) || p.days == 0 || p.bytes == 0 {
                return bad(format!(
                    "billing package {}: duplicate id or zero size/days",
                    p.id
                ));
            }
        }
        Ok(())
    }

    /// Path of the embedded SQLite database (used when `database.url` is unset).
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("stratus.db")
    }

    /// Resolves a path that may be relative to the data dir.
    pub fn in_data_dir(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.data_dir.join(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documents() {
        let c = Config::default();
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.auth.domain, "memo.io");
        assert_eq!(c.auth.computeshare_token_ttl, 315_360_000);
        assert_eq!(c.auth.twocloud_token_ttl, 86_400);
        assert_eq!(c.storage.free_bytes, 10_737_418_240);
        assert_eq!(c.compute.port_min, 40001);
        assert_eq!(c.compute.port_max, 50000);
        c.validate().unwrap();
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API
    fn file_then_env_override() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "s.toml",
                "listen = \"127.0.0.1:9000\"\n[auth]\ndomain = \"example.org\"\n",
            )?;
            jail.set_env("STRATUS_DATA_DIR", "/tmp/x");
            jail.set_env("STRATUS_AUTH__NONCE_TTL", "5");
            let c = Config::load(Some(Path::new("s.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.listen.port(), 9000);
            assert_eq!(c.auth.domain, "example.org");
            assert_eq!(c.auth.nonce_ttl, 5);
            assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API
    fn compute_lists_come_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "STRATUS_COMPUTE__LOCAL_IMAGES",
                r#"["stratus-test/busybox:latest", "registry.example.com:5000/team/tool@sha256:0123"]"#,
            );
            jail.set_env(
                "STRATUS_COMPUTE__ALLOWED_REGISTRIES",
                r#"["docker.io", "quay.io"]"#,
            );
            jail.set_env("STRATUS_COMPUTE__EGRESS__ALLOW", r#"["10.0.0.2/32"]"#);
            jail.set_env(
                "STRATUS_COMPUTE__EGRESS__DENY",
                r#"["198.51.100.0/24", "8.8.8.8/32"]"#,
            );
            jail.set_env("STRATUS_COMPUTE__MAX_VOLUMES", "4");
            jail.set_env("STRATUS_COMPUTE__FIREWALL", "false");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                c.compute.local_images,
                [
                    "stratus-test/busybox:latest",
                    "registry.example.com:5000/team/tool@sha256:0123"
                ]
            );
            assert_eq!(c.compute.allowed_registries, ["docker.io", "quay.io"]);
            assert_eq!(c.compute.egress.allow, ["10.0.0.2/32"]);
            assert_eq!(c.compute.egress.deny, ["198.51.100.0/24", "8.8.8.8/32"]);
            assert_eq!(c.compute.max_volumes, 4);
            assert!(!c.compute.firewall);
            Ok(())
        });
        let c = Config::default();
        assert_eq!(c.compute.allowed_registries, ["docker.io"]);
        assert!(c.compute.local_images.is_empty());
        assert_eq!(c.compute.max_volumes, 16);
        assert!(c.compute.firewall);
        assert_eq!(c.compute.egress, EgressConfig::default());
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API
    fn compute_lists_come_from_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "s.toml",
                "[compute]\nlocal_images = [\"a:1\"]\n[compute.egress]\nallow = [\"10.1.0.0/16\"]\n",
            )?;
            let c = Config::load(Some(Path::new("s.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.compute.local_images, ["a:1"]);
            assert_eq!(c.compute.egress.allow, ["10.1.0.0/16"]);
            assert!(c.compute.egress.deny.is_empty());
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_an_error() {
        assert!(Config::load(Some(Path::new("/nonexistent/stratus.toml"))).is_err());
    }
}
