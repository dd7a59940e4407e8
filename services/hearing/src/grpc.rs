//! The gRPC adapter: decodes requests, finds the caller, calls `app`, encodes answers.

use std::collections::BTreeMap;
use std::sync::Arc;

use agora_auth::{Principal, TokenVerifier};
use agora_proto::hearing::v1 as pb;
use agora_proto::hearing::v1::hearing_service_server::HearingService;
use agora_proto::hearing::v1::reference_data_service_server::ReferenceDataService;
use chrono::NaiveDate;
use tonic::{Request, Response, Status};

use crate::app::{AppError, HearingApp, Upload};
use crate::domain::fields::{FieldKind, FieldRule, HearingType, Violation};
use crate::domain::reference::{KleEntry, ReferenceItem, parse_kle_hierarchy};
use crate::domain::{ContactPerson, Hearing, HearingChanges, HearingStatus, StoredFile};
use crate::queries::{self, ListQuery, SortBy};

/// Metadata key carrying the violations of an INVALID_ARGUMENT as JSON, one per field, so
/// that a form can show each beside its field.
pub const VIOLATIONS_METADATA: &str = "agora-violations";

pub fn status_of(error: AppError) -> Status {
    let message = error.to_string();
    match error {
        AppError::PermissionDenied(_) => Status::permission_denied(message),
        AppError::Unauthenticated(_) => Status::unauthenticated(message),
        AppError::NotFound(_) => Status::not_found(message),
        AppError::FailedPrecondition(_) => Status::failed_precondition(message),
        AppError::Conflict => Status::aborted(message),
        AppError::Invalid(violations) => {
            let mut status = Status::invalid_argument(message);
            let json = serde_json::to_string(&violations).unwrap_or_default();
            // Header values must be visible ASCII; escape everything else.
            let ascii = json_ascii(&json);
            if let Ok(value) = ascii.parse() {
                status.metadata_mut().insert(VIOLATIONS_METADATA, value);
            }
            status
        }
        AppError::Internal(_) => {
            tracing::error!(error = %message, "internal error");
            Status::internal("internal error; it has been logged")
        }
    }
}

/// JSON with every non-ASCII character as a `\uXXXX` escape (UTF-16, as JSON has it), so
/// that it fits in a header value and still parses as the same JSON.
fn json_ascii(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

fn invalid(field: &str, message: impl Into<String>) -> Status {
    status_of(AppError::Invalid(vec![Violation::new(field, message)]))
}

#[derive(Clone)]
pub struct HearingGrpc {
    app: HearingApp,
    verifier: Arc<TokenVerifier>,
}

impl HearingGrpc {
    pub fn new(app: HearingApp, verifier: Arc<TokenVerifier>) -> Self {
        Self { app, verifier }
    }

    fn viewer<T>(&self, request: &Request<T>) -> Result<Option<Principal>, Status> {
        agora_auth::grpc::principal_from_metadata(&self.verifier, request.metadata())
    }

    fn caller<T>(&self, request: &Request<T>, action: &str) -> Result<Principal, Status> {
        self.viewer(request)?.ok_or_else(|| status_of(AppError::Unauthenticated(action.to_string())))
    }
}

pub fn status_to_pb(status: HearingStatus) -> pb::HearingStatus {
    match status {
        HearingStatus::Created => pb::HearingStatus::Created,
        HearingStatus::Draft => pb::HearingStatus::Draft,
        HearingStatus::AwaitingStartDate => pb::HearingStatus::AwaitingStartDate,
        HearingStatus::Active => pb::HearingStatus::Active,
        HearingStatus::AwaitingConclusion => pb::HearingStatus::AwaitingConclusion,
        HearingStatus::Concluded => pb::HearingStatus::Concluded,
        HearingStatus::Deleted => pb::HearingStatus::Deleted,
    }
}

fn status_from_pb(value: i32) -> Result<HearingStatus, Status> {
    match pb::HearingStatus::try_from(value) {
        Ok(pb::HearingStatus::Created) => Ok(HearingStatus::Created),
        Ok(pb::HearingStatus::Draft) => Ok(HearingStatus::Draft),
        Ok(pb::HearingStatus::AwaitingStartDate) => Ok(HearingStatus::AwaitingStartDate),
        Ok(pb::HearingStatus::Active) => Ok(HearingStatus::Active),
        Ok(pb::HearingStatus::AwaitingConclusion) => Ok(HearingStatus::AwaitingConclusion),
        Ok(pb::HearingStatus::Concluded) => Ok(HearingStatus::Concluded),
        _ => Err(invalid("statuses", format!("ukendt status {value}"))),
    }
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default()
}

pub fn invitee_to_pb(invitee: &crate::domain::Invitee) -> pb::Invitee {
    pb::Invitee {
        reference: invitee.reference.clone(),
        kind: serde_json::to_value(invitee.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
        label: invitee.label.clone(),
        sealed_address: String::new(),
    }
}

pub fn file_to_pb(file: &StoredFile) -> pb::StoredFile {
    pb::StoredFile {
        file_id: file.id.to_string(),
        field: file.field.clone(),
        name: file.name.clone(),
        content_type: file.content_type.clone(),
        size: file.size,
        sha256: file.sha256.clone(),
    }
}

fn rule_to_pb(rule: &FieldRule) -> pb::FieldRule {
    pb::FieldRule {
        key: rule.key.clone(),
        label: rule.label.clone(),
        kind: match rule.kind {
            FieldKind::Text => "text",
            FieldKind::Images => "images",
            FieldKind::Documents => "documents",
        }
        .into(),
        may_be_empty: rule.may_be_empty,
        min_length: rule.min_length,
        max_length: rule.max_length,
        max_file_size: rule.max_file_size,
        max_file_count: rule.max_file_count,
        allowed_types: rule.allowed_types.clone(),
    }
}

fn rule_from_pb(rule: pb::FieldRule) -> Result<FieldRule, Status> {
    let kind = match rule.kind.as_str() {
        "" | "text" => FieldKind::Text,
        "images" => FieldKind::Images,
        "documents" => FieldKind::Documents,
        other => return Err(invalid("fields.kind", format!("ukendt felttype '{other}'"))),
    };
    Ok(FieldRule {
        key: rule.key,
        label: rule.label,
        kind,
        may_be_empty: rule.may_be_empty,
        min_length: rule.min_length,
        max_length: rule.max_length,
        max_file_size: rule.max_file_size,
        max_file_count: rule.max_file_count,
        allowed_types: rule.allowed_types,
    })
}

/// The hearing as a viewer sees it: invitees only for those who manage it.
pub fn hearing_to_pb(id: &str, hearing: &Hearing, viewer: Option<&Principal>) -> pb::Hearing {
    let manages = viewer
        .is_some_and(|v| v.is_administrator() || v.user_id == hearing.owner || hearing.reviewers.contains(&v.user_id));
    pb::Hearing {
        hearing_id: id.to_string(),
        status: status_to_pb(hearing.status) as i32,
        hearing_type_id: hearing.hearing_type.id.clone(),
        hearing_type_name: hearing.hearing_type.name.clone(),
        internal: hearing.internal(),
        closed: hearing.closed,
        fields: hearing.fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        subject_area_id: hearing.subject_area_id.clone().unwrap_or_default(),
        city_area_id: hearing.city_area_id.clone().unwrap_or_default(),
        kle_number: hearing.kle_number.clone().unwrap_or_default(),
        contact: hearing.contact.as_ref().map(|c| pb::ContactPerson {
            name: c.name.clone(),
            email: c.email.clone(),
            phone: c.phone.clone(),
        }),
        start_date: hearing.start_date.map(|d| d.to_string()).unwrap_or_default(),
        deadline: hearing.deadline.map(|d| d.to_string()).unwrap_or_default(),
        opens_at: time(hearing.opens_at()),
        closes_at: time(hearing.closes_at()),
        owner_id: hearing.owner.to_string(),
        reviewer_ids: if manages { hearing.reviewers.iter().map(ToString::to_string).collect() } else { Vec::new() },
        invitees: if manages { hearing.invitees.values().map(invitee_to_pb).collect() } else { Vec::new() },
        files: hearing.files.iter().map(file_to_pb).collect(),
        case_number: hearing.case_number.clone().unwrap_or_default(),
        field_rules: hearing.hearing_type.fields.iter().map(rule_to_pb).collect(),
    }
}

fn summary_to_pb(s: queries::HearingSummary) -> pb::HearingSummary {
    pb::HearingSummary {
        hearing_id: s.id,
        status: status_to_pb(s.status) as i32,
        hearing_type_id: s.hearing_type_id,
        hearing_type_name: s.hearing_type_name,
        internal: s.internal,
        closed: s.closed,
        title: s.title,
        summary: s.summary,
        subject_area_id: s.subject_area_id.unwrap_or_default(),
        city_area_id: s.city_area_id.unwrap_or_default(),
        kle_number: s.kle_number.unwrap_or_default(),
        start_date: s.start_date.unwrap_or_default(),
        deadline: s.deadline.unwrap_or_default(),
        case_number: s.case_number.unwrap_or_default(),
        updated_at: s.updated_at,
    }
}

fn parse_date(field: &str, value: &str, violations: &mut Vec<Violation>) -> Option<NaiveDate> {
    match NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        Ok(date) => Some(date),
        Err(_) => {
            violations.push(Violation::new(field, format!("'{value}' er ikke en dato (ÅÅÅÅ-MM-DD)")));
            None
        }
    }
}

fn changes_from_pb(request: &pb::UpdateHearingRequest) -> Result<HearingChanges, Status> {
    let mut violations = Vec::new();
    let start_date = request.start_date.as_deref().and_then(|d| parse_date("start_date", d, &mut violations));
    let deadline = request.deadline.as_deref().and_then(|d| parse_date("deadline", d, &mut violations));
    if !violations.is_empty() {
        return Err(status_of(AppError::Invalid(violations)));
    }
    Ok(HearingChanges {
        fields: request.fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<BTreeMap<_, _>>(),
        subject_area_id: request.subject_area_id.clone(),
        city_area_id: request.city_area_id.clone(),
        kle_number: request.kle_number.clone(),
        contact: request.contact.as_ref().map(|c| ContactPerson {
            name: c.name.clone(),
            email: c.email.clone(),
            phone: c.phone.clone(),
        }),
        start_date,
        deadline,
        closed: request.closed,
        notify_participants: request.notify_participants,
    })
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl HearingService for HearingGrpc {
    #[tracing::instrument(skip_all)]
    async fn create_hearing(&self, request: Request<pb::CreateHearingRequest>) -> Reply<pb::Hearing> {
        let caller = self.caller(&request, "create hearings")?;
        let (id, hearing) = self.app.create(&caller, &request.get_ref().hearing_type_id).await.map_err(status_of)?;
        Ok(Response::new(hearing_to_pb(&id.to_string(), &hearing, Some(&caller))))
    }

    #[tracing::instrument(skip_all)]
    async fn get_hearing(&self, request: Request<pb::GetHearingRequest>) -> Reply<pb::Hearing> {
        let viewer = self.viewer(&request)?;
        let id = &request.get_ref().hearing_id;
        let hearing = self.app.get(viewer.as_ref(), id).await.map_err(status_of)?;
        Ok(Response::new(hearing_to_pb(id, &hearing, viewer.as_ref())))
    }

    #[tracing::instrument(skip_all)]
    async fn update_hearing(&self, request: Request<pb::UpdateHearingRequest>) -> Reply<pb::Hearing> {
        let caller = self.caller(&request, "change hearings")?;
        let changes = changes_from_pb(request.get_ref())?;
        let id = &request.get_ref().hearing_id;
        let hearing = self.app.update(&caller, id, changes).await.map_err(status_of)?;
        Ok(Response::new(hearing_to_pb(id, &hearing, Some(&caller))))
    }

    #[tracing::instrument(skip_all)]
    async fn publish_hearing(&self, request: Request<pb::HearingRef>) -> Reply<pb::Hearing> {
        let caller = self.caller(&request, "publish hearings")?;
        let id = &request.get_ref().hearing_id;
        let hearing = self.app.publish(&caller, id).await.map_err(status_of)?;
        Ok(Response::new(hearing_to_pb(id, &hearing, Some(&caller))))
    }

    #[tracing::instrument(skip_all)]
    async fn conclude_hearing(&self, request: Request<pb::ConcludeHearingRequest>) -> Reply<pb::Hearing> {
        let caller = self.caller(&request, "conclude hearings")?;
        let r = request.get_ref();
        let hearing = self.app.conclude(&caller, &r.hearing_id, r.conclusion.clone()).await.map_err(status_of)?;
        Ok(Response::new(hearing_to_pb(&r.hearing_id, &hearing, Some(&caller))))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_hearing(&self, request: Request<pb::HearingRef>) -> Reply<pb::DeleteHearingResponse> {
        let caller = self.caller(&request, "delete hearings")?;
        self.app.delete(&caller, &request.get_ref().hearing_id).await.map_err(status_of)?;
        Ok(Response::new(pb::DeleteHearingResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn reassign_owner(&self, request: Request<pb::ReassignOwnerRequest>) -> Reply<pb::Hearing> {
        let caller = self.caller(&request, "reassign hearings")?;
        let r = request.get_ref();
        let hearing = self.app.reassign_owner(&caller, &r.hearing_id, &r.owner_id).await.map_err(status_of)?;
        Ok(Response::new(hearing_to_pb(&r.hearing_id, &hearing, Some(&caller))))
    }

    #[tracing::instrument(skip_all)]
    async fn add_reviewer(&self, request: Request<pb::ReviewerRequest>) -> Reply<pb::Hearing> {
        let caller = self.caller(&request, "add reviewers")?;
        let r = request.get_ref();
        let hearing = self.app.set_reviewer(&caller, &r.hearing_id, &r.user_id, true).await.map_err(status_of)?;
        Ok(Response::new(hearing_to_pb(&r.hearing_id, &hearing, Some(&caller))))
    }

    #[tracing::instrument(skip_all)]
    async fn remove_reviewer(&self, request: Request<pb::ReviewerRequest>) -> Reply<pb::Hearing> {
        let caller = self.caller(&request, "remove reviewers")?;
        let r = request.get_ref();
        let hearing = self.app.set_reviewer(&caller, &r.hearing_id, &r.user_id, false).await.map_err(status_of)?;
        Ok(Response::new(hearing_to_pb(&r.hearing_id, &hearing, Some(&caller))))
    }

    #[tracing::instrument(skip_all)]
    async fn invite_participants(&self, request: Request<pb::InviteRequest>) -> Reply<pb::Hearing> {
        let caller = self.caller(&request, "invite")?;
        let r = request.get_ref();
        let identifiers: Vec<(String, String)> =
            r.participants.iter().map(|p| (p.identifier.clone(), p.label.clone())).collect();
        let hearing = self.app.invite(&caller, &r.hearing_id, &identifiers).await.map_err(status_of)?;
        Ok(Response::new(hearing_to_pb(&r.hearing_id, &hearing, Some(&caller))))
    }

    #[tracing::instrument(skip_all)]
    async fn import_invitees(&self, request: Request<pb::ImportInviteesRequest>) -> Reply<pb::ImportInviteesResponse> {
        let caller = self.caller(&request, "invite")?;
        let r = request.get_ref();
        let report = self.app.import_invitees(&caller, &r.hearing_id, &r.csv).await.map_err(status_of)?;
        Ok(Response::new(pb::ImportInviteesResponse {
            added: report.added as u32,
            already_invited: report.already_invited as u32,
            errors: report.errors.into_iter().map(|e| pb::RowError { row: e.row as u32, message: e.message }).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn remove_invitee(&self, request: Request<pb::RemoveInviteeRequest>) -> Reply<pb::Hearing> {
        let caller = self.caller(&request, "remove invitees")?;
        let r = request.get_ref();
        let hearing = self.app.remove_invitee(&caller, &r.hearing_id, &r.reference).await.map_err(status_of)?;
        Ok(Response::new(hearing_to_pb(&r.hearing_id, &hearing, Some(&caller))))
    }

    #[tracing::instrument(skip_all)]
    async fn attach_file(&self, request: Request<pb::AttachFileRequest>) -> Reply<pb::AttachFileResponse> {
        let caller = self.caller(&request, "attach files")?;
        let r = request.into_inner();
        let upload = Upload { field: r.field, file_name: r.file_name, content: r.content.into() };
        let (hearing, file) = self.app.attach_file(&caller, &r.hearing_id, upload).await.map_err(status_of)?;
        Ok(Response::new(pb::AttachFileResponse {
            hearing: Some(hearing_to_pb(&r.hearing_id, &hearing, Some(&caller))),
            file: Some(file_to_pb(&file)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn remove_file(&self, request: Request<pb::RemoveFileRequest>) -> Reply<pb::Hearing> {
        let caller = self.caller(&request, "remove files")?;
        let r = request.get_ref();
        let hearing = self.app.remove_file(&caller, &r.hearing_id, &r.file_id).await.map_err(status_of)?;
        Ok(Response::new(hearing_to_pb(&r.hearing_id, &hearing, Some(&caller))))
    }

    #[tracing::instrument(skip_all)]
    async fn get_file(&self, request: Request<pb::GetFileRequest>) -> Reply<pb::GetFileResponse> {
        let viewer = self.viewer(&request)?;
        let r = request.get_ref();
        let (file, content) =
            self.app.read_file(viewer.as_ref(), &r.hearing_id, &r.file_id).await.map_err(status_of)?;
        Ok(Response::new(pb::GetFileResponse { file: Some(file_to_pb(&file)), content: content.to_vec() }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_hearings(&self, request: Request<pb::ListHearingsRequest>) -> Reply<pb::ListHearingsResponse> {
        let viewer = self.viewer(&request)?;
        let r = request.into_inner();
        let statuses = r.statuses.iter().map(|s| status_from_pb(*s)).collect::<Result<Vec<_>, _>>()?;
        let sort = SortBy::parse(&r.sort_by)
            .ok_or_else(|| invalid("sort_by", format!("kan ikke sortere efter '{}'", r.sort_by)))?;
        let opt = |s: String| if s.is_empty() { None } else { Some(s) };
        let query = ListQuery {
            statuses,
            hearing_type_id: opt(r.hearing_type_id),
            subject_area_id: opt(r.subject_area_id),
            city_area_id: opt(r.city_area_id),
            kle_number: opt(r.kle_number),
            text: opt(r.text),
            sort,
            descending: r.descending,
            page: r.page,
            page_size: r.page_size,
        };
        let violations = query.validate();
        if !violations.is_empty() {
            return Err(status_of(AppError::Invalid(violations)));
        }
        let page =
            queries::list_hearings(&self.app.store, viewer.as_ref(), &query).await.map_err(|e| status_of(e.into()))?;
        Ok(Response::new(pb::ListHearingsResponse {
            hearings: page.items.into_iter().map(summary_to_pb).collect(),
            total: page.total,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn owner_dashboard(&self, request: Request<pb::OwnerDashboardRequest>) -> Reply<pb::ListHearingsResponse> {
        let caller = self.caller(&request, "see your hearings")?;
        let items = queries::dashboard(&self.app.store, &caller).await.map_err(|e| status_of(e.into()))?;
        let total = items.len() as i64;
        Ok(Response::new(pb::ListHearingsResponse { hearings: items.into_iter().map(summary_to_pb).collect(), total }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_audit_trail(&self, request: Request<pb::HearingRef>) -> Reply<pb::AuditTrail> {
        let caller = self.caller(&request, "read audit trails")?;
        let entries = self.app.audit_trail(&caller, &request.get_ref().hearing_id).await.map_err(status_of)?;
        Ok(Response::new(pb::AuditTrail {
            entries: entries
                .into_iter()
                .map(|e| pb::AuditEntry {
                    position: e.position,
                    sequence: e.sequence,
                    event_id: e.event_id.to_string(),
                    event_type: e.event_type,
                    actor: e.actor,
                    command: e.command,
                    recorded_at: e.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    data_json: e.payload.to_string(),
                    hash: e.hash,
                })
                .collect(),
        }))
    }
}

fn hearing_type_to_pb(t: &HearingType, retired: bool) -> pb::HearingType {
    pb::HearingType {
        id: t.id.clone(),
        name: t.name.clone(),
        internal: t.internal,
        fields: t.fields.iter().map(rule_to_pb).collect(),
        template: t.template.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        retired,
        response_rules: Some((&t.responses).into()),
    }
}

impl HearingGrpc {
    async fn define(&self, request: &Request<impl Sized>, item: ReferenceItem) -> Reply<pb::ReferenceAck> {
        let caller = self.caller(request, "change reference data")?;
        self.app.define_reference(&caller, item).await.map_err(status_of)?;
        Ok(Response::new(pb::ReferenceAck {}))
    }

    async fn items(&self, kind: &str, include_retired: bool) -> Result<Vec<(ReferenceItem, bool)>, Status> {
        queries::reference_items(&self.app.store, kind, include_retired).await.map_err(|e| status_of(e.into()))
    }
}

#[tonic::async_trait]
impl ReferenceDataService for HearingGrpc {
    async fn define_hearing_type(&self, request: Request<pb::HearingType>) -> Reply<pb::ReferenceAck> {
        let r = request.get_ref().clone();
        let fields = if r.fields.is_empty() {
            HearingType::standard_fields()
        } else {
            r.fields.into_iter().map(rule_from_pb).collect::<Result<Vec<_>, _>>()?
        };
        let item = ReferenceItem::HearingType(HearingType {
            id: r.id,
            name: r.name,
            internal: r.internal,
            fields,
            template: r.template.into_iter().collect(),
            responses: r.response_rules.map(Into::into).unwrap_or_default(),
        });
        self.define(&request, item).await
    }

    async fn define_subject_area(&self, request: Request<pb::NamedItem>) -> Reply<pb::ReferenceAck> {
        let r = request.get_ref().clone();
        self.define(&request, ReferenceItem::SubjectArea { id: r.id, name: r.name }).await
    }

    async fn define_city_area(&self, request: Request<pb::NamedItem>) -> Reply<pb::ReferenceAck> {
        let r = request.get_ref().clone();
        self.define(&request, ReferenceItem::CityArea { id: r.id, name: r.name }).await
    }

    async fn define_snippet(&self, request: Request<pb::Snippet>) -> Reply<pb::ReferenceAck> {
        let r = request.get_ref().clone();
        self.define(&request, ReferenceItem::Snippet { id: r.id, field: r.field, title: r.title, text: r.text }).await
    }

    async fn define_invitation_group(&self, request: Request<pb::InvitationGroup>) -> Reply<pb::ReferenceAck> {
        let caller = self.caller(&request, "change reference data")?;
        let r = request.get_ref();
        let members: Vec<(String, String)> =
            r.members.iter().map(|m| (m.identifier.clone(), m.label.clone())).collect();
        self.app.define_invitation_group(&caller, &r.id, &r.name, &members).await.map_err(status_of)?;
        Ok(Response::new(pb::ReferenceAck {}))
    }

    async fn list_invitation_groups(
        &self,
        request: Request<pb::ListReferenceRequest>,
    ) -> Reply<pb::InvitationGroupList> {
        // Members are people: only staff see them.
        let caller = self.caller(&request, "see invitation groups")?;
        if !caller.is_employee() {
            return Err(status_of(AppError::PermissionDenied("only employees may see invitation groups".into())));
        }
        let items = self.items("invitation_group", request.get_ref().include_retired).await?;
        Ok(Response::new(pb::InvitationGroupList {
            groups: items
                .iter()
                .filter_map(|(item, retired)| match item {
                    ReferenceItem::InvitationGroup { id, name, members } => Some(pb::InvitationGroup {
                        id: id.clone(),
                        name: name.clone(),
                        members: Vec::new(),
                        invitees: members.iter().map(invitee_to_pb).collect(),
                        retired: *retired,
                    }),
                    _ => None,
                })
                .collect(),
        }))
    }

    async fn retire_item(&self, request: Request<pb::RetireItemRequest>) -> Reply<pb::ReferenceAck> {
        let caller = self.caller(&request, "change reference data")?;
        let r = request.get_ref();
        self.app.retire_reference(&caller, &r.kind, &r.id).await.map_err(status_of)?;
        Ok(Response::new(pb::ReferenceAck {}))
    }

    async fn load_kle(&self, request: Request<pb::LoadKleRequest>) -> Reply<pb::ReferenceAck> {
        let caller = self.caller(&request, "load the KLE tree")?;
        let r = request.into_inner();
        let entries = if r.hierarchy_json.is_empty() {
            r.entries.into_iter().map(|e| KleEntry { number: e.number, title: e.title, retired: e.retired }).collect()
        } else {
            parse_kle_hierarchy(&r.hierarchy_json).map_err(|e| invalid("hierarchy_json", e))?
        };
        self.app.load_kle(&caller, entries).await.map_err(status_of)?;
        Ok(Response::new(pb::ReferenceAck {}))
    }

    async fn list_hearing_types(&self, request: Request<pb::ListReferenceRequest>) -> Reply<pb::HearingTypeList> {
        let items = self.items("hearing_type", request.get_ref().include_retired).await?;
        Ok(Response::new(pb::HearingTypeList {
            hearing_types: items
                .iter()
                .filter_map(|(item, retired)| match item {
                    ReferenceItem::HearingType(t) => Some(hearing_type_to_pb(t, *retired)),
                    _ => None,
                })
                .collect(),
        }))
    }

    async fn list_subject_areas(&self, request: Request<pb::ListReferenceRequest>) -> Reply<pb::NamedItemList> {
        let items = self.items("subject_area", request.get_ref().include_retired).await?;
        Ok(Response::new(pb::NamedItemList {
            items: items
                .iter()
                .map(|(i, retired)| pb::NamedItem { id: i.id().into(), name: i.name().into(), retired: *retired })
                .collect(),
        }))
    }

    async fn list_city_areas(&self, request: Request<pb::ListReferenceRequest>) -> Reply<pb::NamedItemList> {
        let items = self.items("city_area", request.get_ref().include_retired).await?;
        Ok(Response::new(pb::NamedItemList {
            items: items
                .iter()
                .map(|(i, retired)| pb::NamedItem { id: i.id().into(), name: i.name().into(), retired: *retired })
                .collect(),
        }))
    }

    async fn list_snippets(&self, request: Request<pb::ListReferenceRequest>) -> Reply<pb::SnippetList> {
        let items = self.items("snippet", request.get_ref().include_retired).await?;
        Ok(Response::new(pb::SnippetList {
            snippets: items
                .iter()
                .filter_map(|(item, retired)| match item {
                    ReferenceItem::Snippet { id, field, title, text } => Some(pb::Snippet {
                        id: id.clone(),
                        field: field.clone(),
                        title: title.clone(),
                        text: text.clone(),
                        retired: *retired,
                    }),
                    _ => None,
                })
                .collect(),
        }))
    }

    async fn search_kle(&self, request: Request<pb::SearchKleRequest>) -> Reply<pb::KleList> {
        let r = request.get_ref();
        let limit = if r.limit == 0 { 50 } else { r.limit.min(500) } as i64;
        let entries =
            queries::kle_numbers(&self.app.store, &r.prefix, &r.text, limit).await.map_err(|e| status_of(e.into()))?;
        Ok(Response::new(pb::KleList {
            entries: entries
                .into_iter()
                .map(|e| pb::KleEntry { number: e.number, title: e.title, retired: e.retired })
                .collect(),
        }))
    }
}

/// Files up to this size travel in one gRPC message.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// The service's two gRPC services, ready to add to a server.
pub fn services(
    app: HearingApp,
    verifier: Arc<TokenVerifier>,
) -> (
    agora_proto::hearing::v1::hearing_service_server::HearingServiceServer<HearingGrpc>,
    agora_proto::hearing::v1::reference_data_service_server::ReferenceDataServiceServer<HearingGrpc>,
) {
    let grpc = HearingGrpc::new(app, verifier);
    (
        agora_proto::hearing::v1::hearing_service_server::HearingServiceServer::new(grpc.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
        agora_proto::hearing::v1::reference_data_service_server::ReferenceDataServiceServer::new(grpc),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_their_grpc_codes() {
        let cases = [
            (AppError::Conflict, tonic::Code::Aborted),
            (AppError::PermissionDenied("x".into()), tonic::Code::PermissionDenied),
            (AppError::Unauthenticated("x".into()), tonic::Code::Unauthenticated),
            (AppError::NotFound("hearing".into()), tonic::Code::NotFound),
            (
                AppError::FailedPrecondition("cannot publish a hearing in state Active".into()),
                tonic::Code::FailedPrecondition,
            ),
            (AppError::Invalid(vec![Violation::new("title", "x")]), tonic::Code::InvalidArgument),
            (AppError::Internal("secret detail".into()), tonic::Code::Internal),
        ];
        for (error, code) in cases {
            let status = status_of(error);
            assert_eq!(status.code(), code);
            assert!(!status.message().contains("secret detail"), "internal details stay in the log");
        }
    }

    #[test]
    fn violations_survive_the_header_with_danish_letters() {
        let violations = vec![Violation::new("title", "Titel må højst være 5 tegn"), Violation::new("x", "emoji 😀")];
        let status = status_of(AppError::Invalid(violations.clone()));
        let header = status.metadata().get(VIOLATIONS_METADATA).and_then(|v| v.to_str().ok()).expect("ascii header");
        let back: Vec<Violation> = serde_json::from_str(header).expect("valid JSON");
        assert_eq!(back, violations);
    }
}
