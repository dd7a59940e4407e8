//! The gateway: Agora's only door from the outside. Browsers get the server-rendered portal
//! (`portal`), API clients the JSON API under `/api/v1` (`api`) with its OpenAPI document. The
//! gateway holds no business rules: it finds out who is calling (`session`), asks the services
//! over gRPC (`services`), and renders what they answer, their refusals included (`problem`).

pub mod admin_api;
pub mod api;
pub mod feed;
pub mod i18n;
pub mod limits;
pub mod portal;
pub mod problem;
pub mod security;
pub mod services;
pub mod session;
pub mod time;

use std::sync::Arc;

pub use services::{Endpoints, Services};
pub use session::SessionKey;

/// What every handler shares: the services' clients and the key that signs CSRF tokens.
#[derive(Clone)]
pub struct Gateway {
    /// Shared: every request clones the gateway, which cloned seven gRPC channels with it.
    pub services: Arc<Services>,
    pub sessions: Arc<SessionKey>,
    pub settings: Arc<Settings>,
    pub limits: Arc<limits::Limits>,
}

/// How this gateway presents itself.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The name the portal shows (the municipality's).
    pub portal_name: String,
    /// Whether cookies are marked Secure. Always in production; browsers accept Secure cookies
    /// from http://127.0.0.1 too, so the embedded portal keeps it on as well.
    pub secure_cookies: bool,
    /// The largest request body (a response with its attachments), in bytes.
    pub max_body_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self { portal_name: "Agora".into(), secure_cookies: true, max_body_bytes: 120 * 1024 * 1024 }
    }
}

impl Gateway {
    pub fn new(services: Services, sessions: SessionKey, settings: Settings) -> Self {
        Self {
            services: Arc::new(services),
            sessions: Arc::new(sessions),
            settings: Arc::new(settings),
            limits: Default::default(),
        }
    }

    pub fn with_limits(mut self, limits: limits::Limits) -> Self {
        self.limits = Arc::new(limits);
        self
    }

    /// The portal and the API, with the session handling and security headers around them.
    pub fn router(self) -> axum::Router {
        let (api, openapi) = api::router();
        let openapi = Arc::new(openapi);
        axum::Router::new()
            .merge(portal::router())
            .merge(api)
            .route(
                "/api/v1/openapi.json",
                axum::routing::get(move || {
                    let openapi = openapi.clone();
                    async move { axum::Json(openapi.as_ref().clone()) }
                }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(self.settings.max_body_bytes))
            .layer(axum::middleware::from_fn_with_state(self.clone(), limits::refuse_oversized))
            .layer(axum::middleware::from_fn(problem::api_errors_as_problems))
            .layer(axum::middleware::from_fn_with_state(self.clone(), session::refresh_and_protect))
            .layer(axum::middleware::from_fn_with_state(self.clone(), limits::enforce))
            .layer(axum::middleware::from_fn(security::headers))
            .with_state(self)
    }
}
