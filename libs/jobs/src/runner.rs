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

/// What a queue's steps do.
#[async_trait::async_trait]
pub trait Perform<A>: Send + Sync {
    /// What the steps of one batch share, looked up once for all of them before the first is
    /// performed (the people a batch of messages goes to: one call instead of one a step).
    type Batch: Send + Sync;

    /// Looks up what `steps` (a batch just started, in the order they will be performed) need;
    /// its time counts against their lease.
    async fn prepare(&self, steps: &[Step<A>]) -> Self::Batch;

    /// Does one step, with what its batch's [`Perform::prepare`] looked up.
    async fn perform(&self, step: &Step<A>, batch: &Self::Batch) -> Outcome;
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
            let handled = match self.run_due::<A>("1 = 1", &[]).await {
                Ok(handled) => handled,
                Err(e) => {
                    tracing::error!(table = self.table.table, error = %e, "running due steps failed; tried again");
                    0
                }
            };
            let mut wait = poll;
            if let Ok(Some(next)) = self.table.next_due(&self.store).await {
                let until = (next - self.now()).to_std().unwrap_or(Duration::ZERO);
                wait = wait.min(until.max(Duration::from_millis(50)));
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = appended => Store::gather_appends(handled).await,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Runs every step due now that meets `condition` (see [`StepTable::due_where`]); how many
    /// this worker handled.
    ///
    /// Steps are taken in batches: a batch is started in one transaction (one commit and one
    /// multi-row append for many steps, which lets the queue keep up with a surge of
    /// receipts), then what its steps need is looked up at once ([`Perform::prepare`]), and they
    /// are performed one after another, in their order.
    pub async fn run_due<A>(&self, condition: &str, binds: &[&str]) -> Result<usize, StoreError>
    where
        A: Serialize + DeserializeOwned + Clone + Send + Sync,
        P: Perform<A>,
    {
        let mut handled = 0;
        loop {
            let due: Vec<Step<A>> = self.table.due_where(&self.store, self.now(), BATCH, condition, binds).await?;
            let started = self.start_all(due).await?;
            if started.is_empty() {
                return Ok(handled);
            }
            handled += started.len();
            self.perform_all(started).await?;
        }
    }

    /// Starts what is still due of `due`; the steps this worker took (their `attempts` is the
    /// attempt now running).
    async fn start_all<A>(&self, due: Vec<Step<A>>) -> Result<Vec<Step<A>>, StoreError>
    where
        A: Serialize + DeserializeOwned + Clone + Send + Sync,
    {
        let now = self.now();
        let transitions: Vec<(Step<A>, StepEvent<A>)> = due
            .into_iter()
            .filter_map(|step| {
                let started = step.start(now, &self.retry).ok()?;
                Some((step, started))
            })
            .collect();
        if transitions.is_empty() {
            return Ok(Vec::new());
        }
        self.table.transition_all(&self.store, transitions, self.actor).await
    }

    /// Performs started steps in order, recording outcomes as soon as they are known: while
    /// one transaction records what is known, the next steps are performed, and the outcomes
    /// that came meanwhile go into the transaction after it. A worker that dies in a batch then
    /// repeats only the steps done since the last outcomes were recorded (an e-mail sent twice
    /// is what a recipient notices), not every step it had done since the batch began; and a
    /// surge of quick steps costs a commit per handful of them instead of one each.
    /// A step whose lease is mostly gone by its turn (the ones before it were slow) is not
    /// performed: it is left running, and started again once its lease is over.
    async fn perform_all<A>(&self, started: Vec<Step<A>>) -> Result<(), StoreError>
    where
        A: Serialize + DeserializeOwned + Clone + Send + Sync,
        P: Perform<A>,
    {
        let (outcomes, mut known) = tokio::sync::mpsc::unbounded_channel();
        let perform = async move {
            let taken_at = std::time::Instant::now();
            let batch = self.performer.prepare(&started).await;
            for running in started {
                // The recorder stopped: its transaction failed, so no more is done now.
                if outcomes.is_closed() {
                    return;
                }
                let attempt = running.attempts;
                if taken_at.elapsed() > self.retry.lease.mul_f32(0.8) {
                    tracing::warn!(table = self.table.table, step = %running.key, "left for after its lease: the steps before it took too long");
                    continue;
                }
                let event = match self.performer.perform(&running, &batch).await {
                    Outcome::Done(reference) => running.succeed(attempt, reference),
                    Outcome::Skipped(reason) => running.skip(attempt, reason),
                    Outcome::Failed { error, permanent } => {
                        tracing::warn!(table = self.table.table, step = %running.key, attempt, %error, "a step failed");
                        running.fail(attempt, error, permanent, self.now(), &self.retry)
                    }
                };
                // A refusal means the lease ran out and another worker took the step over.
                if let Ok(event) = event {
                    let _ = outcomes.send((running, event));
                }
            }
        };
        let record = async move {
            while let Some(first) = known.recv().await {
                let mut transitions = vec![first];
                while let Ok(more) = known.try_recv() {
                    transitions.push(more);
                }
                let recorded =
                    recorded_with_retries(|| self.table.transition_all(&self.store, transitions.clone(), self.actor))
                        .await;
                if let Err(e) = recorded {
                    let steps: Vec<&str> = transitions.iter().map(|(step, _)| step.key.as_str()).collect();
                    tracing::error!(table = self.table.table, error = %e, ?steps,
                        "the outcomes of done steps could not be recorded; they will be done again after their lease");
                    return Err(e);
                }
            }
            Ok(())
        };
        let ((), recorded) = tokio::join!(perform, record);
        recorded
    }
}

/// Runs `record` (a transaction that records the outcomes of done steps) up to three times,
/// waiting a little longer after each failure. An outcome not recorded means doing its step
/// again after the lease (an e-mail sent twice, a document filed again), and a connection that
/// broke since it was last used (the database restarted) fails its next statement once, so a
/// failure is worth another try before giving up.
pub async fn recorded_with_retries<T, E, F, Fut>(record: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut tries: u64 = 0;
    loop {
        match record().await {
            Ok(recorded) => return Ok(recorded),
            Err(e) if tries < 2 => {
                tries += 1;
                tracing::warn!(error = %e, "recording the outcomes of done steps failed; tried again");
                tokio::time::sleep(Duration::from_millis(200 * tries)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Steps taken at once: enough that a surge's receipts are started with one commit per this
/// many, few enough that a slow outside system does not hold a batch past its lease.
const BATCH: i64 = 32;
