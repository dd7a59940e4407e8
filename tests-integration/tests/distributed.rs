//! The production path: two replicas on one PostgreSQL, the outbox relay to NATS JetStream,
//! and the integration events other systems receive.

use std::sync::Arc;

use agora_eventstore::jetstream::IntegrationEvent;
use agora_eventstore::relay::Relay;
use agora_eventstore::testing;
use agora_hearing::integration::HearingIntegration;
use agora_tests_integration::{Backend, Harness, People, pb};
use futures::StreamExt;
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_make_one_timed_transition() {
    let Some(mut h) = Harness::start(Backend::Postgres).await else { return };
    let people = People::new();
    h.define_reference_data(&people.admin).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let id = h.draft(&people.karen, "lokalplan", &format!("Høring {n}"), "2026-12-01", "2026-12-20").await;
        let request = h.as_user(Some(&people.karen), pb::HearingRef { hearing_id: id.clone() });
        h.hearings.publish_hearing(request).await.expect("publish");
        ids.push(id);
    }
    h.settle().await;

    // A second replica: its own connections, the same database, the same moment.
    let database = h.database.as_ref().expect("postgres harness");
    let other_store = database.another_store(8).await;
    let files = object_store::local::LocalFileSystem::new_with_prefix(h.files_dir.path()).expect("files");
    let now = h.now.clone();
    let clock: agora_hearing::app::Clock =
        Arc::new(move || now.lock().map(|t| *t).unwrap_or_else(|_| chrono::Utc::now()));
    let replica = agora_hearing::app::HearingApp::new(
        other_store,
        Arc::new(files),
        b"test-pseudonym-key",
        agora_vault::MemoryKeys::shared(),
        clock,
    );
    h.set_now("2026-12-01T06:00:00Z");
    let (a, b) = tokio::join!(agora_hearing::scheduler::tick(&h.app), agora_hearing::scheduler::tick(&replica));
    let moved = a.expect("replica a") + b.expect("replica b");
    assert_eq!(moved, 5, "each hearing moved exactly once between the two replicas");
    for id in &ids {
        let events = h.store.read_stream("hearing", id, 0).await.expect("stream");
        assert_eq!(events.iter().filter(|e| e.event_type == "HearingStarted").count(), 1, "hearing {id}");
    }
    // Both replicas go down through the deadline; a fresh one started afterwards makes the
    // missed transitions once, and a second tick repeats none of them.
    drop(replica);
    h.settle().await;
    h.set_now("2026-12-21T06:00:00Z");
    let restarted = agora_hearing::app::HearingApp::new(
        database.another_store(4).await,
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(h.files_dir.path()).expect("files")),
        b"test-pseudonym-key",
        agora_vault::MemoryKeys::shared(),
        {
            let now = h.now.clone();
            Arc::new(move || now.lock().map(|t| *t).unwrap_or_else(|_| chrono::Utc::now()))
        },
    );
    assert_eq!(
        agora_hearing::scheduler::tick(&restarted).await.expect("tick"),
        5,
        "the missed deadlines are caught up"
    );
    h.settle().await;
    assert_eq!(agora_hearing::scheduler::tick(&restarted).await.expect("tick"), 0, "and not repeated");
    for id in &ids {
        let events = h.store.read_stream("hearing", id, 0).await.expect("stream");
        assert_eq!(events.iter().filter(|e| e.event_type == "HearingClosed").count(), 1, "hearing {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_receive_versioned_integration_events() {
    let Some(mut h) = Harness::start(Backend::Postgres).await else { return };
    let Some(test_bus) = testing::nats().await else { return };
    let bus = test_bus.bus.clone();
    let people = People::new();
    h.define_reference_data(&people.admin).await;
    let id = h.draft(&people.karen, "lokalplan", "Lokalplan for havnen", "2026-12-01", "2026-12-20").await;
    let request = h.as_user(Some(&people.karen), pb::HearingRef { hearing_id: id.clone() });
    h.hearings.publish_hearing(request).await.expect("publish");

    let relay = Relay::new(h.store.clone(), bus.clone(), Arc::new(HearingIntegration::new(h.store.clone())));
    let published = relay.publish_all().await.expect("relay");
    assert!(published > 0);

    // A subscriber filtering on published hearings, as another system would.
    let stream = bus.jetstream.get_stream(&bus.config.stream).await.expect("stream");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("{}.hearing.v1.published.>", bus.config.subject_prefix),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let message = tokio::time::timeout(std::time::Duration::from_secs(10), messages.next())
        .await
        .expect("a published event arrives")
        .expect("stream open")
        .expect("message");
    let event =
        IntegrationEvent::from_message(message.subject.as_str(), message.headers.as_ref(), message.payload.clone())
            .expect("cloudevent headers");
    assert_eq!(event.event_type, "dk.agora.hearing.v1.HearingPublished");
    assert_eq!(event.source, "agora/hearing");
    assert_eq!(event.subject, id);
    let headers = message.headers.as_ref().expect("headers");
    assert_eq!(headers.get("Nats-Msg-Id").map(|v| v.as_str()), Some(event.id.to_string().as_str()));
    let body = pb::HearingPublished::decode(message.payload.clone()).expect("protobuf body");
    let state = body.hearing.expect("state");
    assert_eq!(state.hearing_id, id);
    assert_eq!(state.status, pb::HearingStatus::AwaitingStartDate as i32);
    assert_eq!(state.title, "Lokalplan for havnen");
    assert_eq!(state.closes_at, "2026-12-20T23:00:00Z");

    // Republishing history adds nothing to the stream: JetStream drops the repeats.
    let before =
        bus.jetstream.get_stream(&bus.config.stream).await.expect("stream").info().await.expect("info").state.messages;
    relay.republish(1, |_| {}).await.expect("republish");
    let after =
        bus.jetstream.get_stream(&bus.config.stream).await.expect("stream").info().await.expect("info").state.messages;
    assert_eq!(before, after);
    // Every hearing event was published once; reference data stays internal.
    let hearing_events = h.store.read_stream("hearing", &id, 0).await.expect("stream").len();
    assert_eq!(before as usize, hearing_events);
}

/// A subscriber's read model: which hearings are open for responses, as the response
/// service will keep it.
struct OpenHearings;

#[async_trait::async_trait]
impl agora_eventstore::jetstream::IntegrationHandler for OpenHearings {
    fn name(&self) -> &str {
        "test-open-hearings"
    }

    fn filter(&self) -> &str {
        "hearing.v1.*.*"
    }

    async fn handle(&self, tx: &mut agora_eventstore::DbTx, event: &IntegrationEvent) -> Result<(), String> {
        agora_eventstore::on_tx!(tx, conn => {
            sqlx::query("INSERT INTO seen_events (event_id, event_type) VALUES ($1, $2)")
                .bind(event.id.to_string())
                .bind(&event.event_type)
                .execute(&mut **conn)
                .await
                .map_err(|e| e.to_string())?;
        });
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_consumers_are_fed_from_the_local_log_exactly_once() {
    let Some(mut h) = Harness::start(Backend::Sqlite).await else { return };
    h.store
        .execute_ddl(&["CREATE TABLE seen_events (event_id TEXT PRIMARY KEY, event_type TEXT NOT NULL)"])
        .await
        .expect("table");
    let people = People::new();
    h.define_reference_data(&people.admin).await;
    let id = h.draft(&people.karen, "lokalplan", "Lokalplan", "2026-11-01", "2026-12-20").await;
    let feed = agora_eventstore::consumer::LocalIntegrationFeed {
        store: h.store.clone(),
        mapper: Arc::new(HearingIntegration::new(h.store.clone())),
        handler: Arc::new(OpenHearings),
    };
    assert_eq!(
        feed.catch_up().await.expect("feed"),
        3,
        "created, updated, draft ready; reference data is not published"
    );
    let request = h.as_user(Some(&people.karen), pb::HearingRef { hearing_id: id });
    h.hearings.publish_hearing(request).await.expect("publish");
    assert_eq!(feed.catch_up().await.expect("feed"), 2, "published and started");
    assert_eq!(feed.catch_up().await.expect("feed"), 0, "nothing twice");
    // Even from the start of the log again (a lost checkpoint), nothing is handled twice.
    h.store.reset_checkpoint("feed:test-open-hearings").await.expect("reset");
    assert_eq!(feed.catch_up().await.expect("feed"), 0);
    let agora_eventstore::Backend::Sqlite { writer, .. } = h.store.backend() else { panic!("sqlite") };
    let types: Vec<String> = sqlx::query_scalar("SELECT event_type FROM seen_events ORDER BY event_id")
        .fetch_all(writer)
        .await
        .expect("rows");
    assert_eq!(types.len(), 5);
    assert!(types.contains(&"dk.agora.hearing.v1.HearingStarted".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_relay_publishes_and_another_takes_over_when_it_stops() {
    let Some(database) = testing::postgres(8).await else { return };
    let Some(test_bus) = testing::nats().await else { return };
    let bus = test_bus.bus.clone();
    let append = |store: agora_eventstore::Store, stream: &'static str, n: i64| async move {
        let events: Vec<agora_eventstore::NewEvent> = (1..=n)
            .map(|sequence| agora_eventstore::NewEvent {
                aggregate_type: "test".into(),
                aggregate_id: stream.into(),
                sequence,
                event_type: "Happened".into(),
                event_version: "1".into(),
                payload: serde_json::value::to_raw_value(&serde_json::json!({"n": sequence})).expect("payload"),
                metadata: serde_json::json!({}),
            })
            .collect();
        store.append(&events, None).await.expect("append");
    };
    struct Everything;
    #[async_trait::async_trait]
    impl agora_eventstore::relay::IntegrationMapper for Everything {
        async fn map(&self, event: &agora_eventstore::RecordedEvent) -> Result<Option<IntegrationEvent>, String> {
            Ok(Some(IntegrationEvent {
                id: event.event_id,
                event_type: "test.v1.Happened".into(),
                source: "test".into(),
                subject: event.aggregate_id.clone(),
                nats_subject: format!("test.v1.{}", event.aggregate_id),
                time: event.recorded_at,
                sequence: event.sequence,
                position: event.position(),
                hash: event.hash.clone(),
                traceparent: None,
                data: bytes::Bytes::from(event.payload.get().to_string()),
            }))
        }
    }
    let stream_count = || {
        let bus = bus.clone();
        async move {
            let mut stream = bus.jetstream.get_stream(&bus.config.stream).await.ok()?;
            Some(stream.info().await.ok()?.state.messages)
        }
    };
    // Two replicas' relays on their own connections; only one may lead.
    let (stop_a, stopped_a) = tokio::sync::oneshot::channel::<()>();
    let (stop_b, stopped_b) = tokio::sync::oneshot::channel::<()>();
    let relay_a = Relay::new(database.store.clone(), bus.clone(), Arc::new(Everything));
    let relay_b = Relay::new(database.another_store(4).await, bus.clone(), Arc::new(Everything));
    let a = tokio::spawn(relay_a.run(async move {
        let _ = stopped_a.await;
    }));
    let b = tokio::spawn(relay_b.run(async move {
        let _ = stopped_b.await;
    }));
    append(database.store.clone(), "first", 20).await;
    testing::eventually(20, "20 events in the stream", || async { stream_count().await.filter(|n| *n == 20) }).await;
    let agora_eventstore::Backend::Postgres(pool) = database.store.backend() else { panic!("postgres") };
    let lock_holders = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = hashtext('relay:' || $1)::oid",
        )
        .bind(&bus.config.stream)
        .fetch_one(pool)
        .await
        .expect("pg_locks")
    };
    assert_eq!(lock_holders().await, 1, "exactly one relay leads");

    // The leader stops (as a replica does on a rolling update); the other takes over.
    let _ = stop_a.send(());
    a.await.expect("relay a stops");
    append(database.store.clone(), "second", 15).await;
    testing::eventually(20, "35 events in the stream", || async { stream_count().await.filter(|n| *n == 35) }).await;
    let _ = stop_b.send(());
    b.await.expect("relay b stops");
}
