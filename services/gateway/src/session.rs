//! Who is calling. API clients send `Authorization: Bearer <access token>`; browsers hold the
//! identity service's tokens in HttpOnly cookies, refreshed here when the access token runs
//! out. The gateway never decides what a caller may do: it passes the token on and the
//! service decides. What it does decide is that a cookie alone never changes anything: every
//! state-changing browser request carries a CSRF token (signed double submit: an HMAC of a
//! random per-browser cookie under the gateway's key).

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

use crate::Gateway;
use crate::i18n::Lang;
use crate::problem::Problem;

pub const ACCESS_COOKIE: &str = "agora_session";
pub const REFRESH_COOKIE: &str = "agora_refresh";
pub const CSRF_COOKIE: &str = "agora_csrf";
pub const LANG_COOKIE: &str = "agora_lang";
/// The header an API client using the browser's cookies sends the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The key CSRF tokens are signed with; every replica of the gateway must share it.
pub struct SessionKey {
    key: hmac::Key,
}

impl SessionKey {
    /// Derived from a deployment secret, so replicas agree without another setting.
    pub fn derived(secret: &[u8]) -> Self {
        let salt = hmac::Key::new(hmac::HMAC_SHA256, b"agora gateway csrf v1");
        let key = hmac::sign(&salt, secret);
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, key.as_ref()) }
    }

    pub fn csrf_token(&self, browser: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, browser.as_bytes()).as_ref())
    }

    pub fn csrf_ok(&self, browser: &str, token: &str) -> bool {
        match URL_SAFE_NO_PAD.decode(token.trim()) {
            Ok(tag) => !browser.is_empty() && hmac::verify(&self.key, browser.as_bytes(), &tag).is_ok(),
            Err(_) => false,
        }
    }
}

/// The cookies of a request, by name (the first of each name).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// What the session layer worked out before the handler runs.
#[derive(Clone, Debug, Default)]
struct BrowserState {
    access: Option<String>,
    csrf_cookie: String,
}

/// The caller of one request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub token: Option<String>,
    /// Whether the token came from the browser's cookie (and so needs CSRF protection).
    pub by_cookie: bool,
    pub lang: Lang,
    csrf_cookie: String,
}

impl Caller {
    /// The same browser without its session (after logging out or erasure, for the page that says so).
    pub fn anonymous(&self) -> Caller {
        Caller { token: None, by_cookie: false, lang: self.lang, csrf_cookie: self.csrf_cookie.clone() }
    }

    pub fn is_logged_in(&self) -> bool {
        self.token.is_some()
    }

    /// A gRPC request carrying the caller's token, if any.
    pub fn grpc<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    /// The token a form must carry back.
    pub fn csrf_token(&self, gateway: &Gateway) -> String {
        gateway.sessions.csrf_token(&self.csrf_cookie)
    }

    pub fn check_csrf(&self, gateway: &Gateway, token: &str) -> Result<(), Problem> {
        if gateway.sessions.csrf_ok(&self.csrf_cookie, token) {
            Ok(())
        } else {
            Err(Problem::new("csrf", "the form is out of date or did not come from this site: reload it and try again"))
        }
    }
}

impl FromRequestParts<Gateway> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &Gateway) -> Result<Self, Self::Rejection> {
        let state = parts.extensions.get::<BrowserState>().cloned().unwrap_or_default();
        let lang = Lang::from_cookie(cookie(&parts.headers, LANG_COOKIE));
        match bearer(&parts.headers)? {
            Some(token) => Ok(Caller { token: Some(token), by_cookie: false, lang, csrf_cookie: state.csrf_cookie }),
            None => Ok(Caller {
                by_cookie: state.access.is_some(),
                token: state.access,
                lang,
                csrf_cookie: state.csrf_cookie,
            }),
        }
    }
}

fn bearer(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let value = value.to_str().map_err(|_| Problem::new("unauthenticated", "the Authorization header is not text"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(Some(token.trim().to_string()))
        }
        _ => Err(Problem::new("unauthenticated", "the Authorization header must be 'Bearer <access token>'")),
    }
}

/// Seconds since the epoch at which a JWT expires, read without checking it: the gateway only
/// uses it to refresh in time; the services check every token themselves.
fn expires_at(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims.get("exp")?.as_i64()
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // SystemRandom only fails when the OS has no randomness; a fixed value would be worse.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        tracing::error!("no randomness from the operating system for a CSRF cookie");
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn set_cookie(gateway: &Gateway, name: &str, value: &str, max_age_seconds: i64) -> HeaderValue {
    let secure = if gateway.settings.secure_cookies { "; Secure" } else { "" };
    let text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_seconds}{secure}");
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("agora_invalid=1"))
}

/// The Set-Cookie headers that start (or renew) a browser session.
pub fn session_cookies(gateway: &Gateway, session: &agora_proto::identity::v1::Session) -> Vec<HeaderValue> {
    let now = chrono::Utc::now();
    let until = |at: &str| {
        chrono::DateTime::parse_from_rfc3339(at)
            .map(|t| (t.with_timezone(&chrono::Utc) - now).num_seconds().max(0))
            .unwrap_or(900)
    };
    let refresh_age = until(&session.refresh_expires_at);
    vec![
        // The access cookie lives as long as the refresh token, so that an expired access token
        // is noticed and renewed instead of the browser forgetting the session.
        set_cookie(gateway, ACCESS_COOKIE, &session.access_token, refresh_age),
        set_cookie(gateway, REFRESH_COOKIE, &session.refresh_token, refresh_age),
    ]
}

pub fn clear_session_cookies(gateway: &Gateway) -> Vec<HeaderValue> {
    vec![set_cookie(gateway, ACCESS_COOKIE, "", 0), set_cookie(gateway, REFRESH_COOKIE, "", 0)]
}

/// Gives every browser its CSRF cookie, renews an expired access token from the refresh
/// cookie, and refuses cookie-authenticated API writes without the CSRF header.
pub async fn refresh_and_protect(State(gateway): State<Gateway>, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let mut set_cookies = Vec::new();
    let csrf_cookie = match cookie(headers, CSRF_COOKIE) {
        Some(value) => value.to_string(),
        None => {
            let value = random_token();
            // A year: it is not a secret on its own, and forms keep working across visits.
            set_cookies.push(set_cookie(&gateway, CSRF_COOKIE, &value, 365 * 24 * 3600));
            value
        }
    };
    let mut access = cookie(headers, ACCESS_COOKIE).map(str::to_string);
    let refresh = cookie(headers, REFRESH_COOKIE).map(str::to_string);
    let stale = access.as_deref().map(|t| expires_at(t).is_none_or(|exp| exp - 30 < chrono::Utc::now().timestamp()));
    if stale == Some(true) || (access.is_none() && refresh.is_some()) {
        access = None;
        match refresh {
            Some(refresh_token) => {
                let mut identity = gateway.services.identity.clone();
                let renewed = identity.refresh(agora_proto::identity::v1::RefreshRequest { refresh_token }).await;
                match renewed {
                    Ok(session) => {
                        let session = session.into_inner();
                        set_cookies.extend(session_cookies(&gateway, &session));
                        access = Some(session.access_token);
                    }
                    Err(status) => {
                        tracing::info!(code = ?status.code(), "a browser session could not be renewed; it ends");
                        set_cookies.extend(clear_session_cookies(&gateway));
                    }
                }
            }
            None => set_cookies.extend(clear_session_cookies(&gateway)),
        }
    }

    let unsafe_method = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let api_by_cookie = request.uri().path().starts_with("/api/")
        && !request.headers().contains_key(header::AUTHORIZATION)
        && access.is_some();
    if unsafe_method && api_by_cookie {
        let token = request.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if !gateway.sessions.csrf_ok(&csrf_cookie, token) {
            let mut refused =
                Problem::new("csrf", format!("a request with the session cookie needs the {CSRF_HEADER} header"))
                    .into_response();
            append(&mut refused, set_cookies);
            return refused;
        }
    }

    request.extensions_mut().insert(BrowserState { access, csrf_cookie });
    let mut response = next.run(request).await;
    append(&mut response, set_cookies);
    response
}

fn append(response: &mut Response, cookies: Vec<HeaderValue>) {
    for value in cookies {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csrf_token_holds_only_for_the_browser_it_was_made_for() {
        let key = SessionKey::derived(b"a deployment secret of some length");
        let token = key.csrf_token("browser-a");
        assert!(key.csrf_ok("browser-a", &token));
        assert!(!key.csrf_ok("browser-b", &token));
        assert!(!key.csrf_ok("browser-a", "forged"));
        assert!(!key.csrf_ok("", &key.csrf_token("")), "no cookie, no token");
        let other = SessionKey::derived(b"another deployment's secret");
        assert!(!other.csrf_ok("browser-a", &token), "another key does not accept it");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; agora_session=tok.en.x; agora_lang=en"));
        assert_eq!(cookie(&headers, ACCESS_COOKIE), Some("tok.en.x"));
        assert_eq!(cookie(&headers, LANG_COOKIE), Some("en"));
        assert_eq!(cookie(&headers, REFRESH_COOKIE), None);
    }

    #[test]
    fn the_expiry_is_read_from_the_tokens_claims() {
        let claims = URL_SAFE_NO_PAD.encode(br#"{"sub":"u","exp":1700000000}"#);
        assert_eq!(expires_at(&format!("h.{claims}.s")), Some(1_700_000_000));
        assert_eq!(expires_at("not a token"), None);
    }

    #[test]
    fn a_malformed_authorization_header_is_refused_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwdw=="));
        let problem = bearer(&headers).expect_err("refused");
        assert!(problem.detail.contains("Bearer"), "{}", problem.detail);
    }
}
