//! A hearing's journalization from its events to the records system, on SQLite and on
//! PostgreSQL: the steps, their retries and parking, a crash between a call and its outcome,
//! the status and who may see and retry it.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use agora_auth::{Capacity, Principal, Role};
use agora_eventstore::Store;
use agora_eventstore::jetstream::handle_once;
use agora_eventstore::relay::IntegrationMapper;
use agora_proto::hearing::v1 as pb;
use agora_records::app::{RecordsApp, RecordsError, Steps};
use agora_records::archive::Archive;
use agora_records::domain::{AttachmentRef, JournalStatus, Policy, RetryPolicy, StepState};
use agora_records::esdh::{DocumentFile, RecordsSystem};
use agora_records::integration::{HearingJournalHandler, RecordsIntegration};
use agora_records::sbsys::{Sbsys, SbsysConfig};
use agora_records::sources::{ResponseToFile, SourceError, Sources};
use agora_records::worker::{DocumentTypes, Worker};
use prost::Message;
use support::sbsys_double::SbsysDouble;
use uuid::Uuid;

/// The hearing and response services as the records service reads them.
#[derive(Default)]
struct FakeSources {
    files: HashMap<String, DocumentFile>,
    responses: std::sync::Mutex<Vec<ResponseToFile>>,
    /// Joins the responses to file once they have been listed: approved after the conclusion.
    late: std::sync::Mutex<Option<ResponseToFile>>,
}

fn file(name: &str, content_type: &str, content: &str) -> DocumentFile {
    DocumentFile { name: name.into(), content_type: content_type.into(), content: content.to_string().into() }
}

#[async_trait::async_trait]
impl Sources for FakeSources {
    async fn hearing_file(&self, _hearing_id: &str, file_id: &str) -> Result<DocumentFile, SourceError> {
        self.files.get(file_id).cloned().ok_or_else(|| SourceError::Gone(file_id.into()))
    }

    async fn responses_to_file(&self, _: &str, _approved_only: bool) -> Result<Vec<ResponseToFile>, SourceError> {
        let mut responses = self.responses.lock().map_err(|e| SourceError::Unavailable(e.to_string()))?;
        let listed = responses.clone();
        if let Some(late) = self.late.lock().map_err(|e| SourceError::Unavailable(e.to_string()))?.take() {
            responses.push(late);
        }
        Ok(listed)
    }

    async fn response_document(
        &self,
        _hearing_id: &str,
        response_id: &str,
        attachment_id: Option<&str>,
    ) -> Result<DocumentFile, SourceError> {
        Ok(match attachment_id {
            None => file(&format!("{response_id}.pdf"), "application/pdf", &format!("%PDF svar {response_id}")),
            Some(id) => file(&format!("{id}.txt"), "text/plain", "bilag"),
        })
    }
}

/// Two responses, the first with an attachment; a hearing document.
fn sources() -> Arc<FakeSources> {
    Arc::new(FakeSources {
        files: [("f1".to_string(), file("kort.pdf", "application/pdf", "%PDF kort"))].into(),
        responses: std::sync::Mutex::new(vec![
            ResponseToFile {
                response_id: "r1".into(),
                number: 1,
                attachments: vec![AttachmentRef { attachment_id: "a1".into(), name: "bilag.txt".into() }],
            },
            ResponseToFile { response_id: "r2".into(), number: 2, attachments: vec![] },
        ]),
        late: Default::default(),
    })
}

/// A hearing document and `count` responses without attachments.
fn with_responses(count: i64) -> Arc<FakeSources> {
    Arc::new(FakeSources {
        files: [("f1".to_string(), file("kort.pdf", "application/pdf", "%PDF kort"))].into(),
        responses: std::sync::Mutex::new(
            (1..=count)
                .map(|number| ResponseToFile { response_id: format!("r{number}"), number, attachments: vec![] })
                .collect(),
        ),
        late: Default::default(),
    })
}

/// Every one of `count` responses is filed in the double, once.
fn assert_each_response_filed_once(double: &SbsysDouble, count: i64) {
    let mut numbers: Vec<i64> =
        double.documents().iter().filter_map(|d| d.name.strip_prefix("Høringssvar nr. ")?.parse().ok()).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=count).collect::<Vec<_>>(), "every response filed, once");
}

struct Setup {
    store: Store,
    owner: Principal,
    hearing_id: String,
    sequence: i64,
    clock: Arc<AtomicI64>,
}

fn state(hearing_id: &str, owner: &Principal, status: pb::HearingStatus) -> pb::HearingState {
    pb::HearingState {
        hearing_id: hearing_id.into(),
        status: status as i32,
        title: "Ny bydel".into(),
        esdh_title: "Lokalplan 12".into(),
        owner_id: owner.user_id.to_string(),
        kle_number: "01.02.05".into(),
        start_date: "2026-03-01".into(),
        deadline: "2026-03-29".into(),
        texts: vec![pb::HearingText {
            key: "body".into(),
            label: "Brødtekst".into(),
            text: "Kommunen foreslår en ny bydel på Ærøvej.".into(),
        }],
        files: vec![pb::StoredFile { file_id: "f1".into(), name: "kort.pdf".into(), ..Default::default() }],
        ..Default::default()
    }
}

impl Setup {
    async fn new(store: Store) -> Self {
        agora_records::store::migrate(&store).await.expect("records tables");
        let owner = Principal::new(Uuid::now_v7(), Capacity::Employee).with_role(Role::HearingCreator);
        Self {
            store,
            owner,
            hearing_id: Uuid::now_v7().to_string(),
            sequence: 0,
            clock: Arc::new(AtomicI64::new(1_800_000_000_000)),
        }
    }

    /// The hearing service publishes an event with the hearing in `status`.
    async fn hearing_event(&mut self, message: &str, status: pb::HearingStatus, conclusion: Option<&str>) {
        self.sequence += 1;
        let hearing = state(&self.hearing_id, &self.owner, status);
        let data = match conclusion {
            Some(text) => pb::HearingConcluded { hearing: Some(hearing), conclusion: text.into() }.encode_to_vec(),
            None => pb::HearingCreated { hearing: Some(hearing) }.encode_to_vec(),
        };
        let event = agora_eventstore::testing::integration_event(
            "hearing",
            message,
            &self.hearing_id,
            &self.hearing_id,
            self.sequence,
            data,
        );
        let handler = HearingJournalHandler { store: self.store.clone(), policy: policy() };
        assert!(handle_once(&self.store, &handler, &event).await.expect("handled"));
        assert!(!handle_once(&self.store, &handler, &event).await.expect("redelivered"), "a redelivery has no effect");
    }

    async fn whole_life(&mut self) {
        self.hearing_event("HearingCreated", pb::HearingStatus::Created, None).await;
        self.hearing_event("HearingDraftReady", pb::HearingStatus::Draft, None).await;
        self.hearing_event("HearingPublished", pb::HearingStatus::AwaitingStartDate, None).await;
        self.hearing_event("HearingStarted", pb::HearingStatus::Active, None).await;
        self.hearing_event("HearingClosed", pb::HearingStatus::AwaitingConclusion, None).await;
        self.hearing_event("HearingConcluded", pb::HearingStatus::Concluded, Some("Lokalplanen vedtages.")).await;
    }

    fn worker(&self, system: Arc<dyn RecordsSystem>, retry: RetryPolicy) -> Worker {
        self.worker_reading(system, retry, sources())
    }

    fn worker_reading(&self, system: Arc<dyn RecordsSystem>, retry: RetryPolicy, sources: Arc<FakeSources>) -> Worker {
        let clock = self.clock.clone();
        Worker {
            store: self.store.clone(),
            system,
            sources,
            retry,
            document_types: DocumentTypes::default(),
            clock: Arc::new(move || {
                chrono::DateTime::from_timestamp_millis(clock.load(Ordering::SeqCst)).unwrap_or_default()
            }),
            concurrency: 3,
        }
    }

    fn advance(&self, seconds: i64) {
        self.clock.fetch_add(seconds * 1000, Ordering::SeqCst);
    }

    /// Runs the worker, moving the clock past every retry, until nothing is left to run.
    async fn run_until_quiet(&self, worker: &Worker) {
        for _ in 0..200 {
            let ran = worker.run_due().await.expect("worker");
            if ran == 0 {
                match agora_records::store::next_due(&self.store).await.expect("next") {
                    Some(_) => self.advance(3600),
                    None => return,
                }
            }
        }
        panic!("the worker never came to rest");
    }
}

fn policy() -> Policy {
    Policy {
        templates: agora_records::domain::CaseTemplates {
            by_kle: vec![("01.02".into(), "12".into())],
            default: "1".into(),
        },
        approved_only: true,
    }
}

fn quick_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy { max_attempts, ..RetryPolicy::default() }
}

fn sbsys_config(double: &SbsysDouble, timeout_seconds: u64) -> SbsysConfig {
    SbsysConfig {
        base_url: double.base_url.clone(),
        token_url: double.token_url.clone(),
        client_id: "agora".into(),
        client_secret: "s".into(),
        username: "agora".into(),
        password: "p".into(),
        timeout_seconds,
        handlers: HashMap::new(),
        default_handler: "POSTKASSE".into(),
    }
}

fn sbsys(double: &SbsysDouble) -> Arc<dyn RecordsSystem> {
    Arc::new(Sbsys::new(sbsys_config(double, 2)).expect("adapter"))
}

#[tokio::test]
async fn a_concluded_hearing_is_filed_in_the_archive_once_and_its_case_number_and_journalization_are_published() {
    for (store, _guard) in agora_eventstore::testing::both_backends().await {
        let mut setup = Setup::new(store.clone()).await;
        let dir = tempfile::tempdir().expect("tmp");
        let archive = Arc::new(Archive::new(dir.path()));
        let worker = setup.worker(archive.clone(), quick_retries(3));
        setup.whole_life().await;
        setup.run_until_quiet(&worker).await;

        let app = RecordsApp::new(store.clone());
        let view = app.journalization(&setup.owner, &setup.hearing_id).await.expect("status");
        assert_eq!(view.status, JournalStatus::Journalized, "{:?}", view.steps);
        assert_eq!(view.steps_left(), 0);
        let case_number = view.journal.case_number.clone().expect("a case");
        let metadata = archive.metadata(&case_number).await.expect("read").expect("case folder");
        assert_eq!(metadata.title, "Lokalplan 12");
        assert_eq!(metadata.template, "12", "chosen by the KLE number");
        assert_eq!(metadata.handler, setup.owner.user_id.to_string());
        assert!(metadata.closed_at.is_some());
        let filed: Vec<(&str, &str, usize)> =
            metadata.documents.iter().map(|d| (d.document_type.as_str(), d.title.as_str(), d.files.len())).collect();
        assert_eq!(filed.len(), 5, "{filed:?}");
        for expected in [
            ("Høringstekst", "Høringstekst: Ny bydel", 1),
            ("Høringsmateriale", "kort.pdf", 1),
            ("Høringssvar", "Høringssvar nr. 1", 2),
            ("Høringssvar", "Høringssvar nr. 2", 1),
            ("Konklusion", "Konklusion: Ny bydel", 1),
        ] {
            assert_eq!(filed.iter().filter(|f| **f == expected).count(), 1, "{expected:?} once in {filed:?}");
        }

        // Integration events: the case opened (for the hearing), the hearing journalized (for
        // the response service's retention).
        let mut published = Vec::new();
        for event in store.read_log(agora_eventstore::LogPosition::START, 10_000).await.expect("log") {
            if let Some(integration) = RecordsIntegration.map(&event).await.expect("maps") {
                published.push(integration);
            }
        }
        let types: Vec<&str> = published.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["dk.agora.records.v1.CaseOpened", "dk.agora.records.v1.HearingJournalized"]);
        let journalized =
            agora_proto::records::v1::HearingJournalized::decode(published[1].data.clone()).expect("decode");
        assert_eq!((journalized.case_number.as_str(), journalized.documents), (case_number.as_str(), 5));
        assert_eq!(published[1].nats_subject, format!("records.v1.hearing_journalized.{}", setup.hearing_id));

        // Every step's history is in the audit log: planned, started, succeeded.
        let (count,): (i64,) = agora_eventstore::on_backend!(store.backend(), pool => {
            sqlx::query_as("SELECT COUNT(*) FROM events WHERE aggregate_type = 'RecordsStep' AND event_type = 'StepStarted'")
                .fetch_one(pool).await.expect("count")
        });
        assert_eq!(count, 8, "open, text, document, list, two responses, conclusion, close: once each");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_file_a_hearing_of_many_responses_together_each_document_once() {
    const RESPONSES: i64 = 150;
    for (store, _guard) in agora_eventstore::testing::both_backends().await {
        let mut setup = Setup::new(store.clone()).await;
        let double = SbsysDouble::start(&["12"]).await;
        let many = with_responses(RESPONSES);
        let first = setup.worker_reading(sbsys(&double), quick_retries(3), many.clone());
        let second = setup.worker_reading(sbsys(&double), quick_retries(3), many);
        setup.whole_life().await;
        let app = RecordsApp::new(store.clone());
        let status = app.journalization_with(&setup.owner, &setup.hearing_id, Steps::Open).await.expect("status");
        assert_eq!((status.status, status.steps_left(), status.steps_done), (JournalStatus::InProgress, 6, 0));
        // Both take batches of the same queue at the same time, until neither finds any due.
        let mut rounds = 0;
        loop {
            let (a, b) = tokio::join!(first.run_due(), second.run_due());
            if a.expect("first worker") + b.expect("second worker") == 0 {
                break;
            }
            rounds += 1;
            assert!(rounds < 50, "the workers never came to rest");
        }

        let view = app.journalization(&setup.owner, &setup.hearing_id).await.expect("status");
        assert_eq!(view.status, JournalStatus::Journalized, "{:?}", view.errors());
        assert_eq!((view.steps.len(), view.steps_done), (RESPONSES as usize + 6, RESPONSES as usize + 6));
        // A status leaves out the steps done: it does not grow with the responses filed.
        let status = app.journalization_with(&setup.owner, &setup.hearing_id, Steps::Open).await.expect("status");
        assert_eq!((status.status, status.steps.len(), status.steps_done), (view.status, 0, view.steps_done));
        let admin = Principal::new(Uuid::now_v7(), Capacity::Employee).with_role(Role::Administrator);
        let listed = app.journalizations(&admin, &[JournalStatus::Journalized]).await.expect("admin list");
        let listed: Vec<(&str, usize, usize)> =
            listed.iter().map(|v| (v.journal.hearing_id.as_str(), v.steps.len(), v.steps_done)).collect();
        assert_eq!(listed, [(setup.hearing_id.as_str(), 0, view.steps_done)]);
        assert_each_response_filed_once(&double, RESPONSES);
        assert_eq!(double.documents().len(), RESPONSES as usize + 3, "and the text, the map and the conclusion");
        assert_eq!(i64::from(view.journal.documents_filed), RESPONSES + 3);
        // No step was taken by both: each was started once, and succeeded once.
        let (started, succeeded): (i64, i64) = agora_eventstore::on_backend!(store.backend(), pool => {
            sqlx::query_as(
                "SELECT SUM(CASE WHEN event_type = 'StepStarted' THEN 1 ELSE 0 END), \
                 SUM(CASE WHEN event_type = 'StepSucceeded' THEN 1 ELSE 0 END) \
                 FROM events WHERE aggregate_type = 'RecordsStep'",
            )
            .fetch_one(pool).await.expect("count")
        });
        let steps = RESPONSES + 6;
        assert_eq!((started, succeeded), (steps, steps), "open, text, map, list, the responses, conclusion, close");
    }
}

/// With a slow records system, a batch's later steps would run past their lease: the worker
/// leaves them (or cuts them short) at four fifths of it, goes on with the next batch, and
/// comes to rest; after the lease they are taken again, and every document is filed once.
#[tokio::test]
async fn with_a_slow_records_system_steps_are_left_for_after_their_lease_and_each_document_filed_once() {
    const RESPONSES: i64 = 30;
    for (store, _guard) in agora_eventstore::testing::both_backends().await {
        let mut setup = Setup::new(store.clone()).await;
        let double = SbsysDouble::start(&["12"]).await;
        let many = with_responses(RESPONSES);
        // Three at once, 250 ms a call, 0.8 s before a batch's deadline: of a batch of 22
        // responses, no more than 12 can be begun in time.
        let lease = std::time::Duration::from_secs(1);
        let retry = RetryPolicy { lease, ..quick_retries(5) };
        let worker = setup.worker_reading(sbsys(&double), retry, many);
        setup.whole_life().await;
        double.delay(std::time::Duration::from_millis(250));
        let rest = tokio::time::timeout(std::time::Duration::from_secs(60), worker.run_due());
        rest.await.expect("the worker comes to rest").expect("worker");
        let steps = agora_records::store::STEPS.steps::<agora_records::domain::Action>(&store, &setup.hearing_id);
        let unfinished = steps.await.expect("steps").into_iter().filter(|s| s.state != StepState::Done).count();
        assert!(unfinished > 0, "every step was begun within its batch's lease");

        double.heal();
        setup.advance(lease.as_secs() as i64 + 1);
        setup.run_until_quiet(&worker).await;
        let view =
            RecordsApp::new(store.clone()).journalization(&setup.owner, &setup.hearing_id).await.expect("status");
        assert_eq!(view.status, JournalStatus::Journalized, "{:?}", view.errors());
        assert_each_response_filed_once(&double, RESPONSES);
    }
}

/// Outcomes that cannot be recorded (here a trigger refuses every finished step; in life, a
/// database that went away): the worker stops with the error instead of waiting for the
/// outcomes to be recorded, and once they can be, the next run (after the lease) files every
/// document once.
#[tokio::test]
async fn a_worker_that_cannot_record_outcomes_stops_and_the_next_run_files_each_document_once() {
    let Some(database) = agora_eventstore::testing::postgres(4).await else { return };
    let store = database.store.clone();
    let mut setup = Setup::new(store.clone()).await;
    let double = SbsysDouble::start(&["12"]).await;
    let retry = RetryPolicy { lease: std::time::Duration::from_secs(60), ..quick_retries(5) };
    let worker = setup.worker_reading(sbsys(&double), retry, with_responses(5));
    setup.whole_life().await;
    let refuse = "CREATE FUNCTION refuse_done() RETURNS trigger LANGUAGE plpgsql AS \
                  $$ BEGIN RAISE EXCEPTION 'no outcome may be recorded'; END $$";
    let trigger = "CREATE TRIGGER refuse_done BEFORE UPDATE ON records_steps \
                   FOR EACH ROW WHEN (NEW.state = 'done') EXECUTE FUNCTION refuse_done()";
    store.execute_ddl(&[refuse, trigger]).await.expect("the trigger");
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(60), worker.run_due()).await;
    let stopped = stopped.expect("the worker stops");
    assert!(stopped.is_err(), "the worker said it recorded what it did: {stopped:?}");
    assert_eq!(double.cases().len(), 1, "the case was opened");

    store.execute_ddl(&["DROP TRIGGER refuse_done ON records_steps"]).await.expect("no trigger");
    setup.advance(61);
    setup.run_until_quiet(&worker).await;
    let view = RecordsApp::new(store.clone()).journalization(&setup.owner, &setup.hearing_id).await.expect("status");
    assert_eq!(view.status, JournalStatus::Journalized, "{:?}", view.errors());
    assert_eq!(double.cases().len(), 1, "the repeated opening found the case");
    assert_each_response_filed_once(&double, 5);
}

#[tokio::test]
async fn with_sbsys_failing_every_second_call_each_document_is_filed_exactly_once() {
    for (store, _guard) in agora_eventstore::testing::both_backends().await {
        let mut setup = Setup::new(store.clone()).await;
        let double = SbsysDouble::start(&["12"]).await;
        double.fail_every(2);
        let worker = setup.worker(sbsys(&double), quick_retries(10));
        setup.whole_life().await;
        setup.run_until_quiet(&worker).await;
        let view =
            RecordsApp::new(store.clone()).journalization(&setup.owner, &setup.hearing_id).await.expect("status");
        assert_eq!(view.status, JournalStatus::Journalized, "{:?}", view.errors());
        assert_eq!(double.cases().len(), 1);
        assert_eq!(double.cases()[0].status, "Afsluttet");
        let mut names: Vec<String> = double.documents().into_iter().map(|d| d.name).collect();
        names.sort();
        assert_eq!(
            names,
            ["Høringssvar nr. 1", "Høringssvar nr. 2", "Høringstekst: Ny bydel", "Konklusion: Ny bydel", "kort.pdf"]
        );
        assert!(double.calls().iter().any(|c| c.status == 503), "the double did fail");
        let retried = view.steps.iter().filter(|s| s.attempts > 1).count();
        assert!(retried > 0, "some steps needed another attempt");
    }
}

#[tokio::test]
async fn a_worker_that_dies_inside_a_filing_leaves_it_to_the_next_which_finds_it_filed() {
    for (store, _guard) in agora_eventstore::testing::both_backends().await {
        let mut setup = Setup::new(store.clone()).await;
        let double = SbsysDouble::start(&["12"]).await;
        let retry = RetryPolicy { lease: std::time::Duration::from_secs(60), ..quick_retries(5) };
        double.hold_filing_of("Konklusion");
        setup.whole_life().await;
        // The first worker has an adapter that waits for ever: it will be killed mid-call.
        let mut patient = sbsys_config(&double, 600);
        let first = setup.worker(Arc::new(Sbsys::new(patient.clone()).expect("adapter")), retry);
        let dying = tokio::spawn(async move { first.run_due().await });
        agora_eventstore::testing::eventually(20, "the conclusion filed and its answer held", || {
            let double = double.clone();
            async move { double.documents().iter().any(|d| d.name.starts_with("Konklusion")).then_some(()) }
        })
        .await;
        dying.abort();
        let _ = dying.await;
        double.heal();
        let step =
            agora_records::store::step(&store, &setup.hearing_id, "conclusion").await.expect("read").expect("step");
        assert_eq!(step.state, StepState::Running, "the intent is recorded, the outcome is not");

        // The next worker leaves the step to its lease, then takes it over.
        patient.timeout_seconds = 5;
        let next = setup.worker(Arc::new(Sbsys::new(patient).expect("adapter")), retry);
        next.run_due().await.expect("worker");
        let step =
            agora_records::store::step(&store, &setup.hearing_id, "conclusion").await.expect("read").expect("step");
        assert_eq!(step.state, StepState::Running, "not before its lease ends");
        setup.advance(61);
        setup.run_until_quiet(&next).await;
        let conclusions = double.documents().iter().filter(|d| d.name.starts_with("Konklusion")).count();
        assert_eq!(conclusions, 1, "the repeat found the first filing");
        let view =
            RecordsApp::new(store.clone()).journalization(&setup.owner, &setup.hearing_id).await.expect("status");
        assert_eq!(view.status, JournalStatus::Journalized);
        assert_eq!(double.documents().len(), 5);
    }
}

#[tokio::test]
async fn a_step_that_fails_too_often_is_parked_visibly_until_the_owner_retries_it() {
    for (store, _guard) in agora_eventstore::testing::both_backends().await {
        let mut setup = Setup::new(store.clone()).await;
        let double = SbsysDouble::start(&["12"]).await;
        let worker = setup.worker(sbsys(&double), quick_retries(2));
        setup.whole_life().await;
        double.fail_every(1);
        setup.run_until_quiet(&worker).await;
        let app = RecordsApp::new(store.clone());
        let view = app.journalization(&setup.owner, &setup.hearing_id).await.expect("status");
        assert_eq!(view.status, JournalStatus::Failed);
        let open = view.steps.iter().find(|s| s.key == "open-case").expect("open-case");
        assert_eq!((open.state, open.attempts), (StepState::Parked, 2));
        assert!(view.errors().iter().any(|e| e.contains("Opret sag") && e.contains("503")), "{:?}", view.errors());
        assert!(view.steps_left() > 0);
        assert!(double.documents().is_empty(), "nothing filed without a case");
        // Its other steps wait for the case, and are not handed to the worker while they wait,
        // so they never crowd out other hearings' steps.
        let far = chrono::Utc::now() + chrono::Duration::days(365);
        assert!(agora_records::store::due_steps(&store, far, 10).await.expect("due").is_empty());
        let metrics = agora_telemetry::metrics::global().render();
        assert!(metrics.contains("agora_journal_steps_total{outcome=\"parked\"}"), "{metrics}");

        // Nobody else sees or retries it; an administrator lists it among the failed.
        let stranger = Principal::new(Uuid::now_v7(), Capacity::Employee);
        assert!(matches!(app.journalization(&stranger, &setup.hearing_id).await, Err(RecordsError::NotAllowed(_))));
        assert!(matches!(
            app.retry_parked(&stranger, &setup.hearing_id, Steps::All).await,
            Err(RecordsError::NotAllowed(_))
        ));
        let admin = Principal::new(Uuid::now_v7(), Capacity::Employee).with_role(Role::Administrator);
        let failed = app.journalizations(&admin, &[JournalStatus::Failed]).await.expect("admin list");
        assert_eq!(
            failed.iter().map(|v| v.journal.hearing_id.as_str()).collect::<Vec<_>>(),
            [setup.hearing_id.as_str()]
        );
        assert!(matches!(app.journalizations(&setup.owner, &[]).await, Err(RecordsError::NotAllowed(_))));
        let unknown = Uuid::now_v7().to_string();
        assert!(matches!(app.journalization(&setup.owner, &unknown).await, Err(RecordsError::NotFound(_))));
        assert_eq!(app.journalization(&admin, &unknown).await.expect("admin").status, JournalStatus::NotJournalized);
        assert!(matches!(app.journalization(&admin, "not-an-id").await, Err(RecordsError::Invalid(_))));

        double.heal();
        let retried = app.retry_parked(&setup.owner, &setup.hearing_id, Steps::All).await.expect("owner retries");
        assert_eq!(retried.status, JournalStatus::InProgress);
        setup.run_until_quiet(&worker).await;
        let view = app.journalization(&setup.owner, &setup.hearing_id).await.expect("status");
        assert_eq!(view.status, JournalStatus::Journalized, "{:?}", view.errors());
        assert_eq!(double.documents().len(), 5);
    }
}

#[tokio::test]
async fn a_deleted_draft_closes_its_case_and_is_not_reported_journalized() {
    for (store, _guard) in agora_eventstore::testing::both_backends().await {
        let mut setup = Setup::new(store.clone()).await;
        let dir = tempfile::tempdir().expect("tmp");
        let archive = Arc::new(Archive::new(dir.path()));
        let worker = setup.worker(archive.clone(), quick_retries(3));
        setup.hearing_event("HearingCreated", pb::HearingStatus::Created, None).await;
        setup.hearing_event("HearingDraftReady", pb::HearingStatus::Draft, None).await;
        setup.hearing_event("HearingDeleted", pb::HearingStatus::Deleted, None).await;
        setup.run_until_quiet(&worker).await;
        let view =
            RecordsApp::new(store.clone()).journalization(&setup.owner, &setup.hearing_id).await.expect("status");
        let case_number = view.journal.case_number.clone().expect("case");
        let metadata = archive.metadata(&case_number).await.expect("read").expect("case");
        assert!(metadata.closed_at.is_some() && metadata.documents.is_empty());
        // Everything planned is done, and nothing was filed: the hearing is gone, not journalized.
        assert_eq!(view.status, JournalStatus::NotJournalized, "{:?}", view.steps);
        assert_eq!(view.steps_left(), 0);
    }
}

#[tokio::test]
async fn a_response_approved_after_the_conclusion_is_filed_before_the_case_closes_and_a_removed_document_is_skipped() {
    for (store, _guard) in agora_eventstore::testing::both_backends().await {
        let mut setup = Setup::new(store.clone()).await;
        let dir = tempfile::tempdir().expect("tmp");
        let archive = Arc::new(Archive::new(dir.path()));
        let base = sources();
        let reading = FakeSources {
            // The hearing's document was removed before it could be filed.
            files: HashMap::new(),
            responses: std::sync::Mutex::new(base.responses.lock().expect("lock").clone()),
            late: std::sync::Mutex::new(Some(ResponseToFile {
                response_id: "r3".into(),
                number: 3,
                attachments: vec![],
            })),
        };
        let worker = setup.worker_reading(archive.clone(), quick_retries(3), Arc::new(reading));
        setup.whole_life().await;
        setup.run_until_quiet(&worker).await;

        let view =
            RecordsApp::new(store.clone()).journalization(&setup.owner, &setup.hearing_id).await.expect("status");
        assert_eq!(view.status, JournalStatus::Journalized, "{:?}", view.steps);
        let case_number = view.journal.case_number.clone().expect("case");
        let metadata = archive.metadata(&case_number).await.expect("read").expect("case");
        let mut titles: Vec<&str> = metadata.documents.iter().map(|d| d.title.as_str()).collect();
        titles.sort();
        assert_eq!(
            titles,
            [
                "Høringssvar nr. 1",
                "Høringssvar nr. 2",
                "Høringssvar nr. 3",
                "Høringstekst: Ny bydel",
                "Konklusion: Ny bydel"
            ],
            "the late response filed before the case closed; the removed document not at all"
        );
        let skipped = view.steps.iter().find(|s| s.key == "hearing-document-f1").expect("the document's step");
        assert_eq!(skipped.state, StepState::Done);
        assert!(skipped.skipped.as_deref().is_some_and(|why| why.contains("kort.pdf")), "{skipped:?}");
        assert_eq!(view.journal.documents_filed, 5);
        let close = view.steps.iter().find(|s| s.key == "close-case").expect("close");
        assert_eq!(close.state, StepState::Done);
    }
}
