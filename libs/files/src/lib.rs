//! Uploaded files, as every service that takes them needs them handled: a name that is safe to
//! show and store, a type told by content rather than by name, and a virus scan through
//! clamd's INSTREAM protocol.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// File types told apart by content that people send as documents and pictures; rules may
/// allow only these, since a type that cannot be recognised could never pass.
pub const RECOGNISED_TYPES: &[&str] = &[
    "application/pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/msword",
    "application/rtf",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/tiff",
    "image/heif",
];

/// How many files of which size and types may go with one submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRules {
    pub max_files: u32,
    pub max_bytes: u64,
    /// MIME types, checked against each file's content.
    pub allowed_types: Vec<String>,
}

/// The largest single file any rule may allow: uploads pass through memory.
pub const MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;
/// The most files any rule may allow on one submission.
pub const MAX_FILES: u32 = 50;

impl Default for FileRules {
    /// OS2agora's defaults for responses: ten files of 10 MB, documents and pictures.
    fn default() -> Self {
        Self {
            max_files: 10,
            max_bytes: 10 * 1024 * 1024,
            allowed_types: [
                "application/pdf",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "image/png",
                "image/jpeg",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }
}

impl FileRules {
    /// What is wrong with the rules themselves, each as a sentence naming the setting.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.max_files > MAX_FILES {
            out.push(format!("max_files is {}; at most {MAX_FILES} files are possible", self.max_files));
        }
        if self.max_files > 0 && (self.max_bytes == 0 || self.max_bytes > MAX_FILE_BYTES) {
            out.push(format!("max_bytes is {}; it must be 1 to {MAX_FILE_BYTES}", self.max_bytes));
        }
        if self.max_files > 0 && self.allowed_types.is_empty() {
            out.push("allowed_types is empty while files are allowed".to_string());
        }
        for kind in &self.allowed_types {
            if !RECOGNISED_TYPES.contains(&kind.as_str()) {
                out.push(format!("allowed_types: {kind} cannot be recognised by content"));
            }
        }
        out
    }

    /// Checks one file against the rules; the error names the file and the rule it breaks.
    /// Returns the type told from the content.
    pub fn check(&self, name: &str, content: &[u8]) -> Result<&'static str, String> {
        let size = content.len() as u64;
        if size == 0 {
            return Err(format!("{name}: the file is empty"));
        }
        if size > self.max_bytes {
            return Err(format!("{name}: {size} bytes; at most {} are allowed", self.max_bytes));
        }
        let Some(kind) = sniff_content_type(content) else {
            return Err(format!("{name}: the file's type cannot be recognised from its content"));
        };
        if !self.allowed_types.iter().any(|t| t == kind) {
            return Err(format!("{name}: files of type {kind} are not allowed"));
        }
        Ok(kind)
    }

    /// Checks the number of files.
    pub fn check_count(&self, count: usize) -> Result<(), String> {
        if count > self.max_files as usize {
            return Err(format!("{count} files; at most {} are allowed", self.max_files));
        }
        Ok(())
    }
}

/// Makes a client-sent file name safe to show and store: no directories, no control
/// characters, bounded length, never empty.
pub fn sanitize_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') { '_' } else { c })
        .collect();
    let bounded: String = cleaned.trim().trim_start_matches('.').trim().chars().take(120).collect();
    if bounded.is_empty() { "fil".to_string() } else { bounded }
}

/// Detects a file's type from its first bytes; the name a client sends is not trusted.
pub fn sniff_content_type(bytes: &[u8]) -> Option<&'static str> {
    infer::get(bytes).map(|kind| kind.mime_type())
}

/// What a response to a hearing may carry: the hearing type defines it, the hearing's
/// integration events carry it, and the response service enforces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseRules {
    /// A response may be attachments only.
    pub text_optional: bool,
    pub max_text_chars: u32,
    pub files: FileRules,
}

impl Default for ResponseRules {
    fn default() -> Self {
        Self { text_optional: false, max_text_chars: 50_000, files: FileRules::default() }
    }
}

/// A virus scanner speaking clamd's INSTREAM protocol.
#[derive(Debug, Clone)]
pub struct Clamd {
    pub address: String,
}

impl Clamd {
    /// `Ok(None)` when clean, `Ok(Some(signature))` when infected.
    pub async fn scan(&self, content: &[u8]) -> std::io::Result<Option<String>> {
        let mut stream = tokio::net::TcpStream::connect(&self.address).await?;
        stream.write_all(b"zINSTREAM\0").await?;
        for chunk in content.chunks(64 * 1024) {
            stream.write_all(&(chunk.len() as u32).to_be_bytes()).await?;
            stream.write_all(chunk).await?;
        }
        stream.write_all(&0u32.to_be_bytes()).await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        let reply = String::from_utf8_lossy(&reply).trim_end_matches('\0').trim().to_string();
        match reply.strip_prefix("stream: ") {
            Some("OK") => Ok(None),
            Some(found) if found.ends_with(" FOUND") => Ok(Some(found.trim_end_matches(" FOUND").to_string())),
            _ => Err(std::io::Error::other(format!("clamd answered '{reply}'"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_lose_paths_and_control_characters() {
        assert_eq!(sanitize_file_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_file_name("C:\\Users\\x\\høringssvar.pdf"), "høringssvar.pdf");
        assert_eq!(sanitize_file_name("a\u{0}b<c>.pdf"), "ab_c_.pdf");
        assert_eq!(sanitize_file_name(".."), "fil");
        assert_eq!(sanitize_file_name(""), "fil");
    }

    #[test]
    fn file_type_comes_from_content_not_name() {
        assert_eq!(sniff_content_type(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"), Some("application/pdf"));
        assert_eq!(
            sniff_content_type(b"MZ\x90\0 an executable"),
            Some("application/vnd.microsoft.portable-executable")
        );
        assert_eq!(sniff_content_type(b"just text"), None);
    }

    #[test]
    fn file_rules_name_the_file_and_the_rule() {
        let rules = FileRules { max_files: 2, max_bytes: 20, allowed_types: vec!["application/pdf".into()] };
        assert_eq!(rules.check("a.pdf", b"%PDF-1.7\n"), Ok("application/pdf"));
        assert_eq!(rules.check("a.pdf", b""), Err("a.pdf: the file is empty".into()));
        assert_eq!(rules.check("b.pdf", &[b'%'; 21]), Err("b.pdf: 21 bytes; at most 20 are allowed".into()));
        assert_eq!(
            rules.check("virus.pdf", b"MZ\x90\0 exe"),
            Err("virus.pdf: files of type application/vnd.microsoft.portable-executable are not allowed".into())
        );
        assert_eq!(rules.check_count(3), Err("3 files; at most 2 are allowed".into()));
        assert!(rules.problems().is_empty());
        let wrong = FileRules { max_files: 99, max_bytes: 0, allowed_types: vec!["text/x-unknown".into()] };
        assert_eq!(wrong.problems().len(), 3, "{:?}", wrong.problems());
    }
}
