//! A step: a side effect (a call to a records system, an e-mail) that must happen once.
//!
//! Every step is its own event stream: planned, started (the intent, before the outside
//! system is called, with a lease), succeeded, failed (retried after a doubling delay, or
//! parked after the last attempt), skipped (nothing left to do), deferred (waiting for steps
//! planned after it). A step started and never finished (its worker died in the call) may be
//! started again once its lease runs out; the caller makes the repeat harmless (the records
//! adapters find what the first attempt made; an e-mail repeats its Message-ID).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    Done,
    Retrying,
    Parked,
}

impl StepState {
    pub const fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Retrying => "retrying",
            StepState::Parked => "parked",
        }
    }
}

/// A step's events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", bound(serialize = "A: Serialize", deserialize = "A: DeserializeOwned"))]
pub enum StepEvent<A> {
    StepPlanned {
        group: String,
        key: String,
        position: i64,
        action: A,
    },
    /// The intent: the records system is about to be called. Until `lease_until` no other
    /// worker starts the step.
    StepStarted {
        attempt: u32,
        lease_until: DateTime<Utc>,
    },
    /// The outcome: what the records system made (a case id, a document id).
    StepSucceeded {
        attempt: u32,
        reference: String,
    },
    /// A failure: tried again at `retry_at`, or parked when that is none.
    StepFailed {
        attempt: u32,
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
    RetryRequested {
        by: String,
    },
    /// What the step would file is gone from Agora (a document removed, an erased
    /// respondent's file): nothing is filed, and the step is finished.
    StepSkipped {
        attempt: u32,
        reason: String,
    },
    /// The step must wait for steps planned after it (closing the case, for responses
    /// approved after the conclusion); it is pending again, its attempts untouched.
    StepDeferred {
        attempt: u32,
        reason: String,
    },
}

impl<A> StepEvent<A> {
    pub fn name(&self) -> &'static str {
        match self {
            StepEvent::StepPlanned { .. } => "StepPlanned",
            StepEvent::StepStarted { .. } => "StepStarted",
            StepEvent::StepSucceeded { .. } => "StepSucceeded",
            StepEvent::StepFailed { .. } => "StepFailed",
            StepEvent::RetryRequested { .. } => "RetryRequested",
            StepEvent::StepSkipped { .. } => "StepSkipped",
            StepEvent::StepDeferred { .. } => "StepDeferred",
        }
    }
}

/// How often and how soon a failed step is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before the step is parked.
    pub max_attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// How long a started step is left to its worker before another may start it again.
    pub lease: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            first_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(3600),
            lease: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait after the `attempt`th failure: doubling from the first delay, at most the
    /// longest.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// How a service's retries are configured, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySettings {
    pub max_attempts: u32,
    pub first_retry_seconds: u64,
    pub max_retry_seconds: u64,
    /// How long a started step is left to its worker before another may start it again.
    pub lease_seconds: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        let policy = RetryPolicy::default();
        Self {
            max_attempts: policy.max_attempts,
            first_retry_seconds: policy.first_delay.as_secs(),
            max_retry_seconds: policy.max_delay.as_secs(),
            lease_seconds: policy.lease.as_secs(),
        }
    }
}

impl RetrySettings {
    /// The policy, or what is wrong with the settings.
    pub fn policy(&self) -> Result<RetryPolicy, String> {
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if self.first_retry_seconds == 0 || self.max_retry_seconds < self.first_retry_seconds {
            return Err("first_retry_seconds must be at least 1 and max_retry_seconds at least as long".into());
        }
        if self.lease_seconds == 0 {
            return Err("lease_seconds must be at least 1".into());
        }
        Ok(RetryPolicy {
            max_attempts: self.max_attempts,
            first_delay: Duration::from_secs(self.first_retry_seconds),
            max_delay: Duration::from_secs(self.max_retry_seconds),
            lease: Duration::from_secs(self.lease_seconds),
        })
    }
}

/// Why a step cannot do what was asked of it now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepRefused {
    #[error("the step is {0} and cannot start now")]
    NotDue(&'static str),
    #[error("attempt {0} is not the step's current attempt")]
    StaleAttempt(u32),
    #[error("only a parked step can be retried (this one is {0})")]
    NotParked(&'static str),
}

/// A step, folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(serialize = "A: Serialize", deserialize = "A: DeserializeOwned"))]
pub struct Step<A> {
    /// What the step belongs to (a hearing, a recipient): steps of one group are listed together.
    pub group: String,
    pub key: String,
    pub position: i64,
    pub action: A,
    pub state: StepState,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When a retrying step is due, or a running step's lease ends.
    pub due_at: Option<DateTime<Utc>>,
    pub reference: Option<String>,
    /// Why a finished step filed nothing.
    #[serde(default)]
    pub skipped: Option<String>,
    /// The stream's last sequence.
    pub sequence: i64,
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl<A: Clone> Step<A> {
    /// The step from its first event.
    pub fn planned(group: &str, key: &str, position: i64, action: A) -> Self {
        Self {
            group: group.into(),
            key: key.into(),
            position,
            action,
            state: StepState::Pending,
            attempts: 0,
            last_error: None,
            due_at: None,
            reference: None,
            skipped: None,
            sequence: 1,
        }
    }

    pub fn apply(&mut self, event: &StepEvent<A>) {
        self.sequence += 1;
        match event {
            StepEvent::StepPlanned { group, key, position, action } => {
                *self = Step::planned(group, key, *position, action.clone());
            }
            StepEvent::StepStarted { attempt, lease_until } => {
                self.state = StepState::Running;
                self.attempts = *attempt;
                self.due_at = Some(*lease_until);
            }
            StepEvent::StepSucceeded { reference, .. } => {
                self.state = StepState::Done;
                self.reference = Some(reference.clone());
                self.last_error = None;
                self.due_at = None;
            }
            StepEvent::StepFailed { error, retry_at, .. } => {
                self.last_error = Some(error.clone());
                self.due_at = *retry_at;
                self.state = if retry_at.is_some() { StepState::Retrying } else { StepState::Parked };
            }
            StepEvent::RetryRequested { .. } => {
                self.state = StepState::Pending;
                self.attempts = 0;
                self.due_at = None;
            }
            StepEvent::StepSkipped { reason, .. } => {
                self.state = StepState::Done;
                self.skipped = Some(reason.clone());
                self.last_error = None;
                self.due_at = None;
            }
            StepEvent::StepDeferred { attempt, .. } => {
                self.state = StepState::Pending;
                self.attempts = attempt.saturating_sub(1);
                self.due_at = None;
            }
        }
    }

    /// Whether the step is due at `now` (its turn may still wait for other steps).
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        match self.state {
            StepState::Pending => true,
            StepState::Running | StepState::Retrying => self.due_at.is_none_or(|at| at <= now),
            StepState::Done | StepState::Parked => false,
        }
    }

    /// The intent to run the step now.
    pub fn start(&self, now: DateTime<Utc>, policy: &RetryPolicy) -> Result<StepEvent<A>, StepRefused> {
        if !self.is_due(now) {
            return Err(StepRefused::NotDue(self.state.as_str()));
        }
        Ok(StepEvent::StepStarted { attempt: self.attempts + 1, lease_until: now + chrono_duration(policy.lease) })
    }

    pub fn succeed(&self, attempt: u32, reference: String) -> Result<StepEvent<A>, StepRefused> {
        self.current(attempt)?;
        Ok(StepEvent::StepSucceeded { attempt, reference })
    }

    /// A failure of `attempt`: retried later, or parked when it was the last allowed attempt
    /// or the records system refused the request itself (`final_error`).
    pub fn fail(
        &self,
        attempt: u32,
        error: String,
        final_error: bool,
        now: DateTime<Utc>,
        policy: &RetryPolicy,
    ) -> Result<StepEvent<A>, StepRefused> {
        self.current(attempt)?;
        let retry_at = if final_error || attempt >= policy.max_attempts {
            None
        } else {
            Some(now + chrono_duration(policy.delay_after(attempt)))
        };
        Ok(StepEvent::StepFailed { attempt, error, retry_at })
    }

    pub fn skip(&self, attempt: u32, reason: String) -> Result<StepEvent<A>, StepRefused> {
        self.current(attempt)?;
        Ok(StepEvent::StepSkipped { attempt, reason })
    }

    pub fn defer(&self, attempt: u32, reason: String) -> Result<StepEvent<A>, StepRefused> {
        self.current(attempt)?;
        Ok(StepEvent::StepDeferred { attempt, reason })
    }

    pub fn retry(&self, by: &str) -> Result<StepEvent<A>, StepRefused> {
        if self.state != StepState::Parked {
            return Err(StepRefused::NotParked(self.state.as_str()));
        }
        Ok(StepEvent::RetryRequested { by: by.into() })
    }

    fn current(&self, attempt: u32) -> Result<(), StepRefused> {
        if self.state == StepState::Running && self.attempts == attempt {
            Ok(())
        } else {
            Err(StepRefused::StaleAttempt(attempt))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step() -> Step<String> {
        Step::planned("h1", "conclusion", 3, "file the conclusion".to_string())
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("time")
    }

    #[test]
    fn a_failing_step_backs_off_doubling_and_is_parked_after_the_last_attempt() {
        let policy = RetryPolicy { max_attempts: 3, ..Default::default() };
        let mut now = now();
        let mut step = step();
        let mut waits = Vec::new();
        for attempt in 1..=3 {
            if let Some(due) = step.due_at {
                now = due;
            }
            let started = step.start(now, &policy).expect("due");
            assert_eq!(started, StepEvent::StepStarted { attempt, lease_until: now + chrono::Duration::seconds(300) });
            step.apply(&started);
            let failed = step.fail(attempt, "HTTP 503".into(), false, now, &policy).expect("current");
            if let StepEvent::StepFailed { retry_at: Some(at), .. } = &failed {
                waits.push((*at - now).num_seconds());
            }
            step.apply(&failed);
            assert!(step.start(now, &policy).is_err(), "not due before its retry time");
        }
        assert_eq!(waits, [5, 10], "5 s, then 10 s");
        assert_eq!(step.state, StepState::Parked);
        assert_eq!(step.last_error.as_deref(), Some("HTTP 503"));
        let retried = step.retry("user:admin").expect("parked");
        step.apply(&retried);
        assert_eq!((step.state, step.attempts), (StepState::Pending, 0));
        assert!(step.retry("user:admin").is_err(), "only parked steps are retried");
    }

    #[test]
    fn a_started_step_left_by_a_dead_worker_starts_again_after_its_lease_and_late_outcomes_are_refused() {
        let policy = RetryPolicy::default();
        let mut step = step();
        step.apply(&step.start(now(), &policy).expect("due"));
        assert!(step.start(now() + chrono::Duration::seconds(60), &policy).is_err(), "leased");
        let later = now() + chrono::Duration::seconds(301);
        let again = step.start(later, &policy).expect("lease over");
        step.apply(&again);
        assert_eq!(step.attempts, 2);
        assert_eq!(step.succeed(1, "doc".into()), Err(StepRefused::StaleAttempt(1)), "the first worker's outcome");
        step.apply(&step.succeed(2, "doc-7".into()).expect("current"));
        assert_eq!((step.state, step.reference.as_deref()), (StepState::Done, Some("doc-7")));
        assert!(!step.is_due(later));
    }

    #[test]
    fn a_final_refusal_parks_at_once() {
        let policy = RetryPolicy::default();
        let mut step = step();
        step.apply(&step.start(now(), &policy).expect("due"));
        let failed = step.fail(1, "HTTP 400: unknown template".into(), true, now(), &policy).expect("current");
        step.apply(&failed);
        assert_eq!(step.state, StepState::Parked);
    }

    #[test]
    fn a_skipped_step_is_finished_and_a_deferred_one_waits_without_losing_an_attempt() {
        let policy = RetryPolicy::default();
        let mut gone = step();
        gone.apply(&gone.start(now(), &policy).expect("due"));
        gone.apply(&gone.skip(1, "the file was removed".into()).expect("current"));
        assert_eq!((gone.state, gone.skipped.as_deref()), (StepState::Done, Some("the file was removed")));
        let mut close = step();
        close.apply(&close.start(now(), &policy).expect("due"));
        close.apply(&close.defer(1, "2 responses approved after the conclusion".into()).expect("current"));
        assert_eq!((close.state, close.attempts), (StepState::Pending, 0));
    }

    #[test]
    fn events_and_steps_round_trip_through_json() {
        let policy = RetryPolicy::default();
        let mut step = step();
        let started = step.start(now(), &policy).expect("due");
        step.apply(&started);
        let json = serde_json::to_string(&started).expect("json");
        assert_eq!(serde_json::from_str::<StepEvent<String>>(&json).expect("back"), started);
        let json = serde_json::to_string(&step).expect("json");
        assert_eq!(serde_json::from_str::<Step<String>>(&json).expect("back"), step);
    }
}
