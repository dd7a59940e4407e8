//! The journalization of a hearing, without I/O: which steps a hearing's changes call for,
//! when a step may run, and how a step moves from planned to done, retried or parked.
//!
//! Every step is its own stream of events: planned, started (the intent, before the records
//! system is called), succeeded or failed (the outcome, after). A step started and never
//! finished (the service died in the call) may be started again once its lease runs out, and
//! the adapters make the repeat harmless: they find what the first attempt made.

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

pub use agora_jobs::{RetryPolicy, StepRefused, StepState};

/// A journalization step (its machinery is agora-jobs').
pub type Step = agora_jobs::Step<Action>;
pub type StepEvent = agora_jobs::StepEvent<Action>;

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
