//! E-mail over SMTP with lettre: multipart text and HTML, the Message-ID the message is known
//! by, and RFC 8058 one-click unsubscribe headers.

use std::time::Duration;

use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;

use crate::templates::{Language, Rendered};

/// How to reach the mail server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// `starttls` (the default), `tls` (implicit, port 465) or `none` (a relay on localhost).
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// The sender, e.g. `Københavns Kommune <hoeringer@kk.dk>`.
    pub from: String,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

fn default_port() -> u16 {
    587
}

fn default_timeout() -> u64 {
    30
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    #[default]
    Starttls,
    Tls,
    None,
}

/// One e-mail, made and addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// `<id@domain>`, from [`crate::message::message_id`].
    pub message_id: String,
    pub to: String,
    pub language: Language,
    pub content: Rendered,
    /// The signed one-click unsubscribe URL, when the message has one.
    pub unsubscribe_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth another try: unreachable, timed out, a 4xx answer.
    #[error("{0}")]
    Transient(String),
    /// The server refused the message for good (a 5xx answer), or the message cannot be made.
    #[error("{0}")]
    Permanent(String),
}

/// `List-Unsubscribe: <https://…>` (RFC 2369).
#[derive(Debug, Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.trim().trim_start_matches('<').trim_end_matches('>').to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), format!("<{}>", self.0))
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).
#[derive(Debug, Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_string())
    }
}

/// `Content-Language: da` (RFC 3282), so that a mail client reads it aloud in the right voice.
#[derive(Debug, Clone)]
struct ContentLanguageHeader(Language);

impl Header for ContentLanguageHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Content-Language")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(if s.trim().starts_with("en") { Language::English } else { Language::Danish }))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.code().to_string())
    }
}

/// An e-mail as it goes on the wire, from `from`.
pub fn build(from: &Mailbox, email: &Email) -> Result<Message, SendError> {
    let to: Mailbox =
        email.to.parse().map_err(|e| SendError::Permanent(format!("'{}' is not an e-mail address: {e}", email.to)))?;
    let mut builder = Message::builder()
        .message_id(Some(email.message_id.clone()))
        .from(from.clone())
        .to(to)
        .subject(email.content.subject.clone())
        .header(ContentLanguageHeader(email.language));
    if let Some(url) = &email.unsubscribe_url {
        builder = builder.header(ListUnsubscribe(url.clone())).header(ListUnsubscribePost);
    }
    builder
        .multipart(MultiPart::alternative_plain_html(email.content.text.clone(), email.content.html.clone()))
        .map_err(|e| SendError::Permanent(format!("the message cannot be made: {e}")))
}

/// Where mail goes when there is no mail server (the embedded default): each message as an
/// `.eml` file named by its Message-ID, so a repeat replaces the first copy.
pub struct MailFolder {
    pub folder: std::path::PathBuf,
    pub from: Mailbox,
}

impl MailFolder {
    pub fn new(folder: std::path::PathBuf, from: &str) -> Result<Self, String> {
        let from: Mailbox = from.parse().map_err(|e| format!("from '{from}' is not an address: {e}"))?;
        std::fs::create_dir_all(&folder).map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
        Ok(Self { folder, from })
    }

    pub async fn send(&self, email: &Email) -> Result<(), SendError> {
        let message = build(&self.from, email)?;
        let name: String =
            email.message_id.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '@')).collect();
        let path = self.folder.join(format!("{name}.eml"));
        let temporary = self.folder.join(format!(".{name}.tmp"));
        let write = async {
            tokio::fs::write(&temporary, message.formatted()).await?;
            tokio::fs::rename(&temporary, &path).await
        };
        write.await.map_err(|e| SendError::Transient(format!("cannot write {}: {e}", path.display())))
    }
}

pub struct SmtpChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpChannel {
    pub fn new(config: &SmtpConfig) -> Result<Self, String> {
        let from: Mailbox =
            config.from.parse().map_err(|e| format!("from '{}' is not an address: {e}", config.from))?;
        let builder = match config.security {
            Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
            Security::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
                .map_err(|e| format!("host '{}': {e}", config.host))?,
            Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)
                .map_err(|e| format!("host '{}': {e}", config.host))?,
        };
        let mut builder = builder.port(config.port).timeout(Some(Duration::from_secs(config.timeout_seconds.max(1))));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self { transport: builder.build(), from })
    }

    /// The message as it goes on the wire.
    pub fn message(&self, email: &Email) -> Result<Message, SendError> {
        build(&self.from, email)
    }

    pub async fn send(&self, email: &Email) -> Result<(), SendError> {
        let message = self.message(email)?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::Permanent(format!("the mail server refused it: {e}"))),
            Err(e) => Err(SendError::Transient(format!("the mail server could not take it now: {e}"))),
        }
    }
}
