//! Users as the identity service knows them: registered on first login, their roles, their
//! consent to the terms, their erasure. Pure: time, the caller and sealed values come in.

use agora_auth::{Capacity, Role};
use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

pub const USER_AGGREGATE: &str = "identity-user";
pub const TERMS_AGGREGATE: &str = "identity-terms";
/// The one stream of the terms and conditions.
pub const TERMS_STREAM: &str = "terms";
pub const MAX_TERMS_TEXT: usize = 100_000;

/// What a login provider told about a person, with personal data already sealed under the
/// person's key and identifiers already turned into pseudonymous references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Profile {
    pub provider: String,
    pub capacity: Option<Capacity>,
    /// Sealed display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Sealed e-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// The company's pseudonymous reference (from its CVR number), for company users.
    #[serde(default)]
    pub company: Option<String>,
    /// Pseudonymous references by which invitations find the person (`person:…`, `email:…`).
    #[serde(default)]
    pub references: Vec<String>,
    /// Roles the provider's claims grant.
    #[serde(default)]
    pub claim_roles: Vec<Role>,
    /// The language the person reads (`da`, `en`), when the provider says.
    #[serde(default)]
    pub language: Option<String>,
    /// Sealed: where Digital Post reaches them, `CPR:<number>` for a citizen or
    /// `CVR:<number>` for a company user's company. Erased with the person.
    #[serde(default)]
    pub digital_post: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEvent {
    UserRegistered { profile: Profile, at: DateTime<Utc> },
    UserLoggedIn { profile: Profile, at: DateTime<Utc> },
    RoleAssigned { role: Role, by: String },
    RoleRevoked { role: Role, by: String },
    TermsAccepted { version: String, at: DateTime<Utc> },
    UserErased { by: String, reason: String, at: DateTime<Utc> },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UserRegistered { .. } => "UserRegistered",
            Self::UserLoggedIn { .. } => "UserLoggedIn",
            Self::RoleAssigned { .. } => "RoleAssigned",
            Self::RoleRevoked { .. } => "RoleRevoked",
            Self::TermsAccepted { .. } => "TermsAccepted",
            Self::UserErased { .. } => "UserErased",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: uuid::Uuid,
    pub administrator: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    /// A login: registers the user the first time, records the login after that.
    Login {
        profile: Profile,
        at: DateTime<Utc>,
    },
    AssignRole {
        role: Role,
    },
    RevokeRole {
        role: Role,
    },
    AcceptTerms {
        version: String,
        in_force: Option<String>,
        at: DateTime<Utc>,
    },
    Erase {
        reason: String,
        at: DateTime<Utc>,
    },
}

impl UserCommand {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Login { .. } => "Login",
            Self::AssignRole { .. } => "AssignRole",
            Self::RevokeRole { .. } => "RevokeRole",
            Self::AcceptTerms { .. } => "AcceptTerms",
            Self::Erase { .. } => "EraseUser",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("no such user")]
    NotFound,
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the user has been erased")]
    Erased,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub exists: bool,
    pub capacity: Option<Capacity>,
    pub profile: Profile,
    pub assigned_roles: Vec<Role>,
    pub terms_accepted: Option<String>,
    pub erased: bool,
    pub last_login: Option<DateTime<Utc>>,
}

impl User {
    /// The roles in force: from the provider's claims and from administrators' assignments.
    pub fn roles(&self) -> Vec<Role> {
        let mut roles = self.profile.claim_roles.clone();
        for role in &self.assigned_roles {
            if !roles.contains(role) {
                roles.push(*role);
            }
        }
        roles.sort();
        roles
    }

    pub fn decide(&self, command: UserCommand, caller: &Caller) -> Result<Vec<UserEvent>, IdentityError> {
        if let UserCommand::Login { profile, at } = command {
            if self.erased {
                return Err(IdentityError::Erased);
            }
            if profile.capacity.is_none() {
                return Err(IdentityError::Invalid(
                    "the login provider did not say in which capacity the user acts".into(),
                ));
            }
            if self.exists && self.capacity != profile.capacity {
                return Err(IdentityError::Invalid(format!(
                    "this login is for a {} user, but the account is a {} account",
                    profile.capacity.map(Capacity::as_str).unwrap_or("?"),
                    self.capacity.map(Capacity::as_str).unwrap_or("?")
                )));
            }
            return Ok(vec![if self.exists {
                UserEvent::UserLoggedIn { profile, at }
            } else {
                UserEvent::UserRegistered { profile, at }
            }]);
        }
        if !self.exists {
            return Err(IdentityError::NotFound);
        }
        if self.erased {
            return Err(IdentityError::Erased);
        }
        let by = format!("user:{}", caller.user_id);
        match command {
            UserCommand::Login { .. } => unreachable!("handled above"),
            UserCommand::AssignRole { role } => {
                if !caller.administrator {
                    return Err(IdentityError::NotAllowed("only administrators may assign roles".into()));
                }
                if role == Role::HearingCreator && self.capacity != Some(Capacity::Employee)
                    || role == Role::Administrator && self.capacity != Some(Capacity::Employee)
                {
                    return Err(IdentityError::Invalid(format!(
                        "the role {role} is for employees; this is a {} account",
                        self.capacity.map(Capacity::as_str).unwrap_or("?")
                    )));
                }
                if self.assigned_roles.contains(&role) {
                    return Ok(vec![]);
                }
                Ok(vec![UserEvent::RoleAssigned { role, by }])
            }
            UserCommand::RevokeRole { role } => {
                if !caller.administrator {
                    return Err(IdentityError::NotAllowed("only administrators may revoke roles".into()));
                }
                if role == Role::Administrator && self.id == caller.user_id.to_string() {
                    return Err(IdentityError::NotAllowed(
                        "administrators cannot revoke their own administrator role; ask another administrator".into(),
                    ));
                }
                if !self.assigned_roles.contains(&role) {
                    if self.profile.claim_roles.contains(&role) {
                        return Err(IdentityError::Invalid(format!(
                            "the role {role} comes from the login provider's claims; change it there"
                        )));
                    }
                    return Ok(vec![]);
                }
                Ok(vec![UserEvent::RoleRevoked { role, by }])
            }
            UserCommand::AcceptTerms { version, in_force, at } => {
                if self.id != caller.user_id.to_string() {
                    return Err(IdentityError::NotAllowed("only the user themself may accept the terms".into()));
                }
                match in_force {
                    None => Err(IdentityError::Invalid("no terms have been published".into())),
                    Some(current) if current != version => Err(IdentityError::Invalid(format!(
                        "version {version:?} of the terms is not the one in force ({current:?})"
                    ))),
                    Some(_) if self.terms_accepted.as_deref() == Some(version.as_str()) => Ok(vec![]),
                    Some(_) => Ok(vec![UserEvent::TermsAccepted { version, at }]),
                }
            }
            UserCommand::Erase { reason, at } => {
                if !(caller.administrator || self.id == caller.user_id.to_string()) {
                    return Err(IdentityError::NotAllowed(
                        "only an administrator or the person themself may erase a user".into(),
                    ));
                }
                let reason = reason.trim().to_string();
                if reason.chars().count() > 1_000 {
                    return Err(IdentityError::Invalid("the reason is at most 1,000 characters".into()));
                }
                Ok(vec![UserEvent::UserErased { by, reason, at }])
            }
        }
    }
}

impl cqrs_es::Aggregate for User {
    const TYPE: &'static str = USER_AGGREGATE;
    type Command = (UserCommand, Caller);
    type Event = UserEvent;
    type Error = IdentityError;
    type Services = ();

    async fn handle(
        &mut self,
        (command, caller): Self::Command,
        _services: &(),
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command, &caller)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            UserEvent::UserRegistered { profile, at } => {
                self.exists = true;
                self.capacity = profile.capacity;
                self.profile = profile;
                self.last_login = Some(at);
            }
            UserEvent::UserLoggedIn { profile, at } => {
                // Every reference the person was ever known by stays, so that an erasure
                // reaches invitations to an address they no longer use.
                let mut references = std::mem::take(&mut self.profile.references);
                for reference in &profile.references {
                    if !references.contains(reference) {
                        references.push(reference.clone());
                    }
                }
                self.profile = profile;
                self.profile.references = references;
                self.last_login = Some(at);
            }
            UserEvent::RoleAssigned { role, .. } => {
                if !self.assigned_roles.contains(&role) {
                    self.assigned_roles.push(role);
                }
            }
            UserEvent::RoleRevoked { role, .. } => self.assigned_roles.retain(|r| *r != role),
            UserEvent::TermsAccepted { version, .. } => self.terms_accepted = Some(version),
            UserEvent::UserErased { .. } => {
                self.erased = true;
                self.assigned_roles.clear();
                self.profile.claim_roles.clear();
                self.profile.name = None;
                self.profile.email = None;
                self.profile.references.clear();
            }
        }
    }
}

pub const COMPANY_AGGREGATE: &str = "identity-company";

/// A company (or other organisation with a CVR number), known by the pseudonym of its CVR
/// number: registered when its first user logs in, joined by each of its users.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Company {
    pub reference: String,
    pub exists: bool,
    /// The name the login broker gives (public, as in the CVR register).
    pub name: Option<String>,
    pub users: Vec<uuid::Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompanyEvent {
    CompanyRegistered { reference: String, name: Option<String> },
    CompanyRenamed { name: String },
    CompanyUserJoined { user_id: uuid::Uuid },
}

impl DomainEvent for CompanyEvent {
    fn event_type(&self) -> String {
        match self {
            Self::CompanyRegistered { .. } => "CompanyRegistered",
            Self::CompanyRenamed { .. } => "CompanyRenamed",
            Self::CompanyUserJoined { .. } => "CompanyUserJoined",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

impl Company {
    /// A user of the company logged in: registers the company the first time, records a new
    /// user and a changed name.
    pub fn user_logged_in(&self, reference: &str, user_id: uuid::Uuid, name: Option<String>) -> Vec<CompanyEvent> {
        let mut events = Vec::new();
        if !self.exists {
            events.push(CompanyEvent::CompanyRegistered { reference: reference.to_string(), name: name.clone() });
        } else if let Some(name) = name.as_ref().filter(|n| self.name.as_ref() != Some(*n)) {
            events.push(CompanyEvent::CompanyRenamed { name: name.clone() });
        }
        if !self.users.contains(&user_id) {
            events.push(CompanyEvent::CompanyUserJoined { user_id });
        }
        events
    }
}

impl cqrs_es::Aggregate for Company {
    const TYPE: &'static str = COMPANY_AGGREGATE;
    type Command = (String, uuid::Uuid, Option<String>);
    type Event = CompanyEvent;
    type Error = IdentityError;
    type Services = ();

    async fn handle(
        &mut self,
        (reference, user_id, name): Self::Command,
        _services: &(),
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.user_logged_in(&reference, user_id, name) {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CompanyEvent::CompanyRegistered { reference, name } => {
                self.exists = true;
                self.reference = reference;
                self.name = name;
            }
            CompanyEvent::CompanyRenamed { name } => self.name = Some(name),
            CompanyEvent::CompanyUserJoined { user_id } => self.users.push(user_id),
        }
    }
}

/// A version of the terms and conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    pub version: String,
    pub text: String,
    pub published_at: DateTime<Utc>,
}

/// Checks a new version of the terms against those already published.
pub fn check_new_terms(version: &str, text: &str, published: &[Terms]) -> Result<(), IdentityError> {
    let version = version.trim();
    if version.is_empty() || version.chars().count() > 50 {
        return Err(IdentityError::Invalid("a terms version is 1 to 50 characters".into()));
    }
    let length = text.trim().chars().count();
    if length == 0 || length > MAX_TERMS_TEXT {
        return Err(IdentityError::Invalid(format!(
            "the terms text is 1 to {MAX_TERMS_TEXT} characters (got {length})"
        )));
    }
    if published.iter().any(|t| t.version == version) {
        return Err(IdentityError::Invalid(format!(
            "version {version:?} of the terms is already published; versions never change"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::Aggregate;
    use uuid::Uuid;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-01T10:00:00Z").map(|t| t.with_timezone(&Utc)).expect("time")
    }

    fn profile(capacity: Capacity) -> Profile {
        Profile { provider: "test".into(), capacity: Some(capacity), name: Some("pii1.x".into()), ..Default::default() }
    }

    fn registered(capacity: Capacity) -> (User, Uuid) {
        let id = Uuid::now_v7();
        let mut user = User { id: id.to_string(), ..Default::default() };
        let me = Caller { user_id: id, administrator: false };
        for e in user.decide(UserCommand::Login { profile: profile(capacity), at: at() }, &me).unwrap() {
            user.apply(e);
        }
        (user, id)
    }

    fn admin() -> Caller {
        Caller { user_id: Uuid::now_v7(), administrator: true }
    }

    #[test]
    fn first_login_registers_later_logins_are_recorded() {
        let (user, id) = registered(Capacity::Citizen);
        assert!(user.exists);
        let me = Caller { user_id: id, administrator: false };
        let events = user.decide(UserCommand::Login { profile: profile(Capacity::Citizen), at: at() }, &me).unwrap();
        assert!(matches!(events[..], [UserEvent::UserLoggedIn { .. }]));
        let err = user.decide(UserCommand::Login { profile: profile(Capacity::Employee), at: at() }, &me).unwrap_err();
        assert!(err.to_string().contains("citizen account"), "{err}");
    }

    #[test]
    fn only_administrators_assign_and_revoke_roles_and_only_to_employees() {
        let (mut employee, id) = registered(Capacity::Employee);
        let me = Caller { user_id: id, administrator: false };
        assert!(matches!(
            employee.decide(UserCommand::AssignRole { role: Role::Administrator }, &me),
            Err(IdentityError::NotAllowed(_))
        ));
        let events = employee.decide(UserCommand::AssignRole { role: Role::HearingCreator }, &admin()).unwrap();
        for e in events {
            employee.apply(e);
        }
        assert_eq!(employee.roles(), vec![Role::HearingCreator]);
        assert!(employee.decide(UserCommand::AssignRole { role: Role::HearingCreator }, &admin()).unwrap().is_empty());

        let (citizen, _) = registered(Capacity::Citizen);
        let err = citizen.decide(UserCommand::AssignRole { role: Role::HearingCreator }, &admin()).unwrap_err();
        assert!(err.to_string().contains("for employees"), "{err}");

        let revoked = employee.decide(UserCommand::RevokeRole { role: Role::HearingCreator }, &admin()).unwrap();
        assert!(matches!(revoked[..], [UserEvent::RoleRevoked { role: Role::HearingCreator, .. }]));
    }

    #[test]
    fn claim_roles_are_changed_at_the_provider_and_admins_keep_their_own_role() {
        let id = Uuid::now_v7();
        let mut user = User { id: id.to_string(), ..Default::default() };
        let mut p = profile(Capacity::Employee);
        p.claim_roles = vec![Role::Administrator];
        for e in user.decide(UserCommand::Login { profile: p, at: at() }, &admin()).unwrap() {
            user.apply(e);
        }
        let err = user.decide(UserCommand::RevokeRole { role: Role::Administrator }, &admin()).unwrap_err();
        assert!(err.to_string().contains("claims"), "{err}");
        for e in user.decide(UserCommand::AssignRole { role: Role::Administrator }, &admin()).unwrap() {
            user.apply(e);
        }
        let myself = Caller { user_id: id, administrator: true };
        assert!(matches!(
            user.decide(UserCommand::RevokeRole { role: Role::Administrator }, &myself),
            Err(IdentityError::NotAllowed(_))
        ));
    }

    #[test]
    fn terms_are_accepted_by_the_user_in_the_version_in_force() {
        let (user, id) = registered(Capacity::Citizen);
        let me = Caller { user_id: id, administrator: false };
        let accept = |version: &str, in_force: Option<&str>, caller: &Caller| {
            user.decide(
                UserCommand::AcceptTerms { version: version.into(), in_force: in_force.map(String::from), at: at() },
                caller,
            )
        };
        assert!(matches!(accept("2", Some("2"), &me).unwrap()[..], [UserEvent::TermsAccepted { .. }]));
        assert!(accept("1", Some("2"), &me).unwrap_err().to_string().contains("not the one in force"));
        assert!(accept("1", None, &me).is_err());
        assert!(matches!(accept("2", Some("2"), &admin()), Err(IdentityError::NotAllowed(_))));
    }

    #[test]
    fn erasure_by_admin_or_self_and_nothing_after_it() {
        let (mut user, id) = registered(Capacity::Citizen);
        let stranger = Caller { user_id: Uuid::now_v7(), administrator: false };
        let erase = UserCommand::Erase { reason: "request".into(), at: at() };
        assert!(matches!(user.decide(erase.clone(), &stranger), Err(IdentityError::NotAllowed(_))));
        let me = Caller { user_id: id, administrator: false };
        for e in user.decide(erase.clone(), &me).unwrap() {
            user.apply(e);
        }
        assert!(user.erased && user.profile.name.is_none());
        assert_eq!(user.decide(erase, &admin()), Err(IdentityError::Erased));
        assert_eq!(
            user.decide(UserCommand::Login { profile: profile(Capacity::Citizen), at: at() }, &me),
            Err(IdentityError::Erased)
        );
    }

    #[test]
    fn a_company_is_registered_by_its_first_user_and_joined_by_the_next() {
        let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
        let mut company = Company::default();
        let events = company.user_logged_in("c1", first, Some("Dorte ApS".into()));
        assert!(matches!(events[..], [CompanyEvent::CompanyRegistered { .. }, CompanyEvent::CompanyUserJoined { .. }]));
        for e in events {
            company.apply(e);
        }
        assert!(company.user_logged_in("c1", first, Some("Dorte ApS".into())).is_empty(), "nothing new");
        let events = company.user_logged_in("c1", second, Some("Dorte Holding ApS".into()));
        assert!(matches!(events[..], [CompanyEvent::CompanyRenamed { .. }, CompanyEvent::CompanyUserJoined { .. }]));
    }

    #[test]
    fn references_of_earlier_logins_are_kept_for_erasure() {
        let (mut user, id) = registered(Capacity::Citizen);
        let me = Caller { user_id: id, administrator: false };
        for address in ["email:old", "email:new"] {
            let profile = Profile { references: vec![address.into()], ..profile(Capacity::Citizen) };
            for e in user.decide(UserCommand::Login { profile, at: at() }, &me).unwrap() {
                user.apply(e);
            }
        }
        assert_eq!(user.profile.references, vec!["email:old".to_string(), "email:new".to_string()]);
    }

    #[test]
    fn terms_versions_never_change() {
        let published = vec![Terms { version: "1".into(), text: "x".into(), published_at: at() }];
        assert!(check_new_terms("2", "Vilkår", &published).is_ok());
        assert!(check_new_terms("1", "Vilkår", &published).unwrap_err().to_string().contains("already published"));
        assert!(check_new_terms(" ", "Vilkår", &published).is_err());
        assert!(check_new_terms("3", "  ", &published).is_err());
    }
}
