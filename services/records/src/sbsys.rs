//! SBSYS through its integration platform's REST API (SBSIP), as public SBSIP clients use it:
//! an OAuth2 password grant for a bearer token, then
//!
//! - `POST api/sag/search` `{"Kommentar": ref}` → `{"Results": [{"Id", "Nummer", ...}]}`: finds a case
//!   opened before under our reference;
//! - `POST api/sag` `{"SagsskabelonId", "Titel", "Kommentar", "Behandler": {"LogonId"}, "Emne": {"Nummer"}}`
//!   → `{"Id", "Nummer"}`: a case from a template;
//! - `PUT api/sag/{id}/behandler` `{"LogonId"}`: the case handler;
//! - `GET api/sag/{id}/dokumenter` → `[{"Id", "Navn", "Beskrivelse"}]`: the documents filed, to find
//!   one filed before under our reference (kept in `Beskrivelse`);
//! - `GET api/sag/{id}/delforloeb` → `[{"Id", ...}]` and
//!   `POST api/dokument/journaliser/{delforloebId}` (multipart: `json` with
//!   `{"Navn", "Beskrivelse", "DokumentArt": {"Navn"}}`, then one `files` part per file) → `{"Id"}`;
//! - `PUT api/sag/{id}/status` `{"SagsStatus": "Afsluttet"}`: closes the case.
//!
//! 5xx, 408, 429, timeouts and unreachable servers are worth another try; other 4xx are
//! refusals. A 503 or 429 (the server says it did not take the request) is asked once more
//! at once, after a short pause; a 401 drops the token and asks once more with a new one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::esdh::{CaseRef, Document, EsdhError, NewCase, RecordsSystem};

/// How to reach SBSIP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SbsysConfig {
    /// The REST API's base URL, e.g. `https://sbsip.kommune.dk/sbsip/v10/`.
    pub base_url: String,
    pub token_url: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: String,
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// Each call's time limit.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Agora user id → SBSYS logon id of the case handler; others get `default_handler`.
    #[serde(default)]
    pub handlers: HashMap<String, String>,
    #[serde(default)]
    pub default_handler: String,
}

fn default_timeout() -> u64 {
    30
}

pub struct Sbsys {
    config: SbsysConfig,
    http: reqwest::Client,
    token: Mutex<Option<(String, Instant)>>,
}

#[derive(Deserialize)]
struct Token {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

fn id_of(value: &Value) -> Option<String> {
    match value.get("Id")? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn failure(what: &str, error: reqwest::Error) -> EsdhError {
    let kind = if error.is_timeout() { "timed out" } else { "failed" };
    EsdhError::Unavailable(format!("SBSYS {what} {kind}: {error}"))
}

fn refused_or_unavailable(what: &str, status: StatusCode, body: &str) -> EsdhError {
    let body: String = body.chars().take(300).collect();
    let message = format!("SBSYS {what}: HTTP {status}: {body}");
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS {
        EsdhError::Unavailable(message)
    } else {
        EsdhError::Refused(message)
    }
}

impl Sbsys {
    pub fn new(mut config: SbsysConfig) -> Result<Self, String> {
        if !config.base_url.ends_with('/') {
            config.base_url.push('/');
        }
        for (name, url) in [("base_url", &config.base_url), ("token_url", &config.token_url)] {
            reqwest::Url::parse(url).map_err(|e| format!("SBSYS {name} '{url}' is not a URL: {e}"))?;
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_seconds.max(1)))
            .build()
            .map_err(|e| format!("SBSYS client: {e}"))?;
        Ok(Self { config, http, token: Mutex::new(None) })
    }

    fn handler(&self, user: &str) -> String {
        self.config.handlers.get(user).cloned().unwrap_or_else(|| self.config.default_handler.clone())
    }

    async fn token(&self) -> Result<String, EsdhError> {
        let mut token = self.token.lock().await;
        if let Some((value, until)) = token.as_ref()
            && Instant::now() < *until
        {
            return Ok(value.clone());
        }
        let form = [
            ("grant_type", "password"),
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", self.config.client_secret.as_str()),
            ("username", self.config.username.as_str()),
            ("password", self.config.password.as_str()),
        ];
        let response =
            self.http.post(&self.config.token_url).form(&form).send().await.map_err(|e| failure("login", e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(refused_or_unavailable("login", status, &body));
        }
        let issued: Token = response.json().await.map_err(|e| failure("login", e))?;
        let lifetime = Duration::from_secs(issued.expires_in.unwrap_or(3600).saturating_sub(60).max(1));
        *token = Some((issued.access_token.clone(), Instant::now() + lifetime));
        Ok(issued.access_token)
    }

    /// A call with the bearer token; a 401 is answered by a new token and one more try, a 503
    /// or 429 by one more try after a pause.
    async fn call(
        &self,
        what: &str,
        build: impl Fn(&reqwest::Client) -> Result<reqwest::RequestBuilder, EsdhError>,
    ) -> Result<Value, EsdhError> {
        let (mut renewed, mut repeated) = (false, false);
        loop {
            let token = self.token().await?;
            let response = build(&self.http)?.bearer_auth(&token).send().await.map_err(|e| failure(what, e))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !renewed {
                renewed = true;
                *self.token.lock().await = None;
                continue;
            }
            if matches!(status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS) && !repeated {
                repeated = true;
                let pause = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(Duration::from_millis(250))
                    .min(Duration::from_secs(2));
                tokio::time::sleep(pause).await;
                continue;
            }
            let body = response.text().await.map_err(|e| failure(what, e))?;
            if status == StatusCode::UNAUTHORIZED {
                return Err(EsdhError::Refused(format!("SBSYS {what}: the login is not accepted (HTTP 401)")));
            }
            if !status.is_success() {
                return Err(refused_or_unavailable(what, status, &body));
            }
            if body.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&body)
                .map_err(|e| EsdhError::Unavailable(format!("SBSYS {what}: the answer is not JSON: {e}")));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url)
    }

    async fn json(&self, what: &str, method: Method, path: &str, body: Option<Value>) -> Result<Value, EsdhError> {
        let url = self.url(path);
        self.call(what, |http| {
            let request = http.request(method.clone(), &url);
            Ok(match &body {
                Some(body) => request.json(body),
                None => request,
            })
        })
        .await
    }
}

#[async_trait::async_trait]
impl RecordsSystem for Sbsys {
    fn name(&self) -> &str {
        "sbsys"
    }

    async fn open_case(&self, case: &NewCase) -> Result<CaseRef, EsdhError> {
        let found = self
            .json("case search", Method::POST, "api/sag/search", Some(json!({ "Kommentar": case.reference })))
            .await?;
        let earlier = found.get("Results").and_then(Value::as_array).and_then(|results| {
            results.iter().find(|r| r.get("Kommentar").and_then(Value::as_str) == Some(&case.reference))
        });
        let made = match earlier {
            Some(made) => made.clone(),
            None => {
                let template: Value = match case.template.parse::<i64>() {
                    Ok(n) => json!(n),
                    Err(_) => json!(case.template),
                };
                let body = json!({
                    "SagsskabelonId": template,
                    "Titel": case.title,
                    "Kommentar": case.reference,
                    "Behandler": { "LogonId": self.handler(&case.handler) },
                    "Emne": { "Nummer": case.kle_number },
                });
                self.json("case creation", Method::POST, "api/sag", Some(body)).await?
            }
        };
        let id = id_of(&made).ok_or_else(|| EsdhError::Unavailable("SBSYS case: the answer has no Id".into()))?;
        let number = made
            .get("Nummer")
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| EsdhError::Unavailable(format!("SBSYS case {id}: the answer has no Nummer")))?
            .to_string();
        Ok(CaseRef { id, number })
    }

    async fn change_handler(&self, case: &CaseRef, handler: &str) -> Result<(), EsdhError> {
        let body = json!({ "LogonId": self.handler(handler) });
        self.json("case handler", Method::PUT, &format!("api/sag/{}/behandler", case.id), Some(body)).await?;
        Ok(())
    }

    async fn file_document(&self, case: &CaseRef, document: &Document) -> Result<String, EsdhError> {
        let filed = self.json("document list", Method::GET, &format!("api/sag/{}/dokumenter", case.id), None).await?;
        if let Some(earlier) = filed.as_array().and_then(|docs| {
            docs.iter().find(|d| d.get("Beskrivelse").and_then(Value::as_str) == Some(&document.reference))
        }) {
            return id_of(earlier).ok_or_else(|| EsdhError::Unavailable("SBSYS documents: an entry has no Id".into()));
        }
        let parts = self.json("case parts", Method::GET, &format!("api/sag/{}/delforloeb", case.id), None).await?;
        let part = parts
            .as_array()
            .and_then(|parts| parts.first())
            .and_then(id_of)
            .ok_or_else(|| EsdhError::Refused(format!("SBSYS case {} has no delforløb to file on", case.number)))?;
        let metadata = json!({
            "Navn": document.title,
            "Beskrivelse": document.reference,
            "DokumentArt": { "Navn": document.document_type },
        });
        let url = self.url(&format!("api/dokument/journaliser/{part}"));
        let made = self
            .call("document filing", |http| {
                let mut form = reqwest::multipart::Form::new().part(
                    "json",
                    reqwest::multipart::Part::text(metadata.to_string())
                        .mime_str("application/json")
                        .map_err(|e| EsdhError::Refused(e.to_string()))?,
                );
                for file in &document.files {
                    let part = reqwest::multipart::Part::stream(reqwest::Body::from(file.content.clone()))
                        .file_name(file.name.clone())
                        .mime_str(&file.content_type)
                        .map_err(|e| EsdhError::Refused(format!("{}: {e}", file.name)))?;
                    form = form.part("files", part);
                }
                Ok(http.post(&url).multipart(form))
            })
            .await?;
        id_of(&made).ok_or_else(|| EsdhError::Unavailable("SBSYS document filing: the answer has no Id".into()))
    }

    async fn close_case(&self, case: &CaseRef) -> Result<(), EsdhError> {
        let body = json!({ "SagsStatus": "Afsluttet" });
        self.json("case closing", Method::PUT, &format!("api/sag/{}/status", case.id), Some(body)).await?;
        Ok(())
    }
}
