//! The response service's application layer: the intake for new responses, and commands
//! on existing ones (edit, withdraw, moderate) and on a hearing's response settings.

use std::sync::Arc;

use agora_eventstore::{AggregateStore, EventContext, EventRepository, NewEvent, Store, StoreError};
use chrono::{DateTime, Utc};
use cqrs_es::{AggregateContext, AggregateError, EventStore};
use uuid::Uuid;

use crate::domain::{Actor, HearingTerms, Response, ResponseCommand, ResponseError};
use crate::hearings::terms_in;
use crate::intake::{Clock, Intake};

#[derive(Debug, thiserror::Error)]
pub enum ResponseAppError {
    #[error(transparent)]
    Domain(#[from] ResponseError),
    #[error("the response was changed by someone else at the same time; reload and try again")]
    Conflict,
    #[error("{0}")]
    Storage(String),
}

impl From<AggregateError<ResponseError>> for ResponseAppError {
    fn from(e: AggregateError<ResponseError>) -> Self {
        match e {
            AggregateError::UserError(e) => Self::Domain(e),
            AggregateError::AggregateConflict => Self::Conflict,
            other => Self::Storage(other.to_string()),
        }
    }
}

impl From<StoreError> for ResponseAppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => Self::Conflict,
            other => Self::Storage(other.to_string()),
        }
    }
}

#[derive(Clone)]
pub struct ResponseApp {
    pub store: Store,
    pub intake: Intake,
    responses: Arc<AggregateStore<Response>>,
    clock: Clock,
}

pub const SETTINGS_AGGREGATE: &str = "response-settings";

impl ResponseApp {
    pub fn new(store: Store, intake: Intake, clock: Clock) -> Self {
        let responses = Arc::new(EventRepository::aggregate_store::<Response>(store.clone(), None, Vec::new()));
        Self { store, intake, responses, clock }
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// The hearing's terms as the service knows them.
    pub async fn terms(&self, hearing_id: Uuid) -> Result<Option<HearingTerms>, ResponseAppError> {
        let mut tx = self.store.begin().await?;
        let terms = terms_in(&mut tx, &[hearing_id]).await?;
        tx.rollback().await.map_err(StoreError::from)?;
        Ok(terms.into_iter().next())
    }

    /// Loads a response, decides the command for `actor`, commits.
    pub async fn execute(
        &self,
        response_id: Uuid,
        actor: &Actor,
        command: ResponseCommand,
    ) -> Result<Response, ResponseAppError> {
        let mut loaded = self.responses.load_aggregate(&response_id.to_string()).await?;
        let response = loaded.aggregate();
        if !response.exists {
            return Err(ResponseError::NotFound.into());
        }
        let terms = self.terms(response.hearing_id).await?.ok_or(ResponseError::NotFound)?;
        let events = response.decide(command.clone(), actor, &terms)?;
        let mut after = response.clone();
        if events.is_empty() {
            return Ok(after);
        }
        for event in events.clone() {
            cqrs_es::Aggregate::apply(&mut after, event);
        }
        let metadata = EventContext::for_actor(actor.reference.clone()).with_command(command.name()).to_metadata();
        self.responses.commit(events, loaded, metadata).await?;
        Ok(after)
    }

    pub async fn load(&self, response_id: Uuid) -> Result<Response, ResponseAppError> {
        let mut loaded = self.responses.load_aggregate(&response_id.to_string()).await?;
        let response = loaded.aggregate().clone();
        if !response.exists {
            return Err(ResponseError::NotFound.into());
        }
        Ok(response)
    }

    /// The owner's settings for a hearing's responses: auto-approval and public display.
    pub async fn set_settings(
        &self,
        actor: &Actor,
        hearing_id: Uuid,
        auto_approve: bool,
        public: bool,
    ) -> Result<(), ResponseAppError> {
        let terms = self.terms(hearing_id).await?.ok_or(ResponseError::NotFound)?;
        if !(actor.administrator || actor.reference == terms.owner_id) {
            return Err(ResponseError::NotAllowed(
                "only the hearing's owner or an administrator may change its response settings".into(),
            )
            .into());
        }
        let stream = hearing_id.to_string();
        let previous = self.store.read_stream(SETTINGS_AGGREGATE, &stream, 0).await?;
        let event = serde_json::json!({ "type": "ResponseSettingsChanged", "data": { "auto_approve": auto_approve, "public": public } });
        let metadata =
            EventContext::for_actor(actor.reference.clone()).with_command("ChangeResponseSettings").to_metadata();
        self.store
            .append(
                &[NewEvent {
                    aggregate_type: SETTINGS_AGGREGATE.into(),
                    aggregate_id: stream,
                    sequence: previous.last().map(|e| e.sequence).unwrap_or(0) + 1,
                    event_type: "ResponseSettingsChanged".into(),
                    event_version: "1".into(),
                    payload: event,
                    metadata: serde_json::to_value(metadata).map_err(|e| ResponseAppError::Storage(e.to_string()))?,
                }],
                None,
            )
            .await?;
        Ok(())
    }
}
