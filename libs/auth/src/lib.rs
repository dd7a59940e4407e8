//! # agora-auth
//!
//! The signed access token every Agora service trusts, and the principal it
//! carries.
//!
//! An Agora access token is a standard compact JWS/JWT (RFC 7515 / RFC 7519)
//! signed with EdDSA over Ed25519 (RFC 8037). Its header is
//! `{"alg":"EdDSA","typ":"JWT","kid":"…"}`; its claims are the registered
//! `iss`, `aud`, `sub`, `iat`, `nbf`, `exp` and `jti`, plus the Agora claims
//! `capacity`, `roles`, `company` and `name`. The full format is described in
//! `docs/tokens.md`.
//!
//! * [`TokenIssuer`] signs tokens for a [`Principal`] with a [`SigningKey`].
//!   Until the identity service exists, Agora issues tokens itself; the
//!   identity service will later issue the very same format.
//! * [`TokenVerifier`] checks a token against one or more public keys, looked
//!   up by `kid` so keys can rotate without downtime, and returns the
//!   [`Principal`]. Public keys are published and read as a JWKS
//!   ([`jwks`], [`TokenVerifier::from_jwks`]).
//! * [`grpc`] reads the bearer token from gRPC metadata (server side) and
//!   attaches it to outgoing requests (client side).
//! * [`visibility`] holds the rules for who may see which hearing.
//!
//! `sub` is a pseudonymous user id (a UUID). CPR and CVR numbers never appear
//! in a token: the issuer refuses to sign, and the verifier refuses to accept,
//! a `company` or `name` claim that looks like one.
//!
//! ```
//! use agora_auth::{Capacity, Principal, Role, SigningKey, TokenIssuer, TokenVerifier, jwks};
//!
//! let key = SigningKey::generate()?;
//! let published = jwks(&[&key]);
//! let issuer = TokenIssuer::new(key, "https://agora.example", "agora", chrono::Duration::minutes(15));
//!
//! let principal = Principal::new(uuid::Uuid::new_v4(), Capacity::Employee)
//!     .with_role(Role::HearingCreator);
//! let token = issuer.issue(&principal)?;
//!
//! let verifier = TokenVerifier::from_jwks("https://agora.example", "agora", &published)?;
//! assert_eq!(verifier.verify(&token)?, principal);
//! # Ok::<(), agora_auth::AuthError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod key;
mod pii;
mod principal;
mod token;

pub mod grpc;
pub mod visibility;

pub use ed25519_dalek::VerifyingKey;
pub use error::AuthError;
pub use key::{SigningKey, jwk_thumbprint, jwks, verifying_key_from_jwk};
pub use principal::{Capacity, Principal, Role, is_pseudonymous_reference};
pub use token::{DEFAULT_LEEWAY_SECONDS, MAX_TOKEN_LENGTH, TokenIssuer, TokenVerifier, VerifiedToken};
