//! The JSON API under `/api/v1`. Every handler is registered through `utoipa_axum`, so a route
//! exists in the router exactly when it is in the OpenAPI document: the two cannot drift apart.
//! The handlers translate JSON to the services' gRPC and back; the services decide.

use std::collections::BTreeMap;

use agora_proto::hearing::v1 as hearing;
use agora_proto::identity::v1 as identity;
use agora_proto::notification::v1 as notification;
use agora_proto::records::v1 as records;
use agora_proto::response::v1 as response;
use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Multipart, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Gateway;
use crate::problem::Problem;
use crate::session::Caller;

pub type ApiResult<T> = Result<T, Problem>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Agora API",
        version = "1",
        description = "The hearing portal's REST API: everything a person can do in the portal. \
            Authenticate with `Authorization: Bearer <access token>` (from the identity service's login). \
            Errors are RFC 9457 problem details with a stable `type`.",
        license(name = "MPL-2.0")
    ),
    modifiers(&BearerAuth),
    components(schemas(Problem)),
    tags(
        (name = "hearings", description = "Hearings: the public's view and the caseworker's commands"),
        (name = "responses", description = "Responses: submitting, moderating, exporting"),
        (name = "me", description = "The caller's own account, responses, subscriptions and data"),
        (name = "reference", description = "Reference data: hearing types, subject and city areas"),
        (name = "events", description = "The integration events for systems that do not speak NATS: pages, Server-Sent Events, and webhooks")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// The API's routes and the OpenAPI document that describes exactly them.
pub fn router() -> (axum::Router<Gateway>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_hearings, create_hearing))
        .routes(routes!(get_hearing, update_hearing, delete_hearing))
        .routes(routes!(publish_hearing))
        .routes(routes!(conclude_hearing))
        .routes(routes!(invite))
        .routes(routes!(audit_trail))
        .routes(routes!(journalization))
        .routes(routes!(list_responses, submit_response))
        .routes(routes!(export))
        .routes(routes!(hearing_file, crate::admin_api::remove_file))
        .routes(routes!(crate::admin_api::attach_file))
        .routes(routes!(crate::admin_api::import_invitees))
        .routes(routes!(crate::admin_api::review_comments, crate::admin_api::add_review_comment))
        .routes(routes!(crate::admin_api::retry_journalization))
        .routes(routes!(crate::admin_api::reply))
        .routes(routes!(crate::admin_api::redact))
        .routes(routes!(crate::admin_api::current_terms, crate::admin_api::publish_terms))
        .routes(routes!(crate::admin_api::accept_terms))
        .routes(routes!(crate::admin_api::end_subscription))
        .routes(routes!(crate::admin_api::erase_me))
        .routes(routes!(crate::admin_api::define_subject_area))
        .routes(routes!(crate::admin_api::define_city_area))
        .routes(routes!(crate::admin_api::define_hearing_type))
        .routes(routes!(crate::admin_api::load_kle))
        .routes(routes!(crate::admin_api::users))
        .routes(routes!(crate::admin_api::assign_role, crate::admin_api::revoke_role))
        .routes(routes!(crate::admin_api::data_access))
        .routes(routes!(
            crate::admin_api::hearing_template,
            crate::admin_api::set_hearing_template,
            crate::admin_api::reset_hearing_template
        ))
        .routes(routes!(crate::admin_api::preview_hearing_template))
        .routes(routes!(crate::admin_api::test_hearing_template))
        .routes(routes!(crate::admin_api::template, crate::admin_api::set_template))
        .routes(routes!(crate::admin_api::add_reviewer, crate::admin_api::remove_reviewer))
        .routes(routes!(crate::admin_api::reassign_owner))
        .routes(routes!(crate::admin_api::remove_invitee))
        .routes(routes!(edit_response))
        .routes(routes!(approve_response))
        .routes(routes!(decline_response))
        .routes(routes!(withdraw_response))
        .routes(routes!(me))
        .routes(routes!(my_responses))
        .routes(routes!(my_subscriptions, subscribe))
        .routes(routes!(my_data))
        .routes(routes!(hearing_types))
        .routes(routes!(subject_areas))
        .routes(routes!(city_areas))
        .routes(routes!(crate::feed::events))
        .routes(routes!(crate::feed::stream))
        .routes(routes!(crate::feed::list_webhooks, crate::feed::register_webhook))
        .routes(routes!(crate::feed::remove_webhook))
        .routes(routes!(crate::feed::webhook_deliveries))
        .split_for_parts();
    // A path added by hand is in the document too, so it is not a route of the API only.
    openapi.paths.paths.retain(|path, _| path.starts_with("/api/v1/"));
    crate::problem::document_refusals(&mut openapi);
    let router = router.route("/api/v1/problems/{kind}", axum::routing::get(problem_page)).fallback(not_found);
    (router, openapi)
}

async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        Problem::new("not-found", format!("there is no API route {}", uri.path())).into_response()
    } else {
        crate::portal::not_found_page(uri).await
    }
}

async fn problem_page(Path(kind): Path<String>) -> Response {
    match crate::problem::KINDS.iter().find(|(name, ..)| *name == kind) {
        Some((name, status, title)) => (StatusCode::OK, format!("{name} (HTTP {status})\n\n{title}\n")).into_response(),
        None => Problem::new("not-found", format!("no problem type '{kind}'")).into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Extractors whose refusals are problems too.

/// JSON whose refusal is a problem naming what is wrong.
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

fn json_problem(rejection: axum::extract::rejection::JsonRejection) -> Problem {
    use axum::extract::rejection::JsonRejection as R;
    match rejection {
        R::MissingJsonContentType(_) => {
            Problem::new("unsupported-media-type", "the body must be JSON (Content-Type: application/json)")
        }
        R::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Problem::new("too-large", e.body_text()),
        other => Problem::invalid(other.body_text()),
    }
}

/// A query string whose refusal is a problem.
pub struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| Problem::invalid(e.body_text()))
    }
}

pub fn required(caller: &Caller) -> ApiResult<()> {
    if caller.is_logged_in() {
        Ok(())
    } else {
        Err(Problem::new("unauthenticated", "log in first: this needs an access token"))
    }
}

// ---------------------------------------------------------------------------------------------
// Hearings

/// A hearing in a list.
#[derive(Serialize, ToSchema)]
pub struct HearingSummary {
    pub id: String,
    /// Created, Draft, AwaitingStartDate, Active, AwaitingConclusion, Concluded
    pub status: String,
    pub hearing_type_id: String,
    pub hearing_type_name: String,
    pub internal: bool,
    pub closed: bool,
    pub title: String,
    pub summary: String,
    pub subject_area_id: String,
    pub city_area_id: String,
    pub kle_number: String,
    /// YYYY-MM-DD, meant in Europe/Copenhagen
    pub start_date: String,
    /// YYYY-MM-DD, meant in Europe/Copenhagen: responses are accepted through this day
    pub deadline: String,
    pub case_number: String,
    pub updated_at: String,
}

impl From<hearing::HearingSummary> for HearingSummary {
    fn from(h: hearing::HearingSummary) -> Self {
        Self {
            status: agora_proto::hearing_status_name(h.status).to_string(),
            id: h.hearing_id,
            hearing_type_id: h.hearing_type_id,
            hearing_type_name: h.hearing_type_name,
            internal: h.internal,
            closed: h.closed,
            title: h.title,
            summary: h.summary,
            subject_area_id: h.subject_area_id,
            city_area_id: h.city_area_id,
            kle_number: h.kle_number,
            start_date: h.start_date,
            deadline: h.deadline,
            case_number: h.case_number,
            updated_at: h.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct HearingPage {
    pub hearings: Vec<HearingSummary>,
    pub total: i64,
    pub page: u32,
    pub page_size: u32,
}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct HearingQuery {
    /// Free text in the title and summary.
    pub q: Option<String>,
    /// Comma-separated statuses (Active, AwaitingStartDate, …); default: every one the caller may see.
    pub status: Option<String>,
    pub hearing_type: Option<String>,
    pub subject_area: Option<String>,
    pub city_area: Option<String>,
    /// A KLE number or a prefix of one.
    pub kle: Option<String>,
    /// deadline (default), start_date, title or updated
    pub sort: Option<String>,
    pub descending: Option<bool>,
    /// 1-based
    pub page: Option<u32>,
    /// At most 100
    pub page_size: Option<u32>,
}

impl HearingQuery {
    pub fn to_request(&self) -> ApiResult<hearing::ListHearingsRequest> {
        let mut statuses = Vec::new();
        for name in self.status.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
            statuses.push(status_from_name(name)? as i32);
        }
        if let Some(sort) = &self.sort
            && !["deadline", "start_date", "title", "updated", ""].contains(&sort.as_str())
        {
            return Err(Problem::invalid(format!("sort: '{sort}' is not one of deadline, start_date, title, updated")));
        }
        Ok(hearing::ListHearingsRequest {
            statuses,
            hearing_type_id: self.hearing_type.clone().unwrap_or_default(),
            subject_area_id: self.subject_area.clone().unwrap_or_default(),
            city_area_id: self.city_area.clone().unwrap_or_default(),
            kle_number: self.kle.clone().unwrap_or_default(),
            text: self.q.clone().unwrap_or_default(),
            sort_by: self.sort.clone().unwrap_or_default(),
            descending: self.descending.unwrap_or(false),
            page: self.page.unwrap_or(1).max(1),
            page_size: self.page_size.unwrap_or(20).clamp(1, 100),
        })
    }
}

pub fn status_from_name(name: &str) -> ApiResult<hearing::HearingStatus> {
    use hearing::HearingStatus as S;
    Ok(match name {
        "Created" => S::Created,
        "Draft" => S::Draft,
        "AwaitingStartDate" => S::AwaitingStartDate,
        "Active" => S::Active,
        "AwaitingConclusion" => S::AwaitingConclusion,
        "Concluded" => S::Concluded,
        other => {
            return Err(Problem::invalid(format!(
                "status: '{other}' is not one of Created, Draft, AwaitingStartDate, Active, AwaitingConclusion, Concluded"
            )));
        }
    })
}

/// Hearings the caller may see, searched, filtered and sorted.
#[utoipa::path(get, path = "/api/v1/hearings", tag = "hearings", params(HearingQuery),
    responses((status = 200, body = HearingPage), (status = 400, body = Problem)))]
async fn list_hearings(
    State(gw): State<Gateway>,
    caller: Caller,
    ApiQuery(query): ApiQuery<HearingQuery>,
) -> ApiResult<Json<HearingPage>> {
    let request = query.to_request()?;
    let (page, page_size) = (request.page, request.page_size);
    let list = gw.services.hearing.clone().list_hearings(caller.grpc(request)).await?.into_inner();
    Ok(Json(HearingPage {
        hearings: list.hearings.into_iter().map(Into::into).collect(),
        total: list.total,
        page,
        page_size,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct Contact {
    pub name: String,
    pub email: String,
    pub phone: String,
}

#[derive(Serialize, ToSchema)]
pub struct Invitee {
    pub reference: String,
    /// email, person, company, group, user
    pub kind: String,
    pub label: String,
}

#[derive(Serialize, ToSchema)]
pub struct StoredFile {
    pub id: String,
    pub field: String,
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Serialize, ToSchema)]
pub struct FieldRule {
    pub key: String,
    pub label: String,
    /// text, images, documents
    pub kind: String,
    pub may_be_empty: bool,
    pub min_length: Option<u32>,
    pub max_length: Option<u32>,
}

/// A hearing with everything the caller may see of it.
#[derive(Serialize, ToSchema)]
pub struct Hearing {
    pub id: String,
    pub status: String,
    pub hearing_type_id: String,
    pub hearing_type_name: String,
    pub internal: bool,
    pub closed: bool,
    /// title, summary, body, esdh_title, conclusion, …
    pub fields: BTreeMap<String, String>,
    pub subject_area_id: String,
    pub city_area_id: String,
    pub kle_number: String,
    pub contact: Option<Contact>,
    pub start_date: String,
    pub deadline: String,
    /// The instant (RFC 3339, UTC) it opens for responses.
    pub opens_at: String,
    /// The instant (RFC 3339, UTC) it stops accepting responses.
    pub closes_at: String,
    pub owner_id: String,
    pub reviewer_ids: Vec<String>,
    /// Only for the owner, reviewers and administrators.
    pub invitees: Vec<Invitee>,
    pub files: Vec<StoredFile>,
    pub case_number: String,
    pub field_rules: Vec<FieldRule>,
}

impl From<hearing::Hearing> for Hearing {
    fn from(h: hearing::Hearing) -> Self {
        Self {
            status: agora_proto::hearing_status_name(h.status).to_string(),
            id: h.hearing_id,
            hearing_type_id: h.hearing_type_id,
            hearing_type_name: h.hearing_type_name,
            internal: h.internal,
            closed: h.closed,
            fields: h.fields.into_iter().collect(),
            subject_area_id: h.subject_area_id,
            city_area_id: h.city_area_id,
            kle_number: h.kle_number,
            contact: h.contact.map(|c| Contact { name: c.name, email: c.email, phone: c.phone }),
            start_date: h.start_date,
            deadline: h.deadline,
            opens_at: h.opens_at,
            closes_at: h.closes_at,
            owner_id: h.owner_id,
            reviewer_ids: h.reviewer_ids,
            invitees: h
                .invitees
                .into_iter()
                .map(|i| Invitee { reference: i.reference, kind: i.kind, label: i.label })
                .collect(),
            files: h.files.into_iter().map(Into::into).collect(),
            case_number: h.case_number,
            field_rules: h
                .field_rules
                .into_iter()
                .map(|r| FieldRule {
                    key: r.key,
                    label: r.label,
                    kind: r.kind,
                    may_be_empty: r.may_be_empty,
                    min_length: r.min_length,
                    max_length: r.max_length,
                })
                .collect(),
        }
    }
}

impl From<hearing::StoredFile> for StoredFile {
    fn from(f: hearing::StoredFile) -> Self {
        Self {
            id: f.file_id,
            field: f.field,
            name: f.name,
            content_type: f.content_type,
            size: f.size,
            sha256: f.sha256,
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct CreateHearing {
    pub hearing_type_id: String,
}

/// Creates a hearing from a hearing type; the caller becomes its owner.
#[utoipa::path(post, path = "/api/v1/hearings", tag = "hearings", request_body = CreateHearing,
    security(("bearer" = [])),
    responses((status = 201, body = Hearing), (status = 400, body = Problem), (status = 403, body = Problem)))]
async fn create_hearing(
    State(gw): State<Gateway>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateHearing>,
) -> ApiResult<(StatusCode, Json<Hearing>)> {
    required(&caller)?;
    let request = hearing::CreateHearingRequest { hearing_type_id: body.hearing_type_id };
    let created = gw.services.hearing.clone().create_hearing(caller.grpc(request)).await?.into_inner();
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// One hearing.
#[utoipa::path(get, path = "/api/v1/hearings/{hearing_id}", tag = "hearings",
    params(("hearing_id" = String, Path)),
    responses((status = 200, body = Hearing), (status = 404, body = Problem)))]
async fn get_hearing(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(hearing_id): Path<String>,
) -> ApiResult<Json<Hearing>> {
    let found = gw.services.hearing.clone().get_hearing(caller.grpc(hearing::GetHearingRequest { hearing_id })).await?;
    Ok(Json(found.into_inner().into()))
}

#[derive(Deserialize, ToSchema)]
pub struct ContactInput {
    pub name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub phone: String,
}

/// The fields to change; those left out stay as they are.
#[derive(Deserialize, ToSchema)]
pub struct UpdateHearing {
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    pub subject_area_id: Option<String>,
    pub city_area_id: Option<String>,
    pub kle_number: Option<String>,
    pub contact: Option<ContactInput>,
    pub start_date: Option<String>,
    pub deadline: Option<String>,
    pub closed: Option<bool>,
    /// Tell invitees and respondents about the change (after publication).
    #[serde(default)]
    pub notify_participants: bool,
}

/// Changes a hearing's fields and metadata (the owner).
#[utoipa::path(patch, path = "/api/v1/hearings/{hearing_id}", tag = "hearings", request_body = UpdateHearing,
    params(("hearing_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Hearing), (status = 400, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem)))]
async fn update_hearing(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(hearing_id): Path<String>,
    ApiJson(body): ApiJson<UpdateHearing>,
) -> ApiResult<Json<Hearing>> {
    required(&caller)?;
    let request = hearing::UpdateHearingRequest {
        hearing_id,
        fields: body.fields.into_iter().collect(),
        subject_area_id: body.subject_area_id,
        city_area_id: body.city_area_id,
        kle_number: body.kle_number,
        contact: body.contact.map(|c| hearing::ContactPerson { name: c.name, email: c.email, phone: c.phone }),
        start_date: body.start_date,
        deadline: body.deadline,
        closed: body.closed,
        notify_participants: body.notify_participants,
    };
    Ok(Json(gw.services.hearing.clone().update_hearing(caller.grpc(request)).await?.into_inner().into()))
}

/// Deletes a hearing (the owner in Created or Draft; an administrator at any time).
#[utoipa::path(delete, path = "/api/v1/hearings/{hearing_id}", tag = "hearings",
    params(("hearing_id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 403, body = Problem), (status = 409, body = Problem)))]
async fn delete_hearing(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(hearing_id): Path<String>,
) -> ApiResult<StatusCode> {
    required(&caller)?;
    gw.services.hearing.clone().delete_hearing(caller.grpc(hearing::HearingRef { hearing_id })).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Publishes a complete draft.
#[utoipa::path(post, path = "/api/v1/hearings/{hearing_id}/publish", tag = "hearings",
    params(("hearing_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Hearing), (status = 403, body = Problem), (status = 409, body = Problem)))]
async fn publish_hearing(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(hearing_id): Path<String>,
) -> ApiResult<Json<Hearing>> {
    required(&caller)?;
    let published =
        gw.services.hearing.clone().publish_hearing(caller.grpc(hearing::HearingRef { hearing_id })).await?;
    Ok(Json(published.into_inner().into()))
}

#[derive(Deserialize, ToSchema)]
pub struct Conclusion {
    /// The conclusion's text; left out, the hearing's conclusion field is used.
    pub conclusion: Option<String>,
}

/// Concludes a hearing that awaits its conclusion.
#[utoipa::path(post, path = "/api/v1/hearings/{hearing_id}/conclusion", tag = "hearings", request_body = Conclusion,
    params(("hearing_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Hearing), (status = 403, body = Problem), (status = 409, body = Problem)))]
async fn conclude_hearing(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(hearing_id): Path<String>,
    ApiJson(body): ApiJson<Conclusion>,
) -> ApiResult<Json<Hearing>> {
    required(&caller)?;
    let request = hearing::ConcludeHearingRequest { hearing_id, conclusion: body.conclusion };
    Ok(Json(gw.services.hearing.clone().conclude_hearing(caller.grpc(request)).await?.into_inner().into()))
}

#[derive(Deserialize, ToSchema)]
pub struct Participant {
    /// An e-mail address, a CPR or CVR number, `group:<id>` or `user:<id>`.
    pub identifier: String,
    #[serde(default)]
    pub label: String,
}

#[derive(Deserialize, ToSchema)]
pub struct Invitation {
    pub participants: Vec<Participant>,
}

/// Invites people, companies, groups or users to a hearing.
#[utoipa::path(post, path = "/api/v1/hearings/{hearing_id}/invitees", tag = "hearings", request_body = Invitation,
    params(("hearing_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Hearing), (status = 400, body = Problem), (status = 403, body = Problem)))]
async fn invite(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(hearing_id): Path<String>,
    ApiJson(body): ApiJson<Invitation>,
) -> ApiResult<Json<Hearing>> {
    required(&caller)?;
    let participants = body
        .participants
        .into_iter()
        .map(|p| hearing::Participant { identifier: p.identifier, label: p.label })
        .collect();
    let request = hearing::InviteRequest { hearing_id, participants };
    Ok(Json(gw.services.hearing.clone().invite_participants(caller.grpc(request)).await?.into_inner().into()))
}

/// One entry of a hearing's audit trail: an event as it was recorded.
#[derive(Serialize, ToSchema)]
pub struct AuditEntry {
    pub position: i64,
    pub sequence: i64,
    pub event_id: String,
    pub event_type: String,
    pub actor: String,
    pub command: String,
    pub recorded_at: String,
    pub data: serde_json::Value,
    /// The event's link in the stream's hash chain.
    pub hash: String,
}

/// A hearing's audit trail: every state change, who made it and when.
#[utoipa::path(get, path = "/api/v1/hearings/{hearing_id}/audit-trail", tag = "hearings",
    params(("hearing_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Vec<AuditEntry>), (status = 403, body = Problem)))]
async fn audit_trail(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(hearing_id): Path<String>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    required(&caller)?;
    let trail = gw.services.hearing.clone().get_audit_trail(caller.grpc(hearing::HearingRef { hearing_id })).await?;
    Ok(Json(
        trail
            .into_inner()
            .entries
            .into_iter()
            .map(|e| AuditEntry {
                position: e.position,
                sequence: e.sequence,
                event_id: e.event_id,
                event_type: e.event_type,
                actor: e.actor,
                command: e.command,
                recorded_at: e.recorded_at,
                data: serde_json::from_str(&e.data_json).unwrap_or(serde_json::Value::String(e.data_json)),
                hash: e.hash,
            })
            .collect(),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct JournalStep {
    /// e.g. open-case, hearing-text-1, response-<id>, close-case
    pub key: String,
    /// What the step does, in Danish.
    pub description: String,
    /// pending, running, done, retrying, parked
    pub state: String,
    pub attempts: i32,
    pub last_error: String,
    pub next_attempt_at: String,
    pub skipped_because: String,
}

/// How far a hearing is journalized in the records system.
#[derive(Serialize, ToSchema)]
pub struct Journalization {
    pub hearing_id: String,
    /// not_journalized, in_progress, journalized, failed
    pub status: String,
    pub case_number: String,
    pub journalized_at: String,
    pub steps_left: i32,
    /// Steps done; listed in `steps` unless `?steps=open` was asked for.
    pub steps_done: i32,
    pub errors: Vec<String>,
    pub steps: Vec<JournalStep>,
}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct JournalizationQuery {
    /// `open`: only the steps not done yet (what a status needs, for a hearing of thousands of
    /// filed responses); `all` (the default): every step.
    pub steps: Option<String>,
}

impl JournalizationQuery {
    /// The records service's request for `hearing_id` with the steps asked for.
    pub fn request(self, hearing_id: String) -> Result<records::JournalizationRequest, Problem> {
        let only_open_steps = match self.steps.as_deref() {
            None | Some("all") => false,
            Some("open") => true,
            Some(other) => {
                return Err(Problem::invalid(format!("steps: '{other}' is neither 'open' nor 'all'")));
            }
        };
        Ok(records::JournalizationRequest { hearing_id, only_open_steps })
    }
}

/// The hearing's journalization status (owner and administrators).
#[utoipa::path(get, path = "/api/v1/hearings/{hearing_id}/journalization", tag = "hearings",
    params(("hearing_id" = String, Path), JournalizationQuery), security(("bearer" = [])),
    responses((status = 200, body = Journalization), (status = 400, body = Problem), (status = 403, body = Problem)))]
async fn journalization(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(hearing_id): Path<String>,
    ApiQuery(query): ApiQuery<JournalizationQuery>,
) -> ApiResult<Json<Journalization>> {
    required(&caller)?;
    let request = query.request(hearing_id)?;
    let j = gw.services.records.clone().get_journalization(caller.grpc(request)).await?.into_inner();
    Ok(Json(journalization_json(j)))
}

pub fn journalization_json(j: records::Journalization) -> Journalization {
    let status = match records::JournalizationStatus::try_from(j.status) {
        Ok(records::JournalizationStatus::InProgress) => "in_progress",
        Ok(records::JournalizationStatus::Journalized) => "journalized",
        Ok(records::JournalizationStatus::Failed) => "failed",
        _ => "not_journalized",
    };
    Journalization {
        hearing_id: j.hearing_id,
        status: status.into(),
        case_number: j.case_number,
        journalized_at: j.journalized_at,
        steps_left: j.steps_left,
        steps_done: j.steps_done,
        errors: j.errors,
        steps: j
            .steps
            .into_iter()
            .map(|s| JournalStep {
                state: step_state(s.state).into(),
                key: s.key,
                description: s.description,
                attempts: s.attempts,
                last_error: s.last_error,
                next_attempt_at: s.next_attempt_at,
                skipped_because: s.skipped_because,
            })
            .collect(),
    }
}

fn step_state(state: i32) -> &'static str {
    use records::StepState as S;
    match S::try_from(state) {
        Ok(S::Pending) => "pending",
        Ok(S::Running) => "running",
        Ok(S::Done) => "done",
        Ok(S::Retrying) => "retrying",
        Ok(S::Parked) => "parked",
        _ => "unknown",
    }
}

/// A hearing's document or image.
#[utoipa::path(get, path = "/api/v1/hearings/{hearing_id}/files/{file_id}", tag = "hearings",
    params(("hearing_id" = String, Path), ("file_id" = String, Path)),
    responses((status = 200, description = "the file", content_type = "*/*"), (status = 404, body = Problem)))]
pub async fn hearing_file(
    State(gw): State<Gateway>,
    caller: Caller,
    Path((hearing_id, file_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let file =
        gw.services.hearing.clone().get_file(caller.grpc(hearing::GetFileRequest { hearing_id, file_id })).await?;
    let file = file.into_inner();
    let meta = file.file.unwrap_or_default();
    Ok(download(&meta.content_type, &meta.name, Body::from(file.content)))
}

/// A download that the browser saves rather than renders (a stored file is never run as a page).
fn download(content_type: &str, file_name: &str, body: Body) -> Response {
    let safe_name: String =
        file_name.chars().map(|c| if c.is_ascii_alphanumeric() || ".-_ ".contains(c) { c } else { '_' }).collect();
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{safe_name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox; default-src 'none'"));
    response
}

// ---------------------------------------------------------------------------------------------
// Responses

#[derive(Serialize, ToSchema)]
pub struct ResponseItem {
    pub id: String,
    pub hearing_id: String,
    pub number: i64,
    /// Pending, Approved, Declined, Withdrawn
    pub status: String,
    /// Only for the author, the owner and administrators.
    pub author_id: String,
    /// The published (redacted) text for others.
    pub text: String,
    pub accepted_at: String,
    pub on_behalf_of: String,
    /// The owner's public reply.
    pub reply: String,
}

impl From<response::Response> for ResponseItem {
    fn from(r: response::Response) -> Self {
        Self {
            id: r.response_id,
            hearing_id: r.hearing_id,
            number: r.number,
            status: r.status,
            author_id: r.author_id,
            text: r.text,
            accepted_at: r.accepted_at,
            on_behalf_of: r.on_behalf_of,
            reply: r.reply,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ResponsePage {
    pub responses: Vec<ResponseItem>,
    pub total: i64,
}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct ResponseQuery {
    /// Pending, Approved, Declined or Withdrawn; default: every status the caller may see.
    pub status: Option<String>,
    pub page: Option<u32>,
    pub page_size: Option<u32>,
}

/// The responses to a hearing the caller may see (the public: approved ones, without authors).
#[utoipa::path(get, path = "/api/v1/hearings/{hearing_id}/responses", tag = "responses",
    params(("hearing_id" = String, Path), ResponseQuery),
    responses((status = 200, body = ResponsePage), (status = 404, body = Problem)))]
async fn list_responses(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(hearing_id): Path<String>,
    ApiQuery(query): ApiQuery<ResponseQuery>,
) -> ApiResult<Json<ResponsePage>> {
    let request = response::ListResponsesRequest {
        hearing_id,
        status: query.status.unwrap_or_default(),
        page: query.page.unwrap_or(1).max(1),
        page_size: query.page_size.unwrap_or(50).clamp(1, 200),
    };
    let list = gw.services.response.clone().list_responses(caller.grpc(request)).await?.into_inner();
    Ok(Json(ResponsePage { responses: list.responses.into_iter().map(Into::into).collect(), total: list.total }))
}

/// An attachment sent as JSON.
#[derive(Deserialize, ToSchema)]
pub struct AttachmentInput {
    pub name: String,
    /// The file's bytes in standard base64.
    pub content_base64: String,
}

/// A response as JSON (attachments in base64); multipart/form-data takes the same fields with
/// the files as parts named `attachment`.
#[derive(Deserialize, ToSchema, Default)]
pub struct SubmitResponse {
    #[serde(default)]
    pub text: String,
    /// The version of the terms the respondent accepted.
    pub terms_version: String,
    #[serde(default)]
    pub on_behalf_of_company: bool,
    #[serde(default)]
    pub on_behalf_of_organisation: String,
    /// The owner registers a response received on paper.
    #[serde(default)]
    pub registered_by_owner: bool,
    #[serde(default)]
    pub attachments: Vec<AttachmentInput>,
}

/// The receipt of an accepted response.
#[derive(Serialize, ToSchema)]
pub struct Receipt {
    pub response_id: String,
    pub hearing_id: String,
    pub number: i64,
    /// SHA-256 of the response's content, as the receipt mail has it.
    pub content_sha256: String,
    pub accepted_at: String,
}

impl From<response::Receipt> for Receipt {
    fn from(r: response::Receipt) -> Self {
        Self {
            response_id: r.response_id,
            hearing_id: r.hearing_id,
            number: r.number,
            content_sha256: r.content_sha256,
            accepted_at: r.accepted_at,
        }
    }
}

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Submits a response. The `Idempotency-Key` header is required: a retry with the same key gets
/// the first receipt, never a second response.
#[utoipa::path(post, path = "/api/v1/hearings/{hearing_id}/responses", tag = "responses",
    params(("hearing_id" = String, Path),
        ("Idempotency-Key" = String, Header, description = "A value of the client's choosing, the same on every retry of this response")),
    request_body(content(
        (SubmitResponse = "application/json"),
        (SubmitResponse = "multipart/form-data")
    )),
    security(("bearer" = [])),
    responses((status = 201, body = Receipt), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 409, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem)))]
async fn submit_response(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(hearing_id): Path<String>,
    request: Request,
) -> ApiResult<(StatusCode, Json<Receipt>)> {
    required(&caller)?;
    let key = idempotency_key(request.headers())?;
    let body = read_response_body(request, &gw).await?;
    let receipt = submit(&gw, &caller, hearing_id, key, body).await?;
    Ok((StatusCode::CREATED, Json(receipt.into())))
}

pub fn idempotency_key(headers: &HeaderMap) -> ApiResult<String> {
    let key = headers.get(IDEMPOTENCY_KEY).and_then(|v| v.to_str().ok()).map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > 200 {
        return Err(Problem::invalid(
            "the Idempotency-Key header is required (at most 200 characters): a value of your choosing, the same when you retry",
        ));
    }
    Ok(key.to_string())
}

/// Sends a response to the response service: the API's and the portal's way alike.
pub async fn submit(
    gw: &Gateway,
    caller: &Caller,
    hearing_id: String,
    idempotency_key: String,
    body: SubmitResponse,
) -> ApiResult<response::Receipt> {
    let mut attachments = Vec::with_capacity(body.attachments.len());
    for (i, a) in body.attachments.into_iter().enumerate() {
        let content = base64::engine::general_purpose::STANDARD
            .decode(a.content_base64.as_bytes())
            .map_err(|e| Problem::invalid(format!("attachments[{i}].content_base64 is not base64: {e}")))?;
        attachments.push(response::File { name: a.name, content });
    }
    submit_files(
        gw,
        caller,
        hearing_id,
        idempotency_key,
        body.text,
        body.terms_version,
        body.on_behalf_of_company,
        body.on_behalf_of_organisation,
        body.registered_by_owner,
        attachments,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
pub async fn submit_files(
    gw: &Gateway,
    caller: &Caller,
    hearing_id: String,
    idempotency_key: String,
    text: String,
    terms_version: String,
    on_behalf_of_company: bool,
    on_behalf_of_organisation: String,
    registered_by_owner: bool,
    attachments: Vec<response::File>,
) -> ApiResult<response::Receipt> {
    let request = response::SubmitResponseRequest {
        hearing_id,
        idempotency_key,
        text,
        terms_version,
        on_behalf_of_company,
        on_behalf_of_organisation,
        registered_by_owner,
        attachments,
    };
    Ok(gw.services.response.clone().submit_response(caller.grpc(request)).await?.into_inner())
}

/// A response body as JSON or as multipart/form-data; files stay bytes (not base64) in the latter.
async fn read_response_body(request: Request, gw: &Gateway) -> ApiResult<SubmitResponse> {
    let content_type =
        request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::from_request(request, gw).await.map_err(|e| Problem::invalid(e.body_text()))?;
        let form = read_multipart(multipart).await?;
        Ok(SubmitResponse {
            text: form.text("text"),
            terms_version: form.text("terms_version"),
            on_behalf_of_company: form.text("on_behalf_of_company") == "true",
            on_behalf_of_organisation: form.text("on_behalf_of_organisation"),
            registered_by_owner: form.text("registered_by_owner") == "true",
            attachments: form
                .files
                .into_iter()
                .map(|f| AttachmentInput {
                    name: f.name,
                    content_base64: base64::engine::general_purpose::STANDARD.encode(f.content),
                })
                .collect(),
        })
    } else {
        let ApiJson(body) = ApiJson::<SubmitResponse>::from_request(request, gw).await?;
        Ok(body)
    }
}

/// The parts of a multipart form: text fields by name, and the files (parts named `attachment`).
#[derive(Default)]
pub struct FormParts {
    pub fields: BTreeMap<String, String>,
    pub files: Vec<response::File>,
}

impl FormParts {
    pub fn text(&self, name: &str) -> String {
        self.fields.get(name).cloned().unwrap_or_default()
    }
}

pub async fn read_multipart(mut multipart: Multipart) -> ApiResult<FormParts> {
    let mut form = FormParts::default();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(Problem::new("too-large", e.body_text()));
            }
            Err(e) => return Err(Problem::invalid(format!("the multipart body is malformed: {}", e.body_text()))),
        };
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let data = field.bytes().await.map_err(|e| match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Problem::new("too-large", e.body_text()),
            _ => Problem::invalid(format!("the multipart body is malformed: {}", e.body_text())),
        })?;
        match (name.as_str(), file_name) {
            // A file input left empty still sends a part, without a name or bytes.
            ("attachment", Some(file_name)) if file_name.is_empty() && data.is_empty() => {}
            ("attachment", Some(file_name)) => {
                form.files.push(response::File { name: file_name, content: data.to_vec() })
            }
            ("attachment", None) => return Err(Problem::invalid("attachment: a part named attachment must be a file")),
            (_, _) => {
                let text = String::from_utf8(data.to_vec())
                    .map_err(|_| Problem::invalid(format!("{name}: the field is not UTF-8 text")))?;
                form.fields.insert(name, text);
            }
        }
    }
    Ok(form)
}

#[derive(Deserialize, ToSchema)]
pub struct EditResponse {
    pub text: String,
}

/// The author changes their response while the hearing is open.
#[utoipa::path(patch, path = "/api/v1/responses/{response_id}", tag = "responses", request_body = EditResponse,
    params(("response_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ResponseItem), (status = 403, body = Problem), (status = 409, body = Problem)))]
async fn edit_response(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(response_id): Path<String>,
    ApiJson(body): ApiJson<EditResponse>,
) -> ApiResult<Json<ResponseItem>> {
    required(&caller)?;
    let request = response::EditResponseRequest { response_id, text: body.text };
    Ok(Json(gw.services.response.clone().edit_response(caller.grpc(request)).await?.into_inner().into()))
}

/// The owner approves a response for publication.
#[utoipa::path(post, path = "/api/v1/responses/{response_id}/approve", tag = "responses",
    params(("response_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ResponseItem), (status = 403, body = Problem), (status = 409, body = Problem)))]
async fn approve_response(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(response_id): Path<String>,
) -> ApiResult<Json<ResponseItem>> {
    required(&caller)?;
    let request = response::ResponseRef { response_id };
    Ok(Json(gw.services.response.clone().approve_response(caller.grpc(request)).await?.into_inner().into()))
}

#[derive(Deserialize, ToSchema)]
pub struct Decline {
    pub reason: String,
}

/// The owner declines a response, with a reason the respondent is told.
#[utoipa::path(post, path = "/api/v1/responses/{response_id}/decline", tag = "responses", request_body = Decline,
    params(("response_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ResponseItem), (status = 400, body = Problem), (status = 403, body = Problem)))]
async fn decline_response(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(response_id): Path<String>,
    ApiJson(body): ApiJson<Decline>,
) -> ApiResult<Json<ResponseItem>> {
    required(&caller)?;
    let request = response::DeclineResponseRequest { response_id, reason: body.reason };
    Ok(Json(gw.services.response.clone().decline_response(caller.grpc(request)).await?.into_inner().into()))
}

/// The author withdraws their response while the hearing is open.
#[utoipa::path(post, path = "/api/v1/responses/{response_id}/withdraw", tag = "responses",
    params(("response_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ResponseItem), (status = 403, body = Problem), (status = 409, body = Problem)))]
async fn withdraw_response(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(response_id): Path<String>,
) -> ApiResult<Json<ResponseItem>> {
    required(&caller)?;
    let request = response::ResponseRef { response_id };
    Ok(Json(gw.services.response.clone().withdraw_response(caller.grpc(request)).await?.into_inner().into()))
}

/// The kinds of export, by the name the API gives them.
pub const EXPORTS: &[(&str, response::ExportKind)] = &[
    ("responses.xlsx", response::ExportKind::ResponsesXlsx),
    ("respondents.xlsx", response::ExportKind::RespondentsXlsx),
    ("hearing.pdf", response::ExportKind::HearingPdf),
    ("responses.pdf", response::ExportKind::ResponsesPdf),
    ("attachments.zip", response::ExportKind::AttachmentsZip),
];

/// The export's name in the document: one of [`EXPORTS`], so that a client (and schemathesis)
/// knows the names that can answer 200 instead of guessing at a string.
pub struct ExportName;

impl utoipa::PartialSchema for ExportName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(EXPORTS.iter().map(|(name, _)| *name)))
            .into()
    }
}

impl utoipa::ToSchema for ExportName {}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Only the approved responses.
    pub approved_only: Option<bool>,
}

/// Exports a hearing's responses: responses.xlsx, respondents.xlsx, hearing.pdf, responses.pdf or attachments.zip.
#[utoipa::path(get, path = "/api/v1/hearings/{hearing_id}/exports/{kind}", tag = "responses",
    params(("hearing_id" = String, Path), ("kind" = inline(ExportName), Path), ExportQuery), security(("bearer" = [])),
    responses((status = 200, description = "the export: a workbook (application/vnd.openxmlformats-officedocument.spreadsheetml.sheet), a PDF or a zip", content_type = "*/*"),
        (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn export(
    State(gw): State<Gateway>,
    caller: Caller,
    Path((hearing_id, kind)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> ApiResult<Response> {
    required(&caller)?;
    let kind = EXPORTS.iter().find(|(name, _)| *name == kind).map(|(_, k)| *k).ok_or_else(|| {
        let names: Vec<&str> = EXPORTS.iter().map(|(n, _)| *n).collect();
        Problem::invalid(format!("kind: '{kind}' is not one of {}", names.join(", ")))
    })?;
    let request =
        response::ExportRequest { hearing_id, kind: kind as i32, approved_only: query.approved_only.unwrap_or(false) };
    let mut chunks = gw.services.response.clone().export_responses(caller.grpc(request)).await?.into_inner();
    let first = chunks.message().await?.unwrap_or_default();
    let (name, content_type) = (first.file_name.clone(), first.content_type.clone());
    let rest = futures::stream::unfold(chunks, |mut chunks| async move {
        match chunks.message().await {
            Ok(Some(chunk)) => Some((Ok::<_, tonic::Status>(chunk.data), chunks)),
            Ok(None) => None,
            Err(status) => Some((Err(status), chunks)),
        }
    });
    let body = futures::StreamExt::chain(futures::stream::once(async move { Ok(first.data) }), rest);
    Ok(download(&content_type, &name, Body::from_stream(body)))
}

// ---------------------------------------------------------------------------------------------
// The caller's own

#[derive(Serialize, ToSchema)]
pub struct Me {
    pub user_id: String,
    /// employee, citizen or company
    pub capacity: String,
    pub roles: Vec<String>,
    pub name: String,
    pub terms_accepted: String,
    pub must_accept_terms: bool,
}

impl From<identity::User> for Me {
    fn from(u: identity::User) -> Self {
        Self {
            user_id: u.user_id,
            capacity: u.capacity,
            roles: u.roles,
            name: u.name,
            terms_accepted: u.terms_accepted,
            must_accept_terms: u.must_accept_terms,
        }
    }
}

/// The caller's account.
#[utoipa::path(get, path = "/api/v1/me", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = Problem)))]
async fn me(State(gw): State<Gateway>, caller: Caller) -> ApiResult<Json<Me>> {
    required(&caller)?;
    Ok(Json(gw.services.identity.clone().who_am_i(caller.grpc(identity::WhoAmIRequest {})).await?.into_inner().into()))
}

/// The caller's own responses, in every hearing.
#[utoipa::path(get, path = "/api/v1/me/responses", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = ResponsePage), (status = 401, body = Problem)))]
async fn my_responses(State(gw): State<Gateway>, caller: Caller) -> ApiResult<Json<ResponsePage>> {
    required(&caller)?;
    let list = gw.services.response.clone().my_responses(caller.grpc(response::MyResponsesRequest {})).await?;
    let list = list.into_inner();
    Ok(Json(ResponsePage { responses: list.responses.into_iter().map(Into::into).collect(), total: list.total }))
}

#[derive(Serialize, ToSchema)]
pub struct Subscription {
    pub id: String,
    /// subject_area, kle, city_area or hearing
    pub topic: String,
    pub value: String,
    /// pending, active or ended
    pub status: String,
}

impl From<notification::Subscription> for Subscription {
    fn from(s: notification::Subscription) -> Self {
        Self { id: s.subscription_id, topic: s.topic, value: s.value, status: s.status }
    }
}

/// The caller's subscriptions.
#[utoipa::path(get, path = "/api/v1/me/subscriptions", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = Vec<Subscription>), (status = 401, body = Problem)))]
async fn my_subscriptions(State(gw): State<Gateway>, caller: Caller) -> ApiResult<Json<Vec<Subscription>>> {
    required(&caller)?;
    let list =
        gw.services.notification.clone().my_subscriptions(caller.grpc(notification::MySubscriptionsRequest {})).await?;
    Ok(Json(list.into_inner().subscriptions.into_iter().map(Into::into).collect()))
}

#[derive(Deserialize, ToSchema)]
pub struct Subscribe {
    /// subject_area, kle, city_area or hearing
    pub topic: String,
    pub value: String,
    /// Without an account: the address to write to, confirmed by a link first.
    #[serde(default)]
    pub email: String,
    /// da (default) or en
    #[serde(default)]
    pub language: String,
}

/// Follows a subject area, KLE number, city area or hearing (with an account, or an e-mail
/// address confirmed by a link).
#[utoipa::path(post, path = "/api/v1/me/subscriptions", tag = "me", request_body = Subscribe,
    responses((status = 201, body = Subscription), (status = 400, body = Problem)))]
async fn subscribe(
    State(gw): State<Gateway>,
    caller: Caller,
    ApiJson(body): ApiJson<Subscribe>,
) -> ApiResult<(StatusCode, Json<Subscription>)> {
    let request = notification::SubscribeRequest {
        topic: body.topic,
        value: body.value,
        email: body.email,
        language: body.language,
    };
    let made = gw.services.notification.clone().subscribe(caller.grpc(request)).await?.into_inner();
    Ok((StatusCode::CREATED, Json(made.into())))
}

/// Everything the identity service holds of the caller, as JSON (the right of access).
#[utoipa::path(get, path = "/api/v1/me/data", tag = "me", security(("bearer" = [])),
    responses((status = 200, description = "the caller's data", content_type = "application/json"), (status = 401, body = Problem)))]
async fn my_data(State(gw): State<Gateway>, caller: Caller) -> ApiResult<Response> {
    required(&caller)?;
    let data = gw.services.identity.clone().export_my_data(caller.grpc(identity::ExportMyDataRequest {})).await?;
    let json = data.into_inner().json;
    let mut response = download("application/json", "agora-my-data.json", Body::from(json));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// Reference data

#[derive(Serialize, ToSchema)]
pub struct HearingType {
    pub id: String,
    pub name: String,
    pub internal: bool,
}

#[derive(Serialize, ToSchema)]
pub struct NamedItem {
    pub id: String,
    pub name: String,
}

/// The hearing types a hearing can be created from.
#[utoipa::path(get, path = "/api/v1/reference/hearing-types", tag = "reference",
    responses((status = 200, body = Vec<HearingType>)))]
async fn hearing_types(State(gw): State<Gateway>, caller: Caller) -> ApiResult<Json<Vec<HearingType>>> {
    let list =
        gw.services.reference.clone().list_hearing_types(caller.grpc(hearing::ListReferenceRequest::default())).await?;
    Ok(Json(
        list.into_inner()
            .hearing_types
            .into_iter()
            .filter(|t| !t.retired)
            .map(|t| HearingType { id: t.id, name: t.name, internal: t.internal })
            .collect(),
    ))
}

pub async fn named_items(gw: &Gateway, caller: &Caller, city: bool) -> ApiResult<Vec<NamedItem>> {
    let mut reference = gw.services.reference.clone();
    let request = caller.grpc(hearing::ListReferenceRequest::default());
    let list =
        if city { reference.list_city_areas(request).await? } else { reference.list_subject_areas(request).await? };
    Ok(list
        .into_inner()
        .items
        .into_iter()
        .filter(|i| !i.retired)
        .map(|i| NamedItem { id: i.id, name: i.name })
        .collect())
}

/// The subject areas hearings are filed under.
#[utoipa::path(get, path = "/api/v1/reference/subject-areas", tag = "reference",
    responses((status = 200, body = Vec<NamedItem>)))]
async fn subject_areas(State(gw): State<Gateway>, caller: Caller) -> ApiResult<Json<Vec<NamedItem>>> {
    Ok(Json(named_items(&gw, &caller, false).await?))
}

/// The city areas hearings concern.
#[utoipa::path(get, path = "/api/v1/reference/city-areas", tag = "reference",
    responses((status = 200, body = Vec<NamedItem>)))]
async fn city_areas(State(gw): State<Gateway>, caller: Caller) -> ApiResult<Json<Vec<NamedItem>>> {
    Ok(Json(named_items(&gw, &caller, true).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_describes_every_route_and_is_openapi_3_1() {
        let (_, openapi) = router();
        let json = serde_json::to_value(&openapi).expect("serializes");
        assert!(json["openapi"].as_str().unwrap_or_default().starts_with("3.1"), "{}", json["openapi"]);
        let paths = json["paths"].as_object().expect("paths");
        for path in ["/api/v1/hearings", "/api/v1/hearings/{hearing_id}/responses", "/api/v1/me/data"] {
            assert!(paths.contains_key(path), "{path} is documented");
        }
        assert!(json["components"]["securitySchemes"]["bearer"].is_object());
        let submit = &paths["/api/v1/hearings/{hearing_id}/responses"]["post"];
        let content = submit["requestBody"]["content"].as_object().expect("content");
        assert!(content.contains_key("application/json") && content.contains_key("multipart/form-data"));
    }

    #[test]
    fn an_unknown_status_or_sort_is_named_in_the_refusal() {
        let query = HearingQuery { status: Some("Active,Open".into()), ..Default::default() };
        let problem = query.to_request().expect_err("refused");
        assert!(problem.detail.contains("'Open'"), "{}", problem.detail);
        let query = HearingQuery { sort: Some("popularity".into()), ..Default::default() };
        assert!(query.to_request().expect_err("refused").detail.contains("popularity"));
        let query = HearingQuery {
            status: Some("Active, AwaitingStartDate".into()),
            page_size: Some(1000),
            ..Default::default()
        };
        let request = query.to_request().expect("accepted");
        assert_eq!(request.statuses.len(), 2);
        assert_eq!(request.page_size, 100, "page size capped");
    }

    #[test]
    fn a_missing_or_huge_idempotency_key_is_refused() {
        let mut headers = HeaderMap::new();
        assert!(idempotency_key(&headers).is_err());
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("retry-7"));
        assert_eq!(idempotency_key(&headers).expect("accepted"), "retry-7");
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_str(&"x".repeat(201)).expect("header"));
        assert!(idempotency_key(&headers).is_err());
    }

    /// A client reads the names of the exports from the document, not from the prose.
    #[test]
    fn the_document_names_the_exports_a_hearing_has() {
        let (_, openapi) = router();
        let document = serde_json::to_value(&openapi).expect("the document is JSON");
        let parameters = &document["paths"]["/api/v1/hearings/{hearing_id}/exports/{kind}"]["get"]["parameters"];
        let kind = parameters.as_array().into_iter().flatten().find(|p| p["name"] == "kind").expect("a kind parameter");
        let names: Vec<&str> = EXPORTS.iter().map(|(name, _)| *name).collect();
        assert_eq!(kind["schema"]["enum"], serde_json::json!(names));
        assert_eq!(kind["schema"]["type"], "string");
    }
}
