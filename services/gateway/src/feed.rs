//! The event feed for systems that do not speak NATS: the integration events as CloudEvents in
//! JSON (the protobuf message in `data_base64`), resumable from a cursor, as pages or as a
//! Server-Sent Events stream that honours `Last-Event-ID`. Administrators see every event; anyone
//! else the events of published, external, open hearings.

use std::convert::Infallible;
use std::time::Duration;

use agora_proto::feed::v1 as feed;
use agora_proto::identity::v1 as identity;
use agora_proto::notification::v1 as notification;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::Gateway;
use crate::api::{ApiJson, ApiQuery};
use crate::problem::Problem;
use crate::session::Caller;

/// One integration event, CloudEvents 1.0 in its JSON form.
#[derive(Serialize, ToSchema)]
pub struct FeedEvent {
    /// Where this event is in the feed: give it as `after` (or `Last-Event-ID`) to read on.
    pub cursor: String,
    pub specversion: &'static str,
    pub id: String,
    /// e.g. dk.agora.hearing.v1.HearingPublished: the protobuf message in proto/ that the data is.
    #[serde(rename = "type")]
    pub event_type: String,
    pub source: String,
    pub subject: String,
    pub time: String,
    pub datacontenttype: &'static str,
    pub data_base64: String,
    /// The event's place in its own stream, and its link in the audit hash chain.
    pub sequence: i64,
    pub hash: String,
    /// The NATS subject below the deployment's prefix, as JetStream carries it.
    pub nats_subject: String,
}

#[derive(Serialize, ToSchema)]
pub struct FeedPage {
    pub events: Vec<FeedEvent>,
    /// Read on from here (unchanged when nothing new came).
    pub cursor: String,
}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// The cursor of the last event read; left out, from the beginning.
    pub after: Option<String>,
    /// At most this many events (1 to 1,000; default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Comma-separated type prefixes, e.g. `dk.agora.hearing.`.
    #[serde(rename = "type")]
    pub types: Option<String>,
    /// With nothing new, wait up to this many seconds (at most 25) before answering empty.
    #[param(maximum = 25)]
    pub wait: Option<u32>,
}

fn to_json(event: feed::FeedEvent) -> FeedEvent {
    FeedEvent {
        cursor: event.cursor,
        specversion: "1.0",
        id: event.id,
        event_type: event.r#type,
        source: event.source,
        subject: event.subject,
        time: event.time,
        datacontenttype: "application/protobuf",
        data_base64: base64::engine::general_purpose::STANDARD.encode(&event.data),
        sequence: event.sequence,
        hash: event.hash,
        nats_subject: event.nats_subject,
    }
}

async fn sees_everything(gw: &Gateway, caller: &Caller) -> bool {
    if !caller.is_logged_in() {
        return false;
    }
    match gw.services.identity.clone().who_am_i(caller.grpc(identity::WhoAmIRequest {})).await {
        Ok(user) => user.into_inner().roles.iter().any(|r| r == "administrator"),
        Err(_) => false,
    }
}

/// One read of the feed, filtered for the caller.
async fn read(
    gw: &Gateway,
    all: bool,
    after: String,
    limit: u32,
    types: &[String],
    wait_ms: u32,
) -> Result<feed::ReadEventsResponse, Problem> {
    let Some((client, credential)) = &gw.services.feed else {
        return Err(Problem::new("unavailable", "the event feed is not configured here (AGORA_SERVICE_SECRET)"));
    };
    let mut after = after;
    // One wait for the whole read, however many pages it takes: the caller asked for that much.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(u64::from(wait_ms));
    // A page the caller may see none of would look like the end: read on a few pages for them.
    for _ in 0..10 {
        let wait_ms = deadline.saturating_duration_since(tokio::time::Instant::now()).as_millis() as u32;
        let request = feed::ReadEventsRequest { after: after.clone(), limit, wait_ms, type_prefixes: types.to_vec() };
        let mut page = client.clone().read_events(credential.request(request)).await?.into_inner();
        if !all {
            page.events.retain(|e| e.public);
        }
        if !page.events.is_empty() || page.cursor == after || tokio::time::Instant::now() >= deadline {
            return Ok(page);
        }
        after = page.cursor;
    }
    Ok(feed::ReadEventsResponse { events: Vec::new(), cursor: after })
}

fn prefixes(types: &Option<String>) -> Vec<String> {
    types.iter().flat_map(|t| t.split(',')).map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect()
}

/// The integration events after a cursor, a page at a time.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(FeedQuery),
    responses((status = 200, body = FeedPage), (status = 400, body = Problem), (status = 503, body = Problem)))]
pub async fn events(
    State(gw): State<Gateway>,
    caller: Caller,
    ApiQuery(query): ApiQuery<FeedQuery>,
) -> Result<Json<FeedPage>, Problem> {
    let all = sees_everything(&gw, &caller).await;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let wait_ms = query.wait.unwrap_or(0).min(25) * 1000;
    let page = read(&gw, all, query.after.unwrap_or_default(), limit, &prefixes(&query.types), wait_ms).await?;
    Ok(Json(FeedPage { events: page.events.into_iter().map(to_json).collect(), cursor: page.cursor }))
}

/// The integration events as Server-Sent Events, from `Last-Event-ID` (or `after`) on, for as
/// long as the client listens. Each event's SSE id is its cursor.
#[utoipa::path(get, path = "/api/v1/events/stream", tag = "events", params(FeedQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The cursor to resume after (a browser's EventSource sends it on reconnecting)")),
    responses((status = 200, description = "text/event-stream: one event per integration event, its data a FeedEvent", content_type = "text/event-stream"),
        (status = 503, body = Problem)))]
pub async fn stream(
    State(gw): State<Gateway>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<FeedQuery>,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, Problem> {
    if gw.services.feed.is_none() {
        return Err(Problem::new("unavailable", "the event feed is not configured here (AGORA_SERVICE_SECRET)"));
    }
    let all = sees_everything(&gw, &caller).await;
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let after = resume.or(query.after).unwrap_or_default();
    let types = prefixes(&query.types);
    let state = (gw, after, std::collections::VecDeque::<feed::FeedEvent>::new());
    let events = futures::stream::unfold(state, move |(gw, mut after, mut pending)| {
        let types = types.clone();
        async move {
            loop {
                if let Some(event) = pending.pop_front() {
                    let json = serde_json::to_string(&to_json(event.clone())).unwrap_or_default();
                    let sse = Event::default().id(event.cursor.clone()).event(event.r#type.clone()).data(json);
                    return Some((Ok(sse), (gw, after, pending)));
                }
                match read(&gw, all, after.clone(), 100, &types, 15_000).await {
                    Ok(page) => {
                        after = page.cursor;
                        pending.extend(page.events);
                    }
                    Err(problem) => {
                        // The stream ends; the client reconnects with its Last-Event-ID.
                        tracing::warn!(detail = %problem.detail, "the event stream stops");
                        return None;
                    }
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

// ---------------------------------------------------------------------------------------------
// Webhooks (administrators)

#[derive(Serialize, ToSchema)]
pub struct Webhook {
    pub id: String,
    pub event_type: String,
    pub url: String,
    /// active or removed
    pub status: String,
    pub created_at: String,
}

impl From<notification::Webhook> for Webhook {
    fn from(w: notification::Webhook) -> Self {
        Self { id: w.webhook_id, event_type: w.event_type, url: w.url, status: w.status, created_at: w.created_at }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct RegisterWebhook {
    /// An event type (dk.agora.hearing.v1.HearingPublished), a prefix ending in a dot
    /// (dk.agora.hearing.), or * for every event.
    pub event_type: String,
    /// https (http only to the gateway's own machine).
    pub url: String,
    /// At least 16 characters. Each delivery carries `X-Agora-Signature: t=<unix seconds>,v1=<hex
    /// HMAC-SHA256 of "<t>.<body>" under this secret>`.
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookDelivery {
    pub event_id: String,
    pub event_type: String,
    /// pending, running, done, retrying, parked
    pub state: String,
    pub attempts: i32,
    pub last_error: String,
    pub next_attempt_at: String,
    pub result: String,
}

fn signed_in(caller: &Caller) -> Result<(), Problem> {
    if caller.is_logged_in() {
        Ok(())
    } else {
        Err(Problem::new("unauthenticated", "log in first: webhooks are for administrators"))
    }
}

/// The registered webhooks.
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "events", security(("bearer" = [])),
    responses((status = 200, body = Vec<Webhook>), (status = 403, body = Problem)))]
pub async fn list_webhooks(State(gw): State<Gateway>, caller: Caller) -> Result<Json<Vec<Webhook>>, Problem> {
    signed_in(&caller)?;
    let list =
        gw.services.notification.clone().list_webhooks(caller.grpc(notification::ListWebhooksRequest {})).await?;
    Ok(Json(list.into_inner().webhooks.into_iter().map(Into::into).collect()))
}

/// Registers a webhook for an event type: every such integration event is POSTed to the URL as
/// CloudEvents JSON, signed, retried with backoff.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "events", request_body = RegisterWebhook, security(("bearer" = [])),
    responses((status = 201, body = Webhook), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn register_webhook(
    State(gw): State<Gateway>,
    caller: Caller,
    ApiJson(body): ApiJson<RegisterWebhook>,
) -> Result<(StatusCode, Json<Webhook>), Problem> {
    signed_in(&caller)?;
    let request =
        notification::RegisterWebhookRequest { event_type: body.event_type, url: body.url, secret: body.secret };
    let made = gw.services.notification.clone().register_webhook(caller.grpc(request)).await?;
    Ok((StatusCode::CREATED, Json(made.into_inner().into())))
}

/// Stops a webhook (deliveries already queued still go).
#[utoipa::path(delete, path = "/api/v1/webhooks/{webhook_id}", tag = "events", params(("webhook_id" = String, Path)),
    security(("bearer" = [])), responses((status = 200, body = Webhook), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn remove_webhook(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(webhook_id): Path<String>,
) -> Result<Json<Webhook>, Problem> {
    signed_in(&caller)?;
    let removed =
        gw.services.notification.clone().remove_webhook(caller.grpc(notification::WebhookRef { webhook_id })).await?;
    Ok(Json(removed.into_inner().into()))
}

/// A webhook's delivery log.
#[utoipa::path(get, path = "/api/v1/webhooks/{webhook_id}/deliveries", tag = "events", params(("webhook_id" = String, Path)),
    security(("bearer" = [])), responses((status = 200, body = Vec<WebhookDelivery>), (status = 403, body = Problem)))]
pub async fn webhook_deliveries(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(webhook_id): Path<String>,
) -> Result<Json<Vec<WebhookDelivery>>, Problem> {
    signed_in(&caller)?;
    let request = caller.grpc(notification::WebhookRef { webhook_id });
    let log = gw.services.notification.clone().list_webhook_deliveries(request).await?.into_inner();
    Ok(Json(
        log.deliveries
            .into_iter()
            .map(|d| WebhookDelivery {
                event_id: d.event_id,
                event_type: d.event_type,
                state: d.state,
                attempts: d.attempts,
                last_error: d.last_error,
                next_attempt_at: d.next_attempt_at,
                result: d.result,
            })
            .collect(),
    ))
}
