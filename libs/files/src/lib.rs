//! Uploaded files, as every service that takes them needs them handled: a name that is safe to
//! show and store, a type told by content rather than by name, and a virus scan through
//! clamd's INSTREAM protocol.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
}
