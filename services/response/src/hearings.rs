//! What the response service knows of hearings: kept from the hearing service's integration
//! events, by JetStream in production and by the local log in the embedded mode.

use agora_auth::Principal;
use agora_eventstore::jetstream::{IntegrationEvent, IntegrationHandler};
use agora_eventstore::{DbTx, Store, StoreError, on_tx};
use agora_proto::hearing::v1 as pb;
use chrono::{DateTime, Utc};
use prost::Message;
use uuid::Uuid;

use crate::domain::{HearingContent, HearingTerms, HearingText, ResponseRules, may_see};

pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS response_hearings (
        hearing_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        closes_at TEXT,
        owner_id TEXT NOT NULL,
        reviewers TEXT NOT NULL,
        rules TEXT,
        content TEXT,
        sequence BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS response_settings (
        hearing_id TEXT PRIMARY KEY,
        auto_approve BOOLEAN NOT NULL,
        public BOOLEAN NOT NULL)",
    "CREATE TABLE IF NOT EXISTS response_counters (
        hearing_id TEXT PRIMARY KEY,
        last_number BIGINT NOT NULL)",
    // Hearings filed in the records system (the records service's HearingJournalized).
    "CREATE TABLE IF NOT EXISTS response_journalized (
        hearing_id TEXT PRIMARY KEY,
        journalized_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS response_idempotency (
        idempotency_key TEXT PRIMARY KEY,
        content_sha256 TEXT NOT NULL,
        receipt TEXT NOT NULL)",
    // Who is invited to each hearing (a closed hearing takes responses from them only); a
    // removed invitation stays as a row, so that an older event redelivered cannot restore it.
    "CREATE TABLE IF NOT EXISTS response_invitees (
        hearing_id TEXT NOT NULL,
        reference TEXT NOT NULL,
        invited BOOLEAN NOT NULL,
        sequence BIGINT NOT NULL,
        PRIMARY KEY (hearing_id, reference))",
];

pub async fn migrate(store: &Store) -> Result<(), StoreError> {
    store.execute_ddl(SCHEMA).await?;
    // Added after the first release of the table; filled by the next event of each hearing.
    store
        .add_missing_columns(
            "response_hearings",
            &[
                ("rules", "TEXT"),
                ("content", "TEXT"),
                ("concluded_at", "TEXT"),
                ("internal", "BOOLEAN"),
                ("closed", "BOOLEAN"),
            ],
        )
        .await
}

/// Keeps `response_hearings` from hearing events.
pub struct HearingTermsHandler;

fn status_name(status: i32) -> &'static str {
    agora_proto::hearing_status_name(status)
}

#[async_trait::async_trait]
impl IntegrationHandler for HearingTermsHandler {
    fn name(&self) -> &str {
        "response-hearings"
    }

    fn filter(&self) -> &str {
        "hearing.v1.>"
    }

    async fn handle(&self, tx: &mut DbTx, event: &IntegrationEvent) -> Result<(), String> {
        let state = agora_proto::hearing_state(&event.event_type, &event.data)?;
        let closes_at = if state.closes_at.is_empty() { None } else { Some(state.closes_at.clone()) };
        // A hearing whose events carry no rules (from before they did) has the defaults.
        let rules = serde_json::to_string(&state.response_rules.clone().map(ResponseRules::from).unwrap_or_default())
            .map_err(|e| e.to_string())?;
        let content = serde_json::to_string(&content_from_pb(&state)).map_err(|e| e.to_string())?;
        // When the hearing was concluded starts its retention period.
        let concluded_at = (status_name(state.status) == "Concluded")
            .then(|| event.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        // Redeliveries may come out of order: an older state never overwrites a newer one.
        on_tx!(tx, conn => {
            sqlx::query(
                "INSERT INTO response_hearings (hearing_id, status, closes_at, owner_id, reviewers, rules, content, sequence, concluded_at, internal, closed) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (hearing_id) DO UPDATE SET status = excluded.status, closes_at = excluded.closes_at, \
                 owner_id = excluded.owner_id, reviewers = excluded.reviewers, rules = excluded.rules, \
                 content = excluded.content, sequence = excluded.sequence, internal = excluded.internal, closed = excluded.closed, \
                 concluded_at = COALESCE(response_hearings.concluded_at, excluded.concluded_at) \
                 WHERE response_hearings.sequence < excluded.sequence",
            )
            .bind(&state.hearing_id)
            .bind(status_name(state.status))
            .bind(closes_at)
            .bind(format!("user:{}", state.owner_id))
            .bind(state.reviewer_ids.iter().map(|r| format!("user:{r}")).collect::<Vec<_>>().join(","))
            .bind(&rules)
            .bind(&content)
            .bind(event.sequence)
            .bind(concluded_at)
            .bind(state.internal)
            .bind(state.closed)
            .execute(&mut **conn)
            .await
            .map_err(|e| e.to_string())?;
        });
        let invitation = match event.event_type.rsplit('.').next().unwrap_or_default() {
            "InviteeAdded" => pb::InviteeAdded::decode(event.data.clone())
                .map_err(|e| e.to_string())?
                .invitee
                .map(|invitee| (invitee.reference, true)),
            "InviteeRemoved" => {
                Some((pb::InviteeRemoved::decode(event.data.clone()).map_err(|e| e.to_string())?.reference, false))
            }
            _ => None,
        };
        if let Some((reference, invited)) = invitation {
            on_tx!(tx, conn => {
                sqlx::query(
                    "INSERT INTO response_invitees (hearing_id, reference, invited, sequence) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (hearing_id, reference) DO UPDATE SET invited = excluded.invited, sequence = excluded.sequence \
                     WHERE response_invitees.sequence < excluded.sequence",
                )
                .bind(&state.hearing_id)
                .bind(&reference)
                .bind(invited)
                .bind(event.sequence)
                .execute(&mut **conn)
                .await
                .map_err(|e| e.to_string())?;
            });
        }
        Ok(())
    }
}

/// Whether `viewer` may see the hearing of `terms` (see [`crate::domain::may_see`]); its
/// invitations are read only when nothing else lets them.
pub async fn may_see_in(tx: &mut DbTx, terms: &HearingTerms, viewer: Option<&Principal>) -> Result<bool, StoreError> {
    if may_see(terms, viewer, || false) {
        return Ok(true);
    }
    let Some(viewer) = viewer else { return Ok(false) };
    let invited = invited_in(tx, terms.hearing_id, &viewer.member_references()).await?;
    Ok(may_see(terms, Some(viewer), || invited))
}

/// Whether any of `references` is invited to the hearing.
async fn invited_in(tx: &mut DbTx, hearing_id: Uuid, references: &[String]) -> Result<bool, StoreError> {
    if references.is_empty() {
        return Ok(false);
    }
    let list: Vec<String> = (0..references.len()).map(|i| format!("${}", i + 3)).collect();
    let sql = format!(
        "SELECT COUNT(*) FROM response_invitees WHERE hearing_id = $1 AND invited = $2 AND reference IN ({})",
        list.join(", ")
    );
    let (count,): (i64,) = on_tx!(tx, conn => {
        let mut query = sqlx::query_as(&sql).bind(hearing_id.to_string()).bind(true);
        for reference in references {
            query = query.bind(reference);
        }
        query.fetch_one(&mut **conn).await?
    });
    Ok(count > 0)
}

fn content_from_pb(state: &pb::HearingState) -> HearingContent {
    HearingContent {
        title: state.title.clone(),
        status: status_name(state.status).to_string(),
        start_date: state.start_date.clone(),
        deadline: state.deadline.clone(),
        kle_number: state.kle_number.clone(),
        case_number: state.case_number.clone(),
        texts: state
            .texts
            .iter()
            .map(|t| HearingText { key: t.key.clone(), label: t.label.clone(), text: t.text.clone() })
            .collect(),
        documents: state.files.iter().map(|f| f.name.clone()).collect(),
    }
}

/// What the exports show of a hearing, as its last event told it.
pub async fn content(store: &Store, id: Uuid) -> Result<Option<HearingContent>, StoreError> {
    let row: Option<(Option<String>,)> = agora_eventstore::on_backend!(store.backend(), pool => {
        sqlx::query_as("SELECT content FROM response_hearings WHERE hearing_id = $1")
            .bind(id.to_string())
            .fetch_optional(pool)
            .await?
    });
    let Some((content,)) = row else { return Ok(None) };
    let content = content.as_deref().unwrap_or("{}");
    serde_json::from_str(content).map(Some).map_err(|e| StoreError::CorruptField {
        position: 0,
        field: "content",
        reason: e.to_string(),
    })
}

/// status, closes_at, owner_id, reviewers, rules, auto_approve, public, internal, closed
type TermsRow =
    (String, Option<String>, String, String, Option<String>, Option<bool>, Option<bool>, Option<bool>, Option<bool>);

/// The columns of a [`TermsRow`], for every query that reads terms.
macro_rules! terms_columns {
    () => {
        "h.status, h.closes_at, h.owner_id, h.reviewers, h.rules, s.auto_approve, s.public, h.internal, h.closed"
    };
}

const TERMS_SQL: &str = concat!(
    "SELECT ",
    terms_columns!(),
    " FROM response_hearings h LEFT JOIN response_settings s ON s.hearing_id = h.hearing_id WHERE h.hearing_id = $1"
);

/// The terms of the given hearings, read in the intake's transaction.
pub async fn terms_in(tx: &mut DbTx, ids: &[Uuid]) -> Result<Vec<HearingTerms>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let row: Option<TermsRow> = on_tx!(tx, conn => {
            sqlx::query_as(TERMS_SQL).bind(id.to_string()).fetch_optional(&mut **conn).await?
        });
        if let Some(row) = row {
            out.push(terms_from_row(*id, row)?);
        }
    }
    Ok(out)
}

/// The terms of a hearing and its response counter, the counter's row locked for the rest of
/// the transaction on PostgreSQL (SQLite's transaction holds the only writer): one round trip
/// for the intake. `None` when the hearing is unknown or has no counter yet.
pub async fn terms_with_counter_in(tx: &mut DbTx, id: Uuid) -> Result<Option<(HearingTerms, i64)>, StoreError> {
    const SQL: &str = concat!(
        "SELECT ",
        terms_columns!(),
        ", c.last_number FROM response_counters c JOIN response_hearings h ON h.hearing_id = c.hearing_id \
         LEFT JOIN response_settings s ON s.hearing_id = c.hearing_id WHERE c.hearing_id = $1"
    );
    let sql = if tx.is_postgres() { format!("{SQL} FOR UPDATE OF c") } else { SQL.to_string() };
    type Row = (
        String,
        Option<String>,
        String,
        String,
        Option<String>,
        Option<bool>,
        Option<bool>,
        Option<bool>,
        Option<bool>,
        i64,
    );
    let row: Option<Row> = on_tx!(tx, conn => {
        sqlx::query_as(&sql).bind(id.to_string()).fetch_optional(&mut **conn).await?
    });
    row.map(|(status, closes_at, owner, reviewers, rules, auto_approve, public, internal, closed, last)| {
        terms_from_row(id, (status, closes_at, owner, reviewers, rules, auto_approve, public, internal, closed))
            .map(|t| (t, last))
    })
    .transpose()
}

/// The terms of one hearing, read outside any transaction (commands and queries).
pub async fn terms(store: &Store, id: Uuid) -> Result<Option<HearingTerms>, StoreError> {
    let row: Option<TermsRow> = agora_eventstore::on_backend!(store.backend(), pool => {
        sqlx::query_as(TERMS_SQL).bind(id.to_string()).fetch_optional(pool).await?
    });
    row.map(|row| terms_from_row(id, row)).transpose()
}

fn terms_from_row(
    hearing_id: Uuid,
    (status, closes_at, owner_id, reviewers, rules, auto_approve, public, internal, closed): TermsRow,
) -> Result<HearingTerms, StoreError> {
    let closes_at = closes_at
        .map(|t| DateTime::parse_from_rfc3339(&t).map(|t| t.with_timezone(&Utc)))
        .transpose()
        .map_err(|e| StoreError::CorruptField { position: 0, field: "closes_at", reason: e.to_string() })?;
    let rules = match rules {
        Some(rules) => serde_json::from_str(&rules).map_err(|e| StoreError::CorruptField {
            position: 0,
            field: "rules",
            reason: e.to_string(),
        })?,
        None => ResponseRules::default(),
    };
    Ok(HearingTerms {
        hearing_id,
        status,
        closes_at,
        owner_id,
        reviewers: reviewers.split(',').filter(|r| !r.is_empty()).map(String::from).collect(),
        // Until the owner says otherwise: a person approves, approved responses are public.
        auto_approve: auto_approve.unwrap_or(false),
        public: public.unwrap_or(true),
        rules,
        // A hearing last heard of before these were kept: as its next event will say.
        internal: internal.unwrap_or(false),
        closed: closed.unwrap_or(false),
    })
}

/// Learns which hearings are filed in the records system, from the records service's events:
/// the retention policy waits for it.
pub struct JournalizationHandler;

#[async_trait::async_trait]
impl IntegrationHandler for JournalizationHandler {
    fn name(&self) -> &str {
        "response-journalized"
    }

    fn filter(&self) -> &str {
        "records.v1.>"
    }

    async fn handle(&self, tx: &mut DbTx, event: &IntegrationEvent) -> Result<(), String> {
        if event.event_type != "dk.agora.records.v1.HearingJournalized" {
            return Ok(());
        }
        let filed = agora_proto::records::v1::HearingJournalized::decode(event.data.clone())
            .map_err(|e| format!("not a HearingJournalized: {e}"))?;
        let hearing = Uuid::parse_str(&filed.hearing_id).map_err(|_| format!("hearing id {:?}", filed.hearing_id))?;
        let at = event.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        on_tx!(tx, conn => {
            sqlx::query("INSERT INTO response_journalized (hearing_id, journalized_at) VALUES ($1, $2) ON CONFLICT (hearing_id) DO NOTHING")
                .bind(hearing.to_string())
                .bind(at)
                .execute(&mut **conn)
                .await
                .map_err(|e| e.to_string())?;
        });
        Ok(())
    }
}
