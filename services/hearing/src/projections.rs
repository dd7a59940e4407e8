//! Read models of the hearing service, kept from the log: the hearing list (public list,
//! owner's dashboard, due transitions), who is reviewer or invitee where, and the
//! reference data lists.

use std::collections::HashMap;

use agora_eventstore::consumer::{Projection, ProjectionError};
use agora_eventstore::{on_tx, DbTx, RecordedEvent, Store, StoreError};
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
    ProjectionError::Apply { projection: "hearing-read-model".into(), position: event.position(), reason: reason.to_string() }
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

    /// Writes the hearing's row and memberships; `fresh` when its first event was in this
    /// batch, so nothing of it can be stored yet.
    async fn save(tx: &mut DbTx, id: &str, version: i64, hearing: &Hearing, updated_at: &str, fresh: bool) -> Result<(), ProjectionError> {
        if !fresh {
            on_tx!(tx, conn => {
                sqlx::query("DELETE FROM hearing_members WHERE hearing_id = $1").bind(id).execute(&mut **conn).await?;
            });
        }
        if hearing.status == HearingStatus::Deleted {
            on_tx!(tx, conn => {
                sqlx::query("DELETE FROM hearing_list WHERE id = $1").bind(id).execute(&mut **conn).await?;
            });
            return Ok(());
        }
        let state = serde_json::to_string(hearing).map_err(|e| ProjectionError::Store(StoreError::Serialize(e)))?;
        let search_text = format!("{} {} {}", hearing.title(), hearing.field("summary"), hearing.kle_number.as_deref().unwrap_or("")).to_lowercase();
        let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        on_tx!(tx, conn => {
            sqlx::query(
                "INSERT INTO hearing_list (id, version, status, hearing_type_id, hearing_type_name, internal, closed, title, summary, \
                 subject_area_id, city_area_id, kle_number, start_date, deadline, opens_at, closes_at, owner_id, case_number, \
                 search_text, updated_at, state) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21) \
                 ON CONFLICT (id) DO UPDATE SET version = excluded.version, status = excluded.status, \
                 hearing_type_id = excluded.hearing_type_id, hearing_type_name = excluded.hearing_type_name, \
                 internal = excluded.internal, closed = excluded.closed, title = excluded.title, summary = excluded.summary, \
                 subject_area_id = excluded.subject_area_id, city_area_id = excluded.city_area_id, kle_number = excluded.kle_number, \
                 start_date = excluded.start_date, deadline = excluded.deadline, opens_at = excluded.opens_at, \
                 closes_at = excluded.closes_at, owner_id = excluded.owner_id, case_number = excluded.case_number, \
                 search_text = excluded.search_text, updated_at = excluded.updated_at, state = excluded.state",
            )
            .bind(id)
            .bind(version)
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
            .bind(updated_at)
            .bind(state)
            .execute(&mut **conn)
            .await?;
            let members = hearing
                .reviewers
                .iter()
                .map(|r| ("reviewer", format!("user:{r}")))
                .chain(hearing.invitees.keys().map(|k| ("invitee", k.clone())));
            for (role, reference) in members {
                sqlx::query("INSERT INTO hearing_members (hearing_id, role, reference) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(role)
                    .bind(reference)
                    .execute(&mut **conn)
                    .await?;
            }
        });
        Ok(())
    }
}

#[async_trait]
impl Projection for HearingListProjection {
    fn name(&self) -> &str {
        "hearing-read-model"
    }

    async fn apply(&self, tx: &mut DbTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        self.apply_batch(tx, std::slice::from_ref(event)).await
    }

    /// Folds each hearing's events of the batch into its state and writes it once: a
    /// rebuild reads and writes a row per hearing per batch, not per event.
    async fn apply_batch(&self, tx: &mut DbTx, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let mut touched: HashMap<&str, (Hearing, i64, String, bool)> = HashMap::new();
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
                        touched.insert(id, (hearing, 0, String::new(), fresh));
                        order.push(id);
                    }
                    let domain_event: HearingEvent = event.decode().map_err(|e| apply_failed(event, e))?;
                    if let Some((hearing, version, updated_at, _)) = touched.get_mut(id) {
                        hearing.apply(domain_event);
                        *version = event.sequence;
                        *updated_at = event.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                    }
                }
                t if t == Reference::TYPE => apply_reference(tx, event).await?,
                _ => {}
            }
        }
        for id in order {
            if let Some((hearing, version, updated_at, fresh)) = touched.get(id) {
                Self::save(tx, id, *version, hearing, updated_at, *fresh).await?;
            }
        }
        Ok(())
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
