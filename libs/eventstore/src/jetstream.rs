//! Integration events on NATS JetStream: the wire form (CloudEvents-style headers around a
//! protobuf body), the stream set-up, and durable consumers with exactly-once effect.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::CreateStreamErrorKind;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use uuid::Uuid;

use crate::db::{DbTx, StoreError};
use crate::{Store, on_tx};

/// Header names: CloudEvents' binary mode over NATS, plus W3C trace context.
pub mod headers {
    pub const MSG_ID: &str = "Nats-Msg-Id";
    pub const SPEC_VERSION: &str = "ce-specversion";
    pub const ID: &str = "ce-id";
    pub const TYPE: &str = "ce-type";
    pub const SOURCE: &str = "ce-source";
    pub const SUBJECT: &str = "ce-subject";
    pub const TIME: &str = "ce-time";
    pub const DATA_CONTENT_TYPE: &str = "content-type";
    pub const DATA_SCHEMA: &str = "ce-dataschema";
    pub const SEQUENCE: &str = "ce-agorasequence";
    pub const POSITION: &str = "ce-agoraposition";
    pub const HASH: &str = "ce-agorahash";
    pub const TRACEPARENT: &str = "traceparent";
}

/// A versioned integration event: the public contract other systems subscribe to.
#[derive(Debug, Clone, PartialEq)]
pub struct IntegrationEvent {
    /// The stored event's id; JetStream drops a repeat with the same id.
    pub id: Uuid,
    /// e.g. `dk.agora.hearing.v1.HearingPublished`.
    pub event_type: String,
    /// e.g. `agora/hearing`.
    pub source: String,
    /// The aggregate the event is about, e.g. the hearing id.
    pub subject: String,
    /// NATS subject below the stream prefix, e.g. `hearing.v1.published.<id>`.
    pub nats_subject: String,
    pub time: DateTime<Utc>,
    /// The event's sequence in its stream, so consumers can spot gaps and order per subject.
    pub sequence: i64,
    /// The global log position in the source store.
    pub position: i64,
    /// The event's audit-chain hash: subscribers holding it anchor the log outside our database.
    pub hash: String,
    pub traceparent: Option<String>,
    /// Protobuf-encoded message named by `event_type`.
    pub data: Bytes,
}

impl IntegrationEvent {
    /// The integration event of a stored event: its id, time, order, hash and trace context,
    /// with the mapper's type (`dk.agora.<service>.v1.<Message>`), source, subject and data.
    pub fn from_recorded(
        event: &crate::RecordedEvent,
        event_type: String,
        source: &str,
        nats_subject: String,
        data: Bytes,
    ) -> Self {
        Self {
            id: event.event_id,
            event_type,
            source: source.to_string(),
            subject: event.aggregate_id.clone(),
            nats_subject,
            time: event.recorded_at,
            sequence: event.sequence,
            position: event.position(),
            hash: event.hash.clone(),
            traceparent: event.metadata_str(crate::metadata::keys::TRACEPARENT),
            data,
        }
    }

    pub fn to_headers(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(headers::MSG_ID, self.id.to_string().as_str());
        map.insert(headers::SPEC_VERSION, "1.0");
        map.insert(headers::ID, self.id.to_string().as_str());
        map.insert(headers::TYPE, self.event_type.as_str());
        map.insert(headers::SOURCE, self.source.as_str());
        map.insert(headers::SUBJECT, self.subject.as_str());
        map.insert(headers::TIME, crate::db::format_time(self.time).as_str());
        map.insert(headers::DATA_CONTENT_TYPE, "application/protobuf");
        map.insert(headers::SEQUENCE, self.sequence.to_string().as_str());
        map.insert(headers::POSITION, self.position.to_string().as_str());
        map.insert(headers::HASH, self.hash.as_str());
        if let Some(traceparent) = &self.traceparent {
            map.insert(headers::TRACEPARENT, traceparent.as_str());
        }
        map
    }

    /// Reads an event from a message; names the header that is missing or malformed.
    pub fn from_message(nats_subject: &str, headers: Option<&HeaderMap>, data: Bytes) -> Result<Self, WireError> {
        let headers = headers.ok_or(WireError::Missing(headers::ID))?;
        let get = |name: &'static str| -> Result<String, WireError> {
            headers.get(name).map(|v| v.as_str().to_string()).ok_or(WireError::Missing(name))
        };
        let id = get(headers::ID)?;
        let time = get(headers::TIME)?;
        Ok(Self {
            id: Uuid::parse_str(&id).map_err(|_| WireError::Malformed(headers::ID, id))?,
            event_type: get(headers::TYPE)?,
            source: get(headers::SOURCE)?,
            subject: get(headers::SUBJECT)?,
            nats_subject: nats_subject.to_string(),
            time: DateTime::parse_from_rfc3339(&time)
                .map_err(|_| WireError::Malformed(headers::TIME, time.clone()))?
                .with_timezone(&Utc),
            sequence: number(headers::SEQUENCE, get(headers::SEQUENCE)?)?,
            position: number(headers::POSITION, get(headers::POSITION)?)?,
            hash: get(headers::HASH).unwrap_or_default(),
            traceparent: get(headers::TRACEPARENT).ok(),
            data,
        })
    }
}

fn number(header: &'static str, value: String) -> Result<i64, WireError> {
    value.parse().map_err(|_| WireError::Malformed(header, value))
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("integration event has no {0} header")]
    Missing(&'static str),
    #[error("integration event header {0} is malformed: {1:?}")]
    Malformed(&'static str, String),
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("NATS at {url} is not reachable: {reason}")]
    Connect { url: String, reason: String },
    #[error("JetStream stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("publishing to JetStream failed: {0}")]
    Publish(String),
    #[error("JetStream consumer {consumer}: {reason}")]
    Consumer { consumer: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("handler {consumer} failed on event {event_id}: {reason}")]
    Handler { consumer: String, event_id: Uuid, reason: String },
}

/// Where integration events go: the stream name and the subject prefix. Tests give every
/// run its own prefix, so that they run in parallel and leave nothing in others' way.
#[derive(Debug, Clone)]
pub struct BusConfig {
    pub url: String,
    pub stream: String,
    pub subject_prefix: String,
    /// 1 on a single server; 3 in production (see docs/operations.md).
    pub replicas: usize,
    /// How long a start waits for JetStream to be ready (a cluster elects its leader first)
    /// before it gives up; under Kubernetes' startup probe, which allows 120 s.
    pub start_deadline: Duration,
}

impl BusConfig {
    pub fn new(url: &str, prefix: &str) -> Self {
        Self {
            url: url.to_string(),
            stream: prefix.replace(['.', '*', '>', ' '], "_").to_uppercase(),
            subject_prefix: prefix.to_string(),
            replicas: 1,
            start_deadline: Duration::from_secs(100),
        }
    }

    pub fn subject(&self, event: &IntegrationEvent) -> String {
        format!("{}.{}", self.subject_prefix, event.nats_subject)
    }

    /// The servers of `url`: one, or a cluster's several separated by commas. The client
    /// takes a single address per string, and a cluster must survive the loss of any one.
    pub fn servers(&self) -> Vec<&str> {
        self.url.split(',').map(str::trim).filter(|server| !server.is_empty()).collect()
    }
}

/// Whether a refusal to create the stream means JetStream is not ready yet, rather than that
/// the stream cannot be made (a bad name, subjects another stream holds). A cluster without a
/// leader leaves requests unanswered or says it is unavailable or has no peers for the
/// replicas; a server still removing a stream of the same name cannot create its store.
fn not_ready_yet(kind: CreateStreamErrorKind) -> bool {
    use async_nats::jetstream::ErrorCode;
    match kind {
        CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::JetStreamUnavailable => true,
        CreateStreamErrorKind::JetStream(error) => {
            [
                ErrorCode::CLUSTER_NOT_AVAILABLE,
                ErrorCode::CLUSTER_NOT_ACTIVE,
                ErrorCode::CLUSTER_NOT_ASSIGNED,
                ErrorCode::CLUSTER_NOT_LEADER,
                ErrorCode::CLUSTER_NO_PEERS,
            ]
            .contains(&error.error_code())
                || error.to_string().contains("error creating store")
        }
        _ => false,
    }
}

/// How long a start waits while nothing answers JetStream's API before it says the server has
/// no JetStream.
const NO_JETSTREAM_GRACE: Duration = Duration::from_secs(10);

/// A connected JetStream context with the stream ensured.
#[derive(Clone)]
pub struct Bus {
    pub config: BusConfig,
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
}

impl Bus {
    /// Connects and creates or updates the stream; safe to run from every replica at start-up.
    pub async fn connect(config: BusConfig) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect()
            .connect(config.servers())
            .await
            .map_err(|e| BusError::Connect { url: config.url.clone(), reason: e.to_string() })?;
        // The initial connect retries in the background; make a dead server an error now.
        client.flush().await.map_err(|e| BusError::Connect { url: config.url.clone(), reason: e.to_string() })?;
        let jetstream = jetstream::new(client.clone());
        let bus = Self { config, client, jetstream };
        bus.ensure_stream().await?;
        Ok(bus)
    }

    /// Connects to a stream that must exist already, leaving its configuration alone
    /// (operator tools must not change replicas or limits of a production stream).
    pub async fn connect_existing(config: BusConfig) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(config.servers())
            .await
            .map_err(|e| BusError::Connect { url: config.url.clone(), reason: e.to_string() })?;
        let jetstream = jetstream::new(client.clone());
        jetstream.get_stream(&config.stream).await.map_err(|e| BusError::Stream {
            stream: config.stream.clone(),
            reason: format!("{e} (start the relay once to create it)"),
        })?;
        Ok(Self { config, client, jetstream })
    }

    pub async fn ensure_stream(&self) -> Result<(), BusError> {
        let config = stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![format!("{}.>", self.config.subject_prefix)],
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas,
            // Long enough to absorb a relay's repeats after a crash or an outage.
            duplicate_window: Duration::from_secs(30 * 60),
            ..Default::default()
        };
        // A cluster answers only once its nodes have elected a leader, and a server may refuse
        // for a moment while it still removes an earlier stream of that name: such refusals
        // are waited out, up to the start deadline, so that every service started with the
        // cluster does not give up (and get restarted) while it elects.
        let started = tokio::time::Instant::now();
        let deadline = started + self.config.start_deadline;
        let mut pause = Duration::from_millis(100);
        loop {
            let refused = match self.jetstream.create_or_update_stream(config.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let not_yet = not_ready_yet(refused.kind());
            // Nobody answering JetStream's API at all is a server without JetStream, which no
            // wait cures (a server has JetStream on before it takes clients, and a cluster
            // electing its leader answers, or times out): a short grace, not the deadline.
            let no_jetstream = matches!(refused.kind(), CreateStreamErrorKind::JetStreamUnavailable);
            let give_up_at = if no_jetstream { deadline.min(started + NO_JETSTREAM_GRACE) } else { deadline };
            if !not_yet || tokio::time::Instant::now() + pause > give_up_at {
                let waited = (give_up_at - started).as_secs();
                let reason = if no_jetstream {
                    format!(
                        "{refused}: JetStream does not answer at {} (still after {waited} s); is the server \
                         started with JetStream enabled (`-js`, or `jetstream {{}}` in its configuration)?",
                        self.config.url
                    )
                } else if not_yet {
                    format!("{refused} (still after {waited} s of waiting for JetStream to be ready)")
                } else {
                    refused.to_string()
                };
                return Err(BusError::Stream { stream: self.config.stream.clone(), reason });
            }
            tracing::warn!(stream = %self.config.stream, error = %refused, retry_in_ms = pause.as_millis() as u64,
                "JetStream is not ready yet (a cluster electing its leader?); waiting for it");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// Deletes the stream (tests clean up after themselves).
    pub async fn delete_stream(&self) -> Result<(), BusError> {
        self.jetstream
            .delete_stream(&self.config.stream)
            .await
            .map_err(|e| BusError::Stream { stream: self.config.stream.clone(), reason: e.to_string() })?;
        Ok(())
    }
}

/// Something that reacts to integration events by writing to its own database, in the
/// transaction that also records the event as handled.
#[async_trait::async_trait]
pub trait IntegrationHandler: Send + Sync {
    /// Durable name: the JetStream consumer's and the dedup key.
    fn name(&self) -> &str;
    /// NATS subject filter below the prefix, e.g. `hearing.>`.
    fn filter(&self) -> &str;
    async fn handle(&self, tx: &mut DbTx, event: &IntegrationEvent) -> Result<(), String>;

    /// Handles the new events of one batch, in order, in one transaction. A handler whose
    /// work adds up across events (a counter) overrides it to write once per batch rather
    /// than once per event; a failure here makes the batch be handled again one by one.
    async fn handle_all(&self, tx: &mut DbTx, events: &[&IntegrationEvent]) -> Result<(), String> {
        for event in events {
            self.handle(tx, event).await?;
        }
        Ok(())
    }
}

/// Handles one event exactly once: the handler's writes and the handled mark commit
/// together, and an event already marked is skipped. Returns whether it was new.
pub async fn handle_once(
    store: &Store,
    handler: &dyn IntegrationHandler,
    event: &IntegrationEvent,
) -> Result<bool, BusError> {
    Ok(handle_batch(store, handler, std::slice::from_ref(event)).await? == 1)
}

/// Handles events that arrived together in one transaction: each once (the handled marks
/// commit with the handler's writes), and one commit for all, which is what lets a consumer
/// keep up with a surge of responses. Any failure rolls all of them back. Returns how many
/// were new.
pub async fn handle_batch(
    store: &Store,
    handler: &dyn IntegrationHandler,
    events: &[IntegrationEvent],
) -> Result<usize, BusError> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut tx = store.begin().await?;
    // One statement marks the whole batch: the events it marked are the new ones.
    let sql = format!(
        "INSERT INTO handled_events (consumer, event_id) VALUES {} ON CONFLICT DO NOTHING RETURNING event_id",
        crate::db::placeholders(tx.is_postgres(), events.len(), 2)
    );
    let marked: HashSet<String> = on_tx!(&mut tx, conn => {
        let mut query = sqlx::query_scalar::<_, String>(&sql);
        for event in events {
            query = query.bind(handler.name()).bind(event.id.to_string());
        }
        query.fetch_all(&mut **conn).await.map_err(StoreError::from)?.into_iter().collect()
    });
    // An event delivered twice in one batch is handled at its first place.
    let mut taken = HashSet::with_capacity(marked.len());
    let new: Vec<&IntegrationEvent> =
        events.iter().filter(|e| marked.contains(&e.id.to_string()) && taken.insert(e.id)).collect();
    if let Some(first) = new.first() {
        handler.handle_all(&mut tx, &new).await.map_err(|reason| BusError::Handler {
            consumer: handler.name().to_string(),
            event_id: first.id,
            reason,
        })?;
    }
    tx.commit().await.map_err(StoreError::from)?;
    agora_telemetry::metrics::global().events_handled(handler.name(), new.len() as u64);
    if let Some(last) = events.last() {
        agora_telemetry::metrics::global().consumer_position(handler.name(), last.position);
    }
    Ok(new.len())
}

/// The most events a consumer handles in one transaction.
const CONSUMER_BATCH: usize = 256;

/// How long a consumer whose pull met no responders waits before it pulls again.
const NO_RESPONDERS_PAUSE: Duration = Duration::from_millis(250);

/// Runs a durable pull consumer with explicit acks until `shutdown` resolves. A message is
/// acknowledged only after its effect committed; a crash before the ack means redelivery,
/// which [`handle_once`] turns into a no-op. Messages that have already arrived when one is
/// taken are handled with it in one transaction.
pub async fn consume(
    bus: &Bus,
    store: Store,
    handler: Arc<dyn IntegrationHandler>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), BusError> {
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(100);
    // A consumer runs as long as its service: a failed start, a NATS restart or a pull
    // stream that ends (missed heartbeats) means opening it again, not stopping.
    loop {
        let mut messages = match open_consumer(bus, handler.as_ref()).await {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot open the JetStream consumer yet");
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let mut errors_in_a_row = 0;
        loop {
            let next = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                next = messages.next() => next,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    errors_in_a_row += 1;
                    tracing::warn!(consumer = handler.name(), error = %e, "JetStream delivery error");
                    // A pull that met no responders (a cluster's consumer leader not elected
                    // yet, or moving) is lost, and the stream would pull again only once it
                    // missed a heartbeat, 30 s on. A CI surge on a new cluster waited so.
                    if e.kind() == consumer::pull::MessagesErrorKind::NoResponders {
                        tokio::select! {
                            _ = &mut shutdown => return Ok(()),
                            _ = tokio::time::sleep(NO_RESPONDERS_PAUSE) => {}
                        }
                        break;
                    }
                    if errors_in_a_row >= 3 {
                        break;
                    }
                    continue;
                }
                None => {
                    tracing::warn!(consumer = handler.name(), "JetStream message stream ended; opening it again");
                    break;
                }
            };
            errors_in_a_row = 0;
            let mut batch = vec![message];
            while batch.len() < CONSUMER_BATCH {
                match futures::FutureExt::now_or_never(messages.next()) {
                    Some(Some(Ok(message))) => batch.push(message),
                    _ => break,
                }
            }
            handle_messages(&store, handler.as_ref(), batch).await;
        }
    }
}

/// Handles messages that arrived together in one transaction and acknowledges them once it
/// committed; if that fails, one by one, so that one event that cannot be handled holds up
/// only itself.
async fn handle_messages(
    store: &Store,
    handler: &dyn IntegrationHandler,
    messages: Vec<async_nats::jetstream::Message>,
) {
    if messages.len() == 1 {
        return handle_each(store, handler, messages).await;
    }
    let mut events = Vec::with_capacity(messages.len());
    for message in &messages {
        match IntegrationEvent::from_message(
            message.subject.as_str(),
            message.headers.as_ref(),
            message.payload.clone(),
        ) {
            Ok(event) => events.push(event),
            // Such a message is skipped (and acknowledged) by the one-by-one path.
            Err(_) => return handle_each(store, handler, messages).await,
        }
    }
    let span = tracing::info_span!("consume", consumer = handler.name(), events = events.len());
    if let Some(traceparent) = events.first().and_then(|e| e.traceparent.as_ref()) {
        agora_telemetry::propagation::set_parent_from_traceparent(&span, traceparent, None);
    }
    use tracing::Instrument;
    match handle_batch(store, handler, &events).instrument(span).await {
        Ok(_) => {
            for message in messages {
                if let Err(e) = message.ack().await {
                    tracing::warn!(error = %e, "ack failed; the event will be redelivered and skipped as handled");
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, events = events.len(), "a batch of events failed; handling them one by one");
            handle_each(store, handler, messages).await;
        }
    }
}

async fn handle_each(store: &Store, handler: &dyn IntegrationHandler, messages: Vec<async_nats::jetstream::Message>) {
    for message in messages {
        handle_message(store, handler, message).await;
    }
}

async fn open_consumer(bus: &Bus, handler: &dyn IntegrationHandler) -> Result<consumer::pull::Stream, BusError> {
    let consumer_error = |reason: String| BusError::Consumer { consumer: handler.name().to_string(), reason };
    let stream = bus.jetstream.get_stream(&bus.config.stream).await.map_err(|e| consumer_error(e.to_string()))?;
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            handler.name(),
            consumer::pull::Config {
                durable_name: Some(handler.name().to_string()),
                ack_policy: consumer::AckPolicy::Explicit,
                filter_subject: format!("{}.{}", bus.config.subject_prefix, handler.filter()),
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| consumer_error(e.to_string()))?;
    consumer.messages().await.map_err(|e| consumer_error(e.to_string()))
}

/// Handles one delivered message and acknowledges it once its effect has committed.
async fn handle_message(store: &Store, handler: &dyn IntegrationHandler, message: async_nats::jetstream::Message) {
    use tracing::Instrument;
    match IntegrationEvent::from_message(message.subject.as_str(), message.headers.as_ref(), message.payload.clone()) {
        Ok(event) => {
            let span = tracing::info_span!("consume", consumer = handler.name(), event_type = %event.event_type, event_id = %event.id);
            if let Some(traceparent) = &event.traceparent {
                agora_telemetry::propagation::set_parent_from_traceparent(&span, traceparent, None);
            }
            if let Err(e) = handle_once(store, handler, &event).instrument(span).await {
                // Not acknowledged: JetStream redelivers after ack_wait.
                tracing::error!(error = %e, "event not handled; it will be redelivered");
                return;
            }
        }
        Err(e) => {
            tracing::error!(error = %e, subject = %message.subject, "skipping a message that is not an integration event")
        }
    }
    if let Err(e) = message.ack().await {
        tracing::warn!(error = %e, "ack failed; the event will be redelivered and skipped as handled");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(json: &str) -> CreateStreamErrorKind {
        CreateStreamErrorKind::JetStream(serde_json::from_str(json).expect("a JetStream API error"))
    }

    #[test]
    fn a_cluster_still_electing_is_waited_for_and_a_stream_that_cannot_be_made_is_not() {
        assert!(not_ready_yet(CreateStreamErrorKind::TimedOut), "no leader: the request goes unanswered");
        assert!(not_ready_yet(CreateStreamErrorKind::JetStreamUnavailable), "no responders yet");
        assert!(not_ready_yet(refusal(
            r#"{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}"#
        )));
        assert!(not_ready_yet(refusal(
            r#"{"code":500,"err_code":10005,"description":"no suitable peers for placement"}"#
        )));
        assert!(not_ready_yet(refusal(
            r#"{"code":500,"err_code":10049,"description":"error creating store for stream: file exists"}"#
        )));
        assert!(!not_ready_yet(refusal(
            r#"{"code":400,"err_code":10065,"description":"subjects overlap with an existing stream"}"#
        )));
        assert!(!not_ready_yet(CreateStreamErrorKind::InvalidStreamName));
    }

    #[test]
    fn a_cluster_url_names_each_server() {
        let config = BusConfig::new("nats://a:4222, nats://b:4222,nats://c:4222", "agora");
        assert_eq!(config.servers(), vec!["nats://a:4222", "nats://b:4222", "nats://c:4222"]);
        assert_eq!(BusConfig::new("nats://a:4222", "agora").servers(), vec!["nats://a:4222"]);
    }

    #[test]
    fn headers_round_trip() {
        let event = IntegrationEvent {
            id: Uuid::now_v7(),
            event_type: "dk.agora.hearing.v1.HearingPublished".into(),
            source: "agora/hearing".into(),
            subject: "h-1".into(),
            nats_subject: "hearing.v1.published.h-1".into(),
            time: DateTime::parse_from_rfc3339("2026-11-22T10:00:00.123456Z")
                .map(|t| t.with_timezone(&Utc))
                .expect("time"),
            sequence: 3,
            position: 42,
            hash: "ab".into(),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            data: Bytes::from_static(b"\x0a\x01x"),
        };
        let headers = event.to_headers();
        let back = IntegrationEvent::from_message("hearing.v1.published.h-1", Some(&headers), event.data.clone())
            .expect("decodes");
        assert_eq!(back, event);
    }

    #[test]
    fn a_message_without_headers_names_what_is_missing() {
        let error = IntegrationEvent::from_message("x", None, Bytes::new()).unwrap_err();
        assert_eq!(error.to_string(), "integration event has no ce-id header");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// What a message carries comes back as the event it was made from; a message with
            /// any header missing or garbled is refused naming the header, never a panic.
            #[test]
            fn events_survive_the_wire_and_garbled_headers_are_named(
                event_type in "[a-z.]{1,30}",
                subject in "\\PC{0,30}",
                sequence in 0i64..i64::MAX,
                position in 0i64..i64::MAX,
                micros in 0i64..4_000_000_000_000_000,
                data in proptest::collection::vec(any::<u8>(), 0..64),
                garbled in 0usize..7,
                junk in "\\PC{0,20}",
            ) {
                let time = DateTime::from_timestamp_micros(micros).expect("in range");
                let event = IntegrationEvent {
                    id: Uuid::now_v7(),
                    event_type,
                    source: "agora/hearing".into(),
                    subject: subject.trim().to_string(),
                    nats_subject: "hearing.v1.x".into(),
                    time,
                    sequence,
                    position,
                    hash: "h".into(),
                    traceparent: None,
                    data: Bytes::from(data),
                };
                let headers = event.to_headers();
                let back = IntegrationEvent::from_message("hearing.v1.x", Some(&headers), event.data.clone())
                    .expect("an event read back");
                prop_assert_eq!(back.id, event.id);
                prop_assert_eq!(&back.subject, &event.subject);
                prop_assert_eq!(back.time, event.time);
                prop_assert_eq!((back.sequence, back.position), (event.sequence, event.position));
                prop_assert_eq!(&back.data, &event.data);

                let names = [headers::ID, headers::TIME, headers::SEQUENCE, headers::POSITION, headers::TYPE, headers::SOURCE, headers::SUBJECT];
                let name = names[garbled];
                let mut bad = HeaderMap::new();
                for (key, values) in headers.iter() {
                    if AsRef::<str>::as_ref(key) != name {
                        for value in values {
                            bad.insert(key.clone(), value.clone());
                        }
                    }
                }
                // Headers that must parse get junk; the others are simply missing.
                if [headers::ID, headers::TIME, headers::SEQUENCE, headers::POSITION].contains(&name)
                    && !junk.is_empty()
                    && junk.parse::<i64>().is_err()
                {
                    bad.insert(name, junk.as_str());
                }
                match IntegrationEvent::from_message("hearing.v1.x", Some(&bad), event.data.clone()) {
                    Err(WireError::Missing(missing)) => prop_assert_eq!(missing, name),
                    Err(WireError::Malformed(malformed, _)) => prop_assert_eq!(malformed, name),
                    Ok(_) => prop_assert!(false, "a message without a good {} was read", name),
                }
            }
        }
    }
}
