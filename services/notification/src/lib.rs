//! The notification service: tells people what happened to the hearings they are part of or
//! follow, in their language, by e-mail (and, for citizens and companies, Digital Post), each
//! message once.
//!
//! So far: the message templates per notification type and language, checked when saved and
//! filled with escaping (`templates`); the Message-ID that makes a repeat recognisable and the
//! signed one-click unsubscribe links (`message`); e-mail over SMTP (`smtp`); and the queue
//! that sends each message once, with the intent recorded before and the outcome after, a
//! rate limit and retries (`outbox`), looking recipients up only when sending (`recipients`);
//! who is told what (`plan`, pure) from the hearing and response services' events (`events`):
//! invitations, reviewers, receipts, declines, conclusions, and the daily digest at 07:00
//! (`digest`); one-click unsubscribe (`unsubscribe`); templates the owner edits, previews and
//! sends to themself, checked when saved (`overrides`, `grpc`); subscriptions to subject areas,
//! KLE numbers, city areas and hearings, with double opt-in (`subscriptions`); Digital Post for
//! citizens invited by CPR number (`digital_post`, MeMo to NgDP).

pub mod config;
pub mod digest;
pub mod digital_post;
pub mod events;
pub mod grpc;
pub mod message;
pub mod outbox;
pub mod overrides;
pub mod plan;
pub mod receipts;
pub mod recipients;
pub mod smtp;
pub mod subscriptions;
pub mod templates;
pub mod unsubscribe;
pub mod webhooks;

/// The notification service's tables.
pub async fn migrate(store: &agora_eventstore::Store) -> Result<(), agora_eventstore::StoreError> {
    store.execute_ddl(events::SCHEMA).await?;
    store.execute_ddl(unsubscribe::SCHEMA).await?;
    store.execute_ddl(digest::SCHEMA).await?;
    store.execute_ddl(overrides::SCHEMA).await?;
    store.execute_ddl(subscriptions::SCHEMA).await?;
    store.execute_ddl(receipts::SCHEMA).await?;
    store.execute_ddl(webhooks::SCHEMA).await?;
    webhooks::DELIVERIES.migrate(store).await?;
    outbox::MESSAGES.migrate(store).await
}
