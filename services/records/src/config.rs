//! The records service's configuration (`AGORA_RECORDS_CONFIG`, a JSON file): which records
//! system, the case template per KLE number, the document types, which responses to file and
//! how often to try.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::domain::{CaseTemplates, Policy, RetryPolicy};
use crate::esdh::RecordsSystem;
use crate::sbsys::SbsysConfig;
use crate::worker::DocumentTypes;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SystemConfig {
    /// A folder per case on disk (the default: DATA_DIR/records).
    Archive {
        dir: Option<PathBuf>,
    },
    Sbsys(SbsysConfig),
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig::Archive { dir: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponsesToFile {
    /// Approved responses only.
    #[default]
    Approved,
    /// Every response but the withdrawn.
    All,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordsConfig {
    pub system: SystemConfig,
    /// KLE number prefix → case template; the longest matching prefix wins.
    pub templates: BTreeMap<String, String>,
    pub default_template: String,
    pub document_types: DocumentTypes,
    pub responses: ResponsesToFile,
    pub max_attempts: u32,
    pub first_retry_seconds: u64,
    pub max_retry_seconds: u64,
    /// How long a started step is left to its worker before another may start it again.
    pub lease_seconds: u64,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        let retry = agora_jobs::RetrySettings::default();
        Self {
            system: SystemConfig::default(),
            templates: BTreeMap::new(),
            default_template: String::new(),
            document_types: DocumentTypes::default(),
            responses: ResponsesToFile::default(),
            max_attempts: retry.max_attempts,
            first_retry_seconds: retry.first_retry_seconds,
            max_retry_seconds: retry.max_retry_seconds,
            lease_seconds: retry.lease_seconds,
        }
    }
}

impl RecordsConfig {
    /// Reads the configuration; an error names the setting that is wrong.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let config: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        config.retry_settings().policy()?;
        // A step makes up to five calls (find, delforløb, file, and the sources' reads): its
        // lease must outlast them, or another replica would start it while it still runs.
        if let SystemConfig::Sbsys(sbsys) = &config.system
            && config.lease_seconds < 5 * sbsys.timeout_seconds
        {
            return Err(format!(
                "lease_seconds ({}) must be at least five times the SBSYS timeout_seconds ({})",
                config.lease_seconds, sbsys.timeout_seconds
            ));
        }
        for (prefix, template) in &config.templates {
            if prefix.is_empty() || template.is_empty() || !prefix.chars().all(|c| c.is_ascii_digit() || c == '.') {
                return Err(format!("templates: {prefix:?} → {template:?} is not a KLE prefix and a template"));
            }
        }
        Ok(config)
    }

    pub fn policy(&self) -> Policy {
        Policy {
            templates: CaseTemplates {
                by_kle: self.templates.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                default: self.default_template.clone(),
            },
            approved_only: self.responses == ResponsesToFile::Approved,
        }
    }

    fn retry_settings(&self) -> agora_jobs::RetrySettings {
        agora_jobs::RetrySettings {
            max_attempts: self.max_attempts,
            first_retry_seconds: self.first_retry_seconds,
            max_retry_seconds: self.max_retry_seconds,
            lease_seconds: self.lease_seconds,
        }
    }

    pub fn retry(&self) -> RetryPolicy {
        // Checked when the configuration was read.
        self.retry_settings().policy().unwrap_or_default()
    }

    /// The records system the configuration names; an archive without a folder goes into
    /// `default_archive`.
    pub fn system(&self, default_archive: PathBuf) -> Result<Arc<dyn RecordsSystem>, String> {
        Ok(match &self.system {
            SystemConfig::Archive { dir } => {
                Arc::new(crate::archive::Archive::new(dir.clone().unwrap_or(default_archive)))
            }
            SystemConfig::Sbsys(sbsys) => Arc::new(crate::sbsys::Sbsys::new(sbsys.clone())?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_configuration_files_approved_responses_in_the_archive() {
        let config = RecordsConfig::from_json("{}").expect("defaults");
        assert_eq!(config.system, SystemConfig::Archive { dir: None });
        assert!(config.policy().approved_only);
        assert_eq!(config.document_types.response, "Høringssvar");
    }

    #[test]
    fn a_municipality_configures_sbsys_templates_and_document_types() {
        let config = RecordsConfig::from_json(
            r#"{
                "system": {"kind": "sbsys", "base_url": "https://sbsip.example/api/", "token_url": "https://sso.example/token",
                           "client_id": "agora", "username": "agora-svc", "default_handler": "sagsbehandler"},
                "templates": {"01": "12", "01.02": "34"}, "default_template": "1",
                "document_types": {"response": "Indkommende høringssvar"},
                "responses": "all", "max_attempts": 3
            }"#,
        )
        .expect("valid");
        assert_eq!(config.policy().templates.for_kle("01.02.05"), "34");
        assert!(!config.policy().approved_only);
        assert_eq!(config.document_types.response, "Indkommende høringssvar");
        assert_eq!(config.document_types.conclusion, "Konklusion", "the rest keep their defaults");
        assert_eq!(config.retry().max_attempts, 3);
    }

    #[test]
    fn a_wrong_setting_is_named() {
        let unknown = RecordsConfig::from_json(r#"{"max_attempt": 3}"#).expect_err("typo");
        assert!(unknown.contains("max_attempt"), "{unknown}");
        let short = RecordsConfig::from_json(
            r#"{"system": {"kind": "sbsys", "base_url": "http://s/", "token_url": "http://s/t", "client_id": "a",
                           "username": "u", "timeout_seconds": 60}, "lease_seconds": 120}"#,
        )
        .expect_err("lease shorter than the calls");
        assert!(short.contains("lease_seconds") && short.contains("timeout_seconds"), "{short}");
        let zero = RecordsConfig::from_json(r#"{"max_attempts": 0}"#).expect_err("zero");
        assert!(zero.contains("max_attempts"), "{zero}");
        let template = RecordsConfig::from_json(r#"{"templates": {"plan": "7"}}"#).expect_err("not KLE");
        assert!(template.contains("plan"), "{template}");
        let nested = RecordsConfig::from_json(
            r#"{"system": {"kind": "sbsys", "base_url": "http://s/", "token_url": "http://s/t", "client_id": "a",
                           "username": "u", "timeout_second": 5}}"#,
        )
        .expect_err("typo in the SBSYS settings");
        assert!(nested.contains("timeout_second"), "{nested}");
        let types = RecordsConfig::from_json(r#"{"document_types": {"respons": "Svar"}}"#).expect_err("typo");
        assert!(types.contains("respons"), "{types}");
        let kind = RecordsConfig::from_json(r#"{"system": {"kind": "acadre"}}"#).expect_err("unknown system");
        assert!(kind.contains("acadre"), "{kind}");
    }
}
