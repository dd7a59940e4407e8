//! The cqrs-es seam: [`EventRepository`] implements `PersistedEventRepository` on [`Store`].

use cqrs_es::Aggregate;
use cqrs_es::persist::{
    EventUpcaster, PersistedEventRepository, PersistedEventStore, PersistenceError, ReplayStream, SerializedEvent,
    SerializedSnapshot,
};
use serde_json::Value;

use crate::db::{NewEvent, NewSnapshot, RecordedEvent, Store, StoreError};

/// An aggregate's event store as cqrs-es sees it.
pub type AggregateStore<A> = PersistedEventStore<EventRepository, A>;

/// cqrs-es repository over the Agora [`Store`], on PostgreSQL or SQLite alike.
#[derive(Clone)]
pub struct EventRepository {
    store: Store,
    snapshot_every: Option<usize>,
}

impl EventRepository {
    pub fn new(store: Store) -> Self {
        Self { store, snapshot_every: None }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The aggregate store for `A`: snapshots every `snapshot_every` events when given
    /// (long streams load from the snapshot plus the events after it), old event versions
    /// upcast on load.
    ///
    /// With snapshots, decide on a copy of the loaded aggregate (as `HearingApp` does):
    /// cqrs-es builds the snapshot by applying the new events to the context's aggregate,
    /// so an aggregate already changed by `handle` would get them twice.
    pub fn aggregate_store<A: Aggregate>(
        store: Store,
        snapshot_every: Option<usize>,
        upcasters: Vec<Box<dyn EventUpcaster>>,
    ) -> AggregateStore<A> {
        let repo = Self { store, snapshot_every };
        let aggregate_store = match snapshot_every {
            Some(size) if size > 0 => PersistedEventStore::new_snapshot_store(repo, size),
            _ => PersistedEventStore::new_event_store(repo),
        };
        aggregate_store.with_upcasters(upcasters)
    }
}

/// How many of `count` new events after `current` cqrs-es folds into the snapshot it hands
/// the repository: the same rule as its snapshot store, which does not pass the number on.
fn events_in_snapshot(snapshot_every: Option<usize>, current: usize, count: usize) -> usize {
    match snapshot_every {
        Some(size) if size > 0 => {
            let next_at = size - (current % size);
            if count < next_at {
                0
            } else {
                let beyond = count - next_at;
                next_at + beyond - (beyond % size)
            }
        }
        _ => 0,
    }
}

fn to_persistence(error: StoreError) -> PersistenceError {
    match error {
        StoreError::Conflict { .. } | StoreError::BrokenStream { .. } => PersistenceError::OptimisticLockError,
        StoreError::Database(e) => PersistenceError::ConnectionError(Box::new(e)),
        StoreError::Corrupt { .. } | StoreError::CorruptField { .. } | StoreError::Serialize(_) => {
            PersistenceError::DeserializationError(Box::new(error))
        }
        other => PersistenceError::UnknownError(Box::new(other)),
    }
}

fn to_serialized(event: RecordedEvent) -> SerializedEvent {
    let payload = event.payload_value();
    let metadata = event.metadata_value();
    SerializedEvent {
        aggregate_id: event.aggregate_id,
        sequence: usize::try_from(event.sequence).unwrap_or_default(),
        aggregate_type: event.aggregate_type,
        event_type: event.event_type,
        event_version: event.event_version,
        payload,
        metadata,
    }
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.get_last_events::<A>(aggregate_id, 0).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let after = i64::try_from(last_sequence).unwrap_or(i64::MAX);
        let events = self.store.read_stream(A::TYPE, aggregate_id, after).await.map_err(to_persistence)?;
        Ok(events.into_iter().map(to_serialized).collect())
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        let snapshot = self.store.read_snapshot(A::TYPE, aggregate_id).await.map_err(to_persistence)?;
        Ok(snapshot.map(|(last_sequence, version, aggregate)| SerializedSnapshot {
            aggregate_id: aggregate_id.to_string(),
            aggregate,
            current_sequence: usize::try_from(last_sequence).unwrap_or_default(),
            current_snapshot: usize::try_from(version).unwrap_or_default(),
        }))
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let new_events = events
            .iter()
            .map(|e| {
                Ok(NewEvent {
                    aggregate_type: e.aggregate_type.clone(),
                    aggregate_id: e.aggregate_id.clone(),
                    sequence: i64::try_from(e.sequence).unwrap_or(i64::MAX),
                    event_type: e.event_type.clone(),
                    event_version: e.event_version.clone(),
                    payload: serde_json::value::to_raw_value(&e.payload)?,
                    metadata: e.metadata.clone(),
                })
            })
            .collect::<Result<Vec<NewEvent>, serde_json::Error>>()
            .map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
        let snapshot = match (snapshot_update, events.first()) {
            (Some((aggregate_id, payload, version)), Some(first)) => {
                let current = first.sequence.saturating_sub(1);
                let last = current + events_in_snapshot(self.snapshot_every, current, events.len());
                Some(NewSnapshot {
                    aggregate_type: A::TYPE.to_string(),
                    aggregate_id,
                    last_sequence: i64::try_from(last).unwrap_or(i64::MAX),
                    snapshot_version: i64::try_from(version).unwrap_or(i64::MAX),
                    payload,
                })
            }
            _ => None,
        };
        self.store.append(&new_events, snapshot).await.map_err(to_persistence)?;
        Ok(())
    }

    async fn stream_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<ReplayStream, PersistenceError> {
        let events = self.get_events::<A>(aggregate_id).await?;
        Ok(replay(events).await)
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        // Global order, filtered to the aggregate type; for whole-log work use Store::read_log.
        let mut all = Vec::new();
        let mut after = crate::LogPosition::START;
        loop {
            let batch = self.store.read_log(after, 1000).await.map_err(to_persistence)?;
            let Some(last) = batch.last() else { break };
            after = last.log;
            all.extend(batch.into_iter().filter(|e| e.aggregate_type == A::TYPE).map(to_serialized));
        }
        Ok(replay(all).await)
    }
}

async fn replay(events: Vec<SerializedEvent>) -> ReplayStream {
    let (mut feed, stream) = ReplayStream::new(events.len().max(1));
    for event in events {
        // The stream's buffer holds every event, so pushing cannot wait on a reader.
        if feed.push(Ok(event)).await.is_err() {
            break;
        }
    }
    stream
}

#[cfg(test)]
mod tests {
    use super::events_in_snapshot;

    #[test]
    fn snapshot_covers_the_same_events_as_cqrs_es_folds_in() {
        // (snapshot size, current sequence, new events, expected) mirrors cqrs-es's own table.
        for (size, current, count, expected) in
            [(5, 5, 3, 0), (4, 5, 3, 3), (4, 5, 4, 3), (4, 5, 8, 7), (10, 0, 1, 0), (1, 0, 1, 1)]
        {
            assert_eq!(
                events_in_snapshot(Some(size), current, count),
                expected,
                "size {size}, at {current}, {count} new"
            );
        }
        assert_eq!(events_in_snapshot(None, 5, 100), 0);
    }
}
