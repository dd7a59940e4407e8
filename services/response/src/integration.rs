//! Maps the response service's domain events to its versioned integration events
//! (proto/agora/response/v1/events.proto): the response's public facts after each event,
//! never its text.

use agora_eventstore::jetstream::IntegrationEvent;
use agora_eventstore::relay::IntegrationMapper;
use agora_eventstore::{RecordedEvent, Store};
use agora_proto::response::v1 as pb;
use bytes::Bytes;
use cqrs_es::Aggregate;
use prost::Message;

use crate::domain::{AGGREGATE_TYPE, OnBehalfOf, Response, ResponseEvent};

pub const SOURCE: &str = "agora/response";

pub struct ResponseIntegration {
    store: Store,
}

impl ResponseIntegration {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The response after `event`: a submission says everything itself; later events are
    /// applied to the stream read up to them (responses have few events).
    async fn state_after(&self, event: &RecordedEvent, domain_event: ResponseEvent) -> Result<Response, String> {
        let mut response = Response::default();
        if !matches!(domain_event, ResponseEvent::ResponseSubmitted { .. }) {
            let earlier =
                self.store.read_stream(AGGREGATE_TYPE, &event.aggregate_id, 0).await.map_err(|e| e.to_string())?;
            for earlier in earlier.into_iter().take_while(|e| e.sequence < event.sequence) {
                response.apply(earlier.decode().map_err(|e| e.to_string())?);
            }
        }
        response.apply(domain_event);
        Ok(response)
    }
}

/// The public facts of a response.
pub fn response_state(response_id: &str, response: &Response) -> pb::ResponseState {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).unwrap_or_default()
    };
    pb::ResponseState {
        response_id: response_id.to_string(),
        hearing_id: response.hearing_id.to_string(),
        number: response.number,
        author_id: response.author.strip_prefix("user:").unwrap_or(&response.author).to_string(),
        status: response.status.as_str().to_string(),
        receipt_sha256: response.content_sha256.clone(),
        accepted_at: time(response.accepted_at),
        registered_by_owner: response.registered_by_owner,
        on_behalf_of: match response.on_behalf_of {
            Some(OnBehalfOf::Company { .. }) => "company".into(),
            Some(OnBehalfOf::Organisation { .. }) => "organisation".into(),
            None => String::new(),
        },
        attachments: i32::try_from(response.attachments.len()).unwrap_or(i32::MAX),
    }
}

fn encode(event: &ResponseEvent, state: pb::ResponseState) -> (&'static str, &'static str, Vec<u8>) {
    use ResponseEvent as E;
    let response = Some(state);
    let time = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    match event {
        E::ResponseSubmitted { .. } => {
            ("submitted", "ResponseSubmitted", pb::ResponseSubmitted { response }.encode_to_vec())
        }
        E::ResponseEdited { at, .. } => {
            ("edited", "ResponseEdited", pb::ResponseEdited { response, edited_at: time(at) }.encode_to_vec())
        }
        E::ResponseWithdrawn { at } => (
            "withdrawn",
            "ResponseWithdrawn",
            pb::ResponseWithdrawn { response, withdrawn_at: time(at) }.encode_to_vec(),
        ),
        E::ResponseApproved { .. } => {
            ("approved", "ResponseApproved", pb::ResponseApproved { response }.encode_to_vec())
        }
        E::ResponseDeclined { reason, .. } => {
            ("declined", "ResponseDeclined", pb::ResponseDeclined { response, reason: reason.clone() }.encode_to_vec())
        }
        E::ResponseRedacted { reason, .. } => {
            ("redacted", "ResponseRedacted", pb::ResponseRedacted { response, reason: reason.clone() }.encode_to_vec())
        }
        E::ResponseReplied { .. } => ("replied", "ResponseReplied", pb::ResponseReplied { response }.encode_to_vec()),
    }
}

#[async_trait::async_trait]
impl IntegrationMapper for ResponseIntegration {
    async fn map(&self, event: &RecordedEvent) -> Result<Option<IntegrationEvent>, String> {
        if event.aggregate_type != AGGREGATE_TYPE {
            return Ok(None);
        }
        let domain_event: ResponseEvent = event.decode().map_err(|e| e.to_string())?;
        let response = self.state_after(event, domain_event.clone()).await?;
        let hearing_id = response.hearing_id;
        let (subject, message, data) = encode(&domain_event, response_state(&event.aggregate_id, &response));
        Ok(Some(IntegrationEvent::from_recorded(
            event,
            format!("dk.agora.response.v1.{message}"),
            SOURCE,
            format!("response.v1.{subject}.{hearing_id}"),
            Bytes::from(data),
        )))
    }

    fn aggregates(&self) -> Option<Vec<&'static str>> {
        Some(vec![AGGREGATE_TYPE])
    }
}
