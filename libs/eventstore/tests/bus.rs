//! The outbox relay and JetStream consumers against a real NATS JetStream server. Every
//! test has a stream and subject prefix of its own (`testing::nats`) and is skipped when
//! NATS (or, for the `postgres` variants, PostgreSQL) is not reachable.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agora_eventstore::jetstream::{self, Bus, IntegrationEvent, IntegrationHandler, headers};
use agora_eventstore::relay::{IntegrationMapper, Relay};
use agora_eventstore::testing::{self, eventually};
use agora_eventstore::{DbTx, RecordedEvent, Store, on_tx};
use async_trait::async_trait;
use bytes::Bytes;
use cqrs_es::EventStore;
use uuid::Uuid;

use common::*;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// Publishes every stored event as `test.v1.<aggregate id>` with the JSON payload as body;
/// fails every event while `fail` is set.
#[derive(Default)]
struct TestMapper {
    fail: AtomicBool,
}

fn integration_event(event: &RecordedEvent) -> IntegrationEvent {
    IntegrationEvent {
        id: event.event_id,
        event_type: format!("dk.agora.test.v1.{}", event.event_type),
        source: "agora/test".into(),
        subject: event.aggregate_id.clone(),
        nats_subject: format!("test.v1.{}", event.aggregate_id),
        time: event.recorded_at,
        sequence: event.sequence,
        position: event.position(),
        hash: event.hash.clone(),
        traceparent: event.metadata_str("traceparent"),
        data: Bytes::from(event.payload.to_string()),
    }
}

#[async_trait]
impl IntegrationMapper for TestMapper {
    async fn map(&self, event: &RecordedEvent) -> Result<Option<IntegrationEvent>, String> {
        if self.fail.load(Ordering::SeqCst) {
            return Err("the mapper failed on purpose".into());
        }
        Ok(Some(integration_event(event)))
    }
}

/// Appends `amounts` to counter `id` as single-event commits, every other one traced.
async fn append(store: &Store, id: &str, amounts: &[i64]) {
    let counters = counter_store(store, None);
    for (i, amount) in amounts.iter().enumerate() {
        let mut metadata = metadata("user:bus");
        if i % 2 == 0 {
            metadata.insert("traceparent".into(), TRACEPARENT.into());
        }
        let loaded = counters.load_aggregate(id).await.or_fail("load");
        counters.commit(vec![CounterEvent::Added { amount: *amount }], loaded, metadata).await.or_fail("commit");
    }
}

/// Publishes until `expected` events were read from the log (see `whole_log`).
async fn publish_all(relay: &Relay, expected: usize) -> usize {
    repeat_until(expected, "the relay to publish", || async { relay.publish_batch().await.or_fail("publish_batch") })
        .await
}

/// The next batch fails (once the appended events are visible to the relay).
async fn publish_fails(relay: &Relay, why: &str) {
    eventually(10, why, || async {
        match relay.publish_batch().await {
            Ok(0) => None,
            Ok(n) => panic!("{why}: published {n} events instead"),
            Err(_) => Some(()),
        }
    })
    .await;
}

async fn messages_in_stream(bus: &Bus) -> u64 {
    let stream = bus.jetstream.get_stream(&bus.config.stream).await.or_fail("get_stream");
    stream.get_info().await.or_fail("stream info").state.messages
}

/// Nats and a store, or `None` when a server is missing (the test is then skipped).
async fn setup(db: Option<Db>) -> Option<(Db, testing::TestBus)> {
    let db = db?;
    let bus = testing::nats().await?;
    Some((db, bus))
}

macro_rules! with_nats_on_both_backends {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let db = crate::common::Db::sqlite().await;
                let Some((db, bus)) = super::setup(Some(db)).await else { return };
                super::$scenario(db, bus.bus.clone()).await;
                drop(bus);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let db = crate::common::Db::postgres(8).await;
                let Some((db, bus)) = super::setup(db).await else { return };
                super::$scenario(db, bus.bus.clone()).await;
                drop(bus);
            }
        }
    };
}

// 9. Relay ------------------------------------------------------------------------------

/// Publishes the counters' events only, and says so; remembers what it was handed.
#[derive(Default)]
struct CountersOnly {
    others_with_payload: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl IntegrationMapper for CountersOnly {
    async fn map(&self, event: &RecordedEvent) -> Result<Option<IntegrationEvent>, String> {
        if event.aggregate_type == COUNTER {
            return Ok(Some(integration_event(event)));
        }
        if event.payload.get() != "null" {
            self.others_with_payload.lock().map_err(|e| e.to_string())?.push(event.event_type.clone());
        }
        Ok(None)
    }

    fn aggregates(&self) -> Option<Vec<&'static str>> {
        Some(vec![COUNTER])
    }
}

with_nats_on_both_backends!(relay_reads_past_what_it_does_not_publish);

/// A relay whose mapper names what it publishes reads the rest of the log without payloads
/// (a response's receipt adds three queue events nobody outside hears of), publishes what it
/// should, and its checkpoint moves past the rest.
async fn relay_reads_past_what_it_does_not_publish(db: Db, bus: Bus) {
    let store = db.store.clone();
    let step = |id: &str, sequence: i64| agora_eventstore::NewEvent {
        aggregate_type: "step".into(),
        aggregate_id: id.into(),
        sequence,
        event_type: "StepDone".into(),
        event_version: "1".into(),
        payload: serde_json::value::to_raw_value(&serde_json::json!({ "recipient": "someone@example.org" }))
            .or_fail("payload"),
        metadata: serde_json::json!({}),
    };
    store.append(&[step("receipt/1", 1)], None).await.or_fail("a step");
    append(&store, "c1", &[1, 2]).await;
    store.append(&[step("receipt/1", 2), step("receipt/2", 1)], None).await.or_fail("more steps");
    let events = whole_log(&store, 5).await;

    let mapper = Arc::new(CountersOnly::default());
    let relay = Relay::new(store.clone(), bus.clone(), mapper.clone());
    assert_eq!(publish_all(&relay, 5).await, 5);
    assert_eq!(messages_in_stream(&bus).await, 2, "the counter's two events");
    let stream = bus.jetstream.get_stream(&bus.config.stream).await.or_fail("get_stream");
    let counters: Vec<&RecordedEvent> = events.iter().filter(|e| e.aggregate_type == COUNTER).collect();
    for (i, event) in counters.iter().enumerate() {
        let message = stream.get_raw_message(i as u64 + 1).await.or_fail("get_raw_message");
        assert_eq!(message.payload, Bytes::from(event.payload.to_string()), "published whole");
    }
    assert_eq!(*mapper.others_with_payload.lock().or_fail("seen"), Vec::<String>::new());
    let checkpoint_name = format!("relay:{}", bus.config.stream);
    assert_eq!(store.checkpoint(&checkpoint_name).await.or_fail("checkpoint"), events[4].log, "past the last step");
    assert_eq!(relay.publish_batch().await.or_fail("again"), 0);
}

with_nats_on_both_backends!(relay_publishes_every_event_once);

async fn relay_publishes_every_event_once(db: Db, bus: Bus) {
    let store = db.store.clone();
    append(&store, "r1", &[1, 2, 3, 4]).await;
    append(&store, "r2", &[5, 6]).await;
    append(&store, "r1", &[7]).await;
    let events = whole_log(&store, 7).await;

    let relay = Relay::new(store.clone(), bus.clone(), Arc::new(TestMapper::default()));
    assert_eq!(publish_all(&relay, 7).await, 7);
    let checkpoint_name = format!("relay:{}", bus.config.stream);
    assert_eq!(store.checkpoint(&checkpoint_name).await.or_fail("checkpoint"), events[6].log);
    assert_eq!(messages_in_stream(&bus).await, 7);

    // In log order, once each, with the CloudEvents and trace headers.
    let stream = bus.jetstream.get_stream(&bus.config.stream).await.or_fail("get_stream");
    for (i, event) in events.iter().enumerate() {
        let message = stream.get_raw_message(i as u64 + 1).await.or_fail("get_raw_message");
        let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_string());
        let id = event.event_id.to_string();
        assert_eq!(message.subject.as_str(), format!("{}.test.v1.{}", bus.config.subject_prefix, event.aggregate_id));
        assert_eq!(header(headers::MSG_ID).as_deref(), Some(id.as_str()), "message {}", i + 1);
        assert_eq!(header(headers::ID).as_deref(), Some(id.as_str()));
        assert_eq!(header(headers::TYPE), Some(format!("dk.agora.test.v1.{}", event.event_type)));
        assert_eq!(header(headers::SEQUENCE), Some(event.sequence.to_string()));
        assert_eq!(header(headers::POSITION), Some(event.position().to_string()));
        assert_eq!(header(headers::HASH).as_deref(), Some(event.hash.as_str()));
        assert_eq!(header(headers::TRACEPARENT), event.metadata_str("traceparent"));
        assert_eq!(message.payload, Bytes::from(event.payload.to_string()));
        // What a subscriber decodes is what the mapper produced.
        let decoded =
            IntegrationEvent::from_message(&event_subject(event), Some(&message.headers), message.payload.clone())
                .or_fail("from_message");
        let mut expected = integration_event(event);
        expected.time = decoded.time; // the wire carries microseconds
        assert_eq!(decoded, expected);
    }
    assert!(events.iter().any(|e| e.metadata_str("traceparent").is_some()));
    assert!(events.iter().any(|e| e.metadata_str("traceparent").is_none()));

    // Starting over from the beginning publishes again, but JetStream drops the repeats.
    store.reset_checkpoint(&checkpoint_name).await.or_fail("reset checkpoint");
    assert_eq!(publish_all(&relay, 7).await, 7);
    assert_eq!(messages_in_stream(&bus).await, 7, "repeats are de-duplicated by Nats-Msg-Id");
    let progress = std::sync::Mutex::new(Vec::new());
    let republished = relay.republish(1, |n| progress.lock().or_fail("progress").push(n)).await;
    assert_eq!(republished.or_fail("republish"), 7, "all events are visible by now");
    assert_eq!(progress.into_inner().or_fail("progress").last(), Some(&7), "progress reaches the total");
    assert_eq!(messages_in_stream(&bus).await, 7, "republishing adds nothing");

    // New events continue the stream.
    append(&store, "r2", &[8]).await;
    assert_eq!(publish_all(&relay, 1).await, 1);
    assert_eq!(messages_in_stream(&bus).await, 8);
}

fn event_subject(event: &RecordedEvent) -> String {
    format!("test.v1.{}", event.aggregate_id)
}

// 10. Durable consumer ------------------------------------------------------------------

const CONSUMED_TABLE: &str = "CREATE TABLE IF NOT EXISTS test_consumed (event_id TEXT NOT NULL, subject TEXT NOT NULL, sequence BIGINT NOT NULL)";

struct RecordConsumed;

#[async_trait]
impl IntegrationHandler for RecordConsumed {
    fn name(&self) -> &str {
        "test-consumer"
    }

    fn filter(&self) -> &str {
        "test.>"
    }

    async fn handle(&self, tx: &mut DbTx, event: &IntegrationEvent) -> Result<(), String> {
        on_tx!(tx, conn => {
            sqlx::query("INSERT INTO test_consumed (event_id, subject, sequence) VALUES ($1, $2, $3)")
                .bind(event.id.to_string())
                .bind(&event.subject)
                .bind(event.sequence)
                .execute(&mut **conn)
                .await
                .map_err(|e| e.to_string())?;
        });
        Ok(())
    }
}

/// Records every event but those of one stream, which it cannot handle.
struct FailsOn(&'static str);

#[async_trait]
impl IntegrationHandler for FailsOn {
    fn name(&self) -> &str {
        "test-consumer"
    }

    fn filter(&self) -> &str {
        "test.>"
    }

    async fn handle(&self, tx: &mut DbTx, event: &IntegrationEvent) -> Result<(), String> {
        if event.subject == self.0 {
            return Err(format!("cannot handle {}", self.0));
        }
        RecordConsumed.handle(tx, event).await
    }
}

type Consumer = (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), jetstream::BusError>>);

fn start_consumer(bus: &Bus, store: &Store) -> Consumer {
    start_handler(bus, store, Arc::new(RecordConsumed))
}

fn start_handler(bus: &Bus, store: &Store, handler: Arc<dyn IntegrationHandler>) -> Consumer {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (bus, store) = (bus.clone(), store.clone());
    let task = tokio::spawn(async move {
        jetstream::consume(&bus, store, handler, async {
            let _ = stopped.await;
        })
        .await
    });
    (stop, task)
}

async fn stop_consumer((stop, task): Consumer) {
    let _ = stop.send(());
    task.await.or_fail("consumer task").or_fail("consumer");
}

async fn wait_for_rows(store: &Store, expected: i64) {
    eventually(10, &format!("{expected} consumed events"), || async {
        (scalar(store, "SELECT COUNT(*) FROM test_consumed").await >= expected).then_some(())
    })
    .await;
}

with_nats_on_both_backends!(consumer_handles_every_event_once);

async fn consumer_handles_every_event_once(db: Db, bus: Bus) {
    let store = db.store.clone();
    store.execute_ddl(&[CONSUMED_TABLE]).await.or_fail("creating test_consumed");
    let relay = Relay::new(store.clone(), bus.clone(), Arc::new(TestMapper::default()));

    append(&store, "k1", &[1, 2, 3]).await;
    append(&store, "k2", &[4, 5]).await;
    assert_eq!(publish_all(&relay, 5).await, 5);
    let consumer = start_consumer(&bus, &store);
    wait_for_rows(&store, 5).await;
    stop_consumer(consumer).await;

    // While it is down more events arrive, and some are published twice.
    append(&store, "k1", &[6, 7]).await;
    append(&store, "k3", &[8]).await;
    assert_eq!(publish_all(&relay, 3).await, 3);
    relay.republish(1, |_| {}).await.or_fail("republish");

    // A new instance with the same durable name picks up where the first stopped.
    let consumer = start_consumer(&bus, &store);
    wait_for_rows(&store, 8).await;
    // One more while it runs.
    append(&store, "k2", &[9]).await;
    assert_eq!(publish_all(&relay, 1).await, 1);
    wait_for_rows(&store, 9).await;
    stop_consumer(consumer).await;

    let consumed = strings(&store, "SELECT event_id FROM test_consumed").await;
    assert_eq!(consumed.len(), 9, "every event handled exactly once: {consumed:?}");
    let consumed: HashSet<Uuid> = consumed.iter().map(|id| Uuid::parse_str(id).or_fail("event id")).collect();
    let stored: HashSet<Uuid> = whole_log(&store, 9).await.into_iter().map(|e| e.event_id).collect();
    assert_eq!(consumed, stored);
    assert_eq!(scalar(&store, "SELECT COUNT(*) FROM handled_events WHERE consumer = 'test-consumer'").await, 9);
    // Per subject, events were handled in stream order.
    for subject in ["k1", "k2", "k3"] {
        let sql = format!("SELECT CAST(sequence AS TEXT) FROM test_consumed WHERE subject = '{subject}'");
        let sequences: Vec<i64> = strings(&store, &sql).await.iter().map(|s| s.parse().or_fail("sequence")).collect();
        let mut sorted = sequences.clone();
        sorted.sort_unstable();
        assert_eq!(sequences, sorted, "{subject} handled out of order");
    }
}

with_nats_on_both_backends!(an_event_that_cannot_be_handled_holds_up_only_itself);

/// Events that arrive together are handled in one transaction; when one of them fails, the
/// others are still handled (one by one), and the failing one is left for redelivery.
async fn an_event_that_cannot_be_handled_holds_up_only_itself(db: Db, bus: Bus) {
    let store = db.store.clone();
    store.execute_ddl(&[CONSUMED_TABLE]).await.or_fail("creating test_consumed");
    let relay = Relay::new(store.clone(), bus.clone(), Arc::new(TestMapper::default()));
    append(&store, "k1", &[1, 2]).await;
    append(&store, "bad", &[3]).await;
    append(&store, "k2", &[4, 5]).await;
    assert_eq!(publish_all(&relay, 5).await, 5);
    let consumer = start_handler(&bus, &store, Arc::new(FailsOn("bad")));
    wait_for_rows(&store, 4).await;
    stop_consumer(consumer).await;
    let subjects = strings(&store, "SELECT subject FROM test_consumed ORDER BY subject").await;
    assert_eq!(subjects, ["k1", "k1", "k2", "k2"]);
    assert_eq!(scalar(&store, "SELECT COUNT(*) FROM handled_events WHERE consumer = 'test-consumer'").await, 4);
}

// 11. The relay resumes after publishing failed --------------------------------------

/// Two replicas' relays on PostgreSQL: one publishes, the other waits for the lead without
/// holding a snapshot (which would keep PostgreSQL from pruning any updated row, in every
/// table, for as long as it waits), and takes over when the first stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_relay_holds_no_snapshot_and_takes_over() {
    let Some((db, bus)) = setup(Db::postgres(8).await).await else { return };
    let bus = bus.bus.clone();
    let replica = db.another_store().await;
    let (stop_first, first_stopped) = tokio::sync::oneshot::channel::<()>();
    let (stop_second, second_stopped) = tokio::sync::oneshot::channel::<()>();
    let first = Relay::new(db.store.clone(), bus.clone(), Arc::new(TestMapper::default()));
    let first = tokio::spawn(first.run(async move { first_stopped.await.unwrap_or_default() }));
    append(&db.store, "lead", &[1, 2]).await;
    eventually(30, "the first relay to publish", || async { (messages_in_stream(&bus).await == 2).then_some(()) })
        .await;

    let second = Relay::new(replica.clone(), bus.clone(), Arc::new(TestMapper::default()));
    let second = tokio::spawn(second.run(async move { second_stopped.await.unwrap_or_default() }));
    // The second asks for the lead again and again; no session waits in a lock meanwhile.
    let lock_sessions = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                         AND query LIKE 'SELECT pg_%advisory_lock(%' AND query NOT LIKE '%pg_stat_activity%'";
    eventually(30, "the second relay to ask for the lead", || async {
        (scalar(&db.store, &format!("{lock_sessions} AND query LIKE '%try%'")).await > 0).then_some(())
    })
    .await;
    let waiting = scalar(
        &db.store,
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' \
         AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
    )
    .await;
    assert_eq!(waiting, 0, "a relay waits inside pg_advisory_lock, holding its snapshot");

    let _ = stop_first.send(());
    first.await.or_fail("the first relay stopped");
    append(&replica, "lead", &[3]).await;
    eventually(30, "the second relay to take over", || async { (messages_in_stream(&bus).await == 3).then_some(()) })
        .await;
    let _ = stop_second.send(());
    second.await.or_fail("the second relay stopped");
}

with_nats_on_both_backends!(relay_resumes_after_nats_errors);

async fn relay_resumes_after_nats_errors(db: Db, bus: Bus) {
    let store = db.store.clone();
    let mapper = Arc::new(TestMapper::default());
    let relay = Relay::new(store.clone(), bus.clone(), mapper.clone());
    let checkpoint_name = format!("relay:{}", bus.config.stream);
    append(&store, "f1", &[1, 2, 3]).await;
    assert_eq!(publish_all(&relay, 3).await, 3);
    let published_up_to = store.checkpoint(&checkpoint_name).await.or_fail("checkpoint");

    // JetStream loses the stream: nothing takes the events, so publishing fails.
    bus.delete_stream().await.or_fail("delete_stream");
    append(&store, "f1", &[4]).await;
    append(&store, "f2", &[5, 6]).await;
    publish_fails(&relay, "publishing without a stream must fail").await;
    assert!(relay.publish_batch().await.is_err(), "and keep failing");
    assert_eq!(
        store.checkpoint(&checkpoint_name).await.or_fail("checkpoint"),
        published_up_to,
        "a failed batch does not move the checkpoint"
    );

    // Back again: everything pending is published, nothing else.
    bus.ensure_stream().await.or_fail("ensure_stream");
    assert_eq!(publish_all(&relay, 3).await, 3);
    assert_eq!(messages_in_stream(&bus).await, 3);
    let events = whole_log(&store, 6).await;
    let stream = bus.jetstream.get_stream(&bus.config.stream).await.or_fail("get_stream");
    let mut published = Vec::new();
    for sequence in 1..=3u64 {
        let message = stream.get_raw_message(sequence).await.or_fail("get_raw_message");
        published.push(message.headers.get(headers::ID).map(|v| v.as_str().to_string()).or_fail("ce-id"));
    }
    let pending: Vec<String> = events[3..].iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(published, pending);
    assert_eq!(store.checkpoint(&checkpoint_name).await.or_fail("checkpoint"), events[5].log);

    // A mapper that fails holds the relay back the same way, and it resumes after.
    append(&store, "f1", &[7, 8]).await;
    mapper.fail.store(true, Ordering::SeqCst);
    publish_fails(&relay, "a failing mapper fails the batch").await;
    assert_eq!(store.checkpoint(&checkpoint_name).await.or_fail("checkpoint"), events[5].log);
    mapper.fail.store(false, Ordering::SeqCst);
    assert_eq!(publish_all(&relay, 2).await, 2);
    assert_eq!(messages_in_stream(&bus).await, 5);
}

/// A NATS server started without JetStream is a mistake in the deployment, not a cluster still
/// electing its leader: the start says so after a short grace instead of waiting out the whole
/// start deadline (100 s, which this test's own limit is well under).
#[tokio::test]
async fn a_server_without_jetstream_is_named_as_the_reason_a_start_fails() {
    let Ok(server) = std::env::var("AGORA_NATS_SERVER_BIN") else {
        testing::unavailable("nats-server (AGORA_NATS_SERVER_BIN; scripts/test installs it)", &"not set");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let _server = tokio::process::Command::new(&server)
        .args(["--addr", "127.0.0.1", "--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nats-server starts");
    let url = format!("nats://127.0.0.1:{port}");
    let config = jetstream::BusConfig::new(&url, &format!("agora_test_{}", Uuid::now_v7().simple()));
    assert_eq!(config.start_deadline, std::time::Duration::from_secs(100));
    let connecting = testing::poll_until(std::time::Duration::from_millis(100), 60, || async {
        match Bus::connect(config.clone()).await {
            Err(jetstream::BusError::Connect { .. }) => None, // the server is still starting
            other => Some(other),
        }
    });
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(60), connecting)
        .await
        .ok()
        .flatten()
        .expect("the start gives up within a minute, not after the 100 s deadline");
    let error = outcome.err().expect("no stream without JetStream").to_string();
    assert!(error.contains(&url) && error.contains("JetStream enabled"), "the error names the cause: {error}");
}
