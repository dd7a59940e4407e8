//! Verification of the audit log: every stream's hash chain, walked from its first event.

use futures::TryStreamExt;
use sqlx::Row;

use crate::chain::{ChainLink, GENESIS};
use crate::{Store, StoreError, on_backend};

/// One event exactly as stored, the input to verification.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub position: i64,
    pub event_id: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
    pub recorded_at: String,
    pub hash: String,
}

impl StoredEvent {
    /// The event's hash as it should be, chained onto `previous_hash`.
    pub fn expected_hash(&self, previous_hash: &str) -> String {
        ChainLink {
            previous_hash,
            aggregate_type: &self.aggregate_type,
            aggregate_id: &self.aggregate_id,
            sequence: self.sequence,
            event_id: &self.event_id,
            event_type: &self.event_type,
            event_version: &self.event_version,
            recorded_at: &self.recorded_at,
            payload: &self.payload,
            metadata: &self.metadata,
        }
        .hash()
    }
}

/// What is wrong at one place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The event's hash does not cover its content and its predecessor's hash: it, or the
    /// event before it (re-hashed by whoever changed it), was altered or moved.
    Changed,
    /// Sequence numbers jump: events are missing.
    Missing { expected_sequence: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub stream: String,
    pub position: i64,
    pub sequence: i64,
    pub problem: Problem,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match &self.problem {
            Problem::Changed => "hash does not match: this event or the one before it was changed or moved".to_string(),
            Problem::Missing { expected_sequence } => format!("expected sequence {expected_sequence} (events removed)"),
        };
        write!(f, "stream {} at position {} (sequence {}): {}", self.stream, self.position, self.sequence, what)
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub streams: u64,
    pub events: u64,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn intact(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Walks events ordered by stream and sequence; pure, so it can be tested on its own.
#[derive(Default)]
pub struct Verifier {
    report: Report,
    current: Option<(String, String)>,
    expected_sequence: i64,
    previous_hash: String,
    stream_broken: bool,
}

impl Verifier {
    pub fn check(&mut self, event: &StoredEvent) {
        let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
        if self.current.as_ref() != Some(&key) {
            self.current = Some(key);
            self.report.streams += 1;
            self.expected_sequence = 1;
            self.previous_hash = GENESIS.to_string();
            self.stream_broken = false;
        }
        self.report.events += 1;
        let stream = format!("{}/{}", event.aggregate_type, event.aggregate_id);
        let finding =
            |problem| Finding { stream: stream.clone(), position: event.position, sequence: event.sequence, problem };
        // One finding per stream is enough to name where tampering starts.
        if !self.stream_broken {
            let recomputed = event.expected_hash(&self.previous_hash);
            let problem = if event.sequence != self.expected_sequence {
                Some(Problem::Missing { expected_sequence: self.expected_sequence })
            } else if recomputed != event.hash {
                Some(Problem::Changed)
            } else {
                None
            };
            if let Some(problem) = problem {
                self.report.findings.push(finding(problem));
                self.stream_broken = true;
            }
        }
        self.expected_sequence = event.sequence + 1;
        self.previous_hash = event.hash.clone();
    }

    pub fn finish(self) -> Report {
        self.report
    }
}

/// Verifies every stream in the store.
pub async fn verify(store: &Store) -> Result<Report, StoreError> {
    let mut verifier = Verifier::default();
    let sql = "SELECT position, event_id, aggregate_type, aggregate_id, sequence, event_type, event_version, \
               payload, metadata, recorded_at, hash FROM events ORDER BY aggregate_type, aggregate_id, sequence";
    on_backend!(store.backend(), pool => {
        let mut rows = sqlx::query(sql).fetch(pool);
        while let Some(row) = rows.try_next().await? {
            let event = StoredEvent {
                position: row.try_get("position")?,
                event_id: row.try_get("event_id")?,
                aggregate_type: row.try_get("aggregate_type")?,
                aggregate_id: row.try_get("aggregate_id")?,
                sequence: row.try_get("sequence")?,
                event_type: row.try_get("event_type")?,
                event_version: row.try_get("event_version")?,
                payload: row.try_get("payload")?,
                metadata: row.try_get("metadata")?,
                recorded_at: row.try_get("recorded_at")?,
                hash: row.try_get("hash")?,
            };
            verifier.check(&event);
        }
    });
    Ok(verifier.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<StoredEvent> {
        let mut previous = GENESIS.to_string();
        (1..=n)
            .map(|sequence| {
                let mut event = StoredEvent {
                    position: sequence * 10,
                    event_id: format!("e{sequence}"),
                    aggregate_type: "hearing".into(),
                    aggregate_id: "h1".into(),
                    sequence,
                    event_type: "Changed".into(),
                    event_version: "1".into(),
                    payload: format!(r#"{{"n":{sequence}}}"#),
                    metadata: "{}".into(),
                    recorded_at: "2026-11-22T10:00:00.000000Z".into(),
                    hash: String::new(),
                };
                event.hash = event.expected_hash(&previous);
                previous = event.hash.clone();
                event
            })
            .collect()
    }

    fn run(events: &[StoredEvent]) -> Report {
        let mut verifier = Verifier::default();
        events.iter().for_each(|e| verifier.check(e));
        verifier.finish()
    }

    #[test]
    fn an_untouched_chain_is_intact() {
        let report = run(&chain(5));
        assert!(report.intact(), "{:?}", report.findings);
        assert_eq!((report.streams, report.events), (1, 5));
    }

    #[test]
    fn a_changed_payload_is_named_by_stream_and_position() {
        let mut events = chain(5);
        events[2].payload = r#"{"n":99}"#.into();
        let report = run(&events);
        assert_eq!(
            report.findings,
            vec![Finding { stream: "hearing/h1".into(), position: 30, sequence: 3, problem: Problem::Changed }]
        );
    }

    #[test]
    fn a_removed_event_is_found() {
        let mut events = chain(5);
        events.remove(1);
        let report = run(&events);
        assert_eq!(report.findings.len(), 1);
        assert_eq!(report.findings[0].problem, Problem::Missing { expected_sequence: 2 });
        assert_eq!(report.findings[0].position, 30);
    }

    #[test]
    fn swapped_events_are_found() {
        let mut events = chain(4);
        // An attacker swaps the content of two events but keeps the sequence order.
        let (a, b) = (events[1].payload.clone(), events[2].payload.clone());
        events[1].payload = b;
        events[2].payload = a;
        let report = run(&events);
        assert_eq!(report.findings[0].sequence, 2);
    }

    #[test]
    fn a_rehashed_forgery_breaks_the_next_link() {
        let mut events = chain(3);
        events[0].payload = r#"{"n":42}"#.into();
        events[0].hash = events[0].expected_hash(GENESIS);
        let report = run(&events);
        assert_eq!(report.findings[0].sequence, 2, "{:?}", report.findings);
    }
}
