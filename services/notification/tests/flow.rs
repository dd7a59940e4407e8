//! From the hearing and response services' events to the mailbox, on SQLite and PostgreSQL
//! with a real SMTP server process: who is told what, in their language, once each however
//! often an event is delivered.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use agora_eventstore::Store;
use agora_eventstore::jetstream::{IntegrationEvent, IntegrationHandler, handle_batch, handle_once};
use agora_notification::events::{EventsHandler, HearingEventsHandler, ResponseEventsHandler};
use agora_notification::recipients::Contact;
use agora_notification::templates::Language;
use agora_proto::hearing::v1 as hpb;
use agora_proto::response::v1 as rpb;
use agora_vault::{KeyOwner, MemoryKeys, PersonKeys};
use prost::Message;
use support::SmtpServer;
use uuid::Uuid;

struct Feed {
    store: Store,
    hearing_id: String,
    owner_id: String,
    reviewers: Vec<String>,
    sequence: i64,
    hearings: HearingEventsHandler,
    responses: ResponseEventsHandler,
}

impl Feed {
    /// A new hearing of `owner_id`'s, its events handed to the handlers on `store`.
    fn new(store: &Store, owner_id: &str) -> Self {
        Self {
            store: store.clone(),
            hearing_id: Uuid::now_v7().to_string(),
            owner_id: owner_id.to_string(),
            reviewers: Vec::new(),
            sequence: 0,
            hearings: HearingEventsHandler { store: store.clone(), links: support::links() },
            responses: ResponseEventsHandler { store: store.clone(), links: support::links() },
        }
    }

    fn event(&mut self, service: &str, message: &str, subject: &str, data: Vec<u8>) -> IntegrationEvent {
        self.sequence += 1;
        agora_eventstore::testing::integration_event(service, message, subject, &self.hearing_id, self.sequence, data)
    }

    /// Hands the event over twice, as a redelivery would.
    async fn deliver(&self, handler: &dyn IntegrationHandler, event: &IntegrationEvent) {
        assert!(handle_once(&self.store, handler, event).await.expect("handled"));
        assert!(!handle_once(&self.store, handler, event).await.expect("again"), "a redelivery has no effect");
    }

    fn state(&self, status: hpb::HearingStatus) -> Option<hpb::HearingState> {
        Some(hpb::HearingState {
            hearing_id: self.hearing_id.clone(),
            status: status as i32,
            title: "Lokalplan for Bytorvet".into(),
            deadline: "2026-12-24".into(),
            owner_id: self.owner_id.clone(),
            reviewer_ids: self.reviewers.clone(),
            ..Default::default()
        })
    }

    async fn hearing(&mut self, message: &str, status: hpb::HearingStatus, data: Option<Vec<u8>>) {
        let data = data.unwrap_or_else(|| hpb::HearingCreated { hearing: self.state(status) }.encode_to_vec());
        let subject = self.hearing_id.clone();
        let event = self.event("hearing", message, &subject, data);
        self.deliver(&self.hearings, &event).await;
    }

    async fn invite(&mut self, status: hpb::HearingStatus, invitee: hpb::Invitee) {
        let data = hpb::InviteeAdded { hearing: self.state(status), invitee: Some(invitee) }.encode_to_vec();
        self.hearing("InviteeAdded", status, Some(data)).await;
    }

    async fn response(&mut self, message: &str, data: Vec<u8>) {
        let subject = Uuid::now_v7().to_string();
        let event = self.event("response", message, &subject, data);
        self.deliver(&self.responses, &event).await;
    }
}

fn response(hearing_id: &str, author: &str, number: i64, by_owner: bool) -> Option<rpb::ResponseState> {
    Some(rpb::ResponseState {
        response_id: Uuid::now_v7().to_string(),
        hearing_id: hearing_id.into(),
        number,
        author_id: author.into(),
        status: "Pending".into(),
        receipt_sha256: format!("sha-{number}"),
        accepted_at: "2026-12-01T09:30:00Z".into(),
        registered_by_owner: by_owner,
        ..Default::default()
    })
}

/// Who got which subject, sorted.
fn recipients_and_subjects(received: &[serde_json::Value]) -> Vec<(String, String)> {
    let mut got: Vec<(String, String)> = received
        .iter()
        .map(|m| {
            (
                m["rcpt_tos"][0].as_str().unwrap_or_default().to_string(),
                m["headers"]["Subject"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    got.sort();
    got
}

#[tokio::test]
async fn invitees_respondents_and_the_declined_are_told_once_each_in_their_language() {
    for (store, _guard) in agora_eventstore::testing::both_backends().await {
        let Some(server) = SmtpServer::start().await else { return };
        agora_notification::migrate(&store).await.expect("tables");
        let keys = MemoryKeys::shared();
        let (karen, erik, anna) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string(), Uuid::now_v7());
        let people = support::People(HashMap::from([
            (
                karen.clone(),
                Contact {
                    name: "Karen".into(),
                    email: Some("karen@kk.example".into()),
                    language: Language::Danish,
                    ..Default::default()
                },
            ),
            (
                erik.clone(),
                Contact {
                    name: "Erik".into(),
                    email: Some("erik@borger.example".into()),
                    language: Language::English,
                    ..Default::default()
                },
            ),
        ]));
        let mut feed = Feed::new(&store, &karen);
        let owner = KeyOwner::person(anna);
        let by_email = |address: &str, name: &str| {
            let (keys, owner, address, name) = (keys.clone(), owner.clone(), address.to_string(), name.to_string());
            async move {
                hpb::Invitee {
                    reference: format!("email:{address}"),
                    kind: "email".into(),
                    label: keys.seal(&owner, &name).await.expect("sealed"),
                    sealed_address: keys.seal(&owner, &address).await.expect("sealed"),
                }
            }
        };

        // Invited while the hearing is a draft: told when it starts. Invited later: told at once.
        feed.hearing("HearingCreated", hpb::HearingStatus::Created, None).await;
        let invitee = by_email("anna@forening.example", "Anna fra Grundejerforeningen").await;
        feed.invite(hpb::HearingStatus::Draft, invitee).await;
        let colleague = hpb::Invitee { reference: format!("user:{karen}"), kind: "user".into(), ..Default::default() };
        feed.invite(hpb::HearingStatus::Draft, colleague).await;
        feed.reviewers.push(erik.clone());
        let reviewer = hpb::ReviewerAdded { hearing: feed.state(hpb::HearingStatus::Draft), user_id: erik.clone() };
        feed.hearing("ReviewerAdded", hpb::HearingStatus::Draft, Some(reviewer.encode_to_vec())).await;
        feed.hearing("HearingPublished", hpb::HearingStatus::AwaitingStartDate, None).await;
        feed.hearing("HearingStarted", hpb::HearingStatus::Active, None).await;
        let late = by_email("bo@forening.example", "Bo").await;
        feed.invite(hpb::HearingStatus::Active, late).await;

        // Erik responds and is declined; a paper response the owner registers gets no receipt.
        let hearing_id = feed.hearing_id.clone();
        let submitted = rpb::ResponseSubmitted { response: response(&hearing_id, &erik, 1, false) }.encode_to_vec();
        feed.response("ResponseSubmitted", submitted).await;
        let paper = rpb::ResponseSubmitted { response: response(&hearing_id, &karen, 2, true) }.encode_to_vec();
        feed.response("ResponseSubmitted", paper).await;
        let declined =
            rpb::ResponseDeclined { response: response(&hearing_id, &erik, 1, false), reason: "Off topic".into() };
        feed.response("ResponseDeclined", declined.encode_to_vec()).await;
        // The owner moves the deadline and asks that everyone involved be told.
        let changed = hpb::HearingUpdated {
            hearing: feed.state(hpb::HearingStatus::Active),
            changed: vec!["deadline".into()],
            notify_participants: true,
        };
        feed.hearing("HearingUpdated", hpb::HearingStatus::Active, Some(changed.encode_to_vec())).await;
        let quiet = hpb::HearingUpdated {
            hearing: feed.state(hpb::HearingStatus::Active),
            changed: vec!["summary".into()],
            notify_participants: false,
        };
        feed.hearing("HearingUpdated", hpb::HearingStatus::Active, Some(quiet.encode_to_vec())).await;
        let concluded = hpb::HearingConcluded {
            hearing: feed.state(hpb::HearingStatus::Concluded),
            conclusion: "Lokalplanen vedtages.".into(),
        };
        feed.hearing("HearingConcluded", hpb::HearingStatus::Concluded, Some(concluded.encode_to_vec())).await;

        let sender =
            support::sender(&store, keys.clone(), Arc::new(people), Arc::new(support::channel_to(server.port)));
        assert_eq!(sender.run_due().await.expect("sent"), 11);
        let received = server.wait_for(11).await;
        let got = recipients_and_subjects(&received);
        let expected = [
            ("anna@forening.example", "Du er inviteret til at afgive høringssvar: Lokalplan for Bytorvet"),
            ("anna@forening.example", "Høringen er ændret: Lokalplan for Bytorvet"),
            ("bo@forening.example", "Du er inviteret til at afgive høringssvar: Lokalplan for Bytorvet"),
            ("bo@forening.example", "Høringen er ændret: Lokalplan for Bytorvet"),
            ("erik@borger.example", "Receipt for your response no. 1"),
            ("erik@borger.example", "The consultation has changed: Lokalplan for Bytorvet"),
            ("erik@borger.example", "The conclusion is published: Lokalplan for Bytorvet"),
            ("erik@borger.example", "You were added as a reviewer: Lokalplan for Bytorvet"),
            ("erik@borger.example", "Your response no. 1 was declined"),
            ("karen@kk.example", "Du er inviteret til at afgive høringssvar: Lokalplan for Bytorvet"),
            ("karen@kk.example", "Høringen er ændret: Lokalplan for Bytorvet"),
        ];
        let mut expected: Vec<(String, String)> =
            expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        expected.sort();
        assert_eq!(got, expected);
        let anna = received
            .iter()
            .find(|m| {
                m["rcpt_tos"][0] == "anna@forening.example"
                    && m["headers"]["Subject"].as_str().is_some_and(|s| s.starts_with("Du er"))
            })
            .expect("anna's invitation");
        assert!(
            anna["text"]
                .as_str()
                .is_some_and(|t| t.contains("Kære Anna fra Grundejerforeningen") && t.contains("24-12-2026"))
        );
        let declined =
            received.iter().find(|m| m["headers"]["Subject"] == "Your response no. 1 was declined").expect("decline");
        assert!(declined["text"].as_str().is_some_and(|t| t.contains("Off topic")));
        let unsubscribe = anna["headers"]["List-Unsubscribe"].as_str().expect("one-click unsubscribe");
        assert!(unsubscribe.starts_with("<https://blivhoert.kk.example/afmeld/"), "{unsubscribe}");
        assert_eq!(sender.run_due().await.expect("nothing more"), 0);
        let reviewer = received
            .iter()
            .find(|m| m["headers"]["Subject"].as_str().is_some_and(|s| s.contains("reviewer")))
            .expect("reviewer");
        assert!(reviewer["text"].as_str().is_some_and(|t| t.contains("Karen added you")), "{reviewer}");
        assert_eq!(server.received().len(), 11, "once each");

        // The next morning at 07:30 in Copenhagen the owner and the reviewer get the day's digest,
        // once however often it is asked for.
        let today = agora_notification::digest::local_day(chrono::Utc::now());
        let morning = today
            .succ_opt()
            .and_then(|d| d.and_hms_opt(7, 30, 0))
            .and_then(|t| t.and_local_timezone(chrono_tz::Europe::Copenhagen).single())
            .map(|t| t.to_utc())
            .expect("tomorrow morning");
        let before = morning - chrono::Duration::hours(1);
        assert_eq!(
            agora_notification::digest::queue_due(&store, before, &support::links()).await.expect("digest"),
            0,
            "not before 07:00"
        );
        assert_eq!(agora_notification::digest::queue_due(&store, morning, &support::links()).await.expect("digest"), 2);
        assert_eq!(
            agora_notification::digest::queue_due(&store, morning, &support::links()).await.expect("digest"),
            0,
            "once"
        );
        assert_eq!(sender.run_due().await.expect("sent"), 2);
        let received = server.wait_for(13).await;
        let digest = received
            .iter()
            .find(|m| {
                m["rcpt_tos"][0] == "karen@kk.example"
                    && m["headers"]["Subject"].as_str().is_some_and(|s| s.starts_with("Dagens status"))
            })
            .expect("karen's digest");
        let text = digest["text"].as_str().expect("text");
        assert!(
            text.contains(
                "Lokalplan for Bytorvet: 2 nye høringssvar; status: kladde → offentliggjort → aktiv → afsluttet"
            ),
            "{text}"
        );
    }
}

/// A surge's last responses and the hearing's conclusion can reach the service in one batch:
/// the respondents in it are told of the conclusion as well, once each however often they
/// responded.
#[tokio::test]
async fn respondents_in_the_batch_of_the_conclusion_are_told_of_it_once_each() {
    for (store, _guard) in agora_eventstore::testing::both_backends().await {
        let Some(server) = SmtpServer::start().await else { return };
        agora_notification::migrate(&store).await.expect("tables");
        let (karen, erik, ida) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
        let person = |name: &str, email: &str, language| Contact {
            name: name.into(),
            email: Some(email.into()),
            language,
            ..Default::default()
        };
        let people = support::People(HashMap::from([
            (erik.clone(), person("Erik", "erik@borger.example", Language::English)),
            (ida.clone(), person("Ida", "ida@borger.example", Language::Danish)),
        ]));
        let mut feed = Feed::new(&store, &karen);
        feed.hearing("HearingCreated", hpb::HearingStatus::Created, None).await;
        feed.hearing("HearingPublished", hpb::HearingStatus::AwaitingStartDate, None).await;
        feed.hearing("HearingStarted", hpb::HearingStatus::Active, None).await;

        let hearing_id = feed.hearing_id.clone();
        let mut batch = Vec::new();
        for (author, number) in [(&erik, 1), (&erik, 2), (&ida, 3)] {
            let submitted = rpb::ResponseSubmitted { response: response(&hearing_id, author, number, false) };
            let subject = Uuid::now_v7().to_string();
            batch.push(feed.event("response", "ResponseSubmitted", &subject, submitted.encode_to_vec()));
        }
        let concluded = hpb::HearingConcluded {
            hearing: feed.state(hpb::HearingStatus::Concluded),
            conclusion: "Vedtaget.".into(),
        };
        batch.push(feed.event("hearing", "HearingConcluded", &hearing_id, concluded.encode_to_vec()));
        let handler = EventsHandler::new(store.clone(), support::links());
        assert_eq!(handle_batch(&store, &handler, &batch).await.expect("handled"), 4);

        let sender =
            support::sender(&store, MemoryKeys::shared(), Arc::new(people), Arc::new(support::channel_to(server.port)));
        assert_eq!(sender.run_due().await.expect("sent"), 5);
        let got = recipients_and_subjects(&server.wait_for(5).await);
        let expected = [
            ("erik@borger.example", "Receipt for your response no. 1"),
            ("erik@borger.example", "Receipt for your response no. 2"),
            ("erik@borger.example", "The conclusion is published: Lokalplan for Bytorvet"),
            ("ida@borger.example", "Konklusionen er offentliggjort: Lokalplan for Bytorvet"),
            ("ida@borger.example", "Kvittering for dit høringssvar nr. 3"),
        ];
        let expected: Vec<(String, String)> = expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert_eq!(got, expected);
        assert_eq!(sender.run_due().await.expect("nothing more"), 0);
    }
}
