//! Response intake end to end: a hearing published by the hearing service, its terms learnt
//! from the integration events, responses submitted concurrently, on SQLite and PostgreSQL.

use std::sync::Arc;

use agora_eventstore::consumer::LocalIntegrationFeed;
use agora_hearing::integration::HearingIntegration;
use agora_response::domain::{IntakeError, OnBehalfOf, Submission};
use agora_response::hearings::{self, HearingTermsHandler};
use agora_response::intake::{Clock, Intake, IntakeConfig};
use agora_tests_integration::{Harness, People, at, on_both_backends, pb};
use uuid::Uuid;

/// A published, active hearing (start 2026-11-20, deadline 2026-12-20) and the response
/// service's view of it.
async fn active_hearing(h: &mut Harness, people: &People) -> Uuid {
    active_hearing_of_type(h, people, "lokalplan").await
}

async fn active_hearing_of_type(h: &mut Harness, people: &People, hearing_type: &str) -> Uuid {
    hearings::migrate(&h.store).await.expect("response schema");
    h.define_reference_data(&people.admin).await;
    publish_hearing(h, people, hearing_type).await
}

/// Another hearing, once the reference data is there.
async fn publish_hearing(h: &mut Harness, people: &People, hearing_type: &str) -> Uuid {
    let id = h.draft(&people.karen, hearing_type, "Lokalplan", "2026-11-20", "2026-12-20").await;
    let request = h.as_user(Some(&people.karen), pb::HearingRef { hearing_id: id.clone() });
    h.hearings.publish_hearing(request).await.expect("publish");
    learn_hearings(h).await;
    Uuid::parse_str(&id).expect("uuid")
}

/// The response service catches up on hearing events, as its consumer does.
async fn learn_hearings(h: &Harness) {
    let feed = LocalIntegrationFeed {
        store: h.store.clone(),
        mapper: Arc::new(HearingIntegration::new(h.store.clone())),
        handler: Arc::new(HearingTermsHandler),
    };
    feed.catch_up().await.expect("hearing events");
}

/// Attachments on the harness's files directory, no virus scanner.
fn files(h: &Harness) -> agora_response::files::Attachments {
    let store = object_store::local::LocalFileSystem::new_with_prefix(h.files_dir.path()).expect("files");
    agora_response::files::Attachments { store: Arc::new(store), scanner: None }
}

/// An intake on the harness's store and files, at a fixed time, with keys of its own.
fn intake_at(h: &Harness, time: &str) -> (Intake, tokio::task::JoinHandle<()>) {
    Intake::start(h.store.clone(), files(h), agora_vault::MemoryKeys::shared(), clock(time), IntakeConfig::default())
}

fn clock(time: &str) -> Clock {
    let time = at(time);
    Arc::new(move || time)
}

fn submission(hearing_id: Uuid, key: &str, text: &str) -> Submission {
    let respondent = agora_auth::Principal::new(Uuid::now_v7(), agora_auth::Capacity::Citizen);
    Submission {
        idempotency_key: key.into(),
        hearing_id,
        author: format!("user:{}", respondent.user_id),
        respondent,
        on_behalf_of: None,
        text: text.into(),
        terms_version: "2026-01".into(),
        registered_by_owner: false,
        attachments: Vec::new(),
    }
}

async fn surge(mut h: Harness) {
    let people = People::new();
    let hearing = active_hearing(&mut h, &people).await;
    let (intake, _worker) = intake_at(&h, "2026-12-01T12:00:00Z");
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..16 {
        let intake = intake.clone();
        tasks.spawn(async move {
            let mut receipts = Vec::new();
            for n in 0..15 {
                let s = submission(
                    hearing,
                    &format!("c{client}-{n}"),
                    &format!("Svar {n} fra borger {client}: jeg er imod."),
                );
                receipts.push((s.clone(), intake.submit(s).await.expect("accepted")));
            }
            receipts
        });
    }
    let mut all = Vec::new();
    while let Some(result) = tasks.join_next().await {
        all.extend(result.expect("client"));
    }
    let mut numbers: Vec<i64> = all.iter().map(|(_, r)| r.number).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=240).collect::<Vec<i64>>(), "unique and gapless");
    for (s, receipt) in &all {
        assert_eq!(receipt.content_sha256, s.content_sha256());
        assert_eq!(receipt.accepted_at, at("2026-12-01T12:00:00Z"));
    }

    // A retry with the same key gets the first receipt and creates nothing.
    let (first, receipt) = all[17].clone();
    assert_eq!(intake.submit(first.clone()).await.expect("retry"), receipt);
    let mut changed = first.clone();
    changed.text = "Noget helt andet.".into();
    assert_eq!(intake.submit(changed).await, Err(IntakeError::KeyReused));
    // Every acknowledged response is in the log once (read once the log has settled: on
    // PostgreSQL other tests' transactions may briefly hold the reading horizon back).
    agora_eventstore::testing::eventually(20, "240 responses in the log", || async {
        let (count, _) = h.store.log_extent().await.ok()?;
        let log = h.store.read_log(agora_eventstore::LogPosition::START, count).await.ok()?;
        (log.iter().filter(|e| e.aggregate_type == "response").count() == 240).then_some(())
    })
    .await;

    // A retry arriving at another replica (another intake on the same store) too.
    let (other, _other_worker) = intake_at(&h, "2026-12-01T12:05:00Z");
    assert_eq!(other.submit(first).await.expect("retry elsewhere"), receipt);
    let next = other.submit(submission(hearing, "late-but-in-time", "Et svar mere.")).await.expect("accepted");
    assert_eq!(next.number, 241);
}
on_both_backends!(surge_of_submits_gets_gapless_numbers, surge);

async fn refusals(mut h: Harness) {
    let people = People::new();
    let hearing = active_hearing(&mut h, &people).await;
    // The scheduler has not closed it yet, but the deadline has passed: refused, naming the time.
    let (late, _w) = intake_at(&h, "2026-12-20T23:00:01Z");
    let error = late.submit(submission(hearing, "late", "For sent")).await.expect_err("closed");
    assert_eq!(error.to_string(), "the hearing closed for responses at 2026-12-20T23:00:00Z");

    let (intake, _w) = intake_at(&h, "2026-12-01T12:00:00Z");
    let unknown = Uuid::now_v7();
    assert_eq!(intake.submit(submission(unknown, "x", "Svar")).await, Err(IntakeError::HearingNotFound(unknown)));
    assert!(matches!(intake.submit(submission(hearing, "e", "  ")).await, Err(IntakeError::Invalid(_))));
    assert!(
        matches!(intake.submit(submission(hearing, "", "Svar")).await, Err(IntakeError::Invalid(m)) if m.contains("idempotency key"))
    );
    let mut org = submission(hearing, "org", "Svar fra foreningen");
    org.on_behalf_of = Some(OnBehalfOf::Organisation { name: "Grundejerforeningen".into() });
    assert_eq!(intake.submit(org).await.expect("accepted").number, 1, "refused submits took no number");

    // A draft does not take responses: to a citizen it is not there at all (as the hearing
    // service answers them), its owner is told why.
    let draft = h.draft(&people.karen, "lokalplan", "Kladde", "2026-12-10", "2026-12-30").await;
    learn_hearings(&h).await;
    let draft = Uuid::parse_str(&draft).expect("uuid");
    assert_eq!(intake.submit(submission(draft, "d", "Svar")).await, Err(IntakeError::HearingNotFound(draft)));
    let mut own = submission(draft, "d-own", "Svar");
    own.respondent = people.karen.clone();
    own.author = format!("user:{}", own.respondent.user_id);
    assert_eq!(intake.submit(own).await, Err(IntakeError::NotAcceptingResponses("Draft".into())));
}
on_both_backends!(refused_submits_are_named_and_store_nothing, refusals);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_number_one_hearing_without_gaps() {
    let Some(mut h) = Harness::start(agora_tests_integration::Backend::Postgres).await else { return };
    let people = People::new();
    let hearing = active_hearing(&mut h, &people).await;
    let second_store = h.database.as_ref().expect("postgres").another_store(8).await;
    let (a, _wa) = intake_at(&h, "2026-12-01T12:00:00Z");
    let (b, _wb) = Intake::start(
        second_store,
        files(&h),
        agora_vault::MemoryKeys::shared(),
        clock("2026-12-01T12:00:00Z"),
        IntakeConfig::default(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..20 {
        let intake = if client % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            let mut numbers = Vec::new();
            for n in 0..10 {
                let s = submission(hearing, &format!("r{client}-{n}"), "Svar");
                numbers.push(intake.submit(s).await.expect("accepted").number);
            }
            numbers
        });
    }
    let mut numbers = Vec::new();
    while let Some(result) = tasks.join_next().await {
        numbers.extend(result.expect("client"));
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=200).collect::<Vec<i64>>());
}

/// The response service in a test: an active hearing (owned by Karen), the intake, the app
/// and the read model's runner.
struct Service {
    hearing: Uuid,
    runner: agora_eventstore::consumer::ProjectionRunner,
    intake: Intake,
    app: agora_response::app::ResponseApp,
    owner: agora_response::domain::Actor,
    _worker: tokio::task::JoinHandle<()>,
}

impl Service {
    async fn start(h: &mut Harness, people: &People) -> Self {
        Self::start_with(h, people, agora_vault::MemoryKeys::shared()).await
    }

    /// With the respondents' keys in `keys` (the identity service's vault, for erasure).
    async fn start_with(h: &mut Harness, people: &People, keys: agora_response::personal::Keys) -> Self {
        use agora_response::projections::{self, ResponseListProjection};
        let hearing = active_hearing(h, people).await;
        projections::migrate(&h.store).await.expect("schema");
        let runner =
            agora_eventstore::consumer::ProjectionRunner::new(h.store.clone(), vec![Arc::new(ResponseListProjection)]);
        let now = clock("2026-12-01T12:00:00Z");
        let (intake, _worker) = Intake::start(h.store.clone(), files(h), keys, now.clone(), IntakeConfig::default());
        let app = agora_response::app::ResponseApp::new(h.store.clone(), intake.clone(), now);
        let owner =
            agora_response::domain::Actor { reference: format!("user:{}", people.karen.user_id), administrator: false };
        Self { hearing, runner, intake, app, owner, _worker }
    }
}

async fn moderation(mut h: Harness) {
    use agora_response::domain::{Actor, ModerationStatus, ResponseCommand, ResponseError};
    use agora_response::projections;

    let people = People::new();
    let Service { hearing, runner, intake, app, owner, _worker } = Service::start(&mut h, &people).await;
    let stranger = Actor { reference: "user:stranger".into(), administrator: false };

    let plain = intake.submit(submission(hearing, "a", "Jeg støtter planen.")).await.expect("a");
    let rude = submission(hearing, "b", "Et svar der skal afvises.");
    let rude_author = Actor { reference: rude.author.clone(), administrator: false };
    let rude = intake.submit(rude).await.expect("b");
    let cpr = intake.submit(submission(hearing, "c", "Mit CPR er 070761-4285.")).await.expect("c");
    runner.catch_up().await.expect("read model");
    let (public, total) = app.list_for_hearing(None, hearing, None, 1, 20).await.expect("list");
    assert_eq!((public.len(), total), (0, 0), "nothing is public before a person approves");

    let approve = |id| app.execute(id, &owner, ResponseCommand::Approve);
    assert!(matches!(
        app.execute(plain.response_id, &stranger, ResponseCommand::Approve).await,
        Err(agora_response::app::ResponseAppError::Domain(ResponseError::NotAllowed(_)))
    ));
    approve(plain.response_id).await.expect("approve");
    app.execute(rude.response_id, &owner, ResponseCommand::Decline { reason: "Injurierende".into() })
        .await
        .expect("decline");
    runner.catch_up().await.expect("read model");
    let (public, _) = app.list_for_hearing(None, hearing, None, 1, 20).await.expect("list");
    assert_eq!(public.len(), 1);
    assert_eq!((public[0].number, public[0].author.as_deref()), (plain.number, None), "approved, without the author");
    let (theirs, _) = app.list_for_hearing(Some(&rude_author), hearing, None, 1, 20).await.expect("list");
    assert!(
        theirs.iter().any(|r| r.response_id == rude.response_id && r.status == ModerationStatus::Declined),
        "the author sees their own"
    );
    let (all, total) = app.list_for_hearing(Some(&owner), hearing, None, 1, 20).await.expect("list");
    assert_eq!(total, 3);
    assert!(all.iter().all(|r| r.author.is_some()), "the owner sees who wrote");
    let counts = projections::counts(&h.store, hearing).await.expect("counts");
    assert_eq!((counts.get("Approved"), counts.get("Declined"), counts.get("Pending")), (Some(&1), Some(&1), Some(&1)));
    assert_eq!(app.load(cpr.response_id).await.expect("load").status, ModerationStatus::Pending);

    // Colleagues of the same company see the company's responses; others do not.
    let mut for_company = submission(hearing, "company", "Virksomhedens svar.");
    for_company.on_behalf_of = Some(OnBehalfOf::Company { reference: "company-ref-1".into() });
    let company_receipt = intake.submit(for_company).await.expect("company");
    runner.catch_up().await.expect("read model");
    let colleague = Actor { reference: "user:colleague".into(), administrator: false };
    let (theirs, _) =
        app.list_for_hearing_as(Some(&colleague), Some("company-ref-1"), hearing, None, 1, 20).await.expect("list");
    assert!(
        theirs.iter().any(|r| r.response_id == company_receipt.response_id),
        "a colleague sees the pending company response"
    );
    let (others, _) =
        app.list_for_hearing_as(Some(&colleague), Some("company-ref-2"), hearing, None, 1, 20).await.expect("list");
    assert!(others.iter().all(|r| r.response_id != company_receipt.response_id), "another company does not");

    // Redacted: the public sees the redaction, the owner the sealed original.
    let redact =
        ResponseCommand::Redact { text: "Jeg støtter [fjernet].".into(), reason: "Navn på tredjemand".into() };
    app.execute(plain.response_id, &owner, redact).await.expect("redact");
    runner.catch_up().await.expect("read model");
    app.execute(plain.response_id, &owner, ResponseCommand::Reply { text: "Tak, vi tager det med.".into() })
        .await
        .expect("the owner replies");
    runner.catch_up().await.expect("read model");
    let (public, _) = app.list_for_hearing(None, hearing, None, 1, 20).await.expect("list");
    assert_eq!(public[0].text, "Jeg støtter [fjernet].");
    assert_eq!(public[0].reply.as_deref(), Some("Tak, vi tager det med."), "the reply is public with the response");
    let (all, _) =
        app.list_for_hearing(Some(&owner), hearing, Some(ModerationStatus::Approved), 1, 20).await.expect("list");
    assert_eq!(all[0].text, "Jeg støtter planen.");

    // The owner hides the responses from the public; a reviewer still sees the approved ones.
    let request = h.as_user(
        Some(&people.karen),
        pb::ReviewerRequest { hearing_id: hearing.to_string(), user_id: people.lars.user_id.to_string() },
    );
    h.hearings.add_reviewer(request).await.expect("reviewer");
    learn_hearings(&h).await;
    app.set_settings(&owner, hearing, false, false).await.expect("hidden");
    runner.catch_up().await.expect("settings read model");
    let (public, _) = app.list_for_hearing(None, hearing, None, 1, 20).await.expect("list");
    assert!(public.is_empty(), "hidden from the public");
    let lars = Actor { reference: format!("user:{}", people.lars.user_id), administrator: false };
    let (reviewed, _) = app.list_for_hearing(Some(&lars), hearing, None, 1, 20).await.expect("list");
    assert_eq!(reviewed.iter().map(|r| r.number).collect::<Vec<_>>(), vec![plain.number], "approved ones only");
    assert_eq!((reviewed[0].author.as_deref(), reviewed[0].text.as_str()), (None, "Jeg støtter [fjernet]."));

    // With auto-approval on, a plain response is public at once; one with a CPR number still waits.
    app.set_settings(&owner, hearing, true, true).await.expect("settings");
    assert!(app.set_settings(&stranger, hearing, false, false).await.is_err(), "only the owner");
    runner.catch_up().await.expect("settings read model");
    let auto = intake.submit(submission(hearing, "d", "Fint forslag.")).await.expect("d");
    let held = intake.submit(submission(hearing, "e", "Kontakt mig på 0707614285")).await.expect("e");
    assert_eq!(app.load(auto.response_id).await.expect("load").status, ModerationStatus::Approved);
    assert_eq!(app.load(held.response_id).await.expect("load").status, ModerationStatus::Pending);

    // The author edits (the earlier text stays in the log) and withdraws, only while open.
    let edit =
        ResponseCommand::Edit { text: "Et blidere svar.".into(), now: at("2026-12-02T09:00:00Z"), auto_approve: false };
    let edited = app.execute(rude.response_id, &rude_author, edit).await.expect("edit");
    assert_eq!((edited.text.as_str(), edited.status), ("Et blidere svar.", ModerationStatus::Pending));
    let stream = h.store.read_stream("response", &rude.response_id.to_string(), 0).await.expect("stream");
    let first: agora_response::domain::ResponseEvent = stream[0].decode().expect("an event");
    let agora_response::domain::ResponseEvent::ResponseSubmitted { text, .. } = first else {
        panic!("submitted first")
    };
    assert!(!stream[0].payload.get().contains("afvises"), "the log holds the respondent's text sealed");
    let first_text = agora_vault::reveal_for_display(app.keys().as_ref(), &text).await.expect("opens");
    assert_eq!(first_text, "Et svar der skal afvises.", "the first text is still in the log");
    let late = ResponseCommand::Withdraw { now: at("2026-12-21T09:00:00Z") };
    assert!(matches!(
        app.execute(rude.response_id, &rude_author, late).await,
        Err(agora_response::app::ResponseAppError::Domain(ResponseError::HearingClosed(_)))
    ));
    let withdraw = ResponseCommand::Withdraw { now: at("2026-12-02T10:00:00Z") };
    assert_eq!(
        app.execute(rude.response_id, &rude_author, withdraw).await.expect("withdraw").status,
        ModerationStatus::Withdrawn
    );
    runner.catch_up().await.expect("read model");
    let mine = projections::mine(&h.store, &rude_author.reference).await.expect("mine");
    assert_eq!(mine, vec![(rude.response_id, hearing, rude.number, ModerationStatus::Withdrawn)]);

    // What other systems (and the notification service) learn of it: the facts after each
    // event, never the text.
    use agora_eventstore::relay::IntegrationMapper;
    use prost::Message;
    let mapper = agora_response::integration::ResponseIntegration::new(h.store.clone());
    let mut published = Vec::new();
    for event in h.store.read_log(agora_eventstore::LogPosition::START, 10_000).await.expect("log") {
        if let Some(integration) = mapper.map(&event).await.expect("maps") {
            published.push(integration);
        }
    }
    let of_rude: Vec<&str> = published
        .iter()
        .filter(|e| e.subject == rude.response_id.to_string())
        .map(|e| e.event_type.trim_start_matches("dk.agora.response.v1."))
        .collect();
    assert_eq!(of_rude, ["ResponseSubmitted", "ResponseDeclined", "ResponseEdited", "ResponseWithdrawn"]);
    let declined = published.iter().find(|e| e.event_type.ends_with("ResponseDeclined")).expect("declined");
    assert_eq!(declined.nats_subject, format!("response.v1.declined.{hearing}"));
    let message = agora_proto::response::v1::ResponseDeclined::decode(declined.data.clone()).expect("decodes");
    let state = message.response.expect("the response's state");
    assert_eq!(message.reason, "Injurierende");
    assert_eq!((state.number, state.status.as_str()), (rude.number, "Declined"));
    assert_eq!(format!("user:{}", state.author_id), rude_author.reference);
    assert_eq!(state.receipt_sha256, rude.content_sha256, "the receipt's hash, for the receipt e-mail");
    let company = published
        .iter()
        .find(|e| e.subject == company_receipt.response_id.to_string())
        .map(|e| agora_proto::response::v1::ResponseSubmitted::decode(e.data.clone()).expect("decodes"))
        .and_then(|m| m.response)
        .expect("the company's response");
    assert_eq!(company.on_behalf_of, "company");
    let texts = ["Jeg støtter planen", "afvises", "blidere", "070761", "Virksomhedens svar"];
    for event in &published {
        let bytes = String::from_utf8_lossy(&event.data);
        assert!(texts.iter().all(|t| !bytes.contains(t)), "no response text on the bus: {bytes}");
    }
}
on_both_backends!(moderation_publication_and_authors, moderation);

/// A caseworker approves a response while the read model runs behind (nothing applies it
/// until the approval is written): the list she reads right after the approval's answer
/// already has it among the approved, because the approval waits for the read model.
async fn moderation_read_back(mut h: Harness) {
    use agora_response::domain::{ModerationStatus, ResponseCommand};

    let people = People::new();
    let Service { hearing, runner, intake, owner, _worker, .. } = Service::start(&mut h, &people).await;
    let receipt = intake.submit(submission(hearing, "a", "Jeg støtter planen.")).await.expect("submit");
    runner.catch_up().await.expect("read model");
    let store = h.store.clone().waiting_for_read_models(std::time::Duration::from_secs(60));
    let app = agora_response::app::ResponseApp::new(store, intake.clone(), clock("2026-12-01T12:00:00Z"));
    let caseworker = tokio::spawn(async move {
        app.execute(receipt.response_id, &owner, ResponseCommand::Approve).await.expect("approve");
        let (approved, _) =
            app.list_for_hearing(Some(&owner), hearing, Some(ModerationStatus::Approved), 1, 20).await.expect("list");
        approved.into_iter().map(|r| r.response_id).collect::<Vec<_>>()
    });
    let stream = receipt.response_id.to_string();
    agora_eventstore::testing::eventually(30, "the approval in the log", || async {
        let events = h.store.read_stream(agora_response::domain::AGGREGATE_TYPE, &stream, 0).await.expect("stream");
        events.iter().any(|e| e.event_type == "ResponseApproved").then_some(())
    })
    .await;
    runner.catch_up().await.expect("read model");
    let approved = caseworker.await.expect("caseworker");
    assert_eq!(approved, vec![receipt.response_id], "the list read right after the approval shows it approved");
}
on_both_backends!(a_moderation_shows_in_the_list_read_right_after_it, moderation_read_back);

async fn review_comments(mut h: Harness) {
    use agora_response::app::ResponseApp;
    use agora_response::domain::Actor;
    let people = People::new();
    hearings::migrate(&h.store).await.expect("response schema");
    h.define_reference_data(&people.admin).await;
    let id = h.draft(&people.karen, "lokalplan", "Kladde", "2026-12-10", "2026-12-30").await;
    let request = h.as_user(
        Some(&people.karen),
        pb::ReviewerRequest { hearing_id: id.clone(), user_id: people.lars.user_id.to_string() },
    );
    h.hearings.add_reviewer(request).await.expect("reviewer");
    learn_hearings(&h).await;
    let hearing = Uuid::parse_str(&id).expect("uuid");
    let now = clock("2026-12-01T12:00:00Z");
    let (intake, _w) = Intake::start(
        h.store.clone(),
        files(&h),
        agora_vault::MemoryKeys::shared(),
        now.clone(),
        IntakeConfig::default(),
    );
    let app = ResponseApp::new(h.store.clone(), intake, now);
    let lars = Actor { reference: format!("user:{}", people.lars.user_id), administrator: false };
    let erik = Actor { reference: format!("user:{}", people.erik.user_id), administrator: false };
    app.add_review_comment(&lars, hearing, "Afsnit 2 bør omskrives.").await.expect("the reviewer comments");
    assert!(app.add_review_comment(&erik, hearing, "Jeg er ikke reviewer.").await.is_err());
    assert!(app.add_review_comment(&lars, hearing, " ").await.is_err());
    let comments = app.review_comments(&lars, hearing).await.expect("comments");
    assert_eq!(comments.len(), 1);
    assert_eq!(
        (comments[0].by.as_str(), comments[0].text.as_str()),
        (lars.reference.as_str(), "Afsnit 2 bør omskrives.")
    );
    assert!(app.review_comments(&erik, hearing).await.is_err(), "others do not read them");
    // Once published, review is over.
    let request = h.as_user(Some(&people.karen), pb::HearingRef { hearing_id: id });
    h.hearings.publish_hearing(request).await.expect("publish");
    learn_hearings(&h).await;
    assert!(app.add_review_comment(&lars, hearing, "For sent.").await.is_err());
}
on_both_backends!(reviewers_comment_on_drafts, review_comments);

/// A clamd double speaking the INSTREAM protocol: finds the EICAR test string.
async fn clamd_double() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut command = [0u8; 10];
                if stream.read_exact(&mut command).await.is_err() || &command != b"zINSTREAM\0" {
                    let _ = stream.write_all(b"UNKNOWN COMMAND\0").await;
                    return;
                }
                let mut content = Vec::new();
                loop {
                    let mut length = [0u8; 4];
                    if stream.read_exact(&mut length).await.is_err() {
                        return;
                    }
                    let length = u32::from_be_bytes(length) as usize;
                    if length == 0 {
                        break;
                    }
                    let mut chunk = vec![0u8; length];
                    if stream.read_exact(&mut chunk).await.is_err() {
                        return;
                    }
                    content.extend(chunk);
                }
                let eicar = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
                let found = content.windows(eicar.len()).any(|w| w == eicar);
                let reply: &[u8] = if found { b"stream: Eicar-Test-Signature FOUND\0" } else { b"stream: OK\0" };
                let _ = stream.write_all(reply).await;
            });
        }
    });
    address
}

async fn attachments(mut h: Harness) {
    use agora_response::files::{Attachments, Clamd, Upload};
    let people = People::new();
    // The hearing type allows three PDFs of 4 KiB (see the harness's reference data).
    let hearing = active_hearing_of_type(&mut h, &people, "kort").await;
    let store = object_store::local::LocalFileSystem::new_with_prefix(h.files_dir.path()).expect("files");
    let files = Attachments { store: Arc::new(store), scanner: Some(Clamd { address: clamd_double().await }) };
    let (intake, _w) = Intake::start(
        h.store.clone(),
        files,
        agora_vault::MemoryKeys::shared(),
        clock("2026-12-01T12:00:00Z"),
        IntakeConfig::default(),
    );
    let stored = || stored_attachments(&h);
    let pdf = |name: &str| Upload {
        name: name.into(),
        content: bytes::Bytes::from_static(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\n%%EOF\n"),
    };
    let with = |key: &str, uploads: Vec<Upload>| {
        let mut s = submission(hearing, key, "Se vedhæftede.");
        s.attachments = uploads;
        s
    };

    let receipt = intake.submit(with("ok", vec![pdf("../indsigelse.pdf")])).await.expect("a PDF is fine");
    assert_eq!(stored(), 1);
    let events = h.store.read_stream("response", &receipt.response_id.to_string(), 0).await.expect("stream");
    let payload = events[0].payload_value();
    let attachment = &payload["data"]["attachments"][0];
    // The name is the respondent's: sealed for them in the log.
    let name = attachment["name"].as_str().expect("a name");
    assert!(agora_vault::is_sealed(name), "{name}");
    let name = agora_vault::reveal_for_display(intake.keys().as_ref(), name).await.expect("opens");
    assert_eq!((name.as_str(), attachment["content_type"].as_str()), ("indsigelse.pdf", Some("application/pdf")));

    let exe = Upload {
        name: "plan.pdf".into(),
        content: bytes::Bytes::from_static(b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff"),
    };
    let refused = intake.submit(with("exe", vec![pdf("a.pdf"), exe])).await.expect_err("an executable");
    assert!(refused.to_string().contains("plan.pdf") && refused.to_string().contains("not allowed"), "{refused}");
    let big = Upload {
        name: "stor.pdf".into(),
        content: bytes::Bytes::from([b"%PDF-1.7\n".as_slice(), &[b'x'; 5000]].concat()),
    };
    let refused = intake.submit(with("big", vec![big])).await.expect_err("too large");
    assert!(refused.to_string().contains("stor.pdf") && refused.to_string().contains("at most 4096"), "{refused}");
    let refused =
        intake.submit(with("many", (0..4).map(|n| pdf(&format!("{n}.pdf"))).collect())).await.expect_err("too many");
    assert!(refused.to_string().contains("at most 3"), "{refused}");
    let mut infected = b"%PDF-1.7\n".to_vec();
    infected.extend_from_slice(b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*");
    let virus = Upload { name: "virus.pdf".into(), content: infected.into() };
    let refused = intake.submit(with("virus", vec![virus])).await.expect_err("infected");
    assert!(refused.to_string().contains("virus.pdf") && refused.to_string().contains("Eicar"), "{refused}");
    assert_eq!(stored(), 1, "nothing of a refused submit is kept");

    // A retry with the same files gets the first receipt and keeps no second copy.
    assert_eq!(intake.submit(with("ok", vec![pdf("../indsigelse.pdf")])).await.expect("retry"), receipt);
    assert_eq!(stored(), 1);
    let next = intake.submit(with("second", vec![])).await.expect("no files is fine");
    assert_eq!(next.number, receipt.number + 1, "refused submits took no number");
    let png = Upload { name: "kort.png".into(), content: bytes::Bytes::from_static(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR") };
    let refused = intake.submit(with("png", vec![png])).await.expect_err("this type takes only PDFs");
    assert!(refused.to_string().contains("kort.png: files of type image/png are not allowed"), "{refused}");
}
on_both_backends!(attachments_are_checked_scanned_and_never_half_kept, attachments);

/// The text rules travel from the hearing type through the hearing's integration events.
async fn rules_per_hearing_type(mut h: Harness) {
    use agora_response::files::Upload;
    let people = People::new();
    let short = active_hearing_of_type(&mut h, &people, "kort").await;
    let long = publish_hearing(&mut h, &people, "lokalplan").await;
    let (intake, _w) = intake_at(&h, "2026-12-01T12:00:00Z");
    let pdf = || Upload { name: "bilag.pdf".into(), content: bytes::Bytes::from_static(b"%PDF-1.7\n%%EOF\n") };

    let refused = intake.submit(submission(short, "a", &"x".repeat(501))).await.expect_err("over 500");
    assert_eq!(refused.to_string(), "invalid response: the text is 501 characters; at most 500 are allowed");
    intake.submit(submission(long, "b", &"x".repeat(501))).await.expect("the other type allows 50,000");

    let mut files_only = submission(short, "c", "");
    files_only.attachments = vec![pdf()];
    intake.submit(files_only).await.expect("this type takes files alone");
    let mut files_only = submission(long, "d", "");
    files_only.attachments = vec![pdf()];
    let refused = intake.submit(files_only).await.expect_err("this type needs a text");
    assert!(refused.to_string().contains("need a text"), "{refused}");
    let refused = intake.submit(submission(short, "e", "  ")).await.expect_err("nothing at all");
    assert!(refused.to_string().contains("write a text or attach a file"), "{refused}");
}
on_both_backends!(text_and_file_rules_come_from_the_hearing_type, rules_per_hearing_type);

use agora_documents::testing::pdf_text;

async fn collect(export: agora_response::exports::Export) -> Vec<u8> {
    let mut chunks = export.chunks;
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.recv().await {
        bytes.extend_from_slice(&chunk);
    }
    export.done.await.expect("export task").expect("export");
    bytes
}

fn zip_entry(bytes: &[u8], name: &str) -> Vec<u8> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a readable zip");
    let mut entry = zip.by_name(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut out).expect("entry");
    out
}

async fn exports(mut h: Harness) {
    use agora_response::app::ResponseAppError;
    use agora_response::domain::{Actor, ResponseCommand, ResponseError};
    use agora_response::exports::{ExportKind, Selection, export};
    use agora_response::files::Upload;

    let people = People::new();
    let Service { hearing, runner, intake, app, owner, _worker } = Service::start(&mut h, &people).await;

    let pdf = |text: &str| bytes::Bytes::from(format!("%PDF-1.7\n% {text}\n1 0 obj <<>> endobj\n%%EOF\n").into_bytes());
    let mut first = submission(hearing, "1", "Æbler og pærer på Østerbro: vi ønsker flere træer.");
    first.attachments = vec![
        Upload { name: "indsigelse æøå.pdf".into(), content: pdf("første") },
        Upload { name: "indsigelse æøå.pdf".into(), content: pdf("anden") },
    ];
    first.on_behalf_of = Some(OnBehalfOf::Organisation { name: "Grundejerforeningen Åløkken".into() });
    let first = intake.submit(first).await.expect("first");
    let second = intake.submit(submission(hearing, "2", "Nej tak til højhuse ved Søerne.")).await.expect("second");
    let mut withdrawn = submission(hearing, "3", "Det fortryder jeg.");
    withdrawn.attachments = vec![Upload { name: "fortrudt.pdf".into(), content: pdf("fortrudt") }];
    let withdrawn_author = Actor { reference: withdrawn.author.clone(), administrator: false };
    let withdrawn = intake.submit(withdrawn).await.expect("third");
    app.execute(first.response_id, &owner, ResponseCommand::Approve).await.expect("approve");
    app.execute(second.response_id, &owner, ResponseCommand::Decline { reason: "Uden for emnet".into() })
        .await
        .expect("decline");
    app.execute(
        withdrawn.response_id,
        &withdrawn_author,
        ResponseCommand::Withdraw { now: at("2026-12-02T10:00:00Z") },
    )
    .await
    .expect("withdraw");
    runner.catch_up().await.expect("read model");

    // Only the owner (or an administrator) exports.
    let stranger = Actor { reference: "user:stranger".into(), administrator: false };
    assert!(matches!(
        export(&app, &stranger, hearing, ExportKind::ResponsesWorkbook, Selection::All).await,
        Err(ResponseAppError::Domain(ResponseError::NotAllowed(_)))
    ));
    assert!(matches!(
        export(&app, &owner, Uuid::now_v7(), ExportKind::ResponsesWorkbook, Selection::All).await,
        Err(ResponseAppError::Domain(ResponseError::NotFound))
    ));

    // Excel: every response, withdrawn ones marked, Danish text intact.
    let xlsx =
        collect(export(&app, &owner, hearing, ExportKind::ResponsesWorkbook, Selection::All).await.expect("x")).await;
    let strings = String::from_utf8(zip_entry(&xlsx, "xl/sharedStrings.xml")).expect("utf-8");
    for expected in ["Æbler og pærer på Østerbro", "Grundejerforeningen Åløkken", "Uden for emnet", "Trukket tilbage"]
    {
        assert!(strings.contains(expected), "{expected} in the responses workbook");
    }
    let sheet = String::from_utf8(zip_entry(&xlsx, "xl/worksheets/sheet1.xml")).expect("utf-8");
    assert_eq!(sheet.matches("<row ").count(), 4, "a header and three responses");
    let approved =
        collect(export(&app, &owner, hearing, ExportKind::ResponsesWorkbook, Selection::Approved).await.expect("x"))
            .await;
    let sheet = String::from_utf8(zip_entry(&approved, "xl/worksheets/sheet1.xml")).expect("utf-8");
    assert_eq!(sheet.matches("<row ").count(), 2, "a header and the approved response");
    let people_xlsx =
        collect(export(&app, &owner, hearing, ExportKind::RespondentsWorkbook, Selection::All).await.expect("x")).await;
    let strings = String::from_utf8(zip_entry(&people_xlsx, "xl/sharedStrings.xml")).expect("utf-8");
    assert!(strings.contains("Organisation: Grundejerforeningen Åløkken") && strings.contains("Person"), "{strings}");
    let sheet = String::from_utf8(zip_entry(&people_xlsx, "xl/worksheets/sheet1.xml")).expect("utf-8");
    assert_eq!(sheet.matches("<row ").count(), 4, "a header and three respondents");

    // PDF: the hearing, then the responses but the withdrawn one, readable with æ, ø and å.
    let pdf_bytes =
        collect(export(&app, &owner, hearing, ExportKind::HearingPdf, Selection::All).await.expect("pdf")).await;
    assert!(pdf_bytes.starts_with(b"%PDF-"));
    if let Some(text) = pdf_text(&pdf_bytes) {
        for expected in [
            "Lokalplan",
            "Høringssvar nr. 1",
            "Æbler og pærer på Østerbro",
            "Nej tak til højhuse ved Søerne",
            "Uden for emnet",
            "indsigelse æøå.pdf",
        ] {
            assert!(text.contains(expected), "'{expected}' in the PDF:\n{text}");
        }
        assert!(!text.contains("Det fortryder jeg"), "a withdrawn response is not in the PDF");
    }
    let only =
        collect(export(&app, &owner, hearing, ExportKind::ResponsesPdf, Selection::Approved).await.expect("pdf")).await;
    if let Some(text) = pdf_text(&only) {
        assert!(text.contains("Høringssvar nr. 1") && !text.contains("Høringssvar nr. 2"), "{text}");
    }

    // Zip: every attachment of the responses, in a folder per number, same bytes.
    let zip_bytes =
        collect(export(&app, &owner, hearing, ExportKind::AttachmentsZip, Selection::All).await.expect("zip")).await;
    let archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes.as_slice())).expect("zip");
    let mut names: Vec<String> = archive.file_names().map(|n| n.expect("name").to_string()).collect();
    names.sort();
    let n = first.number;
    assert_eq!(names, vec![format!("{n:04}/indsigelse æøå (2).pdf"), format!("{n:04}/indsigelse æøå.pdf")]);
    assert_eq!(zip_entry(&zip_bytes, &format!("{n:04}/indsigelse æøå (2).pdf")), pdf("anden").to_vec());
}
on_both_backends!(owner_exports_workbooks_pdfs_and_a_zip_of_attachments, exports);

/// How many response attachments are in the harness's files directory.
fn stored_attachments(h: &Harness) -> usize {
    let dir = h.files_dir.path().join("responses").join("attachments");
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// The identity service on the harness's store, with the development login.
async fn identity(h: &Harness) -> agora_identity::app::IdentityApp {
    agora_identity::store::migrate(&h.store).await.expect("identity tables");
    let master = agora_vault::MasterKey::generate("test").expect("master key").0;
    let settings = agora_identity::app::IdentitySettings {
        dev_login: true,
        ..agora_identity::app::IdentitySettings::new("agora-dev", "agora", master, b"0123456789abcdef0123456789abcdef")
    };
    agora_identity::app::IdentityApp::new(h.store.clone(), settings, Vec::new(), Arc::new(chrono::Utc::now))
        .await
        .expect("identity")
}

/// Every stored event's payload, as text.
async fn whole_log(h: &Harness) -> String {
    let events = h.store.read_log(agora_eventstore::LogPosition::START, 100_000).await.expect("log");
    events.iter().map(|e| e.payload.get().to_string()).collect::<Vec<_>>().join("\n")
}

async fn erasure(mut h: Harness) {
    use agora_response::domain::ResponseCommand;
    use agora_response::exports::{ExportKind, Selection, export};
    use agora_response::files::Upload;
    use agora_vault::ERASED;

    let people = People::new();
    let identity = identity(&h).await;
    let admin =
        identity.verifier().verify(&identity.dev_login("admin").await.expect("admin").access_token).expect("token");
    let birgitte = identity.dev_login("birgitte").await.expect("login").user.user_id;
    let carl = identity.dev_login("carl").await.expect("login").user.user_id;
    let keys: agora_response::personal::Keys = Arc::new(identity.vault.clone());
    let Service { hearing, runner, intake, app, owner, _worker } = Service::start_with(&mut h, &people, keys).await;

    let mut hers = submission(hearing, "hers", "Birgitte Borger mener: flere træer på Østerbro.");
    hers.author = format!("user:{birgitte}");
    hers.on_behalf_of = Some(OnBehalfOf::Organisation { name: "Birgittes Haveforening".into() });
    hers.attachments = vec![Upload {
        name: "birgittes-brev.pdf".into(),
        content: bytes::Bytes::from_static(b"%PDF-1.7\n% Birgittes brev\n1 0 obj <<>> endobj\n%%EOF\n"),
    }];
    let hers = intake.submit(hers).await.expect("her response");
    let mut his = submission(hearing, "his", "Carl Citizen siger nej tak til højhuse.");
    his.author = format!("user:{carl}");
    let his = intake.submit(his).await.expect("his response");
    for id in [hers.response_id, his.response_id] {
        app.execute(id, &owner, ResponseCommand::Approve).await.expect("approve");
    }
    runner.catch_up().await.expect("read model");
    let workbook = |selection| export(&app, &owner, hearing, ExportKind::ResponsesWorkbook, selection);
    let before = collect(workbook(Selection::All).await.expect("export")).await;
    let strings = String::from_utf8(zip_entry(&before, "xl/sharedStrings.xml")).expect("utf-8");
    assert!(strings.contains("Birgitte Borger mener") && strings.contains("Birgittes Haveforening"), "{strings}");
    let log = whole_log(&h).await;
    assert!(!log.contains("Birgitte") && !log.contains("flere træer"), "the log never held her data in clear");

    // The read-access log: the owner listed and exported her response; an administrator sees it.
    app.list_for_hearing(Some(&owner), hearing, None, 1, 20).await.expect("list");
    app.list_for_hearing(None, hearing, None, 1, 20).await.expect("the public's list is no access to identities");
    runner.catch_up().await.expect("read model");
    let administrator =
        agora_response::domain::Actor { reference: format!("user:{}", admin.user_id), administrator: true };
    let seen = app.data_access(&administrator, &format!("user:{birgitte}")).await.expect("access log");
    let mut purposes: Vec<&str> = seen.iter().map(|a| a.purpose.as_str()).collect();
    purposes.sort_unstable();
    assert_eq!(purposes, vec!["export:ResponsesWorkbook", "list"], "one export, one listing: {seen:?}");
    assert!(seen.iter().all(|a| a.viewer == owner.reference && a.hearing_id == hearing));
    assert!(app.data_access(&owner, &format!("user:{birgitte}")).await.is_err(), "administrators only");

    // She is erased: her keys are destroyed, the log is left as it was.
    assert_eq!(stored_attachments(&h), 1);
    identity.erase(&admin, birgitte, "the person asked (GDPR art. 17)").await.expect("erase");
    // The response service handles the erasure event: her files are deleted.
    let erasures = LocalIntegrationFeed {
        store: h.store.clone(),
        mapper: Arc::new(agora_identity::integration::IdentityIntegration::new(h.store.clone())),
        handler: Arc::new(agora_response::erasure::ErasureHandler { app: app.clone() }),
    };
    assert_eq!(erasures.catch_up().await.expect("erasure event"), 1);
    assert_eq!(stored_attachments(&h), 0, "her attachment is deleted");
    assert_eq!(erasures.catch_up().await.expect("again"), 0, "handled once");

    // Read models, as the owner and the public see them.
    for viewer in [Some(&owner), None] {
        let (list, _) = app.list_for_hearing(viewer, hearing, None, 1, 20).await.expect("list");
        let hers_shown = list.iter().find(|r| r.response_id == hers.response_id).expect("her response stays, erased");
        assert_eq!(hers_shown.text, ERASED);
        assert!(matches!(&hers_shown.on_behalf_of, Some(OnBehalfOf::Organisation { name }) if name == ERASED));
        let his_shown = list.iter().find(|r| r.response_id == his.response_id).expect("his");
        assert_eq!(his_shown.text, "Carl Citizen siger nej tak til højhuse.");
    }
    let loaded = app.load(hers.response_id).await.expect("load");
    assert!(loaded.author_erased && loaded.text == ERASED && loaded.attachments[0].name == ERASED);

    // Exports: the workbooks, the PDF and the zip of attachments.
    for kind in [ExportKind::ResponsesWorkbook, ExportKind::RespondentsWorkbook] {
        let xlsx = collect(export(&app, &owner, hearing, kind, Selection::All).await.expect("export")).await;
        let strings = String::from_utf8(zip_entry(&xlsx, "xl/sharedStrings.xml")).expect("utf-8");
        for gone in ["Birgitte", "Haveforening", "birgittes-brev", "flere træer"] {
            assert!(!strings.contains(gone), "{gone} is still in the {kind:?} export: {strings}");
        }
    }
    let pdf = collect(export(&app, &owner, hearing, ExportKind::HearingPdf, Selection::All).await.expect("pdf")).await;
    if let Some(text) = pdf_text(&pdf) {
        assert!(!text.contains("Birgitte") && !text.contains("flere træer"), "{text}");
        assert!(text.contains("Carl Citizen siger nej tak"), "{text}");
    }
    let zip =
        collect(export(&app, &owner, hearing, ExportKind::AttachmentsZip, Selection::All).await.expect("zip")).await;
    let archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).expect("zip");
    assert_eq!(archive.len(), 0, "her files left the export with her");

    // The identity service's own pages.
    runner.catch_up().await.expect("read model");
    let users = identity.list_users(&admin).await.expect("users");
    assert!(users.iter().all(|u| !u.name.contains("Birgitte")), "{users:?}");

    // A rebuilt read model does not bring her back, and the log still verifies.
    let projection = runner.projections()[0].clone();
    runner.rebuild(projection.as_ref(), |_, _| {}).await.expect("rebuild");
    let (list, _) = app.list_for_hearing(Some(&owner), hearing, None, 1, 20).await.expect("list");
    assert!(list.iter().all(|r| !r.text.contains("Birgitte")));
    assert!(!whole_log(&h).await.contains("Birgitte"));
    let report = agora_eventstore::audit::verify(&h.store).await.expect("audit");
    assert!(report.intact(), "{:?}", report.findings);

    // Nothing new is kept for her: a token still in her hands cannot respond.
    let mut again = submission(hearing, "again", "Jeg er her igen.");
    again.author = format!("user:{birgitte}");
    let refused = intake.submit(again).await.expect_err("erased");
    assert!(refused.to_string().contains("erased"), "{refused}");
}

on_both_backends!(an_erased_citizen_is_gone_from_read_models_exports_and_pages, erasure);

async fn retention(mut h: Harness) {
    use agora_response::files::Upload;
    use agora_vault::ERASED;

    let people = People::new();
    let Service { hearing, runner, intake, app, owner, _worker } = Service::start(&mut h, &people).await;
    let mut with_file = submission(hearing, "r1", "Et svar med et bilag.");
    with_file.attachments = vec![Upload {
        name: "bilag.pdf".into(),
        content: bytes::Bytes::from_static(b"%PDF-1.7\n% bilag\n1 0 obj <<>> endobj\n%%EOF\n"),
    }];
    let first = intake.submit(with_file).await.expect("first");
    let second = intake.submit(submission(hearing, "r2", "Et svar uden.")).await.expect("second");
    runner.catch_up().await.expect("read model");
    assert_eq!(stored_attachments(&h), 1);

    // Nothing is due while the hearing runs.
    let far = chrono::Utc::now() + chrono::Duration::days(2000);
    assert!(agora_response::retention::apply(&app, 730, far).await.expect("retention").is_empty());

    // The hearing closes and is concluded.
    h.settle().await;
    h.set_now("2026-12-20T23:00:00Z");
    assert_eq!(agora_hearing::scheduler::tick(&h.app).await.expect("tick"), 1, "the deadline passed");
    h.settle().await;
    let request = h.as_user(
        Some(&people.karen),
        pb::ConcludeHearingRequest { hearing_id: hearing.to_string(), conclusion: Some("Vedtaget.".into()) },
    );
    h.hearings.conclude_hearing(request).await.expect("conclude");
    learn_hearings(&h).await;

    let later = chrono::Utc::now() + chrono::Duration::days(731);
    assert!(
        agora_response::retention::apply(&app, 730, later).await.expect("retention").is_empty(),
        "not before the hearing is filed in the records system"
    );
    // The records service says the hearing is journalized.
    let filed = agora_proto::records::v1::HearingJournalized {
        hearing_id: hearing.to_string(),
        case_number: "27.00.00-P20-1-26".into(),
        journalized_at: chrono::Utc::now().to_rfc3339(),
        documents: 3,
    };
    let event = agora_eventstore::jetstream::IntegrationEvent {
        id: Uuid::now_v7(),
        event_type: "dk.agora.records.v1.HearingJournalized".into(),
        source: "agora/records".into(),
        subject: hearing.to_string(),
        nats_subject: format!("records.v1.hearing_journalized.{hearing}"),
        time: chrono::Utc::now(),
        sequence: 1,
        position: 1,
        hash: String::new(),
        traceparent: None,
        data: prost::Message::encode_to_vec(&filed).into(),
    };
    let journalized = agora_response::hearings::JournalizationHandler;
    assert!(agora_eventstore::jetstream::handle_once(&h.store, &journalized, &event).await.expect("handled"));
    let soon = chrono::Utc::now() + chrono::Duration::days(729);
    assert!(agora_response::retention::apply(&app, 730, soon).await.expect("retention").is_empty(), "not yet");
    let applied = agora_response::retention::apply(&app, 730, later).await.expect("retention");
    assert_eq!(applied.len(), 1);
    assert_eq!((applied[0].hearing_id, applied[0].keys_destroyed, applied[0].attachments_deleted), (hearing, 2, 1));
    assert_eq!(stored_attachments(&h), 0, "the attachments are deleted");
    for id in [first.response_id, second.response_id] {
        let response = app.load(id).await.expect("the response stays");
        assert_eq!(response.text, ERASED);
    }
    let (list, total) = app.list_for_hearing(Some(&owner), hearing, None, 1, 20).await.expect("list");
    assert_eq!(total, 2, "numbers and counts hold");
    assert!(list.iter().all(|r| r.text == ERASED));
    assert!(agora_response::retention::apply(&app, 730, later).await.expect("again").is_empty(), "once");
    let recorded = h
        .store
        .read_stream(agora_response::retention::RETENTION_AGGREGATE, &hearing.to_string(), 0)
        .await
        .expect("stream");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].event_type, "RespondentDataErased");
}

on_both_backends!(retention_erases_respondents_data_of_long_concluded_hearings, retention);
