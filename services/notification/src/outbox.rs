//! The queue of messages: each is a step (agora-jobs) in `notification_messages`, keyed by its
//! Message-ID, so that an event handled twice queues nothing new. Sending records the intent
//! before the mail server is called and the outcome after; a message whose outcome was lost
//! (the sender died in the call) is sent again once its lease ends, with the same Message-ID,
//! so that the receiving system can drop the repeat. The queue keeps who and what, not the
//! address or name: they are looked up (a user) or opened (an invitee's sealed address) when
//! the message is sent, so an erased person is skipped, and the message is made then from the
//! template, in the recipient's language.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_eventstore::{DbTx, Store, StoreError};
use agora_jobs::{RetryPolicy, Step, StepTable};
use agora_vault::{PersonKeys, Revealed, VaultError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::message::UnsubscribeSigner;
use crate::recipients::{Contact, Directory, Recipient};
use crate::smtp::{Email, SendError};
use crate::templates::{Kind, Language, Template};

/// The messages: table `notification_messages`, streams `NotificationMessage` `<recipient>/<Message-ID>`.
pub const MESSAGES: StepTable = StepTable { table: "notification_messages", aggregate: "NotificationMessage" };

pub const ACTOR: &str = "service:notification";

/// A message to deliver: its kind, who, and the values its template is filled with (facts of
/// the hearing or response, never a person's data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub kind: Kind,
    pub message_id: String,
    pub recipient: Recipient,
    pub values: BTreeMap<String, String>,
    /// The hearing it is about, whose own templates come first.
    #[serde(default)]
    pub hearing_id: Option<String>,
}

/// A queued message.
pub type Message = Step<Delivery>;

/// Queues messages in the caller's transaction (an event handler's); a Message-ID already
/// queued is left as it is. Returns how many were new.
pub async fn enqueue_in(store: &Store, tx: &mut DbTx, deliveries: Vec<Delivery>) -> Result<usize, StoreError> {
    let steps = deliveries
        .into_iter()
        .map(|delivery| (delivery.recipient.reference(), delivery.message_id.clone(), delivery))
        .collect();
    Ok(MESSAGES.plan_all_in(store, tx, steps, ACTOR).await?.len())
}

/// Where e-mail goes (SMTP in production; tests wrap it).
#[async_trait::async_trait]
pub trait EmailChannel: Send + Sync {
    async fn send(&self, email: &Email) -> Result<(), SendError>;
}

#[async_trait::async_trait]
impl EmailChannel for crate::smtp::SmtpChannel {
    async fn send(&self, email: &Email) -> Result<(), SendError> {
        crate::smtp::SmtpChannel::send(self, email).await
    }
}

#[async_trait::async_trait]
impl EmailChannel for crate::smtp::MailFolder {
    async fn send(&self, email: &Email) -> Result<(), SendError> {
        crate::smtp::MailFolder::send(self, email).await
    }
}

/// A token bucket: at most `per_second` messages a second on average, `burst` at once.
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl RateLimit {
    pub fn new(per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self { per_second: per_second.max(0.001), burst, tokens: burst, at: None }
    }

    /// Takes a token at `now`; how long to wait first when there is none.
    pub fn take(&mut self, now: Instant) -> Duration {
        if let Some(at) = self.at {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        }
        self.at = Some(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / self.per_second) }
    }
}

pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What every message says of the portal, and how its links are made.
#[derive(Clone)]
pub struct Portal {
    pub name: String,
    /// e.g. `https://blivhoert.kk.dk`
    pub url: String,
    pub unsubscribe: Arc<UnsubscribeSigner>,
}

/// Sends what is due.
#[derive(Clone)]
pub struct Sender {
    pub store: Store,
    pub keys: Arc<dyn PersonKeys>,
    pub directory: Arc<dyn Directory>,
    pub email: Arc<dyn EmailChannel>,
    /// Citizens invited by CPR number get Digital Post; without it their messages are skipped.
    pub digital_post: Option<Arc<dyn crate::digital_post::DigitalPostChannel>>,
    pub portal: Portal,
    pub retry: RetryPolicy,
    pub clock: Clock,
    /// The e-mail channel's rate limit (Digital Post keeps its own).
    pub rate: Arc<tokio::sync::Mutex<RateLimit>>,
}

/// Where a message goes.
enum Address {
    Email(String),
    /// CPR or CVR, and the number.
    DigitalPost(String, String),
}

enum Outcome {
    Sent,
    Skipped(String),
    Failed(SendError),
}

impl Sender {
    /// The queue's runner around this sender.
    fn runner(&self) -> agora_jobs::Runner<&Self> {
        agora_jobs::Runner {
            table: MESSAGES,
            store: self.store.clone(),
            retry: self.retry,
            clock: self.clock.clone(),
            actor: ACTOR,
            performer: self,
        }
    }

    /// Sends what is due until `shutdown`: at once when something was appended, else when the
    /// next retry is due or at the latest every `poll`.
    pub async fn run(self, poll: Duration, shutdown: impl std::future::Future<Output = ()>) {
        self.runner().run::<Delivery>(poll, shutdown).await
    }

    /// Sends every message due now; returns how many this sender handled.
    pub async fn run_due(&self) -> Result<usize, StoreError> {
        self.runner().run_due::<Delivery>("1 = 1", &[]).await
    }

    /// Who, in what language, at what address, under what name; `None` when they are gone.
    async fn reveal(&self, sealed: &str) -> Result<Option<String>, VaultError> {
        Ok(match self.keys.reveal(sealed).await? {
            Revealed::Clear(value) => Some(value),
            Revealed::Erased => None,
        })
    }

    /// What a batch of messages needs from elsewhere, asked for once: the people (recipients
    /// and hearings' owners) in one call to the identity service, the opt-outs in one query.
    /// A lookup that fails fails each message that needs it (they are tried again). What is
    /// looked up is as old as the batch: a person erased, or an opt-out made, while a batch is
    /// being sent may still get its message (a batch is sent within 0.8 of its lease).
    async fn look_up(&self, messages: &[Message]) -> Lookups {
        let mut people = Vec::new();
        let mut opt_outs = Vec::new();
        for message in messages {
            let delivery = &message.action;
            if let Recipient::User { user_id } = &delivery.recipient {
                people.push(user_id.clone());
            }
            if let Some(owner) = delivery.values.get(crate::plan::OWNER_ID) {
                people.push(owner.clone());
            }
            opt_outs.push((delivery.recipient.reference(), delivery.kind.as_str()));
        }
        Lookups {
            people: self.directory.contacts(&people).await.map_err(|e| e.to_string()),
            opted_out: crate::unsubscribe::opted_out_of(&self.store, &opt_outs).await.map_err(|e| e.to_string()),
            templates: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Where, under what name, in what language; `None` when they are gone.
    /// `people`: the batch's lookup at the identity service, which only users need (a failed
    /// one fails only their messages).
    async fn resolve(
        &self,
        recipient: &Recipient,
        people: &Result<HashMap<String, Contact>, String>,
    ) -> Result<Option<(Address, String, Language)>, VaultError> {
        Ok(match recipient {
            // Citizens and company users in Digital Post where it is set up; staff (and the
            // rest, without it) by e-mail.
            Recipient::User { user_id } => {
                let people = people.as_ref().map_err(|e| VaultError::Store(e.clone()))?;
                people.get(user_id).cloned().and_then(|c| {
                    let address = match (c.digital_post, &self.digital_post, c.email) {
                        (Some((kind, number)), Some(_), _) => Address::DigitalPost(kind, number),
                        (_, _, Some(email)) => Address::Email(email),
                        _ => return None,
                    };
                    Some((address, c.name, c.language))
                })
            }
            Recipient::Invitee { sealed_address, sealed_name, .. } => {
                match (self.reveal(sealed_address).await?, self.reveal(sealed_name).await?) {
                    (Some(address), Some(name)) => Some((Address::Email(address), name, Language::Danish)),
                    _ => None,
                }
            }
            // Known only by the address: it is also how they are greeted.
            Recipient::Subscriber { sealed_address, language, .. } => {
                self.reveal(sealed_address).await?.map(|address| (Address::Email(address.clone()), address, *language))
            }
            Recipient::DigitalPost { id_type, sealed_id, sealed_name, .. } => {
                match (self.reveal(sealed_id).await?, self.reveal(sealed_name).await?) {
                    (Some(id), Some(name)) => Some((Address::DigitalPost(id_type.clone(), id), name, Language::Danish)),
                    _ => None,
                }
            }
        })
    }

    async fn deliver(&self, delivery: &Delivery, lookups: &Lookups) -> Outcome {
        match &lookups.opted_out {
            Ok(opted_out)
                if opted_out.contains(&(delivery.recipient.reference(), delivery.kind.as_str().to_string())) =>
            {
                return Outcome::Skipped("the recipient unsubscribed from these messages".into());
            }
            Ok(_) => {}
            Err(e) => return Outcome::Failed(SendError::Transient(format!("the opt-outs cannot be read now: {e}"))),
        }
        let (address, name, language) = match self.resolve(&delivery.recipient, &lookups.people).await {
            Ok(Some(found)) => found,
            Ok(None) => return Outcome::Skipped("the recipient is gone or has no e-mail address".into()),
            Err(e) => {
                return Outcome::Failed(SendError::Transient(format!("the recipient cannot be looked up now: {e}")));
            }
        };
        let unsubscribe_url = format!(
            "{}/afmeld/{}",
            self.portal.url.trim_end_matches('/'),
            self.portal
                .unsubscribe
                .sign(&crate::unsubscribe::scope(&delivery.recipient.reference(), delivery.kind.as_str()))
        );
        let mut values: BTreeMap<&str, String> = delivery.values.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        values.insert("recipient_name", name);
        if let Some(owner) = delivery.values.get(crate::plan::OWNER_ID) {
            match &lookups.people {
                Ok(people) => {
                    values.insert("owner_name", people.get(owner).map(|c| c.name.clone()).unwrap_or_default());
                }
                Err(e) => {
                    return Outcome::Failed(SendError::Transient(format!("the owner cannot be looked up now: {e}")));
                }
            }
        }
        values.insert("portal_name", self.portal.name.clone());
        values.insert("portal_url", self.portal.url.clone());
        values.insert("unsubscribe_url", unsubscribe_url.clone());
        let template =
            match lookups.template(&self.store, delivery.hearing_id.as_deref(), delivery.kind, language).await {
                Ok(template) => template,
                Err(e) => {
                    return Outcome::Failed(SendError::Transient(format!("the templates cannot be read now: {e}")));
                }
            };
        let content = match template.render(&values) {
            Ok(content) => content,
            Err(e) => return Outcome::Failed(SendError::Permanent(format!("the message cannot be made: {e}"))),
        };
        let sent = match address {
            Address::Email(to) => {
                let wait = self.rate.lock().await.take(Instant::now());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let email = Email {
                    message_id: delivery.message_id.clone(),
                    to,
                    language,
                    content,
                    unsubscribe_url: (delivery.kind != Kind::SubscriptionConfirmation).then_some(unsubscribe_url),
                };
                self.email.send(&email).await
            }
            Address::DigitalPost(id_type, id) => {
                let Some(digital_post) = &self.digital_post else {
                    return Outcome::Skipped("Digital Post is not configured here".into());
                };
                let letter = crate::digital_post::Letter {
                    // The same letter however often it is sent: NgDP drops a repeat.
                    message_uuid: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, delivery.message_id.as_bytes()),
                    id_type,
                    id,
                    subject: content.subject,
                    text: content.text,
                    language,
                };
                let sent = digital_post.send(&letter).await;
                if sent.is_ok()
                    && let Err(e) =
                        crate::receipts::note_sent(&self.store, &delivery.message_id, letter.message_uuid).await
                {
                    tracing::warn!(message = %delivery.message_id, error = %e, "the letter's receipt will not be asked for");
                }
                sent
            }
        };
        match sent {
            Ok(()) => Outcome::Sent,
            Err(e) => Outcome::Failed(e),
        }
    }
}

/// What a batch of messages needs from elsewhere, looked up once for all of them.
pub struct Lookups {
    /// The recipients and owners who are there, by user id.
    people: Result<HashMap<String, Contact>, String>,
    /// (recipient reference, kind) of each opt-out among the batch's messages.
    opted_out: Result<HashSet<(String, String)>, String>,
    /// Each template in force, read when a message first needs it.
    templates: std::sync::Mutex<HashMap<TemplateKey, Template>>,
}

/// A template in force is chosen by hearing (none: the municipality's), kind and language.
type TemplateKey = (Option<String>, Kind, Language);

impl Lookups {
    async fn template(
        &self,
        store: &Store,
        hearing: Option<&str>,
        kind: Kind,
        language: Language,
    ) -> Result<Template, StoreError> {
        let key = (hearing.map(str::to_string), kind, language);
        if let Some(template) = self.templates.lock().ok().and_then(|known| known.get(&key).cloned()) {
            return Ok(template);
        }
        let (template, _) = crate::overrides::effective(store, hearing, kind, language).await?;
        if let Ok(mut known) = self.templates.lock() {
            known.insert(key, template.clone());
        }
        Ok(template)
    }
}

#[async_trait::async_trait]
impl agora_jobs::Perform<Delivery> for &Sender {
    type Batch = Lookups;

    async fn prepare(&self, messages: &[Message]) -> Lookups {
        self.look_up(messages).await
    }

    async fn perform(&self, message: &Message, lookups: &Lookups) -> agora_jobs::Outcome {
        match self.deliver(&message.action, lookups).await {
            Outcome::Sent => agora_jobs::Outcome::Done(message.action.message_id.clone()),
            Outcome::Skipped(reason) => agora_jobs::Outcome::Skipped(reason),
            Outcome::Failed(error) => agora_jobs::Outcome::Failed {
                permanent: matches!(error, SendError::Permanent(_)),
                error: error.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_lets_a_burst_through_then_spaces_the_rest() {
        let mut limit = RateLimit::new(10.0, 3);
        let start = Instant::now();
        let waits: Vec<Duration> = (0..5).map(|_| limit.take(start)).collect();
        assert_eq!(&waits[..3], &[Duration::ZERO; 3]);
        assert_eq!(waits[3], Duration::from_millis(100));
        assert_eq!(waits[4], Duration::from_millis(200));
        let later = start + Duration::from_secs(10);
        assert_eq!(limit.take(later), Duration::ZERO, "the bucket refills, up to the burst");
    }
}
