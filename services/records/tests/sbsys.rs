//! The SBSYS adapter against the SBSIP contract double, over real HTTP.

mod support;

use std::time::Duration;

use agora_records::esdh::{CaseRef, Document, DocumentFile, NewCase, RecordsSystem};
use agora_records::sbsys::{Sbsys, SbsysConfig};
use support::sbsys_double::SbsysDouble;

fn adapter(double: &SbsysDouble, timeout_seconds: u64) -> Sbsys {
    Sbsys::new(SbsysConfig {
        base_url: double.base_url.clone(),
        token_url: double.token_url.clone(),
        client_id: "agora".into(),
        client_secret: "hemmelig".into(),
        username: "agora-svc".into(),
        password: "kodeord".into(),
        timeout_seconds,
        handlers: [("karen-id".to_string(), "KAREN".to_string())].into(),
        default_handler: "POSTKASSE".into(),
    })
    .expect("adapter")
}

fn case() -> NewCase {
    NewCase {
        reference: "agora:hearing:h1".into(),
        title: "Lokalplan 12 – Ærøvej".into(),
        template: "12".into(),
        handler: "karen-id".into(),
        kle_number: "01.02.05".into(),
    }
}

fn document(reference: &str) -> Document {
    Document {
        reference: reference.into(),
        title: "Høringssvar nr. 1".into(),
        document_type: "Høringssvar".into(),
        files: vec![
            DocumentFile {
                name: "hoeringssvar-0001.pdf".into(),
                content_type: "application/pdf".into(),
                content: "%PDF-1.7 svar".into(),
            },
            DocumentFile {
                name: "bilag æøå.txt".into(), content_type: "text/plain".into(), content: "bilag".into()
            },
        ],
    }
}

#[tokio::test]
async fn a_case_is_opened_from_its_template_filed_on_and_closed_once_however_often_asked() {
    let double = SbsysDouble::start(&["12"]).await;
    let sbsys = adapter(&double, 5);
    let opened = sbsys.open_case(&case()).await.expect("open");
    assert_eq!(sbsys.open_case(&case()).await.expect("again"), opened, "found again by its reference");
    let cases = double.cases();
    assert_eq!(cases.len(), 1);
    assert_eq!((cases[0].title.as_str(), cases[0].handler.as_str()), ("Lokalplan 12 – Ærøvej", "KAREN"));
    assert_eq!(cases[0].template, serde_json::json!(12));
    assert!(opened.number.starts_with("01.02.05-"), "{}", opened.number);

    let filed = sbsys.file_document(&opened, &document("agora:h1:response-a")).await.expect("file");
    assert_eq!(sbsys.file_document(&opened, &document("agora:h1:response-a")).await.expect("again"), filed);
    let documents = double.documents();
    assert_eq!(documents.len(), 1, "filed once");
    assert_eq!(documents[0].document_type, "Høringssvar");
    let names: Vec<&str> = documents[0].files.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["hoeringssvar-0001.pdf", "bilag æøå.txt"]);
    assert_eq!(documents[0].files[0].2, b"%PDF-1.7 svar");

    sbsys.change_handler(&opened, "someone-else").await.expect("handler");
    assert_eq!(double.cases()[0].handler, "POSTKASSE", "an unmapped owner gets the default handler");
    sbsys.close_case(&opened).await.expect("close");
    assert_eq!(double.cases()[0].status, "Afsluttet");
}

#[tokio::test]
async fn server_errors_and_timeouts_are_worth_a_retry_and_refusals_are_not() {
    let double = SbsysDouble::start(&["12"]).await;
    let sbsys = adapter(&double, 1);
    double.fail_every(1);
    let busy = sbsys.open_case(&case()).await.expect_err("503");
    assert!(!busy.is_final() && busy.to_string().contains("503"), "{busy}");
    double.heal();

    let mut unknown = case();
    unknown.template = "99".into();
    let refused = sbsys.open_case(&unknown).await.expect_err("400");
    assert!(refused.is_final() && refused.to_string().contains("Ukendt sagsskabelon 99"), "{refused}");

    let missing = CaseRef { id: "4711".into(), number: "x".into() };
    assert!(sbsys.close_case(&missing).await.expect_err("404").is_final());

    double.delay(Duration::from_millis(1500));
    let slow = sbsys.open_case(&case()).await.expect_err("timeout");
    assert!(!slow.is_final() && slow.to_string().contains("timed out"), "{slow}");
    double.heal();
    assert_eq!(double.cases().len(), 0, "nothing was made by the failed calls");
}

#[tokio::test]
async fn an_expired_token_is_replaced_without_failing_the_call() {
    let double = SbsysDouble::start(&["12"]).await;
    let sbsys = adapter(&double, 5);
    let opened = sbsys.open_case(&case()).await.expect("open");
    double.expire_tokens();
    sbsys.close_case(&opened).await.expect("a new token, then the call");
    let statuses: Vec<u16> = double.calls().iter().map(|c| c.status).collect();
    assert!(statuses.contains(&401), "{statuses:?}");
    assert_eq!(double.cases()[0].status, "Afsluttet");
}

#[tokio::test]
async fn a_filing_answered_too_late_is_found_on_the_case_when_repeated() {
    let double = SbsysDouble::start(&["12"]).await;
    let sbsys = adapter(&double, 1);
    let opened = sbsys.open_case(&case()).await.expect("open");
    double.hold_filing_of("Høringssvar");
    let lost = sbsys.file_document(&opened, &document("agora:h1:response-a")).await.expect_err("no answer");
    assert!(!lost.is_final(), "{lost}");
    double.heal();
    let id = sbsys.file_document(&opened, &document("agora:h1:response-a")).await.expect("repeat");
    let documents = double.documents();
    assert_eq!(documents.len(), 1, "the repeat found the first filing");
    assert_eq!(id, documents[0].id.to_string());
}
