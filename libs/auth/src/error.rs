//! The one error type of the crate.

/// Everything that can go wrong issuing or verifying a token, or handling keys.
///
/// Each refusal of a token is a distinct variant, and every message names the
/// problem, so it can be returned to the caller (for example as the message of
/// a gRPC `UNAUTHENTICATED` status) and logged. Messages never contain a
/// token, a key seed or other secret material; values taken from an untrusted
/// token are shortened before they are quoted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token is not a well-formed compact JWS (three base64url parts,
    /// JSON header and payload, 64-byte signature), or is too long.
    #[error("malformed token: {0}")]
    Malformed(String),

    /// The header's `alg` is not `EdDSA` (this includes `none` and every HMAC,
    /// RSA or ECDSA algorithm).
    #[error("unsupported token algorithm {0:?}: only \"EdDSA\" (Ed25519) is accepted")]
    UnsupportedAlgorithm(String),

    /// The header's `typ` is present and is neither `JWT` nor `at+jwt`.
    #[error("unsupported token type {0:?}: expected \"JWT\"")]
    UnsupportedType(String),

    /// The header carries no `kid`, so the verifying key cannot be chosen.
    #[error("token header has no key id (kid)")]
    MissingKeyId,

    /// The header's `kid` names no key this verifier trusts (unknown, or
    /// retired by rotation).
    #[error("unknown token signing key id {0:?}")]
    UnknownKeyId(String),

    /// The signature does not verify with the key named by `kid`: the token
    /// was signed by another key or altered after signing.
    #[error("bad token signature: not signed by the key {kid:?}, or altered after signing")]
    BadSignature {
        /// The key id the token named.
        kid: String,
    },

    /// `iss` is missing or not the expected issuer.
    #[error("wrong token issuer {found:?}, expected {expected:?}")]
    WrongIssuer {
        /// The issuer this verifier accepts.
        expected: String,
        /// The issuer found in the token (empty if missing).
        found: String,
    },

    /// `aud` is missing or does not contain the expected audience.
    #[error("wrong token audience {found:?}, expected {expected:?}")]
    WrongAudience {
        /// The audience this verifier accepts.
        expected: String,
        /// The audience(s) found in the token (empty if missing).
        found: Vec<String>,
    },

    /// `exp` lies further in the past than the leeway allows.
    #[error(
        "token expired at {} (now {}, leeway {leeway_seconds} s)",
        crate::error::unix_time(*.expired_at),
        crate::error::unix_time(*.now)
    )]
    Expired {
        /// `exp`, seconds since the Unix epoch.
        expired_at: i64,
        /// The verification time, seconds since the Unix epoch.
        now: i64,
        /// The clock-skew leeway that was allowed.
        leeway_seconds: i64,
    },

    /// `nbf` (or `iat`) lies further in the future than the leeway allows.
    #[error(
        "token not yet valid: valid from {} (now {}, leeway {leeway_seconds} s)",
        crate::error::unix_time(*.valid_from),
        crate::error::unix_time(*.now)
    )]
    NotYetValid {
        /// `nbf` (or `iat`), seconds since the Unix epoch.
        valid_from: i64,
        /// The verification time, seconds since the Unix epoch.
        now: i64,
        /// The clock-skew leeway that was allowed.
        leeway_seconds: i64,
    },

    /// A claim is missing, of the wrong type or has a forbidden value (for
    /// example `sub` is not a UUID, `capacity` is unknown, or `company`/`name`
    /// look like a CPR or CVR number).
    #[error("invalid token claims: {0}")]
    InvalidClaims(String),

    /// Key material could not be read (bad seed, bad public key, bad `kid`).
    #[error("invalid key: {0}")]
    InvalidKey(String),

    /// A JWKS document could not be used.
    #[error("invalid JWKS: {0}")]
    InvalidJwks(String),

    /// The issuer or verifier is configured unusably (empty issuer or
    /// audience, non-positive lifetime).
    #[error("invalid token configuration: {0}")]
    InvalidConfiguration(String),

    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),

    /// The token could not be encoded.
    #[error("could not encode token: {0}")]
    Encoding(String),
}

/// Formats seconds since the Unix epoch as RFC 3339 when representable.
pub(crate) fn unix_time(seconds: i64) -> String {
    match chrono::DateTime::from_timestamp(seconds, 0) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => format!("{seconds} (unix seconds)"),
    }
}

/// Shortens an untrusted value before it is quoted in an error message.
pub(crate) fn clip(value: &str) -> String {
    const MAX: usize = 64;
    if value.chars().count() <= MAX {
        value.to_owned()
    } else {
        let mut short: String = value.chars().take(MAX).collect();
        short.push('…');
        short
    }
}
