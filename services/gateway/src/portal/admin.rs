//! The administrator's pages: reference data (subject areas, city areas, hearing types, the
//! KLE tree), users and roles, the terms, notification templates, and the read-access log.
//! The services refuse anyone else; the pages only show what they are told.

use agora_proto::hearing::v1 as hearing;
use agora_proto::identity::v1 as identity;
use agora_proto::notification::v1 as notification;
use agora_proto::response::v1 as response;
use axum::extract::{Form, Multipart, OriginalUri, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::pages::page;
use super::{error_page, see_other};
use crate::Gateway;
use crate::i18n::Lang;
use crate::session::Caller;
use crate::time;

fn tr(lang: Lang, da: &'static str, en: &'static str) -> &'static str {
    if lang == Lang::Da { da } else { en }
}

/// The kinds of notification an administrator can word.
const TEMPLATE_KINDS: &[&str] = &[
    "invited_to_hearing",
    "added_as_reviewer",
    "response_receipt",
    "response_declined",
    "hearing_changed",
    "conclusion_published",
    "daily_digest",
    "subscription_confirmation",
    "subscribed_hearing_published",
    "subscribed_hearing_changed",
    "subscribed_hearing_concluded",
];

#[derive(Deserialize, Default)]
pub struct AdminQuery {
    /// The template to show (kind and language).
    kind: Option<String>,
    sprog: Option<String>,
    /// A user whose read-access log to show.
    bruger: Option<String>,
}

pub async fn overview(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    query: Result<Query<AdminQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if !caller.is_logged_in() {
        return Redirect::to("/log-ind?tilbage=/administration").into_response();
    }
    let query = query.map(|q| q.0).unwrap_or_default();
    // The users list is for administrators only: its refusal is the page's.
    let users = match gw.services.identity.clone().list_users(caller.grpc(identity::ListUsersRequest {})).await {
        Ok(list) => list.into_inner().users,
        Err(status) => return error_page(&page, &status.into()),
    };
    let lang = caller.lang;
    let csrf = caller.csrf_token(&gw);
    let reference = gw.services.reference.clone();
    let all = || caller.grpc(hearing::ListReferenceRequest { include_retired: true });
    let subjects = reference.clone().list_subject_areas(all()).await.map(|l| l.into_inner().items).unwrap_or_default();
    let cities = reference.clone().list_city_areas(all()).await.map(|l| l.into_inner().items).unwrap_or_default();
    let types =
        reference.clone().list_hearing_types(all()).await.map(|l| l.into_inner().hearing_types).unwrap_or_default();
    let terms =
        gw.services.identity.clone().current_terms(identity::CurrentTermsRequest {}).await.ok().map(|t| t.into_inner());
    let kind = query
        .kind
        .clone()
        .filter(|k| TEMPLATE_KINDS.contains(&k.as_str()))
        .unwrap_or_else(|| "response_receipt".into());
    let language = if query.sprog.as_deref() == Some("en") { "en" } else { "da" };
    let template_ref =
        notification::TemplateRef { hearing_id: String::new(), kind: kind.clone(), language: language.into() };
    let template =
        gw.services.notification.clone().get_template(caller.grpc(template_ref)).await.ok().map(|t| t.into_inner());
    let access = match query.bruger.as_deref().filter(|b| !b.is_empty()) {
        Some(user) => {
            let request = response::DataAccessRequest { subject_user_id: user.into() };
            match gw.services.response.clone().list_personal_data_access(caller.grpc(request)).await {
                Ok(log) => Some(log.into_inner().entries),
                Err(status) => return error_page(&page, &status.into()),
            }
        }
        None => None,
    };
    let title = tr(lang, "Administration", "Administration");
    let named = |heading: &'static str, action: &'static str, items: &[hearing::NamedItem], prefix: &'static str| {
        html! {
            section.card {
                h2 { (heading) }
                ul { @for item in items { li { (item.name) " (" code { (item.id) } ")" @if item.retired { " — " (tr(lang, "udgået", "retired")) } } } }
                form method="post" action=(action) {
                    input type="hidden" name="csrf" value=(csrf);
                    div.field { label for={ (prefix) "-id" } { "Id" } input id={ (prefix) "-id" } type="text" name="id" required; }
                    div.field { label for={ (prefix) "-name" } { (tr(lang, "Navn", "Name")) } input id={ (prefix) "-name" } type="text" name="name" required; }
                    div.field.actions { button type="submit" { (tr(lang, "Gem", "Save")) " " (heading) } }
                }
            }
        }
    };
    let body = html! {
        h1 { (title) }
        (named(tr(lang, "Emner", "Subject areas"), "/administration/emner", &subjects, "subject"))
        (named(tr(lang, "Områder", "City areas"), "/administration/omraader", &cities, "city"))
        section.card {
            h2 { (tr(lang, "Høringstyper", "Hearing types")) }
            ul { @for t in &types { li { a href={ "/administration/hoeringstyper/" (t.id) } { (t.name) } " (" code { (t.id) } ")" @if t.internal { " — " (lang.t().internal) } } } }
            form method="post" action="/administration/hoeringstyper" {
                input type="hidden" name="csrf" value=(csrf);
                div.field { label for="type-id" { "Id" } input #type-id type="text" name="id" required; }
                div.field { label for="type-name" { (tr(lang, "Navn", "Name")) } input #type-name type="text" name="name" required; }
                div.check { input #type-internal type="checkbox" name="internal" value="yes"; label for="type-internal" { (lang.t().internal) } }
                div.field.wide { label for="type-body" { (tr(lang, "Skabelon til høringsteksten", "Template of the hearing text")) } textarea #type-body name="body" rows="3" {} }
                div.field.actions { button type="submit" { (tr(lang, "Gem høringstype", "Save hearing type")) } }
            }
        }
        section.card {
            h2 { (tr(lang, "KLE-træet", "The KLE tree")) }
            form method="post" action="/administration/kle" enctype="multipart/form-data" {
                input type="hidden" name="csrf" value=(csrf);
                div.field { label for="kle-file" { "KleHierarchyList.json" } input #kle-file type="file" name="attachment" accept=".json,application/json" required; }
                div.field.actions { button type="submit" { (tr(lang, "Indlæs KLE", "Load KLE")) } }
            }
        }
        section.card {
            h2 { (tr(lang, "Brugere og roller", "Users and roles")) }
            table.list {
                caption { (tr(lang, "Medarbejdere kan gøres til administratorer eller høringsopretter", "Employees can be made administrators or hearing creators")) }
                thead { tr { th scope="col" { (tr(lang, "Navn", "Name")) } th scope="col" { (tr(lang, "Slags", "Kind")) } th scope="col" { (tr(lang, "Roller", "Roles")) } th scope="col" { (tr(lang, "Skift", "Change")) } } }
                tbody {
                    @for u in users.iter().filter(|u| !u.erased) {
                        tr {
                            td { (u.name) }
                            td { (u.capacity) }
                            td { (u.roles.join(", ")) }
                            td {
                                @if u.capacity == "employee" {
                                    @for role in ["administrator", "hearing_creator"] {
                                        form.inline method="post" action="/administration/roller" {
                                            input type="hidden" name="csrf" value=(csrf);
                                            input type="hidden" name="user_id" value=(u.user_id);
                                            input type="hidden" name="role" value=(role);
                                            @if u.roles.iter().any(|r| r == role) {
                                                input type="hidden" name="action" value="revoke";
                                                button.secondary type="submit" { (tr(lang, "Fjern", "Remove")) " " (role) " (" (u.name) ")" }
                                            } @else {
                                                input type="hidden" name="action" value="assign";
                                                button.secondary type="submit" { (tr(lang, "Giv", "Give")) " " (role) " (" (u.name) ")" }
                                            }
                                        }
                                    }
                                }
                                " "
                                a href={ "/administration?bruger=" (u.user_id) "#laeseadgang" } { (tr(lang, "Læseadgang", "Read access")) }
                            }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { (tr(lang, "Vilkår for høringssvar", "Terms for responses")) }
            @if let Some(terms) = &terms { p { (tr(lang, "Gældende version", "In force")) ": " strong { (terms.version) } } }
            form method="post" action="/administration/vilkaar" {
                input type="hidden" name="csrf" value=(csrf);
                div.field { label for="terms-version" { (tr(lang, "Ny version", "New version")) } input #terms-version type="text" name="version" required; }
                div.field.wide { label for="terms-text" { (tr(lang, "Tekst", "Text")) } textarea #terms-text name="text" rows="5" required { @if let Some(t) = &terms { (t.text) } } }
                div.field.actions { button type="submit" { (tr(lang, "Offentliggør vilkårene", "Publish the terms")) } }
            }
        }
        section.card #skabeloner {
            h2 { (tr(lang, "Notifikationsskabeloner", "Notification templates")) }
            form method="get" action="/administration" {
                div.field {
                    label for="template-kind" { (tr(lang, "Slags", "Kind")) }
                    select #template-kind name="kind" { @for k in TEMPLATE_KINDS { option value=(k) selected[*k == kind] { (k) } } }
                }
                div.field {
                    label for="template-language" { (tr(lang, "Sprog", "Language")) }
                    select #template-language name="sprog" { option value="da" selected[language == "da"] { "Dansk" } option value="en" selected[language == "en"] { "English" } }
                }
                div.field.actions { button.secondary type="submit" { (tr(lang, "Vis skabelonen", "Show the template")) } }
            }
            @if let Some(t) = &template {
                form method="post" action="/administration/skabeloner" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="kind" value=(kind);
                    input type="hidden" name="language" value=(language);
                    p.hint { (tr(lang, "Pladsholdere", "Placeholders")) ": " @for p in &t.placeholders { code { "{{" (p) "}}" } " " } }
                    div.field.wide { label for="template-subject" { (tr(lang, "Emne", "Subject")) } input #template-subject type="text" name="subject" value=(t.subject); }
                    div.field.wide { label for="template-text" { (tr(lang, "Tekst", "Text")) } textarea #template-text name="text" rows="8" { (t.text) } }
                    div.field.wide { label for="template-html" { "HTML" } textarea #template-html name="html" rows="8" { (t.html) } }
                    div.field.actions { button type="submit" { (tr(lang, "Gem skabelonen", "Save the template")) } }
                }
            }
        }
        section.card #laeseadgang {
            h2 { (tr(lang, "Læseadgangslog", "Read-access log")) }
            @if let Some(entries) = &access {
                @if entries.is_empty() { p { (tr(lang, "Ingen har set personens oplysninger.", "No one has seen the person's data.")) } }
                @else {
                    table.list {
                        caption { (tr(lang, "Hvem har set personens høringssvar, hvornår og hvorfor", "Who saw the person's responses, when and why")) }
                        thead { tr { th scope="col" { (tr(lang, "Tidspunkt", "Time")) } th scope="col" { (tr(lang, "Af", "By")) } th scope="col" { (lang.t().hearing) } th scope="col" { (tr(lang, "Formål", "Purpose")) } } }
                        tbody { @for e in entries { tr { td { (time::instant(lang, &e.at)) } td { (e.viewer_id) } td { (e.hearing_id) } td { (e.purpose) } } } }
                    }
                }
            } @else {
                p { (tr(lang, "Vælg en bruger ovenfor.", "Choose a user above.")) }
            }
        }
    };
    page.render(title, body).into_response()
}

#[derive(Deserialize)]
pub struct NamedForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
}

async fn define_area(gw: Gateway, caller: Caller, uri: axum::http::Uri, form: NamedForm, city: bool) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page, &problem);
    }
    let item = caller.grpc(hearing::NamedItem { id: form.id, name: form.name, retired: false });
    let mut reference = gw.services.reference.clone();
    let done = if city { reference.define_city_area(item).await } else { reference.define_subject_area(item).await };
    match done {
        Ok(_) => see_other("/administration", Vec::new()),
        Err(status) => error_page(&page, &status.into()),
    }
}

pub async fn subject_area(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Form(form): Form<NamedForm>,
) -> Response {
    define_area(gw, caller, uri, form, false).await
}

pub async fn city_area(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Form(form): Form<NamedForm>,
) -> Response {
    define_area(gw, caller, uri, form, true).await
}

#[derive(Deserialize)]
pub struct TypeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    internal: String,
    #[serde(default)]
    body: String,
}

pub async fn hearing_type(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Form(form): Form<TypeForm>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page, &problem);
    }
    let template =
        if form.body.trim().is_empty() { Default::default() } else { [("body".to_string(), form.body)].into() };
    let kind = hearing::HearingType {
        id: form.id,
        name: form.name,
        internal: form.internal == "yes",
        template,
        ..Default::default()
    };
    match gw.services.reference.clone().define_hearing_type(caller.grpc(kind)).await {
        Ok(_) => see_other("/administration", Vec::new()),
        Err(status) => error_page(&page, &status.into()),
    }
}

pub async fn kle(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    multipart: Multipart,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    let mut form = match super::checked_multipart(&gw, &caller, multipart).await {
        Ok(form) => form,
        Err(problem) => return error_page(&page, &problem),
    };
    let json = form.files.pop().map(|f| String::from_utf8_lossy(&f.content).into_owned()).unwrap_or_default();
    let request = hearing::LoadKleRequest { entries: Vec::new(), hierarchy_json: json };
    match gw.services.reference.clone().load_kle(caller.grpc(request)).await {
        Ok(_) => see_other("/administration", Vec::new()),
        Err(status) => error_page(&page, &status.into()),
    }
}

#[derive(Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    action: String,
}

pub async fn role(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Form(form): Form<RoleForm>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page, &problem);
    }
    let request = caller.grpc(identity::RoleRequest { user_id: form.user_id, role: form.role });
    let mut identity = gw.services.identity.clone();
    let done =
        if form.action == "revoke" { identity.revoke_role(request).await } else { identity.assign_role(request).await };
    match done {
        Ok(_) => see_other("/administration", Vec::new()),
        Err(status) => error_page(&page, &status.into()),
    }
}

#[derive(Deserialize)]
pub struct TermsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    text: String,
}

pub async fn terms(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Form(form): Form<TermsForm>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page, &problem);
    }
    let request = identity::PublishTermsRequest { version: form.version, text: form.text.replace("\r\n", "\n") };
    match gw.services.identity.clone().publish_terms(caller.grpc(request)).await {
        Ok(_) => see_other("/administration", Vec::new()),
        Err(status) => error_page(&page, &status.into()),
    }
}

#[derive(Deserialize)]
pub struct TemplateForm {
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
}

pub async fn template(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Form(form): Form<TemplateForm>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page, &problem);
    }
    let back = format!(
        "/administration?kind={}&sprog={}#skabeloner",
        super::encode(&form.kind),
        super::encode(&form.language)
    );
    let request = notification::SetTemplateRequest {
        r#ref: Some(notification::TemplateRef { hearing_id: String::new(), kind: form.kind, language: form.language }),
        subject: form.subject,
        text: form.text.replace("\r\n", "\n"),
        html: form.html.replace("\r\n", "\n"),
    };
    match gw.services.notification.clone().set_template(caller.grpc(request)).await {
        Ok(_) => see_other(&back, Vec::new()),
        Err(status) => error_page(&page, &status.into()),
    }
}

async fn find_type(gw: &Gateway, caller: &Caller, id: &str) -> Result<hearing::HearingType, crate::problem::Problem> {
    let all = caller.grpc(hearing::ListReferenceRequest { include_retired: true });
    let types = gw.services.reference.clone().list_hearing_types(all).await?.into_inner().hearing_types;
    types
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| crate::problem::Problem::new("not-found", format!("no hearing type '{id}'")))
}

/// A hearing type's fields and rules for responses, to change.
pub async fn hearing_type_page(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if !caller.is_logged_in() {
        return Redirect::to("/log-ind?tilbage=/administration").into_response();
    }
    let kind = match find_type(&gw, &caller, &id).await {
        Ok(kind) => kind,
        Err(problem) => return error_page(&page, &problem),
    };
    let lang = caller.lang;
    let rules = kind.response_rules.clone().unwrap_or_default();
    let number = |value: Option<u32>| value.map(|v| v.to_string()).unwrap_or_default();
    let body = html! {
        p { a href="/administration" { "← Administration" } }
        h1 { (kind.name) }
        form method="post" action={ "/administration/hoeringstyper/" (kind.id) } {
            input type="hidden" name="csrf" value=(caller.csrf_token(&gw));
            div.field { label for="name" { (tr(lang, "Navn", "Name")) } input #name type="text" name="name" value=(kind.name) required; }
            div.check { input #internal type="checkbox" name="internal" value="yes" checked[kind.internal]; label for="internal" { (lang.t().internal) } }
            table.list {
                caption { (tr(lang, "Felterne i høringer af denne type", "The fields of hearings of this type")) }
                thead { tr {
                    th scope="col" { (tr(lang, "Nøgle", "Key")) } th scope="col" { (tr(lang, "Betegnelse", "Label")) }
                    th scope="col" { (tr(lang, "Slags", "Kind")) } th scope="col" { (tr(lang, "Må være tomt", "May be empty")) }
                    th scope="col" { (tr(lang, "Mindst", "At least")) } th scope="col" { (tr(lang, "Højst", "At most")) }
                } }
                tbody {
                    @for (i, f) in kind.fields.iter().enumerate() {
                        tr {
                            td { code { (f.key) } input type="hidden" name={ "field_" (i) "_key" } value=(f.key); }
                            td { input type="text" name={ "field_" (i) "_label" } value=(f.label) aria-label={ (tr(lang, "Betegnelse for", "Label of")) " " (f.key) }; }
                            td { (f.kind) }
                            td { input type="checkbox" name={ "field_" (i) "_may_be_empty" } value="yes" checked[f.may_be_empty] aria-label={ (tr(lang, "Må være tomt:", "May be empty:")) " " (f.key) }; }
                            td { @if f.kind == "text" { input type="number" min="0" name={ "field_" (i) "_min" } value=(number(f.min_length)) aria-label={ (tr(lang, "Mindste længde af", "Least length of")) " " (f.key) }; } }
                            td { @if f.kind == "text" { input type="number" min="1" name={ "field_" (i) "_max" } value=(number(f.max_length)) aria-label={ (tr(lang, "Største længde af", "Greatest length of")) " " (f.key) }; } }
                        }
                    }
                    tr {
                        td { input type="text" name="new_key" aria-label=(tr(lang, "Nøgle for et nyt tekstfelt", "Key of a new text field")); }
                        td { input type="text" name="new_label" aria-label=(tr(lang, "Betegnelse for et nyt tekstfelt", "Label of a new text field")); }
                        td { "text" }
                        td {} td {} td {}
                    }
                }
            }
            fieldset {
                legend { (tr(lang, "Regler for høringssvar", "Rules for responses")) }
                div.field { label for="max_text_chars" { (tr(lang, "Højst tegn", "At most characters")) } input #max_text_chars type="number" min="1" name="max_text_chars" value=(rules.max_text_chars); }
                div.field { label for="max_files" { (tr(lang, "Højst bilag", "At most attachments")) } input #max_files type="number" min="0" name="max_files" value=(rules.max_files); }
                div.field { label for="max_file_bytes" { (tr(lang, "Højst bytes pr. bilag", "At most bytes per attachment")) } input #max_file_bytes type="number" min="0" name="max_file_bytes" value=(rules.max_file_bytes); }
                div.check { input #text_optional type="checkbox" name="text_optional" value="yes" checked[rules.text_optional]; label for="text_optional" { (tr(lang, "Et svar må være bilag alene", "A response may be attachments only")) } }
            }
            div.field.actions { button type="submit" { (tr(lang, "Gem høringstypen", "Save the hearing type")) } }
        }
    };
    page.render(&kind.name, body).into_response()
}

pub async fn save_hearing_type(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    axum::extract::Path(id): axum::extract::Path<String>,
    Form(form): Form<std::collections::BTreeMap<String, String>>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    let value = |key: &str| form.get(key).map(|v| v.trim().to_string()).unwrap_or_default();
    if let Err(problem) = caller.check_csrf(&gw, &value("csrf")) {
        return error_page(&page, &problem);
    }
    let mut kind = match find_type(&gw, &caller, &id).await {
        Ok(kind) => kind,
        Err(problem) => return error_page(&page, &problem),
    };
    let number = |key: &str| -> Result<Option<u64>, crate::problem::Problem> {
        match value(key) {
            v if v.is_empty() => Ok(None),
            v => v
                .parse()
                .map(Some)
                .map_err(|_| crate::problem::Problem::invalid(format!("{key}: '{v}' is not a number"))),
        }
    };
    let mut fields = Vec::new();
    for (i, mut field) in kind.fields.clone().into_iter().enumerate() {
        if value(&format!("field_{i}_key")) != field.key {
            continue;
        }
        field.label = value(&format!("field_{i}_label"));
        field.may_be_empty = value(&format!("field_{i}_may_be_empty")) == "yes";
        if field.kind == "text" {
            match (number(&format!("field_{i}_min")), number(&format!("field_{i}_max"))) {
                (Ok(min), Ok(max)) => {
                    field.min_length = min.map(|v| v.min(u64::from(u32::MAX)) as u32);
                    field.max_length = max.map(|v| v.min(u64::from(u32::MAX)) as u32);
                }
                (Err(problem), _) | (_, Err(problem)) => return error_page(&page, &problem),
            }
        }
        fields.push(field);
    }
    if !value("new_key").is_empty() {
        fields.push(hearing::FieldRule {
            key: value("new_key"),
            label: value("new_label"),
            kind: "text".into(),
            may_be_empty: true,
            max_length: Some(10_000),
            ..Default::default()
        });
    }
    let mut rules = kind.response_rules.clone().unwrap_or_default();
    for (key, target) in [("max_text_chars", 0usize), ("max_files", 1), ("max_file_bytes", 2)] {
        match number(key) {
            Ok(Some(n)) => match target {
                0 => rules.max_text_chars = n.min(u64::from(u32::MAX)) as u32,
                1 => rules.max_files = n.min(u64::from(u32::MAX)) as u32,
                _ => rules.max_file_bytes = n,
            },
            Ok(None) => {}
            Err(problem) => return error_page(&page, &problem),
        }
    }
    rules.text_optional = value("text_optional") == "yes";
    kind.name = value("name");
    kind.internal = value("internal") == "yes";
    kind.fields = fields;
    kind.response_rules = Some(rules);
    match gw.services.reference.clone().define_hearing_type(caller.grpc(kind)).await {
        Ok(_) => see_other(&format!("/administration/hoeringstyper/{}", super::encode(&id)), Vec::new()),
        Err(status) => error_page(&page, &status.into()),
    }
}
