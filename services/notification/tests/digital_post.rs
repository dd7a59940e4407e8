//! Digital Post for citizens invited by CPR number, against a contract double of NgDP: the
//! letter reaches the citizen's number, the number is never in the log in clear, and a letter
//! sent again is the same letter (NgDP's 409 counts as delivered).

#[path = "support/ngdp_double.rs"]
mod ngdp_double;
mod support;

use std::sync::Arc;

use agora_eventstore::jetstream::handle_once;
use agora_notification::digital_post::{DigitalPostChannel, DigitalPostConfig, Letter, Ngdp};
use agora_notification::events::HearingEventsHandler;
use agora_notification::templates::Language;
use agora_proto::hearing::v1 as hpb;
use agora_vault::{KeyOwner, PersonKeys};
use ngdp_double::NgdpDouble;
use prost::Message;
use uuid::Uuid;

fn ngdp(double: &NgdpDouble) -> Ngdp {
    Ngdp::new(DigitalPostConfig {
        base_url: double.url.clone(),
        sender_cvr: "64942212".into(),
        sender_name: "Københavns Kommune".into(),
        timeout_seconds: 5,
        letters_per_second: 5,
    })
    .expect("client")
}

#[tokio::test]
async fn citizens_and_companies_invited_by_number_get_the_invitation_in_digital_post_once() {
    for (store, _guard) in agora_eventstore::testing::both_backends().await {
        agora_notification::migrate(&store).await.expect("tables");
        let double = NgdpDouble::start().await;
        let keys = agora_vault::MemoryKeys::shared();
        let hearing = Uuid::now_v7();
        // The hearing service sealed the number (and the label) for the invitee.
        let owner = KeyOwner::for_reference("person:abc", hearing).expect("a person");
        let invitee = hpb::Invitee {
            reference: "person:abc".into(),
            kind: "person".into(),
            label: keys.seal(&owner, "Birgitte Borger").await.expect("sealed"),
            sealed_address: keys.seal(&owner, "0101801234").await.expect("sealed"),
        };
        let state = |status: hpb::HearingStatus| hpb::HearingState {
            hearing_id: hearing.to_string(),
            status: status as i32,
            title: "Lokalplan for Bytorvet".into(),
            deadline: "2026-12-24".into(),
            ..Default::default()
        };
        let handler = HearingEventsHandler { store: store.clone(), links: support::links() };
        let id = hearing.to_string();
        // And a company, by its CVR number, sealed with a key of its own.
        let company = KeyOwner::for_company("company:xyz", hearing).expect("a company");
        let firm = hpb::Invitee {
            reference: "company:xyz".into(),
            kind: "company".into(),
            label: keys.seal(&company, "Byggefirmaet A/S").await.expect("sealed"),
            sealed_address: keys.seal(&company, "12345678").await.expect("sealed"),
        };
        for (sequence, invitee) in [(1, invitee), (2, firm)] {
            let added = hpb::InviteeAdded { hearing: Some(state(hpb::HearingStatus::Draft)), invitee: Some(invitee) }
                .encode_to_vec();
            let event =
                agora_eventstore::testing::integration_event("hearing", "InviteeAdded", &id, &id, sequence, added);
            handle_once(&store, &handler, &event).await.expect("handled");
        }
        let started = hpb::HearingStarted { hearing: Some(state(hpb::HearingStatus::Active)) }.encode_to_vec();
        let event = agora_eventstore::testing::integration_event("hearing", "HearingStarted", &id, &id, 3, started);
        handle_once(&store, &handler, &event).await.expect("handled");

        let email = Arc::new(support::channel_to(1));
        let mut sender = support::sender(&store, keys.clone(), Arc::new(support::People::default()), email);
        sender.digital_post = Some(Arc::new(ngdp(&double)));
        assert_eq!(sender.run_due().await.expect("sent"), 2);
        let letters = double.letters.lock().expect("letters").clone();
        assert_eq!(letters.len(), 2);
        let to_company = letters.iter().find(|l| l.id_type == "CVR").expect("the company's letter");
        assert_eq!(to_company.recipient, "12345678");
        assert!(to_company.text.contains("Kære Byggefirmaet A/S"), "{}", to_company.text);
        let ngdp_double::Taken { uuid, recipient: cpr, label, text, .. } =
            letters.iter().find(|l| l.id_type == "CPR").expect("the citizen's letter");
        assert_eq!(
            (cpr.as_str(), label.as_str()),
            ("0101801234", "Du er inviteret til at afgive høringssvar: Lokalplan for Bytorvet")
        );
        assert!(text.contains("Kære Birgitte Borger") && text.contains("24-12-2026"), "{text}");

        // The same letter sent again (its outcome lost) is the same letter: NgDP says 409, and that is delivered.
        let again = Letter {
            message_uuid: Uuid::parse_str(uuid).expect("uuid"),
            id_type: "CPR".into(),
            id: cpr.clone(),
            subject: label.clone(),
            text: text.clone(),
            language: Language::Danish,
        };
        ngdp(&double).send(&again).await.expect("a repeat counts as delivered");
        assert_eq!(double.letters.lock().expect("letters").len(), 2);
        assert_eq!(double.posts.load(std::sync::atomic::Ordering::SeqCst), 3);

        // NgDP reports the citizen's letter delivered and the company's undeliverable.
        double.statuses.lock().expect("statuses").insert(to_company.uuid.clone(), "UNDELIVERABLE".into());
        assert_eq!(
            agora_notification::receipts::collect(&store, &ngdp(&double), chrono::Utc::now()).await.expect("receipts"),
            2
        );
        assert_eq!(
            agora_notification::receipts::collect(&store, &ngdp(&double), chrono::Utc::now()).await.expect("receipts"),
            0,
            "final"
        );
        let mut reported = Vec::new();
        for group in ["person:abc", "company:xyz"] {
            let message: agora_notification::outbox::Message =
                agora_notification::outbox::MESSAGES.steps(&store, group).await.expect("steps").pop().expect("message");
            reported.push(
                agora_notification::receipts::status(&store, &message.key).await.expect("status").expect("noted"),
            );
        }
        assert_eq!(reported[0], ("delivered".to_string(), String::new()));
        assert_eq!(reported[1], ("undeliverable".to_string(), "ingen digital postkasse".to_string()));
        // A citizen with an account responds: the receipt goes to their Digital Post, not e-mail.
        let citizen = Uuid::now_v7().to_string();
        let mut people = std::collections::HashMap::new();
        people.insert(
            citizen.clone(),
            agora_notification::recipients::Contact {
                name: "Carl Borger".into(),
                email: Some("carl@borger.example".into()),
                digital_post: Some(("CPR".into(), "0202802345".into())),
                ..Default::default()
            },
        );
        let mut sender =
            support::sender(&store, keys.clone(), Arc::new(support::People(people)), Arc::new(support::channel_to(1)));
        sender.digital_post = Some(Arc::new(ngdp(&double)));
        let response = agora_proto::response::v1::ResponseState {
            hearing_id: id.clone(),
            number: 1,
            author_id: citizen.clone(),
            receipt_sha256: "abc".into(),
            accepted_at: "2026-12-01T09:00:00Z".into(),
            ..Default::default()
        };
        let submitted = agora_proto::response::v1::ResponseSubmitted { response: Some(response) }.encode_to_vec();
        let event =
            agora_eventstore::testing::integration_event("response", "ResponseSubmitted", "r1", &id, 1, submitted);
        let responses =
            agora_notification::events::ResponseEventsHandler { store: store.clone(), links: support::links() };
        handle_once(&store, &responses, &event).await.expect("handled");
        assert_eq!(sender.run_due().await.expect("sent"), 1);
        let letters = double.letters.lock().expect("letters").clone();
        let receipt = letters.iter().find(|l| l.recipient == "0202802345").expect("the receipt in Digital Post");
        assert_eq!(receipt.label, "Kvittering for dit høringssvar nr. 1");

        let rows: Vec<(String,)> = agora_eventstore::on_backend!(store.backend(), pool => {
            sqlx::query_as("SELECT CAST(payload AS TEXT) FROM events").fetch_all(pool).await.expect("events")
        });
        assert!(
            rows.iter().all(|(p,)| !p.contains("0101801234") && !p.contains("12345678")),
            "no CPR or CVR number in the log"
        );
    }
}
