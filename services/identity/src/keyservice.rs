//! The vault over gRPC, for services that run apart from the identity service: the server
//! side checks the shared service secret, and [`RemoteKeys`] is the client every such service
//! uses as its [`PersonKeys`], with a short memory so that a listing does not ask per row.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_proto::identity::v1 as pb;
use agora_proto::identity::v1::person_key_service_client::PersonKeyServiceClient;
use agora_proto::identity::v1::person_key_service_server::{PersonKeyService, PersonKeyServiceServer};
use agora_vault::{PersonKey, PersonKeys, VaultError};
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::vault::{Lookup, Vault};

/// The metadata key carrying the service secret.
pub const SERVICE_SECRET: &str = "x-agora-service-secret";
/// Most persons asked for in one call.
const MAX_PERSONS: usize = 1_000;
/// How long a service remembers a key, or that a person was erased: an erasure reaches every
/// service within this time.
pub const REMEMBER: Duration = Duration::from_secs(300);

pub struct PersonKeyGrpc {
    vault: Vault,
    secret_digest: [u8; 32],
}

/// The service, answering callers that present `secret`.
pub fn service(vault: Vault, secret: &str) -> PersonKeyServiceServer<PersonKeyGrpc> {
    PersonKeyServiceServer::new(PersonKeyGrpc { vault, secret_digest: Sha256::digest(secret.as_bytes()).into() })
}

impl PersonKeyGrpc {
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = request.metadata().get(SERVICE_SECRET).and_then(|v| v.to_str().ok()).ok_or_else(|| {
            Status::unauthenticated(format!("the vault answers Agora services only ({SERVICE_SECRET})"))
        })?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Compared without an early exit, so that timing tells nothing of the secret.
        let differs = digest.iter().zip(self.secret_digest.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differs != 0 {
            return Err(Status::permission_denied("wrong service secret"));
        }
        Ok(())
    }
}

fn person(value: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(value).map_err(|_| Status::invalid_argument(format!("person_id: '{value}' is not an id")))
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
    async fn get_person_keys(
        &self,
        request: Request<pb::GetPersonKeysRequest>,
    ) -> Result<Response<pb::PersonKeys>, Status> {
        self.check(&request)?;
        let ids = request.into_inner().person_ids;
        if ids.len() > MAX_PERSONS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_PERSONS} persons per call (got {})",
                ids.len()
            )));
        }
        let mut keys = Vec::with_capacity(ids.len());
        for id in ids {
            let (key, erased) = match self.vault.lookup(person(&id)?).await.map_err(vault_status)? {
                Lookup::Key(key) => (key.to_bytes().to_vec(), false),
                Lookup::Erased => (Vec::new(), true),
                Lookup::Unknown => (Vec::new(), false),
            };
            keys.push(pb::PersonKey { person_id: id, key, erased });
        }
        Ok(Response::new(pb::PersonKeys { keys }))
    }

    async fn create_person_key(
        &self,
        request: Request<pb::CreatePersonKeyRequest>,
    ) -> Result<Response<pb::PersonKey>, Status> {
        self.check(&request)?;
        let id = request.into_inner().person_id;
        let key = self.vault.key_or_create(person(&id)?).await.map_err(vault_status)?;
        Ok(Response::new(pb::PersonKey { person_id: id, key: key.to_bytes().to_vec(), erased: false }))
    }
}

/// The vault of an identity service elsewhere.
#[derive(Clone)]
pub struct RemoteKeys {
    client: PersonKeyServiceClient<Channel>,
    secret: MetadataValue<tonic::metadata::Ascii>,
    /// person → (key, or None when erased; when learnt)
    remembered: Arc<Mutex<HashMap<Uuid, (Option<PersonKey>, Instant)>>>,
}

impl RemoteKeys {
    /// A client of the identity service at `url` (http://host:port), connecting when first used.
    pub fn new(url: &str, secret: &str) -> Result<Self, String> {
        let channel =
            Channel::from_shared(url.to_string()).map_err(|e| format!("{url} is not a URL: {e}"))?.connect_lazy();
        let secret =
            MetadataValue::try_from(secret).map_err(|_| "the service secret is not printable ASCII".to_string())?;
        Ok(Self { client: PersonKeyServiceClient::new(channel), secret, remembered: Default::default() })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(SERVICE_SECRET, self.secret.clone());
        request
    }

    fn recall(&self, person: Uuid) -> Option<Option<PersonKey>> {
        let remembered = self.remembered.lock().ok()?;
        remembered.get(&person).filter(|(_, at)| at.elapsed() < REMEMBER).map(|(key, _)| key.clone())
    }

    fn remember(&self, person: Uuid, key: Option<PersonKey>) {
        if let Ok(mut remembered) = self.remembered.lock() {
            if remembered.len() > 100_000 {
                remembered.clear();
            }
            remembered.insert(person, (key, Instant::now()));
        }
    }

    /// Forgets a person at once (the erasure event reached this service).
    pub fn forget(&self, person: Uuid) {
        if let Ok(mut remembered) = self.remembered.lock() {
            remembered.insert(person, (None, Instant::now()));
        }
    }
}

fn remote(status: Status) -> VaultError {
    VaultError::Store(format!("identity service: {}", status.message()))
}

fn key_of(reply: pb::PersonKey) -> Result<(Uuid, Lookup), VaultError> {
    let person =
        Uuid::parse_str(&reply.person_id).map_err(|_| VaultError::Store("the vault sent a bad person id".into()))?;
    Ok((
        person,
        match (reply.erased, reply.key.is_empty()) {
            (true, _) => Lookup::Erased,
            (false, true) => Lookup::Unknown,
            (false, false) => Lookup::Key(PersonKey::from_bytes(person, &reply.key)?),
        },
    ))
}

#[async_trait::async_trait]
impl PersonKeys for RemoteKeys {
    async fn key(&self, person: Uuid) -> Result<Option<PersonKey>, VaultError> {
        if let Some(known) = self.recall(person) {
            return Ok(known);
        }
        let request = self.request(pb::GetPersonKeysRequest { person_ids: vec![person.to_string()] });
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
            self.remember(id, key.clone());
            if id == person {
                found = key;
            }
        }
        Ok(found)
    }

    async fn key_or_create(&self, person: Uuid) -> Result<PersonKey, VaultError> {
        if let Some(Some(key)) = self.recall(person) {
            return Ok(key);
        }
        let request = self.request(pb::CreatePersonKeyRequest { person_id: person.to_string() });
        match self.client.clone().create_person_key(request).await {
            Ok(reply) => match key_of(reply.into_inner())? {
                (_, Lookup::Key(key)) => {
                    self.remember(person, Some(key.clone()));
                    Ok(key)
                }
                _ => Err(VaultError::Erased(person)),
            },
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                self.remember(person, None);
                Err(VaultError::Erased(person))
            }
            Err(status) => Err(remote(status)),
        }
    }
}
