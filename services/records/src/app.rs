//! Who may see a hearing's journalization and retry it: the hearing's owner and
//! administrators.

use agora_auth::Principal;
use agora_eventstore::{Store, StoreError};
use chrono::{DateTime, Utc};

use crate::domain::{Journal, JournalStatus, Step, StepState};
use crate::store;

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("{0}")]
    NotAllowed(String),
    #[error("no hearing {0} is known to the records service")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the journalization was changed at the same time; try again")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A hearing's journalization as its owner sees it.
#[derive(Debug, Clone)]
pub struct JournalView {
    pub journal: Journal,
    pub status: JournalStatus,
    /// Every step, or only those not done yet ([`Steps`]).
    pub steps: Vec<Step>,
    /// How many steps are done.
    pub steps_done: usize,
}

/// Which of a hearing's steps a view lists: a status needs only the steps not done yet, not
/// the thousands of responses filed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steps {
    All,
    Open,
}

impl JournalView {
    pub fn steps_left(&self) -> usize {
        self.steps.iter().filter(|s| s.state != StepState::Done).count()
    }

    /// The errors of the steps that failed last time they ran.
    pub fn errors(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter(|s| matches!(s.state, StepState::Parked | StepState::Retrying))
            .filter_map(|s| s.last_error.as_ref().map(|e| format!("{}: {e}", s.action.description())))
            .collect()
    }
}

#[derive(Clone)]
pub struct RecordsApp {
    pub store: Store,
    /// Wakes the worker after a retry.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
}

fn may_see(principal: &Principal, journal: &Journal) -> bool {
    principal.is_administrator() || principal.user_id.to_string() == journal.owner_id
}

fn hearing_id(value: &str) -> Result<String, RecordsError> {
    uuid::Uuid::parse_str(value)
        .map(|id| id.to_string())
        .map_err(|_| RecordsError::Invalid(format!("hearing_id: '{value}' is not an id")))
}

impl RecordsApp {
    pub fn new(store: Store) -> Self {
        Self { store, wake: Default::default() }
    }

    async fn view(&self, journal: Journal, which: Steps) -> Result<JournalView, RecordsError> {
        let (steps, steps_done) = match which {
            Steps::All => {
                let steps = store::steps(&self.store, &journal.hearing_id).await?;
                let done = steps.iter().filter(|s| s.state == StepState::Done).count();
                (steps, done)
            }
            Steps::Open => store::open_steps(&self.store, &journal.hearing_id).await?,
        };
        Ok(JournalView { status: JournalStatus::of(&journal, &steps), journal, steps, steps_done })
    }

    /// A hearing's journalization with every step.
    pub async fn journalization(&self, principal: &Principal, id: &str) -> Result<JournalView, RecordsError> {
        self.journalization_with(principal, id, Steps::All).await
    }

    /// A hearing's journalization with the steps asked for.
    pub async fn journalization_with(
        &self,
        principal: &Principal,
        id: &str,
        which: Steps,
    ) -> Result<JournalView, RecordsError> {
        let id = hearing_id(id)?;
        let journal = store::journal(&self.store, &id).await?;
        match journal {
            Some(journal) if may_see(principal, &journal) => self.view(journal, which).await,
            Some(_) => Err(RecordsError::NotAllowed(
                "only the hearing's owner or an administrator may see its journalization".into(),
            )),
            // A hearing not heard of yet has nothing filed; only administrators are told so,
            // as nobody else can be known to own it.
            None if principal.is_administrator() => Ok(JournalView {
                journal: Journal::new(&id),
                status: JournalStatus::NotJournalized,
                steps: Vec::new(),
                steps_done: 0,
            }),
            None => Err(RecordsError::NotFound(id)),
        }
    }

    /// Administrators: every hearing with steps whose status is one of `statuses` (all when
    /// empty), each with its steps not done yet.
    pub async fn journalizations(
        &self,
        principal: &Principal,
        statuses: &[JournalStatus],
    ) -> Result<Vec<JournalView>, RecordsError> {
        if !principal.is_administrator() {
            return Err(RecordsError::NotAllowed("only administrators may list every journalization".into()));
        }
        Ok(store::journals_with_open_steps(&self.store)
            .await?
            .into_iter()
            .map(|(journal, steps, steps_done)| JournalView {
                status: JournalStatus::of(&journal, &steps),
                journal,
                steps,
                steps_done,
            })
            .filter(|view| statuses.is_empty() || statuses.contains(&view.status))
            .collect())
    }

    /// Parked steps of the hearing start again from their first attempt; the journalization
    /// after it, with the steps asked for.
    pub async fn retry_parked(
        &self,
        principal: &Principal,
        id: &str,
        which: Steps,
    ) -> Result<JournalView, RecordsError> {
        let view = self.journalization_with(principal, id, Steps::Open).await?;
        let actor = format!("user:{}", principal.user_id);
        let parked: Vec<&Step> = view.steps.iter().filter(|s| s.state == StepState::Parked).collect();
        if !parked.is_empty() {
            let mut tx = self.store.begin().await?;
            for step in parked {
                let Ok(event) = step.retry(&actor) else { continue };
                match store::transition_in(&self.store, &mut tx, step, event, &actor).await {
                    Ok(_) => {}
                    Err(StoreError::Conflict { .. } | StoreError::BrokenStream { .. }) => {
                        let _ = tx.rollback().await;
                        return Err(RecordsError::Conflict);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            tx.commit().await.map_err(StoreError::from)?;
            self.wake.notify_waiters();
        }
        self.journalization_with(principal, id, which).await
    }
}

/// RFC 3339 for the wire, empty for none.
pub fn time(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default()
}
