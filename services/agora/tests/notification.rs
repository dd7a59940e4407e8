//! The notification service as a process of its own, on PostgreSQL and JetStream, sending to a
//! real SMTP server process: invitees are invited once each when the hearing starts (and a late
//! one at once), also when the notification process is killed in the middle; a repeat carries
//! the first one's Message-ID.

#[path = "../../notification/tests/support/mod.rs"]
mod smtp_support;
mod support;

use agora_auth::{Capacity, Principal, Role};
use agora_proto::hearing::v1 as pb;
use agora_proto::hearing::v1::hearing_service_client::HearingServiceClient;
use smtp_support::SmtpServer;
use support::*;
use tonic::transport::Channel;
use uuid::Uuid;

fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}")).expect("uri").connect_lazy()
}

fn invite(hearing_id: &str, people: &[(&str, &str)]) -> pb::InviteRequest {
    pb::InviteRequest {
        hearing_id: hearing_id.into(),
        participants: people
            .iter()
            .map(|(address, name)| pb::Participant { identifier: address.to_string(), label: name.to_string() })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invitees_are_invited_once_each_though_the_notification_service_is_killed_mid_run() {
    let Some(d) = Distributed::start("hearing,response").await else { return };
    let Some(smtp) = SmtpServer::start().await else { return };
    let config = d.dir.path().join("notification.json");
    let json = serde_json::json!({
        "smtp": {"host": "127.0.0.1", "port": smtp.port, "security": "none", "from": "Bliv hørt <hoeringer@kk.example>",
                 "timeout_seconds": 2},
        "portal_name": "Bliv hørt", "portal_url": "https://blivhoert.kk.example", "message_domain": "kk.example",
        "messages_per_second": 2, "burst": 1,
        "retries": {"first_retry_seconds": 1, "max_retry_seconds": 2, "lease_seconds": 4, "max_attempts": 100},
    });
    std::fs::write(&config, json.to_string()).expect("config");
    let identity_url =
        d.envs.iter().find(|(k, _)| k == "AGORA_IDENTITY_URL").map(|(_, v)| v.clone()).expect("identity");
    let config_path = config.to_str().expect("utf-8").to_string();
    let notification_env =
        [("AGORA_NOTIFICATION_CONFIG", config_path.as_str()), ("AGORA_IDENTITY_URL", identity_url.as_str())];
    let (notification, _, _) = d.start_more("notification", &notification_env).await;

    let admin = Principal::new(Uuid::now_v7(), Capacity::Employee).with_role(Role::Administrator);
    let owner = Principal::new(Uuid::now_v7(), Capacity::Employee).with_role(Role::HearingCreator);
    let (admin, owner) = (
        format!("Bearer {}", d.issuer.issue(&admin).expect("token")),
        format!("Bearer {}", d.issuer.issue(&owner).expect("token")),
    );
    define_plan_reference(d.grpc, &admin, None).await;
    let mut hearings = HearingServiceClient::new(channel(d.grpc));
    let create = pb::CreateHearingRequest { hearing_type_id: "plan".into() };
    let hearing = hearings.create_hearing(authorized(&owner, create)).await.expect("create").into_inner();
    let today = chrono::Utc::now().date_naive();
    let update = complete_plan(
        &hearing.hearing_id,
        "Ny bydel ved Ærøvej",
        "Lokalplan 12",
        today + chrono::Days::new(1),
        today + chrono::Days::new(30),
    );
    agora_eventstore::testing::eventually(30, "the draft", || {
        let mut hearings = hearings.clone();
        let request = authorized(&owner, update.clone());
        async move { hearings.update_hearing(request).await.ok() }
    })
    .await;
    // Four invited before the hearing starts: told when it starts, not before.
    let early = [
        ("anna@forening.example", "Anna"),
        ("bo@forening.example", "Bo"),
        ("cecilie@forening.example", "Cecilie"),
        ("dan@forening.example", "Dan"),
    ];
    hearings.invite_participants(authorized(&owner, invite(&hearing.hearing_id, &early))).await.expect("invite");
    let publish = pb::HearingRef { hearing_id: hearing.hearing_id.clone() };
    hearings.publish_hearing(authorized(&owner, publish)).await.expect("publish");
    assert!(smtp.received().is_empty(), "nobody is told before the hearing starts");

    // The start date comes (the main process again, its clock a day on).
    let restarted = restart_main(&d, &[("AGORA_CLOCK_OFFSET_DAYS", "1")]).await;
    let mut d = d;
    drop(std::mem::replace(&mut d.child, restarted));
    // Killed as soon as the first invitation is out (two a second: the rest are still queued).
    smtp.wait_for(1).await;
    kill_hard(notification).await;
    let late = [("erik@forening.example", "Erik")];
    hearings = HearingServiceClient::new(channel(d.grpc));
    agora_eventstore::testing::eventually(30, "the hearing active and the late invitee added", || {
        let mut hearings = hearings.clone();
        let request = authorized(&owner, invite(&hearing.hearing_id, &late));
        async move { hearings.invite_participants(request).await.ok() }
    })
    .await;
    let (notification, _, _) = d.start_more("notification", &notification_env).await;

    let received = smtp.wait_for_recipients(5).await;
    let mut invited: Vec<String> =
        received.iter().filter_map(|m| m["rcpt_tos"][0].as_str().map(str::to_string)).collect();
    invited.sort();
    invited.dedup();
    assert_eq!(
        invited,
        [
            "anna@forening.example",
            "bo@forening.example",
            "cecilie@forening.example",
            "dan@forening.example",
            "erik@forening.example"
        ]
    );
    // A message sent twice (its outcome lost in the kill) carries the same Message-ID both times.
    for address in &invited {
        let ids: Vec<&str> = received
            .iter()
            .filter(|m| m["rcpt_tos"][0] == address.as_str())
            .filter_map(|m| m["headers"]["Message-ID"].as_str())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "{address}: {ids:?}");
    }
    let anna = received.iter().find(|m| m["rcpt_tos"][0] == "anna@forening.example").expect("anna");
    assert_eq!(anna["headers"]["Subject"], "Du er inviteret til at afgive høringssvar: Ny bydel ved Ærøvej");
    assert!(anna["text"].as_str().is_some_and(|t| t.contains("Kære Anna")), "{anna}");
    assert!(anna["headers"]["List-Unsubscribe"].as_str().is_some_and(|u| u.contains("/afmeld/")));
    // Nothing of the invitees is on the bus or in the log in clear.
    let agora_eventstore::Backend::Postgres(pool) = d.database.store.backend() else { panic!("postgres") };
    let (clear,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events WHERE payload::text LIKE '%forening.example%'")
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(clear, 0, "addresses are sealed in the log");
    stop(notification).await;
}

/// The subject lines each address got, with the Message-IDs of each.
fn by_recipient(received: &[serde_json::Value]) -> std::collections::BTreeMap<(String, String), Vec<String>> {
    let mut seen: std::collections::BTreeMap<(String, String), Vec<String>> = Default::default();
    for m in received {
        let key = (
            m["rcpt_tos"][0].as_str().unwrap_or_default().to_string(),
            m["headers"]["Subject"].as_str().unwrap_or_default().to_string(),
        );
        seen.entry(key).or_default().push(m["headers"]["Message-ID"].as_str().unwrap_or_default().to_string());
    }
    seen
}

/// The path of the first link in `text` that starts with `prefix` (after the portal's address).
fn link_path(text: &str, prefix: &str) -> String {
    let start = text.find(prefix).unwrap_or_else(|| panic!("no {prefix} in {text}"));
    text[start..]
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_start_matches("https://blivhoert.kk.example")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hearings_whole_life_tells_invitees_respondents_and_subscribers_exactly_once_in_their_language() {
    use agora_proto::identity::v1 as ipb;
    use agora_proto::notification::v1 as npb;
    use agora_proto::response::v1 as rpb;
    let Some(mut d) = Distributed::start_full("hearing,response", &[], &[("AGORA_DEV_LOGIN", "true")]).await else {
        return;
    };
    let Some(smtp) = SmtpServer::start().await else { return };
    let config = d.dir.path().join("notification.json");
    let json = serde_json::json!({
        "smtp": {"host": "127.0.0.1", "port": smtp.port, "security": "none", "from": "Bliv hørt <hoeringer@kk.example>",
                 "timeout_seconds": 2},
        "portal_name": "Bliv hørt", "portal_url": "https://blivhoert.kk.example", "message_domain": "kk.example",
        "retries": {"first_retry_seconds": 1, "max_retry_seconds": 2, "lease_seconds": 4, "max_attempts": 100},
    });
    std::fs::write(&config, json.to_string()).expect("config");
    let identity_url =
        d.envs.iter().find(|(k, _)| k == "AGORA_IDENTITY_URL").map(|(_, v)| v.clone()).expect("identity");
    let config_path = config.to_str().expect("utf-8").to_string();
    let notification_env =
        [("AGORA_NOTIFICATION_CONFIG", config_path.as_str()), ("AGORA_IDENTITY_URL", identity_url.as_str())];
    let (notification, notification_grpc, notification_http) = d.start_more("notification", &notification_env).await;

    // Two citizens with accounts (the identity service knows their addresses).
    let mut identity = ipb::identity_service_client::IdentityServiceClient::new(
        Channel::from_shared(identity_url.clone()).expect("uri").connect_lazy(),
    );
    for handle in ["birgitte", "carl"] {
        identity.dev_login(ipb::DevLoginRequest { handle: handle.into() }).await.expect("registered");
    }
    let issuer = d.issuer.clone();
    let citizen = |handle: &str| {
        let user = agora_identity::providers::demo_user(handle).expect("demo user").principal;
        format!("Bearer {}", issuer.issue(&user).expect("token"))
    };
    let admin = Principal::new(Uuid::now_v7(), Capacity::Employee).with_role(Role::Administrator);
    let owner = Principal::new(Uuid::now_v7(), Capacity::Employee).with_role(Role::HearingCreator);
    let (admin, owner) = (
        format!("Bearer {}", d.issuer.issue(&admin).expect("token")),
        format!("Bearer {}", d.issuer.issue(&owner).expect("token")),
    );

    // A subscriber without an account follows KLE 01.02, in English, and confirms.
    let mut notifications =
        npb::notification_service_client::NotificationServiceClient::new(channel(notification_grpc));
    let subscribe = npb::SubscribeRequest {
        topic: "kle".into(),
        value: "01.02".into(),
        email: "sofie@forening.example".into(),
        language: "en".into(),
    };
    assert_eq!(notifications.subscribe(subscribe).await.expect("subscribed").into_inner().status, "pending");
    let confirmation = smtp.wait_for(1).await.remove(0);
    assert_eq!(confirmation["headers"]["Subject"], "Confirm your subscription");
    let confirm = link_path(confirmation["text"].as_str().expect("text"), "https://blivhoert.kk.example/abonnement/");
    assert!(http(notification_http, "POST", &confirm).await.starts_with("HTTP/1.1 200"));

    define_plan_reference(d.grpc, &admin, None).await;
    let mut hearings = HearingServiceClient::new(channel(d.grpc));
    let create = pb::CreateHearingRequest { hearing_type_id: "plan".into() };
    let hearing = hearings.create_hearing(authorized(&owner, create)).await.expect("create").into_inner();
    let today = chrono::Utc::now().date_naive();
    let update = complete_plan(
        &hearing.hearing_id,
        "Ny bydel",
        "Lokalplan 12",
        today + chrono::Days::new(1),
        today + chrono::Days::new(20),
    );
    agora_eventstore::testing::eventually(30, "the draft", || {
        let mut hearings = hearings.clone();
        let request = authorized(&owner, update.clone());
        async move { hearings.update_hearing(request).await.ok() }
    })
    .await;
    let invitees = [("anna@forening.example", "Anna"), ("bo@forening.example", "Bo")];
    hearings.invite_participants(authorized(&owner, invite(&hearing.hearing_id, &invitees))).await.expect("invite");
    let publish = pb::HearingRef { hearing_id: hearing.hearing_id.clone() };
    hearings.publish_hearing(authorized(&owner, publish)).await.expect("publish");
    smtp.wait_for(2).await;

    // The start date comes: the invitees are invited; the notification service is killed mid-run.
    let restarted = restart_main(&d, &[("AGORA_CLOCK_OFFSET_DAYS", "1")]).await;
    drop(std::mem::replace(&mut d.child, restarted));
    smtp.wait_for(3).await;
    kill_hard(notification).await;
    let (notification, _, notification_http) = d.start_more("notification", &notification_env).await;

    // Two respond; the owner declines one.
    let responses = rpb::response_service_client::ResponseServiceClient::new(channel(d.grpc));
    let mut receipts = Vec::new();
    for handle in ["birgitte", "carl"] {
        let submit = rpb::SubmitResponseRequest {
            hearing_id: hearing.hearing_id.clone(),
            idempotency_key: format!("{handle}-1"),
            text: format!("Svar fra {handle}."),
            terms_version: "1".into(),
            ..Default::default()
        };
        let token = citizen(handle);
        let receipt = agora_eventstore::testing::eventually(30, "the hearing active at the response service", || {
            let mut responses = responses.clone();
            let request = authorized(&token, submit.clone());
            async move { responses.submit_response(request).await.ok() }
        })
        .await;
        receipts.push(receipt.into_inner());
    }
    let decline =
        rpb::DeclineResponseRequest { response_id: receipts[1].response_id.clone(), reason: "Uden for emnet".into() };
    agora_eventstore::testing::eventually(30, "the response to decline in the read model", || {
        let mut responses = responses.clone();
        let request = authorized(&owner, decline.clone());
        async move { responses.decline_response(request).await.ok() }
    })
    .await;

    // The deadline passes; the owner concludes.
    let restarted = restart_main(&d, &[("AGORA_CLOCK_OFFSET_DAYS", "21")]).await;
    drop(std::mem::replace(&mut d.child, restarted));
    hearings = HearingServiceClient::new(channel(d.grpc));
    let conclude =
        pb::ConcludeHearingRequest { hearing_id: hearing.hearing_id.clone(), conclusion: Some("Vedtaget.".into()) };
    agora_eventstore::testing::eventually(30, "the hearing to await its conclusion", || {
        let mut hearings = hearings.clone();
        let request = authorized(&owner, conclude.clone());
        async move { hearings.conclude_hearing(request).await.ok() }
    })
    .await;

    let expected = [
        ("sofie@forening.example", "Confirm your subscription"),
        ("sofie@forening.example", "New consultation: Ny bydel"),
        ("anna@forening.example", "Du er inviteret til at afgive høringssvar: Ny bydel"),
        ("bo@forening.example", "Du er inviteret til at afgive høringssvar: Ny bydel"),
        ("birgitte@demo.agora.invalid", "Kvittering for dit høringssvar nr. 1"),
        ("carl@demo.agora.invalid", "Kvittering for dit høringssvar nr. 2"),
        ("carl@demo.agora.invalid", "Dit høringssvar nr. 2 er afvist"),
        ("birgitte@demo.agora.invalid", "Konklusionen er offentliggjort: Ny bydel"),
        ("carl@demo.agora.invalid", "Konklusionen er offentliggjort: Ny bydel"),
        ("sofie@forening.example", "The conclusion is published: Ny bydel"),
    ];
    let mut expected: Vec<(String, String)> = expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    expected.sort();
    // Waits for the last of them (with a deadline), then compares all: a failure shows the difference.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = by_recipient(&smtp.received());
    while seen.len() < expected.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        seen = by_recipient(&smtp.received());
    }
    let got: Vec<(String, String)> = seen.keys().cloned().collect();
    assert_eq!(got, expected, "exactly the expected messages");
    for (message, ids) in &seen {
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "{message:?}: a repeat carries the first Message-ID: {ids:?}");
    }
    // The subscriber's unsubscribe link works.
    let received = smtp.received();
    let concluded = received
        .iter()
        .find(|m| m["headers"]["Subject"] == "The conclusion is published: Ny bydel")
        .expect("the subscriber's");
    let unsubscribe = link_path(concluded["text"].as_str().expect("text"), "https://blivhoert.kk.example/afmeld/");
    assert!(http(notification_http, "POST", &unsubscribe).await.starts_with("HTTP/1.1 200"));
    stop(notification).await;
}
