//! The portal in headless Chromium, end to end on the embedded default: a caseworker creates
//! and publishes a hearing, a citizen responds (with the keyboard alone, and with an
//! attachment), the caseworker moderates, concludes and exports, and the public sees the
//! result. axe-core checks every page type on the way for WCAG 2.1 A and AA violations, and
//! the main pages are photographed (AGORA_SCREENSHOTS names where; docs/screenshots has them).

mod support;

use std::collections::BTreeMap;

use chrono::Days;
use serde_json::json;
use support::webdriver::Chrome;
use support::*;

const ENTER: &str = "\u{E007}";
const SPACE: &str = "\u{E00D}";
const ARROW_DOWN: &str = "\u{E015}";
const PDF: &[u8] = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n";

struct Tour {
    chrome: Chrome,
    base: String,
    violations: BTreeMap<String, Vec<String>>,
    shots: std::path::PathBuf,
}

impl Tour {
    async fn visit(&mut self, path: &str) {
        self.chrome.goto(&format!("{}{path}", self.base)).await;
    }

    /// Runs axe on the page as it is now, under a name for the report.
    async fn check(&mut self, name: &str) {
        let found = self.chrome.accessibility_violations().await;
        if !found.is_empty() {
            self.violations.insert(name.to_string(), found);
        }
    }

    async fn photograph(&mut self, name: &str) {
        self.chrome.screenshot(&self.shots.join(format!("{name}.png"))).await;
    }

    async fn source(&self) -> String {
        self.chrome.source().await
    }

    async fn log_in(&mut self, user: &str, back: &str) {
        self.visit(&format!("/log-ind?tilbage={back}")).await;
        self.chrome.click(&format!("#user-{user}")).await;
        self.chrome.click_to_load("form[action='/log-ind/udvikler'] button[type=submit]").await;
    }

    async fn log_out(&mut self) {
        self.chrome.click_to_load("form[action='/log-ud'] button").await;
    }

    /// Reloads `path` until its page contains `text`.
    async fn until(&mut self, path: &str, text: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            self.visit(path).await;
            let page = self.source().await;
            if page.contains(text) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{path} never showed {text:?}:\n{page}");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

async fn start_embedded(dir: &std::path::Path, grpc: u16, http: u16, extra: &[(&str, &str)]) -> Running {
    let (grpc_addr, http_addr) = (format!("127.0.0.1:{grpc}"), format!("127.0.0.1:{http}"));
    let data_dir = dir.to_str().expect("utf-8").to_string();
    let args =
        ["--data-dir", &data_dir, "--grpc-addr", &grpc_addr, "--http-addr", &http_addr, "--scheduler-interval", "1"];
    // A browser driven by a test clicks faster than a person: the rate limits would refuse some
    // of its clicks (portal.rs tests them).
    let mut envs = vec![("AGORA_RATE_LIMIT_PER_CLIENT", "0"), ("AGORA_RATE_LIMIT_PER_USER", "0")];
    envs.extend_from_slice(extra);
    start(&args, &envs).await
}

#[tokio::test]
async fn a_hearing_from_creation_to_conclusion_in_headless_chromium_without_accessibility_violations() {
    let Some(chrome) = Chrome::start().await else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let (grpc, http) = (free_port(), free_port());
    let running = start_embedded(dir.path(), grpc, http, &[]).await;
    let shots = match std::env::var("AGORA_SCREENSHOTS") {
        Ok(path) => std::path::PathBuf::from(path),
        Err(_) => dir.path().join("screenshots"),
    };
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    let mut tour = Tour { chrome, base: format!("http://127.0.0.1:{http}"), violations: BTreeMap::new(), shots };

    // The checker itself finds what is wrong on a page made wrong (no language, an image
    // without a text alternative), so a clean report below means something.
    tour.chrome.goto("data:text/html,<html><body><img src='x.png'><a href='/'></a></body></html>").await;
    if tour.chrome.axe.is_some() {
        let found = tour.chrome.accessibility_violations().await;
        assert!(found.iter().any(|v| v.starts_with("image-alt")), "axe works: {found:?}");
    }

    // The public front page.
    tour.visit("/").await;
    assert!(tour.source().await.contains("Lokalplan for Bytorvet"));
    tour.check("front page").await;
    tour.photograph("forside").await;
    for (name, path) in [
        ("accessibility statement", "/tilgaengelighed"),
        ("API reference", "/api"),
        ("page not found", "/ingen-side"),
        ("error page", "/hoeringer/00000000-0000-7000-9000-00000000ffff"),
        ("login", "/log-ind"),
    ] {
        tour.visit(path).await;
        tour.check(name).await;
    }

    // The caseworker creates a hearing from a type and is told, beside the field, what is wrong.
    tour.log_in("karen", "/sagsbehandler").await;
    assert!(tour.chrome.url().await.ends_with("/sagsbehandler"));
    tour.check("caseworker dashboard").await;
    tour.photograph("sagsbehandler").await;
    tour.chrome.run("document.getElementById('hearing_type_id').value = 'lokalplan';", json!([])).await;
    tour.chrome.click_to_load("form[action='/sagsbehandler/hoeringer'] button").await;
    let workspace = tour.chrome.url().await;
    let hearing_id = workspace.rsplit('/').next().expect("an id").to_string();
    let workspace_path = format!("/sagsbehandler/hoeringer/{hearing_id}");
    // A draft may be saved incomplete; publishing it is refused, with each objection beside its field.
    tour.chrome.type_into("#title", "Ny").await;
    tour.chrome.click_to_load("form.hearing button[type=submit]").await;
    tour.chrome.click_to_load("#publish").await;
    let refused = tour.source().await;
    assert!(refused.contains("id=\"subject_area_id-error\""), "the objection stands beside its field:\n{refused}");
    tour.check("hearing form with errors").await;

    let today = chrono::Utc::now().with_timezone(&chrono_tz::Europe::Copenhagen).date_naive();
    let deadline = today.checked_add_days(Days::new(7)).expect("a date");
    tour.chrome.run("document.getElementById('title').value = '';", json!([])).await;
    tour.chrome.type_into("#title", "Ny skolevej ved Engparken").await;
    tour.chrome.type_into("#summary", "Forslag om en sikker skolevej langs Engparken.").await;
    tour.chrome.run("document.getElementById('body').value = '';", json!([])).await;
    tour.chrome.type_into("#body", "Kommunen foreslår en ny skolevej.\n\nSig din mening om placeringen.").await;
    tour.chrome.type_into("#esdh_title", "Skolevej Engparken").await;
    tour.chrome.type_into("#kle_number", "01.02.05").await;
    tour.chrome.type_into("#contact_name", "Karen Sagsbehandler").await;
    tour.chrome.type_into("#contact_email", "karen@demo.agora.invalid").await;
    tour.chrome
        .run(
            "document.getElementById('subject_area_id').selectedIndex = 1;
             document.getElementById('start_date').value = arguments[0];
             document.getElementById('deadline').value = arguments[1];",
            json!([today.to_string(), deadline.to_string()]),
        )
        .await;
    tour.chrome.click_to_load("form.hearing button[type=submit]").await;
    let saved = tour.source().await;
    assert!(!saved.contains("class=\"error\""), "the complete hearing is saved:\n{saved}");
    assert!(saved.contains("Kladde"), "complete metadata makes it a draft");

    // A document, then publication; the start date is today, so it opens at once.
    let document = dir.path().join("lokalplan.pdf");
    std::fs::write(&document, PDF).expect("pdf");
    tour.chrome.run("document.getElementById('file_field').value = 'documents';", json!([])).await;
    tour.chrome.type_into("#file", document.to_str().expect("utf-8")).await;
    tour.chrome.click_to_load("form[action$='/filer'] button").await;
    assert!(tour.source().await.contains("lokalplan.pdf"));
    tour.check("hearing workspace").await;
    tour.photograph("hoering-redigering").await;
    tour.chrome.click_to_load("#publish").await;
    let published = tour.source().await;
    assert!(
        published.contains("id=\"hearing-status\"") && !published.contains("class=\"error\""),
        "publishing is taken:\n{published}"
    );
    tour.until(&workspace_path, "id=\"hearing-status\">Aktiv<").await;
    tour.log_out().await;

    // A citizen responds with the keyboard alone, from the hearing page to the receipt.
    tour.visit(&format!("/hoeringer/{hearing_id}")).await;
    tour.check("hearing page").await;
    tour.chrome.tab_to("a.button[href^='/log-ind']").await;
    tour.chrome.press_to_load(ENTER).await;
    tour.chrome.tab_to("input[name=handle]:checked").await;
    while tour.chrome.run("return document.activeElement.id;", json!([])).await != "user-birgitte" {
        tour.chrome.press(ARROW_DOWN).await;
    }
    tour.chrome.tab_to("form[action='/log-ind/udvikler'] button").await;
    tour.chrome.press_to_load(ENTER).await;
    assert!(
        tour.chrome.url().await.ends_with(&format!("/hoeringer/{hearing_id}/svar")),
        "back at the form after login"
    );
    tour.check("respond form").await;
    tour.chrome.tab_to("#text").await;
    tour.chrome.keys("Skolevejen bør gå bag hallen, væk fra trafikken.").await;
    tour.chrome.tab_to("#accept_terms").await;
    tour.chrome.press(SPACE).await;
    tour.photograph("svar").await;
    tour.chrome.tab_to("form.respond button[type=submit]").await;
    tour.chrome.press_to_load(ENTER).await;
    let receipt = tour.source().await;
    assert!(receipt.contains("Tak for dit høringssvar") && receipt.contains("id=\"receipt-number\">1<"), "{receipt}");
    tour.check("receipt").await;
    tour.photograph("kvittering").await;
    tour.visit("/mine-svar").await;
    tour.check("my responses").await;
    let edit =
        tour.source().await.split("href=\"/mine-svar/").nth(1).and_then(|s| s.split('"').next()).map(str::to_string);
    let edit = format!("/mine-svar/{}", edit.expect("a link to change the response"));
    for (name, path) in
        [("change a response", edit.as_str()), ("subscriptions", "/mine-abonnementer"), ("erasure", "/slet-mig")]
    {
        tour.visit(path).await;
        tour.check(name).await;
    }
    tour.log_out().await;

    // Another citizen responds with an attachment.
    tour.log_in("carl", &format!("/hoeringer/{hearing_id}/svar")).await;
    tour.chrome.type_into("#text", "Se min skitse af en anden linjeføring.").await;
    tour.chrome.type_into("#attachment", document.to_str().expect("utf-8")).await;
    tour.chrome.click("#accept_terms").await;
    tour.chrome.click_to_load("form.respond button[type=submit]").await;
    assert!(tour.source().await.contains("id=\"receipt-number\">2<"));
    tour.log_out().await;

    // The caseworker approves the first and declines the second with a reason.
    tour.log_in("karen", &workspace_path).await;
    tour.chrome.click_to_load("form[action$='/godkend'] button").await;
    tour.chrome.type_into("#reason-2", "Indeholder personoplysninger.").await;
    tour.chrome.click_to_load("form[action$='/afvis'] button").await;
    let moderated = tour.source().await;
    assert!(!moderated.contains("/godkend"), "nothing left to moderate:\n{moderated}");
    tour.check("moderation").await;
    tour.photograph("moderation").await;
    // The hearing's own wording of its messages, previewed.
    tour.visit(&format!("{workspace_path}/beskeder")).await;
    tour.check("the hearing's messages").await;
    tour.chrome.click_to_load("button[value=preview]").await;
    assert!(tour.source().await.contains("id=\"preview\""), "the preview is shown");
    tour.visit(&workspace_path).await;
    tour.chrome.click("details summary").await;
    tour.chrome.type_into("#reply-1", "Tak for forslaget, vi ser på det.").await;
    tour.chrome.click_to_load("form[action$='/svar'] button").await;
    assert!(tour.source().await.contains("Tak for forslaget, vi ser på det."), "the reply is shown");

    // The deadline passes (the services' clock a month on), and the caseworker concludes.
    stop(running).await;
    let running = start_embedded(dir.path(), grpc, http, &[("AGORA_CLOCK_OFFSET_DAYS", "30")]).await;
    tour.until(&workspace_path, "id=\"hearing-status\">Afventer konklusion<").await;
    tour.chrome.type_into("#conclusion", "Skolevejen lægges bag hallen, som flere foreslog.").await;
    tour.chrome.click_to_load("form[action$='/konkluder'] button").await;
    tour.until(&workspace_path, "id=\"hearing-status\">Afsluttet<").await;
    tour.visit(&format!("{workspace_path}/historik")).await;
    assert!(tour.source().await.contains("HearingConcluded"));
    tour.check("audit trail").await;

    // The export, with the browser's session.
    let session = tour.chrome.cookie("agora_session").await.expect("logged in");
    let export = reqwest::Client::new()
        .get(format!("{}/api/v1/hearings/{hearing_id}/exports/responses.pdf", tour.base))
        .header("cookie", format!("agora_session={session}"))
        .send()
        .await
        .expect("export");
    assert_eq!(export.status().as_u16(), 200);
    assert!(export.bytes().await.expect("bytes").starts_with(b"%PDF"), "a PDF of the responses");

    // The administrator's page: reference data, roles, terms, templates, the read-access log.
    tour.log_out().await;
    tour.log_in("admin", "/administration").await;
    tour.check("administration").await;
    tour.photograph("administration").await;
    tour.chrome.type_into("#subject-id", "havn").await;
    tour.chrome.type_into("#subject-name", "Havn og kyst").await;
    tour.chrome.click_to_load("form[action='/administration/emner'] button").await;
    tour.until("/administration", "Havn og kyst").await;
    tour.chrome.click_to_load("form[action='/administration/skabeloner'] button").await;
    let saved = tour.source().await;
    assert!(saved.contains("id=\"skabeloner\""), "the template is saved and shown again:\n{saved}");
    // A hearing type's fields: a label changed, kept on the type.
    tour.visit("/administration/hoeringstyper/lokalplan").await;
    tour.check("hearing type").await;
    tour.chrome.run("document.querySelector('input[name=field_1_label]').value = '';", json!([])).await;
    tour.chrome.type_into("input[name=field_1_label]", "Kort resumé").await;
    tour.chrome.click_to_load("form[action='/administration/hoeringstyper/lokalplan'] button[type=submit]").await;
    tour.until("/administration/hoeringstyper/lokalplan", "value=\"Kort resumé\"").await;
    tour.visit("/administration").await;
    let users = tour.source().await;
    let access = users
        .split("<tr>")
        .find(|row| row.contains("Birgitte Borger"))
        .and_then(|row| row.split("href=\"/administration?bruger=").nth(1))
        .and_then(|rest| rest.split('#').next())
        .expect("a read-access link in Birgitte's row")
        .to_string();
    tour.visit(&format!("/administration?bruger={access}")).await;
    let log = tour.source().await;
    assert!(log.contains("<caption>"), "her read-access log, with the owner's views of her response:\n{log}");
    tour.check("read-access log").await;

    // The public sees the conclusion and the approved response, not the declined one.
    tour.chrome.delete_cookies().await;
    tour.visit(&format!("/hoeringer/{hearing_id}")).await;
    let public = tour.source().await;
    assert!(
        public.contains("Skolevejen lægges bag hallen") && public.contains("Skolevejen bør gå bag hallen"),
        "{public}"
    );
    assert!(!public.contains("Se min skitse"), "the declined response is not published");
    assert!(public.contains("Tak for forslaget, vi ser på det."), "the owner's reply is public");
    tour.check("concluded hearing").await;
    tour.photograph("hoering-afsluttet").await;

    // On a phone: the same pages, nothing cut off sideways.
    tour.chrome.window_size(390, 844).await;
    for (name, path) in
        [("front page on a phone", "/".to_string()), ("hearing on a phone", format!("/hoeringer/{hearing_id}"))]
    {
        tour.visit(&path).await;
        let overflow =
            tour.chrome.run("return document.documentElement.scrollWidth > window.innerWidth;", json!([])).await;
        assert_eq!(overflow, false, "{name} is wider than the phone");
        tour.check(name).await;
    }
    tour.photograph("telefon").await;

    let Tour { chrome, violations, .. } = tour;
    chrome.quit().await;
    stop(running).await;
    assert!(violations.is_empty(), "axe-core found WCAG 2.1 AA violations: {violations:#?}");
}
