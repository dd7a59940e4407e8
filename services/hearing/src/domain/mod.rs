//! The hearing aggregate: lifecycle, fields, roles. Pure: no I/O, time comes in commands.

pub mod clock;
pub mod fields;
pub mod invitees;
pub mod reference;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use fields::{FieldKind, HearingType, Violation, check_file, check_text};

/// Where a hearing is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash, PartialOrd, Ord)]
pub enum HearingStatus {
    #[default]
    Created,
    Draft,
    AwaitingStartDate,
    Active,
    AwaitingConclusion,
    Concluded,
    Deleted,
}

impl HearingStatus {
    pub const ALL: [HearingStatus; 7] = [
        Self::Created,
        Self::Draft,
        Self::AwaitingStartDate,
        Self::Active,
        Self::AwaitingConclusion,
        Self::Concluded,
        Self::Deleted,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Created => "Created",
            Self::Draft => "Draft",
            Self::AwaitingStartDate => "AwaitingStartDate",
            Self::Active => "Active",
            Self::AwaitingConclusion => "AwaitingConclusion",
            Self::Concluded => "Concluded",
            Self::Deleted => "Deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str().eq_ignore_ascii_case(s))
    }

    /// Published hearings are visible beyond their owner and reviewers.
    pub fn is_published(&self) -> bool {
        matches!(self, Self::AwaitingStartDate | Self::Active | Self::AwaitingConclusion | Self::Concluded)
    }
}

impl std::fmt::Display for HearingStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The person citizens can contact about the hearing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContactPerson {
    pub name: String,
    pub email: String,
    #[serde(default)]
    pub phone: String,
}

/// Someone invited to a closed (or any) hearing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitee {
    /// Stable identity of the invitation: `email:…`, `person:…` (a pseudonymous CPR
    /// reference, never the number), `company:…` (CVR) or `group:…`.
    pub reference: String,
    pub kind: InviteeKind,
    /// What the owner sees in the list (sealed for the invitee when it names a person).
    pub label: String,
    /// Where invitations go: the e-mail address, or the CPR or CVR number (Digital Post), sealed
    /// for the invitee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InviteeKind {
    Email,
    Person,
    Company,
    Group,
    /// A known user, by pseudonymous user id.
    User,
}

/// A document or image stored for a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    pub id: Uuid,
    pub field: String,
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
}

/// Changes to a hearing's metadata; `None` leaves a value as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HearingChanges {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_area_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city_area_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kle_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<ContactPerson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<bool>,
    /// The owner asks that invitees and respondents be told of this change (OS2agora's
    /// "notify on change"); not a change in itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notify_participants: bool,
}

impl HearingChanges {
    /// Nothing changes (asking to notify changes nothing by itself).
    pub fn is_empty(&self) -> bool {
        Self { notify_participants: false, ..self.clone() } == Self::default()
    }
}

/// What a caller asks of a hearing. Who may ask is decided before (see `app`).
#[derive(Debug, Clone)]
pub enum HearingCommand {
    Create {
        hearing_type: HearingType,
        owner: Uuid,
    },
    Update {
        changes: HearingChanges,
        now: DateTime<Utc>,
    },
    Publish {
        now: DateTime<Utc>,
    },
    /// The timed transitions: start date reached, deadline passed.
    AdvanceClock {
        now: DateTime<Utc>,
    },
    Conclude {
        conclusion: Option<String>,
    },
    Delete {
        by_administrator: bool,
    },
    ReassignOwner {
        owner: Uuid,
    },
    AddReviewer {
        user: Uuid,
    },
    RemoveReviewer {
        user: Uuid,
    },
    AddInvitees {
        invitees: Vec<Invitee>,
    },
    RemoveInvitee {
        reference: String,
    },
    AttachFile {
        file: StoredFile,
    },
    RemoveFile {
        file_id: Uuid,
    },
    RecordCaseNumber {
        case_number: String,
    },
}

impl HearingCommand {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Create { .. } => "CreateHearing",
            Self::Update { .. } => "UpdateHearing",
            Self::Publish { .. } => "PublishHearing",
            Self::AdvanceClock { .. } => "AdvanceClock",
            Self::Conclude { .. } => "ConcludeHearing",
            Self::Delete { .. } => "DeleteHearing",
            Self::ReassignOwner { .. } => "ReassignOwner",
            Self::AddReviewer { .. } => "AddReviewer",
            Self::RemoveReviewer { .. } => "RemoveReviewer",
            Self::AddInvitees { .. } => "AddInvitees",
            Self::RemoveInvitee { .. } => "RemoveInvitee",
            Self::AttachFile { .. } => "AttachFile",
            Self::RemoveFile { .. } => "RemoveFile",
            Self::RecordCaseNumber { .. } => "RecordCaseNumber",
        }
    }
}

/// Every state change of a hearing: the audit log and the source of every read model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum HearingEvent {
    HearingCreated {
        hearing_type: HearingType,
        owner: Uuid,
        fields: BTreeMap<String, String>,
    },
    HearingUpdated {
        changes: HearingChanges,
    },
    /// Metadata complete: Created → Draft (the records case opens now).
    HearingDraftReady,
    /// Metadata no longer complete while still unpublished: Draft → Created.
    HearingDraftIncomplete,
    HearingPublished {
        opens_at: DateTime<Utc>,
        closes_at: DateTime<Utc>,
    },
    HearingStarted {
        at: DateTime<Utc>,
    },
    HearingClosed {
        at: DateTime<Utc>,
    },
    /// The deadline moved later after it had passed: AwaitingConclusion → Active.
    HearingReopened {
        closes_at: DateTime<Utc>,
    },
    HearingConcluded {
        conclusion: String,
    },
    HearingDeleted {
        by_administrator: bool,
    },
    OwnerReassigned {
        from: Uuid,
        to: Uuid,
    },
    ReviewerAdded {
        user: Uuid,
    },
    ReviewerRemoved {
        user: Uuid,
    },
    InviteeAdded {
        invitee: Invitee,
    },
    InviteeRemoved {
        reference: String,
    },
    FileAttached {
        file: StoredFile,
    },
    FileRemoved {
        file_id: Uuid,
    },
    CaseNumberRecorded {
        case_number: String,
    },
}

impl DomainEvent for HearingEvent {
    fn event_type(&self) -> String {
        let name = match self {
            Self::HearingCreated { .. } => "HearingCreated",
            Self::HearingUpdated { .. } => "HearingUpdated",
            Self::HearingDraftReady => "HearingDraftReady",
            Self::HearingDraftIncomplete => "HearingDraftIncomplete",
            Self::HearingPublished { .. } => "HearingPublished",
            Self::HearingStarted { .. } => "HearingStarted",
            Self::HearingClosed { .. } => "HearingClosed",
            Self::HearingReopened { .. } => "HearingReopened",
            Self::HearingConcluded { .. } => "HearingConcluded",
            Self::HearingDeleted { .. } => "HearingDeleted",
            Self::OwnerReassigned { .. } => "OwnerReassigned",
            Self::ReviewerAdded { .. } => "ReviewerAdded",
            Self::ReviewerRemoved { .. } => "ReviewerRemoved",
            Self::InviteeAdded { .. } => "InviteeAdded",
            Self::InviteeRemoved { .. } => "InviteeRemoved",
            Self::FileAttached { .. } => "FileAttached",
            Self::FileRemoved { .. } => "FileRemoved",
            Self::CaseNumberRecorded { .. } => "CaseNumberRecorded",
        };
        name.to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HearingError {
    #[error("no such hearing")]
    NotFound,
    #[error("the hearing already exists")]
    AlreadyExists,
    #[error("cannot {action} a hearing in state {state}")]
    NotAllowedInState { action: &'static str, state: HearingStatus },
    #[error("invalid hearing: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Violation>),
}

/// The hearing as its events have made it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Hearing {
    pub exists: bool,
    pub status: HearingStatus,
    pub hearing_type: HearingType,
    pub owner: Uuid,
    pub reviewers: BTreeSet<Uuid>,
    pub invitees: BTreeMap<String, Invitee>,
    pub fields: BTreeMap<String, String>,
    pub files: Vec<StoredFile>,
    pub subject_area_id: Option<String>,
    pub city_area_id: Option<String>,
    pub kle_number: Option<String>,
    pub contact: Option<ContactPerson>,
    pub start_date: Option<NaiveDate>,
    pub deadline: Option<NaiveDate>,
    pub closed: bool,
    pub case_number: Option<String>,
}

impl Hearing {
    pub fn field(&self, key: &str) -> &str {
        self.fields.get(key).map(String::as_str).unwrap_or("")
    }

    pub fn title(&self) -> &str {
        self.field("title")
    }

    pub fn internal(&self) -> bool {
        self.hearing_type.internal
    }

    pub fn opens_at(&self) -> Option<DateTime<Utc>> {
        self.start_date.map(clock::opens_at)
    }

    pub fn closes_at(&self) -> Option<DateTime<Utc>> {
        self.deadline.map(clock::closes_at)
    }

    /// What is still missing before the hearing can leave Created (design: type, subject
    /// area, KLE, dates with the deadline after the start, ESDH title, contact person).
    pub fn missing_metadata(&self) -> Vec<Violation> {
        let mut missing = Vec::new();
        if self.subject_area_id.as_deref().unwrap_or("").is_empty() {
            missing.push(Violation::new("subject_area_id", "emneområde skal vælges"));
        }
        if self.kle_number.as_deref().unwrap_or("").is_empty() {
            missing.push(Violation::new("kle_number", "KLE-nummer skal vælges"));
        }
        match (self.start_date, self.deadline) {
            (Some(start), Some(deadline)) if deadline <= start => {
                missing.push(Violation::new("deadline", "høringsfristen skal ligge efter startdatoen"))
            }
            (Some(_), Some(_)) => {}
            (None, _) => missing.push(Violation::new("start_date", "startdato skal angives")),
            (_, None) => missing.push(Violation::new("deadline", "høringsfrist skal angives")),
        }
        if self.field("esdh_title").trim().is_empty() {
            missing.push(Violation::new("esdh_title", "ESDH-titel skal udfyldes"));
        }
        match &self.contact {
            Some(c) if !c.name.trim().is_empty() && !c.email.trim().is_empty() => {}
            _ => missing.push(Violation::new("contact", "kontaktperson (navn og e-mail) skal angives")),
        }
        missing
    }

    /// Every field complete by its rule: what publishing demands.
    pub fn incomplete_fields(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        for rule in &self.hearing_type.fields {
            if rule.kind == FieldKind::Text && rule.key != "conclusion" {
                check_text(rule, self.field(&rule.key), true, &mut out);
            } else if rule.kind != FieldKind::Text
                && !rule.may_be_empty
                && !self.files.iter().any(|f| f.field == rule.key)
            {
                out.push(Violation::new(&rule.key, format!("{} skal have mindst én fil", rule.label)));
            }
        }
        out
    }

    fn refuse(&self, action: &'static str) -> HearingError {
        HearingError::NotAllowedInState { action, state: self.status }
    }

    fn validate_changes(&self, changes: &HearingChanges, now: DateTime<Utc>) -> Result<(), HearingError> {
        use HearingStatus::*;
        let mut violations = Vec::new();
        for (key, value) in &changes.fields {
            match self.hearing_type.rule(key) {
                Some(rule) if rule.kind == FieldKind::Text => check_text(rule, value, false, &mut violations),
                Some(_) => violations.push(Violation::new(key, "feltet indeholder filer, ikke tekst")),
                None => violations.push(Violation::new(key, "høringstypen har ikke dette felt")),
            }
        }
        if let Some(contact) = &changes.contact
            && !contact.email.is_empty()
            && !looks_like_email(&contact.email)
        {
            violations.push(Violation::new("contact.email", format!("'{}' er ikke en e-mailadresse", contact.email)));
        }
        let start = changes.start_date.or(self.start_date);
        let deadline = changes.deadline.or(self.deadline);
        if let (Some(start), Some(deadline)) = (start, deadline)
            && deadline <= start
        {
            violations.push(Violation::new("deadline", "høringsfristen skal ligge efter startdatoen"));
        }
        // What may change depends on how far the hearing has come.
        let published = self.status.is_published();
        if published {
            if changes.closed.is_some() {
                violations
                    .push(Violation::new("closed", "om høringen er lukket kan ikke ændres efter offentliggørelse"));
            }
            if changes.start_date.is_some_and(|d| Some(d) != self.start_date) && self.status != AwaitingStartDate {
                violations.push(Violation::new("start_date", "startdatoen kan ikke ændres efter høringens start"));
            }
            if let Some(deadline) = changes.deadline
                && clock::closes_at(deadline) <= now
                && Some(deadline) != self.deadline
            {
                violations.push(Violation::new("deadline", "en ny høringsfrist skal ligge i fremtiden"));
            }
        }
        if self.status == AwaitingConclusion {
            let only_deadline_or_conclusion = changes.fields.keys().all(|k| k == "conclusion")
                && changes.subject_area_id.is_none()
                && changes.city_area_id.is_none()
                && changes.kle_number.is_none()
                && changes.contact.is_none()
                && changes.start_date.is_none();
            if !only_deadline_or_conclusion {
                violations
                    .push(Violation::new("status", "efter fristen kan kun høringsfristen og konklusionen ændres"));
            }
        }
        if violations.is_empty() { Ok(()) } else { Err(HearingError::Invalid(violations)) }
    }

    /// The status events the clock implies at `now`, applied to `self` as it goes.
    fn clock_events(&self, now: DateTime<Utc>) -> Vec<HearingEvent> {
        let mut events = Vec::new();
        let mut status = self.status;
        if status == HearingStatus::AwaitingStartDate && self.opens_at().is_some_and(|t| t <= now) {
            events.push(HearingEvent::HearingStarted { at: now });
            status = HearingStatus::Active;
        }
        if status == HearingStatus::Active && self.closes_at().is_some_and(|t| t <= now) {
            events.push(HearingEvent::HearingClosed { at: now });
        }
        events
    }

    async fn emit(&mut self, sink: &EventSink<Self>, events: Vec<HearingEvent>) {
        for event in events {
            sink.write(event, self).await;
        }
    }

    /// Decides the events for a command; pure (the sink only collects them).
    pub fn decide(&self, command: HearingCommand) -> Result<Vec<HearingEvent>, HearingError> {
        use HearingCommand as C;
        use HearingEvent as E;
        use HearingStatus::*;
        if let C::Create { hearing_type, owner, .. } = command {
            if self.exists {
                return Err(HearingError::AlreadyExists);
            }
            let fields = hearing_type.template.clone();
            return Ok(vec![E::HearingCreated { hearing_type, owner, fields }]);
        }
        if !self.exists || self.status == Deleted {
            return Err(HearingError::NotFound);
        }
        match command {
            C::Create { .. } => unreachable!("handled above"),
            C::Update { changes, now } => {
                if matches!(self.status, Concluded) {
                    return Err(self.refuse("change"));
                }
                self.validate_changes(&changes, now)?;
                let changes = self.only_differences(changes);
                if changes.is_empty() {
                    return Ok(Vec::new());
                }
                let mut next = self.clone();
                next.apply(E::HearingUpdated { changes: changes.clone() });
                let mut events = vec![E::HearingUpdated { changes }];
                match self.status {
                    Created if next.missing_metadata().is_empty() => events.push(E::HearingDraftReady),
                    Draft if !next.missing_metadata().is_empty() => events.push(E::HearingDraftIncomplete),
                    AwaitingConclusion if next.closes_at().is_some_and(|t| t > now) => {
                        if let Some(closes_at) = next.closes_at() {
                            events.push(E::HearingReopened { closes_at });
                        }
                    }
                    _ => events.extend(next.clock_events(now)),
                }
                Ok(events)
            }
            C::Publish { now } => {
                match self.status {
                    Draft => {}
                    Created => {
                        return Err(HearingError::Invalid(self.missing_metadata()));
                    }
                    _ => return Err(self.refuse("publish")),
                }
                let mut violations = self.incomplete_fields();
                violations.extend(self.missing_metadata());
                if self.closes_at().is_some_and(|t| t <= now) {
                    violations.push(Violation::new("deadline", "høringsfristen er allerede overskredet"));
                }
                let (Some(opens_at), Some(closes_at)) = (self.opens_at(), self.closes_at()) else {
                    return Err(HearingError::Invalid(violations));
                };
                if !violations.is_empty() {
                    return Err(HearingError::Invalid(violations));
                }
                let mut next = self.clone();
                let published = E::HearingPublished { opens_at, closes_at };
                next.apply(published.clone());
                let mut events = vec![published];
                events.extend(next.clock_events(now));
                Ok(events)
            }
            C::AdvanceClock { now } => Ok(self.clock_events(now)),
            C::Conclude { conclusion } => {
                if self.status != AwaitingConclusion {
                    return Err(self.refuse("conclude"));
                }
                let conclusion = conclusion.unwrap_or_else(|| self.field("conclusion").to_string());
                let mut violations = Vec::new();
                if conclusion.trim().is_empty() {
                    violations.push(Violation::new("conclusion", "konklusionen skal udfyldes"));
                }
                if let Some(rule) = self.hearing_type.rule("conclusion") {
                    check_text(rule, &conclusion, false, &mut violations);
                }
                if !violations.is_empty() {
                    return Err(HearingError::Invalid(violations));
                }
                Ok(vec![E::HearingConcluded { conclusion }])
            }
            C::Delete { by_administrator } => {
                if !by_administrator && !matches!(self.status, Created | Draft) {
                    return Err(self.refuse("delete"));
                }
                Ok(vec![E::HearingDeleted { by_administrator }])
            }
            C::ReassignOwner { owner } => {
                if owner == self.owner {
                    return Ok(Vec::new());
                }
                Ok(vec![E::OwnerReassigned { from: self.owner, to: owner }])
            }
            C::AddReviewer { user } => {
                self.refuse_when_concluded("add a reviewer to")?;
                if self.reviewers.contains(&user) || user == self.owner {
                    return Ok(Vec::new());
                }
                Ok(vec![E::ReviewerAdded { user }])
            }
            C::RemoveReviewer { user } => {
                Ok(if self.reviewers.contains(&user) { vec![E::ReviewerRemoved { user }] } else { Vec::new() })
            }
            C::AddInvitees { invitees } => {
                if matches!(self.status, AwaitingConclusion | Concluded) {
                    return Err(self.refuse("invite to"));
                }
                let mut seen = BTreeSet::new();
                Ok(invitees
                    .into_iter()
                    .filter(|i| !self.invitees.contains_key(&i.reference) && seen.insert(i.reference.clone()))
                    .map(|invitee| E::InviteeAdded { invitee })
                    .collect())
            }
            C::RemoveInvitee { reference } => {
                self.refuse_when_concluded("remove an invitee from")?;
                Ok(if self.invitees.contains_key(&reference) {
                    vec![E::InviteeRemoved { reference }]
                } else {
                    Vec::new()
                })
            }
            C::AttachFile { file } => {
                if matches!(self.status, AwaitingConclusion | Concluded) {
                    return Err(self.refuse("attach files to"));
                }
                let mut violations = Vec::new();
                match self.hearing_type.rule(&file.field) {
                    Some(rule) => {
                        let existing = self.files.iter().filter(|f| f.field == file.field).count();
                        check_file(rule, file.size, Some(&file.content_type), existing, &mut violations);
                    }
                    None => violations.push(Violation::new(&file.field, "høringstypen har ikke dette felt")),
                }
                if !violations.is_empty() {
                    return Err(HearingError::Invalid(violations));
                }
                Ok(vec![E::FileAttached { file }])
            }
            C::RemoveFile { file_id } => {
                if matches!(self.status, AwaitingConclusion | Concluded) {
                    return Err(self.refuse("remove files from"));
                }
                if !self.files.iter().any(|f| f.id == file_id) {
                    return Err(HearingError::Invalid(vec![Violation::new(
                        "file_id",
                        format!("ingen fil med id {file_id}"),
                    )]));
                }
                Ok(vec![E::FileRemoved { file_id }])
            }
            C::RecordCaseNumber { case_number } => Ok(if self.case_number.as_ref() == Some(&case_number) {
                Vec::new()
            } else {
                vec![E::CaseNumberRecorded { case_number }]
            }),
        }
    }

    fn refuse_when_concluded(&self, action: &'static str) -> Result<(), HearingError> {
        if self.status == HearingStatus::Concluded { Err(self.refuse(action)) } else { Ok(()) }
    }

    /// Drops the parts of a change that would leave a value as it is, so the log records
    /// only what really changed.
    fn only_differences(&self, mut changes: HearingChanges) -> HearingChanges {
        changes.fields.retain(|k, v| self.fields.get(k) != Some(v));
        if changes.subject_area_id == self.subject_area_id {
            changes.subject_area_id = None;
        }
        if changes.city_area_id == self.city_area_id {
            changes.city_area_id = None;
        }
        if changes.kle_number == self.kle_number {
            changes.kle_number = None;
        }
        if changes.contact == self.contact {
            changes.contact = None;
        }
        if changes.start_date == self.start_date {
            changes.start_date = None;
        }
        if changes.deadline == self.deadline {
            changes.deadline = None;
        }
        if changes.closed == Some(self.closed) {
            changes.closed = None;
        }
        changes
    }
}

fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else { return false };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.contains(char::is_whitespace)
}

impl Aggregate for Hearing {
    const TYPE: &'static str = "hearing";
    type Command = HearingCommand;
    type Event = HearingEvent;
    type Error = HearingError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let events = self.decide(command)?;
        self.emit(sink, events).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use HearingEvent as E;
        use HearingStatus::*;
        match event {
            E::HearingCreated { hearing_type, owner, fields } => {
                self.exists = true;
                self.status = Created;
                self.hearing_type = hearing_type;
                self.owner = owner;
                self.fields = fields;
            }
            E::HearingUpdated { changes } => {
                self.fields.extend(changes.fields);
                macro_rules! set {
                    ($($field:ident),*) => {$( if let Some(v) = changes.$field { self.$field = Some(v); } )*};
                }
                set!(subject_area_id, city_area_id, kle_number, contact, start_date, deadline);
                if let Some(closed) = changes.closed {
                    self.closed = closed;
                }
            }
            E::HearingDraftReady => self.status = Draft,
            E::HearingDraftIncomplete => self.status = Created,
            E::HearingPublished { .. } => self.status = AwaitingStartDate,
            E::HearingStarted { .. } | E::HearingReopened { .. } => self.status = Active,
            E::HearingClosed { .. } => self.status = AwaitingConclusion,
            E::HearingConcluded { conclusion } => {
                self.fields.insert("conclusion".into(), conclusion);
                self.status = Concluded;
            }
            E::HearingDeleted { .. } => self.status = Deleted,
            E::OwnerReassigned { to, .. } => {
                self.reviewers.remove(&to);
                self.owner = to;
            }
            E::ReviewerAdded { user } => {
                self.reviewers.insert(user);
            }
            E::ReviewerRemoved { user } => {
                self.reviewers.remove(&user);
            }
            E::InviteeAdded { invitee } => {
                self.invitees.insert(invitee.reference.clone(), invitee);
            }
            E::InviteeRemoved { reference } => {
                self.invitees.remove(&reference);
            }
            E::FileAttached { file } => self.files.push(file),
            E::FileRemoved { file_id } => self.files.retain(|f| f.id != file_id),
            E::CaseNumberRecorded { case_number } => self.case_number = Some(case_number),
        }
    }
}

#[cfg(test)]
mod tests;
