//! The store: schema, appends, and reading streams and the global log on either backend.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use serde_json::value::RawValue;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};
use uuid::Uuid;

use crate::chain::{ChainLink, GENESIS};
use crate::{on_backend, on_tx};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "another change to {stream} was committed first (expected to write sequence {sequence}); reload and try again"
    )]
    Conflict { stream: String, sequence: i64 },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event {position} is not valid JSON: {source}")]
    Corrupt { position: i64, source: serde_json::Error },
    #[error("event {position} has a malformed {field}: {reason}")]
    CorruptField { position: i64, field: &'static str, reason: String },
    #[error("cannot serialise event: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("database URL '{url}' is not usable: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("stream {stream} has no event {sequence} to continue from")]
    BrokenStream { stream: String, sequence: i64 },
}

/// Where events live.
pub enum Backend {
    Postgres(PgPool),
    /// SQLite allows one writer at a time; one writer connection avoids busy errors, while
    /// readers use their own connections and never block it (WAL).
    Sqlite {
        writer: SqlitePool,
        reader: SqlitePool,
    },
}

/// An open transaction on either backend, for handlers that write read models.
pub enum DbTx {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

impl DbTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        on_tx!(self, tx => tx.commit().await)
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        on_tx!(self, tx => tx.rollback().await)
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, DbTx::Postgres(_))
    }
}

/// A point in the global log. Readers order by (transaction, position): on PostgreSQL a
/// sequence value is taken before commit, so positions alone commit out of order under
/// concurrency; ordering by the writing transaction and reading only below the oldest
/// running transaction means no event can appear behind a reader that has moved on.
/// On SQLite writers are serial and the transaction part is always zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct LogPosition {
    pub transaction: i64,
    pub position: i64,
}

impl LogPosition {
    pub const START: LogPosition = LogPosition { transaction: 0, position: 0 };
}

/// One event as stored.
#[derive(Debug, Clone)]
pub struct RecordedEvent {
    pub log: LogPosition,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The payload exactly as stored; decode it with [`RecordedEvent::decode`] straight into
    /// the event type, which costs a fraction of building a `Value` first.
    pub payload: Box<RawValue>,
    /// Metadata as stored (a JSON object of strings); read keys with [`RecordedEvent::metadata_str`].
    pub metadata: Box<RawValue>,
    pub recorded_at: DateTime<Utc>,
    pub hash: String,
}

impl RecordedEvent {
    pub fn position(&self) -> i64 {
        self.log.position
    }

    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.payload.get())
    }

    pub fn payload_value(&self) -> Value {
        serde_json::from_str(self.payload.get()).unwrap_or(Value::Null)
    }

    pub fn metadata_str(&self, key: &str) -> Option<String> {
        let map: std::collections::HashMap<&str, std::borrow::Cow<'_, str>> =
            serde_json::from_str(self.metadata.get()).ok()?;
        map.get(key).map(|v| v.to_string())
    }

    pub fn metadata_value(&self) -> Value {
        serde_json::from_str(self.metadata.get()).unwrap_or(Value::Null)
    }
}

/// An event about to be appended.
pub struct NewEvent {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The payload as JSON text, written out once from the event (`serde_json::value::
    /// to_raw_value`): a `Value` would be built, then written out, then parsed again to check
    /// it, three passes over a response's kilobytes on the intake's path.
    pub payload: Box<RawValue>,
    pub metadata: Value,
}

/// A snapshot to write together with events.
pub struct NewSnapshot {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub last_sequence: i64,
    pub snapshot_version: i64,
    pub payload: Value,
}

/// The schema, with `{ID}` (the global position's column), `{TX}` (how a row learns its
/// writing transaction) and `{KEY}` filled in per backend. On PostgreSQL the primary key is
/// the reading order itself, so an append maintains two indexes, not three.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS events (
        position {ID},
        tx_id BIGINT NOT NULL DEFAULT {TX},
        event_id TEXT NOT NULL,
        aggregate_type TEXT NOT NULL,
        aggregate_id TEXT NOT NULL,
        sequence BIGINT NOT NULL,
        event_type TEXT NOT NULL,
        event_version TEXT NOT NULL,
        payload TEXT NOT NULL,
        metadata TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        hash TEXT NOT NULL,
        UNIQUE (aggregate_type, aggregate_id, sequence){KEY})",
    "CREATE INDEX IF NOT EXISTS events_log_order ON events (tx_id, position)",
    "CREATE TABLE IF NOT EXISTS snapshots (
        aggregate_type TEXT NOT NULL,
        aggregate_id TEXT NOT NULL,
        last_sequence BIGINT NOT NULL,
        snapshot_version BIGINT NOT NULL,
        payload TEXT NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id))",
    "CREATE TABLE IF NOT EXISTS checkpoints (
        name TEXT PRIMARY KEY,
        tx_id BIGINT NOT NULL,
        position BIGINT NOT NULL,
        updated_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS handled_events (
        consumer TEXT NOT NULL,
        event_id TEXT NOT NULL,
        PRIMARY KEY (consumer, event_id))",
];

const SELECT_EVENT: &str = "SELECT position, tx_id, event_id, aggregate_type, aggregate_id, sequence, \
    event_type, event_version, payload, metadata, recorded_at, hash FROM events";

/// The log in reading order, below the oldest running transaction.
const LOG_PG: &str = "SELECT position, tx_id, event_id, aggregate_type, aggregate_id, sequence, \
    event_type, event_version, payload, metadata, recorded_at, hash FROM events WHERE (tx_id, position) > ($1, $2) \
    AND tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint ORDER BY tx_id, position LIMIT $3";

/// SQLite has one writer at a time, so the log is always settled.
const LOG_SQLITE: &str = "SELECT position, tx_id, event_id, aggregate_type, aggregate_id, sequence, \
    event_type, event_version, payload, metadata, recorded_at, hash FROM events WHERE (tx_id, position) > ($1, $2) \
    ORDER BY tx_id, position LIMIT $3";

/// A log read's statement with its parameters bound: from `after`, `limit` of them, and the
/// aggregate types `only` names (see [`log_sql`]).
macro_rules! log_query {
    ($sql:expr, $after:expr, $limit:expr, $only:expr) => {{
        let mut query = sqlx::query($sql).bind($after.transaction).bind($after.position).bind($limit);
        for aggregate in $only.unwrap_or_default() {
            query = query.bind(*aggregate);
        }
        query
    }};
}

/// A log read (`LOG_PG` or `LOG_SQLITE`) that leaves out the payloads of aggregate types not
/// in `only`, bound after the read's own three parameters.
fn log_sql(whole: &'static str, only: Option<&[&str]>) -> std::borrow::Cow<'static, str> {
    let Some(aggregates) = only else { return whole.into() };
    // No aggregate at all: every payload left out (PostgreSQL refuses `IN ()`).
    let wanted = if aggregates.is_empty() {
        "1 = 0".to_string()
    } else {
        let listed: Vec<String> = (0..aggregates.len()).map(|n| format!("${}", n + 4)).collect();
        format!("aggregate_type IN ({})", listed.join(","))
    };
    whole.replacen(" payload,", &format!(" CASE WHEN {wanted} THEN payload ELSE 'null' END,"), 1).into()
}

/// Streams read in one query by [`Store::read_streams`]: well under either database's limit
/// of parameters.
pub const STREAMS_AT_ONCE: usize = 500;

/// Bounded so that a surge of short streams cannot grow memory without limit.
const HASH_CACHE_LIMIT: usize = 100_000;

/// (aggregate type, aggregate id).
type StreamKey = (String, String);

/// The event store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
    appended: Arc<tokio::sync::Notify>,
    /// Last known (sequence, hash) per stream: lets an append chain onto the event the
    /// command just loaded without reading it again.
    heads: Arc<Mutex<HashMap<StreamKey, (i64, String)>>>,
    /// Each projection's checkpoint as its runner in this process last saved it, watched by
    /// the commands waiting for that read model (see [`Store::await_read_model`]): one
    /// channel per projection, so that a step wakes only the commands waiting on its read
    /// model, and only those whose stream it passed look at the database.
    checkpoints_saved: Arc<Mutex<HashMap<String, tokio::sync::watch::Sender<LogPosition>>>>,
    /// How long a command waits for the read models it feeds (see
    /// [`Store::await_read_model`]); `None`: it does not wait.
    read_model_wait: Option<Duration>,
}

fn insert_events_sql(postgres: bool, rows: usize) -> String {
    format!(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, event_type, \
         event_version, payload, metadata, recorded_at, hash) VALUES {}",
        placeholders(postgres, rows, 10)
    )
}

/// The statement of [`insert_events_sql`] with every chained event bound, for either backend.
macro_rules! insert_events {
    ($sql:expr, $recorded:expr) => {{
        let mut query = sqlx::query($sql);
        for (event, text) in $recorded {
            query = query
                .bind(event.event_id.to_string())
                .bind(&event.aggregate_type)
                .bind(&event.aggregate_id)
                .bind(event.sequence)
                .bind(&event.event_type)
                .bind(&event.event_version)
                .bind(&text.payload)
                .bind(&text.metadata)
                .bind(&text.recorded_at)
                .bind(&event.hash);
        }
        query
    }};
}

/// Runs `drain` (which works through what the log holds and returns how much it did) until
/// everything committed before the call has been seen: on PostgreSQL, events stay behind the
/// reading horizon while an older transaction runs (see [`Store::log_settled`]). Gives up
/// after ten seconds with a warning; nothing is lost, it is only read later.
pub async fn drain_settled<E, F, Fut>(store: &Store, mut drain: F) -> Result<usize, E>
where
    E: From<StoreError>,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize, E>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut total = 0;
    loop {
        let settled = store.log_settled().await?;
        total += drain().await?;
        if settled {
            return Ok(total);
        }
        if tokio::time::Instant::now() > deadline {
            tracing::warn!("events are still hidden behind a long-running transaction; they will be read when it ends");
            return Ok(total);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `(?,?),(?,?)…` for a multi-row VALUES list: numbered (`$1`) on PostgreSQL, anonymous on
/// SQLite, which looks named parameters up by a linear scan (quadratic for a large batch).
pub fn placeholders(postgres: bool, rows: usize, columns: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 4);
    for row in 0..rows {
        if row > 0 {
            out.push(',');
        }
        out.push('(');
        for column in 0..columns {
            if column > 0 {
                out.push(',');
            }
            if postgres {
                out.push_str(&format!("${}", row * columns + column + 1));
            } else {
                out.push('?');
            }
        }
        out.push(')');
    }
    out
}

pub(crate) fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl Store {
    /// Connects to `postgres://…` or `sqlite://PATH` and creates the schema if missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_pooled(url, 32).await
    }

    /// As [`Store::connect`], with at most `pool` connections to PostgreSQL.
    pub async fn connect_pooled(url: &str, pool: u32) -> Result<Self, StoreError> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| StoreError::BadUrl { url: redact(url), reason: e.to_string() })?;
            Self::postgres(options, pool).await?
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            Self::sqlite(std::path::Path::new(path)).await?
        } else {
            return Err(StoreError::BadUrl {
                url: redact(url),
                reason: "expected postgres://… or sqlite://PATH".into(),
            });
        };
        store.migrate().await?;
        Ok(store)
    }

    pub async fn postgres(options: PgConnectOptions, max_connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            // sqlx checks a connection with a round trip as it goes back to the pool already;
            // another as it is taken out was a round trip more on every transaction (a tenth of
            // the identity and response services' time in a surge). A connection broken since
            // (PostgreSQL restarted) fails its next statement, which every caller retries.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Ok(Self::from_backend(Backend::Postgres(pool)))
    }

    pub async fn sqlite(path: &std::path::Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // An acknowledged response must survive a power cut, not only a crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
        let reader = SqlitePoolOptions::new().max_connections(4).connect_with(options.read_only(true)).await?;
        Ok(Self::from_backend(Backend::Sqlite { writer, reader }))
    }

    pub fn from_backend(backend: Backend) -> Self {
        Self {
            backend: Arc::new(backend),
            appended: Arc::new(tokio::sync::Notify::new()),
            heads: Arc::new(Mutex::new(HashMap::new())),
            checkpoints_saved: Arc::new(Mutex::new(HashMap::new())),
            read_model_wait: None,
        }
    }

    /// The same store, with commands that feed a read model answering only once it shows
    /// them, or once `within` has passed (see [`Store::await_read_model`]).
    pub fn waiting_for_read_models(mut self, within: Duration) -> Self {
        self.read_model_wait = Some(within);
        self
    }

    pub(crate) fn read_model_wait(&self) -> Option<Duration> {
        self.read_model_wait
    }

    /// Tells the commands of this process waiting on a read model that its projection's
    /// checkpoint is now `at` (forward after a step, back to the start for a rebuild).
    pub(crate) fn checkpoint_saved(&self, checkpoint: &str, at: LogPosition) {
        self.checkpoint_channel(checkpoint, |channel| {
            channel.send_replace(at);
        })
    }

    /// The checkpoint as a runner of this process last saved it (the start until one has).
    pub(crate) fn watch_checkpoint(&self, checkpoint: &str) -> tokio::sync::watch::Receiver<LogPosition> {
        self.checkpoint_channel(checkpoint, tokio::sync::watch::Sender::subscribe)
    }

    fn checkpoint_channel<T>(
        &self,
        checkpoint: &str,
        use_it: impl FnOnce(&tokio::sync::watch::Sender<LogPosition>) -> T,
    ) -> T {
        let mut saved = self.checkpoints_saved.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        use_it(saved.entry(checkpoint.to_owned()).or_insert_with(|| tokio::sync::watch::channel(LogPosition::START).0))
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn is_postgres(&self) -> bool {
        matches!(*self.backend, Backend::Postgres(_))
    }

    /// Woken after every append in this process, so that local consumers need not poll.
    pub fn appended(&self) -> &tokio::sync::Notify {
        &self.appended
    }

    /// What a reader of the log does once [`Store::appended`] woke it, given how many events
    /// it read last time: when that was more than a few, commits are coming faster than it
    /// reads, and it waits a moment for the ones that follow. In a surge they come every
    /// fraction of a millisecond, and a reader that ran for each alone (a projection, the
    /// relay, a queue of steps) would read and write its checkpoint once per commit instead of
    /// once per handful. Otherwise it reads at once, so that a page shown right after a
    /// command already shows what the command did.
    pub async fn gather_appends(last_read: usize) {
        if last_read > 8 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Creates the event store's tables; safe to run any number of times.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let (id, tx, key) = if self.is_postgres() {
            ("BIGSERIAL NOT NULL", "(pg_current_xact_id()::text::bigint)", ", PRIMARY KEY (tx_id, position)")
        } else {
            // AUTOINCREMENT: a position is never reused, even after the last row is deleted.
            ("INTEGER PRIMARY KEY AUTOINCREMENT", "0", "")
        };
        let statements: Vec<String> = SCHEMA
            .iter()
            .filter(|s| !(self.is_postgres() && s.contains("events_log_order")))
            .map(|s| s.replace("{ID}", id).replace("{TX}", tx).replace("{KEY}", key))
            .collect();
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        self.execute_ddl(&statements).await
    }

    /// Runs schema statements for a read model or service table on this store's database.
    pub async fn execute_ddl(&self, statements: &[&str]) -> Result<(), StoreError> {
        on_backend!(&*self.backend, pool => {
            for statement in statements {
                sqlx::query(statement).execute(pool).await?;
            }
        });
        Ok(())
    }

    /// Adds the columns a table created by an earlier version lacks (`name`, SQL type):
    /// `CREATE TABLE IF NOT EXISTS` leaves an existing table as it was.
    pub async fn add_missing_columns(&self, table: &str, columns: &[(&str, &str)]) -> Result<(), StoreError> {
        on_backend!(&*self.backend, pool => {
            let sql = if self.is_postgres() {
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1"
            } else {
                "SELECT name FROM pragma_table_info($1)"
            };
            let existing: Vec<(String,)> = sqlx::query_as(sql).bind(table).fetch_all(pool).await?;
            for (name, kind) in columns {
                if existing.iter().any(|(e,)| e == name) {
                    continue;
                }
                // Replicas starting together may both find the column missing.
                let if_missing = if self.is_postgres() { "IF NOT EXISTS " } else { "" };
                let added = sqlx::query(&format!("ALTER TABLE {table} ADD COLUMN {if_missing}{name} {kind}"))
                    .execute(pool)
                    .await;
                match added {
                    Ok(_) => {}
                    Err(sqlx::Error::Database(e)) if e.message().contains("duplicate column") => {}
                    Err(e) => return Err(e.into()),
                }
            }
        });
        Ok(())
    }

    /// A transaction for a read-model change.
    pub async fn begin(&self) -> Result<DbTx, StoreError> {
        Ok(match &*self.backend {
            Backend::Postgres(pool) => DbTx::Postgres(pool.begin().await?),
            // IMMEDIATE takes the write lock up front: another process's writer then waits
            // (busy timeout) instead of failing when this one upgrades from reading.
            Backend::Sqlite { writer, .. } => DbTx::Sqlite(writer.begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    /// Appends events (of one or several streams) atomically. A sequence already taken in
    /// its stream means someone else wrote first: [`StoreError::Conflict`], nothing written.
    pub async fn append(
        &self,
        events: &[NewEvent],
        snapshot: Option<NewSnapshot>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let recorded = self.chain(events, None).await?;
        let sql = insert_events_sql(self.is_postgres(), recorded.len());
        let conflict = || StoreError::Conflict {
            stream: format!("{}/{}", events[0].aggregate_type, events[0].aggregate_id),
            sequence: events[0].sequence,
        };
        let result: Result<(), sqlx::Error> = on_backend!(&*self.backend, pool => {
            let query = insert_events!(&sql, &recorded);
            match snapshot {
                // One statement is its own transaction: the common path costs one round trip.
                None => query.execute(pool).await.map(|_| ()),
                Some(snapshot) => async {
                    let mut tx = pool.begin().await?;
                    query.execute(&mut *tx).await?;
                    sqlx::query(
                        "INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, snapshot_version, payload) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET \
                         last_sequence = excluded.last_sequence, snapshot_version = excluded.snapshot_version, \
                         payload = excluded.payload",
                    )
                    .bind(&snapshot.aggregate_type)
                    .bind(&snapshot.aggregate_id)
                    .bind(snapshot.last_sequence)
                    .bind(snapshot.snapshot_version)
                    .bind(snapshot.payload.to_string())
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await
                }.await,
            }
        });
        match result {
            Ok(()) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(conflict()),
            Err(e) => return Err(e.into()),
        }
        let recorded: Vec<RecordedEvent> = recorded.into_iter().map(|(event, _)| event).collect();
        self.committed(&recorded);
        Ok(recorded)
    }

    /// Appends events inside the caller's transaction, so that they commit together with
    /// the caller's own rows (a service's counters, idempotency keys). Call
    /// [`Store::committed`] with the result once the transaction has committed.
    pub async fn append_in(&self, tx: &mut DbTx, events: &[NewEvent]) -> Result<Vec<RecordedEvent>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let recorded = self.chain(events, Some(&mut *tx)).await?;
        // PostgreSQL takes at most 65,535 parameters a statement, ten an event.
        let mut result: Result<(), sqlx::Error> = Ok(());
        for chunk in recorded.chunks(APPEND_CHUNK) {
            let sql = insert_events_sql(tx.is_postgres(), chunk.len());
            result = on_tx!(tx, conn => {
                let query = insert_events!(&sql, chunk);
                query.execute(&mut **conn).await.map(|_| ())
            });
            if result.is_err() {
                break;
            }
        }
        match result {
            Ok(_) => Ok(recorded.into_iter().map(|(event, _)| event).collect()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict {
                stream: format!("{}/{}", events[0].aggregate_type, events[0].aggregate_id),
                sequence: events[0].sequence,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Records that events were committed: stream heads for the next append, metrics, and a
    /// wake-up for local consumers.
    pub fn committed(&self, recorded: &[RecordedEvent]) {
        self.committed_quietly(recorded);
        self.appended.notify_waiters();
    }

    /// Records that events were committed without waking the local consumers: for a queue's
    /// own bookkeeping (a step started or finished), which no reader of the log waits for;
    /// waking them for each would have them read their checkpoints once per step.
    pub fn committed_quietly(&self, recorded: &[RecordedEvent]) {
        for event in recorded {
            self.remember_head(&event.aggregate_type, &event.aggregate_id, event.sequence, &event.hash);
            agora_telemetry::metrics::global().events_appended(&event.aggregate_type, 1);
        }
    }

    /// Stamps id, time and hash on each new event, chaining onto its stream's previous one
    /// (read through `tx` when given: on SQLite the transaction holds the only writer).
    async fn chain(
        &self,
        events: &[NewEvent],
        mut tx: Option<&mut DbTx>,
    ) -> Result<Vec<(RecordedEvent, StoredText)>, StoreError> {
        let mut previous = self.heads_of(events, tx.as_deref_mut()).await?;
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
            let previous_hash = match previous.get(&key) {
                Some((sequence, hash)) if *sequence == event.sequence - 1 => hash.clone(),
                _ => {
                    self.hash_of(&event.aggregate_type, &event.aggregate_id, event.sequence - 1, tx.as_deref_mut())
                        .await?
                }
            };
            let event_id = Uuid::now_v7();
            let recorded_at = Utc::now();
            let text = StoredText {
                payload: event.payload.get().to_string(),
                metadata: event.metadata.to_string(),
                recorded_at: format_time(recorded_at),
            };
            let hash = ChainLink {
                previous_hash: &previous_hash,
                aggregate_type: &event.aggregate_type,
                aggregate_id: &event.aggregate_id,
                sequence: event.sequence,
                event_id: &event_id.to_string(),
                event_type: &event.event_type,
                event_version: &event.event_version,
                recorded_at: &text.recorded_at,
                payload: &text.payload,
                metadata: &text.metadata,
            }
            .hash();
            previous.insert(key, (event.sequence, hash.clone()));
            out.push((
                RecordedEvent {
                    log: LogPosition::START,
                    event_id,
                    aggregate_type: event.aggregate_type.clone(),
                    aggregate_id: event.aggregate_id.clone(),
                    sequence: event.sequence,
                    event_type: event.event_type.clone(),
                    event_version: event.event_version.clone(),
                    payload: event.payload.clone(),
                    metadata: RawValue::from_string(text.metadata.clone())?,
                    recorded_at,
                    hash,
                },
                text,
            ));
        }
        Ok(out)
    }

    /// The heads that `events` chain onto, when there are several to read: each stream's
    /// event before the first of it in `events`, unless the head cache has it, read in one
    /// statement (a batch of steps, each its own stream, would otherwise read them one by
    /// one). A single one is left to [`Self::hash_of`].
    async fn heads_of(
        &self,
        events: &[NewEvent],
        tx: Option<&mut DbTx>,
    ) -> Result<HashMap<(String, String), (i64, String)>, StoreError> {
        let mut wanted: Vec<(&str, &str, i64)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        if let Ok(heads) = self.heads.lock() {
            for event in events {
                let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
                let cached = heads.get(&key).is_some_and(|(known, _)| *known == event.sequence - 1);
                if seen.insert(key) && event.sequence > 1 && !cached {
                    wanted.push((&event.aggregate_type, &event.aggregate_id, event.sequence - 1));
                }
            }
        }
        let mut found = HashMap::new();
        if wanted.len() < 2 {
            return Ok(found);
        }
        let mut tx = tx;
        for chunk in wanted.chunks(APPEND_CHUNK) {
            // A join on a list of values, which both databases look up row by row in the
            // stream index (PostgreSQL scanned the whole table for a row-value IN list).
            let rows = (0..chunk.len())
                .map(|i| format!("(${}, ${}, CAST(${} AS BIGINT))", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT e.aggregate_type, e.aggregate_id, e.sequence, e.hash FROM (VALUES {rows}) AS wanted \
                 JOIN events e ON e.aggregate_type = wanted.column1 AND e.aggregate_id = wanted.column2 \
                 AND e.sequence = wanted.column3"
            );
            // A macro, not a closure: the query's type differs by backend.
            macro_rules! bound {
                () => {{
                    let mut query = sqlx::query_as(&sql);
                    for (aggregate_type, aggregate_id, sequence) in chunk {
                        query = query.bind(*aggregate_type).bind(*aggregate_id).bind(*sequence);
                    }
                    query
                }};
            }
            let rows: Vec<(String, String, i64, String)> = match tx.as_deref_mut() {
                Some(tx) => on_tx!(tx, conn => { bound!().fetch_all(&mut **conn).await? }),
                None => on_backend!(&*self.backend, pool => { bound!().fetch_all(pool).await? }),
            };
            for (aggregate_type, aggregate_id, sequence, hash) in rows {
                found.insert((aggregate_type, aggregate_id), (sequence, hash));
            }
        }
        // What is not found is left to `hash_of`, which names the broken stream.
        Ok(found)
    }

    async fn hash_of(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: i64,
        tx: Option<&mut DbTx>,
    ) -> Result<String, StoreError> {
        if sequence < 1 {
            return Ok(GENESIS.to_string());
        }
        if let Ok(heads) = self.heads.lock()
            && let Some((known, hash)) = heads.get(&(aggregate_type.to_string(), aggregate_id.to_string()))
            && *known == sequence
        {
            return Ok(hash.clone());
        }
        const SQL: &str = "SELECT hash FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3";
        let row: Option<(String,)> = match tx {
            Some(tx) => on_tx!(tx, conn => {
                sqlx::query_as(SQL).bind(aggregate_type).bind(aggregate_id).bind(sequence).fetch_optional(&mut **conn).await?
            }),
            None => on_backend!(&*self.backend, pool => {
                sqlx::query_as(SQL).bind(aggregate_type).bind(aggregate_id).bind(sequence).fetch_optional(pool).await?
            }),
        };
        let row = row.map(|(hash,)| hash);
        match row {
            Some(hash) => Ok(hash),
            // The command was decided on an event that is not there: another writer's
            // transaction rolled back or the stream was never loaded. Either way, retry.
            None => Err(StoreError::BrokenStream { stream: format!("{aggregate_type}/{aggregate_id}"), sequence }),
        }
    }

    fn remember_head(&self, aggregate_type: &str, aggregate_id: &str, sequence: i64, hash: &str) {
        if let Ok(mut heads) = self.heads.lock() {
            if heads.len() >= HASH_CACHE_LIMIT {
                heads.clear();
            }
            heads.insert((aggregate_type.to_string(), aggregate_id.to_string()), (sequence, hash.to_string()));
        }
    }

    /// Events of one stream with a sequence above `after`, in order.
    pub async fn read_stream(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "{SELECT_EVENT} WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 ORDER BY sequence"
        );
        let events: Vec<RecordedEvent> = match &*self.backend {
            Backend::Postgres(pool) => {
                let rows =
                    sqlx::query(&sql).bind(aggregate_type).bind(aggregate_id).bind(after).fetch_all(pool).await?;
                rows.iter().map(decode_pg).collect::<Result<_, _>>()?
            }
            Backend::Sqlite { reader, .. } => {
                let rows =
                    sqlx::query(&sql).bind(aggregate_type).bind(aggregate_id).bind(after).fetch_all(reader).await?;
                rows.iter().map(decode_sqlite).collect::<Result<_, _>>()?
            }
        };
        if let Some(last) = events.last() {
            self.remember_head(aggregate_type, aggregate_id, last.sequence, &last.hash);
        }
        Ok(events)
    }

    /// Every event of many streams of one type, grouped by stream and each stream in order:
    /// one query (per [`STREAMS_AT_ONCE`]) where a reader would otherwise ask stream by stream.
    /// A stream with no events is simply absent.
    pub async fn read_streams(
        &self,
        aggregate_type: &str,
        aggregate_ids: &[&str],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let postgres = self.is_postgres();
        let mut events = Vec::new();
        for chunk in aggregate_ids.chunks(STREAMS_AT_ONCE) {
            let type_parameter = if postgres { format!("${}", chunk.len() + 1) } else { "?".to_string() };
            let sql = format!(
                "{SELECT_EVENT} WHERE aggregate_id IN {} AND aggregate_type = {type_parameter} \
                 ORDER BY aggregate_id, sequence",
                placeholders(postgres, 1, chunk.len())
            );
            macro_rules! bound {
                () => {{
                    let mut query = sqlx::query(&sql);
                    for id in chunk {
                        query = query.bind(*id);
                    }
                    query.bind(aggregate_type)
                }};
            }
            match &*self.backend {
                Backend::Postgres(pool) => {
                    for row in bound!().fetch_all(pool).await? {
                        events.push(decode_pg(&row)?);
                    }
                }
                Backend::Sqlite { reader, .. } => {
                    for row in bound!().fetch_all(reader).await? {
                        events.push(decode_sqlite(&row)?);
                    }
                }
            }
        }
        Ok(events)
    }

    /// Up to `limit` events after `after` in global log order. Never returns an event
    /// while an earlier one (in that order) may still commit.
    pub async fn read_log(&self, after: LogPosition, limit: i64) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_log_of(after, limit, None).await
    }

    /// [`Store::read_log`], with the events of aggregate types not in `only` (when given)
    /// coming without their payload (`null`): a reader that passes over them still learns
    /// their position, without the database sending (and the reader parsing) a response's
    /// kilobytes for every reader of the log.
    pub async fn read_log_of(
        &self,
        after: LogPosition,
        limit: i64,
        only: Option<&[&str]>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        match &*self.backend {
            Backend::Postgres(pool) => {
                let sql = log_sql(LOG_PG, only);
                log_query!(&sql, after, limit, only).fetch_all(pool).await?.iter().map(decode_pg).collect()
            }
            Backend::Sqlite { reader, .. } => {
                let sql = log_sql(LOG_SQLITE, only);
                log_query!(&sql, after, limit, only).fetch_all(reader).await?.iter().map(decode_sqlite).collect()
            }
        }
    }

    /// [`Store::read_log_of`] on an open transaction's connection, so that a consumer holding
    /// a transaction needs no second connection. The transaction must not have written yet.
    pub async fn read_log_in(
        tx: &mut DbTx,
        after: LogPosition,
        limit: i64,
        only: Option<&[&str]>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        match tx {
            DbTx::Postgres(conn) => {
                let sql = log_sql(LOG_PG, only);
                log_query!(&sql, after, limit, only).fetch_all(&mut **conn).await?.iter().map(decode_pg).collect()
            }
            DbTx::Sqlite(conn) => {
                let sql = log_sql(LOG_SQLITE, only);
                log_query!(&sql, after, limit, only).fetch_all(&mut **conn).await?.iter().map(decode_sqlite).collect()
            }
        }
    }

    /// Whether every event committed so far can be read from the log. On PostgreSQL an
    /// event stays behind the reading horizon while an older transaction is still running
    /// (that is what keeps readers from skipping it); this says when none is.
    pub async fn log_settled(&self) -> Result<bool, StoreError> {
        match &*self.backend {
            Backend::Postgres(pool) => {
                let settled: bool = sqlx::query_scalar(
                    "SELECT COALESCE(MAX(tx_id), 0) < pg_snapshot_xmin(pg_current_snapshot())::text::bigint FROM events",
                )
                .fetch_one(pool)
                .await?;
                Ok(settled)
            }
            Backend::Sqlite { .. } => Ok(true),
        }
    }

    /// Number of events in the log and the highest position.
    pub async fn log_extent(&self) -> Result<(i64, i64), StoreError> {
        on_backend!(&*self.backend, pool => {
            let row = sqlx::query("SELECT COUNT(*) AS n, COALESCE(MAX(position), 0) AS max FROM events")
                .fetch_one(pool)
                .await?;
            Ok((row.try_get::<i64, _>("n")?, row.try_get::<i64, _>("max")?))
        })
    }

    pub async fn read_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<(i64, i64, Value)>, StoreError> {
        // The reader, as for the stream itself: an integration handler loads aggregates while
        // its transaction holds SQLite's one writer connection.
        let row: Option<(i64, i64, String)> = crate::on_reader!(&*self.backend, pool => {
            sqlx::query_as(
                "SELECT last_sequence, snapshot_version, payload FROM snapshots WHERE aggregate_type = $1 AND aggregate_id = $2",
            )
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_optional(pool)
            .await?
        });
        match row {
            None => Ok(None),
            Some((last, version, payload)) => Ok(Some((last, version, serde_json::from_str(&payload)?))),
        }
    }

    pub async fn checkpoint(&self, name: &str) -> Result<LogPosition, StoreError> {
        let row: Option<(i64, i64)> = crate::on_reader!(&*self.backend, pool => {
            sqlx::query_as("SELECT tx_id, position FROM checkpoints WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(transaction, position)| LogPosition { transaction, position }).unwrap_or_default())
    }

    /// Sets a checkpoint back to the start of the log.
    pub async fn reset_checkpoint(&self, name: &str) -> Result<(), StoreError> {
        on_backend!(&*self.backend, pool => {
            sqlx::query(RESET_CHECKPOINT).bind(name).bind(format_time(Utc::now())).execute(pool).await?;
        });
        Ok(())
    }

    /// Moves a checkpoint forward (never back: see `SAVE_CHECKPOINT`).
    pub async fn save_checkpoint(&self, name: &str, at: LogPosition) -> Result<(), StoreError> {
        on_backend!(&*self.backend, pool => {
            sqlx::query(SAVE_CHECKPOINT)
                .bind(name)
                .bind(at.transaction)
                .bind(at.position)
                .bind(format_time(Utc::now()))
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}

/// Events written by one INSERT at most.
const APPEND_CHUNK: usize = 1000;

/// Checkpoints only move forward, so a relay that lost its lead without noticing cannot
/// set the one that took over back.
pub(crate) const SAVE_CHECKPOINT: &str = "INSERT INTO checkpoints (name, tx_id, position, updated_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (name) DO UPDATE SET tx_id = excluded.tx_id, position = excluded.position, updated_at = excluded.updated_at \
     WHERE (checkpoints.tx_id, checkpoints.position) < (excluded.tx_id, excluded.position)";

/// Sets a checkpoint back (a rebuild starts from the beginning).
pub(crate) const RESET_CHECKPOINT: &str = "INSERT INTO checkpoints (name, tx_id, position, updated_at) VALUES ($1, 0, 0, $2) \
     ON CONFLICT (name) DO UPDATE SET tx_id = 0, position = 0, updated_at = excluded.updated_at";

struct StoredText {
    payload: String,
    metadata: String,
    recorded_at: String,
}

/// Hides the password of a database URL in error messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &credentials[..colon], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Decodes a row of `SELECT_EVENT` by column index (the log is read in bulk; looking columns
/// up by name for every row shows in a rebuild's profile).
macro_rules! decode_row {
    ($name:ident, $row:ty) => {
        fn $name(row: &$row) -> Result<RecordedEvent, StoreError> {
            let position: i64 = row.try_get(0)?;
            let event_id: &str = row.try_get(2)?;
            let payload: String = row.try_get(8)?;
            let metadata: String = row.try_get(9)?;
            let recorded_at: &str = row.try_get(10)?;
            let corrupt = |source| StoreError::Corrupt { position, source };
            Ok(RecordedEvent {
                log: LogPosition { transaction: row.try_get(1)?, position },
                event_id: Uuid::parse_str(event_id).map_err(|e| StoreError::CorruptField {
                    position,
                    field: "event_id",
                    reason: e.to_string(),
                })?,
                aggregate_type: row.try_get(3)?,
                aggregate_id: row.try_get(4)?,
                sequence: row.try_get(5)?,
                event_type: row.try_get(6)?,
                event_version: row.try_get(7)?,
                payload: RawValue::from_string(payload).map_err(corrupt)?,
                metadata: RawValue::from_string(metadata).map_err(corrupt)?,
                recorded_at: DateTime::parse_from_rfc3339(recorded_at)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| StoreError::CorruptField { position, field: "recorded_at", reason: e.to_string() })?,
                hash: row.try_get(11)?,
            })
        }
    };
}

decode_row!(decode_pg, sqlx::postgres::PgRow);
decode_row!(decode_sqlite, sqlx::sqlite::SqliteRow);

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn placeholders_per_backend() {
        assert_eq!(super::placeholders(true, 2, 2), "($1,$2),($3,$4)");
        assert_eq!(super::placeholders(false, 2, 2), "(?,?),(?,?)");
    }

    #[test]
    fn passwords_never_reach_error_messages() {
        assert_eq!(redact("postgres://agora:secret@db:5432/agora"), "postgres://agora:***@db:5432/agora");
        assert_eq!(redact("postgres://root@127.0.0.1/test"), "postgres://root@127.0.0.1/test");
        assert_eq!(redact("sqlite://./data.db"), "sqlite://./data.db");
    }
}
