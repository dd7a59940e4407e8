//! Consumers of the local log: projections that keep read models, fed in global order with
//! the read-model change and the checkpoint committed in one transaction.
//!
//! The same [`IntegrationHandler`] that consumes JetStream in the distributed mode is fed
//! from the local store in the embedded mode by [`LocalIntegrationFeed`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::db::{DbTx, LogPosition, RESET_CHECKPOINT, RecordedEvent, SAVE_CHECKPOINT, StoreError, drain_settled};
use crate::jetstream::{BusError, IntegrationHandler, handle_once};
use crate::relay::IntegrationMapper;
use crate::{Store, on_tx};

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("projection {projection} failed on event at position {position}: {reason}")]
    Apply { projection: String, position: i64, reason: String },
}

impl From<sqlx::Error> for ProjectionError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(e))
    }
}

/// A read model kept from the log.
#[async_trait]
pub trait Projection: Send + Sync {
    /// Stable name: the checkpoint's key.
    fn name(&self) -> &str;
    /// Applies one event, writing only through `tx`.
    async fn apply(&self, tx: &mut DbTx, event: &RecordedEvent) -> Result<(), ProjectionError>;
    /// The aggregate types whose events it applies (`None`: every event). The others are
    /// passed over unread: most of the log is other services' events, and a response's
    /// payload is kilobytes.
    fn aggregates(&self) -> Option<&[&'static str]> {
        None
    }
    /// Applies a batch in log order; override to write each changed row once per batch.
    async fn apply_batch(&self, tx: &mut DbTx, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        for event in events {
            self.apply(tx, event).await?;
        }
        Ok(())
    }
    /// Empties the read model before a rebuild.
    async fn reset(&self, tx: &mut DbTx) -> Result<(), ProjectionError>;
}

/// Feeds projections from the store.
#[derive(Clone)]
pub struct ProjectionRunner {
    store: Store,
    projections: Vec<Arc<dyn Projection>>,
    batch: i64,
}

impl ProjectionRunner {
    pub fn new(store: Store, projections: Vec<Arc<dyn Projection>>) -> Self {
        Self { store, projections, batch: 1000 }
    }

    pub fn with_batch(mut self, batch: i64) -> Self {
        self.batch = batch;
        self
    }

    pub fn projections(&self) -> &[Arc<dyn Projection>] {
        &self.projections
    }

    fn checkpoint_name(projection: &dyn Projection) -> String {
        projection_checkpoint(projection.name())
    }

    /// Applies the next batch to one projection; returns the number of events it read
    /// (applied, or passed over as not the projection's).
    /// On PostgreSQL the checkpoint row is locked first, so replicas running the same
    /// projection take turns instead of applying a batch twice.
    pub async fn step(&self, projection: &dyn Projection) -> Result<usize, ProjectionError> {
        let name = Self::checkpoint_name(projection);
        let mut tx = self.store.begin().await?;
        let after = lock_checkpoint(&mut tx, &name).await?;
        let only = projection.aggregates();
        let events = Store::read_log_in(&mut tx, after, self.batch, only).await?;
        let Some(last) = events.last().map(|e| e.log) else {
            // Release the turn now rather than when the pool gets round to it.
            tx.rollback().await?;
            return Ok(0);
        };
        let read = events.len();
        // The checkpoint moves past the whole batch; only the wanted events (with their
        // payload) are applied.
        let wanted: Vec<RecordedEvent> = match only {
            None => events,
            Some(aggregates) => {
                events.into_iter().filter(|e| aggregates.contains(&e.aggregate_type.as_str())).collect()
            }
        };
        projection.apply_batch(&mut tx, &wanted).await?;
        save_checkpoint(&mut tx, &name, last).await?;
        tx.commit().await?;
        self.store.checkpoint_saved(&name, last);
        let metrics = agora_telemetry::metrics::global();
        metrics.events_handled(projection.name(), wanted.len() as u64);
        metrics.consumer_position(projection.name(), last.position);
        Ok(read)
    }

    /// Applies everything committed before the call to every projection. Waits (up to ten
    /// seconds) for events still behind the reading horizon because an older transaction
    /// was running, so that a caller can read its own writes afterwards.
    pub async fn catch_up(&self) -> Result<usize, ProjectionError> {
        drain_settled(&self.store, || async {
            let mut total = 0;
            for projection in &self.projections {
                loop {
                    let n = self.step(projection.as_ref()).await?;
                    total += n;
                    if n == 0 {
                        break;
                    }
                }
            }
            Ok::<_, ProjectionError>(total)
        })
        .await
    }

    /// Empties one projection and applies the whole log again, reporting (done, total).
    pub async fn rebuild(
        &self,
        projection: &dyn Projection,
        progress: impl Fn(u64, u64),
    ) -> Result<u64, ProjectionError> {
        let (total, _) = self.store.log_extent().await?;
        let name = Self::checkpoint_name(projection);
        let mut tx = self.store.begin().await?;
        lock_checkpoint(&mut tx, &name).await?;
        projection.reset(&mut tx).await?;
        on_tx!(&mut tx, conn => {
            sqlx::query(RESET_CHECKPOINT).bind(&name).bind(crate::db::format_time(chrono::Utc::now())).execute(&mut **conn).await?;
        });
        tx.commit().await?;
        self.store.checkpoint_saved(&name, LogPosition::START);
        // Larger batches: fewer commits while nothing else waits on this read model.
        let rebuilding = Self { batch: self.batch.max(10_000), ..self.clone() };
        let mut done = 0u64;
        loop {
            let n = rebuilding.step(projection).await?;
            if n == 0 {
                return Ok(done);
            }
            done += n as u64;
            progress(done, total.max(0) as u64);
        }
    }

    /// Runs until `shutdown` resolves, woken by appends in this process and polling for
    /// those of other processes; failures are logged and retried.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let waiter = self.store.appended().notified();
            let mut busy = false;
            let mut read = 0;
            for projection in &self.projections {
                match self.step(projection.as_ref()).await {
                    Ok(n) => {
                        busy |= n as i64 == self.batch;
                        read = read.max(n);
                    }
                    Err(e) => {
                        tracing::error!(projection = projection.name(), error = %e, "projection failed; retrying")
                    }
                }
            }
            if busy {
                continue;
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = waiter => Store::gather_appends(read).await,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

fn projection_checkpoint(projection: &str) -> String {
    format!("projection:{projection}")
}

/// Where the stream's events end in the log: the greatest (transaction, position) of any of
/// them. Its last event by sequence is not enough: on PostgreSQL a later event can come from a
/// transaction that began earlier, so it sits earlier in the log. A checkpoint moves only past
/// events it applied or passed over, so a checkpoint at or past this point means the read
/// model shows the stream as it is now.
const STREAM_LOG_END: &str = "SELECT tx_id, position FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
    ORDER BY tx_id DESC, position DESC LIMIT 1";

/// How soon a waiting command looks at the stored checkpoint again (another replica may be
/// the one applying the events, whose steps do not wake this process), doubling up to the
/// second figure.
const READ_MODEL_POLL: (Duration, Duration) = (Duration::from_millis(10), Duration::from_millis(160));

/// The longest one look at the database may take past the wait's bound.
const READ_MODEL_CHECK: Duration = Duration::from_secs(1);

impl Store {
    /// Waits until the read model of `projection` shows the stream's events, so that the page
    /// or list a person reads right after a command shows what the command did (the
    /// caseworker's approval, the citizen's withdrawal), however far the read model lags in a
    /// surge. Waits at most as long as [`Store::waiting_for_read_models`] says, and not at
    /// all without it. Returns whether the read model shows the stream; a command has already
    /// succeeded when it asks, so a read model still behind, or a failed check, is only
    /// logged, not an error for its caller.
    ///
    /// The stream's end in the log is read once. A step of the projection in this process
    /// wakes only the commands waiting on its read model, and only one whose stream it passed
    /// looks at the stored checkpoint to confirm; otherwise it is looked at now and then, for
    /// a replica's steps.
    pub async fn await_read_model(&self, projection: &str, aggregate_type: &str, aggregate_id: &str) -> bool {
        let Some(within) = self.read_model_wait() else {
            return true;
        };
        let checkpoint = projection_checkpoint(projection);
        let started = tokio::time::Instant::now();
        let deadline = started + within;
        // The looks are given their time even at the deadline (a bound of zero looks once),
        // but not a busy pool's whole acquire timeout.
        let last_look_until = deadline.max(started + READ_MODEL_CHECK);
        let behind = || {
            tracing::warn!(
                projection,
                aggregate_type,
                aggregate_id,
                waited_ms = started.elapsed().as_millis() as u64,
                "the read model is behind: a command is answered before it shows there"
            );
            false
        };
        let cannot_tell = |e: StoreError| {
            tracing::warn!(projection, error = %e, "cannot tell whether the read model shows a command yet");
            false
        };
        // Watched before anything is read, so that a step during the first looks still counts.
        let mut saved_here = self.watch_checkpoint(&checkpoint);
        let end =
            match tokio::time::timeout_at(last_look_until, self.stream_log_end(aggregate_type, aggregate_id)).await {
                Ok(Ok(Some(end))) => end,
                Ok(Ok(None)) => return true,
                Ok(Err(e)) => return cannot_tell(e),
                Err(_) => return behind(),
            };
        let mut poll = READ_MODEL_POLL.0;
        // The stored checkpoint is looked at first: a projection with nothing left to apply
        // does not step, so nothing in this process would say it has passed the stream.
        let mut next_look = tokio::time::Instant::now();
        let mut watching = true;
        loop {
            let now = tokio::time::Instant::now();
            // This process's runner having passed the stream is a reason to look, not the
            // answer: a rebuild, here or in another process, may have set the stored
            // checkpoint back since.
            let passed_here = *saved_here.borrow_and_update() >= end;
            if passed_here || now >= next_look || now >= deadline {
                match tokio::time::timeout_at(last_look_until, self.checkpoint(&checkpoint)).await {
                    Ok(Ok(at)) if at >= end => return true,
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return cannot_tell(e),
                    Err(_) => return behind(),
                }
                next_look = tokio::time::Instant::now() + poll;
                poll = (poll * 2).min(READ_MODEL_POLL.1);
            }
            if tokio::time::Instant::now() >= deadline {
                return behind();
            }
            tokio::select! {
                changed = saved_here.changed(), if watching => watching = changed.is_ok(),
                _ = tokio::time::sleep_until(next_look.min(deadline)) => {}
            }
        }
    }

    async fn stream_log_end(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<LogPosition>, StoreError> {
        let end: Option<(i64, i64)> = crate::on_reader!(self.backend(), pool => {
            sqlx::query_as(STREAM_LOG_END).bind(aggregate_type).bind(aggregate_id).fetch_optional(pool).await?
        });
        Ok(end.map(|(transaction, position)| LogPosition { transaction, position }))
    }
}

/// Takes the projection's turn and reads its checkpoint. The lock is an advisory one:
/// locking a row would give the transaction an id, and an open transaction id holds back
/// the reading horizon of every log reader (see `Store::read_log`).
async fn lock_checkpoint(tx: &mut DbTx, name: &str) -> Result<LogPosition, StoreError> {
    if let DbTx::Postgres(conn) = tx {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(PROJECTION_LOCK_CLASS)
            .bind(name)
            .execute(&mut **conn)
            .await?;
    }
    let row: Option<(i64, i64)> = on_tx!(tx, conn => {
        sqlx::query_as("SELECT tx_id, position FROM checkpoints WHERE name = $1").bind(name).fetch_optional(&mut **conn).await?
    });
    Ok(row.map(|(transaction, position)| LogPosition { transaction, position }).unwrap_or_default())
}

const PROJECTION_LOCK_CLASS: i32 = 0x4147_5052;

async fn save_checkpoint(tx: &mut DbTx, name: &str, at: LogPosition) -> Result<(), StoreError> {
    on_tx!(tx, conn => {
        sqlx::query(SAVE_CHECKPOINT)
            .bind(name)
            .bind(at.transaction)
            .bind(at.position)
            .bind(crate::db::format_time(chrono::Utc::now()))
            .execute(&mut **conn)
            .await?;
    });
    Ok(())
}

/// The embedded mode's stand-in for JetStream: maps the local log to integration events
/// and hands them to a handler, with the same exactly-once rule.
pub struct LocalIntegrationFeed {
    pub store: Store,
    pub mapper: Arc<dyn IntegrationMapper>,
    pub handler: Arc<dyn IntegrationHandler>,
}

impl LocalIntegrationFeed {
    /// Hands over everything committed so far; returns the number of new events handled.
    /// Hands over everything committed before the call (see [`drain_settled`]).
    pub async fn catch_up(&self) -> Result<usize, BusError> {
        drain_settled(&self.store, || self.handle_available()).await
    }

    async fn handle_available(&self) -> Result<usize, BusError> {
        let name = format!("feed:{}", self.handler.name());
        let mut after = self.store.checkpoint(&name).await?;
        let mut handled = 0;
        loop {
            let events = self.store.read_log(after, 1000).await?;
            let Some(last) = events.last().map(|e| e.log) else { return Ok(handled) };
            for event in &events {
                let mapped = self.mapper.map(event).await.map_err(|reason| BusError::Handler {
                    consumer: self.handler.name().to_string(),
                    event_id: event.event_id,
                    reason,
                })?;
                let Some(integration) = mapped else { continue };
                if !subject_matches(self.handler.filter(), &integration.nats_subject) {
                    continue;
                }
                if handle_once(&self.store, self.handler.as_ref(), &integration).await? {
                    handled += 1;
                }
            }
            self.store.save_checkpoint(&name, last).await?;
            after = last;
        }
    }

    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let waiter = self.store.appended().notified();
            let read = match self.catch_up().await {
                Ok(handled) => handled,
                Err(e) => {
                    tracing::error!(handler = self.handler.name(), error = %e, "local feed failed; retrying");
                    0
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = waiter => Store::gather_appends(read).await,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

/// NATS subject matching: `*` matches one token, a final `>` one or more.
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in filter.split('.') {
        match (token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (t, Some(s)) if t == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn filters_match_like_nats() {
        assert!(subject_matches("hearing.>", "hearing.v1.published.h1"));
        assert!(!subject_matches("hearing.>", "hearings.v1.published.h1"));
        assert!(!subject_matches("hearing.>", "hearing"));
        assert!(subject_matches("hearing.v1.*.h1", "hearing.v1.closed.h1"));
        assert!(!subject_matches("hearing.v1.*", "hearing.v1.closed.h1"));
        assert!(subject_matches("hearing.v1.closed.h1", "hearing.v1.closed.h1"));
    }
}
