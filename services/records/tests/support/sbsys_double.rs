//! A contract double of SBSYS's integration platform (SBSIP): the REST calls the SBSYS adapter
//! makes, over real HTTP, with the records it keeps (cases, documents with their files) and a
//! log of every call. It can fail on purpose: every n-th call with 503, a call held without an
//! answer after it took effect (the caller dies or times out not knowing), a slow answer,
//! expired tokens.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Case {
    pub id: i64,
    pub number: String,
    pub title: String,
    pub template: Value,
    pub handler: String,
    pub comment: String,
    pub kle: String,
    pub status: String,
    pub part_id: i64,
}

#[derive(Debug, Clone)]
pub struct FiledDocument {
    pub id: i64,
    pub case_id: i64,
    pub name: String,
    pub description: String,
    pub document_type: String,
    /// (file name, content type, bytes)
    pub files: Vec<(String, String, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub status: u16,
}

#[derive(Default)]
pub struct Records {
    pub cases: Vec<Case>,
    pub documents: Vec<FiledDocument>,
    pub calls: Vec<Call>,
    tokens: Vec<String>,
    api_calls: usize,
}

#[derive(Default)]
struct Faults {
    /// Every n-th API call (token requests aside) answers 503 and does nothing.
    fail_every: Option<usize>,
    /// Document filings whose name contains this are filed, then never answered.
    hold_filing: Option<String>,
    /// Every answer waits this long.
    delay: Option<Duration>,
}

#[derive(Clone)]
pub struct SbsysDouble {
    pub records: Arc<Mutex<Records>>,
    faults: Arc<Mutex<Faults>>,
    held: Arc<tokio::sync::Notify>,
    pub base_url: String,
    pub token_url: String,
    /// Templates the double knows; others are refused with 400.
    templates: Arc<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SbsysDouble {
    /// Starts the double on a free loopback port.
    pub async fn start(templates: &[&str]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port for the SBSYS double");
        let port = listener.local_addr().expect("address").port();
        let double = SbsysDouble {
            records: Default::default(),
            faults: Default::default(),
            held: Default::default(),
            base_url: format!("http://127.0.0.1:{port}/sbsip/"),
            token_url: format!("http://127.0.0.1:{port}/token"),
            templates: Arc::new(templates.iter().map(|t| t.to_string()).collect()),
        };
        let app = axum::Router::new()
            .route("/token", post(token))
            .route("/sbsip/api/sag/search", post(search))
            .route("/sbsip/api/sag", post(create_case))
            .route("/sbsip/api/sag/{id}/behandler", put(change_handler))
            .route("/sbsip/api/sag/{id}/dokumenter", get(documents))
            .route("/sbsip/api/sag/{id}/delforloeb", get(parts))
            .route("/sbsip/api/sag/{id}/status", put(close))
            .route("/sbsip/api/dokument/journaliser/{part}", post(file_document))
            .with_state(double.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        double
    }

    pub fn fail_every(&self, n: usize) {
        lock(&self.faults).fail_every = Some(n);
    }

    pub fn heal(&self) {
        let mut faults = lock(&self.faults);
        faults.fail_every = None;
        faults.delay = None;
        faults.hold_filing = None;
        self.held.notify_waiters();
    }

    pub fn hold_filing_of(&self, name_part: &str) {
        lock(&self.faults).hold_filing = Some(name_part.to_string());
    }

    pub fn delay(&self, delay: Duration) {
        lock(&self.faults).delay = Some(delay);
    }

    pub fn expire_tokens(&self) {
        lock(&self.records).tokens.clear();
    }

    pub fn cases(&self) -> Vec<Case> {
        lock(&self.records).cases.clone()
    }

    pub fn documents(&self) -> Vec<FiledDocument> {
        lock(&self.records).documents.clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        lock(&self.records).calls.clone()
    }

    fn log(&self, method: &str, path: String, status: StatusCode) {
        lock(&self.records).calls.push(Call { method: method.into(), path, status: status.as_u16() });
    }

    /// The checks every API call goes through: a valid token, then the faults.
    async fn admit(&self, method: &str, path: &str, headers: &HeaderMap) -> Result<(), Response> {
        let delay = lock(&self.faults).delay;
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_string();
        let (known, count) = {
            let mut records = lock(&self.records);
            records.api_calls += 1;
            (records.tokens.contains(&token), records.api_calls)
        };
        if !known {
            self.log(method, path.into(), StatusCode::UNAUTHORIZED);
            return Err(
                (StatusCode::UNAUTHORIZED, Json(json!({"Message": "Authorization has been denied"}))).into_response()
            );
        }
        let fail_every = lock(&self.faults).fail_every;
        if fail_every.is_some_and(|n| count % n == 0) {
            self.log(method, path.into(), StatusCode::SERVICE_UNAVAILABLE);
            return Err((StatusCode::SERVICE_UNAVAILABLE, Json(json!({"Message": "SBSYS is busy"}))).into_response());
        }
        Ok(())
    }

    fn reply(&self, method: &str, path: String, status: StatusCode, body: Value) -> Response {
        self.log(method, path, status);
        (status, Json(body)).into_response()
    }
}

async fn token(State(double): State<SbsysDouble>, body: String) -> Response {
    let form: Vec<(String, String)> = url_form(&body);
    let value = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
    if value("grant_type") != "password" || value("client_id").is_empty() || value("password").is_empty() {
        return double.reply("POST", "/token".into(), StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"}));
    }
    let token = format!("t-{}", uuid::Uuid::new_v4().simple());
    lock(&double.records).tokens.push(token.clone());
    double.reply(
        "POST",
        "/token".into(),
        StatusCode::OK,
        json!({"access_token": token, "expires_in": 3600, "token_type": "bearer"}),
    )
}

fn url_form(body: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body.as_bytes()).into_owned().collect()
}

fn case_json(case: &Case) -> Value {
    json!({"Id": case.id, "Nummer": case.number, "Titel": case.title, "Kommentar": case.comment,
           "Behandler": {"LogonId": case.handler}, "SagsStatus": case.status})
}

async fn search(State(double): State<SbsysDouble>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let path = "/sbsip/api/sag/search".to_string();
    if let Err(r) = double.admit("POST", &path, &headers).await {
        return r;
    }
    let comment = body.get("Kommentar").and_then(Value::as_str).unwrap_or_default().to_string();
    let results: Vec<Value> =
        lock(&double.records).cases.iter().filter(|c| c.comment == comment).map(case_json).collect();
    double.reply("POST", path, StatusCode::OK, json!({"Results": results, "TotalCount": results.len()}))
}

async fn create_case(State(double): State<SbsysDouble>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let path = "/sbsip/api/sag".to_string();
    if let Err(r) = double.admit("POST", &path, &headers).await {
        return r;
    }
    let template = body.get("SagsskabelonId").cloned().unwrap_or(Value::Null);
    let template_text = match &template {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => String::new(),
    };
    if !double.templates.contains(&template_text) {
        return double.reply(
            "POST",
            path,
            StatusCode::BAD_REQUEST,
            json!({"Message": format!("Ukendt sagsskabelon {template_text}")}),
        );
    }
    let title = body.get("Titel").and_then(Value::as_str).unwrap_or_default().to_string();
    if title.is_empty() {
        return double.reply("POST", path, StatusCode::BAD_REQUEST, json!({"Message": "Titel mangler"}));
    }
    let case = {
        let mut records = lock(&double.records);
        let id = 1000 + records.cases.len() as i64;
        let kle = body.pointer("/Emne/Nummer").and_then(Value::as_str).unwrap_or_default().to_string();
        let case = Case {
            id,
            number: format!("{}-G01-{}-26", if kle.is_empty() { "00.00.00" } else { &kle }, id),
            title,
            template,
            handler: body.pointer("/Behandler/LogonId").and_then(Value::as_str).unwrap_or_default().to_string(),
            comment: body.get("Kommentar").and_then(Value::as_str).unwrap_or_default().to_string(),
            kle,
            status: "Aktiv".into(),
            part_id: 5000 + id,
        };
        records.cases.push(case.clone());
        case
    };
    double.reply("POST", path, StatusCode::OK, case_json(&case))
}

fn find_case(double: &SbsysDouble, id: &str) -> Option<Case> {
    let id: i64 = id.parse().ok()?;
    lock(&double.records).cases.iter().find(|c| c.id == id).cloned()
}

async fn change_handler(
    State(double): State<SbsysDouble>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let path = format!("/sbsip/api/sag/{id}/behandler");
    if let Err(r) = double.admit("PUT", &path, &headers).await {
        return r;
    }
    let Some(case) = find_case(&double, &id) else {
        return double.reply("PUT", path, StatusCode::NOT_FOUND, json!({"Message": "Sagen findes ikke"}));
    };
    let handler = body.get("LogonId").and_then(Value::as_str).unwrap_or_default().to_string();
    if let Some(c) = lock(&double.records).cases.iter_mut().find(|c| c.id == case.id) {
        c.handler = handler;
    }
    double.reply("PUT", path, StatusCode::OK, json!({}))
}

async fn documents(State(double): State<SbsysDouble>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let path = format!("/sbsip/api/sag/{id}/dokumenter");
    if let Err(r) = double.admit("GET", &path, &headers).await {
        return r;
    }
    let Some(case) = find_case(&double, &id) else {
        return double.reply("GET", path, StatusCode::NOT_FOUND, json!({"Message": "Sagen findes ikke"}));
    };
    let list: Vec<Value> = lock(&double.records)
        .documents
        .iter()
        .filter(|d| d.case_id == case.id)
        .map(|d| json!({"Id": d.id, "Navn": d.name, "Beskrivelse": d.description}))
        .collect();
    double.reply("GET", path, StatusCode::OK, Value::Array(list))
}

async fn parts(State(double): State<SbsysDouble>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let path = format!("/sbsip/api/sag/{id}/delforloeb");
    if let Err(r) = double.admit("GET", &path, &headers).await {
        return r;
    }
    let Some(case) = find_case(&double, &id) else {
        return double.reply("GET", path, StatusCode::NOT_FOUND, json!({"Message": "Sagen findes ikke"}));
    };
    double.reply("GET", path, StatusCode::OK, json!([{"Id": case.part_id, "Titel": "Hoveddelforløb"}]))
}

async fn close(
    State(double): State<SbsysDouble>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let path = format!("/sbsip/api/sag/{id}/status");
    if let Err(r) = double.admit("PUT", &path, &headers).await {
        return r;
    }
    let status = body.get("SagsStatus").and_then(Value::as_str).unwrap_or_default().to_string();
    if status != "Afsluttet" {
        return double.reply("PUT", path, StatusCode::BAD_REQUEST, json!({"Message": "Ukendt sagsstatus"}));
    }
    let mut found = false;
    if let Ok(case_id) = id.parse::<i64>()
        && let Some(c) = lock(&double.records).cases.iter_mut().find(|c| c.id == case_id)
    {
        c.status = status;
        found = true;
    }
    if !found {
        return double.reply("PUT", path, StatusCode::NOT_FOUND, json!({"Message": "Sagen findes ikke"}));
    }
    double.reply("PUT", path, StatusCode::OK, json!({}))
}

async fn file_document(
    State(double): State<SbsysDouble>,
    Path(part): Path<String>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Response {
    let path = format!("/sbsip/api/dokument/journaliser/{part}");
    if let Err(r) = double.admit("POST", &path, &headers).await {
        return r;
    }
    let Some(case) =
        part.parse::<i64>().ok().and_then(|p| lock(&double.records).cases.iter().find(|c| c.part_id == p).cloned())
    else {
        return double.reply("POST", path, StatusCode::NOT_FOUND, json!({"Message": "Delforløbet findes ikke"}));
    };
    let mut metadata = Value::Null;
    let mut files = Vec::new();
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_string();
                let file_name = field.file_name().unwrap_or_default().to_string();
                let content_type = field.content_type().unwrap_or_default().to_string();
                let Ok(bytes) = field.bytes().await else {
                    return double.reply("POST", path, StatusCode::BAD_REQUEST, json!({"Message": "Ufuldstændig fil"}));
                };
                match name.as_str() {
                    "json" => metadata = serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    "files" => files.push((file_name, content_type, bytes.to_vec())),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(_) => {
                return double.reply("POST", path, StatusCode::BAD_REQUEST, json!({"Message": "Ugyldig multipart"}));
            }
        }
    }
    let name = metadata.get("Navn").and_then(Value::as_str).unwrap_or_default().to_string();
    if name.is_empty() || files.is_empty() {
        return double.reply("POST", path, StatusCode::BAD_REQUEST, json!({"Message": "Navn og mindst én fil kræves"}));
    }
    let document = {
        let mut records = lock(&double.records);
        let id = 9000 + records.documents.len() as i64;
        let document = FiledDocument {
            id,
            case_id: case.id,
            name: name.clone(),
            description: metadata.get("Beskrivelse").and_then(Value::as_str).unwrap_or_default().to_string(),
            document_type: metadata
                .pointer("/DokumentArt/Navn")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            files,
        };
        records.documents.push(document.clone());
        document
    };
    let hold = lock(&double.faults).hold_filing.clone();
    if hold.is_some_and(|part| name.contains(&part)) {
        // Filed, and never answered: the caller cannot know.
        double.log("POST", path.clone(), StatusCode::GATEWAY_TIMEOUT);
        let held = double.held.clone();
        held.notified().await;
        return (StatusCode::GATEWAY_TIMEOUT, "held").into_response();
    }
    double.reply("POST", path, StatusCode::OK, json!({"Id": document.id}))
}
