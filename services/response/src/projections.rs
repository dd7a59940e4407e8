//! Read models of responses and the queries on them, with the visibility rules applied: the
//! public sees approved responses (where the owner shows them) without their authors, an
//! author sees their own, the owner and administrators see everything.

use std::collections::HashMap;

use agora_eventstore::consumer::{Projection, ProjectionError};
use agora_eventstore::{DbTx, RecordedEvent, Store, StoreError, on_backend, on_tx};
use async_trait::async_trait;
use cqrs_es::Aggregate;
use sqlx::Row;
use uuid::Uuid;

use crate::app::SETTINGS_AGGREGATE;
use crate::domain::{Actor, ModerationStatus, OnBehalfOf, Response, ResponseEvent};

pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS response_list (
        response_id TEXT PRIMARY KEY,
        hearing_id TEXT NOT NULL,
        number BIGINT NOT NULL,
        status TEXT NOT NULL,
        author TEXT NOT NULL,
        on_behalf_of TEXT,
        text TEXT NOT NULL,
        public_text TEXT NOT NULL,
        accepted_at TEXT NOT NULL,
        state TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS response_list_hearing ON response_list (hearing_id, number)",
    "CREATE INDEX IF NOT EXISTS response_list_author ON response_list (author)",
    // Who saw whose personal data: one row per subject of each recorded access.
    "CREATE TABLE IF NOT EXISTS response_data_access (
        subject TEXT NOT NULL,
        viewer TEXT NOT NULL,
        hearing_id TEXT NOT NULL,
        purpose TEXT NOT NULL,
        at TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS response_data_access_subject ON response_data_access (subject, at)",
];

pub async fn migrate(store: &Store) -> Result<(), StoreError> {
    crate::hearings::migrate(store).await?;
    store.execute_ddl(SCHEMA).await?;
    if store.is_postgres() {
        // A row carries the sealed text three times (about 3 KB), over the 2 KB at which
        // PostgreSQL would try to compress it (ciphertext does not compress) and then move it
        // to the TOAST table: in a surge that was a wasted compression and two more index
        // writes per response. Rows up to a page now stay whole in the table.
        store.execute_ddl(&["ALTER TABLE response_list SET (toast_tuple_target = 8160)"]).await?;
    }
    Ok(())
}

fn failed(event: &RecordedEvent, reason: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Apply { projection: READ_MODEL.into(), position: event.position(), reason: reason.to_string() }
}

/// The read model's name: its checkpoint's key, and what a command waits for.
pub const READ_MODEL: &str = "response-read-model";

pub struct ResponseListProjection;

#[async_trait]
impl Projection for ResponseListProjection {
    fn name(&self) -> &str {
        READ_MODEL
    }

    fn aggregates(&self) -> Option<&[&'static str]> {
        Some(&[SETTINGS_AGGREGATE, crate::app::ACCESS_AGGREGATE, Response::TYPE])
    }

    async fn apply(&self, tx: &mut DbTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        self.apply_batch(tx, std::slice::from_ref(event)).await
    }

    async fn apply_batch(&self, tx: &mut DbTx, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let mut touched: HashMap<&str, Response> = HashMap::new();
        let mut order = Vec::new();
        for event in events {
            if event.aggregate_type == SETTINGS_AGGREGATE {
                let payload = event.payload_value();
                let data = &payload["data"];
                on_tx!(tx, conn => {
                    sqlx::query(
                        "INSERT INTO response_settings (hearing_id, auto_approve, public) VALUES ($1, $2, $3) \
                         ON CONFLICT (hearing_id) DO UPDATE SET auto_approve = excluded.auto_approve, public = excluded.public",
                    )
                    .bind(&event.aggregate_id)
                    .bind(data["auto_approve"].as_bool().unwrap_or(false))
                    .bind(data["public"].as_bool().unwrap_or(true))
                    .execute(&mut **conn)
                    .await?;
                });
                continue;
            }
            if event.aggregate_type == crate::app::ACCESS_AGGREGATE {
                let access: crate::app::DataAccess =
                    serde_json::from_value(event.payload_value()["data"].clone()).map_err(|e| failed(event, e))?;
                let at = access.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                for subject in &access.subjects {
                    on_tx!(tx, conn => {
                        sqlx::query("INSERT INTO response_data_access (subject, viewer, hearing_id, purpose, at) VALUES ($1, $2, $3, $4, $5)")
                            .bind(subject)
                            .bind(&access.viewer)
                            .bind(access.hearing_id.to_string())
                            .bind(&access.purpose)
                            .bind(&at)
                            .execute(&mut **conn)
                            .await?;
                    });
                }
                continue;
            }
            if event.aggregate_type != Response::TYPE {
                continue;
            }
            let id = event.aggregate_id.as_str();
            if !touched.contains_key(id) {
                let state: Option<(String,)> = if event.sequence == 1 {
                    None
                } else {
                    on_tx!(tx, conn => {
                        sqlx::query_as("SELECT state FROM response_list WHERE response_id = $1").bind(id).fetch_optional(&mut **conn).await?
                    })
                };
                let response = match state {
                    Some((json,)) => serde_json::from_str(&json).map_err(|e| failed(event, e))?,
                    None => Response::default(),
                };
                touched.insert(id, response);
                order.push(id);
            }
            let domain_event: ResponseEvent = event.decode().map_err(|e| failed(event, e))?;
            if let Some(response) = touched.get_mut(id) {
                response.apply(domain_event);
            }
        }
        // One statement a chunk of responses, not one a response: a surge's batch is hundreds.
        let postgres = tx.is_postgres();
        let rows: Vec<(&str, &Response)> = order.iter().filter_map(|id| Some((*id, touched.get(id)?))).collect();
        for chunk in rows.chunks(500) {
            let sql = format!(
                "INSERT INTO response_list (response_id, hearing_id, number, status, author, on_behalf_of, text, public_text, accepted_at, state) \
                 VALUES {} ON CONFLICT (response_id) DO UPDATE SET status = excluded.status, \
                 on_behalf_of = excluded.on_behalf_of, text = excluded.text, public_text = excluded.public_text, state = excluded.state",
                agora_eventstore::placeholders(postgres, chunk.len(), 10)
            );
            let mut values = Vec::with_capacity(chunk.len());
            for (_, r) in chunk {
                let state = serde_json::to_string(r).map_err(|e| ProjectionError::Store(StoreError::Serialize(e)))?;
                let on_behalf = r.on_behalf_of.as_ref().map(|o| serde_json::to_string(o).unwrap_or_default());
                let accepted_at =
                    r.accepted_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)).unwrap_or_default();
                values.push((on_behalf, accepted_at, state));
            }
            on_tx!(tx, conn => {
                let mut query = sqlx::query(&sql);
                for ((id, r), (on_behalf, accepted_at, state)) in chunk.iter().zip(values) {
                    query = query
                        .bind(*id)
                        .bind(r.hearing_id.to_string())
                        .bind(r.number)
                        .bind(r.status.as_str())
                        .bind(&r.author)
                        .bind(on_behalf)
                        .bind(&r.text)
                        .bind(r.public_text())
                        .bind(accepted_at)
                        .bind(state);
                }
                query.execute(&mut **conn).await?;
            });
        }
        Ok(())
    }

    async fn reset(&self, tx: &mut DbTx) -> Result<(), ProjectionError> {
        on_tx!(tx, conn => {
            sqlx::query("DELETE FROM response_list").execute(&mut **conn).await?;
            sqlx::query("DELETE FROM response_settings").execute(&mut **conn).await?;
            sqlx::query("DELETE FROM response_data_access").execute(&mut **conn).await?;
        });
        Ok(())
    }
}

/// One response as a viewer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseView {
    pub response_id: Uuid,
    pub hearing_id: Uuid,
    pub number: i64,
    pub status: ModerationStatus,
    /// The author's pseudonymous id, for those allowed to know it.
    pub author: Option<String>,
    pub on_behalf_of: Option<OnBehalfOf>,
    /// The original text for the owner and the author; the published (redacted) one otherwise.
    pub text: String,
    pub accepted_at: String,
    /// The owner's public reply.
    pub reply: Option<String>,
}

fn status_of(s: &str) -> ModerationStatus {
    match s {
        "Approved" => ModerationStatus::Approved,
        "Declined" => ModerationStatus::Declined,
        "Withdrawn" => ModerationStatus::Withdrawn,
        _ => ModerationStatus::Pending,
    }
}

/// The responses to a hearing that `viewer` may see, in number order, one page at a time.
/// Read as stored: personal data sealed. Readers use `ResponseApp::list_for_hearing`.
pub async fn list_for_hearing(
    store: &Store,
    viewer: Option<&Actor>,
    hearing_id: Uuid,
    status: Option<ModerationStatus>,
    page: u32,
    page_size: u32,
) -> Result<(Vec<ResponseView>, i64), StoreError> {
    list_for_hearing_as(store, viewer, None, hearing_id, status, page, page_size).await
}

/// [`list_for_hearing`] for a company user, who also sees their company's responses.
pub async fn list_for_hearing_as(
    store: &Store,
    viewer: Option<&Actor>,
    viewer_company: Option<&str>,
    hearing_id: Uuid,
    status: Option<ModerationStatus>,
    page: u32,
    page_size: u32,
) -> Result<(Vec<ResponseView>, i64), StoreError> {
    let hearing = hearing_id.to_string();
    // The stored form of "on behalf of this company", compared as written.
    let company = viewer_company
        .map(|reference| serde_json::to_string(&OnBehalfOf::Company { reference: reference.to_string() }))
        .transpose()?
        .unwrap_or_default();
    let terms = crate::hearings::terms(store, hearing_id).await?;
    let manages = viewer.is_some_and(|v| v.administrator || terms.as_ref().is_some_and(|t| t.owner_id == v.reference));
    // Reviewers see the approved responses also where the public does not.
    let reviewer = viewer.is_some_and(|v| terms.as_ref().is_some_and(|t| t.reviewers.contains(&v.reference)));
    let public = terms.as_ref().is_some_and(|t| t.public) || reviewer;
    let me = viewer.map(|v| v.reference.clone()).unwrap_or_default();
    let size = page_size.clamp(1, 100) as i64;
    let offset = (page.max(1) as i64 - 1) * size;
    let status_filter = status.map(|s| s.as_str().to_string());
    // Managers see all; others see approved ones (where shown), their own, and their company's.
    let visible = "($2 = 1 OR (status = 'Approved' AND $3 = 1) OR author = $4 OR on_behalf_of = $6)";
    let filter = "($5 = '' OR status = $5)";
    let list_sql = format!(
        "SELECT response_id, hearing_id, number, status, author, on_behalf_of, text, public_text, accepted_at, state FROM response_list \
         WHERE hearing_id = $1 AND {visible} AND {filter} ORDER BY number LIMIT $7 OFFSET $8"
    );
    let count_sql = format!("SELECT COUNT(*) FROM response_list WHERE hearing_id = $1 AND {visible} AND {filter}");
    on_backend!(store.backend(), pool => {
        let total: i64 = sqlx::query_scalar(&count_sql)
            .bind(&hearing)
            .bind(manages as i32)
            .bind(public as i32)
            .bind(&me)
            .bind(status_filter.clone().unwrap_or_default())
            .bind(&company)
            .fetch_one(pool)
            .await?;
        let rows = sqlx::query(&list_sql)
            .bind(&hearing)
            .bind(manages as i32)
            .bind(public as i32)
            .bind(&me)
            .bind(status_filter.unwrap_or_default())
            .bind(&company)
            .bind(size)
            .bind(offset)
            .fetch_all(pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let author: String = row.try_get(4)?;
            let own = author == me;
            let on_behalf: Option<String> = row.try_get(5)?;
            out.push(ResponseView {
                response_id: Uuid::parse_str(&row.try_get::<String, _>(0)?).unwrap_or_default(),
                hearing_id,
                number: row.try_get(2)?,
                status: status_of(&row.try_get::<String, _>(3)?),
                author: if manages || own { Some(author) } else { None },
                on_behalf_of: on_behalf.and_then(|o| serde_json::from_str(&o).ok()),
                text: if manages || own { row.try_get(6)? } else { row.try_get(7)? },
                accepted_at: row.try_get(8)?,
                reply: serde_json::from_str::<Response>(&row.try_get::<String, _>(9)?).ok().and_then(|r| r.reply),
            });
        }
        Ok((out, total))
    })
}

/// How many responses a hearing has in each status (for its owner).
pub async fn counts(store: &Store, hearing_id: Uuid) -> Result<HashMap<String, i64>, StoreError> {
    on_backend!(store.backend(), pool => {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, COUNT(*) FROM response_list WHERE hearing_id = $1 GROUP BY status")
            .bind(hearing_id.to_string())
            .fetch_all(pool)
            .await?;
        Ok(rows.into_iter().collect())
    })
}

/// The respondent's own responses across hearings, newest first.
pub async fn mine(store: &Store, author: &str) -> Result<Vec<(Uuid, Uuid, i64, ModerationStatus)>, StoreError> {
    on_backend!(store.backend(), pool => {
        let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
            "SELECT response_id, hearing_id, number, status FROM response_list WHERE author = $1 ORDER BY accepted_at DESC",
        )
        .bind(author)
        .fetch_all(pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(r, h, n, s)| (Uuid::parse_str(&r).unwrap_or_default(), Uuid::parse_str(&h).unwrap_or_default(), n, status_of(&s)))
            .collect())
    })
}

/// A hearing's responses as their full state, in number order after `after`: for the owner's
/// exports, which check who asks before they call this.
pub async fn hearing_responses(
    store: &Store,
    hearing_id: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<(Uuid, Response)>, StoreError> {
    let rows: Vec<(String, String)> = on_backend!(store.backend(), pool => {
        sqlx::query_as(
            "SELECT response_id, state FROM response_list WHERE hearing_id = $1 AND number > $2 ORDER BY number LIMIT $3",
        )
        .bind(hearing_id.to_string())
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?
    });
    rows.into_iter()
        .map(|(id, state)| {
            let id = Uuid::parse_str(&id).map_err(|e| StoreError::CorruptField {
                position: 0,
                field: "response_id",
                reason: e.to_string(),
            })?;
            Ok((id, serde_json::from_str(&state)?))
        })
        .collect()
}

/// Who saw the subject's personal data, oldest first: (viewer, hearing, purpose, at).
pub async fn data_access(store: &Store, subject: &str) -> Result<Vec<(String, String, String, String)>, StoreError> {
    on_backend!(store.backend(), pool => {
        Ok(sqlx::query_as("SELECT viewer, hearing_id, purpose, at FROM response_data_access WHERE subject = $1 ORDER BY at")
            .bind(subject)
            .fetch_all(pool)
            .await?)
    })
}

/// The authors of a hearing's responses.
pub async fn authors(store: &Store, hearing_id: Uuid) -> Result<Vec<String>, StoreError> {
    on_backend!(store.backend(), pool => {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT author FROM response_list WHERE hearing_id = $1")
            .bind(hearing_id.to_string())
            .fetch_all(pool)
            .await?;
        Ok(rows.into_iter().map(|(author,)| author).collect())
    })
}
