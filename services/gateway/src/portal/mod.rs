//! The web portal: server-rendered pages that work without JavaScript, Danish first. Every
//! value from outside is escaped by the templates (maud escapes unless told not to, and it is
//! never told). Forms carry a CSRF token; the respond form also carries an idempotency key made
//! when the form is shown, so a double click or a resubmitted form gets the first receipt.

mod admin;
mod caseworker;
mod pages;
mod respondent;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};

use crate::Gateway;
use crate::i18n::Lang;
use crate::problem::Problem;
use crate::session::Caller;

pub use pages::not_found_page;

pub fn router() -> Router<Gateway> {
    Router::new()
        .route("/", get(pages::front))
        .route("/hoeringer/{hearing_id}", get(pages::hearing))
        .route("/hoeringer/{hearing_id}/svar", get(pages::respond_form).post(pages::respond))
        .route("/mine-svar", get(pages::my_responses))
        .route("/mine-svar/{response_id}/traek-tilbage", post(pages::withdraw))
        .route("/mine-svar/{response_id}/ret", get(respondent::edit_form).post(respondent::edit))
        .route("/mine-abonnementer", get(respondent::subscriptions).post(respondent::subscribe))
        .route("/abonner", post(pages::subscribe_by_email))
        .route("/mine-abonnementer/{subscription_id}/stop", post(respondent::end_subscription))
        .route("/slet-mig", get(respondent::erasure_form).post(respondent::erase))
        .route("/sagsbehandler", get(caseworker::dashboard))
        .route("/sagsbehandler/hoeringer", post(caseworker::create))
        .route("/sagsbehandler/hoeringer/{hearing_id}", get(caseworker::workspace).post(caseworker::update))
        .route("/sagsbehandler/hoeringer/{hearing_id}/filer", post(caseworker::add_file))
        .route("/sagsbehandler/hoeringer/{hearing_id}/inviter", post(caseworker::invite))
        .route("/sagsbehandler/hoeringer/{hearing_id}/inviter-csv", post(caseworker::import_invitees))
        .route("/sagsbehandler/hoeringer/{hearing_id}/offentliggoer", post(caseworker::publish))
        .route("/sagsbehandler/hoeringer/{hearing_id}/konkluder", post(caseworker::conclude))
        .route("/sagsbehandler/hoeringer/{hearing_id}/historik", get(caseworker::audit_trail))
        .route("/sagsbehandler/hoeringer/{hearing_id}/journaliser-igen", post(caseworker::retry_journalization))
        .route(
            "/sagsbehandler/hoeringer/{hearing_id}/beskeder",
            get(caseworker::messages).post(caseworker::save_message),
        )
        .route("/sagsbehandler/svar/{response_id}/{action}", post(caseworker::moderate))
        .route("/administration", get(admin::overview))
        .route("/administration/emner", post(admin::subject_area))
        .route("/administration/omraader", post(admin::city_area))
        .route("/administration/hoeringstyper", post(admin::hearing_type))
        .route("/administration/hoeringstyper/{id}", get(admin::hearing_type_page).post(admin::save_hearing_type))
        .route("/administration/kle", post(admin::kle))
        .route("/administration/roller", post(admin::role))
        .route("/administration/vilkaar", post(admin::terms))
        .route("/administration/skabeloner", post(admin::template))
        .route("/log-ind", get(pages::login))
        .route("/log-ind/udvikler", post(pages::dev_login))
        .route("/log-ind/callback", get(pages::login_callback))
        .route("/log-ind/med/{provider}", get(pages::begin_login))
        .route("/log-ud", post(pages::logout))
        .route("/sprog/{lang}", get(pages::language))
        .route("/tilgaengelighed", get(pages::accessibility))
        .route("/api", get(pages::api_reference))
        .route("/static/agora.css", get(stylesheet))
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")],
        include_str!("agora.css"),
    )
        .into_response()
}

/// The frame every page shares: header with navigation and language, main, footer.
pub struct Page<'a> {
    pub gw: &'a Gateway,
    pub caller: &'a Caller,
    /// The path of this page, for the language switch to come back to.
    pub here: String,
    /// The logged-in user as the identity service knows them.
    pub user: Option<agora_proto::identity::v1::User>,
}

impl Page<'_> {
    pub fn render(&self, title: &str, body: Markup) -> Markup {
        let lang = self.caller.lang;
        let t = lang.t();
        let other = lang.other();
        html! {
            (DOCTYPE)
            html lang=(lang.code()) {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · " (self.gw.settings.portal_name) }
                    link rel="stylesheet" href="/static/agora.css";
                }
                body {
                    a.skip href="#indhold" { (t.skip_to_content) }
                    header.site {
                        div.bar {
                            a.brand href="/" { (self.gw.settings.portal_name) }
                            nav aria-label=(if lang == Lang::Da { "Hovedmenu" } else { "Main menu" }) {
                                ul {
                                    li { a href="/" { (t.open_hearings) } }
                                    @if self.caller.is_logged_in() {
                                        li { a href="/mine-svar" { (t.my_responses) } }
                                    }
                                    @if self.user.as_ref().is_some_and(|u| u.capacity == "employee") {
                                        li { a href="/sagsbehandler" { (if lang == Lang::Da { "Sagsbehandling" } else { "Casework" }) } }
                                    }
                                    @if self.user.as_ref().is_some_and(|u| u.roles.iter().any(|r| r == "administrator")) {
                                        li { a href="/administration" { "Administration" } }
                                    }
                                    li {
                                        a href={ "/sprog/" (other.code()) "?tilbage=" (encode(&self.here)) }
                                            lang=(other.code()) hreflang=(other.code()) { (other.t().language_name) }
                                    }
                                    @if self.caller.is_logged_in() {
                                        li {
                                            form method="post" action="/log-ud" {
                                                input type="hidden" name="csrf" value=(self.caller.csrf_token(self.gw));
                                                button.link type="submit" { (t.log_out) }
                                            }
                                        }
                                    } @else {
                                        li { a href={ "/log-ind?tilbage=" (encode(&self.here)) } { (t.log_in) } }
                                    }
                                }
                            }
                        }
                        @if let Some(user) = &self.user {
                            p.who { (t.logged_in_as) " " strong { (user.name) } }
                        }
                    }
                    main #indhold tabindex="-1" { (body) }
                    footer.site {
                        ul {
                            li { a href="/tilgaengelighed" { (t.accessibility) } }
                            li { a href="/api" { (t.api) } }
                        }
                    }
                }
            }
        }
    }
}

/// A local path to come back to; anything else (another site, `//host`) goes to the front page.
pub fn local_path(candidate: Option<&str>) -> String {
    match candidate {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => path.to_string(),
        _ => "/".to_string(),
    }
}

/// Percent-encodes a path for a query string.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A portal form sent as multipart (it carries files), read and checked for its CSRF token.
pub async fn checked_multipart(
    gw: &Gateway,
    caller: &Caller,
    multipart: axum::extract::Multipart,
) -> Result<crate::api::FormParts, Problem> {
    let form = crate::api::read_multipart(multipart).await?;
    caller.check_csrf(gw, &form.text("csrf"))?;
    Ok(form)
}

/// A page that says what went wrong, in the caller's language, with the right status.
pub fn error_page(page: &Page<'_>, problem: &Problem) -> Response {
    let t = page.caller.lang.t();
    let status = problem.status_code();
    if status == StatusCode::UNAUTHORIZED {
        return Redirect::to(&format!("/log-ind?tilbage={}", encode(&page.here))).into_response();
    }
    let body = html! {
        h1 { (t.error_title) }
        p.error role="alert" { (problem.detail) }
        p { a href="/" { (t.open_hearings) } }
    };
    (status, page.render(t.error_title, body)).into_response()
}

pub fn see_other(location: &str, cookies: Vec<HeaderValue>) -> Response {
    // Never a panic on a location that cannot be a header (a crafted `tilbage`): the front page.
    let location = HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/"));
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(local_path(Some("/hoeringer/1")), "/hoeringer/1");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn a_location_that_cannot_be_a_header_goes_to_the_front_page() {
        let response = see_other("/ok\r\nSet-Cookie: x=1", Vec::new());
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()), Some("/"));
    }

    #[test]
    fn a_path_is_encoded_for_a_query_string() {
        assert_eq!(encode("/hoeringer/1?side=2&x=ø"), "/hoeringer/1%3Fside%3D2%26x%3D%C3%B8");
    }
}
