//! Digital Post, the national mailbox for citizens (by CPR number) and companies (by CVR
//! number): a letter is a MeMo message
//! (the Agency for Digital Government's format) posted to NgDP's REST API. The letter's
//! `messageUUID` comes from its Message-ID, so a letter sent again after a lost outcome is the
//! same letter; NgDP refuses the repeat as a duplicate (409), which counts as delivered.

use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use crate::smtp::SendError;
use crate::templates::Language;

/// How to reach NgDP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigitalPostConfig {
    /// e.g. `https://api.digitalpost.dk` (test: `https://api.test.digitalpost.dk`).
    pub base_url: String,
    /// The sending authority's CVR number and name.
    pub sender_cvr: String,
    pub sender_name: String,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// This channel's own rate limit (letters a second).
    #[serde(default = "default_rate")]
    pub letters_per_second: u32,
}

fn default_timeout() -> u64 {
    30
}

fn default_rate() -> u32 {
    5
}

/// A letter to one citizen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// From the message's Message-ID.
    pub message_uuid: uuid::Uuid,
    /// `CPR` or `CVR`.
    pub id_type: String,
    /// The CPR or CVR number.
    pub id: String,
    pub subject: String,
    pub text: String,
    pub language: Language,
}

/// What NgDP reports of a letter it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    /// In the recipient's mailbox.
    Delivered,
    /// Not yet decided (the recipient's mailbox is being looked up, a retry is pending).
    Pending,
    /// It cannot be delivered (no mailbox, exempt from Digital Post), and why.
    Undeliverable(String),
}

#[async_trait::async_trait]
pub trait DigitalPostChannel: Send + Sync {
    async fn send(&self, letter: &Letter) -> Result<(), SendError>;
    /// What became of a letter sent before.
    async fn receipt(&self, message_uuid: uuid::Uuid) -> Result<Receipt, SendError>;
}

fn escape(value: &str) -> String {
    value.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

/// The MeMo message of a letter: its header (type, id, label, sender, recipient) and the text as
/// its main document.
pub fn memo(letter: &Letter, config: &DigitalPostConfig, created: chrono::DateTime<chrono::Utc>) -> String {
    let content = base64::engine::general_purpose::STANDARD.encode(letter.text.as_bytes());
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <memo:Message xmlns:memo=\"https://DigitalPost.dk/MeMo-1\" memoVersion=\"1.1\">\n\
         <memo:MessageHeader>\n\
         <memo:messageType>DIGITALPOST</memo:messageType>\n\
         <memo:messageUUID>{uuid}</memo:messageUUID>\n\
         <memo:label>{label}</memo:label>\n\
         <memo:mandatory>false</memo:mandatory>\n\
         <memo:legalNotification>false</memo:legalNotification>\n\
         <memo:Sender><memo:senderID>{sender}</memo:senderID><memo:idType>CVR</memo:idType><memo:label>{sender_name}</memo:label></memo:Sender>\n\
         <memo:Recipient><memo:recipientID>{id}</memo:recipientID><memo:idType>{id_type}</memo:idType></memo:Recipient>\n\
         </memo:MessageHeader>\n\
         <memo:MessageBody>\n\
         <memo:createdDateTime>{created}</memo:createdDateTime>\n\
         <memo:MainDocument><memo:File><memo:encodingFormat>text/plain</memo:encodingFormat>\
         <memo:filename>besked.txt</memo:filename><memo:language>{language}</memo:language>\
         <memo:content>{content}</memo:content></memo:File></memo:MainDocument>\n\
         </memo:MessageBody>\n\
         </memo:Message>\n",
        uuid = letter.message_uuid,
        label = escape(&letter.subject),
        sender = escape(&config.sender_cvr),
        sender_name = escape(&config.sender_name),
        id = escape(&letter.id),
        id_type = escape(&letter.id_type),
        created = created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        language = letter.language.code(),
    )
}

/// NgDP's REST API.
pub struct Ngdp {
    config: DigitalPostConfig,
    http: reqwest::Client,
    rate: tokio::sync::Mutex<crate::outbox::RateLimit>,
}

impl Ngdp {
    pub fn new(config: DigitalPostConfig) -> Result<Self, String> {
        reqwest::Url::parse(&config.base_url)
            .map_err(|e| format!("digital_post.base_url '{}': {e}", config.base_url))?;
        if config.sender_cvr.len() != 8 || !config.sender_cvr.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("digital_post.sender_cvr '{}' is not a CVR number (8 digits)", config.sender_cvr));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_seconds.max(1)))
            .build()
            .map_err(|e| format!("Digital Post client: {e}"))?;
        let rate = crate::outbox::RateLimit::new(
            f64::from(config.letters_per_second.max(1)),
            config.letters_per_second.max(1),
        );
        Ok(Self { config, http, rate: tokio::sync::Mutex::new(rate) })
    }
}

#[async_trait::async_trait]
impl DigitalPostChannel for Ngdp {
    async fn send(&self, letter: &Letter) -> Result<(), SendError> {
        let wait = self.rate.lock().await.take(std::time::Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let url = format!("{}/apis/v1/messages/memo", self.config.base_url.trim_end_matches('/'));
        let body = memo(letter, &self.config, chrono::Utc::now());
        let response = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/xml")
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::Transient(format!("Digital Post could not be reached: {e}")))?;
        let status = response.status();
        if status.is_success() || status == reqwest::StatusCode::CONFLICT {
            // 409: this messageUUID was delivered before (the repeat after a lost outcome).
            return Ok(());
        }
        Err(refusal(status, response).await)
    }

    async fn receipt(&self, message_uuid: uuid::Uuid) -> Result<Receipt, SendError> {
        #[derive(Deserialize)]
        struct Status {
            status: String,
            #[serde(default)]
            reason: String,
        }
        let url = format!("{}/apis/v1/messages/{message_uuid}/status", self.config.base_url.trim_end_matches('/'));
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| SendError::Transient(format!("Digital Post could not be reached: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            return Err(refusal(status, response).await);
        }
        let reported: Status = response
            .json()
            .await
            .map_err(|e| SendError::Transient(format!("Digital Post's receipt is not JSON: {e}")))?;
        Ok(match reported.status.as_str() {
            "DELIVERED" => Receipt::Delivered,
            "FAILED" | "UNDELIVERABLE" => Receipt::Undeliverable(reported.reason),
            _ => Receipt::Pending,
        })
    }
}

async fn refusal(status: reqwest::StatusCode, response: reqwest::Response) -> SendError {
    let text: String = response.text().await.unwrap_or_default().chars().take(300).collect();
    let message = format!("Digital Post: HTTP {status}: {text}");
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        SendError::Transient(message)
    } else {
        SendError::Permanent(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_letter_is_a_memo_message_with_its_text_as_the_main_document() {
        let config = DigitalPostConfig {
            base_url: "https://api.test.digitalpost.dk".into(),
            sender_cvr: "64942212".into(),
            sender_name: "Københavns Kommune".into(),
            timeout_seconds: 30,
            letters_per_second: 5,
        };
        let letter = Letter {
            message_uuid: uuid::Uuid::from_u128(7),
            id_type: "CPR".into(),
            id: "0101801234".into(),
            subject: "Høring <om> Ærøvej & co".into(),
            text: "Kære borger".into(),
            language: Language::Danish,
        };
        let xml = memo(&letter, &config, chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("time"));
        assert!(xml.contains("<memo:messageUUID>00000000-0000-0000-0000-000000000007</memo:messageUUID>"));
        assert!(xml.contains("<memo:label>Høring &lt;om&gt; Ærøvej &amp; co</memo:label>"));
        assert!(xml.contains("<memo:recipientID>0101801234</memo:recipientID><memo:idType>CPR</memo:idType>"));
        assert!(xml.contains(&base64::engine::general_purpose::STANDARD.encode("Kære borger")));
        assert!(Ngdp::new(DigitalPostConfig { sender_cvr: "123".into(), ..config }).is_err());
    }
}
