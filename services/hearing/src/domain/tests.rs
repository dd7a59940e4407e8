use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::fields::{FieldRule, HearingType};
use super::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc)
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
}

fn hearing_type() -> HearingType {
    HearingType {
        id: "lokalplan".into(),
        name: "Lokalplan".into(),
        internal: false,
        fields: HearingType::standard_fields(),
        template: [("body".to_string(), "Skabelon: beskriv forslaget her.".to_string())].into(),
        responses: Default::default(),
    }
}

/// Applies the events a command decides, like the framework does.
fn run(hearing: &mut Hearing, command: HearingCommand) -> Result<Vec<HearingEvent>, HearingError> {
    let events = hearing.decide(command)?;
    for event in events.clone() {
        hearing.apply(event);
    }
    Ok(events)
}

fn complete_changes() -> HearingChanges {
    HearingChanges {
        fields: [
            ("title", "Lokalplan for Ballerup Bytorv"),
            ("summary", "Forslag til ny lokalplan for bytorvet."),
            ("body", "Kommunen foreslår en ny lokalplan for området omkring Ballerup Bytorv."),
            ("esdh_title", "Høring: lokalplan Bytorv"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        subject_area_id: Some("plan".into()),
        kle_number: Some("01.02.05".into()),
        contact: Some(ContactPerson {
            name: "Karen Sagsbehandler".into(),
            email: "karen@ballerup.dk".into(),
            phone: String::new(),
        }),
        start_date: Some(date("2026-12-01")),
        deadline: Some(date("2026-12-20")),
        ..Default::default()
    }
}

fn draft() -> Hearing {
    let mut hearing = Hearing::default();
    run(&mut hearing, HearingCommand::Create { hearing_type: hearing_type(), owner: Uuid::nil() }).expect("create");
    run(&mut hearing, HearingCommand::Update { changes: complete_changes(), now: at("2026-11-22T10:00:00Z") })
        .expect("update");
    hearing
}

#[test]
fn a_new_hearing_starts_from_its_type_template() {
    let mut hearing = Hearing::default();
    run(&mut hearing, HearingCommand::Create { hearing_type: hearing_type(), owner: Uuid::nil() }).expect("create");
    assert_eq!(hearing.status, HearingStatus::Created);
    assert_eq!(hearing.field("body"), "Skabelon: beskriv forslaget her.");
    assert_eq!(
        hearing.decide(HearingCommand::Create { hearing_type: hearing_type(), owner: Uuid::nil() }),
        Err(HearingError::AlreadyExists)
    );
}

#[test]
fn complete_metadata_makes_a_draft_and_removing_it_goes_back() {
    let mut hearing = draft();
    assert_eq!(hearing.status, HearingStatus::Draft);
    let events = run(
        &mut hearing,
        HearingCommand::Update {
            changes: HearingChanges { kle_number: Some(String::new()), ..Default::default() },
            now: at("2026-11-22T10:00:00Z"),
        },
    )
    .expect("update");
    assert!(events.contains(&HearingEvent::HearingDraftIncomplete));
    assert_eq!(hearing.status, HearingStatus::Created);
}

#[test]
fn publishing_an_incomplete_hearing_lists_every_missing_thing() {
    let mut hearing = Hearing::default();
    run(&mut hearing, HearingCommand::Create { hearing_type: hearing_type(), owner: Uuid::nil() }).expect("create");
    let Err(HearingError::Invalid(violations)) =
        hearing.decide(HearingCommand::Publish { now: at("2026-11-22T10:00:00Z") })
    else {
        panic!("publish of an incomplete hearing must be refused as invalid");
    };
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, vec!["subject_area_id", "kle_number", "start_date", "esdh_title", "contact"]);
}

#[test]
fn invalid_field_values_are_all_listed_and_nothing_changes() {
    let hearing = draft();
    let changes = HearingChanges {
        fields: [("title".to_string(), "x".repeat(201)), ("nonsense".to_string(), "y".to_string())].into(),
        deadline: Some(date("2026-11-01")),
        contact: Some(ContactPerson { name: "A".into(), email: "not an email".into(), phone: String::new() }),
        ..Default::default()
    };
    let Err(HearingError::Invalid(violations)) =
        hearing.decide(HearingCommand::Update { changes, now: at("2026-11-22T10:00:00Z") })
    else {
        panic!("must be invalid");
    };
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, vec!["nonsense", "title", "contact.email", "deadline"], "{violations:?}");
}

#[test]
fn the_whole_lifecycle_follows_the_clock() {
    let mut hearing = draft();
    run(&mut hearing, HearingCommand::Publish { now: at("2026-11-22T10:00:00Z") }).expect("publish");
    assert_eq!(hearing.status, HearingStatus::AwaitingStartDate);

    // One second before Copenhagen midnight on the start date: nothing yet.
    assert!(
        run(&mut hearing, HearingCommand::AdvanceClock { now: at("2026-11-30T22:59:59Z") }).expect("tick").is_empty()
    );
    run(&mut hearing, HearingCommand::AdvanceClock { now: at("2026-11-30T23:00:00Z") }).expect("tick");
    assert_eq!(hearing.status, HearingStatus::Active);
    // The same tick again (another replica, a restart) changes nothing.
    assert!(
        run(&mut hearing, HearingCommand::AdvanceClock { now: at("2026-11-30T23:00:00Z") }).expect("tick").is_empty()
    );

    // The deadline day is included; it closes when 21 December begins in Copenhagen.
    assert!(
        run(&mut hearing, HearingCommand::AdvanceClock { now: at("2026-12-20T22:59:59Z") }).expect("tick").is_empty()
    );
    run(&mut hearing, HearingCommand::AdvanceClock { now: at("2026-12-20T23:00:00Z") }).expect("tick");
    assert_eq!(hearing.status, HearingStatus::AwaitingConclusion);

    assert_eq!(
        hearing.decide(HearingCommand::Conclude { conclusion: Some("  ".into()) }),
        Err(HearingError::Invalid(vec![fields::Violation::new("conclusion", "konklusionen skal udfyldes")]))
    );
    run(&mut hearing, HearingCommand::Conclude { conclusion: Some("Planen vedtages med ændringer.".into()) })
        .expect("conclude");
    assert_eq!(hearing.status, HearingStatus::Concluded);
    assert_eq!(hearing.field("conclusion"), "Planen vedtages med ændringer.");

    // Concluded is final.
    assert_eq!(
        hearing.decide(HearingCommand::Update { changes: complete_changes(), now: at("2027-01-01T00:00:00Z") }),
        Err(HearingError::NotAllowedInState { action: "change", state: HearingStatus::Concluded })
    );
}

#[test]
fn publishing_after_the_start_date_starts_at_once() {
    let mut hearing = draft();
    let events = run(&mut hearing, HearingCommand::Publish { now: at("2026-12-05T09:00:00Z") }).expect("publish");
    assert_eq!(events.len(), 2);
    assert_eq!(hearing.status, HearingStatus::Active);
}

#[test]
fn moving_the_deadline_later_reopens_the_hearing() {
    let mut hearing = draft();
    run(&mut hearing, HearingCommand::Publish { now: at("2026-12-05T09:00:00Z") }).expect("publish");
    run(&mut hearing, HearingCommand::AdvanceClock { now: at("2026-12-21T08:00:00Z") }).expect("tick");
    assert_eq!(hearing.status, HearingStatus::AwaitingConclusion);

    // Only the deadline and the conclusion may change now.
    let title = HearingChanges { fields: [("title".to_string(), "Ny titel".to_string())].into(), ..Default::default() };
    assert!(matches!(
        hearing.decide(HearingCommand::Update { changes: title, now: at("2026-12-21T08:00:00Z") }),
        Err(HearingError::Invalid(_))
    ));
    let later = HearingChanges { deadline: Some(date("2027-01-10")), ..Default::default() };
    let events =
        run(&mut hearing, HearingCommand::Update { changes: later, now: at("2026-12-21T08:00:00Z") }).expect("move");
    assert!(matches!(events.last(), Some(HearingEvent::HearingReopened { .. })));
    assert_eq!(hearing.status, HearingStatus::Active);
}

#[test]
fn the_deadline_cannot_be_moved_into_the_past_once_published() {
    let mut hearing = draft();
    run(&mut hearing, HearingCommand::Publish { now: at("2026-12-05T09:00:00Z") }).expect("publish");
    let past = HearingChanges { deadline: Some(date("2026-12-04")), ..Default::default() };
    assert!(matches!(
        hearing.decide(HearingCommand::Update { changes: past, now: at("2026-12-05T09:00:00Z") }),
        Err(HearingError::Invalid(_))
    ));
}

#[test]
fn a_hearing_whose_deadline_passed_cannot_be_published() {
    let hearing = draft();
    let Err(HearingError::Invalid(violations)) =
        hearing.decide(HearingCommand::Publish { now: at("2027-01-01T00:00:00Z") })
    else {
        panic!("must refuse");
    };
    assert!(violations.iter().any(|v| v.field == "deadline"));
}

#[test]
fn owners_delete_only_unpublished_hearings_administrators_always() {
    let mut hearing = draft();
    run(&mut hearing, HearingCommand::Publish { now: at("2026-11-22T10:00:00Z") }).expect("publish");
    assert_eq!(
        hearing.decide(HearingCommand::Delete { by_administrator: false }),
        Err(HearingError::NotAllowedInState { action: "delete", state: HearingStatus::AwaitingStartDate })
    );
    run(&mut hearing, HearingCommand::Delete { by_administrator: true }).expect("admin deletes");
    assert_eq!(
        hearing.decide(HearingCommand::Publish { now: at("2026-11-22T10:00:00Z") }),
        Err(HearingError::NotFound)
    );

    let mut unpublished = draft();
    run(&mut unpublished, HearingCommand::Delete { by_administrator: false }).expect("owner deletes a draft");
    assert_eq!(unpublished.status, HearingStatus::Deleted);
}

#[test]
fn a_transition_not_allowed_names_the_state() {
    let hearing = draft();
    let error = hearing.decide(HearingCommand::Conclude { conclusion: Some("x".into()) }).unwrap_err();
    assert_eq!(error.to_string(), "cannot conclude a hearing in state Draft");
}

#[test]
fn roles_and_invitees() {
    let mut hearing = draft();
    let reviewer = Uuid::now_v7();
    run(&mut hearing, HearingCommand::AddReviewer { user: reviewer }).expect("add");
    assert!(run(&mut hearing, HearingCommand::AddReviewer { user: reviewer }).expect("again").is_empty());
    let new_owner = Uuid::now_v7();
    run(&mut hearing, HearingCommand::ReassignOwner { owner: reviewer }).expect("reassign");
    assert_eq!(hearing.owner, reviewer);
    assert!(hearing.reviewers.is_empty(), "the new owner is no longer also a reviewer");
    run(&mut hearing, HearingCommand::ReassignOwner { owner: new_owner }).expect("reassign");

    let invitee = |r: &str| Invitee { reference: r.into(), kind: InviteeKind::Email, label: r.into(), address: None };
    let events = run(
        &mut hearing,
        HearingCommand::AddInvitees {
            invitees: vec![invitee("email:a@x.dk"), invitee("email:a@x.dk"), invitee("email:b@x.dk")],
        },
    )
    .expect("invite");
    assert_eq!(events.len(), 2, "duplicates are added once");
    run(&mut hearing, HearingCommand::RemoveInvitee { reference: "email:a@x.dk".into() }).expect("remove");
    assert_eq!(hearing.invitees.len(), 1);
}

#[test]
fn files_are_checked_against_their_field() {
    let mut hearing = draft();
    let file = |field: &str, content_type: &str, size: u64| StoredFile {
        id: Uuid::now_v7(),
        field: field.into(),
        name: "plan.pdf".into(),
        content_type: content_type.into(),
        size,
        sha256: String::new(),
    };
    run(&mut hearing, HearingCommand::AttachFile { file: file("documents", "application/pdf", 1000) })
        .expect("pdf is fine");
    assert!(matches!(
        hearing.decide(HearingCommand::AttachFile { file: file("documents", "application/x-msdownload", 1000) }),
        Err(HearingError::Invalid(_))
    ));
    assert!(matches!(
        hearing.decide(HearingCommand::AttachFile { file: file("title", "application/pdf", 1000) }),
        Err(HearingError::Invalid(_))
    ));
    let id = hearing.files[0].id;
    run(&mut hearing, HearingCommand::RemoveFile { file_id: id }).expect("remove");
    assert!(hearing.files.is_empty());
}

#[test]
fn a_custom_type_rule_applies() {
    let mut custom = hearing_type();
    custom.fields.push(FieldRule::text("extra", "Ekstra", false, Some(5), Some(10)));
    let mut hearing = Hearing::default();
    run(&mut hearing, HearingCommand::Create { hearing_type: custom, owner: Uuid::nil() }).expect("create");
    run(&mut hearing, HearingCommand::Update { changes: complete_changes(), now: at("2026-11-22T10:00:00Z") })
        .expect("update");
    let Err(HearingError::Invalid(violations)) =
        hearing.decide(HearingCommand::Publish { now: at("2026-11-22T10:00:00Z") })
    else {
        panic!("the extra field is required");
    };
    assert_eq!(violations[0].field, "extra");
}

#[test]
fn unchanged_values_record_nothing() {
    let mut hearing = draft();
    let events =
        run(&mut hearing, HearingCommand::Update { changes: complete_changes(), now: at("2026-11-22T10:00:00Z") })
            .expect("same again");
    assert!(events.is_empty());
}
