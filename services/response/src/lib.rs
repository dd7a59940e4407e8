//! The response service: responses (høringssvar) to hearings.
//!
//! So far the intake (issue #3, in progress): submits are accepted in group-committed
//! batches with receipts, gapless per-hearing numbers and idempotent retries, against the
//! hearing terms learnt from the hearing service's integration events. Moderation,
//! publication, attachments, exports and the gRPC API are still to come.

pub mod domain;
pub mod hearings;
pub mod intake;
