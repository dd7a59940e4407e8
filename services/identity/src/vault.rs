//! The vault: every person's data key, kept wrapped under the master key in the identity
//! service's database, made on first use and destroyed on erasure.

use std::sync::Arc;
use std::time::Duration;

use agora_eventstore::Store;
use agora_vault::{KeyOwner, KeyWrapper, PersonKey, PersonKeys, RememberedKeys, VaultError};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// How long an unwrapped key is remembered.
pub const REMEMBER: Duration = Duration::from_secs(60);

use crate::store;

pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What the vault holds for a person.
#[derive(Debug, Clone)]
pub enum Lookup {
    Key(PersonKey),
    Erased,
    Unknown,
}

#[derive(Clone)]
pub struct Vault {
    store: Store,
    master: Arc<dyn KeyWrapper>,
    /// Unwrapped keys, for at most [`REMEMBER`]: an erasure by another replica reaches this
    /// one within that time.
    cache: RememberedKeys,
    clock: Clock,
}

fn storage(e: agora_eventstore::StoreError) -> VaultError {
    VaultError::Store(e.to_string())
}

impl Vault {
    pub fn new(store: Store, master: Arc<dyn KeyWrapper>, clock: Clock) -> Self {
        Self { store, master, cache: RememberedKeys::new(REMEMBER), clock }
    }

    fn remember(&self, key: &PersonKey) {
        self.cache.remember(key.id(), Some(key.clone()));
    }

    /// A key, told apart from destruction and from never having been made.
    pub async fn lookup(&self, id: Uuid) -> Result<Lookup, VaultError> {
        if let Some(key) = self.key(id).await? {
            return Ok(Lookup::Key(key));
        }
        Ok(match store::person_key(&self.store, id).await.map_err(storage)? {
            Some(_) => Lookup::Erased,
            None => Lookup::Unknown,
        })
    }

    /// Destroys every key of the person: every value sealed for them is unreadable from now on,
    /// and nothing new is sealed for them.
    pub async fn erase(&self, person: Uuid) -> Result<(), VaultError> {
        self.destroy(person, true).await
    }

    /// Destroys the keys under which Agora held data of someone known by a pseudonymous
    /// reference (an invitation by CPR number or address); a later invitation gets a new key.
    pub async fn erase_reference(&self, reference: &str) -> Result<(), VaultError> {
        self.destroy(agora_vault::reference_person(reference), false).await
    }

    async fn destroy(&self, person: Uuid, forever: bool) -> Result<(), VaultError> {
        store::destroy_person_keys(&self.store, person, forever, (self.clock)()).await.map_err(storage)?;
        // The scoped keys' ids are not known here: forget everything rather than keep one.
        self.cache.forget_all();
        Ok(())
    }
}

#[async_trait::async_trait]
impl PersonKeys for Vault {
    async fn key(&self, id: Uuid) -> Result<Option<PersonKey>, VaultError> {
        if let Some(Some(key)) = self.cache.recall(id) {
            return Ok(Some(key));
        }
        match store::person_key(&self.store, id).await.map_err(storage)? {
            Some(Some(wrapped)) => {
                let key = self.master.unwrap(id, &wrapped)?;
                self.remember(&key);
                Ok(Some(key))
            }
            _ => Ok(None),
        }
    }

    async fn key_or_create(&self, owner: &KeyOwner) -> Result<PersonKey, VaultError> {
        let id = owner.key_id();
        if let Some(key) = self.key(id).await? {
            return Ok(key);
        }
        let fresh = PersonKey::generate(id)?;
        let wrapped = self.master.wrap(&fresh)?;
        // Two first uses at once agree on the key stored first.
        match store::insert_person_key(&self.store, owner, &wrapped, (self.clock)()).await.map_err(storage)? {
            Some(stored) => {
                let key = self.master.unwrap(id, &stored)?;
                self.remember(&key);
                Ok(key)
            }
            None => Err(VaultError::Erased(owner.person)),
        }
    }

    async fn forget_remembered(&self) {
        self.cache.forget_all();
    }

    async fn destroy_scope(&self, scope: &str) -> Result<u64, VaultError> {
        let destroyed = store::destroy_scope(&self.store, scope, (self.clock)()).await.map_err(storage)?;
        self.cache.forget_all();
        Ok(destroyed)
    }
}
