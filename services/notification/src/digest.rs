//! The daily status digest: at 07:00 Europe/Copenhagen every owner and reviewer is told, in one
//! message, what happened yesterday to their hearings (new responses, status changes). The
//! handlers count as the events come; the digest of a day is queued once (its Message-ID comes
//! from the day and the recipient), however many replicas tick.

use std::collections::BTreeMap;

use agora_eventstore::{DbTx, Store, StoreError, on_reader, on_tx};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use chrono_tz::Europe::Copenhagen;
use uuid::Uuid;

use crate::message::message_id;
use crate::outbox::Delivery;
use crate::plan::Links;
use crate::recipients::Recipient;
use crate::templates::Kind;

pub const SCHEMA: &[&str] = &["CREATE TABLE IF NOT EXISTS notification_digest (
        hearing_id TEXT NOT NULL,
        day TEXT NOT NULL,
        new_responses BIGINT NOT NULL,
        status_changes TEXT NOT NULL,
        PRIMARY KEY (hearing_id, day))"];

/// The day (in Copenhagen) something happened at `at`.
pub fn local_day(at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&Copenhagen).date_naive()
}

/// The day whose digest is due at `now`: yesterday, once it is 07:00 in Copenhagen.
pub fn due_day(now: DateTime<Utc>) -> Option<NaiveDate> {
    let local = now.with_timezone(&Copenhagen);
    let seven = NaiveTime::from_hms_opt(7, 0, 0)?;
    (local.time() >= seven).then(|| local.date_naive().pred_opt()).flatten()
}

/// New responses by hearing and day, counted as the events are handled and written once for
/// a batch of them: one row per hearing and day takes every response, and updating it once
/// per response in one transaction would make each update walk the row's earlier versions.
#[derive(Debug, Default)]
pub struct ResponseCounts(BTreeMap<(String, NaiveDate), i64>);

impl ResponseCounts {
    /// Counts a new response of a hearing on its day.
    pub fn count(&mut self, hearing_id: &str, at: DateTime<Utc>) {
        *self.0.entry((hearing_id.to_string(), local_day(at))).or_default() += 1;
    }

    /// Adds what was counted to the digest.
    pub async fn write_in(self, tx: &mut DbTx) -> Result<(), StoreError> {
        for ((hearing_id, day), new_responses) in self.0 {
            on_tx!(tx, conn => {
                sqlx::query(
                    "INSERT INTO notification_digest (hearing_id, day, new_responses, status_changes) VALUES ($1, $2, $3, '') \
                     ON CONFLICT (hearing_id, day) DO UPDATE SET new_responses = notification_digest.new_responses + excluded.new_responses",
                )
                .bind(&hearing_id)
                .bind(day.to_string())
                .bind(new_responses)
                .execute(&mut **conn)
                .await?;
            });
        }
        Ok(())
    }
}

/// Notes a hearing's change of status on its day.
pub async fn note_status_in(
    tx: &mut DbTx,
    hearing_id: &str,
    at: DateTime<Utc>,
    status: &str,
) -> Result<(), StoreError> {
    on_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO notification_digest (hearing_id, day, new_responses, status_changes) VALUES ($1, $2, 0, $3) \
             ON CONFLICT (hearing_id, day) DO UPDATE SET status_changes = notification_digest.status_changes || ',' || $3",
        )
        .bind(hearing_id)
        .bind(local_day(at).to_string())
        .bind(status)
        .execute(&mut **conn)
        .await?;
    });
    Ok(())
}

fn status_label(status: &str) -> &str {
    match status {
        "Draft" => "kladde",
        "AwaitingStartDate" => "offentliggjort",
        "Active" => "aktiv",
        "AwaitingConclusion" => "afventer konklusion",
        "Concluded" => "afsluttet",
        "Deleted" => "slettet",
        other => other,
    }
}

/// What one hearing's day comes to, as a line of the digest.
pub fn line(title: &str, new_responses: i64, status_changes: &str) -> String {
    let mut parts = Vec::new();
    if new_responses > 0 {
        parts.push(if new_responses == 1 {
            "1 nyt høringssvar".to_string()
        } else {
            format!("{new_responses} nye høringssvar")
        });
    }
    let statuses: Vec<&str> = status_changes.split(',').filter(|s| !s.is_empty()).map(status_label).collect();
    if !statuses.is_empty() {
        parts.push(format!("status: {}", statuses.join(" → ")));
    }
    format!("• {title}: {}", parts.join("; "))
}

/// The digests of `day`, one per owner or reviewer of a hearing that had news, keyed so that
/// the same day gives the same messages.
pub async fn plan_day(store: &Store, day: NaiveDate, links: &Links) -> Result<Vec<Delivery>, StoreError> {
    let rows: Vec<(String, i64, String, String, String)> = on_reader!(store.backend(), pool => {
        sqlx::query_as(
            "SELECT d.hearing_id, d.new_responses, d.status_changes, h.title, h.team FROM notification_digest d \
             JOIN notification_hearings h ON h.hearing_id = d.hearing_id WHERE d.day = $1 ORDER BY h.title",
        )
        .bind(day.to_string())
        .fetch_all(pool)
        .await?
    });
    let mut lines: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, new_responses, status_changes, title, team) in rows {
        if new_responses == 0 && status_changes.is_empty() {
            continue;
        }
        for member in team.split(',').filter(|m| !m.is_empty()) {
            lines.entry(member.to_string()).or_default().push(line(&title, new_responses, &status_changes));
        }
    }
    let cause = Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("agora daily digest {day}").as_bytes());
    Ok(lines
        .into_iter()
        .map(|(user_id, lines)| {
            let recipient = Recipient::User { user_id };
            Delivery {
                kind: Kind::DailyDigest,
                message_id: message_id(cause, &recipient.reference(), Kind::DailyDigest, &links.message_domain),
                recipient,
                values: BTreeMap::from([
                    ("digest_date".to_string(), day.format("%d-%m-%Y").to_string()),
                    ("digest".to_string(), lines.join("\n")),
                ]),
                hearing_id: None,
            }
        })
        .collect())
}

/// Queues the digest due at `now`, if one is; returns how many messages were new.
pub async fn queue_due(store: &Store, now: DateTime<Utc>, links: &Links) -> Result<usize, StoreError> {
    let Some(day) = due_day(now) else { return Ok(0) };
    let deliveries = plan_day(store, day, links).await?;
    if deliveries.is_empty() {
        return Ok(0);
    }
    let mut tx = store.begin().await?;
    let new = crate::outbox::enqueue_in(store, &mut tx, deliveries).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map(|t| t.to_utc()).expect("time")
    }

    #[test]
    fn yesterdays_digest_is_due_from_seven_in_copenhagen_summer_and_winter() {
        assert_eq!(due_day(at("2026-12-02T05:59:00Z")), None, "06:59 in winter (UTC+1)");
        assert_eq!(due_day(at("2026-12-02T06:00:00Z")), NaiveDate::from_ymd_opt(2026, 12, 1));
        assert_eq!(due_day(at("2026-07-02T04:59:00Z")), None, "06:59 in summer (UTC+2)");
        assert_eq!(due_day(at("2026-07-02T05:00:00Z")), NaiveDate::from_ymd_opt(2026, 7, 1));
        assert_eq!(local_day(at("2026-12-01T23:30:00Z")), NaiveDate::from_ymd_opt(2026, 12, 2).expect("day"));
    }

    #[test]
    fn a_line_says_what_happened_in_danish() {
        assert_eq!(line("Lokalplan", 3, ""), "• Lokalplan: 3 nye høringssvar");
        assert_eq!(
            line("Lokalplan", 1, "Active,AwaitingConclusion"),
            "• Lokalplan: 1 nyt høringssvar; status: aktiv → afventer konklusion"
        );
    }
}
