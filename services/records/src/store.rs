//! The records service's tables, kept in the same transaction as the events they follow:
//! `records_journals` (a hearing's journal) and `records_steps` (each step's folded state,
//! which is also the work queue). The events stay the record: a step's stream
//! (`RecordsStep`, `<hearing id>/<step key>`) and the journal's (`RecordsJournal`, the
//! hearing id: case opened, hearing journalized).

use agora_eventstore::{DbTx, EventContext, NewEvent, RecordedEvent, Store, StoreError, on_reader, on_tx};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Journal, PlannedStep, Step, StepEvent, StepState};

pub const JOURNAL_AGGREGATE: &str = "RecordsJournal";
pub const STEP_AGGREGATE: &str = "RecordsStep";

pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS records_journals (
        hearing_id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL,
        sequence BIGINT NOT NULL,
        state TEXT NOT NULL)",
    // due_at: milliseconds since 1970 when a retrying step is due or a running step's lease
    // ends; NULL when due at once (pending) or never (done, parked).
    "CREATE TABLE IF NOT EXISTS records_steps (
        hearing_id TEXT NOT NULL,
        step_key TEXT NOT NULL,
        position BIGINT NOT NULL,
        state TEXT NOT NULL,
        due_at BIGINT,
        sequence BIGINT NOT NULL,
        step TEXT NOT NULL,
        PRIMARY KEY (hearing_id, step_key))",
    "CREATE INDEX IF NOT EXISTS records_steps_work ON records_steps (state, due_at)",
];

pub async fn migrate(store: &Store) -> Result<(), StoreError> {
    store.execute_ddl(SCHEMA).await
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

fn event(
    aggregate_type: &str,
    aggregate_id: String,
    sequence: i64,
    name: &str,
    payload: serde_json::Value,
    actor: &str,
) -> Result<NewEvent, StoreError> {
    let metadata = EventContext::for_actor(actor).with_command(name).to_metadata();
    Ok(NewEvent {
        aggregate_type: aggregate_type.into(),
        aggregate_id,
        sequence,
        event_type: name.into(),
        event_version: "1".into(),
        payload,
        metadata: serde_json::to_value(metadata).map_err(|e| corrupt("metadata", e))?,
    })
}

pub fn step_stream(hearing_id: &str, key: &str) -> String {
    format!("{hearing_id}/{key}")
}

fn millis(at: Option<DateTime<Utc>>) -> Option<i64> {
    at.map(|t| t.timestamp_millis())
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
    let payload = serde_json::to_value(journal_event).map_err(|e| corrupt("journal event", e))?;
    let new = event(JOURNAL_AGGREGATE, hearing_id.into(), sequence + 1, journal_event.name(), payload, actor)?;
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
    let mut recorded = Vec::new();
    if steps.is_empty() {
        return Ok(recorded);
    }
    let (last,): (Option<i64>,) = on_tx!(tx, conn => {
        sqlx::query_as("SELECT MAX(position) FROM records_steps WHERE hearing_id = $1")
            .bind(hearing_id)
            .fetch_one(&mut **conn)
            .await?
    });
    let mut position = last.unwrap_or(0);
    for planned in steps {
        let exists: Option<(i64,)> = on_tx!(tx, conn => {
            sqlx::query_as("SELECT sequence FROM records_steps WHERE hearing_id = $1 AND step_key = $2")
                .bind(hearing_id)
                .bind(&planned.key)
                .fetch_optional(&mut **conn)
                .await?
        });
        if exists.is_some() {
            continue;
        }
        position += 1;
        let first = StepEvent::StepPlanned {
            hearing_id: hearing_id.into(),
            key: planned.key.clone(),
            position,
            action: planned.action.clone(),
        };
        let step = Step::planned(hearing_id, &planned.key, position, planned.action);
        let payload = serde_json::to_value(&first).map_err(|e| corrupt("step event", e))?;
        let new = event(STEP_AGGREGATE, step_stream(hearing_id, &step.key), 1, first.name(), payload, actor)?;
        recorded.extend(store.append_in(tx, &[new]).await?);
        let json = serde_json::to_string(&step).map_err(|e| corrupt("records_steps.step", e))?;
        on_tx!(tx, conn => {
            sqlx::query(
                "INSERT INTO records_steps (hearing_id, step_key, position, state, due_at, sequence, step) \
                 VALUES ($1, $2, $3, $4, NULL, 1, $5)",
            )
            .bind(hearing_id)
            .bind(&step.key)
            .bind(position)
            .bind(step.state.as_str())
            .bind(json)
            .execute(&mut **conn)
            .await?;
        });
    }
    Ok(recorded)
}

/// Records `step_event` on the step, if the step is still as `step` was read: another
/// worker's change in between is a [`StoreError::Conflict`], and nothing is written.
pub async fn transition_in(
    store: &Store,
    tx: &mut DbTx,
    step: &Step,
    step_event: StepEvent,
    actor: &str,
) -> Result<Step, StoreError> {
    let mut after = step.clone();
    after.apply(&step_event);
    let payload = serde_json::to_value(&step_event).map_err(|e| corrupt("step event", e))?;
    let new = event(
        STEP_AGGREGATE,
        step_stream(&step.hearing_id, &step.key),
        step.sequence + 1,
        step_event.name(),
        payload,
        actor,
    )?;
    store.append_in(tx, &[new]).await?;
    let json = serde_json::to_string(&after).map_err(|e| corrupt("records_steps.step", e))?;
    let changed = on_tx!(tx, conn => {
        sqlx::query(
            "UPDATE records_steps SET state = $1, due_at = $2, sequence = $3, step = $4 \
             WHERE hearing_id = $5 AND step_key = $6 AND sequence = $7",
        )
        .bind(after.state.as_str())
        .bind(millis(after.due_at))
        .bind(after.sequence)
        .bind(json)
        .bind(&step.hearing_id)
        .bind(&step.key)
        .bind(step.sequence)
        .execute(&mut **conn)
        .await?
        .rows_affected()
    });
    if changed != 1 {
        return Err(StoreError::Conflict {
            stream: step_stream(&step.hearing_id, &step.key),
            sequence: step.sequence + 1,
        });
    }
    Ok(after)
}

fn decode_step(json: &str) -> Result<Step, StoreError> {
    serde_json::from_str(json).map_err(|e| corrupt("records_steps.step", e))
}

/// Steps due at `now` whose turn has come, fairly across hearings: everything but opening the
/// case waits for the case, closing it waits for every other step (as
/// [`crate::domain::may_run`] has it), so that steps waiting for others never crowd out those
/// that can run.
pub async fn due_steps(store: &Store, now: DateTime<Utc>, limit: i64) -> Result<Vec<Step>, StoreError> {
    let rows: Vec<(String,)> = on_reader!(store.backend(), pool => {
        sqlx::query_as(
            "SELECT s.step FROM records_steps s WHERE s.state IN ('pending', 'retrying', 'running') \
             AND (s.due_at IS NULL OR s.due_at <= $1) \
             AND (s.step_key = $3 OR EXISTS (SELECT 1 FROM records_steps c \
                  WHERE c.hearing_id = s.hearing_id AND c.step_key = $3 AND c.state = 'done')) \
             AND (s.step_key <> $4 OR NOT EXISTS (SELECT 1 FROM records_steps o \
                  WHERE o.hearing_id = s.hearing_id AND o.step_key <> $4 AND o.state <> 'done')) \
             ORDER BY s.position, s.hearing_id LIMIT $2",
        )
        .bind(now.timestamp_millis())
        .bind(limit)
        .bind(crate::domain::OPEN_CASE)
        .bind(crate::domain::CLOSE_CASE)
        .fetch_all(pool)
        .await?
    });
    rows.iter().map(|(json,)| decode_step(json)).collect()
}

/// When the next step that is not due yet will be.
pub async fn next_due(store: &Store) -> Result<Option<DateTime<Utc>>, StoreError> {
    let (at,): (Option<i64>,) = on_reader!(store.backend(), pool => {
        sqlx::query_as("SELECT MIN(due_at) FROM records_steps WHERE state IN ('retrying', 'running')")
            .fetch_one(pool)
            .await?
    });
    Ok(at.and_then(DateTime::from_timestamp_millis))
}

/// A step as stored now.
pub async fn step(store: &Store, hearing_id: &str, key: &str) -> Result<Option<Step>, StoreError> {
    let row: Option<(String,)> = on_reader!(store.backend(), pool => {
        sqlx::query_as("SELECT step FROM records_steps WHERE hearing_id = $1 AND step_key = $2")
            .bind(hearing_id)
            .bind(key)
            .fetch_optional(pool)
            .await?
    });
    row.map(|(json,)| decode_step(&json)).transpose()
}

/// A hearing's steps in their order.
pub async fn steps(store: &Store, hearing_id: &str) -> Result<Vec<Step>, StoreError> {
    let rows: Vec<(String,)> = on_reader!(store.backend(), pool => {
        sqlx::query_as("SELECT step FROM records_steps WHERE hearing_id = $1 ORDER BY position")
            .bind(hearing_id)
            .fetch_all(pool)
            .await?
    });
    rows.iter().map(|(json,)| decode_step(json)).collect()
}

/// How many of a hearing's steps other than `key` are not done.
pub async fn unfinished_besides(store: &Store, hearing_id: &str, key: &str) -> Result<usize, StoreError> {
    let (count,): (i64,) = on_reader!(store.backend(), pool => {
        sqlx::query_as("SELECT COUNT(*) FROM records_steps WHERE hearing_id = $1 AND step_key <> $2 AND state <> $3")
            .bind(hearing_id)
            .bind(key)
            .bind(StepState::Done.as_str())
            .fetch_one(pool)
            .await?
    });
    Ok(usize::try_from(count).unwrap_or(usize::MAX))
}

/// The keys of a hearing's steps.
pub async fn step_keys(store: &Store, hearing_id: &str) -> Result<Vec<String>, StoreError> {
    let rows: Vec<(String,)> = on_reader!(store.backend(), pool => {
        sqlx::query_as("SELECT step_key FROM records_steps WHERE hearing_id = $1")
            .bind(hearing_id)
            .fetch_all(pool)
            .await?
    });
    Ok(rows.into_iter().map(|(key,)| key).collect())
}

/// How many documents a hearing's done steps filed.
pub async fn documents_filed(tx: &mut DbTx, hearing_id: &str) -> Result<u32, StoreError> {
    let rows: Vec<(String,)> = on_tx!(tx, conn => {
        sqlx::query_as("SELECT step FROM records_steps WHERE hearing_id = $1 AND state = $2")
            .bind(hearing_id)
            .bind(StepState::Done.as_str())
            .fetch_all(&mut **conn)
            .await?
    });
    let mut filed = 0;
    for (json,) in rows {
        let step = decode_step(&json)?;
        if step.action.files_document() && step.skipped.is_none() {
            filed += 1;
        }
    }
    Ok(filed)
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

/// Every journal that has steps, with its steps.
pub async fn journals_with_steps(store: &Store) -> Result<Vec<(Journal, Vec<Step>)>, StoreError> {
    let rows: Vec<(String, String)> = on_reader!(store.backend(), pool => {
        sqlx::query_as(
            "SELECT j.state, s.step FROM records_journals j JOIN records_steps s \
             ON s.hearing_id = j.hearing_id ORDER BY j.hearing_id, s.position",
        )
        .fetch_all(pool)
        .await?
    });
    let mut out: Vec<(Journal, Vec<Step>)> = Vec::new();
    for (journal, step) in rows {
        let step = decode_step(&step)?;
        match out.last_mut() {
            Some((j, steps)) if j.hearing_id == step.hearing_id => steps.push(step),
            _ => {
                let journal: Journal =
                    serde_json::from_str(&journal).map_err(|e| corrupt("records_journals.state", e))?;
                out.push((journal, vec![step]));
            }
        }
    }
    Ok(out)
}
