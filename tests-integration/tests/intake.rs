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
    hearings::migrate(&h.store).await.expect("response schema");
    h.define_reference_data(&people.admin).await;
    let id = h.draft(&people.karen, "lokalplan", "Lokalplan", "2026-11-20", "2026-12-20").await;
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

fn clock(time: &str) -> Clock {
    let time = at(time);
    Arc::new(move || time)
}

fn submission(hearing_id: Uuid, key: &str, text: &str) -> Submission {
    Submission {
        idempotency_key: key.into(),
        hearing_id,
        author: format!("user:{}", Uuid::now_v7()),
        on_behalf_of: None,
        text: text.into(),
        terms_version: "2026-01".into(),
        registered_by_owner: false,
    }
}

async fn surge(mut h: Harness) {
    let people = People::new();
    let hearing = active_hearing(&mut h, &people).await;
    let (intake, _worker) = Intake::start(h.store.clone(), clock("2026-12-01T12:00:00Z"), IntakeConfig::default());
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
    let (count, _) = h.store.log_extent().await.expect("extent");
    let responses: Vec<_> = h.store.read_log(agora_eventstore::LogPosition::START, count).await.expect("log");
    assert_eq!(
        responses.iter().filter(|e| e.aggregate_type == "response").count(),
        240,
        "every acknowledged response, once"
    );

    // A retry arriving at another replica (another intake on the same store) too.
    let (other, _other_worker) = Intake::start(h.store.clone(), clock("2026-12-01T12:05:00Z"), IntakeConfig::default());
    assert_eq!(other.submit(first).await.expect("retry elsewhere"), receipt);
    let next = other.submit(submission(hearing, "late-but-in-time", "Et svar mere.")).await.expect("accepted");
    assert_eq!(next.number, 241);
}
on_both_backends!(surge_of_submits_gets_gapless_numbers, surge);

async fn refusals(mut h: Harness) {
    let people = People::new();
    let hearing = active_hearing(&mut h, &people).await;
    // The scheduler has not closed it yet, but the deadline has passed: refused, naming the time.
    let (late, _w) = Intake::start(h.store.clone(), clock("2026-12-20T23:00:01Z"), IntakeConfig::default());
    let error = late.submit(submission(hearing, "late", "For sent")).await.expect_err("closed");
    assert_eq!(error.to_string(), "the hearing closed for responses at 2026-12-20T23:00:00Z");

    let (intake, _w) = Intake::start(h.store.clone(), clock("2026-12-01T12:00:00Z"), IntakeConfig::default());
    let unknown = Uuid::now_v7();
    assert_eq!(intake.submit(submission(unknown, "x", "Svar")).await, Err(IntakeError::HearingNotFound(unknown)));
    assert!(matches!(intake.submit(submission(hearing, "e", "  ")).await, Err(IntakeError::Invalid(_))));
    assert!(
        matches!(intake.submit(submission(hearing, "", "Svar")).await, Err(IntakeError::Invalid(m)) if m.contains("idempotency key"))
    );
    let mut org = submission(hearing, "org", "Svar fra foreningen");
    org.on_behalf_of = Some(OnBehalfOf::Organisation { name: "Grundejerforeningen".into() });
    assert_eq!(intake.submit(org).await.expect("accepted").number, 1, "refused submits took no number");

    // A draft does not take responses.
    let draft = h.draft(&people.karen, "lokalplan", "Kladde", "2026-12-10", "2026-12-30").await;
    learn_hearings(&h).await;
    let draft = Uuid::parse_str(&draft).expect("uuid");
    assert_eq!(
        intake.submit(submission(draft, "d", "Svar")).await,
        Err(IntakeError::NotAcceptingResponses("Draft".into()))
    );
}
on_both_backends!(refused_submits_are_named_and_store_nothing, refusals);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_number_one_hearing_without_gaps() {
    let Some(mut h) = Harness::start(agora_tests_integration::Backend::Postgres).await else { return };
    let people = People::new();
    let hearing = active_hearing(&mut h, &people).await;
    let second_store = h.database.as_ref().expect("postgres").another_store(8).await;
    let (a, _wa) = Intake::start(h.store.clone(), clock("2026-12-01T12:00:00Z"), IntakeConfig::default());
    let (b, _wb) = Intake::start(second_store, clock("2026-12-01T12:00:00Z"), IntakeConfig::default());
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
