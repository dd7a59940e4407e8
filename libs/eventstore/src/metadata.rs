//! The metadata carried by every event: who caused it, in answer to what, under which trace.

use std::collections::HashMap;

use uuid::Uuid;

/// Metadata keys as stored in the `metadata` column and mapped onto integration events.
pub mod keys {
    pub const ACTOR: &str = "actor";
    pub const CORRELATION_ID: &str = "correlation_id";
    pub const CAUSATION_ID: &str = "causation_id";
    pub const TRACE_ID: &str = "trace_id";
    pub const TRACEPARENT: &str = "traceparent";
    pub const COMMAND: &str = "command";
}

/// Metadata as cqrs-es carries it.
pub type Metadata = HashMap<String, String>;

/// The context a command runs in; every event it produces carries it.
#[derive(Debug, Clone, Default)]
pub struct EventContext {
    /// Pseudonymous id of the user (or `system:<component>` for timed transitions).
    pub actor: Option<String>,
    /// Ties together everything done for one user request.
    pub correlation_id: Option<Uuid>,
    /// The command or event that directly caused these events.
    pub causation_id: Option<Uuid>,
    /// Name of the command, for the audit trail.
    pub command: Option<String>,
}

impl EventContext {
    pub fn for_actor(actor: impl Into<String>) -> Self {
        Self { actor: Some(actor.into()), ..Self::default() }
    }

    pub fn with_command(mut self, command: &str) -> Self {
        self.command = Some(command.to_string());
        self
    }

    pub fn with_correlation(mut self, correlation_id: Uuid) -> Self {
        self.correlation_id = Some(correlation_id);
        self
    }

    /// The metadata map, with the current trace attached so that the relay can continue it.
    pub fn to_metadata(&self) -> Metadata {
        let mut metadata = Metadata::new();
        if let Some(actor) = &self.actor {
            metadata.insert(keys::ACTOR.into(), actor.clone());
        }
        let correlation = self.correlation_id.unwrap_or_else(Uuid::now_v7);
        metadata.insert(keys::CORRELATION_ID.into(), correlation.to_string());
        // A command with no explicit cause is caused by itself: its correlation id.
        let causation = self.causation_id.unwrap_or(correlation);
        metadata.insert(keys::CAUSATION_ID.into(), causation.to_string());
        if let Some(command) = &self.command {
            metadata.insert(keys::COMMAND.into(), command.clone());
        }
        if let Some(trace_id) = agora_telemetry::propagation::current_trace_id() {
            metadata.insert(keys::TRACE_ID.into(), trace_id);
        }
        if let Some(traceparent) = agora_telemetry::propagation::current_traceparent() {
            metadata.insert(keys::TRACEPARENT.into(), traceparent);
        }
        metadata
    }
}
