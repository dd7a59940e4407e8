//! Message templates: one per notification type and language, with `{{placeholder}}`s that
//! are checked when a template is saved (an unknown one is refused, naming it) and filled when
//! a message is made. HTML parts get every value escaped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a message is about (OS2agora's notification types, and the subscriptions beyond them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    InvitedToHearing,
    AddedAsReviewer,
    ResponseReceipt,
    ResponseDeclined,
    HearingChanged,
    ConclusionPublished,
    DailyDigest,
    /// Double opt-in: the link that confirms an e-mail address for a subscription.
    SubscriptionConfirmation,
    SubscribedHearingPublished,
    SubscribedHearingChanged,
    SubscribedHearingConcluded,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::InvitedToHearing,
        Kind::AddedAsReviewer,
        Kind::ResponseReceipt,
        Kind::ResponseDeclined,
        Kind::HearingChanged,
        Kind::ConclusionPublished,
        Kind::DailyDigest,
        Kind::SubscriptionConfirmation,
        Kind::SubscribedHearingPublished,
        Kind::SubscribedHearingChanged,
        Kind::SubscribedHearingConcluded,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::InvitedToHearing => "invited_to_hearing",
            Kind::AddedAsReviewer => "added_as_reviewer",
            Kind::ResponseReceipt => "response_receipt",
            Kind::ResponseDeclined => "response_declined",
            Kind::HearingChanged => "hearing_changed",
            Kind::ConclusionPublished => "conclusion_published",
            Kind::DailyDigest => "daily_digest",
            Kind::SubscriptionConfirmation => "subscription_confirmation",
            Kind::SubscribedHearingPublished => "subscribed_hearing_published",
            Kind::SubscribedHearingChanged => "subscribed_hearing_changed",
            Kind::SubscribedHearingConcluded => "subscribed_hearing_concluded",
        }
    }

    /// The kind its name names, e.g. `response_receipt`.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The placeholders a template of this kind may use.
    pub fn placeholders(self) -> Vec<&'static str> {
        let mut names = vec!["recipient_name", "portal_name", "portal_url", "unsubscribe_url"];
        let hearing = ["hearing_title", "hearing_url"];
        names.extend(match self {
            Kind::InvitedToHearing => [&hearing[..], &["deadline"]].concat(),
            Kind::AddedAsReviewer => [&hearing[..], &["owner_name"]].concat(),
            Kind::ResponseReceipt => [&hearing[..], &["response_number", "received_at", "receipt_hash"]].concat(),
            Kind::ResponseDeclined => [&hearing[..], &["response_number", "decline_reason"]].concat(),
            Kind::HearingChanged | Kind::SubscribedHearingChanged => [&hearing[..], &["changes", "deadline"]].concat(),
            Kind::ConclusionPublished | Kind::SubscribedHearingConcluded => [&hearing[..], &["conclusion"]].concat(),
            Kind::DailyDigest => vec!["digest_date", "digest"],
            Kind::SubscriptionConfirmation => vec!["subscription", "confirm_url"],
            Kind::SubscribedHearingPublished => [&hearing[..], &["deadline", "subscription"]].concat(),
        });
        names
    }
}

/// The language a person reads their messages in: Danish first, then English.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub enum Language {
    #[default]
    #[serde(rename = "da")]
    Danish,
    #[serde(rename = "en")]
    English,
}

impl Language {
    /// `da` or `en`.
    pub fn parse(code: &str) -> Option<Language> {
        match code {
            "da" => Some(Language::Danish),
            "en" => Some(Language::English),
            _ => None,
        }
    }

    pub const fn code(self) -> &'static str {
        match self {
            Language::Danish => "da",
            Language::English => "en",
        }
    }
}

/// A message's subject, plain text and HTML, with placeholders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// A message made from a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("{part}: unknown placeholder {{{{{name}}}}} (a {kind} template may use: {allowed})")]
    UnknownPlaceholder { part: &'static str, name: String, kind: &'static str, allowed: String },
    #[error("{part}: a {{{{ at character {at} is not closed with }}}}")]
    Unclosed { part: &'static str, at: usize },
    #[error("{part} is empty")]
    Empty { part: &'static str },
    #[error("no value for {{{{{0}}}}}")]
    Missing(String),
}

/// A piece of a template: text as it is, or a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

fn pieces<'a>(part: &'static str, source: &'a str) -> Result<Vec<Piece<'a>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = source;
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            out.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed { part, at: offset + start })?;
        out.push(Piece::Placeholder(after[..end].trim()));
        let consumed = start + 2 + end + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

fn escape_html(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl Template {
    fn parts(&self) -> [(&'static str, &str); 3] {
        [("subject", &self.subject), ("text", &self.text), ("html", &self.html)]
    }

    /// Checks a template before it is saved: every part present, every placeholder closed
    /// and known to the kind.
    pub fn validate(&self, kind: Kind) -> Result<(), TemplateError> {
        let allowed = kind.placeholders();
        for (part, source) in self.parts() {
            if source.trim().is_empty() {
                return Err(TemplateError::Empty { part });
            }
            for piece in pieces(part, source)? {
                if let Piece::Placeholder(name) = piece
                    && !allowed.contains(&name)
                {
                    return Err(TemplateError::UnknownPlaceholder {
                        part,
                        name: name.to_string(),
                        kind: kind.as_str(),
                        allowed: allowed.join(", "),
                    });
                }
            }
        }
        Ok(())
    }

    /// Fills the placeholders; values are escaped in the HTML part, and line breaks in them
    /// become `<br>` there. The subject is kept on one line.
    pub fn render(&self, values: &BTreeMap<&str, String>) -> Result<Rendered, TemplateError> {
        let fill = |part: &'static str, source: &str, html: bool| -> Result<String, TemplateError> {
            let mut out = String::with_capacity(source.len());
            for piece in pieces(part, source)? {
                match piece {
                    Piece::Text(text) => out.push_str(text),
                    Piece::Placeholder(name) => {
                        let value = values.get(name).ok_or_else(|| TemplateError::Missing(name.to_string()))?;
                        if html {
                            out.push_str(&escape_html(value).replace('\n', "<br>\n"));
                        } else {
                            out.push_str(value);
                        }
                    }
                }
            }
            Ok(out)
        };
        let subject = fill("subject", &self.subject, false)?;
        Ok(Rendered {
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            text: fill("text", &self.text, false)?,
            html: fill("html", &self.html, true)?,
        })
    }
}

fn template(subject: &str, body: &str) -> Template {
    let html_body = escape_html(body).replace("\n\n", "</p>\n<p>").replace('\n', "<br>\n");
    // The placeholders were escaped with the rest; they contain nothing to escape.
    Template {
        subject: subject.into(),
        text: format!("{body}\n\n-- \n{{{{portal_name}}}}: {{{{portal_url}}}}\n"),
        html: format!(
            "<!doctype html>\n<html><body style=\"font-family: sans-serif; line-height: 1.5\">\n<p>{html_body}</p>\n\
             <p style=\"color: #555\">{{{{portal_name}}}}: <a href=\"{{{{portal_url}}}}\">{{{{portal_url}}}}</a></p>\n</body></html>\n"
        ),
    }
}

/// The template a municipality starts from.
pub fn default_template(kind: Kind, language: Language) -> Template {
    use Kind::*;
    use Language::*;
    let (subject, body) = match (kind, language) {
        (InvitedToHearing, Danish) => (
            "Du er inviteret til at afgive høringssvar: {{hearing_title}}",
            "Kære {{recipient_name}}\n\nDu er inviteret til at afgive høringssvar på «{{hearing_title}}». Fristen er {{deadline}}.\n\nLæs høringen og svar her: {{hearing_url}}",
        ),
        (InvitedToHearing, English) => (
            "You are invited to respond: {{hearing_title}}",
            "Dear {{recipient_name}}\n\nYou are invited to respond to the consultation «{{hearing_title}}». The deadline is {{deadline}}.\n\nRead it and respond here: {{hearing_url}}",
        ),
        (AddedAsReviewer, Danish) => (
            "Du er tilføjet som reviewer: {{hearing_title}}",
            "Kære {{recipient_name}}\n\n{{owner_name}} har tilføjet dig som reviewer på høringen «{{hearing_title}}».\n\n{{hearing_url}}",
        ),
        (AddedAsReviewer, English) => (
            "You were added as a reviewer: {{hearing_title}}",
            "Dear {{recipient_name}}\n\n{{owner_name}} added you as a reviewer of the consultation «{{hearing_title}}».\n\n{{hearing_url}}",
        ),
        (ResponseReceipt, Danish) => (
            "Kvittering for dit høringssvar nr. {{response_number}}",
            "Kære {{recipient_name}}\n\nVi har modtaget dit høringssvar nr. {{response_number}} til «{{hearing_title}}» {{received_at}}.\n\nKvitteringens kontrolsum (SHA-256): {{receipt_hash}}\n\n{{hearing_url}}",
        ),
        (ResponseReceipt, English) => (
            "Receipt for your response no. {{response_number}}",
            "Dear {{recipient_name}}\n\nWe received your response no. {{response_number}} to «{{hearing_title}}» at {{received_at}}.\n\nThe receipt's checksum (SHA-256): {{receipt_hash}}\n\n{{hearing_url}}",
        ),
        (ResponseDeclined, Danish) => (
            "Dit høringssvar nr. {{response_number}} er afvist",
            "Kære {{recipient_name}}\n\nDit høringssvar nr. {{response_number}} til «{{hearing_title}}» er afvist med denne begrundelse:\n\n{{decline_reason}}\n\n{{hearing_url}}",
        ),
        (ResponseDeclined, English) => (
            "Your response no. {{response_number}} was declined",
            "Dear {{recipient_name}}\n\nYour response no. {{response_number}} to «{{hearing_title}}» was declined for this reason:\n\n{{decline_reason}}\n\n{{hearing_url}}",
        ),
        (HearingChanged | SubscribedHearingChanged, Danish) => (
            "Høringen er ændret: {{hearing_title}}",
            "Kære {{recipient_name}}\n\nHøringen «{{hearing_title}}» er ændret: {{changes}}. Fristen er {{deadline}}.\n\n{{hearing_url}}",
        ),
        (HearingChanged | SubscribedHearingChanged, English) => (
            "The consultation has changed: {{hearing_title}}",
            "Dear {{recipient_name}}\n\nThe consultation «{{hearing_title}}» has changed: {{changes}}. The deadline is {{deadline}}.\n\n{{hearing_url}}",
        ),
        (ConclusionPublished | SubscribedHearingConcluded, Danish) => (
            "Konklusionen er offentliggjort: {{hearing_title}}",
            "Kære {{recipient_name}}\n\nHøringen «{{hearing_title}}» er afsluttet med denne konklusion:\n\n{{conclusion}}\n\n{{hearing_url}}",
        ),
        (ConclusionPublished | SubscribedHearingConcluded, English) => (
            "The conclusion is published: {{hearing_title}}",
            "Dear {{recipient_name}}\n\nThe consultation «{{hearing_title}}» is concluded:\n\n{{conclusion}}\n\n{{hearing_url}}",
        ),
        (DailyDigest, Danish) => {
            ("Dagens status på dine høringer, {{digest_date}}", "Kære {{recipient_name}}\n\nSiden i går:\n\n{{digest}}")
        }
        (DailyDigest, English) => (
            "Today's status of your consultations, {{digest_date}}",
            "Dear {{recipient_name}}\n\nSince yesterday:\n\n{{digest}}",
        ),
        (SubscriptionConfirmation, Danish) => (
            "Bekræft dit abonnement",
            "Du har bedt om besked om {{subscription}}. Bekræft din e-mailadresse her: {{confirm_url}}\n\nHar du ikke bedt om det, så ignorér denne e-mail.",
        ),
        (SubscriptionConfirmation, English) => (
            "Confirm your subscription",
            "You asked to be told about {{subscription}}. Confirm your e-mail address here: {{confirm_url}}\n\nIf you did not ask for it, ignore this e-mail.",
        ),
        (SubscribedHearingPublished, Danish) => (
            "Ny høring: {{hearing_title}}",
            "Kære {{recipient_name}}\n\nEn ny høring om {{subscription}} er offentliggjort: «{{hearing_title}}». Fristen er {{deadline}}.\n\n{{hearing_url}}",
        ),
        (SubscribedHearingPublished, English) => (
            "New consultation: {{hearing_title}}",
            "Dear {{recipient_name}}\n\nA new consultation about {{subscription}} is published: «{{hearing_title}}». The deadline is {{deadline}}.\n\n{{hearing_url}}",
        ),
    };
    let mut made = template(subject, body);
    if kind != SubscriptionConfirmation {
        let line = match language {
            Danish => "Afmeld disse e-mails",
            English => "Unsubscribe from these e-mails",
        };
        made.text.push_str(&format!("{line}: {{{{unsubscribe_url}}}}\n"));
        made.html = made.html.replace(
            "</body></html>",
            &format!("<p style=\"color: #555\"><a href=\"{{{{unsubscribe_url}}}}\">{line}</a></p>\n</body></html>"),
        );
    }
    made
}

/// Every value a kind's placeholders may take, for previews and tests.
pub fn sample_values(kind: Kind) -> BTreeMap<&'static str, String> {
    kind.placeholders().into_iter().map(|name| (name, format!("[{name}]"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_template_is_valid_and_fills_in_both_languages() {
        for kind in Kind::ALL {
            for language in [Language::Danish, Language::English] {
                let template = default_template(kind, language);
                template.validate(kind).unwrap_or_else(|e| panic!("{kind:?} {language:?}: {e}"));
                let rendered = template.render(&sample_values(kind)).expect("renders");
                assert!(!rendered.subject.contains("{{") && !rendered.html.contains("{{"), "{rendered:?}");
                if kind != Kind::SubscriptionConfirmation {
                    assert!(rendered.text.contains("[unsubscribe_url]"), "{kind:?}: an unsubscribe link");
                }
            }
        }
    }

    #[test]
    fn an_unknown_or_unclosed_placeholder_is_refused_naming_it() {
        let mut template = default_template(Kind::ResponseReceipt, Language::Danish);
        template.text.push_str("{{ decline_reason }}");
        let error = template.validate(Kind::ResponseReceipt).expect_err("not a receipt's placeholder");
        let message = error.to_string();
        assert!(message.starts_with("text: unknown placeholder {{decline_reason}}"), "{message}");
        assert!(message.contains("receipt_hash"), "says what may be used: {message}");
        template.text = "Hej {{recipient_name".into();
        assert_eq!(template.validate(Kind::ResponseReceipt), Err(TemplateError::Unclosed { part: "text", at: 4 }));
        template.text = " ".into();
        assert_eq!(template.validate(Kind::ResponseReceipt), Err(TemplateError::Empty { part: "text" }));
    }

    #[test]
    fn values_are_escaped_in_html_and_kept_in_text_and_the_subject_stays_on_one_line() {
        let template = Template {
            subject: "Svar på {{hearing_title}}".into(),
            text: "{{hearing_title}}".into(),
            html: "<p>{{hearing_title}}</p>".into(),
        };
        let values = BTreeMap::from([("hearing_title", "Vej & <script>alert(1)</script>\nÆrø".to_string())]);
        let rendered = template.render(&values).expect("renders");
        assert_eq!(rendered.subject, "Svar på Vej & <script>alert(1)</script> Ærø");
        assert_eq!(rendered.text, "Vej & <script>alert(1)</script>\nÆrø");
        assert_eq!(rendered.html, "<p>Vej &amp; &lt;script&gt;alert(1)&lt;/script&gt;<br>\nÆrø</p>");
        assert_eq!(template.render(&BTreeMap::new()), Err(TemplateError::Missing("hearing_title".into())));
    }
}
