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
        "retries": {"first_retry_seconds": 1, "max_retry_seconds": 2, "lease_seconds": 4},
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

    let received = smtp.wait_for(5).await;
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
