//! Side effects done exactly once: a call to a records system, an e-mail. Each is a *step*
//! whose intent and outcome are events, with a lease, retries with backoff and parking
//! (`step`, pure), kept in a table of the service's own that is also its work queue (`table`).
//! The records and notification services build on it.

pub mod runner;
pub mod step;
pub mod table;

pub use runner::{Outcome, Perform, Runner, recorded_with_retries};
pub use step::{RetryPolicy, RetrySettings, Step, StepEvent, StepRefused, StepState};
pub use table::{StepTable, new_event};
