//! The event feed over gRPC: a store's integration events in log order, for the gateway's
//! HTTP feed. It is served by every process with a store and services that publish, answers
//! only callers holding the service secret, and marks which events anyone may see.

use std::sync::Arc;
use std::time::Duration;

use agora_eventstore::relay::IntegrationMapper;
use agora_eventstore::{LogPosition, Store};
use agora_proto::feed::v1::event_feed_server::{EventFeed, EventFeedServer};
use agora_proto::feed::v1::{FeedEvent, ReadEventsRequest, ReadEventsResponse};
use tonic::{Request, Response, Status};

pub struct FeedGrpc {
    store: Store,
    mapper: Arc<dyn IntegrationMapper>,
    secret: agora_auth::grpc::ServiceSecret,
}

pub fn service(store: Store, mapper: Arc<dyn IntegrationMapper>, secret: &str) -> EventFeedServer<FeedGrpc> {
    EventFeedServer::new(FeedGrpc { store, mapper, secret: agora_auth::grpc::ServiceSecret::new(secret) })
}

/// A log position as the cursor a client holds: `<transaction>-<position>`.
pub fn cursor(log: LogPosition) -> String {
    format!("{}-{}", log.transaction, log.position)
}

pub fn parse_cursor(text: &str) -> Result<LogPosition, String> {
    if text.is_empty() {
        return Ok(LogPosition::START);
    }
    let (transaction, position) =
        text.split_once('-').ok_or_else(|| format!("cursor '{text}' is not one this feed gave"))?;
    match (transaction.parse(), position.parse()) {
        (Ok(transaction), Ok(position)) => Ok(LogPosition { transaction, position }),
        _ => Err(format!("cursor '{text}' is not one this feed gave")),
    }
}

/// Whether anyone may see a hearing event: the hearing is published, external and open.
fn public(event_type: &str, data: &[u8]) -> bool {
    use agora_proto::hearing::v1::HearingStatus as S;
    if !event_type.starts_with("dk.agora.hearing.") {
        return false;
    }
    match agora_proto::hearing_state(event_type, data) {
        Ok(state) => {
            let published = matches!(
                S::try_from(state.status),
                Ok(S::AwaitingStartDate | S::Active | S::AwaitingConclusion | S::Concluded)
            );
            published && !state.internal && !state.closed
        }
        Err(_) => false,
    }
}

#[tonic::async_trait]
impl EventFeed for FeedGrpc {
    async fn read_events(&self, request: Request<ReadEventsRequest>) -> Result<Response<ReadEventsResponse>, Status> {
        self.secret.check(request.metadata(), "the event feed")?;
        let request = request.into_inner();
        let mut after = parse_cursor(&request.after).map_err(Status::invalid_argument)?;
        let limit = match request.limit {
            0 => 100,
            n => n.min(1000) as usize,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(request.wait_ms.min(30_000)));
        let mut events = Vec::new();
        loop {
            // Registered before reading, so an append between the read and the wait is not missed.
            let appended = self.store.appended().notified();
            let batch = self
                .store
                .read_log_of(after, limit as i64, self.mapper.aggregates().as_deref())
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let exhausted = batch.len() < limit;
            for recorded in &batch {
                after = recorded.log;
                let Some(event) = self.mapper.map(recorded).await.map_err(Status::internal)? else { continue };
                if !request.type_prefixes.is_empty()
                    && !request.type_prefixes.iter().any(|p| event.event_type.starts_with(p))
                {
                    continue;
                }
                events.push(FeedEvent {
                    cursor: cursor(recorded.log),
                    id: event.id.to_string(),
                    public: public(&event.event_type, &event.data),
                    r#type: event.event_type,
                    source: event.source,
                    subject: event.subject,
                    time: event.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    sequence: event.sequence,
                    hash: event.hash,
                    data: event.data.to_vec(),
                    nats_subject: event.nats_subject,
                });
                if events.len() >= limit {
                    break;
                }
            }
            if !events.is_empty() || tokio::time::Instant::now() >= deadline {
                break;
            }
            if exhausted {
                // Another process may append to a shared PostgreSQL store, so poll as well.
                let _ = tokio::time::timeout_at(
                    deadline.min(tokio::time::Instant::now() + Duration::from_millis(500)),
                    appended,
                )
                .await;
            }
        }
        Ok(Response::new(ReadEventsResponse { events, cursor: cursor(after) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_goes_out_and_comes_back_as_the_same_position() {
        let log = LogPosition { transaction: 812, position: 42 };
        assert_eq!(parse_cursor(&cursor(log)), Ok(log));
        assert_eq!(parse_cursor(""), Ok(LogPosition::START));
        assert!(parse_cursor("42").is_err());
        assert!(parse_cursor("a-b").unwrap_err().contains("'a-b'"));
    }

    proptest::proptest! {
        /// Every cursor the feed gives comes back as its position; anything else a client sends
        /// is refused with words, never a panic.
        #[test]
        fn cursors_round_trip_and_anything_else_is_refused(
            // Transaction ids and positions start at 0 (LogPosition::START).
            transaction in 0..=i64::MAX,
            position in 0..=i64::MAX,
            text in "\\PC{0,40}",
        ) {
            let log = LogPosition { transaction, position };
            proptest::prop_assert_eq!(parse_cursor(&cursor(log)), Ok(log));
            if let Err(message) = parse_cursor(&text) {
                proptest::prop_assert!(message.contains("is not one this feed gave"));
            }
        }
    }
}
