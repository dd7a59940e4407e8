//! Who is calling: the principal a token carries.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AuthError;
use crate::error::clip;

/// In which capacity the user acts (the `capacity` claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capacity {
    /// A member of staff of the authority running the hearings.
    Employee,
    /// A private person (signed in with MitID as a citizen).
    Citizen,
    /// A person acting on behalf of a company or organisation.
    Company,
}

impl Capacity {
    /// Every capacity.
    pub const ALL: [Capacity; 3] = [Capacity::Employee, Capacity::Citizen, Capacity::Company];

    /// The claim value: `employee`, `citizen` or `company`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Capacity::Employee => "employee",
            Capacity::Citizen => "citizen",
            Capacity::Company => "company",
        }
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Capacity {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Capacity::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| {
            AuthError::InvalidClaims(format!(
                "unknown capacity {:?} (expected \"employee\", \"citizen\" or \"company\")",
                clip(s)
            ))
        })
    }
}

/// A role granted to a user (an element of the `roles` claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May administer Agora and sees everything.
    Administrator,
    /// May create hearings.
    HearingCreator,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 2] = [Role::Administrator, Role::HearingCreator];

    /// The claim value: `administrator` or `hearing_creator`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Administrator => "administrator",
            Role::HearingCreator => "hearing_creator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            AuthError::InvalidClaims(format!(
                "unknown role {:?} (expected \"administrator\" or \"hearing_creator\")",
                clip(s)
            ))
        })
    }
}

/// The authenticated caller, as carried by a verified token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Pseudonymous user id (the `sub` claim). Never a CPR number.
    pub user_id: Uuid,
    /// In which capacity the user acts.
    pub capacity: Capacity,
    /// Granted roles, without duplicates.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Opaque, pseudonymous company reference for company users. Never a CVR
    /// number in clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// Display name, if the identity provider supplied one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Pseudonymous references by which invitations made before the first login find the user
    /// (`person:<keyed hash of the CPR number>`, `email:<keyed hash>`): the `refs` claim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
}

impl Principal {
    /// A principal with no roles, company or name.
    pub fn new(user_id: Uuid, capacity: Capacity) -> Self {
        Principal { user_id, capacity, roles: Vec::new(), company: None, name: None, references: Vec::new() }
    }

    /// Adds a role (once).
    #[must_use]
    pub fn with_role(mut self, role: Role) -> Self {
        if !self.roles.contains(&role) {
            self.roles.push(role);
        }
        self
    }

    /// Sets the opaque company reference.
    #[must_use]
    pub fn with_company(mut self, company: impl Into<String>) -> Self {
        self.company = Some(company.into());
        self
    }

    /// Sets the display name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a pseudonymous reference (once); one that is not `person:` or `email:` followed by
    /// 32 hex digits is ignored, so that nothing else can ride on this claim.
    #[must_use]
    pub fn with_reference(mut self, reference: impl Into<String>) -> Self {
        let reference = reference.into();
        if is_pseudonymous_reference(&reference) && !self.references.contains(&reference) {
            self.references.push(reference);
        }
        self
    }

    /// Whether the principal holds the given role.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the principal is an administrator.
    pub fn is_administrator(&self) -> bool {
        self.has_role(Role::Administrator)
    }

    /// Whether the principal may create hearings (hearing creators and
    /// administrators).
    pub fn can_create_hearings(&self) -> bool {
        self.has_role(Role::HearingCreator) || self.is_administrator()
    }

    /// Every reference an invitation or membership may name the principal by: `user:<id>`,
    /// `company:<reference>` for a company user, and the pseudonyms of invitations made
    /// before the first login.
    pub fn member_references(&self) -> Vec<String> {
        let mut refs = vec![format!("user:{}", self.user_id)];
        if let Some(company) = &self.company {
            refs.push(format!("company:{company}"));
        }
        refs.extend(self.references.iter().cloned());
        refs
    }

    /// Whether the principal acts as a member of staff.
    pub fn is_employee(&self) -> bool {
        self.capacity == Capacity::Employee
    }

    /// Whether the principal acts as a private citizen.
    pub fn is_citizen(&self) -> bool {
        self.capacity == Capacity::Citizen
    }

    /// Whether the principal acts on behalf of a company.
    pub fn is_company(&self) -> bool {
        self.capacity == Capacity::Company
    }
}

/// `person:` or `email:` followed by 32 lowercase hex digits (a keyed hash, never the value).
pub fn is_pseudonymous_reference(reference: &str) -> bool {
    let hash = reference.strip_prefix("person:").or_else(|| reference.strip_prefix("email:"));
    hash.is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_and_role_serialize_as_snake_case() {
        assert_eq!(serde_json::to_string(&Capacity::Employee).unwrap(), "\"employee\"");
        assert_eq!(serde_json::to_string(&Capacity::Citizen).unwrap(), "\"citizen\"");
        assert_eq!(serde_json::to_string(&Capacity::Company).unwrap(), "\"company\"");
        assert_eq!(serde_json::to_string(&Role::Administrator).unwrap(), "\"administrator\"");
        assert_eq!(serde_json::to_string(&Role::HearingCreator).unwrap(), "\"hearing_creator\"");
        assert_eq!(serde_json::from_str::<Role>("\"hearing_creator\"").unwrap(), Role::HearingCreator);
        assert!(serde_json::from_str::<Capacity>("\"Employee\"").is_err());
        for c in Capacity::ALL {
            assert_eq!(c.as_str().parse::<Capacity>().unwrap(), c);
        }
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn principal_predicates() {
        let p = Principal::new(Uuid::new_v4(), Capacity::Employee)
            .with_role(Role::Administrator)
            .with_role(Role::Administrator);
        assert_eq!(p.roles, vec![Role::Administrator]);
        assert!(p.is_administrator() && p.is_employee() && p.can_create_hearings());
        assert!(!p.has_role(Role::HearingCreator));

        let c = Principal::new(Uuid::new_v4(), Capacity::Citizen);
        assert!(!c.is_administrator() && !c.is_employee() && c.is_citizen());
        assert!(!c.can_create_hearings());
    }

    #[test]
    fn only_pseudonymous_references_are_kept() {
        let hash = "0123456789abcdef0123456789abcdef";
        let p = Principal::new(Uuid::new_v4(), Capacity::Citizen)
            .with_reference(format!("person:{hash}"))
            .with_reference(format!("person:{hash}"))
            .with_reference("person:0101801234")
            .with_reference(format!("user:{hash}"))
            .with_reference(format!("email:{}", hash.to_uppercase()));
        assert_eq!(p.references, vec![format!("person:{hash}")]);
    }

    #[test]
    fn principal_serde_round_trip() {
        let p = Principal::new(Uuid::new_v4(), Capacity::Company).with_company("c-7f3a").with_name("Jens Hansen");
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["capacity"], "company");
        assert_eq!(serde_json::from_value::<Principal>(json).unwrap(), p);
    }
}
