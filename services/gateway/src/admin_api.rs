//! The rest of the API's write parity: moderation's reply and redaction, a hearing's files,
//! CSV invitations and review comments, retrying journalization, the terms, one's own erasure,
//! and the administrator's reference data, KLE tree, roles, users and read-access log. Each
//! handler passes the caller's token on; the services decide who may.

use agora_proto::hearing::v1 as hearing;
use agora_proto::identity::v1 as identity;
use agora_proto::notification::v1 as notification;
use agora_proto::response::v1 as response;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Gateway;
use crate::api::{ApiJson, ApiQuery, ApiResult, Hearing, ResponseItem, StoredFile, read_multipart, required};
use crate::problem::Problem;
use crate::session::Caller;

// ---------------------------------------------------------------------------------------------
// Moderation and the hearing's own

#[derive(Deserialize, ToSchema)]
pub struct Reply {
    /// The owner's public reply to the response.
    pub text: String,
}

/// The owner replies to a response in public.
#[utoipa::path(post, path = "/api/v1/responses/{response_id}/reply", tag = "responses", request_body = Reply,
    params(("response_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ResponseItem), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn reply(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(response_id): Path<String>,
    ApiJson(body): ApiJson<Reply>,
) -> ApiResult<Json<ResponseItem>> {
    required(&caller)?;
    let request = response::ReplyRequest { response_id, text: body.text };
    Ok(Json(gw.services.response.clone().reply_to_response(caller.grpc(request)).await?.into_inner().into()))
}

#[derive(Deserialize, ToSchema)]
pub struct Redact {
    /// The text as it is to be published.
    pub redacted_text: String,
    pub reason: String,
}

/// The owner redacts what is published of a response, with a reason.
#[utoipa::path(post, path = "/api/v1/responses/{response_id}/redact", tag = "responses", request_body = Redact,
    params(("response_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = ResponseItem), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn redact(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(response_id): Path<String>,
    ApiJson(body): ApiJson<Redact>,
) -> ApiResult<Json<ResponseItem>> {
    required(&caller)?;
    let request =
        response::RedactResponseRequest { response_id, redacted_text: body.redacted_text, reason: body.reason };
    Ok(Json(gw.services.response.clone().redact_response(caller.grpc(request)).await?.into_inner().into()))
}

/// Adds a document or image to a hearing: multipart with a `field` part (documents or images)
/// and the file in a part named `attachment`.
#[utoipa::path(post, path = "/api/v1/hearings/{hearing_id}/files", tag = "hearings",
    params(("hearing_id" = String, Path)), security(("bearer" = [])),
    request_body(content_type = "multipart/form-data", description = "field=documents|images, attachment=the file"),
    responses((status = 201, body = StoredFile), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn attach_file(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(hearing_id): Path<String>,
    multipart: Multipart,
) -> ApiResult<(StatusCode, Json<StoredFile>)> {
    required(&caller)?;
    let mut form = read_multipart(multipart).await?;
    let file = form.files.pop().ok_or_else(|| Problem::invalid("attachment: the file is missing"))?;
    let request = hearing::AttachFileRequest {
        hearing_id,
        field: form.text("field"),
        file_name: file.name,
        content: file.content,
    };
    let attached = gw.services.hearing.clone().attach_file(caller.grpc(request)).await?.into_inner();
    let file = attached.file.ok_or_else(|| Problem::new("internal", "the hearing service returned no file"))?;
    Ok((StatusCode::CREATED, Json(file.into())))
}

/// Removes a document or image from a hearing.
#[utoipa::path(delete, path = "/api/v1/hearings/{hearing_id}/files/{file_id}", tag = "hearings",
    params(("hearing_id" = String, Path), ("file_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Hearing), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn remove_file(
    State(gw): State<Gateway>,
    caller: Caller,
    Path((hearing_id, file_id)): Path<(String, String)>,
) -> ApiResult<Json<Hearing>> {
    required(&caller)?;
    let request = hearing::RemoveFileRequest { hearing_id, file_id };
    Ok(Json(gw.services.hearing.clone().remove_file(caller.grpc(request)).await?.into_inner().into()))
}

#[derive(Serialize, ToSchema)]
pub struct RowError {
    pub row: u32,
    pub message: String,
}

/// What an import of invitees did, row by row.
#[derive(Serialize, ToSchema)]
pub struct ImportReport {
    pub added: u32,
    pub already_invited: u32,
    pub errors: Vec<RowError>,
}

/// Invites from a CSV file (one invitee a row: identifier and label); the report says what
/// each row came to.
#[utoipa::path(post, path = "/api/v1/hearings/{hearing_id}/invitees/csv", tag = "hearings",
    params(("hearing_id" = String, Path)), security(("bearer" = [])),
    request_body(content = String, content_type = "text/csv"),
    responses((status = 200, body = ImportReport), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn import_invitees(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(hearing_id): Path<String>,
    csv: Bytes,
) -> ApiResult<Json<ImportReport>> {
    required(&caller)?;
    let request = hearing::ImportInviteesRequest { hearing_id, csv: csv.to_vec() };
    let report = gw.services.hearing.clone().import_invitees(caller.grpc(request)).await?.into_inner();
    Ok(Json(ImportReport {
        added: report.added,
        already_invited: report.already_invited,
        errors: report.errors.into_iter().map(|e| RowError { row: e.row, message: e.message }).collect(),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct ReviewComment {
    pub author_id: String,
    pub text: String,
    pub at: String,
}

#[derive(Deserialize, ToSchema)]
pub struct NewReviewComment {
    pub text: String,
}

fn comments(list: response::ReviewComments) -> Vec<ReviewComment> {
    list.comments.into_iter().map(|c| ReviewComment { author_id: c.author_id, text: c.text, at: c.at }).collect()
}

/// The owner's and reviewers' comments on a hearing's responses (not public).
#[utoipa::path(get, path = "/api/v1/hearings/{hearing_id}/review-comments", tag = "responses",
    params(("hearing_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Vec<ReviewComment>), (status = 403, body = Problem)))]
pub async fn review_comments(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(hearing_id): Path<String>,
) -> ApiResult<Json<Vec<ReviewComment>>> {
    required(&caller)?;
    let request = response::HearingRef { hearing_id };
    Ok(Json(comments(gw.services.response.clone().list_review_comments(caller.grpc(request)).await?.into_inner())))
}

/// Adds a review comment.
#[utoipa::path(post, path = "/api/v1/hearings/{hearing_id}/review-comments", tag = "responses",
    params(("hearing_id" = String, Path)), request_body = NewReviewComment, security(("bearer" = [])),
    responses((status = 201, body = Vec<ReviewComment>), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn add_review_comment(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(hearing_id): Path<String>,
    ApiJson(body): ApiJson<NewReviewComment>,
) -> ApiResult<(StatusCode, Json<Vec<ReviewComment>>)> {
    required(&caller)?;
    let request = response::ReviewCommentRequest { hearing_id, text: body.text };
    let list = gw.services.response.clone().add_review_comment(caller.grpc(request)).await?.into_inner();
    Ok((StatusCode::CREATED, Json(comments(list))))
}

/// Retries a hearing's parked journalization steps (owner and administrators).
#[utoipa::path(post, path = "/api/v1/hearings/{hearing_id}/journalization/retry", tag = "hearings",
    params(("hearing_id" = String, Path), crate::api::JournalizationQuery), security(("bearer" = [])),
    responses((status = 200, body = crate::api::Journalization), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn retry_journalization(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(hearing_id): Path<String>,
    ApiQuery(query): ApiQuery<crate::api::JournalizationQuery>,
) -> ApiResult<Json<crate::api::Journalization>> {
    required(&caller)?;
    let request = query.request(hearing_id)?;
    let j = gw.services.records.clone().retry_parked_steps(caller.grpc(request)).await?.into_inner();
    Ok(Json(crate::api::journalization_json(j)))
}

// ---------------------------------------------------------------------------------------------
// Terms, subscriptions and erasure

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Terms {
    pub version: String,
    pub text: String,
    #[serde(default)]
    pub published_at: String,
}

/// The terms for responses in force.
#[utoipa::path(get, path = "/api/v1/terms", tag = "me", responses((status = 200, body = Terms), (status = 404, body = Problem)))]
pub async fn current_terms(State(gw): State<Gateway>, caller: Caller) -> ApiResult<Json<Terms>> {
    let t =
        gw.services.identity.clone().current_terms(caller.grpc(identity::CurrentTermsRequest {})).await?.into_inner();
    Ok(Json(Terms { version: t.version, text: t.text, published_at: t.published_at }))
}

/// Publishes a new version of the terms (administrators); a version never changes.
#[utoipa::path(post, path = "/api/v1/terms", tag = "reference", request_body = Terms, security(("bearer" = [])),
    responses((status = 201, body = Terms), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn publish_terms(
    State(gw): State<Gateway>,
    caller: Caller,
    ApiJson(body): ApiJson<Terms>,
) -> ApiResult<(StatusCode, Json<Terms>)> {
    required(&caller)?;
    let request = identity::PublishTermsRequest { version: body.version, text: body.text };
    let t = gw.services.identity.clone().publish_terms(caller.grpc(request)).await?.into_inner();
    Ok((StatusCode::CREATED, Json(Terms { version: t.version, text: t.text, published_at: t.published_at })))
}

#[derive(Deserialize, ToSchema)]
pub struct AcceptTerms {
    pub version: String,
}

/// The caller accepts a version of the terms.
#[utoipa::path(post, path = "/api/v1/me/terms", tag = "me", request_body = AcceptTerms, security(("bearer" = [])),
    responses((status = 200, body = crate::api::Me), (status = 400, body = Problem)))]
pub async fn accept_terms(
    State(gw): State<Gateway>,
    caller: Caller,
    ApiJson(body): ApiJson<AcceptTerms>,
) -> ApiResult<Json<crate::api::Me>> {
    required(&caller)?;
    let request = identity::AcceptTermsRequest { version: body.version };
    Ok(Json(gw.services.identity.clone().accept_terms(caller.grpc(request)).await?.into_inner().into()))
}

/// Ends one of the caller's subscriptions.
#[utoipa::path(delete, path = "/api/v1/me/subscriptions/{subscription_id}", tag = "me",
    params(("subscription_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = crate::api::Subscription), (status = 404, body = Problem)))]
pub async fn end_subscription(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(subscription_id): Path<String>,
) -> ApiResult<Json<crate::api::Subscription>> {
    required(&caller)?;
    let request = notification::SubscriptionRef { subscription_id };
    Ok(Json(gw.services.notification.clone().end_subscription(caller.grpc(request)).await?.into_inner().into()))
}

#[derive(Deserialize, ToSchema, Default)]
pub struct ErasureRequest {
    #[serde(default)]
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct Erased {
    pub erased_at: String,
}

/// Erases the caller: their keys are destroyed (so everything sealed under them is unreadable
/// everywhere, backups included), their sessions end, and their responses show as erased.
#[utoipa::path(post, path = "/api/v1/me/erasure", tag = "me", request_body = ErasureRequest, security(("bearer" = [])),
    responses((status = 200, body = Erased), (status = 401, body = Problem)))]
pub async fn erase_me(
    State(gw): State<Gateway>,
    caller: Caller,
    ApiJson(body): ApiJson<ErasureRequest>,
) -> ApiResult<Json<Erased>> {
    Ok(Json(Erased { erased_at: erase_caller(&gw, &caller, body.reason).await? }))
}

/// Erases the caller (the API's and the portal's way); when it was done.
pub async fn erase_caller(gw: &Gateway, caller: &Caller, reason: String) -> ApiResult<String> {
    required(caller)?;
    let mut identity = gw.services.identity.clone();
    let me = identity.who_am_i(caller.grpc(identity::WhoAmIRequest {})).await?.into_inner();
    let reason = if reason.trim().is_empty() { "asked for by the person".to_string() } else { reason };
    let request = identity::EraseUserRequest { user_id: me.user_id, reason };
    Ok(identity.erase_user(caller.grpc(request)).await?.into_inner().erased_at)
}

// ---------------------------------------------------------------------------------------------
// Administration

#[derive(Deserialize, ToSchema)]
pub struct NamedItemInput {
    pub name: String,
    #[serde(default)]
    pub retired: bool,
}

/// Defines or renames a subject area (administrators).
#[utoipa::path(put, path = "/api/v1/reference/subject-areas/{id}", tag = "reference", request_body = NamedItemInput,
    params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn define_subject_area(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NamedItemInput>,
) -> ApiResult<StatusCode> {
    required(&caller)?;
    let item = hearing::NamedItem { id, name: body.name, retired: body.retired };
    gw.services.reference.clone().define_subject_area(caller.grpc(item)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Defines or renames a city area (administrators).
#[utoipa::path(put, path = "/api/v1/reference/city-areas/{id}", tag = "reference", request_body = NamedItemInput,
    params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn define_city_area(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NamedItemInput>,
) -> ApiResult<StatusCode> {
    required(&caller)?;
    let item = hearing::NamedItem { id, name: body.name, retired: body.retired };
    gw.services.reference.clone().define_city_area(caller.grpc(item)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
pub struct HearingTypeInput {
    pub name: String,
    #[serde(default)]
    pub internal: bool,
    /// Default texts of new hearings of the type, by field.
    #[serde(default)]
    pub template: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub retired: bool,
    /// The fields of its hearings; left out, the standard fields (title, summary, body,
    /// esdh_title, conclusion, images, documents).
    #[serde(default)]
    pub fields: Vec<FieldRuleInput>,
    /// What a response must be; left out, the defaults.
    pub response_rules: Option<ResponseRulesInput>,
}

#[derive(Deserialize, ToSchema)]
pub struct FieldRuleInput {
    pub key: String,
    pub label: String,
    /// text, images or documents
    pub kind: String,
    #[serde(default)]
    pub may_be_empty: bool,
    pub min_length: Option<u32>,
    pub max_length: Option<u32>,
    pub max_file_size: Option<u64>,
    pub max_file_count: Option<u32>,
    #[serde(default)]
    pub allowed_types: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct ResponseRulesInput {
    /// A response may be attachments only.
    #[serde(default)]
    pub text_optional: bool,
    pub max_text_chars: u32,
    /// 0: no attachments.
    pub max_files: u32,
    pub max_file_bytes: u64,
    /// MIME types, checked against each file's content.
    #[serde(default)]
    pub allowed_types: Vec<String>,
}

/// Defines or changes a hearing type: its fields and its rules for responses (administrators).
#[utoipa::path(put, path = "/api/v1/reference/hearing-types/{id}", tag = "reference", request_body = HearingTypeInput,
    params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn define_hearing_type(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<HearingTypeInput>,
) -> ApiResult<StatusCode> {
    required(&caller)?;
    let kind = hearing::HearingType {
        id,
        name: body.name,
        internal: body.internal,
        template: body.template.into_iter().collect(),
        retired: body.retired,
        fields: body
            .fields
            .into_iter()
            .map(|f| hearing::FieldRule {
                key: f.key,
                label: f.label,
                kind: f.kind,
                may_be_empty: f.may_be_empty,
                min_length: f.min_length,
                max_length: f.max_length,
                max_file_size: f.max_file_size,
                max_file_count: f.max_file_count,
                allowed_types: f.allowed_types,
            })
            .collect(),
        response_rules: body.response_rules.map(|r| hearing::ResponseRules {
            text_optional: r.text_optional,
            max_text_chars: r.max_text_chars,
            max_files: r.max_files,
            max_file_bytes: r.max_file_bytes,
            allowed_types: r.allowed_types,
        }),
    };
    gw.services.reference.clone().define_hearing_type(caller.grpc(kind)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Loads the KLE tree (administrators) as OS2agora publishes it (KleHierarchyList.json).
#[utoipa::path(put, path = "/api/v1/reference/kle", tag = "reference", security(("bearer" = [])),
    request_body(content = String, content_type = "application/json", description = "KleHierarchyList.json"),
    responses((status = 204), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn load_kle(State(gw): State<Gateway>, caller: Caller, body: String) -> ApiResult<StatusCode> {
    required(&caller)?;
    let request = hearing::LoadKleRequest { entries: Vec::new(), hierarchy_json: body };
    gw.services.reference.clone().load_kle(caller.grpc(request)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct User {
    pub user_id: String,
    pub capacity: String,
    pub roles: Vec<String>,
    pub name: String,
    pub erased: bool,
}

impl From<identity::User> for User {
    fn from(u: identity::User) -> Self {
        Self { user_id: u.user_id, capacity: u.capacity, roles: u.roles, name: u.name, erased: u.erased }
    }
}

/// Every user (administrators).
#[utoipa::path(get, path = "/api/v1/users", tag = "reference", security(("bearer" = [])),
    responses((status = 200, body = Vec<User>), (status = 403, body = Problem)))]
pub async fn users(State(gw): State<Gateway>, caller: Caller) -> ApiResult<Json<Vec<User>>> {
    required(&caller)?;
    let list = gw.services.identity.clone().list_users(caller.grpc(identity::ListUsersRequest {})).await?.into_inner();
    Ok(Json(list.users.into_iter().map(Into::into).collect()))
}

/// Gives a user a role: administrator or hearing_creator (administrators).
#[utoipa::path(put, path = "/api/v1/users/{user_id}/roles/{role}", tag = "reference",
    params(("user_id" = String, Path), ("role" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = User), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn assign_role(
    State(gw): State<Gateway>,
    caller: Caller,
    Path((user_id, role)): Path<(String, String)>,
) -> ApiResult<Json<User>> {
    required(&caller)?;
    let request = identity::RoleRequest { user_id, role };
    Ok(Json(gw.services.identity.clone().assign_role(caller.grpc(request)).await?.into_inner().into()))
}

/// Takes a role from a user (administrators; not their own administrator role).
#[utoipa::path(delete, path = "/api/v1/users/{user_id}/roles/{role}", tag = "reference",
    params(("user_id" = String, Path), ("role" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = User), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn revoke_role(
    State(gw): State<Gateway>,
    caller: Caller,
    Path((user_id, role)): Path<(String, String)>,
) -> ApiResult<Json<User>> {
    required(&caller)?;
    let request = identity::RoleRequest { user_id, role };
    Ok(Json(gw.services.identity.clone().revoke_role(caller.grpc(request)).await?.into_inner().into()))
}

#[derive(Serialize, ToSchema)]
pub struct DataAccess {
    pub viewer_id: String,
    pub hearing_id: String,
    pub purpose: String,
    pub at: String,
}

/// Who has seen a respondent's personal data, when and why (administrators).
#[utoipa::path(get, path = "/api/v1/users/{user_id}/data-access", tag = "reference",
    params(("user_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Vec<DataAccess>), (status = 403, body = Problem)))]
pub async fn data_access(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Vec<DataAccess>>> {
    required(&caller)?;
    let request = response::DataAccessRequest { subject_user_id: user_id };
    let log = gw.services.response.clone().list_personal_data_access(caller.grpc(request)).await?.into_inner();
    Ok(Json(
        log.entries
            .into_iter()
            .map(|e| DataAccess { viewer_id: e.viewer_id, hearing_id: e.hearing_id, purpose: e.purpose, at: e.at })
            .collect(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Notification templates: the municipality's (administrators) and a hearing's own (its owner)

#[derive(Serialize, ToSchema)]
pub struct Template {
    pub kind: String,
    pub language: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Where this wording comes from: hearing, municipality or default.
    pub source: String,
    /// The placeholders the template may use, as `{{name}}`.
    pub placeholders: Vec<String>,
}

impl From<notification::Template> for Template {
    fn from(t: notification::Template) -> Self {
        let reference = t.r#ref.unwrap_or_default();
        Self {
            kind: reference.kind,
            language: reference.language,
            subject: t.subject,
            text: t.text,
            html: t.html,
            source: t.source,
            placeholders: t.placeholders,
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct TemplateInput {
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Serialize, ToSchema)]
pub struct TemplatePreview {
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Serialize, ToSchema)]
pub struct TestMessage {
    /// Where the test went: the caller's own address.
    pub to: String,
    pub message_id: String,
}

fn template_ref(hearing_id: String, kind: String, language: String) -> notification::TemplateRef {
    notification::TemplateRef { hearing_id, kind, language }
}

/// The wording of a kind of message for a hearing (its own, or what it falls back to).
#[utoipa::path(get, path = "/api/v1/hearings/{hearing_id}/templates/{kind}/{language}", tag = "hearings",
    params(("hearing_id" = String, Path), ("kind" = String, Path), ("language" = String, Path, description = "da or en")),
    security(("bearer" = [])), responses((status = 200, body = Template), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn hearing_template(
    State(gw): State<Gateway>,
    caller: Caller,
    Path((hearing_id, kind, language)): Path<(String, String, String)>,
) -> ApiResult<Json<Template>> {
    required(&caller)?;
    let request = caller.grpc(template_ref(hearing_id, kind, language));
    Ok(Json(gw.services.notification.clone().get_template(request).await?.into_inner().into()))
}

/// The owner words a kind of message for this hearing; unknown placeholders are refused.
#[utoipa::path(put, path = "/api/v1/hearings/{hearing_id}/templates/{kind}/{language}", tag = "hearings",
    params(("hearing_id" = String, Path), ("kind" = String, Path), ("language" = String, Path)), request_body = TemplateInput,
    security(("bearer" = [])), responses((status = 200, body = Template), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn set_hearing_template(
    State(gw): State<Gateway>,
    caller: Caller,
    Path((hearing_id, kind, language)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<TemplateInput>,
) -> ApiResult<Json<Template>> {
    required(&caller)?;
    let request = notification::SetTemplateRequest {
        r#ref: Some(template_ref(hearing_id, kind, language)),
        subject: body.subject,
        text: body.text,
        html: body.html,
    };
    Ok(Json(gw.services.notification.clone().set_template(caller.grpc(request)).await?.into_inner().into()))
}

/// Back to the municipality's wording for this hearing.
#[utoipa::path(delete, path = "/api/v1/hearings/{hearing_id}/templates/{kind}/{language}", tag = "hearings",
    params(("hearing_id" = String, Path), ("kind" = String, Path), ("language" = String, Path)),
    security(("bearer" = [])), responses((status = 200, body = Template), (status = 403, body = Problem)))]
pub async fn reset_hearing_template(
    State(gw): State<Gateway>,
    caller: Caller,
    Path((hearing_id, kind, language)): Path<(String, String, String)>,
) -> ApiResult<Json<Template>> {
    required(&caller)?;
    let request = caller.grpc(template_ref(hearing_id, kind, language));
    Ok(Json(gw.services.notification.clone().reset_template(request).await?.into_inner().into()))
}

/// The message as it would be sent, filled with sample values.
#[utoipa::path(post, path = "/api/v1/hearings/{hearing_id}/templates/{kind}/{language}/preview", tag = "hearings",
    params(("hearing_id" = String, Path), ("kind" = String, Path), ("language" = String, Path)),
    security(("bearer" = [])), responses((status = 200, body = TemplatePreview), (status = 403, body = Problem)))]
pub async fn preview_hearing_template(
    State(gw): State<Gateway>,
    caller: Caller,
    Path((hearing_id, kind, language)): Path<(String, String, String)>,
) -> ApiResult<Json<TemplatePreview>> {
    required(&caller)?;
    let request = caller.grpc(template_ref(hearing_id, kind, language));
    let p = gw.services.notification.clone().preview_template(request).await?.into_inner();
    Ok(Json(TemplatePreview { subject: p.subject, text: p.text, html: p.html }))
}

/// Sends the message to the caller as a test.
#[utoipa::path(post, path = "/api/v1/hearings/{hearing_id}/templates/{kind}/{language}/test", tag = "hearings",
    params(("hearing_id" = String, Path), ("kind" = String, Path), ("language" = String, Path)),
    security(("bearer" = [])), responses((status = 200, body = TestMessage), (status = 403, body = Problem)))]
pub async fn test_hearing_template(
    State(gw): State<Gateway>,
    caller: Caller,
    Path((hearing_id, kind, language)): Path<(String, String, String)>,
) -> ApiResult<Json<TestMessage>> {
    required(&caller)?;
    let request = caller.grpc(template_ref(hearing_id, kind, language));
    let sent = gw.services.notification.clone().send_test_message(request).await?.into_inner();
    Ok(Json(TestMessage { to: sent.to, message_id: sent.message_id }))
}

/// The municipality's wording of a kind of message (administrators change it).
#[utoipa::path(get, path = "/api/v1/templates/{kind}/{language}", tag = "reference",
    params(("kind" = String, Path), ("language" = String, Path)),
    security(("bearer" = [])), responses((status = 200, body = Template), (status = 400, body = Problem)))]
pub async fn template(
    State(gw): State<Gateway>,
    caller: Caller,
    Path((kind, language)): Path<(String, String)>,
) -> ApiResult<Json<Template>> {
    hearing_template(State(gw), caller, Path((String::new(), kind, language))).await
}

/// Administrators word a kind of message for the whole municipality.
#[utoipa::path(put, path = "/api/v1/templates/{kind}/{language}", tag = "reference",
    params(("kind" = String, Path), ("language" = String, Path)), request_body = TemplateInput,
    security(("bearer" = [])), responses((status = 200, body = Template), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn set_template(
    State(gw): State<Gateway>,
    caller: Caller,
    Path((kind, language)): Path<(String, String)>,
    body: ApiJson<TemplateInput>,
) -> ApiResult<Json<Template>> {
    set_hearing_template(State(gw), caller, Path((String::new(), kind, language)), body).await
}

// ---------------------------------------------------------------------------------------------
// The hearing's team

/// Adds a colleague as reviewer of a hearing (the owner).
#[utoipa::path(put, path = "/api/v1/hearings/{hearing_id}/reviewers/{user_id}", tag = "hearings",
    params(("hearing_id" = String, Path), ("user_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Hearing), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn add_reviewer(
    State(gw): State<Gateway>,
    caller: Caller,
    Path((hearing_id, user_id)): Path<(String, String)>,
) -> ApiResult<Json<Hearing>> {
    required(&caller)?;
    let request = caller.grpc(hearing::ReviewerRequest { hearing_id, user_id });
    Ok(Json(gw.services.hearing.clone().add_reviewer(request).await?.into_inner().into()))
}

/// Removes a reviewer (the owner).
#[utoipa::path(delete, path = "/api/v1/hearings/{hearing_id}/reviewers/{user_id}", tag = "hearings",
    params(("hearing_id" = String, Path), ("user_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Hearing), (status = 403, body = Problem)))]
pub async fn remove_reviewer(
    State(gw): State<Gateway>,
    caller: Caller,
    Path((hearing_id, user_id)): Path<(String, String)>,
) -> ApiResult<Json<Hearing>> {
    required(&caller)?;
    let request = caller.grpc(hearing::ReviewerRequest { hearing_id, user_id });
    Ok(Json(gw.services.hearing.clone().remove_reviewer(request).await?.into_inner().into()))
}

#[derive(Deserialize, ToSchema)]
pub struct NewOwner {
    pub owner_id: String,
}

/// Hands a hearing to another caseworker (the owner or an administrator).
#[utoipa::path(put, path = "/api/v1/hearings/{hearing_id}/owner", tag = "hearings", request_body = NewOwner,
    params(("hearing_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Hearing), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn reassign_owner(
    State(gw): State<Gateway>,
    caller: Caller,
    Path(hearing_id): Path<String>,
    ApiJson(body): ApiJson<NewOwner>,
) -> ApiResult<Json<Hearing>> {
    required(&caller)?;
    let request = caller.grpc(hearing::ReassignOwnerRequest { hearing_id, owner_id: body.owner_id });
    Ok(Json(gw.services.hearing.clone().reassign_owner(request).await?.into_inner().into()))
}

/// Removes an invitee (the owner).
#[utoipa::path(delete, path = "/api/v1/hearings/{hearing_id}/invitees/{reference}", tag = "hearings",
    params(("hearing_id" = String, Path), ("reference" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Hearing), (status = 403, body = Problem)))]
pub async fn remove_invitee(
    State(gw): State<Gateway>,
    caller: Caller,
    Path((hearing_id, reference)): Path<(String, String)>,
) -> ApiResult<Json<Hearing>> {
    required(&caller)?;
    let request = caller.grpc(hearing::RemoveInviteeRequest { hearing_id, reference });
    Ok(Json(gw.services.hearing.clone().remove_invitee(request).await?.into_inner().into()))
}
