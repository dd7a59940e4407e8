//! Templates over gRPC on SQLite and PostgreSQL: the owner edits their hearing's, checked when
//! saved; administrators the municipality's; previews and a test message to oneself; the
//! messages then sent use them.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use agora_auth::{Capacity, Principal, Role, SigningKey, TokenIssuer};
use agora_eventstore::jetstream::handle_once;
use agora_notification::events::{HearingEventsHandler, ResponseEventsHandler};
use agora_notification::grpc::NotificationGrpc;
use agora_notification::recipients::Contact;
use agora_notification::templates::Language;
use agora_proto::hearing::v1 as hpb;
use agora_proto::notification::v1 as pb;
use agora_proto::notification::v1::notification_service_server::NotificationService;
use agora_proto::response::v1 as rpb;
use prost::Message;
use support::SmtpServer;
use tonic::Code;
use uuid::Uuid;

fn template_ref(hearing: &str, kind: &str) -> pb::TemplateRef {
    pb::TemplateRef { hearing_id: hearing.into(), kind: kind.into(), language: "da".into() }
}

/// A request from `who`.
fn call<T>(issuer: &TokenIssuer, who: &Principal, message: T) -> tonic::Request<T> {
    let token = issuer.issue(who).expect("token");
    agora_auth::grpc::bearer(tonic::Request::new(message), &token).expect("bearer")
}

#[tokio::test]
async fn an_owner_words_their_hearings_receipts_checked_previewed_and_tried_on_themself() {
    for (store, _guard) in agora_eventstore::testing::both_backends().await {
        let Some(server) = SmtpServer::start().await else { return };
        agora_notification::migrate(&store).await.expect("tables");
        let issuer =
            TokenIssuer::new(SigningKey::generate().expect("key"), "agora", "agora", chrono::Duration::hours(1));
        let owner = Principal::new(Uuid::now_v7(), Capacity::Employee).with_role(Role::HearingCreator);
        let stranger = Principal::new(Uuid::now_v7(), Capacity::Employee);
        let admin = Principal::new(Uuid::now_v7(), Capacity::Employee).with_role(Role::Administrator);
        let citizen = Uuid::now_v7().to_string();
        let people = Arc::new(support::People(HashMap::from([
            (
                owner.user_id.to_string(),
                Contact {
                    name: "Karen".into(),
                    email: Some("karen@kk.example".into()),
                    language: Language::Danish,
                    ..Default::default()
                },
            ),
            (
                citizen.clone(),
                Contact {
                    name: "Birgitte".into(),
                    email: Some("birgitte@borger.example".into()),
                    language: Language::Danish,
                    ..Default::default()
                },
            ),
        ])));
        let portal = support::portal();
        let email = Arc::new(support::channel_to(server.port));
        let grpc = NotificationGrpc {
            store: store.clone(),
            verifier: Arc::new(issuer.verifier()),
            keys: agora_vault::MemoryKeys::shared(),
            directory: people.clone(),
            email: email.clone(),
            portal: portal.clone(),
            message_domain: "kk.example".into(),
        };

        // The notification service learns the hearing (and its owner) from its events.
        let hearing = Uuid::now_v7().to_string();
        let state = hpb::HearingState {
            hearing_id: hearing.clone(),
            status: hpb::HearingStatus::Active as i32,
            title: "Lokalplan for Bytorvet".into(),
            owner_id: owner.user_id.to_string(),
            ..Default::default()
        };
        let created = hpb::HearingCreated { hearing: Some(state) }.encode_to_vec();
        let event =
            agora_eventstore::testing::integration_event("hearing", "HearingCreated", &hearing, &hearing, 1, created);
        handle_once(&store, &HearingEventsHandler { store: store.clone(), links: support::links() }, &event)
            .await
            .expect("learnt");

        let receipt = template_ref(&hearing, "response_receipt");
        let current = grpc.get_template(call(&issuer, &owner, receipt.clone())).await.expect("get").into_inner();
        assert_eq!(current.source, "default");
        assert!(current.placeholders.contains(&"receipt_hash".to_string()));

        // Checked when saved: an unknown placeholder is named.
        let mut wording = pb::SetTemplateRequest {
            r#ref: Some(receipt.clone()),
            subject: "Tak for dit svar på {{hearing_title}}".into(),
            text: "Kære {{recipient_name}}, vi har dit svar nr. {{response_number}} ({{receipt_hash}}). {{decline_reason}}".into(),
            html: "<p>Kære {{recipient_name}}, tak. {{unsubscribe_url}}</p>".into(),
        };
        let refused = grpc.set_template(call(&issuer, &owner, wording.clone())).await.expect_err("unknown placeholder");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains("{{decline_reason}}"), "{}", refused.message());
        wording.text = "Kære {{recipient_name}}, vi har dit svar nr. {{response_number}} ({{receipt_hash}}).".into();
        let denied = grpc.set_template(call(&issuer, &stranger, wording.clone())).await.expect_err("not the owner");
        assert_eq!(denied.code(), Code::PermissionDenied);
        let saved = grpc.set_template(call(&issuer, &owner, wording.clone())).await.expect("saved").into_inner();
        assert_eq!(saved.source, "hearing");
        let municipality = grpc
            .set_template(call(
                &issuer,
                &owner,
                pb::SetTemplateRequest { r#ref: Some(template_ref("", "response_receipt")), ..wording.clone() },
            ))
            .await;
        assert_eq!(municipality.expect_err("administrators only").code(), Code::PermissionDenied);
        let bad_kind =
            grpc.get_template(call(&issuer, &owner, template_ref(&hearing, "receipt"))).await.expect_err("kind");
        assert!(bad_kind.message().contains("kind: 'receipt'"), "{}", bad_kind.message());

        let preview =
            grpc.preview_template(call(&issuer, &owner, receipt.clone())).await.expect("preview").into_inner();
        assert_eq!(preview.subject, "Tak for dit svar på [hearing_title]");
        let test = grpc.send_test_message(call(&issuer, &owner, receipt.clone())).await.expect("test").into_inner();
        assert_eq!(test.to, "karen@kk.example");
        let received = server.wait_for(1).await;
        assert!(received[0]["text"].as_str().is_some_and(|t| t.contains("Kære Karen")), "{}", received[0]);

        // An administrator words the municipality's; the owner's own still comes first for their hearing.
        let other = template_ref("", "conclusion_published");
        let municipal = pb::SetTemplateRequest {
            r#ref: Some(other.clone()),
            subject: "Høringen er slut: {{hearing_title}}".into(),
            text: "{{conclusion}}".into(),
            html: "<p>{{conclusion}}</p>".into(),
        };
        assert_eq!(
            grpc.set_template(call(&issuer, &admin, municipal.clone())).await.expect("admin").into_inner().source,
            "municipality"
        );
        let inherited = grpc
            .get_template(call(&issuer, &owner, template_ref(&hearing, "conclusion_published")))
            .await
            .expect("get");
        assert_eq!(inherited.into_inner().source, "municipality");

        // The receipts of this hearing are sent in the owner's words.
        let response = rpb::ResponseState {
            hearing_id: hearing.clone(),
            number: 3,
            author_id: citizen.clone(),
            receipt_sha256: "abc123".into(),
            accepted_at: "2026-12-01T09:00:00Z".into(),
            ..Default::default()
        };
        let submitted = rpb::ResponseSubmitted { response: Some(response) }.encode_to_vec();
        let event =
            agora_eventstore::testing::integration_event("response", "ResponseSubmitted", "r", &hearing, 1, submitted);
        handle_once(&store, &ResponseEventsHandler { store: store.clone(), links: support::links() }, &event)
            .await
            .expect("queued");
        let sender = support::sender(&store, agora_vault::MemoryKeys::shared(), people.clone(), email);
        assert_eq!(sender.run_due().await.expect("sent"), 1);
        let received = server.wait_for(2).await;
        let birgitte = received.iter().find(|m| m["rcpt_tos"][0] == "birgitte@borger.example").expect("the receipt");
        assert_eq!(birgitte["headers"]["Subject"], "Tak for dit svar på Lokalplan for Bytorvet");
        assert!(
            birgitte["text"].as_str().is_some_and(|t| t.contains("Kære Birgitte, vi har dit svar nr. 3 (abc123)."))
        );
    }
}
