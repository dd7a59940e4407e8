//! The timed transitions: start date reached → Active, deadline passed → AwaitingConclusion.
//!
//! Durable because the due hearings are found from the read model (no timers in memory to
//! lose on a restart); idempotent because the aggregate decides nothing for a hearing that
//! already moved; safe with several replicas because optimistic concurrency lets only one
//! of two racing transitions commit, and the loser then finds nothing left to do.

use std::time::Duration;

use crate::app::{AppError, HearingApp};
use crate::queries;

/// Moves every due hearing along; returns how many changed state.
pub async fn tick(app: &HearingApp) -> Result<usize, AppError> {
    let now = app.now();
    let due = queries::due_for_transition(&app.store, now).await?;
    let mut moved = 0;
    for id in due {
        match app.advance_clock(&id, now).await {
            Ok(Some((before, after))) => {
                agora_telemetry::metrics::global().hearing_transitions(&format!("{before}->{after}"));
                tracing::info!(hearing = %id, from = %before, to = %after, "timed transition");
                moved += 1;
            }
            // Already moved (by another replica, or before a restart).
            Ok(None) => {}
            // Another replica got there first.
            Err(AppError::Conflict) => {}
            Err(e) => tracing::warn!(hearing = %id, error = %e, "timed transition failed; will retry"),
        }
    }
    Ok(moved)
}

/// Ticks every `interval` until `shutdown` resolves.
pub async fn run(app: HearingApp, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        if let Err(e) = tick(&app).await {
            tracing::warn!(error = %e, "scheduler tick failed; will retry");
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
