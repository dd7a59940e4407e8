//! The records service on the bus: it plans steps from the hearing service's integration
//! events, and publishes its own (case opened, hearing journalized) for the hearing and
//! response services and anyone else.

use agora_eventstore::jetstream::{IntegrationEvent, IntegrationHandler};
use agora_eventstore::relay::IntegrationMapper;
use agora_eventstore::{DbTx, RecordedEvent, Store};
use agora_proto::hearing::v1 as hearing_pb;
use agora_proto::records::v1 as pb;
use bytes::Bytes;
use prost::Message;

use crate::domain::{HearingChange, HearingFacts, Journal, Policy};
use crate::store::{self, JOURNAL_AGGREGATE, JournalEvent};

pub const SOURCE: &str = "agora/records";
pub const ACTOR: &str = "service:records";

/// The facts of a hearing state as the hearing service publishes it.
pub fn facts(state: &hearing_pb::HearingState) -> HearingFacts {
    HearingFacts {
        hearing_id: state.hearing_id.clone(),
        status: agora_proto::hearing_status_name(state.status).to_string(),
        title: state.title.clone(),
        esdh_title: state.esdh_title.clone(),
        owner_id: state.owner_id.clone(),
        kle_number: state.kle_number.clone(),
        start_date: state.start_date.clone(),
        deadline: state.deadline.clone(),
        texts: state.texts.iter().map(|t| (t.key.clone(), t.label.clone(), t.text.clone())).collect(),
        files: state.files.iter().map(|f| (f.file_id.clone(), f.name.clone())).collect(),
    }
}

/// Plans a hearing's steps from its events.
pub struct HearingJournalHandler {
    pub store: Store,
    pub policy: Policy,
}

#[async_trait::async_trait]
impl IntegrationHandler for HearingJournalHandler {
    fn name(&self) -> &str {
        "records-hearings"
    }

    fn filter(&self) -> &str {
        "hearing.v1.>"
    }

    async fn handle(&self, tx: &mut DbTx, event: &IntegrationEvent) -> Result<(), String> {
        let message = event.event_type.rsplit('.').next().unwrap_or_default();
        let state = agora_proto::hearing_state(&event.event_type, &event.data)?;
        let change = match message {
            "HearingConcluded" => HearingChange::Concluded {
                conclusion: hearing_pb::HearingConcluded::decode(event.data.clone())
                    .map_err(|e| format!("not a HearingConcluded: {e}"))?
                    .conclusion,
            },
            "OwnerReassigned" => HearingChange::OwnerReassigned,
            "HearingDeleted" => HearingChange::Deleted,
            _ => HearingChange::Other,
        };
        let hearing_id = state.hearing_id.clone();
        let (mut journal, sequence) = store::journal_in(tx, &hearing_id)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_else(|| (Journal::new(&hearing_id), 0));
        // A redelivered older event must not plan from an older state.
        if event.sequence <= journal.hearing_sequence {
            return Ok(());
        }
        journal.hearing_sequence = event.sequence;
        let steps = journal.plan(&change, &facts(&state), &self.policy);
        store::plan_in(&self.store, tx, &hearing_id, steps, ACTOR).await.map_err(|e| e.to_string())?;
        store::save_journal_in(tx, &journal, sequence).await.map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// The records service's integration events (proto/agora/records/v1/events.proto).
pub struct RecordsIntegration;

#[async_trait::async_trait]
impl IntegrationMapper for RecordsIntegration {
    async fn map(&self, event: &RecordedEvent) -> Result<Option<IntegrationEvent>, String> {
        if event.aggregate_type != JOURNAL_AGGREGATE {
            return Ok(None);
        }
        let journal_event: JournalEvent = event.decode().map_err(|e| e.to_string())?;
        let at = event.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let hearing_id = event.aggregate_id.clone();
        let (subject, message, data) = match journal_event {
            JournalEvent::CaseOpened { case_number, .. } => (
                "case_opened",
                "CaseOpened",
                pb::CaseOpened { hearing_id: hearing_id.clone(), case_number, opened_at: at }.encode_to_vec(),
            ),
            JournalEvent::HearingJournalized { case_number, documents } => (
                "hearing_journalized",
                "HearingJournalized",
                pb::HearingJournalized {
                    hearing_id: hearing_id.clone(),
                    case_number,
                    journalized_at: at,
                    documents: i32::try_from(documents).unwrap_or(i32::MAX),
                }
                .encode_to_vec(),
            ),
        };
        Ok(Some(IntegrationEvent::from_recorded(
            event,
            format!("dk.agora.records.v1.{message}"),
            SOURCE,
            format!("records.v1.{subject}.{hearing_id}"),
            Bytes::from(data),
        )))
    }

    fn aggregates(&self) -> Option<Vec<&'static str>> {
        Some(vec![JOURNAL_AGGREGATE])
    }
}
