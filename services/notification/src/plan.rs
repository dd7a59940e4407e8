//! Who is told what, when (pure): from what happened to a hearing or a response to the
//! messages to queue. A message's id comes from the event, the recipient and the kind, so the
//! same event planned twice gives the same messages.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::message::message_id;
use crate::outbox::Delivery;
use crate::recipients::Recipient;
use crate::templates::Kind;

/// What the notification service knows of a hearing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HearingInfo {
    pub hearing_id: String,
    pub title: String,
    pub status: String,
    /// ISO date.
    pub deadline: String,
}

/// What a response message tells of the response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseInfo {
    pub author_id: String,
    pub number: i64,
    pub receipt_sha256: String,
    pub accepted_at: Option<DateTime<Utc>>,
    pub registered_by_owner: bool,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The hearing became Active: every invitee so far is invited.
    Started {
        invitees: Vec<Recipient>,
    },
    /// Someone was invited while the hearing is Active.
    InviteeAdded {
        invitee: Recipient,
    },
    /// The owner changed the hearing and asked that its invitees and respondents be told.
    Changed {
        changes: String,
        recipients: Vec<Recipient>,
    },
    /// The owner added a colleague as reviewer.
    ReviewerAdded {
        user_id: String,
        owner_id: String,
    },
    /// The owner concluded: the respondents are told.
    Concluded {
        conclusion: String,
        respondents: Vec<String>,
    },
    /// A public hearing that subscriptions match was published, changed or concluded.
    Subscribed {
        kind: Kind,
        subscribers: Vec<(crate::subscriptions::Topic, Recipient, crate::templates::Language)>,
        changes: String,
        conclusion: String,
    },
    ResponseSubmitted {
        response: ResponseInfo,
    },
    ResponseDeclined {
        response: ResponseInfo,
        reason: String,
    },
}

/// A value the sender replaces by that user's name (`owner_name`) when it sends.
pub const OWNER_ID: &str = "owner_id";

/// Where links point and what Message-IDs end in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    pub portal_url: String,
    pub message_domain: String,
}

fn danish_date(iso: &str) -> String {
    NaiveDate::parse_from_str(iso, "%Y-%m-%d").map(|d| d.format("%d-%m-%Y").to_string()).unwrap_or_else(|_| iso.into())
}

fn local_time(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.with_timezone(&chrono_tz::Europe::Copenhagen).format("%d-%m-%Y %H:%M").to_string()).unwrap_or_default()
}

/// The messages `trigger`, caused by the event `event_id`, calls for.
pub fn plan(trigger: &Trigger, hearing: &HearingInfo, event_id: Uuid, links: &Links) -> Vec<Delivery> {
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    values.insert("hearing_title".into(), hearing.title.clone());
    values.insert(
        "hearing_url".into(),
        format!("{}/hoeringer/{}", links.portal_url.trim_end_matches('/'), hearing.hearing_id),
    );
    let message = |kind: Kind, recipient: Recipient, values: BTreeMap<String, String>| Delivery {
        kind,
        message_id: message_id(event_id, &recipient.reference(), kind, &links.message_domain),
        recipient,
        values,
        hearing_id: Some(hearing.hearing_id.clone()),
    };
    let with = |extra: &[(&str, String)]| {
        let mut all = values.clone();
        all.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        all
    };
    let deadline = ("deadline", danish_date(&hearing.deadline));
    match trigger {
        Trigger::Started { invitees } => invitees
            .iter()
            .map(|invitee| message(Kind::InvitedToHearing, invitee.clone(), with(std::slice::from_ref(&deadline))))
            .collect(),
        Trigger::InviteeAdded { invitee } if hearing.status == "Active" => {
            vec![message(Kind::InvitedToHearing, invitee.clone(), with(&[deadline]))]
        }
        Trigger::InviteeAdded { .. } => Vec::new(),
        Trigger::Changed { changes, recipients } => recipients
            .iter()
            .map(|recipient| {
                message(
                    Kind::HearingChanged,
                    recipient.clone(),
                    with(&[("changes", changes.clone()), deadline.clone()]),
                )
            })
            .collect(),
        // The owner's name is looked up when the message is sent, as the recipient's is.
        Trigger::ReviewerAdded { user_id, owner_id } => vec![message(
            Kind::AddedAsReviewer,
            Recipient::User { user_id: user_id.clone() },
            with(&[(OWNER_ID, owner_id.clone())]),
        )],
        Trigger::Subscribed { kind, subscribers, changes, conclusion } => subscribers
            .iter()
            .map(|(topic, recipient, language)| {
                let extra = [
                    ("subscription", topic.describe(*language)),
                    deadline.clone(),
                    ("changes", changes.clone()),
                    ("conclusion", conclusion.clone()),
                ];
                message(*kind, recipient.clone(), with(&extra))
            })
            .collect(),
        Trigger::Concluded { conclusion, respondents } => respondents
            .iter()
            .map(|user_id| {
                let recipient = Recipient::User { user_id: user_id.clone() };
                message(Kind::ConclusionPublished, recipient, with(&[("conclusion", conclusion.clone())]))
            })
            .collect(),
        // A paper response registered by the owner has no respondent to send a receipt to.
        Trigger::ResponseSubmitted { response } if response.registered_by_owner => Vec::new(),
        Trigger::ResponseSubmitted { response } => vec![message(
            Kind::ResponseReceipt,
            Recipient::User { user_id: response.author_id.clone() },
            with(&[
                ("response_number", response.number.to_string()),
                ("received_at", local_time(response.accepted_at)),
                ("receipt_hash", response.receipt_sha256.clone()),
            ]),
        )],
        Trigger::ResponseDeclined { response, reason } => vec![message(
            Kind::ResponseDeclined,
            Recipient::User { user_id: response.author_id.clone() },
            with(&[("response_number", response.number.to_string()), ("decline_reason", reason.clone())]),
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::{Language, default_template};

    fn hearing(status: &str) -> HearingInfo {
        HearingInfo {
            hearing_id: "h1".into(),
            title: "Lokalplan for Bytorvet".into(),
            status: status.into(),
            deadline: "2026-12-24".into(),
        }
    }

    fn links() -> Links {
        Links { portal_url: "https://blivhoert.kk.example/".into(), message_domain: "kk.example".into() }
    }

    fn invitee(n: u32) -> Recipient {
        Recipient::Invitee {
            reference: format!("email:{n}"),
            sealed_address: "pii1.x".into(),
            sealed_name: "pii1.y".into(),
        }
    }

    /// Every message planned fills its template once the sender adds the recipient's part.
    fn fills(delivery: &Delivery) {
        let mut values: BTreeMap<&str, String> = delivery.values.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        for name in ["recipient_name", "portal_name", "portal_url", "unsubscribe_url", "owner_name"] {
            values.insert(name, name.into());
        }
        for language in [Language::Danish, Language::English] {
            default_template(delivery.kind, language).render(&values).unwrap_or_else(|e| panic!("{delivery:?}: {e}"));
        }
    }

    #[test]
    fn invitees_are_invited_when_the_hearing_starts_and_late_ones_at_once() {
        let event = Uuid::now_v7();
        let started =
            plan(&Trigger::Started { invitees: vec![invitee(1), invitee(2)] }, &hearing("Active"), event, &links());
        assert_eq!(started.len(), 2);
        assert!(started.iter().all(|d| d.kind == Kind::InvitedToHearing));
        assert_eq!(started[0].values["deadline"], "24-12-2026");
        assert_eq!(started[0].values["hearing_url"], "https://blivhoert.kk.example/hoeringer/h1");
        started.iter().for_each(fills);
        let late = plan(&Trigger::InviteeAdded { invitee: invitee(3) }, &hearing("Active"), event, &links());
        assert_eq!(late.len(), 1);
        let early = plan(&Trigger::InviteeAdded { invitee: invitee(3) }, &hearing("Draft"), event, &links());
        assert!(early.is_empty(), "invited when the hearing starts, not before");
        let again = plan(&Trigger::Started { invitees: vec![invitee(1)] }, &hearing("Active"), event, &links());
        assert_eq!(again[0].message_id, started[0].message_id, "the same event plans the same message");
    }

    #[test]
    fn a_respondent_gets_a_receipt_and_is_told_of_a_decline_and_of_the_conclusion() {
        let response = ResponseInfo {
            author_id: "u1".into(),
            number: 7,
            receipt_sha256: "abc".into(),
            accepted_at: DateTime::from_timestamp(1_796_000_000, 0),
            registered_by_owner: false,
        };
        let event = Uuid::now_v7();
        let receipt =
            plan(&Trigger::ResponseSubmitted { response: response.clone() }, &hearing("Active"), event, &links());
        assert_eq!(receipt.len(), 1);
        assert_eq!(receipt[0].recipient, Recipient::User { user_id: "u1".into() });
        assert_eq!(
            (receipt[0].values["response_number"].as_str(), receipt[0].values["receipt_hash"].as_str()),
            ("7", "abc")
        );
        receipt.iter().for_each(fills);
        let paper = ResponseInfo { registered_by_owner: true, ..response.clone() };
        assert!(plan(&Trigger::ResponseSubmitted { response: paper }, &hearing("Active"), event, &links()).is_empty());
        let declined = plan(
            &Trigger::ResponseDeclined { response, reason: "Injurierende".into() },
            &hearing("Active"),
            event,
            &links(),
        );
        assert_eq!(declined[0].values["decline_reason"], "Injurierende");
        declined.iter().for_each(fills);
        let reviewer = plan(
            &Trigger::ReviewerAdded { user_id: "u3".into(), owner_id: "u9".into() },
            &hearing("Draft"),
            event,
            &links(),
        );
        assert_eq!((reviewer[0].kind, reviewer[0].values["owner_id"].as_str()), (Kind::AddedAsReviewer, "u9"));
        let concluded = plan(
            &Trigger::Concluded { conclusion: "Vedtaget.".into(), respondents: vec!["u1".into(), "u2".into()] },
            &hearing("Concluded"),
            event,
            &links(),
        );
        assert_eq!(concluded.len(), 2);
        concluded.iter().for_each(fills);
    }
}
