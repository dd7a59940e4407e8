//! The respondent's own pages besides responding: changing a response while the hearing is
//! open, subscriptions, their data, and erasure.

use agora_proto::notification::v1 as notification;
use agora_proto::response::v1 as response;
use axum::extract::{Form, OriginalUri, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::pages::{CsrfForm, page};
use super::{error_page, see_other};
use crate::Gateway;
use crate::i18n::Lang;
use crate::problem::Problem;
use crate::session::{self, Caller};

fn tr(lang: Lang, da: &'static str, en: &'static str) -> &'static str {
    if lang == Lang::Da { da } else { en }
}

fn topic_name(lang: Lang, topic: &str) -> &'static str {
    match topic {
        "subject_area" => tr(lang, "Emne", "Subject"),
        "city_area" => tr(lang, "Område", "Area"),
        "kle" => tr(lang, "KLE-nummer", "KLE number"),
        _ => tr(lang, "Høring", "Hearing"),
    }
}

pub async fn subscriptions(State(gw): State<Gateway>, caller: Caller, OriginalUri(uri): OriginalUri) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if !caller.is_logged_in() {
        return Redirect::to("/log-ind?tilbage=/mine-abonnementer").into_response();
    }
    let request = caller.grpc(notification::MySubscriptionsRequest {});
    let mine = match gw.services.notification.clone().my_subscriptions(request).await {
        Ok(list) => list.into_inner().subscriptions,
        Err(status) => return error_page(&page, &status.into()),
    };
    let subjects = crate::api::named_items(&gw, &caller, false).await.unwrap_or_default();
    let lang = caller.lang;
    let csrf = caller.csrf_token(&gw);
    let title = tr(lang, "Mine abonnementer", "My subscriptions");
    let body = html! {
        h1 { (title) }
        p.lead { (tr(lang, "Få besked, når en høring om noget, du følger, bliver offentliggjort, ændret eller afsluttet.",
                        "Be told when a hearing about something you follow is published, changed or concluded.")) }
        @if mine.iter().all(|s| s.status == "ended") {
            p { (tr(lang, "Du følger ikke noget endnu.", "You follow nothing yet.")) }
        } @else {
            ul.files {
                @for s in mine.iter().filter(|s| s.status != "ended") {
                    li {
                        (topic_name(lang, &s.topic)) ": " strong { (s.value) }
                        form.inline method="post" action={ "/mine-abonnementer/" (s.subscription_id) "/stop" } {
                            input type="hidden" name="csrf" value=(csrf);
                            button.secondary type="submit" { (tr(lang, "Stop", "Stop")) " " (s.value) }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { (tr(lang, "Følg et emne", "Follow a subject")) }
            form method="post" action="/mine-abonnementer" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="topic" value="subject_area";
                div.field {
                    label for="value" { (lang.t().subject_area) }
                    select #value name="value" { @for item in &subjects { option value=(item.id) { (item.name) } } }
                }
                div.field.actions { button type="submit" { (tr(lang, "Følg", "Follow")) } }
            }
        }
    };
    page.render(title, body).into_response()
}

#[derive(Deserialize)]
pub struct SubscribeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    value: String,
    /// Where to come back to (a hearing's page when following it from there).
    tilbage: Option<String>,
}

pub async fn subscribe(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Form(form): Form<SubscribeForm>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page, &problem);
    }
    let request = notification::SubscribeRequest {
        topic: form.topic,
        value: form.value,
        email: String::new(),
        language: caller.lang.code().into(),
    };
    match gw.services.notification.clone().subscribe(caller.grpc(request)).await {
        Ok(_) => see_other(&super::local_path(form.tilbage.as_deref().or(Some("/mine-abonnementer"))), Vec::new()),
        Err(status) => error_page(&page, &status.into()),
    }
}

pub async fn end_subscription(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(subscription_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page, &problem);
    }
    let request = caller.grpc(notification::SubscriptionRef { subscription_id });
    match gw.services.notification.clone().end_subscription(request).await {
        Ok(_) => see_other("/mine-abonnementer", Vec::new()),
        Err(status) => error_page(&page, &status.into()),
    }
}

pub async fn edit_form(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(response_id): Path<String>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if !caller.is_logged_in() {
        return Redirect::to("/log-ind?tilbage=/mine-svar").into_response();
    }
    let mine = match gw.services.response.clone().my_responses(caller.grpc(response::MyResponsesRequest {})).await {
        Ok(list) => list.into_inner().responses,
        Err(status) => return error_page(&page, &status.into()),
    };
    let Some(r) = mine.into_iter().find(|r| r.response_id == response_id) else {
        return error_page(&page, &Problem::new("not-found", "no such response of yours"));
    };
    let lang = caller.lang;
    let title = tr(lang, "Ret dit høringssvar", "Change your response");
    let body = html! {
        p { a href="/mine-svar" { "← " (lang.t().my_responses) } }
        h1 { (title) " " (lang.t().response_number) " " (r.number) }
        form method="post" action={ "/mine-svar/" (r.response_id) "/ret" } {
            input type="hidden" name="csrf" value=(caller.csrf_token(&gw));
            div.field.wide {
                label for="text" { (lang.t().your_response) }
                textarea #text name="text" rows="12" required { (r.text) }
            }
            div.field.actions { button type="submit" { (tr(lang, "Gem ændringen", "Save the change")) } }
        }
    };
    page.render(title, body).into_response()
}

#[derive(Deserialize)]
pub struct EditForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    text: String,
}

pub async fn edit(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Path(response_id): Path<String>,
    Form(form): Form<EditForm>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page, &problem);
    }
    let request = response::EditResponseRequest { response_id, text: form.text.replace("\r\n", "\n") };
    match gw.services.response.clone().edit_response(caller.grpc(request)).await {
        Ok(_) => see_other("/mine-svar", Vec::new()),
        Err(status) => error_page(&page, &status.into()),
    }
}

pub async fn erasure_form(State(gw): State<Gateway>, caller: Caller, OriginalUri(uri): OriginalUri) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if !caller.is_logged_in() {
        return Redirect::to("/log-ind?tilbage=/slet-mig").into_response();
    }
    let lang = caller.lang;
    let title = tr(lang, "Slet mine data", "Erase my data");
    let body = html! {
        h1 { (title) }
        p { (tr(lang, "Når du sletter dine data, bliver de nøgler, dine oplysninger er krypteret med, destrueret. Dit navn, dine høringssvar og bilag kan derefter ikke læses nogen steder, heller ikke i sikkerhedskopier. Dine svar tælles stadig med, men vises som slettet. Det kan ikke fortrydes.",
                "When you erase your data, the keys your information is encrypted with are destroyed. Your name, responses and attachments can then be read nowhere, backups included. Your responses still count, shown as erased. This cannot be undone.")) }
        p { a href="/api/v1/me/data" { (tr(lang, "Hent først en kopi af dine data", "Download a copy of your data first")) } }
        form method="post" action="/slet-mig" {
            input type="hidden" name="csrf" value=(caller.csrf_token(&gw));
            div.check {
                input #confirm type="checkbox" name="confirm" value="yes" required;
                label for="confirm" { (tr(lang, "Jeg forstår, at sletningen er endelig.", "I understand that erasure is final.")) }
            }
            div.field.actions { button type="submit" { (title) } }
        }
    };
    page.render(title, body).into_response()
}

#[derive(Deserialize)]
pub struct ErasureForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

pub async fn erase(
    State(gw): State<Gateway>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    Form(form): Form<ErasureForm>,
) -> Response {
    let page = page(&gw, &caller, &uri).await;
    if let Err(problem) = caller.check_csrf(&gw, &form.csrf) {
        return error_page(&page, &problem);
    }
    let lang = caller.lang;
    if form.confirm != "yes" {
        let problem = Problem::invalid(tr(
            lang,
            "Bekræft, at du vil slette dine data.",
            "Confirm that you want your data erased.",
        ));
        return error_page(&page, &problem);
    }
    if let Err(problem) = crate::admin_api::erase_caller(&gw, &caller, String::new()).await {
        return error_page(&page, &problem);
    }
    let body = html! {
        h1 { (tr(lang, "Dine data er slettet", "Your data is erased")) }
        p { (tr(lang, "Du er logget ud.", "You are logged out.")) }
        p { a href="/" { (lang.t().open_hearings) } }
    };
    let caller = caller.anonymous();
    let anonymous = super::Page { user: None, caller: &caller, ..page };
    let mut response = anonymous.render(tr(lang, "Dine data er slettet", "Your data is erased"), body).into_response();
    for cookie in session::clear_session_cookies(&gw) {
        response.headers_mut().append(axum::http::header::SET_COOKIE, cookie);
    }
    response
}
