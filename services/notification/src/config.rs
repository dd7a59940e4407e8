//! The notification service's configuration (`AGORA_NOTIFICATION_CONFIG`, a JSON file): the
//! mail server (or a folder to write mail to), what messages say of the portal, the rate limit
//! and retries.

use std::path::PathBuf;

use serde::Deserialize;

use crate::smtp::SmtpConfig;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationConfig {
    /// The mail server; without it, mail is written to `mail_folder` (the embedded default).
    pub smtp: Option<SmtpConfig>,
    pub mail_folder: Option<PathBuf>,
    /// NgDP, for citizens invited by CPR number; without it their messages are skipped.
    pub digital_post: Option<crate::digital_post::DigitalPostConfig>,
    /// The sender when mail goes to a folder (with SMTP, `smtp.from`).
    pub from: String,
    pub portal_name: String,
    /// Links in messages point here (the gateway's public address).
    pub portal_url: String,
    /// What Message-IDs end in: a domain of the municipality's.
    pub message_domain: String,
    pub messages_per_second: f64,
    pub burst: u32,
    pub retries: agora_jobs::RetrySettings,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        Self {
            smtp: None,
            mail_folder: None,
            digital_post: None,
            from: "Agora <noreply@agora.invalid>".into(),
            portal_name: "Agora".into(),
            portal_url: "http://127.0.0.1:8080".into(),
            message_domain: "agora.invalid".into(),
            messages_per_second: 10.0,
            burst: 20,
            retries: agora_jobs::RetrySettings { lease_seconds: 120, ..Default::default() },
        }
    }
}

impl NotificationConfig {
    /// Reads the configuration; an error names the setting that is wrong.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let config: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        config.retries.policy().map_err(|e| format!("retries: {e}"))?;
        if config.messages_per_second.is_nan() || config.messages_per_second <= 0.0 {
            return Err("messages_per_second must be more than 0".into());
        }
        if !(config.portal_url.starts_with("https://") || config.portal_url.starts_with("http://")) {
            return Err(format!("portal_url '{}' must be an http(s) URL", config.portal_url));
        }
        if let Some(smtp) = &config.smtp
            && config.retries.lease_seconds < 2 * smtp.timeout_seconds
        {
            return Err(format!(
                "retries.lease_seconds ({}) must be at least twice smtp.timeout_seconds ({})",
                config.retries.lease_seconds, smtp.timeout_seconds
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_municipality_configures_its_mail_server_and_portal() {
        let config = NotificationConfig::from_json(
            r#"{"smtp": {"host": "smtp.kk.dk", "from": "Bliv hørt <hoeringer@kk.dk>"},
                "portal_name": "Bliv hørt", "portal_url": "https://blivhoert.kk.dk", "message_domain": "kk.dk",
                "messages_per_second": 5, "retries": {"max_attempts": 4}}"#,
        )
        .expect("valid");
        let smtp = config.smtp.expect("smtp");
        assert_eq!((smtp.port, smtp.timeout_seconds), (587, 30), "STARTTLS on 587 by default");
        assert_eq!(config.retries.max_attempts, 4);
        assert_eq!(config.retries.lease_seconds, 300, "the rest keep their defaults");
    }

    #[test]
    fn a_wrong_setting_is_named() {
        for (json, named) in [
            (r#"{"smpt": {}}"#, "smpt"),
            (r#"{"smtp": {"host": "h", "from": "a@b.dk", "prot": 25}}"#, "prot"),
            (r#"{"retries": {"max_attempts": 0}}"#, "max_attempts"),
            (r#"{"portal_url": "blivhoert.kk.dk"}"#, "portal_url"),
            (r#"{"messages_per_second": 0}"#, "messages_per_second"),
            (r#"{"smtp": {"host": "h", "from": "a@b.dk", "timeout_seconds": 600}}"#, "lease_seconds"),
        ] {
            let error = NotificationConfig::from_json(json).expect_err(json);
            assert!(error.contains(named), "{json}: {error}");
        }
    }
}
