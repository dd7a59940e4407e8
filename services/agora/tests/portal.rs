//! The gateway on the embedded default, as a browser and an API client meet it: the public
//! pages, logging in, responding with an attachment, the JSON API with its problems and its
//! OpenAPI document, and the protections (CSRF, escaping, security headers).

mod support;

use std::collections::BTreeMap;

use support::*;

const ACTIVE: &str = "00000000-0000-7000-9000-000000000001";
/// The smallest file whose content says it is a PDF.
const PDF: &[u8] = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n";

/// A browser without JavaScript: keeps cookies, follows redirects by hand, reads forms.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Browser {
    fn new(port: u16) -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Self { base: format!("http://127.0.0.1:{port}"), http, cookies: BTreeMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let response = request.header("cookie", self.cookie_header()).send().await.expect("the portal answers");
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().expect("text");
            let (pair, attributes) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').expect("name=value");
            assert!(attributes.contains("HttpOnly") && attributes.contains("SameSite=Lax"), "{text}");
            if value.is_empty() || attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("body");
        Page { status, headers, body }
    }

    /// GET, following redirects (with the cookies they set) to the page at the end.
    async fn get(&mut self, path: &str) -> Page {
        let mut url = format!("{}{path}", self.base);
        for _ in 0..5 {
            let page = self.send(self.http.get(&url)).await;
            match page.headers.get("location") {
                Some(location) if (300..400).contains(&page.status) => {
                    url = format!("{}{}", self.base, location.to_str().expect("location"));
                }
                _ => return page,
            }
        }
        panic!("too many redirects from {path}");
    }

    async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let request = self.http.post(format!("{}{path}", self.base)).form(fields);
        self.send(request).await
    }

    async fn post_multipart(&mut self, path: &str, fields: &[(&str, &str)], files: &[(&str, &[u8])]) -> Page {
        let boundary = "agora-test-boundary-7d3f";
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            );
        }
        for (file_name, content) in files {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"attachment\"; filename=\"{file_name}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(content);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", format!("multipart/form-data; boundary={boundary}"))
            .body(body);
        self.send(request).await
    }
}

/// The value of a form input on a page.
fn input(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker).unwrap_or_else(|| panic!("no input {name} on the page")) + marker.len();
    page[start..].split('"').next().unwrap_or_default().to_string()
}

async fn embedded() -> (tempfile::TempDir, Running, u16) {
    embedded_with(&[]).await
}

async fn embedded_with(envs: &[(&str, &str)]) -> (tempfile::TempDir, Running, u16) {
    embedded_in(tempfile::tempdir().expect("tmp"), envs).await
}

/// The embedded portal on a data dir a test has prepared.
async fn embedded_in(dir: tempfile::TempDir, envs: &[(&str, &str)]) -> (tempfile::TempDir, Running, u16) {
    let (grpc, http) = (free_port(), free_port());
    let (grpc_addr, http_addr) = (format!("127.0.0.1:{grpc}"), format!("127.0.0.1:{http}"));
    let data_dir = dir.path().to_str().expect("utf-8").to_string();
    let running = start(&["--data-dir", &data_dir, "--grpc-addr", &grpc_addr, "--http-addr", &http_addr], envs).await;
    (dir, running, http)
}

async fn token(dir: &tempfile::TempDir, user: &str) -> String {
    let (code, token, err) =
        output(&["token", "issue", user, "--data-dir", dir.path().to_str().expect("utf-8")], &[]).await;
    assert_eq!(code, 0, "{err}");
    token.trim().to_string()
}

#[tokio::test]
async fn a_citizen_finds_a_hearing_logs_in_and_responds_with_an_attachment_in_the_portal() {
    let (dir, running, port) = embedded().await;
    let mut browser = Browser::new(port);

    // The front page lists the open hearings, in Danish, with the security headers.
    let front = browser.get("/").await;
    assert_eq!(front.status, 200);
    assert!(
        front.body.contains("<html lang=\"da\">") && front.body.contains("Lokalplan for Bytorvet"),
        "{}",
        front.body
    );
    assert!(!front.body.contains("Klimaplan 2030"), "the front page opens on the hearings open for responses");
    let csp = front.headers.get("content-security-policy").expect("a CSP").to_str().expect("text");
    assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"), "no script allowed: {csp}");
    assert_eq!(front.headers.get("x-frame-options").map(|v| v.to_str().ok()), Some(Some("DENY")));
    assert!(browser.cookies.contains_key("agora_csrf"), "every browser gets its CSRF cookie");

    // Every status: the published hearings the public may see; a search narrows it.
    let all = browser.get("/?status=&sort=title").await;
    assert!(all.body.contains("Klimaplan 2030") && all.body.contains("Skolestruktur i Vest"), "{}", all.body);
    let searched = browser.get("/?status=&q=Bytorvet").await;
    assert!(searched.body.contains("Lokalplan for Bytorvet") && !searched.body.contains("Klimaplan 2030"));

    // Anyone follows a hearing by e-mail; the subscription holds once the link sent there is
    // followed (double opt-in).
    let hearing = browser.get(&format!("/hoeringer/{ACTIVE}")).await;
    let csrf = input(&hearing.body, "csrf");
    let asked =
        browser.post_form("/abonner", &[("csrf", &csrf), ("hearing_id", ACTIVE), ("email", "nabo@example.dk")]).await;
    assert_eq!(asked.status, 200, "{}", asked.body);
    assert!(asked.body.contains("nabo@example.dk"), "{}", asked.body);
    let mail = dir.path().join("mail");
    let confirm = agora_eventstore::testing::eventually(20, "the confirmation mail", || async {
        std::fs::read_dir(&mail).ok()?.filter_map(Result::ok).find_map(|entry| {
            let raw = std::fs::read_to_string(entry.path()).ok()?;
            if !raw.contains("To: nabo@example.dk") {
                return None;
            }
            // Quoted-printable may break a long line; the link is ASCII otherwise.
            let text = raw.replace("=\r\n", "").replace("=\n", "");
            let start = text.find("/abonnement/bekraeft/")?;
            Some(text[start..].split(|c: char| c.is_whitespace() || c == '"' || c == '<').next()?.to_string())
        })
    })
    .await;
    let asked = browser.get(&confirm).await;
    assert!(asked.body.contains("Bekræft abonnement"), "a link scanner's GET confirms nothing: {}", asked.body);
    let confirmed = browser.post_form(&confirm, &[]).await;
    assert!(confirmed.body.contains("Abonnementet er bekræftet"), "{confirm}: {}", confirmed.body);

    // English by choice, remembered.
    let english = browser.get("/sprog/en?tilbage=/").await;
    assert!(english.body.contains("<html lang=\"en\">") && english.body.contains("Hearings"));
    browser.get("/sprog/da?tilbage=/").await;

    // The hearing page; responding needs a login, which comes back to the form.
    let hearing = browser.get(&format!("/hoeringer/{ACTIVE}")).await;
    assert!(hearing.body.contains("Log ind for at afgive høringssvar"), "{}", hearing.body);
    let login = browser.get(&format!("/hoeringer/{ACTIVE}/svar")).await;
    assert!(login.body.contains("Udviklerlogin"), "an anonymous visitor is sent to the login page");
    let csrf = input(&login.body, "csrf");
    let back = input(&login.body, "tilbage");
    assert_eq!(back, format!("/hoeringer/{ACTIVE}/svar"));

    // A login form without its CSRF token is refused, and logs no one in.
    let forged = browser.post_form("/log-ind/udvikler", &[("handle", "birgitte"), ("tilbage", "/")]).await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(!browser.cookies.contains_key("agora_session"));

    let logged_in =
        browser.post_form("/log-ind/udvikler", &[("csrf", &csrf), ("handle", "birgitte"), ("tilbage", &back)]).await;
    assert_eq!(logged_in.status, 303);
    assert!(browser.cookies.contains_key("agora_session") && browser.cookies.contains_key("agora_refresh"));
    let form = browser.get(&back).await;
    assert!(form.body.contains("Logget ind som <strong>Birgitte Borger</strong>"), "{}", form.body);

    // Without accepting the terms: the form comes back with the text kept and the reason.
    let fields = |accept: bool, text: &str| {
        let mut fields = vec![
            ("csrf".to_string(), input(&form.body, "csrf")),
            ("idempotency_key".to_string(), input(&form.body, "idempotency_key")),
            ("terms_version".to_string(), input(&form.body, "terms_version")),
            ("text".to_string(), text.to_string()),
        ];
        if accept {
            fields.push(("accept_terms".into(), "yes".into()));
        }
        fields
    };
    let text = "Torvet skal have <script>alert('x')</script> flere træer & bænke.";
    let declined = fields(false, text);
    let declined: Vec<(&str, &str)> = declined.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let refused = browser.post_multipart(&back, &declined, &[]).await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("acceptere vilkårene"), "{}", refused.body);
    assert!(refused.body.contains("&lt;script&gt;alert('x')&lt;/script&gt;"), "the text is kept, escaped");
    assert!(!refused.body.contains("<script>"), "no script from the respondent reaches the page");

    // Accepted with a PDF: the receipt on screen.
    let accepted = fields(true, text);
    let accepted: Vec<(&str, &str)> = accepted.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let receipt = browser.post_multipart(&back, &accepted, &[("bilag.pdf", PDF)]).await;
    assert_eq!(receipt.status, 200, "{}", receipt.body);
    assert!(receipt.body.contains("Tak for dit høringssvar"), "{}", receipt.body);
    let number = receipt.body.split("id=\"receipt-number\">").nth(1).and_then(|s| s.split('<').next()).expect("number");
    let hash = receipt.body.split("id=\"receipt-hash\">").nth(1).and_then(|s| s.split('<').next()).expect("hash");
    assert_eq!(hash.len(), 64, "the content hash is shown: {hash}");
    // The receipt comes by e-mail too, with the same hash: her address is looked up at the
    // identity service in this process.
    agora_eventstore::testing::eventually(30, "the receipt by e-mail", || async {
        std::fs::read_dir(&mail).ok()?.filter_map(Result::ok).find_map(|entry| {
            let raw = std::fs::read_to_string(entry.path()).ok()?;
            let text = raw.replace("=\r\n", "").replace("=\n", "");
            (text.contains("birgitte@demo.agora.invalid") && text.contains(hash)).then_some(())
        })
    })
    .await;

    // The same form sent twice (a double click, a reload) gets the first receipt.
    let again = browser.post_multipart(&back, &accepted, &[("bilag.pdf", PDF)]).await;
    assert!(again.body.contains(&format!("id=\"receipt-number\">{number}<")), "{}", again.body);

    // My responses show it, escaped, with a way to withdraw it.
    let mine = browser.get("/mine-svar").await;
    assert!(mine.body.contains("&lt;script&gt;") && !mine.body.contains("<script>"), "{}", mine.body);
    assert!(mine.body.contains("Træk tilbage"));

    // She follows the hearing from its page, finds it among her subscriptions, and stops it.
    let hearing = browser.get(&format!("/hoeringer/{ACTIVE}")).await;
    let back = format!("/hoeringer/{ACTIVE}");
    let csrf = input(&hearing.body, "csrf");
    let followed = browser
        .post_form(
            "/mine-abonnementer",
            &[("csrf", &csrf), ("topic", "hearing"), ("value", ACTIVE), ("tilbage", &back)],
        )
        .await;
    assert_eq!(followed.status, 303, "{}", followed.body);
    let subscriptions = browser.get("/mine-abonnementer").await;
    assert!(subscriptions.body.contains(ACTIVE), "{}", subscriptions.body);
    let stop_path = subscriptions
        .body
        .split("action=\"/mine-abonnementer/")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .map(|s| format!("/mine-abonnementer/{s}"))
        .expect("a stop form");
    assert_eq!(browser.post_form(&stop_path, &[("csrf", &csrf)]).await.status, 303);
    assert!(!browser.get("/mine-abonnementer").await.body.contains(ACTIVE), "stopped");

    // She changes her response while the hearing is open.
    let edit_path = mine
        .body
        .split("href=\"/mine-svar/")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .map(|s| format!("/mine-svar/{s}"))
        .expect("a link to change the response");
    let edit_form = browser.get(&edit_path).await;
    assert!(edit_form.body.contains("&lt;script&gt;"), "the form holds her text, escaped");
    let edited =
        browser.post_form(&edit_path, &[("csrf", &csrf), ("text", "Ændret: flere træer og bænke på torvet.")]).await;
    assert_eq!(edited.status, 303, "{}", edited.body);
    let mine = browser.get("/mine-svar").await;
    assert!(mine.body.contains("Ændret: flere træer"), "{}", mine.body);

    // Logging out ends the session here and at the identity service.
    let refresh = browser.cookies.get("agora_refresh").cloned().expect("refresh cookie");
    let csrf = input(&mine.body, "csrf");
    let out = browser.post_form("/log-ud", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert!(!browser.cookies.contains_key("agora_session") && !browser.cookies.contains_key("agora_refresh"));
    browser.cookies.insert("agora_refresh".into(), refresh);
    let after = browser.get("/mine-svar").await;
    assert!(after.body.contains("Udviklerlogin"), "a revoked refresh token does not bring the session back");
    drop(dir);
    stop(running).await;
}

#[tokio::test]
async fn the_json_api_answers_with_problems_an_openapi_document_and_exactly_once_receipts() {
    // The test polls faster than a person would: no rate limits here.
    let (dir, running, port) =
        embedded_with(&[("AGORA_RATE_LIMIT_PER_CLIENT", "0"), ("AGORA_RATE_LIMIT_PER_USER", "0")]).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    // The OpenAPI 3.1 document and the reference page made from it.
    let openapi: serde_json::Value =
        http.get(format!("{base}/api/v1/openapi.json")).send().await.expect("doc").json().await.expect("json");
    assert!(openapi["openapi"].as_str().expect("version").starts_with("3.1"));
    assert!(openapi["paths"]["/api/v1/hearings/{hearing_id}/responses"]["post"].is_object());
    let reference = http.get(format!("{base}/api")).send().await.expect("page").text().await.expect("text");
    assert!(reference.contains("POST /api/v1/hearings/{hearing_id}/responses"), "{reference}");

    // Public reading, and problems that name what is wrong.
    let list: serde_json::Value = http
        .get(format!("{base}/api/v1/hearings?status=Active,Concluded&sort=title"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let titles: Vec<&str> =
        list["hearings"].as_array().expect("list").iter().filter_map(|h| h["title"].as_str()).collect();
    assert!(titles.contains(&"Lokalplan for Bytorvet"), "{titles:?}");
    let problem = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert_eq!(content_type, "application/problem+json");
        let body: serde_json::Value = response.json().await.expect("problem json");
        (
            status,
            body["type"].as_str().unwrap_or_default().to_string(),
            body["detail"].as_str().unwrap_or_default().to_string(),
        )
    };
    let (status, kind, detail) =
        problem(http.get(format!("{base}/api/v1/hearings?status=Open")).send().await.expect("answer")).await;
    assert_eq!((status, kind.as_str()), (400, "/api/v1/problems/invalid-input"));
    assert!(detail.contains("'Open'"), "{detail}");
    let (status, kind, _) =
        problem(http.get(format!("{base}/api/v1/no-such-thing")).send().await.expect("answer")).await;
    assert_eq!((status, kind.as_str()), (404, "/api/v1/problems/not-found"));
    // What the framework refuses by itself is a problem too.
    let (status, _, _) = problem(http.put(format!("{base}/api/v1/hearings")).send().await.expect("answer")).await;
    assert_eq!(status, 405);
    let (status, kind, _) = problem(
        http.get(format!("{base}/api/v1/hearings/00000000-0000-7000-9000-00000000ffff")).send().await.expect("answer"),
    )
    .await;
    assert_eq!((status, kind.as_str()), (404, "/api/v1/problems/not-found"));

    // Responding needs a token, an idempotency key and valid JSON.
    let submit = format!("{base}/api/v1/hearings/{ACTIVE}/responses");
    let body = serde_json::json!({
        "text": "Flere cykelstativer ved torvet.",
        "terms_version": "2026-01",
        "attachments": [{"name": "skitse.pdf", "content_base64": base64_encode(PDF)}]
    });
    let (status, kind, _) = problem(http.post(&submit).json(&body).send().await.expect("answer")).await;
    assert_eq!((status, kind.as_str()), (401, "/api/v1/problems/unauthenticated"));
    let citizen = token(&dir, "birgitte").await;
    let (status, _, detail) =
        problem(http.post(&submit).bearer_auth(&citizen).json(&body).send().await.expect("answer")).await;
    assert_eq!(status, 400);
    assert!(detail.contains("Idempotency-Key"), "{detail}");
    let journalization = format!("{base}/api/v1/hearings/{ACTIVE}/journalization?steps=done");
    let (status, _, detail) =
        problem(http.get(&journalization).bearer_auth(&citizen).send().await.expect("answer")).await;
    assert_eq!(status, 400);
    assert!(detail.contains("steps: 'done'"), "{detail}");
    let (status, _, detail) = problem(
        http.post(&submit)
            .bearer_auth(&citizen)
            .header("idempotency-key", "api-1")
            .header("content-type", "application/json")
            .body("{\"text\": ")
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 400, "{detail}");
    let (status, kind, _) = problem(
        http.post(format!("{base}/api/v1/hearings"))
            .bearer_auth(&citizen)
            .header("content-type", "text/plain")
            .body("x")
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!((status, kind.as_str()), (415, "/api/v1/problems/unsupported-media-type"));

    let first = http
        .post(&submit)
        .bearer_auth(&citizen)
        .header("idempotency-key", "api-1")
        .json(&body)
        .send()
        .await
        .expect("answer");
    assert_eq!(first.status().as_u16(), 201);
    let first: serde_json::Value = first.json().await.expect("receipt");
    let retry = http
        .post(&submit)
        .bearer_auth(&citizen)
        .header("idempotency-key", "api-1")
        .json(&body)
        .send()
        .await
        .expect("answer");
    let retry: serde_json::Value = retry.json().await.expect("receipt");
    assert_eq!(retry, first, "a retry with the same key gets the first receipt");

    // A citizen may not moderate; the owner approves, and the public sees it without the author.
    let response_id = first["response_id"].as_str().expect("id").to_string();
    let approve = format!("{base}/api/v1/responses/{response_id}/approve");
    let (status, kind, _) = problem(http.post(&approve).bearer_auth(&citizen).send().await.expect("answer")).await;
    assert_eq!((status, kind.as_str()), (403, "/api/v1/problems/forbidden"));
    let owner = token(&dir, "karen").await;
    let approved = http.post(&approve).bearer_auth(&owner).send().await.expect("answer");
    assert_eq!(approved.status().as_u16(), 200);
    let public = agora_eventstore::testing::eventually(20, "the approved response in the public list", || {
        let http = http.clone();
        let url = format!("{base}/api/v1/hearings/{ACTIVE}/responses");
        async move {
            let page: serde_json::Value = http.get(url).send().await.ok()?.json().await.ok()?;
            (page["total"] == 1).then_some(page)
        }
    })
    .await;
    assert_eq!(public["responses"][0]["author_id"], "", "the public does not see who wrote it");
    assert_eq!(public["responses"][0]["text"], "Flere cykelstativer ved torvet.");
    let page = http.get(format!("{base}/hoeringer/{ACTIVE}")).send().await.expect("page").text().await.expect("text");
    assert!(page.contains("Flere cykelstativer ved torvet."), "the hearing page shows the published response");

    // The owner exports: a workbook that opens as a zip (xlsx), named for the download.
    let export = http
        .get(format!("{base}/api/v1/hearings/{ACTIVE}/exports/responses.xlsx"))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("export");
    assert_eq!(export.status().as_u16(), 200);
    assert!(
        export
            .headers()
            .get("content-disposition")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .contains("attachment")
    );
    assert!(export.bytes().await.expect("bytes").starts_with(b"PK"), "an xlsx is a zip");
    let (status, _, detail) = problem(
        http.get(format!("{base}/api/v1/hearings/{ACTIVE}/exports/everything.doc"))
            .bearer_auth(&owner)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(detail.contains("everything.doc"), "{detail}");

    // A browser's cookie alone never writes through the API: the CSRF header is needed.
    let (status, kind, _) = problem(
        http.post(&approve)
            .header("cookie", format!("agora_session={owner}; agora_csrf=abc"))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!((status, kind.as_str()), (403, "/api/v1/problems/csrf"));

    // The owner replies in public and redacts what is published, with a reason.
    let replied = http
        .post(format!("{base}/api/v1/responses/{response_id}/reply"))
        .bearer_auth(&owner)
        .json(&serde_json::json!({ "text": "Tak, vi ser på cykelstativerne." }))
        .send()
        .await
        .expect("reply");
    assert_eq!(replied.status().as_u16(), 200);
    let redacted = http
        .post(format!("{base}/api/v1/responses/{response_id}/redact"))
        .bearer_auth(&owner)
        .json(&serde_json::json!({ "redacted_text": "Flere [...] ved torvet.", "reason": "Et navn" }))
        .send()
        .await
        .expect("redact");
    assert_eq!(redacted.status().as_u16(), 200);
    let public = agora_eventstore::testing::eventually(20, "the reply and the redaction in public", || {
        let http = http.clone();
        let url = format!("{base}/api/v1/hearings/{ACTIVE}/responses");
        async move {
            let page: serde_json::Value = http.get(url).send().await.ok()?.json().await.ok()?;
            let first = page["responses"].get(0)?.clone();
            (first["text"] == "Flere [...] ved torvet." && first["reply"] == "Tak, vi ser på cykelstativerne.")
                .then_some(first)
        }
    })
    .await;
    assert_eq!(public["author_id"], "");

    // Administration: only an administrator lists users, defines reference data and reads who
    // saw a respondent's data; the terms in force are public.
    let admin = token(&dir, "admin").await;
    let users = http.get(format!("{base}/api/v1/users")).bearer_auth(&citizen).send().await.expect("users");
    assert_eq!(users.status().as_u16(), 403);
    let users: serde_json::Value = http
        .get(format!("{base}/api/v1/users"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("users")
        .json()
        .await
        .expect("json");
    assert!(users.as_array().is_some_and(|u| u.iter().any(|u| u["name"] == "Birgitte Borger")), "{users}");
    let area = serde_json::json!({ "name": "Havneområdet" });
    let refused = http
        .put(format!("{base}/api/v1/reference/city-areas/havn"))
        .bearer_auth(&owner)
        .json(&area)
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status().as_u16(), 403);
    let defined = http
        .put(format!("{base}/api/v1/reference/city-areas/havn"))
        .bearer_auth(&admin)
        .json(&area)
        .send()
        .await
        .expect("answer");
    assert_eq!(defined.status().as_u16(), 204);
    agora_eventstore::testing::eventually(20, "the new city area in the list", || {
        let (http, url) = (http.clone(), format!("{base}/api/v1/reference/city-areas"));
        async move {
            let areas: serde_json::Value = http.get(url).send().await.ok()?.json().await.ok()?;
            areas.as_array()?.iter().any(|a| a["id"] == "havn" && a["name"] == "Havneområdet").then_some(())
        }
    })
    .await;
    let terms: serde_json::Value =
        http.get(format!("{base}/api/v1/terms")).send().await.expect("terms").json().await.expect("json");
    assert_eq!(terms["version"], "2026-01");
    let me: serde_json::Value = http
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(&citizen)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    let citizen_id = me["user_id"].as_str().expect("id").to_string();
    let seen: serde_json::Value = http
        .get(format!("{base}/api/v1/users/{citizen_id}/data-access"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("log")
        .json()
        .await
        .expect("json");
    assert!(seen.as_array().is_some_and(|log| !log.is_empty()), "the owner's export is in the read-access log: {seen}");

    // The caller's own account and data.
    let me: serde_json::Value = http
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(&citizen)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(me["name"], "Birgitte Borger");
    let mine: serde_json::Value = http
        .get(format!("{base}/api/v1/me/responses"))
        .bearer_auth(&citizen)
        .send()
        .await
        .expect("mine")
        .json()
        .await
        .expect("json");
    assert_eq!(mine["total"], 1);

    // She asks for erasure: done at once, and her name is gone.
    let erased = http
        .post(format!("{base}/api/v1/me/erasure"))
        .bearer_auth(&citizen)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("erasure");
    assert_eq!(erased.status().as_u16(), 200);
    let erased: serde_json::Value = erased.json().await.expect("json");
    assert!(erased["erased_at"].as_str().is_some_and(|at| !at.is_empty()));
    let me: serde_json::Value = http
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(&citizen)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(me["name"], "", "{me}");
    stop(running).await;
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn other_systems_follow_the_hearing_events_over_http_from_a_cursor() {
    let (dir, running, port) = embedded().await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let page = |token: Option<String>, query: String| {
        let http = http.clone();
        let url = format!("{base}/api/v1/events?{query}");
        async move {
            let mut request = http.get(url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let page: serde_json::Value = request.send().await.expect("feed").json().await.expect("json");
            page
        }
    };
    let types = |page: &serde_json::Value| -> Vec<String> {
        page["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["type"].as_str().unwrap_or_default().to_string())
            .collect()
    };

    // An administrator sees every integration event; the public only those of published,
    // external, open hearings (never a draft's or an internal hearing's).
    let admin = token(&dir, "admin").await;
    let everything = page(Some(admin.clone()), "limit=1000".into()).await;
    let public = page(None, "limit=1000".into()).await;
    assert!(types(&everything).iter().any(|t| t.ends_with("HearingCreated")), "{:?}", types(&everything));
    assert!(!types(&public).is_empty() && types(&public).len() < types(&everything).len());
    let draft_subjects: Vec<&serde_json::Value> = everything["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "dk.agora.hearing.v1.HearingCreated")
        .map(|e| &e["subject"])
        .collect();
    for event in public["events"].as_array().expect("events") {
        assert_ne!(event["type"], "dk.agora.hearing.v1.HearingCreated", "a created hearing is not public yet");
        assert!(event["data_base64"].as_str().is_some_and(|d| !d.is_empty()) && event["specversion"] == "1.0");
    }
    assert!(!draft_subjects.is_empty());

    // Resuming from a cursor gives only what came after it; a bad cursor is named.
    let cursor = everything["cursor"].as_str().expect("cursor").to_string();
    let caught_up = page(Some(admin.clone()), format!("after={cursor}")).await;
    assert_eq!(caught_up["events"].as_array().map(Vec::len), Some(0));
    assert_eq!(caught_up["cursor"], cursor.as_str());
    let bad = page(None, "after=yesterday".into()).await;
    assert!(bad["detail"].as_str().unwrap_or_default().contains("'yesterday'"), "{bad}");

    // The stream from that cursor (as a reconnecting EventSource sends it) delivers the next
    // public event as it happens: the owner changes an open hearing's summary.
    let mut stream =
        http.get(format!("{base}/api/v1/events/stream")).header("last-event-id", &cursor).send().await.expect("stream");
    assert_eq!(stream.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("text/event-stream"));
    let owner = token(&dir, "karen").await;
    let changed = http
        .patch(format!("{base}/api/v1/hearings/{ACTIVE}"))
        .bearer_auth(&owner)
        .json(&serde_json::json!({ "fields": { "summary": "Nyt resumé af lokalplanen for Bytorvet." } }))
        .send()
        .await
        .expect("update");
    assert_eq!(changed.status().as_u16(), 200);
    let mut received = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    // Keep-alive comments may come first; an event is a block with an id.
    while !received.split("\n\n").any(|block| block.contains("id: ") && received.contains(&format!("{block}\n\n"))) {
        let chunk =
            tokio::time::timeout_at(deadline, stream.chunk()).await.expect("an event within 30 s").expect("stream");
        received.push_str(&String::from_utf8_lossy(&chunk.expect("open")));
    }
    let id = received.lines().find_map(|l| l.strip_prefix("id: ")).expect("an id line").to_string();
    assert_ne!(id, cursor, "{received}");
    assert!(received.contains("event: dk.agora.hearing.v1.HearingUpdated"), "{received}");
    assert!(received.contains(ACTIVE));
    stop(running).await;
}

#[tokio::test]
async fn a_client_that_floods_the_gateway_is_told_to_wait_and_others_are_not() {
    let (_dir, running, port) = embedded_with(&[("AGORA_RATE_LIMIT_PER_CLIENT", "1")]).await;
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/hearings");
    let mut statuses = Vec::new();
    let mut refused = None;
    // A burst of four seconds' worth is allowed; ten requests in a row go over it.
    for _ in 0..10 {
        let response = http.get(&url).send().await.expect("answer");
        statuses.push(response.status().as_u16());
        if response.status().as_u16() == 429 {
            refused = Some(response);
        }
    }
    assert_eq!(&statuses[..4], &[200, 200, 200, 200], "{statuses:?}");
    let refused = refused.expect("a refusal");
    let retry_after: u64 =
        refused.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok()).expect("Retry-After");
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    let problem: serde_json::Value = refused.json().await.expect("problem");
    assert_eq!(problem["type"], "/api/v1/problems/rate-limited");
    // Health checks are not the gateway's and are never limited.
    let health = http.get(format!("http://127.0.0.1:{port}/healthz")).send().await.expect("health");
    assert_eq!(health.status().as_u16(), 200);
    stop(running).await;
}

/// What a webhook receiver was sent: each request's signature header and body.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A receiving system: answers the first delivery of each event with 500, a repeat with 204.
async fn webhook_receiver() -> (u16, Received) {
    let received: Received = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let log = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let log = log.clone();
            async move {
                let signature =
                    headers.get("x-agora-signature").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                let mut log = log.lock().expect("log");
                log.push((signature, body));
                if log.len() == 1 {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::NO_CONTENT
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, received)
}

#[tokio::test]
async fn an_administrator_registers_a_webhook_and_it_receives_signed_events_retried_until_taken() {
    // The test polls the delivery log faster than a person would: no rate limits here.
    let (dir, running, port) =
        embedded_with(&[("AGORA_RATE_LIMIT_PER_CLIENT", "0"), ("AGORA_RATE_LIMIT_PER_USER", "0")]).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let (receiver, received) = webhook_receiver().await;
    let admin = token(&dir, "admin").await;
    let owner = token(&dir, "karen").await;
    let secret = "the-receivers-shared-secret";
    let registration = serde_json::json!({
        "event_type": "dk.agora.hearing.",
        "url": format!("http://127.0.0.1:{receiver}/hook"),
        "secret": secret,
    });

    // Only administrators register, and a bad registration is named.
    let refused = http
        .post(format!("{base}/api/v1/webhooks"))
        .bearer_auth(&owner)
        .json(&registration)
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status().as_u16(), 403);
    let bad = serde_json::json!({ "event_type": "dk.agora.hearing.", "url": "ftp://esdh.example/", "secret": secret });
    let refused =
        http.post(format!("{base}/api/v1/webhooks")).bearer_auth(&admin).json(&bad).send().await.expect("answer");
    assert_eq!(refused.status().as_u16(), 400);
    let problem: serde_json::Value = refused.json().await.expect("problem");
    assert!(problem["detail"].as_str().unwrap_or_default().starts_with("url"), "{problem}");

    let made = http
        .post(format!("{base}/api/v1/webhooks"))
        .bearer_auth(&admin)
        .json(&registration)
        .send()
        .await
        .expect("answer");
    assert_eq!(made.status().as_u16(), 201);
    let webhook: serde_json::Value = made.json().await.expect("webhook");
    let webhook_id = webhook["id"].as_str().expect("id").to_string();

    // A hearing event after the registration is delivered; the first attempt fails (500) and
    // the retry is taken. Both carry the same body and a valid signature.
    let changed = http
        .patch(format!("{base}/api/v1/hearings/{ACTIVE}"))
        .bearer_auth(&owner)
        .json(&serde_json::json!({ "fields": { "summary": "Et nyt resumé, som webhooken skal fortælle om." } }))
        .send()
        .await
        .expect("update");
    assert_eq!(changed.status().as_u16(), 200);
    let deliveries_url = format!("{base}/api/v1/webhooks/{webhook_id}/deliveries");
    let log = agora_eventstore::testing::eventually(30, "the delivery taken on its second attempt", || {
        let (http, url, admin) = (http.clone(), deliveries_url.clone(), admin.clone());
        async move {
            let log: serde_json::Value = http.get(url).bearer_auth(admin).send().await.ok()?.json().await.ok()?;
            let updated =
                log.as_array()?.iter().find(|d| d["event_type"] == "dk.agora.hearing.v1.HearingUpdated")?.clone();
            (updated["state"] == "done").then_some(updated)
        }
    })
    .await;
    assert_eq!(log["event_type"], "dk.agora.hearing.v1.HearingUpdated");
    assert_eq!(log["attempts"], 2, "{log}");
    assert_eq!(log["result"], "HTTP 204");
    let requests: Vec<(String, String)> =
        received.lock().expect("log").iter().filter(|(_, body)| body.contains("HearingUpdated")).cloned().collect();
    assert_eq!(requests.len(), 2, "one failed attempt and the one taken");
    assert_eq!(requests[0].1, requests[1].1, "a retry sends the same body");
    for (signature, body) in &requests {
        let timestamp: i64 = signature
            .strip_prefix("t=")
            .and_then(|s| s.split(',').next())
            .and_then(|t| t.parse().ok())
            .expect("a timestamp");
        assert_eq!(signature, &agora_notification::webhooks::signature(secret, timestamp, body));
    }
    let event: serde_json::Value = serde_json::from_str(&requests[0].1).expect("CloudEvents JSON");
    assert_eq!(event["type"], "dk.agora.hearing.v1.HearingUpdated");
    assert_eq!(event["subject"], ACTIVE);

    // Removed, it is told nothing more.
    let removed =
        http.delete(format!("{base}/api/v1/webhooks/{webhook_id}")).bearer_auth(&admin).send().await.expect("answer");
    let removed: serde_json::Value = removed.json().await.expect("webhook");
    assert_eq!(removed["status"], "removed");
    stop(running).await;
}

#[tokio::test]
async fn the_owner_words_her_hearings_messages_and_the_administrator_shapes_hearing_types() {
    let (dir, running, port) =
        embedded_with(&[("AGORA_RATE_LIMIT_PER_CLIENT", "0"), ("AGORA_RATE_LIMIT_PER_USER", "0")]).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let owner = token(&dir, "karen").await;
    let admin = token(&dir, "admin").await;
    let citizen = token(&dir, "birgitte").await;
    let receipt = format!("{base}/api/v1/hearings/{ACTIVE}/templates/response_receipt/da");

    // The owner words the receipt for her hearing; an unknown placeholder is named and refused.
    let bad = serde_json::json!({ "subject": "Kvittering {{nope}}", "text": "Tak.", "html": "<p>Tak.</p>" });
    let refused = http.put(&receipt).bearer_auth(&owner).json(&bad).send().await.expect("answer");
    assert_eq!(refused.status().as_u16(), 400);
    let problem: serde_json::Value = refused.json().await.expect("problem");
    assert!(problem["detail"].as_str().unwrap_or_default().contains("nope"), "{problem}");
    let good = serde_json::json!({
        "subject": "Tak for dit svar nr. {{response_number}}",
        "text": "Vi har modtaget dit svar {{received_at}}.",
        "html": "<p>Vi har modtaget dit svar {{received_at}}.</p>",
    });
    let refused = http.put(&receipt).bearer_auth(&citizen).json(&good).send().await.expect("answer");
    assert_eq!(refused.status().as_u16(), 403, "only the owner words her hearing's messages");
    let saved = http.put(&receipt).bearer_auth(&owner).json(&good).send().await.expect("answer");
    assert_eq!(saved.status().as_u16(), 200);
    let saved: serde_json::Value = saved.json().await.expect("template");
    assert_eq!(saved["source"], "hearing");
    let preview: serde_json::Value = http
        .post(format!("{receipt}/preview"))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("preview")
        .json()
        .await
        .expect("json");
    assert!(preview["subject"].as_str().unwrap_or_default().starts_with("Tak for dit svar nr. "), "{preview}");
    assert!(!preview["subject"].as_str().unwrap_or_default().contains("{{"), "filled with sample values");
    let test: serde_json::Value = http
        .post(format!("{receipt}/test"))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("test")
        .json()
        .await
        .expect("json");
    assert_eq!(test["to"], "karen@demo.agora.invalid", "{test}");
    let reset: serde_json::Value =
        http.delete(&receipt).bearer_auth(&owner).send().await.expect("reset").json().await.expect("json");
    assert_ne!(reset["source"], "hearing");

    // A colleague joins the hearing as reviewer, and leaves it.
    let users: serde_json::Value = http
        .get(format!("{base}/api/v1/users"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("users")
        .json()
        .await
        .expect("json");
    let admin_id = users
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["name"] == "Anne Administrator")
        .and_then(|u| u["user_id"].as_str())
        .expect("the administrator")
        .to_string();
    let admin_id = admin_id.as_str();
    let reviewer = format!("{base}/api/v1/hearings/{ACTIVE}/reviewers/{admin_id}");
    let added: serde_json::Value =
        http.put(&reviewer).bearer_auth(&owner).send().await.expect("add").json().await.expect("json");
    assert!(added["reviewer_ids"].as_array().is_some_and(|r| r.iter().any(|id| id == admin_id)), "{added}");
    let removed: serde_json::Value =
        http.delete(&reviewer).bearer_auth(&owner).send().await.expect("remove").json().await.expect("json");
    assert!(removed["reviewer_ids"].as_array().is_some_and(|r| !r.iter().any(|id| id == admin_id)), "{removed}");

    // The administrator defines a hearing type with fields of its own and rules for responses;
    // a hearing made from it has those fields.
    let kind = serde_json::json!({
        "name": "Borgerbudget",
        "fields": [
            { "key": "title", "label": "Titel", "kind": "text", "min_length": 3, "max_length": 120 },
            { "key": "summary", "label": "Kort fortalt", "kind": "text", "min_length": 10, "max_length": 500 },
            { "key": "body", "label": "Forslaget", "kind": "text", "min_length": 10, "max_length": 20000 },
            { "key": "esdh_title", "label": "ESDH-titel", "kind": "text", "min_length": 3, "max_length": 200 },
            { "key": "budget", "label": "Beløb", "kind": "text", "may_be_empty": true, "max_length": 40 }
        ],
        "response_rules": { "max_text_chars": 2000, "max_files": 0, "max_file_bytes": 0 }
    });
    let refused = http
        .put(format!("{base}/api/v1/reference/hearing-types/budget"))
        .bearer_auth(&owner)
        .json(&kind)
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status().as_u16(), 403);
    let defined = http
        .put(format!("{base}/api/v1/reference/hearing-types/budget"))
        .bearer_auth(&admin)
        .json(&kind)
        .send()
        .await
        .expect("answer");
    assert_eq!(defined.status().as_u16(), 204, "{}", defined.text().await.unwrap_or_default());
    let created = agora_eventstore::testing::eventually(20, "a hearing of the new type", || {
        let (http, url, owner) = (http.clone(), format!("{base}/api/v1/hearings"), owner.clone());
        async move {
            let answer = http
                .post(url)
                .bearer_auth(owner)
                .json(&serde_json::json!({ "hearing_type_id": "budget" }))
                .send()
                .await
                .ok()?;
            let hearing: serde_json::Value = answer.json().await.ok()?;
            hearing["id"].is_string().then_some(hearing)
        }
    })
    .await;
    let labels: Vec<&str> =
        created["field_rules"].as_array().expect("rules").iter().filter_map(|r| r["label"].as_str()).collect();
    assert!(labels.contains(&"Beløb") && labels.contains(&"Kort fortalt"), "{labels:?}");
    stop(running).await;
}

#[tokio::test]
async fn a_citizen_logs_in_through_a_real_openid_connect_provider_and_lands_in_the_portal() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../identity/tests/support/oidc_provider.py");
    let what = "the OpenID Connect provider (PyPI package oidc-provider-mock; scripts/test installs it)";
    let Some((_provider, issuer)) = agora_eventstore::testing::python_helper(script, &[], what).await else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let (grpc, http_port) = (free_port(), free_port());
    let providers = dir.path().join("providers.json");
    let config = serde_json::json!([{
        "id": "mitid", "display_name": "MitID", "capacity": "citizen",
        "issuer": issuer, "client_id": "agora", "client_secret": "s3cret",
        "redirect_uri": format!("http://127.0.0.1:{http_port}/log-ind/callback"),
        "scopes": ["profile", "email"], "claims": { "preset": "nemlogin", "email": "email" }
    }]);
    std::fs::write(&providers, config.to_string()).expect("providers");
    let data_dir = dir.path().join("data");
    let args = [
        "--data-dir",
        data_dir.to_str().expect("utf-8"),
        "--grpc-addr",
        &format!("127.0.0.1:{grpc}"),
        "--http-addr",
        &format!("127.0.0.1:{http_port}"),
    ];
    let running = start(&args, &[("AGORA_LOGIN_PROVIDERS", providers.to_str().expect("utf-8"))]).await;
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let person = serde_json::json!({
        "https://data.gov.dk/model/core/eid/fullName": "Mette Mitid",
        "https://data.gov.dk/model/core/eid/cprNumber": "020290-4321",
        "email": "mette@example.dk",
    });
    let registered = plain.put(format!("{issuer}/users/mette")).json(&person).send().await.expect("provider");
    assert_eq!(registered.status().as_u16(), 204);

    // The login page offers the provider; following it leads to the provider's authorization.
    let mut browser = Browser::new(http_port);
    let login = browser.get("/log-ind?tilbage=/mine-svar").await;
    assert!(login.body.contains("href=\"/log-ind/med/mitid?tilbage=/mine-svar\""), "{}", login.body);
    let begun = browser.send(browser.http.get(format!("{}/log-ind/med/mitid?tilbage=/mine-svar", browser.base))).await;
    let authorization =
        begun.headers.get("location").and_then(|l| l.to_str().ok()).expect("to the provider").to_string();
    assert!(
        authorization.starts_with(&issuer) && authorization.contains("code_challenge_method=S256"),
        "{authorization}"
    );

    // At the provider she is picked; it sends her back to the portal's callback, which logs her in.
    let answer = plain.post(&authorization).form(&[("sub", "mette")]).send().await.expect("provider");
    let callback =
        answer.headers().get("location").and_then(|l| l.to_str().ok()).expect("back to the portal").to_string();
    let path = callback.strip_prefix(&browser.base).expect("the portal's callback").to_string();
    assert!(path.starts_with("/log-ind/callback?"), "{path}");
    let landed = browser.get(&path).await;
    assert!(landed.body.contains("Logget ind som <strong>Mette Mitid</strong>"), "{}", landed.body);
    assert!(landed.body.contains("<h1>Mine høringssvar</h1>"), "back where she set out for: {}", landed.body);
    assert!(browser.cookies.contains_key("agora_session"));

    // The same answer from the provider again (a replayed callback) does not log anyone in.
    let mut stranger = Browser::new(http_port);
    let replayed = stranger.get(&path).await;
    assert!(!stranger.cookies.contains_key("agora_session"));
    assert_eq!(replayed.status, 403, "{}", replayed.body);
    assert!(replayed.body.contains("the login did not succeed"), "{}", replayed.body);
    drop(dir);
    stop(running).await;
}

/// No server error; every answer's body, status and content type as the document says.
const CHECKS: &str = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance";

#[tokio::test]
async fn generated_requests_to_every_operation_get_no_server_error_and_answers_within_the_schema() {
    let Some(st) = tool("AGORA_SCHEMATHESIS_BIN", "schemathesis, from PyPI") else { return };
    // Rate limits off, so that the generated requests reach the handlers rather than a 429.
    let (dir, running, http) =
        embedded_with(&[("AGORA_RATE_LIMIT_PER_CLIENT", "0"), ("AGORA_RATE_LIMIT_PER_USER", "0")]).await;
    let schema = format!("http://127.0.0.1:{http}/api/v1/openapi.json");
    // A fixed seed, so that a failure in CI can be replayed; AGORA_SCHEMATHESIS_SEED explores.
    let seed = std::env::var("AGORA_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261130".into());
    for (user, examples) in [("admin", "10"), ("birgitte", "5")] {
        let bearer = format!("Authorization: Bearer {}", token(&dir, user).await);
        let run = tokio::process::Command::new(&st)
            .args(["run", &schema, "-H", &bearer, "--checks", CHECKS])
            // The stateful phase chains operations through the links it infers (a created
            // hearing's id into its reads and commands).
            .args(["--phases", "coverage,fuzzing,stateful", "-n", examples, "--seed", &seed, "--no-color"])
            // A stream of events answers for as long as the client stays; its own test follows it.
            .args(["--exclude-path", "/api/v1/events/stream"])
            // A page of events may wait up to 25 s for news (`wait`), as asked.
            .args(["--request-timeout", "30"])
            .env("SCHEMATHESIS_TELEMETRY", "false")
            // It keeps a cache of what it found where it runs: in the test's folder, not the clone.
            .current_dir(dir.path())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(std::time::Duration::from_secs(900), run)
            .await
            .expect("schemathesis finishes within 15 minutes")
            .expect("schemathesis runs");
        let report = String::from_utf8_lossy(&out.stdout);
        // The failures, each with the curl command that repeats it, without the warnings.
        let failures = report.split("= WARNINGS =").next().unwrap_or(&report);
        let summary = report.rsplit("= SUMMARY =").next().unwrap_or_default();
        assert!(out.status.success(), "as {user}, schemathesis found failures:\n{failures}\n{summary}");
        // Every operation but the stream was tried: "Selected: 63/64" and "Tested: 63".
        let count = |label: &str| {
            report
                .lines()
                .find_map(|line| line.trim().strip_prefix(label))
                .map(|rest| rest.trim().split('/').next().unwrap_or_default().trim().parse::<usize>().unwrap_or(0))
        };
        let (selected, tested) = (count("Selected:"), count("Tested:"));
        assert!(
            selected.is_some_and(|n| n >= 60) && tested == selected,
            "as {user}: {selected:?} selected, {tested:?} tested"
        );
    }
    stop(running).await;
}

/// The names of the files in a zip (an xlsx, or the attachments export) and each file's text.
fn zip_entries(bytes: &[u8]) -> Vec<(String, String)> {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
    (0..archive.len())
        .map(|i| {
            let mut file = archive.by_index(i).expect("an entry");
            let mut content = Vec::new();
            file.read_to_end(&mut content).expect("read");
            (file.name().expect("a name").to_string(), String::from_utf8_lossy(&content).into_owned())
        })
        .collect()
}

#[tokio::test]
async fn hostile_input_is_refused_or_comes_back_harmless() {
    // A token the deployment's own key signed, that expired yesterday: issued as of two days
    // ago, before the portal first starts (its signing key is then in force since then).
    let dir = tempfile::tempdir().expect("tmp");
    let (code, expired, err) = output(
        &["token", "issue", "karen", "--data-dir", dir.path().to_str().expect("utf-8")],
        &[("AGORA_CLOCK_OFFSET_DAYS", "-2")],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let expired = expired.trim().to_string();
    let (dir, running, port) = embedded_in(
        dir,
        &[("AGORA_RATE_LIMIT_PER_CLIENT", "0"), ("AGORA_RATE_LIMIT_PER_USER", "0"), ("AGORA_MAX_BODY_MB", "1")],
    )
    .await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let citizen = token(&dir, "birgitte").await;
    let owner = token(&dir, "karen").await;

    // Script, markup and a spreadsheet formula in the text and the organisation, and a path
    // in the attachment's name.
    let text = "=HYPERLINK(\"http://evil.example\",\"klik\") <script>alert(1)</script><img src=x onerror=alert(2)>";
    let body = serde_json::json!({
        "text": text,
        "terms_version": "2026-01",
        "on_behalf_of_organisation": "<b>Grundejerforeningen</b>",
        "attachments": [{"name": "../../../etc/passwd.pdf", "content_base64": base64_encode(PDF)}]
    });
    let submitted = http
        .post(format!("{base}/api/v1/hearings/{ACTIVE}/responses"))
        .bearer_auth(&citizen)
        .header("idempotency-key", "hostile-1")
        .json(&body)
        .send()
        .await
        .expect("answer");
    assert_eq!(submitted.status().as_u16(), 201);
    let receipt: serde_json::Value = submitted.json().await.expect("receipt");
    let response_id = receipt["response_id"].as_str().expect("id");
    let approved = http
        .post(format!("{base}/api/v1/responses/{response_id}/approve"))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("a");
    assert_eq!(approved.status().as_u16(), 200);

    // The public page shows it as text: escaped, never as markup.
    let page = agora_eventstore::testing::eventually(20, "the approved response on the hearing page", || {
        let http = http.clone();
        let url = format!("{base}/hoeringer/{ACTIVE}");
        async move {
            let page = http.get(url).send().await.ok()?.text().await.ok()?;
            page.contains("HYPERLINK").then_some(page)
        }
    })
    .await;
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the text is shown, escaped");
    assert!(!page.contains("<script") && !page.contains("<img src=x"), "no markup from a respondent reaches the page");
    assert!(!page.contains("<b>Grundejerforeningen"), "nor from the organisation's name");

    // The owner's exports: the formula is a string cell, not a formula; no entry escapes its folder.
    let export = |kind: &'static str| {
        let (http, owner, base) = (http.clone(), owner.clone(), base.clone());
        async move {
            let answer = http
                .get(format!("{base}/api/v1/hearings/{ACTIVE}/exports/{kind}"))
                .bearer_auth(&owner)
                .send()
                .await
                .expect("export");
            assert_eq!(answer.status().as_u16(), 200, "{kind}");
            zip_entries(&answer.bytes().await.expect("bytes"))
        }
    };
    let workbook = export("responses.xlsx").await;
    let sheets: Vec<&(String, String)> =
        workbook.iter().filter(|(name, _)| name.starts_with("xl/worksheets/")).collect();
    assert!(!sheets.is_empty(), "a worksheet: {:?}", workbook.iter().map(|(n, _)| n).collect::<Vec<_>>());
    assert!(sheets.iter().all(|(_, xml)| !xml.contains("<f>") && !xml.contains("<f ")), "no cell is a formula");
    assert!(workbook.iter().any(|(_, xml)| xml.contains("HYPERLINK(")), "the text is in the workbook as text");
    let attachments = export("attachments.zip").await;
    assert!(!attachments.is_empty());
    for (name, _) in &attachments {
        assert!(!name.starts_with('/') && !name.split(['/', '\\']).any(|part| part == ".."), "entry {name:?} escapes");
    }

    // Search takes SQL's and LIKE's special characters as text.
    let count = |q: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let answer = http.get(format!("{base}/api/v1/hearings")).query(&[("q", q)]).send().await.expect("answer");
            assert_eq!(answer.status().as_u16(), 200, "searching {q:?}");
            let list: serde_json::Value = answer.json().await.expect("json");
            list["hearings"].as_array().map(Vec::len).unwrap_or(0)
        }
    };
    assert!(count("").await > 0, "the demo hearings are there");
    for q in ["' OR '1'='1", "%", "_", "\\", "'; DROP TABLE events; --"] {
        assert_eq!(count(q).await, 0, "searching {q:?} matches nothing");
    }
    // Control characters are no search at all (the list as without one), and no failure.
    assert_eq!(count("\u{0}").await, count("").await);

    // Paths in ids are refused as ids, never followed.
    for path in [
        "/api/v1/hearings/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/hearings/%2E%2E/files/agora.db",
        "/hoeringer/..%2F..%2Fagora.db",
        "/api/v1/responses/%00/approve",
    ] {
        let answer = http.get(format!("{base}{path}")).bearer_auth(&owner).send().await.expect("answer");
        let status = answer.status().as_u16();
        assert!((400..500).contains(&status), "{path}: {status}");
        assert!(!answer.text().await.unwrap_or_default().contains("SQLite format"), "{path} served a file");
    }

    // Tokens: one signed by a stranger's key, one altered, one claiming no signature at all,
    // and the expired one.
    let stranger = agora_auth::TokenIssuer::new(
        agora_auth::SigningKey::generate_with_kid("k1").expect("key"),
        "agora-dev",
        "agora",
        chrono::Duration::hours(1),
    );
    let principal = agora_auth::Principal::new(uuid::Uuid::now_v7(), agora_auth::Capacity::Employee)
        .with_role(agora_auth::Role::Administrator);
    let forged = stranger.issue(&principal).expect("token");
    let mut parts: Vec<String> = owner.split('.').map(str::to_string).collect();
    let altered = {
        let payload = parts[1].clone();
        let last = payload.chars().last().expect("payload");
        parts[1] = format!("{}{}", &payload[..payload.len() - 1], if last == 'A' { 'B' } else { 'A' });
        parts.join(".")
    };
    let unsigned = format!("eyJhbGciOiJub25lIn0.{}.", owner.split('.').nth(1).expect("payload"));
    let bad_tokens = [
        ("forged", forged),
        ("altered", altered),
        ("unsigned", unsigned),
        ("expired", expired),
        ("junk", "x.y.z".into()),
    ];
    for (what, bad) in bad_tokens {
        let answer = http
            .get(format!("{base}/api/v1/hearings/{ACTIVE}/exports/responses.xlsx"))
            .bearer_auth(&bad)
            .send()
            .await
            .expect("answer");
        assert_eq!(answer.status().as_u16(), 401, "a {what} token");
    }

    // Malformed multipart is a problem that says so, not a failure.
    let answer = http
        .post(format!("{base}/api/v1/hearings/{ACTIVE}/responses"))
        .bearer_auth(&citizen)
        .header("idempotency-key", "hostile-2")
        .header("content-type", "multipart/form-data; boundary=agora")
        .body("--agora\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nunfinished")
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status().as_u16(), 400, "a multipart body without its end");
    assert_eq!(answer.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/problem+json"));

    // Bodies over the limit (1 MB here) are refused as too large, as JSON and as a form, and
    // leave nothing behind: she still has the one response. A body that declares its length is
    // read to its end before the answer, so the client, still sending, gets the answer.
    let refused = |result: Result<reqwest::Response, reqwest::Error>, what: &'static str| async move {
        let answer = result.unwrap_or_else(|e| panic!("{what}: the answer, not {e}"));
        assert_eq!(answer.status().as_u16(), 413, "{what}");
        let problem: serde_json::Value = answer.json().await.expect("a problem");
        assert_eq!(problem["type"], "/api/v1/problems/too-large", "{what}");
    };
    let over = "x".repeat(800_000);
    let json_body = serde_json::json!({"text": "Stort.", "terms_version": "2026-01",
        "attachments": [{"name": "stor.pdf", "content_base64": base64_encode(over.as_bytes())}]});
    let sent = http
        .post(format!("{base}/api/v1/hearings/{ACTIVE}/responses"))
        .bearer_auth(&citizen)
        .header("idempotency-key", "hostile-3")
        .json(&json_body)
        .send()
        .await;
    refused(sent, "a JSON body over the limit").await;
    let form = reqwest::multipart::Form::new()
        .text("terms_version", "2026-01")
        .part("attachments", reqwest::multipart::Part::bytes(over.repeat(2).into_bytes()).file_name("stor.pdf"));
    let sent = http
        .post(format!("{base}/api/v1/hearings/{ACTIVE}/responses"))
        .bearer_auth(&citizen)
        .header("idempotency-key", "hostile-4")
        .multipart(form)
        .send()
        .await;
    refused(sent, "an upload over the limit").await;
    let listed: serde_json::Value = http
        .get(format!("{base}/api/v1/me/responses"))
        .bearer_auth(&citizen)
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["responses"].as_array().map(Vec::len), Some(1), "nothing from the refused bodies: {listed}");

    // A CSRF token is bound to the browser it was given to: replayed from another browser, a
    // form is refused, and the logout it asked for does not happen.
    let mut own = Browser::new(port);
    let mut other = Browser::new(port);
    for browser in [&mut own, &mut other] {
        let login = browser.get("/log-ind").await;
        let csrf = input(&login.body, "csrf");
        let done =
            browser.post_form("/log-ind/udvikler", &[("csrf", &csrf), ("handle", "carl"), ("tilbage", "/")]).await;
        assert_eq!(done.status, 303);
    }
    let own_page = own.get("/mine-svar").await;
    let replayed = other.post_form("/log-ud", &[("csrf", &input(&own_page.body, "csrf"))]).await;
    assert_eq!(replayed.status, 403, "a CSRF token from another browser: {}", replayed.body);
    let still = other.get("/mine-svar").await;
    assert!(still.body.contains("Carl Citizen"), "the other browser is still logged in");
    stop(running).await;
}

/// Who a request is made as, in the authorization matrix.
const ROLES: [&str; 8] = ["anonymous", "birgitte", "carl", "dorte", "erik", "lars", "karen", "admin"];

#[tokio::test]
async fn every_command_and_private_read_refuses_everyone_it_is_not_for() {
    let (dir, running, port) =
        embedded_with(&[("AGORA_RATE_LIMIT_PER_CLIENT", "0"), ("AGORA_RATE_LIMIT_PER_USER", "0")]).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut tokens = std::collections::BTreeMap::new();
    for role in &ROLES[1..] {
        tokens.insert(*role, token(&dir, role).await);
    }
    // Karen owns both hearings; Lars reviews the first and owns others, so on the second he is
    // the owner of another hearing. Birgitte's response on the first is the one moderated.
    const SECOND: &str = "00000000-0000-7000-9000-000000000002";
    let submitted = http
        .post(format!("{base}/api/v1/hearings/{ACTIVE}/responses"))
        .bearer_auth(&tokens["birgitte"])
        .header("idempotency-key", "matrix-1")
        .json(&serde_json::json!({"text": "Et svar.", "terms_version": "2026-01"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(submitted.status().as_u16(), 201);
    let receipt: serde_json::Value = submitted.json().await.expect("receipt");
    let response = receipt["response_id"].as_str().expect("id").to_string();
    let employee = "00000000-0000-7000-8000-000000000004";
    let json = |value: serde_json::Value| Some(value);
    let template = || json(serde_json::json!({"subject": "Emne", "text": "Tekst", "html": "<p>Tekst</p>"}));
    // (method, path, body, who may): every command of the hearing's owner, of moderation and of
    // administration, and the reads that show what only they may see.
    let owner_only = ["karen", "admin"];
    let admin_only = ["admin"];
    let author_only = ["birgitte"];
    let cases: Vec<(&str, String, Option<serde_json::Value>, &[&str])> = vec![
        (
            "PATCH",
            format!("/api/v1/hearings/{SECOND}"),
            json(serde_json::json!({"deadline": "2027-01-01"})),
            &owner_only,
        ),
        ("DELETE", format!("/api/v1/hearings/{SECOND}"), None, &owner_only),
        ("GET", format!("/api/v1/hearings/{SECOND}/audit-trail"), None, &owner_only),
        (
            "POST",
            format!("/api/v1/hearings/{SECOND}/conclusion"),
            json(serde_json::json!({"conclusion": "Slut."})),
            &owner_only,
        ),
        ("GET", format!("/api/v1/hearings/{SECOND}/exports/responses.xlsx"), None, &owner_only),
        ("GET", format!("/api/v1/hearings/{SECOND}/exports/respondents.xlsx"), None, &owner_only),
        (
            "POST",
            format!("/api/v1/hearings/{SECOND}/invitees"),
            json(serde_json::json!({"participants": [{"identifier": "a@example.dk"}]})),
            &owner_only,
        ),
        ("DELETE", format!("/api/v1/hearings/{SECOND}/invitees/group:naboer"), None, &owner_only),
        ("GET", format!("/api/v1/hearings/{SECOND}/journalization"), None, &owner_only),
        ("POST", format!("/api/v1/hearings/{SECOND}/journalization/retry"), None, &owner_only),
        (
            "PUT",
            format!("/api/v1/hearings/{SECOND}/owner"),
            json(serde_json::json!({"owner_id": employee})),
            &owner_only,
        ),
        ("POST", format!("/api/v1/hearings/{SECOND}/publish"), None, &owner_only),
        ("PUT", format!("/api/v1/hearings/{SECOND}/reviewers/{employee}"), None, &owner_only),
        ("DELETE", format!("/api/v1/hearings/{SECOND}/reviewers/{employee}"), None, &owner_only),
        ("GET", format!("/api/v1/hearings/{SECOND}/templates/response_receipt/da"), None, &owner_only),
        ("PUT", format!("/api/v1/hearings/{SECOND}/templates/response_receipt/da"), template(), &owner_only),
        ("DELETE", format!("/api/v1/hearings/{SECOND}/templates/response_receipt/da"), None, &owner_only),
        ("POST", format!("/api/v1/hearings/{SECOND}/templates/response_receipt/da/preview"), template(), &owner_only),
        ("POST", format!("/api/v1/responses/{response}/approve"), None, &owner_only),
        (
            "POST",
            format!("/api/v1/responses/{response}/decline"),
            json(serde_json::json!({"reason": "Nej."})),
            &owner_only,
        ),
        (
            "POST",
            format!("/api/v1/responses/{response}/redact"),
            json(serde_json::json!({"redacted_text": "Et [...].", "reason": "Navn"})),
            &owner_only,
        ),
        ("POST", format!("/api/v1/responses/{response}/reply"), json(serde_json::json!({"text": "Tak."})), &owner_only),
        (
            "PUT",
            "/api/v1/reference/subject-areas/matrix".into(),
            json(serde_json::json!({"name": "Matrix"})),
            &admin_only,
        ),
        ("PUT", "/api/v1/reference/city-areas/matrix".into(), json(serde_json::json!({"name": "Matrix"})), &admin_only),
        (
            "PUT",
            "/api/v1/reference/hearing-types/matrix".into(),
            json(serde_json::json!({"name": "Matrix"})),
            &admin_only,
        ),
        (
            "POST",
            "/api/v1/terms".into(),
            json(serde_json::json!({"version": "matrix", "text": "Vilkår."})),
            &admin_only,
        ),
        // Only its author changes or withdraws a response: not another citizen, not its hearing's
        // owner (who redacts instead), not an administrator.
        (
            "PATCH",
            format!("/api/v1/responses/{response}"),
            json(serde_json::json!({"text": "Ændret af en anden."})),
            &author_only,
        ),
        ("POST", format!("/api/v1/responses/{response}/withdraw"), None, &author_only),
        ("GET", "/api/v1/users".into(), None, &admin_only),
        ("GET", format!("/api/v1/users/{employee}/data-access"), None, &admin_only),
        ("PUT", format!("/api/v1/users/{employee}/roles/hearing_creator"), None, &admin_only),
        ("DELETE", format!("/api/v1/users/{employee}/roles/hearing_creator"), None, &admin_only),
        ("GET", "/api/v1/webhooks".into(), None, &admin_only),
        (
            "POST",
            "/api/v1/webhooks".into(),
            json(
                serde_json::json!({"event_type": "dk.agora.hearing.", "url": "https://example.dk/hook", "secret": "a-secret-of-enough-length-1234"}),
            ),
            &admin_only,
        ),
        ("GET", "/api/v1/templates/response_receipt/da".into(), None, &admin_only),
        ("PUT", "/api/v1/templates/response_receipt/da".into(), template(), &admin_only),
    ];
    let mut wrong = Vec::new();
    // A request's status as `role` (the anonymous one carries no token).
    let status_as = |request: reqwest::RequestBuilder, role: &str| {
        let request = match tokens.get(role) {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move { request.send().await.expect("answer").status().as_u16() }
    };
    // The refusals first: none of them may change anything the allowed calls then meet.
    for (method, path, body, allowed) in &cases {
        for role in ROLES.iter().filter(|role| !allowed.contains(role)) {
            let mut request = http.request(method.parse().expect("method"), format!("{base}{path}"));
            if let Some(body) = body {
                request = request.json(body);
            }
            let status = status_as(request, role).await;
            let expected = if *role == "anonymous" { 401 } else { 403 };
            if status != expected {
                wrong.push(format!("{method} {path} as {role}: {status}, expected {expected}"));
            }
        }
    }
    // Those it is for are let through: the reads answer 200 (the commands would change the
    // demo data, so they are left to the tests of each command).
    for (method, path, _, allowed) in cases.iter().filter(|(method, ..)| *method == "GET") {
        for role in *allowed {
            let status = status_as(http.get(format!("{base}{path}")), role).await;
            if status != 200 {
                wrong.push(format!("{method} {path} as {role}: {status}, expected 200"));
            }
        }
    }
    // A reviewer reads the hearing's trail and the review comments, and no one else but its staff.
    for (path, role, expected) in [
        ("audit-trail", "lars", 200),
        ("review-comments", "lars", 200),
        ("review-comments", "erik", 403),
        ("review-comments", "birgitte", 403),
        ("audit-trail", "erik", 403),
    ] {
        let status = status_as(http.get(format!("{base}/api/v1/hearings/{ACTIVE}/{path}")), role).await;
        if status != expected {
            wrong.push(format!("GET {path} of the reviewed hearing as {role}: {status}, expected {expected}"));
        }
    }
    // The closed internal hearing: its staff (Karen owns it) and its one invitee (Erik) see
    // it, read its responses and respond to it; to everyone else it is not there at all, not
    // even to an employee who owns other hearings (Lars).
    const CLOSED: &str = "00000000-0000-7000-9000-000000000005";
    let sees_closed = ["erik", "karen", "admin"];
    for role in ROLES {
        let expected = if sees_closed.contains(&role) { 200 } else { 404 };
        for path in [format!("/api/v1/hearings/{CLOSED}"), format!("/api/v1/hearings/{CLOSED}/responses")] {
            let status = status_as(http.get(format!("{base}{path}")), role).await;
            if status != expected {
                wrong.push(format!("GET {path} as {role}: {status}, expected {expected}"));
            }
        }
    }
    let respond = |role: &str| {
        let request = http
            .post(format!("{base}/api/v1/hearings/{CLOSED}/responses"))
            .header("idempotency-key", format!("closed-{role}"))
            .json(&serde_json::json!({"text": "Et svar til en lukket høring.", "terms_version": "2026-01"}));
        status_as(request, role)
    };
    for role in ROLES.iter().filter(|role| !sees_closed.contains(role)) {
        let status = respond(role).await;
        let expected = if *role == "anonymous" { 401 } else { 404 };
        if status != expected {
            wrong.push(format!("POST a response to the closed hearing as {role}: {status}, expected {expected}"));
        }
    }
    let invitee = respond("erik").await;
    if invitee != 201 {
        wrong.push(format!("POST a response to the closed hearing as its invitee: {invitee}, expected 201"));
    }
    assert!(wrong.is_empty(), "{} of the matrix is wrong:\n{}", wrong.len(), wrong.join("\n"));
    stop(running).await;
}
