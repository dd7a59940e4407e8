//! The vault over gRPC, for services that run apart from the identity service: the server
//! side checks the shared service secret, and [`RemoteKeys`] is the client every such service
//! uses as its [`PersonKeys`], with a short memory so that a listing does not ask per row.

use std::collections::HashMap;
use std::time::Duration;

use agora_auth::grpc::{ServiceCredential, ServiceSecret};
use agora_proto::identity::v1 as pb;
use agora_proto::identity::v1::person_key_service_client::PersonKeyServiceClient;
use agora_proto::identity::v1::person_key_service_server::{PersonKeyService, PersonKeyServiceServer};
use agora_vault::{KeyOwner, PersonKey, PersonKeys, RememberedKeys, VaultError};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::app::Contact;
use crate::vault::{Lookup, Vault};

pub use agora_auth::grpc::SERVICE_SECRET;
/// Most persons asked for in one call.
const MAX_PERSONS: usize = 1_000;
/// How long a service remembers a key, or that a person was erased: an erasure reaches every
/// service within this time.
pub const REMEMBER: Duration = Duration::from_secs(300);

pub struct PersonKeyGrpc {
    vault: Vault,
    secret: ServiceSecret,
}

/// The service, answering callers that present `secret`.
pub fn service(vault: Vault, secret: &str) -> PersonKeyServiceServer<PersonKeyGrpc> {
    PersonKeyServiceServer::new(PersonKeyGrpc { vault, secret: ServiceSecret::new(secret) })
}

impl PersonKeyGrpc {
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.secret.check(request.metadata(), "the vault")
    }
}

fn id(field: &str, value: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(value).map_err(|_| Status::invalid_argument(format!("{field}: '{value}' is not an id")))
}

fn vault_status(error: VaultError) -> Status {
    match error {
        VaultError::Erased(_) => Status::failed_precondition(error.to_string()),
        other => {
            tracing::error!(error = %other, "vault error");
            Status::unavailable("the vault cannot answer now; retry")
        }
    }
}

#[tonic::async_trait]
impl PersonKeyService for PersonKeyGrpc {
    async fn destroy_scope(
        &self,
        request: Request<pb::DestroyScopeRequest>,
    ) -> Result<Response<pb::DestroyScopeResponse>, Status> {
        self.check(&request)?;
        let scope = request.into_inner().scope;
        if !scope.starts_with("hearing:") {
            return Err(Status::invalid_argument(format!("scope: '{scope}' is not hearing:<id>")));
        }
        let destroyed = self.vault.destroy_scope(&scope).await.map_err(vault_status)?;
        Ok(Response::new(pb::DestroyScopeResponse { destroyed }))
    }

    async fn get_person_keys(
        &self,
        request: Request<pb::GetPersonKeysRequest>,
    ) -> Result<Response<pb::PersonKeys>, Status> {
        self.check(&request)?;
        let ids = request.into_inner().key_ids;
        if ids.len() > MAX_PERSONS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_PERSONS} persons per call (got {})",
                ids.len()
            )));
        }
        let mut keys = Vec::with_capacity(ids.len());
        for id in ids {
            let (key, erased) = match self.vault.lookup(self::id("key_ids", &id)?).await.map_err(vault_status)? {
                Lookup::Key(key) => (key.to_bytes().to_vec(), false),
                Lookup::Erased => (Vec::new(), true),
                Lookup::Unknown => (Vec::new(), false),
            };
            keys.push(pb::PersonKey { key_id: id, key, erased });
        }
        Ok(Response::new(pb::PersonKeys { keys }))
    }

    async fn create_person_key(
        &self,
        request: Request<pb::CreatePersonKeyRequest>,
    ) -> Result<Response<pb::PersonKey>, Status> {
        self.check(&request)?;
        let request = request.into_inner();
        let owner = KeyOwner { person: id("person_id", &request.person_id)?, scope: request.scope };
        if !(owner.scope.is_empty() || owner.scope.starts_with("hearing:")) {
            return Err(Status::invalid_argument(format!(
                "scope: '{}' is neither empty nor hearing:<id>",
                owner.scope
            )));
        }
        let key = self.vault.key_or_create(&owner).await.map_err(vault_status)?;
        Ok(Response::new(pb::PersonKey { key_id: key.id().to_string(), key: key.to_bytes().to_vec(), erased: false }))
    }
}

/// The vault of an identity service elsewhere.
#[derive(Clone)]
pub struct RemoteKeys {
    client: PersonKeyServiceClient<Channel>,
    credential: ServiceCredential,
    /// person → (key, or None when erased; when learnt)
    remembered: RememberedKeys,
}

impl RemoteKeys {
    /// A client of the identity service at `url` (http://host:port), connecting when first used.
    pub fn new(url: &str, secret: &str) -> Result<Self, String> {
        let timeouts = agora_proto::channel::Timeouts {
            connect: std::time::Duration::from_secs(10),
            request: std::time::Duration::from_secs(30),
        };
        let channel = agora_proto::channel::connect_lazy(url, timeouts)?;
        let credential = ServiceCredential::new(secret)?;
        Ok(Self { client: PersonKeyServiceClient::new(channel), credential, remembered: RememberedKeys::new(REMEMBER) })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        self.credential.request(message)
    }
}

fn remote(status: Status) -> VaultError {
    VaultError::Store(format!("identity service: {}", status.message()))
}

fn key_of(reply: pb::PersonKey) -> Result<(Uuid, Lookup), VaultError> {
    let id = Uuid::parse_str(&reply.key_id).map_err(|_| VaultError::Store("the vault sent a bad key id".into()))?;
    Ok((
        id,
        match (reply.erased, reply.key.is_empty()) {
            (true, _) => Lookup::Erased,
            (false, true) => Lookup::Unknown,
            (false, false) => Lookup::Key(PersonKey::from_bytes(id, &reply.key)?),
        },
    ))
}

#[async_trait::async_trait]
impl PersonKeys for RemoteKeys {
    async fn key(&self, wanted: Uuid) -> Result<Option<PersonKey>, VaultError> {
        if let Some(known) = self.remembered.recall(wanted) {
            return Ok(known);
        }
        let request = self.request(pb::GetPersonKeysRequest { key_ids: vec![wanted.to_string()] });
        let reply = self.client.clone().get_person_keys(request).await.map_err(remote)?.into_inner();
        let mut found = None;
        for key in reply.keys {
            let (id, lookup) = key_of(key)?;
            let key = match lookup {
                Lookup::Key(key) => Some(key),
                Lookup::Erased => None,
                // Not remembered: the person may get a key in a moment.
                Lookup::Unknown => continue,
            };
            self.remembered.remember(id, key.clone());
            if id == wanted {
                found = key;
            }
        }
        Ok(found)
    }

    async fn key_or_create(&self, owner: &KeyOwner) -> Result<PersonKey, VaultError> {
        let id = owner.key_id();
        if let Some(Some(key)) = self.remembered.recall(id) {
            return Ok(key);
        }
        let request = self
            .request(pb::CreatePersonKeyRequest { person_id: owner.person.to_string(), scope: owner.scope.clone() });
        match self.client.clone().create_person_key(request).await {
            Ok(reply) => match key_of(reply.into_inner())? {
                (_, Lookup::Key(key)) => {
                    self.remembered.remember(id, Some(key.clone()));
                    Ok(key)
                }
                _ => Err(VaultError::Erased(owner.person)),
            },
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                self.remembered.remember(id, None);
                Err(VaultError::Erased(owner.person))
            }
            Err(status) => Err(remote(status)),
        }
    }

    async fn forget_remembered(&self) {
        self.remembered.forget_all();
    }

    async fn destroy_scope(&self, scope: &str) -> Result<u64, VaultError> {
        let request = self.request(pb::DestroyScopeRequest { scope: scope.to_string() });
        let reply = self.client.clone().destroy_scope(request).await.map_err(remote)?.into_inner();
        self.remembered.forget_all();
        Ok(reply.destroyed)
    }
}

/// How to reach a user, for Agora's own services (`ContactDirectory`).
pub struct ContactGrpc {
    app: crate::app::IdentityApp,
    secret: ServiceSecret,
}

impl ContactGrpc {
    /// The directory, answering callers that present `secret`.
    pub fn new(app: crate::app::IdentityApp, secret: &str) -> Self {
        Self { app, secret: ServiceSecret::new(secret) }
    }
}

/// The contact directory as a gRPC service, answering callers that present `secret`.
pub fn contacts(
    app: crate::app::IdentityApp,
    secret: &str,
) -> pb::contact_directory_server::ContactDirectoryServer<ContactGrpc> {
    pb::contact_directory_server::ContactDirectoryServer::new(ContactGrpc::new(app, secret))
}

#[tonic::async_trait]
impl pb::contact_directory_server::ContactDirectory for ContactGrpc {
    async fn get_contact(&self, request: Request<pb::GetContactRequest>) -> Result<Response<pb::ContactReply>, Status> {
        self.secret.check(request.metadata(), "the contact directory")?;
        let user = id("user_id", &request.get_ref().user_id)?;
        Ok(Response::new(self.contact(user).await?))
    }

    async fn get_contacts(
        &self,
        request: Request<pb::GetContactsRequest>,
    ) -> Result<Response<pb::ContactsReply>, Status> {
        self.secret.check(request.metadata(), "the contact directory")?;
        let asked = &request.get_ref().user_ids;
        if asked.len() > pb::CONTACTS_AT_ONCE {
            return Err(Status::invalid_argument(format!(
                "user_ids: {} ids; at most {} at once",
                asked.len(),
                pb::CONTACTS_AT_ONCE
            )));
        }
        // Every id is checked before any is looked up: a bad one refuses the whole request.
        let users =
            asked.iter().map(|user| Ok((user.clone(), id("user_ids", user)?))).collect::<Result<Vec<_>, Status>>()?;
        let ids: Vec<Uuid> = users.iter().map(|(_, user)| *user).collect();
        let found = self.contacts(&ids).await?;
        // Each id as it was asked (one UUID may be spelt in more than one way).
        let contacts =
            users.into_iter().map(|(asked, user)| (asked, reply(found.get(&user).cloned().flatten()))).collect();
        Ok(Response::new(pb::ContactsReply { contacts }))
    }
}

impl ContactGrpc {
    async fn contact(&self, user: Uuid) -> Result<pb::ContactReply, Status> {
        Ok(reply(self.contacts(&[user]).await?.remove(&user).flatten()))
    }

    async fn contacts(&self, users: &[Uuid]) -> Result<HashMap<Uuid, Option<Contact>>, Status> {
        self.app.contacts(users).await.map_err(|e| {
            tracing::error!(error = %e, "contact directory");
            Status::unavailable("the identity service cannot answer now; retry")
        })
    }
}

/// What the directory answers for a person: not found is the default reply.
fn reply(contact: Option<Contact>) -> pb::ContactReply {
    match contact {
        Some(contact) => pb::ContactReply {
            found: true,
            name: contact.name,
            email: contact.email.unwrap_or_default(),
            language: contact.language,
            digital_post: contact.digital_post.unwrap_or_default(),
        },
        None => pb::ContactReply::default(),
    }
}
