//! The journalization of a hearing, without I/O: which steps a hearing's changes call for,
//! when a step may run, and how a step moves from planned to done, retried or parked.
//!
//! Every step is its own stream of events: planned, started (the intent, before the records
//! system is called), succeeded or failed (the outcome, after). A step started and never
//! finished (the service died in the call) may be started again once its lease runs out, and
//! the adapters make the repeat harmless: they find what the first attempt made.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What the hearing service tells of a hearing, as far as journalizing goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HearingFacts {
    pub hearing_id: String,
    /// Created, Draft, AwaitingStartDate, Active, AwaitingConclusion, Concluded, Deleted
    pub status: String,
    pub title: String,
    pub esdh_title: String,
    pub owner_id: String,
    pub kle_number: String,
    pub start_date: String,
    pub deadline: String,
    /// The text fields in the hearing type's order: (key, label, text).
    pub texts: Vec<(String, String, String)>,
    /// The hearing's documents: (file id, name).
    pub files: Vec<(String, String)>,
}

impl HearingFacts {
    fn published(&self) -> bool {
        matches!(self.status.as_str(), "AwaitingStartDate" | "Active" | "AwaitingConclusion" | "Concluded")
    }

    /// A digest of what the hearing text document shows: a change means a new version to file.
    pub fn text_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for part in [&self.title, &self.kle_number, &self.start_date, &self.deadline] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        for (key, label, text) in self.texts.iter().filter(|(key, _, _)| key != CONCLUSION_FIELD) {
            for part in [key, label, text] {
                hash.update(part.as_bytes());
                hash.update([0]);
            }
        }
        hex::encode(hash.finalize())
    }
}

/// The text field the owner writes the conclusion in: filed as the conclusion, not as a new
/// version of the hearing text.
pub const CONCLUSION_FIELD: &str = "conclusion";

/// A change of a hearing, as its integration event names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HearingChange {
    OwnerReassigned,
    Concluded {
        conclusion: String,
    },
    Deleted,
    /// Any other change: the facts say what matters.
    Other,
}

/// An attachment of a response to file with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRef {
    pub attachment_id: String,
    pub name: String,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    OpenCase {
        title: String,
        template: String,
        handler: String,
        kle_number: String,
    },
    ChangeHandler {
        handler: String,
    },
    /// The hearing's text as a PDF, rendered from the facts as they were when planned.
    FileHearingText {
        version: u32,
        hearing: HearingFacts,
    },
    FileHearingDocument {
        file_id: String,
        name: String,
    },
    /// Asks the response service which responses to file, and plans a step for each.
    ListResponses {
        approved_only: bool,
    },
    FileResponse {
        response_id: String,
        number: i64,
        attachments: Vec<AttachmentRef>,
    },
    FileConclusion {
        hearing: HearingFacts,
        conclusion: String,
    },
    CloseCase,
}

impl Action {
    /// What the step does, for people (Danish, as the portal speaks).
    pub fn description(&self) -> String {
        match self {
            Action::OpenCase { title, .. } => format!("Opret sag «{title}»"),
            Action::ChangeHandler { .. } => "Skift sagsbehandler".into(),
            Action::FileHearingText { version: 1, .. } => "Journalisér høringstekst".into(),
            Action::FileHearingText { version, .. } => format!("Journalisér høringstekst, version {version}"),
            Action::FileHearingDocument { name, .. } => format!("Journalisér høringsmateriale «{name}»"),
            Action::ListResponses { .. } => "Find høringssvar til journalisering".into(),
            Action::FileResponse { number, .. } => format!("Journalisér høringssvar nr. {number}"),
            Action::FileConclusion { .. } => "Journalisér konklusion".into(),
            Action::CloseCase => "Afslut sag".into(),
        }
    }

    /// Whether the step files a document on the case.
    pub fn files_document(&self) -> bool {
        matches!(
            self,
            Action::FileHearingText { .. }
                | Action::FileHearingDocument { .. }
                | Action::FileResponse { .. }
                | Action::FileConclusion { .. }
        )
    }
}

/// A step to add to a hearing's journalization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    pub key: String,
    pub action: Action,
}

pub const OPEN_CASE: &str = "open-case";
pub const CLOSE_CASE: &str = "close-case";
pub const LIST_RESPONSES: &str = "list-responses";
pub const CONCLUSION: &str = "conclusion";

/// The case template for a KLE number: the longest configured prefix that matches, or the
/// default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseTemplates {
    /// KLE number prefix (e.g. `01.02`) → template id in the records system.
    #[serde(default)]
    pub by_kle: Vec<(String, String)>,
    #[serde(default)]
    pub default: String,
}

impl CaseTemplates {
    pub fn for_kle(&self, kle_number: &str) -> String {
        self.by_kle
            .iter()
            .filter(|(prefix, _)| {
                kle_number == prefix
                    || (kle_number.starts_with(prefix.as_str()) && kle_number[prefix.len()..].starts_with('.'))
            })
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, template)| template.clone())
            .unwrap_or_else(|| self.default.clone())
    }
}

/// What the journalization of one hearing has planned so far, and what it knows of the
/// hearing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub hearing_id: String,
    pub title: String,
    pub owner_id: String,
    pub hearing_status: String,
    /// The case is planned (the open-case step exists).
    pub case_planned: bool,
    /// The case as the records system knows it, once opened.
    pub case_id: Option<String>,
    pub case_number: Option<String>,
    /// The handler the last planned open-case or change-handler step sets.
    pub handler: String,
    pub handler_changes: u32,
    pub text_versions: u32,
    pub text_digest: String,
    pub files_planned: Vec<String>,
    pub conclusion_planned: bool,
    pub close_planned: bool,
    pub journalized_at: Option<DateTime<Utc>>,
    pub documents_filed: u32,
    /// The sequence of the last hearing event learnt.
    #[serde(default)]
    pub hearing_sequence: i64,
}

/// How journalizing is done where this runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub templates: CaseTemplates,
    /// File only approved responses (else every response but the withdrawn).
    pub approved_only: bool,
}

impl Journal {
    pub fn new(hearing_id: &str) -> Self {
        Self { hearing_id: hearing_id.to_string(), ..Default::default() }
    }

    /// Learns a hearing's change and returns the steps it calls for (already noted as planned
    /// in the journal). Repeating a change plans nothing new.
    pub fn plan(&mut self, change: &HearingChange, facts: &HearingFacts, policy: &Policy) -> Vec<PlannedStep> {
        self.title = if facts.title.is_empty() { self.title.clone() } else { facts.title.clone() };
        self.owner_id = facts.owner_id.clone();
        self.hearing_status = facts.status.clone();
        let mut steps = Vec::new();
        if self.close_planned {
            return steps;
        }
        let left_created = !matches!(facts.status.as_str(), "Created" | "Deleted" | "");
        if left_created && !self.case_planned {
            self.case_planned = true;
            self.handler = facts.owner_id.clone();
            let title = if facts.esdh_title.trim().is_empty() { &facts.title } else { &facts.esdh_title };
            steps.push(PlannedStep {
                key: OPEN_CASE.into(),
                action: Action::OpenCase {
                    title: title.clone(),
                    template: policy.templates.for_kle(&facts.kle_number),
                    handler: facts.owner_id.clone(),
                    kle_number: facts.kle_number.clone(),
                },
            });
        }
        if self.case_planned && !facts.owner_id.is_empty() && facts.owner_id != self.handler {
            self.handler = facts.owner_id.clone();
            self.handler_changes += 1;
            steps.push(PlannedStep {
                key: format!("handler-{}", self.handler_changes),
                action: Action::ChangeHandler { handler: facts.owner_id.clone() },
            });
        }
        if facts.published() && self.case_planned {
            let digest = facts.text_digest();
            if digest != self.text_digest {
                self.text_digest = digest;
                self.text_versions += 1;
                steps.push(PlannedStep {
                    key: format!("hearing-text-{}", self.text_versions),
                    action: Action::FileHearingText { version: self.text_versions, hearing: facts.clone() },
                });
            }
            for (file_id, name) in &facts.files {
                if !self.files_planned.contains(file_id) {
                    self.files_planned.push(file_id.clone());
                    steps.push(PlannedStep {
                        key: format!("hearing-document-{file_id}"),
                        action: Action::FileHearingDocument { file_id: file_id.clone(), name: name.clone() },
                    });
                }
            }
        }
        // The state decides, not the event's type: a HearingConcluded redelivered after a later
        // event of the hearing is skipped, and the later one says Concluded just as well.
        let conclusion_text = || {
            facts
                .texts
                .iter()
                .find(|(key, _, _)| key == CONCLUSION_FIELD)
                .map(|(_, _, t)| t.clone())
                .unwrap_or_default()
        };
        let change = match change {
            HearingChange::Concluded { .. } | HearingChange::Deleted => change.clone(),
            _ if facts.status == "Concluded" => HearingChange::Concluded { conclusion: conclusion_text() },
            _ if facts.status == "Deleted" => HearingChange::Deleted,
            other => other.clone(),
        };
        match &change {
            HearingChange::Concluded { conclusion } if self.case_planned && !self.conclusion_planned => {
                self.conclusion_planned = true;
                self.close_planned = true;
                steps.push(PlannedStep {
                    key: LIST_RESPONSES.into(),
                    action: Action::ListResponses { approved_only: policy.approved_only },
                });
                steps.push(PlannedStep {
                    key: CONCLUSION.into(),
                    action: Action::FileConclusion { hearing: facts.clone(), conclusion: conclusion.clone() },
                });
                steps.push(PlannedStep { key: CLOSE_CASE.into(), action: Action::CloseCase });
            }
            HearingChange::Deleted if self.case_planned => {
                self.close_planned = true;
                steps.push(PlannedStep { key: CLOSE_CASE.into(), action: Action::CloseCase });
            }
            _ => {}
        }
        steps
    }
}

/// The steps for the responses the response service named.
pub fn response_steps(responses: &[(String, i64, Vec<AttachmentRef>)]) -> Vec<PlannedStep> {
    responses
        .iter()
        .map(|(response_id, number, attachments)| PlannedStep {
            key: format!("response-{response_id}"),
            action: Action::FileResponse {
                response_id: response_id.clone(),
                number: *number,
                attachments: attachments.clone(),
            },
        })
        .collect()
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    Done,
    Retrying,
    Parked,
}

impl StepState {
    pub const fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Retrying => "retrying",
            StepState::Parked => "parked",
        }
    }
}

/// A step's events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
#[allow(clippy::large_enum_variant)] // written and read one at a time, never kept in bulk
pub enum StepEvent {
    StepPlanned {
        hearing_id: String,
        key: String,
        position: i64,
        action: Action,
    },
    /// The intent: the records system is about to be called. Until `lease_until` no other
    /// worker starts the step.
    StepStarted {
        attempt: u32,
        lease_until: DateTime<Utc>,
    },
    /// The outcome: what the records system made (a case id, a document id).
    StepSucceeded {
        attempt: u32,
        reference: String,
    },
    /// A failure: tried again at `retry_at`, or parked when that is none.
    StepFailed {
        attempt: u32,
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
    RetryRequested {
        by: String,
    },
    /// What the step would file is gone from Agora (a document removed, an erased
    /// respondent's file): nothing is filed, and the step is finished.
    StepSkipped {
        attempt: u32,
        reason: String,
    },
    /// The step must wait for steps planned after it (closing the case, for responses
    /// approved after the conclusion); it is pending again, its attempts untouched.
    StepDeferred {
        attempt: u32,
        reason: String,
    },
}

impl StepEvent {
    pub fn name(&self) -> &'static str {
        match self {
            StepEvent::StepPlanned { .. } => "StepPlanned",
            StepEvent::StepStarted { .. } => "StepStarted",
            StepEvent::StepSucceeded { .. } => "StepSucceeded",
            StepEvent::StepFailed { .. } => "StepFailed",
            StepEvent::RetryRequested { .. } => "RetryRequested",
            StepEvent::StepSkipped { .. } => "StepSkipped",
            StepEvent::StepDeferred { .. } => "StepDeferred",
        }
    }
}

/// How often and how soon a failed step is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before the step is parked.
    pub max_attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// How long a started step is left to its worker before another may start it again.
    pub lease: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            first_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(3600),
            lease: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait after the `attempt`th failure: doubling from the first delay, at most the
    /// longest.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Why a step cannot do what was asked of it now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepRefused {
    #[error("the step is {0} and cannot start now")]
    NotDue(&'static str),
    #[error("attempt {0} is not the step's current attempt")]
    StaleAttempt(u32),
    #[error("only a parked step can be retried (this one is {0})")]
    NotParked(&'static str),
}

/// A step, folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub hearing_id: String,
    pub key: String,
    pub position: i64,
    pub action: Action,
    pub state: StepState,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When a retrying step is due, or a running step's lease ends.
    pub due_at: Option<DateTime<Utc>>,
    pub reference: Option<String>,
    /// Why a finished step filed nothing.
    #[serde(default)]
    pub skipped: Option<String>,
    /// The stream's last sequence.
    pub sequence: i64,
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Step {
    /// The step from its first event.
    pub fn planned(hearing_id: &str, key: &str, position: i64, action: Action) -> Self {
        Self {
            hearing_id: hearing_id.into(),
            key: key.into(),
            position,
            action,
            state: StepState::Pending,
            attempts: 0,
            last_error: None,
            due_at: None,
            reference: None,
            skipped: None,
            sequence: 1,
        }
    }

    pub fn apply(&mut self, event: &StepEvent) {
        self.sequence += 1;
        match event {
            StepEvent::StepPlanned { hearing_id, key, position, action } => {
                *self = Step::planned(hearing_id, key, *position, action.clone());
            }
            StepEvent::StepStarted { attempt, lease_until } => {
                self.state = StepState::Running;
                self.attempts = *attempt;
                self.due_at = Some(*lease_until);
            }
            StepEvent::StepSucceeded { reference, .. } => {
                self.state = StepState::Done;
                self.reference = Some(reference.clone());
                self.last_error = None;
                self.due_at = None;
            }
            StepEvent::StepFailed { error, retry_at, .. } => {
                self.last_error = Some(error.clone());
                self.due_at = *retry_at;
                self.state = if retry_at.is_some() { StepState::Retrying } else { StepState::Parked };
            }
            StepEvent::RetryRequested { .. } => {
                self.state = StepState::Pending;
                self.attempts = 0;
                self.due_at = None;
            }
            StepEvent::StepSkipped { reason, .. } => {
                self.state = StepState::Done;
                self.skipped = Some(reason.clone());
                self.last_error = None;
                self.due_at = None;
            }
            StepEvent::StepDeferred { attempt, .. } => {
                self.state = StepState::Pending;
                self.attempts = attempt.saturating_sub(1);
                self.due_at = None;
            }
        }
    }

    /// Whether the step is due at `now` (its turn may still wait for other steps).
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        match self.state {
            StepState::Pending => true,
            StepState::Running | StepState::Retrying => self.due_at.is_none_or(|at| at <= now),
            StepState::Done | StepState::Parked => false,
        }
    }

    /// The intent to run the step now.
    pub fn start(&self, now: DateTime<Utc>, policy: &RetryPolicy) -> Result<StepEvent, StepRefused> {
        if !self.is_due(now) {
            return Err(StepRefused::NotDue(self.state.as_str()));
        }
        Ok(StepEvent::StepStarted { attempt: self.attempts + 1, lease_until: now + chrono_duration(policy.lease) })
    }

    pub fn succeed(&self, attempt: u32, reference: String) -> Result<StepEvent, StepRefused> {
        self.current(attempt)?;
        Ok(StepEvent::StepSucceeded { attempt, reference })
    }

    /// A failure of `attempt`: retried later, or parked when it was the last allowed attempt
    /// or the records system refused the request itself (`final_error`).
    pub fn fail(
        &self,
        attempt: u32,
        error: String,
        final_error: bool,
        now: DateTime<Utc>,
        policy: &RetryPolicy,
    ) -> Result<StepEvent, StepRefused> {
        self.current(attempt)?;
        let retry_at = if final_error || attempt >= policy.max_attempts {
            None
        } else {
            Some(now + chrono_duration(policy.delay_after(attempt)))
        };
        Ok(StepEvent::StepFailed { attempt, error, retry_at })
    }

    pub fn skip(&self, attempt: u32, reason: String) -> Result<StepEvent, StepRefused> {
        self.current(attempt)?;
        Ok(StepEvent::StepSkipped { attempt, reason })
    }

    pub fn defer(&self, attempt: u32, reason: String) -> Result<StepEvent, StepRefused> {
        self.current(attempt)?;
        Ok(StepEvent::StepDeferred { attempt, reason })
    }

    pub fn retry(&self, by: &str) -> Result<StepEvent, StepRefused> {
        if self.state != StepState::Parked {
            return Err(StepRefused::NotParked(self.state.as_str()));
        }
        Ok(StepEvent::RetryRequested { by: by.into() })
    }

    fn current(&self, attempt: u32) -> Result<(), StepRefused> {
        if self.state == StepState::Running && self.attempts == attempt {
            Ok(())
        } else {
            Err(StepRefused::StaleAttempt(attempt))
        }
    }
}

/// Whether a due step may run, given its journal and its hearing's other steps: everything
/// waits for the case, closing the case waits for everything else.
pub fn may_run(step: &Step, journal: &Journal, others_unfinished: usize) -> bool {
    match step.action {
        Action::OpenCase { .. } => true,
        Action::CloseCase => journal.case_id.is_some() && others_unfinished == 0,
        _ => journal.case_id.is_some(),
    }
}

/// How far a hearing's journalization has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalStatus {
    NotJournalized,
    InProgress,
    Journalized,
    Failed,
}

impl JournalStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            JournalStatus::NotJournalized => "not_journalized",
            JournalStatus::InProgress => "in_progress",
            JournalStatus::Journalized => "journalized",
            JournalStatus::Failed => "failed",
        }
    }

    pub fn of(journal: &Journal, steps: &[Step]) -> Self {
        if journal.journalized_at.is_some() {
            JournalStatus::Journalized
        } else if steps.iter().any(|s| s.state == StepState::Parked) {
            JournalStatus::Failed
        } else if steps.iter().any(|s| s.state != StepState::Done) {
            JournalStatus::InProgress
        } else {
            // Nothing planned yet, or all that was planned is done while the hearing is not
            // concluded (its case waits, or it was deleted and its case closed).
            JournalStatus::NotJournalized
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: &str) -> HearingFacts {
        HearingFacts {
            hearing_id: "h1".into(),
            status: status.into(),
            title: "Ny bydel".into(),
            esdh_title: "Lokalplan 12 – ny bydel".into(),
            owner_id: "karen".into(),
            kle_number: "01.02.05".into(),
            texts: vec![("body".into(), "Brødtekst".into(), "Kommunen foreslår en ny bydel.".into())],
            files: vec![("f1".into(), "kort.pdf".into())],
            ..Default::default()
        }
    }

    fn keys(steps: &[PlannedStep]) -> Vec<&str> {
        steps.iter().map(|s| s.key.as_str()).collect()
    }

    fn policy() -> Policy {
        Policy {
            templates: CaseTemplates {
                by_kle: vec![("01".into(), "T-01".into()), ("01.02".into(), "T-0102".into())],
                default: "T".into(),
            },
            approved_only: true,
        }
    }

    #[test]
    fn a_hearing_is_planned_from_its_draft_to_its_conclusion_once() {
        let mut journal = Journal::new("h1");
        assert!(journal.plan(&HearingChange::Other, &facts("Created"), &policy()).is_empty(), "no case in Created");
        let draft = journal.plan(&HearingChange::Other, &facts("Draft"), &policy());
        assert_eq!(keys(&draft), ["open-case"]);
        let Action::OpenCase { title, template, handler, .. } = &draft[0].action else { panic!("open case") };
        assert_eq!(
            (title.as_str(), template.as_str(), handler.as_str()),
            ("Lokalplan 12 – ny bydel", "T-0102", "karen")
        );
        assert!(journal.plan(&HearingChange::Other, &facts("Draft"), &policy()).is_empty(), "repeat plans nothing");
        let published = journal.plan(&HearingChange::Other, &facts("AwaitingStartDate"), &policy());
        assert_eq!(keys(&published), ["hearing-text-1", "hearing-document-f1"]);
        assert!(journal.plan(&HearingChange::Other, &facts("Active"), &policy()).is_empty());
        let mut changed = facts("Active");
        changed.texts[0].2 = "Kommunen foreslår en mindre bydel.".into();
        changed.files.push(("f2".into(), "bilag.pdf".into()));
        assert_eq!(
            keys(&journal.plan(&HearingChange::Other, &changed, &policy())),
            ["hearing-text-2", "hearing-document-f2"]
        );
        let concluded = HearingChange::Concluded { conclusion: "Vedtaget.".into() };
        let mut done = changed.clone();
        done.status = "Concluded".into();
        done.texts.push(("conclusion".into(), "Konklusion".into(), "Vedtaget.".into()));
        assert_eq!(keys(&journal.plan(&concluded, &done, &policy())), ["list-responses", "conclusion", "close-case"]);
        assert!(journal.plan(&concluded, &done, &policy()).is_empty(), "a repeated conclusion plans nothing");
    }

    #[test]
    fn a_new_owner_becomes_the_case_handler_and_a_deleted_draft_closes_its_case() {
        let mut journal = Journal::new("h1");
        journal.plan(&HearingChange::Other, &facts("Draft"), &policy());
        let mut moved = facts("Draft");
        moved.owner_id = "lars".into();
        let steps = journal.plan(&HearingChange::OwnerReassigned, &moved, &policy());
        assert_eq!(
            steps,
            vec![PlannedStep { key: "handler-1".into(), action: Action::ChangeHandler { handler: "lars".into() } }]
        );
        moved.status = "Deleted".into();
        assert_eq!(keys(&journal.plan(&HearingChange::Deleted, &moved, &policy())), ["close-case"]);
        // A hearing deleted before it had a case leaves nothing to do.
        let mut never = Journal::new("h2");
        assert!(never.plan(&HearingChange::Deleted, &facts("Deleted"), &policy()).is_empty());
    }

    #[test]
    fn a_conclusion_whose_event_was_skipped_is_planned_from_the_next_state() {
        let mut journal = Journal::new("h1");
        journal.plan(&HearingChange::Other, &facts("Draft"), &policy());
        let mut later = facts("Concluded");
        later.texts.push(("conclusion".into(), "Konklusion".into(), "Vedtaget.".into()));
        let steps = journal.plan(&HearingChange::Other, &later, &policy());
        let conclusion = steps.iter().find(|s| s.key == CONCLUSION).expect("the conclusion planned");
        assert!(matches!(&conclusion.action, Action::FileConclusion { conclusion, .. } if conclusion == "Vedtaget."));
        assert!(steps.iter().any(|s| s.key == CLOSE_CASE));
    }

    #[test]
    fn a_skipped_step_is_finished_and_a_deferred_one_waits_without_losing_an_attempt() {
        let policy = RetryPolicy::default();
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let mut gone = step();
        gone.apply(&gone.start(now, &policy).expect("due"));
        gone.apply(&gone.skip(1, "the file was removed".into()).expect("current"));
        assert_eq!((gone.state, gone.skipped.as_deref()), (StepState::Done, Some("the file was removed")));
        let mut close = step();
        close.apply(&close.start(now, &policy).expect("due"));
        close.apply(&close.defer(1, "2 responses approved after the conclusion".into()).expect("current"));
        assert_eq!((close.state, close.attempts), (StepState::Pending, 0));
    }

    #[test]
    fn the_longest_matching_kle_prefix_chooses_the_template() {
        let templates = policy().templates;
        assert_eq!(templates.for_kle("01.02.05"), "T-0102");
        assert_eq!(templates.for_kle("01.03.00"), "T-01");
        assert_eq!(templates.for_kle("010.02"), "T", "a prefix matches whole groups only");
        assert_eq!(templates.for_kle(""), "T");
    }

    fn step() -> Step {
        Step::planned("h1", "conclusion", 3, Action::CloseCase)
    }

    #[test]
    fn a_failing_step_backs_off_doubling_and_is_parked_after_the_last_attempt() {
        let policy = RetryPolicy { max_attempts: 3, ..Default::default() };
        let mut now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let mut step = step();
        let mut waits = Vec::new();
        for attempt in 1..=3 {
            if let Some(due) = step.due_at {
                now = due;
            }
            let started = step.start(now, &policy).expect("due");
            assert_eq!(started, StepEvent::StepStarted { attempt, lease_until: now + chrono::Duration::seconds(300) });
            step.apply(&started);
            let failed = step.fail(attempt, "HTTP 503".into(), false, now, &policy).expect("current");
            if let StepEvent::StepFailed { retry_at: Some(at), .. } = &failed {
                waits.push((*at - now).num_seconds());
            }
            step.apply(&failed);
            assert!(step.start(now, &policy).is_err(), "not due before its retry time");
        }
        assert_eq!(waits, [5, 10], "5 s, then 10 s");
        assert_eq!(step.state, StepState::Parked);
        assert_eq!(step.last_error.as_deref(), Some("HTTP 503"));
        let retried = step.retry("user:admin").expect("parked");
        step.apply(&retried);
        assert_eq!((step.state, step.attempts), (StepState::Pending, 0));
        assert!(step.retry("user:admin").is_err(), "only parked steps are retried");
    }

    #[test]
    fn a_started_step_left_by_a_dead_worker_starts_again_after_its_lease_and_late_outcomes_are_refused() {
        let policy = RetryPolicy::default();
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let mut step = step();
        step.apply(&step.start(now, &policy).expect("due"));
        assert!(step.start(now + chrono::Duration::seconds(60), &policy).is_err(), "leased");
        let later = now + chrono::Duration::seconds(301);
        let again = step.start(later, &policy).expect("lease over");
        step.apply(&again);
        assert_eq!(step.attempts, 2);
        assert_eq!(step.succeed(1, "doc".into()), Err(StepRefused::StaleAttempt(1)), "the first worker's outcome");
        step.apply(&step.succeed(2, "doc-7".into()).expect("current"));
        assert_eq!((step.state, step.reference.as_deref()), (StepState::Done, Some("doc-7")));
        assert!(!step.is_due(later));
    }

    #[test]
    fn a_refusal_by_the_records_system_parks_at_once() {
        let policy = RetryPolicy::default();
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let mut step = step();
        step.apply(&step.start(now, &policy).expect("due"));
        let failed = step.fail(1, "HTTP 400: unknown template".into(), true, now, &policy).expect("current");
        step.apply(&failed);
        assert_eq!(step.state, StepState::Parked);
    }

    #[test]
    fn documents_wait_for_the_case_and_closing_waits_for_everything() {
        let mut journal = Journal::new("h1");
        let document = Step::planned(
            "h1",
            "conclusion",
            2,
            Action::FileConclusion { hearing: facts("Concluded"), conclusion: String::new() },
        );
        let close = Step::planned("h1", "close-case", 3, Action::CloseCase);
        assert!(!may_run(&document, &journal, 0));
        journal.case_id = Some("42".into());
        assert!(may_run(&document, &journal, 5));
        assert!(!may_run(&close, &journal, 1));
        assert!(may_run(&close, &journal, 0));
    }

    #[test]
    fn the_status_is_journalized_only_when_the_case_is_closed_and_failed_while_a_step_is_parked() {
        let mut journal = Journal::new("h1");
        assert_eq!(JournalStatus::of(&journal, &[]), JournalStatus::NotJournalized);
        let mut parked = step();
        parked.state = StepState::Parked;
        assert_eq!(JournalStatus::of(&journal, &[step(), parked]), JournalStatus::Failed);
        assert_eq!(JournalStatus::of(&journal, &[step()]), JournalStatus::InProgress);
        journal.journalized_at = Some(Utc::now());
        assert_eq!(JournalStatus::of(&journal, &[step()]), JournalStatus::Journalized);
    }
}
