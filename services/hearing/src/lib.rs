//! The hearing service: hearings from creation to conclusion — lifecycle, fields per
//! hearing type, roles, visibility — and the read models and gRPC API around them.
//!
//! `domain` is pure (aggregates, commands, events, rules); `app` decides who may do what
//! and runs commands through the event store; `projections` and `queries` are the read
//! side; `scheduler` moves hearings along the clock; `grpc` is the adapter; `integration`
//! maps domain events to the public integration events.

pub mod app;
pub mod domain;
pub mod grpc;
pub mod integration;
pub mod projections;
pub mod queries;
pub mod scheduler;
