//! Who a message goes to. The queue keeps a reference, never an address or a name in clear:
//! a user is looked up when the message is sent (so a changed address or language is used, and
//! an erased person is no longer found); an invitee's address is kept sealed with their key.

use std::collections::{BTreeMap, HashMap};

use agora_vault::VaultError;
use serde::{Deserialize, Serialize};

use crate::templates::Language;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Recipient {
    /// A user with an account, by pseudonymous user id.
    User { user_id: String },
    /// Someone invited by e-mail address before they had an account: the address and the
    /// label the owner gave them, sealed for them.
    Invitee { reference: String, sealed_address: String, sealed_name: String },
    /// A subscriber without an account: the address, sealed with the subscription's own key.
    Subscriber { subscription_id: String, sealed_address: String, language: Language },
    /// A citizen (CPR) or company (CVR) invited by number: written to in Digital Post; the
    /// number and the label are sealed for them.
    DigitalPost { reference: String, id_type: String, sealed_id: String, sealed_name: String },
}

impl Recipient {
    /// The stable reference a message is keyed and grouped by.
    pub fn reference(&self) -> String {
        match self {
            Recipient::User { user_id } => format!("user:{user_id}"),
            Recipient::Invitee { reference, .. } => reference.clone(),
            Recipient::Subscriber { subscription_id, .. } => format!("subscription:{subscription_id}"),
            Recipient::DigitalPost { reference, .. } => reference.clone(),
        }
    }
}

/// How to reach a person now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Contact {
    pub name: String,
    pub email: Option<String>,
    pub language: Language,
    /// Citizens and company users: (`CPR` or `CVR`, the number), for Digital Post.
    pub digital_post: Option<(String, String)>,
}

/// `CPR:<number>` or `CVR:<number>`, as the identity service says where Digital Post reaches
/// someone.
pub fn digital_post_address(text: &str) -> Option<(String, String)> {
    let (kind, number) = text.split_once(':')?;
    (matches!(kind, "CPR" | "CVR") && !number.is_empty() && number.chars().all(|c| c.is_ascii_digit()))
        .then(|| (kind.to_string(), number.to_string()))
}

/// The people Agora knows (the identity service).
#[async_trait::async_trait]
pub trait Directory: Send + Sync {
    /// `None` when there is no such user (any more: erased).
    async fn contact(&self, user_id: &str) -> Result<Option<Contact>, VaultError>;

    /// Those of `user_ids` who are there, by id (the ones not there, or erased, are left out).
    /// One after another unless the directory can answer for many at once.
    async fn contacts(&self, user_ids: &[String]) -> Result<HashMap<String, Contact>, VaultError> {
        one_by_one(self, user_ids).await
    }
}

/// [`Directory::contacts`] by asking for each person in turn.
async fn one_by_one<D: Directory + ?Sized>(
    directory: &D,
    user_ids: &[String],
) -> Result<HashMap<String, Contact>, VaultError> {
    let mut found = HashMap::with_capacity(user_ids.len());
    for user_id in user_ids {
        if !found.contains_key(user_id)
            && let Some(contact) = directory.contact(user_id).await?
        {
            found.insert(user_id.clone(), contact);
        }
    }
    Ok(found)
}

/// The ids among `asked` that are user ids, each once, with the user id it is: any other id
/// names nobody, and a directory asked for it would refuse the whole batch.
pub fn user_ids_among(asked: &[String]) -> BTreeMap<&str, uuid::Uuid> {
    asked.iter().filter_map(|id| Some((id.as_str(), uuid::Uuid::parse_str(id).ok()?))).collect()
}

/// The identity service's contact directory over gRPC, with the shared service secret.
pub struct RemoteDirectory {
    client: agora_proto::identity::v1::contact_directory_client::ContactDirectoryClient<tonic::transport::Channel>,
    credential: agora_auth::grpc::ServiceCredential,
}

impl RemoteDirectory {
    /// A client of the identity service at `url`, connecting when first used.
    pub fn new(url: &str, secret: &str) -> Result<Self, String> {
        let timeouts = agora_proto::channel::Timeouts {
            connect: std::time::Duration::from_secs(10),
            request: std::time::Duration::from_secs(30),
        };
        let channel =
            agora_proto::channel::connect_lazy(url, timeouts).map_err(|e| format!("AGORA_IDENTITY_URL {e}"))?;
        Ok(Self {
            client: agora_proto::identity::v1::contact_directory_client::ContactDirectoryClient::new(channel),
            credential: agora_auth::grpc::ServiceCredential::new(secret)
                .map_err(|e| format!("AGORA_SERVICE_SECRET: {e}"))?,
        })
    }
}

#[async_trait::async_trait]
impl Directory for RemoteDirectory {
    async fn contact(&self, user_id: &str) -> Result<Option<Contact>, VaultError> {
        let request = self.credential.request(agora_proto::identity::v1::GetContactRequest { user_id: user_id.into() });
        let reply = self.client.clone().get_contact(request).await.map_err(directory_error)?.into_inner();
        Ok(contact_of(reply))
    }

    async fn contacts(&self, user_ids: &[String]) -> Result<HashMap<String, Contact>, VaultError> {
        let mut found = HashMap::with_capacity(user_ids.len());
        // An id that is no user id names nobody; asked for, it would refuse the whole call.
        let unique: Vec<String> = user_ids_among(user_ids).into_keys().map(str::to_string).collect();
        for chunk in unique.chunks(agora_proto::identity::v1::CONTACTS_AT_ONCE) {
            let request =
                self.credential.request(agora_proto::identity::v1::GetContactsRequest { user_ids: chunk.to_vec() });
            let reply = match self.client.clone().get_contacts(request).await {
                Ok(reply) => reply.into_inner(),
                // An identity service from before GetContacts (a rolling upgrade): one by one.
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    found.extend(one_by_one(self, chunk).await?);
                    continue;
                }
                Err(status) => return Err(directory_error(status)),
            };
            found.extend(reply.contacts.into_iter().filter_map(|(id, reply)| Some((id, contact_of(reply)?))));
        }
        Ok(found)
    }
}

fn directory_error(status: tonic::Status) -> VaultError {
    VaultError::Store(format!("identity service: {}", status.message()))
}

fn contact_of(reply: agora_proto::identity::v1::ContactReply) -> Option<Contact> {
    reply.found.then(|| Contact {
        name: reply.name,
        email: (!reply.email.is_empty()).then_some(reply.email),
        language: if reply.language == "en" { Language::English } else { Language::Danish },
        digital_post: digital_post_address(&reply.digital_post),
    })
}
