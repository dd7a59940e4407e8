//! Two replicas working through one queue of steps, on SQLite and on PostgreSQL: every step
//! is performed once, by one of them, and ends done or waiting for its retry. And a batch of
//! steps for many groups, planned at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use agora_eventstore::{Store, testing};
use agora_jobs::{Outcome, Perform, RetryPolicy, Runner, Step, StepState, StepTable};

const STEPS: StepTable = StepTable { table: "test_steps", aggregate: "test_step" };

/// Performs every step and remembers which, and how many batches were prepared; a step whose
/// action says so fails.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>, Arc<Mutex<usize>>);

#[async_trait::async_trait]
impl Perform<String> for Recorder {
    /// The steps the batch was prepared for.
    type Batch = Vec<String>;

    async fn prepare(&self, steps: &[Step<String>]) -> Vec<String> {
        if let Ok(mut batches) = self.1.lock() {
            *batches += 1;
        }
        steps.iter().map(|step| format!("{}/{}", step.group, step.key)).collect()
    }

    async fn perform(&self, step: &Step<String>, batch: &Vec<String>) -> Outcome {
        let name = format!("{}/{}", step.group, step.key);
        if let Ok(mut performed) = self.0.lock() {
            // A step performed without having been prepared shows up under another name.
            performed.push(if batch.contains(&name) { name } else { format!("{name} (not prepared)") });
        }
        if step.action == "fail" {
            Outcome::Failed { error: "the other side said no".into(), permanent: false }
        } else {
            Outcome::Done(format!("sent {}", step.key))
        }
    }
}

fn runner(store: Store, performer: Recorder) -> Runner<Recorder> {
    Runner {
        table: STEPS,
        store,
        retry: RetryPolicy::default(),
        clock: Arc::new(chrono::Utc::now),
        actor: "service:test",
        performer,
    }
}

async fn two_replicas_share_a_queue(first: Store, second: Store) {
    STEPS.migrate(&first).await.expect("the step table");
    // 10 groups of 15: more than one batch for each replica.
    let mut tx = first.begin().await.expect("begin");
    for group in 0..10 {
        let steps = (0..15)
            .map(|n| (format!("message-{n}"), if n == 7 { "fail".to_string() } else { "send".to_string() }))
            .collect();
        STEPS.plan_in(&first, &mut tx, &format!("recipient-{group}"), steps, "service:test").await.expect("plan");
    }
    // Planning a key again adds nothing.
    let again = vec![("message-0".to_string(), "send".to_string())];
    let planned = STEPS.plan_in(&first, &mut tx, "recipient-0", again, "service:test").await.expect("plan again");
    assert!(planned.is_empty(), "a step planned twice: {planned:?}");
    tx.commit().await.expect("commit");

    let performed = Recorder::default();
    let (a, b) = (runner(first.clone(), performed.clone()), runner(second, performed.clone()));
    let (handled_a, handled_b) = tokio::join!(a.run_due::<String>("1 = 1", &[]), b.run_due::<String>("1 = 1", &[]));
    let handled = handled_a.expect("first replica") + handled_b.expect("second replica");
    assert_eq!(handled, 150, "every step was taken once");

    let performed_batches = performed.clone();
    let performed = performed.0.lock().expect("performed").clone();
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for step in &performed {
        *times.entry(step.as_str()).or_default() += 1;
    }
    assert_eq!(times.len(), 150);
    assert!(times.values().all(|&n| n == 1), "performed more than once: {times:?}");
    let unprepared: Vec<&String> = performed.iter().filter(|step| step.ends_with("(not prepared)")).collect();
    assert!(unprepared.is_empty(), "performed without their batch prepared: {unprepared:?}");
    let batches = *performed_batches.1.lock().expect("batches");
    assert!(batches < 150 / 4, "a batch is prepared once for all its steps, not once a step: {batches} for 150 steps");

    for group in 0..10 {
        let steps: Vec<Step<String>> = STEPS.steps(&first, &format!("recipient-{group}")).await.expect("steps");
        assert_eq!(steps.len(), 15);
        for step in steps {
            let expected = if step.action == "fail" { StepState::Retrying } else { StepState::Done };
            assert_eq!(step.state, expected, "{}/{}", step.group, step.key);
            assert_eq!(step.attempts, 1);
        }
    }
    // Nothing is due until the failed steps' retry time.
    assert_eq!(runner(first.clone(), Recorder::default()).run_due::<String>("1 = 1", &[]).await.expect("run"), 0);
    let report = agora_eventstore::audit::verify(&first).await.expect("verify");
    assert!(report.intact(), "{:?}", report.findings);
    // Planned, started, and succeeded or failed: three events a step.
    assert_eq!(report.events, 450);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_a_queue_on_sqlite() {
    let (store, dir) = testing::sqlite().await;
    let second = Store::sqlite(&dir.path().join("events.db")).await.expect("a second store");
    two_replicas_share_a_queue(store, second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_a_queue_on_postgres() {
    let Some(database) = testing::postgres(8).await else { return };
    let second = database.another_store(8).await;
    two_replicas_share_a_queue(database.store.clone(), second).await;
}

async fn a_batch_is_planned_after_each_groups_last_step(store: Store) {
    STEPS.migrate(&store).await.expect("the step table");
    let step = |group: &str, key: &str| (group.to_string(), key.to_string(), "send".to_string());
    let mut tx = store.begin().await.expect("begin");
    STEPS.plan_all_in(&store, &mut tx, vec![step("anna", "1"), step("anna", "2")], "service:test").await.expect("plan");
    // A key planned before, and one twice in the batch, are each planned once.
    let batch = vec![step("anna", "3"), step("bo", "1"), step("anna", "1"), step("bo", "1"), step("cecilie", "1")];
    let planned = STEPS.plan_all_in(&store, &mut tx, batch, "service:test").await.expect("plan the batch");
    tx.commit().await.expect("commit");
    let streams: Vec<&str> = planned.iter().map(|e| e.aggregate_id.as_str()).collect();
    assert_eq!(streams.len(), 3, "{streams:?}");
    let positions = |group: &'static str| {
        let store = store.clone();
        async move {
            let steps: Vec<Step<String>> = STEPS.steps(&store, group).await.expect("steps");
            steps.into_iter().map(|s| (s.key, s.position)).collect::<Vec<_>>()
        }
    };
    let pairs = |items: &[(&str, i64)]| items.iter().map(|(k, p)| (k.to_string(), *p)).collect::<Vec<_>>();
    assert_eq!(positions("anna").await, pairs(&[("1", 1), ("2", 2), ("3", 3)]));
    assert_eq!(positions("bo").await, pairs(&[("1", 1)]));
    assert_eq!(positions("cecilie").await, pairs(&[("1", 1)]));
    let report = agora_eventstore::audit::verify(&store).await.expect("verify");
    assert!(report.intact(), "{:?}", report.findings);
    assert_eq!(report.events, 5, "one planned event a step");
}

#[tokio::test]
async fn a_batch_is_planned_after_each_groups_last_step_on_sqlite() {
    let (store, _dir) = testing::sqlite().await;
    a_batch_is_planned_after_each_groups_last_step(store).await;
}

#[tokio::test]
async fn a_batch_is_planned_after_each_groups_last_step_on_postgres() {
    let Some(database) = testing::postgres(2).await else { return };
    a_batch_is_planned_after_each_groups_last_step(database.store.clone()).await;
}
