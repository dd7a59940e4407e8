//! Surge-proof intake by group commit.
//!
//! Submits queue up (a bounded queue: back-pressure) and a worker takes them in batches.
//! Each batch is one transaction: it takes each hearing's counter row once, answers retried
//! idempotency keys with their first receipt, numbers the new responses in arrival order,
//! appends their events and stores their receipts, and commits. A receipt is given only after
//! that commit, so an acknowledged response is never lost, and the numbers are gapless because
//! counter and events commit together. Replicas run a worker each; the counter row lock
//! makes their batches for one hearing take turns, but a turn carries a whole batch, so no
//! row or stream is taken once per submit.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use agora_eventstore::{DbTx, NewEvent, Store, StoreError, on_tx, placeholders};
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::domain::{AGGREGATE_TYPE, IntakeError, MAX_KEY, Receipt, ResponseEvent, Submission, check};
use crate::files::Attachments;
use crate::hearings::{may_see_in, terms_in, terms_with_counter_in};

pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

struct Job {
    submission: Submission,
    /// What the event keeps of the submission (its files already checked and stored), sealed
    /// for its author.
    sealed: crate::personal::Sealed,
    /// The receipt, and whether it is new (not the first receipt of an earlier submit).
    reply: oneshot::Sender<Result<(Receipt, bool), IntakeError>>,
}

/// Settings of the intake queue.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// Submits waiting at most; beyond it a submit waits up to `queue_wait`, then is told to retry.
    pub queue: usize,
    pub queue_wait: Duration,
    /// Submits in one transaction at most.
    pub max_batch: usize,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        Self { queue: 4096, queue_wait: Duration::from_secs(2), max_batch: 256 }
    }
}

/// The intake: clone it freely; all clones feed one worker.
#[derive(Clone)]
pub struct Intake {
    jobs: mpsc::Sender<Job>,
    config: IntakeConfig,
    files: Attachments,
    store: Store,
    keys: crate::personal::Keys,
}

impl Intake {
    pub fn start(
        store: Store,
        files: Attachments,
        keys: crate::personal::Keys,
        clock: Clock,
        config: IntakeConfig,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (jobs, queue) = mpsc::channel(config.queue.max(1));
        let worker = tokio::spawn(work(store.clone(), clock, queue, config.max_batch.max(1)));
        (Self { jobs, config, files, store, keys }, worker)
    }

    /// Where the respondents' keys are.
    pub fn keys(&self) -> &crate::personal::Keys {
        &self.keys
    }

    /// Where attachments are kept.
    pub fn files(&self) -> &Attachments {
        &self.files
    }

    /// Submits a response; returns its receipt once it is stored.
    pub async fn submit(&self, submission: Submission) -> Result<Receipt, IntakeError> {
        let key = submission.idempotency_key.trim();
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(IntakeError::Invalid(format!("the idempotency key must be 1 to {MAX_KEY} characters")));
        }
        // Files are checked, scanned and stored here, by each caller in parallel, so that
        // the batch transaction only records them. Their rules come from the hearing's type.
        let attachments = if submission.attachments.is_empty() {
            Vec::new()
        } else {
            let terms = crate::hearings::terms(&self.store, submission.hearing_id)
                .await
                .map_err(|e| IntakeError::Storage(e.to_string()))?
                .ok_or(IntakeError::HearingNotFound(submission.hearing_id))?;
            self.files.accept(&submission.attachments, &terms.rules.files).await?
        };
        // Sealed here, by each caller in parallel, like the files.
        let sealed = match crate::personal::seal_submission(
            self.keys.as_ref(),
            &submission.author,
            submission.hearing_id,
            submission.registered_by_owner,
            &submission.text,
            &submission.on_behalf_of,
            &attachments,
        )
        .await
        {
            Ok(sealed) => sealed,
            Err(e) => {
                self.files.remove(&attachments).await;
                return Err(match e {
                    agora_vault::VaultError::Erased(_) => IntakeError::Invalid("the account has been erased".into()),
                    other => IntakeError::Storage(other.to_string()),
                });
            }
        };
        let (reply, answer) = oneshot::channel();
        let busy = IntakeError::Busy { retry_after_ms: 1000 };
        let job = Job { submission, sealed, reply };
        // Only a full queue needs a timer.
        let queued = match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(job)) => {
                matches!(tokio::time::timeout(self.config.queue_wait, self.jobs.send(job)).await, Ok(Ok(())))
            }
        };
        let outcome = if queued { answer.await.unwrap_or(Err(busy)) } else { Err(busy) };
        match outcome {
            Ok((receipt, true)) => Ok(receipt),
            // Refused, or a retry answered with the first receipt: these files are not kept.
            other => {
                self.files.remove(&attachments).await;
                other.map(|(receipt, _)| receipt)
            }
        }
    }
}

async fn work(store: Store, clock: Clock, mut queue: mpsc::Receiver<Job>, max_batch: usize) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let submissions: Vec<(&Submission, &crate::personal::Sealed)> =
            batch.iter().map(|j| (&j.submission, &j.sealed)).collect();
        let mut results = Err(StoreError::BrokenStream { stream: "intake".into(), sequence: 0 });
        // A batch may lose a race with another replica (the same idempotency key), or meet a
        // hearing without a counter row yet: it rolled back whole, so run it again.
        for _ in 0..3 {
            results = process(&store, &clock, &submissions).await;
            if !matches!(
                results,
                Err(StoreError::Conflict { .. }) | Err(StoreError::Database(sqlx::Error::Database(_)))
            ) {
                break;
            }
        }
        match results {
            Ok(results) => {
                for (job, result) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, submits = batch.len(), "intake batch failed; the clients are told to retry");
                for job in batch {
                    let _ = job.reply.send(Err(IntakeError::Storage(e.to_string())));
                }
            }
        }
    }
}

/// One batch in one transaction; a result per submission, in order.
async fn process(
    store: &Store,
    clock: &Clock,
    submissions: &[(&Submission, &crate::personal::Sealed)],
) -> Result<Vec<Result<(Receipt, bool), IntakeError>>, StoreError> {
    let hearing_ids: BTreeSet<Uuid> = submissions.iter().map(|(s, _)| s.hearing_id).collect();
    let hearing_ids: Vec<Uuid> = hearing_ids.into_iter().collect();
    let mut tx = store.begin().await?;
    let postgres = tx.is_postgres();

    // Receipts of keys seen before.
    let keys: Vec<&str> = submissions.iter().map(|(s, _)| s.idempotency_key.as_str()).collect();
    let known = known_keys(&mut tx, &keys).await?;

    // Each hearing's counter, taken once for the whole batch, in a fixed order so that two
    // replicas' batches cannot deadlock, read with the hearing's terms.
    let mut terms = HashMap::new();
    let mut counters: HashMap<Uuid, i64> = HashMap::new();
    let mut missing = Vec::new();
    for id in &hearing_ids {
        match terms_with_counter_in(&mut tx, *id).await? {
            Some((hearing, last)) => {
                terms.insert(*id, hearing);
                counters.insert(*id, last);
            }
            None => missing.push(*id),
        }
    }
    // A hearing without a counter is either unknown (its submits are refused below) or
    // meets its first batch.
    let first_batch: Vec<Uuid> = terms_in(&mut tx, &missing).await?.into_iter().map(|t| t.hearing_id).collect();
    if !first_batch.is_empty() {
        // Its counter row is made outside this transaction, so that two replicas' first
        // responses queue on one row instead of both counting from zero; then the batch runs again.
        tx.rollback().await?;
        create_counters(store, &first_batch).await?;
        return Err(StoreError::Conflict { stream: "response counters".into(), sequence: 0 });
    }
    let started: HashMap<Uuid, i64> = counters.clone();

    // A closed or internal hearing takes responses only from those who may see it.
    let mut seen = Vec::with_capacity(submissions.len());
    for (submission, _) in submissions {
        seen.push(match terms.get(&submission.hearing_id) {
            Some(hearing) => may_see_in(&mut tx, hearing, Some(&submission.respondent)).await?,
            None => false,
        });
    }

    let now = clock();
    let mut results = Vec::with_capacity(submissions.len());
    let mut new_receipts: Vec<(&str, String, Receipt)> = Vec::new();
    let mut events = Vec::new();
    for (index, (submission, sealed)) in submissions.iter().enumerate() {
        let content = submission.content_sha256();
        let key = submission.idempotency_key.as_str();
        let earlier = known.get(key).cloned().or_else(|| {
            new_receipts.iter().find(|(k, _, _)| *k == key).map(|(_, hash, receipt)| (hash.clone(), receipt.clone()))
        });
        if let Some((hash, receipt)) = earlier {
            results.push(if hash == content { Ok((receipt, false)) } else { Err(IntakeError::KeyReused) });
            continue;
        }
        // A hearing they may not see is, to them, no hearing at all (as the hearing service
        // answers them).
        let Some(hearing) = terms.get(&submission.hearing_id).filter(|_| seen[index]) else {
            results.push(Err(IntakeError::HearingNotFound(submission.hearing_id)));
            continue;
        };
        if let Err(e) = check(hearing, submission, now) {
            results.push(Err(e));
            continue;
        }
        let counter = counters.entry(submission.hearing_id).or_insert(0);
        *counter += 1;
        let receipt = Receipt {
            response_id: Uuid::now_v7(),
            hearing_id: submission.hearing_id,
            number: *counter,
            content_sha256: content.clone(),
            accepted_at: now,
        };
        let sensitive = crate::domain::contains_cpr_number(&submission.text);
        let status = if hearing.auto_approve && !sensitive {
            crate::domain::ModerationStatus::Approved
        } else {
            crate::domain::ModerationStatus::Pending
        };
        let event = ResponseEvent::ResponseSubmitted {
            hearing_id: submission.hearing_id,
            number: receipt.number,
            author: submission.author.clone(),
            on_behalf_of: sealed.on_behalf_of.clone(),
            text: sealed.text.clone(),
            terms_version: submission.terms_version.clone(),
            content_sha256: content.clone(),
            accepted_at: now,
            registered_by_owner: submission.registered_by_owner,
            attachments: sealed.attachments.clone(),
            status,
            sensitive,
        };
        events.push(NewEvent {
            aggregate_type: AGGREGATE_TYPE.into(),
            aggregate_id: receipt.response_id.to_string(),
            sequence: 1,
            event_type: cqrs_es::DomainEvent::event_type(&event),
            event_version: cqrs_es::DomainEvent::event_version(&event),
            payload: serde_json::value::to_raw_value(&event)?,
            metadata: serde_json::json!({ "actor": submission.author, "command": "SubmitResponse" }),
        });
        new_receipts.push((key, content, receipt.clone()));
        results.push(Ok((receipt, true)));
    }

    let recorded = store.append_in(&mut tx, &events).await?;
    let mut changed: Vec<(Uuid, i64)> =
        counters.iter().filter(|(id, last)| started.get(id) != Some(last)).map(|(id, last)| (*id, *last)).collect();
    for chunk in new_receipts.chunks(500) {
        // On PostgreSQL a chunk of receipts carries a counter's update too: a round trip less.
        let counter = if postgres { changed.pop() } else { None };
        let mut sql = String::new();
        if counter.is_some() {
            let n = chunk.len() * 3;
            sql.push_str(&format!(
                "WITH counter AS (UPDATE response_counters SET last_number = ${} WHERE hearing_id = ${}) ",
                n + 1,
                n + 2
            ));
        }
        sql.push_str(&format!(
            "INSERT INTO response_idempotency (idempotency_key, content_sha256, receipt) VALUES {}",
            placeholders(postgres, chunk.len(), 3)
        ));
        let rows: Vec<(String, String, String)> = chunk
            .iter()
            .map(|(k, hash, receipt)| Ok((k.to_string(), hash.clone(), serde_json::to_string(receipt)?)))
            .collect::<Result<_, serde_json::Error>>()?;
        on_tx!(&mut tx, conn => {
            let mut query = sqlx::query(&sql);
            for (key, hash, receipt) in &rows {
                query = query.bind(key).bind(hash).bind(receipt);
            }
            if let Some((id, last)) = counter {
                query = query.bind(last).bind(id.to_string());
            }
            query.execute(&mut **conn).await?;
        });
    }
    for (id, last) in changed {
        on_tx!(&mut tx, conn => {
            sqlx::query("UPDATE response_counters SET last_number = $1 WHERE hearing_id = $2")
                .bind(last)
                .bind(id.to_string())
                .execute(&mut **conn)
                .await?;
        });
    }
    tx.commit().await?;
    store.committed(&recorded);
    Ok(results)
}

async fn create_counters(store: &Store, hearings: &[Uuid]) -> Result<(), StoreError> {
    agora_eventstore::on_backend!(store.backend(), pool => {
        for id in hearings {
            sqlx::query("INSERT INTO response_counters (hearing_id, last_number) VALUES ($1, 0) ON CONFLICT (hearing_id) DO NOTHING")
                .bind(id.to_string())
                .execute(pool)
                .await?;
        }
    });
    Ok(())
}

async fn known_keys(tx: &mut DbTx, keys: &[&str]) -> Result<HashMap<String, (String, Receipt)>, StoreError> {
    let mut known = HashMap::new();
    for chunk in keys.chunks(500) {
        let sql = format!(
            "SELECT idempotency_key, content_sha256, receipt FROM response_idempotency WHERE idempotency_key IN ({})",
            placeholders(tx.is_postgres(), 1, chunk.len()).trim_matches(|c| c == '(' || c == ')')
        );
        let rows: Vec<(String, String, String)> = on_tx!(tx, conn => {
            let mut query = sqlx::query_as(&sql);
            for key in chunk {
                query = query.bind(*key);
            }
            query.fetch_all(&mut **conn).await?
        });
        for (key, hash, receipt) in rows {
            known.insert(key, (hash, serde_json::from_str(&receipt)?));
        }
    }
    Ok(known)
}
