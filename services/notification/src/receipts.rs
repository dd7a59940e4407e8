//! Where a channel reports what became of a message (Digital Post does), the message's state goes
//! on from sent to delivered or undeliverable. A letter is noted when it is sent; the receipts
//! are asked for until they are final, and each answer is an event (`NotificationDelivery`).

use agora_eventstore::{Store, StoreError, on_reader, on_tx};
use chrono::{DateTime, Utc};

use crate::digital_post::{DigitalPostChannel, Receipt};

pub const AGGREGATE: &str = "NotificationDelivery";

pub const SCHEMA: &[&str] = &["CREATE TABLE IF NOT EXISTS notification_deliveries (
        message_id TEXT PRIMARY KEY,
        letter_uuid TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        reported_at TEXT)"];

/// Notes a letter sent, so that its receipt is asked for.
pub async fn note_sent(store: &Store, message_id: &str, letter: uuid::Uuid) -> Result<(), StoreError> {
    agora_eventstore::on_backend!(store.backend(), pool => {
        sqlx::query(
            "INSERT INTO notification_deliveries (message_id, letter_uuid, status, reason) VALUES ($1, $2, 'sent', '') \
             ON CONFLICT (message_id) DO NOTHING",
        )
        .bind(message_id)
        .bind(letter.to_string())
        .execute(pool)
        .await?;
    });
    Ok(())
}

/// What is known of a message's delivery: sent, delivered or undeliverable (with why).
pub async fn status(store: &Store, message_id: &str) -> Result<Option<(String, String)>, StoreError> {
    let row: Option<(String, String)> = on_reader!(store.backend(), pool => {
        sqlx::query_as("SELECT status, reason FROM notification_deliveries WHERE message_id = $1")
            .bind(message_id)
            .fetch_optional(pool)
            .await?
    });
    Ok(row)
}

/// Asks for the receipts of letters not yet reported; returns how many became final.
pub async fn collect(store: &Store, channel: &dyn DigitalPostChannel, now: DateTime<Utc>) -> Result<usize, StoreError> {
    let waiting: Vec<(String, String)> = on_reader!(store.backend(), pool => {
        sqlx::query_as("SELECT message_id, letter_uuid FROM notification_deliveries WHERE status = 'sent' LIMIT 500")
            .fetch_all(pool)
            .await?
    });
    let mut reported = 0;
    for (message_id, letter) in waiting {
        let Ok(letter) = uuid::Uuid::parse_str(&letter) else { continue };
        let (status, reason) = match channel.receipt(letter).await {
            Ok(Receipt::Delivered) => ("delivered", String::new()),
            Ok(Receipt::Undeliverable(reason)) => ("undeliverable", reason),
            Ok(Receipt::Pending) => continue,
            Err(e) => {
                tracing::warn!(message = %message_id, error = %e, "a Digital Post receipt could not be read");
                continue;
            }
        };
        let payload = serde_json::json!({ "message_id": message_id, "status": status, "reason": reason });
        let name = if status == "delivered" { "MessageDelivered" } else { "MessageUndeliverable" };
        let event = agora_jobs::new_event(AGGREGATE, message_id.clone(), 1, name, &payload, crate::outbox::ACTOR)?;
        let mut tx = store.begin().await?;
        let recorded = match store.append_in(&mut tx, &[event]).await {
            Ok(recorded) => recorded,
            // Another replica reported it first.
            Err(StoreError::Conflict { .. }) => {
                let _ = tx.rollback().await;
                continue;
            }
            Err(e) => return Err(e),
        };
        on_tx!(&mut tx, conn => {
            sqlx::query("UPDATE notification_deliveries SET status = $1, reason = $2, reported_at = $3 WHERE message_id = $4")
                .bind(status)
                .bind(&reason)
                .bind(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .bind(&message_id)
                .execute(&mut **conn)
                .await?;
        });
        tx.commit().await?;
        store.committed(&recorded);
        reported += 1;
    }
    Ok(reported)
}
