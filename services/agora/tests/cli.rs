//! The `agora` binary as an operator and a newcomer use it.

use std::sync::Arc;

use agora_eventstore::{NewEvent, Store};
use agora_proto::hearing::v1 as pb;
use agora_proto::hearing::v1::hearing_service_client::HearingServiceClient;
use uuid::Uuid;

mod support;

use support::*;

#[tokio::test]
async fn the_embedded_portal_starts_with_demo_data_and_keeps_it_across_restarts() {
    let dir = tempfile::tempdir().expect("tmp");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let (grpc, http) = (free_port(), free_port());
    let grpc_addr = format!("127.0.0.1:{grpc}");
    let http_addr = format!("127.0.0.1:{http}");
    let args = ["--data-dir", data_dir, "--grpc-addr", &grpc_addr, "--http-addr", &http_addr];
    let child = start(&args, &[]).await;
    // Not on a terminal, the logs are JSON, one object a line.
    let ready_log = testing_eventually_log(&child, "agora is ready").await;
    let parsed: serde_json::Value = serde_json::from_str(&ready_log).expect("a JSON log line");
    assert_eq!(parsed["level"], "INFO", "{ready_log}");
    let titles = public_titles(grpc).await;
    assert_eq!(
        titles,
        ["Cykelsti langs Ringvejen", "Klimaplan 2030", "Lokalplan for Bytorvet", "Skolestruktur i Vest"],
        "the public sees the published, open, external demo hearings"
    );

    // The development login: a token for a demo caseworker shows her dashboard.
    let (code, token, _) = output(&["token", "issue", "karen", "--data-dir", data_dir], &[]).await;
    assert_eq!(code, 0);
    let mut client = HearingServiceClient::connect(format!("http://{grpc_addr}")).await.expect("grpc");
    let mut request = tonic::Request::new(pb::OwnerDashboardRequest {});
    request.metadata_mut().insert("authorization", format!("Bearer {}", token.trim()).parse().expect("header"));
    let mine = client.owner_dashboard(request).await.expect("dashboard").into_inner();
    let statuses: Vec<i32> = mine.hearings.iter().map(|h| h.status).collect();
    assert_eq!(mine.total, 4, "{:?}", mine.hearings.iter().map(|h| &h.title).collect::<Vec<_>>());
    assert!(
        statuses.contains(&(pb::HearingStatus::Draft as i32)) && statuses.contains(&(pb::HearingStatus::Active as i32))
    );

    // The records service opened a case in the archive for every demo hearing past Created, and
    // the case numbers came back to the hearings.
    let numbered = agora_eventstore::testing::eventually(20, "case numbers on the demo hearings", || {
        let mut client = client.clone();
        let token = token.trim().to_string();
        async move {
            let mut request = tonic::Request::new(pb::OwnerDashboardRequest {});
            request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().ok()?);
            let mine = client.owner_dashboard(request).await.ok()?.into_inner();
            let numbers: Vec<String> = mine.hearings.into_iter().map(|h| h.case_number).collect();
            numbers.iter().all(|n| !n.is_empty()).then_some(numbers)
        }
    })
    .await;
    for number in &numbered {
        assert!(dir.path().join("records").join(number).join("metadata.json").exists(), "case folder {number}");
    }

    // A citizen responds to an active demo hearing open to everyone; the response service
    // learnt of it from the hearing service's integration events.
    let token = |user: &str| {
        let user = user.to_string();
        let data_dir = data_dir.to_string();
        async move {
            let (code, token, _) = output(&["token", "issue", &user, "--data-dir", &data_dir], &[]).await;
            assert_eq!(code, 0);
            format!("Bearer {}", token.trim())
        }
    };
    let active =
        mine.hearings.iter().find(|h| h.status == pb::HearingStatus::Active as i32 && !h.closed && !h.internal);
    let active = active.expect("an active hearing open to everyone");
    let citizen = token("birgitte").await;
    let mut responses = agora_proto::response::v1::response_service_client::ResponseServiceClient::connect(format!(
        "http://{grpc_addr}"
    ))
    .await
    .expect("grpc");
    let submit = agora_proto::response::v1::SubmitResponseRequest {
        hearing_id: active.hearing_id.clone(),
        idempotency_key: "birgitte-1".into(),
        text: "Jeg ønsker flere træer på torvet.".into(),
        terms_version: "2026-01".into(),
        ..Default::default()
    };
    let receipt = responses.submit_response(authorized(&citizen, submit.clone())).await.expect("accepted").into_inner();
    assert_eq!(receipt.number, 1);
    let again = responses.submit_response(authorized(&citizen, submit)).await.expect("retried").into_inner();
    assert_eq!(again, receipt, "a retry gets the first receipt");
    let list = |token: Option<&str>| {
        let request = agora_proto::response::v1::ListResponsesRequest {
            hearing_id: active.hearing_id.clone(),
            ..Default::default()
        };
        match token {
            Some(t) => authorized(t, request),
            None => tonic::Request::new(request),
        }
    };
    // Pending until the owner approves; then public without the author.
    let public = responses.list_responses(list(None)).await.expect("list").into_inner();
    assert_eq!(public.total, 0);
    let owner = token("karen").await;
    let approve = agora_proto::response::v1::ResponseRef { response_id: receipt.response_id.clone() };
    let stranger = responses.approve_response(authorized(&citizen, approve.clone())).await.expect_err("not the owner");
    assert_eq!(stranger.code(), tonic::Code::PermissionDenied);
    responses.approve_response(authorized(&owner, approve)).await.expect("owner approves");
    let public = agora_eventstore::testing::eventually(20, "the approved response in the public list", || {
        let mut responses = responses.clone();
        let request = list(None);
        async move {
            let public = responses.list_responses(request).await.ok()?.into_inner();
            (public.total == 1).then_some(public)
        }
    })
    .await;
    assert_eq!(public.responses[0].author_id, "", "the public does not see who wrote it");

    // Her receipt went by e-mail; without a mail server the embedded portal writes it to a folder.
    let mail = dir.path().join("mail");
    let receipt_mail = agora_eventstore::testing::eventually(20, "the receipt in the mail folder", || async {
        std::fs::read_dir(&mail).ok()?.filter_map(Result::ok).find_map(|entry| {
            let text = std::fs::read_to_string(entry.path()).ok()?;
            text.contains("To: birgitte@demo.agora.invalid").then_some(text)
        })
    })
    .await;
    assert!(receipt_mail.contains("Message-ID: <") && receipt_mail.contains("List-Unsubscribe-Post"), "{receipt_mail}");

    // The right of access: everything about her, across the services, in one file.
    let birgitte = "00000000-0000-7000-8000-000000000005";
    let (code, stdout, stderr) = output(&["gdpr", "export", "--user", birgitte, "--data-dir", data_dir], &[]).await;
    assert_eq!(code, 0, "{stderr}");
    let export: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(export["identity"]["name"], "Birgitte Borger");
    assert_eq!(export["identity"]["email"], "birgitte@demo.agora.invalid");
    assert_eq!(export["responses"][0]["text"], "Jeg ønsker flere træer på torvet.");
    assert_eq!(export["responses"][0]["status"], "Approved");
    let actions = export["actions"].as_array().expect("actions");
    assert!(actions.iter().any(|a| a["event"] == "ResponseSubmitted"), "{actions:?}");
    let (code, _, stderr) = output(&["gdpr", "export", "--user", "not-an-id", "--data-dir", data_dir], &[]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("--user"), "{stderr}");
    stop(child).await;

    let events_before =
        Store::sqlite(&dir.path().join("agora.db")).await.expect("store").log_extent().await.expect("extent").0;
    let child = start(&args, &[]).await;
    assert_eq!(public_titles(grpc).await.len(), 4);
    stop(child).await;
    let events_after =
        Store::sqlite(&dir.path().join("agora.db")).await.expect("store").log_extent().await.expect("extent").0;
    assert_eq!(events_before, events_after, "seeding is idempotent");

    // The log the demo wrote is intact.
    let (code, stdout, _) = output(&["audit", "verify", "--data-dir", data_dir], &[]).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("intact"), "{stdout}");

    // The master key is rotated: a new key, with the old one beside it while everything is
    // wrapped again; then the old one goes, and her data still opens with the new key alone.
    let old_key = std::fs::read_to_string(dir.path().join("dev-master-key")).expect("the embedded master key");
    let previous = format!("dev:{}", old_key.trim());
    let new_key = support::MASTER_KEY;
    let rotating = [
        ("AGORA_MASTER_KEY", new_key),
        ("AGORA_MASTER_KEY_ID", "2"),
        ("AGORA_PREVIOUS_MASTER_KEYS", previous.as_str()),
    ];
    let (code, stdout, stderr) = output(&["keys", "rewrap", "--data-dir", data_dir], &rotating).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let rewrapped: u64 = stdout
        .strip_prefix("rewrapped ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("how many keys were rewrapped: {stdout}"));
    assert!(rewrapped > 0 && stdout.contains("1 signing keys under master key '2'"), "{stdout}");
    assert!(stdout.contains("destroy those keys"), "{stdout}");
    let (code, stdout, _) = output(&["keys", "rewrap", "--data-dir", data_dir], &rotating).await;
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with("rewrapped 0 person keys and 0 signing keys"),
        "a second run has nothing to do: {stdout}"
    );
    let new_only = [("AGORA_MASTER_KEY", new_key), ("AGORA_MASTER_KEY_ID", "2")];
    let (code, stdout, stderr) =
        output(&["gdpr", "export", "--user", birgitte, "--data-dir", data_dir], &new_only).await;
    assert_eq!(code, 0, "{stderr}");
    let export: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(export["responses"][0]["text"], "Jeg ønsker flere træer på torvet.");
    // The old key alone no longer opens anything, and says which key it lacks.
    let (code, _, stderr) = output(&["gdpr", "export", "--user", birgitte, "--data-dir", data_dir], &[]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("\"2\""), "the old key names the key it lacks: {stderr}");
    // A malformed previous key is named without being repeated.
    let bad = [("AGORA_MASTER_KEY", new_key), ("AGORA_PREVIOUS_MASTER_KEYS", "secret-without-an-id")];
    let (code, _, stderr) = output(&["keys", "rewrap", "--data-dir", data_dir], &bad).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("AGORA_PREVIOUS_MASTER_KEYS") && !stderr.contains("secret-without"), "{stderr}");
    // Every read model is rebuilt from the log, and the portal shows the same as before.
    let (code, stdout, stderr) = output(&["projections", "rebuild", "--data-dir", data_dir], &new_only).await;
    assert_eq!(code, 0, "{stderr}");
    for read_model in ["hearing-read-model", "response-read-model", "identity-users"] {
        assert!(stdout.contains(&format!("rebuilt {read_model}: ")), "{read_model} in {stdout}");
    }
    // The portal starts with the new key alone: its token signing key opens.
    let child = start(&args, &new_only).await;
    assert_eq!(public_titles(grpc).await.len(), 4);
    let public = responses.list_responses(list(None)).await.expect("list").into_inner();
    assert_eq!(public.total, 1, "her approved response, rebuilt");
    stop(child).await;
}

#[tokio::test]
async fn audit_verify_names_the_tampered_stream_and_position() {
    let dir = tempfile::tempdir().expect("tmp");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let store = Store::sqlite(&dir.path().join("agora.db")).await.expect("store");
    store.migrate().await.expect("migrate");
    for stream in ["a", "b"] {
        let events: Vec<NewEvent> = (1..=5)
            .map(|sequence| NewEvent {
                aggregate_type: "hearing".into(),
                aggregate_id: stream.into(),
                sequence,
                event_type: "HearingUpdated".into(),
                event_version: "1".into(),
                payload: serde_json::value::to_raw_value(&serde_json::json!({"n": sequence})).expect("payload"),
                metadata: serde_json::json!({"actor": "user:x"}),
            })
            .collect();
        store.append(&events, None).await.expect("append");
    }
    let (code, stdout, _) = output(&["audit", "verify", "--data-dir", data_dir], &[]).await;
    assert_eq!((code, stdout.contains("2 streams, 10 events")), (0, true), "{stdout}");

    let agora_eventstore::Backend::Sqlite { writer, .. } = store.backend() else { panic!("sqlite") };
    sqlx::query("UPDATE events SET payload = '{\"n\":42}' WHERE aggregate_id = 'b' AND sequence = 3")
        .execute(writer)
        .await
        .expect("tamper");
    let position: i64 = sqlx::query_scalar("SELECT position FROM events WHERE aggregate_id = 'b' AND sequence = 3")
        .fetch_one(writer)
        .await
        .expect("pos");
    let (code, stdout, _) = output(&["audit", "verify", "--data-dir", data_dir], &[]).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains(&format!("stream hearing/b at position {position}")), "{stdout}");
    assert!(!stdout.contains("hearing/a"), "an intact stream is not accused: {stdout}");

    sqlx::query("DELETE FROM events WHERE aggregate_id = 'a' AND sequence = 2").execute(writer).await.expect("remove");
    let (code, stdout, _) = output(&["audit", "verify", "--data-dir", data_dir], &[]).await;
    assert_eq!(code, 1);
    assert!(stdout.contains("stream hearing/a") && stdout.contains("expected sequence 2"), "{stdout}");
}

#[tokio::test]
async fn configuration_errors_name_the_setting() {
    let (code, _, stderr) = output(&["run", "--target", "hearing,nonsense"], &[]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("AGORA_TARGETS") && stderr.contains("nonsense"), "{stderr}");

    let (code, _, stderr) = output(&["run", "--target", "hearing"], &[]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("AGORA_DATABASE_URL is required"), "{stderr}");

    let dir = tempfile::tempdir().expect("tmp");
    let (code, _, stderr) =
        output(&["run", "--data-dir", dir.path().to_str().expect("path")], &[("AGORA_GRPC_ADDR", "localhost-ish")])
            .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("AGORA_GRPC_ADDR 'localhost-ish'"), "{stderr}");

    let (code, _, stderr) = output(&["run", "--target", "hearing"], &[("AGORA_DATABASE_URL", "mysql://x")]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("AGORA_DATABASE_URL must be a postgres:// URL (got 'mysql://x')"), "{stderr}");
    let (code, _, stderr) = output(
        &["run", "--target", "hearing"],
        &[
            ("AGORA_DATABASE_URL", "postgres://127.0.0.1:1/none"),
            ("AGORA_TOKEN_JWKS", "/nonexistent"),
            ("AGORA_PSEUDONYM_KEY", &"k".repeat(40)),
        ],
    )
    .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("AGORA_TOKEN_JWKS"), "{stderr}");
    // A cluster's servers are named one by one; a bad one is named.
    let (code, _, stderr) = output(
        &["run", "--target", "hearing", "--check"],
        &[("AGORA_DATABASE_URL", "postgres://127.0.0.1:1/none"), ("AGORA_NATS_URL", "nats://a:4222,not a server")],
    )
    .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("AGORA_NATS_URL: 'not a server'"), "{stderr}");

    // The records service: its configuration file, and where it reads what it files.
    let config = dir.path().join("records.json");
    std::fs::write(&config, r#"{"max_attempt": 3}"#).expect("config");
    let records = [
        ("AGORA_DATABASE_URL", "postgres://127.0.0.1:1/none"),
        ("AGORA_TOKEN_JWKS", "http://127.0.0.1:1/jwks.json"),
        ("AGORA_PSEUDONYM_KEY", "0123456789abcdef0123456789abcdef"),
        ("AGORA_RECORDS_CONFIG", config.to_str().expect("path")),
    ];
    let (code, _, stderr) = output(&["run", "--target", "records"], &records).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("AGORA_RECORDS_CONFIG") && stderr.contains("max_attempt"), "{stderr}");
    std::fs::write(&config, r#"{"responses": "all"}"#).expect("config");
    let (code, _, stderr) = output(&["run", "--target", "records"], &records).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("AGORA_SERVICE_SECRET"), "{stderr}");
    let mut with_secret = records.to_vec();
    with_secret.push(("AGORA_SERVICE_SECRET", "a-service-secret-of-at-least-32-chars"));
    let (code, _, stderr) = output(&["run", "--target", "records"], &with_secret).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("AGORA_HEARING_URL"), "{stderr}");
}

#[tokio::test]
async fn a_single_target_runs_on_postgresql_and_jetstream() {
    let Some(d) = Distributed::start("hearing").await else { return };
    let (database, url, grpc, http, child) = (&d.database, d.url.clone(), d.grpc, d.http, d.child);
    // The standard gRPC health service reports the hearing service as serving.
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest { service: "agora.hearing.v1.HearingService".into() })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(reply.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    // Server reflection lists the services, so grpcurl and friends work without .proto files.
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut reflection = tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut replies =
        reflection.server_reflection_info(futures::stream::iter(vec![request])).await.expect("reflection").into_inner();
    let reply = replies.message().await.expect("reply").expect("one reply");
    let Some(tonic_reflection::pb::v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("a service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"agora.hearing.v1.HearingService".to_string()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_string()), "{names:?}");
    // No demo data in production.
    assert!(public_titles(grpc).await.is_empty());
    // Every call is counted by service, method and code.
    let metrics = http_get(http, "/metrics").await;
    assert!(
        metrics.contains(
            r#"agora_grpc_requests_total{service="agora.hearing.v1.HearingService",method="ListHearings",code="Ok"} 1"#
        ),
        "{metrics}"
    );
    stop(child).await;
    if let Some(identity) = d.identity {
        stop(identity).await;
    }

    // The audit check works on PostgreSQL too.
    let events: Vec<NewEvent> = (1..=3)
        .map(|sequence| NewEvent {
            aggregate_type: "hearing".into(),
            aggregate_id: "h".into(),
            sequence,
            event_type: "HearingUpdated".into(),
            event_version: "1".into(),
            payload: serde_json::value::to_raw_value(&serde_json::json!({"n": sequence})).expect("payload"),
            metadata: serde_json::json!({}),
        })
        .collect();
    database.store.append(&events, None).await.expect("append");
    let (code, stdout, _) = output(&["audit", "verify", "--database-url", &url], &[]).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("1 streams, 3 events"), "{stdout}");
    let agora_eventstore::Backend::Postgres(pool) = database.store.backend() else { panic!("postgres") };
    sqlx::query("UPDATE events SET payload = '{\"n\":7}' WHERE sequence = 2").execute(pool).await.expect("tamper");
    let (code, stdout, _) = output(&["audit", "verify", "--database-url", &url], &[]).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("stream hearing/h at position"), "{stdout}");
}

/// A stand-in OpenTelemetry collector: the real OTLP/gRPC trace service, keeping what it gets.
#[derive(Default, Clone)]
struct Collector {
    spans: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
    ) -> Result<
        tonic::Response<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse>,
        tonic::Status,
    > {
        let mut spans = self.spans.lock().map_err(|_| tonic::Status::internal("poisoned"))?;
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push((service.clone(), span.name));
                }
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tokio::test]
async fn traces_are_exported_over_otlp_when_an_endpoint_is_set() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let otlp = listener.local_addr().expect("addr");
    let service = opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(
        collector.clone(),
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(agora_telemetry::grpc::incoming(listener)),
    );
    let dir = tempfile::tempdir().expect("tmp");
    let (grpc, http) = (free_port(), free_port());
    let running = start(
        &[
            "--data-dir",
            dir.path().to_str().expect("path"),
            "--no-demo",
            "--grpc-addr",
            &format!("127.0.0.1:{grpc}"),
            "--http-addr",
            &format!("127.0.0.1:{http}"),
        ],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{otlp}")), ("OTEL_SERVICE_NAME", "agora-traced")],
    )
    .await;
    assert!(public_titles(grpc).await.is_empty());
    // Stopping flushes what is batched.
    stop(running).await;
    let spans = collector.spans.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(
        spans.iter().any(|(service, name)| service == "agora-traced" && name == "list_hearings"),
        "the handler's span reached the collector: {spans:?}"
    );
}

/// Follows `response.v1.submitted.>`: the response numbers seen, without their texts.
struct SubmittedResponses(Arc<std::sync::Mutex<std::collections::BTreeSet<i64>>>);

#[async_trait::async_trait]
impl agora_eventstore::jetstream::IntegrationHandler for SubmittedResponses {
    fn name(&self) -> &str {
        "test-submitted-responses"
    }

    fn filter(&self) -> &str {
        "response.v1.submitted.>"
    }

    async fn handle(
        &self,
        _tx: &mut agora_eventstore::DbTx,
        event: &agora_eventstore::jetstream::IntegrationEvent,
    ) -> Result<(), String> {
        use prost::Message;
        if String::from_utf8_lossy(&event.data).contains("holdning") {
            return Err("a response's text is on the bus".into());
        }
        let submitted =
            agora_proto::response::v1::ResponseSubmitted::decode(event.data.clone()).map_err(|e| e.to_string())?;
        let number = submitted.response.map(|r| r.number).ok_or("no response state")?;
        self.0.lock().map_err(|e| e.to_string())?.insert(number);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hearing_and_response_targets_work_together_over_postgresql_and_jetstream() {
    use agora_proto::response::v1 as rpb;
    let Some(d) = Distributed::start("hearing,response").await else { return };
    let (issuer, grpc, child) = (d.issuer.clone(), d.grpc, d.child);
    let bearer = |p: &agora_auth::Principal| format!("Bearer {}", issuer.issue(p).expect("token"));
    let admin = agora_auth::Principal::new(Uuid::now_v7(), agora_auth::Capacity::Employee)
        .with_role(agora_auth::Role::Administrator);
    let owner = agora_auth::Principal::new(Uuid::now_v7(), agora_auth::Capacity::Employee)
        .with_role(agora_auth::Role::HearingCreator);
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc}")).expect("uri").connect_lazy();
    let mut hearings = HearingServiceClient::new(channel.clone());
    let responses = rpb::response_service_client::ResponseServiceClient::new(channel);
    let admin_token = bearer(&admin);
    let owner_token = bearer(&owner);
    let rules = pb::ResponseRules {
        max_text_chars: 1000,
        max_files: 1,
        max_file_bytes: 1024 * 1024,
        allowed_types: vec!["application/pdf".into()],
        ..Default::default()
    };
    define_plan_reference(grpc, &admin_token, Some(rules)).await;
    let hearing = hearings
        .create_hearing(authorized(&owner_token, pb::CreateHearingRequest { hearing_type_id: "plan".into() }))
        .await
        .expect("create")
        .into_inner();
    let today = chrono::Utc::now().date_naive();
    let update = complete_plan(
        &hearing.hearing_id,
        "Ny bydel",
        "Ny bydel",
        today - chrono::Days::new(2),
        today + chrono::Days::new(30),
    );
    // The reference lists are read models; wait for them before the update relies on them.
    agora_eventstore::testing::eventually(20, "the draft", || {
        let mut hearings = hearings.clone();
        let request = authorized(&owner_token, update.clone());
        async move { hearings.update_hearing(request).await.ok() }
    })
    .await;
    hearings
        .publish_hearing(authorized(&owner_token, pb::HearingRef { hearing_id: hearing.hearing_id.clone() }))
        .await
        .expect("publish");

    // The response service learns of the now active hearing through JetStream; then a
    // surge of respondents submits at once.
    let respondent = |n: u32| {
        agora_auth::Principal::new(Uuid::now_v7(), agora_auth::Capacity::Citizen).with_name(format!("Borger {n}"))
    };
    let first = bearer(&respondent(0));
    let submit = |key: String| rpb::SubmitResponseRequest {
        hearing_id: hearing.hearing_id.clone(),
        idempotency_key: key,
        text: "Jeg har en holdning.".into(),
        terms_version: "1".into(),
        ..Default::default()
    };
    agora_eventstore::testing::eventually(30, "the response service to know the hearing", || {
        let mut responses = responses.clone();
        let request = authorized(&first, submit("first".into()));
        async move { responses.submit_response(request).await.ok() }
    })
    .await;
    let mut tasks = tokio::task::JoinSet::new();
    for client in 1..=16u32 {
        let mut responses = responses.clone();
        let token = bearer(&respondent(client));
        let requests: Vec<_> = (0..8).map(|n| submit(format!("c{client}-{n}"))).collect();
        tasks.spawn(async move {
            let mut numbers = Vec::new();
            for request in requests {
                numbers.push(
                    responses.submit_response(authorized(&token, request)).await.expect("accepted").into_inner().number,
                );
            }
            numbers
        });
    }
    let mut numbers = vec![1];
    while let Some(result) = tasks.join_next().await {
        numbers.extend(result.expect("client"));
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=129).collect::<Vec<i64>>(), "every receipt unique and gapless");

    // Other systems learn of each response over JetStream (without its text).
    let submitted = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let (feed_store, _feed_dir) = agora_eventstore::testing::sqlite().await;
    let (stop_feed, feed_stopped) = tokio::sync::oneshot::channel::<()>();
    let follower = Arc::new(SubmittedResponses(submitted.clone()));
    let bus = d.bus.bus.clone();
    let feed = tokio::spawn(async move {
        agora_eventstore::jetstream::consume(&bus, feed_store, follower, async {
            let _ = feed_stopped.await;
        })
        .await
    });
    agora_eventstore::testing::eventually(30, "129 ResponseSubmitted on JetStream", || async {
        submitted.lock().ok().filter(|s| s.len() == 129).map(|_| ())
    })
    .await;
    let _ = stop_feed.send(());
    let _ = feed.await;
    let list =
        rpb::ListResponsesRequest { hearing_id: hearing.hearing_id.clone(), page_size: 100, ..Default::default() };
    let seen = agora_eventstore::testing::eventually(20, "the read model to hold every accepted response", || {
        let mut responses = responses.clone();
        let request = authorized(&owner_token, list.clone());
        async move { responses.list_responses(request).await.ok().map(|r| r.into_inner()).filter(|r| r.total == 129) }
    })
    .await;
    assert_eq!(seen.responses.len(), 100, "paged");
    // The texts were sealed through the identity service's vault in its own process: the log
    // holds them sealed, the owner reads them in clear.
    assert!(seen.responses.iter().all(|r| r.text == "Jeg har en holdning."), "{:?}", seen.responses[0].text);
    let agora_eventstore::Backend::Postgres(pool) = d.database.store.backend() else { panic!("postgres") };
    let payloads: Vec<(String,)> =
        sqlx::query_as("SELECT payload::text FROM events WHERE event_type = 'ResponseSubmitted'")
            .fetch_all(pool)
            .await
            .expect("events");
    assert_eq!(payloads.len(), 129);
    assert!(payloads.iter().all(|(p,)| p.contains("pii1.") && !p.contains("holdning")), "{}", payloads[0].0);

    // The hearing type's rules came with the hearing's events over JetStream.
    let mut long = submit("too-long".into());
    long.text = "x".repeat(1001);
    let refused = responses.clone().submit_response(authorized(&first, long)).await.expect_err("over the limit");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("at most 1000"), "{}", refused.message());

    // The owner's PDF export arrives as a stream of chunks, the first naming the file.
    let request = rpb::ExportRequest {
        hearing_id: hearing.hearing_id.clone(),
        kind: rpb::ExportKind::ResponsesPdf as i32,
        approved_only: false,
    };
    let denied = responses.clone().export_responses(authorized(&first, request.clone())).await;
    assert_eq!(denied.err().map(|e| e.code()), Some(tonic::Code::PermissionDenied), "a respondent may not export");
    let mut stream =
        responses.clone().export_responses(authorized(&owner_token, request)).await.expect("export").into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        chunks.push(chunk);
    }
    assert!(chunks[0].file_name.ends_with(".pdf") && chunks[0].content_type == "application/pdf");
    assert!(chunks.iter().skip(1).all(|c| c.file_name.is_empty()));
    let pdf: Vec<u8> = chunks.into_iter().flat_map(|c| c.data).collect();
    assert!(pdf.starts_with(b"%PDF-"), "a PDF");
    assert!(pdf.windows(b"DejaVuSans".len()).any(|w| w == b"DejaVuSans"), "with its font embedded");
    stop(child).await;
    if let Some(identity) = d.identity {
        stop(identity).await;
    }
}
