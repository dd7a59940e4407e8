//! The records (ESDH) service: journalizes every hearing in the municipality's case and
//! document management system.
//!
//! It follows the hearing service's integration events: a hearing that leaves Created gets a
//! case (its template chosen by KLE number, its owner as handler); a published hearing has its
//! text and documents filed; a concluded one its responses (with attachments) and conclusion,
//! and then its case is closed. Each of these is a step with its own events (planned, started,
//! succeeded or failed), so a crash between calling the records system and recording the
//! outcome repeats the call, which the adapters make harmless. Failures are retried with
//! exponential backoff and parked after a configured number of tries, visible to the owner and
//! administrators over gRPC, who can retry them. A hearing counts as journalized only when
//! every document is filed and the case closed.
//!
//! `domain` is pure; `store` keeps the step and journal tables with the events; `worker` runs
//! the steps; `esdh` is the seam to records systems, with `archive` (folders on disk) and
//! `sbsys` (SBSIP REST) behind it; `sources` reads what to file from the other services.

pub mod app;
pub mod archive;
pub mod config;
pub mod domain;
pub mod esdh;
pub mod grpc;
pub mod integration;
pub mod render;
pub mod sbsys;
pub mod sources;
pub mod store;
pub mod worker;
