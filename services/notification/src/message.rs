//! What makes a message the same message when it is sent again: its Message-ID, derived from
//! the event that caused it, the recipient and the kind, so that a repeat after a crash carries
//! the first one's id and a receiving system can drop it. And the signed one-click unsubscribe
//! links every message carries.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::templates::Kind;

/// The namespace of Agora's Message-IDs (a UUIDv5 namespace of our own).
const MESSAGE_NAMESPACE: Uuid = Uuid::from_u128(0x6167_6f72_612d_6d65_7373_6167_652d_6964);

/// `<uuid@domain>`: the same for the same event, recipient and kind, every time.
pub fn message_id(event_id: Uuid, recipient: &str, kind: Kind, domain: &str) -> String {
    let name = format!("{event_id}\n{recipient}\n{}", kind.as_str());
    format!("<{}@{domain}>", Uuid::new_v5(&MESSAGE_NAMESPACE, name.as_bytes()))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsubscribeError {
    #[error("the unsubscribe link is malformed")]
    Malformed,
    #[error("the unsubscribe link's signature does not match")]
    Forged,
}

/// Signs and checks what an unsubscribe link stops: a recipient's subscription, or one kind of
/// message to them.
pub struct UnsubscribeSigner {
    key: ring::hmac::Key,
}

impl UnsubscribeSigner {
    /// A signer with a secret of the deployment's (at least 32 bytes).
    pub fn new(secret: &[u8]) -> Self {
        Self { key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret) }
    }

    /// A signer whose key is derived from a deployment secret kept for another purpose (the
    /// pseudonym key), so that no new secret has to be managed and neither key reveals the other.
    pub fn derived(deployment_secret: &[u8]) -> Self {
        let parent = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, deployment_secret);
        Self::new(ring::hmac::sign(&parent, b"agora unsubscribe links v1").as_ref())
    }

    /// `<payload>.<HMAC-SHA256>`, both base64url: safe in a URL's path or query.
    pub fn sign(&self, what: &str) -> String {
        let tag = ring::hmac::sign(&self.key, what.as_bytes());
        format!("{}.{}", URL_SAFE_NO_PAD.encode(what), URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// What a token stops, if this signer signed it.
    pub fn verify(&self, token: &str) -> Result<String, UnsubscribeError> {
        let (payload, tag) = token.split_once('.').ok_or(UnsubscribeError::Malformed)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| UnsubscribeError::Malformed)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| UnsubscribeError::Malformed)?;
        ring::hmac::verify(&self.key, &payload, &tag).map_err(|_| UnsubscribeError::Forged)?;
        String::from_utf8(payload).map_err(|_| UnsubscribeError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_repeated_for_the_same_event_recipient_and_kind_has_the_same_id() {
        let event = Uuid::now_v7();
        let first = message_id(event, "user:1", Kind::ResponseReceipt, "agora.kk.dk");
        assert_eq!(first, message_id(event, "user:1", Kind::ResponseReceipt, "agora.kk.dk"));
        assert!(first.starts_with('<') && first.ends_with("@agora.kk.dk>"), "{first}");
        assert_ne!(first, message_id(event, "user:2", Kind::ResponseReceipt, "agora.kk.dk"));
        assert_ne!(first, message_id(event, "user:1", Kind::ResponseDeclined, "agora.kk.dk"));
        assert_ne!(first, message_id(Uuid::now_v7(), "user:1", Kind::ResponseReceipt, "agora.kk.dk"));
    }

    #[test]
    fn an_unsubscribe_link_opens_only_with_the_key_that_signed_it() {
        let signer = UnsubscribeSigner::new(b"0123456789abcdef0123456789abcdef");
        let token = signer.sign("subscription:42");
        assert_eq!(signer.verify(&token), Ok("subscription:42".into()));
        let other = UnsubscribeSigner::new(b"another secret of thirty-two bytes!");
        assert_eq!(other.verify(&token), Err(UnsubscribeError::Forged));
        let (_, tag) = token.split_once('.').expect("two parts");
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode("subscription:43"));
        assert_eq!(signer.verify(&forged), Err(UnsubscribeError::Forged));
        assert_eq!(signer.verify("no-dot"), Err(UnsubscribeError::Malformed));
        assert_eq!(signer.verify("***.***"), Err(UnsubscribeError::Malformed));
    }
}
