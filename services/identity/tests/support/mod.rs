//! What the identity service's tests share: an app on a store of its own, a clock the test
//! moves, and a real OpenID Connect provider process.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use agora_eventstore::Store;
use agora_eventstore::consumer::ProjectionRunner;
use agora_eventstore::testing::{self, TestDatabase};
use agora_identity::app::{IdentityApp, IdentitySettings, UserListProjection};
use agora_identity::oidc::OidcProvider;
use agora_vault::MasterKey;
use chrono::{DateTime, Duration, Utc};

pub const PSEUDONYM_KEY: &[u8] = b"test-pseudonym-key-0123456789abcdef";

/// A clock the test sets.
#[derive(Clone)]
pub struct TestClock(pub Arc<Mutex<DateTime<Utc>>>);

impl TestClock {
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(Utc::now())))
    }
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap();
        *now += by;
    }
    pub fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
    pub fn as_fn(&self) -> Arc<dyn Fn() -> DateTime<Utc> + Send + Sync> {
        let clock = self.0.clone();
        Arc::new(move || *clock.lock().unwrap())
    }
}

pub fn settings(dev_login: bool) -> IdentitySettings {
    let master = MasterKey::generate("test").expect("master key").0;
    IdentitySettings { dev_login, ..IdentitySettings::new("https://id.agora.test", "agora", master, PSEUDONYM_KEY) }
}

pub struct Env {
    pub app: IdentityApp,
    pub store: Store,
    pub runner: ProjectionRunner,
    pub clock: TestClock,
    settings: IdentitySettings,
    _database: Option<TestDatabase>,
    _dir: Option<tempfile::TempDir>,
}

pub enum Backend {
    Sqlite,
    Postgres,
}

/// An identity app on a store of its own; `None` when PostgreSQL is not reachable (skipped).
pub async fn env(backend: Backend, dev_login: bool, providers: Vec<OidcProvider>, clock: TestClock) -> Option<Env> {
    let (store, database, dir) = match backend {
        Backend::Sqlite => {
            let (store, dir) = testing::sqlite().await;
            (store, None, Some(dir))
        }
        Backend::Postgres => {
            let database = testing::postgres(4).await?;
            (database.store.clone(), Some(database), None)
        }
    };
    agora_identity::store::migrate(&store).await.expect("identity tables");
    let settings = settings(dev_login);
    let app = IdentityApp::new(store.clone(), settings.clone(), providers, clock.as_fn()).await.expect("identity app");
    let runner = ProjectionRunner::new(store.clone(), vec![Arc::new(UserListProjection)]);
    Some(Env { app, store, runner, clock, settings, _database: database, _dir: dir })
}

impl Env {
    /// Another replica of the identity app (same keys and clock), on `store`: one waiting for
    /// the read models, say.
    pub async fn app_on(&self, store: Store) -> IdentityApp {
        IdentityApp::new(store, self.settings.clone(), Vec::new(), self.clock.as_fn()).await.expect("identity app")
    }
}

/// The real OpenID Connect provider process (tests/support/oidc_provider.py).
pub struct Provider {
    pub issuer: String,
    _child: tokio::process::Child,
}

/// Starts the provider, or says why not: `None` means skipped (never under CI=true).
pub async fn provider() -> Option<Provider> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/oidc_provider.py");
    let what = "the OpenID Connect provider (PyPI package oidc-provider-mock; scripts/test installs it)";
    let (child, issuer) = testing::python_helper(script, &[], what).await?;
    if !issuer.starts_with("http://") {
        testing::unavailable(what, &format!("it printed {issuer:?}, not its issuer URL"));
        return None;
    }
    Some(Provider { issuer, _child: child })
}
