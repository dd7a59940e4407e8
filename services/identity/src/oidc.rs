//! The OpenID Connect adapter: the authorization-code flow with PKCE, state and nonce, and ID
//! tokens checked against the provider's published keys (openidconnect crate).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde_json::Value;

use crate::providers::{Claims, ProviderConfig, map_claims};

/// The clock the ID-token checks use; tests move it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

type Client =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("login provider {provider}: {reason}")]
    Configuration { provider: String, reason: String },
    #[error("login provider {provider} cannot be reached: {reason}")]
    Unreachable { provider: String, reason: String },
    #[error("login provider {provider} refused the code: {reason}")]
    CodeRefused { provider: String, reason: String },
    #[error("the ID token from {provider} is not acceptable: {reason}")]
    BadIdToken { provider: String, reason: String },
    #[error("the claims from {provider} cannot be used: {reason}")]
    BadClaims { provider: String, reason: String },
}

/// A login begun at a provider: send the browser to `authorization_url`; keep the rest until
/// the provider sends it back.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub authorization_url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// One configured provider, its metadata and keys read by discovery.
pub struct OidcProvider {
    config: ProviderConfig,
    client: Client,
    http: openidconnect::reqwest::Client,
    clock: Clock,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider").field("id", &self.config.id).field("issuer", &self.config.issuer).finish()
    }
}

fn http_client() -> Result<openidconnect::reqwest::Client, String> {
    openidconnect::reqwest::ClientBuilder::new()
        // Following redirects would open the back channel to server-side request forgery.
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

impl OidcProvider {
    /// Reads the provider's discovery document and keys.
    pub async fn discover(config: ProviderConfig, clock: Clock) -> Result<Self, OidcError> {
        let configuration = |reason: String| OidcError::Configuration { provider: config.id.clone(), reason };
        let http = http_client().map_err(configuration)?;
        let issuer = IssuerUrl::new(config.issuer.clone()).map_err(|e| configuration(format!("issuer: {e}")))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &http)
            .await
            .map_err(|e| OidcError::Unreachable { provider: config.id.clone(), reason: error_chain(&e) })?;
        Self::from_metadata(config, metadata, http, clock)
    }

    /// A provider from metadata already read (a broker whose discovery needs adjusting, tests).
    pub fn from_metadata(
        config: ProviderConfig,
        metadata: CoreProviderMetadata,
        http: openidconnect::reqwest::Client,
        clock: Clock,
    ) -> Result<Self, OidcError> {
        let configuration = |reason: String| OidcError::Configuration { provider: config.id.clone(), reason };
        config.claims.names().map_err(configuration)?;
        let secret = match (&config.client_secret, &config.client_secret_env) {
            (Some(secret), _) => Some(secret.clone()),
            (None, Some(variable)) => Some(
                std::env::var(variable)
                    .map_err(|_| configuration(format!("client_secret_env: {variable} is not set")))?,
            ),
            (None, None) => None,
        };
        let redirect = RedirectUrl::new(config.redirect_uri.clone())
            .map_err(|e| configuration(format!("redirect_uri {:?}: {e}", config.redirect_uri)))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(config.client_id.clone()),
            secret.map(ClientSecret::new),
        )
        .set_redirect_uri(redirect);
        Ok(Self { config, client, http, clock })
    }

    /// Reads metadata by discovery, for [`OidcProvider::from_metadata`].
    pub async fn read_metadata(issuer: &str) -> Result<(CoreProviderMetadata, openidconnect::reqwest::Client), String> {
        let http = http_client()?;
        let issuer = IssuerUrl::new(issuer.to_string()).map_err(|e| e.to_string())?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &http).await.map_err(|e| error_chain(&e))?;
        Ok((metadata, http))
    }

    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// Starts a login: a fresh state, nonce and PKCE verifier (S256).
    pub fn authorize(&self) -> Authorization {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = self
            .client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .set_pkce_challenge(challenge);
        for scope in &self.config.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        Authorization {
            authorization_url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        }
    }

    /// Exchanges the code (with the PKCE verifier) and checks the ID token: signature by the
    /// provider's keys, issuer, audience, expiry and nonce. Returns the mapped claims.
    pub async fn complete(&self, code: &str, nonce: &str, pkce_verifier: &str) -> Result<Claims, OidcError> {
        let provider = self.config.id.clone();
        let request = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Configuration { provider: provider.clone(), reason: e.to_string() })?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()));
        let response = request
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::CodeRefused { provider: provider.clone(), reason: error_chain(&e) })?;
        let id_token = response.id_token().ok_or_else(|| OidcError::BadIdToken {
            provider: provider.clone(),
            reason: "no ID token in the response".into(),
        })?;
        self.verify_id_token(&id_token.to_string(), nonce)
    }

    /// Checks a raw ID token as [`OidcProvider::complete`] does.
    pub fn verify_id_token(&self, raw: &str, nonce: &str) -> Result<Claims, OidcError> {
        let provider = self.config.id.clone();
        let bad = |reason: String| OidcError::BadIdToken { provider: provider.clone(), reason };
        let token: CoreIdToken = raw.parse().map_err(|e: serde_json::Error| bad(format!("not a JWT: {e}")))?;
        let clock = self.clock.clone();
        let verifier = self.client.id_token_verifier().set_time_fn(move || clock());
        token.claims(&verifier, &Nonce::new(nonce.to_string())).map_err(|e| bad(error_chain(&e)))?;
        // Verified: now every claim, including those the mapping names, can be read.
        let payload = raw.split('.').nth(1).ok_or_else(|| bad("not a JWT".into()))?;
        let claims: Value = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| bad("the claims are not JSON".into()))?;
        map_claims(&self.config, &claims).map_err(|reason| OidcError::BadClaims { provider, reason })
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
