//! Hearing types, their fields and the validation rule of each field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What kind of content a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    Text,
    Images,
    Documents,
}

/// A field's validation rule, as the hearing type defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldRule {
    /// Stable key, e.g. `title`, `summary`, `body`, `conclusion`, `esdh_title`, `documents`.
    pub key: String,
    /// Label shown to the caseworker (Danish first).
    pub label: String,
    pub kind: FieldKind,
    pub may_be_empty: bool,
    #[serde(default)]
    pub min_length: Option<u32>,
    #[serde(default)]
    pub max_length: Option<u32>,
    #[serde(default)]
    pub max_file_size: Option<u64>,
    #[serde(default)]
    pub max_file_count: Option<u32>,
    /// MIME types accepted, checked against the file's content.
    #[serde(default)]
    pub allowed_types: Vec<String>,
}

impl FieldRule {
    pub fn text(key: &str, label: &str, may_be_empty: bool, min_length: Option<u32>, max_length: Option<u32>) -> Self {
        Self {
            key: key.into(),
            label: label.into(),
            kind: FieldKind::Text,
            may_be_empty,
            min_length,
            max_length,
            max_file_size: None,
            max_file_count: None,
            allowed_types: Vec::new(),
        }
    }

    pub fn files(
        key: &str,
        label: &str,
        kind: FieldKind,
        max_file_size: u64,
        max_file_count: u32,
        allowed: &[&str],
    ) -> Self {
        Self {
            key: key.into(),
            label: label.into(),
            kind,
            may_be_empty: true,
            min_length: None,
            max_length: None,
            max_file_size: Some(max_file_size),
            max_file_count: Some(max_file_count),
            allowed_types: allowed.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// A hearing type as the hearing holds it: a copy taken when the hearing was created, so
/// later edits of the type do not change the rules under a running hearing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HearingType {
    pub id: String,
    pub name: String,
    /// Internal hearings are for staff only.
    pub internal: bool,
    pub fields: Vec<FieldRule>,
    /// Text each field starts with (the template).
    #[serde(default)]
    pub template: BTreeMap<String, String>,
    /// What a response to a hearing of this type may carry.
    #[serde(default)]
    pub responses: ResponseRules,
}

impl HearingType {
    pub fn rule(&self, key: &str) -> Option<&FieldRule> {
        self.fields.iter().find(|f| f.key == key)
    }

    /// The fields every hearing type has, with OS2agora's usual limits.
    pub fn standard_fields() -> Vec<FieldRule> {
        vec![
            FieldRule::text("title", "Titel", false, Some(3), Some(200)),
            FieldRule::text("summary", "Resumé", false, Some(10), Some(1_000)),
            FieldRule::text("body", "Høringstekst", false, Some(10), Some(100_000)),
            FieldRule::text("esdh_title", "ESDH-titel", false, Some(3), Some(200)),
            FieldRule::text("conclusion", "Konklusion", true, None, Some(100_000)),
            FieldRule::files(
                "images",
                "Billeder",
                FieldKind::Images,
                10 * 1024 * 1024,
                10,
                &["image/png", "image/jpeg", "image/gif", "image/webp"],
            ),
            FieldRule::files(
                "documents",
                "Dokumenter",
                FieldKind::Documents,
                25 * 1024 * 1024,
                20,
                &[
                    "application/pdf",
                    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                    "image/png",
                    "image/jpeg",
                ],
            ),
        ]
    }
}

pub use agora_files::ResponseRules;

/// The longest response text any rule may allow.
pub const MAX_RESPONSE_TEXT: u32 = 200_000;

/// What is wrong with a hearing type's response rules.
pub fn response_rule_violations(rules: &ResponseRules) -> Vec<Violation> {
    let mut out: Vec<Violation> =
        rules.files.problems().into_iter().map(|p| Violation::new("response_rules", p)).collect();
    if rules.max_text_chars == 0 || rules.max_text_chars > MAX_RESPONSE_TEXT {
        out.push(Violation::new(
            "response_rules",
            format!("max_text_chars er {}; den skal være 1-{MAX_RESPONSE_TEXT}", rules.max_text_chars),
        ));
    }
    if rules.text_optional && rules.files.max_files == 0 {
        out.push(Violation::new("response_rules", "et svar uden tekst skal kunne have bilag"));
    }
    out
}
/// One thing wrong with the input, named so that a form can show it beside its field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub field: String,
    pub message: String,
}

impl Violation {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Checks a text value against its rule. `complete` also demands what a published
/// hearing needs (non-empty, minimum length); while editing a draft, partial text is fine.
pub fn check_text(rule: &FieldRule, value: &str, complete: bool, out: &mut Vec<Violation>) {
    let length = value.trim().chars().count() as u32;
    if let Some(max) = rule.max_length
        && length > max
    {
        out.push(Violation::new(&rule.key, format!("{} må højst være {max} tegn (er {length})", rule.label)));
    }
    if complete {
        if length == 0 && !rule.may_be_empty {
            out.push(Violation::new(&rule.key, format!("{} skal udfyldes", rule.label)));
        } else if let Some(min) = rule.min_length
            && length > 0
            && length < min
        {
            out.push(Violation::new(&rule.key, format!("{} skal være mindst {min} tegn (er {length})", rule.label)));
        }
    }
}

pub use agora_files::{sanitize_file_name, sniff_content_type};

/// Checks a file against its field's rule; `existing` is how many files the field holds.
pub fn check_file(rule: &FieldRule, size: u64, content_type: Option<&str>, existing: usize, out: &mut Vec<Violation>) {
    if rule.kind == FieldKind::Text {
        out.push(Violation::new(&rule.key, format!("{} er et tekstfelt og kan ikke have filer", rule.label)));
        return;
    }
    if let Some(max) = rule.max_file_size
        && size > max
    {
        out.push(Violation::new(&rule.key, format!("filen er {size} bytes; højst {max} bytes er tilladt")));
    }
    if size == 0 {
        out.push(Violation::new(&rule.key, "filen er tom"));
    }
    if let Some(max) = rule.max_file_count
        && existing as u32 >= max
    {
        out.push(Violation::new(&rule.key, format!("{} kan højst have {max} filer", rule.label)));
    }
    match content_type {
        Some(found) if rule.allowed_types.is_empty() || rule.allowed_types.iter().any(|t| t == found) => {}
        Some(found) => out.push(Violation::new(
            &rule.key,
            format!("filtypen {found} er ikke tilladt (tilladt: {})", rule.allowed_types.join(", ")),
        )),
        None => out.push(Violation::new(&rule.key, "filens type kan ikke genkendes ud fra indholdet")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_over_the_limit_is_refused_while_editing() {
        let rule = FieldRule::text("title", "Titel", false, Some(3), Some(5));
        let mut out = Vec::new();
        check_text(&rule, "abcdef", false, &mut out);
        assert_eq!(out, vec![Violation::new("title", "Titel må højst være 5 tegn (er 6)")]);
    }

    #[test]
    fn emptiness_and_minimum_are_checked_only_for_completion() {
        let rule = FieldRule::text("title", "Titel", false, Some(3), None);
        let mut out = Vec::new();
        check_text(&rule, "", false, &mut out);
        check_text(&rule, "ab", false, &mut out);
        assert!(out.is_empty());
        check_text(&rule, "", true, &mut out);
        check_text(&rule, "ab", true, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out[0].message.contains("udfyldes"));
        assert!(out[1].message.contains("mindst 3"));
    }

    #[test]
    fn danish_letters_count_as_one_character() {
        let rule = FieldRule::text("title", "Titel", false, None, Some(3));
        let mut out = Vec::new();
        check_text(&rule, "æøå", true, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn file_type_comes_from_content_not_name() {
        let pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n";
        assert_eq!(sniff_content_type(pdf), Some("application/pdf"));
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(sniff_content_type(png), Some("image/png"));
        assert_eq!(
            sniff_content_type(b"MZ\x90\0 an executable pretending to be a pdf"),
            Some("application/vnd.microsoft.portable-executable")
        );
        let rule = FieldRule::files("documents", "Dokumenter", FieldKind::Documents, 100, 2, &["application/pdf"]);
        let mut out = Vec::new();
        check_file(&rule, 50, sniff_content_type(b"MZ\x90\0 exe"), 0, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].message.contains("ikke tilladt"), "{out:?}");
    }

    #[test]
    fn file_size_and_count_limits() {
        let rule = FieldRule::files("documents", "Dokumenter", FieldKind::Documents, 100, 2, &["application/pdf"]);
        let mut out = Vec::new();
        check_file(&rule, 101, Some("application/pdf"), 2, &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
    }
}
