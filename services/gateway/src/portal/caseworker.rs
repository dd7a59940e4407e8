//! The caseworker's pages: the dashboard, creating a hearing from a type, its workspace (fields
//! with the service's objections beside each, documents, invitations with the CSV report,
//! publishing, moderating, concluding, exports, journalization) and its audit trail. Each
//! command is a form that posts and comes back to the workspace (post, redirect, get), or to
//! the workspace with the refusal shown when the service says no.

use agora_proto::hearing::v1 as hearing;
use agora_proto::notification::v1 as notification;
use agora_proto::records::v1 as records;
use agora_proto::response::v1 as response;
use axum::extract::{Form, Multipart, OriginalUri, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::pages::{CsrfForm, page, paragraphs};
use super::{Page, error_page, see_other};
use crate::Gateway;
use crate::api;
use crate::i18n::{Lang, status_name};
use crate::problem::Problem;
use crate::session::Caller;
use crate::time;

/// A caseworker page's words: Danish, or English.
fn tr(lang: Lang, da: &'static str, en: &'static str) -> &'static str {
    if lang == Lang::Da { da } else { en }
}

fn workspace_path(hearing_id: &str) -> String {
    format!("/sagsbehandler/hoeringer/{hearing_id}")
}

pub async fn dashboard(State(gw): State<Gateway>, caller: Caller, OriginalUri(uri): OriginalUri) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if !caller.is_logged_in() {
        return Redirect::to("/log-ind?tilbage=/sagsbehandler").into_response();
    }
    let mine = match gw.services.hearing.clone().owner_dashboard(caller.grpc(hearing::OwnerDashboardRequest {})).await {
        Ok(list) => list.into_inner().hearings,
        Err(status) => return error_page(&page, &status.into()),
    };
    let types = gw
        .services
        .reference
        .clone()
        .list_hearing_types(caller.grpc(hearing::ListReferenceRequest::default()))
        .await
        .map(|t| t.into_inner().hearing_types)
        .unwrap_or_default();
    let lang = caller.lang;
    let title = tr(lang, "Mine høringer", "My hearings");
    let body = html! {
        h1 { (title) }
        section.card {
            h2 { (tr(lang, "Opret en høring", "Create a hearing")) }
            form method="post" action="/sagsbehandler/hoeringer" {
                input type="hidden" name="csrf" value=(caller.csrf_token(&gw));
                div.field {
                    label for="hearing_type_id" { (tr(lang, "Høringstype", "Hearing type")) }
                    select #hearing_type_id name="hearing_type_id" required {
                        @for t in types.iter().filter(|t| !t.retired) {
                            option value=(t.id) { (t.name) @if t.internal { " (" (lang.t().internal) ")" } }
                        }
                    }
                }
                div.field.actions { button type="submit" { (tr(lang, "Opret høring", "Create hearing")) } }
            }
        }
        @if mine.is_empty() {
            p { (tr(lang, "Du ejer eller behandler ingen høringer endnu.", "You own or review no hearings yet.")) }
        } @else {
            table.list {
                caption { (title) }
                thead { tr { th scope="col" { (tr(lang, "Titel", "Title")) } th scope="col" { (lang.t().status) } th scope="col" { (lang.t().deadline) } } }
                tbody {
                    @for h in &mine {
                        tr {
                            td { a href=(workspace_path(&h.hearing_id)) { @if h.title.is_empty() { (tr(lang, "(uden titel)", "(untitled)")) } @else { (h.title) } } }
                            td { (status_name(lang, agora_proto::hearing_status_name(h.status))) }
                            td { @if !h.deadline.is_empty() { (time::date(lang, &h.deadline)) } }
                        }
                    }
                }
            }
        }
    };
    page.render(title, body).into_response()
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    hearing_type_id: String,
}

pub async fn create(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Form(form): Form<CreateForm>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page, &problem);
    }
    let request = hearing::CreateHearingRequest { hearing_type_id: form.hearing_type_id };
    match gw.services.hearing.clone().create_hearing(caller.grpc(request)).await {
        Ok(created) => see_other(&workspace_path(&created.into_inner().hearing_id), Vec::new()),
        Err(status) => error_page(&page, &status.into()),
    }
}

/// What the workspace shows besides the hearing: a refusal, or the report of a CSV import.
#[derive(Default)]
struct Outcome {
    problem: Option<Problem>,
    report: Option<Markup>,
}

pub async fn workspace(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(hearing_id): Path<String>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if !caller.is_logged_in() {
        return Redirect::to(&format!("/log-ind?tilbage={}", super::encode(&page.here))).into_response();
    }
    render_workspace(&page, &hearing_id, Outcome::default()).await
}

async fn render_workspace(page: &Page<'_>, hearing_id: &str, outcome: Outcome) -> Response {
    let (gw, caller) = (page.gw, page.caller);
    let lang = caller.lang;
    let request = hearing::GetHearingRequest { hearing_id: hearing_id.into() };
    let h = match gw.services.hearing.clone().get_hearing(caller.grpc(request)).await {
        Ok(h) => h.into_inner(),
        Err(status) => return error_page(page, &status.into()),
    };
    let status = agora_proto::hearing_status_name(h.status);
    let responses = gw
        .services
        .response
        .clone()
        .list_responses(caller.grpc(response::ListResponsesRequest {
            hearing_id: hearing_id.into(),
            status: String::new(),
            page: 1,
            page_size: 200,
        }))
        .await
        .map(|r| r.into_inner().responses)
        .unwrap_or_default();
    let journal = gw
        .services
        .records
        .clone()
        .get_journalization(
            caller.grpc(records::JournalizationRequest { hearing_id: hearing_id.into(), only_open_steps: true }),
        )
        .await
        .ok()
        .map(|j| j.into_inner());
    let subjects = api::named_items(gw, caller, false).await.unwrap_or_default();
    let cities = api::named_items(gw, caller, true).await.unwrap_or_default();
    let csrf = caller.csrf_token(gw);
    let field = |key: &str| h.fields.get(key).cloned().unwrap_or_default();
    let violation = |key: &str| -> Option<String> {
        outcome.problem.as_ref().and_then(|p| p.violations.iter().find(|v| v.field == key).map(|v| v.message.clone()))
    };
    let editable = matches!(status, "Created" | "Draft" | "AwaitingStartDate" | "Active");
    let title =
        if field("title").is_empty() { tr(lang, "Ny høring", "New hearing").to_string() } else { field("title") };
    let here = workspace_path(hearing_id);
    let body = html! {
        p { a href="/sagsbehandler" { "← " (tr(lang, "Mine høringer", "My hearings")) } }
        h1 { (title) }
        p.meta {
            span.status #hearing-status { (status_name(lang, status)) } " · " (h.hearing_type_name)
            @if !h.case_number.is_empty() { " · " (lang.t().case_number) " " (h.case_number) }
            " · " a href={ "/hoeringer/" (hearing_id) } { (tr(lang, "Se den offentlige side", "See the public page")) }
            " · " a href={ (here) "/historik" } { (tr(lang, "Historik", "Audit trail")) }
            " · " a href={ (here) "/beskeder" } { (tr(lang, "Beskeder", "Messages")) }
        }
        @if let Some(problem) = &outcome.problem {
            div.error #fejl role="alert" tabindex="-1" {
                p { (problem.detail) }
                @if !problem.violations.is_empty() {
                    ul { @for v in &problem.violations { li { a href={ "#" (v.field) } { (v.message) } } } }
                }
            }
        }
        @if let Some(report) = &outcome.report { (report) }

        @if editable {
            section {
                h2 { (tr(lang, "Oplysninger", "Details")) }
                form.hearing method="post" action=(here) {
                    input type="hidden" name="csrf" value=(csrf);
                    @for rule in h.field_rules.iter().filter(|r| r.kind == "text" && r.key != "conclusion") {
                        (text_field(&rule.key, &rule.label, &field(&rule.key), rule.key == "summary" || rule.key == "body", violation(&rule.key)))
                    }
                    div.field {
                        label for="subject_area_id" { (lang.t().subject_area) }
                        @if let Some(message) = violation("subject_area_id") { p.field-error #subject_area_id-error { (message) } }
                        select #subject_area_id name="subject_area_id" {
                            option value="" { "—" }
                            @for item in &subjects { option value=(item.id) selected[item.id == h.subject_area_id] { (item.name) } }
                        }
                    }
                    div.field {
                        label for="city_area_id" { (lang.t().city_area) }
                        select #city_area_id name="city_area_id" {
                            option value="" { "—" }
                            @for item in &cities { option value=(item.id) selected[item.id == h.city_area_id] { (item.name) } }
                        }
                    }
                    (text_field("kle_number", lang.t().kle, &h.kle_number, false, violation("kle_number")))
                    (date_field("start_date", lang.t().start_date, &h.start_date, violation("start_date")))
                    (date_field("deadline", lang.t().deadline, &h.deadline, violation("deadline")))
                    fieldset {
                        legend { (lang.t().contact) }
                        @if let Some(message) = violation("contact") { p.field-error #contact-error { (message) } }
                        @let contact = h.contact.clone().unwrap_or_default();
                        (text_field("contact_name", tr(lang, "Navn", "Name"), &contact.name, false, None))
                        (text_field("contact_email", tr(lang, "E-mail", "E-mail"), &contact.email, false, None))
                        (text_field("contact_phone", tr(lang, "Telefon", "Phone"), &contact.phone, false, None))
                    }
                    div.check {
                        input #closed type="checkbox" name="closed" value="yes" checked[h.closed];
                        label for="closed" { (tr(lang, "Lukket høring: kun inviterede kan se og svare", "Closed hearing: only invitees can see and respond")) }
                    }
                    @if matches!(status, "AwaitingStartDate" | "Active") {
                        div.check {
                            input #notify_participants type="checkbox" name="notify_participants" value="yes";
                            label for="notify_participants" { (tr(lang, "Fortæl inviterede og svarere om ændringen", "Tell invitees and respondents about the change")) }
                        }
                    }
                    div.field.actions { button type="submit" { (tr(lang, "Gem", "Save")) } }
                }
            }
            section {
                h2 { (lang.t().documents) }
                @if !h.files.is_empty() {
                    ul.files { @for f in &h.files { li { a href={ "/api/v1/hearings/" (hearing_id) "/files/" (f.file_id) } { (f.name) } " (" (f.field) ")" } } }
                }
                form method="post" action={ (here) "/filer" } enctype="multipart/form-data" {
                    input type="hidden" name="csrf" value=(csrf);
                    div.field {
                        label for="file_field" { (tr(lang, "Slags", "Kind")) }
                        select #file_field name="field" {
                            @for rule in h.field_rules.iter().filter(|r| r.kind != "text") { option value=(rule.key) { (rule.label) } }
                        }
                    }
                    div.field {
                        label for="file" { (tr(lang, "Fil", "File")) }
                        input #file type="file" name="attachment" required;
                    }
                    div.field.actions { button type="submit" { (tr(lang, "Tilføj fil", "Add file")) } }
                }
            }
            section {
                h2 { (tr(lang, "Inviterede", "Invitees")) }
                @if !h.invitees.is_empty() {
                    ul { @for i in &h.invitees { li { (i.label) " (" (i.kind) ")" } } }
                }
                form method="post" action={ (here) "/inviter" } {
                    input type="hidden" name="csrf" value=(csrf);
                    div.field.wide {
                        label for="identifiers" { (tr(lang, "Invitér (én pr. linje: e-mail, CPR, CVR, group:<id>)", "Invite (one a line: e-mail, CPR, CVR, group:<id>)")) }
                        textarea #identifiers name="identifiers" rows="3" {}
                    }
                    div.field.actions { button type="submit" { (tr(lang, "Invitér", "Invite")) } }
                }
                form method="post" action={ (here) "/inviter-csv" } enctype="multipart/form-data" {
                    input type="hidden" name="csrf" value=(csrf);
                    div.field {
                        label for="csv" { (tr(lang, "Eller upload en CSV-fil", "Or upload a CSV file")) }
                        input #csv type="file" name="attachment" accept=".csv,text/csv" required;
                    }
                    div.field.actions { button type="submit" { (tr(lang, "Importér", "Import")) } }
                }
            }
        }
        @if matches!(status, "Created" | "Draft") {
            form method="post" action={ (here) "/offentliggoer" } {
                input type="hidden" name="csrf" value=(csrf);
                button #publish type="submit" { (tr(lang, "Offentliggør høringen", "Publish the hearing")) }
            }
        }

        section #svar {
            h2 { (lang.t().responses) " (" (responses.len()) ")" }
            @for r in &responses {
                article.card.response {
                    h3 { (lang.t().response_number) " " (r.number) " · " span.status { (r.status) } }
                    @if !r.on_behalf_of.is_empty() { p.meta { (lang.t().on_behalf_of) " " (r.on_behalf_of) } }
                    (paragraphs(&r.text))
                    @if !r.reply.is_empty() { div.reply { h4 { (lang.t().reply) } (paragraphs(&r.reply)) } }
                    @if r.status == "Approved" {
                        details {
                            summary { (tr(lang, "Svar offentligt eller rediger", "Reply in public or redact")) " " (r.number) }
                            form method="post" action={ "/sagsbehandler/svar/" (r.response_id) "/svar" } {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="hearing_id" value=(hearing_id);
                                div.field.wide {
                                    label for={ "reply-" (r.number) } { (lang.t().reply) }
                                    textarea id={ "reply-" (r.number) } name="text" rows="3" required { (r.reply) }
                                }
                                button type="submit" { (tr(lang, "Gem svaret", "Save the reply")) }
                            }
                            form method="post" action={ "/sagsbehandler/svar/" (r.response_id) "/rediger" } {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="hearing_id" value=(hearing_id);
                                div.field.wide {
                                    label for={ "redacted-" (r.number) } { (tr(lang, "Offentliggjort tekst", "Published text")) }
                                    textarea id={ "redacted-" (r.number) } name="redacted_text" rows="4" required { (r.text) }
                                }
                                div.field {
                                    label for={ "redact-reason-" (r.number) } { (tr(lang, "Begrundelse", "Reason")) }
                                    input type="text" id={ "redact-reason-" (r.number) } name="reason" required;
                                }
                                button.secondary type="submit" { (tr(lang, "Rediger", "Redact")) }
                            }
                        }
                    }
                    @if r.status == "Pending" {
                        div.actions {
                            form method="post" action={ "/sagsbehandler/svar/" (r.response_id) "/godkend" } {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="hearing_id" value=(hearing_id);
                                button type="submit" { (tr(lang, "Godkend", "Approve")) " " (r.number) }
                            }
                            form method="post" action={ "/sagsbehandler/svar/" (r.response_id) "/afvis" } {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="hearing_id" value=(hearing_id);
                                div.field {
                                    label for={ "reason-" (r.number) } { (tr(lang, "Begrundelse for afvisning", "Reason for declining")) }
                                    input type="text" id={ "reason-" (r.number) } name="reason" required;
                                }
                                button.secondary type="submit" { (tr(lang, "Afvis", "Decline")) " " (r.number) }
                            }
                        }
                    }
                }
            }
        }

        @if status == "AwaitingConclusion" {
            section {
                h2 { (lang.t().conclusion) }
                form method="post" action={ (here) "/konkluder" } {
                    input type="hidden" name="csrf" value=(csrf);
                    div.field.wide {
                        label for="conclusion" { (lang.t().conclusion) }
                        textarea #conclusion name="conclusion" rows="6" required { (field("conclusion")) }
                    }
                    div.field.actions { button type="submit" { (tr(lang, "Afslut høringen", "Conclude the hearing")) } }
                }
            }
        }

        @if !responses.is_empty() {
            section {
                h2 { (tr(lang, "Eksport", "Export")) }
                ul.files {
                    @for (name, _) in api::EXPORTS {
                        li { a href={ "/api/v1/hearings/" (hearing_id) "/exports/" (name) } { (name) } }
                    }
                }
            }
        }

        @if let Some(j) = &journal {
            section {
                h2 { (tr(lang, "Journalisering", "Journalization")) }
                p #journalization { (journal_status(lang, j.status)) @if j.steps_left > 0 { " · " (j.steps_left) " " (tr(lang, "trin tilbage", "steps left")) } }
                @if !j.errors.is_empty() { ul.error { @for e in &j.errors { li { (e) } } } }
                @if j.status == records::JournalizationStatus::Failed as i32 {
                    form method="post" action={ (here) "/journaliser-igen" } {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" { (tr(lang, "Prøv de parkerede trin igen", "Retry the parked steps")) }
                    }
                }
            }
        }
    };
    let status_code = outcome.problem.as_ref().map(Problem::status_code).unwrap_or(axum::http::StatusCode::OK);
    (status_code, page.render(&title, body)).into_response()
}

/// After a command: back to the workspace (post, redirect, get), or the workspace again with
/// the service's refusal.
async fn back_to_workspace<T>(page: &Page<'_>, hearing_id: &str, result: Result<T, tonic::Status>) -> Response {
    match result {
        Ok(_) => see_other(&workspace_path(hearing_id), Vec::new()),
        Err(status) => render_workspace(page, hearing_id, Outcome { problem: Some(status.into()), report: None }).await,
    }
}

fn journal_status(lang: Lang, status: i32) -> &'static str {
    match records::JournalizationStatus::try_from(status) {
        Ok(records::JournalizationStatus::InProgress) => tr(lang, "I gang", "In progress"),
        Ok(records::JournalizationStatus::Journalized) => tr(lang, "Journaliseret", "Journalized"),
        Ok(records::JournalizationStatus::Failed) => {
            tr(lang, "Fejlet: venter på nyt forsøg", "Failed: waiting for a retry")
        }
        _ => tr(lang, "Ikke journaliseret", "Not journalized"),
    }
}

/// A labelled input with the service's objection, if any, beside it (and tied to it for
/// screen readers).
/// Not `required`: a draft may be saved incomplete; the service says what is missing.
fn text_field(key: &str, label: &str, value: &str, multiline: bool, error: Option<String>) -> Markup {
    let error_id = format!("{key}-error");
    html! {
        div.field.wide {
            label for=(key) { (label) }
            @if let Some(message) = &error { p.field-error id=(error_id) { (message) } }
            @if multiline {
                textarea id=(key) name=(key) rows="5" aria-invalid=[error.as_ref().map(|_| "true")]
                    aria-describedby=[error.as_ref().map(|_| error_id.as_str())] { (value) }
            } @else {
                input id=(key) type="text" name=(key) value=(value) aria-invalid=[error.as_ref().map(|_| "true")]
                    aria-describedby=[error.as_ref().map(|_| error_id.as_str())];
            }
        }
    }
}

fn date_field(key: &str, label: &str, value: &str, error: Option<String>) -> Markup {
    let error_id = format!("{key}-error");
    html! {
        div.field {
            label for=(key) { (label) }
            @if let Some(message) = &error { p.field-error id=(error_id) { (message) } }
            input id=(key) type="date" name=(key) value=(value) aria-invalid=[error.as_ref().map(|_| "true")]
                aria-describedby=[error.as_ref().map(|_| error_id.as_str())];
        }
    }
}

pub async fn update(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(hearing_id): Path<String>,
    Form(form): Form<std::collections::BTreeMap<String, String>>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    let value = |key: &str| form.get(key).cloned().unwrap_or_default();
    if let Err(problem) = caller.check_csrf(&gw, &value("csrf")) {
        return error_page(&page, &problem);
    }
    let current = match gw
        .services
        .hearing
        .clone()
        .get_hearing(caller.grpc(hearing::GetHearingRequest { hearing_id: hearing_id.clone() }))
        .await
    {
        Ok(h) => h.into_inner(),
        Err(status) => return error_page(&page, &status.into()),
    };
    let fields = current
        .field_rules
        .iter()
        .filter(|r| r.kind == "text" && r.key != "conclusion")
        .filter_map(|r| form.get(&r.key).map(|v| (r.key.clone(), v.replace("\r\n", "\n"))))
        .collect();
    let optional = |key: &str| form.get(key).filter(|v| !v.is_empty()).cloned();
    let request = hearing::UpdateHearingRequest {
        hearing_id: hearing_id.clone(),
        fields,
        subject_area_id: optional("subject_area_id"),
        city_area_id: optional("city_area_id"),
        kle_number: optional("kle_number"),
        contact: Some(hearing::ContactPerson {
            name: value("contact_name"),
            email: value("contact_email"),
            phone: value("contact_phone"),
        }),
        start_date: optional("start_date"),
        deadline: optional("deadline"),
        closed: Some(value("closed") == "yes"),
        notify_participants: value("notify_participants") == "yes",
    };
    back_to_workspace(&page, &hearing_id, gw.services.hearing.clone().update_hearing(caller.grpc(request)).await).await
}

pub async fn add_file(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(hearing_id): Path<String>,
    multipart: Multipart,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    let mut form = match super::checked_multipart(&gw, &caller, multipart).await {
        Ok(form) => form,
        Err(problem) => return error_page(&page, &problem),
    };
    let Some(file) = form.files.pop() else {
        let problem = Problem::invalid(tr(caller.lang, "Vælg en fil.", "Choose a file."));
        return render_workspace(&page, &hearing_id, Outcome { problem: Some(problem), report: None }).await;
    };
    let request = hearing::AttachFileRequest {
        hearing_id: hearing_id.clone(),
        field: form.text("field"),
        file_name: file.name,
        content: file.content,
    };
    back_to_workspace(&page, &hearing_id, gw.services.hearing.clone().attach_file(caller.grpc(request)).await).await
}

#[derive(Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    identifiers: String,
}

pub async fn invite(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(hearing_id): Path<String>,
    Form(form): Form<InviteForm>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page, &problem);
    }
    let participants = form
        .identifiers
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| hearing::Participant { identifier: l.to_string(), label: String::new() })
        .collect();
    let request = hearing::InviteRequest { hearing_id: hearing_id.clone(), participants };
    back_to_workspace(&page, &hearing_id, gw.services.hearing.clone().invite_participants(caller.grpc(request)).await)
        .await
}

pub async fn import_invitees(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(hearing_id): Path<String>,
    multipart: Multipart,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    let mut form = match super::checked_multipart(&gw, &caller, multipart).await {
        Ok(form) => form,
        Err(problem) => return error_page(&page, &problem),
    };
    let csv = form.files.pop().map(|f| f.content).unwrap_or_default();
    let request = hearing::ImportInviteesRequest { hearing_id: hearing_id.clone(), csv };
    let lang = caller.lang;
    match gw.services.hearing.clone().import_invitees(caller.grpc(request)).await {
        Ok(report) => {
            let report = report.into_inner();
            let markup = html! {
                div.notice #import-report role="status" {
                    p { (report.added) " " (tr(lang, "tilføjet", "added")) ", " (report.already_invited) " " (tr(lang, "var allerede inviteret", "already invited")) }
                    @if !report.errors.is_empty() {
                        ul { @for e in &report.errors { li { (tr(lang, "Række", "Row")) " " (e.row) ": " (e.message) } } }
                    }
                }
            };
            render_workspace(&page, &hearing_id, Outcome { problem: None, report: Some(markup) }).await
        }
        Err(status) => {
            render_workspace(&page, &hearing_id, Outcome { problem: Some(status.into()), report: None }).await
        }
    }
}

pub async fn publish(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(hearing_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page, &problem);
    }
    let request = hearing::HearingRef { hearing_id: hearing_id.clone() };
    back_to_workspace(&page, &hearing_id, gw.services.hearing.clone().publish_hearing(caller.grpc(request)).await).await
}

#[derive(Deserialize)]
pub struct ConcludeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    conclusion: String,
}

pub async fn conclude(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(hearing_id): Path<String>,
    Form(form): Form<ConcludeForm>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page, &problem);
    }
    let request = hearing::ConcludeHearingRequest {
        hearing_id: hearing_id.clone(),
        conclusion: Some(form.conclusion.replace("\r\n", "\n")),
    };
    back_to_workspace(&page, &hearing_id, gw.services.hearing.clone().conclude_hearing(caller.grpc(request)).await)
        .await
}

#[derive(Deserialize)]
pub struct ModerationForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    hearing_id: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    redacted_text: String,
}

/// Approves (`godkend`), declines (`afvis`), replies to (`svar`) or redacts (`rediger`) a
/// response, then back to the hearing.
pub async fn moderate(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path((response_id, action)): Path<(String, String)>,
    Form(form): Form<ModerationForm>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page, &problem);
    }
    let mut responses = gw.services.response.clone();
    let done = match action.as_str() {
        "godkend" => responses.approve_response(caller.grpc(response::ResponseRef { response_id })).await.map(|_| ()),
        "afvis" => responses
            .decline_response(caller.grpc(response::DeclineResponseRequest { response_id, reason: form.reason }))
            .await
            .map(|_| ()),
        "svar" => responses
            .reply_to_response(
                caller.grpc(response::ReplyRequest { response_id, text: form.text.replace("\r\n", "\n") }),
            )
            .await
            .map(|_| ()),
        "rediger" => {
            let redacted_text = form.redacted_text.replace("\r\n", "\n");
            let request = response::RedactResponseRequest { response_id, redacted_text, reason: form.reason };
            responses.redact_response(caller.grpc(request)).await.map(|_| ())
        }
        other => return error_page(&page, &Problem::new("not-found", format!("no moderation action '{other}'"))),
    };
    match done {
        Ok(()) => see_other(&format!("{}#svar", workspace_path(&form.hearing_id)), Vec::new()),
        Err(status) => {
            render_workspace(&page, &form.hearing_id, Outcome { problem: Some(status.into()), report: None }).await
        }
    }
}

pub async fn audit_trail(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(hearing_id): Path<String>,
) -> Response {
    let page: Page<'_> = page(&gw, &caller, &uri).await;
    let request = hearing::HearingRef { hearing_id: hearing_id.clone() };
    let trail = match gw.services.hearing.clone().get_audit_trail(caller.grpc(request)).await {
        Ok(trail) => trail.into_inner().entries,
        Err(status) => return error_page(&page, &status.into()),
    };
    let lang = caller.lang;
    let title = tr(lang, "Historik", "Audit trail");
    let body = html! {
        p { a href=(workspace_path(&hearing_id)) { "← " (tr(lang, "Tilbage til høringen", "Back to the hearing")) } }
        h1 { (title) }
        table.list {
            caption { (tr(lang, "Alle hændelser i høringens log, med deres led i hashkæden", "Every event in the hearing's log, with its link in the hash chain")) }
            thead { tr {
                th scope="col" { "#" }
                th scope="col" { (tr(lang, "Tidspunkt", "Time")) }
                th scope="col" { (tr(lang, "Hændelse", "Event")) }
                th scope="col" { (tr(lang, "Af", "By")) }
                th scope="col" { "Hash" }
            } }
            tbody {
                @for e in &trail {
                    tr {
                        td { (e.sequence) }
                        td { (time::instant(lang, &e.recorded_at)) }
                        td { (e.event_type) }
                        td { (e.actor) }
                        td { code { (e.hash.get(..12).unwrap_or(&e.hash)) } }
                    }
                }
            }
        }
    };
    page.render(title, body).into_response()
}

pub async fn retry_journalization(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(hearing_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page, &problem);
    }
    let request = caller.grpc(records::JournalizationRequest { hearing_id: hearing_id.clone(), only_open_steps: true });
    back_to_workspace(&page, &hearing_id, gw.services.records.clone().retry_parked_steps(request).await).await
}

/// The kinds of message a hearing's owner words for it.
const HEARING_MESSAGES: &[&str] = &[
    "invited_to_hearing",
    "added_as_reviewer",
    "response_receipt",
    "response_declined",
    "hearing_changed",
    "conclusion_published",
];

#[derive(Deserialize, Default)]
pub struct MessageQuery {
    kind: Option<String>,
    sprog: Option<String>,
}

#[derive(Deserialize)]
pub struct MessageForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    language: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    html: String,
    /// save, reset, preview or test
    #[serde(default)]
    action: String,
}

pub async fn messages(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(hearing_id): Path<String>,
    query: Result<axum::extract::Query<MessageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if !caller.is_logged_in() {
        return Redirect::to(&format!("/log-ind?tilbage={}", super::encode(&page.here))).into_response();
    }
    let query = query.map(|q| q.0).unwrap_or_default();
    let kind =
        query.kind.filter(|k| HEARING_MESSAGES.contains(&k.as_str())).unwrap_or_else(|| "response_receipt".into());
    let language = if query.sprog.as_deref() == Some("en") { "en" } else { "da" };
    render_messages(&page, &hearing_id, &kind, language, None).await
}

async fn render_messages(
    page: &Page<'_>,
    hearing_id: &str,
    kind: &str,
    language: &str,
    outcome: Option<Markup>,
) -> Response {
    let (gw, caller) = (page.gw, page.caller);
    let lang = caller.lang;
    let reference =
        notification::TemplateRef { hearing_id: hearing_id.into(), kind: kind.into(), language: language.into() };
    let template = match gw.services.notification.clone().get_template(caller.grpc(reference)).await {
        Ok(t) => t.into_inner(),
        Err(status) => return error_page(page, &status.into()),
    };
    let csrf = caller.csrf_token(gw);
    let here = format!("{}/beskeder", workspace_path(hearing_id));
    let title = tr(lang, "Høringens beskeder", "The hearing's messages");
    let body = html! {
        p { a href=(workspace_path(hearing_id)) { "← " (tr(lang, "Tilbage til høringen", "Back to the hearing")) } }
        h1 { (title) }
        @if let Some(outcome) = outcome { (outcome) }
        form method="get" action=(here) {
            div.field {
                label for="kind" { (tr(lang, "Besked", "Message")) }
                select #kind name="kind" { @for k in HEARING_MESSAGES { option value=(k) selected[*k == kind] { (k) } } }
            }
            div.field {
                label for="sprog" { (tr(lang, "Sprog", "Language")) }
                select #sprog name="sprog" { option value="da" selected[language == "da"] { "Dansk" } option value="en" selected[language == "en"] { "English" } }
            }
            div.field.actions { button.secondary type="submit" { (tr(lang, "Vis", "Show")) } }
        }
        p.meta { (tr(lang, "Kilde", "Source")) ": " (template.source) " · " (tr(lang, "Pladsholdere", "Placeholders")) ": "
            @for p in &template.placeholders { code { "{{" (p) "}}" } " " } }
        form method="post" action=(here) {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="kind" value=(kind);
            input type="hidden" name="language" value=(language);
            div.field.wide { label for="subject" { (tr(lang, "Emne", "Subject")) } input #subject type="text" name="subject" value=(template.subject); }
            div.field.wide { label for="text" { (tr(lang, "Tekst", "Text")) } textarea #text name="text" rows="8" { (template.text) } }
            div.field.wide { label for="html" { "HTML" } textarea #html name="html" rows="8" { (template.html) } }
            div.actions {
                button type="submit" name="action" value="save" { (tr(lang, "Gem", "Save")) }
                button.secondary type="submit" name="action" value="preview" { (tr(lang, "Forhåndsvis", "Preview")) }
                button.secondary type="submit" name="action" value="test" { (tr(lang, "Send en prøve til mig", "Send me a test")) }
                button.secondary type="submit" name="action" value="reset" { (tr(lang, "Brug kommunens tekst", "Use the municipality's wording")) }
            }
        }
    };
    page.render(title, body).into_response()
}

pub async fn save_message(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(hearing_id): Path<String>,
    Form(form): Form<MessageForm>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page, &problem);
    }
    let lang = caller.lang;
    let reference = notification::TemplateRef {
        hearing_id: hearing_id.clone(),
        kind: form.kind.clone(),
        language: form.language.clone(),
    };
    let mut service = gw.services.notification.clone();
    let outcome = match form.action.as_str() {
        "preview" => service.preview_template(caller.grpc(reference)).await.map(|p| {
            let p = p.into_inner();
            html! { section.notice #preview role="status" { h2 { (p.subject) } pre { (p.text) } } }
        }),
        "test" => service.send_test_message(caller.grpc(reference)).await.map(|sent| {
            html! { p.notice role="status" { (tr(lang, "Prøven er sendt til", "The test went to")) " " (sent.into_inner().to) } }
        }),
        "reset" => service
            .reset_template(caller.grpc(reference))
            .await
            .map(|_| html! { p.notice role="status" { (tr(lang, "Kommunens tekst bruges igen.", "The municipality's wording is used again.")) } }),
        _ => {
            let request = notification::SetTemplateRequest {
                r#ref: Some(reference),
                subject: form.subject,
                text: form.text.replace("\r\n", "\n"),
                html: form.html.replace("\r\n", "\n"),
            };
            service
                .set_template(caller.grpc(request))
                .await
                .map(|_| html! { p.notice role="status" { (tr(lang, "Gemt.", "Saved.")) } })
        }
    };
    let outcome = match outcome {
        Ok(markup) => markup,
        Err(status) => {
            let problem: Problem = status.into();
            html! { div.error #fejl role="alert" { p { (problem.detail) } } }
        }
    };
    render_messages(&page, &hearing_id, &form.kind, &form.language, Some(outcome)).await
}
