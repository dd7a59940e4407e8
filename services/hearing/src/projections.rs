//! Read models of the hearing service, kept from the log: the hearing list (public list,
//! owner's dashboard, due transitions), who is reviewer or invitee where, and the
//! reference data lists.

use std::collections::HashMap;

use agora_eventstore::consumer::{Projection, ProjectionError};
use agora_eventstore::{DbTx, RecordedEvent, Store, StoreError, on_tx, placeholders};
use async_trait::async_trait;
use cqrs_es::Aggregate;

use crate::domain::reference::{Reference, ReferenceEvent, ReferenceItem};
use crate::domain::{Hearing, HearingEvent, HearingStatus};

pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS hearing_list (
        id TEXT PRIMARY KEY,
        version BIGINT NOT NULL,
        status TEXT NOT NULL,
        hearing_type_id TEXT NOT NULL,
        hearing_type_name TEXT NOT NULL,
        internal BOOLEAN NOT NULL,
        closed BOOLEAN NOT NULL,
        title TEXT NOT NULL,
        summary TEXT NOT NULL,
        subject_area_id TEXT,
        city_area_id TEXT,
        kle_number TEXT,
        start_date TEXT,
        deadline TEXT,
        opens_at TEXT,
        closes_at TEXT,
        owner_id TEXT NOT NULL,
        case_number TEXT,
        search_text TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        state TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS hearing_list_status ON hearing_list (status, closes_at)",
    "CREATE INDEX IF NOT EXISTS hearing_list_owner ON hearing_list (owner_id)",
    "CREATE TABLE IF NOT EXISTS hearing_members (
        hearing_id TEXT NOT NULL,
        role TEXT NOT NULL,
        reference TEXT NOT NULL,
        PRIMARY KEY (hearing_id, role, reference))",
    "CREATE INDEX IF NOT EXISTS hearing_members_reference ON hearing_members (reference, role)",
    "CREATE TABLE IF NOT EXISTS reference_items (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        data TEXT NOT NULL,
        retired BOOLEAN NOT NULL,
        PRIMARY KEY (kind, id))",
    "CREATE TABLE IF NOT EXISTS kle_numbers (
        number TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        retired BOOLEAN NOT NULL)",
];

pub async fn migrate(store: &Store) -> Result<(), StoreError> {
    store.execute_ddl(SCHEMA).await
}

fn apply_failed(event: &RecordedEvent, reason: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Apply { projection: READ_MODEL.into(), position: event.position(), reason: reason.to_string() }
}

/// The hearing list and membership tables.
pub struct HearingListProjection;

impl HearingListProjection {
    async fn load(tx: &mut DbTx, id: &str) -> Result<Option<Hearing>, ProjectionError> {
        let state: Option<(String,)> = on_tx!(tx, conn => {
            sqlx::query_as("SELECT state FROM hearing_list WHERE id = $1").bind(id).fetch_optional(&mut **conn).await?
        });
        match state {
            None => Ok(None),
            Some((json,)) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| ProjectionError::Store(StoreError::Corrupt { position: 0, source: e })),
        }
    }

    /// Writes the rows and memberships of every hearing a batch touched, a few statements
    /// per batch rather than per hearing. `fresh` hearings had their first event in the
    /// batch, so nothing of them can be stored yet.
    async fn save_all(tx: &mut DbTx, touched: &[(&str, &Touched)]) -> Result<(), ProjectionError> {
        let postgres = tx.is_postgres();
        let stale: Vec<&str> = touched.iter().filter(|(_, t)| !t.fresh).map(|(id, _)| *id).collect();
        let gone: Vec<&str> =
            touched.iter().filter(|(_, t)| t.hearing.status == HearingStatus::Deleted).map(|(id, _)| *id).collect();
        for (table, ids) in [("hearing_members", &stale), ("hearing_list", &gone)] {
            for chunk in ids.chunks(500) {
                let column = if table == "hearing_list" { "id" } else { "hearing_id" };
                let sql = format!(
                    "DELETE FROM {table} WHERE {column} IN ({})",
                    placeholders(postgres, 1, chunk.len()).replace(['(', ')'], "")
                );
                on_tx!(tx, conn => {
                    let mut query = sqlx::query(&sql);
                    for id in chunk {
                        query = query.bind(*id);
                    }
                    query.execute(&mut **conn).await?;
                });
            }
        }
        let live: Vec<&(&str, &Touched)> =
            touched.iter().filter(|(_, t)| t.hearing.status != HearingStatus::Deleted).collect();
        let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        };
        for chunk in live.chunks(400) {
            let sql = format!(
                "INSERT INTO hearing_list (id, version, status, hearing_type_id, hearing_type_name, internal, closed, title, summary, \
                 subject_area_id, city_area_id, kle_number, start_date, deadline, opens_at, closes_at, owner_id, case_number, \
                 search_text, updated_at, state) VALUES {} \
                 ON CONFLICT (id) DO UPDATE SET version = excluded.version, status = excluded.status, \
                 hearing_type_id = excluded.hearing_type_id, hearing_type_name = excluded.hearing_type_name, \
                 internal = excluded.internal, closed = excluded.closed, title = excluded.title, summary = excluded.summary, \
                 subject_area_id = excluded.subject_area_id, city_area_id = excluded.city_area_id, kle_number = excluded.kle_number, \
                 start_date = excluded.start_date, deadline = excluded.deadline, opens_at = excluded.opens_at, \
                 closes_at = excluded.closes_at, owner_id = excluded.owner_id, case_number = excluded.case_number, \
                 search_text = excluded.search_text, updated_at = excluded.updated_at, state = excluded.state",
                placeholders(postgres, chunk.len(), 21)
            );
            let mut rows = Vec::with_capacity(chunk.len());
            for (id, t) in chunk {
                let hearing = &t.hearing;
                let state =
                    serde_json::to_string(hearing).map_err(|e| ProjectionError::Store(StoreError::Serialize(e)))?;
                let search_text = format!(
                    "{} {} {}",
                    hearing.title(),
                    hearing.field("summary"),
                    hearing.kle_number.as_deref().unwrap_or("")
                )
                .to_lowercase();
                rows.push((*id, t, state, search_text));
            }
            on_tx!(tx, conn => {
                let mut query = sqlx::query(&sql);
                for (id, t, state, search_text) in &rows {
                    let hearing = &t.hearing;
                    query = query
                        .bind(*id)
                        .bind(t.version)
                        .bind(hearing.status.as_str())
                        .bind(&hearing.hearing_type.id)
                        .bind(&hearing.hearing_type.name)
                        .bind(hearing.internal())
                        .bind(hearing.closed)
                        .bind(hearing.title())
                        .bind(hearing.field("summary"))
                        .bind(&hearing.subject_area_id)
                        .bind(&hearing.city_area_id)
                        .bind(&hearing.kle_number)
                        .bind(hearing.start_date.map(|d| d.to_string()))
                        .bind(hearing.deadline.map(|d| d.to_string()))
                        .bind(time(hearing.opens_at()))
                        .bind(time(hearing.closes_at()))
                        .bind(hearing.owner.to_string())
                        .bind(&hearing.case_number)
                        .bind(search_text)
                        .bind(&t.updated_at)
                        .bind(state);
                }
                query.execute(&mut **conn).await?;
            });
        }
        let members: Vec<(&str, &str, String)> = live
            .iter()
            .flat_map(|(id, t)| {
                let reviewers = t.hearing.reviewers.iter().map(move |r| (*id, "reviewer", format!("user:{r}")));
                let invitees = t.hearing.invitees.keys().map(move |k| (*id, "invitee", k.clone()));
                reviewers.chain(invitees)
            })
            .collect();
        for chunk in members.chunks(2000) {
            let sql = format!(
                "INSERT INTO hearing_members (hearing_id, role, reference) VALUES {}",
                placeholders(postgres, chunk.len(), 3)
            );
            on_tx!(tx, conn => {
                let mut query = sqlx::query(&sql);
                for (id, role, reference) in chunk {
                    query = query.bind(*id).bind(*role).bind(reference);
                }
                query.execute(&mut **conn).await?;
            });
        }
        Ok(())
    }
}

/// A hearing as a batch left it.
struct Touched {
    hearing: Hearing,
    version: i64,
    updated_at: String,
    fresh: bool,
}

/// The read model's name: its checkpoint's key, and what a command waits for.
pub const READ_MODEL: &str = "hearing-read-model";

#[async_trait]
impl Projection for HearingListProjection {
    fn name(&self) -> &str {
        READ_MODEL
    }

    fn aggregates(&self) -> Option<&[&'static str]> {
        Some(&[Hearing::TYPE, Reference::TYPE])
    }

    async fn apply(&self, tx: &mut DbTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        self.apply_batch(tx, std::slice::from_ref(event)).await
    }

    /// Folds each hearing's events of the batch into its state and writes it once: a
    /// rebuild reads and writes a row per hearing per batch, not per event.
    async fn apply_batch(&self, tx: &mut DbTx, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let mut touched: HashMap<&str, Touched> = HashMap::new();
        let mut order: Vec<&str> = Vec::new();
        for event in events {
            match event.aggregate_type.as_str() {
                t if t == Hearing::TYPE => {
                    let id = event.aggregate_id.as_str();
                    if !touched.contains_key(id) {
                        // A stream's first event needs no lookup: there is nothing yet.
                        let fresh = event.sequence == 1;
                        let hearing = if fresh {
                            Hearing::default()
                        } else {
                            Self::load(tx, id).await.map_err(|e| apply_failed(event, e))?.unwrap_or_default()
                        };
                        touched.insert(id, Touched { hearing, version: 0, updated_at: String::new(), fresh });
                        order.push(id);
                    }
                    let domain_event: HearingEvent = event.decode().map_err(|e| apply_failed(event, e))?;
                    if let Some(t) = touched.get_mut(id) {
                        t.hearing.apply(domain_event);
                        t.version = event.sequence;
                        t.updated_at = event.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                    }
                }
                t if t == Reference::TYPE => apply_reference(tx, event).await?,
                _ => {}
            }
        }
        let rows: Vec<(&str, &Touched)> = order.iter().filter_map(|id| touched.get(id).map(|t| (*id, t))).collect();
        Self::save_all(tx, &rows).await
    }

    async fn reset(&self, tx: &mut DbTx) -> Result<(), ProjectionError> {
        on_tx!(tx, conn => {
            for table in ["hearing_members", "hearing_list", "reference_items", "kle_numbers"] {
                sqlx::query(&format!("DELETE FROM {table}")).execute(&mut **conn).await?;
            }
        });
        Ok(())
    }
}

async fn apply_reference(tx: &mut DbTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
    let domain_event: ReferenceEvent = event.decode().map_err(|e| apply_failed(event, e))?;
    match domain_event {
        ReferenceEvent::ReferenceDefined { item } => {
            let data = serde_json::to_string(&item).map_err(|e| apply_failed(event, e))?;
            on_tx!(tx, conn => {
                sqlx::query(
                    "INSERT INTO reference_items (kind, id, name, data, retired) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (kind, id) DO UPDATE SET name = excluded.name, data = excluded.data, retired = excluded.retired",
                )
                .bind(item.kind())
                .bind(item.id())
                .bind(item.name())
                .bind(data)
                .bind(false)
                .execute(&mut **conn)
                .await?;
            });
        }
        ReferenceEvent::ReferenceRetired => {
            let (kind, id) = event.aggregate_id.split_once(':').unwrap_or(("", event.aggregate_id.as_str()));
            on_tx!(tx, conn => {
                sqlx::query("UPDATE reference_items SET retired = $1 WHERE kind = $2 AND id = $3")
                    .bind(true)
                    .bind(kind)
                    .bind(id)
                    .execute(&mut **conn)
                    .await?;
            });
        }
        ReferenceEvent::KleTreeLoaded { entries } => {
            on_tx!(tx, conn => {
                sqlx::query("DELETE FROM kle_numbers").execute(&mut **conn).await?;
                for entry in &entries {
                    sqlx::query("INSERT INTO kle_numbers (number, title, retired) VALUES ($1, $2, $3) ON CONFLICT (number) DO NOTHING")
                        .bind(&entry.number)
                        .bind(&entry.title)
                        .bind(entry.retired)
                        .execute(&mut **conn)
                        .await?;
                }
            });
        }
    }
    Ok(())
}

/// Decodes the `data` column of a reference item row.
pub fn decode_item(data: &str) -> Option<ReferenceItem> {
    serde_json::from_str(data).ok()
}
