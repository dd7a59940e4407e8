//! Runs the steps that are due: records the intent, calls the records system, records the
//! outcome with what follows from it (the case number, the responses' steps, the hearing
//! journalized). Any number of workers may run against one database: a step is claimed by
//! the event that starts it, and a claim two workers race for is won by one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agora_eventstore::{Store, StoreError};
use agora_jobs::recorded_with_retries;
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
#[derive(Clone)]
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
    ///
    /// Steps are claimed a batch at a time: a batch is started in one transaction (each
    /// hearing's journal read once for all its steps), and its outcomes are recorded as they
    /// come, each transaction taking the outcomes that came meanwhile, so that a hearing's
    /// thousands of responses cost a commit per handful of filings, not two each. The steps are
    /// performed `concurrency` at once, and the next batch is claimed as soon as the last
    /// step of one begins: no batch waits for its slowest step (batches taken and performed one
    /// after another did, and filed at half the speed with `concurrency` steps a batch). A batch
    /// and the steps still running before it are eight rounds of `concurrency` steps: more
    /// would leave the last steps of a slow records system too little of their lease.
    pub async fn run_due(&self) -> Result<usize, WorkerError> {
        let concurrency = self.concurrency.max(1);
        // A batch is claimed with up to `concurrency - 1` steps of the one before still running:
        // with those, eight rounds in all stand before its last step.
        let batch = i64::try_from(concurrency.saturating_mul(7).saturating_add(1)).unwrap_or(i64::MAX);
        // Steps claimed whose outcomes are not recorded yet. A claim that finds nothing is the
        // end only when there are none: a recorded outcome may make more steps due (the case
        // opened, the responses listed).
        let unrecorded = AtomicUsize::new(0);
        let recorded = tokio::sync::Notify::new();
        let ran = AtomicUsize::new(0);
        let failed: std::sync::Mutex<Option<WorkerError>> = std::sync::Mutex::new(None);
        let (outcomes, mut known) = tokio::sync::mpsc::unbounded_channel();
        let (unrecorded, recorded, ran, failed) = (&unrecorded, &recorded, &ran, &failed);
        let perform = async move {
            let outcomes = &outcomes;
            let batches = futures::stream::unfold(true, |go_on| async move {
                while go_on && !outcomes.is_closed() {
                    // Read before the claim: an outcome recorded while the claim reads may make
                    // steps due that it did not see, so only a claim that began with nothing
                    // left to record and found nothing ends the run.
                    let pending = unrecorded.load(Ordering::SeqCst);
                    let claimed = match self.claim(batch, || outcomes.is_closed()).await {
                        Ok(claimed) => claimed,
                        Err(e) => return Some((Err(e), false)),
                    };
                    if !claimed.is_empty() {
                        unrecorded.fetch_add(claimed.len(), Ordering::SeqCst);
                        ran.fetch_add(claimed.len(), Ordering::SeqCst);
                        // Each step's work stops well before its lease ends, so that no other
                        // worker starts it while this one still calls the records system.
                        let deadline = tokio::time::Instant::now() + self.retry.lease.mul_f32(0.8);
                        return Some((Ok((claimed, deadline)), true));
                    }
                    if pending == 0 {
                        return None;
                    }
                    // A permit left by a recording since the count was read wakes this at once.
                    recorded.notified().await;
                }
                None
            });
            batches
                .flat_map(|claimed| {
                    let steps: Vec<_> = match claimed {
                        Ok((steps, deadline)) => {
                            steps.into_iter().map(|(step, journal)| Ok((step, journal, deadline))).collect()
                        }
                        Err(e) => vec![Err(e)],
                    };
                    futures::stream::iter(steps)
                })
                .for_each_concurrent(concurrency, |claimed| async move {
                    match claimed {
                        Ok((running, journal, deadline)) => {
                            // The recorder gave up (the database is gone): no more is done now.
                            let performed = if outcomes.is_closed() {
                                None
                            } else {
                                self.perform_before(&running, &journal, deadline).await
                            };
                            if let Some(outcome) = performed {
                                // A closed channel: the recorder gave up; the step is done
                                // again after its lease.
                                if outcomes.send((running, outcome)).is_ok() {
                                    return;
                                }
                            }
                            // Not performed, or its outcome not to be recorded: no longer waited for.
                            unrecorded.fetch_sub(1, Ordering::SeqCst);
                            recorded.notify_one();
                        }
                        Err(e) => {
                            if let Ok(mut failed) = failed.lock() {
                                failed.get_or_insert(e);
                            }
                        }
                    }
                })
                .await;
        };
        let record = async move {
            let recording = async {
                while let Some(first) = known.recv().await {
                    let mut done = vec![first];
                    while let Ok(more) = known.try_recv() {
                        done.push(more);
                    }
                    let count = done.len();
                    self.record_all(done).await?;
                    unrecorded.fetch_sub(count, Ordering::SeqCst);
                    recorded.notify_one();
                }
                Ok::<(), WorkerError>(())
            };
            let result = recording.await;
            // Closed, so that a claim waiting for outcomes that will not be recorded stops.
            drop(known);
            recorded.notify_one();
            result
        };
        let ((), recorded_all) = tokio::join!(perform, record);
        recorded_all?;
        if let Some(e) = failed.lock().ok().and_then(|mut failed| failed.take()) {
            return Err(e);
        }
        Ok(ran.load(Ordering::SeqCst))
    }

    /// Claims up to `batch` due steps whose turn has come: started in one transaction, unless
    /// `stopped` says by then that they would not be performed (the recorder gave up), since
    /// a start costs an attempt.
    async fn claim(&self, batch: i64, stopped: impl Fn() -> bool) -> Result<Vec<(Step, Arc<Journal>)>, WorkerError> {
        let due = store::due_steps(&self.store, self.now(), batch).await?;
        let runnable = self.runnable(due).await?;
        if stopped() {
            return Ok(Vec::new());
        }
        self.start_all(runnable).await
    }

    /// The steps of `due` whose turn has come, each with its hearing's journal (read once for
    /// all its steps: a batch is mostly one hearing's responses).
    async fn runnable(&self, due: Vec<Step>) -> Result<Vec<(Step, Arc<Journal>)>, WorkerError> {
        let mut journals: HashMap<String, Option<Arc<Journal>>> = HashMap::new();
        let mut runnable = Vec::with_capacity(due.len());
        for step in due {
            let journal = match journals.get(&step.group) {
                Some(journal) => journal.clone(),
                None => {
                    let journal = store::journal(&self.store, &step.group).await?.map(Arc::new);
                    journals.insert(step.group.clone(), journal.clone());
                    journal
                }
            };
            let Some(journal) = journal else { continue };
            let others = match step.action {
                Action::CloseCase => store::STEPS.unfinished_besides(&self.store, &step.group, &step.key).await?,
                _ => 0,
            };
            if may_run(&step, &journal, others) {
                runnable.push((step, journal));
            }
        }
        Ok(runnable)
    }

    /// Claims the steps in one transaction; those this worker took (another worker may have
    /// claimed some first), as they are now (their `attempts` is the attempt now running).
    async fn start_all(&self, runnable: Vec<(Step, Arc<Journal>)>) -> Result<Vec<(Step, Arc<Journal>)>, WorkerError> {
        let now = self.now();
        let mut journals = HashMap::new();
        let mut transitions = Vec::with_capacity(runnable.len());
        for (step, journal) in runnable {
            if let Ok(started) = step.start(now, &self.retry) {
                journals.insert(step.group.clone(), journal);
                transitions.push((step, started));
            }
        }
        if transitions.is_empty() {
            return Ok(Vec::new());
        }
        let moved = store::STEPS.transition_all(&self.store, transitions, ACTOR).await?;
        Ok(moved
            .into_iter()
            .filter_map(|running| {
                let journal = journals.get(&running.group)?.clone();
                Some((running, journal))
            })
            .collect())
    }

    /// Performs a started step unless its deadline has passed (the steps before it took too
    /// long: it is left for after its lease); cut short at the deadline.
    async fn perform_before(
        &self,
        running: &Step,
        journal: &Journal,
        deadline: tokio::time::Instant,
    ) -> Option<Result<Outcome, Failure>> {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(hearing = %running.group, step = %running.key, "left for after its lease: the steps before it took too long");
            return None;
        }
        tracing::info!(hearing = %running.group, step = %running.key, attempt = running.attempts, "journalizing");
        Some(match tokio::time::timeout_at(deadline, self.perform(running, journal)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure {
                message: "the step ran until four fifths of its lease were gone".into(),
                final_error: false,
            }),
        })
    }

    /// Records the outcomes of performed steps: those that change nothing but their step in
    /// one transaction, each that changes the journal in one of its own (it takes the journal's
    /// lock, and the step and the journal's change must commit together). A failed
    /// transaction is tried again, and one outcome that cannot be recorded does not keep the
    /// others from it: an outcome lost means doing its step again after the lease.
    async fn record_all(&self, done: Vec<(Step, Result<Outcome, Failure>)>) -> Result<(), WorkerError> {
        let mut plain = Vec::new();
        let mut with_follow_up = Vec::new();
        for (running, outcome) in done {
            // A refusal means the step moved on without this worker: its lease ran out.
            let Some((event, follow_up)) = self.outcome_event(&running, outcome) else { continue };
            match follow_up {
                Some(follow_up) => with_follow_up.push((running, event, follow_up)),
                None => plain.push((running, event)),
            }
        }
        let mut first_error = None;
        if !plain.is_empty() {
            let outcomes: HashMap<(String, String), &'static str> = plain
                .iter()
                .map(|(running, event)| ((running.group.clone(), running.key.clone()), outcome_name(event)))
                .collect();
            let recorded =
                recorded_with_retries(|| store::STEPS.transition_all(&self.store, plain.clone(), ACTOR)).await;
            match recorded {
                Ok(moved) => {
                    let metrics = agora_telemetry::metrics::global();
                    // A step left out moved on without this worker: its lease ran out.
                    for step in moved {
                        if let Some(outcome) = outcomes.get(&(step.group, step.key)) {
                            metrics.journal_step(outcome);
                        }
                    }
                }
                Err(e) => first_error = Some(WorkerError::from(e)),
            }
        }
        for (running, event, follow_up) in with_follow_up {
            let recorded =
                recorded_with_retries(|| self.record_with_follow_up(running.clone(), event.clone(), follow_up.clone()))
                    .await;
            if let Err(e) = recorded {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The event that records a step's outcome, and what follows from it for the journal;
    /// `None` when the step moved on without this worker (its lease ran out).
    fn outcome_event(&self, running: &Step, outcome: Result<Outcome, Failure>) -> Option<(StepEvent, Option<Outcome>)> {
        let attempt = running.attempts;
        let recorded = match outcome {
            Ok(Outcome::Skipped(reason)) => {
                tracing::warn!(hearing = %running.group, step = %running.key, reason = %reason, "nothing to file");
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
                let follow_up = match (&outcome, &running.action) {
                    (Outcome::Case(_) | Outcome::Responses(_), _) | (Outcome::Done, Action::CloseCase) => Some(outcome),
                    _ => None,
                };
                running.succeed(attempt, reference).map(|event| (event, follow_up))
            }
            Err(failure) => {
                tracing::warn!(hearing = %running.group, step = %running.key, attempt, error = %failure.message, "journalizing failed");
                running
                    .fail(attempt, failure.message, failure.final_error, self.now(), &self.retry)
                    .map(|event| (event, None))
            }
        };
        recorded.ok()
    }

    /// Records a step's outcome with what follows from it for the journal, in one transaction.
    async fn record_with_follow_up(
        &self,
        running: Step,
        event: StepEvent,
        follow_up: Outcome,
    ) -> Result<(), WorkerError> {
        let outcome = outcome_name(&event);
        let mut tx = self.store.begin().await?;
        let recorded = match store::transition_in(&self.store, &mut tx, &running, event, ACTOR).await {
            Ok((_, recorded)) => recorded,
            // The lease ran out and another worker took the step over: its outcome counts.
            Err(StoreError::Conflict { .. } | StoreError::BrokenStream { .. }) => {
                let _ = tx.rollback().await;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        self.follow_up(&mut tx, &running, follow_up).await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.store.committed_quietly(&recorded);
        agora_telemetry::metrics::global().journal_step(outcome);
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

/// The outcome's name in the `agora_journal_steps_total` metric.
fn outcome_name(event: &StepEvent) -> &'static str {
    match event {
        StepEvent::StepSucceeded { .. } => "succeeded",
        StepEvent::StepSkipped { .. } => "skipped",
        StepEvent::StepDeferred { .. } => "deferred",
        StepEvent::StepFailed { retry_at: Some(_), .. } => "retrying",
        _ => "parked",
    }
}
