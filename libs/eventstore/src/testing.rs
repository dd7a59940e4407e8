//! Test support: a store of its own for every test (a PostgreSQL schema or a SQLite file)
//! and a JetStream stream of its own, all removed afterwards.
//!
//! When PostgreSQL or NATS is not reachable a test is skipped with a message saying so,
//! except under `CI=true`, where a missing server fails the test.

use std::str::FromStr;

use sqlx::Connection;
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use crate::Store;
use crate::jetstream::{Bus, BusConfig};

pub fn postgres_url() -> String {
    std::env::var("AGORA_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn nats_url() -> String {
    std::env::var("AGORA_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn required() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// Called when a server is missing: fails under CI, otherwise says plainly what is skipped.
pub fn unavailable(what: &str, error: &dyn std::fmt::Display) {
    if required() {
        panic!("{what} is required under CI=true but not reachable: {error}");
    }
    eprintln!("SKIPPED: {what} is not reachable ({error}); this test did not run");
}

/// A store in a PostgreSQL schema of its own, dropped with the value.
pub struct TestDatabase {
    pub store: Store,
    pub schema: String,
    pub options: PgConnectOptions,
}

impl TestDatabase {
    /// A second, independent store on the same schema: another "replica".
    pub async fn another_store(&self, max_connections: u32) -> Store {
        match Store::postgres(self.options.clone(), max_connections).await {
            Ok(store) => store,
            Err(e) => panic!("cannot open a second store on schema {}: {e}", self.schema),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        let url = postgres_url();
        // Drop runs outside async context; a short-lived runtime on its own thread can
        // still talk to the database.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            runtime.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// A migrated store in a fresh PostgreSQL schema, or `None` (skipped) when there is no server.
pub async fn postgres(max_connections: u32) -> Option<TestDatabase> {
    let url = postgres_url();
    let mut admin = match sqlx::PgConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(e) => {
            unavailable(&format!("PostgreSQL at {url}"), &e);
            return None;
        }
    };
    let schema = format!("agora_test_{}", Uuid::new_v4().simple());
    if let Err(e) = sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut admin).await {
        panic!("cannot create test schema {schema}: {e}");
    }
    let _ = admin.close().await;
    let options = match PgConnectOptions::from_str(&url) {
        Ok(options) => options.options([("search_path", schema.as_str())]),
        Err(e) => panic!("AGORA_TEST_DATABASE_URL is not a PostgreSQL URL: {e}"),
    };
    let store = match Store::postgres(options.clone(), max_connections).await {
        Ok(store) => store,
        Err(e) => panic!("cannot connect to test schema {schema}: {e}"),
    };
    if let Err(e) = store.migrate().await {
        panic!("cannot migrate test schema {schema}: {e}");
    }
    Some(TestDatabase { store, schema, options })
}

/// A migrated store in a SQLite file in a temporary directory (kept alive by the guard).
pub async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("cannot create a temporary directory: {e}"),
    };
    let store = match Store::sqlite(&dir.path().join("events.db")).await {
        Ok(store) => store,
        Err(e) => panic!("cannot open SQLite store: {e}"),
    };
    if let Err(e) = store.migrate().await {
        panic!("cannot migrate SQLite store: {e}");
    }
    (store, dir)
}

/// A JetStream stream with a subject prefix of its own, deleted with the value; `None`
/// (skipped) when there is no server.
pub struct TestBus {
    pub bus: Bus,
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let bus = self.bus.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            runtime.block_on(async move {
                // The bus's client belongs to the test's runtime; use a connection of our own.
                if let Ok(client) = async_nats::connect(bus.config.servers()).await {
                    let _ = async_nats::jetstream::new(client).delete_stream(&bus.config.stream).await;
                }
            });
        })
        .join();
    }
}

pub async fn nats() -> Option<TestBus> {
    let url = nats_url();
    let prefix = format!("agoratest{}", Uuid::new_v4().simple());
    match Bus::connect(BusConfig::new(&url, &prefix)).await {
        Ok(bus) => Some(TestBus { bus }),
        Err(e) => {
            unavailable(&format!("NATS JetStream at {url}"), &e);
            None
        }
    }
}

/// A port nothing listens on, for a process about to be started, below the kernel's range for
/// outgoing connections. A port from `bind(0)` comes from that range, and by the time the
/// process binds it, one of the many connections opened meanwhile may have taken it as its own
/// (a CI surge failed so: "Address already in use"). Nor is a port handed out twice in one
/// process, where tests run side by side. Checked on every address, as a server binds.
pub fn free_port() -> std::io::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let outgoing_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, outgoing_from.max(10_001));
    for _ in 0..200 {
        // A fresh RandomState is randomly keyed: a random number without a crate for it.
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let port = low + (random % u64::from(high - low)) as u16;
        let Ok(mut handed_out) = HANDED_OUT.lock() else { break };
        if !handed_out.contains(&port) && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            handed_out.push(port);
            return Ok(port);
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `check` until it returns `Some`, failing the test with `what` after `seconds`.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match poll_until(std::time::Duration::from_millis(20), seconds, check).await {
        Some(value) => value,
        None => panic!("timed out after {seconds} s waiting for {what}"),
    }
}

/// Polls `check` every `interval` until it gives a value, for at most `seconds`; `None` when
/// it never did. For callers that report a timeout as an error rather than a panic.
pub async fn poll_until<T, F, Fut>(interval: std::time::Duration, seconds: u64, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Starts a Python helper of the tests (a real protocol peer: an OpenID Connect provider, an
/// SMTP server) and returns it with the first line it prints. `None`, said plainly, when it
/// cannot start, which under `CI=true` is a failure; `what` names it and how to get it.
pub async fn python_helper(script: &str, args: &[&str], what: &str) -> Option<(tokio::process::Child, String)> {
    use tokio::io::AsyncBufReadExt;
    let spawned = tokio::process::Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            unavailable(&format!("python3 (for {what})"), &e);
            return None;
        }
    };
    let stdout = child.stdout.take()?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    match tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line()).await {
        Ok(Ok(Some(line))) if !line.trim().is_empty() => Some((child, line.trim().to_string())),
        other => {
            unavailable(what, &format!("it did not start: {other:?}"));
            None
        }
    }
}

/// A store on each backend: a SQLite file, and a PostgreSQL schema when the server is there
/// (a failure under `CI=true` when it is not). Keep the guard as long as the store.
pub async fn both_backends() -> Vec<(Store, Box<dyn std::any::Any>)> {
    let mut stores: Vec<(Store, Box<dyn std::any::Any>)> = Vec::new();
    let (sqlite, dir) = sqlite().await;
    stores.push((sqlite, Box::new(dir)));
    if let Some(database) = postgres(4).await {
        stores.push((database.store.clone(), Box::new(database)));
    }
    stores
}

/// An integration event as another service would publish it: `dk.agora.<service>.v1.<message>`
/// about `subject`, on `<service>.v1.<message>.<group>`, the `sequence`th of its stream.
pub fn integration_event(
    service: &str,
    message: &str,
    subject: &str,
    group: &str,
    sequence: i64,
    data: Vec<u8>,
) -> crate::jetstream::IntegrationEvent {
    crate::jetstream::IntegrationEvent {
        id: Uuid::now_v7(),
        event_type: format!("dk.agora.{service}.v1.{message}"),
        source: format!("agora/{service}"),
        subject: subject.into(),
        nats_subject: format!("{service}.v1.{}.{group}", message.to_lowercase()),
        time: chrono::Utc::now(),
        sequence,
        position: sequence,
        hash: String::new(),
        traceparent: None,
        data: data.into(),
    }
}
