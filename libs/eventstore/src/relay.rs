//! The outbox relay: reads the events table in global order and publishes every event to
//! JetStream as an integration event, then records how far it got.

use std::sync::Arc;
use std::time::Duration;

use crate::Store;
use crate::db::{LogPosition, RecordedEvent, StoreError};
use crate::jetstream::{Bus, BusError, IntegrationEvent};

/// Maps stored domain events to the public integration events; `Ok(None)` keeps an event
/// internal. Called in log order, so a mapper may keep per-stream state between calls.
#[async_trait::async_trait]
pub trait IntegrationMapper: Send + Sync {
    async fn map(&self, event: &RecordedEvent) -> Result<Option<IntegrationEvent>, String>;

    /// The aggregate types whose events this mapper may publish, when it can say. The relay
    /// then reads the others' events without their payload (see [`Store::read_log_of`]):
    /// every response's receipt adds three queue events that nobody outside hears of.
    fn aggregates(&self) -> Option<Vec<&'static str>> {
        None
    }
}

/// Several mappers (one per service in the process) behind one.
pub struct Mappers(pub Vec<Arc<dyn IntegrationMapper>>);

#[async_trait::async_trait]
impl IntegrationMapper for Mappers {
    async fn map(&self, event: &RecordedEvent) -> Result<Option<IntegrationEvent>, String> {
        for mapper in &self.0 {
            if let Some(mapped) = mapper.map(event).await? {
                return Ok(Some(mapped));
            }
        }
        Ok(None)
    }

    /// Every mapper's, or none if one cannot say.
    fn aggregates(&self) -> Option<Vec<&'static str>> {
        let mut all = Vec::new();
        for mapper in &self.0 {
            all.extend(mapper.aggregates()?);
        }
        Some(all)
    }
}

pub struct Relay {
    store: Store,
    bus: Bus,
    mapper: Arc<dyn IntegrationMapper>,
    /// What the mapper publishes ([`IntegrationMapper::aggregates`]).
    published: Option<Vec<&'static str>>,
    batch: i64,
}

/// Relays of one stream serialise on a PostgreSQL advisory lock in this class (keyed by the
/// stream's name), so that one replica publishes at a time and the others stand by.
const RELAY_LOCK_CLASS: i32 = 0x4147_4f52;

/// How often a relay that is not publishing asks for the lead: how long the events wait when
/// the one that published dies.
const LEAD_POLL: Duration = Duration::from_millis(500);

impl Relay {
    pub fn new(store: Store, bus: Bus, mapper: Arc<dyn IntegrationMapper>) -> Self {
        let published = mapper.aggregates();
        Self { store, bus, mapper, published, batch: 5000 }
    }

    fn checkpoint_name(&self) -> String {
        format!("relay:{}", self.bus.config.stream)
    }

    /// Publishes one batch and returns how many events it read (0 when caught up).
    pub async fn publish_batch(&self) -> Result<usize, BusError> {
        let name = self.checkpoint_name();
        let after = self.store.checkpoint(&name).await?;
        let events = self.store.read_log_of(after, self.batch, self.published.as_deref()).await?;
        let Some(last) = events.last().map(|e| e.log) else { return Ok(0) };
        self.publish(&events).await?;
        self.store.save_checkpoint(&name, last).await?;
        agora_telemetry::metrics::global().relay_position(last.position);
        Ok(events.len())
    }

    /// Publishes everything committed before the call, waiting (up to ten seconds) for
    /// events still behind the reading horizon (see `Store::log_settled`).
    pub async fn publish_all(&self) -> Result<usize, BusError> {
        crate::db::drain_settled(&self.store, || async {
            let mut total = 0;
            loop {
                let n = self.publish_batch().await?;
                total += n;
                if n == 0 {
                    return Ok::<_, BusError>(total);
                }
            }
        })
        .await
    }

    /// Publishes events pipelined: all sends first, then all acknowledgements.
    async fn publish(&self, events: &[RecordedEvent]) -> Result<usize, BusError> {
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            let mapped = self
                .mapper
                .map(event)
                .await
                .map_err(|reason| BusError::Publish(format!("mapping event {}: {reason}", event.position())))?;
            let Some(integration) = mapped else { continue };
            let subject = self.bus.config.subject(&integration);
            let ack = self
                .bus
                .jetstream
                .publish_with_headers(subject, integration.to_headers(), integration.data.clone())
                .await
                .map_err(|e| BusError::Publish(e.to_string()))?;
            acks.push(ack);
        }
        let published = acks.len();
        for ack in acks {
            ack.await.map_err(|e| BusError::Publish(e.to_string()))?;
        }
        agora_telemetry::metrics::global().events_published(published as u64);
        Ok(published)
    }

    /// Re-sends history from the event at `from_position` on, without moving the relay's
    /// checkpoint; JetStream drops what it still holds (same `Nats-Msg-Id`) within its
    /// duplicate window, and consumers ignore what they handled.
    /// Positions are not in log order on PostgreSQL (see `LogPosition`), so the whole log is
    /// walked and every event at or after `from_position` is sent, in log order.
    pub async fn republish(&self, from_position: i64, progress: impl Fn(usize)) -> Result<usize, BusError> {
        let mut after = LogPosition::START;
        let mut total = 0;
        loop {
            let events = self.store.read_log_of(after, self.batch, self.published.as_deref()).await?;
            let Some(last) = events.last().map(|e| e.log) else { return Ok(total) };
            let wanted: Vec<RecordedEvent> = events.into_iter().filter(|e| e.position() >= from_position).collect();
            total += self.publish(&wanted).await?;
            progress(total);
            after = last;
        }
    }

    /// Runs until `shutdown` resolves: publishes whenever events are appended here, and
    /// polls for those appended by other processes. Errors (NATS or the database down) are
    /// logged and retried from the last recorded checkpoint, so nothing is lost.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let Some(mut leader) = self.queue_for_lead(&mut shutdown).await else { return };
        let mut backoff = Duration::from_millis(100);
        loop {
            // The lock lives as long as its session: if the connection broke, another
            // replica may lead now, so stop publishing and queue for the lead again.
            if let Some(conn) = leader.as_mut()
                && sqlx::query("SELECT 1").execute(&mut *conn).await.is_err()
            {
                tracing::warn!("relay lost its database session and with it the lead; queueing again");
                match self.queue_for_lead(&mut shutdown).await {
                    Some(lock) => leader = lock,
                    None => return,
                }
            }
            let waiter = self.store.appended().notified();
            match self.publish_batch().await {
                Ok(n) if n as i64 == self.batch => continue,
                Ok(published) => {
                    backoff = Duration::from_millis(100);
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = waiter => Store::gather_appends(published).await,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "relay could not publish; will resume from its checkpoint");
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Waits for the lead, retrying every two seconds; `None` when asked to stop first.
    async fn queue_for_lead<F: std::future::Future<Output = ()>>(
        &self,
        shutdown: &mut std::pin::Pin<&mut F>,
    ) -> Option<Option<sqlx::PgConnection>> {
        loop {
            tokio::select! {
                _ = shutdown.as_mut() => return None,
                lead = self.lead() => match lead {
                    Ok(lock) => return Some(lock),
                    Err(e) => tracing::warn!(error = %e, "relay cannot take the lead yet; retrying"),
                },
            }
            tokio::select! {
                _ = shutdown.as_mut() => return None,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    /// On PostgreSQL, waits to hold the relay lock on a connection of its own; the lock
    /// goes with the connection if this process dies.
    ///
    /// It asks for the lock every [`LEAD_POLL`] rather than waiting in `pg_advisory_lock`: a
    /// statement that waits holds its snapshot, and the snapshot of a replica that waits for
    /// the lead all its life would keep PostgreSQL from pruning any row that any service
    /// updated or deleted since (a surge's queues then scan ever more dead rows).
    async fn lead(&self) -> Result<Option<sqlx::PgConnection>, StoreError> {
        let crate::Backend::Postgres(pool) = self.store.backend() else { return Ok(None) };
        // Detached: dropping it closes the session, which releases the lock; back in the pool
        // it would keep the lock for whoever borrowed it next.
        let mut conn = pool.acquire().await?.detach();
        loop {
            let (taken,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1, hashtext($2))")
                .bind(RELAY_LOCK_CLASS)
                .bind(self.checkpoint_name())
                .fetch_one(&mut conn)
                .await?;
            if taken {
                break;
            }
            tokio::time::sleep(LEAD_POLL).await;
        }
        tracing::info!(stream = %self.bus.config.stream, "relay is publishing");
        Ok(Some(conn))
    }
}
