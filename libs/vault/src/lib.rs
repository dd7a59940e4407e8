//! # agora-vault
//!
//! How Agora keeps personal data so that it can be erased from an immutable log.
//!
//! Every person has a data key of their own ([`PersonKey`]). Personal data in events (names,
//! e-mail and postal addresses, response texts, attachment names) is stored only *sealed*
//! under that key ([`PersonKey::seal`]): a self-describing string
//! `pii1.<person>.<nonce+ciphertext>` that names whose key opens it. The data keys are kept
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
const WRAPPED_PREFIX: &str = "dek1.";

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

/// One person's data key. Never stored in clear: only wrapped under the master key.
#[derive(Clone)]
pub struct PersonKey {
    person: Uuid,
    bytes: [u8; 32],
}

impl std::fmt::Debug for PersonKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonKey").field("person", &self.person).finish_non_exhaustive()
    }
}

impl PersonKey {
    /// A fresh random key for `person`.
    pub fn generate(person: Uuid) -> Result<Self, VaultError> {
        Ok(Self { person, bytes: random()? })
    }

    /// Whose key this is.
    pub fn person(&self) -> Uuid {
        self.person
    }

    /// A key received from the vault service (32 bytes).
    pub fn from_bytes(person: Uuid, bytes: &[u8]) -> Result<Self, VaultError> {
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| VaultError::InvalidKey(format!("a data key is 32 bytes, got {}", bytes.len())))?;
        Ok(Self { person, bytes })
    }

    /// The key itself, for the vault service to send to another service. Never store it.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }

    fn aad(person: Uuid) -> String {
        format!("agora-pii-v1:{person}")
    }

    /// Seals `plaintext` as `pii1.<person>.<base64url(nonce || ciphertext || tag)>`. The person
    /// is bound into the encryption, so a value copied to another person's record does not open.
    pub fn seal(&self, plaintext: &str) -> Result<String, VaultError> {
        let key = aead_key(&self.bytes)?;
        let sealed = encrypt(&key, &Self::aad(self.person), plaintext.as_bytes())?;
        Ok(format!("{SEALED_PREFIX}{}.{}", self.person.simple(), URL_SAFE_NO_PAD.encode(sealed)))
    }

    /// Opens a value this key sealed.
    pub fn open(&self, sealed: &str) -> Result<String, VaultError> {
        let (person, body) = split_sealed(sealed)?;
        if person != self.person {
            return Err(VaultError::Malformed(format!("sealed for person {person}, not {}", self.person)));
        }
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| VaultError::Malformed("not base64url".into()))?;
        let plain = decrypt(&aead_key(&self.bytes)?, &Self::aad(person), &bytes)?;
        String::from_utf8(plain).map_err(|_| VaultError::Malformed("not UTF-8".into()))
    }
}

fn split_sealed(sealed: &str) -> Result<(Uuid, &str), VaultError> {
    let rest = sealed.strip_prefix(SEALED_PREFIX).ok_or_else(|| VaultError::Malformed("not a sealed value".into()))?;
    let (person, body) = rest.split_once('.').ok_or_else(|| VaultError::Malformed("no person".into()))?;
    let person = Uuid::try_parse(person).map_err(|_| VaultError::Malformed("person is not an id".into()))?;
    Ok((person, body))
}

/// Whose key a sealed value needs, or `None` when `value` is not sealed.
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

/// Wraps and unwraps data keys: the master key, here or in a key vault.
pub trait KeyWrapper: Send + Sync {
    /// Wraps `key` into a string that is safe to store.
    fn wrap(&self, key: &PersonKey) -> Result<String, VaultError>;
    /// Unwraps what [`KeyWrapper::wrap`] made for `person`.
    fn unwrap(&self, person: Uuid, wrapped: &str) -> Result<PersonKey, VaultError>;
}

/// A 256-bit master key from configuration, with an id so that keys can be rotated: data keys
/// remember which master key wrapped them.
#[derive(Clone)]
pub struct MasterKey {
    kid: String,
    bytes: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A master key from 32 bytes of base64 (either alphabet, padding optional).
    pub fn from_base64(kid: &str, base64: &str) -> Result<Self, VaultError> {
        if kid.is_empty() || kid.contains('.') || !kid.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(VaultError::InvalidKey("a master key id is printable ASCII without '.' or spaces".into()));
        }
        Ok(Self { kid: kid.to_string(), bytes: decode_key(base64, "master key")? })
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

    fn aad(person: Uuid) -> String {
        format!("agora-dek-v1:{person}")
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
        if kid != self.kid {
            return Err(VaultError::UnknownMasterKey(kid.to_string()));
        }
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| VaultError::Malformed("not base64url".into()))?;
        decrypt(&aead_key(&self.bytes)?, context, &bytes)
    }
}

impl KeyWrapper for MasterKey {
    fn wrap(&self, key: &PersonKey) -> Result<String, VaultError> {
        self.seal_secret(&Self::aad(key.person), &key.bytes)
    }

    fn unwrap(&self, person: Uuid, wrapped: &str) -> Result<PersonKey, VaultError> {
        let bytes = self.open_secret(&Self::aad(person), wrapped)?;
        let bytes: [u8; 32] =
            bytes.as_slice().try_into().map_err(|_| VaultError::Malformed("data key is not 32 bytes".into()))?;
        Ok(PersonKey { person, bytes })
    }
}

/// Where data keys are kept: the identity service's vault, reached in-process or over gRPC.
#[async_trait::async_trait]
pub trait PersonKeys: Send + Sync {
    /// The person's key; `None` once the person is erased (or never had one).
    async fn key(&self, person: Uuid) -> Result<Option<PersonKey>, VaultError>;
    /// The person's key, made now if they have none. Refused once the person is erased, so
    /// nothing new can be sealed for them.
    async fn key_or_create(&self, person: Uuid) -> Result<PersonKey, VaultError>;

    /// Seals `plaintext` for `person`.
    async fn seal(&self, person: Uuid, plaintext: &str) -> Result<String, VaultError> {
        self.key_or_create(person).await?.seal(plaintext)
    }

    /// Opens a sealed value, or says the person was erased. A value that is not sealed is
    /// returned as it is (data from before sealing, or not personal).
    async fn reveal(&self, value: &str) -> Result<Revealed, VaultError> {
        let Some(person) = sealed_for(value) else {
            return Ok(Revealed::Clear(value.to_string()));
        };
        match self.key(person).await? {
            Some(key) => key.open(value).map(Revealed::Clear),
            None => Ok(Revealed::Erased),
        }
    }
}

/// What the pages and exports show in place of an erased person's data.
pub const ERASED: &str = "[slettet]";

/// Opens a value for display: the text, [`ERASED`] once the person is erased, or the value as it
/// is when it was never sealed.
pub async fn reveal_for_display(keys: &dyn PersonKeys, value: &str) -> Result<String, VaultError> {
    Ok(match keys.reveal(value).await? {
        Revealed::Clear(text) => text,
        Revealed::Erased => ERASED.to_string(),
    })
}

/// Person keys held in memory: for tests, and for tools that seal nothing lasting.
#[derive(Clone, Default)]
pub struct MemoryKeys {
    keys: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Uuid, Option<PersonKey>>>>,
}

impl MemoryKeys {
    /// An empty set, shared by clones.
    pub fn shared() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self::default())
    }

    /// Destroys a person's key.
    pub fn erase(&self, person: Uuid) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.insert(person, None);
        }
    }
}

#[async_trait::async_trait]
impl PersonKeys for MemoryKeys {
    async fn key(&self, person: Uuid) -> Result<Option<PersonKey>, VaultError> {
        let keys = self.keys.lock().map_err(|_| VaultError::Store("poisoned".into()))?;
        Ok(keys.get(&person).cloned().flatten())
    }

    async fn key_or_create(&self, person: Uuid) -> Result<PersonKey, VaultError> {
        let mut keys = self.keys.lock().map_err(|_| VaultError::Store("poisoned".into()))?;
        match keys.get(&person) {
            Some(Some(key)) => Ok(key.clone()),
            Some(None) => Err(VaultError::Erased(person)),
            None => {
                let key = PersonKey::generate(person)?;
                keys.insert(person, Some(key.clone()));
                Ok(key)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // A value moved to another person's record names the wrong person.
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
        let sealed = block_on(keys.seal(person, "Carl")).unwrap();
        assert_eq!(block_on(keys.reveal(&sealed)).unwrap(), Revealed::Clear("Carl".into()));
        assert_eq!(block_on(keys.reveal("not personal")).unwrap(), Revealed::Clear("not personal".into()));
        keys.erase(person);
        assert_eq!(block_on(keys.reveal(&sealed)).unwrap(), Revealed::Erased);
        assert_eq!(block_on(reveal_for_display(&keys, &sealed)).unwrap(), ERASED);
        assert_eq!(block_on(keys.seal(person, "again")), Err(VaultError::Erased(person)));
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
