//! Login providers, replaceable per municipality: which provider serves which user type, and
//! how its claims map onto an Agora user. The mapping is pure; [`crate::oidc`] speaks the
//! protocol.

use std::collections::BTreeMap;

use agora_auth::{Capacity, Principal, Role};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// One OpenID Connect provider, as configured (AGORA_LOGIN_PROVIDERS, a JSON list of these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Short id used in the API and in login references: `mitid`, `entra`, …
    pub id: String,
    /// What the login button says.
    #[serde(default)]
    pub display_name: String,
    /// Whom this provider logs in: employee, citizen or company.
    pub capacity: Capacity,
    /// The issuer; its discovery document is read from `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// The client secret itself, or better the name of a variable holding it (`client_secret_env`).
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Where the provider sends the browser back to (the gateway's callback).
    pub redirect_uri: String,
    /// Scopes beyond `openid`.
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub claims: ClaimMapping,
}

/// Which claims carry what. Presets name the claims of the brokers Danish municipalities use;
/// every claim name can be overridden.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimMapping {
    /// `nemlogin` (MitID and MitID Erhverv through the NemLog-in broker), `entra` (Microsoft
    /// Entra ID / AD FS), or empty for the standard OpenID Connect claims.
    pub preset: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub cpr: Option<String>,
    pub cvr: Option<String>,
    pub company_name: Option<String>,
    pub roles: Option<String>,
    /// Claim value → Agora role (`administrator`, `hearing_creator`).
    pub role_values: BTreeMap<String, Role>,
    /// The provider verifies every e-mail address it gives, whatever `email_verified` says.
    pub trust_email: bool,
}

/// The claim names in force for a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNames {
    pub name: String,
    pub email: String,
    pub cpr: Option<String>,
    pub cvr: Option<String>,
    pub company_name: Option<String>,
    pub roles: Option<String>,
}

impl ClaimMapping {
    pub fn names(&self) -> Result<ClaimNames, String> {
        let base = match self.preset.as_str() {
            "" | "standard" => ClaimNames {
                name: "name".into(),
                email: "email".into(),
                cpr: None,
                cvr: None,
                company_name: None,
                roles: None,
            },
            // NemLog-in's OIDC claims follow the OIOSAML 3 attribute names.
            "nemlogin" => ClaimNames {
                name: "https://data.gov.dk/model/core/eid/fullName".into(),
                email: "https://data.gov.dk/model/core/eid/email".into(),
                cpr: Some("https://data.gov.dk/model/core/eid/cprNumber".into()),
                cvr: Some("https://data.gov.dk/model/core/eid/professional/cvr".into()),
                company_name: Some("https://data.gov.dk/model/core/eid/professional/orgName".into()),
                roles: None,
            },
            "entra" => ClaimNames {
                name: "name".into(),
                email: "preferred_username".into(),
                cpr: None,
                cvr: None,
                company_name: None,
                roles: Some("roles".into()),
            },
            other => return Err(format!("unknown claim preset {other:?} (use nemlogin, entra or standard)")),
        };
        Ok(ClaimNames {
            name: self.name.clone().unwrap_or(base.name),
            email: self.email.clone().unwrap_or(base.email),
            cpr: self.cpr.clone().or(base.cpr),
            cvr: self.cvr.clone().or(base.cvr),
            company_name: self.company_name.clone().or(base.company_name),
            roles: self.roles.clone().or(base.roles),
        })
    }
}

/// What a provider's verified claims say about the person, before pseudonyms and sealing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Claims {
    pub provider: String,
    pub subject: String,
    pub capacity: Option<Capacity>,
    pub name: Option<String>,
    pub email: Option<String>,
    /// Digits only.
    pub cpr: Option<String>,
    /// Digits only.
    pub cvr: Option<String>,
    pub company_name: Option<String>,
    /// The provider vouches for the e-mail address (`email_verified`, or a broker configured
    /// as verifying): only then may invitations to it find the person.
    pub email_verified: bool,
    pub roles: Vec<Role>,
    /// `da` or `en`, from the standard `locale` claim when the provider gives one.
    pub language: Option<String>,
}

fn claim_text(claims: &Value, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn digits(value: &str) -> String {
    value.chars().filter(char::is_ascii_digit).collect()
}

/// The digits of a national number in claim `name`, if the mapping names one and it is there.
fn number_claim(claims: &Value, name: Option<&str>, length: usize, what: &str) -> Result<Option<String>, String> {
    let Some((claim, value)) = name.and_then(|claim| claim_text(claims, claim).map(|v| (claim, v))) else {
        return Ok(None);
    };
    let number = digits(&value);
    if number.len() != length {
        return Err(format!("claim {claim} is not a {what} number ({length} digits)"));
    }
    Ok(Some(number))
}

/// Maps a provider's verified ID-token claims onto what Agora keeps. Refuses a company login
/// without a CVR number and a malformed CPR or CVR number, naming the claim.
pub fn map_claims(config: &ProviderConfig, claims: &Value) -> Result<Claims, String> {
    let names = config.claims.names()?;
    let subject = claim_text(claims, "sub").ok_or("the ID token has no subject (sub)")?;
    let cpr = number_claim(claims, names.cpr.as_deref(), 10, "CPR")?;
    let cvr = number_claim(claims, names.cvr.as_deref(), 8, "CVR")?;
    if config.capacity == Capacity::Company && cvr.is_none() {
        return Err(format!(
            "a company login needs the CVR number, and the claim {} is missing",
            names.cvr.as_deref().unwrap_or("cvr (set claims.cvr)")
        ));
    }
    let mut roles = Vec::new();
    if let Some(claim) = &names.roles {
        let values: Vec<String> = match claims.get(claim) {
            Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            Some(Value::String(s)) => s.split_whitespace().map(String::from).collect(),
            _ => Vec::new(),
        };
        for value in values {
            if let Some(role) = config.claims.role_values.get(&value)
                && !roles.contains(role)
            {
                roles.push(*role);
            }
        }
    }
    if config.capacity != Capacity::Employee {
        // Roles are for staff, whatever a provider says.
        roles.clear();
    }
    Ok(Claims {
        provider: config.id.clone(),
        subject,
        capacity: Some(config.capacity),
        name: claim_text(claims, &names.name),
        email: claim_text(claims, &names.email).filter(|e| e.contains('@')),
        cpr,
        company_name: cvr.as_ref().and(names.company_name.as_deref()).and_then(|claim| claim_text(claims, claim)),
        email_verified: config.claims.trust_email || claims.get("email_verified") == Some(&Value::Bool(true)),
        cvr,
        roles,
        language: language_of(claims),
    })
}

/// The person's language from the OIDC `locale` claim (`en-GB`, `da`): English or Danish.
fn language_of(claims: &Value) -> Option<String> {
    let locale = claim_text(claims, "locale")?.to_lowercase();
    Some(if locale.starts_with("en") { "en" } else { "da" }.to_string())
}

/// A user of the development login.
#[derive(Debug, Clone)]
pub struct DemoUser {
    pub handle: &'static str,
    pub name: &'static str,
    pub principal: Principal,
    /// The demo company's CVR number, for the company user.
    pub cvr: Option<&'static str>,
}

fn demo_id(n: u128) -> Uuid {
    // Fixed ids so that demo data names its owners and survives a restart.
    Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_0000 | n)
}

/// The development login's demo users: an administrator, two caseworkers, an employee, two
/// citizens and a company user.
pub fn demo_users() -> Vec<DemoUser> {
    let employee = |n, name: &'static str| Principal::new(demo_id(n), Capacity::Employee).with_name(name);
    let user = |handle, name, principal, cvr| DemoUser { handle, name, principal, cvr };
    vec![
        user(
            "admin",
            "Anne Administrator",
            employee(1, "Anne Administrator").with_role(Role::Administrator).with_role(Role::HearingCreator),
            None,
        ),
        user("karen", "Karen Sagsbehandler", employee(2, "Karen Sagsbehandler").with_role(Role::HearingCreator), None),
        user("lars", "Lars Sagsbehandler", employee(3, "Lars Sagsbehandler").with_role(Role::HearingCreator), None),
        user("erik", "Erik Medarbejder", employee(4, "Erik Medarbejder"), None),
        user(
            "birgitte",
            "Birgitte Borger",
            Principal::new(demo_id(5), Capacity::Citizen).with_name("Birgitte Borger"),
            None,
        ),
        user("carl", "Carl Citizen", Principal::new(demo_id(6), Capacity::Citizen).with_name("Carl Citizen"), None),
        user(
            "dorte",
            "Dorte Virksomhed",
            Principal::new(demo_id(7), Capacity::Company).with_name("Dorte Virksomhed"),
            Some("12345678"),
        ),
    ]
}

pub fn demo_user(handle: &str) -> Option<DemoUser> {
    demo_users().into_iter().find(|u| u.handle == handle)
}

/// What the development provider's claims say of a demo user.
pub fn demo_claims(user: &DemoUser) -> Claims {
    Claims {
        provider: "dev".into(),
        subject: user.handle.into(),
        capacity: Some(user.principal.capacity),
        name: Some(user.name.into()),
        email: Some(format!("{}@demo.agora.invalid", user.handle)),
        cpr: None,
        cvr: user.cvr.map(String::from),
        company_name: user.cvr.map(|_| "Demo Virksomhed ApS".to_string()),
        email_verified: true,
        language: None,
        roles: user.principal.roles.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(capacity: Capacity, claims: ClaimMapping) -> ProviderConfig {
        ProviderConfig {
            id: "p".into(),
            display_name: String::new(),
            capacity,
            issuer: "https://id.example".into(),
            client_id: "agora".into(),
            client_secret: None,
            client_secret_env: None,
            redirect_uri: "https://agora.example/callback".into(),
            scopes: vec![],
            claims,
        }
    }

    #[test]
    fn nemlogin_claims_give_pseudonymisable_numbers_and_names() {
        let mapping = ClaimMapping { preset: "nemlogin".into(), ..Default::default() };
        let c = config(Capacity::Company, mapping);
        let claims = json!({
            "sub": "abc",
            "https://data.gov.dk/model/core/eid/fullName": "Dorte Hansen",
            "https://data.gov.dk/model/core/eid/cprNumber": "010180-1234",
            "https://data.gov.dk/model/core/eid/professional/cvr": "DK 1234 5678",
        });
        let mapped = map_claims(&c, &claims).unwrap();
        assert_eq!(mapped.cpr.as_deref(), Some("0101801234"));
        assert_eq!(mapped.cvr.as_deref(), Some("12345678"));
        assert_eq!(mapped.name.as_deref(), Some("Dorte Hansen"));
        assert_eq!(mapped.capacity, Some(Capacity::Company));
    }

    #[test]
    fn company_logins_need_a_cvr_and_bad_numbers_are_named() {
        let c = config(Capacity::Company, ClaimMapping { preset: "nemlogin".into(), ..Default::default() });
        let err = map_claims(&c, &json!({"sub": "x"})).unwrap_err();
        assert!(err.contains("CVR"), "{err}");
        let err =
            map_claims(&c, &json!({"sub": "x", "https://data.gov.dk/model/core/eid/cprNumber": "12"})).unwrap_err();
        assert!(err.contains("cprNumber") && err.contains("10 digits"), "{err}");
        assert!(map_claims(&c, &json!({"name": "no subject"})).unwrap_err().contains("sub"));
    }

    #[test]
    fn roles_come_from_mapped_claim_values_and_only_for_employees() {
        let mapping = ClaimMapping {
            preset: "entra".into(),
            role_values: [("Agora.Admin".to_string(), Role::Administrator)].into(),
            ..Default::default()
        };
        let claims = json!({"sub": "e1", "roles": ["Agora.Admin", "Other"], "preferred_username": "k@kk.dk"});
        let employee = map_claims(&config(Capacity::Employee, mapping.clone()), &claims).unwrap();
        assert_eq!(employee.roles, vec![Role::Administrator]);
        assert_eq!(employee.email.as_deref(), Some("k@kk.dk"));
        let citizen = map_claims(&config(Capacity::Citizen, mapping.clone()), &claims).unwrap();
        assert!(citizen.roles.is_empty());
        assert_eq!(citizen.language, None, "no locale claim: the portal's default");
        let english = json!({"sub": "e2", "locale": "en-GB"});
        assert_eq!(map_claims(&config(Capacity::Citizen, mapping), &english).unwrap().language.as_deref(), Some("en"));
        let unknown = ClaimMapping { preset: "saml".into(), ..Default::default() };
        assert!(map_claims(&config(Capacity::Citizen, unknown), &claims).unwrap_err().contains("unknown claim preset"));
    }

    #[test]
    fn demo_users_keep_their_fixed_ids() {
        let karen = demo_user("karen").unwrap();
        assert_eq!(karen.principal.user_id.to_string(), "00000000-0000-7000-8000-000000000002");
        assert!(karen.principal.can_create_hearings());
        assert!(demo_user("mallory").is_none());
    }

    #[test]
    fn an_email_address_counts_only_when_the_provider_vouches_for_it() {
        let plain = config(Capacity::Citizen, ClaimMapping::default());
        let unverified = map_claims(&plain, &json!({"sub": "x", "email": "a@b.dk"})).unwrap();
        assert!(!unverified.email_verified);
        let verified = map_claims(&plain, &json!({"sub": "x", "email": "a@b.dk", "email_verified": true})).unwrap();
        assert!(verified.email_verified);
        let trusted = config(Capacity::Citizen, ClaimMapping { trust_email: true, ..Default::default() });
        assert!(map_claims(&trusted, &json!({"sub": "x", "email": "a@b.dk"})).unwrap().email_verified);
    }
}
