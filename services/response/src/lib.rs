//! The response service: responses (høringssvar) to hearings.
//!
//! Issue #3, in progress. There is: the intake (submits accepted in group-committed batches
//! with receipts, gapless per-hearing numbers and idempotent retries, against the hearing
//! terms learnt from the hearing service's integration events); editing and withdrawing by
//! the author; moderation (approve, decline with a reason, redact) with a CPR-number check
//! that forces manual approval; the owner's public reply; reviewers' comments on drafts;
//! per-hearing settings; the read models with their visibility rules; the gRPC API and the
//! `response` target. Still to come: attachments (with clamd) and exports.

pub mod app;
pub mod domain;
pub mod files;
pub mod grpc;
pub mod hearings;
pub mod intake;
pub mod projections;
