//! The notification service on the bus: it learns hearings, their invitees and respondents
//! from the hearing and response services' integration events, and queues what each event
//! calls for in the same transaction that marks the event handled. No address or name is
//! looked up here: that happens when a message is sent.

use std::collections::{BTreeSet, HashMap};

use agora_eventstore::jetstream::{IntegrationEvent, IntegrationHandler};
use agora_eventstore::{DbTx, Store, StoreError, on_tx};
use agora_proto::hearing::v1 as hearing_pb;
use agora_proto::response::v1 as response_pb;
use prost::Message;

use crate::digest::ResponseCounts;
use crate::outbox;
use crate::plan::{HearingInfo, Links, ResponseInfo, Trigger, plan};
use crate::recipients::Recipient;
use crate::templates::Kind;

pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS notification_hearings (
        hearing_id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        status TEXT NOT NULL,
        deadline TEXT NOT NULL,
        team TEXT NOT NULL,
        sequence BIGINT NOT NULL)",
    // Invitees by reference; `recipient` holds sealed addresses only.
    "CREATE TABLE IF NOT EXISTS notification_invitees (
        hearing_id TEXT NOT NULL,
        reference TEXT NOT NULL,
        recipient TEXT NOT NULL,
        PRIMARY KEY (hearing_id, reference))",
    "CREATE TABLE IF NOT EXISTS notification_respondents (
        hearing_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        PRIMARY KEY (hearing_id, user_id))",
];

fn failed(e: impl std::fmt::Display) -> String {
    e.to_string()
}

async fn hearing_in(tx: &mut DbTx, hearing_id: &str) -> Result<HearingInfo, StoreError> {
    let row: Option<(String, String, String)> = on_tx!(tx, conn => {
        sqlx::query_as("SELECT title, status, deadline FROM notification_hearings WHERE hearing_id = $1")
            .bind(hearing_id)
            .fetch_optional(&mut **conn)
            .await?
    });
    let (title, status, deadline) = row.unwrap_or_default();
    Ok(HearingInfo { hearing_id: hearing_id.into(), title, status, deadline })
}

async fn enqueue(
    store: &Store,
    tx: &mut DbTx,
    trigger: &Trigger,
    hearing: &HearingInfo,
    event: &IntegrationEvent,
    links: &Links,
) -> Result<(), String> {
    let deliveries = plan(trigger, hearing, event.id, links);
    outbox::enqueue_in(store, tx, deliveries).await.map_err(failed)?;
    Ok(())
}

/// A hearing's invitee as a recipient: an e-mail invitee by their sealed address, a citizen or
/// company by their sealed CPR or CVR number (Digital Post), a user by id.
fn recipient(invitee: &hearing_pb::Invitee) -> Option<Recipient> {
    match invitee.kind.as_str() {
        "email" if !invitee.sealed_address.is_empty() => Some(Recipient::Invitee {
            reference: invitee.reference.clone(),
            sealed_address: invitee.sealed_address.clone(),
            sealed_name: invitee.label.clone(),
        }),
        "person" | "company" if !invitee.sealed_address.is_empty() => Some(Recipient::DigitalPost {
            reference: invitee.reference.clone(),
            id_type: if invitee.kind == "person" { "CPR" } else { "CVR" }.into(),
            sealed_id: invitee.sealed_address.clone(),
            sealed_name: invitee.label.clone(),
        }),
        "user" => invitee.reference.strip_prefix("user:").map(|id| Recipient::User { user_id: id.to_string() }),
        _ => None,
    }
}

/// A hearing's invitees, as recipients.
async fn invitees_in(tx: &mut DbTx, hearing_id: &str) -> Result<Vec<Recipient>, String> {
    let rows: Vec<(String,)> = on_tx!(tx, conn => {
        sqlx::query_as("SELECT recipient FROM notification_invitees WHERE hearing_id = $1 ORDER BY reference")
            .bind(hearing_id)
            .fetch_all(&mut **conn)
            .await
            .map_err(failed)?
    });
    rows.iter().map(|(json,)| serde_json::from_str(json).map_err(failed)).collect()
}

/// Who responded to a hearing (not on paper), by user id.
async fn respondents_in(tx: &mut DbTx, hearing_id: &str) -> Result<Vec<String>, String> {
    let rows: Vec<(String,)> = on_tx!(tx, conn => {
        sqlx::query_as("SELECT user_id FROM notification_respondents WHERE hearing_id = $1 ORDER BY user_id")
            .bind(hearing_id)
            .fetch_all(&mut **conn)
            .await
            .map_err(failed)?
    });
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Remembers who responded to which hearing (hearing id, user id).
async fn remember_respondents_in(tx: &mut DbTx, respondents: &BTreeSet<(String, String)>) -> Result<(), String> {
    let respondents: Vec<&(String, String)> = respondents.iter().collect();
    for chunk in respondents.chunks(RESPONDENTS_AT_ONCE) {
        let sql = format!(
            "INSERT INTO notification_respondents (hearing_id, user_id) VALUES {} ON CONFLICT DO NOTHING",
            agora_eventstore::placeholders(matches!(tx, DbTx::Postgres(_)), chunk.len(), 2)
        );
        on_tx!(tx, conn => {
            let mut query = sqlx::query(&sql);
            for (hearing_id, user_id) in chunk {
                query = query.bind(hearing_id).bind(user_id);
            }
            query.execute(&mut **conn).await.map_err(failed)?;
        });
    }
    Ok(())
}

/// Respondents remembered in one statement: well under either database's limit of parameters.
const RESPONDENTS_AT_ONCE: usize = 500;

/// Learns hearings and their invitees; invites, and tells of changes and conclusions.
pub struct HearingEventsHandler {
    pub store: Store,
    pub links: Links,
}

#[async_trait::async_trait]
impl IntegrationHandler for HearingEventsHandler {
    fn name(&self) -> &str {
        "notification-hearings"
    }

    fn filter(&self) -> &str {
        "hearing.v1.>"
    }

    async fn handle(&self, tx: &mut DbTx, event: &IntegrationEvent) -> Result<(), String> {
        let state = agora_proto::hearing_state(&event.event_type, &event.data)?;
        let status = agora_proto::hearing_status_name(state.status);
        let before = hearing_in(tx, &state.hearing_id).await.map_err(failed)?;
        // The owner and reviewers get the daily digest.
        let team: Vec<&str> =
            std::iter::once(state.owner_id.as_str()).chain(state.reviewer_ids.iter().map(String::as_str)).collect();
        let written = on_tx!(tx, conn => {
            sqlx::query(
                "INSERT INTO notification_hearings (hearing_id, title, status, deadline, team, sequence) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (hearing_id) DO UPDATE SET title = excluded.title, status = excluded.status, \
                 deadline = excluded.deadline, team = excluded.team, sequence = excluded.sequence \
                 WHERE notification_hearings.sequence < excluded.sequence",
            )
            .bind(&state.hearing_id)
            .bind(&state.title)
            .bind(status)
            .bind(&state.deadline)
            .bind(team.join(","))
            .bind(event.sequence)
            .execute(&mut **conn)
            .await
            .map_err(failed)?
            .rows_affected()
        });
        if written == 1 && !before.status.is_empty() && before.status != status {
            crate::digest::note_status_in(tx, &state.hearing_id, event.time, status).await.map_err(failed)?;
        }
        let hearing = hearing_in(tx, &state.hearing_id).await.map_err(failed)?;
        let message = event.event_type.rsplit('.').next().unwrap_or_default();
        // Subscribers are the public: they hear of public hearings only.
        let public = !state.internal && !state.closed && !matches!(status, "Created" | "Draft" | "Deleted");
        let subscribed = match message {
            "HearingPublished" => Some((Kind::SubscribedHearingPublished, String::new(), String::new())),
            "HearingUpdated" => {
                let updated = hearing_pb::HearingUpdated::decode(event.data.clone()).map_err(failed)?;
                let worth_telling = ["title", "summary", "body", "deadline"];
                let changed: Vec<String> =
                    updated.changed.into_iter().filter(|c| worth_telling.contains(&c.as_str())).collect();
                (!changed.is_empty()).then(|| (Kind::SubscribedHearingChanged, changed.join(", "), String::new()))
            }
            "HearingConcluded" => {
                let concluded = hearing_pb::HearingConcluded::decode(event.data.clone()).map_err(failed)?;
                Some((Kind::SubscribedHearingConcluded, String::new(), concluded.conclusion))
            }
            _ => None,
        };
        if let (Some((kind, changes, conclusion)), true) = (subscribed, public) {
            let subjects = crate::subscriptions::Subjects {
                hearing_id: state.hearing_id.clone(),
                subject_area_id: state.subject_area_id.clone(),
                kle_number: state.kle_number.clone(),
                city_area_id: state.city_area_id.clone(),
            };
            let subscribers = crate::subscriptions::matching_in(tx, &subjects).await.map_err(failed)?;
            if !subscribers.is_empty() {
                let trigger = Trigger::Subscribed { kind, subscribers, changes, conclusion };
                enqueue(&self.store, tx, &trigger, &hearing, event, &self.links).await?;
            }
        }
        let trigger = match message {
            "InviteeAdded" => {
                let added = hearing_pb::InviteeAdded::decode(event.data.clone()).map_err(failed)?;
                let Some(recipient) = added.invitee.as_ref().and_then(recipient) else { return Ok(()) };
                let json = serde_json::to_string(&recipient).map_err(failed)?;
                on_tx!(tx, conn => {
                    sqlx::query(
                        "INSERT INTO notification_invitees (hearing_id, reference, recipient) VALUES ($1, $2, $3) \
                         ON CONFLICT (hearing_id, reference) DO UPDATE SET recipient = excluded.recipient",
                    )
                    .bind(&state.hearing_id)
                    .bind(recipient.reference())
                    .bind(json)
                    .execute(&mut **conn)
                    .await
                    .map_err(failed)?;
                });
                Trigger::InviteeAdded { invitee: recipient }
            }
            "InviteeRemoved" => {
                let removed = hearing_pb::InviteeRemoved::decode(event.data.clone()).map_err(failed)?;
                on_tx!(tx, conn => {
                    sqlx::query("DELETE FROM notification_invitees WHERE hearing_id = $1 AND reference = $2")
                        .bind(&state.hearing_id)
                        .bind(&removed.reference)
                        .execute(&mut **conn)
                        .await
                        .map_err(failed)?;
                });
                return Ok(());
            }
            "ReviewerAdded" => {
                let added = hearing_pb::ReviewerAdded::decode(event.data.clone()).map_err(failed)?;
                Trigger::ReviewerAdded { user_id: added.user_id, owner_id: state.owner_id.clone() }
            }
            "HearingUpdated" => {
                let updated = hearing_pb::HearingUpdated::decode(event.data.clone()).map_err(failed)?;
                let published = !matches!(status, "Created" | "Draft" | "Deleted");
                if !(updated.notify_participants && published) {
                    return Ok(());
                }
                let mut recipients = invitees_in(tx, &state.hearing_id).await?;
                let respondents = respondents_in(tx, &state.hearing_id).await?;
                recipients.extend(respondents.into_iter().map(|user_id| Recipient::User { user_id }));
                Trigger::Changed { changes: updated.changed.join(", "), recipients }
            }
            "HearingStarted" => Trigger::Started { invitees: invitees_in(tx, &state.hearing_id).await? },
            "HearingConcluded" => {
                let concluded = hearing_pb::HearingConcluded::decode(event.data.clone()).map_err(failed)?;
                Trigger::Concluded {
                    conclusion: concluded.conclusion,
                    respondents: respondents_in(tx, &state.hearing_id).await?,
                }
            }
            _ => return Ok(()),
        };
        enqueue(&self.store, tx, &trigger, &hearing, event, &self.links).await
    }
}

fn response_info(state: &response_pb::ResponseState) -> ResponseInfo {
    ResponseInfo {
        author_id: state.author_id.clone(),
        number: state.number,
        receipt_sha256: state.receipt_sha256.clone(),
        accepted_at: chrono::DateTime::parse_from_rfc3339(&state.accepted_at).ok().map(|t| t.to_utc()),
        registered_by_owner: state.registered_by_owner,
    }
}

/// Sends receipts and declines, and remembers who responded (they are told of the conclusion).
pub struct ResponseEventsHandler {
    pub store: Store,
    pub links: Links,
}

#[async_trait::async_trait]
impl IntegrationHandler for ResponseEventsHandler {
    fn name(&self) -> &str {
        "notification-responses"
    }

    fn filter(&self) -> &str {
        "response.v1.>"
    }

    async fn handle(&self, tx: &mut DbTx, event: &IntegrationEvent) -> Result<(), String> {
        let mut batch = Batch::default();
        self.handle_in_batch(tx, event, &mut batch).await?;
        batch.finish(&self.store, tx).await
    }
}

/// What the events of one batch share: a surge's batch is hundreds of responses to one
/// hearing, which is read once instead of once a response.
#[derive(Default)]
struct Batch {
    /// New responses, counted into the digest at the batch's end.
    counts: ResponseCounts,
    /// The hearings read so far; a hearing event empties it.
    hearings: HashMap<String, HearingInfo>,
    /// The messages the responses call for, queued together.
    messages: Vec<outbox::Delivery>,
    /// (hearing, user) of the responses, remembered together (one statement a batch, not one
    /// a response).
    respondents: BTreeSet<(String, String)>,
    /// The deliveries to webhooks the events call for, queued together.
    webhook_deliveries: Vec<crate::webhooks::Delivery>,
}

impl Batch {
    /// Writes the respondents and queues the messages gathered so far: before a hearing event,
    /// which tells the respondents known by then and queues its own messages after these (so
    /// that a recipient's messages keep the order of the events).
    async fn write_gathered(&mut self, store: &Store, tx: &mut DbTx) -> Result<(), String> {
        remember_respondents_in(tx, &std::mem::take(&mut self.respondents)).await?;
        outbox::enqueue_in(store, tx, std::mem::take(&mut self.messages)).await.map_err(failed)?;
        Ok(())
    }

    /// Writes what is left and counts the new responses into the digest.
    async fn finish(mut self, store: &Store, tx: &mut DbTx) -> Result<(), String> {
        self.write_gathered(store, tx).await?;
        crate::webhooks::enqueue_in(store, tx, self.webhook_deliveries).await.map_err(failed)?;
        self.counts.write_in(tx).await.map_err(failed)
    }
}

impl ResponseEventsHandler {
    /// Handles a response event; a new response is counted into the batch for the digest.
    async fn handle_in_batch(&self, tx: &mut DbTx, event: &IntegrationEvent, batch: &mut Batch) -> Result<(), String> {
        let trigger = match event.event_type.rsplit('.').next().unwrap_or_default() {
            "ResponseSubmitted" => {
                let submitted = response_pb::ResponseSubmitted::decode(event.data.clone()).map_err(failed)?;
                let state = submitted.response.ok_or("ResponseSubmitted without its state")?;
                batch.counts.count(&state.hearing_id, event.time);
                if !state.registered_by_owner {
                    batch.respondents.insert((state.hearing_id.clone(), state.author_id.clone()));
                }
                (state.hearing_id.clone(), Trigger::ResponseSubmitted { response: response_info(&state) })
            }
            "ResponseDeclined" => {
                let declined = response_pb::ResponseDeclined::decode(event.data.clone()).map_err(failed)?;
                let state = declined.response.ok_or("ResponseDeclined without its state")?;
                let trigger = Trigger::ResponseDeclined { response: response_info(&state), reason: declined.reason };
                (state.hearing_id.clone(), trigger)
            }
            _ => return Ok(()),
        };
        let (hearing_id, trigger) = trigger;
        let hearing = match batch.hearings.get(&hearing_id) {
            Some(hearing) => hearing,
            None => {
                let hearing = hearing_in(tx, &hearing_id).await.map_err(failed)?;
                batch.hearings.entry(hearing_id).or_insert(hearing)
            }
        };
        batch.messages.extend(plan(&trigger, hearing, event.id, &self.links));
        Ok(())
    }
}

/// The hearing and response events in one consumer, so that they are handled in the order
/// they happened: a response submitted before the conclusion is known when the conclusion is
/// (with two consumers, one could run behind the other). Every event also goes to the
/// webhooks that want it.
pub struct EventsHandler {
    pub hearings: HearingEventsHandler,
    pub responses: ResponseEventsHandler,
}

impl EventsHandler {
    pub fn new(store: Store, links: Links) -> Self {
        Self {
            hearings: HearingEventsHandler { store: store.clone(), links: links.clone() },
            responses: ResponseEventsHandler { store, links },
        }
    }
}

#[async_trait::async_trait]
impl IntegrationHandler for EventsHandler {
    fn name(&self) -> &str {
        "notification-events"
    }

    fn filter(&self) -> &str {
        ">"
    }

    async fn handle(&self, tx: &mut DbTx, event: &IntegrationEvent) -> Result<(), String> {
        self.handle_all(tx, &[event]).await
    }

    async fn handle_all(&self, tx: &mut DbTx, events: &[&IntegrationEvent]) -> Result<(), String> {
        let mut batch = Batch::default();
        let webhooks = crate::webhooks::active_in(tx).await.map_err(failed)?;
        for event in events {
            batch.webhook_deliveries.extend(crate::webhooks::deliveries_of(&webhooks, event));
            if event.event_type.starts_with("dk.agora.hearing.") {
                batch.write_gathered(&self.hearings.store, tx).await?;
                batch.hearings.clear();
                self.hearings.handle(tx, event).await?;
            } else if event.event_type.starts_with("dk.agora.response.") {
                self.responses.handle_in_batch(tx, event, &mut batch).await?;
            }
        }
        batch.finish(&self.hearings.store, tx).await
    }
}
