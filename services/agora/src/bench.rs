//! Benchmarks of the backbone. Each prints a table and, with --json, one JSON object; the
//! figures go to docs/benchmarks.md with the command that produced them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_eventstore::consumer::ProjectionRunner;
use agora_eventstore::jetstream::{Bus, BusConfig};
use agora_eventstore::relay::Relay;
use agora_eventstore::{NewEvent, Store};
use agora_hearing::domain::fields::HearingType;
use agora_hearing::domain::{HearingChanges, HearingEvent};
use agora_hearing::integration::HearingIntegration;
use agora_hearing::projections::{self, HearingListProjection};
use anyhow::Context;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

mod surge;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Events/s and p50/p99 appending to PostgreSQL at 1, 8 and 32 writers, beside a raw
    /// single-row INSERT of the same size in the same run.
    Append(AppendArgs),
    /// Relay throughput from the store to JetStream.
    Relay(RelayArgs),
    /// Projection rebuild speed from SQLite and PostgreSQL.
    Rebuild(RebuildArgs),
    /// Time to ready and idle memory of `agora run --target hearing`.
    Idle(IdleArgs),
    /// Response intake (group commit) through the response service's gRPC API at 64 concurrent
    /// clients, beside a raw single-row INSERT at the same concurrency.
    Intake(IntakeArgs),
    /// A hearing's surge of responses through the REST API of the whole distributed topology on
    /// this machine (each service a process of its own), optionally with faults injected; then
    /// the proof that every acknowledged response is in the event store, the read model and the
    /// records journal exactly once.
    Surge(surge::SurgeArgs),
}

#[derive(Args)]
pub struct IntakeArgs {
    #[command(flatten)]
    db: BenchDb,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// HTTP/2 connections the clients share, as gateway replicas share theirs; 0 gives each
    /// client its own.
    #[arg(long, default_value_t = 8)]
    connections: usize,
}

#[derive(Args)]
pub struct BenchDb {
    /// PostgreSQL to measure; the bench works in a schema of its own and drops it after.
    #[arg(long, env = "AGORA_BENCH_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/test")]
    database_url: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct AppendArgs {
    #[command(flatten)]
    db: BenchDb,
    /// Seconds per configuration.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    writers: Vec<usize>,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 500)]
    payload: usize,
}

#[derive(Args)]
pub struct RelayArgs {
    #[command(flatten)]
    db: BenchDb,
    #[arg(long, env = "AGORA_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    #[arg(long, default_value_t = 50_000)]
    events: usize,
}

#[derive(Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    db: BenchDb,
    #[arg(long, default_value_t = 100_000)]
    events: usize,
}

#[derive(Args)]
pub struct IdleArgs {
    #[command(flatten)]
    db: BenchDb,
    #[arg(long, env = "AGORA_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Append(args) => append(args).await,
        BenchCommand::Relay(args) => relay(args).await,
        BenchCommand::Rebuild(args) => rebuild(args).await,
        BenchCommand::Idle(args) => idle(args).await,
        BenchCommand::Intake(args) => intake(args).await,
        BenchCommand::Surge(args) => surge::surge(args).await,
    }
}

/// A schema of the bench's own, dropped when done.
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    async fn create(url: &str) -> anyhow::Result<(Self, PgConnectOptions)> {
        let mut admin = PgConnection::connect(url).await.with_context(|| format!("cannot connect to {url}"))?;
        let name = format!("agora_bench_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE SCHEMA {name}")).execute(&mut admin).await?;
        let options: PgConnectOptions = url.parse().context("not a PostgreSQL URL")?;
        Ok((Self { url: url.to_string(), name: name.clone() }, options.options([("search_path", name.as_str())])))
    }

    async fn drop(self) -> anyhow::Result<()> {
        self.drop_eventually().await
    }

    /// Drops the schema, trying again for a while when PostgreSQL does not answer (it may be
    /// restarting).
    async fn drop_eventually(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let dropped = async {
                let mut admin = PgConnection::connect(&self.url).await?;
                sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name)).execute(&mut admin).await?;
                anyhow::Ok(())
            };
            match dropped.await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("cannot drop schema {}", self.name)));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

struct Measured {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    operations: u64,
    histogram: Histogram<u64>,
    seconds: f64,
}

impl Measured {
    fn from_histogram(histogram: Histogram<u64>, seconds: f64) -> Self {
        Self {
            per_second: histogram.len() as f64 / seconds,
            p50_ms: histogram.value_at_quantile(0.50) as f64 / 1000.0,
            p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
            operations: histogram.len(),
            histogram,
            seconds,
        }
    }

    /// Several rounds as one.
    fn merged(rounds: &[Measured]) -> anyhow::Result<Measured> {
        let mut all = Histogram::<u64>::new(3)?;
        for round in rounds {
            all.add(&round.histogram)?;
        }
        Ok(Self::from_histogram(all, rounds.iter().map(|r| r.seconds).sum()))
    }
}

/// Runs `writers` tasks calling `op(writer, n)` for `seconds`, recording each latency.
async fn measure<F, Fut>(writers: usize, seconds: u64, op: F) -> anyhow::Result<Measured>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let op = op.clone();
        tasks.spawn(async move {
            let mut histogram = Histogram::<u64>::new(3)?;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                op(writer, n).await?;
                histogram.record(t.elapsed().as_micros() as u64)?;
                n += 1;
            }
            anyhow::Ok(histogram)
        });
    }
    let mut all = Histogram::<u64>::new(3)?;
    while let Some(result) = tasks.join_next().await {
        all.add(result??)?;
    }
    Ok(Measured::from_histogram(all, started.elapsed().as_secs_f64()))
}

async fn append(args: AppendArgs) -> anyhow::Result<()> {
    let (schema, options) = Schema::create(&args.db.database_url).await?;
    let result = append_in(&args, options).await;
    schema.drop().await?;
    let rows = result?;
    if args.db.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

async fn append_in(args: &AppendArgs, options: PgConnectOptions) -> anyhow::Result<serde_json::Value> {
    let max_writers = args.writers.iter().copied().max().unwrap_or(1) as u32;
    let store = Store::postgres(options.clone(), max_writers + 2).await?;
    store.migrate().await?;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(max_writers + 2).connect_with(options).await?;
    sqlx::query("CREATE TABLE baseline (id BIGSERIAL PRIMARY KEY, payload TEXT NOT NULL)").execute(&pool).await?;
    let payload = serde_json::value::to_raw_value(&"x".repeat(args.payload))?;
    let text = payload.to_string();
    println!(
        "{:>8} {:>7} {:>12} {:>9} {:>9} {:>12} {:>7}",
        "writers", "batch", "events/s", "p50 ms", "p99 ms", "INSERT/s", "ratio"
    );
    let mut rows = Vec::new();
    for &writers in &args.writers {
        let baseline_pool = pool.clone();
        let text = text.clone();
        let baseline = measure(writers, args.seconds, move |_, _| {
            let pool = baseline_pool.clone();
            let text = text.clone();
            async move {
                sqlx::query("INSERT INTO baseline (payload) VALUES ($1)").bind(text).execute(&pool).await?;
                Ok(())
            }
        })
        .await?;
        for batch in [1usize, 10] {
            let store = store.clone();
            let payload = payload.clone();
            let run = Uuid::new_v4().simple().to_string();
            let events = measure(writers, args.seconds, move |writer, n| {
                let store = store.clone();
                let payload = payload.clone();
                // Streams of 100 events: appends chain onto a known previous event.
                let stream = format!("{run}-{writer}-{}", n / (100 / batch as u64).max(1));
                let first = (n % (100 / batch as u64).max(1)) as i64 * batch as i64 + 1;
                async move {
                    let new: Vec<NewEvent> = (0..batch as i64)
                        .map(|i| NewEvent {
                            aggregate_type: "bench".into(),
                            aggregate_id: stream.clone(),
                            sequence: first + i,
                            event_type: "BenchEvent".into(),
                            event_version: "1".into(),
                            payload: payload.clone(),
                            metadata: json!({"actor": "bench"}),
                        })
                        .collect();
                    store.append(&new, None).await?;
                    Ok(())
                }
            })
            .await?;
            let events_per_second = events.per_second * batch as f64;
            let ratio = events.per_second / baseline.per_second;
            println!(
                "{writers:>8} {batch:>7} {events_per_second:>12.0} {:>9.2} {:>9.2} {:>12.0} {ratio:>7.2}",
                events.p50_ms, events.p99_ms, baseline.per_second
            );
            rows.push(json!({
                "writers": writers, "batch": batch, "events_per_second": events_per_second,
                "appends_per_second": events.per_second, "p50_ms": events.p50_ms, "p99_ms": events.p99_ms,
                "baseline_inserts_per_second": baseline.per_second, "baseline_p50_ms": baseline.p50_ms,
                "baseline_p99_ms": baseline.p99_ms, "ratio_appends_to_inserts": ratio, "appends": events.operations,
            }));
        }
    }
    println!(
        "ratio = appends/s ÷ single-row INSERTs/s of the same payload at the same concurrency (batch 10: one append of ten events)"
    );
    Ok(serde_json::Value::Array(rows))
}

/// Appends `count` hearing events over hearings of 20 events each.
async fn fill_with_hearings(store: &Store, count: usize) -> anyhow::Result<()> {
    let hearing_type = HearingType {
        id: "bench".into(),
        name: "Bench".into(),
        internal: false,
        fields: HearingType::standard_fields(),
        template: Default::default(),
        responses: Default::default(),
    };
    let mut pending = Vec::new();
    let per_hearing = 20;
    for h in 0..count.div_ceil(per_hearing) {
        let id = Uuid::now_v7().to_string();
        for s in 0..per_hearing.min(count - h * per_hearing) {
            let event = if s == 0 {
                HearingEvent::HearingCreated {
                    hearing_type: hearing_type.clone(),
                    owner: Uuid::nil(),
                    fields: Default::default(),
                }
            } else {
                HearingEvent::HearingUpdated {
                    changes: HearingChanges {
                        fields: [("title".to_string(), format!("Høring nummer {h}, ændring {s}"))].into(),
                        ..Default::default()
                    },
                }
            };
            pending.push(NewEvent {
                aggregate_type: "hearing".into(),
                aggregate_id: id.clone(),
                sequence: s as i64 + 1,
                event_type: cqrs_event_type(&event),
                event_version: "1".into(),
                payload: serde_json::value::to_raw_value(&event)?,
                metadata: json!({"actor": "bench"}),
            });
        }
        if pending.len() >= 1000 {
            store.append(&pending, None).await?;
            pending.clear();
        }
    }
    if !pending.is_empty() {
        store.append(&pending, None).await?;
    }
    Ok(())
}

fn cqrs_event_type(event: &HearingEvent) -> String {
    cqrs_es::DomainEvent::event_type(event)
}

async fn relay(args: RelayArgs) -> anyhow::Result<()> {
    let (schema, options) = Schema::create(&args.db.database_url).await?;
    let prefix = format!("agorabench{}", Uuid::new_v4().simple());
    let result = async {
        let store = Store::postgres(options, 8).await?;
        store.migrate().await?;
        fill_with_hearings(&store, args.events).await?;
        let bus = Bus::connect(BusConfig::new(&args.nats_url, &prefix)).await?;
        let relay = Relay::new(store.clone(), bus.clone(), Arc::new(HearingIntegration::new(store.clone())));
        let started = Instant::now();
        let published = relay.publish_all().await?;
        let seconds = started.elapsed().as_secs_f64();
        bus.delete_stream().await?;
        anyhow::Ok((published, seconds))
    }
    .await;
    schema.drop().await?;
    let (published, seconds) = result?;
    let rate = published as f64 / seconds;
    println!("relay: {published} events store → JetStream (acked) in {seconds:.2} s = {rate:.0} events/s");
    if args.db.json {
        println!("{}", json!({"events": published, "seconds": seconds, "events_per_second": rate}));
    }
    Ok(())
}

async fn rebuild_once(store: &Store, events: usize) -> anyhow::Result<(u64, f64)> {
    store.migrate().await?;
    projections::migrate(store).await?;
    fill_with_hearings(store, events).await?;
    // Reading alone, to tell the log's share of a rebuild from the read model's.
    let started = Instant::now();
    let mut after = agora_eventstore::LogPosition::START;
    let mut read = 0;
    loop {
        let batch = store.read_log(after, 5000).await?;
        let Some(last) = batch.last() else { break };
        after = last.log;
        read += batch.len();
    }
    let read_seconds = started.elapsed().as_secs_f64();
    println!(
        "  reading the log alone: {read} events in {read_seconds:.2} s = {:.0} events/s",
        read as f64 / read_seconds
    );
    let runner = ProjectionRunner::new(store.clone(), vec![Arc::new(HearingListProjection)]);
    let started = Instant::now();
    let applied = runner.rebuild(&HearingListProjection, |_, _| {}).await?;
    Ok((applied, started.elapsed().as_secs_f64()))
}

async fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sqlite = Store::sqlite(&dir.path().join("bench.db")).await?;
    let (sqlite_events, sqlite_seconds) = rebuild_once(&sqlite, args.events).await?;
    let (schema, options) = Schema::create(&args.db.database_url).await?;
    let pg = async {
        let store = Store::postgres(options, 4).await?;
        rebuild_once(&store, args.events).await
    }
    .await;
    schema.drop().await?;
    let (pg_events, pg_seconds) = pg?;
    let sqlite_rate = sqlite_events as f64 / sqlite_seconds;
    let pg_rate = pg_events as f64 / pg_seconds;
    println!("projection rebuild (hearing read model, hearings of 20 events):");
    println!("  SQLite:     {sqlite_events} events in {sqlite_seconds:.2} s = {sqlite_rate:.0} events/s");
    println!("  PostgreSQL: {pg_events} events in {pg_seconds:.2} s = {pg_rate:.0} events/s");
    if args.db.json {
        println!("{}", json!({"sqlite_events_per_second": sqlite_rate, "postgres_events_per_second": pg_rate}));
    }
    Ok(())
}

async fn idle(args: IdleArgs) -> anyhow::Result<()> {
    let (schema, _) = Schema::create(&args.db.database_url).await?;
    let dir = tempfile::tempdir()?;
    let key = agora_auth::SigningKey::generate_with_kid("bench")?;
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, agora_auth::jwks(&[&key]).to_string())?;
    let database_url = format!(
        "{}{}options=-csearch_path%3D{}",
        args.db.database_url,
        if args.db.database_url.contains('?') { "&" } else { "?" },
        schema.name
    );
    let http = free_port()?;
    let grpc = free_port()?;
    let exe = std::env::current_exe()?;
    let prefix = format!("agorabench{}", Uuid::new_v4().simple());
    let mut samples = Vec::new();
    let mut rss = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&exe)
            .args(["run", "--target", "hearing"])
            .env("AGORA_DATABASE_URL", &database_url)
            .env("AGORA_NATS_URL", &args.nats_url)
            .env("AGORA_NATS_PREFIX", &prefix)
            .env("AGORA_TOKEN_JWKS", &jwks_path)
            .env("AGORA_PSEUDONYM_KEY", "bench-pseudonym-key-bench-pseudonym-key")
            // The vault is reached on first use, not at start: an idle replica needs none running.
            .env("AGORA_IDENTITY_URL", "http://127.0.0.1:9")
            .env("AGORA_SERVICE_SECRET", "bench-service-secret-bench-service-secret")
            .env("AGORA_HTTP_ADDR", format!("127.0.0.1:{http}"))
            .env("AGORA_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http_ok(http, "/readyz").await {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("agora run --target hearing was not ready within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        // Idle: let start-up work settle, then read the resident set.
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Some(pid) = child.id() {
            rss = resident_kb(pid).unwrap_or(0);
        }
        child.kill().await?;
    }
    schema.drop().await?;
    // The runs created the stream; leave nothing behind.
    Bus::connect_existing(BusConfig::new(&args.nats_url, &prefix)).await?.delete_stream().await?;
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    println!(
        "agora run --target hearing: ready in {median:.0} ms (median of {}), idle RSS {:.1} MB",
        samples.len(),
        rss as f64 / 1024.0
    );
    if args.db.json {
        println!("{}", json!({"ready_ms": median, "idle_rss_mb": rss as f64 / 1024.0}));
    }
    Ok(())
}

/// A port for a process the bench starts (see [`agora_eventstore::testing::free_port`]).
fn free_port() -> anyhow::Result<u16> {
    Ok(agora_eventstore::testing::free_port()?)
}

async fn http_ok(port: u16, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    response.starts_with(b"HTTP/1.1 200")
}

fn resident_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn intake(args: IntakeArgs) -> anyhow::Result<()> {
    let (schema, options) = Schema::create(&args.db.database_url).await?;
    let result = intake_in(&args, options).await;
    schema.drop().await?;
    let row = result?;
    if args.db.json {
        println!("{row}");
    }
    Ok(())
}

async fn intake_in(args: &IntakeArgs, options: PgConnectOptions) -> anyhow::Result<serde_json::Value> {
    use agora_response::intake::{Intake, IntakeConfig};
    let store = Store::postgres(options.clone(), 8).await?;
    store.migrate().await?;
    agora_response::hearings::migrate(&store).await?;
    let hearing = Uuid::now_v7();
    let closes_at = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    agora_eventstore::on_backend!(store.backend(), pool => {
        sqlx::query("INSERT INTO response_hearings (hearing_id, status, closes_at, owner_id, reviewers, sequence) VALUES ($1, 'Active', $2, 'user:owner', '', 1)")
            .bind(hearing.to_string())
            .bind(&closes_at)
            .execute(pool)
            .await?;
    });
    let args_clients = args.clients;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(args.clients as u32).connect_with(options).await?;
    sqlx::query("CREATE TABLE baseline (id BIGSERIAL PRIMARY KEY, payload TEXT NOT NULL)").execute(&pool).await?;
    let text = "Jeg er imod forslaget, fordi det vil øge trafikken i kvarteret. ".repeat(8);
    let baseline_text = text.clone();
    let baseline = move |seconds| {
        let (pool, text) = (pool.clone(), baseline_text.clone());
        measure(args_clients, seconds, move |_, _| {
            let pool = pool.clone();
            let text = text.clone();
            async move {
                sqlx::query("INSERT INTO baseline (payload) VALUES ($1)").bind(text).execute(&pool).await?;
                Ok(())
            }
        })
    };
    // The response service's gRPC API in this process, over loopback, as clients reach it.
    let files =
        agora_response::files::Attachments { store: Arc::new(object_store::memory::InMemory::new()), scanner: None };
    // Every response is sealed for its respondent, with keys from the identity service's
    // vault on the same database, as when both run in one process.
    agora_identity::store::migrate(&store).await?;
    let (master, _) = agora_vault::MasterKey::generate("bench")?;
    let vault = agora_identity::vault::Vault::new(store.clone(), Arc::new(master), Arc::new(chrono::Utc::now));
    let (intake, _worker) =
        Intake::start(store.clone(), files, Arc::new(vault), Arc::new(chrono::Utc::now), IntakeConfig::default());
    let app = agora_response::app::ResponseApp::new(store.clone(), intake, Arc::new(chrono::Utc::now));
    let key = agora_auth::SigningKey::generate_with_kid("bench")?;
    let issuer = agora_auth::TokenIssuer::new(key, "agora-bench", "agora", chrono::Duration::hours(1));
    let service = agora_response::grpc::service(app, Arc::new(issuer.verifier()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(agora_telemetry::grpc::incoming(listener)),
    );
    // Respondents reach the service through the gateway, whose replicas each hold an HTTP/2
    // connection that carries many respondents' submits.
    let connections = if args.connections == 0 { args.clients } else { args.connections.min(args.clients) };
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))?.connect().await?;
        clients.push(agora_proto::response::v1::response_service_client::ResponseServiceClient::new(channel));
    }
    let clients = Arc::new(clients);
    let tokens: Vec<String> = (0..args.clients)
        .map(|_| {
            let respondent = agora_auth::Principal::new(Uuid::now_v7(), agora_auth::Capacity::Citizen);
            issuer.issue(&respondent).map(|t| format!("Bearer {t}"))
        })
        .collect::<Result<_, _>>()?;
    let tokens = Arc::new(tokens);
    let run = Uuid::new_v4().simple().to_string();
    let submits = move |round: usize, seconds| {
        let (clients, tokens, text, run) = (clients.clone(), tokens.clone(), text.clone(), run.clone());
        measure(args_clients, seconds, move |client_no, n| {
            let mut client = clients[client_no % clients.len()].clone();
            let mut request = tonic::Request::new(agora_proto::response::v1::SubmitResponseRequest {
                hearing_id: hearing.to_string(),
                idempotency_key: format!("{run}-{round}-{client_no}-{n}"),
                text: text.clone(),
                terms_version: "1".into(),
                ..Default::default()
            });
            let token = tokens[client_no].clone();
            async move {
                request.metadata_mut().insert("authorization", token.parse()?);
                client.submit_response(request).await?;
                Ok(())
            }
        })
    };
    // The two take turns, a third of the time each at a time, so that a machine whose speed
    // drifts during the run (shared cores) weighs on both alike.
    let rounds = 3usize;
    let seconds = (args.seconds / rounds as u64).max(1);
    let (mut baselines, mut accepted_rounds) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        baselines.push(baseline(seconds).await?);
        accepted_rounds.push(submits(round, seconds).await?);
    }
    let baseline = Measured::merged(&baselines)?;
    let accepted = Measured::merged(&accepted_rounds)?;
    let ratio = accepted.per_second / baseline.per_second;
    println!(
        "intake, {} clients: {:.0} accepted/s, p50 {:.2} ms, p99 {:.2} ms; raw INSERT {:.0}/s (p99 {:.2} ms); ratio {ratio:.2}",
        args.clients, accepted.per_second, accepted.p50_ms, accepted.p99_ms, baseline.per_second, baseline.p99_ms
    );
    Ok(json!({
        "per_second": accepted.per_second, "p50_ms": accepted.p50_ms, "p99_ms": accepted.p99_ms,
        "baseline_per_second": baseline.per_second, "ratio": ratio, "accepted": accepted.operations,
    }))
}
