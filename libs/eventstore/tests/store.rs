//! The event store's behaviour, the same on PostgreSQL and SQLite: every scenario is an
//! `async fn scenario(db: Db)` run once per backend (`<scenario>::sqlite`,
//! `<scenario>::postgres`; the latter is skipped when PostgreSQL is not reachable).

#[macro_use]
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agora_eventstore::audit::{self, Finding, Problem};
use agora_eventstore::consumer::{Projection, ProjectionError, ProjectionRunner};
use agora_eventstore::jetstream::{IntegrationEvent, IntegrationHandler, handle_batch, handle_once};
use agora_eventstore::{DbTx, EventContext, EventRepository, LogPosition, RecordedEvent, Store, on_backend, on_tx};
use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use cqrs_es::persist::SemanticVersionEventUpcaster;
use cqrs_es::{AggregateError, EventStore};
use serde_json::{Value, json};
use uuid::Uuid;

use common::*;

// 1. Append and load --------------------------------------------------------------------

on_both_backends!(append_and_load);

async fn append_and_load(db: Db) {
    let store = db.store.clone();
    let counters = counter_store(&store, None);
    let correlation = Uuid::now_v7();
    let context = EventContext::for_actor("user:x").with_command("Add").with_correlation(correlation);
    let first_metadata = context.to_metadata();

    execute(&counters, "c-1", CounterCommand::Add(vec![3, 4]), first_metadata.clone()).await.or_fail("first command");
    execute(&counters, "c-1", CounterCommand::Label("first".into()), metadata("user:y"))
        .await
        .or_fail("second command");
    execute(&counters, "c-1", CounterCommand::Add(vec![-2]), first_metadata.clone()).await.or_fail("third command");
    // Another stream in between, which must not leak into c-1.
    add(&counters, "c-2", &[100]).await;

    assert_eq!(
        load(&counters, "c-1").await,
        Counter { total: 5, amounts: vec![3, 4, -2], label: Some("first".into()) }
    );
    assert_eq!(load(&counters, "c-2").await.amounts, vec![100]);
    assert_eq!(load(&counters, "never-written").await, Counter::default());

    // A rejected command writes nothing.
    let rejected = execute(&counters, "c-1", CounterCommand::Add(vec![1, 0]), metadata("user:x")).await;
    assert!(matches!(rejected, Err(AggregateError::UserError(_))), "adding zero must be refused");

    let events = store.read_stream(COUNTER, "c-1", 0).await.or_fail("read_stream");
    assert_eq!(events.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(
        events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(),
        vec!["Added", "Added", "Labelled", "Added"]
    );
    assert!(events.iter().all(|e| e.aggregate_type == COUNTER && e.aggregate_id == "c-1"));
    assert!(events.iter().all(|e| e.event_version == EVENT_VERSION));
    assert_eq!(events[0].payload_value(), json!({"Added": {"amount": 3}}));
    assert_eq!(events[2].payload_value(), json!({"Labelled": {"label": "first"}}));

    // Metadata: who, in answer to what, caused by what.
    let correlation = correlation.to_string();
    for event in [&events[0], &events[1], &events[3]] {
        assert_eq!(event.metadata_str("actor").as_deref(), Some("user:x"), "event {}", event.sequence);
        assert_eq!(event.metadata_str("correlation_id").as_deref(), Some(correlation.as_str()));
        assert_eq!(event.metadata_str("causation_id").as_deref(), Some(correlation.as_str()));
        assert_eq!(event.metadata_str("command").as_deref(), Some("Add"));
    }
    assert_eq!(events[2].metadata_str("actor").as_deref(), Some("user:y"));
    assert_ne!(events[2].metadata_str("correlation_id").as_deref(), Some(correlation.as_str()));
    // cqrs-es hands back exactly the metadata it was given.
    let envelopes = counters.load_events("c-1").await.or_fail("load_events");
    assert_eq!(envelopes.len(), 4);
    assert_eq!(envelopes[0].metadata, first_metadata);

    // Ids are UUIDv7 and unique; time and hash are set.
    assert!(events.iter().all(|e| e.event_id.get_version_num() == 7), "event ids must be UUIDv7");
    let ids: HashSet<Uuid> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), events.len(), "event ids must be distinct");
    let now = Utc::now();
    for event in &events {
        assert_ne!(event.recorded_at, chrono::DateTime::<Utc>::default(), "recorded_at must be set");
        assert!((now - event.recorded_at).num_hours().abs() < 1, "recorded_at {} is not about now", event.recorded_at);
        assert_eq!(event.hash.len(), 64, "hex SHA-256 expected, got {:?}", event.hash);
    }
    let hashes: HashSet<&str> = events.iter().map(|e| e.hash.as_str()).collect();
    assert_eq!(hashes.len(), events.len());
    assert!(events.windows(2).all(|w| w[0].log < w[1].log), "a stream's events are in log order");

    // Reading part of a stream.
    let tail = store.read_stream(COUNTER, "c-1", 2).await.or_fail("read_stream after 2");
    assert_eq!(tail.iter().map(|e| e.event_id).collect::<Vec<_>>(), vec![events[2].event_id, events[3].event_id]);

    // The global log holds the same events, in the order they were written.
    let log = whole_log(&store, 5).await;
    let in_log: Vec<Uuid> = log.iter().filter(|e| e.aggregate_id == "c-1").map(|e| e.event_id).collect();
    assert_eq!(in_log, events.iter().map(|e| e.event_id).collect::<Vec<_>>());
    assert_eq!(log[4].aggregate_id, "c-2");
    assert!(log.windows(2).all(|w| w[0].log < w[1].log));
    assert_eq!(store.log_extent().await.or_fail("log_extent").0, 5);
    // Paging through the log returns the same events.
    let mut paged = Vec::new();
    let mut after = LogPosition::START;
    loop {
        let page = store.read_log(after, 2).await.or_fail("read_log page");
        let Some(last) = page.last() else { break };
        after = last.log;
        paged.extend(page.into_iter().map(|e| e.event_id));
    }
    assert_eq!(paged, log.iter().map(|e| e.event_id).collect::<Vec<_>>());
}

// 2. Optimistic concurrency -------------------------------------------------------------

on_both_backends!(optimistic_concurrency);

fn added(amounts: &[i64]) -> Vec<CounterEvent> {
    amounts.iter().map(|&amount| CounterEvent::Added { amount }).collect()
}

async fn optimistic_concurrency(db: Db) {
    let counters = Arc::new(counter_store(&db.store, None));
    add(&counters, "c", &[1]).await;
    let mut expected = vec![1];

    // One after the other: the second writer decided on a stale version.
    let first = counters.load_aggregate("c").await.or_fail("load first");
    let second = counters.load_aggregate("c").await.or_fail("load second");
    assert_eq!((first.current_sequence, second.current_sequence), (1, 1));
    counters.commit(added(&[10, 20, 30]), first, metadata("user:a")).await.or_fail("first commit");
    expected.extend([10, 20, 30]);
    let stale = counters.commit(added(&[-1, -2]), second, metadata("user:b")).await;
    assert!(matches!(stale, Err(AggregateError::AggregateConflict)), "expected a conflict, got {stale:?}");
    assert_eq!(load(&counters, "c").await.amounts, expected);

    // Truly concurrent, several rounds: exactly one of two commits wins, whole.
    for round in 0..10i64 {
        let a = counters.load_aggregate("c").await.or_fail("load a");
        let b = counters.load_aggregate("c").await.or_fail("load b");
        let a_events = [1000 + round, 2000 + round, 3000 + round];
        let b_events = [-1000 - round, -2000 - round];
        let (ra, rb) = tokio::join!(
            tokio::spawn({
                let counters = counters.clone();
                async move { counters.commit(added(&a_events), a, metadata("user:a")).await }
            }),
            tokio::spawn({
                let counters = counters.clone();
                async move { counters.commit(added(&b_events), b, metadata("user:b")).await }
            }),
        );
        let (ra, rb) = (ra.or_fail("task a"), rb.or_fail("task b"));
        match (&ra, &rb) {
            (Ok(_), Err(AggregateError::AggregateConflict)) => expected.extend(a_events),
            (Err(AggregateError::AggregateConflict), Ok(_)) => expected.extend(b_events),
            _ => panic!("round {round}: expected exactly one winner and one conflict, got {ra:?} and {rb:?}"),
        }
        let stream = db.store.read_stream(COUNTER, "c", 0).await.or_fail("read_stream");
        assert_eq!(stream.len(), expected.len(), "round {round}: only the winner's events are stored");
        assert!(stream.iter().enumerate().all(|(i, e)| e.sequence == i as i64 + 1), "sequences stay contiguous");
    }
    assert_eq!(load(&counters, "c").await.amounts, expected);
    let report = audit::verify(&db.store).await.or_fail("verify");
    assert!(report.intact(), "{:?}", report.findings);
    assert_eq!(report.events, expected.len() as u64);
}

// 3. Global order under concurrent writers ---------------------------------------------

on_both_backends!(global_order_with_concurrent_writers, 16);

async fn global_order_with_concurrent_writers(db: Db) {
    const WRITERS: usize = 8;
    const EVENTS_PER_WRITER: usize = 200;
    const STREAMS_PER_WRITER: usize = 4;
    const TOTAL: usize = WRITERS * EVENTS_PER_WRITER;

    let store = db.store.clone();
    let writing = Arc::new(AtomicBool::new(true));
    let reader = tokio::spawn({
        let store = store.clone();
        let writing = writing.clone();
        async move {
            let mut after = LogPosition::START;
            let mut seen = Vec::with_capacity(TOTAL);
            let mut batches_while_writing = 0usize;
            while seen.len() < TOTAL {
                let appended = store.appended().notified();
                let batch = store.read_log(after, 100).await.or_fail("read_log");
                for event in &batch {
                    assert!(event.log > after, "log went backwards or repeated: {:?} after {:?}", event.log, after);
                    after = event.log;
                    seen.push(event.event_id);
                }
                if batch.is_empty() {
                    // Woken by this process's appends; the timeout only re-polls (PostgreSQL
                    // may hold events back while an older transaction is still open).
                    let _ = tokio::time::timeout(Duration::from_millis(5), appended).await;
                } else if writing.load(Ordering::SeqCst) {
                    batches_while_writing += 1;
                }
            }
            (seen, batches_while_writing)
        }
    });

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let counters = counter_store(&store, None);
            tokio::spawn(async move {
                let mut written = 0;
                let mut commit = 0usize;
                while written < EVENTS_PER_WRITER {
                    let size = (commit % 4 + 1).min(EVENTS_PER_WRITER - written);
                    let id = format!("w{w}-s{}", commit % STREAMS_PER_WRITER);
                    let amounts: Vec<i64> = (0..size).map(|i| (written + i + 1) as i64).collect();
                    add(&counters, &id, &amounts).await;
                    written += size;
                    commit += 1;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.or_fail("writer task");
    }
    writing.store(false, Ordering::SeqCst);

    let (seen, batches_while_writing) = testing_wait(reader).await;
    assert_eq!(seen.len(), TOTAL, "the reader saw every event exactly once");
    let seen_set: HashSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(seen_set.len(), TOTAL, "no event was delivered twice");

    let mut written = HashSet::new();
    for w in 0..WRITERS {
        for s in 0..STREAMS_PER_WRITER {
            let stream = store.read_stream(COUNTER, &format!("w{w}-s{s}"), 0).await.or_fail("read_stream");
            assert!(stream.iter().enumerate().all(|(i, e)| e.sequence == i as i64 + 1));
            written.extend(stream.into_iter().map(|e| e.event_id));
        }
    }
    assert_eq!(written.len(), TOTAL);
    assert_eq!(seen_set, written, "the reader saw exactly the events that were written");
    // Not asserted (it depends on scheduling), but shows the reader did overlap the writers.
    eprintln!("reader read {batches_while_writing} non-empty batches while writers were running");

    let report = audit::verify(&store).await.or_fail("verify");
    assert!(report.intact(), "{:?}", report.findings);
    assert_eq!((report.streams, report.events), ((WRITERS * STREAMS_PER_WRITER) as u64, TOTAL as u64));
}

/// Waits (with a deadline) for a task that finishes by itself, and returns its output.
async fn testing_wait<T: Send + 'static>(task: tokio::task::JoinHandle<T>) -> T {
    agora_eventstore::testing::eventually(30, "the reader to see every event", || async {
        task.is_finished().then_some(())
    })
    .await;
    task.await.or_fail("reader task")
}

// 4. Hash chain -------------------------------------------------------------------------

/// Three streams of five events, verified intact; returns the events of stream "t-2".
async fn seed_chain(store: &Store) -> Vec<RecordedEvent> {
    let counters = counter_store(store, None);
    for round in 1..=5 {
        for id in ["t-1", "t-2", "t-3"] {
            add(&counters, id, &[round]).await;
        }
    }
    let report = audit::verify(store).await.or_fail("verify");
    assert!(report.intact(), "fresh log must be intact: {:?}", report.findings);
    assert_eq!((report.streams, report.events), (3, 15));
    store.read_stream(COUNTER, "t-2", 0).await.or_fail("read_stream")
}

async fn only_finding(store: &Store) -> Finding {
    let report = audit::verify(store).await.or_fail("verify");
    assert_eq!((report.streams, report.events), (3, report.events), "all streams are still walked");
    assert_eq!(report.findings.len(), 1, "exactly the tampered stream is reported: {:?}", report.findings);
    report.findings[0].clone()
}

on_both_backends!(many_streams_in_one_append);

/// A queue's batch: one event on each of thousands of streams in one transaction, more than
/// one INSERT takes, then the next event on each from a replica that has not seen them (it
/// reads their heads in one go). Every event is stored once and the chains stay intact.
async fn many_streams_in_one_append(db: Db) {
    let event = |stream: usize, sequence: i64| agora_eventstore::NewEvent {
        aggregate_type: "step".into(),
        aggregate_id: format!("receipts/{stream}"),
        sequence,
        event_type: if sequence == 1 { "StepPlanned" } else { "StepStarted" }.into(),
        event_version: "1".into(),
        payload: serde_json::value::to_raw_value(&json!({ "stream": stream })).or_fail("payload"),
        metadata: json!({}),
    };
    let streams = 2_500;
    let mut tx = db.store.begin().await.or_fail("begin");
    let planned: Vec<_> = (0..streams).map(|stream| event(stream, 1)).collect();
    let recorded = db.store.append_in(&mut tx, &planned).await.or_fail("append the planned steps");
    tx.commit().await.or_fail("commit");
    assert_eq!(recorded.len(), streams);

    let replica = db.another_store().await;
    let mut tx = replica.begin().await.or_fail("begin");
    let started: Vec<_> = (0..streams).map(|stream| event(stream, 2)).collect();
    let recorded = replica.append_in(&mut tx, &started).await.or_fail("append the started steps");
    tx.commit().await.or_fail("commit");
    assert_eq!(recorded.len(), streams);

    assert_eq!(
        scalar(&db.store, "SELECT COUNT(*) FROM events WHERE aggregate_type = 'step'").await,
        2 * streams as i64
    );
    let report = audit::verify(&db.store).await.or_fail("verify");
    assert!(report.intact(), "{:?}", report.findings);

    // Read back at once (more streams than one query asks for): each stream whole and in
    // order, one never written absent, another type's stream of the same id not mixed in.
    let other = agora_eventstore::NewEvent { aggregate_type: "other".into(), ..event(0, 1) };
    db.store.append(&[other], None).await.or_fail("append another type's event");
    let mut ids: Vec<String> = (0..streams).map(|stream| format!("receipts/{stream}")).collect();
    ids.push("receipts/never".into());
    let asked: Vec<&str> = ids.iter().map(String::as_str).collect();
    let read = db.store.read_streams("step", &asked).await.or_fail("read the streams");
    assert_eq!(read.len(), 2 * streams);
    for pair in read.chunks(2) {
        assert_eq!((pair[0].aggregate_id.as_str(), pair[0].sequence), (pair[1].aggregate_id.as_str(), 1));
        assert_eq!(pair[1].sequence, 2);
    }
    let distinct: HashSet<&str> = read.iter().map(|e| e.aggregate_id.as_str()).collect();
    assert_eq!(distinct.len(), streams);
    let others = db.store.read_streams("other", &asked).await.or_fail("another type");
    assert_eq!(others.iter().map(|e| e.aggregate_id.as_str()).collect::<Vec<_>>(), ["receipts/0"]);
}

on_both_backends!(tamper_changed_payload);

async fn tamper_changed_payload(db: Db) {
    let events = seed_chain(&db.store).await;
    let changed = execute_sql(
        &db.store,
        "UPDATE events SET payload = $1 WHERE aggregate_id = $2 AND sequence = 3",
        &[r#"{"Added":{"amount":1000000}}"#, "t-2"],
    )
    .await;
    assert_eq!(changed, 1);
    let finding = only_finding(&db.store).await;
    assert_eq!(
        finding,
        Finding {
            stream: "counter/t-2".into(),
            position: events[2].position(),
            sequence: 3,
            problem: Problem::Changed
        }
    );
    assert!(finding.to_string().contains("counter/t-2"), "{finding}");
}

on_both_backends!(tamper_deleted_event);

async fn tamper_deleted_event(db: Db) {
    let events = seed_chain(&db.store).await;
    let deleted = execute_sql(&db.store, "DELETE FROM events WHERE aggregate_id = $1 AND sequence = 3", &["t-2"]).await;
    assert_eq!(deleted, 1);
    let finding = only_finding(&db.store).await;
    assert_eq!(
        finding,
        Finding {
            stream: "counter/t-2".into(),
            position: events[3].position(),
            sequence: 4,
            problem: Problem::Missing { expected_sequence: 3 },
        }
    );
}

on_both_backends!(tamper_swapped_payloads);

async fn tamper_swapped_payloads(db: Db) {
    let events = seed_chain(&db.store).await;
    let (second, third) = (events[1].payload.to_string(), events[2].payload.to_string());
    assert_ne!(second, third);
    let sql = "UPDATE events SET payload = $1 WHERE aggregate_id = $2 AND sequence = $3";
    assert_eq!(execute_sql(&db.store, &sql.replace("$3", "2"), &[&third, "t-2"]).await, 1);
    assert_eq!(execute_sql(&db.store, &sql.replace("$3", "3"), &[&second, "t-2"]).await, 1);
    let finding = only_finding(&db.store).await;
    assert_eq!(
        finding,
        Finding {
            stream: "counter/t-2".into(),
            position: events[1].position(),
            sequence: 2,
            problem: Problem::Changed
        }
    );
}

on_both_backends!(tamper_rehashed_event);

/// A forger who also recomputes the changed event's hash is caught at the next link.
async fn tamper_rehashed_event(db: Db) {
    let events = seed_chain(&db.store).await;
    let forged_payload = r#"{"Added":{"amount":-7}}"#;
    let row: Result<(String, String, String), sqlx::Error> = on_backend!(db.store.backend(), pool => {
        sqlx::query_as("SELECT event_id, recorded_at, metadata FROM events WHERE aggregate_id = $1 AND sequence = 2")
            .bind("t-2")
            .fetch_one(pool)
            .await
    });
    let (event_id, recorded_at, stored_metadata) = row.or_fail("reading the raw event");
    let forged_hash = agora_eventstore::chain::ChainLink {
        previous_hash: &events[0].hash,
        aggregate_type: COUNTER,
        aggregate_id: "t-2",
        sequence: 2,
        event_id: &event_id,
        event_type: "Added",
        event_version: EVENT_VERSION,
        recorded_at: &recorded_at,
        payload: forged_payload,
        metadata: &stored_metadata,
    }
    .hash();
    let changed = execute_sql(
        &db.store,
        "UPDATE events SET payload = $1, hash = $2 WHERE aggregate_id = $3 AND sequence = 2",
        &[forged_payload, &forged_hash, "t-2"],
    )
    .await;
    assert_eq!(changed, 1);
    let finding = only_finding(&db.store).await;
    assert_eq!(
        finding,
        Finding {
            stream: "counter/t-2".into(),
            position: events[2].position(),
            sequence: 3,
            problem: Problem::Changed
        }
    );
}

// 5. Snapshots --------------------------------------------------------------------------

on_both_backends!(snapshots);

async fn snapshots(db: Db) {
    let with_snapshots = counter_store(&db.store, Some(3));
    let without = counter_store(&db.store, None);
    for amount in 1..=10 {
        add(&with_snapshots, "s", &[amount]).await;
        assert_eq!(load(&with_snapshots, "s").await, load(&without, "s").await, "after event {amount}");
    }
    let (last, version, _) = db.store.read_snapshot(COUNTER, "s").await.or_fail("read_snapshot").or_fail("snapshot");
    assert_eq!((last, version), (9, 3), "a snapshot every 3 events");

    // A commit of four crosses the boundary at 12 and ends at 14.
    add(&with_snapshots, "s", &[11, 12, 13, 14]).await;
    let loaded = load(&with_snapshots, "s").await;
    assert_eq!(loaded, load(&without, "s").await);
    assert_eq!(loaded.amounts, (1..=14).collect::<Vec<i64>>());
    assert_eq!(loaded.total, (1..=14).sum::<i64>());

    let (last, version, payload) =
        db.store.read_snapshot(COUNTER, "s").await.or_fail("read_snapshot").or_fail("snapshot");
    let stream = db.store.read_stream(COUNTER, "s", 0).await.or_fail("read_stream");
    assert_eq!(stream.len(), 14);
    assert!(last <= stream.len() as i64);
    assert_eq!((last, version), (12, 4));
    // The snapshot is exactly the state after its last event.
    let snapshot: Counter = serde_json::from_value(payload).or_fail("snapshot payload");
    assert_eq!(snapshot.amounts, (1..=last).collect::<Vec<i64>>());
    assert_eq!(snapshot.total, (1..=last).sum::<i64>());

    // A stream written without snapshots loads through a snapshot store too.
    add(&without, "plain", &[5, 6, 7, 8]).await;
    assert_eq!(load(&with_snapshots, "plain").await.amounts, vec![5, 6, 7, 8]);
    add(&with_snapshots, "plain", &[9]).await;
    assert_eq!(load(&without, "plain").await.amounts, vec![5, 6, 7, 8, 9]);

    // A conflicting commit leaves no snapshot behind: only the winner's state is saved.
    add(&with_snapshots, "race", &[1, 2]).await;
    let a = with_snapshots.load_aggregate("race").await.or_fail("load a");
    let b = with_snapshots.load_aggregate("race").await.or_fail("load b");
    with_snapshots.commit(added(&[100]), a, metadata("user:a")).await.or_fail("winner");
    let lost = with_snapshots.commit(added(&[200]), b, metadata("user:b")).await;
    assert!(matches!(lost, Err(AggregateError::AggregateConflict)), "{lost:?}");
    let (last, _, payload) = db.store.read_snapshot(COUNTER, "race").await.or_fail("read_snapshot").or_fail("snapshot");
    assert_eq!(last, 3);
    assert_eq!(serde_json::from_value::<Counter>(payload).or_fail("payload").amounts, vec![1, 2, 100]);
    assert_eq!(load(&with_snapshots, "race").await.amounts, vec![1, 2, 100]);
}

// 6. Upcasting --------------------------------------------------------------------------

on_both_backends!(upcasting);

fn rename_value_to_amount() -> SemanticVersionEventUpcaster {
    SemanticVersionEventUpcaster::new(
        "Added",
        EVENT_VERSION,
        Box::new(|payload: Value| match payload {
            Value::Object(mut outer) => {
                if let Some(Value::Object(inner)) = outer.get_mut("Added")
                    && let Some(value) = inner.remove("value")
                {
                    inner.insert("amount".into(), value);
                }
                Value::Object(outer)
            }
            other => other,
        }),
    )
}

async fn upcasting(db: Db) {
    // An older release wrote version-1 events.
    let old = EventRepository::aggregate_store::<OldCounter>(db.store.clone(), None, Vec::new());
    execute(&old, "u", 5, metadata("user:old")).await.or_fail("old command 1");
    execute(&old, "u", 7, metadata("user:old")).await.or_fail("old command 2");

    // Without an upcaster the new code cannot read them.
    let plain = counter_store(&db.store, None);
    let unreadable = plain.load_aggregate("u").await;
    assert!(matches!(unreadable, Err(AggregateError::DeserializationError(_))), "version 1 must not deserialize as is");

    // With one it reads them, and carries on writing the current version.
    let upcasting = counter_store_with(&db.store, vec![Box::new(rename_value_to_amount())]);
    assert_eq!(load(&upcasting, "u").await.amounts, vec![5, 7]);
    add(&upcasting, "u", &[10]).await;
    assert_eq!(load(&upcasting, "u").await, Counter { total: 22, amounts: vec![5, 7, 10], label: None });

    // Upcasting happens on read: the log itself is never rewritten.
    let stored = db.store.read_stream(COUNTER, "u", 0).await.or_fail("read_stream");
    assert_eq!(stored.iter().map(|e| e.event_version.as_str()).collect::<Vec<_>>(), vec!["1", "1", EVENT_VERSION]);
    assert_eq!(stored[0].payload_value(), json!({"Added": {"value": 5}}));
    let report = audit::verify(&db.store).await.or_fail("verify");
    assert!(report.intact(), "{:?}", report.findings);
}

// 7. Projections ------------------------------------------------------------------------

/// Counts events per aggregate in a table of its own.
struct CountPerAggregate;

const COUNTS_TABLE: &str = "CREATE TABLE IF NOT EXISTS test_counts (aggregate_id TEXT PRIMARY KEY, n BIGINT NOT NULL)";

#[async_trait]
impl Projection for CountPerAggregate {
    fn name(&self) -> &str {
        "test-counts"
    }

    async fn apply(&self, tx: &mut DbTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        on_tx!(tx, conn => {
            sqlx::query(
                "INSERT INTO test_counts (aggregate_id, n) VALUES ($1, 1) \
                 ON CONFLICT (aggregate_id) DO UPDATE SET n = test_counts.n + 1",
            )
            .bind(&event.aggregate_id)
            .execute(&mut **conn)
            .await?;
        });
        Ok(())
    }

    async fn reset(&self, tx: &mut DbTx) -> Result<(), ProjectionError> {
        on_tx!(tx, conn => {
            sqlx::query("DELETE FROM test_counts").execute(&mut **conn).await?;
        });
        Ok(())
    }
}

/// Catches up until `expected` events were applied (PostgreSQL may hold recent events back
/// while an older transaction elsewhere in the cluster is still open).
async fn catch_up(runner: &ProjectionRunner, expected: usize) -> usize {
    repeat_until(expected, "the projection to catch up", || async { runner.catch_up().await.or_fail("catch_up") }).await
}

async fn counts(store: &Store) -> Vec<(String, i64)> {
    let rows: Result<Vec<(String, i64)>, sqlx::Error> = on_backend!(store.backend(), pool => {
        sqlx::query_as("SELECT aggregate_id, n FROM test_counts ORDER BY aggregate_id").fetch_all(pool).await
    });
    rows.or_fail("reading test_counts")
}

on_both_backends!(projections);

async fn projections(db: Db) {
    let store = db.store.clone();
    store.execute_ddl(&[COUNTS_TABLE]).await.or_fail("creating test_counts");
    let counters = counter_store(&store, None);
    for round in 0..20 {
        add(&counters, "p-a", &[round + 1]).await;
        if round % 2 == 0 {
            add(&counters, "p-b", &[1, 2]).await;
        }
    }
    add(&counters, "p-c", &[9]).await;
    let expected = vec![("p-a".to_string(), 20), ("p-b".to_string(), 20), ("p-c".to_string(), 1)];

    let runner = ProjectionRunner::new(store.clone(), vec![Arc::new(CountPerAggregate)]).with_batch(7);
    assert_eq!(catch_up(&runner, 41).await, 41);
    assert_eq!(counts(&store).await, expected);
    assert_eq!(runner.catch_up().await.or_fail("second catch_up"), 0, "nothing is applied twice");
    assert_eq!(counts(&store).await, expected);

    // New events are picked up from the checkpoint.
    add(&counters, "p-c", &[1, 1]).await;
    assert_eq!(catch_up(&runner, 2).await, 2);
    let expected = vec![("p-a".to_string(), 20), ("p-b".to_string(), 20), ("p-c".to_string(), 3)];
    assert_eq!(counts(&store).await, expected);

    // A rebuild empties the read model and ends with the same counts.
    let rebuilt = runner.rebuild(&CountPerAggregate, |_, _| {}).await.or_fail("rebuild") as usize;
    assert!(rebuilt <= 43);
    catch_up(&runner, 43 - rebuilt).await;
    assert_eq!(counts(&store).await, expected);
    assert_eq!(runner.catch_up().await.or_fail("catch_up after rebuild"), 0);

    // Two replicas catching up at once still count every event once.
    let more = 200usize;
    for i in 0..more {
        add(&counters, &format!("q-{}", i % 5), &[1]).await;
    }
    let other = db.another_store().await;
    let first = ProjectionRunner::new(store.clone(), vec![Arc::new(CountPerAggregate)]).with_batch(5);
    let second = ProjectionRunner::new(other, vec![Arc::new(CountPerAggregate)]).with_batch(5);
    let (a, b) = tokio::join!(
        tokio::spawn(async move { first.catch_up().await }),
        tokio::spawn(async move { second.catch_up().await })
    );
    let (a, b) = (a.or_fail("task a").or_fail("catch_up a"), b.or_fail("task b").or_fail("catch_up b"));
    assert!(a + b <= more, "the replicas applied {a} + {b} events, more than the {more} new ones");
    let rest = catch_up(&ProjectionRunner::new(store.clone(), vec![Arc::new(CountPerAggregate)]), more - a - b).await;
    assert_eq!(a + b + rest, more, "each new event was applied once ({a} + {b} + {rest})");
    let now = counts(&store).await;
    assert_eq!(now[..3], expected[..]);
    assert_eq!(now[3..], (0..5).map(|i| (format!("q-{i}"), (more / 5) as i64)).collect::<Vec<_>>()[..]);
    let total = scalar(&store, "SELECT CAST(SUM(n) AS BIGINT) FROM test_counts").await;
    assert_eq!(total, store.log_extent().await.or_fail("log_extent").0);
}

on_both_backends!(a_command_waits_until_the_read_model_shows_what_it_wrote);

/// What a command's caller reads next shows the command: the store waits for the projection's
/// checkpoint to pass the stream's last event, woken by a runner of its own process or
/// noticing (by looking again) one of another replica's.
async fn a_command_waits_until_the_read_model_shows_what_it_wrote(db: Db) {
    let store = db.store.clone();
    store.execute_ddl(&[COUNTS_TABLE]).await.or_fail("creating test_counts");
    let counters = counter_store(&store, None);
    let at_once = store.clone().waiting_for_read_models(Duration::ZERO);
    add(&counters, "w-a", &[1]).await;
    add(&counters, "w-b", &[1]).await;
    assert!(!at_once.await_read_model("test-counts", COUNTER, "w-a").await, "no projection has run yet");

    let runner = ProjectionRunner::new(store.clone(), vec![Arc::new(CountPerAggregate)]);
    catch_up(&runner, 2).await;
    assert!(at_once.await_read_model("test-counts", COUNTER, "w-a").await, "applied");
    assert!(!at_once.await_read_model("another-projection", COUNTER, "w-a").await, "only that projection counts");

    // The stream's next event is waited for again, and the runner of this process wakes the
    // command waiting for it.
    add(&counters, "w-a", &[2]).await;
    assert!(!at_once.await_read_model("test-counts", COUNTER, "w-a").await, "the new event is not applied yet");
    let patient = store.clone().waiting_for_read_models(Duration::from_secs(60));
    let command = tokio::spawn(async move { patient.await_read_model("test-counts", COUNTER, "w-a").await });
    catch_up(&runner, 1).await;
    assert!(testing_wait(command).await, "the command answered once the read model showed its event");
    assert_eq!(counts(&store).await, vec![("w-a".to_string(), 2), ("w-b".to_string(), 1)]);

    // A projection run by another replica (another store, whose runs do not wake this one).
    add(&counters, "w-b", &[2]).await;
    let patient = store.clone().waiting_for_read_models(Duration::from_secs(60));
    let command = tokio::spawn(async move { patient.await_read_model("test-counts", COUNTER, "w-b").await });
    let replica = ProjectionRunner::new(db.another_store().await, vec![Arc::new(CountPerAggregate)]);
    catch_up(&replica, 1).await;
    assert!(testing_wait(command).await, "the command answered once another replica's read model showed its event");
    assert_eq!(counts(&store).await, vec![("w-a".to_string(), 2), ("w-b".to_string(), 2)]);

    // A rebuild started elsewhere sets the checkpoint back: what this process's runner saw last
    // no longer answers for the read model.
    assert!(at_once.await_read_model("test-counts", COUNTER, "w-a").await, "applied");
    store.reset_checkpoint("projection:test-counts").await.or_fail("reset_checkpoint");
    assert!(!at_once.await_read_model("test-counts", COUNTER, "w-a").await, "the read model is being rebuilt");
}

on_both_backends!(a_projection_reads_only_its_aggregates);

/// Counts the events of the counters only, and refuses any other (the runner must not hand it
/// one): a projection that names its aggregates.
struct CountersOnly;

#[async_trait]
impl Projection for CountersOnly {
    fn name(&self) -> &str {
        "test-counters-only"
    }

    fn aggregates(&self) -> Option<&[&'static str]> {
        Some(&[COUNTER])
    }

    async fn apply(&self, tx: &mut DbTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        if event.aggregate_type != COUNTER || event.payload_value().is_null() {
            return Err(ProjectionError::Apply {
                projection: self.name().into(),
                position: event.position(),
                reason: format!("handed a {} event, payload {}", event.aggregate_type, event.payload.get()),
            });
        }
        CountPerAggregate.apply(tx, event).await
    }

    async fn reset(&self, tx: &mut DbTx) -> Result<(), ProjectionError> {
        CountPerAggregate.reset(tx).await
    }
}

/// Most of the log is other services' events: a projection that names its aggregates gets
/// only theirs, whole, and its checkpoint still moves past the rest (a second catch-up reads
/// nothing, however many of the others came last).
async fn a_projection_reads_only_its_aggregates(db: Db) {
    let store = db.store.clone();
    store.execute_ddl(&[COUNTS_TABLE]).await.or_fail("creating test_counts");
    let counters = counter_store(&store, None);
    let others = |from: i64| -> Vec<agora_eventstore::NewEvent> {
        (from..from + 5)
            .map(|sequence| agora_eventstore::NewEvent {
                aggregate_type: "another-service".into(),
                aggregate_id: "theirs".into(),
                sequence,
                event_type: "Happened".into(),
                event_version: "1".into(),
                payload: serde_json::value::to_raw_value(&json!({ "text": "kilobytes of someone else's response" }))
                    .or_fail("payload"),
                metadata: json!({}),
            })
            .collect()
    };
    let append_others = |events: Vec<agora_eventstore::NewEvent>| {
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.or_fail("begin");
            store.append_in(&mut tx, &events).await.or_fail("append another service's events");
            tx.commit().await.or_fail("commit");
        }
    };
    append_others(others(1)).await;
    add(&counters, "mine", &[1, 2, 3]).await;
    append_others(others(6)).await;

    let runner = ProjectionRunner::new(store.clone(), vec![Arc::new(CountersOnly)]).with_batch(4);
    assert_eq!(catch_up(&runner, 13).await, 13, "every event of the log is read past");
    assert_eq!(counts(&store).await, vec![("mine".to_string(), 3)]);
    assert_eq!(runner.catch_up().await.or_fail("second catch_up"), 0, "the checkpoint is past the others' events");

    add(&counters, "mine", &[4]).await;
    assert_eq!(catch_up(&runner, 1).await, 1);
    assert_eq!(counts(&store).await, vec![("mine".to_string(), 4)]);

    // The others' payloads are not even read; with no aggregate named, none is.
    for (only, mine_whole) in [(&[COUNTER][..], true), (&[][..], false)] {
        // PostgreSQL holds the log back while an older transaction elsewhere is still open.
        let log = agora_eventstore::testing::eventually(10, "the whole log", || async {
            let mut tx = store.begin().await.or_fail("begin");
            let log = Store::read_log_in(&mut tx, LogPosition::START, 100, Some(only)).await.or_fail("read_log_in");
            tx.rollback().await.or_fail("rollback");
            (log.len() == 14).then_some(log)
        })
        .await;
        for event in log {
            let whole = event.aggregate_type == COUNTER && mine_whole;
            assert_eq!(event.payload.get() != "null", whole, "{} {}", event.aggregate_type, event.payload.get());
        }
    }
}

// 8. Exactly-once integration handler ----------------------------------------------------

const EFFECTS_TABLE: &str = "CREATE TABLE IF NOT EXISTS test_effects (event_id TEXT NOT NULL, subject TEXT NOT NULL)";

/// Writes one row per handled event; fails (after writing) while `fail` is set.
struct RecordEffect {
    fail: AtomicBool,
}

#[async_trait]
impl IntegrationHandler for RecordEffect {
    fn name(&self) -> &str {
        "test-effects"
    }

    fn filter(&self) -> &str {
        "test.>"
    }

    async fn handle(&self, tx: &mut DbTx, event: &IntegrationEvent) -> Result<(), String> {
        on_tx!(tx, conn => {
            sqlx::query("INSERT INTO test_effects (event_id, subject) VALUES ($1, $2)")
                .bind(event.id.to_string())
                .bind(&event.subject)
                .execute(&mut **conn)
                .await
                .map_err(|e| e.to_string())?;
        });
        if self.fail.load(Ordering::SeqCst) {
            return Err("the handler failed on purpose".into());
        }
        Ok(())
    }
}

fn integration_event(subject: &str) -> IntegrationEvent {
    IntegrationEvent {
        id: Uuid::now_v7(),
        event_type: "dk.agora.test.v1.Added".into(),
        source: "agora/test".into(),
        subject: subject.into(),
        nats_subject: format!("test.v1.{subject}"),
        time: Utc::now(),
        sequence: 1,
        position: 1,
        hash: String::new(),
        traceparent: None,
        data: Bytes::from_static(b"{}"),
    }
}

on_both_backends!(exactly_once_handler);

async fn exactly_once_handler(db: Db) {
    let store = db.store.clone();
    store.execute_ddl(&[EFFECTS_TABLE]).await.or_fail("creating test_effects");
    let handler = RecordEffect { fail: AtomicBool::new(false) };
    let event = integration_event("h-1");

    assert!(handle_once(&store, &handler, &event).await.or_fail("first delivery"));
    assert!(!handle_once(&store, &handler, &event).await.or_fail("second delivery"), "a repeat is skipped");
    assert_eq!(scalar(&store, "SELECT COUNT(*) FROM test_effects").await, 1, "the effect happened once");

    // A failing handler leaves neither its effect nor the handled mark: the retry runs.
    let other = integration_event("h-2");
    handler.fail.store(true, Ordering::SeqCst);
    assert!(handle_once(&store, &handler, &other).await.is_err());
    assert_eq!(scalar(&store, "SELECT COUNT(*) FROM test_effects").await, 1, "the failed attempt was rolled back");
    handler.fail.store(false, Ordering::SeqCst);
    assert!(handle_once(&store, &handler, &other).await.or_fail("retry"));
    assert!(!handle_once(&store, &handler, &other).await.or_fail("repeat after retry"));
    assert_eq!(
        strings(&store, "SELECT subject FROM test_effects ORDER BY subject").await,
        vec!["h-1".to_string(), "h-2".to_string()]
    );
    assert_eq!(scalar(&store, "SELECT COUNT(*) FROM handled_events").await, 2);

    // Handlers are deduplicated separately: the same event is new to another consumer.
    struct Another;
    #[async_trait]
    impl IntegrationHandler for Another {
        fn name(&self) -> &str {
            "another"
        }
        fn filter(&self) -> &str {
            ">"
        }
        async fn handle(&self, _: &mut DbTx, _: &IntegrationEvent) -> Result<(), String> {
            Ok(())
        }
    }
    assert!(handle_once(&store, &Another, &event).await.or_fail("another consumer"));

    // A batch that repeats a handled event and holds a new one twice (a redelivery that
    // arrived with the original): the new ones are handled once each, in the batch's order.
    let (third, fourth) = (integration_event("h-3"), integration_event("h-4"));
    let batch = [event.clone(), third.clone(), fourth, third];
    assert_eq!(handle_batch(&store, &handler, &batch).await.or_fail("a batch"), 2, "two of the four were new");
    assert_eq!(
        strings(&store, "SELECT subject FROM test_effects ORDER BY subject").await,
        vec!["h-1", "h-2", "h-3", "h-4"].into_iter().map(String::from).collect::<Vec<_>>()
    );
    assert_eq!(
        handle_batch(&store, &handler, &batch).await.or_fail("the batch again"),
        0,
        "nothing new the second time"
    );
    assert_eq!(scalar(&store, "SELECT COUNT(*) FROM handled_events WHERE consumer <> 'another'").await, 4);
}

on_both_backends!(columns_added_by_a_later_version);

async fn columns_added_by_a_later_version(db: Db) {
    let store = db.store.clone();
    store.execute_ddl(&["CREATE TABLE IF NOT EXISTS older (id TEXT PRIMARY KEY)"]).await.expect("table");
    store.execute_ddl(&["INSERT INTO older (id) VALUES ('a')"]).await.expect("row");
    for _ in 0..2 {
        store.add_missing_columns("older", &[("id", "TEXT"), ("rules", "TEXT")]).await.expect("columns, twice");
    }
    store.execute_ddl(&["UPDATE older SET rules = 'r' WHERE id = 'a'"]).await.expect("the new column is there");
}
