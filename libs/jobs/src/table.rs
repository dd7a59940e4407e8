//! Where a service keeps its steps: a table of each step's folded state, written in the same
//! transaction as the step's events (`<aggregate>`, stream `<group>/<key>`), which is also the
//! work queue. On SQLite the reads go through the reader pool, so that a read never waits for
//! the one writer connection.

use std::collections::{BTreeSet, HashMap, HashSet};

use agora_eventstore::{
    DbTx, EventContext, NewEvent, RecordedEvent, Store, StoreError, on_reader, on_tx, placeholders,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::step::{Step, StepEvent, StepState};

/// Steps planned with one statement: six parameters each, well within what PostgreSQL
/// (65,535) and SQLite (32,766) take in one statement.
const PLANNED_AT_ONCE: usize = 1000;
/// Steps moved with one statement: seven parameters each.
const TRANSITIONS_AT_ONCE: usize = 1000;

/// One service's steps: their table and the aggregate type of their streams.
#[derive(Debug, Clone, Copy)]
pub struct StepTable {
    pub table: &'static str,
    pub aggregate: &'static str,
}

fn corrupt(field: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::CorruptField { position: 0, field, reason: e.to_string() }
}

/// A new event of a service's own (a step's, or another stream's), with the actor's metadata.
pub fn new_event(
    aggregate_type: &str,
    aggregate_id: String,
    sequence: i64,
    name: &str,
    payload: &impl serde::Serialize,
    actor: &str,
) -> Result<NewEvent, StoreError> {
    let metadata = EventContext::for_actor(actor).with_command(name).to_metadata();
    Ok(NewEvent {
        aggregate_type: aggregate_type.into(),
        aggregate_id,
        sequence,
        event_type: name.into(),
        event_version: "1".into(),
        payload: serde_json::value::to_raw_value(payload).map_err(|e| corrupt("event payload", e))?,
        metadata: serde_json::to_value(metadata).map_err(|e| corrupt("metadata", e))?,
    })
}

fn millis(at: Option<DateTime<Utc>>) -> Option<i64> {
    at.map(|t| t.timestamp_millis())
}

impl StepTable {
    /// The step's stream id.
    pub fn stream(group: &str, key: &str) -> String {
        format!("{group}/{key}")
    }

    /// The table and its work index. `due_at`: milliseconds since 1970 when a retrying step is
    /// due or a running step's lease ends; NULL when due at once (pending) or never (done,
    /// parked).
    pub fn schema(&self) -> Vec<String> {
        let table = self.table;
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                    group_id TEXT NOT NULL,
                    step_key TEXT NOT NULL,
                    position BIGINT NOT NULL,
                    state TEXT NOT NULL,
                    due_at BIGINT,
                    sequence BIGINT NOT NULL,
                    step TEXT NOT NULL,
                    PRIMARY KEY (group_id, step_key))"
            ),
            // The work queue is the few unfinished steps among many finished ones: indexes of
            // those only, in the order they are taken, so that finding what is due does not
            // scan the finished ones (an index on the state did, once the table grew).
            format!(
                "CREATE INDEX IF NOT EXISTS {table}_unfinished ON {table} (position, group_id) \
                 WHERE state IN ('pending', 'retrying', 'running')"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {table}_waiting ON {table} (due_at) WHERE state IN ('retrying', 'running')"
            ),
            format!("DROP INDEX IF EXISTS {table}_work"),
        ]
    }

    pub async fn migrate(&self, store: &Store) -> Result<(), StoreError> {
        let schema = self.schema();
        let statements: Vec<&str> = schema.iter().map(String::as_str).collect();
        store.execute_ddl(&statements).await
    }

    fn decode<A: DeserializeOwned>(&self, json: &str) -> Result<Step<A>, StoreError> {
        serde_json::from_str(json).map_err(|e| corrupt("step", e))
    }

    /// Adds steps to a group after its last one; a key already planned is left as it is.
    pub async fn plan_in<A: Serialize + DeserializeOwned + Clone>(
        &self,
        store: &Store,
        tx: &mut DbTx,
        group: &str,
        steps: Vec<(String, A)>,
        actor: &str,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let steps = steps.into_iter().map(|(key, action)| (group.to_string(), key, action)).collect();
        self.plan_all_in(store, tx, steps, actor).await
    }

    /// Adds steps (group, key, action), each after its group's last one, with a few statements
    /// for the lot however many groups they are in (an event handler's batch plans a receipt
    /// for each of hundreds of respondents). A key already planned, here or earlier, is left
    /// as it is and gets no event.
    pub async fn plan_all_in<A: Serialize + DeserializeOwned + Clone>(
        &self,
        store: &Store,
        tx: &mut DbTx,
        steps: Vec<(String, String, A)>,
        actor: &str,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut seen = HashSet::new();
        let steps: Vec<(String, String, A)> =
            steps.into_iter().filter(|(group, key, _)| seen.insert((group.clone(), key.clone()))).collect();
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let table = self.table;
        let postgres = tx.is_postgres();
        let groups: Vec<&str> =
            steps.iter().map(|(group, ..)| group.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
        let mut last: HashMap<String, i64> = HashMap::new();
        for chunk in groups.chunks(PLANNED_AT_ONCE) {
            let list = placeholders(postgres, 1, chunk.len());
            let sql = format!("SELECT group_id, MAX(position) FROM {table} WHERE group_id IN {list} GROUP BY group_id");
            let rows: Vec<(String, i64)> = on_tx!(tx, conn => {
                let mut query = sqlx::query_as(&sql);
                for group in chunk {
                    query = query.bind(*group);
                }
                query.fetch_all(&mut **conn).await?
            });
            last.extend(rows);
        }
        let mut planned = Vec::with_capacity(steps.len());
        for (group, key, action) in steps {
            let position = last.entry(group.clone()).or_insert(0);
            *position += 1;
            let step = Step::planned(&group, &key, *position, action);
            let json = serde_json::to_string(&step).map_err(|e| corrupt("step", e))?;
            planned.push((step, json));
        }
        // A key planned already (by an earlier event, or by another replica at the same
        // moment) keeps its row: the insert does nothing for it, and returns it not.
        let mut inserted = HashSet::new();
        for chunk in planned.chunks(PLANNED_AT_ONCE) {
            let sql = format!(
                "INSERT INTO {table} (group_id, step_key, position, state, sequence, step) VALUES {} \
                 ON CONFLICT (group_id, step_key) DO NOTHING RETURNING group_id, step_key",
                placeholders(postgres, chunk.len(), 6)
            );
            let rows: Vec<(String, String)> = on_tx!(tx, conn => {
                let mut query = sqlx::query_as(&sql);
                for (step, json) in chunk {
                    query = query
                        .bind(&step.group)
                        .bind(&step.key)
                        .bind(step.position)
                        .bind(step.state.as_str())
                        .bind(step.sequence)
                        .bind(json);
                }
                query.fetch_all(&mut **conn).await?
            });
            inserted.extend(rows);
        }
        let mut events = Vec::with_capacity(inserted.len());
        for (step, _) in planned {
            if !inserted.contains(&(step.group.clone(), step.key.clone())) {
                continue;
            }
            let stream = Self::stream(&step.group, &step.key);
            let first = StepEvent::StepPlanned {
                group: step.group,
                key: step.key,
                position: step.position,
                action: step.action,
            };
            events.push(new_event(self.aggregate, stream, 1, first.name(), &first, actor)?);
        }
        store.append_in(tx, &events).await
    }

    /// Records `step_event` on the step, if the step is still as `step` was read: another
    /// worker's change in between is a [`StoreError::Conflict`], and nothing is written.
    /// Returns the step after it and the event recorded, for [`Store::committed`] once the
    /// transaction has committed (so that the step's next event finds its chain's head there).
    pub async fn transition_in<A: Serialize + DeserializeOwned + Clone>(
        &self,
        store: &Store,
        tx: &mut DbTx,
        step: &Step<A>,
        step_event: StepEvent<A>,
        actor: &str,
    ) -> Result<(Step<A>, Vec<RecordedEvent>), StoreError> {
        let (mut moved, recorded) = self.transition_all_in(store, tx, vec![(step.clone(), step_event)], actor).await?;
        match moved.pop() {
            Some(after) => Ok((after, recorded)),
            None => {
                Err(StoreError::Conflict { stream: Self::stream(&step.group, &step.key), sequence: step.sequence + 1 })
            }
        }
    }

    /// Records an event on each of several steps, in one transaction: a step that another
    /// worker changed since it was read is left out (and nothing written for it), the rest move
    /// on. Returns the steps that moved, as they are now, and their events (for
    /// [`Store::committed_quietly`] after the commit).
    ///
    /// Each step's row is moved first (compare-and-set on its sequence), and its event is
    /// appended only when the row moved: a step taken by another worker then costs an
    /// unchanged row, not a failed insert, which on PostgreSQL would abort the whole
    /// transaction.
    pub async fn transition_all_in<A: Serialize + DeserializeOwned + Clone>(
        &self,
        store: &Store,
        tx: &mut DbTx,
        transitions: Vec<(Step<A>, StepEvent<A>)>,
        actor: &str,
    ) -> Result<(Vec<Step<A>>, Vec<RecordedEvent>), StoreError> {
        let table = self.table;
        let postgres = tx.is_postgres();
        let mut after_all = Vec::with_capacity(transitions.len());
        for (mut after, step_event) in transitions {
            let read_at = after.sequence;
            after.apply(&step_event);
            let json = serde_json::to_string(&after).map_err(|e| corrupt("step", e))?;
            after_all.push((after, step_event, read_at, json));
        }
        // No deadlock between two workers moving the same steps: each passes them in the one
        // order `due_where` reads them in, so whatever the plan (the VALUES' order, or the
        // table's), they lock the rows they share in the same order. Outcomes move only steps
        // under the worker's own lease; one whose lease ran out meanwhile may meet another
        // worker's start in another order, and PostgreSQL then aborts one of the two: the
        // outcome is tried again at once, the start at the next poll.
        // One statement moves every row still at the sequence it was read at (VALUES names
        // its columns column1… on both databases), and returns those it moved.
        let mut changed = HashSet::new();
        for chunk in after_all.chunks(TRANSITIONS_AT_ONCE) {
            let sql = format!(
                "UPDATE {table} SET state = v.column1, due_at = v.column2, sequence = v.column3, step = v.column4 \
                 FROM (VALUES {}) AS v \
                 WHERE {table}.group_id = v.column5 AND {table}.step_key = v.column6 AND {table}.sequence = v.column7 \
                 RETURNING group_id, step_key",
                placeholders(postgres, chunk.len(), 7)
            );
            let rows: Vec<(String, String)> = on_tx!(tx, conn => {
                let mut query = sqlx::query_as(&sql);
                for (after, _, read_at, json) in chunk {
                    query = query
                        .bind(after.state.as_str())
                        .bind(millis(after.due_at))
                        .bind(after.sequence)
                        .bind(json)
                        .bind(&after.group)
                        .bind(&after.key)
                        .bind(*read_at);
                }
                query.fetch_all(&mut **conn).await?
            });
            changed.extend(rows);
        }
        let mut moved = Vec::with_capacity(changed.len());
        let mut events = Vec::with_capacity(changed.len());
        for (after, step_event, read_at, _) in after_all {
            if !changed.contains(&(after.group.clone(), after.key.clone())) {
                continue;
            }
            let stream = Self::stream(&after.group, &after.key);
            events.push(new_event(self.aggregate, stream, read_at + 1, step_event.name(), &step_event, actor)?);
            moved.push(after);
        }
        let recorded = store.append_in(tx, &events).await?;
        Ok((moved, recorded))
    }

    /// [`StepTable::transition_all_in`] in a transaction of its own, committed and announced
    /// quietly ([`Store::committed_quietly`]: the steps' next events find their chains' heads
    /// without waking every reader of the log for a queue's bookkeeping); the steps that moved.
    pub async fn transition_all<A: Serialize + DeserializeOwned + Clone>(
        &self,
        store: &Store,
        transitions: Vec<(Step<A>, StepEvent<A>)>,
        actor: &str,
    ) -> Result<Vec<Step<A>>, StoreError> {
        let mut tx = store.begin().await?;
        match self.transition_all_in(store, &mut tx, transitions, actor).await {
            Ok((moved, recorded)) => {
                tx.commit().await.map_err(StoreError::from)?;
                store.committed_quietly(&recorded);
                Ok(moved)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    /// Steps due at `now` that also meet `condition` (SQL on the table aliased `s`, whose
    /// parameters from `$3` are `binds`), fairly across groups.
    pub async fn due_where<A: DeserializeOwned>(
        &self,
        store: &Store,
        now: DateTime<Utc>,
        limit: i64,
        condition: &str,
        binds: &[&str],
    ) -> Result<Vec<Step<A>>, StoreError> {
        // The limit is written into the statement: with it as a parameter, PostgreSQL's
        // generic plan for a prepared statement reckons on a tenth of the table and sorts
        // what it scanned, instead of reading the first few unfinished steps off their index.
        // It stays bound as $2 too, so that the callers' parameters keep their numbers.
        let sql = format!(
            "SELECT s.step FROM {} s WHERE s.state IN ('pending', 'retrying', 'running') \
             AND (s.due_at IS NULL OR s.due_at <= $1) AND $2 > 0 AND ({condition}) \
             ORDER BY s.position, s.group_id LIMIT {}",
            self.table,
            limit.max(1)
        );
        let rows: Vec<(String,)> = on_reader!(store.backend(), pool => {
            let mut query = sqlx::query_as(&sql).bind(now.timestamp_millis()).bind(limit);
            for bind in binds {
                query = query.bind(*bind);
            }
            query.fetch_all(pool).await?
        });
        rows.iter().map(|(json,)| self.decode(json)).collect()
    }

    /// When the next step that is not due yet will be.
    pub async fn next_due(&self, store: &Store) -> Result<Option<DateTime<Utc>>, StoreError> {
        let sql = format!("SELECT MIN(due_at) FROM {} WHERE state IN ('retrying', 'running')", self.table);
        let (at,): (Option<i64>,) = on_reader!(store.backend(), pool => {
            sqlx::query_as(&sql).fetch_one(pool).await?
        });
        Ok(at.and_then(DateTime::from_timestamp_millis))
    }

    /// A step as stored now.
    pub async fn step<A: DeserializeOwned>(
        &self,
        store: &Store,
        group: &str,
        key: &str,
    ) -> Result<Option<Step<A>>, StoreError> {
        let sql = format!("SELECT step FROM {} WHERE group_id = $1 AND step_key = $2", self.table);
        let row: Option<(String,)> = on_reader!(store.backend(), pool => {
            sqlx::query_as(&sql).bind(group).bind(key).fetch_optional(pool).await?
        });
        row.map(|(json,)| self.decode(&json)).transpose()
    }

    /// A group's steps in their order.
    pub async fn steps<A: DeserializeOwned>(&self, store: &Store, group: &str) -> Result<Vec<Step<A>>, StoreError> {
        let sql = format!("SELECT step FROM {} WHERE group_id = $1 ORDER BY position", self.table);
        let rows: Vec<(String,)> = on_reader!(store.backend(), pool => {
            sqlx::query_as(&sql).bind(group).fetch_all(pool).await?
        });
        rows.iter().map(|(json,)| self.decode(json)).collect()
    }

    /// The steps not done yet (of one group, or of every group when `group` is `None`), in
    /// their order, and how many are done, by group: what a status needs, without reading
    /// every finished step of a group of thousands.
    pub async fn open_steps<A: DeserializeOwned>(
        &self,
        store: &Store,
        group: Option<&str>,
    ) -> Result<(Vec<Step<A>>, HashMap<String, usize>), StoreError> {
        let table = self.table;
        let of_group = if group.is_some() { " AND group_id = $2" } else { "" };
        // One statement, so that a step finishing meanwhile is counted once: open or done.
        // The done counts come as rows without a step.
        let sql = format!(
            "SELECT group_id, position, step, 0 AS done FROM {table} WHERE state <> $1{of_group} \
             UNION ALL \
             SELECT group_id, 0, NULL, COUNT(*) FROM {table} WHERE state = $1{of_group} GROUP BY group_id \
             ORDER BY 1, 2"
        );
        let rows: Vec<(String, i64, Option<String>, i64)> = on_reader!(store.backend(), pool => {
            let mut query = sqlx::query_as(&sql).bind(StepState::Done.as_str());
            if let Some(group) = group {
                query = query.bind(group);
            }
            query.fetch_all(pool).await?
        });
        let mut open = Vec::new();
        let mut done = HashMap::new();
        for (group, _, step, count) in rows {
            match step {
                Some(json) => open.push(self.decode(&json)?),
                None => {
                    done.insert(group, usize::try_from(count).unwrap_or(usize::MAX));
                }
            }
        }
        Ok((open, done))
    }

    /// A group's finished steps, read in the transaction.
    pub async fn done_in<A: DeserializeOwned>(&self, tx: &mut DbTx, group: &str) -> Result<Vec<Step<A>>, StoreError> {
        let sql = format!("SELECT step FROM {} WHERE group_id = $1 AND state = $2 ORDER BY position", self.table);
        let rows: Vec<(String,)> = on_tx!(tx, conn => {
            sqlx::query_as(&sql).bind(group).bind(StepState::Done.as_str()).fetch_all(&mut **conn).await?
        });
        rows.iter().map(|(json,)| self.decode(json)).collect()
    }

    /// The keys of a group's steps.
    pub async fn keys(&self, store: &Store, group: &str) -> Result<Vec<String>, StoreError> {
        let sql = format!("SELECT step_key FROM {} WHERE group_id = $1", self.table);
        let rows: Vec<(String,)> = on_reader!(store.backend(), pool => {
            sqlx::query_as(&sql).bind(group).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(|(key,)| key).collect())
    }

    /// How many of a group's steps other than `key` are not done.
    pub async fn unfinished_besides(&self, store: &Store, group: &str, key: &str) -> Result<usize, StoreError> {
        let sql = format!("SELECT COUNT(*) FROM {} WHERE group_id = $1 AND step_key <> $2 AND state <> $3", self.table);
        let (count,): (i64,) = on_reader!(store.backend(), pool => {
            sqlx::query_as(&sql).bind(group).bind(key).bind(StepState::Done.as_str()).fetch_one(pool).await?
        });
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }
}
