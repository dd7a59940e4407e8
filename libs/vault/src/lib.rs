//! # agora-vault
//!
//! How Agora keeps personal data so that it can be erased from an immutable log.
//!
//! Every person has data keys of their own ([`PersonKey`]): one for their own record, and one
//! for their part in each hearing ([`KeyOwner`]), so that a retention period can end one
//! hearing's responses while an erasure ends all of a person. Personal data in events (names,
//! e-mail and postal addresses, response texts, attachment names) is stored only *sealed*
//! under such a key ([`PersonKey::seal`]): a self-describing string
//! `pii1.<key>.<nonce+ciphertext>` that names the key that opens it. The data keys are kept
//! wrapped under a master key ([`MasterKey`], envelope encryption), so a leaked database
//! holds nothing readable. Erasing a person destroys their data key (crypto-shredding): the
//! events stay as they were and the hash chain still verifies, but every copy of the sealed
//! data, backups included, can no longer be opened, and a read model rebuilt from the log
//! shows [`Revealed::Erased`].
//!
//! Where the master key lives is the operator's choice: [`KeyWrapper`] is the seam. The
//! [`MasterKey`] here is a 256-bit key from configuration; an Azure Key Vault key plugs in as
//! a `KeyWrapper` whose `wrap`/`unwrap` call Key Vault's wrapKey/unwrapKey operations
//! (docs/operations.md).
//!
//! [`KeyedHash`] makes the stable pseudonymous references that stand for CPR and CVR numbers
//! and e-mail addresses wherever something must be matched without being kept.

#![forbid(unsafe_code)]

mod pseudonym;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;

pub use pseudonym::KeyedHash;

/// Prefix of a sealed value; the version lets the format change without ambiguity.
const SEALED_PREFIX: &str = "pii1.";
/// Prefix of a wrapped data key.
/// How a wrapped key begins; the master key's id follows.
pub const WRAPPED_PREFIX: &str = "dek1.";

/// Everything that can go wrong sealing or opening.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    /// A key from configuration is not 32 bytes of base64.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A value is not in the sealed or wrapped format, or names another person.
    #[error("malformed sealed value: {0}")]
    Malformed(String),
    /// The value was altered, or sealed under another key.
    #[error("sealed value does not open with the key it names (altered, or sealed under another key)")]
    Tampered,
    /// The wrapped key names a master key this process does not hold.
    #[error("data key is wrapped under master key {0:?}, which is not configured")]
    UnknownMasterKey(String),
    /// The person was erased: nothing is sealed for them any more.
    #[error("person {0} has been erased; nothing new is kept for them")]
    Erased(Uuid),
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Random,
    /// The key store could not be reached.
    #[error("key store: {0}")]
    Store(String),
}

fn random<const N: usize>() -> Result<[u8; N], VaultError> {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).map_err(|_| VaultError::Random)?;
    Ok(bytes)
}

fn aead_key(bytes: &[u8; 32]) -> Result<LessSafeKey, VaultError> {
    UnboundKey::new(&CHACHA20_POLY1305, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| VaultError::InvalidKey("not a ChaCha20-Poly1305 key".into()))
}

/// Encrypts with a random nonce; the result is `nonce || ciphertext || tag`.
fn encrypt(key: &LessSafeKey, aad: &str, plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
    let nonce: [u8; NONCE_LEN] = random()?;
    let mut buffer = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad.as_bytes()), &mut buffer)
        .map_err(|_| VaultError::Tampered)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buffer);
    Ok(out)
}

fn decrypt(key: &LessSafeKey, aad: &str, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
    if sealed.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
        return Err(VaultError::Malformed("too short".into()));
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| VaultError::Malformed("bad nonce".into()))?;
    let mut buffer = ciphertext.to_vec();
    let plain = key.open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buffer).map_err(|_| VaultError::Tampered)?;
    Ok(plain.to_vec())
}

fn decode_key(base64: &str, what: &str) -> Result<[u8; 32], VaultError> {
    let text = base64.trim();
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text))
        .map_err(|_| VaultError::InvalidKey(format!("{what} is not base64")))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| VaultError::InvalidKey(format!("{what} must be 32 bytes, got {}", bytes.len())))
}

/// Whose data a key protects, and within what.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyOwner {
    pub person: Uuid,
    /// Empty for the person's own record; `hearing:<id>` for their part in a hearing.
    pub scope: String,
}

/// Namespace of the key ids of scoped keys (a random UUID, fixed forever).
const SCOPED_KEYS: Uuid = Uuid::from_u128(0x6f1d_2c4e_8a3b_4c59_9e7f_0b2d_4a6c_8e10);

impl KeyOwner {
    /// The person's own record (a profile: name, e-mail address).
    pub fn person(person: Uuid) -> Self {
        Self { person, scope: String::new() }
    }

    /// The person's part in one hearing (their responses to it).
    pub fn in_hearing(person: Uuid, hearing: Uuid) -> Self {
        Self { person, scope: Self::hearing_scope(hearing) }
    }

    /// Whose key seals what a hearing holds of someone known by a reference: a user
    /// (`user:<id>`), or a person not yet known to Agora (`person:…`, `email:…`, pseudonyms of
    /// their CPR number or address). `None` for references that are no person (companies, groups).
    pub fn for_reference(reference: &str, hearing: Uuid) -> Option<Self> {
        if let Some(user) = reference.strip_prefix("user:") {
            return Uuid::parse_str(user).ok().map(|person| Self::in_hearing(person, hearing));
        }
        (reference.starts_with("person:") || reference.starts_with("email:"))
            .then(|| Self::in_hearing(reference_person(reference), hearing))
    }

    /// Whose key seals what a hearing holds of a company (`company:…`, the pseudonym of its CVR
    /// number): a key holder of its own, so that the number is never kept in clear and goes
    /// with the hearing's keys when they are destroyed.
    pub fn for_company(reference: &str, hearing: Uuid) -> Option<Self> {
        reference.starts_with("company:").then(|| Self::in_hearing(reference_person(reference), hearing))
    }

    /// The scope of a hearing's keys.
    pub fn hearing_scope(hearing: Uuid) -> String {
        format!("hearing:{hearing}")
    }

    /// The key's id: the person's id for their own record, a name-based UUID for a scope.
    pub fn key_id(&self) -> Uuid {
        if self.scope.is_empty() {
            self.person
        } else {
            Uuid::new_v5(&SCOPED_KEYS, format!("{}|{}", self.person, self.scope).as_bytes())
        }
    }
}

/// Namespace of the person ids of pseudonymous references (a random UUID, fixed forever).
const REFERENCE_PERSONS: Uuid = Uuid::from_u128(0x3b9e_51d2_7c04_4f8a_a6d1_92e0_5c7b_3f48);

/// The person id under which data about someone known only by a pseudonymous reference is
/// sealed; erasing a user also erases these for each of the user's references.
pub fn reference_person(reference: &str) -> Uuid {
    Uuid::new_v5(&REFERENCE_PERSONS, reference.as_bytes())
}

/// One data key of a person. Never stored in clear: only wrapped under the master key.
#[derive(Clone)]
pub struct PersonKey {
    id: Uuid,
    bytes: [u8; 32],
}

impl std::fmt::Debug for PersonKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl PersonKey {
    /// A fresh random key with the id `id` ([`KeyOwner::key_id`]).
    pub fn generate(id: Uuid) -> Result<Self, VaultError> {
        Ok(Self { id, bytes: random()? })
    }

    /// The key's id, named by every value it seals.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// A key received from the vault service (32 bytes).
    pub fn from_bytes(id: Uuid, bytes: &[u8]) -> Result<Self, VaultError> {
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| VaultError::InvalidKey(format!("a data key is 32 bytes, got {}", bytes.len())))?;
        Ok(Self { id, bytes })
    }

    /// The key itself, for the vault service to send to another service. Never store it.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }

    fn aad(id: Uuid) -> String {
        format!("agora-pii-v1:{id}")
    }

    /// Seals `plaintext` as `pii1.<key id>.<base64url(nonce || ciphertext || tag)>`. The key id
    /// is bound into the encryption, so a value copied to another record does not open.
    pub fn seal(&self, plaintext: &str) -> Result<String, VaultError> {
        let key = aead_key(&self.bytes)?;
        let sealed = encrypt(&key, &Self::aad(self.id), plaintext.as_bytes())?;
        Ok(format!("{SEALED_PREFIX}{}.{}", self.id.simple(), URL_SAFE_NO_PAD.encode(sealed)))
    }

    /// Opens a value this key sealed.
    pub fn open(&self, sealed: &str) -> Result<String, VaultError> {
        let (id, body) = split_sealed(sealed)?;
        if id != self.id {
            return Err(VaultError::Malformed(format!("sealed under key {id}, not {}", self.id)));
        }
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| VaultError::Malformed("not base64url".into()))?;
        let plain = decrypt(&aead_key(&self.bytes)?, &Self::aad(id), &bytes)?;
        String::from_utf8(plain).map_err(|_| VaultError::Malformed("not UTF-8".into()))
    }
}

fn split_sealed(sealed: &str) -> Result<(Uuid, &str), VaultError> {
    let rest = sealed.strip_prefix(SEALED_PREFIX).ok_or_else(|| VaultError::Malformed("not a sealed value".into()))?;
    let (person, body) = rest.split_once('.').ok_or_else(|| VaultError::Malformed("no person".into()))?;
    let person = Uuid::try_parse(person).map_err(|_| VaultError::Malformed("person is not an id".into()))?;
    Ok((person, body))
}

/// The id of the key a sealed value needs, or `None` when `value` is not sealed.
pub fn sealed_for(value: &str) -> Option<Uuid> {
    split_sealed(value).ok().map(|(person, _)| person)
}

/// Whether `value` is a sealed value.
pub fn is_sealed(value: &str) -> bool {
    sealed_for(value).is_some()
}

/// What a reader gets for a sealed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revealed {
    /// The person's data, readable.
    Clear(String),
    /// The person was erased: their key is gone and the data with it.
    Erased,
}

impl Revealed {
    /// The text, or `erased` in its place.
    pub fn or<'a>(&'a self, erased: &'a str) -> &'a str {
        match self {
            Revealed::Clear(text) => text,
            Revealed::Erased => erased,
        }
    }

    /// The text, if not erased.
    pub fn into_clear(self) -> Option<String> {
        match self {
            Revealed::Clear(text) => Some(text),
            Revealed::Erased => None,
        }
    }
}

/// The id of the master key that wrapped `wrapped`.
pub fn wrapped_kid(wrapped: &str) -> Option<&str> {
    wrapped.strip_prefix(WRAPPED_PREFIX)?.split_once('.').map(|(kid, _)| kid)
}

/// Wraps and unwraps data keys: the master key, here or in a key vault.
pub trait KeyWrapper: Send + Sync {
    /// Wraps `key` into a string that is safe to store.
    fn wrap(&self, key: &PersonKey) -> Result<String, VaultError>;
    /// Unwraps what [`KeyWrapper::wrap`] made of the key `id`.
    fn unwrap(&self, id: Uuid, wrapped: &str) -> Result<PersonKey, VaultError>;
}

/// A 256-bit master key from configuration, with an id so that keys can be rotated: data keys
/// remember which master key wrapped them. During a rotation it also holds the keys it
/// replaces: it wraps under its own key only, and opens what any of them wrapped, until
/// `agora keys rewrap` has wrapped everything again and the old keys can be destroyed.
#[derive(Clone)]
pub struct MasterKey {
    kid: String,
    bytes: [u8; 32],
    previous: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let previous: Vec<&str> = self.previous.iter().map(|(kid, _)| kid.as_str()).collect();
        f.debug_struct("MasterKey").field("kid", &self.kid).field("previous", &previous).finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A master key from 32 bytes of base64 (either alphabet, padding optional).
    pub fn from_base64(kid: &str, base64: &str) -> Result<Self, VaultError> {
        if kid.is_empty() || kid.contains('.') || !kid.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(VaultError::InvalidKey("a master key id is printable ASCII without '.' or spaces".into()));
        }
        Ok(Self { kid: kid.to_string(), bytes: decode_key(base64, "master key")?, previous: Vec::new() })
    }

    /// This key, still opening what the `previous` keys wrapped (a rotation in progress).
    pub fn with_previous(mut self, previous: Vec<MasterKey>) -> Result<Self, VaultError> {
        for key in previous {
            if key.kid == self.kid || self.previous.iter().any(|(kid, _)| *kid == key.kid) {
                return Err(VaultError::InvalidKey(format!("master key id '{}' is given twice", key.kid)));
            }
            self.previous.push((key.kid, key.bytes));
        }
        Ok(self)
    }

    /// The ids of the keys this one replaces and still opens.
    pub fn previous_kids(&self) -> Vec<&str> {
        self.previous.iter().map(|(kid, _)| kid.as_str()).collect()
    }

    /// Whether `wrapped` is wrapped under this key itself (not under a previous one).
    pub fn is_current(&self, wrapped: &str) -> bool {
        wrapped_kid(wrapped) == Some(self.kid.as_str())
    }

    /// `wrapped` (made by [`MasterKey::seal_secret`] for `context`) wrapped under this key;
    /// `None` when it already is.
    pub fn rewrap_secret(&self, context: &str, wrapped: &str) -> Result<Option<String>, VaultError> {
        if self.is_current(wrapped) {
            return Ok(None);
        }
        let secret = self.open_secret(context, wrapped)?;
        self.seal_secret(context, &secret).map(Some)
    }

    /// A data key's wrapping under this key; `None` when it already is.
    pub fn rewrap(&self, id: Uuid, wrapped: &str) -> Result<Option<String>, VaultError> {
        self.rewrap_secret(&Self::aad(id), wrapped)
    }

    /// A fresh random master key; its base64 form is what goes into configuration.
    pub fn generate(kid: &str) -> Result<(Self, String), VaultError> {
        let bytes: [u8; 32] = random()?;
        let encoded = URL_SAFE_NO_PAD.encode(bytes);
        Ok((Self::from_base64(kid, &encoded)?, encoded))
    }

    /// The key's id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn aad(id: Uuid) -> String {
        format!("agora-dek-v1:{id}")
    }

    /// Seals any secret under the master key (used for token signing keys), bound to `context`.
    pub fn seal_secret(&self, context: &str, secret: &[u8]) -> Result<String, VaultError> {
        let sealed = encrypt(&aead_key(&self.bytes)?, context, secret)?;
        Ok(format!("{WRAPPED_PREFIX}{}.{}", self.kid, URL_SAFE_NO_PAD.encode(sealed)))
    }

    /// Opens what [`MasterKey::seal_secret`] sealed for `context`.
    pub fn open_secret(&self, context: &str, wrapped: &str) -> Result<Vec<u8>, VaultError> {
        let rest =
            wrapped.strip_prefix(WRAPPED_PREFIX).ok_or_else(|| VaultError::Malformed("not a wrapped key".into()))?;
        let (kid, body) = rest.split_once('.').ok_or_else(|| VaultError::Malformed("no master key id".into()))?;
        let key = if kid == self.kid {
            &self.bytes
        } else {
            match self.previous.iter().find(|(previous, _)| previous == kid) {
                Some((_, bytes)) => bytes,
                None => return Err(VaultError::UnknownMasterKey(kid.to_string())),
            }
        };
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| VaultError::Malformed("not base64url".into()))?;
        decrypt(&aead_key(key)?, context, &bytes)
    }
}

impl KeyWrapper for MasterKey {
    fn wrap(&self, key: &PersonKey) -> Result<String, VaultError> {
        self.seal_secret(&Self::aad(key.id), &key.bytes)
    }

    fn unwrap(&self, id: Uuid, wrapped: &str) -> Result<PersonKey, VaultError> {
        let bytes = self.open_secret(&Self::aad(id), wrapped)?;
        let bytes: [u8; 32] =
            bytes.as_slice().try_into().map_err(|_| VaultError::Malformed("data key is not 32 bytes".into()))?;
        Ok(PersonKey { id, bytes })
    }
}

/// Where data keys are kept: the identity service's vault, reached in-process or over gRPC.
#[async_trait::async_trait]
pub trait PersonKeys: Send + Sync {
    /// The key with this id; `None` once it is destroyed (or was never made).
    async fn key(&self, id: Uuid) -> Result<Option<PersonKey>, VaultError>;
    /// The owner's key, made now if there is none. Refused once the person is erased (or the
    /// scope ended), so nothing new can be sealed for them.
    async fn key_or_create(&self, owner: &KeyOwner) -> Result<PersonKey, VaultError>;
    /// Destroys every key of a scope (`hearing:<id>` past its retention period); how many.
    async fn destroy_scope(&self, scope: &str) -> Result<u64, VaultError>;

    /// Forgets any keys remembered from elsewhere (an erasure reached this service).
    async fn forget_remembered(&self) {}

    /// Seals `plaintext` for `owner`.
    async fn seal(&self, owner: &KeyOwner, plaintext: &str) -> Result<String, VaultError> {
        self.key_or_create(owner).await?.seal(plaintext)
    }

    /// Opens a sealed value, or says the person was erased. A value that is not sealed is
    /// returned as it is (data from before sealing, or not personal).
    async fn reveal(&self, value: &str) -> Result<Revealed, VaultError> {
        let Some(id) = sealed_for(value) else {
            return Ok(Revealed::Clear(value.to_string()));
        };
        match self.key(id).await? {
            Some(key) => key.open(value).map(Revealed::Clear),
            None => Ok(Revealed::Erased),
        }
    }
}

/// Keys remembered for a while (and that a key is gone), so that a reader does not ask the
/// vault per row. An erasure elsewhere reaches the holder within the time they are kept.
#[derive(Clone)]
pub struct RememberedKeys {
    keep: std::time::Duration,
    entries: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Uuid, Remembered>>>,
}

/// A key (or that it is gone), and when it was learnt.
type Remembered = (Option<PersonKey>, std::time::Instant);

impl RememberedKeys {
    /// Most keys remembered at once; the memory is emptied when it is full.
    const LIMIT: usize = 100_000;

    /// Remembers each key for `keep`.
    pub fn new(keep: std::time::Duration) -> Self {
        Self { keep, entries: Default::default() }
    }

    /// The key remembered under `id` (`Some(None)`: remembered as gone), if still fresh.
    pub fn recall(&self, id: Uuid) -> Option<Option<PersonKey>> {
        let entries = self.entries.lock().ok()?;
        entries.get(&id).filter(|(_, at)| at.elapsed() < self.keep).map(|(key, _)| key.clone())
    }

    /// Remembers a key, or (`None`) that it is gone.
    pub fn remember(&self, id: Uuid, key: Option<PersonKey>) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= Self::LIMIT {
                entries.clear();
            }
            entries.insert(id, (key, std::time::Instant::now()));
        }
    }

    /// Forgets everything (an erasure reached this holder).
    pub fn forget_all(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}

/// What the pages and exports show in place of an erased person's data.
pub const ERASED: &str = "[slettet]";

/// Opens a value for display: the text, [`ERASED`] once the person is erased, or the value as it
/// is when it was never sealed.
///
/// A value that no longer opens with the key of its id was sealed under a key destroyed since
/// (an invitee erased, then invited again): it shows as erased too. Tampering with the log
/// itself is what the hash chain finds.
pub async fn reveal_for_display(keys: &dyn PersonKeys, value: &str) -> Result<String, VaultError> {
    Ok(match keys.reveal(value).await {
        Ok(Revealed::Clear(text)) => text,
        Ok(Revealed::Erased) | Err(VaultError::Tampered) => ERASED.to_string(),
        Err(other) => return Err(other),
    })
}

/// Person keys held in memory: for tests, and for tools that seal nothing lasting.
#[derive(Clone, Default)]
pub struct MemoryKeys {
    state: std::sync::Arc<std::sync::Mutex<MemoryState>>,
}

#[derive(Default)]
struct MemoryState {
    keys: std::collections::HashMap<Uuid, (KeyOwner, Option<PersonKey>)>,
    erased: std::collections::HashSet<Uuid>,
}

impl MemoryKeys {
    /// An empty set, shared by clones.
    pub fn shared() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self::default())
    }

    /// Destroys every key of a person.
    pub fn erase(&self, person: Uuid) {
        if let Ok(mut state) = self.state.lock() {
            state.erased.insert(person);
            for (owner, key) in state.keys.values_mut() {
                if owner.person == person {
                    *key = None;
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl PersonKeys for MemoryKeys {
    async fn key(&self, id: Uuid) -> Result<Option<PersonKey>, VaultError> {
        let state = self.state.lock().map_err(|_| VaultError::Store("poisoned".into()))?;
        Ok(state.keys.get(&id).and_then(|(_, key)| key.clone()))
    }

    async fn key_or_create(&self, owner: &KeyOwner) -> Result<PersonKey, VaultError> {
        let mut state = self.state.lock().map_err(|_| VaultError::Store("poisoned".into()))?;
        if state.erased.contains(&owner.person) {
            return Err(VaultError::Erased(owner.person));
        }
        let id = owner.key_id();
        match state.keys.get(&id) {
            Some((_, Some(key))) => Ok(key.clone()),
            Some((_, None)) => Err(VaultError::Erased(owner.person)),
            None => {
                let key = PersonKey::generate(id)?;
                state.keys.insert(id, (owner.clone(), Some(key.clone())));
                Ok(key)
            }
        }
    }

    async fn destroy_scope(&self, scope: &str) -> Result<u64, VaultError> {
        let mut state = self.state.lock().map_err(|_| VaultError::Store("poisoned".into()))?;
        let mut destroyed = 0;
        for (owner, key) in state.keys.values_mut() {
            if owner.scope == scope && key.is_some() {
                *key = None;
                destroyed += 1;
            }
        }
        Ok(destroyed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_master_key_opens_the_old_wrappings_and_rewraps_them_under_itself() {
        let id = Uuid::now_v7();
        let data_key = PersonKey::generate(id).unwrap();
        let (old, _) = MasterKey::generate("1").unwrap();
        let wrapped_before = old.wrap(&data_key).unwrap();
        let (new, new_base64) = MasterKey::generate("2").unwrap();
        let rotating = new.clone().with_previous(vec![old.clone()]).unwrap();
        assert_eq!(rotating.previous_kids(), vec!["1"]);
        // During the rotation the old wrapping opens, and new ones are made under the new key.
        assert_eq!(rotating.unwrap(id, &wrapped_before).unwrap().to_bytes(), data_key.to_bytes());
        assert_eq!(wrapped_kid(&rotating.wrap(&data_key).unwrap()), Some("2"));
        // Rewrapped, it opens with the new key alone; a second rewrap has nothing to do.
        let rewrapped = rotating.rewrap(id, &wrapped_before).unwrap().expect("rewrapped");
        assert_eq!(wrapped_kid(&rewrapped), Some("2"));
        assert_eq!(rotating.rewrap(id, &rewrapped).unwrap(), None);
        let only_new = MasterKey::from_base64("2", &new_base64).unwrap();
        assert_eq!(only_new.unwrap(id, &rewrapped).unwrap().to_bytes(), data_key.to_bytes());
        // Without the old key, the old wrapping names the key it lacks.
        assert_eq!(only_new.unwrap(id, &wrapped_before).unwrap_err(), VaultError::UnknownMasterKey("1".into()));
        // A rewrapped data key stays bound to its id.
        assert!(only_new.unwrap(Uuid::now_v7(), &rewrapped).is_err());
        // One id twice is refused.
        assert!(new.with_previous(vec![old.clone(), old]).is_err());
    }

    #[test]
    fn seal_and_open_round_trip_and_hide_the_text() {
        let person = Uuid::now_v7();
        let key = PersonKey::generate(person).unwrap();
        let sealed = key.seal("Birgitte Borger, Æblevej 3").unwrap();
        assert!(sealed.starts_with("pii1."));
        assert!(!sealed.contains("Birgitte"));
        assert_eq!(sealed_for(&sealed), Some(person));
        assert_eq!(key.open(&sealed).unwrap(), "Birgitte Borger, Æblevej 3");
        // The same text twice seals differently (random nonce).
        assert_ne!(key.seal("x").unwrap(), key.seal("x").unwrap());
    }

    #[test]
    fn altered_or_foreign_values_do_not_open() {
        let person = Uuid::now_v7();
        let key = PersonKey::generate(person).unwrap();
        let other = PersonKey::generate(person).unwrap();
        let sealed = key.seal("secret").unwrap();
        assert_eq!(other.open(&sealed), Err(VaultError::Tampered));
        let mut altered = sealed.clone();
        let last = altered.pop().unwrap();
        altered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(key.open(&altered).is_err());
        // A value moved to another record names the wrong key.
        let stranger = PersonKey::generate(Uuid::now_v7()).unwrap();
        assert!(matches!(stranger.open(&sealed), Err(VaultError::Malformed(_))));
        assert!(matches!(key.open("plain text"), Err(VaultError::Malformed(_))));
    }

    #[test]
    fn master_key_wraps_data_keys_bound_to_their_person() {
        let (master, encoded) = MasterKey::generate("m1").unwrap();
        let again = MasterKey::from_base64("m1", &encoded).unwrap();
        let person = Uuid::now_v7();
        let key = PersonKey::generate(person).unwrap();
        let wrapped = master.wrap(&key).unwrap();
        assert!(wrapped.starts_with("dek1.m1."));
        let unwrapped = again.unwrap(person, &wrapped).unwrap();
        assert_eq!(unwrapped.open(&key.seal("hej").unwrap()).unwrap(), "hej");
        assert_eq!(master.unwrap(Uuid::now_v7(), &wrapped).unwrap_err(), VaultError::Tampered);
        let (other, _) = MasterKey::generate("m2").unwrap();
        assert_eq!(other.unwrap(person, &wrapped).unwrap_err(), VaultError::UnknownMasterKey("m1".into()));
    }

    #[test]
    fn bad_master_keys_are_named() {
        assert!(
            matches!(MasterKey::from_base64("m", "c2hvcnQ"), Err(VaultError::InvalidKey(m)) if m.contains("32 bytes, got 5"))
        );
        assert!(matches!(MasterKey::from_base64("m", "%%%"), Err(VaultError::InvalidKey(m)) if m.contains("base64")));
        assert!(MasterKey::from_base64("a.b", &URL_SAFE_NO_PAD.encode([1u8; 32])).is_err());
        assert!(MasterKey::from_base64("k", &base64::engine::general_purpose::STANDARD.encode([1u8; 32])).is_ok());
    }

    #[test]
    fn reveal_says_erased_once_the_key_is_gone() {
        let keys = MemoryKeys::default();
        let person = Uuid::now_v7();
        let owner = KeyOwner::in_hearing(person, Uuid::now_v7());
        let sealed = block_on(keys.seal(&owner, "Carl")).unwrap();
        assert_eq!(sealed_for(&sealed), Some(owner.key_id()));
        assert_ne!(owner.key_id(), person, "a hearing's key is not the person's own");
        assert_eq!(block_on(keys.reveal(&sealed)).unwrap(), Revealed::Clear("Carl".into()));
        assert_eq!(block_on(keys.reveal("not personal")).unwrap(), Revealed::Clear("not personal".into()));
        keys.erase(person);
        assert_eq!(block_on(keys.reveal(&sealed)).unwrap(), Revealed::Erased);
        assert_eq!(block_on(reveal_for_display(&keys, &sealed)).unwrap(), ERASED);
        assert_eq!(block_on(keys.seal(&owner, "again")), Err(VaultError::Erased(person)));
        assert_eq!(block_on(keys.seal(&KeyOwner::person(person), "new")), Err(VaultError::Erased(person)));
    }

    /// The futures here never wait, so polling once is enough.
    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        let mut future = std::pin::pin!(future);
        let waker = std::task::Waker::noop();
        match future.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("the test's key store does not wait"),
        }
    }
}
