//! Issuing and verifying compact JWS (JWT) access tokens signed with EdDSA.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use uuid::Uuid;

use crate::error::clip;
use crate::key::{is_ed25519_signing_jwk, verifying_key_from_jwk};
use crate::{AuthError, Capacity, Principal, Role, SigningKey, pii};

/// Clock-skew leeway allowed on `exp`, `nbf` and `iat`, in seconds.
pub const DEFAULT_LEEWAY_SECONDS: i64 = 60;

/// Longest token accepted (and issued), in bytes.
pub const MAX_TOKEN_LENGTH: usize = 8 * 1024;

/// The only accepted JWS algorithm.
const ALGORITHM: &str = "EdDSA";

#[derive(Serialize)]
struct HeaderOut<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

#[derive(Serialize)]
struct ClaimsOut<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
    capacity: Capacity,
    roles: Vec<Role>,
    #[serde(skip_serializing_if = "Option::is_none")]
    company: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    refs: &'a [String],
}

#[derive(Deserialize)]
struct ClaimsIn {
    iss: Option<String>,
    aud: Option<Audience>,
    sub: Option<String>,
    iat: Option<Number>,
    nbf: Option<Number>,
    exp: Option<Number>,
    jti: Option<String>,
    capacity: Option<String>,
    roles: Option<Vec<String>>,
    company: Option<String>,
    name: Option<String>,
    refs: Option<Vec<String>>,
}

/// RFC 7519 allows `aud` to be one string or an array of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn into_vec(self) -> Vec<String> {
        match self {
            Audience::One(a) => vec![a],
            Audience::Many(a) => a,
        }
    }
}

/// Signs access tokens for principals.
///
/// Every token gets `iat` = `nbf` = the issuing time, `exp` = `iat` + the
/// lifetime, a random `jti`, and the issuer's `iss` and `aud`.
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    key: SigningKey,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl TokenIssuer {
    /// An issuer signing with `key`, stating `issuer` as `iss` and `audience`
    /// as `aud`, for tokens valid for `ttl` (at least one second).
    pub fn new(key: SigningKey, issuer: &str, audience: &str, ttl: Duration) -> Self {
        TokenIssuer { key, issuer: issuer.to_owned(), audience: audience.to_owned(), ttl }
    }

    /// Signs a token for `principal`, valid from now.
    pub fn issue(&self, principal: &Principal) -> Result<String, AuthError> {
        self.issue_at(principal, Utc::now())
    }

    /// Signs a token for `principal`, valid from `now`.
    ///
    /// Refuses a nil user id, and a `company` or `name` that looks like a
    /// CPR or CVR number.
    pub fn issue_at(&self, principal: &Principal, now: DateTime<Utc>) -> Result<String, AuthError> {
        if self.issuer.is_empty() {
            return Err(AuthError::InvalidConfiguration("issuer (iss) is empty".into()));
        }
        if self.audience.is_empty() {
            return Err(AuthError::InvalidConfiguration("audience (aud) is empty".into()));
        }
        let ttl = self.ttl.num_seconds();
        if ttl < 1 {
            return Err(AuthError::InvalidConfiguration("token lifetime (ttl) must be at least one second".into()));
        }
        if principal.user_id.is_nil() {
            return Err(AuthError::InvalidClaims("user id (sub) is the nil UUID".into()));
        }
        pii::check_claims(principal.company.as_deref(), principal.name.as_deref())?;

        let iat = now.timestamp();
        let exp = iat
            .checked_add(ttl)
            .filter(|exp| DateTime::from_timestamp(*exp, 0).is_some())
            .ok_or_else(|| AuthError::InvalidConfiguration("token lifetime (ttl) is too long".into()))?;
        let mut roles = Vec::with_capacity(principal.roles.len());
        for role in &principal.roles {
            if !roles.contains(role) {
                roles.push(*role);
            }
        }
        let header = HeaderOut { alg: ALGORITHM, typ: "JWT", kid: self.key.kid() };
        let claims = ClaimsOut {
            iss: &self.issuer,
            aud: &self.audience,
            sub: principal.user_id.hyphenated().to_string(),
            iat,
            nbf: iat,
            exp,
            jti: random_token_id()?,
            capacity: principal.capacity,
            roles,
            company: principal.company.as_deref(),
            name: principal.name.as_deref(),
            refs: &principal.references,
        };
        let header = serde_json::to_vec(&header).map_err(|e| AuthError::Encoding(e.to_string()))?;
        let claims = serde_json::to_vec(&claims).map_err(|e| AuthError::Encoding(e.to_string()))?;

        let mut token = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        if token.len() > MAX_TOKEN_LENGTH {
            return Err(AuthError::Encoding(format!(
                "token would be longer than {MAX_TOKEN_LENGTH} bytes (is the name very long?)"
            )));
        }
        Ok(token)
    }

    /// A verifier that accepts exactly this issuer's tokens (its `iss`,
    /// `aud` and key). Useful where the same process issues and verifies.
    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier::new(&self.issuer, &self.audience).with_signing_key(&self.key)
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The `iss` of issued tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `aud` of issued tokens.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The lifetime of issued tokens.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// What a successful verification established, beyond the principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The caller.
    pub principal: Principal,
    /// The key id that signed the token.
    pub kid: String,
    /// The token's `jti`, if any.
    pub token_id: Option<String>,
    /// The token's `iat`, if any.
    pub issued_at: Option<DateTime<Utc>>,
    /// The token's `exp`.
    pub expires_at: DateTime<Utc>,
}

/// Verifies access tokens and yields their principal.
///
/// A verifier trusts any number of public keys, each under its key id, so
/// keys rotate without downtime: add the new key, start signing with it, and
/// remove the old key once its last tokens have expired.
///
/// A token is accepted only if all of these hold: it is a compact JWS of at
/// most [`MAX_TOKEN_LENGTH`] bytes; `alg` is `EdDSA`; `typ`, if present, is
/// `JWT` (or `at+jwt`); there is no `crit`; `kid` names a trusted key; the
/// Ed25519 signature verifies (strictly); `iss` equals the issuer; `aud` is or
/// contains the audience; `exp` is present and not passed, and `nbf`/`iat`
/// are not in the future, each with [`DEFAULT_LEEWAY_SECONDS`] of leeway;
/// `sub` is a non-nil UUID; `capacity` is known; `company` and `name` do not
/// look like CPR/CVR numbers. Unknown roles are ignored, so new roles can be
/// introduced before every service knows them. Key-locating header
/// parameters such as `jku`, `jwk` and `x5u` are ignored: keys only ever come
/// from the verifier's configuration.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    issuer: String,
    audience: String,
    /// Shared by clones, so that a refreshed key set reaches every holder.
    keys: std::sync::Arc<std::sync::RwLock<BTreeMap<String, VerifyingKey>>>,
    leeway_seconds: i64,
    /// Tokens already verified, until they expire: clients send the same token with every
    /// request, and a signature check per request costs more than the rest of a cheap call.
    verified: VerifiedCache,
}

/// SHA-256 of a token → its principal and expiry.
type VerifiedCache = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<[u8; 32], (Principal, DateTime<Utc>)>>>;

/// Verified tokens remembered at most; the memory is emptied when it is full.
const VERIFIED_CACHE_LIMIT: usize = 10_000;

impl TokenVerifier {
    /// A verifier for tokens with `iss` = `issuer` and `aud` containing
    /// `audience`, trusting no key yet.
    pub fn new(issuer: &str, audience: &str) -> Self {
        TokenVerifier {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            keys: Default::default(),
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
            verified: Default::default(),
        }
    }

    /// A verifier trusting the Ed25519 signing keys of a JWKS document
    /// (`{"keys":[…]}`). Keys of other types or uses are skipped; it is an
    /// error if no usable key remains.
    pub fn from_jwks(issuer: &str, audience: &str, jwks: &Value) -> Result<Self, AuthError> {
        Self::new(issuer, audience).with_jwks(jwks)
    }

    /// Also trusts `key` under `kid` (replacing any key with that id).
    #[must_use]
    pub fn with_key(mut self, kid: &str, key: VerifyingKey) -> Self {
        self.own_keys().insert(kid.to_owned(), key);
        self
    }

    /// The builder methods change this verifier alone, never the clones it was made from.
    fn own_keys(&mut self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, VerifyingKey>> {
        let keys = self.read_keys().clone();
        self.keys = std::sync::Arc::new(std::sync::RwLock::new(keys));
        self.write_keys()
    }

    fn write_keys(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, VerifyingKey>> {
        // A panic while holding the lock leaves a whole map; carrying on is safe.
        self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read_keys(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, VerifyingKey>> {
        self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Trusts exactly the Ed25519 signing keys of `jwks` from now on, in this verifier and
    /// every clone of it: how a service follows the identity service's key rotation. Tokens of
    /// a key no longer published stop verifying at once.
    pub fn replace_keys(&self, jwks: &Value) -> Result<(), AuthError> {
        let fresh = Self::new(&self.issuer, &self.audience).with_jwks(jwks)?;
        let keys = fresh.read_keys().clone();
        *self.write_keys() = keys;
        if let Ok(mut cache) = self.verified.lock() {
            cache.clear();
        }
        Ok(())
    }

    /// Also trusts the public half of `key`, under its key id.
    #[must_use]
    pub fn with_signing_key(self, key: &SigningKey) -> Self {
        let kid = key.kid().to_owned();
        self.with_key(&kid, key.verifying_key())
    }

    /// Also trusts one public JWK (see [`crate::verifying_key_from_jwk`]).
    pub fn with_jwk(mut self, jwk: &Value) -> Result<Self, AuthError> {
        let (kid, key) = verifying_key_from_jwk(jwk)?;
        self.add_key(kid, key)?;
        Ok(self)
    }

    /// Also trusts the Ed25519 signing keys of a JWKS document. Keys of
    /// other types or uses are skipped; it is an error if the document holds
    /// no usable key, if a usable-looking key is broken, or if a key id
    /// appears twice with different keys.
    pub fn with_jwks(mut self, jwks: &Value) -> Result<Self, AuthError> {
        let keys = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| AuthError::InvalidJwks("no \"keys\" array".into()))?;
        let mut used = 0;
        for jwk in keys.iter().filter(|jwk| is_ed25519_signing_jwk(jwk)) {
            let (kid, key) = verifying_key_from_jwk(jwk).map_err(|e| AuthError::InvalidJwks(e.to_string()))?;
            self.add_key(kid, key)?;
            used += 1;
        }
        if used == 0 {
            return Err(AuthError::InvalidJwks("no Ed25519 signing key (kty \"OKP\", crv \"Ed25519\")".into()));
        }
        Ok(self)
    }

    /// Stops trusting the key with id `kid` (a retired key).
    #[must_use]
    pub fn without_key(mut self, kid: &str) -> Self {
        self.own_keys().remove(kid);
        // Tokens signed with a withdrawn key are no longer good.
        self.verified = Default::default();
        self
    }

    /// Sets the clock-skew leeway (default [`DEFAULT_LEEWAY_SECONDS`];
    /// negative values count as zero).
    #[must_use]
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway_seconds = leeway.num_seconds().max(0);
        self
    }

    /// The ids of the trusted keys.
    pub fn kids(&self) -> Vec<String> {
        self.read_keys().keys().cloned().collect()
    }

    /// The accepted issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The accepted audience.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The clock-skew leeway.
    pub fn leeway(&self) -> Duration {
        Duration::seconds(self.leeway_seconds)
    }

    /// Verifies `token` now and returns its principal.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let now = Utc::now();
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()).into();
        if let Ok(verified) = self.verified.lock()
            && let Some((principal, expires_at)) = verified.get(&digest)
            && now < *expires_at
        {
            return Ok(principal.clone());
        }
        let verified = self.verify_token_at(token, now)?;
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= VERIFIED_CACHE_LIMIT {
                cache.clear();
            }
            // Not if its key was withdrawn meanwhile (`replace_keys` clears the memory after it
            // swaps the keys, so one of the two always sees the other).
            if self.read_keys().contains_key(&verified.kid) {
                cache.insert(digest, (verified.principal.clone(), verified.expires_at));
            }
        }
        Ok(verified.principal)
    }

    /// Verifies `token` as of `now` and returns its principal.
    pub fn verify_at(&self, token: &str, now: DateTime<Utc>) -> Result<Principal, AuthError> {
        self.verify_token_at(token, now).map(|verified| verified.principal)
    }

    /// Verifies `token` as of `now` and returns the principal together with
    /// the token's key id, `jti`, `iat` and `exp`.
    pub fn verify_token_at(&self, token: &str, now: DateTime<Utc>) -> Result<VerifiedToken, AuthError> {
        if self.issuer.is_empty() || self.audience.is_empty() {
            return Err(AuthError::InvalidConfiguration("verifier has an empty issuer or audience".into()));
        }
        if token.is_empty() {
            return Err(AuthError::Malformed("empty token".into()));
        }
        if token.len() > MAX_TOKEN_LENGTH {
            return Err(AuthError::Malformed(format!("token is longer than {MAX_TOKEN_LENGTH} bytes")));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("expected three base64url parts separated by '.' (compact JWS)".into()));
        };

        // Header: algorithm first, then type, extensions and key id.
        let header = decode_json_object(header_b64, "header")?;
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg,
            Some(_) => {
                return Err(AuthError::Malformed("header \"alg\" is not a string".into()));
            }
            None => return Err(AuthError::Malformed("header has no \"alg\"".into())),
        };
        if alg != ALGORITHM {
            return Err(AuthError::UnsupportedAlgorithm(clip(alg)));
        }
        match header.get("typ") {
            None => {}
            Some(Value::String(typ)) if typ.eq_ignore_ascii_case("JWT") || typ.eq_ignore_ascii_case("at+jwt") => {}
            Some(Value::String(typ)) => return Err(AuthError::UnsupportedType(clip(typ))),
            Some(_) => {
                return Err(AuthError::Malformed("header \"typ\" is not a string".into()));
            }
        }
        if header.contains_key("crit") {
            return Err(AuthError::Malformed(
                "header has critical extensions (\"crit\"), which are not supported".into(),
            ));
        }
        let kid = match header.get("kid") {
            Some(Value::String(kid)) => kid,
            Some(_) => {
                return Err(AuthError::Malformed("header \"kid\" is not a string".into()));
            }
            None => return Err(AuthError::MissingKeyId),
        };
        let key = *self.read_keys().get(kid).ok_or_else(|| AuthError::UnknownKeyId(clip(kid)))?;

        // Signature over the first two parts exactly as received.
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| AuthError::Malformed("signature is not base64url without padding".into()))?;
        let signature = Signature::from_slice(&signature)
            .map_err(|_| AuthError::Malformed(format!("signature must be 64 bytes, got {} bytes", signature.len())))?;
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        key.verify_strict(signing_input.as_bytes(), &signature)
            .map_err(|_| AuthError::BadSignature { kid: clip(kid) })?;

        // Claims, now that they are known to come from a trusted key.
        let claims: ClaimsIn = serde_json::from_value(Value::Object(decode_json_object(payload_b64, "payload")?))
            .map_err(|e| AuthError::InvalidClaims(e.to_string()))?;
        self.check_claims(claims, kid, now)
    }

    fn check_claims(&self, claims: ClaimsIn, kid: &str, now: DateTime<Utc>) -> Result<VerifiedToken, AuthError> {
        let found_issuer = claims.iss.unwrap_or_default();
        if found_issuer != self.issuer {
            return Err(AuthError::WrongIssuer { expected: self.issuer.clone(), found: clip(&found_issuer) });
        }
        let audiences = claims.aud.map(Audience::into_vec).unwrap_or_default();
        if !audiences.contains(&self.audience) {
            return Err(AuthError::WrongAudience {
                expected: self.audience.clone(),
                found: audiences.iter().take(8).map(|aud| clip(aud)).collect(),
            });
        }

        let now_s = now.timestamp();
        let leeway = self.leeway_seconds;
        let exp = numeric_date("exp", claims.exp.as_ref())?
            .ok_or_else(|| AuthError::InvalidClaims("missing \"exp\"".into()))?;
        let expires_at = DateTime::from_timestamp(exp, 0)
            .ok_or_else(|| AuthError::InvalidClaims("\"exp\" is out of range".into()))?;
        if now_s >= exp.saturating_add(leeway) {
            return Err(AuthError::Expired { expired_at: exp, now: now_s, leeway_seconds: leeway });
        }
        let nbf = numeric_date("nbf", claims.nbf.as_ref())?;
        let iat = numeric_date("iat", claims.iat.as_ref())?;
        for valid_from in [nbf, iat].into_iter().flatten() {
            if now_s.saturating_add(leeway) < valid_from {
                return Err(AuthError::NotYetValid { valid_from, now: now_s, leeway_seconds: leeway });
            }
        }

        let sub = claims.sub.ok_or_else(|| AuthError::InvalidClaims("missing \"sub\"".into()))?;
        let user_id = Uuid::try_parse(&sub).ok().filter(|id| !id.is_nil()).ok_or_else(|| {
            AuthError::InvalidClaims("\"sub\" is not a UUID (it must be a pseudonymous user id)".into())
        })?;
        let capacity: Capacity =
            claims.capacity.ok_or_else(|| AuthError::InvalidClaims("missing \"capacity\"".into()))?.parse()?;
        let mut roles = Vec::new();
        for role in claims.roles.unwrap_or_default() {
            // Unknown roles grant nothing and are ignored.
            if let Ok(role) = role.parse::<Role>()
                && !roles.contains(&role)
            {
                roles.push(role);
            }
        }
        pii::check_claims(claims.company.as_deref(), claims.name.as_deref())?;

        Ok(VerifiedToken {
            principal: Principal {
                user_id,
                capacity,
                roles,
                company: claims.company,
                name: claims.name,
                // Like unknown roles, a reference of an unknown form grants nothing.
                references: claims
                    .refs
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|r| crate::principal::is_pseudonymous_reference(r))
                    .collect(),
            },
            kid: kid.to_owned(),
            token_id: claims.jti,
            issued_at: iat.and_then(|iat| DateTime::from_timestamp(iat, 0)),
            expires_at,
        })
    }

    fn add_key(&mut self, kid: String, key: VerifyingKey) -> Result<(), AuthError> {
        let mut keys = self.own_keys();
        match keys.get(&kid) {
            Some(existing) if *existing != key => {
                Err(AuthError::InvalidJwks(format!("key id {kid:?} appears twice with different keys")))
            }
            _ => {
                keys.insert(kid, key);
                Ok(())
            }
        }
    }
}

fn decode_json_object(part: &str, what: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed(format!("{what} is not base64url without padding")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(AuthError::Malformed(format!("{what} is not a JSON object"))),
        Err(_) => Err(AuthError::Malformed(format!("{what} is not valid JSON"))),
    }
}

/// A JWT NumericDate: seconds since the epoch, possibly fractional.
fn numeric_date(name: &str, value: Option<&Number>) -> Result<Option<i64>, AuthError> {
    let Some(value) = value else { return Ok(None) };
    if let Some(seconds) = value.as_i64() {
        return Ok(Some(seconds));
    }
    match value.as_f64() {
        Some(f) if (-9.0e18..=9.0e18).contains(&f) => Ok(Some(f.floor() as i64)),
        _ => Err(AuthError::InvalidClaims(format!("{name:?} is not a usable NumericDate"))),
    }
}

fn random_token_id() -> Result<String, AuthError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(uuid::Builder::from_random_bytes(bytes).into_uuid().hyphenated().to_string())
}

#[cfg(test)]
mod tests;
