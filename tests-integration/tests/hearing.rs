//! The hearing service over gRPC, end to end, on SQLite and on PostgreSQL.

use agora_tests_integration::{Harness, People, complete_update, on_both_backends, pb};
use tonic::Code;

fn code_and_message(result: Result<impl Sized, tonic::Status>) -> (Code, String) {
    match result {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), status.message().to_string()),
    }
}

fn reassign(
    h: &Harness,
    id: &str,
    who: &agora_auth::Principal,
    to: &agora_auth::Principal,
) -> tonic::Request<pb::ReassignOwnerRequest> {
    h.as_user(Some(who), pb::ReassignOwnerRequest { hearing_id: id.to_string(), owner_id: to.user_id.to_string() })
}

async fn lifecycle(mut h: Harness) {
    let people = People::new();
    h.define_reference_data(&people.admin).await;
    let id = h.draft(&people.karen, "lokalplan", "Lokalplan for Bytorvet", "2026-12-01", "2026-12-20").await;

    // Concluding a draft is a transition the state does not allow: the state is named.
    let request = h.as_user(
        Some(&people.karen),
        pb::ConcludeHearingRequest { hearing_id: id.clone(), conclusion: Some("x".into()) },
    );
    let (code, message) = code_and_message(h.hearings.conclude_hearing(request).await);
    assert_eq!(code, Code::FailedPrecondition);
    assert!(message.contains("Draft"), "{message}");

    // A colleague who may not even see the draft is told it does not exist; the
    // anonymous public is asked to log in.
    let request = h.as_user(Some(&people.lars), pb::HearingRef { hearing_id: id.clone() });
    assert_eq!(code_and_message(h.hearings.publish_hearing(request).await).0, Code::NotFound);
    let request = h.as_user(None, pb::HearingRef { hearing_id: id.clone() });
    assert_eq!(code_and_message(h.hearings.publish_hearing(request).await).0, Code::Unauthenticated);

    let request = h.as_user(Some(&people.karen), pb::HearingRef { hearing_id: id.clone() });
    let hearing = h.hearings.publish_hearing(request).await.expect("owner publishes").into_inner();
    assert_eq!(hearing.status, pb::HearingStatus::AwaitingStartDate as i32);
    assert_eq!(hearing.opens_at, "2026-11-30T23:00:00Z", "the start date begins at Copenhagen midnight");
    // Published, the colleague sees it but may not change it.
    let request = h.as_user(Some(&people.lars), complete_update(&id, "Kapret titel", "2026-12-01", "2026-12-20"));
    assert_eq!(code_and_message(h.hearings.update_hearing(request).await).0, Code::PermissionDenied);
    // Only an administrator hands a hearing to another owner; then the new owner manages it.
    let request = reassign(&h, &id, &people.karen, &people.lars);
    assert_eq!(code_and_message(h.hearings.reassign_owner(request).await).0, Code::PermissionDenied);
    let request = reassign(&h, &id, &people.admin, &people.lars);
    h.hearings.reassign_owner(request).await.expect("administrator reassigns");
    let summary = [("summary".to_string(), "Nyt resumé fra Lars.".to_string())].into();
    let request = h.as_user(
        Some(&people.lars),
        pb::UpdateHearingRequest { hearing_id: id.clone(), fields: summary, ..Default::default() },
    );
    h.hearings.update_hearing(request).await.expect("the new owner changes it");
    let request = reassign(&h, &id, &people.admin, &people.karen);
    h.hearings.reassign_owner(request).await.expect("and back");

    // The clock moves the hearing along: start date, then past the deadline.
    h.settle().await;
    h.set_now("2026-12-01T08:00:00Z");
    assert_eq!(agora_hearing::scheduler::tick(&h.app).await.expect("tick"), 1);
    h.settle().await;
    h.set_now("2026-12-20T22:59:59Z");
    assert_eq!(agora_hearing::scheduler::tick(&h.app).await.expect("tick"), 0, "the deadline day is included");
    h.set_now("2026-12-20T23:00:00Z");
    assert_eq!(agora_hearing::scheduler::tick(&h.app).await.expect("tick"), 1);
    let request = h.as_user(None, pb::GetHearingRequest { hearing_id: id.clone() });
    let hearing = h.hearings.get_hearing(request).await.expect("the public sees it").into_inner();
    assert_eq!(hearing.status, pb::HearingStatus::AwaitingConclusion as i32);
    assert!(hearing.invitees.is_empty() && hearing.reviewer_ids.is_empty(), "the public does not see who is involved");

    let request = h.as_user(
        Some(&people.karen),
        pb::ConcludeHearingRequest { hearing_id: id.clone(), conclusion: Some("Planen vedtages.".into()) },
    );
    let hearing = h.hearings.conclude_hearing(request).await.expect("conclude").into_inner();
    assert_eq!(hearing.status, pb::HearingStatus::Concluded as i32);
    assert_eq!(hearing.fields.get("conclusion").map(String::as_str), Some("Planen vedtages."));

    // Concluded is final; an owner may no longer delete it, an administrator may.
    let request = h.as_user(Some(&people.karen), pb::HearingRef { hearing_id: id.clone() });
    assert_eq!(code_and_message(h.hearings.delete_hearing(request).await).0, Code::FailedPrecondition);

    // The audit trail: who did what, in order, chained.
    let request = h.as_user(Some(&people.karen), pb::HearingRef { hearing_id: id.clone() });
    let trail = h.hearings.get_audit_trail(request).await.expect("trail").into_inner().entries;
    let types: Vec<&str> = trail.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "HearingCreated",
            "HearingUpdated",
            "HearingDraftReady",
            "HearingPublished",
            "OwnerReassigned",
            "HearingUpdated",
            "OwnerReassigned",
            "HearingStarted",
            "HearingClosed",
            "HearingConcluded"
        ]
    );
    let karen = format!("user:{}", people.karen.user_id);
    assert_eq!(trail[0].actor, karen);
    assert_eq!(trail[0].command, "CreateHearing");
    assert_eq!(
        (trail[4].actor.as_str(), trail[4].command.as_str()),
        (format!("user:{}", people.admin.user_id).as_str(), "ReassignOwner")
    );
    assert_eq!(trail[5].actor, format!("user:{}", people.lars.user_id), "the new owner's change is theirs");
    assert_eq!(trail[7].actor, "system:scheduler");
    assert!(trail.windows(2).all(|w| w[0].sequence + 1 == w[1].sequence && w[0].hash != w[1].hash));
    let request = h.as_user(Some(&people.citizen), pb::HearingRef { hearing_id: id.clone() });
    assert_eq!(code_and_message(h.hearings.get_audit_trail(request).await).0, Code::PermissionDenied);

    let request = h.as_user(Some(&people.admin), pb::HearingRef { hearing_id: id.clone() });
    h.hearings.delete_hearing(request).await.expect("an administrator may delete at any time");
    let request = h.as_user(Some(&people.karen), pb::GetHearingRequest { hearing_id: id });
    assert_eq!(code_and_message(h.hearings.get_hearing(request).await).0, Code::NotFound);
}
on_both_backends!(lifecycle_over_grpc, lifecycle);

async fn bad_input(mut h: Harness) {
    let people = People::new();
    h.define_reference_data(&people.admin).await;
    let request = h.as_user(Some(&people.karen), pb::CreateHearingRequest { hearing_type_id: "nonexistent".into() });
    let (code, message) = code_and_message(h.hearings.create_hearing(request).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("nonexistent"), "{message}");

    let request = h.as_user(Some(&people.erik), pb::CreateHearingRequest { hearing_type_id: "lokalplan".into() });
    assert_eq!(
        code_and_message(h.hearings.create_hearing(request).await).0,
        Code::PermissionDenied,
        "no hearing creator role"
    );

    let id = h.draft(&people.karen, "lokalplan", "Vejplan", "2026-12-01", "2026-12-20").await;
    let mut update = complete_update(&id, &"x".repeat(300), "2026-12-01", "2026-11-01");
    update.kle_number = Some("99.99.99".into());
    update.subject_area_id = Some("ukendt".into());
    update.contact = Some(pb::ContactPerson { name: "K".into(), email: "not-an-address".into(), phone: String::new() });
    let request = h.as_user(Some(&people.karen), update);
    let status = h.hearings.update_hearing(request).await.expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    // Every violation of the request is listed at once: unknown references and field rules.
    let violations: Vec<serde_json::Value> = serde_json::from_str(
        status
            .metadata()
            .get("agora-violations")
            .and_then(|v| v.to_str().ok())
            .expect("violations travel as metadata for forms"),
    )
    .expect("a JSON list");
    let fields: Vec<&str> = violations.iter().filter_map(|v| v["field"].as_str()).collect();
    assert_eq!(
        fields,
        ["subject_area_id", "kle_number", "esdh_title", "title", "contact.email", "deadline"],
        "{}",
        status.message()
    );
    for field in fields {
        assert!(status.message().contains(field), "{field} missing in: {}", status.message());
    }
    let request = h.as_user(
        Some(&people.karen),
        pb::UpdateHearingRequest { hearing_id: id.clone(), deadline: Some("20.12.2026".into()), ..Default::default() },
    );
    let (code, message) = code_and_message(h.hearings.update_hearing(request).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("20.12.2026"), "{message}");

    // Nothing of the refused updates was written.
    let request = h.as_user(Some(&people.karen), pb::GetHearingRequest { hearing_id: id.clone() });
    let hearing = h.hearings.get_hearing(request).await.expect("get").into_inner();
    assert_eq!(hearing.fields.get("title").map(String::as_str), Some("Vejplan"));
    assert_eq!(hearing.deadline, "2026-12-20");

    let request = h.as_user(None, pb::GetHearingRequest { hearing_id: "not-a-uuid".into() });
    assert_eq!(code_and_message(h.hearings.get_hearing(request).await).0, Code::InvalidArgument);

    // A forged token is refused, not treated as anonymous.
    let mut request = tonic::Request::new(pb::GetHearingRequest { hearing_id: id });
    request.metadata_mut().insert("authorization", "Bearer eyJhbGciOiJub25lIn0.e30.".parse().expect("header"));
    assert_eq!(code_and_message(h.hearings.get_hearing(request).await).0, Code::Unauthenticated);
}
on_both_backends!(bad_input_is_named_and_leaves_nothing, bad_input);

async fn concurrency(mut h: Harness) {
    let people = People::new();
    h.define_reference_data(&people.admin).await;
    let id = h.draft(&people.karen, "lokalplan", "Start", "2026-12-01", "2026-12-20").await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..12 {
        let mut client = h.hearings.clone();
        let request = h.as_user(
            Some(&people.karen),
            pb::UpdateHearingRequest {
                hearing_id: id.clone(),
                fields: [("title".to_string(), format!("Titel nummer {n}"))].into(),
                ..Default::default()
            },
        );
        tasks.spawn(async move { (n, client.update_hearing(request).await) });
    }
    let mut succeeded = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let (n, result) = result.expect("task");
        match result {
            Ok(_) => succeeded.push(n),
            Err(status) => {
                assert_eq!(status.code(), Code::Aborted, "only conflicts may fail: {status:?}");
                assert!(status.message().contains("reload"), "{}", status.message());
            }
        }
    }
    assert!(!succeeded.is_empty());
    // Every success is one event; every conflict wrote nothing.
    let events = h.store.read_stream("hearing", &id, 0).await.expect("stream");
    let updates = events.iter().filter(|e| e.event_type == "HearingUpdated").count();
    assert_eq!(updates, 1 + succeeded.len(), "the draft's own update plus one per success");
    let request = h.as_user(Some(&people.karen), pb::GetHearingRequest { hearing_id: id });
    let title = h.hearings.get_hearing(request).await.expect("get").into_inner().fields["title"].clone();
    assert!(succeeded.iter().any(|n| title == format!("Titel nummer {n}")), "{title}");
}
on_both_backends!(concurrent_updates_conflict_cleanly, concurrency);

async fn visibility(mut h: Harness) {
    let people = People::new();
    h.define_reference_data(&people.admin).await;
    let open = h.draft(&people.karen, "lokalplan", "Offentlig lokalplan", "2026-11-20", "2026-12-20").await;
    let internal = h.draft(&people.karen, "intern", "Intern arbejdstid", "2026-11-20", "2026-12-20").await;
    let closed = h.draft(&people.karen, "lokalplan", "Lukket nabohøring", "2026-11-20", "2026-12-20").await;
    let draft = h.draft(&people.karen, "lokalplan", "Kladde om parkering", "2026-12-01", "2026-12-20").await;
    let request = h.as_user(
        Some(&people.karen),
        pb::UpdateHearingRequest { hearing_id: closed.clone(), closed: Some(true), ..Default::default() },
    );
    h.hearings.update_hearing(request).await.expect("close it");
    let request = h.as_user(
        Some(&people.karen),
        pb::InviteRequest {
            hearing_id: closed.clone(),
            participants: vec![
                pb::Participant { identifier: format!("user:{}", people.citizen.user_id), label: "Nabo".into() },
                // Invited by CPR number before she ever logged in.
                pb::Participant { identifier: "020280-4567".into(), label: "Genbo".into() },
            ],
        },
    );
    h.hearings.invite_participants(request).await.expect("invite");
    let request = h.as_user(
        Some(&people.karen),
        pb::ReviewerRequest { hearing_id: draft.clone(), user_id: people.lars.user_id.to_string() },
    );
    h.hearings.add_reviewer(request).await.expect("reviewer");
    for id in [&open, &internal, &closed] {
        let request = h.as_user(Some(&people.karen), pb::HearingRef { hearing_id: id.clone() });
        h.hearings.publish_hearing(request).await.expect("publish");
    }
    h.settle().await;

    let titles = |who: Option<agora_auth::Principal>| {
        let request =
            h.as_user(who.as_ref(), pb::ListHearingsRequest { sort_by: "title".into(), ..Default::default() });
        let mut client = h.hearings.clone();
        async move {
            let list = client.list_hearings(request).await.expect("list").into_inner();
            assert_eq!(list.total as usize, list.hearings.len());
            list.hearings.into_iter().map(|s| s.title).collect::<Vec<_>>()
        }
    };
    assert_eq!(titles(None).await, ["Offentlig lokalplan"], "the public sees published, open, external hearings");
    assert_eq!(titles(Some(people.company.clone())).await, ["Offentlig lokalplan"]);
    assert_eq!(
        titles(Some(people.citizen.clone())).await,
        ["Lukket nabohøring", "Offentlig lokalplan"],
        "an invitee sees the closed one"
    );
    // She logs in for the first time: the identity service finds the same pseudonym of her CPR
    // number and puts it in her token, and the invitation finds her.
    let reference = agora_vault::KeyedHash::new(b"test-pseudonym-key").person_reference("0202804567");
    let newcomer = agora_auth::Principal::new(uuid::Uuid::now_v7(), agora_auth::Capacity::Citizen);
    assert_eq!(titles(Some(newcomer.clone())).await, ["Offentlig lokalplan"]);
    let newcomer = newcomer.with_reference(format!("person:{reference}"));
    assert_eq!(
        titles(Some(newcomer)).await,
        ["Lukket nabohøring", "Offentlig lokalplan"],
        "invited before her first login"
    );
    assert_eq!(
        titles(Some(people.erik.clone())).await,
        ["Intern arbejdstid", "Offentlig lokalplan"],
        "employees see internal, not closed"
    );
    assert_eq!(
        titles(Some(people.lars.clone())).await,
        ["Intern arbejdstid", "Kladde om parkering", "Offentlig lokalplan"],
        "a reviewer sees the draft"
    );
    assert_eq!(titles(Some(people.admin.clone())).await.len(), 4);

    // The same rules hold for a single hearing: what may not be seen does not exist.
    let request = h.as_user(None, pb::GetHearingRequest { hearing_id: draft.clone() });
    assert_eq!(code_and_message(h.hearings.get_hearing(request).await).0, Code::NotFound);
    let request = h.as_user(Some(&people.citizen), pb::GetHearingRequest { hearing_id: internal.clone() });
    assert_eq!(code_and_message(h.hearings.get_hearing(request).await).0, Code::NotFound);
    let request = h.as_user(Some(&people.erik), pb::GetHearingRequest { hearing_id: closed.clone() });
    assert_eq!(code_and_message(h.hearings.get_hearing(request).await).0, Code::NotFound);
    let request = h.as_user(Some(&people.citizen), pb::GetHearingRequest { hearing_id: closed.clone() });
    h.hearings.get_hearing(request).await.expect("the invitee sees it");

    // The owner's dashboard has every state; a reviewer's has what they review.
    let request = h.as_user(Some(&people.karen), pb::OwnerDashboardRequest {});
    assert_eq!(h.hearings.owner_dashboard(request).await.expect("dashboard").into_inner().total, 4);
    let request = h.as_user(Some(&people.lars), pb::OwnerDashboardRequest {});
    let mine = h.hearings.owner_dashboard(request).await.expect("dashboard").into_inner();
    assert_eq!(mine.hearings.iter().map(|s| s.title.as_str()).collect::<Vec<_>>(), ["Kladde om parkering"]);
}
on_both_backends!(visibility_rules_hold_in_lists_and_reads, visibility);

/// An owner creates a hearing while the read model runs behind (nothing applies it until the
/// hearing is written): the dashboard she reads right after the answer already lists it,
/// because the command waits for the read model.
async fn dashboard_read_back(mut h: Harness) {
    let people = People::new();
    h.define_reference_data(&people.admin).await;
    h.settle().await;
    let app = h.app_on(h.store.clone().waiting_for_read_models(std::time::Duration::from_secs(60)));
    let karen = people.karen.clone();
    let owner = tokio::spawn(async move {
        let (id, _) = app.create(&karen, "lokalplan").await.expect("create");
        let listed = agora_hearing::queries::dashboard(&app.store, &karen).await.expect("dashboard");
        (id.to_string(), listed.into_iter().map(|h| h.id).collect::<Vec<_>>())
    });
    agora_eventstore::testing::eventually(30, "the hearing in the log", || async {
        let events = h.store.read_log(agora_eventstore::LogPosition::START, 10_000).await.expect("log");
        events.iter().any(|e| e.event_type == "HearingCreated").then_some(())
    })
    .await;
    h.settle().await;
    let (id, listed) = owner.await.expect("owner");
    assert_eq!(listed, vec![id], "the dashboard read right after the hearing's creation lists it");
}
on_both_backends!(a_created_hearing_is_on_the_dashboard_read_right_after, dashboard_read_back);

async fn search(mut h: Harness) {
    let people = People::new();
    h.define_reference_data(&people.admin).await;
    for (title, start) in
        [("Cykelsti i Vest", "2026-11-21"), ("Lokalplan for havnen", "2026-11-22"), ("Skolestruktur", "2026-11-20")]
    {
        let id = h.draft(&people.karen, "lokalplan", title, start, "2026-12-20").await;
        let request = h.as_user(Some(&people.karen), pb::HearingRef { hearing_id: id });
        h.hearings.publish_hearing(request).await.expect("publish");
    }
    h.settle().await;
    let list = |req: pb::ListHearingsRequest| {
        let mut client = h.hearings.clone();
        async move { client.list_hearings(req).await.map(|r| r.into_inner()) }
    };
    let found = list(pb::ListHearingsRequest { text: "HAVNEN".into(), ..Default::default() }).await.expect("search");
    assert_eq!(found.hearings.iter().map(|s| s.title.as_str()).collect::<Vec<_>>(), ["Lokalplan for havnen"]);
    let by_start =
        list(pb::ListHearingsRequest { sort_by: "start_date".into(), descending: true, ..Default::default() })
            .await
            .expect("sort");
    assert_eq!(by_start.hearings[0].title, "Lokalplan for havnen");
    let page = list(pb::ListHearingsRequest { sort_by: "title".into(), page: 2, page_size: 2, ..Default::default() })
        .await
        .expect("page");
    assert_eq!((page.total, page.hearings.len()), (3, 1));
    assert_eq!(page.hearings[0].title, "Skolestruktur");
    let kle =
        list(pb::ListHearingsRequest { kle_number: "01.02".into(), ..Default::default() }).await.expect("kle prefix");
    assert_eq!(kle.total, 3);
    let none =
        list(pb::ListHearingsRequest { kle_number: "02".into(), ..Default::default() }).await.expect("kle prefix");
    assert_eq!(none.total, 0);
    let status = list(pb::ListHearingsRequest {
        statuses: vec![pb::HearingStatus::AwaitingStartDate as i32],
        ..Default::default()
    })
    .await
    .expect("status");
    assert_eq!(status.total, 0, "all three started on publishing");
    let percent = list(pb::ListHearingsRequest { text: "%".into(), ..Default::default() }).await.expect("search");
    assert_eq!(percent.total, 0, "LIKE wildcards in the search text are literal");
    let bad = list(pb::ListHearingsRequest { sort_by: "popularity".into(), ..Default::default() }).await;
    assert_eq!(bad.expect_err("bad sort").code(), Code::InvalidArgument);
    let bad = list(pb::ListHearingsRequest { page_size: 1000, ..Default::default() }).await;
    assert_eq!(bad.expect_err("page too large").code(), Code::InvalidArgument);

    // Filters by hearing type, subject area and city area.
    let by_type =
        list(pb::ListHearingsRequest { hearing_type_id: "intern".into(), ..Default::default() }).await.expect("type");
    assert_eq!(by_type.total, 0);
    let by_area = list(pb::ListHearingsRequest {
        hearing_type_id: "lokalplan".into(),
        subject_area_id: "plan".into(),
        city_area_id: "plan-by".into(),
        sort_by: "deadline".into(),
        ..Default::default()
    })
    .await
    .expect("areas");
    assert_eq!(by_area.total, 3);
    let other_area =
        list(pb::ListHearingsRequest { city_area_id: "miljo-by".into(), ..Default::default() }).await.expect("area");
    assert_eq!(other_area.total, 0);

    let request = h.as_user(None, pb::SearchKleRequest { prefix: "01.02".into(), text: "lokalplan".into(), limit: 10 });
    let kle = h.reference.search_kle(request).await.expect("kle").into_inner();
    assert!(kle.entries.iter().any(|e| e.number == "01.02.05"), "{:?}", kle.entries);
}
on_both_backends!(search_filter_sort_and_page, search);

async fn invitees_and_files(mut h: Harness) {
    let people = People::new();
    h.define_reference_data(&people.admin).await;
    let id = h.draft(&people.karen, "lokalplan", "Naboorientering", "2026-12-01", "2026-12-20").await;
    let csv = "identifikation;navn\nanna@example.dk;Anna\n0101801234;Bo\n12345678;Firma\nikke-gyldig\n0101801234\n";
    let request = h.as_user(
        Some(&people.karen),
        pb::ImportInviteesRequest { hearing_id: id.clone(), csv: csv.as_bytes().to_vec() },
    );
    let report = h.hearings.import_invitees(request).await.expect("import").into_inner();
    assert_eq!(report.added, 3);
    assert_eq!(report.errors.iter().map(|e| e.row).collect::<Vec<_>>(), [5, 6]);
    let request = h.as_user(Some(&people.karen), pb::GetHearingRequest { hearing_id: id.clone() });
    let hearing = h.hearings.get_hearing(request).await.expect("get").into_inner();
    assert_eq!(hearing.invitees.len(), 3);
    let events = h.store.read_stream("hearing", &id, 0).await.expect("stream");
    assert!(events.iter().all(|e| !e.payload.to_string().contains("0101801234")), "no CPR number in the log");
    // Names and addresses are sealed for the people they name; the owner reads them.
    for clear in ["anna@example.dk", "Anna", "Bo"] {
        assert!(events.iter().all(|e| !e.payload.to_string().contains(&format!("\"{clear}"))), "{clear} in the log");
    }
    let mut labels: Vec<&str> = hearing.invitees.iter().map(|i| i.label.as_str()).collect();
    labels.sort_unstable();
    assert_eq!(labels, ["Anna", "Bo", "Firma"]);
    let email = hearing.invitees.iter().find(|i| i.kind == "email").expect("the e-mail invitee");
    let pseudonym = agora_vault::KeyedHash::new(b"test-pseudonym-key").email_reference("anna@example.dk");
    assert_eq!(email.reference, format!("email:{pseudonym}"), "the address's pseudonym, as her token will carry it");

    // A PDF goes in; an executable named .pdf is refused by its content and leaves no file.
    let pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n%%EOF\n".to_vec();
    let request = h.as_user(
        Some(&people.karen),
        pb::AttachFileRequest {
            hearing_id: id.clone(),
            field: "documents".into(),
            file_name: "../lokalplan.pdf".into(),
            content: pdf.clone(),
        },
    );
    let attached = h.hearings.attach_file(request).await.expect("pdf").into_inner();
    let file = attached.file.expect("file");
    assert_eq!((file.name.as_str(), file.content_type.as_str()), ("lokalplan.pdf", "application/pdf"));
    let exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00".to_vec();
    let request = h.as_user(
        Some(&people.karen),
        pb::AttachFileRequest {
            hearing_id: id.clone(),
            field: "documents".into(),
            file_name: "plan.pdf".into(),
            content: exe,
        },
    );
    let (code, message) = code_and_message(h.hearings.attach_file(request).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("ikke tilladt"), "{message}");
    let stored = std::fs::read_dir(h.files_dir.path().join("hearings").join(&id)).expect("files dir").count();
    assert_eq!(stored, 1, "the refused file was not kept");

    // Once published, the public can fetch the document.
    let request = h.as_user(Some(&people.karen), pb::HearingRef { hearing_id: id.clone() });
    h.hearings.publish_hearing(request).await.expect("publish");
    let request = h.as_user(None, pb::GetFileRequest { hearing_id: id, file_id: file.file_id });
    let got = h.hearings.get_file(request).await.expect("public file").into_inner();
    assert_eq!(got.content, pdf);
}
on_both_backends!(invitees_and_files, invitees_and_files);

async fn reference_rules(mut h: Harness) {
    let people = People::new();
    let request =
        h.as_user(Some(&people.karen), pb::NamedItem { id: "plan".into(), name: "Plan".into(), retired: false });
    assert_eq!(code_and_message(h.reference.define_subject_area(request).await).0, Code::PermissionDenied);
    h.define_reference_data(&people.admin).await;
    let snippet = pb::Snippet {
        id: "persondata".into(),
        field: "body".into(),
        title: "Om personoplysninger".into(),
        text: "Dit svar offentliggøres uden navn.".into(),
        retired: false,
    };
    let request = h.as_user(Some(&people.karen), snippet.clone());
    assert_eq!(code_and_message(h.reference.define_snippet(request).await).0, Code::PermissionDenied);
    let request = h.as_user(Some(&people.admin), snippet.clone());
    h.reference.define_snippet(request).await.expect("snippet");
    let request =
        h.as_user(Some(&people.admin), pb::RetireItemRequest { kind: "hearing_type".into(), id: "intern".into() });
    h.reference.retire_item(request).await.expect("retire");
    h.settle().await;
    let request = h.as_user(None, pb::ListReferenceRequest { include_retired: false });
    let types = h.reference.list_hearing_types(request).await.expect("list").into_inner().hearing_types;
    assert_eq!(types.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["kort", "lokalplan"]);
    let short_rules = types[0].response_rules.clone().expect("the type's response rules are listed");
    assert_eq!((short_rules.text_optional, short_rules.max_text_chars, short_rules.max_files), (true, 500, 3));
    assert_eq!(types[1].response_rules.as_ref().map(|r| r.max_text_chars), Some(50_000), "the defaults");
    assert!(
        types[1].fields.iter().any(|f| f.key == "title" && f.max_length == Some(200)),
        "standard fields with their rules"
    );
    let request = h.as_user(Some(&people.karen), pb::ListReferenceRequest { include_retired: false });
    let snippets = h.reference.list_snippets(request).await.expect("snippets").into_inner().snippets;
    assert_eq!(snippets, [snippet]);
    let request = h.as_user(Some(&people.karen), pb::CreateHearingRequest { hearing_type_id: "intern".into() });
    let (code, message) = code_and_message(h.hearings.create_hearing(request).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("udgået"), "{message}");
}
on_both_backends!(reference_data_is_for_administrators, reference_rules);

async fn invitation_groups(mut h: Harness) {
    let people = People::new();
    h.define_reference_data(&people.admin).await;
    let group = pb::InvitationGroup {
        id: "naboraad".into(),
        name: "Lokalråd Vest".into(),
        members: vec![
            pb::Participant { identifier: "formand@lokalraad.example".into(), label: "Formand".into() },
            pb::Participant { identifier: "0101801234".into(), label: "Kasserer".into() },
        ],
        ..Default::default()
    };
    let request = h.as_user(Some(&people.karen), group.clone());
    assert_eq!(code_and_message(h.reference.define_invitation_group(request).await).0, Code::PermissionDenied);
    let request = h.as_user(Some(&people.admin), group);
    h.reference.define_invitation_group(request).await.expect("define group");
    let bad = pb::InvitationGroup {
        id: "tom".into(),
        name: "Tom".into(),
        members: vec![pb::Participant { identifier: "123".into(), label: String::new() }],
        ..Default::default()
    };
    let request = h.as_user(Some(&people.admin), bad);
    let (code, message) = code_and_message(h.reference.define_invitation_group(request).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("members[0]"), "{message}");
    h.settle().await;

    let id = h.draft(&people.karen, "lokalplan", "Nabohøring", "2026-12-01", "2026-12-20").await;
    let invite = |identifier: &str| pb::InviteRequest {
        hearing_id: id.clone(),
        participants: vec![pb::Participant { identifier: identifier.into(), label: String::new() }],
    };
    let request = h.as_user(Some(&people.karen), invite("group:ukendt"));
    let (code, message) = code_and_message(h.hearings.invite_participants(request).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("ukendt"), "{message}");
    let request = h.as_user(Some(&people.karen), invite("group:naboraad"));
    let hearing = h.hearings.invite_participants(request).await.expect("invite group").into_inner();
    assert_eq!(hearing.invitees.len(), 1);
    assert_eq!((hearing.invitees[0].kind.as_str(), hearing.invitees[0].label.as_str()), ("group", "Lokalråd Vest"));

    let request = h.as_user(Some(&people.citizen), pb::ListReferenceRequest { include_retired: false });
    assert_eq!(code_and_message(h.reference.list_invitation_groups(request).await).0, Code::PermissionDenied);
    let request = h.as_user(Some(&people.karen), pb::ListReferenceRequest { include_retired: false });
    let groups = h.reference.list_invitation_groups(request).await.expect("list").into_inner().groups;
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].invitees.len(), 2);
    assert!(groups[0].invitees.iter().all(|i| !i.reference.contains("0101801234") && !i.label.contains("0101801234")));
    let (count, _) = h.store.log_extent().await.expect("extent");
    // Once every event written is readable, none may hold the number.
    let log = agora_eventstore::testing::eventually(20, "the whole log", || async {
        let log = h.store.read_log(agora_eventstore::LogPosition::START, count).await.ok()?;
        (log.len() as i64 == count).then_some(log)
    })
    .await;
    assert!(log.iter().all(|e| !e.payload.to_string().contains("0101801234")), "no CPR number anywhere in the log");
}
on_both_backends!(invitation_groups_are_invited_by_name, invitation_groups);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_trace_continues_into_the_events() {
    // The tracing-opentelemetry layer must be installed for remote parents to take effect.
    let _telemetry = agora_telemetry::init(agora_telemetry::TelemetryConfig::from_env("test")).expect("telemetry");
    let Some(mut h) = Harness::start(agora_tests_integration::Backend::Sqlite).await else { return };
    let people = People::new();
    h.define_reference_data(&people.admin).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = h.as_user(Some(&people.karen), pb::CreateHearingRequest { hearing_type_id: "lokalplan".into() });
    request.metadata_mut().insert("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01").parse().expect("header"));
    let hearing = h.hearings.create_hearing(request).await.expect("create").into_inner();
    let events = h.store.read_stream("hearing", &hearing.hearing_id, 0).await.expect("stream");
    assert_eq!(events[0].metadata_str("trace_id").as_deref(), Some(trace_id), "the event records the caller's trace");
    let traceparent = events[0].metadata_str("traceparent").expect("traceparent for the relay");
    assert!(traceparent.starts_with(&format!("00-{trace_id}-")), "{traceparent}");
}
