//! The identity service's application layer: logins, sessions with rotating refresh tokens,
//! roles, terms, signing keys and erasure, each checked for who may do it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use agora_auth::{Capacity, Principal, Role, SigningKey, TokenIssuer, TokenVerifier};
use agora_eventstore::consumer::{Projection, ProjectionError};
use agora_eventstore::{
    AggregateStore, DbTx, EventContext, EventRepository, NewEvent, RecordedEvent, Store, StoreError, on_tx,
};
use agora_vault::{KeyOwner, KeyedHash, MasterKey, PersonKeys, Revealed, VaultError};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use cqrs_es::{AggregateContext, AggregateError, EventStore};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::{
    COMPANY_AGGREGATE, Caller, Company, IdentityError, Profile, TERMS_AGGREGATE, TERMS_STREAM, Terms, USER_AGGREGATE,
    User, UserCommand, UserEvent, check_new_terms,
};
use crate::keys::{self, KeyRecord};
use crate::oidc::{OidcError, OidcProvider};
use crate::providers::{Claims, demo_claims, demo_user, demo_users};
use crate::store::{self, PendingLogin, RefreshOutcome};
use crate::vault::Vault;

pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// How long a begun login may take.
const LOGIN_TIMEOUT_MINUTES: i64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum IdentityAppError {
    #[error(transparent)]
    Domain(#[from] IdentityError),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Login(#[from] OidcError),
    #[error("the account was changed by someone else at the same time; try again")]
    Conflict,
    #[error("{0}")]
    Storage(String),
}

impl From<StoreError> for IdentityAppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => Self::Conflict,
            other => Self::Storage(other.to_string()),
        }
    }
}

impl From<VaultError> for IdentityAppError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Erased(_) => Self::Domain(IdentityError::Erased),
            other => Self::Storage(other.to_string()),
        }
    }
}

impl From<AggregateError<IdentityError>> for IdentityAppError {
    fn from(e: AggregateError<IdentityError>) -> Self {
        match e {
            AggregateError::UserError(e) => Self::Domain(e),
            AggregateError::AggregateConflict => Self::Conflict,
            other => Self::Storage(other.to_string()),
        }
    }
}

/// The identity service's settings.
#[derive(Clone)]
pub struct IdentitySettings {
    /// `iss` of the access tokens.
    pub issuer: String,
    /// `aud` of the access tokens.
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// How long a new signing key is published before it signs: longer than services take
    /// to fetch the JWKS again.
    pub publish_delay: Duration,
    /// The development login with the demo users.
    pub dev_login: bool,
    /// Pseudonyms of CPR and CVR numbers and e-mail addresses, shared with the other services.
    pub pseudonyms: KeyedHash,
    /// Wraps person keys and the token signing keys.
    pub master: MasterKey,
}

impl IdentitySettings {
    /// Settings with the usual lifetimes (access tokens 15 minutes, sessions 12 hours, a new
    /// signing key published 10 minutes before it signs: longer than services take to read the
    /// JWKS again) and the development login off.
    pub fn new(issuer: &str, audience: &str, master: MasterKey, pseudonym_key: &[u8]) -> Self {
        Self {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            access_ttl: Duration::minutes(15),
            refresh_ttl: Duration::hours(12),
            publish_delay: Duration::minutes(10),
            dev_login: false,
            pseudonyms: KeyedHash::new(pseudonym_key),
            master,
        }
    }
}

/// A user as the API shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserView {
    pub user_id: Uuid,
    pub capacity: Option<Capacity>,
    pub roles: Vec<Role>,
    /// The name, or empty once erased.
    pub name: String,
    pub company: Option<String>,
    pub terms_accepted: Option<String>,
    pub erased: bool,
    pub must_accept_terms: bool,
}

/// How to reach a user (for the notification service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub name: String,
    pub email: Option<String>,
    /// `da` or `en`.
    pub language: String,
    /// `CPR:<number>` or `CVR:<number>`: where Digital Post reaches them, for citizens and
    /// company users.
    pub digital_post: Option<String>,
}

/// What a login or a refresh gives.
#[derive(Debug, Clone)]
pub struct Session {
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_expires_at: DateTime<Utc>,
    pub user: UserView,
}

#[derive(Clone)]
pub struct IdentityApp {
    pub store: Store,
    users: Arc<AggregateStore<User>>,
    companies: Arc<AggregateStore<Company>>,
    pub vault: Vault,
    providers: Arc<BTreeMap<String, Arc<OidcProvider>>>,
    settings: Arc<IdentitySettings>,
    /// Follows the published keys; handed to the services of the same process.
    verifier: TokenVerifier,
    clock: Clock,
}

fn random_secret() -> Result<String, IdentityAppError> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| IdentityAppError::Storage("random number generator failed".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn caller(principal: &Principal) -> Caller {
    Caller { user_id: principal.user_id, administrator: principal.is_administrator() }
}

impl IdentityApp {
    /// The app over `store` (whose tables must exist: [`crate::store::migrate`]). Makes the
    /// first signing key of a fresh store.
    pub async fn new(
        store: Store,
        settings: IdentitySettings,
        providers: Vec<OidcProvider>,
        clock: Clock,
    ) -> Result<Self, IdentityAppError> {
        let users = Arc::new(EventRepository::aggregate_store::<User>(store.clone(), None, Vec::new()));
        let companies = Arc::new(EventRepository::aggregate_store::<Company>(store.clone(), None, Vec::new()));
        let vault = Vault::new(store.clone(), Arc::new(settings.master.clone()), clock.clone());
        let providers = providers.into_iter().map(|p| (p.config().id.clone(), Arc::new(p))).collect();
        let verifier = TokenVerifier::new(&settings.issuer, &settings.audience);
        let app = Self {
            store,
            users,
            companies,
            vault,
            providers: Arc::new(providers),
            settings: Arc::new(settings),
            verifier,
            clock,
        };
        app.ensure_signing_key().await?;
        app.refresh_verifier().await?;
        Ok(app)
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    pub fn dev_login_enabled(&self) -> bool {
        self.settings.dev_login
    }

    /// The verifier of this process's services: it follows key rotations made here.
    pub fn verifier(&self) -> TokenVerifier {
        self.verifier.clone()
    }

    pub fn providers(&self) -> impl Iterator<Item = &OidcProvider> {
        self.providers.values().map(Arc::as_ref)
    }

    // ----- signing keys -----

    fn key_context(kid: &str) -> String {
        crate::vault::signing_key_context(kid)
    }

    fn new_key_record(&self, signs_from: DateTime<Utc>) -> Result<(KeyRecord, SigningKey), IdentityAppError> {
        let key = SigningKey::generate().map_err(|e| IdentityAppError::Storage(e.to_string()))?;
        let seed =
            URL_SAFE_NO_PAD.decode(key.to_seed_base64()).map_err(|e| IdentityAppError::Storage(e.to_string()))?;
        let sealed_seed = self.settings.master.seal_secret(&Self::key_context(key.kid()), &seed)?;
        let record =
            KeyRecord { kid: key.kid().to_string(), sealed_seed, created_at: self.now(), signs_from, retired_at: None };
        Ok((record, key))
    }

    async fn ensure_signing_key(&self) -> Result<(), IdentityAppError> {
        if !store::signing_keys(&self.store).await?.is_empty() {
            return Ok(());
        }
        let (record, _) = self.new_key_record(self.now())?;
        store::add_signing_key(&self.store, &record, &[], true).await?;
        Ok(())
    }

    fn open_key(&self, record: &KeyRecord) -> Result<SigningKey, IdentityAppError> {
        let seed = self.settings.master.open_secret(&Self::key_context(&record.kid), &record.sealed_seed)?;
        let seed: [u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| IdentityAppError::Storage("a signing key is not 32 bytes".into()))?;
        SigningKey::from_seed(&seed, &record.kid).map_err(|e| IdentityAppError::Storage(e.to_string()))
    }

    /// The published keys as a JWKS document, and the id of the key that signs now.
    pub async fn jwks(&self) -> Result<(Value, String), IdentityAppError> {
        let records = store::signing_keys(&self.store).await?;
        let now = self.now();
        let mut keys = Vec::new();
        for record in keys::published_keys(&records, now) {
            keys.push(self.open_key(record)?);
        }
        let signing = keys::signing_key(&records, now).map(|k| k.kid.clone()).unwrap_or_default();
        Ok((agora_auth::jwks(&keys.iter().collect::<Vec<_>>()), signing))
    }

    /// Makes this process's verifier trust exactly the published keys.
    pub async fn refresh_verifier(&self) -> Result<(), IdentityAppError> {
        let (jwks, _) = self.jwks().await?;
        self.verifier.replace_keys(&jwks).map_err(|e| IdentityAppError::Storage(e.to_string()))
    }

    async fn token_issuer(&self) -> Result<TokenIssuer, IdentityAppError> {
        let records = store::signing_keys(&self.store).await?;
        let record = keys::signing_key(&records, self.now())
            .ok_or_else(|| IdentityAppError::Storage("no signing key is in force".into()))?;
        let key = self.open_key(record)?;
        Ok(TokenIssuer::new(key, &self.settings.issuer, &self.settings.audience, self.settings.access_ttl))
    }

    /// A new signing key, published now and signing after the publish delay; the old keys stay
    /// published until their last tokens expire. Administrators only.
    pub async fn rotate_signing_key(&self, principal: &Principal) -> Result<(Value, String), IdentityAppError> {
        if !principal.is_administrator() {
            return Err(IdentityAppError::PermissionDenied("only administrators may rotate the signing key".into()));
        }
        let records = store::signing_keys(&self.store).await?;
        let plan = keys::plan_rotation(
            &records,
            self.now(),
            self.settings.publish_delay,
            self.settings.access_ttl,
            Duration::seconds(agora_auth::DEFAULT_LEEWAY_SECONDS),
        );
        let (record, _) = self.new_key_record(plan.signs_from)?;
        store::add_signing_key(&self.store, &record, &plan.retire, false).await?;
        self.refresh_verifier().await?;
        tracing::info!(kid = %record.kid, signs_from = %plan.signs_from, "signing key rotated");
        self.jwks().await
    }

    // ----- logins -----

    /// Starts an OpenID Connect login at `provider`.
    pub async fn begin_login(&self, provider: &str) -> Result<crate::oidc::Authorization, IdentityAppError> {
        let oidc = self
            .providers
            .get(provider)
            .ok_or_else(|| IdentityAppError::Invalid(format!("no login provider {provider:?}")))?;
        let authorization = oidc.authorize();
        let pending = PendingLogin {
            state: authorization.state.clone(),
            provider: provider.to_string(),
            nonce: authorization.nonce.clone(),
            pkce_verifier: authorization.pkce_verifier.clone(),
            expires_at: (self.now() + Duration::minutes(LOGIN_TIMEOUT_MINUTES)).timestamp(),
        };
        store::save_pending_login(&self.store, &pending, self.now()).await?;
        Ok(authorization)
    }

    /// Completes a login with what the provider sent back. The state is used up, so a replay
    /// of the same answer is refused.
    pub async fn complete_login(&self, state: &str, code: &str) -> Result<Session, IdentityAppError> {
        if state.is_empty() || code.is_empty() {
            return Err(IdentityAppError::Invalid("state and code are both required".into()));
        }
        let pending = store::take_pending_login(&self.store, state).await?.ok_or_else(|| {
            IdentityAppError::Unauthenticated("unknown or already used login state; start the login again".into())
        })?;
        if pending.expires_at < self.now().timestamp() {
            return Err(IdentityAppError::Unauthenticated("the login took too long; start it again".into()));
        }
        let oidc = self.providers.get(&pending.provider).ok_or_else(|| {
            IdentityAppError::Invalid(format!("login provider {:?} is no longer configured", pending.provider))
        })?;
        let claims = oidc.complete(code, &pending.nonce, &pending.pkce_verifier).await?;
        self.login(claims).await
    }

    /// The development login. Refused unless it is on.
    pub async fn dev_login(&self, handle: &str) -> Result<Session, IdentityAppError> {
        if !self.settings.dev_login {
            return Err(IdentityAppError::PermissionDenied(
                "the development login is off (it is for the embedded mode, or AGORA_DEV_LOGIN=true)".into(),
            ));
        }
        let user = demo_user(handle).ok_or_else(|| {
            let handles: Vec<&str> = demo_users().iter().map(|u| u.handle).collect();
            IdentityAppError::Invalid(format!("no demo user {handle:?} (there are: {})", handles.join(", ")))
        })?;
        let candidate = user.principal.user_id;
        self.login_as(demo_claims(&user), candidate).await
    }

    /// Logs in the person a provider's verified claims describe (the user made on their first
    /// login). The caller must have verified the claims: nothing here does. The OpenID Connect
    /// login ends here; `agora bench surge` logs its respondents in here too, in its own
    /// process, so that they are people the services can write to.
    pub async fn login(&self, claims: Claims) -> Result<Session, IdentityAppError> {
        self.login_as(claims, Uuid::now_v7()).await
    }

    async fn login_as(&self, claims: Claims, candidate: Uuid) -> Result<Session, IdentityAppError> {
        let pseudonyms = &self.settings.pseudonyms;
        let person_ref = claims.cpr.as_deref().map(|cpr| format!("person:{}", pseudonyms.person_reference(cpr)));
        // The same person is the same user across providers when the CPR number is known.
        let login_ref = match &person_ref {
            Some(person) => person.clone(),
            None => format!("login:{}", pseudonyms.hash(&format!("{}|{}", claims.provider, claims.subject))),
        };
        let user_id = store::user_for_login(&self.store, &login_ref, candidate).await?;
        let mut references: Vec<String> = person_ref.into_iter().collect();
        // An address the provider does not vouch for would let anyone who types it in
        // see what was sent to it.
        if let (Some(email), true) = (&claims.email, claims.email_verified) {
            references.push(format!("email:{}", pseudonyms.email_reference(email)));
        }
        let seal = |value: Option<String>| async move {
            match value {
                Some(value) => self.vault.seal(&KeyOwner::person(user_id), &value).await.map(Some),
                None => Ok(None),
            }
        };
        let profile = Profile {
            provider: claims.provider.clone(),
            capacity: claims.capacity,
            name: seal(claims.name.clone()).await?,
            email: seal(claims.email.clone()).await?,
            company: claims.cvr.as_deref().map(|cvr| pseudonyms.company_reference(cvr)),
            references,
            claim_roles: claims.roles.clone(),
            language: claims.language.clone(),
            // Citizens and companies are written to in Digital Post; staff by e-mail.
            digital_post: seal(match (claims.capacity, &claims.cpr, &claims.cvr) {
                (Some(Capacity::Citizen), Some(cpr), _) => Some(format!("CPR:{cpr}")),
                (Some(Capacity::Company), _, Some(cvr)) => Some(format!("CVR:{cvr}")),
                _ => None,
            })
            .await?,
        };
        let me = Caller { user_id, administrator: false };
        let company = profile.company.clone();
        let user = self.execute(user_id, &me, UserCommand::Login { profile, at: self.now() }).await?;
        if let Some(reference) = company {
            self.company_user_logged_in(&reference, user_id, claims.company_name.clone()).await?;
        }
        self.new_session(&user, &Uuid::now_v7().to_string()).await
    }

    async fn company_user_logged_in(
        &self,
        reference: &str,
        user_id: Uuid,
        name: Option<String>,
    ) -> Result<(), IdentityAppError> {
        let mut loaded = self.companies.load_aggregate(reference).await?;
        let events = loaded.aggregate().user_logged_in(reference, user_id, name);
        if events.is_empty() {
            return Ok(());
        }
        let metadata = EventContext::for_actor(format!("user:{user_id}")).with_command("Login").to_metadata();
        self.companies.commit(events, loaded, metadata).await?;
        Ok(())
    }

    /// Every company, with its users; for administrators.
    pub async fn list_companies(&self, principal: &Principal) -> Result<Vec<Company>, IdentityAppError> {
        if !principal.is_administrator() {
            return Err(IdentityAppError::PermissionDenied("only administrators may list companies".into()));
        }
        Ok(store::list_companies(&self.store)
            .await?
            .into_iter()
            .filter_map(|s| serde_json::from_value(s).ok())
            .collect())
    }

    // ----- sessions -----

    async fn new_session(&self, user: &User, family_id: &str) -> Result<Session, IdentityAppError> {
        let view = self.view(user).await?;
        let user_id = view.user_id;
        let mut principal = Principal::new(user_id, view.capacity.unwrap_or(Capacity::Citizen));
        for role in &view.roles {
            principal = principal.with_role(*role);
        }
        if let Some(company) = &view.company {
            principal = principal.with_company(company.clone());
        }
        if !view.name.is_empty() {
            principal = principal.with_name(view.name.clone());
        }
        for reference in &user.profile.references {
            principal = principal.with_reference(reference.clone());
        }
        let issuer = self.token_issuer().await?;
        let now = self.now();
        let access_token = issuer.issue_at(&principal, now).map_err(|e| IdentityAppError::Storage(e.to_string()))?;
        let refresh_token = format!("agr1_{}", random_secret()?);
        let refresh_expires_at = now + self.settings.refresh_ttl;
        let hash = token_hash(&refresh_token);
        if !store::save_refresh_token(&self.store, &hash, family_id, user_id, refresh_expires_at).await? {
            return Err(IdentityAppError::Unauthenticated("the session was ended meanwhile; log in again".into()));
        }
        Ok(Session {
            access_token,
            access_expires_at: now + self.settings.access_ttl,
            refresh_token,
            refresh_expires_at,
            user: view,
        })
    }

    /// A new access token and a new refresh token for a refresh token, which is used up. A
    /// refresh token presented twice means a copy is in other hands: the session ends.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Session, IdentityAppError> {
        match store::use_refresh_token(&self.store, &token_hash(refresh_token), self.now()).await? {
            RefreshOutcome::Rotated { family_id, user_id } => {
                let user_id = Uuid::parse_str(&user_id).map_err(|e| IdentityAppError::Storage(e.to_string()))?;
                let user = self.load(user_id).await?;
                if user.erased {
                    return Err(IdentityAppError::Unauthenticated("the account has been erased".into()));
                }
                self.new_session(&user, &family_id).await
            }
            RefreshOutcome::Reused => Err(IdentityAppError::Unauthenticated(
                "this refresh token was already used, so the session has been ended for safety; log in again".into(),
            )),
            RefreshOutcome::Invalid => {
                Err(IdentityAppError::Unauthenticated("unknown, expired or revoked refresh token; log in again".into()))
            }
        }
    }

    /// Ends the session of a refresh token.
    pub async fn logout(&self, refresh_token: &str) -> Result<(), IdentityAppError> {
        if !store::revoke_family_of(&self.store, &token_hash(refresh_token)).await? {
            return Err(IdentityAppError::Unauthenticated("unknown refresh token".into()));
        }
        Ok(())
    }

    // ----- users -----

    async fn execute(&self, user_id: Uuid, caller: &Caller, command: UserCommand) -> Result<User, IdentityAppError> {
        let mut loaded = self.users.load_aggregate(&user_id.to_string()).await?;
        let mut user = loaded.aggregate().clone();
        user.id = user_id.to_string();
        let name = command.name();
        let events = user.decide(command, caller)?;
        if events.is_empty() {
            return Ok(user);
        }
        for event in events.clone() {
            cqrs_es::Aggregate::apply(&mut user, event);
        }
        let metadata = EventContext::for_actor(format!("user:{}", caller.user_id)).with_command(name).to_metadata();
        self.users.commit(events, loaded, metadata).await?;
        Ok(user)
    }

    /// An administrator's change of a user answers once the administrators' list shows it. A
    /// login or an acceptance of the terms does not wait: nobody who does them reads the list.
    async fn shown_in_user_list(&self, user_id: Uuid) {
        self.store.await_read_model(USER_READ_MODEL, USER_AGGREGATE, &user_id.to_string()).await;
    }

    async fn load(&self, user_id: Uuid) -> Result<User, IdentityAppError> {
        let mut loaded = self.users.load_aggregate(&user_id.to_string()).await?;
        let mut user = loaded.aggregate().clone();
        if !user.exists {
            return Err(IdentityError::NotFound.into());
        }
        user.id = user_id.to_string();
        Ok(user)
    }

    async fn reveal(&self, sealed: Option<&str>) -> Result<Option<String>, IdentityAppError> {
        match sealed {
            None => Ok(None),
            Some(value) => Ok(match self.vault.reveal(value).await? {
                Revealed::Clear(text) => Some(text),
                Revealed::Erased => None,
            }),
        }
    }

    async fn view(&self, user: &User) -> Result<UserView, IdentityAppError> {
        let user_id = Uuid::parse_str(&user.id).map_err(|e| IdentityAppError::Storage(e.to_string()))?;
        let in_force = self.current_terms().await?.map(|t| t.version);
        let name = if user.erased { None } else { self.reveal(user.profile.name.as_deref()).await? };
        Ok(UserView {
            user_id,
            capacity: user.capacity,
            roles: user.roles(),
            name: name.unwrap_or_default(),
            company: user.profile.company.clone(),
            terms_accepted: user.terms_accepted.clone(),
            erased: user.erased,
            must_accept_terms: !user.erased && in_force.is_some() && in_force != user.terms_accepted,
        })
    }

    /// How to reach a user now, for Agora's own services: their name, e-mail address and
    /// language, or `None` when there is no such user or they were erased.
    pub async fn contact(&self, user_id: Uuid) -> Result<Option<Contact>, IdentityAppError> {
        Ok(self.contacts(&[user_id]).await?.remove(&user_id).flatten())
    }

    /// The contacts of many users at once (`None`: no such user, or erased): their streams are
    /// read in one query and their keys in one more, where a user at a time took two or three
    /// round trips each (a batch of receipts during a surge asks for 32 people).
    ///
    /// Folding the events here is what loading a user does: users are stored without
    /// snapshots or upcasters (see `IdentityApp::new`).
    pub async fn contacts(&self, user_ids: &[Uuid]) -> Result<HashMap<Uuid, Option<Contact>>, IdentityAppError> {
        // Each stream read once, however often its id is asked for.
        let ids: std::collections::BTreeSet<String> = user_ids.iter().map(Uuid::to_string).collect();
        let asked: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut users: HashMap<String, User> = HashMap::new();
        for event in self.store.read_streams(USER_AGGREGATE, &asked).await? {
            let decoded = event.decode::<UserEvent>().map_err(|e| {
                IdentityAppError::Storage(format!("event {} is not a user event: {e}", event.position()))
            })?;
            cqrs_es::Aggregate::apply(users.entry(event.aggregate_id).or_default(), decoded);
        }
        users.retain(|_, user| user.exists && !user.erased);
        let sealed = |user: &User| {
            [&user.profile.name, &user.profile.email, &user.profile.digital_post]
                .into_iter()
                .filter_map(|value| value.as_deref().and_then(agora_vault::sealed_for))
                .collect::<Vec<_>>()
        };
        self.vault.remember_keys(users.values().flat_map(sealed)).await?;
        let mut contacts = HashMap::with_capacity(user_ids.len());
        for user_id in user_ids {
            let contact = match users.get(&user_id.to_string()) {
                Some(user) => Some(Contact {
                    name: self.reveal(user.profile.name.as_deref()).await?.unwrap_or_default(),
                    email: self.reveal(user.profile.email.as_deref()).await?,
                    language: user.profile.language.clone().unwrap_or_else(|| "da".into()),
                    digital_post: self.reveal(user.profile.digital_post.as_deref()).await?,
                }),
                None => None,
            };
            contacts.insert(*user_id, contact);
        }
        Ok(contacts)
    }

    pub async fn who_am_i(&self, principal: &Principal) -> Result<UserView, IdentityAppError> {
        let user = self.load(principal.user_id).await?;
        self.view(&user).await
    }

    /// Every user, for administrators.
    pub async fn list_users(&self, principal: &Principal) -> Result<Vec<UserView>, IdentityAppError> {
        if !principal.is_administrator() {
            return Err(IdentityAppError::PermissionDenied("only administrators may list users".into()));
        }
        let mut views = Vec::new();
        for state in store::list_users(&self.store).await? {
            if let Ok(user) = serde_json::from_value::<User>(state) {
                views.push(self.view(&user).await?);
            }
        }
        Ok(views)
    }

    pub async fn assign_role(
        &self,
        principal: &Principal,
        user_id: Uuid,
        role: Role,
    ) -> Result<UserView, IdentityAppError> {
        let user = self.execute(user_id, &caller(principal), UserCommand::AssignRole { role }).await?;
        self.shown_in_user_list(user_id).await;
        self.view(&user).await
    }

    pub async fn revoke_role(
        &self,
        principal: &Principal,
        user_id: Uuid,
        role: Role,
    ) -> Result<UserView, IdentityAppError> {
        let user = self.execute(user_id, &caller(principal), UserCommand::RevokeRole { role }).await?;
        self.shown_in_user_list(user_id).await;
        self.view(&user).await
    }

    /// Erases a person: their key is destroyed first (so a crash half-way never leaves the data
    /// readable), then their sessions and logins, then the erasure is recorded.
    pub async fn erase(
        &self,
        principal: &Principal,
        user_id: Uuid,
        reason: &str,
    ) -> Result<DateTime<Utc>, IdentityAppError> {
        if !(principal.is_administrator() || principal.user_id == user_id) {
            // Before anything is looked up, so that refusals tell nothing of who exists.
            return Err(IdentityError::NotAllowed(
                "only an administrator or the person themself may erase a user".into(),
            )
            .into());
        }
        let at = self.now();
        let command = UserCommand::Erase { reason: reason.to_string(), at };
        let user = self.load(user_id).await?;
        // Who may, and whether it is still to be done, before anything is destroyed.
        user.decide(command.clone(), &caller(principal))?;
        self.vault.erase(user_id).await?;
        // What hearings held of them before they ever logged in (invitations by CPR or address).
        for reference in &user.profile.references {
            self.vault.erase_reference(reference).await?;
        }
        store::revoke_user_sessions(&self.store, user_id).await?;
        store::forget_logins(&self.store, user_id).await?;
        self.execute(user_id, &caller(principal), command).await?;
        self.shown_in_user_list(user_id).await;
        tracing::info!(user = %user_id, "user erased");
        Ok(at)
    }

    /// Everything the identity service holds about a person, readable: for the person
    /// themself or an administrator (the right of access).
    pub async fn personal_data(&self, principal: &Principal, user_id: Uuid) -> Result<Value, IdentityAppError> {
        if !(principal.user_id == user_id || principal.is_administrator()) {
            return Err(IdentityAppError::PermissionDenied(
                "only the person themself or an administrator may export a person's data".into(),
            ));
        }
        let user = self.load(user_id).await?;
        let view = self.view(&user).await?;
        let email = if user.erased { None } else { self.reveal(user.profile.email.as_deref()).await? };
        let events = self.store.read_stream(USER_AGGREGATE, &user_id.to_string(), 0).await?;
        let mut history = Vec::new();
        for event in &events {
            let Ok(change) = event.decode::<UserEvent>() else { continue };
            let entry = match change {
                UserEvent::UserRegistered { profile, at } => {
                    serde_json::json!({ "event": "registered", "provider": profile.provider, "at": at })
                }
                UserEvent::UserLoggedIn { profile, at } => {
                    serde_json::json!({ "event": "logged in", "provider": profile.provider, "at": at })
                }
                UserEvent::RoleAssigned { role, by } => {
                    serde_json::json!({ "event": "role assigned", "role": role, "by": by, "at": event.recorded_at })
                }
                UserEvent::RoleRevoked { role, by } => {
                    serde_json::json!({ "event": "role revoked", "role": role, "by": by, "at": event.recorded_at })
                }
                UserEvent::TermsAccepted { version, at } => {
                    serde_json::json!({ "event": "terms accepted", "version": version, "at": at })
                }
                UserEvent::UserErased { by, at, .. } => serde_json::json!({ "event": "erased", "by": by, "at": at }),
            };
            history.push(entry);
        }
        Ok(serde_json::json!({
            "user_id": user_id,
            "capacity": view.capacity,
            "name": view.name,
            "email": email,
            "company_reference": view.company,
            "roles": view.roles,
            "terms_accepted": view.terms_accepted,
            "erased": view.erased,
            "history": history,
        }))
    }

    // ----- terms -----

    async fn all_terms(&self) -> Result<Vec<Terms>, IdentityAppError> {
        let events = self.store.read_stream(TERMS_AGGREGATE, TERMS_STREAM, 0).await?;
        Ok(events.iter().filter_map(|e| serde_json::from_value(e.payload_value()["data"].clone()).ok()).collect())
    }

    /// The terms in force: the last published.
    pub async fn current_terms(&self) -> Result<Option<Terms>, IdentityAppError> {
        Ok(self.all_terms().await?.pop())
    }

    pub async fn publish_terms(
        &self,
        principal: &Principal,
        version: &str,
        text: &str,
    ) -> Result<Terms, IdentityAppError> {
        if !principal.is_administrator() {
            return Err(IdentityAppError::PermissionDenied("only administrators may publish terms".into()));
        }
        let published = self.all_terms().await?;
        check_new_terms(version, text, &published)?;
        let terms = Terms { version: version.trim().to_string(), text: text.to_string(), published_at: self.now() };
        let metadata =
            EventContext::for_actor(format!("user:{}", principal.user_id)).with_command("PublishTerms").to_metadata();
        self.store
            .append(
                &[NewEvent {
                    aggregate_type: TERMS_AGGREGATE.into(),
                    aggregate_id: TERMS_STREAM.into(),
                    sequence: published.len() as i64 + 1,
                    event_type: "TermsPublished".into(),
                    event_version: "1".into(),
                    payload: serde_json::value::to_raw_value(
                        &serde_json::json!({ "type": "TermsPublished", "data": terms }),
                    )
                    .map_err(|e| IdentityAppError::Storage(e.to_string()))?,
                    metadata: serde_json::to_value(metadata).map_err(|e| IdentityAppError::Storage(e.to_string()))?,
                }],
                None,
            )
            .await?;
        Ok(terms)
    }

    pub async fn accept_terms(&self, principal: &Principal, version: &str) -> Result<UserView, IdentityAppError> {
        let in_force = self.current_terms().await?.map(|t| t.version);
        let command = UserCommand::AcceptTerms { version: version.to_string(), in_force, at: self.now() };
        let user = self.execute(principal.user_id, &caller(principal), command).await?;
        self.view(&user).await
    }
}

/// The administrators' lists of users (`identity_users`) and companies (`identity_companies`),
/// kept from their events.
pub struct UserListProjection;

/// Folds one event into the state kept in `table` under the event's stream id.
async fn fold_into<A>(tx: &mut DbTx, table: &str, event: &RecordedEvent) -> Result<(), ProjectionError>
where
    A: cqrs_es::Aggregate + Default + serde::Serialize + serde::de::DeserializeOwned,
{
    let failed = |reason: String| ProjectionError::Apply {
        projection: USER_READ_MODEL.into(),
        position: event.position(),
        reason,
    };
    let change: A::Event = event.decode().map_err(|e| failed(e.to_string()))?;
    let select = format!("SELECT state FROM {table} WHERE id = $1");
    let existing: Option<(String,)> = on_tx!(tx, conn => {
        sqlx::query_as(&select).bind(&event.aggregate_id).fetch_optional(&mut **conn).await?
    });
    let mut state: A = match existing {
        Some((state,)) => serde_json::from_str(&state).map_err(|e| failed(e.to_string()))?,
        None => A::default(),
    };
    state.apply(change);
    let state = serde_json::to_string(&state).map_err(|e| failed(e.to_string()))?;
    let upsert = format!("INSERT INTO {table} (id, state) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET state = $2");
    on_tx!(tx, conn => {
        sqlx::query(&upsert).bind(&event.aggregate_id).bind(state).execute(&mut **conn).await?;
    });
    Ok(())
}

/// The user list's name: its checkpoint's key, and what a command waits for.
pub const USER_READ_MODEL: &str = "identity-users";

#[async_trait::async_trait]
impl Projection for UserListProjection {
    fn name(&self) -> &str {
        USER_READ_MODEL
    }

    fn aggregates(&self) -> Option<&[&'static str]> {
        Some(&[USER_AGGREGATE, COMPANY_AGGREGATE])
    }

    async fn apply(&self, tx: &mut DbTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        match event.aggregate_type.as_str() {
            USER_AGGREGATE => fold_into::<User>(tx, "identity_users", event).await,
            COMPANY_AGGREGATE => fold_into::<Company>(tx, "identity_companies", event).await,
            _ => Ok(()),
        }
    }

    async fn reset(&self, tx: &mut DbTx) -> Result<(), ProjectionError> {
        on_tx!(tx, conn => {
            sqlx::query("DELETE FROM identity_users").execute(&mut **conn).await?;
            sqlx::query("DELETE FROM identity_companies").execute(&mut **conn).await?;
        });
        Ok(())
    }
}
