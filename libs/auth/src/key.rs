//! Signing keys, public keys and JWKS.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ed25519_dalek::{Signature, Signer as _, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::AuthError;
use crate::error::clip;

/// Longest accepted key id.
const MAX_KID_LENGTH: usize = 128;

/// Seeds are accepted in either base64 alphabet, with or without padding.
const LENIENT_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An Ed25519 private key together with its key id (`kid`).
///
/// The key id is put in the header of every token the key signs, so
/// verifiers can pick the right public key while keys rotate.
///
/// `Debug` shows only the key id and the public key; the private key is wiped
/// from memory when the value is dropped.
#[derive(Clone)]
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    kid: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("x", &public_x(&self.key.verifying_key()))
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh random key from the operating system's random number
    /// generator. Its key id is the key's RFC 7638 JWK thumbprint.
    pub fn generate() -> Result<Self, AuthError> {
        let key = ed25519_dalek::SigningKey::from_bytes(&random_seed()?);
        let kid = jwk_thumbprint(&key.verifying_key());
        Ok(SigningKey { key, kid })
    }

    /// A fresh random key with the given key id.
    pub fn generate_with_kid(kid: &str) -> Result<Self, AuthError> {
        validate_kid(kid)?;
        let key = ed25519_dalek::SigningKey::from_bytes(&random_seed()?);
        Ok(SigningKey { key, kid: kid.to_owned() })
    }

    /// The key for a 32-byte Ed25519 seed (the RFC 8032 private key).
    pub fn from_seed(seed: &[u8; 32], kid: &str) -> Result<Self, AuthError> {
        validate_kid(kid)?;
        Ok(SigningKey { key: ed25519_dalek::SigningKey::from_bytes(seed), kid: kid.to_owned() })
    }

    /// The key for a base64-encoded 32-byte seed, as written by
    /// [`SigningKey::to_seed_base64`] (URL-safe or standard alphabet, padding
    /// optional, surrounding whitespace ignored). This is also the `d` member
    /// of an Ed25519 private JWK.
    pub fn from_seed_base64(seed: &str, kid: &str) -> Result<Self, AuthError> {
        let seed = seed.trim();
        let bytes = LENIENT_URL_SAFE
            .decode(seed)
            .or_else(|_| LENIENT_STANDARD.decode(seed))
            .map_err(|_| AuthError::InvalidKey("signing key seed is not valid base64".into()))?;
        let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            AuthError::InvalidKey(format!("signing key seed must be 32 bytes, got {} bytes", bytes.len()))
        })?;
        Self::from_seed(&seed, kid)
    }

    /// The 32-byte seed, base64url without padding. This is the secret: store
    /// it as a secret and never log it.
    pub fn to_seed_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.as_bytes())
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The RFC 7638 JWK thumbprint (SHA-256, base64url) of the public key.
    pub fn thumbprint(&self) -> String {
        jwk_thumbprint(&self.key.verifying_key())
    }

    /// The public key as a JWK:
    /// `{"kty":"OKP","crv":"Ed25519","x":…,"kid":…,"use":"sig","alg":"EdDSA"}`.
    pub fn public_jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": public_x(&self.key.verifying_key()),
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
        })
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Signature {
        self.key.sign(message)
    }
}

/// The JWKS (RFC 7517 key set) publishing the public keys of `keys`:
/// `{"keys":[{"kty":"OKP","crv":"Ed25519","x":…,"kid":…,"use":"sig","alg":"EdDSA"}, …]}`.
///
/// During a key rotation, publish both the new and the old key.
pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() })
}

/// The RFC 7638 thumbprint of an Ed25519 public key: base64url(SHA-256 of
/// `{"crv":"Ed25519","kty":"OKP","x":"…"}`).
pub fn jwk_thumbprint(key: &VerifyingKey) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, public_x(key));
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Reads an Ed25519 public JWK: returns its `kid` and key.
///
/// Requires `kty` `OKP`, `crv` `Ed25519` and a `kid`; `use` and `alg`, when
/// present, must be `sig` and `EdDSA`. A JWK carrying the private part (`d`)
/// is refused, since it must never be published.
pub fn verifying_key_from_jwk(jwk: &Value) -> Result<(String, VerifyingKey), AuthError> {
    let object = jwk.as_object().ok_or_else(|| AuthError::InvalidKey("JWK is not a JSON object".into()))?;
    let member = |name: &str| -> Result<Option<&str>, AuthError> {
        match object.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(AuthError::InvalidKey(format!("JWK member {name:?} is not a string"))),
        }
    };
    let require = |name: &str, wanted: &str, required: bool| -> Result<(), AuthError> {
        match member(name)? {
            Some(found) if found == wanted => Ok(()),
            None if !required => Ok(()),
            Some(found) => Err(AuthError::InvalidKey(format!("JWK {name} is {:?}, expected {wanted:?}", clip(found)))),
            None => Err(AuthError::InvalidKey(format!("JWK has no {name:?}"))),
        }
    };
    require("kty", "OKP", true)?;
    require("crv", "Ed25519", true)?;
    require("use", "sig", false)?;
    require("alg", "EdDSA", false)?;
    if object.contains_key("d") {
        return Err(AuthError::InvalidKey(
            "JWK contains private key material (\"d\"); publish only public keys".into(),
        ));
    }
    let kid = member("kid")?.ok_or_else(|| AuthError::InvalidKey("JWK has no \"kid\"".into()))?;
    validate_kid(kid)?;
    let x = member("x")?.ok_or_else(|| AuthError::InvalidKey("JWK has no \"x\"".into()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(x)
        .map_err(|_| AuthError::InvalidKey(format!("JWK {kid:?}: \"x\" is not base64url without padding")))?;
    let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        AuthError::InvalidKey(format!("JWK {kid:?}: \"x\" must be 32 bytes, got {} bytes", bytes.len()))
    })?;
    let key = VerifyingKey::from_bytes(&bytes)
        .map_err(|_| AuthError::InvalidKey(format!("JWK {kid:?}: \"x\" is not a valid Ed25519 public key")))?;
    if key.is_weak() {
        return Err(AuthError::InvalidKey(format!("JWK {kid:?}: \"x\" is a weak (small-order) Ed25519 public key")));
    }
    Ok((kid.to_owned(), key))
}

/// Whether a JWKS entry is meant for Agora token verification at all: an
/// Ed25519 signing key. Other keys in a shared key set are skipped.
pub(crate) fn is_ed25519_signing_jwk(jwk: &Value) -> bool {
    let is = |name: &str, wanted: &str| jwk.get(name).and_then(Value::as_str) == Some(wanted);
    let absent_or = |name: &str, wanted: &str| jwk.get(name).is_none() || is(name, wanted);
    is("kty", "OKP") && is("crv", "Ed25519") && absent_or("use", "sig") && absent_or("alg", "EdDSA")
}

/// Key ids are 1 to 128 printable ASCII characters without spaces.
pub(crate) fn validate_kid(kid: &str) -> Result<(), AuthError> {
    if kid.is_empty() {
        return Err(AuthError::InvalidKey("key id (kid) is empty".into()));
    }
    if kid.len() > MAX_KID_LENGTH {
        return Err(AuthError::InvalidKey(format!("key id (kid) is longer than {MAX_KID_LENGTH} characters")));
    }
    if !kid.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AuthError::InvalidKey("key id (kid) must be printable ASCII without spaces".into()));
    }
    Ok(())
}

fn public_x(key: &VerifyingKey) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

fn random_seed() -> Result<[u8; 32], AuthError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8037, appendix A.1–A.3.
    const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const RFC8037_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

    #[test]
    fn rfc8037_key_and_thumbprint() {
        let key = SigningKey::from_seed_base64(RFC8037_D, "rfc").unwrap();
        assert_eq!(key.public_jwk()["x"], RFC8037_X);
        assert_eq!(key.thumbprint(), RFC8037_THUMBPRINT);
        assert_eq!(key.to_seed_base64(), RFC8037_D);
    }

    #[test]
    fn rfc8037_signature() {
        // RFC 8037 A.4: the JWS of "Example of Ed25519 signing" under {"alg":"EdDSA"}.
        let key = SigningKey::from_seed_base64(RFC8037_D, "rfc").unwrap();
        let input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        let signature = URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes()).to_bytes());
        assert_eq!(signature, "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg");
    }

    #[test]
    fn generated_keys_differ_and_use_thumbprint_kid() {
        let a = SigningKey::generate().unwrap();
        let b = SigningKey::generate().unwrap();
        assert_ne!(a.to_seed_base64(), b.to_seed_base64());
        assert_eq!(a.kid(), a.thumbprint());
        let c = SigningKey::generate_with_kid("2025-01").unwrap();
        assert_eq!(c.kid(), "2025-01");
    }

    #[test]
    fn seed_round_trip_in_both_alphabets() {
        let key = SigningKey::generate_with_kid("k1").unwrap();
        let seed = key.to_seed_base64();
        let again = SigningKey::from_seed_base64(&format!("  {seed}\n"), "k1").unwrap();
        assert_eq!(again.public_jwk(), key.public_jwk());

        let bytes = URL_SAFE_NO_PAD.decode(&seed).unwrap();
        let standard = base64::engine::general_purpose::STANDARD.encode(bytes);
        let again = SigningKey::from_seed_base64(&standard, "k1").unwrap();
        assert_eq!(again.public_jwk(), key.public_jwk());
    }

    #[test]
    fn bad_seeds_and_kids_are_refused() {
        assert!(matches!(SigningKey::from_seed_base64("%%%", "k"), Err(AuthError::InvalidKey(_))));
        assert!(matches!(SigningKey::from_seed_base64("AAAA", "k"), Err(AuthError::InvalidKey(_))));
        assert!(matches!(SigningKey::from_seed_base64(RFC8037_D, ""), Err(AuthError::InvalidKey(_))));
        assert!(matches!(SigningKey::from_seed_base64(RFC8037_D, "has space"), Err(AuthError::InvalidKey(_))));
    }

    #[test]
    fn debug_does_not_show_the_seed() {
        let key = SigningKey::from_seed_base64(RFC8037_D, "rfc").unwrap();
        let debug = format!("{key:?}");
        assert!(debug.contains("rfc") && debug.contains(RFC8037_X));
        assert!(!debug.contains(RFC8037_D));
    }

    #[test]
    fn jwk_shape_and_parsing() {
        let key = SigningKey::from_seed_base64(RFC8037_D, "rfc").unwrap();
        let set = jwks(&[&key]);
        assert_eq!(
            set,
            json!({"keys": [{
                "kty": "OKP", "crv": "Ed25519", "x": RFC8037_X,
                "kid": "rfc", "use": "sig", "alg": "EdDSA"
            }]})
        );
        let (kid, public) = verifying_key_from_jwk(&set["keys"][0]).unwrap();
        assert_eq!(kid, "rfc");
        assert_eq!(public, key.verifying_key());

        let mut private = key.public_jwk();
        private["d"] = json!(RFC8037_D);
        assert!(matches!(verifying_key_from_jwk(&private), Err(AuthError::InvalidKey(_))));

        let mut wrong_curve = key.public_jwk();
        wrong_curve["crv"] = json!("X25519");
        assert!(matches!(verifying_key_from_jwk(&wrong_curve), Err(AuthError::InvalidKey(_))));

        let mut short = key.public_jwk();
        short["x"] = json!("AAAA");
        assert!(matches!(verifying_key_from_jwk(&short), Err(AuthError::InvalidKey(_))));

        let mut weak = key.public_jwk();
        weak["x"] = json!(URL_SAFE_NO_PAD.encode([0u8; 32]));
        assert!(matches!(verifying_key_from_jwk(&weak), Err(AuthError::InvalidKey(_))));
    }
}
