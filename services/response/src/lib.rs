//! The response service: responses (høringssvar) to hearings.
//!
//! The intake accepts submits in group-committed batches with receipts, gapless per-hearing
//! numbers and idempotent retries, against the hearing's terms and its type's rules learnt
//! from the hearing service's integration events. Attachments are checked by content and
//! scanned. Authors edit and withdraw; owners moderate (approve, decline, redact; a CPR-number
//! check forces manual approval), reply, set auto-approval and publicity, and export (Excel,
//! PDF, a zip of attachments). Reviewers comment on drafts. The read models apply the
//! visibility rules; the gRPC API and the `response` target wire it up.

pub mod app;
pub mod domain;
pub mod erasure;
pub mod exports;
pub mod files;
pub mod grpc;
pub mod hearings;
pub mod intake;
pub mod integration;
pub mod personal;
pub mod projections;
pub mod records;
pub mod retention;
