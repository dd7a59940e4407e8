//! The archive adapter: the records system of the embedded default and of municipalities
//! without an integration. A folder per hearing case holds a folder per document (its PDF
//! and attachments) and `metadata.json`, which describes the case and every document with
//! its files' SHA-256. Every write is atomic: files go to a temporary name, are flushed to
//! disk and renamed into place, so a reader (or a crash) never sees half a document.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::esdh::{CaseRef, Document, EsdhError, NewCase, RecordsSystem};

pub const METADATA: &str = "metadata.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedFile {
    pub name: String,
    /// Relative to the case folder.
    pub path: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedDocument {
    pub id: String,
    pub reference: String,
    pub title: String,
    pub document_type: String,
    pub filed_at: DateTime<Utc>,
    pub files: Vec<ArchivedFile>,
}

/// `metadata.json` of a case folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseMetadata {
    pub case_number: String,
    pub reference: String,
    pub title: String,
    pub template: String,
    pub kle_number: String,
    pub handler: String,
    /// Earlier handlers, oldest first.
    #[serde(default)]
    pub previous_handlers: Vec<String>,
    pub opened_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub documents: Vec<ArchivedDocument>,
}

pub struct Archive {
    root: PathBuf,
    /// One writer per case folder at a time (within this process).
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> EsdhError {
    EsdhError::Unavailable(format!("archive: cannot {what} {}: {e}", path.display()))
}

/// A name that is safe as one path component, keeping Danish letters.
fn safe_name(name: &str) -> String {
    let cleaned: String =
        name.chars().map(|c| if c.is_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { ' ' }).collect();
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    let joined = words.join(" ");
    let trimmed = joined.trim_start_matches(['.', ' ']);
    if trimmed.is_empty() { "fil".into() } else { trimmed.chars().take(120).collect() }
}

/// The case number a hearing's case gets in the archive: readable and stable.
fn case_number(reference: &str) -> String {
    let digest = hex::encode(Sha256::digest(reference.as_bytes()));
    format!("AGORA-{}", digest[..10].to_uppercase())
}

/// Makes a folder's entries (a rename into it) durable.
async fn sync_folder(folder: &Path) -> Result<(), EsdhError> {
    #[cfg(unix)]
    {
        let dir = tokio::fs::File::open(folder).await.map_err(|e| io("open", folder, e))?;
        dir.sync_all().await.map_err(|e| io("flush", folder, e))?;
    }
    #[cfg(not(unix))]
    let _ = folder;
    Ok(())
}

/// Writes `content` to `path` atomically and durably: a temporary file beside it, flushed,
/// renamed, and the folder flushed.
async fn write_atomically(path: &Path, content: &[u8]) -> Result<(), EsdhError> {
    let temporary = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let write = async {
        use tokio::io::AsyncWriteExt;
        let mut file = tokio::fs::File::create(&temporary).await?;
        file.write_all(content).await?;
        file.sync_all().await?;
        tokio::fs::rename(&temporary, path).await
    };
    if let Err(e) = write.await {
        let _ = tokio::fs::remove_file(&temporary).await;
        return Err(io("write", path, e));
    }
    match path.parent() {
        Some(folder) => sync_folder(folder).await,
        None => Ok(()),
    }
}

/// Removes what an earlier writer left half-done in a case folder: staging folders, and
/// temporary files. Called with the case's lock held, so nothing of this process is in them.
async fn clear_leftovers(folder: &Path) -> Result<(), EsdhError> {
    let mut entries = tokio::fs::read_dir(folder).await.map_err(|e| io("read", folder, e))?;
    while let Some(entry) = entries.next_entry().await.map_err(|e| io("read", folder, e))? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with(".staging-") {
            tokio::fs::remove_dir_all(&path).await.map_err(|e| io("remove", &path, e))?;
        } else if name.contains(".tmp-") {
            tokio::fs::remove_file(&path).await.map_err(|e| io("remove", &path, e))?;
        }
    }
    Ok(())
}

impl Archive {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), locks: Mutex::new(HashMap::new()) }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn folder(&self, case_number: &str) -> PathBuf {
        self.root.join(safe_name(case_number))
    }

    async fn lock(&self, case_number: &str) -> Arc<Mutex<()>> {
        self.locks.lock().await.entry(case_number.to_string()).or_default().clone()
    }

    /// A case folder's metadata, if the case exists.
    pub async fn metadata(&self, case_number: &str) -> Result<Option<CaseMetadata>, EsdhError> {
        let path = self.folder(case_number).join(METADATA);
        match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| EsdhError::Refused(format!("archive: {} is not case metadata: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path, e)),
        }
    }

    async fn save(&self, metadata: &CaseMetadata) -> Result<(), EsdhError> {
        let json = serde_json::to_vec_pretty(metadata).map_err(|e| EsdhError::Refused(e.to_string()))?;
        write_atomically(&self.folder(&metadata.case_number).join(METADATA), &json).await
    }

    async fn existing(&self, case: &CaseRef) -> Result<CaseMetadata, EsdhError> {
        self.metadata(&case.number)
            .await?
            .ok_or_else(|| EsdhError::Refused(format!("archive: no case {} (no {METADATA})", case.number)))
    }
}

#[async_trait::async_trait]
impl RecordsSystem for Archive {
    fn name(&self) -> &str {
        "archive"
    }

    async fn open_case(&self, case: &NewCase) -> Result<CaseRef, EsdhError> {
        let number = case_number(&case.reference);
        let lock = self.lock(&number).await;
        let _guard = lock.lock().await;
        if self.metadata(&number).await?.is_none() {
            let folder = self.folder(&number);
            tokio::fs::create_dir_all(&folder).await.map_err(|e| io("create", &folder, e))?;
            self.save(&CaseMetadata {
                case_number: number.clone(),
                reference: case.reference.clone(),
                title: case.title.clone(),
                template: case.template.clone(),
                kle_number: case.kle_number.clone(),
                handler: case.handler.clone(),
                previous_handlers: Vec::new(),
                opened_at: Utc::now(),
                closed_at: None,
                documents: Vec::new(),
            })
            .await?;
        }
        Ok(CaseRef { id: number.clone(), number })
    }

    async fn change_handler(&self, case: &CaseRef, handler: &str) -> Result<(), EsdhError> {
        let lock = self.lock(&case.number).await;
        let _guard = lock.lock().await;
        let mut metadata = self.existing(case).await?;
        if metadata.handler != handler {
            let previous = std::mem::replace(&mut metadata.handler, handler.to_string());
            metadata.previous_handlers.push(previous);
            self.save(&metadata).await?;
        }
        Ok(())
    }

    async fn file_document(&self, case: &CaseRef, document: &Document) -> Result<String, EsdhError> {
        let lock = self.lock(&case.number).await;
        let _guard = lock.lock().await;
        let mut metadata = self.existing(case).await?;
        if let Some(filed) = metadata.documents.iter().find(|d| d.reference == document.reference) {
            return Ok(filed.id.clone());
        }
        let id = format!("{:04}", metadata.documents.len() + 1);
        // Named by the document's reference, not its number: a folder a crash left before its
        // metadata was written has the same name when the filing is repeated, and is replaced.
        let tag = &hex::encode(Sha256::digest(document.reference.as_bytes()))[..8];
        let folder_name = format!("{} {tag}", safe_name(&document.title));
        let case_folder = self.folder(&case.number);
        clear_leftovers(&case_folder).await?;
        let target = case_folder.join(&folder_name);
        let staging = case_folder.join(format!(".staging-{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::create_dir_all(&staging).await.map_err(|e| io("create", &staging, e))?;
        let mut files = Vec::new();
        let mut taken: Vec<String> = Vec::new();
        for file in &document.files {
            let mut name = safe_name(&file.name);
            let mut n = 1;
            while taken.contains(&name) {
                n += 1;
                name = format!("{n}-{}", safe_name(&file.name));
            }
            taken.push(name.clone());
            write_atomically(&staging.join(&name), &file.content).await?;
            files.push(ArchivedFile {
                name: file.name.clone(),
                path: format!("{folder_name}/{name}"),
                content_type: file.content_type.clone(),
                size: file.content.len() as u64,
                sha256: hex::encode(Sha256::digest(&file.content)),
            });
        }
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            tokio::fs::remove_dir_all(&target).await.map_err(|e| io("replace", &target, e))?;
        }
        sync_folder(&staging).await?;
        tokio::fs::rename(&staging, &target).await.map_err(|e| io("move into place", &target, e))?;
        sync_folder(&case_folder).await?;
        metadata.documents.push(ArchivedDocument {
            id: id.clone(),
            reference: document.reference.clone(),
            title: document.title.clone(),
            document_type: document.document_type.clone(),
            filed_at: Utc::now(),
            files,
        });
        self.save(&metadata).await?;
        Ok(id)
    }

    async fn close_case(&self, case: &CaseRef) -> Result<(), EsdhError> {
        let lock = self.lock(&case.number).await;
        let _guard = lock.lock().await;
        let mut metadata = self.existing(case).await?;
        if metadata.closed_at.is_none() {
            metadata.closed_at = Some(Utc::now());
            self.save(&metadata).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esdh::DocumentFile;

    fn case() -> NewCase {
        NewCase {
            reference: "agora:hearing:1".into(),
            title: "Lokalplan 12".into(),
            template: "T".into(),
            handler: "karen".into(),
            kle_number: "01.02.05".into(),
        }
    }

    fn document(reference: &str, title: &str) -> Document {
        Document {
            reference: reference.into(),
            title: title.into(),
            document_type: "Høringssvar".into(),
            files: vec![
                DocumentFile {
                    name: "svar.pdf".into(),
                    content_type: "application/pdf".into(),
                    content: "%PDF-1".into(),
                },
                DocumentFile {
                    name: "../../etc/passwd".into(),
                    content_type: "text/plain".into(),
                    content: "bilag".into(),
                },
            ],
        }
    }

    #[tokio::test]
    async fn a_case_and_its_documents_are_filed_once_with_checksums_however_often_asked() {
        let dir = tempfile::tempdir().expect("tmp");
        let archive = Archive::new(dir.path());
        let opened = archive.open_case(&case()).await.expect("open");
        assert_eq!(archive.open_case(&case()).await.expect("again"), opened, "found again by its reference");
        let first =
            archive.file_document(&opened, &document("agora:1:response-a", "Høringssvar nr. 1")).await.expect("file");
        let again =
            archive.file_document(&opened, &document("agora:1:response-a", "Høringssvar nr. 1")).await.expect("again");
        assert_eq!(first, again);
        archive.file_document(&opened, &document("agora:1:response-b", "Høringssvar nr. 2")).await.expect("second");
        archive.change_handler(&opened, "lars").await.expect("handler");
        archive.close_case(&opened).await.expect("close");
        archive.close_case(&opened).await.expect("closing twice is no error");

        let metadata = archive.metadata(&opened.number).await.expect("read").expect("exists");
        assert_eq!(metadata.documents.len(), 2);
        assert_eq!(
            (metadata.handler.as_str(), metadata.previous_handlers.as_slice()),
            ("lars", &["karen".to_string()][..])
        );
        assert!(metadata.closed_at.is_some());
        let filed = &metadata.documents[0];
        assert!(filed.files[1].path.ends_with("/etc passwd"), "no way out of the folder: {}", filed.files[1].path);
        assert!(filed.files[1].path.starts_with("Høringssvar nr. 1 "), "{}", filed.files[1].path);
        let folder = dir.path().join(&opened.number);
        for file in metadata.documents.iter().flat_map(|d| &d.files) {
            let bytes = std::fs::read(folder.join(&file.path)).expect("file on disk");
            assert_eq!(hex::encode(Sha256::digest(&bytes)), file.sha256);
        }
        let leftovers: Vec<_> = std::fs::read_dir(&folder)
            .expect("folder")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') || n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test]
    async fn a_document_folder_left_by_a_crash_is_replaced_not_doubled() {
        let dir = tempfile::tempdir().expect("tmp");
        let archive = Archive::new(dir.path());
        let opened = archive.open_case(&case()).await.expect("open");
        let filed = document("agora:1:response-a", "Høringssvar nr. 1");
        archive.file_document(&opened, &filed).await.expect("file");
        let metadata = archive.metadata(&opened.number).await.expect("read").expect("case");
        let folder_name = metadata.documents[0].files[0].path.split('/').next().expect("folder").to_string();
        // The crash: the folder was moved into place, the metadata never written; and a
        // staging folder and a temporary file were left behind.
        let mut without = metadata.clone();
        without.documents.clear();
        archive.save(&without).await.expect("metadata as before the filing");
        let case_folder = dir.path().join(&opened.number);
        std::fs::write(case_folder.join(&folder_name).join("halv.pdf"), b"half").expect("stale file");
        std::fs::create_dir_all(case_folder.join(".staging-old")).expect("staging");
        std::fs::write(case_folder.join("metadata.tmp-old"), b"{").expect("temporary");
        archive.file_document(&opened, &filed).await.expect("the repeat");
        let metadata = archive.metadata(&opened.number).await.expect("read").expect("case");
        assert_eq!(metadata.documents.len(), 1);
        let mut names: Vec<String> = std::fs::read_dir(&case_folder)
            .expect("folder")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [folder_name.clone(), METADATA.to_string()], "one folder, nothing left over");
        assert!(!case_folder.join(&folder_name).join("halv.pdf").exists());
    }

    #[tokio::test]
    async fn filing_on_a_case_that_does_not_exist_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let archive = Archive::new(dir.path());
        let missing = CaseRef { id: "x".into(), number: "AGORA-NOPE".into() };
        let error = archive.file_document(&missing, &document("r", "t")).await.expect_err("no case");
        assert!(error.is_final() && error.to_string().contains("AGORA-NOPE"), "{error}");
    }
}
