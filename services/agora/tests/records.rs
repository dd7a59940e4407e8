//! The records service as a process of its own, on PostgreSQL and JetStream: a hearing from
//! publication to conclusion, with responses, ends filed in the records system exactly once,
//! also when the records process is killed in the middle and the records system fails every
//! second call.

#[path = "../../records/tests/support/sbsys_double.rs"]
mod sbsys_double;
mod support;

use agora_auth::{Capacity, Principal, Role};
use agora_documents::testing::pdf_text;
use agora_proto::hearing::v1 as pb;
use agora_proto::hearing::v1::hearing_service_client::HearingServiceClient;
use agora_proto::records::v1 as records_pb;
use agora_proto::records::v1::records_service_client::RecordsServiceClient;
use agora_proto::response::v1 as rpb;
use agora_proto::response::v1::response_service_client::ResponseServiceClient;
use sbsys_double::SbsysDouble;
use support::*;
use tonic::transport::Channel;
use uuid::Uuid;

const PDF: &[u8] = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n";

struct People {
    admin: String,
    owner: String,
}

fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}")).expect("uri").connect_lazy()
}

/// Reference data, then a hearing with a document, published and open for responses.
async fn published_hearing(d: &Distributed) -> (String, People) {
    let bearer = |p: &Principal| format!("Bearer {}", d.issuer.issue(p).expect("token"));
    let admin = Principal::new(Uuid::now_v7(), Capacity::Employee).with_role(Role::Administrator);
    let owner = Principal::new(Uuid::now_v7(), Capacity::Employee).with_role(Role::HearingCreator);
    let people = People { admin: bearer(&admin), owner: bearer(&owner) };
    define_plan_reference(d.grpc, &people.admin, None).await;
    let mut hearings = HearingServiceClient::new(channel(d.grpc));
    let create = pb::CreateHearingRequest { hearing_type_id: "plan".into() };
    let hearing = hearings.create_hearing(authorized(&people.owner, create)).await.expect("create").into_inner();
    let today = chrono::Utc::now().date_naive();
    let update = complete_plan(
        &hearing.hearing_id,
        "Ny bydel ved Ærøvej",
        "Lokalplan 12 – Ærøvej",
        today - chrono::Days::new(1),
        today + chrono::Days::new(1),
    );
    agora_eventstore::testing::eventually(30, "the draft (the reference data read models)", || {
        let mut hearings = hearings.clone();
        let request = authorized(&people.owner, update.clone());
        async move { hearings.update_hearing(request).await.ok() }
    })
    .await;
    let attach = pb::AttachFileRequest {
        hearing_id: hearing.hearing_id.clone(),
        field: "documents".into(),
        file_name: "lokalplanforslag.pdf".into(),
        content: PDF.to_vec(),
    };
    hearings.attach_file(authorized(&people.owner, attach)).await.expect("document");
    let publish = pb::HearingRef { hearing_id: hearing.hearing_id.clone() };
    hearings.publish_hearing(authorized(&people.owner, publish)).await.expect("publish");
    (hearing.hearing_id, people)
}

/// Three citizens respond (the first with an attachment); the third withdraws.
async fn responses(d: &Distributed, hearing_id: &str) {
    let responses = ResponseServiceClient::new(channel(d.grpc));
    let mut ids = Vec::new();
    for n in 1..=3 {
        let citizen = Principal::new(Uuid::now_v7(), Capacity::Citizen).with_name(format!("Borger {n}"));
        let token = format!("Bearer {}", d.issuer.issue(&citizen).expect("token"));
        let mut submit = rpb::SubmitResponseRequest {
            hearing_id: hearing_id.into(),
            idempotency_key: format!("svar-{n}"),
            text: format!("Svar nummer {n}: jeg er for en grønnere bydel."),
            terms_version: "1".into(),
            ..Default::default()
        };
        if n == 1 {
            submit.attachments = vec![rpb::File { name: "mine bemærkninger.pdf".into(), content: PDF.to_vec() }];
        }
        let receipt = agora_eventstore::testing::eventually(30, "the response service to know the hearing", || {
            let mut responses = responses.clone();
            let request = authorized(&token, submit.clone());
            async move { responses.submit_response(request).await.ok() }
        })
        .await;
        ids.push((token, receipt.into_inner().response_id));
    }
    let (token, third) = &ids[2];
    agora_eventstore::testing::eventually(20, "the third response in the read model", || {
        let mut responses = responses.clone();
        let request = authorized(token, rpb::ResponseRef { response_id: third.clone() });
        async move { responses.withdraw_response(request).await.ok() }
    })
    .await;
}

async fn hearing(d_grpc: u16, token: &str, hearing_id: &str) -> Option<pb::Hearing> {
    let mut hearings = HearingServiceClient::new(channel(d_grpc));
    let request = authorized(token, pb::GetHearingRequest { hearing_id: hearing_id.into() });
    hearings.get_hearing(request).await.ok().map(|r| r.into_inner())
}

/// The main process again, its clock three days on: the deadline has passed; the owner
/// concludes.
async fn conclude(d: &mut Distributed, hearing_id: &str, people: &People) {
    let restarted = restart_main(d, &[("AGORA_CLOCK_OFFSET_DAYS", "3")]).await;
    drop(std::mem::replace(&mut d.child, restarted));
    agora_eventstore::testing::eventually(30, "the hearing to await its conclusion", || async {
        hearing(d.grpc, &people.owner, hearing_id)
            .await
            .filter(|h| h.status == pb::HearingStatus::AwaitingConclusion as i32)
    })
    .await;
    let mut hearings = HearingServiceClient::new(channel(d.grpc));
    let request = pb::ConcludeHearingRequest {
        hearing_id: hearing_id.into(),
        conclusion: Some("Lokalplanen vedtages med mindre ændringer.".into()),
    };
    hearings.conclude_hearing(authorized(&people.owner, request)).await.expect("conclude");
}

async fn journalization(port: u16, token: &str, hearing_id: &str) -> Option<records_pb::Journalization> {
    let mut records = RecordsServiceClient::new(channel(port));
    let request =
        authorized(token, records_pb::JournalizationRequest { hearing_id: hearing_id.into(), ..Default::default() });
    records.get_journalization(request).await.ok().map(|r| r.into_inner())
}

async fn journalized(port: u16, token: &str, hearing_id: &str) -> records_pb::Journalization {
    agora_eventstore::testing::eventually(90, "the hearing journalized", || async {
        journalization(port, token, hearing_id)
            .await
            .filter(|j| j.status == records_pb::JournalizationStatus::Journalized as i32)
    })
    .await
}

/// The response service learnt that the hearing is filed (its retention may go on).
async fn response_service_learnt_it(d: &Distributed, hearing_id: &str) {
    let agora_eventstore::Backend::Postgres(pool) = d.database.store.backend() else { panic!("postgres") };
    agora_eventstore::testing::eventually(30, "HearingJournalized at the response service", || async {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT journalized_at FROM response_journalized WHERE hearing_id = $1")
                .bind(hearing_id)
                .fetch_optional(pool)
                .await
                .expect("query");
        row.map(|_| ())
    })
    .await;
}

fn records_config(d: &Distributed, system: serde_json::Value) -> String {
    let path = d.dir.path().join("records.json");
    let config = serde_json::json!({
        "system": system,
        "templates": {"01.02": "12"},
        "default_template": "1",
        "responses": "all",
        "first_retry_seconds": 1,
        "max_retry_seconds": 2,
        "lease_seconds": 5,
        "max_attempts": 50,
    });
    std::fs::write(&path, config.to_string()).expect("records config");
    path.to_str().expect("utf-8").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sbsys_gets_every_document_once_though_it_fails_every_second_call_and_records_is_killed_mid_filing() {
    let double = SbsysDouble::start(&["12"]).await;
    double.fail_every(2);
    let Some(mut d) = Distributed::start("hearing,response").await else { return };
    let config = records_config(
        &d,
        serde_json::json!({"kind": "sbsys", "base_url": double.base_url, "token_url": double.token_url,
                           "client_id": "agora", "username": "agora-svc", "timeout_seconds": 1,
                           "default_handler": "SAGSBEHANDLER"}),
    );
    let main = format!("http://127.0.0.1:{}", d.grpc);
    let records_env = [
        ("AGORA_RECORDS_CONFIG", config.as_str()),
        ("AGORA_HEARING_URL", main.as_str()),
        ("AGORA_RESPONSE_URL", main.as_str()),
        ("AGORA_SBSYS_CLIENT_SECRET", "hemmelig"),
        ("AGORA_SBSYS_PASSWORD", "kodeord"),
    ];
    let (records, records_grpc, _) = d.start_more("records", &records_env).await;
    let (hearing_id, people) = published_hearing(&d).await;

    // The case is opened when the hearing leaves Created; its number comes back to the hearing.
    let case_number = agora_eventstore::testing::eventually(60, "the case number on the hearing", || async {
        hearing(d.grpc, &people.owner, &hearing_id).await.map(|h| h.case_number).filter(|n| !n.is_empty())
    })
    .await;
    assert_eq!(double.cases().len(), 1);
    assert_eq!(double.cases()[0].number, case_number);
    assert_eq!(double.cases()[0].title, "Lokalplan 12 – Ærøvej");

    responses(&d, &hearing_id).await;
    // The records process dies while SBSYS files a response and before it answers.
    double.hold_filing_of("Høringssvar nr. 2");
    conclude(&mut d, &hearing_id, &people).await;
    agora_eventstore::testing::eventually(60, "response 2 filed and its answer held", || async {
        double.documents().iter().any(|doc| doc.name == "Høringssvar nr. 2").then_some(())
    })
    .await;
    kill_hard(records).await;
    double.heal();
    double.fail_every(2);
    let (records, records_grpc_again, _) = d.start_more("records", &records_env).await;
    assert_ne!(records_grpc, records_grpc_again);

    let status = journalized(records_grpc_again, &people.owner, &hearing_id).await;
    assert_eq!(status.case_number, case_number);
    assert_eq!(status.steps_left, 0);
    let mut filed: Vec<(String, String, usize)> =
        double.documents().into_iter().map(|doc| (doc.document_type, doc.name, doc.files.len())).collect();
    filed.sort();
    let expected = [
        ("Høringsmateriale", "lokalplanforslag.pdf", 1),
        ("Høringssvar", "Høringssvar nr. 1", 2),
        ("Høringssvar", "Høringssvar nr. 2", 1),
        ("Høringstekst", "Høringstekst: Ny bydel ved Ærøvej", 1),
        ("Konklusion", "Konklusion: Ny bydel ved Ærøvej", 1),
    ];
    let expected: Vec<(String, String, usize)> =
        expected.iter().map(|(t, n, f)| (t.to_string(), n.to_string(), *f)).collect();
    assert_eq!(filed, expected, "each document once; the withdrawn response not at all");
    assert_eq!(double.cases()[0].status, "Afsluttet");
    assert!(double.calls().iter().filter(|c| c.status == 503).count() > 3, "the double did fail");
    response_service_learnt_it(&d, &hearing_id).await;

    // Only the owner and administrators see it.
    let stranger = Principal::new(Uuid::now_v7(), Capacity::Employee);
    let stranger = format!("Bearer {}", d.issuer.issue(&stranger).expect("token"));
    assert!(journalization(records_grpc_again, &stranger, &hearing_id).await.is_none());
    assert!(journalization(records_grpc_again, &people.admin, &hearing_id).await.is_some());

    // What the records service reads, only Agora's services may read.
    let mut source = rpb::response_records_source_client::ResponseRecordsSourceClient::new(channel(d.grpc));
    let list = rpb::ResponsesToFileRequest { hearing_id: hearing_id.clone(), approved_only: false };
    let anonymous = source.list_responses_to_file(list.clone()).await.expect_err("no secret");
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    let mut wrong = tonic::Request::new(list.clone());
    wrong.metadata_mut().insert("x-agora-service-secret", "not-the-secret".parse().expect("header"));
    assert_eq!(source.list_responses_to_file(wrong).await.expect_err("wrong").code(), tonic::Code::PermissionDenied);
    let mut bearer = authorized(&people.owner, list);
    bearer.metadata_mut().remove("x-agora-service-secret");
    assert_eq!(source.list_responses_to_file(bearer).await.expect_err("a person").code(), tonic::Code::Unauthenticated);
    kill_hard(records).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_archive_holds_every_document_once_though_records_is_killed_mid_run() {
    let Some(mut d) = Distributed::start("hearing,response").await else { return };
    let archive = d.dir.path().join("arkiv");
    let config = records_config(&d, serde_json::json!({"kind": "archive", "dir": archive}));
    let main = format!("http://127.0.0.1:{}", d.grpc);
    let records_env = [
        ("AGORA_RECORDS_CONFIG", config.as_str()),
        ("AGORA_HEARING_URL", main.as_str()),
        ("AGORA_RESPONSE_URL", main.as_str()),
    ];
    let (records, _, _) = d.start_more("records", &records_env).await;
    let (hearing_id, people) = published_hearing(&d).await;
    let case_number = agora_eventstore::testing::eventually(60, "the case number on the hearing", || async {
        hearing(d.grpc, &people.owner, &hearing_id).await.map(|h| h.case_number).filter(|n| !n.is_empty())
    })
    .await;
    responses(&d, &hearing_id).await;
    conclude(&mut d, &hearing_id, &people).await;
    // Killed as soon as the first response is in the archive, wherever it is then.
    let case_folder = archive.join(&case_number);
    let filed = agora_records::archive::Archive::new(&archive);
    agora_eventstore::testing::eventually(60, "the first response filed", || async {
        let metadata = filed.metadata(&case_number).await.ok().flatten()?;
        metadata.documents.iter().any(|d| d.title == "Høringssvar nr. 1").then_some(())
    })
    .await;
    kill_hard(records).await;
    let (records, records_grpc, _) = d.start_more("records", &records_env).await;
    let status = journalized(records_grpc, &people.owner, &hearing_id).await;
    assert_eq!(status.case_number, case_number);

    // Read as another process would, from the folder alone.
    let metadata = agora_records::archive::Archive::new(&archive).metadata(&case_number).await;
    let metadata = serde_json::to_value(metadata.expect("read").expect("the case")).expect("json");
    let mut titles: Vec<String> = metadata["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .map(|doc| doc["title"].as_str().unwrap_or_default().to_string())
        .collect();
    titles.sort();
    assert_eq!(
        titles,
        [
            "Høringssvar nr. 1",
            "Høringssvar nr. 2",
            "Høringstekst: Ny bydel ved Ærøvej",
            "Konklusion: Ny bydel ved Ærøvej",
            "lokalplanforslag.pdf"
        ]
    );
    assert!(metadata["closed_at"].is_string(), "the case is closed");
    // The files are what the metadata says they are, and readable: pdftotext finds the text.
    let response_pdf = metadata["documents"]
        .as_array()
        .and_then(|docs| docs.iter().find(|doc| doc["title"] == "Høringssvar nr. 1"))
        .and_then(|doc| doc["files"][0]["path"].as_str())
        .map(|path| case_folder.join(path))
        .expect("the response's PDF");
    if let Some(text) = pdf_text(&std::fs::read(&response_pdf).expect("the response's PDF")) {
        assert!(text.contains("Svar nummer 1: jeg er for en grønnere bydel."), "{text}");
    }
    let conclusion_pdf = metadata["documents"]
        .as_array()
        .and_then(|docs| docs.iter().find(|doc| doc["document_type"] == "Konklusion"))
        .and_then(|doc| doc["files"][0]["path"].as_str())
        .map(|path| case_folder.join(path))
        .expect("the conclusion's PDF");
    if let Some(text) = pdf_text(&std::fs::read(&conclusion_pdf).expect("the conclusion's PDF")) {
        assert!(text.contains("Lokalplanen vedtages med mindre ændringer."), "{text}");
    }
    response_service_learnt_it(&d, &hearing_id).await;
    stop(records).await;
}
