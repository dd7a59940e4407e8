//! The portal's pages, one handler each.

use agora_proto::hearing::v1 as hearing;
use agora_proto::identity::v1 as identity;
use agora_proto::response::v1 as response;
use axum::extract::{Form, Multipart, OriginalUri, Path, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::{Page, encode, error_page, local_path, see_other};
use crate::Gateway;
use crate::api::{self, HearingQuery};
use crate::i18n::{Lang, status_name};
use crate::problem::Problem;
use crate::session::{self, Caller};
use crate::time;

pub(super) async fn page<'a>(gw: &'a Gateway, caller: &'a Caller, uri: &Uri) -> Page<'a> {
    let user = match caller.is_logged_in() {
        true => gw
            .services
            .identity
            .clone()
            .who_am_i(caller.grpc(identity::WhoAmIRequest {}))
            .await
            .ok()
            .map(|u| u.into_inner()),
        false => None,
    };
    let here = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    Page { gw, caller, here, user }
}

// ---------------------------------------------------------------------------------------------
// The public pages

pub async fn front(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    query: Result<Query<HearingQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    let mut query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return error_page(&page, &Problem::invalid(rejection.body_text())),
    };
    // The front page opens on the hearings one can respond to now; "all" is a choice.
    if query.status.is_none() {
        query.status = Some("Active".into());
    }
    let request = match query.to_request() {
        Ok(request) => request,
        Err(problem) => return error_page(&page, &problem),
    };
    let (page_number, page_size) = (request.page, request.page_size);
    let list = match gw.services.hearing.clone().list_hearings(caller.grpc(request)).await {
        Ok(list) => list.into_inner(),
        Err(status) => return error_page(&page, &status.into()),
    };
    let subjects = api::named_items(&gw, &caller, false).await.unwrap_or_default();
    let cities = api::named_items(&gw, &caller, true).await.unwrap_or_default();
    let lang = caller.lang;
    let t = lang.t();
    let selected_status = query.status.clone().unwrap_or_default();
    let sort = query.sort.clone().unwrap_or_default();
    let statuses = ["Active", "AwaitingStartDate", "AwaitingConclusion", "Concluded"];
    let pages = ((list.total.max(0) as u32).div_ceil(page_size)).max(1);
    let body = html! {
        h1 { (t.open_hearings) }
        p.lead { (t.front_intro) }
        form.search method="get" action="/" role="search" {
            div.field.wide {
                label for="q" { (t.search_label) }
                input #q type="search" name="q" value=(query.q.clone().unwrap_or_default());
            }
            div.field {
                label for="status" { (t.status) }
                select #status name="status" {
                    option value="" selected[selected_status.is_empty()] { (t.any) }
                    @for s in statuses {
                        option value=(s) selected[selected_status == s] { (status_name(lang, s)) }
                    }
                }
            }
            div.field {
                label for="subject_area" { (t.subject_area) }
                select #subject_area name="subject_area" {
                    option value="" { (t.any) }
                    @for item in &subjects {
                        option value=(item.id) selected[query.subject_area.as_deref() == Some(item.id.as_str())] { (item.name) }
                    }
                }
            }
            div.field {
                label for="city_area" { (t.city_area) }
                select #city_area name="city_area" {
                    option value="" { (t.any) }
                    @for item in &cities {
                        option value=(item.id) selected[query.city_area.as_deref() == Some(item.id.as_str())] { (item.name) }
                    }
                }
            }
            div.field {
                label for="kle" { (t.kle) }
                input #kle type="text" name="kle" inputmode="decimal" value=(query.kle.clone().unwrap_or_default());
            }
            div.field {
                label for="sort" { (t.sort) }
                select #sort name="sort" {
                    @for (value, name) in [("deadline", t.sort_deadline), ("start_date", t.sort_start), ("title", t.sort_title), ("updated", t.sort_updated)] {
                        option value=(value) selected[sort == value] { (name) }
                    }
                }
            }
            div.field.actions { button type="submit" { (t.search) } }
        }
        p.count aria-live="polite" { (list.total) " " (t.hearings_found) }
        @if list.hearings.is_empty() {
            p { (t.no_hearings) }
        } @else {
            ul.hearings {
                @for h in &list.hearings {
                    li.card {
                        h2 { a href={ "/hoeringer/" (h.hearing_id) } { (h.title) } }
                        p.meta {
                            span.status { (status_name(lang, agora_proto::hearing_status_name(h.status))) }
                            @if h.internal { " · " (t.internal) }
                            @if !h.deadline.is_empty() { " · " (t.deadline) ": " (time::date(lang, &h.deadline)) }
                        }
                        @if !h.summary.is_empty() { p { (h.summary) } }
                    }
                }
            }
        }
        @if pages > 1 {
            nav.pages aria-label=(t.page) {
                @if page_number > 1 { a href=(with_page(&page.here, page_number - 1)) rel="prev" { (t.previous) } }
                span { (t.page) " " (page_number) " / " (pages) }
                @if page_number < pages { a href=(with_page(&page.here, page_number + 1)) rel="next" { (t.next) } }
            }
        }
    };
    page.render(t.open_hearings, body).into_response()
}

fn with_page(here: &str, number: u32) -> String {
    let (path, query) = here.split_once('?').unwrap_or((here, ""));
    let mut parts: Vec<String> =
        query.split('&').filter(|p| !p.is_empty() && !p.starts_with("page=")).map(str::to_string).collect();
    parts.push(format!("page={number}"));
    format!("{path}?{}", parts.join("&"))
}

/// Text with blank lines between paragraphs, as paragraphs.
pub(super) fn paragraphs(text: &str) -> Markup {
    html! {
        @for paragraph in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
            p {
                @for (i, line) in paragraph.lines().enumerate() {
                    @if i > 0 { br; }
                    (line)
                }
            }
        }
    }
}

pub async fn hearing(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(hearing_id): Path<String>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    let found = gw
        .services
        .hearing
        .clone()
        .get_hearing(caller.grpc(hearing::GetHearingRequest { hearing_id: hearing_id.clone() }))
        .await;
    let h = match found {
        Ok(h) => h.into_inner(),
        Err(status) => return error_page(&page, &status.into()),
    };
    let request = response::ListResponsesRequest {
        hearing_id: hearing_id.clone(),
        status: "Approved".into(),
        page: 1,
        page_size: 200,
    };
    let responses = gw
        .services
        .response
        .clone()
        .list_responses(caller.grpc(request))
        .await
        .map(|r| r.into_inner().responses)
        .unwrap_or_default();
    let lang = caller.lang;
    let t = lang.t();
    let field = |key: &str| h.fields.get(key).cloned().unwrap_or_default();
    let title = field("title");
    let status = agora_proto::hearing_status_name(h.status);
    let body = html! {
        article.hearing {
            p.meta { span.status { (status_name(lang, status)) } " · " (h.hearing_type_name) }
            h1 { (title) }
            @if !field("summary").is_empty() { p.lead { (field("summary")) } }
            dl.facts {
                @if !h.start_date.is_empty() { dt { (t.start_date) } dd { (time::date(lang, &h.start_date)) } }
                @if !h.deadline.is_empty() { dt { (t.deadline) } dd { (time::date(lang, &h.deadline)) } }
                @if !h.case_number.is_empty() { dt { (t.case_number) } dd { (h.case_number) } }
                @if let Some(contact) = h.contact.as_ref().filter(|c| !c.name.is_empty()) {
                    dt { (t.contact) }
                    dd { (contact.name) @if !contact.email.is_empty() { ", " a href={ "mailto:" (contact.email) } { (contact.email) } } }
                }
            }
            @if status == "Active" {
                p.call {
                    @if caller.is_logged_in() {
                        a.button href={ "/hoeringer/" (h.hearing_id) "/svar" } { (t.respond) }
                    } @else {
                        a.button href={ "/log-ind?tilbage=" (encode(&format!("/hoeringer/{}/svar", h.hearing_id))) } { (t.log_in_to_respond) }
                    }
                }
            }
            @if caller.is_logged_in() {
                form.follow method="post" action="/mine-abonnementer" {
                    input type="hidden" name="csrf" value=(caller.csrf_token(&gw));
                    input type="hidden" name="topic" value="hearing";
                    input type="hidden" name="value" value=(h.hearing_id);
                    input type="hidden" name="tilbage" value={ "/hoeringer/" (h.hearing_id) };
                    button.secondary type="submit" { (if lang == Lang::Da { "Følg høringen" } else { "Follow this hearing" }) }
                }
            }
            @if !caller.is_logged_in() && matches!(status, "AwaitingStartDate" | "Active" | "AwaitingConclusion") {
                form.follow method="post" action="/abonner" {
                    input type="hidden" name="csrf" value=(caller.csrf_token(&gw));
                    input type="hidden" name="hearing_id" value=(h.hearing_id);
                    div.field {
                        label for="follow-email" { (if lang == Lang::Da { "Følg høringen på e-mail" } else { "Follow this hearing by e-mail" }) }
                        input #follow-email type="email" name="email" autocomplete="email" required;
                    }
                    button.secondary type="submit" { (if lang == Lang::Da { "Følg" } else { "Follow" }) }
                }
            }
            section.text { (paragraphs(&field("body"))) }
            @if !h.files.is_empty() {
                section {
                    h2 { (t.documents) }
                    ul.files {
                        @for f in &h.files {
                            li { a href={ "/api/v1/hearings/" (h.hearing_id) "/files/" (f.file_id) } { (f.name) } " (" (kilobytes(f.size)) ")" }
                        }
                    }
                }
            }
            @if status == "Concluded" && !field("conclusion").is_empty() {
                section.conclusion {
                    h2 { (t.conclusion) }
                    (paragraphs(&field("conclusion")))
                }
            }
            section.responses {
                h2 { (t.responses) " (" (responses.len()) ")" }
                @if responses.is_empty() {
                    p { (t.no_responses) }
                } @else {
                    ol.responses {
                        @for r in &responses {
                            li.card {
                                h3 { (t.response_number) " " (r.number) }
                                @if !r.on_behalf_of.is_empty() { p.meta { (t.on_behalf_of) " " (r.on_behalf_of) } }
                                (paragraphs(&r.text))
                                @if !r.reply.is_empty() {
                                    div.reply { h4 { (t.reply) } (paragraphs(&r.reply)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page.render(&title, body).into_response()
}

fn kilobytes(size: u64) -> String {
    if size >= 1024 * 1024 {
        format!("{:.1} MB", size as f64 / (1024.0 * 1024.0))
    } else {
        format!("{} kB", size.div_ceil(1024))
    }
}

pub async fn not_found_page(uri: Uri) -> Response {
    // Without the gateway's state: a plain page in Danish and English.
    let body = html! {
        (maud::DOCTYPE)
        html lang="da" {
            head { meta charset="utf-8"; title { "Siden findes ikke" } link rel="stylesheet" href="/static/agora.css"; }
            body { main { h1 { (crate::i18n::DA.not_found) } p lang="en" { (crate::i18n::EN.not_found) } p { code { (uri.path()) } } p { a href="/" { "Agora" } } } }
        }
    };
    (StatusCode::NOT_FOUND, body).into_response()
}

pub async fn accessibility(State(gw): State<Gateway>, caller: Caller, OriginalUri(uri): OriginalUri) -> Response {
    let page = page(&gw, &caller, &uri).await;
    let t = caller.lang.t();
    page.render(t.accessibility, html! { h1 { (t.accessibility) } p { (t.accessibility_text) } }).into_response()
}

#[derive(Deserialize)]
pub struct Back {
    tilbage: Option<String>,
}

pub async fn language(Path(lang): Path<String>, State(gw): State<Gateway>, Query(back): Query<Back>) -> Response {
    let code = if lang == "en" { "en" } else { "da" };
    let cookie = session::set_cookie(&gw, session::LANG_COOKIE, code, 365 * 24 * 3600);
    see_other(&local_path(back.tilbage.as_deref()), vec![cookie])
}

// ---------------------------------------------------------------------------------------------
// Responding

pub async fn respond_form(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(hearing_id): Path<String>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if !caller.is_logged_in() {
        return Redirect::to(&format!("/log-ind?tilbage={}", encode(&page.here))).into_response();
    }
    render_form(&page, &hearing_id, &Draft::default(), None).await
}

/// What the respondent wrote, kept when the form comes back with an error.
#[derive(Default)]
struct Draft {
    text: String,
    organisation: String,
    idempotency_key: String,
}

async fn render_form(page: &Page<'_>, hearing_id: &str, draft: &Draft, error: Option<&Problem>) -> Response {
    let (gw, caller) = (page.gw, page.caller);
    let found = gw
        .services
        .hearing
        .clone()
        .get_hearing(caller.grpc(hearing::GetHearingRequest { hearing_id: hearing_id.into() }))
        .await;
    let h = match found {
        Ok(h) => h.into_inner(),
        Err(status) => return error_page(page, &status.into()),
    };
    let terms = gw
        .services
        .identity
        .clone()
        .current_terms(identity::CurrentTermsRequest {})
        .await
        .map(|t| t.into_inner())
        .unwrap_or_default();
    let t = caller.lang.t();
    let title = h.fields.get("title").cloned().unwrap_or_default();
    let key = if draft.idempotency_key.is_empty() { new_key() } else { draft.idempotency_key.clone() };
    let body = html! {
        p { a href={ "/hoeringer/" (hearing_id) } { "← " (t.back_to_hearing) } }
        h1 { (t.respond) ": " (title) }
        @if let Some(problem) = error {
            div.error #fejl role="alert" tabindex="-1" { p { (problem.detail) } }
        }
        form.respond method="post" action={ "/hoeringer/" (hearing_id) "/svar" } enctype="multipart/form-data" {
            input type="hidden" name="csrf" value=(caller.csrf_token(gw));
            input type="hidden" name="idempotency_key" value=(key);
            input type="hidden" name="terms_version" value=(terms.version);
            div.field.wide {
                label for="text" { (t.your_response) }
                textarea #text name="text" rows="12" required aria-describedby=[error.map(|_| "fejl")] { (draft.text) }
            }
            div.field.wide {
                label for="attachment" { (t.attachments) }
                p.hint #attachment-hint { (t.attachments_hint) }
                input #attachment type="file" name="attachment" multiple aria-describedby="attachment-hint";
            }
            div.field.wide {
                label for="organisation" { (t.organisation) }
                p.hint #organisation-hint { (t.organisation_hint) }
                input #organisation type="text" name="on_behalf_of_organisation" value=(draft.organisation) aria-describedby="organisation-hint";
            }
            @if page.user.as_ref().is_some_and(|u| u.capacity == "company") {
                div.field.wide.check {
                    input #on_behalf_of_company type="checkbox" name="on_behalf_of_company" value="true";
                    label for="on_behalf_of_company" { (if caller.lang == Lang::Da { "Jeg svarer på vegne af min virksomhed" } else { "I respond on behalf of my company" }) }
                }
            }
            @if !terms.text.is_empty() {
                details.terms { summary { (terms.version) } (paragraphs(&terms.text)) }
            }
            div.field.wide.check {
                input #accept_terms type="checkbox" name="accept_terms" value="yes" required;
                label for="accept_terms" { (t.accept_terms) }
            }
            div.field.actions { button type="submit" { (t.send_response) } }
        }
    };
    let status = error.map(Problem::status_code).unwrap_or(StatusCode::OK);
    (status, page.render(&format!("{}: {title}", t.respond), body)).into_response()
}

fn new_key() -> String {
    let mut bytes = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    format!("portal-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

pub async fn respond(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(hearing_id): Path<String>,
    multipart: Multipart,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    let form = match super::checked_multipart(&gw, &caller, multipart).await {
        Ok(form) => form,
        Err(problem) => return error_page(&page, &problem),
    };
    let draft = Draft {
        text: form.text("text"),
        organisation: form.text("on_behalf_of_organisation"),
        idempotency_key: form.text("idempotency_key"),
    };
    if form.text("accept_terms") != "yes" {
        let problem = Problem::invalid(match caller.lang {
            Lang::Da => "Du skal acceptere vilkårene for at sende dit høringssvar.",
            Lang::En => "You must accept the terms to send your response.",
        });
        return render_form(&page, &hearing_id, &draft, Some(&problem)).await;
    }
    if draft.idempotency_key.is_empty() {
        return error_page(&page, &Problem::invalid("the form is incomplete: reload it and try again"));
    }
    // The consent is the person's, recorded with the identity service before the response.
    let terms_version = form.text("terms_version");
    if !terms_version.is_empty() {
        let accept = identity::AcceptTermsRequest { version: terms_version.clone() };
        if let Err(status) = gw.services.identity.clone().accept_terms(caller.grpc(accept)).await {
            return render_form(&page, &hearing_id, &draft, Some(&status.into())).await;
        }
    }
    let submitted = api::submit_files(
        &gw,
        &caller,
        hearing_id.clone(),
        draft.idempotency_key.clone(),
        draft.text.clone(),
        terms_version,
        form.text("on_behalf_of_company") == "true",
        draft.organisation.clone(),
        false,
        form.files,
    )
    .await;
    let receipt = match submitted {
        Ok(receipt) => receipt,
        Err(problem) if problem.status == 401 => return error_page(&page, &problem),
        Err(problem) => return render_form(&page, &hearing_id, &draft, Some(&problem)).await,
    };
    let t = caller.lang.t();
    let body = html! {
        div.receipt role="status" {
            h1 { (t.receipt_title) }
            p { (t.receipt_text) }
            dl.facts {
                dt { (t.receipt_number) } dd #receipt-number { (receipt.number) }
                dt { (t.receipt_time) } dd { (time::instant(caller.lang, &receipt.accepted_at)) }
                dt { (t.receipt_hash) } dd { code #receipt-hash { (receipt.content_sha256) } }
            }
            p { a href={ "/hoeringer/" (hearing_id) } { (t.back_to_hearing) } }
        }
    };
    page.render(t.receipt_title, body).into_response()
}

pub async fn my_responses(State(gw): State<Gateway>, caller: Caller, OriginalUri(uri): OriginalUri) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if !caller.is_logged_in() {
        return Redirect::to("/log-ind?tilbage=/mine-svar").into_response();
    }
    let list = match gw.services.response.clone().my_responses(caller.grpc(response::MyResponsesRequest {})).await {
        Ok(list) => list.into_inner().responses,
        Err(status) => return error_page(&page, &status.into()),
    };
    let t = caller.lang.t();
    let body = html! {
        h1 { (t.my_responses) }
        @if list.is_empty() {
            p { (t.no_my_responses) }
        } @else {
            ol.responses {
                @for r in &list {
                    li.card {
                        h2 { a href={ "/hoeringer/" (r.hearing_id) } { (t.hearing) } " · " (t.response_number) " " (r.number) }
                        p.meta { (r.status) " · " (time::instant(caller.lang, &r.accepted_at)) }
                        (paragraphs(&r.text))
                        @if r.status == "Pending" || r.status == "Approved" {
                            div.actions {
                                a href={ "/mine-svar/" (r.response_id) "/ret" } { (if caller.lang == Lang::Da { "Ret svaret" } else { "Change it" }) }
                                form method="post" action={ "/mine-svar/" (r.response_id) "/traek-tilbage" } {
                                    input type="hidden" name="csrf" value=(caller.csrf_token(&gw));
                                    button.secondary type="submit" { (t.withdraw) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let da = caller.lang == Lang::Da;
    let body = html! {
        (body)
        section {
            h2 { (if da { "Mine data" } else { "My data" }) }
            ul.files {
                li { a href="/mine-abonnementer" { (if da { "Mine abonnementer" } else { "My subscriptions" }) } }
                li { a href="/api/v1/me/data" { (if da { "Hent en kopi af mine data (JSON)" } else { "Download a copy of my data (JSON)" }) } }
                li { a href="/slet-mig" { (if da { "Slet mine data" } else { "Erase my data" }) } }
            }
        }
    };
    page.render(t.my_responses, body).into_response()
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

pub async fn withdraw(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(response_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page, &problem);
    }
    match gw.services.response.clone().withdraw_response(caller.grpc(response::ResponseRef { response_id })).await {
        Ok(_) => see_other("/mine-svar", Vec::new()),
        Err(status) => error_page(&page, &status.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Logging in and out

pub async fn login(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Query(back): Query<Back>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    let methods = match gw.services.identity.clone().list_login_methods(identity::ListLoginMethodsRequest {}).await {
        Ok(methods) => methods.into_inner(),
        Err(status) => return error_page(&page, &status.into()),
    };
    let back = local_path(back.tilbage.as_deref());
    let t = caller.lang.t();
    let body = html! {
        h1 { (t.login_title) }
        @if !methods.methods.is_empty() {
            ul.logins {
                @for m in &methods.methods {
                    li { a.button href={ "/log-ind/med/" (m.provider) "?tilbage=" (encode(&back)) } { (t.login_with) " " (m.display_name) } }
                }
            }
        }
        @if methods.dev_login {
            section.dev {
                h2 { (t.dev_login) }
                p.hint { (t.dev_login_note) }
                form method="post" action="/log-ind/udvikler" {
                    input type="hidden" name="csrf" value=(caller.csrf_token(&gw));
                    input type="hidden" name="tilbage" value=(back);
                    fieldset {
                        legend { (t.dev_login) }
                        @for (i, user) in methods.demo_users.iter().enumerate() {
                            div.check {
                                input type="radio" name="handle" id={ "user-" (user.handle) } value=(user.handle) checked[i == 0];
                                label for={ "user-" (user.handle) } { (user.name) " (" (user.capacity) ")" }
                            }
                        }
                    }
                    div.field.actions { button type="submit" { (t.log_in) } }
                }
            }
        }
    };
    page.render(t.login_title, body).into_response()
}

#[derive(Deserialize)]
pub struct DevLoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    handle: String,
    tilbage: Option<String>,
}

pub async fn dev_login(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Form(form): Form<DevLoginForm>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page, &problem);
    }
    match gw.services.identity.clone().dev_login(identity::DevLoginRequest { handle: form.handle }).await {
        Ok(session) => {
            see_other(&local_path(form.tilbage.as_deref()), session::session_cookies(&gw, &session.into_inner()))
        }
        Err(status) => error_page(&page, &status.into()),
    }
}

/// The cookie that keeps where to come back to across the provider's pages.
const BACK_COOKIE: &str = "agora_tilbage";

/// A path that can stand in a cookie as it is; anything else comes back to the front page.
fn cookie_safe_path(path: &str) -> String {
    let path = local_path(Some(path));
    if path.chars().all(|c| c.is_ascii_alphanumeric() || "/-_.~".contains(c)) { path } else { "/".into() }
}

pub async fn begin_login(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(provider): Path<String>,
    Query(back): Query<Back>,
) -> Response {
    match gw.services.identity.clone().begin_login(identity::BeginLoginRequest { provider }).await {
        Ok(begun) => {
            let back = cookie_safe_path(back.tilbage.as_deref().unwrap_or("/"));
            let mut response = Redirect::to(&begun.into_inner().authorization_url).into_response();
            response.headers_mut().append(header::SET_COOKIE, session::set_cookie(&gw, BACK_COOKIE, &back, 600));
            response
        }
        Err(status) => error_page(&page(&gw, &caller, &uri).await, &status.into()),
    }
}

#[derive(Deserialize)]
pub struct Callback {
    #[serde(default)]
    state: String,
    #[serde(default)]
    code: String,
}

/// Where the login provider sends the browser back (the providers' `redirect_uri`).
pub async fn login_callback(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    headers: axum::http::HeaderMap,
    Query(callback): Query<Callback>,
) -> Response {
    let request = identity::CompleteLoginRequest { state: callback.state, code: callback.code };
    match gw.services.identity.clone().complete_login(request).await {
        Ok(session) => {
            let back = cookie_safe_path(session::cookie(&headers, BACK_COOKIE).unwrap_or("/"));
            let mut cookies = session::session_cookies(&gw, &session.into_inner());
            cookies.push(session::set_cookie(&gw, BACK_COOKIE, "", 0));
            see_other(&back, cookies)
        }
        Err(status) => {
            // Not the usual way to the login page: coming back here after it would fail again.
            let problem = Problem::new("forbidden", format!("the login did not succeed: {}", status.message()));
            error_page(&page(&gw, &caller, &uri).await, &problem)
        }
    }
}

pub async fn logout(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    headers: axum::http::HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page(&gw, &caller, &uri).await, &problem);
    }
    if let Some(refresh_token) = session::cookie(&headers, session::REFRESH_COOKIE) {
        let request = identity::LogoutRequest { refresh_token: refresh_token.to_string() };
        if let Err(status) = gw.services.identity.clone().logout(request).await {
            tracing::warn!(code = ?status.code(), "logout: the session could not be revoked");
        }
    }
    see_other("/", session::clear_session_cookies(&gw))
}

// ---------------------------------------------------------------------------------------------
// The API reference, read from the OpenAPI document

pub async fn api_reference(State(gw): State<Gateway>, caller: Caller, OriginalUri(uri): OriginalUri) -> Response {
    let page = page(&gw, &caller, &uri).await;
    let (_, openapi) = api::router();
    let document = serde_json::to_value(&openapi).unwrap_or_default();
    let empty = serde_json::Map::new();
    let paths = document["paths"].as_object().unwrap_or(&empty);
    let body = html! {
        h1 { "Agora API v1" }
        p { (document["info"]["description"].as_str().unwrap_or_default()) }
        p { "OpenAPI 3.1: " a href="/api/v1/openapi.json" { "/api/v1/openapi.json" } }
        @for (path, item) in paths {
            @for method in ["get", "post", "patch", "put", "delete"] {
                @if let Some(operation) = item.get(method) {
                    section.operation {
                        h2 { code { (method.to_uppercase()) " " (path) } }
                        p { (operation["summary"].as_str().or(operation["description"].as_str()).unwrap_or_default()) }
                        @if let Some(parameters) = operation["parameters"].as_array() {
                            ul {
                                @for p in parameters {
                                    li { code { (p["name"].as_str().unwrap_or_default()) } " (" (p["in"].as_str().unwrap_or_default()) ") "
                                        (p["description"].as_str().unwrap_or_default()) }
                                }
                            }
                        }
                        @if let Some(responses) = operation["responses"].as_object() {
                            p.meta { @for (code, _) in responses { span.code { (code) } " " } }
                        }
                    }
                }
            }
        }
    };
    page.render("API", body).into_response()
}

#[derive(Deserialize)]
pub struct EmailSubscription {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    hearing_id: String,
    #[serde(default)]
    email: String,
}

/// Anyone follows a hearing by e-mail: the address is written to first, and the subscription
/// holds once the link in that message is followed (double opt-in).
pub async fn subscribe_by_email(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Form(form): Form<EmailSubscription>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page, &problem);
    }
    let request = agora_proto::notification::v1::SubscribeRequest {
        topic: "hearing".into(),
        value: form.hearing_id.clone(),
        email: form.email.trim().to_string(),
        language: caller.lang.code().into(),
    };
    // Anonymous on purpose: the address is the subscriber, not an account.
    if let Err(status) = gw.services.notification.clone().subscribe(tonic::Request::new(request)).await {
        return error_page(&page, &status.into());
    }
    let da = caller.lang == Lang::Da;
    let title = if da { "Tjek din e-mail" } else { "Check your e-mail" };
    let body = html! {
        h1 { (title) }
        p role="status" {
            (if da { "Vi har sendt et link til " } else { "We have sent a link to " }) strong { (form.email.trim()) }
            (if da { ". Følg det for at bekræfte, at du vil følge høringen." } else { ". Follow it to confirm that you want to follow the hearing." })
        }
        p { a href={ "/hoeringer/" (form.hearing_id) } { (caller.lang.t().back_to_hearing) } }
    };
    page.render(title, body).into_response()
}
