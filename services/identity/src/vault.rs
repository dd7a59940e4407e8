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

/// What a signing key's seed is sealed for under the master key.
pub fn signing_key_context(kid: &str) -> String {
    format!("agora-token-signing-key:{kid}")
}

/// What [`rewrap`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rewrapped {
    pub person_keys: u64,
    pub signing_keys: u64,
    /// Keys destroyed (erased) while they were being rewrapped: left destroyed.
    pub skipped: u64,
}

/// Wraps every person key and signing key again under `master`'s own key, so that the master
/// keys it replaces can be destroyed (a master key rotation). Keys already under it are left
/// alone, so it can be run again after an interruption; an erasure meanwhile wins.
pub async fn rewrap(store: &Store, master: &agora_vault::MasterKey) -> Result<Rewrapped, VaultError> {
    let mut done = Rewrapped::default();
    // A key whose wrapping changed meanwhile is erased (and no longer selected) or wrapped
    // anew (and selected again with its new wrapping), so this ends.
    loop {
        let batch = store::person_keys_not_under(store, master.kid(), 500).await.map_err(storage)?;
        if batch.is_empty() {
            break;
        }
        for (key_id, wrapped) in batch {
            let id = Uuid::parse_str(&key_id).map_err(|e| VaultError::Malformed(format!("key id {key_id}: {e}")))?;
            let Some(rewrapped) = master.rewrap(id, &wrapped)? else { continue };
            if store::replace_person_key_wrapping(store, &key_id, &wrapped, &rewrapped).await.map_err(storage)? {
                done.person_keys += 1;
            } else {
                done.skipped += 1;
            }
        }
    }
    for record in store::signing_keys(store).await.map_err(storage)? {
        let Some(resealed) = master.rewrap_secret(&signing_key_context(&record.kid), &record.sealed_seed)? else {
            continue;
        };
        if store::replace_signing_key_seal(store, &record.kid, &record.sealed_seed, &resealed).await.map_err(storage)? {
            done.signing_keys += 1;
        } else {
            done.skipped += 1;
        }
    }
    Ok(done)
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

    /// Unwraps and remembers, in one query, those keys of `ids` not remembered already, so
    /// that a batch of reveals finds them at hand. Keys destroyed or never made are left for
    /// [`PersonKeys::key`] to tell apart.
    pub async fn remember_keys(&self, ids: impl IntoIterator<Item = Uuid>) -> Result<(), VaultError> {
        let missing: Vec<Uuid> = ids
            .into_iter()
            .filter(|id| !matches!(self.cache.recall(*id), Some(Some(_))))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        for (id, wrapped) in store::person_keys(&self.store, &missing).await.map_err(storage)? {
            self.remember(&self.master.unwrap(id, &wrapped)?);
        }
        Ok(())
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
