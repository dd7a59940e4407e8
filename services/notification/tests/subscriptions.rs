//! Subscriptions on SQLite and PostgreSQL with a real SMTP server: an e-mail address is
//! confirmed by the link sent to it (double opt-in) before anything else is sent there; a user
//! with an account is subscribed at once; matching public hearings are told of; the
//! unsubscribe link in a message ends the subscription.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use agora_auth::{Capacity, Principal, SigningKey, TokenIssuer};
use agora_eventstore::jetstream::handle_once;
use agora_notification::events::HearingEventsHandler;
use agora_notification::grpc::NotificationGrpc;
use agora_notification::recipients::Contact;
use agora_notification::templates::Language;
use agora_proto::hearing::v1 as hpb;
use agora_proto::notification::v1 as pb;
use agora_proto::notification::v1::notification_service_server::NotificationService;
use prost::Message;
use support::SmtpServer;
use tower::ServiceExt;
use uuid::Uuid;

/// The path of the link in a message's text that starts with `prefix`.
fn link(text: &str, prefix: &str) -> String {
    let start = text.find(prefix).unwrap_or_else(|| panic!("no {prefix} link in {text}"));
    text[start..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_start_matches("https://blivhoert.kk.example")
        .to_string()
}

#[tokio::test]
async fn a_confirmed_subscriber_hears_of_matching_public_hearings_until_they_unsubscribe() {
    for (store, _guard) in agora_eventstore::testing::both_backends().await {
        let Some(server) = SmtpServer::start().await else { return };
        agora_notification::migrate(&store).await.expect("tables");
        let issuer =
            TokenIssuer::new(SigningKey::generate().expect("key"), "agora", "agora", chrono::Duration::hours(1));
        let erik = Principal::new(Uuid::now_v7(), Capacity::Citizen);
        let people = Arc::new(support::People(HashMap::from([(
            erik.user_id.to_string(),
            Contact {
                name: "Erik".into(),
                email: Some("erik@borger.example".into()),
                language: Language::English,
                ..Default::default()
            },
        )])));
        let keys = agora_vault::MemoryKeys::shared();
        let portal = support::portal();
        let email = Arc::new(support::channel_to(server.port));
        let grpc = NotificationGrpc {
            store: store.clone(),
            verifier: Arc::new(issuer.verifier()),
            keys: keys.clone(),
            directory: people.clone(),
            email: email.clone(),
            portal: portal.clone(),
            message_domain: "kk.example".into(),
        };
        let sender = support::sender(&store, keys.clone(), people.clone(), email);
        let routes = agora_notification::unsubscribe::routes(store.clone(), portal.unsubscribe.clone());

        // Anna, without an account, follows KLE 01.02; Erik, logged in, a subject area.
        let anna = pb::SubscribeRequest {
            topic: "kle".into(),
            value: "01.02".into(),
            email: "anna@forening.example".into(),
            language: String::new(),
        };
        let pending = grpc.subscribe(tonic::Request::new(anna)).await.expect("subscribed").into_inner();
        assert_eq!(pending.status, "pending");
        let bad = pb::SubscribeRequest {
            topic: "kle".into(),
            value: "1.2".into(),
            email: "anna@forening.example".into(),
            language: String::new(),
        };
        let refused = grpc.subscribe(tonic::Request::new(bad)).await.expect_err("bad KLE");
        assert!(refused.message().contains("'1.2'"), "{}", refused.message());
        let token = issuer.issue(&erik).expect("token");
        let mine = pb::SubscribeRequest {
            topic: "subject_area".into(),
            value: "plan".into(),
            email: String::new(),
            language: String::new(),
        };
        let request = agora_auth::grpc::bearer(tonic::Request::new(mine), &token).expect("bearer");
        assert_eq!(grpc.subscribe(request).await.expect("subscribed").into_inner().status, "active");

        // Only the confirmation goes to Anna's address; she follows its link.
        assert_eq!(sender.run_due().await.expect("sent"), 1);
        let confirmation = server.wait_for(1).await.remove(0);
        assert_eq!(confirmation["headers"]["Subject"], "Bekræft dit abonnement");
        let confirm =
            link(confirmation["text"].as_str().expect("text"), "https://blivhoert.kk.example/abonnement/bekraeft/");
        let page = routes
            .clone()
            .oneshot(axum::http::Request::get(confirm.clone()).body(axum::body::Body::empty()).expect("get"))
            .await
            .expect("page");
        assert_eq!(page.status(), 200);
        let posted = routes
            .clone()
            .oneshot(axum::http::Request::post(confirm).body(axum::body::Body::empty()).expect("post"))
            .await
            .expect("post");
        assert_eq!(posted.status(), 200);

        // A public hearing on KLE 01.02.05 in the subject area "plan" is published.
        let hearing = Uuid::now_v7().to_string();
        let state = |status: hpb::HearingStatus| hpb::HearingState {
            hearing_id: hearing.clone(),
            status: status as i32,
            title: "Lokalplan for Bytorvet".into(),
            subject_area_id: "plan".into(),
            kle_number: "01.02.05".into(),
            deadline: "2026-12-24".into(),
            ..Default::default()
        };
        let handler = HearingEventsHandler { store: store.clone(), links: support::links() };
        let published =
            hpb::HearingPublished { hearing: Some(state(hpb::HearingStatus::AwaitingStartDate)) }.encode_to_vec();
        let event = agora_eventstore::testing::integration_event(
            "hearing",
            "HearingPublished",
            &hearing,
            &hearing,
            1,
            published,
        );
        handle_once(&store, &handler, &event).await.expect("handled");
        assert_eq!(sender.run_due().await.expect("sent"), 2);
        let received = server.wait_for(3).await;
        let to_anna = received
            .iter()
            .find(|m| {
                m["rcpt_tos"][0] == "anna@forening.example"
                    && m["headers"]["Subject"] == "Ny høring: Lokalplan for Bytorvet"
            })
            .expect("anna is told");
        assert!(to_anna["text"].as_str().is_some_and(|t| t.contains("KLE-nummeret 01.02")), "{to_anna}");
        let to_erik = received.iter().find(|m| m["rcpt_tos"][0] == "erik@borger.example").expect("erik is told");
        assert_eq!(to_erik["headers"]["Subject"], "New consultation: Lokalplan for Bytorvet");

        // Anna's unsubscribe link ends her subscription: she hears nothing of the conclusion.
        let unsubscribe = link(to_anna["text"].as_str().expect("text"), "https://blivhoert.kk.example/afmeld/");
        let done = routes
            .clone()
            .oneshot(axum::http::Request::post(unsubscribe).body(axum::body::Body::empty()).expect("post"))
            .await
            .expect("post");
        assert_eq!(done.status(), 200);
        let concluded = hpb::HearingConcluded {
            hearing: Some(state(hpb::HearingStatus::Concluded)),
            conclusion: "Vedtaget.".into(),
        }
        .encode_to_vec();
        let event = agora_eventstore::testing::integration_event(
            "hearing",
            "HearingConcluded",
            &hearing,
            &hearing,
            2,
            concluded,
        );
        handle_once(&store, &handler, &event).await.expect("handled");
        assert_eq!(sender.run_due().await.expect("sent"), 1, "Erik only");
        let received = server.wait_for(4).await;
        assert_eq!(received.iter().filter(|m| m["rcpt_tos"][0] == "anna@forening.example").count(), 2);
        // An internal hearing is heard of by no subscriber.
        let internal = hpb::HearingState {
            internal: true,
            hearing_id: Uuid::now_v7().to_string(),
            ..state(hpb::HearingStatus::AwaitingStartDate)
        };
        let published = hpb::HearingPublished { hearing: Some(internal.clone()) }.encode_to_vec();
        let event = agora_eventstore::testing::integration_event(
            "hearing",
            "HearingPublished",
            &internal.hearing_id,
            &internal.hearing_id,
            1,
            published,
        );
        handle_once(&store, &handler, &event).await.expect("handled");
        assert_eq!(sender.run_due().await.expect("nothing"), 0);
        let request =
            agora_auth::grpc::bearer(tonic::Request::new(pb::MySubscriptionsRequest {}), &token).expect("bearer");
        let listed = grpc.my_subscriptions(request).await.expect("mine").into_inner();
        assert_eq!(listed.subscriptions.len(), 1);
    }
}
