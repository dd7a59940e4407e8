//! The response service's application layer: the intake for new responses, and commands
//! on existing ones (edit, withdraw, moderate) and on a hearing's response settings.

use std::sync::Arc;

use agora_auth::Principal;
use agora_eventstore::{AggregateStore, EventContext, EventRepository, NewEvent, Store, StoreError};
use chrono::{DateTime, Utc};
use cqrs_es::{AggregateContext, AggregateError, EventStore};
use uuid::Uuid;

use crate::domain::{Actor, HearingTerms, Response, ResponseCommand, ResponseError};
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

impl From<agora_vault::VaultError> for ResponseAppError {
    fn from(error: agora_vault::VaultError) -> Self {
        match error {
            agora_vault::VaultError::Erased(_) => {
                ResponseError::NotAllowed("the respondent's account has been erased".into()).into()
            }
            other => ResponseAppError::Storage(other.to_string()),
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
/// Records of employees seeing respondents' personal data (the read-access log).
pub const ACCESS_AGGREGATE: &str = "personal-data-access";

/// An employee saw respondents' personal data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataAccess {
    pub viewer: String,
    /// The respondents whose data was seen (`user:<id>`).
    pub subjects: Vec<String>,
    pub hearing_id: Uuid,
    /// `list`, or `export:<kind>`.
    pub purpose: String,
    pub at: DateTime<Utc>,
}
pub const REVIEW_AGGREGATE: &str = "review-comments";
pub const MAX_COMMENT: usize = 5_000;

/// A reviewer's comment on a hearing in draft.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReviewComment {
    pub by: String,
    pub text: String,
    pub at: DateTime<Utc>,
}

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
        Ok(crate::hearings::terms(&self.store, hearing_id).await?)
    }

    /// Whether `viewer` (`None`: the public) may see the hearing and its responses; a
    /// hearing not known here hides nothing.
    pub async fn may_see(&self, hearing_id: Uuid, viewer: Option<&Principal>) -> Result<bool, ResponseAppError> {
        let Some(terms) = self.terms(hearing_id).await? else { return Ok(true) };
        let mut tx = self.store.begin().await?;
        let seen = crate::hearings::may_see_in(&mut tx, &terms, viewer).await?;
        tx.rollback().await.map_err(StoreError::from)?;
        Ok(seen)
    }

    /// Loads a response, decides the command for `actor`, commits.
    pub async fn execute(
        &self,
        response_id: Uuid,
        actor: &Actor,
        command: ResponseCommand,
    ) -> Result<Response, ResponseAppError> {
        let mut loaded = self.responses.load_aggregate(&response_id.to_string()).await?;
        if !loaded.aggregate().exists {
            return Err(ResponseError::NotFound.into());
        }
        // Decided on the opened response; written sealed for its author.
        let response = self.reveal(loaded.aggregate().clone()).await?;
        let terms = self.terms(response.hearing_id).await?.ok_or(ResponseError::NotFound)?;
        let events = response.decide(command.clone(), actor, &terms)?;
        let mut after = response.clone();
        if events.is_empty() {
            return Ok(after);
        }
        let mut sealed = Vec::with_capacity(events.len());
        for event in events {
            cqrs_es::Aggregate::apply(&mut after, event.clone());
            sealed.push(
                crate::personal::seal_event(self.keys().as_ref(), &response, event)
                    .await
                    .map_err(ResponseAppError::from)?,
            );
        }
        let metadata = EventContext::for_actor(actor.reference.clone()).with_command(command.name()).to_metadata();
        self.responses.commit(sealed, loaded, metadata).await?;
        let stream = response_id.to_string();
        self.store
            .await_read_model(crate::projections::READ_MODEL, <Response as cqrs_es::Aggregate>::TYPE, &stream)
            .await;
        Ok(after)
    }

    /// A response with its personal data opened for display.
    pub async fn load(&self, response_id: Uuid) -> Result<Response, ResponseAppError> {
        let mut loaded = self.responses.load_aggregate(&response_id.to_string()).await?;
        let response = loaded.aggregate().clone();
        if !response.exists {
            return Err(ResponseError::NotFound.into());
        }
        self.reveal(response).await
    }

    /// Where the respondents' keys are.
    pub fn keys(&self) -> &crate::personal::Keys {
        self.intake.keys()
    }

    /// A hearing's responses as `viewer` may see them, with their personal data opened.
    #[allow(clippy::too_many_arguments)]
    pub async fn list_for_hearing_as(
        &self,
        viewer: Option<&Actor>,
        viewer_company: Option<&str>,
        hearing_id: Uuid,
        status: Option<crate::domain::ModerationStatus>,
        page: u32,
        page_size: u32,
    ) -> Result<(Vec<crate::projections::ResponseView>, i64), ResponseAppError> {
        let (views, total) = crate::projections::list_for_hearing_as(
            &self.store,
            viewer,
            viewer_company,
            hearing_id,
            status,
            page,
            page_size,
        )
        .await?;
        if let Some(viewer) = viewer {
            let seen: Vec<String> =
                views.iter().filter_map(|v| v.author.clone()).filter(|author| *author != viewer.reference).collect();
            self.record_access(viewer, hearing_id, seen, "list").await?;
        }
        let keys = self.keys().as_ref();
        let mut opened = Vec::with_capacity(views.len());
        for mut view in views {
            view.text = agora_vault::reveal_for_display(keys, &view.text).await?;
            view.on_behalf_of = crate::personal::reveal_on_behalf(keys, view.on_behalf_of).await?;
            opened.push(view);
        }
        Ok((opened, total))
    }

    /// Like [`ResponseApp::list_for_hearing_as`] for a viewer of no company.
    pub async fn list_for_hearing(
        &self,
        viewer: Option<&Actor>,
        hearing_id: Uuid,
        status: Option<crate::domain::ModerationStatus>,
        page: u32,
        page_size: u32,
    ) -> Result<(Vec<crate::projections::ResponseView>, i64), ResponseAppError> {
        self.list_for_hearing_as(viewer, None, hearing_id, status, page, page_size).await
    }

    /// Records that `viewer` saw the personal data of `subjects` (themselves aside), as an
    /// event: the read-access log.
    pub async fn record_access(
        &self,
        viewer: &Actor,
        hearing_id: Uuid,
        subjects: Vec<String>,
        purpose: &str,
    ) -> Result<(), ResponseAppError> {
        let mut subjects: Vec<String> = subjects.into_iter().filter(|s| *s != viewer.reference).collect();
        subjects.sort();
        subjects.dedup();
        if subjects.is_empty() {
            return Ok(());
        }
        let access = DataAccess {
            viewer: viewer.reference.clone(),
            subjects,
            hearing_id,
            purpose: purpose.into(),
            at: self.now(),
        };
        let payload = serde_json::json!({ "type": "PersonalDataViewed", "data": access });
        // A stream per access: nothing to wait for, nothing to collide with.
        let stream = Uuid::now_v7().to_string();
        self.append_event(ACCESS_AGGREGATE, stream, 1, "PersonalDataViewed", payload, viewer, "ViewPersonalData").await
    }

    /// Who saw the respondent's personal data; for administrators.
    pub async fn data_access(&self, actor: &Actor, subject: &str) -> Result<Vec<DataAccess>, ResponseAppError> {
        if !actor.administrator {
            return Err(ResponseError::NotAllowed("only administrators may read the read-access log".into()).into());
        }
        let rows = crate::projections::data_access(&self.store, subject).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(viewer, hearing, purpose, at)| {
                Some(DataAccess {
                    viewer,
                    subjects: vec![subject.to_string()],
                    hearing_id: Uuid::parse_str(&hearing).ok()?,
                    purpose,
                    at: DateTime::parse_from_rfc3339(&at).ok()?.with_timezone(&Utc),
                })
            })
            .collect())
    }

    /// Everything the response service holds about a respondent, readable (the right of
    /// access): their responses, and who saw them. Callers check who asks.
    pub async fn personal_data(&self, author: &str) -> Result<serde_json::Value, ResponseAppError> {
        let mut responses = Vec::new();
        for (response_id, hearing_id, number, status) in crate::projections::mine(&self.store, author).await? {
            let r = self.load(response_id).await?;
            let title = crate::hearings::content(&self.store, hearing_id).await?.map(|c| c.title).unwrap_or_default();
            responses.push(serde_json::json!({
                "response_id": response_id,
                "hearing_id": hearing_id,
                "hearing_title": title,
                "number": number,
                "status": status.as_str(),
                "text": r.text,
                "on_behalf_of": r.on_behalf_of,
                "attachments": r.attachments.iter().map(|a| &a.name).collect::<Vec<_>>(),
                "accepted_at": r.accepted_at,
                "edited_at": r.edited_at,
                "terms_version": r.terms_version,
                "reply": r.reply,
            }));
        }
        let seen_by: Vec<serde_json::Value> = crate::projections::data_access(&self.store, author)
            .await?
            .into_iter()
            .map(|(viewer, hearing, purpose, at)| serde_json::json!({ "viewer": viewer, "hearing_id": hearing, "purpose": purpose, "at": at }))
            .collect();
        Ok(serde_json::json!({ "responses": responses, "seen_by": seen_by }))
    }

    /// Opens a response's personal data for display (or shows it erased).
    pub async fn reveal(&self, response: Response) -> Result<Response, ResponseAppError> {
        crate::personal::reveal(self.keys().as_ref(), response).await.map_err(ResponseAppError::from)
    }

    /// Adds a review comment: reviewers and the owner, while the hearing is a draft.
    pub async fn add_review_comment(
        &self,
        actor: &Actor,
        hearing_id: Uuid,
        text: &str,
    ) -> Result<(), ResponseAppError> {
        let terms = self.terms(hearing_id).await?.ok_or(ResponseError::NotFound)?;
        let allowed =
            actor.administrator || actor.reference == terms.owner_id || terms.reviewers.contains(&actor.reference);
        if !allowed {
            return Err(
                ResponseError::NotAllowed("only the hearing's reviewers and owner may comment on it".into()).into()
            );
        }
        if !matches!(terms.status.as_str(), "Created" | "Draft") {
            return Err(ResponseError::NotAllowed(format!(
                "review comments are for drafts; the hearing is {}",
                terms.status
            ))
            .into());
        }
        let length = text.trim().chars().count();
        if length == 0 || length > MAX_COMMENT {
            return Err(ResponseError::Invalid(format!(
                "a comment is 1 to {MAX_COMMENT} characters (this one is {length})"
            ))
            .into());
        }
        let comment = ReviewComment { by: actor.reference.clone(), text: text.to_string(), at: self.now() };
        let payload = serde_json::json!({ "type": "ReviewCommentAdded", "data": comment });
        self.append_to(REVIEW_AGGREGATE, hearing_id, "ReviewCommentAdded", payload, actor, "AddReviewComment").await
    }

    /// The review comments of a hearing, for its reviewers and owner.
    pub async fn review_comments(
        &self,
        actor: &Actor,
        hearing_id: Uuid,
    ) -> Result<Vec<ReviewComment>, ResponseAppError> {
        let terms = self.terms(hearing_id).await?.ok_or(ResponseError::NotFound)?;
        if !(actor.administrator || actor.reference == terms.owner_id || terms.reviewers.contains(&actor.reference)) {
            return Err(ResponseError::NotAllowed(
                "only the hearing's reviewers and owner may read its review comments".into(),
            )
            .into());
        }
        let events = self.store.read_stream(REVIEW_AGGREGATE, &hearing_id.to_string(), 0).await?;
        Ok(events.iter().filter_map(|e| serde_json::from_value(e.payload_value()["data"].clone()).ok()).collect())
    }

    /// Appends one event to a per-hearing stream of this service (settings, comments).
    pub(crate) async fn append_to(
        &self,
        aggregate_type: &str,
        hearing_id: Uuid,
        event_type: &str,
        payload: serde_json::Value,
        actor: &Actor,
        command: &str,
    ) -> Result<(), ResponseAppError> {
        let stream = hearing_id.to_string();
        let previous = self.store.read_stream(aggregate_type, &stream, 0).await?;
        let sequence = previous.last().map(|e| e.sequence).unwrap_or(0) + 1;
        self.append_event(aggregate_type, stream, sequence, event_type, payload, actor, command).await
    }

    /// Appends one event at `sequence` of a stream of this service.
    #[allow(clippy::too_many_arguments)]
    async fn append_event(
        &self,
        aggregate_type: &str,
        stream: String,
        sequence: i64,
        event_type: &str,
        payload: serde_json::Value,
        actor: &Actor,
        command: &str,
    ) -> Result<(), ResponseAppError> {
        let metadata = EventContext::for_actor(actor.reference.clone()).with_command(command).to_metadata();
        self.store
            .append(
                &[NewEvent {
                    aggregate_type: aggregate_type.into(),
                    aggregate_id: stream,
                    sequence,
                    event_type: event_type.into(),
                    event_version: "1".into(),
                    payload: serde_json::value::to_raw_value(&payload)
                        .map_err(|e| ResponseAppError::Storage(e.to_string()))?,
                    metadata: serde_json::to_value(metadata).map_err(|e| ResponseAppError::Storage(e.to_string()))?,
                }],
                None,
            )
            .await?;
        Ok(())
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
        let event = serde_json::json!({ "type": "ResponseSettingsChanged", "data": { "auto_approve": auto_approve, "public": public } });
        self.append_to(
            SETTINGS_AGGREGATE,
            hearing_id,
            "ResponseSettingsChanged",
            event,
            actor,
            "ChangeResponseSettings",
        )
        .await?;
        self.store.await_read_model(crate::projections::READ_MODEL, SETTINGS_AGGREGATE, &hearing_id.to_string()).await;
        Ok(())
    }
}
