//! The per-stream hash chain that makes the audit log tamper-evident.
//!
//! Each event's hash covers the previous event's hash in its stream and the event's own
//! content exactly as stored. Fields are length-prefixed so that no two different events
//! can serialise to the same bytes.

use sha2::{Digest, Sha256};

/// The content of one event as it is hashed.
pub struct ChainLink<'a> {
    pub previous_hash: &'a str,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub recorded_at: &'a str,
    pub payload: &'a str,
    pub metadata: &'a str,
}

impl ChainLink<'_> {
    /// Hex SHA-256 of the link.
    pub fn hash(&self) -> String {
        let mut hasher = Sha256::new();
        let sequence = self.sequence.to_string();
        for field in [
            self.previous_hash,
            self.aggregate_type,
            self.aggregate_id,
            &sequence,
            self.event_id,
            self.event_type,
            self.event_version,
            self.recorded_at,
            self.payload,
            self.metadata,
        ] {
            hasher.update((field.len() as u64).to_le_bytes());
            hasher.update(field.as_bytes());
        }
        hex::encode(hasher.finalize())
    }
}

/// The previous hash of a stream's first event.
pub const GENESIS: &str = "";

#[cfg(test)]
mod tests {
    use super::*;

    fn link<'a>(payload: &'a str, previous_hash: &'a str) -> ChainLink<'a> {
        ChainLink {
            previous_hash,
            aggregate_type: "hearing",
            aggregate_id: "h1",
            sequence: 1,
            event_id: "e1",
            event_type: "HearingCreated",
            event_version: "1",
            recorded_at: "2026-11-22T10:00:00.000000Z",
            payload,
            metadata: "{}",
        }
    }

    #[test]
    fn any_change_of_content_or_predecessor_changes_the_hash() {
        let original = link(r#"{"title":"A"}"#, GENESIS).hash();
        assert_eq!(original, link(r#"{"title":"A"}"#, GENESIS).hash());
        assert_ne!(original, link(r#"{"title":"B"}"#, GENESIS).hash());
        assert_ne!(original, link(r#"{"title":"A"}"#, "00").hash());
    }

    #[test]
    fn field_boundaries_cannot_be_shifted() {
        let a = ChainLink { aggregate_type: "ab", aggregate_id: "c", ..link("{}", GENESIS) };
        let b = ChainLink { aggregate_type: "a", aggregate_id: "bc", ..link("{}", GENESIS) };
        assert_ne!(a.hash(), b.hash());
    }
}
