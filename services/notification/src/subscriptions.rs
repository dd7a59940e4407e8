//! Subscriptions: anyone follows a subject area, a KLE number (and what is below it), a city
//! area or one hearing, and is told when a matching public hearing is published, changed or
//! concluded. With an account a subscription holds at once; with only an e-mail address it
//! holds once the signed link sent there is followed (double opt-in). The address is sealed with
//! a key of the subscription's own; ending the subscription is the unsubscribe link.

use std::collections::BTreeMap;

use agora_eventstore::{DbTx, Store, StoreError, on_tx};
use agora_vault::{KeyOwner, PersonKeys, VaultError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::message::{UnsubscribeSigner, message_id};
use crate::outbox::Delivery;
use crate::plan::Links;
use crate::recipients::Recipient;
use crate::templates::{Kind, Language};

pub const AGGREGATE: &str = "NotificationSubscription";

pub const SCHEMA: &[&str] = &["CREATE TABLE IF NOT EXISTS notification_subscriptions (
        subscription_id TEXT PRIMARY KEY,
        topic TEXT NOT NULL,
        value TEXT NOT NULL,
        recipient TEXT NOT NULL,
        owner TEXT NOT NULL,
        language TEXT NOT NULL,
        status TEXT NOT NULL,
        sequence BIGINT NOT NULL)"];

/// What is followed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    pub topic: String,
    pub value: String,
}

/// What a public hearing is about, for matching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subjects {
    pub hearing_id: String,
    pub subject_area_id: String,
    pub kle_number: String,
    pub city_area_id: String,
}

impl Topic {
    /// A topic, or what is wrong with it.
    pub fn new(topic: &str, value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err("value: say what to follow".into());
        }
        match topic {
            "subject_area" | "city_area" => {}
            "kle" if value.split('.').all(|g| g.len() == 2 && g.chars().all(|c| c.is_ascii_digit())) => {}
            "kle" => return Err(format!("value: '{value}' is not a KLE number like 01.02.05")),
            "hearing" if Uuid::parse_str(value).is_ok() => {}
            "hearing" => return Err(format!("value: '{value}' is not a hearing id")),
            other => return Err(format!("topic: '{other}' is not subject_area, kle, city_area or hearing")),
        }
        Ok(Self { topic: topic.into(), value: value.into() })
    }

    pub fn matches(&self, subjects: &Subjects) -> bool {
        match self.topic.as_str() {
            "subject_area" => self.value == subjects.subject_area_id,
            "city_area" => self.value == subjects.city_area_id,
            "hearing" => self.value == subjects.hearing_id,
            "kle" => {
                subjects.kle_number == self.value
                    || (subjects.kle_number.starts_with(&self.value)
                        && subjects.kle_number[self.value.len()..].starts_with('.'))
            }
            _ => false,
        }
    }

    /// What is followed, for the recipient.
    pub fn describe(&self, language: Language) -> String {
        let (da, en) = match self.topic.as_str() {
            "subject_area" => ("emneområdet", "the subject area"),
            "city_area" => ("bydelen", "the city area"),
            "kle" => ("KLE-nummeret", "the KLE number"),
            _ => ("høringen", "the consultation"),
        };
        match language {
            Language::Danish => format!("{da} {}", self.value),
            Language::English => format!("{en} {}", self.value),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub subscription_id: String,
    pub topic: Topic,
    pub status: String,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::CorruptField { position: 0, field: "subscription", reason: e.to_string() }
}

async fn record_in(
    store: &Store,
    tx: &mut DbTx,
    subscription_id: &str,
    sequence: i64,
    name: &str,
    payload: serde_json::Value,
    actor: &str,
) -> Result<(), StoreError> {
    let event = agora_jobs::new_event(AGGREGATE, subscription_id.to_string(), sequence, name, &payload, actor)?;
    store.append_in(tx, &[event]).await?;
    Ok(())
}

/// Starts a subscription. A user's holds at once; an e-mail address gets a confirmation link
/// (signed with `signer`) and the subscription waits for it.
#[allow(clippy::too_many_arguments)]
pub async fn subscribe(
    store: &Store,
    keys: &dyn PersonKeys,
    signer: &UnsubscribeSigner,
    links: &Links,
    user: Option<Uuid>,
    topic: Topic,
    email: Option<&str>,
    language: Language,
) -> Result<Subscription, SubscribeError> {
    let subscription_id = Uuid::now_v7();
    let (recipient, owner, status) = match (user, email.map(str::trim).filter(|e| !e.is_empty())) {
        (Some(user), _) => (Recipient::User { user_id: user.to_string() }, format!("user:{user}"), "active"),
        (None, Some(email)) => {
            if !email.contains('@') || email.chars().any(char::is_whitespace) {
                return Err(SubscribeError::Invalid(format!("email: '{email}' is not an e-mail address")));
            }
            let sealed = keys.seal(&KeyOwner::person(subscription_id), email).await?;
            let recipient = Recipient::Subscriber {
                subscription_id: subscription_id.to_string(),
                sealed_address: sealed,
                language,
            };
            (recipient, String::new(), "pending")
        }
        (None, None) => {
            return Err(SubscribeError::Invalid("email: log in, or give the e-mail address to write to".into()));
        }
    };
    let id = subscription_id.to_string();
    let recipient_json = serde_json::to_string(&recipient).map_err(corrupt)?;
    let mut tx = store.begin().await?;
    on_tx!(&mut tx, conn => {
        sqlx::query(
            "INSERT INTO notification_subscriptions (subscription_id, topic, value, recipient, owner, language, status, sequence) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1)",
        )
        .bind(&id)
        .bind(&topic.topic)
        .bind(&topic.value)
        .bind(&recipient_json)
        .bind(&owner)
        .bind(language.code())
        .bind(status)
        .execute(&mut **conn)
        .await
        .map_err(StoreError::from)?;
    });
    let payload = serde_json::json!({ "topic": topic.topic, "value": topic.value, "status": status });
    let actor = if owner.is_empty() { "anonymous".to_string() } else { owner.clone() };
    record_in(store, &mut tx, &id, 1, "SubscriptionStarted", payload, &actor).await?;
    if status == "pending" {
        let confirm_url = format!(
            "{}/abonnement/bekraeft/{}",
            links.portal_url.trim_end_matches('/'),
            signer.sign(&format!("confirm:{id}"))
        );
        let confirmation = Delivery {
            kind: Kind::SubscriptionConfirmation,
            message_id: message_id(
                subscription_id,
                &recipient.reference(),
                Kind::SubscriptionConfirmation,
                &links.message_domain,
            ),
            recipient,
            values: BTreeMap::from([
                ("subscription".to_string(), topic.describe(language)),
                ("confirm_url".to_string(), confirm_url),
            ]),
            hearing_id: None,
        };
        crate::outbox::enqueue_in(store, &mut tx, vec![confirmation]).await?;
    }
    tx.commit().await.map_err(StoreError::from)?;
    Ok(Subscription { subscription_id: id, topic, status: status.into() })
}

#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("no such subscription")]
    NotFound,
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

async fn change_status(
    store: &Store,
    subscription_id: &str,
    status: &str,
    event: &str,
    actor: &str,
) -> Result<Subscription, SubscribeError> {
    let mut tx = store.begin().await?;
    let row: Option<(String, String, String, i64)> = on_tx!(&mut tx, conn => {
        sqlx::query_as("SELECT topic, value, status, sequence FROM notification_subscriptions WHERE subscription_id = $1")
            .bind(subscription_id)
            .fetch_optional(&mut **conn)
            .await
            .map_err(StoreError::from)?
    });
    let Some((topic, value, current, sequence)) = row else { return Err(SubscribeError::NotFound) };
    if current != status {
        on_tx!(&mut tx, conn => {
            sqlx::query("UPDATE notification_subscriptions SET status = $1, sequence = $2 WHERE subscription_id = $3")
                .bind(status)
                .bind(sequence + 1)
                .bind(subscription_id)
                .execute(&mut **conn)
                .await
                .map_err(StoreError::from)?;
        });
        record_in(store, &mut tx, subscription_id, sequence + 1, event, serde_json::json!({ "status": status }), actor)
            .await?;
    }
    tx.commit().await.map_err(StoreError::from)?;
    Ok(Subscription { subscription_id: subscription_id.into(), topic: Topic { topic, value }, status: status.into() })
}

/// Follows the confirmation link: the subscription holds from now on.
pub async fn confirm(store: &Store, signer: &UnsubscribeSigner, token: &str) -> Result<Subscription, SubscribeError> {
    let what = signer.verify(token).map_err(|e| SubscribeError::Invalid(e.to_string()))?;
    let id = what.strip_prefix("confirm:").ok_or_else(|| SubscribeError::Invalid("not a confirmation link".into()))?;
    change_status(store, id, "active", "SubscriptionConfirmed", "anonymous").await
}

/// Ends a subscription: its owner, or the unsubscribe link of its messages (`owner` none).
pub async fn end(store: &Store, subscription_id: &str, owner: Option<&str>) -> Result<Subscription, SubscribeError> {
    if let Some(owner) = owner {
        let mine = mine(store, owner).await?;
        if !mine.iter().any(|s| s.subscription_id == subscription_id) {
            return Err(SubscribeError::NotAllowed("only your own subscriptions can be ended".into()));
        }
    }
    change_status(store, subscription_id, "ended", "SubscriptionEnded", owner.unwrap_or("unsubscribe-link")).await
}

/// A user's subscriptions.
pub async fn mine(store: &Store, owner: &str) -> Result<Vec<Subscription>, StoreError> {
    let rows: Vec<(String, String, String, String)> = agora_eventstore::on_reader!(store.backend(), pool => {
        sqlx::query_as(
            "SELECT subscription_id, topic, value, status FROM notification_subscriptions WHERE owner = $1 ORDER BY subscription_id",
        )
        .bind(owner)
        .fetch_all(pool)
        .await?
    });
    Ok(rows
        .into_iter()
        .map(|(subscription_id, topic, value, status)| Subscription {
            subscription_id,
            topic: Topic { topic, value },
            status,
        })
        .collect())
}

/// The active subscriptions a public hearing matches, read in the handler's transaction.
pub async fn matching_in(tx: &mut DbTx, subjects: &Subjects) -> Result<Vec<(Topic, Recipient, Language)>, StoreError> {
    let rows: Vec<(String, String, String, String)> = on_tx!(tx, conn => {
        sqlx::query_as(
            "SELECT topic, value, recipient, language FROM notification_subscriptions WHERE status = 'active' \
             ORDER BY subscription_id",
        )
        .fetch_all(&mut **conn)
        .await?
    });
    let mut found = Vec::new();
    for (topic, value, recipient, language) in rows {
        let topic = Topic { topic, value };
        if topic.matches(subjects) {
            let recipient: Recipient = serde_json::from_str(&recipient).map_err(corrupt)?;
            found.push((topic, recipient, Language::parse(&language).unwrap_or_default()));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_checked_and_match_what_they_name() {
        let subjects = Subjects {
            hearing_id: "h".into(),
            subject_area_id: "plan".into(),
            kle_number: "01.02.05".into(),
            city_area_id: "vest".into(),
        };
        assert!(Topic::new("kle", "01.02").expect("kle").matches(&subjects));
        assert!(!Topic::new("kle", "01.03").expect("kle").matches(&subjects));
        assert!(Topic::new("subject_area", "plan").expect("area").matches(&subjects));
        assert!(!Topic::new("city_area", "oest").expect("area").matches(&subjects));
        assert!(Topic::new("kle", "1.2").expect_err("bad").contains("'1.2'"));
        assert!(Topic::new("weather", "sun").expect_err("bad").contains("topic: 'weather'"));
        assert!(Topic::new("hearing", "x").expect_err("bad").contains("hearing id"));
        assert_eq!(Topic::new("kle", "01.02").expect("kle").describe(Language::Danish), "KLE-nummeret 01.02");
    }
}
