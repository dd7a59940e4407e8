//! Running a table's due steps: take one (record the intent with a lease), do it, record the
//! outcome; a step another worker took in between is left to it. What a step does is the
//! caller's ([`Perform`]); the bookkeeping around it is the same for every queue.

use std::time::Duration;

use agora_eventstore::{Store, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{RetryPolicy, Step, StepEvent, StepTable};

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; the reference the other side gave (a message id, a document number).
    Done(String),
    /// Not done and never will be, for a reason that is not a failure (the recipient is gone).
    Skipped(String),
    /// Failed; tried again later with backoff unless `permanent` (then parked at once).
    Failed { error: String, permanent: bool },
}

#[async_trait::async_trait]
pub trait Perform<A>: Send + Sync {
    async fn perform(&self, step: &Step<A>) -> Outcome;
}

pub type Clock = std::sync::Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Works through one table's due steps.
pub struct Runner<P> {
    pub table: StepTable,
    pub store: Store,
    pub retry: RetryPolicy,
    pub clock: Clock,
    /// Who the step events are recorded as (e.g. `service:notification`).
    pub actor: &'static str,
    pub performer: P,
}

impl<P> Runner<P> {
    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Runs what is due until `shutdown`: at once when something was appended to the store,
    /// else when the next retry is due or at the latest every `poll`.
    pub async fn run<A>(&self, poll: Duration, shutdown: impl std::future::Future<Output = ()>)
    where
        A: Serialize + DeserializeOwned + Clone + Send + Sync,
        P: Perform<A>,
    {
        tokio::pin!(shutdown);
        loop {
            let appended = self.store.appended().notified();
            if let Err(e) = self.run_due::<A>("1 = 1", &[]).await {
                tracing::error!(table = self.table.table, error = %e, "running due steps failed; tried again");
            }
            let mut wait = poll;
            if let Ok(Some(next)) = self.table.next_due(&self.store).await {
                let until = (next - self.now()).to_std().unwrap_or(Duration::ZERO);
                wait = wait.min(until.max(Duration::from_millis(50)));
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = appended => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Runs every step due now that meets `condition` (see [`StepTable::due_where`]); how many
    /// this worker handled.
    pub async fn run_due<A>(&self, condition: &str, binds: &[&str]) -> Result<usize, StoreError>
    where
        A: Serialize + DeserializeOwned + Clone + Send + Sync,
        P: Perform<A>,
    {
        let mut handled = 0;
        loop {
            let due: Vec<Step<A>> = self.table.due_where(&self.store, self.now(), 64, condition, binds).await?;
            let mut progressed = false;
            for step in due {
                if self.run_one(step).await? {
                    handled += 1;
                    progressed = true;
                }
            }
            if !progressed {
                return Ok(handled);
            }
        }
    }

    async fn run_one<A>(&self, step: Step<A>) -> Result<bool, StoreError>
    where
        A: Serialize + DeserializeOwned + Clone + Send + Sync,
        P: Perform<A>,
    {
        let Ok(started) = step.start(self.now(), &self.retry) else { return Ok(false) };
        let StepEvent::StepStarted { attempt, .. } = started else { return Ok(false) };
        let Some(running) = self.record(&step, started).await? else { return Ok(false) };
        let event = match self.performer.perform(&running).await {
            Outcome::Done(reference) => running.succeed(attempt, reference),
            Outcome::Skipped(reason) => running.skip(attempt, reason),
            Outcome::Failed { error, permanent } => {
                tracing::warn!(table = self.table.table, step = %running.key, attempt, %error, "a step failed");
                running.fail(attempt, error, permanent, self.now(), &self.retry)
            }
        };
        // A refusal means the lease ran out and another worker took the step over.
        if let Ok(event) = event {
            self.record(&running, event).await?;
        }
        Ok(true)
    }

    /// Records `event` on `step` in a transaction of its own; `None` when another worker
    /// changed the step first.
    async fn record<A>(&self, step: &Step<A>, event: StepEvent<A>) -> Result<Option<Step<A>>, StoreError>
    where
        A: Serialize + DeserializeOwned + Clone + Send + Sync,
    {
        let mut tx = self.store.begin().await?;
        match self.table.transition_in(&self.store, &mut tx, step, event, self.actor).await {
            Ok(next) => {
                tx.commit().await.map_err(StoreError::from)?;
                Ok(Some(next))
            }
            Err(StoreError::Conflict { .. } | StoreError::BrokenStream { .. }) => {
                let _ = tx.rollback().await;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}
