//! The gateway as a target of its own, in front of services in other processes on PostgreSQL
//! and NATS JetStream: the production topology, where it is scaled apart from the rest.

mod support;

use support::*;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_in_a_process_of_its_own_serves_the_api_the_portal_and_the_feed() {
    let Some(d) = Distributed::start("hearing,response").await else { return };
    let here = format!("http://127.0.0.1:{}", d.grpc);
    let services = [
        ("AGORA_HEARING_URL", here.as_str()),
        ("AGORA_RESPONSE_URL", here.as_str()),
        ("AGORA_RECORDS_URL", here.as_str()),
        ("AGORA_NOTIFICATION_URL", here.as_str()),
    ];
    // The gateway keeps no data and checks no tokens: it gets no database, bus or token keys.
    let http_port = free_port();
    let http_addr = format!("127.0.0.1:{http_port}");
    let mut envs: Vec<(&str, &str)> = d
        .envs
        .iter()
        .filter(|(k, _)| !["AGORA_DATABASE_URL", "AGORA_NATS_URL", "AGORA_TOKEN_JWKS"].contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    envs.extend(services);
    envs.push(("AGORA_HTTP_ADDR", &http_addr));
    let gateway = start(&["--target", "gateway"], &envs).await;
    let base = format!("http://127.0.0.1:{http_port}");
    let http = reqwest::Client::new();
    let admin = agora_auth::Principal::new(Uuid::now_v7(), agora_auth::Capacity::Employee)
        .with_role(agora_auth::Role::Administrator);
    let owner = agora_auth::Principal::new(Uuid::now_v7(), agora_auth::Capacity::Employee)
        .with_role(agora_auth::Role::HearingCreator);
    let (admin, owner) = (d.issuer.issue(&admin).expect("token"), d.issuer.issue(&owner).expect("token"));
    define_plan_reference(d.grpc, &format!("Bearer {admin}"), None).await;

    // The owner creates, completes and publishes a hearing through the gateway's API.
    let created = http
        .post(format!("{base}/api/v1/hearings"))
        .bearer_auth(&owner)
        .json(&serde_json::json!({ "hearing_type_id": "plan" }))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status().as_u16(), 201);
    let created: serde_json::Value = created.json().await.expect("hearing");
    let id = created["id"].as_str().expect("id").to_string();
    let anonymous = http.get(format!("{base}/api/v1/hearings/{id}")).send().await.expect("answer");
    assert_eq!(anonymous.status().as_u16(), 404, "a hearing in Created is not the public's");
    let today = chrono::Utc::now().date_naive();
    let complete = serde_json::json!({
        "fields": { "title": "Ny bydel ved Ærøvej", "summary": "Forslag til en ny bydel.",
                    "body": "Kommunen foreslår en ny bydel.", "esdh_title": "Lokalplan 12" },
        "subject_area_id": "by", "kle_number": "01.02.05",
        "contact": { "name": "Ejer", "email": "ejer@kommune.example" },
        "start_date": (today + chrono::Days::new(1)).to_string(),
        "deadline": (today + chrono::Days::new(30)).to_string(),
    });
    let updated = http
        .patch(format!("{base}/api/v1/hearings/{id}"))
        .bearer_auth(&owner)
        .json(&complete)
        .send()
        .await
        .expect("update");
    assert_eq!(updated.status().as_u16(), 200);
    let published =
        http.post(format!("{base}/api/v1/hearings/{id}/publish")).bearer_auth(&owner).send().await.expect("publish");
    assert_eq!(published.status().as_u16(), 200);
    let published: serde_json::Value = published.json().await.expect("hearing");
    // The start date may already have come in Copenhagen (after 23:00 UTC): then it is open at once.
    assert!(["AwaitingStartDate", "Active"].contains(&published["status"].as_str().unwrap_or_default()), "{published}");
    assert_eq!(published["fields"]["title"], "Ny bydel ved Ærøvej");

    // The public finds it in the portal and the API, and other systems in the event feed,
    // read from the hearing service's store with the service secret.
    let page = agora_eventstore::testing::eventually(30, "the hearing in the public list", || {
        let (http, url) = (http.clone(), format!("{base}/?status=AwaitingStartDate,Active"));
        async move {
            let page = http.get(url).send().await.ok()?.text().await.ok()?;
            page.contains("Ny bydel ved Ærøvej").then_some(page)
        }
    })
    .await;
    assert!(page.contains("<html lang=\"da\">"));
    let feed: serde_json::Value = http
        .get(format!("{base}/api/v1/events?type=dk.agora.hearing.&limit=1000"))
        .send()
        .await
        .expect("feed")
        .json()
        .await
        .expect("json");
    let events: Vec<(&str, &str)> = feed["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| (e["type"].as_str().unwrap_or_default(), e["subject"].as_str().unwrap_or_default()))
        .collect();
    assert!(events.contains(&("dk.agora.hearing.v1.HearingPublished", id.as_str())), "{events:?}");
    assert!(!events.contains(&("dk.agora.hearing.v1.HearingCreated", id.as_str())), "not public before publication");
    stop(gateway).await;
}

#[tokio::test]
async fn a_gateway_without_the_services_addresses_says_which_is_missing() {
    let key = ("AGORA_PSEUDONYM_KEY", "0123456789abcdef0123456789abcdef");
    let (code, _, err) = output(&["run", "--target", "gateway"], &[key]).await;
    assert_ne!(code, 0);
    assert!(err.contains("AGORA_HEARING_URL"), "{err}");
    let everything = [
        key,
        ("AGORA_HEARING_URL", "http://hearing:50051"),
        ("AGORA_RESPONSE_URL", "http://response:50051"),
        ("AGORA_IDENTITY_URL", "http://identity:50051"),
        ("AGORA_RECORDS_URL", "records:50051"),
        ("AGORA_NOTIFICATION_URL", "http://notification:50051"),
    ];
    let (code, _, err) = output(&["run", "--target", "gateway"], &everything).await;
    assert_ne!(code, 0);
    assert!(err.contains("AGORA_RECORDS_URL 'records:50051' must be an http:// or https:// URL"), "{err}");
}
