//! The gRPC adapter of the records service (proto/agora/records/v1/records.proto).

use std::sync::Arc;

use agora_auth::TokenVerifier;
use agora_proto::records::v1 as pb;
use agora_proto::records::v1::records_service_server::{RecordsService, RecordsServiceServer};
use tonic::{Request, Response, Status};

use crate::app::{JournalView, RecordsApp, RecordsError, Steps, time};
use crate::domain::{JournalStatus, StepState};

pub struct RecordsGrpc {
    app: RecordsApp,
    verifier: Arc<TokenVerifier>,
}

pub fn service(app: RecordsApp, verifier: Arc<TokenVerifier>) -> RecordsServiceServer<RecordsGrpc> {
    RecordsServiceServer::new(RecordsGrpc { app, verifier })
}

fn status_of(error: RecordsError) -> Status {
    let message = error.to_string();
    match error {
        RecordsError::NotAllowed(_) => Status::permission_denied(message),
        RecordsError::NotFound(_) => Status::not_found(message),
        RecordsError::Invalid(_) => Status::invalid_argument(message),
        RecordsError::Conflict => Status::aborted(message),
        RecordsError::Store(_) => {
            tracing::error!(error = %message, "records storage error");
            Status::unavailable("the records service cannot answer now; retry")
        }
    }
}

fn status_to_pb(status: JournalStatus) -> pb::JournalizationStatus {
    match status {
        JournalStatus::NotJournalized => pb::JournalizationStatus::NotJournalized,
        JournalStatus::InProgress => pb::JournalizationStatus::InProgress,
        JournalStatus::Journalized => pb::JournalizationStatus::Journalized,
        JournalStatus::Failed => pb::JournalizationStatus::Failed,
    }
}

fn status_from_pb(value: i32) -> Result<JournalStatus, Status> {
    match pb::JournalizationStatus::try_from(value) {
        Ok(pb::JournalizationStatus::NotJournalized) => Ok(JournalStatus::NotJournalized),
        Ok(pb::JournalizationStatus::InProgress) => Ok(JournalStatus::InProgress),
        Ok(pb::JournalizationStatus::Journalized) => Ok(JournalStatus::Journalized),
        Ok(pb::JournalizationStatus::Failed) => Ok(JournalStatus::Failed),
        _ => Err(Status::invalid_argument(format!("statuses: {value} is not a journalization status"))),
    }
}

fn state_to_pb(state: StepState) -> pb::StepState {
    match state {
        StepState::Pending => pb::StepState::Pending,
        StepState::Running => pb::StepState::Running,
        StepState::Done => pb::StepState::Done,
        StepState::Retrying => pb::StepState::Retrying,
        StepState::Parked => pb::StepState::Parked,
    }
}

fn which(request: &pb::JournalizationRequest) -> Steps {
    if request.only_open_steps { Steps::Open } else { Steps::All }
}

pub fn view_to_pb(view: JournalView) -> pb::Journalization {
    pb::Journalization {
        steps_left: i32::try_from(view.steps_left()).unwrap_or(i32::MAX),
        steps_done: i32::try_from(view.steps_done).unwrap_or(i32::MAX),
        errors: view.errors(),
        hearing_id: view.journal.hearing_id.clone(),
        title: view.journal.title.clone(),
        status: status_to_pb(view.status) as i32,
        case_number: view.journal.case_number.clone().unwrap_or_default(),
        journalized_at: time(view.journal.journalized_at),
        steps: view
            .steps
            .into_iter()
            .map(|s| pb::JournalStep {
                description: s.action.description(),
                key: s.key,
                state: state_to_pb(s.state) as i32,
                attempts: i32::try_from(s.attempts).unwrap_or(i32::MAX),
                last_error: s.last_error.unwrap_or_default(),
                next_attempt_at: if s.state == StepState::Retrying { time(s.due_at) } else { String::new() },
                document_reference: s.reference.unwrap_or_default(),
                skipped_because: s.skipped.unwrap_or_default(),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl RecordsService for RecordsGrpc {
    async fn get_journalization(
        &self,
        request: Request<pb::JournalizationRequest>,
    ) -> Result<Response<pb::Journalization>, Status> {
        let principal = agora_auth::grpc::require_principal(&self.verifier, request.metadata())?;
        let request = request.get_ref();
        let view =
            self.app.journalization_with(&principal, &request.hearing_id, which(request)).await.map_err(status_of)?;
        Ok(Response::new(view_to_pb(view)))
    }

    async fn list_journalizations(
        &self,
        request: Request<pb::ListJournalizationsRequest>,
    ) -> Result<Response<pb::JournalizationList>, Status> {
        let principal = agora_auth::grpc::require_principal(&self.verifier, request.metadata())?;
        let statuses = request.get_ref().statuses.iter().map(|s| status_from_pb(*s)).collect::<Result<Vec<_>, _>>()?;
        let views = self.app.journalizations(&principal, &statuses).await.map_err(status_of)?;
        Ok(Response::new(pb::JournalizationList { journalizations: views.into_iter().map(view_to_pb).collect() }))
    }

    async fn retry_parked_steps(
        &self,
        request: Request<pb::JournalizationRequest>,
    ) -> Result<Response<pb::Journalization>, Status> {
        let principal = agora_auth::grpc::require_principal(&self.verifier, request.metadata())?;
        let request = request.get_ref();
        let view = self.app.retry_parked(&principal, &request.hearing_id, which(request)).await.map_err(status_of)?;
        Ok(Response::new(view_to_pb(view)))
    }
}
