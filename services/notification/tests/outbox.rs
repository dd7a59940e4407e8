//! The queue of messages on SQLite and PostgreSQL, sending to a real SMTP server process: once
//! each, nothing for an erased person, the same Message-ID when a lost outcome makes it send
//! again, and failures retried and parked.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use agora_eventstore::Store;
use agora_jobs::{RetryPolicy, StepState};
use agora_notification::message::UnsubscribeSigner;
use agora_notification::outbox::{self, Delivery, EmailChannel, MESSAGES, Message, Portal, RateLimit, Sender};
use agora_notification::plan::{HearingInfo, Links, Trigger, plan};
use agora_notification::recipients::Recipient;
use agora_notification::smtp::{Email, SendError, SmtpChannel};
use agora_vault::{KeyOwner, MemoryKeys, PersonKeys};
use support::SmtpServer;
use uuid::Uuid;

fn smtp(port: u16) -> SmtpChannel {
    support::channel_to(port)
}

struct Setup {
    store: Store,
    keys: Arc<MemoryKeys>,
    people: Arc<support::People>,
    clock: Arc<AtomicI64>,
    event: Uuid,
}

impl Setup {
    async fn new(store: Store) -> Self {
        agora_notification::migrate(&store).await.expect("tables");
        Self {
            store,
            keys: MemoryKeys::shared(),
            people: Arc::default(),
            clock: Arc::new(AtomicI64::new(1_800_000_000_000)),
            event: Uuid::now_v7(),
        }
    }

    fn sender(&self, email: Arc<dyn EmailChannel>, retry: RetryPolicy) -> Sender {
        let clock = self.clock.clone();
        Sender {
            store: self.store.clone(),
            keys: self.keys.clone(),
            directory: self.people.clone(),
            email,
            digital_post: None,
            portal: Portal {
                name: "Bliv hørt".into(),
                url: "https://blivhoert.kk.example".into(),
                unsubscribe: Arc::new(UnsubscribeSigner::new(b"0123456789abcdef0123456789abcdef")),
            },
            retry,
            clock: Arc::new(move || {
                chrono::DateTime::from_timestamp_millis(clock.load(Ordering::SeqCst)).unwrap_or_default()
            }),
            rate: Arc::new(tokio::sync::Mutex::new(RateLimit::new(100.0, 10))),
        }
    }

    fn advance(&self, seconds: i64) {
        self.clock.fetch_add(seconds * 1000, Ordering::SeqCst);
    }

    /// An invitation for `person`, invited by e-mail at `address`, caused by this setup's event.
    async fn invitation(&self, person: Uuid, address: &str) -> Delivery {
        let owner = KeyOwner::person(person);
        let recipient = Recipient::Invitee {
            reference: format!("email:{person}"),
            sealed_address: self.keys.seal(&owner, address).await.expect("sealed"),
            sealed_name: self.keys.seal(&owner, &format!("Borger {address}")).await.expect("sealed"),
        };
        let hearing = HearingInfo {
            hearing_id: "h1".into(),
            title: "Lokalplan for Bytorvet".into(),
            status: "Active".into(),
            deadline: "2026-12-24".into(),
        };
        let links = Links { portal_url: "https://blivhoert.kk.example".into(), message_domain: "kk.example".into() };
        let mut planned = plan(&Trigger::InviteeAdded { invitee: recipient }, &hearing, self.event, &links);
        planned.pop().expect("an invitation")
    }

    async fn enqueue(&self, deliveries: Vec<Delivery>) -> usize {
        let mut tx = self.store.begin().await.expect("tx");
        let new = outbox::enqueue_in(&self.store, &mut tx, deliveries).await.expect("queued");
        tx.commit().await.expect("commit");
        new
    }
}

fn message_ids(received: &[serde_json::Value]) -> Vec<String> {
    let mut ids: Vec<String> =
        received.iter().map(|m| m["headers"]["Message-ID"].as_str().unwrap_or_default().to_string()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn each_message_is_sent_once_and_nothing_reaches_an_erased_person() {
    for (store, _guard) in agora_eventstore::testing::both_backends().await {
        let Some(server) = SmtpServer::start().await else { return };
        let setup = Setup::new(store.clone()).await;
        let (anna, bo, erased) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let deliveries = vec![
            setup.invitation(anna, "anna@borger.example").await,
            setup.invitation(bo, "bo@borger.example").await,
            setup.invitation(erased, "slettet@borger.example").await,
        ];
        assert_eq!(setup.enqueue(deliveries.clone()).await, 3);
        // The queue holds no address or name in clear: the events are the audit log.
        let rows: Vec<(String,)> = agora_eventstore::on_backend!(store.backend(), pool => {
            sqlx::query_as("SELECT CAST(payload AS TEXT) FROM events").fetch_all(pool).await.expect("events")
        });
        let payloads: Vec<String> = rows.into_iter().map(|(p,)| p).collect();
        assert_eq!(payloads.len(), 3);
        assert!(payloads.iter().all(|p| !p.contains("borger.example") && !p.contains("Borger")), "{payloads:?}");
        setup.keys.erase(erased);
        let sender = setup.sender(Arc::new(smtp(server.port)), RetryPolicy::default());
        assert_eq!(sender.run_due().await.expect("sent"), 3);
        let received = server.wait_for(2).await;
        let mut to: Vec<&str> = received.iter().filter_map(|m| m["rcpt_tos"][0].as_str()).collect();
        to.sort();
        assert_eq!(to, ["anna@borger.example", "bo@borger.example"]);

        // The event is handled again (a redelivery): nothing new is queued or sent.
        assert_eq!(setup.enqueue(deliveries).await, 0);
        assert_eq!(sender.run_due().await.expect("nothing due"), 0);
        assert_eq!(server.received().len(), 2);
        let skipped: Message = MESSAGES
            .steps(&store, &format!("email:{erased}"))
            .await
            .expect("steps")
            .pop()
            .expect("the erased person's message");
        assert_eq!(
            (skipped.state, skipped.skipped.as_deref()),
            (StepState::Done, Some("the recipient is gone or has no e-mail address"))
        );
    }
}

/// Sends, then never answers: the sender dies not knowing that the message went.
struct SendsThenHangs(SmtpChannel);

#[async_trait::async_trait]
impl EmailChannel for SendsThenHangs {
    async fn send(&self, email: &Email) -> Result<(), SendError> {
        self.0.send(email).await?;
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_message_whose_outcome_was_lost_is_sent_again_with_the_same_message_id() {
    for (store, _guard) in agora_eventstore::testing::both_backends().await {
        let Some(server) = SmtpServer::start().await else { return };
        let setup = Setup::new(store.clone()).await;
        let person = Uuid::now_v7();
        setup.enqueue(vec![setup.invitation(person, "anna@borger.example").await]).await;
        let retry = RetryPolicy { lease: std::time::Duration::from_secs(60), ..RetryPolicy::default() };
        let dying = setup.sender(Arc::new(SendsThenHangs(smtp(server.port))), retry);
        let task = tokio::spawn(async move { dying.run_due().await });
        server.wait_for(1).await;
        task.abort();
        let _ = task.await;

        let sender = setup.sender(Arc::new(smtp(server.port)), retry);
        assert_eq!(sender.run_due().await.expect("run"), 0, "left to the first sender until its lease ends");
        setup.advance(61);
        assert_eq!(sender.run_due().await.expect("run"), 1);
        let received = server.wait_for(2).await;
        let ids = message_ids(&received);
        assert_eq!(ids[0], ids[1], "the repeat carries the first one's Message-ID");
        let message: Message =
            MESSAGES.steps(&store, &format!("email:{person}")).await.expect("steps").pop().expect("message");
        assert_eq!((message.state, message.attempts), (StepState::Done, 2));
    }
}

#[tokio::test]
async fn a_mail_server_that_cannot_be_reached_is_tried_again_later_and_then_parked() {
    for (store, _guard) in agora_eventstore::testing::both_backends().await {
        let setup = Setup::new(store.clone()).await;
        let person = Uuid::now_v7();
        setup.enqueue(vec![setup.invitation(person, "anna@borger.example").await]).await;
        let sender = setup.sender(Arc::new(smtp(1)), RetryPolicy { max_attempts: 2, ..RetryPolicy::default() });
        assert_eq!(sender.run_due().await.expect("run"), 1);
        let message: Message =
            MESSAGES.steps(&store, &format!("email:{person}")).await.expect("steps").pop().expect("message");
        assert_eq!(message.state, StepState::Retrying);
        assert!(message.last_error.as_deref().is_some_and(|e| e.contains("could not take it")), "{message:?}");
        setup.advance(10);
        assert_eq!(sender.run_due().await.expect("run"), 1);
        let message: Message =
            MESSAGES.steps(&store, &format!("email:{person}")).await.expect("steps").pop().expect("message");
        assert_eq!(message.state, StepState::Parked, "after the last attempt");
        // A bad address is refused for good at once.
        let stranger = Uuid::now_v7();
        let bad = setup.invitation(stranger, "ikke en adresse").await;
        let recipient = bad.recipient.reference();
        let bad_id = bad.message_id.clone();
        setup.enqueue(vec![bad]).await;
        sender.run_due().await.expect("run");
        let refused: Message = MESSAGES.step(&store, &recipient, &bad_id).await.expect("step").expect("message");
        assert_eq!(refused.state, StepState::Parked);
        assert!(refused.last_error.as_deref().is_some_and(|e| e.contains("ikke en adresse")), "{refused:?}");
    }
}

#[tokio::test]
async fn a_one_click_unsubscribe_stops_that_kind_of_message_and_a_forged_link_does_nothing() {
    use tower::ServiceExt;
    for (store, _guard) in agora_eventstore::testing::both_backends().await {
        let Some(server) = SmtpServer::start().await else { return };
        let setup = Setup::new(store.clone()).await;
        let sender = setup.sender(Arc::new(smtp(server.port)), RetryPolicy::default());
        let (anna, bo) = (Uuid::now_v7(), Uuid::now_v7());
        let routes = agora_notification::unsubscribe::routes(store.clone(), sender.portal.unsubscribe.clone());
        let post = |path: String| {
            axum::http::Request::post(path)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(axum::body::Body::from("List-Unsubscribe=One-Click"))
                .expect("request")
        };
        // Anna follows her link's one-click POST, as a mail client does (RFC 8058).
        let token = sender.portal.unsubscribe.sign(&format!("email:{anna}:invited_to_hearing"));
        let page = routes
            .clone()
            .oneshot(axum::http::Request::get(format!("/afmeld/{token}")).body(axum::body::Body::empty()).expect("get"))
            .await
            .expect("page");
        assert_eq!(page.status(), 200, "a page with the button, for a person");
        let done = routes.clone().oneshot(post(format!("/afmeld/{token}"))).await.expect("post");
        assert_eq!(done.status(), 200);
        // A forged link (Bo's recipient under Anna's signature) unsubscribes nobody.
        let (_, signature) = token.split_once('.').expect("two parts");
        use base64::Engine;
        let forged_payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("email:{bo}:invited_to_hearing"));
        let forged = routes.clone().oneshot(post(format!("/afmeld/{forged_payload}.{signature}"))).await.expect("post");
        assert_eq!(forged.status(), 400);

        setup
            .enqueue(vec![
                setup.invitation(anna, "anna@borger.example").await,
                setup.invitation(bo, "bo@borger.example").await,
            ])
            .await;
        assert_eq!(sender.run_due().await.expect("run"), 2);
        let received = server.wait_for(1).await;
        assert_eq!(received.len(), 1);
        assert_eq!(received[0]["rcpt_tos"][0], "bo@borger.example");
        let skipped: Message =
            MESSAGES.steps(&store, &format!("email:{anna}")).await.expect("steps").pop().expect("message");
        assert_eq!(skipped.skipped.as_deref(), Some("the recipient unsubscribed from these messages"));
    }
}

/// The identity service while it cannot answer.
struct UnreachableDirectory;

#[async_trait::async_trait]
impl agora_notification::recipients::Directory for UnreachableDirectory {
    async fn contact(
        &self,
        _user_id: &str,
    ) -> Result<Option<agora_notification::recipients::Contact>, agora_vault::VaultError> {
        Err(agora_vault::VaultError::Store("identity service: unavailable".into()))
    }
}

#[tokio::test]
async fn while_the_identity_service_cannot_answer_only_messages_to_users_wait() {
    for (store, _guard) in agora_eventstore::testing::both_backends().await {
        let Some(server) = SmtpServer::start().await else { return };
        let setup = Setup::new(store.clone()).await;
        // One batch: an invitee, known by a sealed address, and a user, looked up by id.
        let (anna, karen) = (Uuid::now_v7(), Uuid::now_v7());
        let invitation = setup.invitation(anna, "anna@borger.example").await;
        let mut to_user = setup.invitation(Uuid::now_v7(), "unused@borger.example").await;
        to_user.recipient = Recipient::User { user_id: karen.to_string() };
        to_user.message_id = format!("<{}@kk.example>", Uuid::now_v7());
        let (user_reference, user_message) = (to_user.recipient.reference(), to_user.message_id.clone());
        assert_eq!(setup.enqueue(vec![invitation, to_user]).await, 2);

        let mut sender = setup.sender(Arc::new(smtp(server.port)), RetryPolicy::default());
        sender.directory = Arc::new(UnreachableDirectory);
        assert_eq!(sender.run_due().await.expect("run"), 2);
        let received = server.wait_for(1).await;
        assert_eq!(received[0]["rcpt_tos"][0], "anna@borger.example", "the invitee's message went out");
        let waiting: Message = MESSAGES.step(&store, &user_reference, &user_message).await.expect("step").expect("it");
        assert_eq!(waiting.state, StepState::Retrying, "{waiting:?}");
        assert!(waiting.last_error.as_deref().is_some_and(|e| e.contains("cannot be looked up now")), "{waiting:?}");

        // Once it answers, the user's message goes out at its retry.
        let mut people = support::People::default();
        people.0.insert(
            karen.to_string(),
            agora_notification::recipients::Contact {
                name: "Karen Kommune".into(),
                email: Some("karen@kk.example".into()),
                ..Default::default()
            },
        );
        sender.directory = Arc::new(people);
        setup.advance(60);
        assert_eq!(sender.run_due().await.expect("run"), 1);
        let received = server.wait_for(2).await;
        assert!(received.iter().any(|m| m["rcpt_tos"][0] == "karen@kk.example"), "{received:?}");
        let sent: Message = MESSAGES.step(&store, &user_reference, &user_message).await.expect("step").expect("it");
        assert_eq!(sent.state, StepState::Done);
    }
}
