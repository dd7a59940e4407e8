//! Responses and the rules for accepting them. Pure: time and the hearing's state come in.

use agora_auth::Principal;
use agora_auth::visibility::{HearingFacts, can_see_hearing};
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
    /// The colleagues the owner named as reviewers (`user:<id>`).
    pub reviewers: Vec<String>,
    /// The owner's choice: responses are approved at once (unless something sensitive is found).
    pub auto_approve: bool,
    /// The owner's choice: approved responses are shown to the public at all.
    pub public: bool,
    /// What a response may carry, from the hearing's type.
    pub rules: ResponseRules,
    /// For the municipality's staff (and those invited) only.
    pub internal: bool,
    /// For those invited only.
    pub closed: bool,
}

impl HearingTerms {
    /// What the visibility rules need to know of this hearing for `viewer`.
    fn facts(&self, viewer: Option<&Principal>, invited: bool) -> HearingFacts {
        let references = viewer.map(Principal::member_references).unwrap_or_default();
        HearingFacts {
            published: matches!(
                self.status.as_str(),
                "AwaitingStartDate" | "Active" | "AwaitingConclusion" | "Concluded"
            ),
            closed: self.closed,
            internal: self.internal,
            viewer_is_owner: references.contains(&self.owner_id),
            viewer_is_reviewer: references.iter().any(|r| self.reviewers.contains(r)),
            viewer_is_invitee: invited,
        }
    }
}

/// Whether `viewer` (`None`: the public) may see the hearing, and so respond to it and read
/// its responses (`agora_auth::visibility`'s rules); `invited` is asked only when nothing else
/// lets them.
pub fn may_see(terms: &HearingTerms, viewer: Option<&Principal>, invited: impl FnOnce() -> bool) -> bool {
    let facts = terms.facts(viewer, false);
    can_see_hearing(viewer, &facts)
        || (viewer.is_some() && can_see_hearing(viewer, &HearingFacts { viewer_is_invitee: invited(), ..facts }))
}

pub use agora_files::ResponseRules;

/// What the owner's exports show of a hearing, as the hearing's last event told it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HearingContent {
    pub title: String,
    pub status: String,
    pub start_date: String,
    pub deadline: String,
    pub kle_number: String,
    pub case_number: String,
    pub texts: Vec<HearingText>,
    /// The names of the hearing's documents.
    pub documents: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HearingText {
    pub key: String,
    pub label: String,
    pub text: String,
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
    /// Files as sent; checked, scanned and stored before the response is queued.
    pub attachments: Vec<crate::files::Upload>,
    /// Who sends it: a hearing they may not see takes nothing from them.
    pub respondent: Principal,
}

impl Submission {
    /// SHA-256 of what was submitted, in a fixed form: the receipt's proof of content.
    pub fn content_sha256(&self) -> String {
        let files: Vec<String> = self.attachments.iter().map(|f| hex::encode(Sha256::digest(&f.content))).collect();
        let canonical = serde_json::json!({
            "hearing_id": self.hearing_id,
            "text": self.text,
            "on_behalf_of": self.on_behalf_of,
            "terms_version": self.terms_version,
            "files": files,
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

pub const MAX_REPLY: usize = 10_000;
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

/// Whether a response's text keeps the hearing type's rules.
pub fn check_text(rules: &ResponseRules, text: &str, has_attachments: bool) -> Result<(), String> {
    let text = text.trim();
    if text.is_empty() {
        return match (rules.text_optional, has_attachments) {
            (true, true) => Ok(()),
            (true, false) => Err("the response is empty: write a text or attach a file".into()),
            (false, _) => Err("the text is empty; responses to this hearing need a text".into()),
        };
    }
    let length = text.chars().count();
    let max = rules.max_text_chars as usize;
    if length > max {
        return Err(format!("the text is {length} characters; at most {max} are allowed"));
    }
    Ok(())
}

/// Whether a submission may be accepted at `now`.
pub fn check(terms: &HearingTerms, submission: &Submission, now: DateTime<Utc>) -> Result<(), IntakeError> {
    check_text(&terms.rules, &submission.text, !submission.attachments.is_empty()).map_err(IntakeError::Invalid)?;
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
        #[serde(default)]
        attachments: Vec<crate::files::Attachment>,
        /// Approved at once when the hearing auto-approves and nothing sensitive was found.
        #[serde(default)]
        status: ModerationStatus,
        #[serde(default)]
        sensitive: bool,
    },
    /// A new text; the earlier one stays in the log.
    ResponseEdited {
        text: String,
        content_sha256: String,
        at: DateTime<Utc>,
        status: ModerationStatus,
        sensitive: bool,
    },
    ResponseWithdrawn {
        at: DateTime<Utc>,
    },
    /// Approving clears an earlier decline.
    ResponseApproved {
        by: String,
    },
    ResponseDeclined {
        by: String,
        reason: String,
    },
    /// The public sees `text`; the original stays sealed in the log.
    ResponseRedacted {
        by: String,
        text: String,
        reason: String,
    },
    ResponseReplied {
        by: String,
        text: String,
    },
}

impl DomainEvent for ResponseEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ResponseSubmitted { .. } => "ResponseSubmitted",
            Self::ResponseEdited { .. } => "ResponseEdited",
            Self::ResponseWithdrawn { .. } => "ResponseWithdrawn",
            Self::ResponseApproved { .. } => "ResponseApproved",
            Self::ResponseDeclined { .. } => "ResponseDeclined",
            Self::ResponseRedacted { .. } => "ResponseRedacted",
            Self::ResponseReplied { .. } => "ResponseReplied",
        }
        .into()
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
            reviewers: Vec::new(),
            auto_approve: false,
            public: true,
            rules: ResponseRules::default(),
            internal: false,
            closed: false,
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
            attachments: Vec::new(),
            respondent: Principal::new(Uuid::nil(), agora_auth::Capacity::Citizen),
        }
    }

    fn person(n: u128, capacity: agora_auth::Capacity) -> Principal {
        Principal::new(Uuid::from_u128(n), capacity)
    }

    fn reference(principal: &Principal) -> String {
        format!("user:{}", principal.user_id)
    }

    #[test]
    fn a_closed_internal_hearing_is_seen_by_its_staff_and_invitees_only() {
        use agora_auth::Capacity::{Citizen, Employee};
        let (owner, reviewer, colleague, citizen) =
            (person(1, Employee), person(2, Employee), person(3, Employee), person(4, Citizen));
        let administrator = person(5, Employee).with_role(agora_auth::Role::Administrator);
        let hearing = HearingTerms {
            internal: true,
            closed: true,
            owner_id: reference(&owner),
            reviewers: vec![reference(&reviewer)],
            ..terms("Active")
        };
        assert!(!may_see(&hearing, None, || true), "the public never, whatever an invitation says");
        assert!(!may_see(&hearing, Some(&citizen), || false));
        assert!(!may_see(&hearing, Some(&colleague), || false), "closed: not every employee");
        assert!(may_see(&hearing, Some(&colleague), || true), "an invited employee");
        assert!(may_see(&hearing, Some(&citizen), || true), "an invited citizen");
        for staff in [&owner, &reviewer, &administrator] {
            assert!(may_see(&hearing, Some(staff), || panic!("not asked for its staff")), "{staff:?}");
        }
        let draft = HearingTerms { status: "Draft".into(), ..hearing };
        assert!(!may_see(&draft, Some(&citizen), || true), "an invitee sees it once it is published");
        assert!(may_see(&draft, Some(&owner), || false));
    }

    #[test]
    fn an_open_internal_hearing_is_seen_by_every_employee_and_an_external_one_by_everyone() {
        use agora_auth::Capacity::{Citizen, Employee};
        let internal = HearingTerms { internal: true, ..terms("Active") };
        assert!(may_see(&internal, Some(&person(3, Employee)), || false));
        assert!(!may_see(&internal, Some(&person(4, Citizen)), || false));
        assert!(!may_see(&internal, None, || false));
        let external = terms("Active");
        assert!(may_see(&external, None, || false));
        assert!(may_see(&external, Some(&person(4, Citizen)), || panic!("not asked")));
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
        let long = "x".repeat(50_001);
        assert_eq!(
            check(&terms("Active"), &submission(&long), now),
            Err(IntakeError::Invalid("the text is 50001 characters; at most 50000 are allowed".into()))
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
    fn text_limits_come_from_the_hearing_type() {
        let now = at("2026-12-01T10:00:00Z");
        let mut short = terms("Active");
        short.rules.max_text_chars = 10;
        assert_eq!(check(&short, &submission("0123456789"), now), Ok(()));
        assert_eq!(
            check(&short, &submission("0123456789x"), now),
            Err(IntakeError::Invalid("the text is 11 characters; at most 10 are allowed".into()))
        );
        let mut files_only = submission("");
        files_only.attachments.push(crate::files::Upload { name: "a.pdf".into(), content: "%PDF".into() });
        assert!(matches!(check(&short, &files_only, now), Err(IntakeError::Invalid(m)) if m.contains("need a text")));
        short.rules.text_optional = true;
        assert_eq!(check(&short, &files_only, now), Ok(()));
        assert!(
            matches!(check(&short, &submission(" "), now), Err(IntakeError::Invalid(m)) if m.contains("attach a file"))
        );
    }

    #[test]
    fn cpr_numbers_are_found_by_date_and_modulus() {
        // 070761-4285 passes modulus 11; 010180-1234 does not and was born before 2007.
        assert!(contains_cpr_number("Mit CPR er 070761-4285, ring gerne."));
        assert!(contains_cpr_number("0707614285"));
        assert!(!contains_cpr_number("Sagsnummer 0101801234 er nævnt."));
        assert!(!contains_cpr_number("Telefon 3212 3456 og 12345678"), "a phone number is not a CPR number");
        assert!(!contains_cpr_number("320161-4285"), "no 32nd day");
        assert!(contains_cpr_number("Barnet er født 011008-4003"), "from October 2007 the modulus is not required");
        assert!(!contains_cpr_number("12070761428599"), "part of a longer number");
    }

    fn response(status: ModerationStatus) -> Response {
        Response { exists: true, author: "user:a".into(), text: "Svar".into(), status, ..Response::default() }
    }

    fn actor(reference: &str) -> Actor {
        Actor { reference: reference.into(), administrator: false }
    }

    #[test]
    fn the_author_edits_and_withdraws_only_while_active() {
        let r = response(ModerationStatus::Approved);
        let now = at("2026-12-01T10:00:00Z");
        let edit = |text: &str| ResponseCommand::Edit { text: text.into(), now, auto_approve: false };
        assert!(matches!(
            r.decide(edit("Nyt svar"), &actor("user:b"), &terms("Active")),
            Err(ResponseError::NotAllowed(_))
        ));
        let events = r.decide(edit("Nyt svar"), &actor("user:a"), &terms("Active")).expect("edit");
        assert!(
            matches!(&events[0], ResponseEvent::ResponseEdited { status: ModerationStatus::Pending, .. }),
            "manual moderation again"
        );
        let late = ResponseCommand::Withdraw { now: at("2026-12-21T00:00:00Z") };
        assert!(matches!(r.decide(late, &actor("user:a"), &terms("Active")), Err(ResponseError::HearingClosed(_))));
        assert!(matches!(
            r.decide(ResponseCommand::Withdraw { now }, &actor("user:a"), &terms("AwaitingConclusion")),
            Err(ResponseError::NotAllowed(_))
        ));
    }

    #[test]
    fn moderation_needs_the_owner_and_a_reason() {
        let r = response(ModerationStatus::Pending);
        let owner = actor("user:owner");
        assert!(matches!(
            r.decide(ResponseCommand::Approve, &actor("user:a"), &terms("Active")),
            Err(ResponseError::NotAllowed(_))
        ));
        let decline = ResponseCommand::Decline { reason: " ".into() };
        assert!(matches!(r.decide(decline, &owner, &terms("Active")), Err(ResponseError::Invalid(_))));
        let mut r = r;
        for e in r
            .decide(ResponseCommand::Decline { reason: "Injurierende".into() }, &owner, &terms("Active"))
            .expect("decline")
        {
            cqrs_es::Aggregate::apply(&mut r, e);
        }
        assert_eq!((r.status, r.decline_reason.as_deref()), (ModerationStatus::Declined, Some("Injurierende")));
        for e in r.decide(ResponseCommand::Approve, &owner, &terms("Active")).expect("approve") {
            cqrs_es::Aggregate::apply(&mut r, e);
        }
        assert_eq!(
            (r.status, r.decline_reason.as_deref()),
            (ModerationStatus::Approved, None),
            "re-approving clears the decline"
        );
        let redact = ResponseCommand::Redact { text: "Svar [fjernet]".into(), reason: "Personoplysninger".into() };
        for e in r.decide(redact, &owner, &terms("Concluded")).expect("redact") {
            cqrs_es::Aggregate::apply(&mut r, e);
        }
        assert_eq!(r.public_text(), "Svar [fjernet]");
        assert_eq!(r.text, "Svar", "the original stays for those allowed to see it");
        let reply = |text: &str| ResponseCommand::Reply { text: text.into() };
        assert!(matches!(
            r.decide(reply("Tak"), &actor("user:a"), &terms("Active")),
            Err(ResponseError::NotAllowed(_))
        ));
        assert!(matches!(r.decide(reply(""), &owner, &terms("Active")), Err(ResponseError::Invalid(_))));
        for e in r.decide(reply("Tak for dit svar."), &owner, &terms("Concluded")).expect("reply") {
            cqrs_es::Aggregate::apply(&mut r, e);
        }
        assert_eq!(r.reply.as_deref(), Some("Tak for dit svar."));
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

/// Where a response stands in moderation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ModerationStatus {
    #[default]
    Pending,
    Approved,
    Declined,
    Withdrawn,
}

impl ModerationStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Approved => "Approved",
            Self::Declined => "Declined",
            Self::Withdrawn => "Withdrawn",
        }
    }
}

/// Whether a text looks like it holds a CPR number: ten digits (ddmmyy-xxxx) forming a real
/// date, passing the modulus-11 check, or born from 1 October 2007 on, when numbers without
/// it were issued. Such a response waits for a person, whatever the auto-approve setting.
pub fn contains_cpr_number(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    (0..chars.len()).any(|start| cpr_at(&chars, start).is_some_and(|digits| plausible_cpr(&digits)))
}

/// The ten digits of a number that starts at `start` and stands alone (ddmmyy, an optional
/// dash or space, xxxx).
fn cpr_at(chars: &[char], start: usize) -> Option<Vec<u32>> {
    if !chars[start].is_ascii_digit() || (start > 0 && chars[start - 1].is_ascii_digit()) {
        return None;
    }
    let mut digits = Vec::with_capacity(10);
    let mut end = start;
    while end < chars.len() && digits.len() < 10 {
        match chars[end] {
            c if c.is_ascii_digit() => digits.push(c.to_digit(10)?),
            '-' | ' ' if digits.len() == 6 && end > start && chars[end - 1].is_ascii_digit() => {}
            _ => break,
        }
        end += 1;
    }
    let stands_alone = end >= chars.len() || !chars[end].is_ascii_digit();
    (digits.len() == 10 && stands_alone).then_some(digits)
}

fn plausible_cpr(d: &[u32]) -> bool {
    let day = d[0] * 10 + d[1];
    let month = d[2] * 10 + d[3];
    let year = d[4] * 10 + d[5];
    // The seventh digit and the year give the century (CPR rules).
    let century = match (d[6], year) {
        (0..=3, _) => 1900,
        (4 | 9, 0..=36) => 2000,
        (4 | 9, _) => 1900,
        (5..=8, 0..=57) => 2000,
        (5..=8, _) => 1800,
        _ => return false,
    };
    let Some(born) = chrono::NaiveDate::from_ymd_opt((century + year) as i32, month, day) else { return false };
    let weights = [4, 3, 2, 7, 6, 5, 4, 3, 2, 1];
    let modulus_ok = d.iter().zip(weights).map(|(digit, w)| digit * w).sum::<u32>() % 11 == 0;
    let without_modulus = chrono::NaiveDate::from_ymd_opt(2007, 10, 1).is_some_and(|from| born >= from);
    modulus_ok || without_modulus
}

/// Who acts on a response, as the service knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `user:<id>`
    pub reference: String,
    pub administrator: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseCommand {
    Edit {
        text: String,
        now: DateTime<Utc>,
        auto_approve: bool,
    },
    Withdraw {
        now: DateTime<Utc>,
    },
    Approve,
    Decline {
        reason: String,
    },
    Redact {
        text: String,
        reason: String,
    },
    /// The owner's public reply; a new one replaces the last.
    Reply {
        text: String,
    },
}

impl ResponseCommand {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Edit { .. } => "EditResponse",
            Self::Withdraw { .. } => "WithdrawResponse",
            Self::Approve => "ApproveResponse",
            Self::Decline { .. } => "DeclineResponse",
            Self::Redact { .. } => "RedactResponse",
            Self::Reply { .. } => "ReplyToResponse",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("no such response")]
    NotFound,
    #[error("{0}")]
    NotAllowed(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("the hearing closed for responses at {}", .0.to_rfc3339_opts(SecondsFormat::Secs, true))]
    HearingClosed(DateTime<Utc>),
}

/// A response as its events have made it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub exists: bool,
    pub hearing_id: Uuid,
    pub number: i64,
    pub author: String,
    pub on_behalf_of: Option<OnBehalfOf>,
    /// The text as written (sealed when redacted: only those allowed see it).
    pub text: String,
    /// What the public sees instead, when redacted.
    pub redacted_text: Option<String>,
    pub status: ModerationStatus,
    pub decline_reason: Option<String>,
    pub moderated_by: Option<String>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub sensitive: bool,
    /// The owner's public reply.
    #[serde(default)]
    pub reply: Option<String>,
    #[serde(default)]
    pub attachments: Vec<crate::files::Attachment>,
    #[serde(default)]
    pub terms_version: String,
    /// The receipt's hash, or the last edit's.
    #[serde(default)]
    pub content_sha256: String,
    /// A paper or e-mail response the owner registered.
    #[serde(default)]
    pub registered_by_owner: bool,
    #[serde(default)]
    pub edited_at: Option<DateTime<Utc>>,
    /// Set when opened for display and the respondent has been erased; never stored.
    #[serde(skip)]
    pub author_erased: bool,
}

impl Response {
    /// Decides the events of a command by `actor` on a response to the hearing `terms`.
    pub fn decide(
        &self,
        command: ResponseCommand,
        actor: &Actor,
        terms: &HearingTerms,
    ) -> Result<Vec<ResponseEvent>, ResponseError> {
        if !self.exists {
            return Err(ResponseError::NotFound);
        }
        let owner = actor.administrator || actor.reference == terms.owner_id;
        let author = actor.reference == self.author;
        let open_for_author = |now: DateTime<Utc>| -> Result<(), ResponseError> {
            if !author {
                return Err(ResponseError::NotAllowed("only the author may change or withdraw a response".into()));
            }
            if self.status == ModerationStatus::Withdrawn {
                return Err(ResponseError::NotAllowed("the response is withdrawn".into()));
            }
            match terms.closes_at {
                Some(at) if now >= at => Err(ResponseError::HearingClosed(at)),
                _ if terms.status != "Active" => Err(ResponseError::NotAllowed(format!(
                    "a response can only be changed while the hearing is Active (it is {})",
                    terms.status
                ))),
                _ => Ok(()),
            }
        };
        let moderator = || {
            if owner {
                Ok(())
            } else {
                Err(ResponseError::NotAllowed("only the hearing's owner or an administrator may moderate".into()))
            }
        };
        match command {
            ResponseCommand::Edit { text, now, auto_approve } => {
                open_for_author(now)?;
                check_text(&terms.rules, &text, !self.attachments.is_empty()).map_err(ResponseError::Invalid)?;
                if text == self.text {
                    return Ok(Vec::new());
                }
                let sensitive = contains_cpr_number(&text);
                let status =
                    if auto_approve && !sensitive { ModerationStatus::Approved } else { ModerationStatus::Pending };
                let content_sha256 = hex::encode(Sha256::digest(text.as_bytes()));
                Ok(vec![ResponseEvent::ResponseEdited { text, content_sha256, at: now, status, sensitive }])
            }
            ResponseCommand::Withdraw { now } => {
                open_for_author(now)?;
                Ok(vec![ResponseEvent::ResponseWithdrawn { at: now }])
            }
            ResponseCommand::Approve => {
                moderator()?;
                if self.status == ModerationStatus::Withdrawn {
                    return Err(ResponseError::NotAllowed("a withdrawn response cannot be approved".into()));
                }
                if self.status == ModerationStatus::Approved {
                    return Ok(Vec::new());
                }
                Ok(vec![ResponseEvent::ResponseApproved { by: actor.reference.clone() }])
            }
            ResponseCommand::Decline { reason } => {
                moderator()?;
                if reason.trim().is_empty() {
                    return Err(ResponseError::Invalid("a reason is required to decline".into()));
                }
                if self.status == ModerationStatus::Withdrawn {
                    return Err(ResponseError::NotAllowed("a withdrawn response cannot be declined".into()));
                }
                Ok(vec![ResponseEvent::ResponseDeclined { by: actor.reference.clone(), reason }])
            }
            ResponseCommand::Redact { text, reason } => {
                moderator()?;
                if reason.trim().is_empty() {
                    return Err(ResponseError::Invalid("a reason is required to redact".into()));
                }
                if text.trim().is_empty() {
                    return Err(ResponseError::Invalid(
                        "the redacted text is empty; decline the response instead".into(),
                    ));
                }
                Ok(vec![ResponseEvent::ResponseRedacted { by: actor.reference.clone(), text, reason }])
            }
            ResponseCommand::Reply { text } => {
                moderator()?;
                let length = text.trim().chars().count();
                if length == 0 || length > MAX_REPLY {
                    return Err(ResponseError::Invalid(format!(
                        "a reply is 1 to {MAX_REPLY} characters (this one is {length})"
                    )));
                }
                if self.status == ModerationStatus::Withdrawn {
                    return Err(ResponseError::NotAllowed("a withdrawn response gets no reply".into()));
                }
                if self.reply.as_deref() == Some(text.as_str()) {
                    return Ok(Vec::new());
                }
                Ok(vec![ResponseEvent::ResponseReplied { by: actor.reference.clone(), text }])
            }
        }
    }

    /// The text the public sees: the redacted one when there is one.
    pub fn public_text(&self) -> &str {
        self.redacted_text.as_deref().unwrap_or(&self.text)
    }
}

impl cqrs_es::Aggregate for Response {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = (ResponseCommand, Actor, HearingTerms);
    type Event = ResponseEvent;
    type Error = ResponseError;
    type Services = ();

    async fn handle(
        &mut self,
        (command, actor, terms): Self::Command,
        _services: &(),
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command, &actor, &terms)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ResponseEvent::ResponseSubmitted {
                hearing_id,
                number,
                author,
                on_behalf_of,
                text,
                accepted_at,
                status,
                sensitive,
                attachments,
                terms_version,
                content_sha256,
                registered_by_owner,
            } => {
                *self = Response {
                    exists: true,
                    hearing_id,
                    number,
                    author,
                    on_behalf_of,
                    text,
                    status,
                    accepted_at: Some(accepted_at),
                    sensitive,
                    attachments,
                    terms_version,
                    content_sha256,
                    registered_by_owner,
                    ..Response::default()
                };
            }
            ResponseEvent::ResponseEdited { text, status, sensitive, content_sha256, at } => {
                self.text = text;
                self.content_sha256 = content_sha256;
                self.edited_at = Some(at);
                self.redacted_text = None;
                self.status = status;
                self.sensitive = sensitive;
            }
            ResponseEvent::ResponseWithdrawn { .. } => self.status = ModerationStatus::Withdrawn,
            ResponseEvent::ResponseApproved { by } => {
                self.status = ModerationStatus::Approved;
                self.decline_reason = None;
                self.moderated_by = Some(by);
            }
            ResponseEvent::ResponseDeclined { by, reason } => {
                self.status = ModerationStatus::Declined;
                self.decline_reason = Some(reason);
                self.moderated_by = Some(by);
            }
            ResponseEvent::ResponseRedacted { text, by, .. } => {
                self.redacted_text = Some(text);
                self.moderated_by = Some(by);
            }
            ResponseEvent::ResponseReplied { text, .. } => self.reply = Some(text),
        }
    }
}
