//! Agora's event store: the immutable log every hearing state change is written to.
//!
//! One repository serves cqrs-es aggregates on PostgreSQL (production) and SQLite (the
//! embedded default) with the same behaviour: per-stream optimistic concurrency, a global
//! log order that readers can follow without ever skipping an event, metadata on every
//! event, a per-stream hash chain that makes tampering detectable, upcasting and
//! snapshots. The events table is also the outbox: [`relay`] publishes it to NATS
//! JetStream, and [`consumer`] feeds read models from the local log or from JetStream
//! with exactly-once effect.

pub mod audit;
pub mod chain;
pub mod consumer;
mod db;
pub mod jetstream;
pub mod metadata;
pub mod relay;
mod repository;
pub mod testing;

pub use db::{
    Backend, DbTx, LogPosition, NewEvent, NewSnapshot, RecordedEvent, STREAMS_AT_ONCE, Store, StoreError, placeholders,
    redact,
};
pub use metadata::{EventContext, Metadata};
pub use repository::{AggregateStore, EventRepository};

/// Runs `$body` with `$pool` bound to the backend's concrete pool, so that one query text
/// (with `$1`-style placeholders, which SQLite accepts too) serves both databases.
#[macro_export]
macro_rules! on_backend {
    ($backend:expr, $pool:ident => $body:expr) => {
        match $backend {
            $crate::Backend::Postgres($pool) => $body,
            $crate::Backend::Sqlite { writer: $pool, .. } => $body,
        }
    };
}

/// Like [`on_backend!`], for reads of committed data: on SQLite the reader pool, so that a read
/// never waits for the one writer connection (nor for a transaction its own caller holds).
#[macro_export]
macro_rules! on_reader {
    ($backend:expr, $pool:ident => $body:expr) => {
        match $backend {
            $crate::Backend::Postgres($pool) => $body,
            $crate::Backend::Sqlite { reader: $pool, .. } => $body,
        }
    };
}

/// Like [`on_backend!`] for an open transaction.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            $crate::DbTx::Postgres($conn) => $body,
            $crate::DbTx::Sqlite($conn) => $body,
        }
    };
}
