//! Command handling and policies: who may do what to a hearing, and the thin path from a
//! request through the aggregate to the store.

use std::sync::Arc;

use agora_auth::Principal;
use agora_auth::visibility::{HearingFacts, can_see_hearing};
use agora_eventstore::{
    AggregateStore, DbTx, EventContext, EventRepository, NewEvent, RecordedEvent, Store, StoreError,
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use cqrs_es::persist::PersistedEventRepository;
use cqrs_es::{AggregateContext, AggregateError, EventStore};
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::fields::{Violation, sanitize_file_name, sniff_content_type};
use crate::domain::invitees::{Pseudonymizer, RowError, parse_csv, parse_invitee};
use crate::domain::reference::{self, KleEntry, Reference, ReferenceCommand, ReferenceError, ReferenceItem};
use crate::domain::{
    Hearing, HearingChanges, HearingCommand, HearingError, HearingStatus, Invitee, InviteeKind, StoredFile,
};
use crate::projections::READ_MODEL;

/// Why a request was not carried out; the gRPC adapter maps each to its status code.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    PermissionDenied(String),
    #[error("you must be logged in to {0}")]
    Unauthenticated(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("invalid input: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Violation>),
    #[error("the hearing was changed by someone else at the same time; reload and try again")]
    Conflict,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<HearingError> for AppError {
    fn from(e: HearingError) -> Self {
        match e {
            HearingError::NotFound => AppError::NotFound("hearing".into()),
            HearingError::AlreadyExists => AppError::FailedPrecondition("the hearing already exists".into()),
            e @ HearingError::NotAllowedInState { .. } => AppError::FailedPrecondition(e.to_string()),
            HearingError::Invalid(v) => AppError::Invalid(v),
        }
    }
}

impl From<ReferenceError> for AppError {
    fn from(e: ReferenceError) -> Self {
        match e {
            ReferenceError::Invalid(v) => AppError::Invalid(v),
            ReferenceError::NotFound => AppError::NotFound("reference data".into()),
        }
    }
}

impl<T: std::error::Error + Into<AppError>> From<AggregateError<T>> for AppError {
    fn from(e: AggregateError<T>) -> Self {
        match e {
            AggregateError::UserError(e) => e.into(),
            AggregateError::AggregateConflict => AppError::Conflict,
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<agora_vault::VaultError> for AppError {
    fn from(e: agora_vault::VaultError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => AppError::Conflict,
            other => AppError::Internal(other.to_string()),
        }
    }
}

/// The hearing domain's pseudonyms come from the shared keyed hash, so that identity computes
/// the same references when an invited person logs in.
pub type KeyedPseudonymizer = agora_vault::KeyedHash;

impl Pseudonymizer for agora_vault::KeyedHash {
    fn person_reference(&self, cpr: &str) -> String {
        agora_vault::KeyedHash::person_reference(self, cpr)
    }

    fn company_reference(&self, cvr: &str) -> String {
        agora_vault::KeyedHash::company_reference(self, cvr)
    }

    fn email_reference(&self, email: &str) -> String {
        agora_vault::KeyedHash::email_reference(self, email)
    }
}

/// The time source; tests set it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// A file as uploaded, before checks.
pub struct Upload {
    pub field: String,
    pub file_name: String,
    pub content: Bytes,
}

/// The outcome of a CSV import: who was added, and each row that was not.
#[derive(Debug)]
pub struct ImportReport {
    pub added: usize,
    pub already_invited: usize,
    pub errors: Vec<RowError>,
}

/// An entry of a hearing's audit trail: who did what, when.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub position: i64,
    pub sequence: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub actor: String,
    pub command: String,
    pub recorded_at: DateTime<Utc>,
    pub payload: serde_json::Value,
    pub hash: String,
}

/// The hearing service's application layer.
#[derive(Clone)]
pub struct HearingApp {
    pub store: Store,
    hearings: Arc<AggregateStore<Hearing>>,
    references: Arc<AggregateStore<Reference>>,
    files: Arc<dyn ObjectStore>,
    pseudonymizer: Arc<KeyedPseudonymizer>,
    /// The vault that seals what the hearing holds of people (invitees' names and addresses).
    keys: Arc<dyn agora_vault::PersonKeys>,
    clock: Clock,
}

/// Long-running hearings collect many events (invitees, files); load from a snapshot.
const SNAPSHOT_EVERY: usize = 50;

/// How often a command meeting another writer's event is decided again before it is refused.
const COMMAND_ATTEMPTS: u32 = 3;

fn actor(principal: &Principal) -> EventContext {
    EventContext::for_actor(format!("user:{}", principal.user_id))
}

fn parse_id(id: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(id)
        .map_err(|_| AppError::Invalid(vec![Violation::new("hearing_id", format!("'{id}' er ikke et gyldigt id"))]))
}

impl HearingApp {
    pub fn new(
        store: Store,
        files: Arc<dyn ObjectStore>,
        pseudonym_key: &[u8],
        keys: Arc<dyn agora_vault::PersonKeys>,
        clock: Clock,
    ) -> Self {
        let hearings = EventRepository::aggregate_store::<Hearing>(store.clone(), Some(SNAPSHOT_EVERY), Vec::new());
        let references = EventRepository::aggregate_store::<Reference>(store.clone(), None, Vec::new());
        Self {
            store,
            hearings: Arc::new(hearings),
            references: Arc::new(references),
            files,
            pseudonymizer: Arc::new(KeyedPseudonymizer::new(pseudonym_key)),
            keys,
            clock,
        }
    }

    /// Seals what invitees' labels and addresses say of the people they name, for them.
    async fn seal_invitees(&self, hearing: Uuid, invitees: &mut [Invitee]) -> Result<(), AppError> {
        for invitee in invitees {
            let owner = agora_vault::KeyOwner::for_reference(&invitee.reference, hearing)
                .or_else(|| agora_vault::KeyOwner::for_company(&invitee.reference, hearing));
            let Some(owner) = owner else { continue };
            let key = self.keys.key_or_create(&owner).await?;
            invitee.label = key.seal(&invitee.label)?;
            if let Some(address) = &invitee.address {
                invitee.address = Some(key.seal(address)?);
            }
        }
        Ok(())
    }

    /// The hearing with its invitees' labels and addresses opened (or shown as erased).
    pub async fn reveal_invitees(&self, mut hearing: Hearing) -> Result<Hearing, AppError> {
        for invitee in hearing.invitees.values_mut() {
            invitee.label = agora_vault::reveal_for_display(self.keys.as_ref(), &invitee.label).await?;
            if let Some(address) = &invitee.address {
                invitee.address = Some(agora_vault::reveal_for_display(self.keys.as_ref(), address).await?);
            }
        }
        Ok(hearing)
    }

    /// The same service with another clock (tests; demo data dated in the past).
    pub fn with_clock(&self, clock: Clock) -> Self {
        Self { clock, ..self.clone() }
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Runs a person's command: load, check who may, decide, commit. Returns the hearing after
    /// it, once the read model shows it (the dashboard or list read next).
    async fn execute(
        &self,
        id: Uuid,
        context: EventContext,
        authorize: impl Fn(&Hearing) -> Result<(), AppError>,
        command: HearingCommand,
    ) -> Result<Hearing, AppError> {
        let (_, after, written) = self.execute_tracked(id, context, authorize, command).await?;
        if written {
            self.store.await_read_model(READ_MODEL, <Hearing as cqrs_es::Aggregate>::TYPE, &id.to_string()).await;
        }
        self.reveal_invitees(after).await
    }

    /// Like `execute`, also returning the status before and whether anything was written,
    /// as decided in this one load-decide-commit (another replica may act in between two).
    ///
    /// A command that meets another writer's event between its load and its commit (the
    /// records service recording the case number, a colleague's change) is checked and
    /// decided again on the hearing as it is then, a few times, before it is refused as a
    /// conflict: nothing is overwritten unseen, and the owner is not sent back for a change
    /// that was not hers to see.
    async fn execute_tracked(
        &self,
        id: Uuid,
        context: EventContext,
        authorize: impl Fn(&Hearing) -> Result<(), AppError>,
        command: HearingCommand,
    ) -> Result<(HearingStatus, Hearing, bool), AppError> {
        let mut attempt = 1;
        loop {
            match self.execute_once(id, context.clone(), &authorize, command.clone()).await {
                Err(AppError::Conflict) if attempt < COMMAND_ATTEMPTS => attempt += 1,
                outcome => return outcome,
            }
        }
    }

    async fn execute_once(
        &self,
        id: Uuid,
        context: EventContext,
        authorize: &impl Fn(&Hearing) -> Result<(), AppError>,
        command: HearingCommand,
    ) -> Result<(HearingStatus, Hearing, bool), AppError> {
        let mut loaded = self.hearings.load_aggregate(&id.to_string()).await?;
        let hearing = loaded.aggregate();
        if !hearing.exists && !matches!(command, HearingCommand::Create { .. }) {
            return Err(AppError::NotFound("hearing".into()));
        }
        authorize(hearing)?;
        let before = hearing.status;
        let events = hearing.decide(command.clone())?;
        let mut after = hearing.clone();
        if events.is_empty() {
            return Ok((before, after, false));
        }
        for event in events.clone() {
            cqrs_es::Aggregate::apply(&mut after, event);
        }
        let metadata = context.with_command(command.name()).to_metadata();
        self.hearings.commit(events, loaded, metadata).await?;
        Ok((before, after, true))
    }

    /// The hearing as stored now (the source of truth, not a read model).
    pub async fn load(&self, id: Uuid) -> Result<Hearing, AppError> {
        let loaded = self.hearings.load_aggregate(&id.to_string()).await?;
        let mut loaded = loaded;
        let hearing = loaded.aggregate().clone();
        if !hearing.exists || hearing.status == HearingStatus::Deleted {
            return Err(AppError::NotFound("hearing".into()));
        }
        Ok(hearing)
    }

    fn facts(hearing: &Hearing, viewer: Option<&Principal>) -> HearingFacts {
        let (reviewer, invitee) = match viewer {
            Some(viewer) => {
                let refs = viewer.member_references();
                (hearing.reviewers.contains(&viewer.user_id), hearing.invitees.keys().any(|k| refs.contains(k)))
            }
            None => (false, false),
        };
        HearingFacts {
            published: hearing.status.is_published(),
            closed: hearing.closed,
            internal: hearing.internal(),
            viewer_is_owner: viewer.is_some_and(|v| v.user_id == hearing.owner),
            viewer_is_reviewer: reviewer,
            viewer_is_invitee: invitee,
        }
    }

    /// A hearing if `viewer` may see it; one they may not see does not exist for them.
    pub async fn get(&self, viewer: Option<&Principal>, id: &str) -> Result<Hearing, AppError> {
        let id = parse_id(id)?;
        let hearing = self.load(id).await?;
        let facts = Self::facts(&hearing, viewer);
        if !can_see_hearing(viewer, &facts) {
            return Err(AppError::NotFound("hearing".into()));
        }
        self.reveal_invitees(hearing).await
    }

    /// The owner and administrators manage a hearing; others are refused, or told it does
    /// not exist when they may not even see it.
    fn may_manage(principal: &Principal, hearing: &Hearing, action: &str) -> Result<(), AppError> {
        if principal.is_administrator() || principal.user_id == hearing.owner {
            return Ok(());
        }
        if !can_see_hearing(Some(principal), &Self::facts(hearing, Some(principal))) {
            return Err(AppError::NotFound("hearing".into()));
        }
        Err(AppError::PermissionDenied(format!("only the hearing's owner or an administrator may {action}")))
    }

    pub async fn create(&self, principal: &Principal, hearing_type_id: &str) -> Result<(Uuid, Hearing), AppError> {
        self.create_with_id(principal, hearing_type_id, Uuid::now_v7()).await
    }

    /// Creates a hearing under an id chosen by the caller, so that a retried create (or a
    /// re-run seed) finds the first one instead of making a second.
    pub async fn create_with_id(
        &self,
        principal: &Principal,
        hearing_type_id: &str,
        id: Uuid,
    ) -> Result<(Uuid, Hearing), AppError> {
        if !principal.is_employee() || !principal.can_create_hearings() {
            return Err(AppError::PermissionDenied(
                "only employees with the hearing creator role may create hearings".into(),
            ));
        }
        let hearing_type = match self.reference_item("hearing_type", hearing_type_id).await? {
            Some((ReferenceItem::HearingType(t), false)) => t,
            Some((_, true)) => {
                return Err(AppError::Invalid(vec![Violation::new(
                    "hearing_type_id",
                    format!("høringstypen '{hearing_type_id}' er udgået"),
                )]));
            }
            _ => {
                return Err(AppError::Invalid(vec![Violation::new(
                    "hearing_type_id",
                    format!("ukendt høringstype '{hearing_type_id}'"),
                )]));
            }
        };
        let hearing = self
            .execute(
                id,
                actor(principal),
                |_| Ok(()),
                HearingCommand::Create { hearing_type, owner: principal.user_id },
            )
            .await?;
        Ok((id, hearing))
    }

    pub async fn update(&self, principal: &Principal, id: &str, changes: HearingChanges) -> Result<Hearing, AppError> {
        let id = parse_id(id)?;
        let mut violations = Vec::new();
        if let Some(area) = changes.subject_area_id.as_deref().filter(|a| !a.is_empty()) {
            self.require_reference("subject_area", "subject_area_id", area, &mut violations).await?;
        }
        if let Some(area) = changes.city_area_id.as_deref().filter(|a| !a.is_empty()) {
            self.require_reference("city_area", "city_area_id", area, &mut violations).await?;
        }
        if let Some(kle) = changes.kle_number.as_deref().filter(|k| !k.is_empty())
            && crate::queries::kle_numbers(&self.store, kle, "", 1).await?.iter().all(|e| e.number != kle)
        {
            violations.push(Violation::new("kle_number", format!("'{kle}' er ikke et KLE-nummer")));
        }
        let now = self.now();
        if !violations.is_empty() {
            // Report the field rules' verdict too, so the caller sees every problem at once.
            let hearing = self.load(id).await?;
            Self::may_manage(principal, &hearing, "change it")?;
            if let Err(HearingError::Invalid(more)) = hearing.decide(HearingCommand::Update { changes, now }) {
                violations.extend(more);
            }
            return Err(AppError::Invalid(violations));
        }
        self.execute(
            id,
            actor(principal),
            |h| Self::may_manage(principal, h, "change it"),
            HearingCommand::Update { changes, now },
        )
        .await
    }

    async fn require_reference(
        &self,
        kind: &str,
        field: &str,
        id: &str,
        violations: &mut Vec<Violation>,
    ) -> Result<(), AppError> {
        match self.reference_item(kind, id).await? {
            Some((_, false)) => {}
            Some((_, true)) => violations.push(Violation::new(field, format!("'{id}' er udgået"))),
            None => violations.push(Violation::new(field, format!("ukendt værdi '{id}'"))),
        }
        Ok(())
    }

    pub async fn publish(&self, principal: &Principal, id: &str) -> Result<Hearing, AppError> {
        let id = parse_id(id)?;
        let now = self.now();
        self.execute(
            id,
            actor(principal),
            |h| Self::may_manage(principal, h, "publish it"),
            HearingCommand::Publish { now },
        )
        .await
    }

    pub async fn conclude(
        &self,
        principal: &Principal,
        id: &str,
        conclusion: Option<String>,
    ) -> Result<Hearing, AppError> {
        let id = parse_id(id)?;
        self.execute(
            id,
            actor(principal),
            |h| Self::may_manage(principal, h, "conclude it"),
            HearingCommand::Conclude { conclusion },
        )
        .await
    }

    pub async fn delete(&self, principal: &Principal, id: &str) -> Result<(), AppError> {
        let id = parse_id(id)?;
        let by_administrator = principal.is_administrator();
        self.execute(
            id,
            actor(principal),
            |h| Self::may_manage(principal, h, "delete it"),
            HearingCommand::Delete { by_administrator },
        )
        .await?;
        Ok(())
    }

    pub async fn reassign_owner(&self, principal: &Principal, id: &str, owner: &str) -> Result<Hearing, AppError> {
        let id = parse_id(id)?;
        let owner = Uuid::parse_str(owner)
            .map_err(|_| AppError::Invalid(vec![Violation::new("owner_id", "ikke et gyldigt bruger-id")]))?;
        let authorize = |_: &Hearing| {
            if principal.is_administrator() {
                Ok(())
            } else {
                Err(AppError::PermissionDenied("only an administrator may reassign a hearing's owner".into()))
            }
        };
        self.execute(id, actor(principal), authorize, HearingCommand::ReassignOwner { owner }).await
    }

    pub async fn set_reviewer(
        &self,
        principal: &Principal,
        id: &str,
        user: &str,
        add: bool,
    ) -> Result<Hearing, AppError> {
        let id = parse_id(id)?;
        let user = Uuid::parse_str(user)
            .map_err(|_| AppError::Invalid(vec![Violation::new("user_id", "ikke et gyldigt bruger-id")]))?;
        let command = if add { HearingCommand::AddReviewer { user } } else { HearingCommand::RemoveReviewer { user } };
        self.execute(id, actor(principal), |h| Self::may_manage(principal, h, "change its reviewers"), command).await
    }

    /// Invites people by identifier (e-mail, CPR, CVR, `group:…`, `user:…`); every bad
    /// identifier is named and nothing is added unless all are good.
    pub async fn invite(
        &self,
        principal: &Principal,
        id: &str,
        identifiers: &[(String, String)],
    ) -> Result<Hearing, AppError> {
        let id = parse_id(id)?;
        let mut invitees = Vec::new();
        let mut violations = Vec::new();
        for (i, (identifier, label)) in identifiers.iter().enumerate() {
            match parse_invitee(identifier, label, self.pseudonymizer.as_ref()) {
                Ok(mut invitee) if invitee.kind == InviteeKind::Group => {
                    let group_id = invitee.reference.trim_start_matches("group:").to_string();
                    match self.reference_item("invitation_group", &group_id).await? {
                        Some((ReferenceItem::InvitationGroup { name, .. }, false)) => {
                            invitee.label = name;
                            invitees.push(invitee);
                        }
                        Some((_, true)) => violations
                            .push(Violation::new(&format!("invitees[{i}]"), format!("gruppen '{group_id}' er udgået"))),
                        _ => violations.push(Violation::new(
                            &format!("invitees[{i}]"),
                            format!("ingen invitationsgruppe '{group_id}'"),
                        )),
                    }
                }
                Ok(invitee) => invitees.push(invitee),
                Err(message) => violations.push(Violation::new(&format!("invitees[{i}]"), message)),
            }
        }
        if !violations.is_empty() {
            return Err(AppError::Invalid(violations));
        }
        // Who may, before anything is sealed (sealing makes keys).
        Self::may_manage(principal, &self.load(id).await?, "invite to it")?;
        self.seal_invitees(id, &mut invitees).await?;
        self.execute(
            id,
            actor(principal),
            |h| Self::may_manage(principal, h, "invite to it"),
            HearingCommand::AddInvitees { invitees },
        )
        .await
    }

    /// Imports invitees from a CSV file: the good rows are added, each bad row reported.
    pub async fn import_invitees(&self, principal: &Principal, id: &str, csv: &[u8]) -> Result<ImportReport, AppError> {
        let hearing_id = parse_id(id)?;
        let text = std::str::from_utf8(csv)
            .map_err(|_| AppError::Invalid(vec![Violation::new("csv", "filen er ikke UTF-8-tekst")]))?;
        let (mut invitees, errors) = parse_csv(text, self.pseudonymizer.as_ref());
        let hearing = self.load(hearing_id).await?;
        Self::may_manage(principal, &hearing, "invite to it")?;
        self.seal_invitees(hearing_id, &mut invitees).await?;
        let before = hearing.invitees.len();
        let count = invitees.len();
        let after = self
            .execute(
                hearing_id,
                actor(principal),
                |h| Self::may_manage(principal, h, "invite to it"),
                HearingCommand::AddInvitees { invitees },
            )
            .await?;
        let added = after.invitees.len().saturating_sub(before);
        Ok(ImportReport { added, already_invited: count.saturating_sub(added), errors })
    }

    pub async fn remove_invitee(&self, principal: &Principal, id: &str, reference: &str) -> Result<Hearing, AppError> {
        let id = parse_id(id)?;
        let command = HearingCommand::RemoveInvitee { reference: reference.to_string() };
        self.execute(id, actor(principal), |h| Self::may_manage(principal, h, "change its invitees"), command).await
    }

    /// Stores a file for a field after checking its type by content and its size; the file
    /// is removed again if the hearing refuses it, so nothing is left half-written.
    pub async fn attach_file(
        &self,
        principal: &Principal,
        id: &str,
        upload: Upload,
    ) -> Result<(Hearing, StoredFile), AppError> {
        let hearing_id = parse_id(id)?;
        let hearing = self.load(hearing_id).await?;
        Self::may_manage(principal, &hearing, "attach files")?;
        let Some(content_type) = sniff_content_type(&upload.content).map(String::from) else {
            return Err(AppError::Invalid(vec![Violation::new(
                &upload.field,
                "filens type kan ikke genkendes ud fra indholdet",
            )]));
        };
        let file = StoredFile {
            id: Uuid::now_v7(),
            field: upload.field,
            name: sanitize_file_name(&upload.file_name),
            content_type,
            size: upload.content.len() as u64,
            sha256: hex::encode(Sha256::digest(&upload.content)),
        };
        // Check before writing anything: the aggregate's rule on a copy.
        hearing.decide(HearingCommand::AttachFile { file: file.clone() })?;
        let path = file_path(hearing_id, file.id);
        self.files
            .put(&path, upload.content.into())
            .await
            .map_err(|e| AppError::Internal(format!("cannot store the file: {e}")))?;
        let result = self
            .execute(
                hearing_id,
                actor(principal),
                |h| Self::may_manage(principal, h, "attach files"),
                HearingCommand::AttachFile { file: file.clone() },
            )
            .await;
        match result {
            Ok(hearing) => Ok((hearing, file)),
            Err(e) => {
                let _ = self.files.delete(&path).await;
                Err(e)
            }
        }
    }

    pub async fn remove_file(&self, principal: &Principal, id: &str, file_id: &str) -> Result<Hearing, AppError> {
        let hearing_id = parse_id(id)?;
        let file_id = Uuid::parse_str(file_id)
            .map_err(|_| AppError::Invalid(vec![Violation::new("file_id", "ikke et gyldigt fil-id")]))?;
        let command = HearingCommand::RemoveFile { file_id };
        // The content stays in the object store: the log refers to it, and erasure is a
        // separate, deliberate act.
        self.execute(hearing_id, actor(principal), |h| Self::may_manage(principal, h, "remove files"), command).await
    }

    /// A file's content, if the viewer may see its hearing.
    pub async fn read_file(
        &self,
        viewer: Option<&Principal>,
        id: &str,
        file_id: &str,
    ) -> Result<(StoredFile, Bytes), AppError> {
        let hearing = self.get(viewer, id).await?;
        self.file_of(&hearing, id, file_id).await
    }

    /// A hearing's file for another Agora service (the records service files it): no viewer,
    /// no visibility rule, only a hearing that exists.
    pub async fn read_file_for_service(&self, id: &str, file_id: &str) -> Result<(StoredFile, Bytes), AppError> {
        let hearing = self.load(parse_id(id)?).await?;
        self.file_of(&hearing, id, file_id).await
    }

    async fn file_of(&self, hearing: &Hearing, id: &str, file_id: &str) -> Result<(StoredFile, Bytes), AppError> {
        let hearing_id = parse_id(id)?;
        let file = hearing
            .files
            .iter()
            .find(|f| f.id.to_string() == file_id)
            .cloned()
            .ok_or_else(|| AppError::NotFound("file".into()))?;
        let bytes = self
            .files
            .get(&file_path(hearing_id, file.id))
            .await
            .map_err(|e| AppError::Internal(format!("cannot read the file: {e}")))?
            .bytes()
            .await
            .map_err(|e| AppError::Internal(format!("cannot read the file: {e}")))?;
        Ok((file, bytes))
    }

    /// Records the case number the records service opened for the hearing, in the caller's
    /// transaction (an integration handler's, which marks the event handled in the same
    /// commit). A hearing that is gone, or has the number already, gets nothing.
    pub async fn record_case_number_in(
        &self,
        tx: &mut DbTx,
        id: Uuid,
        case_number: String,
    ) -> Result<Vec<RecordedEvent>, AppError> {
        let mut loaded = self.hearings.load_aggregate(&id.to_string()).await?;
        let current = loaded.current_sequence;
        let hearing = loaded.aggregate();
        if !hearing.exists || hearing.status == HearingStatus::Deleted {
            return Ok(Vec::new());
        }
        let command = HearingCommand::RecordCaseNumber { case_number };
        let metadata = EventContext::for_actor("service:records").with_command(command.name()).to_metadata();
        let metadata = serde_json::to_value(metadata).map_err(|e| AppError::Internal(e.to_string()))?;
        let first = i64::try_from(current).unwrap_or(i64::MAX).saturating_add(1);
        let mut events = Vec::new();
        for (next, event) in (first..).zip(hearing.decide(command)?) {
            events.push(NewEvent {
                aggregate_type: <Hearing as cqrs_es::Aggregate>::TYPE.to_string(),
                aggregate_id: id.to_string(),
                sequence: next,
                event_type: cqrs_es::DomainEvent::event_type(&event),
                event_version: cqrs_es::DomainEvent::event_version(&event),
                payload: serde_json::value::to_raw_value(&event).map_err(|e| AppError::Internal(e.to_string()))?,
                metadata: metadata.clone(),
            });
        }
        Ok(self.store.append_in(tx, &events).await?)
    }

    /// Moves one hearing along the clock; safe to call from any number of replicas.
    /// Returns the move this call made, if it made one.
    pub async fn advance_clock(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(HearingStatus, HearingStatus)>, AppError> {
        let id = parse_id(id)?;
        let context = EventContext::for_actor("system:scheduler");
        let (before, after, written) =
            self.execute_tracked(id, context, |_| Ok(()), HearingCommand::AdvanceClock { now }).await?;
        Ok(written.then_some((before, after.status)))
    }

    /// Who did what, when, straight from the hearing's events.
    pub async fn audit_trail(&self, principal: &Principal, id: &str) -> Result<Vec<AuditEntry>, AppError> {
        let hearing_id = parse_id(id)?;
        let hearing = self.load(hearing_id).await.or_else(|e| match e {
            // Administrators may read the trail of a deleted hearing too.
            AppError::NotFound(_) if principal.is_administrator() => Ok(Hearing::default()),
            e => Err(e),
        })?;
        let reviewer = hearing.reviewers.contains(&principal.user_id);
        if !(principal.is_administrator() || principal.user_id == hearing.owner || reviewer) {
            return Err(AppError::PermissionDenied(
                "only the owner, reviewers and administrators may read the audit trail".into(),
            ));
        }
        let events = self.store.read_stream(<Hearing as cqrs_es::Aggregate>::TYPE, &hearing_id.to_string(), 0).await?;
        if events.is_empty() {
            return Err(AppError::NotFound("hearing".into()));
        }
        Ok(events.into_iter().map(audit_entry).collect())
    }

    // Reference data.

    fn require_administrator(principal: &Principal) -> Result<(), AppError> {
        if principal.is_administrator() {
            Ok(())
        } else {
            Err(AppError::PermissionDenied("only administrators may change reference data".into()))
        }
    }

    async fn execute_reference(
        &self,
        principal: &Principal,
        aggregate_id: &str,
        command: ReferenceCommand,
    ) -> Result<(), AppError> {
        Self::require_administrator(principal)?;
        let mut loaded = self.references.load_aggregate(aggregate_id).await?;
        let events = loaded.aggregate().decide(command)?;
        if events.is_empty() {
            return Ok(());
        }
        let metadata = actor(principal).with_command("ChangeReferenceData").to_metadata();
        self.references.commit(events, loaded, metadata).await?;
        self.store.await_read_model(READ_MODEL, <Reference as cqrs_es::Aggregate>::TYPE, aggregate_id).await;
        Ok(())
    }

    pub async fn define_reference(&self, principal: &Principal, item: ReferenceItem) -> Result<(), AppError> {
        let aggregate_id = item.aggregate_id();
        self.execute_reference(principal, &aggregate_id, ReferenceCommand::Define(item)).await
    }

    /// Defines an invitation group from identifiers (e-mail, CPR, CVR, `user:…`); CPR
    /// numbers become pseudonymous references before anything is stored.
    pub async fn define_invitation_group(
        &self,
        principal: &Principal,
        id: &str,
        name: &str,
        identifiers: &[(String, String)],
    ) -> Result<(), AppError> {
        Self::require_administrator(principal)?;
        let mut members = Vec::new();
        let mut violations = Vec::new();
        for (i, (identifier, label)) in identifiers.iter().enumerate() {
            match parse_invitee(identifier, label, self.pseudonymizer.as_ref()) {
                // Reference data has no person to seal for: the address is not kept there.
                Ok(member) => members.push(Invitee { address: None, ..member }),
                Err(message) => violations.push(Violation::new(&format!("members[{i}]"), message)),
            }
        }
        if !violations.is_empty() {
            return Err(AppError::Invalid(violations));
        }
        self.define_reference(
            principal,
            ReferenceItem::InvitationGroup { id: id.to_string(), name: name.to_string(), members },
        )
        .await
    }

    pub async fn retire_reference(&self, principal: &Principal, kind: &str, id: &str) -> Result<(), AppError> {
        self.execute_reference(principal, &reference::aggregate_id(kind, id), ReferenceCommand::Retire).await
    }

    pub async fn load_kle(&self, principal: &Principal, entries: Vec<KleEntry>) -> Result<usize, AppError> {
        let n = entries.len();
        self.execute_reference(principal, reference::KLE_AGGREGATE_ID, ReferenceCommand::LoadKle(entries)).await?;
        Ok(n)
    }

    /// One reference item from the source of truth, with whether it is retired.
    pub async fn reference_item(&self, kind: &str, id: &str) -> Result<Option<(ReferenceItem, bool)>, AppError> {
        let mut loaded = self.references.load_aggregate(&reference::aggregate_id(kind, id)).await?;
        let reference = loaded.aggregate();
        Ok(reference.item.clone().filter(|item| item.kind() == kind).map(|item| (item, reference.retired)))
    }

    /// Whether the log has any event yet (the demo seed runs on an empty store only once).
    pub async fn is_empty(&self) -> Result<bool, AppError> {
        let repo = EventRepository::new(self.store.clone());
        let kle = repo
            .get_events::<Reference>(reference::KLE_AGGREGATE_ID)
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?;
        Ok(kle.is_empty())
    }
}

fn file_path(hearing_id: Uuid, file_id: Uuid) -> ObjectPath {
    ObjectPath::from(format!("hearings/{hearing_id}/{file_id}"))
}

fn audit_entry(event: RecordedEvent) -> AuditEntry {
    let payload = event.payload_value().get("data").cloned().unwrap_or(serde_json::Value::Null);
    AuditEntry {
        position: event.position(),
        sequence: event.sequence,
        event_id: event.event_id,
        actor: event.metadata_str(agora_eventstore::metadata::keys::ACTOR).unwrap_or_default(),
        command: event.metadata_str(agora_eventstore::metadata::keys::COMMAND).unwrap_or_default(),
        event_type: event.event_type,
        recorded_at: event.recorded_at,
        payload,
        hash: event.hash,
    }
}

#[cfg(test)]
mod tests {
    use agora_auth::Capacity;

    use super::*;
    use crate::domain::fields::HearingType;

    fn app_on(store: Store) -> HearingApp {
        let now = DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z").map(|t| t.with_timezone(&Utc));
        let now = now.unwrap_or_else(|e| panic!("time: {e}"));
        HearingApp::new(
            store,
            Arc::new(object_store::memory::InMemory::new()),
            b"test-pseudonym-key",
            agora_vault::MemoryKeys::shared(),
            Arc::new(move || now),
        )
    }

    async fn drafted_by(app: &HearingApp, owner: &Principal) -> Uuid {
        let hearing_type = HearingType {
            id: "lokalplan".into(),
            name: "Lokalplan".into(),
            fields: HearingType::standard_fields(),
            ..Default::default()
        };
        let id = Uuid::now_v7();
        let create = HearingCommand::Create { hearing_type, owner: owner.user_id };
        app.execute_tracked(id, actor(owner), |_| Ok(()), create).await.unwrap_or_else(|e| panic!("create: {e}"));
        id
    }

    fn retitle(title: &str) -> HearingCommand {
        let changes =
            HearingChanges { fields: [("title".to_string(), title.to_string())].into(), ..Default::default() };
        HearingCommand::Update { changes, now: Utc::now() }
    }

    /// Another writer (the records service, an administrator) commits `command` on the hearing
    /// right now, from inside a command's check of who may: between its load and its commit.
    fn meanwhile(app: &HearingApp, id: Uuid, command: HearingCommand) {
        let context = EventContext::for_actor("service:records");
        let written = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(app.execute_once(id, context, &|_| Ok(()), command))
        });
        if let Err(e) = written {
            panic!("the other writer's command: {e}");
        }
    }

    async fn event_types(app: &HearingApp, id: Uuid) -> Vec<String> {
        let events = app.store.read_stream("hearing", &id.to_string(), 0).await;
        events.unwrap_or_else(|e| panic!("stream: {e}")).into_iter().map(|e| e.event_type).collect()
    }

    /// What came of Karen retitling her draft while another writer committed in between.
    struct Retitled {
        app: HearingApp,
        id: Uuid,
        outcome: Result<(HearingStatus, Hearing, bool), AppError>,
        /// The hearing as each check of who may saw it.
        checked: Vec<Hearing>,
    }

    /// Karen drafts a hearing and retitles it; at her `n`th check of who may (0 the first),
    /// between her load and her commit, another writer commits `other(n)` if it is given.
    async fn karen_retitles(store: Store, other: impl Fn(u32) -> Option<HearingCommand>) -> Retitled {
        let app = app_on(store);
        let karen = Principal::new(Uuid::now_v7(), Capacity::Employee).with_name("Karen");
        let id = drafted_by(&app, &karen).await;
        let checked = std::sync::Mutex::new(Vec::new());
        let authorize = |hearing: &Hearing| {
            let n = {
                let mut checked = checked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                checked.push(hearing.clone());
                checked.len() as u32 - 1
            };
            if let Some(command) = other(n) {
                meanwhile(&app, id, command);
            }
            HearingApp::may_manage(&karen, hearing, "change it")
        };
        let outcome = app.execute_tracked(id, actor(&karen), authorize, retitle("Karens titel")).await;
        let checked = checked.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        Retitled { app, id, outcome, checked }
    }

    const CASE_NUMBER: &str = "27.00.00-P20-1-26";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_command_that_meets_another_writers_event_is_decided_again_on_the_hearing_as_it_is_then() {
        for (store, _guard) in agora_eventstore::testing::both_backends().await {
            let record_case_number = HearingCommand::RecordCaseNumber { case_number: CASE_NUMBER.into() };
            let Retitled { app, id, outcome, checked } =
                karen_retitles(store, |n| (n == 0).then(|| record_case_number.clone())).await;
            let (_, after, written) =
                outcome.unwrap_or_else(|e| panic!("the owner's change is carried out, not refused: {e}"));
            assert!(written);
            let seen: Vec<Option<&str>> = checked.iter().map(|h| h.case_number.as_deref()).collect();
            assert_eq!(seen, [None, Some(CASE_NUMBER)], "checked once more, on the hearing as it is then");
            assert_eq!((after.title(), after.case_number.as_deref()), ("Karens titel", Some(CASE_NUMBER)));
            let stored = app.load(id).await.unwrap_or_else(|e| panic!("load: {e}"));
            assert_eq!((stored.title(), stored.case_number.as_deref()), ("Karens titel", Some(CASE_NUMBER)));
            assert_eq!(event_types(&app, id).await, ["HearingCreated", "CaseNumberRecorded", "HearingUpdated"]);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_command_decided_again_is_refused_when_the_other_writer_took_the_hearing_from_her() {
        for (store, _guard) in agora_eventstore::testing::both_backends().await {
            let lars = Uuid::now_v7();
            let Retitled { app, id, outcome, .. } =
                karen_retitles(store, |n| (n == 0).then_some(HearingCommand::ReassignOwner { owner: lars })).await;
            // Someone else's draft does not exist for her.
            assert!(matches!(outcome, Err(AppError::NotFound(_))), "{outcome:?}");
            let stored = app.load(id).await.unwrap_or_else(|e| panic!("load: {e}"));
            assert_eq!((stored.owner, stored.title()), (lars, ""), "nothing of the refused change was written");
            assert_eq!(event_types(&app, id).await, ["HearingCreated", "OwnerReassigned"]);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_command_that_meets_another_writer_every_time_is_refused_as_a_conflict() {
        for (store, _guard) in agora_eventstore::testing::both_backends().await {
            let Retitled { app, id, outcome, checked } =
                karen_retitles(store, |n| Some(retitle(&format!("Kollegaens titel {n}")))).await;
            assert!(matches!(outcome, Err(AppError::Conflict)), "{outcome:?}");
            assert_eq!(checked.len(), COMMAND_ATTEMPTS as usize);
            let stored = app.load(id).await.unwrap_or_else(|e| panic!("load: {e}"));
            let last = format!("Kollegaens titel {}", COMMAND_ATTEMPTS - 1);
            assert_eq!(stored.title(), last, "the colleague's last change stands");
            assert_eq!(event_types(&app, id).await.len(), 1 + COMMAND_ATTEMPTS as usize);
        }
    }
}
