//! Runs the steps that are due: records the intent, calls the records system, records the
//! outcome with what follows from it (the case number, the responses' steps, the hearing
//! journalized). Any number of workers may run against one database: a step is claimed by
//! the event that starts it, and a claim two workers race for is won by one.

use std::sync::Arc;
use std::time::Duration;

use agora_eventstore::{Store, StoreError};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;

use crate::domain::{Action, Journal, RetryPolicy, Step, StepEvent, may_run, response_steps};
use crate::esdh::{CaseRef, Document, DocumentFile, EsdhError, NewCase, RecordsSystem};
use crate::integration::ACTOR;
use crate::render;
use crate::sources::{SourceError, Sources};
use crate::store::{self, JournalEvent};

/// The document types, as the records system names them (OS2agora's by default).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DocumentTypes {
    pub hearing_text: String,
    pub hearing_document: String,
    pub response: String,
    pub conclusion: String,
}

impl Default for DocumentTypes {
    fn default() -> Self {
        Self {
            hearing_text: "Høringstekst".into(),
            hearing_document: "Høringsmateriale".into(),
            response: "Høringssvar".into(),
            conclusion: "Konklusion".into(),
        }
    }
}

pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

#[derive(Clone)]
pub struct Worker {
    pub store: Store,
    pub system: Arc<dyn RecordsSystem>,
    pub sources: Arc<dyn Sources>,
    pub retry: RetryPolicy,
    pub document_types: DocumentTypes,
    pub clock: Clock,
    /// Steps run at once.
    pub concurrency: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a step's work failed, and whether trying again can help.
struct Failure {
    message: String,
    final_error: bool,
}

impl From<EsdhError> for Failure {
    fn from(e: EsdhError) -> Self {
        Self { final_error: e.is_final(), message: e.to_string() }
    }
}

impl From<crate::sources::SourceError> for Failure {
    fn from(e: crate::sources::SourceError) -> Self {
        Self { final_error: e.is_final(), message: e.to_string() }
    }
}

/// What a step's work brought back.
enum Outcome {
    Case(CaseRef),
    Document(String),
    Responses(Vec<crate::sources::ResponseToFile>),
    Done,
    /// What the step would file is gone from Agora.
    Skipped(String),
    /// Closing must wait: these responses (approved after the conclusion) are filed first.
    Deferred(Vec<crate::sources::ResponseToFile>),
}

impl Worker {
    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Runs every step due now (and those they make due, like the responses after their
    /// listing) until none is left; returns how many steps ran.
    pub async fn run_due(&self) -> Result<usize, WorkerError> {
        let mut ran = 0;
        loop {
            let due = store::due_steps(&self.store, self.now(), 64).await?;
            let mut runnable = Vec::new();
            for step in due {
                let Some(journal) = store::journal(&self.store, &step.group).await? else { continue };
                let others = match step.action {
                    Action::CloseCase => store::STEPS.unfinished_besides(&self.store, &step.group, &step.key).await?,
                    _ => 0,
                };
                if may_run(&step, &journal, others) {
                    runnable.push((step, journal));
                }
            }
            if runnable.is_empty() {
                return Ok(ran);
            }
            let results: Vec<Result<bool, WorkerError>> = futures::stream::iter(runnable)
                .map(|(step, journal)| async move { self.run_step(step, journal).await })
                .buffer_unordered(self.concurrency.max(1))
                .collect()
                .await;
            let mut progressed = false;
            for result in results {
                progressed |= result?;
                ran += 1;
            }
            if !progressed {
                return Ok(ran);
            }
        }
    }

    /// Claims, runs and records one step. Returns whether this worker ran it.
    async fn run_step(&self, step: Step, journal: Journal) -> Result<bool, WorkerError> {
        let started = match step.start(self.now(), &self.retry) {
            Ok(event) => event,
            Err(_) => return Ok(false),
        };
        let StepEvent::StepStarted { attempt, .. } = started else { return Ok(false) };
        let mut tx = self.store.begin().await?;
        let (running, started) = match store::transition_in(&self.store, &mut tx, &step, started, ACTOR).await {
            Ok(transitioned) => transitioned,
            Err(StoreError::Conflict { .. } | StoreError::BrokenStream { .. }) => {
                // Another worker claimed it first.
                let _ = tx.rollback().await;
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        };
        tx.commit().await.map_err(StoreError::from)?;
        self.store.committed_quietly(&started);
        tracing::info!(hearing = %step.group, step = %step.key, attempt, "journalizing");
        // The work stops well before its lease ends, so that no other worker starts the step
        // while this one still calls the records system.
        let deadline = self.retry.lease.mul_f32(0.8);
        let outcome = match tokio::time::timeout(deadline, self.perform(&running, &journal)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure {
                message: format!("the step took longer than {} s, four fifths of its lease", deadline.as_secs()),
                final_error: false,
            }),
        };
        self.record(running, attempt, outcome).await?;
        Ok(true)
    }

    async fn record(&self, running: Step, attempt: u32, outcome: Result<Outcome, Failure>) -> Result<(), WorkerError> {
        let hearing_id = running.group.clone();
        let mut tx = self.store.begin().await?;
        let recorded = match outcome {
            Ok(Outcome::Skipped(reason)) => {
                tracing::warn!(hearing = %hearing_id, step = %running.key, reason = %reason, "nothing to file");
                running.skip(attempt, reason).map(|event| (event, None))
            }
            Ok(Outcome::Deferred(more)) => {
                let reason = format!("{} høringssvar godkendt efter konklusionen journaliseres først", more.len());
                running.defer(attempt, reason).map(|event| (event, Some(Outcome::Responses(more))))
            }
            Ok(outcome) => {
                let reference = match &outcome {
                    Outcome::Case(case) => case.id.clone(),
                    Outcome::Document(id) => id.clone(),
                    Outcome::Responses(list) => format!("{} høringssvar", list.len()),
                    _ => String::new(),
                };
                running.succeed(attempt, reference).map(|event| (event, Some(outcome)))
            }
            Err(failure) => {
                tracing::warn!(hearing = %hearing_id, step = %running.key, attempt, error = %failure.message, "journalizing failed");
                running
                    .fail(attempt, failure.message, failure.final_error, self.now(), &self.retry)
                    .map(|event| (event, None))
            }
        };
        // A refusal here means the step moved on without this worker: its lease ran out.
        let Ok((event, follow_up)) = recorded else { return Ok(()) };
        let outcome = match &event {
            StepEvent::StepSucceeded { .. } => "succeeded",
            StepEvent::StepSkipped { .. } => "skipped",
            StepEvent::StepDeferred { .. } => "deferred",
            StepEvent::StepFailed { retry_at: Some(_), .. } => "retrying",
            _ => "parked",
        };
        let recorded = match store::transition_in(&self.store, &mut tx, &running, event, ACTOR).await {
            Ok((_, recorded)) => {
                agora_telemetry::metrics::global().journal_step(outcome);
                recorded
            }
            // The lease ran out and another worker took the step over: its outcome counts.
            Err(StoreError::Conflict { .. } | StoreError::BrokenStream { .. }) => {
                let _ = tx.rollback().await;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(outcome) = follow_up {
            self.follow_up(&mut tx, &running, outcome).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        self.store.committed_quietly(&recorded);
        Ok(())
    }

    /// What a step's success means for the journal, in the same transaction.
    async fn follow_up(
        &self,
        tx: &mut agora_eventstore::DbTx,
        step: &Step,
        outcome: Outcome,
    ) -> Result<(), WorkerError> {
        let hearing_id = &step.group;
        let Some((mut journal, sequence)) = store::journal_in(tx, hearing_id).await? else { return Ok(()) };
        match (outcome, &step.action) {
            (Outcome::Case(case), _) => {
                journal.case_id = Some(case.id.clone());
                journal.case_number = Some(case.number.clone());
                let event = JournalEvent::CaseOpened { case_id: case.id, case_number: case.number };
                let (sequence, _) =
                    store::append_journal_event(&self.store, tx, hearing_id, sequence, &event, ACTOR).await?;
                store::save_journal_in(tx, &journal, sequence).await?;
            }
            (Outcome::Responses(list), _) => {
                let listed: Vec<_> = list.into_iter().map(|r| (r.response_id, r.number, r.attachments)).collect();
                store::plan_in(&self.store, tx, hearing_id, response_steps(&listed), ACTOR).await?;
            }
            (Outcome::Done, Action::CloseCase) if journal.conclusion_planned => {
                journal.documents_filed = store::documents_filed(tx, hearing_id).await?;
                journal.journalized_at = Some(self.now());
                let event = JournalEvent::HearingJournalized {
                    case_number: journal.case_number.clone().unwrap_or_default(),
                    documents: journal.documents_filed,
                };
                let (sequence, _) =
                    store::append_journal_event(&self.store, tx, hearing_id, sequence, &event, ACTOR).await?;
                store::save_journal_in(tx, &journal, sequence).await?;
                tracing::info!(hearing = %hearing_id, documents = journal.documents_filed, "hearing journalized");
            }
            _ => {}
        }
        Ok(())
    }

    fn document(&self, step: &Step, title: String, document_type: &str, files: Vec<DocumentFile>) -> Document {
        Document {
            reference: format!("agora:{}:{}", step.group, step.key),
            title,
            document_type: document_type.to_string(),
            files,
        }
    }

    async fn pdf(report: agora_documents::pdf::Report, name: String) -> Result<DocumentFile, Failure> {
        let bytes = tokio::task::spawn_blocking(move || report.render())
            .await
            .map_err(|e| Failure { message: e.to_string(), final_error: false })?
            .map_err(|e| Failure { message: format!("the PDF could not be made: {e}"), final_error: true })?;
        Ok(DocumentFile { name, content_type: "application/pdf".into(), content: bytes.into() })
    }

    /// The step's work itself.
    async fn perform(&self, step: &Step, journal: &Journal) -> Result<Outcome, Failure> {
        let case = || match (&journal.case_id, &journal.case_number) {
            (Some(id), Some(number)) => Ok(CaseRef { id: id.clone(), number: number.clone() }),
            _ => Err(Failure { message: "the case is not open yet".into(), final_error: false }),
        };
        let types = &self.document_types;
        match &step.action {
            Action::OpenCase { title, template, handler, kle_number } => {
                let case = NewCase {
                    reference: format!("agora:hearing:{}", step.group),
                    title: title.clone(),
                    template: template.clone(),
                    handler: handler.clone(),
                    kle_number: kle_number.clone(),
                };
                Ok(Outcome::Case(self.system.open_case(&case).await?))
            }
            // The latest owner, whichever handler change runs last: they may run out of order.
            Action::ChangeHandler { .. } => {
                self.system.change_handler(&case()?, &journal.handler).await?;
                Ok(Outcome::Done)
            }
            Action::FileHearingText { version, hearing } => {
                let file =
                    Self::pdf(render::hearing_text(hearing, *version), format!("hoeringstekst-{version}.pdf")).await?;
                let title = format!("Høringstekst: {}", hearing.title);
                let document = self.document(step, title, &types.hearing_text, vec![file]);
                Ok(Outcome::Document(self.system.file_document(&case()?, &document).await?))
            }
            Action::FileHearingDocument { file_id, name } => {
                let file = match self.sources.hearing_file(&step.group, file_id).await {
                    Err(SourceError::Gone(why)) => return Ok(Outcome::Skipped(format!("{name} er fjernet ({why})"))),
                    other => other?,
                };
                let document = self.document(step, name.clone(), &types.hearing_document, vec![file]);
                Ok(Outcome::Document(self.system.file_document(&case()?, &document).await?))
            }
            Action::ListResponses { approved_only } => {
                Ok(Outcome::Responses(self.sources.responses_to_file(&step.group, *approved_only).await?))
            }
            Action::FileResponse { response_id, number, attachments } => {
                let main = match self.sources.response_document(&step.group, response_id, None).await {
                    Err(SourceError::Gone(why)) => {
                        return Ok(Outcome::Skipped(format!("høringssvar nr. {number} findes ikke længere ({why})")));
                    }
                    other => other?,
                };
                let mut files = vec![main];
                for attachment in attachments {
                    let id = Some(attachment.attachment_id.as_str());
                    match self.sources.response_document(&step.group, response_id, id).await {
                        // An erased respondent's files went with them; the response is filed without.
                        Err(SourceError::Gone(why)) => {
                            tracing::info!(hearing = %step.group, attachment = %attachment.name, why = %why, "attachment gone");
                        }
                        other => files.push(other?),
                    }
                }
                let document = self.document(step, format!("Høringssvar nr. {number}"), &types.response, files);
                Ok(Outcome::Document(self.system.file_document(&case()?, &document).await?))
            }
            Action::FileConclusion { hearing, conclusion } => {
                let file = Self::pdf(render::conclusion(hearing, conclusion), "konklusion.pdf".into()).await?;
                let document =
                    self.document(step, format!("Konklusion: {}", hearing.title), &types.conclusion, vec![file]);
                Ok(Outcome::Document(self.system.file_document(&case()?, &document).await?))
            }
            Action::CloseCase => {
                // Responses approved after the conclusion are filed before the case closes.
                if let Some(more) = self.responses_not_planned(step).await? {
                    return Ok(Outcome::Deferred(more));
                }
                self.system.close_case(&case()?).await?;
                Ok(Outcome::Done)
            }
        }
    }

    /// The responses to file that have no step yet, when the hearing's responses were listed.
    async fn responses_not_planned(&self, step: &Step) -> Result<Option<Vec<crate::sources::ResponseToFile>>, Failure> {
        let storage = |e: StoreError| Failure { message: e.to_string(), final_error: false };
        let listing = store::step(&self.store, &step.group, crate::domain::LIST_RESPONSES).await.map_err(storage)?;
        let Some(Step { action: Action::ListResponses { approved_only }, .. }) = listing else { return Ok(None) };
        let planned: std::collections::HashSet<String> =
            store::STEPS.keys(&self.store, &step.group).await.map_err(storage)?.into_iter().collect();
        let listed = self.sources.responses_to_file(&step.group, approved_only).await?;
        let more: Vec<_> =
            listed.into_iter().filter(|r| !planned.contains(&format!("response-{}", r.response_id))).collect();
        Ok(if more.is_empty() { None } else { Some(more) })
    }

    /// Runs due steps until `shutdown`: at once when woken, else when the next retry is due
    /// or at the latest every `poll`.
    pub async fn run(
        self,
        poll: Duration,
        wake: Arc<tokio::sync::Notify>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let woken = wake.notified();
            let appended = self.store.appended().notified();
            if let Err(e) = self.run_due().await {
                tracing::error!(error = %e, "the records worker failed; it tries again");
            }
            let mut wait = poll;
            if let Ok(Some(next)) = store::next_due(&self.store).await {
                let until = (next - self.now()).to_std().unwrap_or(Duration::ZERO);
                wait = wait.min(until.max(Duration::from_millis(50)));
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = woken => {}
                _ = appended => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
