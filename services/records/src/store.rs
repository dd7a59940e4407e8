//! The records service's tables, kept in the same transaction as the events they follow:
//! `records_journals` (a hearing's journal) and `records_steps` (each step's folded state,
//! which is also the work queue). The events stay the record: a step's stream
//! (`RecordsStep`, `<hearing id>/<step key>`) and the journal's (`RecordsJournal`, the
//! hearing id: case opened, hearing journalized).

use std::collections::HashMap;

use agora_eventstore::{DbTx, RecordedEvent, Store, StoreError, on_reader, on_tx};
use agora_jobs::StepTable;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Journal, PlannedStep, Step, StepEvent};

pub const JOURNAL_AGGREGATE: &str = "RecordsJournal";

/// The journalization steps: table `records_steps`, streams `RecordsStep` `<hearing>/<step>`.
pub const STEPS: StepTable = StepTable { table: "records_steps", aggregate: "RecordsStep" };

pub const SCHEMA: &[&str] = &["CREATE TABLE IF NOT EXISTS records_journals (
        hearing_id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL,
        sequence BIGINT NOT NULL,
        state TEXT NOT NULL)"];

pub async fn migrate(store: &Store) -> Result<(), StoreError> {
    store.execute_ddl(SCHEMA).await?;
    STEPS.migrate(store).await
}

/// The journal's own events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum JournalEvent {
    CaseOpened { case_id: String, case_number: String },
    HearingJournalized { case_number: String, documents: u32 },
}

impl JournalEvent {
    fn name(&self) -> &'static str {
        match self {
            JournalEvent::CaseOpened { .. } => "CaseOpened",
            JournalEvent::HearingJournalized { .. } => "HearingJournalized",
        }
    }
}

fn corrupt(field: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::CorruptField { position: 0, field, reason: e.to_string() }
}

/// Taken before a hearing's journal is read to be changed: the integration handler and the
/// workers of every replica change it one at a time (SQLite's one writer does this by itself).
const JOURNAL_LOCK_CLASS: i32 = 0x4147_5243;

/// The journal of a hearing and its stream's last sequence, read in the transaction, which
/// holds the journal until it ends.
pub async fn journal_in(tx: &mut DbTx, hearing_id: &str) -> Result<Option<(Journal, i64)>, StoreError> {
    if let DbTx::Postgres(conn) = tx {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(JOURNAL_LOCK_CLASS)
            .bind(hearing_id)
            .execute(&mut **conn)
            .await?;
    }
    let row: Option<(String, i64)> = on_tx!(tx, conn => {
        sqlx::query_as("SELECT state, sequence FROM records_journals WHERE hearing_id = $1")
            .bind(hearing_id)
            .fetch_optional(&mut **conn)
            .await?
    });
    row.map(|(state, sequence)| {
        Ok((serde_json::from_str(&state).map_err(|e| corrupt("records_journals.state", e))?, sequence))
    })
    .transpose()
}

pub async fn save_journal_in(tx: &mut DbTx, journal: &Journal, sequence: i64) -> Result<(), StoreError> {
    let state = serde_json::to_string(journal).map_err(|e| corrupt("records_journals.state", e))?;
    on_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO records_journals (hearing_id, owner_id, sequence, state) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (hearing_id) DO UPDATE SET owner_id = excluded.owner_id, sequence = excluded.sequence, state = excluded.state",
        )
        .bind(&journal.hearing_id)
        .bind(&journal.owner_id)
        .bind(sequence)
        .bind(state)
        .execute(&mut **conn)
        .await?;
    });
    Ok(())
}

/// Appends one of the journal's events after `sequence`; returns the new sequence.
pub async fn append_journal_event(
    store: &Store,
    tx: &mut DbTx,
    hearing_id: &str,
    sequence: i64,
    journal_event: &JournalEvent,
    actor: &str,
) -> Result<(i64, Vec<RecordedEvent>), StoreError> {
    let new = agora_jobs::new_event(
        JOURNAL_AGGREGATE,
        hearing_id.into(),
        sequence + 1,
        journal_event.name(),
        journal_event,
        actor,
    )?;
    Ok((sequence + 1, store.append_in(tx, &[new]).await?))
}

/// Adds steps to a hearing's journalization after its last one; a step already planned is
/// left as it is.
pub async fn plan_in(
    store: &Store,
    tx: &mut DbTx,
    hearing_id: &str,
    steps: Vec<PlannedStep>,
    actor: &str,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let steps = steps.into_iter().map(|planned| (planned.key, planned.action)).collect();
    STEPS.plan_in(store, tx, hearing_id, steps, actor).await
}

/// Records `step_event` on the step, if the step is still as `step` was read; the step after
/// it and the event, for `Store::committed` after the commit.
pub async fn transition_in(
    store: &Store,
    tx: &mut DbTx,
    step: &Step,
    step_event: StepEvent,
    actor: &str,
) -> Result<(Step, Vec<RecordedEvent>), StoreError> {
    STEPS.transition_in(store, tx, step, step_event, actor).await
}

/// Steps due at `now` whose turn has come, fairly across hearings: everything but opening the
/// case waits for the case, closing it waits for every other step (as
/// [`crate::domain::may_run`] has it), so that steps waiting for others never crowd out those
/// that can run.
pub async fn due_steps(store: &Store, now: DateTime<Utc>, limit: i64) -> Result<Vec<Step>, StoreError> {
    let condition = "(s.step_key = $3 OR EXISTS (SELECT 1 FROM records_steps c \
         WHERE c.group_id = s.group_id AND c.step_key = $3 AND c.state = 'done')) \
         AND (s.step_key <> $4 OR NOT EXISTS (SELECT 1 FROM records_steps o \
         WHERE o.group_id = s.group_id AND o.step_key <> $4 AND o.state <> 'done'))";
    STEPS.due_where(store, now, limit, condition, &[crate::domain::OPEN_CASE, crate::domain::CLOSE_CASE]).await
}

/// When the next step that is not due yet will be.
pub async fn next_due(store: &Store) -> Result<Option<DateTime<Utc>>, StoreError> {
    STEPS.next_due(store).await
}

/// A step as stored now.
pub async fn step(store: &Store, hearing_id: &str, key: &str) -> Result<Option<Step>, StoreError> {
    STEPS.step(store, hearing_id, key).await
}

/// A hearing's steps in their order.
pub async fn steps(store: &Store, hearing_id: &str) -> Result<Vec<Step>, StoreError> {
    STEPS.steps(store, hearing_id).await
}

/// How many documents a hearing's done steps filed.
pub async fn documents_filed(tx: &mut DbTx, hearing_id: &str) -> Result<u32, StoreError> {
    let done: Vec<Step> = STEPS.done_in(tx, hearing_id).await?;
    let filed = done.iter().filter(|s| s.action.files_document() && s.skipped.is_none()).count();
    Ok(u32::try_from(filed).unwrap_or(u32::MAX))
}

/// A hearing's journal as stored now.
pub async fn journal(store: &Store, hearing_id: &str) -> Result<Option<Journal>, StoreError> {
    let row: Option<(String,)> = on_reader!(store.backend(), pool => {
        sqlx::query_as("SELECT state FROM records_journals WHERE hearing_id = $1")
            .bind(hearing_id)
            .fetch_optional(pool)
            .await?
    });
    row.map(|(state,)| serde_json::from_str(&state).map_err(|e| corrupt("records_journals.state", e))).transpose()
}

/// A hearing's steps not done yet, in their order, and how many are done.
pub async fn open_steps(store: &Store, hearing_id: &str) -> Result<(Vec<Step>, usize), StoreError> {
    let (open, done) = STEPS.open_steps(store, Some(hearing_id)).await?;
    Ok((open, done.get(hearing_id).copied().unwrap_or(0)))
}

/// Every journal that has steps, with its steps not done yet and how many are done.
pub async fn journals_with_open_steps(store: &Store) -> Result<Vec<(Journal, Vec<Step>, usize)>, StoreError> {
    let (open, done) = STEPS.open_steps::<crate::domain::Action>(store, None).await?;
    let mut open_by_hearing: HashMap<String, Vec<Step>> = HashMap::new();
    for step in open {
        open_by_hearing.entry(step.group.clone()).or_default().push(step);
    }
    let rows: Vec<(String, String)> = on_reader!(store.backend(), pool => {
        sqlx::query_as("SELECT hearing_id, state FROM records_journals ORDER BY hearing_id").fetch_all(pool).await?
    });
    let mut out = Vec::new();
    for (hearing_id, journal) in rows {
        let open = open_by_hearing.remove(&hearing_id).unwrap_or_default();
        let done = done.get(&hearing_id).copied().unwrap_or(0);
        if open.is_empty() && done == 0 {
            continue;
        }
        let journal: Journal = serde_json::from_str(&journal).map_err(|e| corrupt("records_journals.state", e))?;
        out.push((journal, open, done));
    }
    Ok(out)
}
