//! Retention: once a hearing has been concluded for the configured period (OS2agora keeps
//! respondents' data for 730 days) and filed in the records system (the records service's
//! `HearingJournalized`), its respondents' personal data is erased. A hearing not filed keeps
//! its data, so that nothing is erased before it is archived. Their keys for
//! that hearing are destroyed (so every sealed text, name and file name of theirs in it is gone
//! from the log, the read models and the backups alike), their attachments are deleted, and an
//! event records it. The responses themselves stay, as erased, so that numbers and counts hold.

use std::collections::HashSet;

use agora_eventstore::on_backend;
use agora_vault::KeyOwner;
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::app::{ResponseApp, ResponseAppError};
use crate::domain::Actor;

pub const RETENTION_AGGREGATE: &str = "response-retention";

/// The hearings whose respondents' data is due for erasure at `now`: concluded at least `days`
/// ago, and not done before.
pub fn due(concluded: &[(Uuid, DateTime<Utc>)], done: &HashSet<Uuid>, now: DateTime<Utc>, days: i64) -> Vec<Uuid> {
    concluded
        .iter()
        .filter(|(hearing, at)| !done.contains(hearing) && *at + Duration::days(days) <= now)
        .map(|(hearing, _)| *hearing)
        .collect()
}

/// What one hearing's retention did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetentionApplied {
    pub hearing_id: Uuid,
    pub keys_destroyed: u64,
    pub attachments_deleted: u64,
    pub policy_days: i64,
    pub at: DateTime<Utc>,
}

async fn concluded(app: &ResponseApp) -> Result<Vec<(Uuid, DateTime<Utc>)>, ResponseAppError> {
    let rows: Vec<(String, String)> = on_backend!(app.store.backend(), pool => {
        sqlx::query_as(
            "SELECT h.hearing_id, h.concluded_at FROM response_hearings h \
             JOIN response_journalized j ON j.hearing_id = h.hearing_id WHERE h.concluded_at IS NOT NULL",
        )
            .fetch_all(pool)
            .await
            .map_err(|e| ResponseAppError::Storage(e.to_string()))?
    });
    Ok(rows
        .into_iter()
        .filter_map(|(id, at)| {
            let at = DateTime::parse_from_rfc3339(&at).ok()?.with_timezone(&Utc);
            Some((Uuid::parse_str(&id).ok()?, at))
        })
        .collect())
}

async fn done(app: &ResponseApp) -> Result<HashSet<Uuid>, ResponseAppError> {
    let rows: Vec<(String,)> = on_backend!(app.store.backend(), pool => {
        sqlx::query_as("SELECT aggregate_id FROM events WHERE aggregate_type = $1")
            .bind(RETENTION_AGGREGATE)
            .fetch_all(pool)
            .await
            .map_err(|e| ResponseAppError::Storage(e.to_string()))?
    });
    Ok(rows.into_iter().filter_map(|(id,)| Uuid::parse_str(&id).ok()).collect())
}

/// Applies the policy of `days` at `now`; what was done.
pub async fn apply(
    app: &ResponseApp,
    days: i64,
    now: DateTime<Utc>,
) -> Result<Vec<RetentionApplied>, ResponseAppError> {
    let due = due(&concluded(app).await?, &done(app).await?, now, days);
    let mut applied = Vec::with_capacity(due.len());
    for hearing_id in due {
        // Keys first: once they are gone the data is, whatever happens next.
        let keys_destroyed = app.keys().destroy_scope(&KeyOwner::hearing_scope(hearing_id)).await?;
        let mut attachments_deleted = 0;
        let mut after = 0;
        loop {
            let page = crate::projections::hearing_responses(&app.store, hearing_id, after, 500).await?;
            let Some((_, last)) = page.last() else { break };
            after = last.number;
            for (_, response) in &page {
                attachments_deleted +=
                    app.intake.files().delete(&response.attachments).await.map_err(ResponseAppError::Storage)?;
            }
        }
        let record = RetentionApplied { hearing_id, keys_destroyed, attachments_deleted, policy_days: days, at: now };
        let payload = serde_json::json!({ "type": "RespondentDataErased", "data": record });
        let system = Actor { reference: "system:retention".into(), administrator: true };
        match app
            .append_to(RETENTION_AGGREGATE, hearing_id, "RespondentDataErased", payload, &system, "ApplyRetention")
            .await
        {
            // Another replica recorded it first: the work is the same either way.
            Ok(()) | Err(ResponseAppError::Conflict) => {}
            Err(e) => return Err(e),
        }
        tracing::info!(hearing = %hearing_id, keys_destroyed, attachments_deleted, "respondents' data erased by the retention policy");
        applied.push(record);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hearings_are_due_after_the_period_once() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).expect("time");
        let (old, recent, done_before) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let concluded = vec![
            (old, at("2024-01-01T10:00:00Z")),
            (recent, at("2026-01-01T10:00:00Z")),
            (done_before, at("2023-01-01T10:00:00Z")),
        ];
        let done: HashSet<Uuid> = [done_before].into();
        let now = at("2026-01-01T10:00:00Z");
        assert_eq!(due(&concluded, &done, now, 730), vec![old]);
        assert_eq!(due(&concluded, &done, at("2025-12-31T09:59:59Z"), 730), Vec::<Uuid>::new());
        assert_eq!(due(&concluded, &done, now, 0), vec![old, recent]);
    }
}
