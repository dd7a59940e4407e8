//! Maps the hearing's domain events to its versioned integration events (proto/agora/hearing/v1/events.proto).
//!
//! Every integration event carries the hearing's state after it, so that a subscriber
//! never has to call back. The state is folded from the stream as the relay walks the log
//! in order; a cache keeps the last state per hearing, so each event is applied once.

use std::collections::HashMap;
use std::sync::Mutex;

use agora_eventstore::jetstream::IntegrationEvent;
use agora_eventstore::relay::IntegrationMapper;
use agora_eventstore::{RecordedEvent, Store};
use agora_proto::hearing::v1 as pb;
use bytes::Bytes;
use cqrs_es::Aggregate;
use prost::Message;

use crate::domain::fields::FieldKind;
use crate::domain::{Hearing, HearingEvent};
use crate::grpc::{file_to_pb, invitee_to_pb, status_to_pb};

pub const SOURCE: &str = "agora/hearing";
const CACHE_LIMIT: usize = 10_000;

pub struct HearingIntegration {
    store: Store,
    states: Mutex<HashMap<String, (i64, Hearing)>>,
}

impl HearingIntegration {
    pub fn new(store: Store) -> Self {
        Self { store, states: Mutex::new(HashMap::new()) }
    }

    /// The hearing's public state after `event`, from the cache when it holds the state just
    /// before. The cached hearing is taken out, changed and put back, never copied.
    async fn state_after(&self, event: &RecordedEvent, domain_event: HearingEvent) -> Result<pb::HearingState, String> {
        let cached = self.states.lock().ok().and_then(|mut states| match states.remove(&event.aggregate_id) {
            Some((sequence, hearing)) if sequence == event.sequence - 1 => Some(hearing),
            _ => None,
        });
        let mut hearing = match cached {
            Some(hearing) => hearing,
            None => {
                let mut hearing = Hearing::default();
                let earlier =
                    self.store.read_stream(Hearing::TYPE, &event.aggregate_id, 0).await.map_err(|e| e.to_string())?;
                for earlier in earlier.into_iter().take_while(|e| e.sequence < event.sequence) {
                    let decoded: HearingEvent = earlier.decode().map_err(|e| e.to_string())?;
                    hearing.apply(decoded);
                }
                hearing
            }
        };
        hearing.apply(domain_event);
        let state = hearing_state(&event.aggregate_id, &hearing);
        if let Ok(mut states) = self.states.lock() {
            if states.len() >= CACHE_LIMIT {
                states.clear();
            }
            states.insert(event.aggregate_id.clone(), (event.sequence, hearing));
        }
        Ok(state)
    }
}

pub fn hearing_state(id: &str, hearing: &Hearing) -> pb::HearingState {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default()
    };
    pb::HearingState {
        hearing_id: id.to_string(),
        status: status_to_pb(hearing.status) as i32,
        hearing_type_id: hearing.hearing_type.id.clone(),
        internal: hearing.internal(),
        closed: hearing.closed,
        title: hearing.title().to_string(),
        start_date: hearing.start_date.map(|d| d.to_string()).unwrap_or_default(),
        deadline: hearing.deadline.map(|d| d.to_string()).unwrap_or_default(),
        opens_at: time(hearing.opens_at()),
        closes_at: time(hearing.closes_at()),
        owner_id: hearing.owner.to_string(),
        subject_area_id: hearing.subject_area_id.clone().unwrap_or_default(),
        city_area_id: hearing.city_area_id.clone().unwrap_or_default(),
        kle_number: hearing.kle_number.clone().unwrap_or_default(),
        esdh_title: hearing.field("esdh_title").to_string(),
        case_number: hearing.case_number.clone().unwrap_or_default(),
        reviewer_ids: hearing.reviewers.iter().map(ToString::to_string).collect(),
        response_rules: Some((&hearing.hearing_type.responses).into()),
        texts: hearing
            .hearing_type
            .fields
            .iter()
            .filter(|rule| rule.kind == FieldKind::Text)
            .map(|rule| pb::HearingText {
                key: rule.key.clone(),
                label: rule.label.clone(),
                text: hearing.field(&rule.key).to_string(),
            })
            .collect(),
        files: hearing.files.iter().map(file_to_pb).collect(),
    }
}

/// The subject segment and encoded message of one event.
fn encode(event: &HearingEvent, state: pb::HearingState) -> (&'static str, &'static str, Vec<u8>) {
    use HearingEvent as E;
    let hearing = Some(state);
    match event {
        E::HearingCreated { .. } => ("created", "HearingCreated", pb::HearingCreated { hearing }.encode_to_vec()),
        E::HearingUpdated { changes } => {
            let mut changed: Vec<String> = changes.fields.keys().cloned().collect();
            let named = [
                ("subject_area_id", changes.subject_area_id.is_some()),
                ("city_area_id", changes.city_area_id.is_some()),
                ("kle_number", changes.kle_number.is_some()),
                ("contact", changes.contact.is_some()),
                ("start_date", changes.start_date.is_some()),
                ("deadline", changes.deadline.is_some()),
                ("closed", changes.closed.is_some()),
            ];
            changed.extend(named.iter().filter(|(_, set)| *set).map(|(name, _)| name.to_string()));
            let notify_participants = changes.notify_participants;
            ("updated", "HearingUpdated", pb::HearingUpdated { hearing, changed, notify_participants }.encode_to_vec())
        }
        E::HearingDraftReady => ("draft_ready", "HearingDraftReady", pb::HearingDraftReady { hearing }.encode_to_vec()),
        E::HearingDraftIncomplete => {
            ("draft_incomplete", "HearingDraftIncomplete", pb::HearingDraftIncomplete { hearing }.encode_to_vec())
        }
        E::HearingPublished { .. } => {
            ("published", "HearingPublished", pb::HearingPublished { hearing }.encode_to_vec())
        }
        E::HearingStarted { .. } => ("started", "HearingStarted", pb::HearingStarted { hearing }.encode_to_vec()),
        E::HearingClosed { .. } => ("closed", "HearingClosed", pb::HearingClosed { hearing }.encode_to_vec()),
        E::HearingReopened { .. } => ("reopened", "HearingReopened", pb::HearingReopened { hearing }.encode_to_vec()),
        E::HearingConcluded { conclusion } => (
            "concluded",
            "HearingConcluded",
            pb::HearingConcluded { hearing, conclusion: conclusion.clone() }.encode_to_vec(),
        ),
        E::HearingDeleted { .. } => ("deleted", "HearingDeleted", pb::HearingDeleted { hearing }.encode_to_vec()),
        E::OwnerReassigned { from, .. } => (
            "owner_reassigned",
            "OwnerReassigned",
            pb::OwnerReassigned { hearing, previous_owner_id: from.to_string() }.encode_to_vec(),
        ),
        E::ReviewerAdded { user } => (
            "reviewer_added",
            "ReviewerAdded",
            pb::ReviewerAdded { hearing, user_id: user.to_string() }.encode_to_vec(),
        ),
        E::ReviewerRemoved { user } => (
            "reviewer_removed",
            "ReviewerRemoved",
            pb::ReviewerRemoved { hearing, user_id: user.to_string() }.encode_to_vec(),
        ),
        E::InviteeAdded { invitee } => (
            "invitee_added",
            "InviteeAdded",
            pb::InviteeAdded {
                hearing,
                invitee: Some(pb::Invitee {
                    sealed_address: invitee.address.clone().unwrap_or_default(),
                    ..invitee_to_pb(invitee)
                }),
            }
            .encode_to_vec(),
        ),
        E::InviteeRemoved { reference } => (
            "invitee_removed",
            "InviteeRemoved",
            pb::InviteeRemoved { hearing, reference: reference.clone() }.encode_to_vec(),
        ),
        E::FileAttached { file } => (
            "file_attached",
            "FileAttached",
            pb::FileAttached { hearing, file: Some(file_to_pb(file)) }.encode_to_vec(),
        ),
        E::FileRemoved { file_id } => {
            ("file_removed", "FileRemoved", pb::FileRemoved { hearing, file_id: file_id.to_string() }.encode_to_vec())
        }
        E::CaseNumberRecorded { .. } => {
            ("case_number_recorded", "CaseNumberRecorded", pb::CaseNumberRecorded { hearing }.encode_to_vec())
        }
    }
}

#[async_trait::async_trait]
impl IntegrationMapper for HearingIntegration {
    async fn map(&self, event: &RecordedEvent) -> Result<Option<IntegrationEvent>, String> {
        if event.aggregate_type != Hearing::TYPE {
            return Ok(None);
        }
        let domain_event: HearingEvent = event
            .decode::<HearingEvent>()
            .map_err(|e| format!("event {} is not a hearing event: {e}", event.position()))?;
        let (segment, message, data) = {
            let state = self.state_after(event, domain_event.clone()).await?;
            encode(&domain_event, state)
        };
        Ok(Some(IntegrationEvent::from_recorded(
            event,
            format!("dk.agora.hearing.v1.{message}"),
            SOURCE,
            format!("hearing.v1.{segment}.{}", event.aggregate_id),
            Bytes::from(data),
        )))
    }

    fn aggregates(&self) -> Option<Vec<&'static str>> {
        Some(vec![Hearing::TYPE])
    }
}

/// Learns the case number the records service opened for a hearing (its `CaseOpened`), and
/// records it on the hearing: the read model and the hearing's own events show it from then on.
pub struct CaseNumberHandler {
    pub app: crate::app::HearingApp,
}

#[async_trait::async_trait]
impl agora_eventstore::jetstream::IntegrationHandler for CaseNumberHandler {
    fn name(&self) -> &str {
        "hearing-case-number"
    }

    fn filter(&self) -> &str {
        "records.v1.case_opened.>"
    }

    async fn handle(&self, tx: &mut agora_eventstore::DbTx, event: &IntegrationEvent) -> Result<(), String> {
        let opened = agora_proto::records::v1::CaseOpened::decode(event.data.clone())
            .map_err(|e| format!("not a CaseOpened: {e}"))?;
        let hearing =
            uuid::Uuid::parse_str(&opened.hearing_id).map_err(|_| format!("hearing id {:?}", opened.hearing_id))?;
        if opened.case_number.trim().is_empty() {
            return Err("CaseOpened without a case number".into());
        }
        self.app.record_case_number_in(tx, hearing, opened.case_number).await.map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// The hearing's documents for the records service (`HearingRecordsSource`), for callers with
/// the shared service secret.
pub struct HearingRecordsGrpc {
    app: crate::app::HearingApp,
    secret: agora_auth::grpc::ServiceSecret,
}

pub fn records_source(
    app: crate::app::HearingApp,
    secret: &str,
) -> pb::hearing_records_source_server::HearingRecordsSourceServer<HearingRecordsGrpc> {
    pb::hearing_records_source_server::HearingRecordsSourceServer::new(HearingRecordsGrpc {
        app,
        secret: agora_auth::grpc::ServiceSecret::new(secret),
    })
    .max_encoding_message_size(crate::grpc::MAX_MESSAGE)
}

#[tonic::async_trait]
impl pb::hearing_records_source_server::HearingRecordsSource for HearingRecordsGrpc {
    async fn read_hearing_file(
        &self,
        request: tonic::Request<pb::GetFileRequest>,
    ) -> Result<tonic::Response<pb::GetFileResponse>, tonic::Status> {
        self.secret.check(request.metadata(), "the hearing service's records source")?;
        let r = request.get_ref();
        let (file, content) =
            self.app.read_file_for_service(&r.hearing_id, &r.file_id).await.map_err(crate::grpc::status_of)?;
        Ok(tonic::Response::new(pb::GetFileResponse { file: Some(file_to_pb(&file)), content: content.to_vec() }))
    }
}
