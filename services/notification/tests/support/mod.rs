//! What the notification tests share: a real SMTP server process that captures what it gets.
#![allow(dead_code)]

/// The SMTP server process (tests/support/smtp_server.py, on PyPI's aiosmtpd).
pub struct SmtpServer {
    pub port: u16,
    pub folder: tempfile::TempDir,
    _child: tokio::process::Child,
}

impl SmtpServer {
    /// Starts it, or says why not: `None` means skipped (never under CI=true).
    pub async fn start() -> Option<Self> {
        let folder = tempfile::tempdir().expect("a folder for the captured mail");
        // From this crate or another that includes this module (the binary's end-to-end tests).
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../notification/tests/support/smtp_server.py");
        let folder_path = folder.path().to_str().expect("a UTF-8 path");
        let what = "the SMTP server (PyPI package aiosmtpd; scripts/test installs it)";
        let (child, port) = agora_eventstore::testing::python_helper(script, &[folder_path], what).await?;
        match port.parse() {
            Ok(port) => Some(Self { port, folder, _child: child }),
            Err(e) => {
                agora_eventstore::testing::unavailable(what, &format!("it printed {port:?}, not a port: {e}"));
                None
            }
        }
    }

    /// Every message received so far, decoded.
    pub fn received(&self) -> Vec<serde_json::Value> {
        let mut messages = Vec::new();
        for entry in std::fs::read_dir(self.folder.path()).expect("the capture folder").filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path).expect("a captured message");
                messages.push(serde_json::from_str(&text).expect("JSON"));
            }
        }
        messages
    }

    /// Waits (with a deadline) until `count` messages have arrived.
    pub async fn wait_for(&self, count: usize) -> Vec<serde_json::Value> {
        agora_eventstore::testing::eventually(20, &format!("{count} messages at the SMTP server"), || async {
            let received = self.received();
            (received.len() >= count).then_some(received)
        })
        .await
    }

    /// Waits (with a deadline) until `count` different addresses have each had a message: a
    /// message sent twice (its outcome lost when a worker died) does not count as another.
    pub async fn wait_for_recipients(&self, count: usize) -> Vec<serde_json::Value> {
        agora_eventstore::testing::eventually(20, &format!("messages to {count} addresses"), || async {
            let received = self.received();
            let recipients: std::collections::BTreeSet<&str> =
                received.iter().filter_map(|m| m["rcpt_tos"][0].as_str()).collect();
            (recipients.len() >= count).then_some(received)
        })
        .await
    }
}

/// An SMTP channel to the test's server (no TLS on loopback).
pub fn channel_to(port: u16) -> agora_notification::smtp::SmtpChannel {
    agora_notification::smtp::SmtpChannel::new(&agora_notification::smtp::SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        security: agora_notification::smtp::Security::None,
        username: None,
        password: None,
        from: "Københavns Kommune <hoeringer@kk.example>".into(),
        timeout_seconds: 5,
    })
    .expect("an SMTP channel")
}

/// The people the identity service knows, for the tests.
#[derive(Default)]
pub struct People(pub std::collections::HashMap<String, agora_notification::recipients::Contact>);

#[async_trait::async_trait]
impl agora_notification::recipients::Directory for People {
    async fn contact(
        &self,
        user_id: &str,
    ) -> Result<Option<agora_notification::recipients::Contact>, agora_vault::VaultError> {
        Ok(self.0.get(user_id).cloned())
    }
}

/// Where the tests' messages link to.
pub fn links() -> agora_notification::plan::Links {
    agora_notification::plan::Links {
        portal_url: "https://blivhoert.kk.example".into(),
        message_domain: "kk.example".into(),
    }
}

/// The portal the tests' messages speak of.
pub fn portal() -> agora_notification::outbox::Portal {
    agora_notification::outbox::Portal {
        name: "Bliv hørt".into(),
        url: "https://blivhoert.kk.example".into(),
        unsubscribe: std::sync::Arc::new(agora_notification::message::UnsubscribeSigner::new(
            b"0123456789abcdef0123456789abcdef",
        )),
    }
}

/// A sender on the store, with real time and a generous rate limit.
pub fn sender(
    store: &agora_eventstore::Store,
    keys: std::sync::Arc<dyn agora_vault::PersonKeys>,
    directory: std::sync::Arc<dyn agora_notification::recipients::Directory>,
    email: std::sync::Arc<dyn agora_notification::outbox::EmailChannel>,
) -> agora_notification::outbox::Sender {
    agora_notification::outbox::Sender {
        store: store.clone(),
        keys,
        directory,
        email,
        digital_post: None,
        portal: portal(),
        retry: Default::default(),
        clock: std::sync::Arc::new(chrono::Utc::now),
        rate: std::sync::Arc::new(tokio::sync::Mutex::new(agora_notification::outbox::RateLimit::new(100.0, 10))),
    }
}
