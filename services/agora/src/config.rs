//! Configuration from flags and `AGORA_*` variables. A bad setting stops start-up with a
//! message naming the setting and what is wrong with it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use agora_auth::TokenVerifier;
use agora_eventstore::Store;
use agora_identity::app::IdentitySettings;
use agora_identity::providers::ProviderConfig;
use agora_vault::MasterKey;
use anyhow::{Context, bail};
use clap::Args;

/// The name a process's traces carry: the targets it runs (`agora-response`), so that each
/// shows apart in Jaeger; `agora` for the embedded mode. `OTEL_SERVICE_NAME` overrides it.
pub fn service_name(targets: &[String]) -> String {
    let targets: Vec<&str> =
        targets.iter().flat_map(|t| t.split(',')).map(str::trim).filter(|t| !t.is_empty()).collect();
    if targets.is_empty() { "agora".to_string() } else { format!("agora-{}", targets.join("-")) }
}

/// What `agora run --check` reports: the checked settings in a few lines, secrets left out.
pub fn describe(args: &RunArgs, settings: &Settings) -> String {
    let mut lines = vec![format!(
        "settings are valid for {}: {}",
        if settings.embedded { "the embedded mode" } else { "the targets" },
        settings.targets.join(", ")
    )];
    match &args.connect.database_url {
        Some(url) => lines.push(format!("  database: {}", agora_eventstore::redact(url))),
        None if !settings.gateway_only() => {
            lines.push(format!("  database: SQLite in {}", args.connect.data_dir.display()))
        }
        None => {}
    }
    if !settings.embedded && !settings.gateway_only() {
        lines.push(format!(
            "  bus: {} (stream {}, {} replica{})",
            args.nats_url,
            args.nats_prefix.to_uppercase(),
            args.nats_replicas,
            if args.nats_replicas == 1 { "" } else { "s" }
        ));
    }
    lines.push(format!("  gRPC {}, HTTP {}", settings.grpc_addr, settings.http_addr));
    let tokens = match &settings.token_keys {
        TokenKeys::Identity => "tokens: signed and checked here".to_string(),
        TokenKeys::Fixed(_) => "tokens: checked against a JWKS file".to_string(),
        TokenKeys::Url(url) => format!("tokens: checked against {url}"),
        TokenKeys::Unused => "tokens: passed on to the services".to_string(),
    };
    lines.push(format!("  {tokens}"));
    if !settings.login_providers.is_empty() {
        let ids: Vec<&str> = settings.login_providers.iter().map(|p| p.id.as_str()).collect();
        lines.push(format!("  login providers: {}", ids.join(", ")));
    }
    if settings.dev_login {
        lines.push("  development login: ON".to_string());
    }
    for name in unknown_variables(std::env::vars().map(|(name, _)| name)) {
        lines.push(format!("warning: {name} is set but is not a setting of agora run"));
    }
    lines.join("\n")
}

/// `AGORA_*` variables that no setting reads: most often a misspelt name.
pub fn unknown_variables(names: impl Iterator<Item = String>) -> Vec<String> {
    use clap::CommandFactory;
    #[derive(clap::Parser)]
    struct Probe {
        #[command(flatten)]
        run: RunArgs,
    }
    let command = Probe::command();
    let mut known: std::collections::BTreeSet<String> = command
        .get_arguments()
        .filter_map(|arg| arg.get_env().and_then(|env| env.to_str()).map(str::to_string))
        .collect();
    // Read directly by the records service and by the telemetry, not through flags.
    known.extend(
        ["AGORA_SBSYS_CLIENT_SECRET", "AGORA_SBSYS_PASSWORD", agora_telemetry::LOG_FORMAT_ENV].map(String::from),
    );
    let mut unknown: Vec<String> = names.filter(|name| name.starts_with("AGORA_") && !known.contains(name)).collect();
    unknown.sort();
    unknown
}

/// The services this binary can run.
pub const TARGETS: &[&str] = &["hearing", "response", "identity", "records", "notification", "gateway"];

pub const DEV_ISSUER: &str = "agora-dev";
pub const AUDIENCE: &str = "agora";

/// The master key that wraps every person's data key and the token signing keys, and during a
/// rotation the keys it replaces.
#[derive(Args, Clone, Debug)]
pub struct MasterKeyArgs {
    /// The master key (32 bytes, base64). Required with --target identity and with
    /// --database-url; the embedded mode makes one of its own in its data dir.
    #[arg(long, env = "AGORA_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// The master key's id, kept with every key it wraps (a new key gets a new id).
    #[arg(long, env = "AGORA_MASTER_KEY_ID", default_value = "1")]
    pub master_key_id: String,
    /// During a rotation, the master keys being replaced, as `id:base64` separated by commas:
    /// what they wrapped still opens until `agora keys rewrap` has wrapped it again.
    #[arg(long, env = "AGORA_PREVIOUS_MASTER_KEYS", hide_env_values = true)]
    pub previous_master_keys: Option<String>,
}

impl MasterKeyArgs {
    /// The configured master key with the keys it replaces, or the embedded mode's own (made
    /// in `data_dir` on first use) when none is configured and `embedded`.
    pub fn master(&self, embedded: bool, data_dir: &Path) -> anyhow::Result<Option<MasterKey>> {
        let current = match &self.master_key {
            Some(key) => MasterKey::from_base64(&self.master_key_id, key).context("AGORA_MASTER_KEY")?,
            None if embedded => development_master_key(data_dir)?,
            None => return Ok(None),
        };
        let mut previous = Vec::new();
        for entry in self.previous_master_keys.iter().flat_map(|keys| keys.split(',')).map(str::trim) {
            if entry.is_empty() {
                continue;
            }
            // The key itself is never repeated in an error.
            let Some((kid, key)) = entry.split_once(':') else {
                bail!("AGORA_PREVIOUS_MASTER_KEYS: each key is written id:base64 (an entry has no ':')");
            };
            previous.push(
                MasterKey::from_base64(kid, key)
                    .with_context(|| format!("AGORA_PREVIOUS_MASTER_KEYS: the key with id '{kid}'"))?,
            );
        }
        Ok(Some(current.with_previous(previous).context("AGORA_PREVIOUS_MASTER_KEYS")?))
    }
}

#[derive(Args, Clone, Debug)]
pub struct ConnectArgs {
    /// Data directory of the embedded mode (SQLite, files, development keys).
    #[arg(long, env = "AGORA_DATA_DIR", default_value = "./agora-data")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL; when set, the store is PostgreSQL instead of the embedded SQLite.
    #[arg(long, env = "AGORA_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The most connections this process opens to PostgreSQL (opened as needed). The sum over
    /// every process must stay below the server's max_connections.
    #[arg(long, env = "AGORA_DATABASE_POOL", default_value_t = 32)]
    pub database_pool: u32,
}

impl ConnectArgs {
    /// The database URL, when one is given, is a PostgreSQL one.
    pub fn check(&self) -> anyhow::Result<()> {
        if !(2..=1000).contains(&self.database_pool) {
            bail!("AGORA_DATABASE_POOL must be 2 to 1000 connections (got {})", self.database_pool);
        }
        match &self.database_url {
            Some(url) if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) => {
                bail!("AGORA_DATABASE_URL must be a postgres:// URL (got '{}')", agora_eventstore::redact(url))
            }
            _ => Ok(()),
        }
    }

    pub async fn store(&self) -> anyhow::Result<Store> {
        self.check()?;
        match &self.database_url {
            Some(url) => Store::connect_pooled(url, self.database_pool)
                .await
                .with_context(|| format!("AGORA_DATABASE_URL: cannot open {}", agora_eventstore::redact(url))),
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
    /// Services to run, comma-separated (available: hearing, response, identity, records, notification). Without it: every service in
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
    /// The public keys access tokens are signed with: a JWKS file, or the identity service's
    /// `http://…/.well-known/jwks.json`, read again every five minutes to follow key rotation.
    /// Required with --target unless the identity service runs in the same process.
    #[arg(long, env = "AGORA_TOKEN_JWKS")]
    pub token_jwks: Option<String>,
    #[command(flatten)]
    pub master: MasterKeyArgs,
    /// The identity service's gRPC address (http://host:port), for services that run apart
    /// from it and seal personal data with its vault (the response service).
    #[arg(long, env = "AGORA_IDENTITY_URL")]
    pub identity_url: Option<String>,
    /// The secret the services share to reach the identity service's vault (at least 32
    /// characters). Required where the vault is reached over the network, on both sides.
    #[arg(long, env = "AGORA_SERVICE_SECRET", hide_env_values = true)]
    pub service_secret: Option<String>,
    /// Login providers (a JSON file: a list of OpenID Connect providers, one per user type).
    #[arg(long, env = "AGORA_LOGIN_PROVIDERS")]
    pub login_providers: Option<PathBuf>,
    /// Lifetime of access tokens, in minutes.
    #[arg(long, env = "AGORA_ACCESS_TOKEN_MINUTES", default_value_t = 15)]
    pub access_token_minutes: i64,
    /// Lifetime of a session's refresh tokens, in hours.
    #[arg(long, env = "AGORA_REFRESH_TOKEN_HOURS", default_value_t = 12)]
    pub refresh_token_hours: i64,
    /// Secret key (at least 32 characters) for pseudonymous CPR references. Required with --target.
    #[arg(long, env = "AGORA_PSEUDONYM_KEY", hide_env_values = true)]
    pub pseudonym_key: Option<String>,
    /// clamd (host:port) to scan response attachments with, over its INSTREAM protocol.
    #[arg(long, env = "AGORA_CLAMD")]
    pub clamd: Option<String>,
    /// Seconds between checks for hearings whose start date or deadline has come.
    #[arg(long, env = "AGORA_SCHEDULER_INTERVAL", default_value_t = 10)]
    pub scheduler_interval: u64,
    /// Days after a hearing's conclusion when its respondents' personal data is erased
    /// (OS2agora keeps it 730 days); 0 keeps it.
    #[arg(long, env = "AGORA_RETENTION_DAYS", default_value_t = 730)]
    pub retention_days: i64,
    /// Milliseconds a person's command (a moderation, a withdrawal, a hearing's change, an
    /// administrator's change of a user) waits before it answers for the read model it feeds
    /// to show it, so that the page read next shows it; 0 answers at once. A submission, a
    /// login and the scheduler's transitions never wait.
    #[arg(long, env = "AGORA_READ_MODEL_WAIT_MS", default_value_t = 2000)]
    pub read_model_wait_ms: u64,
    /// Offer the development login with demo users (on by default in the embedded mode only).
    #[arg(long, env = "AGORA_DEV_LOGIN")]
    pub dev_login: Option<bool>,
    /// The records service's configuration (a JSON file, see docs/records.md): the records
    /// system (the archive folder by default, or SBSYS), case templates per KLE number,
    /// document types, which responses to file, retries.
    #[arg(long, env = "AGORA_RECORDS_CONFIG")]
    pub records_config: Option<PathBuf>,
    /// The notification service's configuration (a JSON file): the mail server, what messages
    /// say of the portal, the rate limit, retries. The embedded mode writes mail to
    /// DATA_DIR/mail without one.
    #[arg(long, env = "AGORA_NOTIFICATION_CONFIG")]
    pub notification_config: Option<PathBuf>,
    /// The hearing service's gRPC address (http://host:port), for a records service or a
    /// gateway that runs apart from it.
    #[arg(long, env = "AGORA_HEARING_URL")]
    pub hearing_url: Option<String>,
    /// The response service's gRPC address (http://host:port), for a records service or a
    /// gateway that runs apart from it.
    #[arg(long, env = "AGORA_RESPONSE_URL")]
    pub response_url: Option<String>,
    /// The gateway's limit on requests per second from one client address (a burst of four
    /// seconds' worth on top); 0 turns it off.
    #[arg(long, env = "AGORA_RATE_LIMIT_PER_CLIENT", default_value_t = 50.0)]
    pub rate_limit_per_client: f64,
    /// The gateway's limit on requests per second from one logged-in user; 0 turns it off.
    #[arg(long, env = "AGORA_RATE_LIMIT_PER_USER", default_value_t = 20.0)]
    pub rate_limit_per_user: f64,
    /// The gateway's largest request body in MB (a response with its attachments; 1 to 120,
    /// the most the services take in one message). Each hearing type limits files further.
    #[arg(long, env = "AGORA_MAX_BODY_MB", default_value_t = 120)]
    pub max_body_mb: u32,
    /// Take the client's address from X-Forwarded-For (only behind a proxy that sets it).
    #[arg(long, env = "AGORA_TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,
    /// The records service's gRPC address, for a gateway that runs apart from it.
    #[arg(long, env = "AGORA_RECORDS_URL")]
    pub records_url: Option<String>,
    /// The notification service's gRPC address, for a gateway that runs apart from it.
    #[arg(long, env = "AGORA_NOTIFICATION_URL")]
    pub notification_url: Option<String>,
    /// Runs the hearing, response and records services' clock this many days ahead, to show
    /// or test a hearing's whole life in minutes. Never in production: deadlines and
    /// retention follow this clock.
    #[arg(long, env = "AGORA_CLOCK_OFFSET_DAYS", default_value_t = 0, hide = true)]
    pub clock_offset_days: i64,
    /// Do not seed demo data in the embedded mode.
    #[arg(long, env = "AGORA_NO_DEMO", default_value_t = false)]
    pub no_demo: bool,
    /// Check the settings and the files they name, say what would run, and exit without
    /// connecting to anything (exit 1 naming the first bad setting).
    #[arg(long)]
    pub check: bool,
}

/// What the GDPR tools need: the store, the keys that open personal data, the files.
#[derive(Args, Clone, Debug)]
pub struct GdprArgs {
    /// The person's user id.
    #[arg(long)]
    pub user: uuid::Uuid,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub master: MasterKeyArgs,
    #[arg(long, env = "AGORA_PSEUDONYM_KEY", hide_env_values = true)]
    pub pseudonym_key: Option<String>,
    #[arg(long, env = "AGORA_FILES")]
    pub files: Option<String>,
}

impl GdprArgs {
    /// The identity settings that open the data: the embedded data dir's keys, or the given ones.
    pub fn identity_settings(&self) -> anyhow::Result<IdentitySettings> {
        let embedded = self.connect.database_url.is_none();
        let Some(master) = self.master.master(embedded, &self.connect.data_dir)? else {
            bail!("AGORA_MASTER_KEY is required with --database-url")
        };
        if embedded {
            return Ok(embedded_identity_settings_with(master, &development_secret(&self.connect.data_dir)?));
        }
        let Some(pseudonym) = &self.pseudonym_key else { bail!("AGORA_PSEUDONYM_KEY is required with --database-url") };
        let mut settings = embedded_identity_settings_with(master, pseudonym.as_bytes());
        settings.dev_login = false;
        Ok(settings)
    }

    pub fn files(&self) -> anyhow::Result<FilesLocation> {
        match &self.files {
            None => Ok(FilesLocation::Local(self.connect.data_dir.join("files"))),
            Some(value) => FilesLocation::parse(value),
        }
    }
}

/// Where the services of this process get the token keys from.
pub enum TokenKeys {
    /// The identity service runs here: its own verifier, which follows its rotations.
    Identity,
    /// A JWKS file, read once.
    Fixed(TokenVerifier),
    /// The identity service's JWKS endpoint, read again periodically.
    Url(String),
    /// A process that checks no tokens itself (the gateway alone).
    Unused,
}

impl Settings {
    /// Whether this process is the gateway and nothing else.
    pub fn gateway_only(&self) -> bool {
        !self.embedded && self.targets.iter().all(|t| t == "gateway")
    }
}

/// Resolved settings.
pub struct Settings {
    pub embedded: bool,
    pub targets: Vec<String>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub files: FilesLocation,
    pub token_keys: TokenKeys,
    pub pseudonym_key: Vec<u8>,
    pub dev_login: bool,
    /// Set when the identity service runs in this process.
    pub identity: Option<IdentitySettings>,
    /// Where the vault is, for a response service without the identity service beside it.
    pub remote_vault: Option<(String, String)>,
    /// The secret the vault service asks of callers, when it serves other processes.
    pub service_secret: Option<String>,
    pub login_providers: Vec<ProviderConfig>,
    /// Set when the records service runs in this process.
    pub records: Option<RecordsSettings>,
    /// Set when the notification service runs in this process.
    pub notification: Option<NotificationSettings>,
    /// Set when the gateway runs in this process.
    pub gateway: Option<GatewaySettings>,
    /// The clock of the hearing, response and records services.
    pub clock: agora_identity::app::Clock,
}

/// What the notification service needs: its configuration, where mail goes without a mail
/// server, and where the people it writes to are looked up (`None`: the identity service here).
pub struct NotificationSettings {
    pub config: agora_notification::config::NotificationConfig,
    pub mail_folder: PathBuf,
    pub remote_identity: Option<(String, String)>,
}

/// What the records service needs: its configuration, where its archive goes by default, and
/// where it reads what it files.
pub struct RecordsSettings {
    pub config: agora_records::config::RecordsConfig,
    pub default_archive: PathBuf,
    /// None: the service runs in this process, reached over loopback.
    pub hearing_url: Option<String>,
    pub response_url: Option<String>,
    pub service_secret: String,
}

/// Where the gateway reaches the services; `None` for those that run in this process.
pub struct GatewaySettings {
    pub hearing_url: Option<String>,
    pub response_url: Option<String>,
    pub identity_url: Option<String>,
    pub records_url: Option<String>,
    pub notification_url: Option<String>,
}

/// The gRPC address `who` reaches the `target` service at: `None` when it runs in this process.
fn service_url(
    who: &str,
    targets: &[String],
    target: &str,
    setting: &str,
    value: &Option<String>,
) -> anyhow::Result<Option<String>> {
    match value {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => Ok(Some(url.clone())),
        Some(url) => bail!("{setting} '{url}' must be an http:// or https:// URL"),
        None if targets.iter().any(|t| t == target) => Ok(None),
        None => bail!("the {who} service reads the {target} service: set {setting} or run both in one process"),
    }
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
        self.connect.check()?;
        // The gateway alone keeps no data: it needs the services' addresses, not a database.
        let gateway_only = !embedded && targets.iter().all(|t| t == "gateway");
        if embedded {
            targets = TARGETS.iter().map(|t| t.to_string()).collect();
        } else if self.connect.database_url.is_none() && !gateway_only {
            bail!("AGORA_DATABASE_URL is required with --target: distributed services run on PostgreSQL");
        }
        let grpc_addr = address("AGORA_GRPC_ADDR", &self.grpc_addr)?;
        let http_addr = address("AGORA_HTTP_ADDR", &self.http_addr)?;
        if self.retention_days < 0 {
            bail!("AGORA_RETENTION_DAYS must be 0 (keep) or more days (got {})", self.retention_days);
        }
        if self.scheduler_interval == 0 {
            bail!("AGORA_SCHEDULER_INTERVAL must be at least 1 second");
        }
        if !embedded && !gateway_only {
            for server in self.nats_url.split(',').map(str::trim) {
                server
                    .parse::<async_nats::ServerAddr>()
                    .map_err(|e| anyhow::anyhow!("AGORA_NATS_URL: '{server}' is not a NATS server address: {e}"))?;
            }
        }
        if !(self.rate_limit_per_client >= 0.0 && self.rate_limit_per_user >= 0.0) {
            bail!(
                "AGORA_RATE_LIMIT_PER_CLIENT and AGORA_RATE_LIMIT_PER_USER must be 0 (off) or more requests per second"
            );
        }
        if !(1..=120).contains(&self.max_body_mb) {
            bail!("AGORA_MAX_BODY_MB must be 1 to 120 (got {})", self.max_body_mb);
        }
        if !(1..=5).contains(&self.nats_replicas) {
            bail!("AGORA_NATS_REPLICAS must be between 1 and 5 (got {})", self.nats_replicas);
        }
        let files = match &self.files {
            None => FilesLocation::Local(self.connect.data_dir.join("files")),
            Some(value) => FilesLocation::parse(value)?,
        };
        let with_identity = targets.iter().any(|t| t == "identity");
        let pseudonym_key = if embedded {
            development_secret(&self.connect.data_dir)?
        } else {
            let Some(secret) = &self.pseudonym_key else {
                bail!("AGORA_PSEUDONYM_KEY is required with --target: the secret for pseudonymous CPR references");
            };
            if secret.len() < 32 {
                bail!("AGORA_PSEUDONYM_KEY must be at least 32 characters (got {})", secret.len());
            }
            secret.as_bytes().to_vec()
        };
        let dev_login = self.dev_login.unwrap_or(embedded);
        let token_keys = match &self.token_jwks {
            _ if with_identity => TokenKeys::Identity,
            // The gateway passes tokens on; the services check them.
            None if gateway_only => TokenKeys::Unused,
            None => bail!(
                "AGORA_TOKEN_JWKS is required with --target when the identity service runs elsewhere: its \
                 http://…/.well-known/jwks.json, or a JWKS file"
            ),
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => TokenKeys::Url(url.clone()),
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("AGORA_TOKEN_JWKS: cannot read {path}"))?;
                let jwks: serde_json::Value =
                    serde_json::from_str(&text).with_context(|| format!("AGORA_TOKEN_JWKS: {path} is not JSON"))?;
                let verifier = TokenVerifier::from_jwks(&self.token_issuer, &self.token_audience, &jwks)
                    .with_context(|| format!("AGORA_TOKEN_JWKS: {path} is not a usable JWKS"))?;
                TokenKeys::Fixed(verifier)
            }
        };
        let service_secret = match &self.service_secret {
            Some(secret) if secret.len() < 32 => {
                bail!("AGORA_SERVICE_SECRET must be at least 32 characters (got {})", secret.len())
            }
            // The embedded services reach each other over loopback with a secret of the run.
            None if embedded => Some(random_secret()),
            other => other.clone(),
        };
        let seals_personal_data = targets.iter().any(|t| t == "response" || t == "hearing" || t == "notification");
        let remote_vault = if seals_personal_data && !with_identity {
            match (&self.identity_url, &service_secret) {
                (Some(url), Some(secret)) => Some((url.clone(), secret.clone())),
                _ => bail!(
                    "the hearing, response and notification services open personal data with the identity service's vault: run \
                     them in the same process as identity or set AGORA_IDENTITY_URL and AGORA_SERVICE_SECRET"
                ),
            }
        } else {
            None
        };
        let (identity, login_providers) = if with_identity {
            (Some(self.identity_settings(embedded, dev_login, &pseudonym_key)?), self.login_providers()?)
        } else {
            (None, Vec::new())
        };
        let notification = if targets.iter().any(|t| t == "notification") {
            Some(self.notification_settings(embedded, with_identity, service_secret.as_deref())?)
        } else {
            None
        };
        let records = if targets.iter().any(|t| t == "records") {
            Some(self.records_settings(&targets, service_secret.as_deref())?)
        } else {
            None
        };
        let gateway =
            if targets.iter().any(|t| t == "gateway") { Some(self.gateway_settings(&targets)?) } else { None };
        let clock = shifted_clock(self.clock_offset_days)?;
        Ok(Settings {
            notification,
            gateway,
            clock,
            records,
            embedded,
            targets,
            grpc_addr,
            http_addr,
            files,
            token_keys,
            pseudonym_key,
            dev_login,
            identity,
            login_providers,
            remote_vault,
            service_secret,
        })
    }

    /// The identity service's settings: token lifetimes, the master key, the pseudonym key.
    pub fn identity_settings(
        &self,
        embedded: bool,
        dev_login: bool,
        pseudonym_key: &[u8],
    ) -> anyhow::Result<IdentitySettings> {
        if !(1..=24 * 60).contains(&self.access_token_minutes) {
            bail!("AGORA_ACCESS_TOKEN_MINUTES must be 1 to 1440 (got {})", self.access_token_minutes);
        }
        if !(1..=24 * 90).contains(&self.refresh_token_hours) {
            bail!("AGORA_REFRESH_TOKEN_HOURS must be 1 to 2160 (got {})", self.refresh_token_hours);
        }
        let master = match self.master.master(embedded, &self.connect.data_dir)? {
            Some(master) => master,
            None => bail!(
                "AGORA_MASTER_KEY is required with --target identity: 32 random bytes in base64 \
                 (for example: openssl rand -base64 32), kept in a secret or a key vault"
            ),
        };
        Ok(IdentitySettings {
            access_ttl: chrono::Duration::minutes(self.access_token_minutes),
            refresh_ttl: chrono::Duration::hours(self.refresh_token_hours),
            dev_login,
            ..IdentitySettings::new(&self.token_issuer, &self.token_audience, master, pseudonym_key)
        })
    }

    fn notification_settings(
        &self,
        embedded: bool,
        with_identity: bool,
        service_secret: Option<&str>,
    ) -> anyhow::Result<NotificationSettings> {
        let config = json_config(
            "AGORA_NOTIFICATION_CONFIG",
            self.notification_config.as_deref(),
            agora_notification::config::NotificationConfig::from_json,
        )?;
        if !embedded && config.smtp.is_none() && config.mail_folder.is_none() {
            bail!("AGORA_NOTIFICATION_CONFIG must name the mail server (smtp) for --target notification");
        }
        let remote_identity = match (with_identity, &self.identity_url, service_secret) {
            (true, _, _) => None,
            (false, Some(url), Some(secret)) => Some((url.clone(), secret.to_string())),
            _ => bail!(
                "the notification service looks people up at the identity service: run them in one process or set \
                 AGORA_IDENTITY_URL and AGORA_SERVICE_SECRET"
            ),
        };
        let mail_folder = config.mail_folder.clone().unwrap_or_else(|| self.connect.data_dir.join("mail"));
        Ok(NotificationSettings { config, mail_folder, remote_identity })
    }

    fn records_settings(&self, targets: &[String], service_secret: Option<&str>) -> anyhow::Result<RecordsSettings> {
        let mut config = json_config(
            "AGORA_RECORDS_CONFIG",
            self.records_config.as_deref(),
            agora_records::config::RecordsConfig::from_json,
        )?;
        // Secrets come from the environment (a Kubernetes Secret), not the file.
        if let agora_records::config::SystemConfig::Sbsys(sbsys) = &mut config.system {
            if let Ok(secret) = std::env::var("AGORA_SBSYS_CLIENT_SECRET") {
                sbsys.client_secret = secret;
            }
            if let Ok(password) = std::env::var("AGORA_SBSYS_PASSWORD") {
                sbsys.password = password;
            }
        }
        let Some(secret) = service_secret else {
            bail!(
                "the records service reads hearings and responses with AGORA_SERVICE_SECRET: set it (the same on every service)"
            );
        };
        let url = |target, setting, value| service_url("records", targets, target, setting, value);
        Ok(RecordsSettings {
            default_archive: self.connect.data_dir.join("records"),
            hearing_url: url("hearing", "AGORA_HEARING_URL", &self.hearing_url)?,
            response_url: url("response", "AGORA_RESPONSE_URL", &self.response_url)?,
            service_secret: secret.to_string(),
            config,
        })
    }

    /// Where the gateway finds each service: `None` for one that runs in this process.
    fn gateway_settings(&self, targets: &[String]) -> anyhow::Result<GatewaySettings> {
        let url = |target, setting, value| service_url("gateway", targets, target, setting, value);
        Ok(GatewaySettings {
            hearing_url: url("hearing", "AGORA_HEARING_URL", &self.hearing_url)?,
            response_url: url("response", "AGORA_RESPONSE_URL", &self.response_url)?,
            identity_url: url("identity", "AGORA_IDENTITY_URL", &self.identity_url)?,
            records_url: url("records", "AGORA_RECORDS_URL", &self.records_url)?,
            notification_url: url("notification", "AGORA_NOTIFICATION_URL", &self.notification_url)?,
        })
    }

    fn login_providers(&self) -> anyhow::Result<Vec<ProviderConfig>> {
        let Some(path) = &self.login_providers else { return Ok(Vec::new()) };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("AGORA_LOGIN_PROVIDERS: cannot read {}", path.display()))?;
        let providers: Vec<ProviderConfig> = serde_json::from_str(&text)
            .with_context(|| format!("AGORA_LOGIN_PROVIDERS: {} is not a list of providers", path.display()))?;
        let mut ids = std::collections::BTreeSet::new();
        for provider in &providers {
            if !ids.insert(provider.id.clone()) {
                bail!("AGORA_LOGIN_PROVIDERS: provider id {:?} appears twice", provider.id);
            }
        }
        Ok(providers)
    }
}

/// The identity settings of the embedded mode in `data_dir`, for the operator's tools that
/// act in it (`agora token issue`): the same keys as `agora run` there.
pub fn embedded_identity_settings(data_dir: &Path, access_ttl: chrono::Duration) -> anyhow::Result<IdentitySettings> {
    let mut settings =
        embedded_identity_settings_with(development_master_key(data_dir)?, &development_secret(data_dir)?);
    settings.access_ttl = access_ttl;
    Ok(settings)
}

fn embedded_identity_settings_with(master: MasterKey, pseudonym_key: &[u8]) -> IdentitySettings {
    IdentitySettings { dev_login: true, ..IdentitySettings::new(DEV_ISSUER, AUDIENCE, master, pseudonym_key) }
}

/// The services' clock, `days` ahead of the real one (AGORA_CLOCK_OFFSET_DAYS).
pub fn shifted_clock(days: i64) -> anyhow::Result<agora_identity::app::Clock> {
    if !(-3650..=3650).contains(&days) {
        bail!("AGORA_CLOCK_OFFSET_DAYS must be within ten years (got {days})");
    }
    let offset = chrono::Duration::days(days);
    Ok(if offset.is_zero() {
        std::sync::Arc::new(chrono::Utc::now)
    } else {
        std::sync::Arc::new(move || chrono::Utc::now() + offset)
    })
}

/// The embedded mode's master key, made on first start and kept in the data dir.
fn development_master_key(data_dir: &Path) -> anyhow::Result<MasterKey> {
    let path = data_dir.join("dev-master-key");
    if let Ok(key) = std::fs::read_to_string(&path) {
        return MasterKey::from_base64("dev", key.trim())
            .with_context(|| format!("{} is not a master key", path.display()));
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("AGORA_DATA_DIR: cannot create {}", data_dir.display()))?;
    let (key, encoded) = MasterKey::generate("dev").context("cannot generate a development master key")?;
    std::fs::write(&path, encoded).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key)
}

/// A service's JSON configuration file, or its defaults without one; an error names the
/// setting, the file and what is wrong.
fn json_config<C: Default>(
    setting: &str,
    path: Option<&Path>,
    parse: impl Fn(&str) -> Result<C, String>,
) -> anyhow::Result<C> {
    let Some(path) = path else { return Ok(C::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("{setting}: cannot read {}", path.display()))?;
    parse(&text).map_err(|e| anyhow::anyhow!("{setting} {}: {e}", path.display()))
}

/// A secret for this run only.
fn random_secret() -> String {
    uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string()
}

fn development_secret(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join("dev-pseudonym-key");
    if let Ok(secret) = std::fs::read(&path) {
        return Ok(secret);
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("AGORA_DATA_DIR: cannot create {}", data_dir.display()))?;
    let secret = uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string();
    std::fs::write(&path, &secret).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(secret.into_bytes())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_named_after_the_targets() {
        assert_eq!(service_name(&[]), "agora");
        assert_eq!(service_name(&["response".into()]), "agora-response");
        assert_eq!(service_name(&["hearing,response".into()]), "agora-hearing-response");
    }
}
