//! The response service: responses (høringssvar) to hearings.
//!
//! Issue #3, in progress. There is: the intake (submits accepted in group-committed batches
//! with receipts, gapless per-hearing numbers and idempotent retries, against the hearing
//! terms learnt from the hearing service's integration events); editing and withdrawing by
//! the author; moderation (approve, decline with a reason, redact) with a CPR-number check
//! that forces manual approval; per-hearing settings; and the read models with their
//! visibility rules. Still to come: attachments (with clamd), exports, reviewers' comments
//! and replies, the gRPC API and the `response` target.

pub mod app;
pub mod domain;
pub mod grpc;
pub mod hearings;
pub mod intake;
pub mod projections;
