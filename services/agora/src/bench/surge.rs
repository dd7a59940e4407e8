//! `agora bench surge`: the last day of a high-attention hearing, through the production
//! topology on this machine (the gateway and each service a process of its own, PostgreSQL, a
//! NATS server of the bench's own), with faults injected on request; then the proof that every
//! acknowledged response is in the event store, the read model and the records journal once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use tokio::process::{Child, Command};
use uuid::Uuid;

use super::{BenchDb, Measured, Schema, free_port, http_ok, measure};

#[derive(Args)]
pub struct SurgeArgs {
    #[command(flatten)]
    db: BenchDb,
    /// Respondents submitting at the same time.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Distinct respondents, each logged in with a token of their own, whom the clients act for
    /// in turn (each one's first response makes their key in the vault).
    #[arg(long, default_value_t = 2000)]
    respondents: usize,
    /// How long the surge lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Stop after this many responses, if that comes first.
    #[arg(long)]
    count: Option<u64>,
    /// The share of responses sent as multipart/form-data with a PDF attachment.
    #[arg(long, default_value_t = 0.1)]
    attachments: f64,
    /// Faults to inject during the surge.
    #[arg(long, value_enum)]
    chaos: Option<Chaos>,
    /// The nats-server program the bench runs its own JetStream with (2.2 or later).
    #[arg(long, env = "AGORA_NATS_SERVER_BIN", default_value = "nats-server")]
    nats_server: String,
    /// The shell command that restarts PostgreSQL, for `--chaos postgres`.
    #[arg(long, default_value = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main restart")]
    postgres_restart: String,
    /// Leave the notification service out (no receipts are sent): shows what it costs.
    #[arg(long)]
    without_notification: bool,
    /// Seconds of raw single-row INSERTs at the same concurrency, half before and half after the
    /// surge; 0 for as long as the surge.
    #[arg(long, default_value_t = 0)]
    baseline_seconds: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
pub enum Chaos {
    /// kill -9 the response service and start it again; kill -9 the NATS server and start it
    /// again; kill -9 the event consumers (records, notification) and start them again.
    Services,
    /// Restart PostgreSQL (`--postgres-restart`).
    Postgres,
    /// A three-node JetStream cluster (streams of three replicas); one node is killed and later
    /// started again.
    Cluster,
}

const SERVICE_SECRET: &str = "bench-service-secret-bench-service-secret";
const PSEUDONYM_KEY: &str = "bench-pseudonym-key-bench-pseudonym-key";
/// A small PDF: the attachment a share of the respondents send.
const ATTACHMENT: &[u8] = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";
const KLE: &str = r#"[{"Number": "01", "Title": "Fysisk planlægning", "Groups": [{"Number": "01.02",
    "Name": "Lokalplanlægning", "Topics": [{"Number": "01.02.05", "Name": "Lokalplaner"}]}]}]"#;

pub async fn surge(args: SurgeArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.respondents == 0 {
        bail!("--clients and --respondents must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.attachments) {
        bail!("--attachments is a share from 0 to 1 (got {})", args.attachments);
    }
    let (schema, options) = Schema::create(&args.db.database_url).await?;
    let dir = tempfile::tempdir()?;
    let result = surge_in(&args, &schema, options, dir.path()).await;
    if let Err(e) = &result {
        eprintln!("the surge failed: {e:#}");
        for log in std::fs::read_dir(dir.path().join("logs")).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(log.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            for line in tail.into_iter().rev() {
                eprintln!("  {}: {line}", log.file_name().to_string_lossy());
            }
        }
    }
    // The restarted PostgreSQL may still be coming back; the schema goes once it answers.
    let dropped = schema.drop_eventually().await;
    let report = result?;
    dropped?;
    if args.db.json {
        println!("{report}");
    }
    let failed = report["lost"].as_u64() != Some(0)
        || report["duplicated"].as_u64() != Some(0)
        || report["unacknowledged"].as_u64() != Some(0)
        || report["retry_changed_receipt"].as_u64() != Some(0);
    if failed {
        bail!("responses were lost, taken twice or never acknowledged (see above)");
    }
    Ok(())
}

/// A process of the deployment: `agora run --target …` on ports of its own, its log in a file.
struct Process {
    name: &'static str,
    targets: &'static str,
    grpc: u16,
    http: u16,
    extra: Vec<(String, String)>,
    child: Option<Child>,
}

impl Process {
    fn new(name: &'static str, targets: &'static str, pool: u32) -> anyhow::Result<Self> {
        let extra = vec![("AGORA_DATABASE_POOL".to_string(), pool.to_string())];
        Ok(Self { name, targets, grpc: free_port()?, http: free_port()?, extra, child: None })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }
}

/// The deployment: NATS, the services and the gateway, each in processes of their own.
struct Deployment {
    exe: PathBuf,
    dir: PathBuf,
    envs: Vec<(String, String)>,
    processes: Vec<Process>,
    nats: Vec<NatsNode>,
    nats_server: String,
}

struct NatsNode {
    port: u16,
    cluster_port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl Deployment {
    fn log(&self, name: &str) -> anyhow::Result<std::fs::File> {
        let folder = self.dir.join("logs");
        std::fs::create_dir_all(&folder)?;
        Ok(std::fs::OpenOptions::new().create(true).append(true).open(folder.join(format!("{name}.log")))?)
    }

    fn process(&mut self, name: &str) -> anyhow::Result<&mut Process> {
        self.processes.iter_mut().find(|p| p.name == name).with_context(|| format!("no process {name}"))
    }

    fn running(&self, name: &str) -> bool {
        self.processes.iter().any(|p| p.name == name && p.child.is_some())
    }

    fn port(&self, name: &str) -> u16 {
        self.processes.iter().find(|p| p.name == name).map(|p| p.http).unwrap_or_default()
    }

    async fn start_nats(&mut self, node: usize) -> anyhow::Result<()> {
        let routes: Vec<String> = self
            .nats
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != node)
            .map(|(_, n)| format!("nats://127.0.0.1:{}", n.cluster_port))
            .collect();
        let log = self.log(&format!("nats-{node}"))?;
        let this = &self.nats[node];
        let mut command = Command::new(&self.nats_server);
        command
            .args(["-a", "127.0.0.1", "-p", &this.port.to_string(), "-js", "-sd"])
            .arg(&this.store)
            .args(["-n", &format!("bench-{node}")]);
        if !routes.is_empty() {
            command.args([
                "--cluster_name",
                "bench",
                "--cluster",
                &format!("nats://127.0.0.1:{}", this.cluster_port),
                "--routes",
                &routes.join(","),
            ]);
        }
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {} (--nats-server, AGORA_NATS_SERVER_BIN)", self.nats_server))?;
        let port = this.port;
        self.nats[node].child = Some(child);
        eventually(20, &format!("NATS node {node} to listen"), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
        })
        .await
    }

    async fn kill_nats(&mut self, node: usize) {
        if let Some(mut child) = self.nats[node].child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    async fn start(&mut self, name: &str) -> anyhow::Result<()> {
        let log = self.log(name)?;
        let exe = self.exe.clone();
        let envs = self.envs.clone();
        let process = self.process(name)?;
        let mut command = Command::new(exe);
        command
            .args(["run", "--target", process.targets])
            .envs(envs)
            .envs(process.extra.iter().cloned())
            .env("AGORA_GRPC_ADDR", format!("127.0.0.1:{}", process.grpc))
            .env("AGORA_HTTP_ADDR", format!("127.0.0.1:{}", process.http))
            .env("RUST_LOG", "warn")
            .env_remove("AGORA_TARGETS")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        process.child = Some(command.spawn().context("cannot start agora run")?);
        let (http, name) = (process.http, process.name);
        let started = Instant::now();
        loop {
            if http_ok(http, "/readyz").await {
                return Ok(());
            }
            let process = self.process(name)?;
            if let Some(child) = process.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "agora run --target {} ended ({status}) before it was ready; see logs/{name}.log",
                    process.targets
                );
            }
            // A service waits up to 100 s for a JetStream cluster to elect its leader.
            if started.elapsed() > Duration::from_secs(120) {
                bail!("agora run --target {name} was not ready within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// As a crash would: SIGKILL, no chance to finish anything.
    async fn kill_hard(&mut self, name: &str) -> anyhow::Result<()> {
        if let Some(mut child) = self.process(name)?.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    async fn stop_all(&mut self) {
        for process in &mut self.processes {
            if let Some(mut child) = process.child.take() {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
        for node in 0..self.nats.len() {
            self.kill_nats(node).await;
        }
    }
}

/// CPU seconds (user and system) a process has used so far; 100 ticks a second, as on every
/// Linux this runs on.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // The name in parentheses may hold spaces; the fields after it are plain.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or_default();
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds by what uses it: each process of the deployment, PostgreSQL (all its processes)
/// and the bench's own clients.
fn cpu_by_process(deployment: &Deployment) -> BTreeMap<String, f64> {
    let mut cpu = BTreeMap::new();
    for process in &deployment.processes {
        if let Some(pid) = process.child.as_ref().and_then(Child::id) {
            cpu.insert(process.name.to_string(), cpu_seconds(pid));
        }
    }
    let nats: f64 = deployment.nats.iter().filter_map(|n| n.child.as_ref().and_then(Child::id)).map(cpu_seconds).sum();
    cpu.insert("nats-server".into(), nats);
    let mut postgres = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|c| c.trim() == "postgres") {
            postgres += cpu_seconds(pid);
        }
    }
    cpu.insert("postgresql".into(), postgres);
    cpu.insert("bench clients".into(), cpu_seconds(std::process::id()));
    cpu
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Polls `check` every 20 ms until it gives a value, for at most `seconds`.
async fn eventually<T, F, Fut>(seconds: u64, what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_every(Duration::from_millis(20), seconds, what, check).await
}

/// Polls `check` every `interval` until it gives a value, for at most `seconds`.
async fn eventually_every<T, F, Fut>(interval: Duration, seconds: u64, what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    agora_eventstore::testing::poll_until(interval, seconds, check)
        .await
        .with_context(|| format!("gave up waiting {seconds} s for {what}"))
}

fn with_search_path(url: &str, schema: &str) -> String {
    format!("{url}{}options=-csearch_path%3D{schema}", if url.contains('?') { "&" } else { "?" })
}

async fn deploy(
    args: &SurgeArgs,
    schema: &Schema,
    dir: &Path,
) -> anyhow::Result<(Deployment, agora_auth::TokenIssuer)> {
    let key = agora_auth::SigningKey::generate_with_kid("bench")?;
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, agora_auth::jwks(&[&key]).to_string())?;
    let issuer = agora_auth::TokenIssuer::new(key, "agora-dev", "agora", chrono::Duration::hours(2));
    let (_, master_key) = agora_vault::MasterKey::generate("bench")?;
    let nodes = if args.chaos == Some(Chaos::Cluster) { 3 } else { 1 };
    let mut nats = Vec::new();
    for node in 0..nodes {
        let store = dir.join(format!("nats-{node}"));
        std::fs::create_dir_all(&store)?;
        nats.push(NatsNode { port: free_port()?, cluster_port: free_port()?, store, child: None });
    }
    let nats_url: Vec<String> = nats.iter().map(|n| format!("nats://127.0.0.1:{}", n.port)).collect();
    let records_config = dir.join("records.json");
    let archive = dir.join("archive");
    std::fs::write(
        &records_config,
        json!({"system": {"kind": "archive", "dir": archive}, "default_template": "1", "responses": "all",
               "first_retry_seconds": 1, "max_retry_seconds": 5})
        .to_string(),
    )?;
    let notification_config = dir.join("notification.json");
    // Receipts are sent as fast as the service can: the mail server's limit (10 a second by
    // default) would leave them to after the surge, and the surge is when their cost counts.
    // A receipt a killed worker was sending is sent again once its lease is over: 15 s here
    // rather than the default 120 s, so that the faults' runs do not wait two minutes for it.
    std::fs::write(
        &notification_config,
        json!({"mail_folder": dir.join("mail"), "messages_per_second": 100_000.0, "burst": 1000,
               "retries": {"lease_seconds": RECEIPT_LEASE_SECONDS, "first_retry_seconds": 1, "max_retry_seconds": 5}})
        .to_string(),
    )?;
    // Connections to PostgreSQL by need, within a default max_connections of 100 (the bench
    // keeps 4 for itself).
    let processes = vec![
        Process::new("identity", "identity", 16)?,
        Process::new("hearing", "hearing", 8)?,
        Process::new("response", "response", 32)?,
        Process::new("records", "records", 8)?,
        Process::new("notification", "notification", 8)?,
        Process::new("gateway", "gateway", 2)?,
    ];
    let url_of = |name: &str| processes.iter().find(|p| p.name == name).map(Process::url).unwrap_or_default();
    let envs: Vec<(String, String)> = [
        ("AGORA_DATABASE_URL", with_search_path(&args.db.database_url, &schema.name)),
        ("AGORA_NATS_URL", nats_url.join(",")),
        ("AGORA_NATS_PREFIX", format!("agorabench{}", Uuid::new_v4().simple())),
        ("AGORA_NATS_REPLICAS", nodes.to_string()),
        ("AGORA_DATA_DIR", dir.join("data").display().to_string()),
        ("AGORA_TOKEN_JWKS", jwks.display().to_string()),
        ("AGORA_SERVICE_SECRET", SERVICE_SECRET.into()),
        ("AGORA_PSEUDONYM_KEY", PSEUDONYM_KEY.into()),
        ("AGORA_MASTER_KEY", master_key),
        ("AGORA_MASTER_KEY_ID", MASTER_KEY_ID.into()),
        ("AGORA_RECORDS_CONFIG", records_config.display().to_string()),
        ("AGORA_NOTIFICATION_CONFIG", notification_config.display().to_string()),
        ("AGORA_IDENTITY_URL", url_of("identity")),
        ("AGORA_HEARING_URL", url_of("hearing")),
        ("AGORA_RESPONSE_URL", url_of("response")),
        ("AGORA_RECORDS_URL", url_of("records")),
        ("AGORA_NOTIFICATION_URL", url_of("notification")),
        // Thousands of respondents from one address: the gateway's limits would refuse them.
        ("AGORA_RATE_LIMIT_PER_CLIENT", "0".into()),
        ("AGORA_RATE_LIMIT_PER_USER", "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut deployment = Deployment {
        exe: std::env::current_exe()?,
        dir: dir.to_path_buf(),
        envs,
        processes,
        nats,
        nats_server: args.nats_server.clone(),
    };
    for node in 0..nodes {
        deployment.start_nats(node).await?;
    }
    for name in ["identity", "hearing", "response", "records", "notification", "gateway"] {
        if name == "notification" && args.without_notification {
            continue;
        }
        deployment.start(name).await?;
    }
    Ok((deployment, issuer))
}

/// The id the deployment's master key is given (the bench's own process uses it too).
const MASTER_KEY_ID: &str = "bench";

/// How long the notification service leaves a started receipt to its worker.
const RECEIPT_LEASE_SECONDS: u64 = 15;

/// The people of the surge, as the identity service knows them.
struct People {
    owner: Uuid,
    respondents: Vec<Uuid>,
}

fn respondent_name(n: usize) -> String {
    format!("Borger {n}")
}

/// Logs the owner and the respondents in as the identity service logs in a person whose
/// provider vouched for their name and e-mail address: in this process, on the deployment's
/// database and keys, before the surge. So each receipt is a real one: the respondent's
/// address looked up and revealed, the message written and sent (to the mail folder). Their
/// tokens come from the bench's own key, which the services trust.
async fn log_in(deployment: &Deployment, respondents: usize) -> anyhow::Result<People> {
    use agora_identity::providers::Claims;
    use futures::{StreamExt, TryStreamExt};
    let setting = |name: &str| {
        deployment.envs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).with_context(|| format!("no {name}"))
    };
    let store = agora_eventstore::Store::connect_pooled(&setting("AGORA_DATABASE_URL")?, 8).await?;
    let master = agora_vault::MasterKey::from_base64(MASTER_KEY_ID, &setting("AGORA_MASTER_KEY")?)?;
    let settings = agora_identity::app::IdentitySettings::new(
        crate::config::DEV_ISSUER,
        crate::config::AUDIENCE,
        master,
        PSEUDONYM_KEY.as_bytes(),
    );
    let identity =
        agora_identity::app::IdentityApp::new(store.clone(), settings, Vec::new(), Arc::new(chrono::Utc::now)).await?;
    let person = |subject: String, name: String, email: String, capacity| Claims {
        provider: "bench".into(),
        subject,
        capacity: Some(capacity),
        name: Some(name),
        email: Some(email),
        email_verified: true,
        ..Default::default()
    };
    let identity = &identity;
    let log_in = |claims: Claims| async move {
        identity.login(claims).await.map(|session| session.user.user_id).map_err(|e| anyhow::anyhow!("login: {e}"))
    };
    let owner = log_in(person(
        "karen".into(),
        "Karen Sagsbehandler".into(),
        "karen@kommune.example".into(),
        agora_auth::Capacity::Employee,
    ))
    .await?;
    let respondents = futures::stream::iter(0..respondents)
        .map(|n| {
            log_in(person(
                format!("borger-{n}"),
                respondent_name(n),
                format!("borger{n}@example.org"),
                agora_auth::Capacity::Citizen,
            ))
        })
        .buffered(8)
        .try_collect()
        .await?;
    Ok(People { owner, respondents })
}

/// The bench's calls to the gateway's REST API.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<String>,
    ) -> anyhow::Result<serde_json::Value> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {text}");
        }
        Ok(if text.is_empty() { serde_json::Value::Null } else { serde_json::from_str(&text)? })
    }
}

/// Reference data, then a hearing completed and published by its owner, open until tomorrow.
async fn open_hearing(api: &Api, admin: &str, owner: &str) -> anyhow::Result<String> {
    let kind = json!({"name": "Lokalplan", "response_rules": {"max_text_chars": 20000, "max_files": 3,
        "max_file_bytes": 10_000_000, "allowed_types": ["application/pdf"]}});
    api.call(reqwest::Method::PUT, "/api/v1/reference/hearing-types/plan", admin, Some(kind.to_string())).await?;
    let area = json!({"name": "By og bolig"}).to_string();
    api.call(reqwest::Method::PUT, "/api/v1/reference/subject-areas/by", admin, Some(area)).await?;
    api.call(reqwest::Method::PUT, "/api/v1/reference/kle", admin, Some(KLE.into())).await?;
    let created = eventually(30, "the hearing type in the hearing service's read model", || async {
        let body = json!({"hearing_type_id": "plan"}).to_string();
        api.call(reqwest::Method::POST, "/api/v1/hearings", owner, Some(body)).await.ok()
    })
    .await?;
    let id = created["id"].as_str().context("the created hearing has no id")?.to_string();
    let today = chrono::Utc::now().date_naive();
    let complete = json!({
        "fields": { "title": "Lokalplan for Lynetteholm", "summary": "Forslag til en ny bydel.",
                    "body": "Kommunen foreslår en ny bydel på en kunstig ø.", "esdh_title": "Lokalplan 12" },
        "subject_area_id": "by", "kle_number": "01.02.05",
        "contact": { "name": "Karen Sagsbehandler", "email": "karen@kommune.example" },
        "start_date": (today - chrono::Days::new(1)).to_string(),
        "deadline": (today + chrono::Days::new(1)).to_string(),
    });
    eventually(30, "the area and KLE in the hearing service's read model", || async {
        let path = format!("/api/v1/hearings/{id}");
        api.call(reqwest::Method::PATCH, &path, owner, Some(complete.to_string())).await.ok()
    })
    .await?;
    let published = api.call(reqwest::Method::POST, &format!("/api/v1/hearings/{id}/publish"), owner, None).await?;
    if published["status"] != "Active" {
        bail!("the published hearing is {} rather than Active", published["status"]);
    }
    Ok(id)
}

/// What one respondent's submit came to.
struct Acknowledged {
    key: String,
    response_id: String,
    number: i64,
    at: Instant,
}

#[derive(Default)]
struct ClientReport {
    acknowledged: Vec<Acknowledged>,
    /// Responses given up on: refused for good, or never acknowledged within the retry time.
    unacknowledged: Vec<String>,
    errors: BTreeMap<String, u64>,
    retries: u64,
    latency: Option<Histogram<u64>>,
}

/// The answer to one attempt: a receipt, an error worth retrying, or a refusal.
enum Attempt {
    Receipt(String, i64),
    Retry(String),
    Refused(String),
}

async fn attempt(http: &reqwest::Client, url: &str, token: &str, key: &str, body: &Body) -> Attempt {
    let request = http.post(url).bearer_auth(token).header("idempotency-key", key);
    let request = match body {
        Body::Json(json) => request.header("content-type", "application/json").body(json.clone()),
        Body::Multipart(boundary, bytes) => {
            request.header("content-type", format!("multipart/form-data; boundary={boundary}")).body(bytes.clone())
        }
    };
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) if e.is_timeout() => return Attempt::Retry("timeout".into()),
        Err(e) if e.is_connect() => return Attempt::Retry("connection refused".into()),
        Err(_) => return Attempt::Retry("connection lost".into()),
    };
    let status = response.status().as_u16();
    let Ok(answer) = response.json::<serde_json::Value>().await else {
        return Attempt::Retry(format!("{status} without a readable body"));
    };
    match status {
        201 => match (answer["response_id"].as_str(), answer["number"].as_i64()) {
            (Some(id), Some(number)) => Attempt::Receipt(id.to_string(), number),
            _ => Attempt::Refused(format!("201 without a receipt: {answer}")),
        },
        // The gateway's problem types: what a client may retry with the same key.
        409 | 429 | 500..=599 => {
            let kind = answer["type"].as_str().unwrap_or_default().rsplit('/').next().unwrap_or_default().to_string();
            Attempt::Retry(format!("{status} {kind}"))
        }
        _ => Attempt::Refused(format!("{status} {}", answer["detail"].as_str().unwrap_or_default())),
    }
}

#[derive(Clone)]
enum Body {
    Json(String),
    Multipart(String, bytes::Bytes),
}

fn bodies(text: &str) -> (Body, Body) {
    let json = Body::Json(json!({"text": text, "terms_version": "1"}).to_string());
    let boundary = format!("agora-bench-{}", Uuid::new_v4().simple());
    let mut multipart = Vec::new();
    for (name, value) in [("text", text), ("terms_version", "1")] {
        multipart.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    multipart.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"attachment\"; filename=\"bemærkninger.pdf\"\r\n\
             Content-Type: application/pdf\r\n\r\n"
        )
        .as_bytes(),
    );
    multipart.extend_from_slice(ATTACHMENT);
    multipart.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (json, Body::Multipart(boundary, multipart.into()))
}

/// One client: submits responses one after the other, for a respondent in turn, until the time
/// or the count is up; retries what may be retried with the same idempotency key.
#[allow(clippy::too_many_arguments)]
async fn client(
    number: usize,
    http: reqwest::Client,
    url: Arc<String>,
    tokens: Arc<Vec<String>>,
    bodies: Arc<(Body, Body)>,
    attachment_every: Option<u64>,
    until: Instant,
    issued: Arc<std::sync::atomic::AtomicU64>,
    limit: u64,
    run: Arc<String>,
) -> anyhow::Result<ClientReport> {
    use std::sync::atomic::Ordering;
    let mut report = ClientReport { latency: Some(Histogram::<u64>::new(3)?), ..Default::default() };
    while Instant::now() < until {
        let n = issued.fetch_add(1, Ordering::Relaxed);
        if n >= limit {
            break;
        }
        let key = format!("{run}-{n}");
        let token = &tokens[n as usize % tokens.len()];
        let body = match attachment_every {
            Some(every) if n.is_multiple_of(every) => &bodies.1,
            _ => &bodies.0,
        };
        let started = Instant::now();
        let mut backoff = Duration::from_millis(20);
        loop {
            match attempt(&http, &url, token, &key, body).await {
                Attempt::Receipt(response_id, number) => {
                    let at = Instant::now();
                    if let Some(latency) = report.latency.as_mut() {
                        latency.record(at.duration_since(started).as_micros() as u64)?;
                    }
                    report.acknowledged.push(Acknowledged { key, response_id, number, at });
                    break;
                }
                Attempt::Refused(why) => {
                    *report.errors.entry(format!("refused: {why}")).or_default() += 1;
                    report.unacknowledged.push(key);
                    break;
                }
                Attempt::Retry(why) => {
                    *report.errors.entry(why).or_default() += 1;
                    if started.elapsed() > Duration::from_secs(120) {
                        report.unacknowledged.push(key);
                        break;
                    }
                    report.retries += 1;
                    // Jittered by client, so that the retries of a fault do not come as one wave.
                    let jitter = Duration::from_millis((number as u64 * 7) % 20);
                    tokio::time::sleep(backoff + jitter).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
    Ok(report)
}

/// Watches the read model the public's and the owner's lists are served from, and notes when
/// each response is first there.
async fn watch_read_model(
    pool: PgPool,
    hearing_id: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<HashMap<String, Instant>> {
    let mut seen = HashMap::new();
    // Numbers below the mark are all seen; a response may become visible before one with a
    // lower number whose transaction committed later.
    let mut mark = 0i64;
    let mut above: HashSet<i64> = HashSet::new();
    loop {
        let stopping = *stop.borrow();
        let rows = sqlx::query("SELECT response_id, number FROM response_list WHERE hearing_id = $1 AND number > $2")
            .bind(&hearing_id)
            .bind(mark)
            .fetch_all(&pool)
            .await;
        // PostgreSQL may be restarting (--chaos postgres): look again.
        if let Ok(rows) = rows {
            let now = Instant::now();
            for row in rows {
                let (id, number): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
                seen.entry(id).or_insert(now);
                above.insert(number);
            }
            while above.remove(&(mark + 1)) {
                mark += 1;
            }
        }
        if stopping {
            return Ok(seen);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The faults of a scenario, injected at fractions of the surge.
async fn inject(
    chaos: Chaos,
    deployment: &mut Deployment,
    seconds: u64,
    postgres_restart: &str,
) -> anyhow::Result<Vec<String>> {
    let mut log = Vec::new();
    let started = Instant::now();
    let at = |fraction: f64| started + Duration::from_secs_f64(seconds as f64 * fraction);
    let note = |log: &mut Vec<String>, what: String| {
        println!("  {:>5.1} s  {what}", started.elapsed().as_secs_f64());
        log.push(what);
    };
    match chaos {
        Chaos::Services => {
            tokio::time::sleep_until(at(0.2).into()).await;
            deployment.kill_hard("response").await?;
            note(&mut log, "kill -9 the response service".into());
            deployment.start("response").await?;
            note(&mut log, "the response service is ready again".into());
            tokio::time::sleep_until(at(0.45).into()).await;
            deployment.kill_nats(0).await;
            note(&mut log, "kill -9 the NATS server".into());
            deployment.start_nats(0).await?;
            note(&mut log, "the NATS server is back".into());
            tokio::time::sleep_until(at(0.7).into()).await;
            let consumers: Vec<&str> =
                ["records", "notification"].into_iter().filter(|name| deployment.running(name)).collect();
            for name in &consumers {
                deployment.kill_hard(name).await?;
            }
            note(&mut log, format!("kill -9 the consumers ({})", consumers.join(", ")));
            for name in &consumers {
                deployment.start(name).await?;
            }
            note(&mut log, "the consumers are ready again".into());
        }
        Chaos::Postgres => {
            tokio::time::sleep_until(at(0.3).into()).await;
            note(&mut log, "restarting PostgreSQL".into());
            let status = Command::new("sh").args(["-c", postgres_restart]).status().await?;
            if !status.success() {
                bail!("--postgres-restart '{postgres_restart}' failed ({status})");
            }
            note(&mut log, "PostgreSQL is back".into());
        }
        Chaos::Cluster => {
            tokio::time::sleep_until(at(0.3).into()).await;
            deployment.kill_nats(1).await;
            note(&mut log, "kill -9 NATS node 1 of 3".into());
            tokio::time::sleep_until(at(0.7).into()).await;
            deployment.start_nats(1).await?;
            note(&mut log, "NATS node 1 is back".into());
        }
    }
    Ok(log)
}

/// Where PostgreSQL's writing stands: the next transaction id (each transaction that writes
/// takes one) and the WAL's end. Both are read as they are now, unlike the statistics views,
/// which a backend reports up to ten seconds late. They are the whole server's, so the figures
/// are clean only when nothing else writes meanwhile.
struct WriteMark {
    next_transaction: i64,
    wal: String,
}

/// What PostgreSQL wrote since a [`WriteMark`].
#[derive(Default, Clone, Copy)]
struct Written {
    transactions: f64,
    wal_bytes: f64,
}

impl Written {
    fn per(self, n: u64) -> Written {
        let n = n.max(1) as f64;
        Written { transactions: self.transactions / n, wal_bytes: self.wal_bytes / n }
    }
}

impl WriteMark {
    async fn now(pool: &PgPool) -> anyhow::Result<Self> {
        let (next_transaction, wal): (i64, String) =
            sqlx::query_as("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint, pg_current_wal_lsn()::text")
                .fetch_one(pool)
                .await?;
        Ok(Self { next_transaction, wal })
    }

    async fn written_since(&self, pool: &PgPool) -> anyhow::Result<Written> {
        let (next_transaction, wal_bytes): (i64, f64) = sqlx::query_as(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint, \
             pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::float8",
        )
        .bind(&self.wal)
        .fetch_one(pool)
        .await?;
        Ok(Written { transactions: (next_transaction - self.next_transaction) as f64, wal_bytes })
    }
}

/// Raw single-row INSERTs of the response text at the surge's concurrency, on connections of
/// their own (the deployment is down meanwhile, so that it holds none of the server's); with
/// what PostgreSQL wrote for them.
async fn baseline(options: &PgConnectOptions, clients: usize, seconds: u64) -> anyhow::Result<(Measured, Written)> {
    let pool = PgPoolOptions::new().max_connections(clients as u32).connect_with(options.clone()).await?;
    let mark = WriteMark::now(&pool).await?;
    let inserts = pool.clone();
    let measured = measure(clients, seconds, move |_, _| {
        let pool = inserts.clone();
        async move {
            sqlx::query("INSERT INTO baseline (payload) VALUES ($1)").bind(TEXT).execute(&pool).await?;
            Ok(())
        }
    })
    .await?;
    let written = mark.written_since(&pool).await?;
    pool.close().await;
    Ok((measured, written))
}

/// What each respondent writes (about 500 characters).
const TEXT: &str = "Jeg er imod forslaget, fordi det vil øge trafikken i kvarteret og fjerne grønne områder. \
    Jeg er imod forslaget, fordi det vil øge trafikken i kvarteret og fjerne grønne områder. \
    Jeg er imod forslaget, fordi det vil øge trafikken i kvarteret og fjerne grønne områder. \
    Jeg er imod forslaget, fordi det vil øge trafikken i kvarteret og fjerne grønne områder. \
    Jeg er imod forslaget, fordi det vil øge trafikken i kvarteret og fjerne grønne områder. \
    Jeg er imod forslaget, fordi det vil øge trafikken i kvarteret og fjerne grønne områder.";

async fn surge_in(
    args: &SurgeArgs,
    schema: &Schema,
    options: PgConnectOptions,
    dir: &Path,
) -> anyhow::Result<serde_json::Value> {
    let pool = PgPoolOptions::new().max_connections(4).connect_with(options.clone()).await?;
    sqlx::query("CREATE TABLE baseline (id BIGSERIAL PRIMARY KEY, payload TEXT NOT NULL)").execute(&pool).await?;
    let baseline_seconds = if args.baseline_seconds == 0 { args.seconds } else { args.baseline_seconds };
    println!("raw single-row INSERT, {} clients, {} s ...", args.clients, baseline_seconds.div_ceil(2));
    let mut rounds = vec![baseline(&options, args.clients, baseline_seconds.div_ceil(2)).await?];
    println!("starting the deployment: NATS, identity, hearing, response, records, notification, gateway");
    let (mut deployment, issuer) = deploy(args, schema, dir).await?;
    let result = surge_on(args, &mut deployment, &issuer, &pool).await;
    deployment.stop_all().await;
    let mut summary = result?;
    if baseline_seconds / 2 > 0 {
        println!("raw single-row INSERT again, {} s ...", baseline_seconds / 2);
        rounds.push(baseline(&options, args.clients, baseline_seconds / 2).await?);
    }
    pool.close().await;
    let written = rounds.iter().fold(Written::default(), |sum, (_, w)| Written {
        transactions: sum.transactions + w.transactions,
        wal_bytes: sum.wal_bytes + w.wal_bytes,
    });
    let measured: Vec<Measured> = rounds.into_iter().map(|(m, _)| m).collect();
    let baseline = Measured::merged(&measured)?;
    let per_insert = written.per(baseline.operations);
    let ratio = summary["per_second"].as_f64().unwrap_or_default() / baseline.per_second;
    println!(
        "raw single-row INSERT: {:.0}/s (p99 {:.1} ms; {:.2} writing transactions and {:.1} kB of WAL each); ratio {ratio:.2}",
        baseline.per_second,
        baseline.p99_ms,
        per_insert.transactions,
        per_insert.wal_bytes / 1000.0
    );
    summary["baseline_per_second"] = json!(baseline.per_second);
    summary["baseline_p99_ms"] = json!(baseline.p99_ms);
    summary["baseline_pg_transactions_per_insert"] = json!(per_insert.transactions);
    summary["baseline_pg_wal_bytes_per_insert"] = json!(per_insert.wal_bytes);
    summary["ratio"] = json!(ratio);
    Ok(summary)
}

async fn surge_on(
    args: &SurgeArgs,
    deployment: &mut Deployment,
    issuer: &agora_auth::TokenIssuer,
    pool: &PgPool,
) -> anyhow::Result<serde_json::Value> {
    use agora_auth::{Capacity, Principal, Role};
    let http =
        reqwest::Client::builder().pool_max_idle_per_host(args.clients).timeout(Duration::from_secs(30)).build()?;
    let api = Api { http: http.clone(), base: format!("http://127.0.0.1:{}", deployment.port("gateway")) };
    let admin = issuer.issue(&Principal::new(Uuid::now_v7(), Capacity::Employee).with_role(Role::Administrator))?;
    let people = log_in(deployment, args.respondents).await?;
    let owner_id = people.owner;
    let owner = issuer.issue(&Principal::new(owner_id, Capacity::Employee).with_role(Role::HearingCreator))?;
    let hearing_id = open_hearing(&api, &admin, &owner).await?;
    // The response service learns of the publication from the hearing's events.
    eventually(30, "the response service to know the hearing open", || async {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM response_hearings WHERE hearing_id = $1")
            .bind(&hearing_id)
            .fetch_optional(pool)
            .await
            .ok()
            .flatten();
        (status.as_deref() == Some("Active")).then_some(())
    })
    .await?;
    let tokens: Vec<String> = people
        .respondents
        .iter()
        .enumerate()
        .map(|(n, id)| issuer.issue(&Principal::new(*id, Capacity::Citizen).with_name(respondent_name(n))))
        .collect::<Result<_, _>>()?;

    let chaos = args.chaos.map(|c| format!(" with --chaos {}", format!("{c:?}").to_lowercase())).unwrap_or_default();
    println!(
        "surge: {} clients for {} respondents, {} s{}{chaos} ...",
        args.clients,
        args.respondents,
        args.seconds,
        args.count.map(|c| format!(" or {c} responses")).unwrap_or_default()
    );
    let (stop_watch, watching) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(watch_read_model(pool.clone(), hearing_id.clone(), watching));
    let url = Arc::new(format!("{}/api/v1/hearings/{hearing_id}/responses", api.base));
    let (tokens, bodies) = (Arc::new(tokens), Arc::new(bodies(TEXT)));
    let attachment_every = (args.attachments > 0.0).then(|| (1.0 / args.attachments).round().max(1.0) as u64);
    let issued = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let run = Arc::new(Uuid::new_v4().simple().to_string());
    let cpu_before = cpu_by_process(deployment);
    let write_mark = WriteMark::now(pool).await?;
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let mut clients = tokio::task::JoinSet::new();
    for number in 0..args.clients {
        clients.spawn(client(
            number,
            http.clone(),
            url.clone(),
            tokens.clone(),
            bodies.clone(),
            attachment_every,
            until,
            issued.clone(),
            args.count.unwrap_or(u64::MAX),
            run.clone(),
        ));
    }
    let faults = match args.chaos {
        Some(chaos) => inject(chaos, deployment, args.seconds, &args.postgres_restart).await?,
        None => Vec::new(),
    };
    let mut report = ClientReport::default();
    let mut latency = Histogram::<u64>::new(3)?;
    while let Some(result) = clients.join_next().await {
        let client = result??;
        report.acknowledged.extend(client.acknowledged);
        report.unacknowledged.extend(client.unacknowledged);
        report.retries += client.retries;
        for (kind, n) in client.errors {
            *report.errors.entry(kind).or_default() += n;
        }
        if let Some(h) = client.latency {
            latency.add(h)?;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let surge_ended = Instant::now();
    // Processes restarted by --chaos count from their start.
    let cpu: BTreeMap<String, f64> = cpu_by_process(deployment)
        .into_iter()
        .map(|(name, after)| {
            let before = cpu_before.get(&name).copied().unwrap_or_default();
            let used = if after >= before { after - before } else { after };
            (name, (used * 10.0).round() / 10.0)
        })
        .collect();
    let acknowledged = report.acknowledged.len() as u64;
    let surge = Measured::from_histogram(latency, elapsed);
    // Every acknowledged response reaches the read model; then the watcher stops.
    let expected: HashSet<&str> = report.acknowledged.iter().map(|a| a.response_id.as_str()).collect();
    let visible = eventually(120, "every acknowledged response in the read model", || async {
        let count: Option<i64> = sqlx::query_scalar("SELECT count(*) FROM response_list WHERE hearing_id = $1")
            .bind(&hearing_id)
            .fetch_one(pool)
            .await
            .ok();
        count.filter(|c| *c as usize >= expected.len())
    })
    .await;
    stop_watch.send(true)?;
    let seen = watcher.await??;
    visible?;
    let mut lag = Histogram::<u64>::new(3)?;
    for a in &report.acknowledged {
        if let Some(at) = seen.get(&a.response_id) {
            lag.record(at.saturating_duration_since(a.at).as_micros() as u64)?;
        }
    }
    // Before the conclusion, whose messages go to the respondents too.
    let (receipts, receipts_seconds) = if deployment.running("notification") {
        let mail = deployment.dir.join("mail");
        let seconds = 60 + RECEIPT_LEASE_SECONDS + acknowledged / 100;
        let _ = eventually(seconds, "a receipt for every acknowledged response", || async {
            receipts_in(&mail).ok().filter(|n| *n >= acknowledged)
        })
        .await;
        // When the count was complete (or the wait gave up), from the end of the surge.
        (Some(receipts_in(&mail)?), Some(surge_ended.elapsed().as_secs_f64()))
    } else {
        (None, None)
    };
    // A response's whole cost to PostgreSQL, up to its receipt: taken, in the read model, in
    // the notification service's digest, its receipt planned, sent and recorded.
    let per_response = write_mark.written_since(pool).await?.per(acknowledged);
    println!("concluding the hearing and journalizing it ...");
    let journal_started = Instant::now();
    let journal = conclude_and_journalize(deployment, &api, &owner, &hearing_id, acknowledged).await?;
    let journal_seconds = journal_started.elapsed().as_secs_f64();

    let mut check = verify(pool, &hearing_id, &report.acknowledged, &journal).await?;
    // Through JetStream: the notification service counts each ResponseSubmitted it handles
    // into the hearing's digest, once.
    let notified = if deployment.running("notification") {
        let counted = || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT CAST(COALESCE(SUM(new_responses), 0) AS BIGINT) FROM notification_digest WHERE hearing_id = $1",
            )
            .bind(&hearing_id)
            .fetch_one(pool)
            .await
            .ok()
        };
        let _ = eventually(120, "the notification service to have every response", || async {
            counted().await.filter(|n| *n as u64 >= acknowledged)
        })
        .await;
        let notified = counted().await.unwrap_or_default() as u64;
        check.lost += acknowledged.saturating_sub(notified);
        check.duplicated += notified.saturating_sub(acknowledged);
        Some(notified)
    } else {
        None
    };
    if let Some(receipts) = receipts {
        check.lost += acknowledged.saturating_sub(receipts);
        check.duplicated += receipts.saturating_sub(acknowledged);
    }
    let per_second = surge.per_second;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let summary = json!({
        "clients": args.clients,
        "respondents": args.respondents,
        "seconds": elapsed,
        "chaos": args.chaos.map(|c| format!("{c:?}").to_lowercase()),
        "faults": faults,
        "accepted": check.in_store,
        "acknowledged": acknowledged,
        "unacknowledged": report.unacknowledged.len(),
        "lost": check.lost,
        "duplicated": check.duplicated,
        "retry_changed_receipt": check.retry_changed_receipt,
        "in_read_model": check.in_read_model,
        "journalized": check.journalized,
        "notified": notified,
        "receipts": receipts,
        "receipts_seconds": receipts_seconds,
        "journal_seconds": journal_seconds,
        "retries": report.retries,
        "errors": report.errors,
        "per_second": per_second,
        "p50_ms": surge.p50_ms,
        "p95_ms": ms(&surge.histogram, 0.95),
        "p99_ms": surge.p99_ms,
        "lag_p50_ms": ms(&lag, 0.50),
        "lag_p99_ms": ms(&lag, 0.99),
        "cpu_seconds": cpu,
        "pg_transactions_per_response": per_response.transactions,
        "pg_wal_bytes_per_response": per_response.wal_bytes,
    });
    println!(
        "surge: {acknowledged} responses acknowledged in {elapsed:.1} s: {per_second:.0}/s, p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        surge.p50_ms,
        ms(&surge.histogram, 0.95),
        surge.p99_ms
    );
    println!("read model: lag p50 {:.1} ms, p99 {:.1} ms", ms(&lag, 0.5), ms(&lag, 0.99));
    let mut by_use: Vec<(&String, &f64)> = cpu.iter().collect();
    by_use.sort_by(|a, b| b.1.total_cmp(a.1));
    let by_use: Vec<String> = by_use.iter().map(|(name, seconds)| format!("{name} {seconds:.1}")).collect();
    println!(
        "CPU seconds during the surge ({:.0} available on {} cores): {}",
        elapsed * cores() as f64,
        cores(),
        by_use.join(", ")
    );
    println!(
        "PostgreSQL for each response, up to its receipt: {:.2} writing transactions, {:.1} kB of WAL (the whole server's)",
        per_response.transactions,
        per_response.wal_bytes / 1000.0
    );
    println!(
        "exactly once: {} in the event store, {} in the read model, {} filed in the records journal ({journal_seconds:.1} s, {:.0} a second), \
         {} handled by the notification service through JetStream, {} receipts in the respondents' mail (all there \
         {:.1} s after the surge); lost {}, duplicated {}, never acknowledged {}, a retry's receipt changed {}",
        check.in_store,
        check.in_read_model,
        check.journalized,
        check.journalized as f64 / journal_seconds.max(0.001),
        notified.map(|n| n.to_string()).unwrap_or_else(|| "none (left out)".into()),
        receipts.map(|n| n.to_string()).unwrap_or_else(|| "no".into()),
        receipts_seconds.unwrap_or_default(),
        check.lost,
        check.duplicated,
        report.unacknowledged.len(),
        check.retry_changed_receipt
    );
    if !report.errors.is_empty() {
        println!("errors the clients saw ({} retries):", report.retries);
        for (kind, n) in &report.errors {
            println!("  {n:>7}  {kind}");
        }
    }
    Ok(summary)
}

/// The receipts in the mail folder: messages to the respondents (`…@example.org`), each a
/// file named by its Message-ID, which a message sent again keeps. Before the conclusion a
/// respondent is sent nothing else.
fn receipts_in(mail: &Path) -> anyhow::Result<u64> {
    let mut receipts = 0;
    let Ok(entries) = std::fs::read_dir(mail) else { return Ok(0) };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "eml") {
            continue;
        }
        let message = std::fs::read_to_string(&path)?;
        let to_a_respondent = message
            .lines()
            .take_while(|line| !line.is_empty())
            .any(|line| line.starts_with("To: ") && line.trim_end().ends_with("@example.org"));
        receipts += u64::from(to_a_respondent);
    }
    Ok(receipts)
}

/// What the records system and its journal hold of the hearing.
struct Journal {
    /// Documents filed in the archive, by reference.
    filed: HashMap<String, usize>,
}

/// The hearing service's clock is moved past the deadline (a restart with a clock offset), the
/// owner concludes, and the records service files everything.
async fn conclude_and_journalize(
    deployment: &mut Deployment,
    api: &Api,
    owner: &str,
    hearing_id: &str,
    responses: u64,
) -> anyhow::Result<Journal> {
    // The service waits at start while a cluster that lost a node moments ago elects again.
    deployment.kill_hard("hearing").await?;
    deployment.process("hearing")?.extra.push(("AGORA_CLOCK_OFFSET_DAYS".into(), "3".into()));
    deployment.start("hearing").await?;
    let path = format!("/api/v1/hearings/{hearing_id}");
    eventually(60, "the hearing to await its conclusion", || async {
        let hearing = api.call(reqwest::Method::GET, &path, owner, None).await.ok()?;
        (hearing["status"] == "AwaitingConclusion").then_some(())
    })
    .await?;
    let conclusion = json!({"conclusion": "Lokalplanen vedtages med mindre ændringer."}).to_string();
    api.call(reqwest::Method::POST, &format!("{path}/conclusion"), owner, Some(conclusion)).await?;
    // Filing takes a while for tens of thousands of responses: allow a second for every 100.
    let seconds = 120 + responses / 100;
    // The steps not done yet are all a status needs (every step would be one per response).
    let status_path = format!("{path}/journalization?steps=open");
    let status = eventually_every(Duration::from_millis(500), seconds, "the hearing journalized", || async {
        let status = api.call(reqwest::Method::GET, &status_path, owner, None).await.ok()?;
        matches!(status["status"].as_str(), Some("journalized" | "failed")).then_some(status)
    })
    .await?;
    if status["status"] != "journalized" {
        bail!("journalization failed: {}", status["errors"]);
    }
    let case_number = status["case_number"].as_str().unwrap_or_default();
    let archive = agora_records::archive::Archive::new(deployment.dir.join("archive"));
    let metadata = archive
        .metadata(case_number)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_context(|| format!("no case {case_number} in the archive"))?;
    let mut filed = HashMap::new();
    for document in metadata.documents {
        *filed.entry(document.reference).or_default() += 1;
    }
    Ok(Journal { filed })
}

struct Verified {
    in_store: u64,
    in_read_model: u64,
    journalized: u64,
    lost: u64,
    duplicated: u64,
    retry_changed_receipt: u64,
}

/// Every acknowledged response once in the event store, the read model and the journal; nothing
/// there that nobody was told of; every receipt the one the idempotency key first got.
async fn verify(
    pool: &PgPool,
    hearing_id: &str,
    acknowledged: &[Acknowledged],
    journal: &Journal,
) -> anyhow::Result<Verified> {
    let submitted: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, count(*) FROM events WHERE aggregate_type = 'response' AND event_type = 'ResponseSubmitted' \
         GROUP BY aggregate_id",
    )
    .fetch_all(pool)
    .await?;
    let store: HashMap<String, i64> = submitted.into_iter().collect();
    let listed: Vec<(String, i64)> =
        sqlx::query_as("SELECT response_id, number FROM response_list WHERE hearing_id = $1")
            .bind(hearing_id)
            .fetch_all(pool)
            .await?;
    let read_model: HashMap<String, i64> = listed.into_iter().collect();
    let receipts: Vec<(String, String)> =
        sqlx::query_as("SELECT idempotency_key, receipt FROM response_idempotency").fetch_all(pool).await?;
    let mut key_of = HashMap::new();
    for (key, receipt) in receipts {
        let receipt: serde_json::Value = serde_json::from_str(&receipt)?;
        if let Some(id) = receipt["response_id"].as_str() {
            key_of.insert(id.to_string(), key);
        }
    }
    let reference = |id: &str| format!("agora:{hearing_id}:response-{id}");
    let mut lost = 0;
    let mut retry_changed_receipt = 0;
    let mut acknowledged_ids = HashSet::new();
    let mut numbers = HashSet::new();
    for a in acknowledged {
        let everywhere = store.get(&a.response_id) == Some(&1)
            && read_model.get(&a.response_id) == Some(&a.number)
            && journal.filed.get(&reference(&a.response_id)) == Some(&1);
        if !everywhere {
            lost += 1;
        }
        if !key_of.get(&a.response_id).is_some_and(|k| k.ends_with(&a.key)) {
            retry_changed_receipt += 1;
        }
        // One key acknowledged with two receipts, or two keys with one number: taken twice.
        if !acknowledged_ids.insert(a.response_id.as_str()) || !numbers.insert(a.number) {
            retry_changed_receipt += 1;
        }
    }
    // Responses there that no client was given a receipt for, and events written twice.
    let extra =
        |ids: &mut dyn Iterator<Item = &String>| ids.filter(|id| !acknowledged_ids.contains(id.as_str())).count();
    let duplicated = extra(&mut store.keys()) as u64
        + store.values().map(|n| (*n - 1).max(0) as u64).sum::<u64>()
        + extra(&mut read_model.keys()) as u64
        + journal.filed.values().map(|n| (*n - 1) as u64).sum::<u64>();
    let journalized = acknowledged.iter().filter(|a| journal.filed.contains_key(&reference(&a.response_id))).count();
    Ok(Verified {
        in_store: store.len() as u64,
        in_read_model: read_model.len() as u64,
        journalized: journalized as u64,
        lost,
        duplicated,
        retry_changed_receipt,
    })
}
