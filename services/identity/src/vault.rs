//! The vault: every person's data key, kept wrapped under the master key in the identity
//! service's database, made on first use and destroyed on erasure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agora_eventstore::Store;
use agora_vault::{KeyWrapper, PersonKey, PersonKeys, VaultError};
use chrono::{DateTime, Utc};
use uuid::Uuid;

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
    /// Unwrapped keys, so that a read model does not unwrap per row. Erasure evicts.
    cache: Arc<Mutex<HashMap<Uuid, PersonKey>>>,
    clock: Clock,
}

fn storage(e: agora_eventstore::StoreError) -> VaultError {
    VaultError::Store(e.to_string())
}

impl Vault {
    pub fn new(store: Store, master: Arc<dyn KeyWrapper>, clock: Clock) -> Self {
        Self { store, master, cache: Default::default(), clock }
    }

    fn remember(&self, key: &PersonKey) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 100_000 {
                cache.clear();
            }
            cache.insert(key.person(), key.clone());
        }
    }

    /// A person's key, told apart from erasure and from never having had one.
    pub async fn lookup(&self, person: Uuid) -> Result<Lookup, VaultError> {
        if let Some(key) = self.key(person).await? {
            return Ok(Lookup::Key(key));
        }
        Ok(match store::person_key(&self.store, person).await.map_err(storage)? {
            Some(_) => Lookup::Erased,
            None => Lookup::Unknown,
        })
    }

    /// Destroys the person's key: every value sealed for them is unreadable from now on.
    pub async fn erase(&self, person: Uuid) -> Result<(), VaultError> {
        store::destroy_person_key(&self.store, person, (self.clock)()).await.map_err(storage)?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(&person);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl PersonKeys for Vault {
    async fn key(&self, person: Uuid) -> Result<Option<PersonKey>, VaultError> {
        if let Some(key) = self.cache.lock().ok().and_then(|cache| cache.get(&person).cloned()) {
            return Ok(Some(key));
        }
        match store::person_key(&self.store, person).await.map_err(storage)? {
            Some(Some(wrapped)) => {
                let key = self.master.unwrap(person, &wrapped)?;
                self.remember(&key);
                Ok(Some(key))
            }
            _ => Ok(None),
        }
    }

    async fn key_or_create(&self, person: Uuid) -> Result<PersonKey, VaultError> {
        if let Some(key) = self.key(person).await? {
            return Ok(key);
        }
        let fresh = PersonKey::generate(person)?;
        let wrapped = self.master.wrap(&fresh)?;
        // Two first uses at once agree on the key stored first.
        match store::insert_person_key(&self.store, person, &wrapped, (self.clock)()).await.map_err(storage)? {
            Some(stored) => {
                let key = self.master.unwrap(person, &stored)?;
                self.remember(&key);
                Ok(key)
            }
            None => Err(VaultError::Erased(person)),
        }
    }
}
