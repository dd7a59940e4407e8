//! Shared fixtures for the event store's integration tests: a tiny counter aggregate, a
//! store on either backend, and small SQL helpers that work on both.
//!
//! Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use agora_eventstore::testing::{self, TestDatabase};
use agora_eventstore::{AggregateStore, EventContext, EventRepository, Store};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::EventUpcaster;
use cqrs_es::{Aggregate, AggregateError, DomainEvent, EventEnvelope, EventStore};
use serde::{Deserialize, Serialize};

/// The aggregate type every test stream is stored under.
pub const COUNTER: &str = "counter";

/// A counter: keeps every amount so that a misapplied, doubled or reordered event shows.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    pub total: i64,
    pub amounts: Vec<i64>,
    pub label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CounterEvent {
    Added { amount: i64 },
    Labelled { label: String },
}

/// The current event schema version; [`OldCounterEvent`] is version 1.
pub const EVENT_VERSION: &str = "2.0";

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> String {
        match self {
            CounterEvent::Added { .. } => "Added".into(),
            CounterEvent::Labelled { .. } => "Labelled".into(),
        }
    }

    fn event_version(&self) -> String {
        EVENT_VERSION.into()
    }
}

#[derive(Debug, Clone)]
pub enum CounterCommand {
    Add(Vec<i64>),
    Label(String),
}

#[derive(Debug)]
pub struct CounterError(pub String);

impl std::fmt::Display for CounterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CounterError {}

impl Aggregate for Counter {
    const TYPE: &'static str = COUNTER;
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = CounterError;
    type Services = ();

    async fn handle(&mut self, command: CounterCommand, _: &(), sink: &EventSink<Self>) -> Result<(), CounterError> {
        match command {
            CounterCommand::Add(amounts) => {
                if amounts.contains(&0) {
                    return Err(CounterError("adding zero changes nothing".into()));
                }
                for amount in amounts {
                    sink.write(CounterEvent::Added { amount }, self).await;
                }
            }
            CounterCommand::Label(label) => sink.write(CounterEvent::Labelled { label }, self).await,
        }
        Ok(())
    }

    fn apply(&mut self, event: CounterEvent) {
        match event {
            CounterEvent::Added { amount } => {
                self.total += amount;
                self.amounts.push(amount);
            }
            CounterEvent::Labelled { label } => self.label = Some(label),
        }
    }
}

/// The same aggregate type as it was written by an older release: `Added` had `value`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct OldCounter {
    pub total: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OldCounterEvent {
    Added { value: i64 },
}

impl DomainEvent for OldCounterEvent {
    fn event_type(&self) -> String {
        "Added".into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

impl Aggregate for OldCounter {
    const TYPE: &'static str = COUNTER;
    type Command = i64;
    type Event = OldCounterEvent;
    type Error = CounterError;
    type Services = ();

    async fn handle(&mut self, value: i64, _: &(), sink: &EventSink<Self>) -> Result<(), CounterError> {
        sink.write(OldCounterEvent::Added { value }, self).await;
        Ok(())
    }

    fn apply(&mut self, event: OldCounterEvent) {
        let OldCounterEvent::Added { value } = event;
        self.total += value;
    }
}

pub fn counter_store(store: &Store, snapshot_every: Option<usize>) -> AggregateStore<Counter> {
    EventRepository::aggregate_store::<Counter>(store.clone(), snapshot_every, Vec::new())
}

pub fn counter_store_with(store: &Store, upcasters: Vec<Box<dyn EventUpcaster>>) -> AggregateStore<Counter> {
    EventRepository::aggregate_store::<Counter>(store.clone(), None, upcasters)
}

pub fn metadata(actor: &str) -> HashMap<String, String> {
    EventContext::for_actor(actor).to_metadata()
}

/// Load, decide on a copy, commit: the way the services run commands. (Deciding on the
/// loaded aggregate itself would apply the events to it twice when a snapshot is taken,
/// because cqrs-es folds the committed events into the loaded aggregate once more.)
pub async fn execute<A: Aggregate<Services = ()> + Clone>(
    aggregates: &AggregateStore<A>,
    id: &str,
    command: A::Command,
    metadata: HashMap<String, String>,
) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
    let loaded = aggregates.load_aggregate(id).await?;
    let mut decided = loaded.aggregate.clone();
    let sink = EventSink::default();
    decided.handle(command, &(), &sink).await.map_err(AggregateError::UserError)?;
    let events = sink.collect().await;
    aggregates.commit(events, loaded, metadata).await
}

/// Adds amounts to a counter, panicking on any error.
pub async fn add(aggregates: &AggregateStore<Counter>, id: &str, amounts: &[i64]) {
    if let Err(e) = execute(aggregates, id, CounterCommand::Add(amounts.to_vec()), metadata("user:test")).await {
        panic!("adding {amounts:?} to {id}: {e}");
    }
}

pub async fn load(aggregates: &AggregateStore<Counter>, id: &str) -> Counter {
    match aggregates.load_aggregate(id).await {
        Ok(loaded) => loaded.aggregate,
        Err(e) => panic!("loading {id}: {e}"),
    }
}

/// Unwraps with the error in the message (tests state what failed).
pub trait Expect<T> {
    fn or_fail(self, what: &str) -> T;
}

impl<T, E: std::fmt::Display> Expect<T> for Result<T, E> {
    fn or_fail(self, what: &str) -> T {
        match self {
            Ok(value) => value,
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

impl<T> Expect<T> for Option<T> {
    fn or_fail(self, what: &str) -> T {
        match self {
            Some(value) => value,
            None => panic!("{what}: nothing there"),
        }
    }
}

enum Guard {
    Sqlite { _dir: tempfile::TempDir, path: PathBuf },
    Postgres(Box<TestDatabase>),
}

/// A store of the test's own on one backend, removed when dropped.
pub struct Db {
    pub store: Store,
    guard: Guard,
}

impl Db {
    pub async fn sqlite() -> Db {
        let (store, dir) = testing::sqlite().await;
        let path = dir.path().join("events.db");
        Db { store, guard: Guard::Sqlite { _dir: dir, path } }
    }

    /// `None` when PostgreSQL is not reachable (the test is then skipped, except under CI).
    pub async fn postgres(max_connections: u32) -> Option<Db> {
        let database = testing::postgres(max_connections).await?;
        Some(Db { store: database.store.clone(), guard: Guard::Postgres(Box::new(database)) })
    }

    /// A second, independent store on the same database: another replica of the service.
    pub async fn another_store(&self) -> Store {
        match &self.guard {
            Guard::Sqlite { path, .. } => Store::sqlite(path).await.or_fail("opening a second SQLite store"),
            Guard::Postgres(database) => database.another_store(8).await,
        }
    }
}

/// Generates `<name>::sqlite` and `<name>::postgres` tests running `async fn <name>(Db)`;
/// an optional second argument is the PostgreSQL pool size.
#[allow(unused_macros)] // not every test binary uses it
macro_rules! on_both_backends {
    ($scenario:ident) => {
        on_both_backends!($scenario, 8);
    };
    ($scenario:ident, $connections:expr) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$scenario(crate::common::Db::sqlite().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(db) = crate::common::Db::postgres($connections).await else { return };
                super::$scenario(db).await;
            }
        }
    };
}

/// One number from a query, on either backend.
pub async fn scalar(store: &Store, sql: &str) -> i64 {
    let result: Result<i64, sqlx::Error> =
        agora_eventstore::on_backend!(store.backend(), pool => sqlx::query_scalar(sql).fetch_one(pool).await);
    result.or_fail(sql)
}

/// Runs a statement with text parameters on either backend; returns the rows affected.
pub async fn execute_sql(store: &Store, sql: &str, params: &[&str]) -> u64 {
    let result: Result<u64, sqlx::Error> = agora_eventstore::on_backend!(store.backend(), pool => {
        let mut query = sqlx::query(sql);
        for param in params {
            query = query.bind(*param);
        }
        query.execute(pool).await.map(|done| done.rows_affected())
    });
    result.or_fail(sql)
}

/// Text values of the first column, on either backend.
pub async fn strings(store: &Store, sql: &str) -> Vec<String> {
    let result: Result<Vec<String>, sqlx::Error> =
        agora_eventstore::on_backend!(store.backend(), pool => sqlx::query_scalar(sql).fetch_all(pool).await);
    result.or_fail(sql)
}

/// The whole log once it holds `expected` events. On PostgreSQL `read_log` shows an event
/// only after every older write transaction in the cluster has ended (other tests' too), so
/// a test that just appended waits for the log rather than expecting it at once.
pub async fn whole_log(store: &Store, expected: usize) -> Vec<agora_eventstore::RecordedEvent> {
    testing::eventually(10, &format!("the log to show {expected} events"), || async {
        let mut events = Vec::new();
        let mut after = agora_eventstore::LogPosition::START;
        loop {
            let batch = store.read_log(after, 1000).await.or_fail("read_log");
            let Some(last) = batch.last() else { break };
            after = last.log;
            events.extend(batch);
        }
        assert!(events.len() <= expected, "the log holds {} events, more than the {expected} written", events.len());
        (events.len() == expected).then_some(events)
    })
    .await
}

/// Calls `step` (which returns how many events it handled) until `expected` were handled
/// in total, for the same reason as [`whole_log`]; more than `expected` fails at once.
pub async fn repeat_until<F, Fut>(expected: usize, what: &str, mut step: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let total = std::sync::atomic::AtomicUsize::new(0);
    testing::eventually(10, what, || {
        let next = step();
        let total = &total;
        async move {
            let n = next.await;
            let sum = total.fetch_add(n, std::sync::atomic::Ordering::SeqCst) + n;
            assert!(sum <= expected, "{what}: handled {sum}, more than {expected}");
            (sum == expected).then_some(())
        }
    })
    .await;
    total.into_inner()
}
