//! The gRPC adapter of the response service.

use std::sync::Arc;

use agora_auth::{Principal, TokenVerifier};
use agora_proto::response::v1 as pb;
use agora_proto::response::v1::response_service_server::{ResponseService, ResponseServiceServer};
use tonic::{Request, Response as GrpcResponse, Status};
use uuid::Uuid;

use futures::StreamExt;

use crate::app::{ResponseApp, ResponseAppError};
use crate::domain::{
    Actor, IntakeError, ModerationStatus, OnBehalfOf, Response, ResponseCommand, ResponseError, Submission,
};
use crate::exports::{Export, ExportKind, Selection};
use crate::projections::{self, ResponseView};

pub fn intake_status(error: IntakeError) -> Status {
    let message = error.to_string();
    match error {
        IntakeError::HearingNotFound(_) => Status::not_found(message),
        IntakeError::HearingClosed(_) | IntakeError::NotAcceptingResponses(_) => Status::failed_precondition(message),
        IntakeError::NotOwner => Status::permission_denied(message),
        IntakeError::Invalid(_) => Status::invalid_argument(message),
        IntakeError::KeyReused => Status::already_exists(message),
        IntakeError::Busy { retry_after_ms } => {
            let mut status = Status::unavailable(message);
            if let Ok(value) = retry_after_ms.to_string().parse() {
                status.metadata_mut().insert("retry-after-ms", value);
            }
            status
        }
        IntakeError::Storage(_) => Status::unavailable(message),
    }
}

fn app_status(error: ResponseAppError) -> Status {
    let message = error.to_string();
    match error {
        ResponseAppError::Domain(ResponseError::NotFound) => Status::not_found(message),
        ResponseAppError::Domain(ResponseError::NotAllowed(_)) => Status::permission_denied(message),
        ResponseAppError::Domain(ResponseError::Invalid(_)) => Status::invalid_argument(message),
        ResponseAppError::Domain(ResponseError::HearingClosed(_)) => Status::failed_precondition(message),
        ResponseAppError::Conflict => Status::aborted(message),
        ResponseAppError::Storage(_) => {
            tracing::error!(error = %message, "response service storage error");
            Status::unavailable("the service could not store this now; retry")
        }
    }
}

fn id(field: &str, value: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(value).map_err(|_| Status::invalid_argument(format!("{field}: '{value}' is not an id")))
}

fn actor(principal: &Principal) -> Actor {
    Actor { reference: format!("user:{}", principal.user_id), administrator: principal.is_administrator() }
}

fn response_to_pb(id: Uuid, r: &Response, viewer: &Actor, owner: bool) -> pb::Response {
    let sees_all = owner || viewer.reference == r.author;
    pb::Response {
        response_id: id.to_string(),
        hearing_id: r.hearing_id.to_string(),
        number: r.number,
        status: r.status.as_str().into(),
        author_id: if sees_all { r.author.clone() } else { String::new() },
        text: if sees_all { r.text.clone() } else { r.public_text().to_string() },
        accepted_at: r.accepted_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
        on_behalf_of: on_behalf_label(&r.on_behalf_of),
        reply: r.reply.clone().unwrap_or_default(),
    }
}

fn on_behalf_label(on_behalf: &Option<OnBehalfOf>) -> String {
    match on_behalf {
        Some(OnBehalfOf::Organisation { name }) => name.clone(),
        Some(OnBehalfOf::Company { .. }) => "virksomhed".into(),
        None => String::new(),
    }
}

fn view_to_pb(v: ResponseView) -> pb::Response {
    pb::Response {
        response_id: v.response_id.to_string(),
        hearing_id: v.hearing_id.to_string(),
        number: v.number,
        status: v.status.as_str().into(),
        author_id: v.author.unwrap_or_default(),
        text: v.text,
        accepted_at: v.accepted_at,
        on_behalf_of: on_behalf_label(&v.on_behalf_of),
        reply: v.reply.unwrap_or_default(),
    }
}

#[derive(Clone)]
pub struct ResponseGrpc {
    app: ResponseApp,
    verifier: Arc<TokenVerifier>,
}

pub fn service(app: ResponseApp, verifier: Arc<TokenVerifier>) -> ResponseServiceServer<ResponseGrpc> {
    ResponseServiceServer::new(ResponseGrpc { app, verifier })
}

impl ResponseGrpc {
    fn caller<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        agora_auth::grpc::require_principal(&self.verifier, request.metadata())
    }

    fn viewer<T>(&self, request: &Request<T>) -> Result<Option<Principal>, Status> {
        agora_auth::grpc::principal_from_metadata(&self.verifier, request.metadata())
    }

    async fn command(
        &self,
        principal: &Principal,
        response_id: &str,
        command: ResponseCommand,
    ) -> Result<pb::Response, Status> {
        let response_id = id("response_id", response_id)?;
        let actor = actor(principal);
        let response = self.app.execute(response_id, &actor, command).await.map_err(app_status)?;
        let owner = self.is_owner(&actor, response.hearing_id).await?;
        Ok(response_to_pb(response_id, &response, &actor, owner))
    }

    async fn comments(&self, actor: &Actor, hearing_id: Uuid) -> Reply<pb::ReviewComments> {
        let comments = self.app.review_comments(actor, hearing_id).await.map_err(app_status)?;
        Ok(GrpcResponse::new(pb::ReviewComments {
            comments: comments
                .into_iter()
                .map(|c| pb::ReviewComment { author_id: c.by, text: c.text, at: c.at.to_rfc3339() })
                .collect(),
        }))
    }

    async fn is_owner(&self, actor: &Actor, hearing_id: Uuid) -> Result<bool, Status> {
        let terms = self.app.terms(hearing_id).await.map_err(app_status)?;
        Ok(actor.administrator || terms.is_some_and(|t| t.owner_id == actor.reference))
    }
}

type Reply<T> = Result<GrpcResponse<T>, Status>;

type ExportStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ExportChunk, Status>> + Send>>;

fn export_kind(kind: i32) -> Result<ExportKind, Status> {
    Ok(match pb::ExportKind::try_from(kind) {
        Ok(pb::ExportKind::ResponsesXlsx) => ExportKind::ResponsesWorkbook,
        Ok(pb::ExportKind::RespondentsXlsx) => ExportKind::RespondentsWorkbook,
        Ok(pb::ExportKind::HearingPdf) => ExportKind::HearingPdf,
        Ok(pb::ExportKind::ResponsesPdf) => ExportKind::ResponsesPdf,
        Ok(pb::ExportKind::AttachmentsZip) => ExportKind::AttachmentsZip,
        _ => return Err(Status::invalid_argument(format!("kind: {kind} is not an export kind"))),
    })
}

/// The export's chunks as gRPC messages, the first naming the file; a failure while writing
/// ends the stream with its status.
fn export_stream(export: Export) -> ExportStream {
    let Export { file_name, content_type, chunks, done } = export;
    let mut first = Some((file_name, content_type.to_string()));
    let data = tokio_stream::wrappers::ReceiverStream::new(chunks).map(move |data| {
        let (file_name, content_type) = first.take().unwrap_or_default();
        Ok(pb::ExportChunk { file_name, content_type, data: data.to_vec() })
    });
    let end = futures::stream::once(async move {
        match done.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "export failed while it was written");
                Some(Err(Status::internal(format!("the export failed while it was written: {e}"))))
            }
            Err(e) => Some(Err(Status::internal(format!("the export stopped: {e}")))),
        }
    })
    .filter_map(futures::future::ready);
    Box::pin(data.chain(end))
}

#[tonic::async_trait]
impl ResponseService for ResponseGrpc {
    type ExportResponsesStream = ExportStream;

    async fn export_responses(&self, request: Request<pb::ExportRequest>) -> Reply<Self::ExportResponsesStream> {
        let principal = self.caller(&request)?;
        let r = request.into_inner();
        let hearing = id("hearing_id", &r.hearing_id)?;
        let kind = export_kind(r.kind)?;
        let selection = if r.approved_only { Selection::Approved } else { Selection::All };
        let export = crate::exports::export(&self.app, &actor(&principal), hearing, kind, selection)
            .await
            .map_err(app_status)?;
        Ok(GrpcResponse::new(export_stream(export)))
    }

    #[tracing::instrument(skip_all)]
    async fn submit_response(&self, request: Request<pb::SubmitResponseRequest>) -> Reply<pb::Receipt> {
        let principal = self.caller(&request)?;
        let r = request.into_inner();
        let on_behalf_of = match (r.on_behalf_of_company, r.on_behalf_of_organisation.trim()) {
            (true, _) => match &principal.company {
                Some(company) => Some(OnBehalfOf::Company { reference: company.clone() }),
                None => {
                    return Err(Status::invalid_argument(
                        "on_behalf_of_company: you are not logged in as a company user",
                    ));
                }
            },
            (false, "") => None,
            (false, name) => Some(OnBehalfOf::Organisation { name: name.to_string() }),
        };
        let submission = Submission {
            idempotency_key: r.idempotency_key,
            hearing_id: id("hearing_id", &r.hearing_id)?,
            author: format!("user:{}", principal.user_id),
            on_behalf_of,
            text: r.text,
            terms_version: r.terms_version,
            registered_by_owner: r.registered_by_owner,
            attachments: r
                .attachments
                .into_iter()
                .map(|f| crate::files::Upload { name: f.name, content: f.content.into() })
                .collect(),
            respondent: principal.clone(),
        };
        let receipt = self.app.intake.submit(submission).await.map_err(intake_status)?;
        Ok(GrpcResponse::new(pb::Receipt {
            response_id: receipt.response_id.to_string(),
            hearing_id: receipt.hearing_id.to_string(),
            number: receipt.number,
            content_sha256: receipt.content_sha256,
            accepted_at: receipt.accepted_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        }))
    }

    async fn edit_response(&self, request: Request<pb::EditResponseRequest>) -> Reply<pb::Response> {
        let principal = self.caller(&request)?;
        let r = request.into_inner();
        let hearing = self.app.load(id("response_id", &r.response_id)?).await.map_err(app_status)?.hearing_id;
        let auto_approve = self.app.terms(hearing).await.map_err(app_status)?.is_some_and(|t| t.auto_approve);
        let command = ResponseCommand::Edit { text: r.text, now: self.app.now(), auto_approve };
        Ok(GrpcResponse::new(self.command(&principal, &r.response_id, command).await?))
    }

    async fn withdraw_response(&self, request: Request<pb::ResponseRef>) -> Reply<pb::Response> {
        let principal = self.caller(&request)?;
        let command = ResponseCommand::Withdraw { now: self.app.now() };
        Ok(GrpcResponse::new(self.command(&principal, &request.get_ref().response_id, command).await?))
    }

    async fn approve_response(&self, request: Request<pb::ResponseRef>) -> Reply<pb::Response> {
        let principal = self.caller(&request)?;
        Ok(GrpcResponse::new(self.command(&principal, &request.get_ref().response_id, ResponseCommand::Approve).await?))
    }

    async fn decline_response(&self, request: Request<pb::DeclineResponseRequest>) -> Reply<pb::Response> {
        let principal = self.caller(&request)?;
        let r = request.into_inner();
        Ok(GrpcResponse::new(
            self.command(&principal, &r.response_id, ResponseCommand::Decline { reason: r.reason }).await?,
        ))
    }

    async fn redact_response(&self, request: Request<pb::RedactResponseRequest>) -> Reply<pb::Response> {
        let principal = self.caller(&request)?;
        let r = request.into_inner();
        let command = ResponseCommand::Redact { text: r.redacted_text, reason: r.reason };
        Ok(GrpcResponse::new(self.command(&principal, &r.response_id, command).await?))
    }

    async fn reply_to_response(&self, request: Request<pb::ReplyRequest>) -> Reply<pb::Response> {
        let principal = self.caller(&request)?;
        let r = request.into_inner();
        Ok(GrpcResponse::new(self.command(&principal, &r.response_id, ResponseCommand::Reply { text: r.text }).await?))
    }

    async fn set_response_settings(&self, request: Request<pb::ResponseSettings>) -> Reply<pb::ResponseSettings> {
        let principal = self.caller(&request)?;
        let r = request.into_inner();
        let hearing = id("hearing_id", &r.hearing_id)?;
        self.app.set_settings(&actor(&principal), hearing, r.auto_approve, r.public).await.map_err(app_status)?;
        Ok(GrpcResponse::new(r))
    }

    async fn list_personal_data_access(&self, request: Request<pb::DataAccessRequest>) -> Reply<pb::DataAccessLog> {
        let principal = self.caller(&request)?;
        let subject = id("subject_user_id", &request.get_ref().subject_user_id)?;
        let log = self.app.data_access(&actor(&principal), &format!("user:{subject}")).await.map_err(app_status)?;
        Ok(GrpcResponse::new(pb::DataAccessLog {
            entries: log
                .into_iter()
                .map(|a| pb::DataAccessEntry {
                    viewer_id: a.viewer,
                    hearing_id: a.hearing_id.to_string(),
                    purpose: a.purpose,
                    at: a.at.to_rfc3339(),
                })
                .collect(),
        }))
    }

    async fn list_responses(&self, request: Request<pb::ListResponsesRequest>) -> Reply<pb::ListResponsesResponse> {
        let principal = self.viewer(&request)?;
        let viewer = principal.as_ref().map(actor);
        let company = principal.as_ref().and_then(|p| p.company.clone());
        let r = request.into_inner();
        let status = match r.status.as_str() {
            "" => None,
            "Pending" => Some(ModerationStatus::Pending),
            "Approved" => Some(ModerationStatus::Approved),
            "Declined" => Some(ModerationStatus::Declined),
            "Withdrawn" => Some(ModerationStatus::Withdrawn),
            other => return Err(Status::invalid_argument(format!("status: unknown status '{other}'"))),
        };
        let page_size = if r.page_size == 0 { 20 } else { r.page_size };
        let hearing_id = id("hearing_id", &r.hearing_id)?;
        if !self.app.may_see(hearing_id, principal.as_ref()).await.map_err(app_status)? {
            return Err(Status::not_found(format!("no hearing {hearing_id}")));
        }
        let (views, total) = self
            .app
            .list_for_hearing_as(viewer.as_ref(), company.as_deref(), hearing_id, status, r.page, page_size)
            .await
            .map_err(app_status)?;
        let responses = views.into_iter().map(view_to_pb).collect();
        Ok(GrpcResponse::new(pb::ListResponsesResponse { responses, total }))
    }

    async fn count_responses(&self, request: Request<pb::HearingRef>) -> Reply<pb::ResponseCounts> {
        let principal = self.caller(&request)?;
        let hearing = id("hearing_id", &request.get_ref().hearing_id)?;
        if !self.is_owner(&actor(&principal), hearing).await? {
            return Err(Status::permission_denied("only the hearing's owner or an administrator sees the counts"));
        }
        let by_status = projections::counts(&self.app.store, hearing).await.map_err(|e| app_status(e.into()))?;
        Ok(GrpcResponse::new(pb::ResponseCounts { by_status }))
    }

    async fn add_review_comment(&self, request: Request<pb::ReviewCommentRequest>) -> Reply<pb::ReviewComments> {
        let principal = self.caller(&request)?;
        let r = request.into_inner();
        let hearing = id("hearing_id", &r.hearing_id)?;
        let me = actor(&principal);
        self.app.add_review_comment(&me, hearing, &r.text).await.map_err(app_status)?;
        self.comments(&me, hearing).await
    }

    async fn list_review_comments(&self, request: Request<pb::HearingRef>) -> Reply<pb::ReviewComments> {
        let principal = self.caller(&request)?;
        let hearing = id("hearing_id", &request.get_ref().hearing_id)?;
        self.comments(&actor(&principal), hearing).await
    }

    async fn my_responses(&self, request: Request<pb::MyResponsesRequest>) -> Reply<pb::ListResponsesResponse> {
        let principal = self.caller(&request)?;
        let me = actor(&principal);
        let mine = projections::mine(&self.app.store, &me.reference).await.map_err(|e| app_status(e.into()))?;
        let mut responses = Vec::with_capacity(mine.len());
        for (response_id, _, _, _) in &mine {
            let response = self.app.load(*response_id).await.map_err(app_status)?;
            responses.push(response_to_pb(*response_id, &response, &me, false));
        }
        Ok(GrpcResponse::new(pb::ListResponsesResponse { total: responses.len() as i64, responses }))
    }
}
