//! Configuration from flags and `AGORA_*` variables. A bad setting stops start-up with a
//! message naming the setting and what is wrong with it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use agora_auth::{SigningKey, TokenIssuer, TokenVerifier};
use agora_eventstore::Store;
use anyhow::{Context, bail};
use clap::Args;

/// The services this binary can run.
pub const TARGETS: &[&str] = &["hearing", "response"];

pub const DEV_ISSUER: &str = "agora-dev";
pub const AUDIENCE: &str = "agora";

#[derive(Args, Clone, Debug)]
pub struct ConnectArgs {
    /// Data directory of the embedded mode (SQLite, files, development keys).
    #[arg(long, env = "AGORA_DATA_DIR", default_value = "./agora-data")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL; when set, the store is PostgreSQL instead of the embedded SQLite.
    #[arg(long, env = "AGORA_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl ConnectArgs {
    pub async fn store(&self) -> anyhow::Result<Store> {
        match &self.database_url {
            Some(url) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    bail!("AGORA_DATABASE_URL must be a postgres:// URL (got '{}')", agora_eventstore::redact(url));
                }
                Store::connect(url)
                    .await
                    .with_context(|| format!("AGORA_DATABASE_URL: cannot open {}", agora_eventstore::redact(url)))
            }
            None => {
                std::fs::create_dir_all(&self.data_dir)
                    .with_context(|| format!("AGORA_DATA_DIR: cannot create {}", self.data_dir.display()))?;
                let path = self.data_dir.join("agora.db");
                Store::connect(&format!("sqlite://{}", path.display()))
                    .await
                    .with_context(|| format!("AGORA_DATA_DIR: cannot open {}", path.display()))
            }
        }
    }
}

#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// Services to run, comma-separated (available: hearing, response). Without it: every service in
    /// one process on the embedded default.
    #[arg(long, env = "AGORA_TARGETS", value_delimiter = ',')]
    pub target: Vec<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[arg(long, env = "AGORA_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Subject prefix and stream name of the integration events.
    #[arg(long, env = "AGORA_NATS_PREFIX", default_value = "agora")]
    pub nats_prefix: String,
    /// JetStream replicas for the event stream (3 in production).
    #[arg(long, env = "AGORA_NATS_REPLICAS", default_value_t = 1)]
    pub nats_replicas: usize,
    #[arg(long, env = "AGORA_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: String,
    /// Health, readiness and Prometheus metrics (the portal joins it with the gateway).
    #[arg(long, env = "AGORA_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: String,
    /// Where documents and images are stored: a local directory (default DATA_DIR/files),
    /// `file:///path`, `az://container/prefix` (Azure Blob; AZURE_STORAGE_* settings) or
    /// `s3://bucket/prefix` (S3; AWS_* settings).
    #[arg(long, env = "AGORA_FILES")]
    pub files: Option<String>,
    #[arg(long, env = "AGORA_TOKEN_ISSUER", default_value = DEV_ISSUER)]
    pub token_issuer: String,
    #[arg(long, env = "AGORA_TOKEN_AUDIENCE", default_value = AUDIENCE)]
    pub token_audience: String,
    /// JWKS (a file path) with the public keys access tokens are signed with. Required
    /// with --target; the embedded mode makes a development key of its own.
    #[arg(long, env = "AGORA_TOKEN_JWKS")]
    pub token_jwks: Option<PathBuf>,
    /// Secret key (at least 32 characters) for pseudonymous CPR references. Required with --target.
    #[arg(long, env = "AGORA_PSEUDONYM_KEY", hide_env_values = true)]
    pub pseudonym_key: Option<String>,
    /// clamd (host:port) to scan response attachments with, over its INSTREAM protocol.
    #[arg(long, env = "AGORA_CLAMD")]
    pub clamd: Option<String>,
    /// Seconds between checks for hearings whose start date or deadline has come.
    #[arg(long, env = "AGORA_SCHEDULER_INTERVAL", default_value_t = 10)]
    pub scheduler_interval: u64,
    /// Offer the development login with demo users (on by default in the embedded mode only).
    #[arg(long, env = "AGORA_DEV_LOGIN")]
    pub dev_login: Option<bool>,
    /// Do not seed demo data in the embedded mode.
    #[arg(long, env = "AGORA_NO_DEMO", default_value_t = false)]
    pub no_demo: bool,
}

/// Resolved settings.
pub struct Settings {
    pub embedded: bool,
    pub targets: Vec<String>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub files: FilesLocation,
    pub verifier: TokenVerifier,
    pub pseudonym_key: Vec<u8>,
    pub dev_login: bool,
}

fn address(setting: &str, value: &str) -> anyhow::Result<SocketAddr> {
    value.parse().map_err(|e| anyhow::anyhow!("{setting} '{value}' is not a host:port address: {e}"))
}

impl RunArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let embedded = self.target.is_empty();
        let mut targets = Vec::new();
        for target in &self.target {
            let target = target.trim();
            if target == "all" {
                targets.extend(TARGETS.iter().map(|t| t.to_string()));
            } else if TARGETS.contains(&target) {
                targets.push(target.to_string());
            } else {
                bail!("AGORA_TARGETS: unknown target '{target}' (available: {}, all)", TARGETS.join(", "));
            }
        }
        if embedded && self.connect.database_url.is_some() {
            bail!(
                "AGORA_DATABASE_URL is set but no --target is given: use --target all to run every service on PostgreSQL \
                 and JetStream, or unset it for the embedded mode (SQLite, demo data, development login)"
            );
        }
        if embedded {
            targets = TARGETS.iter().map(|t| t.to_string()).collect();
        } else if self.connect.database_url.is_none() {
            bail!("AGORA_DATABASE_URL is required with --target: distributed services run on PostgreSQL");
        }
        let grpc_addr = address("AGORA_GRPC_ADDR", &self.grpc_addr)?;
        let http_addr = address("AGORA_HTTP_ADDR", &self.http_addr)?;
        if self.scheduler_interval == 0 {
            bail!("AGORA_SCHEDULER_INTERVAL must be at least 1 second");
        }
        if !(1..=5).contains(&self.nats_replicas) {
            bail!("AGORA_NATS_REPLICAS must be between 1 and 5 (got {})", self.nats_replicas);
        }
        let files = match &self.files {
            None => FilesLocation::Local(self.connect.data_dir.join("files")),
            Some(value) => FilesLocation::parse(value)?,
        };
        let (verifier, pseudonym_key) = if embedded {
            let key = development_key(&self.connect.data_dir)?;
            let verifier = TokenVerifier::new(&self.token_issuer, &self.token_audience).with_signing_key(&key);
            (verifier, development_secret(&self.connect.data_dir)?)
        } else {
            let Some(path) = &self.token_jwks else {
                bail!(
                    "AGORA_TOKEN_JWKS is required with --target: the public keys that access tokens are verified with"
                );
            };
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("AGORA_TOKEN_JWKS: cannot read {}", path.display()))?;
            let jwks: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("AGORA_TOKEN_JWKS: {} is not JSON", path.display()))?;
            let verifier = TokenVerifier::from_jwks(&self.token_issuer, &self.token_audience, &jwks)
                .with_context(|| format!("AGORA_TOKEN_JWKS: {} is not a usable JWKS", path.display()))?;
            let Some(secret) = &self.pseudonym_key else {
                bail!("AGORA_PSEUDONYM_KEY is required with --target: the secret for pseudonymous CPR references");
            };
            if secret.len() < 32 {
                bail!("AGORA_PSEUDONYM_KEY must be at least 32 characters (got {})", secret.len());
            }
            (verifier, secret.as_bytes().to_vec())
        };
        Ok(Settings {
            embedded,
            targets,
            grpc_addr,
            http_addr,
            files,
            verifier,
            pseudonym_key,
            dev_login: self.dev_login.unwrap_or(embedded),
        })
    }
}

/// The embedded mode's token signing key, made on first start and kept in the data dir.
pub fn development_key(data_dir: &Path) -> anyhow::Result<SigningKey> {
    let path = data_dir.join("dev-signing-key");
    if let Ok(seed) = std::fs::read_to_string(&path) {
        return SigningKey::from_seed_base64(seed.trim(), "dev")
            .with_context(|| format!("{} is not a signing key", path.display()));
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("AGORA_DATA_DIR: cannot create {}", data_dir.display()))?;
    let key = SigningKey::generate_with_kid("dev").context("cannot generate a development key")?;
    std::fs::write(&path, key.to_seed_base64()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key)
}

fn development_secret(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join("dev-pseudonym-key");
    if let Ok(secret) = std::fs::read(&path) {
        return Ok(secret);
    }
    let secret = uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string();
    std::fs::write(&path, &secret).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(secret.into_bytes())
}

pub fn development_issuer(data_dir: &Path) -> anyhow::Result<TokenIssuer> {
    Ok(TokenIssuer::new(development_key(data_dir)?, DEV_ISSUER, AUDIENCE, chrono::Duration::hours(8)))
}

/// Where files go.
#[derive(Debug, Clone)]
pub enum FilesLocation {
    Local(PathBuf),
    /// A cloud object store URL (az://, abfs://, s3://), configured from the environment.
    Cloud(String),
}

impl FilesLocation {
    pub fn parse(value: &str) -> anyhow::Result<Self> {
        if let Some(path) = value.strip_prefix("file://") {
            return Ok(Self::Local(PathBuf::from(path)));
        }
        if !value.contains("://") {
            return Ok(Self::Local(PathBuf::from(value)));
        }
        let scheme = value.split("://").next().unwrap_or_default();
        if !matches!(scheme, "az" | "azure" | "abfs" | "abfss" | "s3" | "s3a" | "https") {
            bail!(
                "AGORA_FILES '{value}': unsupported scheme '{scheme}' (use a directory, file://, az://, abfs:// or s3://)"
            );
        }
        Ok(Self::Cloud(value.to_string()))
    }

    /// Opens the store: a local directory is created if missing; a cloud store takes its
    /// settings (account, key or managed identity, region, …) from AZURE_* / AWS_* variables.
    pub fn open(&self) -> anyhow::Result<std::sync::Arc<dyn object_store::ObjectStore>> {
        match self {
            Self::Local(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("AGORA_FILES: cannot create {}", dir.display()))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .with_context(|| format!("AGORA_FILES: cannot use {}", dir.display()))?;
                Ok(std::sync::Arc::new(store))
            }
            Self::Cloud(url) => {
                let parsed = url::Url::parse(url).with_context(|| format!("AGORA_FILES '{url}' is not a URL"))?;
                let options = std::env::vars()
                    .filter(|(k, _)| k.starts_with("AZURE_") || k.starts_with("AWS_"))
                    .map(|(k, v)| (k.to_ascii_lowercase(), v));
                let (store, prefix) = object_store::parse_url_opts(&parsed, options)
                    .with_context(|| format!("AGORA_FILES: cannot configure the object store for {url}"))?;
                let store: std::sync::Arc<dyn object_store::ObjectStore> = std::sync::Arc::from(store);
                if prefix.as_ref().is_empty() {
                    Ok(store)
                } else {
                    Ok(std::sync::Arc::new(object_store::prefix::PrefixStore::new(store, prefix)))
                }
            }
        }
    }
}
