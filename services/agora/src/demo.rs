//! Demo users and demo data for the embedded default: a newcomer sees hearings in every
//! state at once. Seeding is idempotent (fixed ids; what exists is left alone).

use std::sync::Arc;

use agora_auth::Principal;
use agora_eventstore::consumer::ProjectionRunner;
use agora_hearing::app::{AppError, HearingApp};
use agora_hearing::domain::fields::HearingType;
use agora_hearing::domain::reference::{ReferenceItem, parse_kle_hierarchy};
use agora_hearing::domain::{ContactPerson, HearingChanges};
use chrono::{Days, TimeZone, Utc};
use uuid::Uuid;

/// The development login's demo users live with the identity service.
pub fn find_user(handle: &str) -> Option<agora_identity::providers::DemoUser> {
    agora_identity::providers::demo_user(handle)
}

/// The demo's terms for responses, so the respond form has terms to accept.
pub const DEMO_TERMS_VERSION: &str = "2026-01";

/// Publishes the demo terms unless some are in force already.
pub async fn seed_terms(app: &agora_identity::app::IdentityApp) -> Result<(), agora_identity::app::IdentityAppError> {
    if app.current_terms().await?.is_some() {
        return Ok(());
    }
    let Some(admin) = find_user("admin").map(|u| u.principal) else { return Ok(()) };
    let text = "Dit høringssvar bruges i kommunens behandling af sagen og journaliseres. Godkendte svar \
                offentliggøres på portalen uden dit navn. Skriv ikke personnumre eller andres personlige oplysninger.";
    app.publish_terms(&admin, DEMO_TERMS_VERSION, text).await.map(|_| ())
}

/// Seeds reference data and demo hearings unless already there.
pub async fn seed(app: &HearingApp, runner: &ProjectionRunner) -> Result<bool, AppError> {
    let admin = find_user("admin").map(|u| u.principal).ok_or_else(|| AppError::Internal("no demo admin".into()))?;
    let karen =
        find_user("karen").map(|u| u.principal).ok_or_else(|| AppError::Internal("no demo caseworker".into()))?;
    let lars = find_user("lars").map(|u| u.principal).ok_or_else(|| AppError::Internal("no demo caseworker".into()))?;

    // Reference data only into an empty store, so that an administrator's later changes
    // are never put back by a restart.
    let mut seeded = false;
    if app.is_empty().await? {
        seeded = true;
        let types = [
            HearingType {
                id: "lokalplan".into(),
                name: "Lokalplan".into(),
                internal: false,
                fields: HearingType::standard_fields(),
                template: [(
                    "body".to_string(),
                    "Kommunen sender hermed forslag til lokalplan i offentlig høring.".to_string(),
                )]
                .into(),
                responses: Default::default(),
            },
            HearingType {
                id: "politik".into(),
                name: "Politik og strategi".into(),
                internal: false,
                fields: HearingType::standard_fields(),
                template: Default::default(),
                responses: Default::default(),
            },
            HearingType {
                id: "intern".into(),
                name: "Intern høring".into(),
                internal: true,
                fields: HearingType::standard_fields(),
                template: Default::default(),
                responses: Default::default(),
            },
        ];
        for t in types {
            app.define_reference(&admin, ReferenceItem::HearingType(t)).await?;
        }
        for (id, name) in [
            ("plan", "Byplan og byggeri"),
            ("miljo", "Miljø og klima"),
            ("skole", "Skole og dagtilbud"),
            ("trafik", "Trafik og veje"),
        ] {
            app.define_reference(&admin, ReferenceItem::SubjectArea { id: id.into(), name: name.into() }).await?;
        }
        for (id, name) in [("centrum", "Centrum"), ("vest", "Vest"), ("oest", "Øst"), ("hele", "Hele kommunen")] {
            app.define_reference(&admin, ReferenceItem::CityArea { id: id.into(), name: name.into() }).await?;
        }
        app.define_reference(
            &admin,
            ReferenceItem::Snippet {
                id: "persondata".into(),
                field: "body".into(),
                title: "Om behandling af personoplysninger".into(),
                text:
                    "Dit høringssvar offentliggøres uden navn. Læs mere om kommunens behandling af personoplysninger."
                        .into(),
            },
        )
        .await?;
        let kle = parse_kle_hierarchy(include_str!("../../hearing/testdata/kle.json")).map_err(AppError::Internal)?;
        app.load_kle(&admin, kle).await?;
    }
    // Hearings are checked against the reference lists (read models): bring them up to date.
    runner.catch_up().await.map_err(|e| AppError::Internal(e.to_string()))?;

    // Demo hearings in every state. Dates are relative to today; the ones that must be
    // past their deadline are published by an app whose clock stands a month back.
    let today = chrono_tz::Europe::Copenhagen.from_utc_datetime(&Utc::now().naive_utc()).date_naive();
    let day = |offset: i64| {
        if offset >= 0 {
            today.checked_add_days(Days::new(offset as u64))
        } else {
            today.checked_sub_days(Days::new((-offset) as u64))
        }
    };
    let month_ago = Utc::now() - chrono::Duration::days(30);
    let past_app = app.with_clock(Arc::new(move || month_ago));
    struct Demo<'a> {
        n: u128,
        owner: &'a Principal,
        hearing_type: &'a str,
        title: &'a str,
        summary: &'a str,
        subject: &'a str,
        city: &'a str,
        kle: &'a str,
        start: i64,
        deadline: i64,
        publish: bool,
        closed: bool,
        conclude: Option<&'a str>,
    }
    let demos = [
        Demo {
            n: 1,
            owner: &karen,
            hearing_type: "lokalplan",
            title: "Lokalplan for Bytorvet",
            summary: "Forslag til ny lokalplan for området omkring Bytorvet med boliger og butikker.",
            subject: "plan",
            city: "centrum",
            kle: "01.02.05",
            start: -5,
            deadline: 25,
            publish: true,
            closed: false,
            conclude: None,
        },
        Demo {
            n: 2,
            owner: &karen,
            hearing_type: "politik",
            title: "Klimaplan 2030",
            summary: "Kommunens forslag til klimaplan frem mod 2030 i offentlig høring.",
            subject: "miljo",
            city: "hele",
            kle: "09.00.00",
            start: 3,
            deadline: 40,
            publish: true,
            closed: false,
            conclude: None,
        },
        Demo {
            n: 3,
            owner: &lars,
            hearing_type: "politik",
            title: "Skolestruktur i Vest",
            summary: "Høring om ny skolestruktur for skolerne i den vestlige bydel.",
            subject: "skole",
            city: "vest",
            kle: "17.00.00",
            start: -28,
            deadline: -2,
            publish: true,
            closed: false,
            conclude: None,
        },
        Demo {
            n: 4,
            owner: &lars,
            hearing_type: "lokalplan",
            title: "Cykelsti langs Ringvejen",
            summary: "Forslag om ny dobbeltrettet cykelsti langs Ringvejen.",
            subject: "trafik",
            city: "oest",
            kle: "05.01.00",
            start: -28,
            deadline: -10,
            publish: true,
            closed: false,
            conclude: Some("Cykelstien anlægges som foreslået, med en ekstra krydsning ved skolen."),
        },
        Demo {
            n: 5,
            owner: &karen,
            hearing_type: "intern",
            title: "Ny arbejdstidsaftale",
            summary: "Intern høring blandt medarbejderne om ny arbejdstidsaftale.",
            subject: "plan",
            city: "hele",
            kle: "81.00.00",
            start: -1,
            deadline: 14,
            publish: true,
            closed: true,
            conclude: None,
        },
        Demo {
            n: 6,
            owner: &karen,
            hearing_type: "lokalplan",
            title: "Udkast: Parkeringsnorm",
            summary: "Udkast til ny parkeringsnorm for nybyggeri.",
            subject: "trafik",
            city: "hele",
            kle: "05.13.00",
            start: 10,
            deadline: 40,
            publish: false,
            closed: false,
            conclude: None,
        },
    ];
    for demo in demos {
        let id = Uuid::from_u128(0x0000_0000_0000_7000_9000_0000_0000_0000 | demo.n);
        // Each demo hearing once: one that exists (even deleted) is left as it is.
        match app.create_with_id(demo.owner, demo.hearing_type, id).await {
            Ok(_) => seeded = true,
            Err(AppError::FailedPrecondition(m)) if m.contains("already exists") => continue,
            Err(e) => return Err(e),
        }
        let (Some(start), Some(deadline)) = (day(demo.start), day(demo.deadline)) else { continue };
        let changes = HearingChanges {
            fields: [
                ("title", demo.title),
                ("summary", demo.summary),
                ("body", &format!("{}\n\nLæs forslaget og send dit høringssvar inden fristen.", demo.summary)),
                ("esdh_title", &format!("Høring: {}", demo.title)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            subject_area_id: Some(demo.subject.into()),
            city_area_id: Some(demo.city.into()),
            kle_number: Some(demo.kle.into()),
            contact: Some(ContactPerson {
                name: demo.owner.name.clone().unwrap_or_default(),
                email: "hoering@kommune.example".into(),
                phone: String::new(),
            }),
            start_date: Some(start),
            deadline: Some(deadline),
            closed: Some(demo.closed),
            notify_participants: false,
        };
        let hearing_id = id.to_string();
        let publisher = if demo.deadline < 0 { &past_app } else { app };
        publisher.update(demo.owner, &hearing_id, changes).await?;
        if demo.closed {
            app.invite(
                demo.owner,
                &hearing_id,
                &[(
                    format!("user:{}", find_user("erik").map(|u| u.principal.user_id).unwrap_or_default()),
                    "Erik Medarbejder".into(),
                )],
            )
            .await?;
        }
        if demo.publish {
            publisher.publish(demo.owner, &hearing_id).await?;
            app.advance_clock(&hearing_id, Utc::now()).await?;
        }
        if let Some(conclusion) = demo.conclude {
            app.conclude(demo.owner, &hearing_id, Some(conclusion.into())).await?;
        }
        if demo.n == 1 {
            // A reviewer, so the dashboard shows both roles.
            app.set_reviewer(&karen, &hearing_id, &lars.user_id.to_string(), true).await?;
        }
    }
    Ok(seeded)
}
