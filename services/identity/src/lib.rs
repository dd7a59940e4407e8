//! The identity service: who people are, the tokens every other service trusts, and the keys
//! that protect personal data.
//!
//! * [`providers`] and [`oidc`]: logins, replaceable per municipality and per user type, by
//!   OpenID Connect (authorization code with PKCE, state and nonce, ID tokens checked against
//!   the provider's JWKS, configurable claim mapping) or the development login of the embedded
//!   mode.
//! * [`domain`]: users and their roles, consent to the terms, and erasure, event-sourced and
//!   pure.
//! * [`keys`]: the token signing keys and their rotation without downtime.
//! * [`vault`]: every person's data key, wrapped under the master key, and destroyed on erasure
//!   (crypto-shredding).
//! * [`app`]: who may do what; sessions with rotating refresh tokens. [`grpc`] is the adapter.

pub mod app;
pub mod domain;
pub mod grpc;
pub mod integration;
pub mod keys;
pub mod keyservice;
pub mod oidc;
pub mod providers;
pub mod store;
pub mod vault;
