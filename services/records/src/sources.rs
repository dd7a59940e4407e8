//! Where the records service reads what it files: the hearing service's documents and the
//! response service's responses, over gRPC with the shared service secret. Tests put a
//! stand-in behind the same trait.

use agora_auth::grpc::ServiceCredential;
use agora_proto::hearing::v1 as hearing_pb;
use agora_proto::hearing::v1::hearing_records_source_client::HearingRecordsSourceClient;
use agora_proto::response::v1 as response_pb;
use agora_proto::response::v1::response_records_source_client::ResponseRecordsSourceClient;
use bytes::{Bytes, BytesMut};
use tonic::transport::Channel;

use crate::domain::AttachmentRef;
use crate::esdh::DocumentFile;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The document is gone (a file removed, a respondent erased): the step cannot succeed.
    #[error("not found: {0}")]
    Gone(String),
    #[error("{0}")]
    Unavailable(String),
}

impl SourceError {
    pub fn is_final(&self) -> bool {
        matches!(self, SourceError::Gone(_))
    }
}

/// A response to file, as the response service names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseToFile {
    pub response_id: String,
    pub number: i64,
    pub attachments: Vec<AttachmentRef>,
}

#[async_trait::async_trait]
pub trait Sources: Send + Sync {
    async fn hearing_file(&self, hearing_id: &str, file_id: &str) -> Result<DocumentFile, SourceError>;
    async fn responses_to_file(
        &self,
        hearing_id: &str,
        approved_only: bool,
    ) -> Result<Vec<ResponseToFile>, SourceError>;
    /// The response as a PDF (`attachment_id` none) or one of its attachments.
    async fn response_document(
        &self,
        hearing_id: &str,
        response_id: &str,
        attachment_id: Option<&str>,
    ) -> Result<DocumentFile, SourceError>;
}

/// The hearing and response services over gRPC.
pub struct GrpcSources {
    hearings: HearingRecordsSourceClient<Channel>,
    responses: ResponseRecordsSourceClient<Channel>,
    credential: ServiceCredential,
}

const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A read that takes longer fails the attempt (it is tried again), so that a hung service
/// never holds a step past its lease.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn channel(url: &str) -> Result<Channel, String> {
    let timeouts =
        agora_proto::channel::Timeouts { connect: std::time::Duration::from_secs(10), request: READ_TIMEOUT };
    agora_proto::channel::connect_lazy(url, timeouts)
}

fn source_error(what: &str, status: tonic::Status) -> SourceError {
    if status.code() == tonic::Code::NotFound {
        SourceError::Gone(format!("{what}: {}", status.message()))
    } else {
        SourceError::Unavailable(format!("{what}: {} ({:?})", status.message(), status.code()))
    }
}

impl GrpcSources {
    /// Clients of the hearing and response services at their gRPC URLs, connecting when first used.
    pub fn new(hearing_url: &str, response_url: &str, secret: &str) -> Result<Self, String> {
        Ok(Self {
            credential: ServiceCredential::new(secret).map_err(|e| format!("AGORA_SERVICE_SECRET: {e}"))?,
            hearings: HearingRecordsSourceClient::new(
                channel(hearing_url).map_err(|e| format!("AGORA_HEARING_URL: {e}"))?,
            )
            .max_decoding_message_size(MAX_MESSAGE),
            responses: ResponseRecordsSourceClient::new(
                channel(response_url).map_err(|e| format!("AGORA_RESPONSE_URL: {e}"))?,
            ),
        })
    }
}

#[async_trait::async_trait]
impl Sources for GrpcSources {
    async fn hearing_file(&self, hearing_id: &str, file_id: &str) -> Result<DocumentFile, SourceError> {
        let request = self
            .credential
            .request(hearing_pb::GetFileRequest { hearing_id: hearing_id.into(), file_id: file_id.into() });
        let reply = self
            .hearings
            .clone()
            .read_hearing_file(request)
            .await
            .map_err(|s| source_error("the hearing's document", s))?
            .into_inner();
        let file = reply.file.unwrap_or_default();
        Ok(DocumentFile { name: file.name, content_type: file.content_type, content: reply.content.into() })
    }

    async fn responses_to_file(
        &self,
        hearing_id: &str,
        approved_only: bool,
    ) -> Result<Vec<ResponseToFile>, SourceError> {
        let request = self
            .credential
            .request(response_pb::ResponsesToFileRequest { hearing_id: hearing_id.into(), approved_only });
        let reply = self
            .responses
            .clone()
            .list_responses_to_file(request)
            .await
            .map_err(|s| source_error("the responses", s))?
            .into_inner();
        Ok(reply
            .responses
            .into_iter()
            .map(|r| ResponseToFile {
                response_id: r.response_id,
                number: r.number,
                attachments: r
                    .attachments
                    .into_iter()
                    .map(|a| AttachmentRef { attachment_id: a.attachment_id, name: a.name })
                    .collect(),
            })
            .collect())
    }

    async fn response_document(
        &self,
        hearing_id: &str,
        response_id: &str,
        attachment_id: Option<&str>,
    ) -> Result<DocumentFile, SourceError> {
        let request = self.credential.request(response_pb::ResponseDocumentRequest {
            hearing_id: hearing_id.into(),
            response_id: response_id.into(),
            attachment_id: attachment_id.unwrap_or_default().into(),
        });
        let what = "the response's document";
        let mut stream = self
            .responses
            .clone()
            .read_response_document(request)
            .await
            .map_err(|s| source_error(what, s))?
            .into_inner();
        let mut file = DocumentFile { name: String::new(), content_type: String::new(), content: Bytes::new() };
        let mut content = BytesMut::new();
        let mut first = true;
        while let Some(chunk) = stream.message().await.map_err(|s| source_error(what, s))? {
            if first {
                file.name = chunk.file_name;
                file.content_type = chunk.content_type;
                first = false;
            }
            content.extend_from_slice(&chunk.data);
        }
        if first {
            return Err(SourceError::Unavailable(format!("{what}: the stream ended before its first chunk")));
        }
        file.content = content.freeze();
        Ok(file)
    }
}
