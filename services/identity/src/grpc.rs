//! The gRPC adapter of the identity service.

use std::sync::Arc;

use agora_auth::grpc::require_principal;
use agora_auth::{Principal, Role, TokenVerifier};
use agora_proto::identity::v1 as pb;
use agora_proto::identity::v1::identity_service_server::{IdentityService, IdentityServiceServer};
use chrono::SecondsFormat;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::app::{IdentityApp, IdentityAppError, Session, UserView};
use crate::domain::IdentityError;
use crate::oidc::OidcError;
use crate::providers::demo_users;

pub struct IdentityGrpc {
    app: IdentityApp,
    verifier: Arc<TokenVerifier>,
}

pub fn service(app: IdentityApp, verifier: Arc<TokenVerifier>) -> IdentityServiceServer<IdentityGrpc> {
    IdentityServiceServer::new(IdentityGrpc { app, verifier })
}

fn status(error: IdentityAppError) -> Status {
    let message = error.to_string();
    match error {
        IdentityAppError::Domain(IdentityError::NotFound) => Status::not_found(message),
        IdentityAppError::Domain(IdentityError::NotAllowed(_)) | IdentityAppError::PermissionDenied(_) => {
            Status::permission_denied(message)
        }
        IdentityAppError::Domain(IdentityError::Invalid(_)) | IdentityAppError::Invalid(_) => {
            Status::invalid_argument(message)
        }
        IdentityAppError::Domain(IdentityError::Erased) => Status::failed_precondition(message),
        IdentityAppError::Unauthenticated(_) => Status::unauthenticated(message),
        IdentityAppError::Login(OidcError::Unreachable { .. }) => Status::unavailable(message),
        IdentityAppError::Login(OidcError::Configuration { .. }) => {
            tracing::error!(error = %message, "login provider misconfigured");
            Status::failed_precondition(message)
        }
        IdentityAppError::Login(_) => Status::unauthenticated(message),
        IdentityAppError::Conflict => Status::aborted(message),
        IdentityAppError::Storage(_) => {
            tracing::error!(error = %message, "identity service storage error");
            Status::unavailable("the identity service could not do this now; retry")
        }
    }
}

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn user(view: UserView) -> pb::User {
    pb::User {
        user_id: view.user_id.to_string(),
        capacity: view.capacity.map(|c| c.as_str().to_string()).unwrap_or_default(),
        roles: view.roles.iter().map(|r| r.as_str().to_string()).collect(),
        name: view.name,
        company: view.company.unwrap_or_default(),
        terms_accepted: view.terms_accepted.unwrap_or_default(),
        erased: view.erased,
        must_accept_terms: view.must_accept_terms,
    }
}

fn session(session: Session) -> pb::Session {
    pb::Session {
        access_token: session.access_token,
        access_expires_at: time(session.access_expires_at),
        refresh_token: session.refresh_token,
        refresh_expires_at: time(session.refresh_expires_at),
        user: Some(user(session.user)),
    }
}

fn user_id(value: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(value).map_err(|_| Status::invalid_argument(format!("user_id: '{value}' is not an id")))
}

fn role(value: &str) -> Result<Role, Status> {
    value.parse().map_err(|e: agora_auth::AuthError| Status::invalid_argument(format!("role: {e}")))
}

impl IdentityGrpc {
    fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        require_principal(&self.verifier, request.metadata())
    }
}

#[tonic::async_trait]
impl IdentityService for IdentityGrpc {
    async fn list_login_methods(
        &self,
        _request: Request<pb::ListLoginMethodsRequest>,
    ) -> Result<Response<pb::ListLoginMethodsResponse>, Status> {
        let methods = self
            .app
            .providers()
            .map(|p| pb::LoginMethod {
                provider: p.config().id.clone(),
                capacity: p.config().capacity.as_str().to_string(),
                display_name: p.config().display_name.clone(),
            })
            .collect();
        let dev_login = self.app.dev_login_enabled();
        let demo_users = if dev_login {
            demo_users()
                .into_iter()
                .map(|u| pb::DemoUser {
                    handle: u.handle.into(),
                    name: u.name.into(),
                    capacity: u.principal.capacity.as_str().into(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::ListLoginMethodsResponse { methods, dev_login, demo_users }))
    }

    async fn begin_login(
        &self,
        request: Request<pb::BeginLoginRequest>,
    ) -> Result<Response<pb::BeginLoginResponse>, Status> {
        let authorization = self.app.begin_login(&request.into_inner().provider).await.map_err(status)?;
        Ok(Response::new(pb::BeginLoginResponse {
            authorization_url: authorization.authorization_url,
            state: authorization.state,
        }))
    }

    async fn complete_login(
        &self,
        request: Request<pb::CompleteLoginRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let request = request.into_inner();
        let done = self.app.complete_login(&request.state, &request.code).await.map_err(status)?;
        Ok(Response::new(session(done)))
    }

    async fn dev_login(&self, request: Request<pb::DevLoginRequest>) -> Result<Response<pb::Session>, Status> {
        let done = self.app.dev_login(&request.into_inner().handle).await.map_err(status)?;
        Ok(Response::new(session(done)))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Result<Response<pb::Session>, Status> {
        let done = self.app.refresh(&request.into_inner().refresh_token).await.map_err(status)?;
        Ok(Response::new(session(done)))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        self.app.logout(&request.into_inner().refresh_token).await.map_err(status)?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn get_jwks(&self, _request: Request<pb::GetJwksRequest>) -> Result<Response<pb::Jwks>, Status> {
        let (jwks, signing_kid) = self.app.jwks().await.map_err(status)?;
        Ok(Response::new(pb::Jwks { json: jwks.to_string(), signing_kid }))
    }

    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Result<Response<pb::User>, Status> {
        let principal = self.principal(&request)?;
        Ok(Response::new(user(self.app.who_am_i(&principal).await.map_err(status)?)))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let principal = self.principal(&request)?;
        let users = self.app.list_users(&principal).await.map_err(status)?;
        Ok(Response::new(pb::ListUsersResponse { users: users.into_iter().map(user).collect() }))
    }

    async fn list_companies(
        &self,
        request: Request<pb::ListCompaniesRequest>,
    ) -> Result<Response<pb::ListCompaniesResponse>, Status> {
        let principal = self.principal(&request)?;
        let companies = self.app.list_companies(&principal).await.map_err(status)?;
        Ok(Response::new(pb::ListCompaniesResponse {
            companies: companies
                .into_iter()
                .map(|c| pb::Company {
                    reference: c.reference,
                    name: c.name.unwrap_or_default(),
                    user_ids: c.users.iter().map(Uuid::to_string).collect(),
                })
                .collect(),
        }))
    }

    async fn assign_role(&self, request: Request<pb::RoleRequest>) -> Result<Response<pb::User>, Status> {
        let principal = self.principal(&request)?;
        let request = request.into_inner();
        let view =
            self.app.assign_role(&principal, user_id(&request.user_id)?, role(&request.role)?).await.map_err(status)?;
        Ok(Response::new(user(view)))
    }

    async fn revoke_role(&self, request: Request<pb::RoleRequest>) -> Result<Response<pb::User>, Status> {
        let principal = self.principal(&request)?;
        let request = request.into_inner();
        let view =
            self.app.revoke_role(&principal, user_id(&request.user_id)?, role(&request.role)?).await.map_err(status)?;
        Ok(Response::new(user(view)))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::Jwks>, Status> {
        let principal = self.principal(&request)?;
        let (jwks, signing_kid) = self.app.rotate_signing_key(&principal).await.map_err(status)?;
        Ok(Response::new(pb::Jwks { json: jwks.to_string(), signing_kid }))
    }

    async fn current_terms(&self, _request: Request<pb::CurrentTermsRequest>) -> Result<Response<pb::Terms>, Status> {
        let terms = self
            .app
            .current_terms()
            .await
            .map_err(status)?
            .ok_or_else(|| Status::not_found("no terms have been published"))?;
        Ok(Response::new(pb::Terms {
            version: terms.version,
            text: terms.text,
            published_at: time(terms.published_at),
        }))
    }

    async fn publish_terms(&self, request: Request<pb::PublishTermsRequest>) -> Result<Response<pb::Terms>, Status> {
        let principal = self.principal(&request)?;
        let request = request.into_inner();
        let terms = self.app.publish_terms(&principal, &request.version, &request.text).await.map_err(status)?;
        Ok(Response::new(pb::Terms {
            version: terms.version,
            text: terms.text,
            published_at: time(terms.published_at),
        }))
    }

    async fn accept_terms(&self, request: Request<pb::AcceptTermsRequest>) -> Result<Response<pb::User>, Status> {
        let principal = self.principal(&request)?;
        let view = self.app.accept_terms(&principal, &request.into_inner().version).await.map_err(status)?;
        Ok(Response::new(user(view)))
    }

    async fn export_my_data(
        &self,
        request: Request<pb::ExportMyDataRequest>,
    ) -> Result<Response<pb::PersonalData>, Status> {
        let principal = self.principal(&request)?;
        let data = self.app.personal_data(&principal, principal.user_id).await.map_err(status)?;
        Ok(Response::new(pb::PersonalData { json: data.to_string() }))
    }

    async fn erase_user(
        &self,
        request: Request<pb::EraseUserRequest>,
    ) -> Result<Response<pb::EraseUserResponse>, Status> {
        let principal = self.principal(&request)?;
        let request = request.into_inner();
        let at = self.app.erase(&principal, user_id(&request.user_id)?, &request.reason).await.map_err(status)?;
        Ok(Response::new(pb::EraseUserResponse { erased_at: time(at) }))
    }
}
