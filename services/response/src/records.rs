//! What the records service files of a hearing's responses: the list, one PDF per response,
//! and its attachments. Only Agora's own services may read these (the shared service
//! secret), and every read is in the personal-data access log as `service:records`.

use std::pin::Pin;

use agora_auth::grpc::ServiceSecret;
use agora_proto::response::v1 as pb;
use agora_proto::response::v1::response_records_source_server::{ResponseRecordsSource, ResponseRecordsSourceServer};
use bytes::Bytes;
use futures::StreamExt;
use tonic::{Request, Response as GrpcResponse, Status};
use uuid::Uuid;

use crate::app::{ResponseApp, ResponseAppError};
use crate::domain::{Actor, Response, ResponseError};
use crate::exports::Selection;

/// Who the access log names for the records service's reads.
pub const RECORDS_ACTOR: &str = "service:records";

fn records_actor() -> Actor {
    Actor { reference: RECORDS_ACTOR.into(), administrator: true }
}

/// The responses to file, in number order, with their personal data opened.
pub async fn responses_to_file(
    app: &ResponseApp,
    hearing_id: Uuid,
    selection: Selection,
) -> Result<Vec<(Uuid, Response)>, ResponseAppError> {
    let mut chosen = Vec::new();
    let mut after = 0;
    loop {
        let page = crate::projections::hearing_responses(&app.store, hearing_id, after, 500).await?;
        let Some((_, last)) = page.last() else { return Ok(chosen) };
        after = last.number;
        chosen.extend(page.into_iter().filter(|(_, r)| selection.includes(r, false)));
    }
}

/// One response as the PDF the records system files, with the response's number.
pub async fn response_pdf(
    app: &ResponseApp,
    hearing_id: Uuid,
    response_id: Uuid,
) -> Result<(i64, Vec<u8>), ResponseAppError> {
    let response = owned_response(app, hearing_id, response_id).await?;
    app.record_access(&records_actor(), hearing_id, vec![response.author.clone()], "journalize").await?;
    let content = crate::hearings::content(&app.store, hearing_id).await?.unwrap_or_default();
    let number = response.number;
    let pdf = tokio::task::spawn_blocking(move || crate::exports::response_report(&content, &response).render())
        .await
        .map_err(|e| ResponseAppError::Storage(e.to_string()))?
        .map_err(|e| ResponseAppError::Storage(format!("the response could not be rendered: {e}")))?;
    Ok((number, pdf))
}

/// One attachment of a response: its name, type and bytes.
pub async fn attachment(
    app: &ResponseApp,
    hearing_id: Uuid,
    response_id: Uuid,
    attachment_id: Uuid,
) -> Result<(String, String, Bytes), ResponseAppError> {
    let response = owned_response(app, hearing_id, response_id).await?;
    let found = response.attachments.iter().find(|a| a.id == attachment_id).ok_or(ResponseError::NotFound)?;
    if response.author_erased {
        return Err(ResponseError::NotFound.into());
    }
    app.record_access(&records_actor(), hearing_id, vec![response.author.clone()], "journalize").await?;
    let bytes = app
        .intake
        .files()
        .store
        .get(&crate::files::path(found.id))
        .await
        .map_err(|e| ResponseAppError::Storage(format!("{}: {e}", found.name)))?
        .bytes()
        .await
        .map_err(|e| ResponseAppError::Storage(format!("{}: {e}", found.name)))?;
    Ok((found.name.clone(), found.content_type.clone(), bytes))
}

async fn owned_response(app: &ResponseApp, hearing_id: Uuid, response_id: Uuid) -> Result<Response, ResponseAppError> {
    let response = app.load(response_id).await?;
    if response.hearing_id != hearing_id {
        return Err(ResponseError::NotFound.into());
    }
    Ok(response)
}

pub struct ResponseRecordsGrpc {
    app: ResponseApp,
    secret: ServiceSecret,
}

/// The service, answering callers that present `secret`.
pub fn service(app: ResponseApp, secret: &str) -> ResponseRecordsSourceServer<ResponseRecordsGrpc> {
    ResponseRecordsSourceServer::new(ResponseRecordsGrpc { app, secret: ServiceSecret::new(secret) })
}

fn id(field: &str, value: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(value).map_err(|_| Status::invalid_argument(format!("{field}: '{value}' is not an id")))
}

fn status(error: ResponseAppError) -> Status {
    match error {
        ResponseAppError::Domain(ResponseError::NotFound) => Status::not_found(error.to_string()),
        other => {
            tracing::error!(error = %other, "records source");
            Status::unavailable(format!("the response service cannot answer now; retry ({other})"))
        }
    }
}

type ChunkStream = Pin<Box<dyn futures::Stream<Item = Result<pb::ExportChunk, Status>> + Send>>;

const CHUNK: usize = 64 * 1024;

fn chunks(file_name: String, content_type: String, bytes: Bytes) -> ChunkStream {
    let mut first = Some((file_name, content_type));
    let parts: Vec<Bytes> = if bytes.is_empty() {
        vec![bytes]
    } else {
        (0..bytes.len()).step_by(CHUNK).map(|at| bytes.slice(at..(at + CHUNK).min(bytes.len()))).collect()
    };
    Box::pin(futures::stream::iter(parts).map(move |data| {
        let (file_name, content_type) = first.take().unwrap_or_default();
        Ok(pb::ExportChunk { file_name, content_type, data: data.to_vec() })
    }))
}

#[tonic::async_trait]
impl ResponseRecordsSource for ResponseRecordsGrpc {
    type ReadResponseDocumentStream = ChunkStream;

    async fn list_responses_to_file(
        &self,
        request: Request<pb::ResponsesToFileRequest>,
    ) -> Result<GrpcResponse<pb::ResponsesToFile>, Status> {
        self.secret.check(request.metadata(), "the response service's records source")?;
        let r = request.into_inner();
        let hearing = id("hearing_id", &r.hearing_id)?;
        let selection = if r.approved_only { Selection::Approved } else { Selection::All };
        let chosen = responses_to_file(&self.app, hearing, selection).await.map_err(status)?;
        Ok(GrpcResponse::new(pb::ResponsesToFile {
            responses: chosen
                .into_iter()
                .map(|(response_id, r)| pb::ResponseToFile {
                    response_id: response_id.to_string(),
                    number: r.number,
                    attachments: r
                        .attachments
                        .iter()
                        .map(|a| pb::AttachmentToFile {
                            attachment_id: a.id.to_string(),
                            name: a.name.clone(),
                            content_type: a.content_type.clone(),
                            size: a.size,
                        })
                        .collect(),
                })
                .collect(),
        }))
    }

    async fn read_response_document(
        &self,
        request: Request<pb::ResponseDocumentRequest>,
    ) -> Result<GrpcResponse<ChunkStream>, Status> {
        self.secret.check(request.metadata(), "the response service's records source")?;
        let r = request.into_inner();
        let hearing = id("hearing_id", &r.hearing_id)?;
        let response = id("response_id", &r.response_id)?;
        if r.attachment_id.is_empty() {
            let (number, pdf) = response_pdf(&self.app, hearing, response).await.map_err(status)?;
            let name = format!("hoeringssvar-{number:04}.pdf");
            return Ok(GrpcResponse::new(chunks(name, "application/pdf".into(), pdf.into())));
        }
        let attachment_id = id("attachment_id", &r.attachment_id)?;
        let (name, content_type, bytes) =
            attachment(&self.app, hearing, response, attachment_id).await.map_err(status)?;
        Ok(GrpcResponse::new(chunks(name, content_type, bytes)))
    }
}
