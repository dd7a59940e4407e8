//! Webhooks: an administrator registers a URL for an event type (or a prefix such as
//! `dk.agora.hearing.`), and every matching integration event is POSTed there as CloudEvents
//! JSON, signed with HMAC-SHA256 under the webhook's secret. Each delivery is a step
//! (agora-jobs) keyed by webhook and event, so an event handled twice is delivered once; failures
//! are retried with backoff and then parked, and the steps are the delivery log.
//!
//! The signature is `X-Agora-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`,
//! so a receiver can refuse a replayed delivery by its age.

use std::time::Duration;

use agora_eventstore::jetstream::IntegrationEvent;
use agora_eventstore::{DbTx, Store, StoreError, on_reader, on_tx};
use agora_jobs::{Outcome, Perform, RetryPolicy, Step, StepTable};
use base64::Engine;
use serde::{Deserialize, Serialize};

pub const AGGREGATE: &str = "NotificationWebhook";

pub const SCHEMA: &[&str] = &["CREATE TABLE IF NOT EXISTS notification_webhooks (
        webhook_id TEXT PRIMARY KEY,
        event_type TEXT NOT NULL,
        url TEXT NOT NULL,
        secret TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        sequence BIGINT NOT NULL)"];

/// The deliveries: table `notification_webhook_deliveries`, one group per webhook.
pub const DELIVERIES: StepTable = StepTable { table: "notification_webhook_deliveries", aggregate: "WebhookDelivery" };

pub const SIGNATURE_HEADER: &str = "x-agora-signature";

/// A registered webhook (its secret stays in the table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub webhook_id: String,
    pub event_type: String,
    pub url: String,
    pub status: String,
    pub created_at: String,
}

/// One delivery to make: the body is made when the event is handled, so every attempt sends
/// the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    pub body: String,
}

pub type DeliveryStep = Step<Delivery>;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Invalid(String),
    #[error("no webhook {0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for WebhookError {
    fn from(e: sqlx::Error) -> Self {
        WebhookError::Store(StoreError::from(e))
    }
}

/// Whether a webhook registered for `pattern` wants an event of `event_type`: the type itself,
/// a prefix ending in `.`, or `*` for everything.
pub fn matches(pattern: &str, event_type: &str) -> bool {
    pattern == "*" || pattern == event_type || (pattern.ends_with('.') && event_type.starts_with(pattern))
}

/// What is wrong with a registration, if anything.
pub fn check(event_type: &str, url: &str, secret: &str) -> Result<(), String> {
    if !(event_type == "*" || event_type.starts_with("dk.agora.")) {
        return Err(format!(
            "event_type: '{event_type}' is not an Agora event type (dk.agora.…), a prefix of one, or *"
        ));
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("url: '{url}' is not a URL: {e}"))?;
    let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match parsed.scheme() {
        "https" => {}
        // Plain HTTP only to this machine (a local relay, or a test).
        "http" if loopback => {}
        other => return Err(format!("url: the scheme must be https (got {other})")),
    }
    if secret.chars().count() < 16 {
        return Err("secret: at least 16 characters, shared with the receiver to check the signature".into());
    }
    Ok(())
}

/// The signature header's value for `body` sent at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{timestamp}.{body}").as_bytes());
    format!("t={timestamp},v1={}", hex_string(tag.as_ref()))
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An integration event as CloudEvents 1.0 JSON, its protobuf data in `data_base64`.
pub fn cloud_event(event: &IntegrationEvent) -> String {
    serde_json::json!({
        "specversion": "1.0",
        "id": event.id.to_string(),
        "type": event.event_type,
        "source": event.source,
        "subject": event.subject,
        "time": event.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "datacontenttype": "application/protobuf",
        "data_base64": base64::engine::general_purpose::STANDARD.encode(&event.data),
        "sequence": event.sequence,
        "hash": event.hash,
    })
    .to_string()
}

/// Registers a webhook; the administrator's check is the caller's.
pub async fn register(
    store: &Store,
    event_type: &str,
    url: &str,
    secret: &str,
    actor: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Webhook, WebhookError> {
    let (event_type, url) = (event_type.trim(), url.trim());
    check(event_type, url, secret).map_err(WebhookError::Invalid)?;
    let webhook = Webhook {
        webhook_id: uuid::Uuid::now_v7().to_string(),
        event_type: event_type.into(),
        url: url.into(),
        status: "active".into(),
        created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let mut tx = store.begin().await?;
    // The secret is not in the event: the log outlives a rotated secret, and readers of it are many.
    let event = agora_jobs::new_event(AGGREGATE, webhook.webhook_id.clone(), 1, "WebhookRegistered", &webhook, actor)?;
    store.append_in(&mut tx, &[event]).await?;
    on_tx!(&mut tx, conn => {
        sqlx::query(
            "INSERT INTO notification_webhooks (webhook_id, event_type, url, secret, status, created_at, sequence) \
             VALUES ($1, $2, $3, $4, 'active', $5, 1)",
        )
        .bind(&webhook.webhook_id)
        .bind(&webhook.event_type)
        .bind(&webhook.url)
        .bind(secret)
        .bind(&webhook.created_at)
        .execute(&mut **conn)
        .await?;
    });
    tx.commit().await.map_err(StoreError::from)?;
    Ok(webhook)
}

/// Stops a webhook: nothing more is queued for it; what is queued is still delivered.
pub async fn remove(store: &Store, webhook_id: &str, actor: &str) -> Result<Webhook, WebhookError> {
    let mut tx = store.begin().await?;
    let row: Option<(String, String, String, String, i64)> = on_tx!(&mut tx, conn => {
        sqlx::query_as(
            "SELECT event_type, url, status, created_at, sequence FROM notification_webhooks WHERE webhook_id = $1",
        )
        .bind(webhook_id)
        .fetch_optional(&mut **conn)
        .await?
    });
    let Some((event_type, url, status, created_at, sequence)) = row else {
        return Err(WebhookError::NotFound(webhook_id.into()));
    };
    let webhook = Webhook { webhook_id: webhook_id.into(), event_type, url, status: "removed".into(), created_at };
    if status == "removed" {
        return Ok(webhook);
    }
    let event = agora_jobs::new_event(
        AGGREGATE,
        webhook_id.to_string(),
        sequence + 1,
        "WebhookRemoved",
        &serde_json::json!({ "webhook_id": webhook_id }),
        actor,
    )?;
    store.append_in(&mut tx, &[event]).await?;
    on_tx!(&mut tx, conn => {
        sqlx::query("UPDATE notification_webhooks SET status = 'removed', sequence = $2 WHERE webhook_id = $1")
            .bind(webhook_id)
            .bind(sequence + 1)
            .execute(&mut **conn)
            .await?;
    });
    tx.commit().await.map_err(StoreError::from)?;
    Ok(webhook)
}

pub async fn list(store: &Store) -> Result<Vec<Webhook>, StoreError> {
    let rows: Vec<(String, String, String, String, String)> = on_reader!(store.backend(), pool => {
        sqlx::query_as(
            "SELECT webhook_id, event_type, url, status, created_at FROM notification_webhooks ORDER BY created_at, webhook_id",
        )
        .fetch_all(pool)
        .await?
    });
    Ok(rows
        .into_iter()
        .map(|(webhook_id, event_type, url, status, created_at)| Webhook {
            webhook_id,
            event_type,
            url,
            status,
            created_at,
        })
        .collect())
}

/// A webhook's deliveries, oldest first.
pub async fn deliveries(store: &Store, webhook_id: &str) -> Result<Vec<DeliveryStep>, StoreError> {
    DELIVERIES.steps(store, webhook_id).await
}

/// A webhook that takes deliveries now.
pub struct ActiveWebhook {
    pub webhook_id: String,
    /// The pattern of event types it wants.
    pub event_types: String,
}

/// The active webhooks, read once for a batch of events.
pub async fn active_in(tx: &mut DbTx) -> Result<Vec<ActiveWebhook>, StoreError> {
    let rows: Vec<(String, String)> = on_tx!(tx, conn => {
        sqlx::query_as("SELECT webhook_id, event_type FROM notification_webhooks WHERE status = 'active'")
            .fetch_all(&mut **conn)
            .await?
    });
    Ok(rows.into_iter().map(|(webhook_id, event_types)| ActiveWebhook { webhook_id, event_types }).collect())
}

/// The deliveries of `event` to each of `webhooks` that wants it, for [`enqueue_in`].
pub fn deliveries_of(webhooks: &[ActiveWebhook], event: &IntegrationEvent) -> Vec<Delivery> {
    let mut body = None;
    webhooks
        .iter()
        .filter(|hook| matches(&hook.event_types, &event.event_type))
        .map(|hook| Delivery {
            webhook_id: hook.webhook_id.clone(),
            event_id: event.id.to_string(),
            event_type: event.event_type.clone(),
            body: body.get_or_insert_with(|| cloud_event(event)).clone(),
        })
        .collect()
}

/// Queues deliveries in the event handler's transaction, each in its webhook's group under
/// its event's id; one already queued is left as it is. Returns how many were new.
pub async fn enqueue_in(store: &Store, tx: &mut DbTx, deliveries: Vec<Delivery>) -> Result<usize, StoreError> {
    let steps = deliveries
        .into_iter()
        .map(|delivery| (delivery.webhook_id.clone(), delivery.event_id.clone(), delivery))
        .collect();
    Ok(DELIVERIES.plan_all_in(store, tx, steps, crate::outbox::ACTOR).await?.len())
}

/// Delivers what is due.
#[derive(Clone)]
pub struct WebhookSender {
    pub store: Store,
    pub http: reqwest::Client,
    pub retry: RetryPolicy,
    pub clock: crate::outbox::Clock,
}

impl WebhookSender {
    pub fn new(store: Store, retry: RetryPolicy, clock: crate::outbox::Clock) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot make the webhook client: {e}"))?;
        Ok(Self { store, http, retry, clock })
    }

    fn runner(&self) -> agora_jobs::Runner<&Self> {
        agora_jobs::Runner {
            table: DELIVERIES,
            store: self.store.clone(),
            retry: self.retry,
            clock: self.clock.clone(),
            actor: crate::outbox::ACTOR,
            performer: self,
        }
    }

    pub async fn run(self, poll: Duration, shutdown: impl std::future::Future<Output = ()>) {
        self.runner().run::<Delivery>(poll, shutdown).await
    }

    pub async fn run_due(&self) -> Result<usize, StoreError> {
        self.runner().run_due::<Delivery>("1 = 1", &[]).await
    }

    async fn secret_and_url(&self, webhook_id: &str) -> Result<Option<(String, String)>, StoreError> {
        Ok(on_reader!(self.store.backend(), pool => {
            sqlx::query_as("SELECT secret, url FROM notification_webhooks WHERE webhook_id = $1")
                .bind(webhook_id)
                .fetch_optional(pool)
                .await?
        }))
    }
}

#[async_trait::async_trait]
impl Perform<Delivery> for &WebhookSender {
    type Batch = ();

    async fn prepare(&self, _steps: &[DeliveryStep]) {}

    async fn perform(&self, step: &DeliveryStep, _batch: &()) -> Outcome {
        let delivery = &step.action;
        let (secret, url) = match self.secret_and_url(&delivery.webhook_id).await {
            Ok(Some(found)) => found,
            Ok(None) => return Outcome::Skipped("the webhook is gone".into()),
            Err(e) => {
                return Outcome::Failed { error: format!("the webhook cannot be read now: {e}"), permanent: false };
            }
        };
        let timestamp = (self.clock)().timestamp();
        let sent = self
            .http
            .post(&url)
            .header("content-type", "application/cloudevents+json")
            .header(SIGNATURE_HEADER, signature(&secret, timestamp, &delivery.body))
            .header("x-agora-delivery", format!("{}/{}", delivery.webhook_id, delivery.event_id))
            .body(delivery.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                Outcome::Done(format!("HTTP {}", response.status().as_u16()))
            }
            Ok(response) => Outcome::Failed {
                error: format!("the receiver answered HTTP {}", response.status().as_u16()),
                // A receiver that says the request is wrong (other than too many) will say so again.
                permanent: response.status().is_client_error()
                    && response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS
                    && response.status() != reqwest::StatusCode::REQUEST_TIMEOUT,
            },
            Err(e) => Outcome::Failed { error: format!("the receiver could not be reached: {e}"), permanent: false },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_matches_its_type_a_prefix_or_everything() {
        assert!(matches("dk.agora.hearing.v1.HearingPublished", "dk.agora.hearing.v1.HearingPublished"));
        assert!(matches("dk.agora.hearing.", "dk.agora.hearing.v1.HearingConcluded"));
        assert!(!matches("dk.agora.hearing", "dk.agora.hearing.v1.HearingConcluded"), "a prefix ends in a dot");
        assert!(!matches("dk.agora.response.", "dk.agora.hearing.v1.HearingConcluded"));
        assert!(matches("*", "dk.agora.identity.v1.UserErased"));
    }

    #[test]
    fn a_registration_names_what_is_wrong() {
        assert!(check("dk.agora.hearing.", "https://esdh.example/hooks", "a-secret-of-length").is_ok());
        assert!(check("dk.agora.hearing.", "http://127.0.0.1:9000/hook", "a-secret-of-length").is_ok());
        assert!(
            check("dk.agora.hearing.", "http://esdh.example/hooks", "a-secret-of-length")
                .unwrap_err()
                .contains("https")
        );
        assert!(
            check("hearing", "https://esdh.example/hooks", "a-secret-of-length").unwrap_err().starts_with("event_type")
        );
        assert!(check("*", "not a url", "a-secret-of-length").unwrap_err().starts_with("url"));
        assert!(check("*", "https://esdh.example/hooks", "short").unwrap_err().starts_with("secret"));
    }

    #[test]
    fn the_signature_covers_the_time_and_the_body() {
        let signed = signature("a-secret-of-length", 1_700_000_000, "{\"id\":1}");
        assert!(signed.starts_with("t=1700000000,v1="), "{signed}");
        assert_eq!(signed.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(signed, signature("a-secret-of-length", 1_700_000_001, "{\"id\":1}"));
        assert_ne!(signed, signature("a-secret-of-length", 1_700_000_000, "{\"id\":2}"));
        assert_ne!(signed, signature("another-secret-here", 1_700_000_000, "{\"id\":1}"));
    }
}
