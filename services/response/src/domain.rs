//! Responses and the rules for accepting them. Pure: time and the hearing's state come in.

use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// What the response service knows of a hearing, learnt from the hearing service's
/// integration events (never from its tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HearingTerms {
    pub hearing_id: Uuid,
    /// The hearing's status as the hearing service names it (`Active`, `AwaitingConclusion`, …).
    pub status: String,
    pub closes_at: Option<DateTime<Utc>>,
    pub owner_id: String,
}

/// On whose behalf a response is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OnBehalfOf {
    /// The logged-in company user's company (a pseudonymous reference, never the CVR).
    Company { reference: String },
    /// An organisation, as the respondent names it.
    Organisation { name: String },
}

/// A response as submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// Chosen by the client; a retry with the same key gets the first receipt.
    pub idempotency_key: String,
    pub hearing_id: Uuid,
    /// Pseudonymous author (`user:<id>`).
    pub author: String,
    pub on_behalf_of: Option<OnBehalfOf>,
    pub text: String,
    /// The version of the terms the respondent accepted.
    pub terms_version: String,
    /// A paper or e-mail response registered by the owner.
    pub registered_by_owner: bool,
}

impl Submission {
    /// SHA-256 of what was submitted, in a fixed form: the receipt's proof of content.
    pub fn content_sha256(&self) -> String {
        let canonical = serde_json::json!({
            "hearing_id": self.hearing_id,
            "text": self.text,
            "on_behalf_of": self.on_behalf_of,
            "terms_version": self.terms_version,
        });
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

/// Proof that a response was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub response_id: Uuid,
    pub hearing_id: Uuid,
    /// The hearing's running response number: gapless, in acceptance order.
    pub number: i64,
    pub content_sha256: String,
    /// Server time of acceptance, before the deadline.
    pub accepted_at: DateTime<Utc>,
}

pub const MAX_TEXT: usize = 50_000;
pub const MAX_KEY: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    #[error("no hearing {0} accepts responses")]
    HearingNotFound(Uuid),
    #[error("the hearing closed for responses at {}", .0.to_rfc3339_opts(SecondsFormat::Secs, true))]
    HearingClosed(DateTime<Utc>),
    #[error("the hearing does not accept responses in state {0}")]
    NotAcceptingResponses(String),
    #[error("only the hearing's owner may register a paper or e-mail response")]
    NotOwner,
    #[error("invalid response: {0}")]
    Invalid(String),
    #[error("the idempotency key was used before for a different response")]
    KeyReused,
    #[error("the service is busy; retry with the same idempotency key in {retry_after_ms} ms")]
    Busy { retry_after_ms: u64 },
    #[error("the response could not be stored; retry with the same idempotency key: {0}")]
    Storage(String),
}

/// Whether a submission may be accepted at `now`.
pub fn check(terms: &HearingTerms, submission: &Submission, now: DateTime<Utc>) -> Result<(), IntakeError> {
    let text = submission.text.trim();
    if text.is_empty() {
        return Err(IntakeError::Invalid("the text is empty".into()));
    }
    let length = text.chars().count();
    if length > MAX_TEXT {
        return Err(IntakeError::Invalid(format!("the text is {length} characters; at most {MAX_TEXT} are allowed")));
    }
    if submission.terms_version.trim().is_empty() {
        return Err(IntakeError::Invalid("the accepted terms version is missing".into()));
    }
    if let Some(OnBehalfOf::Organisation { name }) = &submission.on_behalf_of
        && name.trim().is_empty()
    {
        return Err(IntakeError::Invalid("the organisation has no name".into()));
    }
    let closed = terms.closes_at.filter(|closes_at| now >= *closes_at);
    match (terms.status.as_str(), submission.registered_by_owner) {
        // The status may lag the clock by a scheduler tick: the deadline itself decides.
        ("Active", _) => match closed {
            Some(at) if !submission.registered_by_owner => Err(IntakeError::HearingClosed(at)),
            _ => Ok(()),
        },
        ("AwaitingConclusion", true) if submission.author == terms.owner_id => Ok(()),
        ("AwaitingConclusion", true) => Err(IntakeError::NotOwner),
        ("AwaitingConclusion", false) => Err(IntakeError::HearingClosed(terms.closes_at.unwrap_or(now))),
        (status, _) => Err(IntakeError::NotAcceptingResponses(status.to_string())),
    }
}

/// Events of a response's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ResponseEvent {
    ResponseSubmitted {
        hearing_id: Uuid,
        number: i64,
        author: String,
        on_behalf_of: Option<OnBehalfOf>,
        text: String,
        terms_version: String,
        content_sha256: String,
        accepted_at: DateTime<Utc>,
        registered_by_owner: bool,
    },
}

impl DomainEvent for ResponseEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ResponseSubmitted { .. } => "ResponseSubmitted".into(),
        }
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

pub const AGGREGATE_TYPE: &str = "response";

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).expect("time")
    }

    fn terms(status: &str) -> HearingTerms {
        HearingTerms {
            hearing_id: Uuid::nil(),
            status: status.into(),
            closes_at: Some(at("2026-12-20T23:00:00Z")),
            owner_id: "user:owner".into(),
        }
    }

    fn submission(text: &str) -> Submission {
        Submission {
            idempotency_key: "k".into(),
            hearing_id: Uuid::nil(),
            author: "user:a".into(),
            on_behalf_of: None,
            text: text.into(),
            terms_version: "2026-01".into(),
            registered_by_owner: false,
        }
    }

    #[test]
    fn a_moment_after_the_deadline_is_refused_naming_the_time() {
        let before = check(&terms("Active"), &submission("Svar"), at("2026-12-20T22:59:59Z"));
        assert_eq!(before, Ok(()));
        let after = check(&terms("Active"), &submission("Svar"), at("2026-12-20T23:00:01Z"));
        assert_eq!(
            after.map_err(|e| e.to_string()),
            Err("the hearing closed for responses at 2026-12-20T23:00:00Z".to_string())
        );
    }

    #[test]
    fn only_the_owner_registers_paper_responses_after_the_deadline() {
        let mut paper = submission("Brev");
        paper.registered_by_owner = true;
        assert_eq!(
            check(&terms("AwaitingConclusion",), &paper, at("2026-12-22T10:00:00Z")),
            Err(IntakeError::NotOwner)
        );
        paper.author = "user:owner".into();
        assert_eq!(check(&terms("AwaitingConclusion"), &paper, at("2026-12-22T10:00:00Z")), Ok(()));
        assert!(matches!(
            check(&terms("AwaitingConclusion"), &submission("x"), at("2026-12-22T10:00:00Z")),
            Err(IntakeError::HearingClosed(_))
        ));
    }

    #[test]
    fn each_bad_input_has_its_own_error() {
        let now = at("2026-12-01T10:00:00Z");
        assert!(
            matches!(check(&terms("Active"), &submission("   "), now), Err(IntakeError::Invalid(m)) if m.contains("empty"))
        );
        let long = "x".repeat(MAX_TEXT + 1);
        assert!(
            matches!(check(&terms("Active"), &submission(&long), now), Err(IntakeError::Invalid(m)) if m.contains("at most"))
        );
        assert_eq!(
            check(&terms("Draft"), &submission("x"), now),
            Err(IntakeError::NotAcceptingResponses("Draft".into()))
        );
        let mut org = submission("x");
        org.on_behalf_of = Some(OnBehalfOf::Organisation { name: " ".into() });
        assert!(matches!(check(&terms("Active"), &org, now), Err(IntakeError::Invalid(_))));
    }

    #[test]
    fn the_content_hash_covers_what_was_said() {
        let a = submission("Jeg er imod planen.");
        let mut b = a.clone();
        b.idempotency_key = "other".into();
        assert_eq!(a.content_sha256(), b.content_sha256(), "the key is not content");
        b.text = "Jeg er for planen.".into();
        assert_ne!(a.content_sha256(), b.content_sha256());
    }
}
