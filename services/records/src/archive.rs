//! The archive adapter: the records system of the embedded default and of municipalities
//! without an integration. A folder per hearing case holds `metadata.json`, which describes
//! the case, and a folder per document with its PDF, its attachments and `document.json`
//! (reference, title, type, each file's SHA-256). Every write is atomic: a document is
//! assembled in a staging folder, flushed and renamed into place, so a reader (or a crash)
//! never sees half a document, and filing costs the same however many the case holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::esdh::{CaseRef, Document, EsdhError, NewCase, RecordsSystem};

pub const METADATA: &str = "metadata.json";
/// In each document's folder: the document, its reference and its files' SHA-256.
pub const DOCUMENT: &str = "document.json";

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
    /// Read through [`Archive::metadata`], every document of the case in filing order. In the
    /// file, only those filed by archives from before `document.json` (kept, never rewritten).
    #[serde(default)]
    pub documents: Vec<ArchivedDocument>,
}

/// The archive under a root folder: a folder per case.
pub struct Archive {
    root: PathBuf,
    cases: Mutex<HashMap<String, Arc<Mutex<CaseState>>>>,
}

/// What became of a staged document.
enum Placed {
    /// Moved into place under this number.
    Moved(String),
    /// Filed before, under this number.
    Already(String),
}

/// What this process knows of a case folder once it has looked at it: filing a document then
/// costs the same in a case of ten documents as in one of fifty thousand.
#[derive(Default)]
struct CaseState {
    scanned: bool,
    /// Documents filed on the case (they are numbered in filing order).
    documents: usize,
    /// Documents recorded in `metadata.json` by archives from before `document.json`, by
    /// reference.
    earlier: HashMap<String, String>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> EsdhError {
    EsdhError::Unavailable(format!("archive: cannot {what} {}: {e}", path.display()))
}

/// A name that stays inside its folder and is safe on common file systems.
fn safe_name(name: &str) -> String {
    let cleaned: String =
        name.chars().map(|c| if c.is_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { ' ' }).collect();
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    let joined = words.join(" ");
    let trimmed = joined.trim_start_matches(['.', ' ']);
    if trimmed.is_empty() { "fil".into() } else { trimmed.chars().take(120).collect() }
}

/// A case number that is the same for the same reference: the case is found again.
fn case_number(reference: &str) -> String {
    let digest = hex::encode(Sha256::digest(reference.as_bytes()));
    format!("AGORA-{}", digest[..10].to_uppercase())
}

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

/// Files a document on a case whose folder was scanned: its files are written and flushed
/// before the case's lock is taken, beside those of other filings; only the number,
/// document.json and the move into place are one at a time. A number is taken only once the
/// document is in place, so a filing that fails leaves no gap.
async fn stage_and_place(
    lock: Arc<Mutex<CaseState>>,
    case_folder: PathBuf,
    document: Document,
) -> Result<String, EsdhError> {
    // Named by the document's reference, not its number: a repeated filing finds the folder by
    // its name, and a folder is filed once it is in place with its document.json.
    let tag = &hex::encode(Sha256::digest(document.reference.as_bytes()))[..8];
    let folder_name = format!("{} {tag}", safe_name(&document.title));
    let target = case_folder.join(&folder_name);
    // A repeat (after a crash, or a step's lease) finds it without writing it again; a folder
    // appears whole, so this needs no lock, and the check under the lock below decides.
    if let Some(id) = filed_as(&target, &document.reference).await? {
        return Ok(id);
    }
    let staging = case_folder.join(format!(".staging-{}", uuid::Uuid::new_v4().simple()));
    let files = match stage_files(&staging, &folder_name, &document).await {
        Ok(files) => files,
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return Err(e);
        }
    };
    let mut state = lock.lock().await;
    let placed = place(&mut state, &staging, &case_folder, &target, &document, files).await;
    if !matches!(placed, Ok(Placed::Moved(_))) {
        let _ = tokio::fs::remove_dir_all(&staging).await;
    }
    placed.map(|(Placed::Moved(id) | Placed::Already(id))| id)
}

/// The number of the document filed in `target` under `reference`, if it is there.
async fn filed_as(target: &Path, reference: &str) -> Result<Option<String>, EsdhError> {
    let filed: Option<ArchivedDocument> = read_json(&target.join(DOCUMENT), "a filed document").await?;
    Ok(filed.filter(|f| f.reference == reference).map(|f| f.id))
}

/// Numbers a staged document and moves it into place, under the case's lock; or finds it
/// filed already (a repeated filing), and then leaves the staged copy to be removed.
async fn place(
    state: &mut CaseState,
    staging: &Path,
    case_folder: &Path,
    target: &Path,
    document: &Document,
    files: Vec<ArchivedFile>,
) -> Result<Placed, EsdhError> {
    if let Some(id) = filed_as(target, &document.reference).await? {
        return Ok(Placed::Already(id));
    }
    let id = format!("{:04}", state.documents + 1);
    let archived = ArchivedDocument {
        id: id.clone(),
        reference: document.reference.clone(),
        title: document.title.clone(),
        document_type: document.document_type.clone(),
        filed_at: Utc::now(),
        files,
    };
    let json = serde_json::to_vec_pretty(&archived).map_err(|e| EsdhError::Refused(e.to_string()))?;
    write_flushed(&staging.join(DOCUMENT), &json).await?;
    sync_folder(staging).await?;
    // A folder of the same name without its document.json (an archive from before it, or
    // a crash there) is replaced.
    if tokio::fs::try_exists(target).await.unwrap_or(false) {
        tokio::fs::remove_dir_all(target).await.map_err(|e| io("replace", target, e))?;
    }
    tokio::fs::rename(staging, target).await.map_err(|e| io("move into place", target, e))?;
    state.documents += 1;
    sync_folder(case_folder).await?;
    Ok(Placed::Moved(id))
}

/// Writes a document's files into its staging folder, each flushed; what document.json lists
/// of them.
async fn stage_files(staging: &Path, folder_name: &str, document: &Document) -> Result<Vec<ArchivedFile>, EsdhError> {
    tokio::fs::create_dir_all(staging).await.map_err(|e| io("create", staging, e))?;
    let mut files = Vec::new();
    let mut taken: Vec<String> = vec![DOCUMENT.to_string()];
    for file in &document.files {
        let mut name = safe_name(&file.name);
        let mut n = 1;
        while taken.contains(&name) {
            n += 1;
            name = format!("{n}-{}", safe_name(&file.name));
        }
        taken.push(name.clone());
        // The staging folder is moved into place whole, after everything in it is flushed.
        write_flushed(&staging.join(&name), &file.content).await?;
        files.push(ArchivedFile {
            name: file.name.clone(),
            path: format!("{folder_name}/{name}"),
            content_type: file.content_type.clone(),
            size: file.content.len() as u64,
            sha256: hex::encode(Sha256::digest(&file.content)),
        });
    }
    Ok(files)
}

/// Writes a file and flushes it to disk.
async fn write_flushed(path: &Path, content: &[u8]) -> Result<(), EsdhError> {
    use tokio::io::AsyncWriteExt;
    let write = async {
        let mut file = tokio::fs::File::create(path).await?;
        file.write_all(content).await?;
        file.sync_all().await
    };
    write.await.map_err(|e| io("write", path, e))
}

/// Writes a file under a temporary name, flushes it and renames it into place, then flushes
/// the folder: a reader never sees half a file, and the power going leaves the old or the new.
async fn write_atomically(path: &Path, content: &[u8]) -> Result<(), EsdhError> {
    let temporary = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    if let Err(e) = write_flushed(&temporary, content).await {
        let _ = tokio::fs::remove_file(&temporary).await;
        return Err(e);
    }
    tokio::fs::rename(&temporary, path).await.map_err(|e| io("move into place", path, e))?;
    match path.parent() {
        Some(folder) => sync_folder(folder).await,
        None => Ok(()),
    }
}

/// Removes what a crash left in a case folder: staging folders and temporary files.
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

async fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<Option<T>, EsdhError> {
    match tokio::fs::read(path).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| EsdhError::Refused(format!("archive: {} is not {what}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path, e)),
    }
}

/// The documents filed in a case folder, from their own `document.json`.
async fn filed_documents(folder: &Path) -> Result<Vec<ArchivedDocument>, EsdhError> {
    let mut documents = Vec::new();
    let mut entries = tokio::fs::read_dir(folder).await.map_err(|e| io("read", folder, e))?;
    while let Some(entry) = entries.next_entry().await.map_err(|e| io("read", folder, e))? {
        let folder = entry.file_type().await.map_err(|e| io("read", &entry.path(), e))?.is_dir();
        if !folder || entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if let Some(document) = read_json(&entry.path().join(DOCUMENT), "a filed document").await? {
            documents.push(document);
        }
    }
    Ok(documents)
}

impl Archive {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), cases: Mutex::new(HashMap::new()) }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn folder(&self, case_number: &str) -> PathBuf {
        self.root.join(safe_name(case_number))
    }

    async fn lock(&self, case_number: &str) -> Arc<Mutex<CaseState>> {
        self.cases.lock().await.entry(case_number.to_string()).or_default().clone()
    }

    /// A case folder's metadata with every document filed on it (in filing order), if the case
    /// exists.
    pub async fn metadata(&self, case_number: &str) -> Result<Option<CaseMetadata>, EsdhError> {
        let Some(mut metadata) = self.stored(case_number).await? else { return Ok(None) };
        metadata.documents.extend(filed_documents(&self.folder(case_number)).await?);
        let number = |d: &ArchivedDocument| d.id.parse::<u64>().unwrap_or(u64::MAX);
        metadata.documents.sort_by_key(number);
        Ok(Some(metadata))
    }

    /// `metadata.json` alone: the case, and the documents archives from before `document.json`
    /// recorded there.
    async fn stored(&self, case_number: &str) -> Result<Option<CaseMetadata>, EsdhError> {
        read_json(&self.folder(case_number).join(METADATA), "case metadata").await
    }

    async fn save(&self, metadata: &CaseMetadata) -> Result<(), EsdhError> {
        let json = serde_json::to_vec_pretty(metadata).map_err(|e| EsdhError::Refused(e.to_string()))?;
        write_atomically(&self.folder(&metadata.case_number).join(METADATA), &json).await
    }

    async fn existing(&self, case: &CaseRef) -> Result<CaseMetadata, EsdhError> {
        self.stored(&case.number)
            .await?
            .ok_or_else(|| EsdhError::Refused(format!("archive: no case {} (no {METADATA})", case.number)))
    }

    /// The first time this process touches a case: clears what a crash left and counts what is
    /// filed.
    async fn scan(&self, case: &CaseRef, state: &mut CaseState) -> Result<(), EsdhError> {
        if state.scanned {
            return Ok(());
        }
        let stored = self.existing(case).await?;
        let folder = self.folder(&case.number);
        clear_leftovers(&folder).await?;
        state.documents = stored.documents.len() + filed_documents(&folder).await?.len();
        state.earlier = stored.documents.into_iter().map(|d| (d.reference, d.id)).collect();
        state.scanned = true;
        Ok(())
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
        if self.stored(&number).await?.is_none() {
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
        {
            // Before anything is staged: the first touch of a case clears the staging folders
            // a crash left, which must not take this filing's.
            let mut state = lock.lock().await;
            self.scan(case, &mut state).await?;
            if let Some(id) = state.earlier.get(&document.reference) {
                return Ok(id.clone());
            }
        }
        // A task of its own, so that a caller who stops waiting (a step's deadline) does not
        // stop the filing between its move into place and the count of the case's documents:
        // the next document would take the same number. The caller's repeat finds it filed.
        let filing = tokio::spawn(stage_and_place(lock, self.folder(&case.number), document.clone()));
        filing
            .await
            .map_err(|e| EsdhError::Unavailable(format!("archive: filing {} stopped: {e}", document.reference)))?
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

    /// What a case folder holds of staging folders and temporary files.
    fn leftovers(folder: &Path) -> Vec<String> {
        std::fs::read_dir(folder)
            .expect("folder")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') || n.contains(".tmp-"))
            .collect()
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
        let leftovers = leftovers(&folder);
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    /// Filings on one case at once (their files are written side by side, outside the case's
    /// lock) get the numbers 1 to n, each once, with nothing left in staging; the same
    /// document filed by several at once is filed once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn documents_filed_at_once_on_one_case_are_numbered_without_gaps_or_repeats() {
        let dir = tempfile::tempdir().expect("tmp");
        let archive = Arc::new(Archive::new(dir.path()));
        let opened = archive.open_case(&case()).await.expect("open");
        let filings = (0..40).map(|n| {
            let (archive, opened) = (archive.clone(), opened.clone());
            // Every tenth filing is of the same document.
            let n = if n % 10 == 0 { 0 } else { n };
            tokio::spawn(async move {
                let reference = format!("agora:1:response-{n}");
                let id = archive.file_document(&opened, &document(&reference, &format!("Høringssvar nr. {n}"))).await;
                (reference, id.expect("filed"))
            })
        });
        let mut by_reference: HashMap<String, Vec<String>> = HashMap::new();
        for filing in futures::future::join_all(filings).await {
            let (reference, id) = filing.expect("the filing's task");
            by_reference.entry(reference).or_default().push(id);
        }
        let repeated = &by_reference["agora:1:response-0"];
        assert_eq!(repeated.len(), 4);
        assert!(repeated.iter().all(|id| id == &repeated[0]), "one document, one number: {repeated:?}");

        let metadata = archive.metadata(&opened.number).await.expect("read").expect("exists");
        let numbers: Vec<&str> = metadata.documents.iter().map(|d| d.id.as_str()).collect();
        let expected: Vec<String> = (1..=37).map(|n| format!("{n:04}")).collect();
        assert_eq!(numbers, expected.iter().map(String::as_str).collect::<Vec<_>>());
        for document in &metadata.documents {
            assert_eq!(by_reference[&document.reference][0], document.id, "{}", document.reference);
        }
        let leftovers = leftovers(&dir.path().join(&opened.number));
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test]
    async fn what_a_crash_left_is_cleared_and_a_repeated_filing_finds_the_first() {
        let dir = tempfile::tempdir().expect("tmp");
        let archive = Archive::new(dir.path());
        let opened = archive.open_case(&case()).await.expect("open");
        let filed = document("agora:1:response-a", "Høringssvar nr. 1");
        let id = archive.file_document(&opened, &filed).await.expect("file");
        let metadata = archive.metadata(&opened.number).await.expect("read").expect("case");
        let folder_name = metadata.documents[0].files[0].path.split('/').next().expect("folder").to_string();
        // The crash, in another process: a staging folder and a temporary file left behind, and
        // a folder of the next document moved into place without its document.json (as an
        // archive from before document.json left it).
        let case_folder = dir.path().join(&opened.number);
        std::fs::create_dir_all(case_folder.join(".staging-old")).expect("staging");
        std::fs::write(case_folder.join("metadata.tmp-old"), b"{").expect("temporary");
        let next = document("agora:1:response-b", "Høringssvar nr. 2");
        let tag = &hex::encode(Sha256::digest(b"agora:1:response-b"))[..8];
        let stale = case_folder.join(format!("Høringssvar nr. 2 {tag}"));
        std::fs::create_dir_all(&stale).expect("stale folder");
        std::fs::write(stale.join("halv.pdf"), b"half").expect("stale file");

        let restarted = Archive::new(dir.path());
        assert_eq!(restarted.file_document(&opened, &filed).await.expect("the repeat"), id, "found, not filed again");
        assert_eq!(restarted.file_document(&opened, &next).await.expect("the next"), "0002");
        let metadata = restarted.metadata(&opened.number).await.expect("read").expect("case");
        let ids: Vec<&str> = metadata.documents.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["0001", "0002"]);
        let mut names: Vec<String> = std::fs::read_dir(&case_folder)
            .expect("folder")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let second = format!("Høringssvar nr. 2 {tag}");
        assert_eq!(names, [folder_name, second, METADATA.to_string()], "one folder each, nothing left over");
        assert!(!stale.join("halv.pdf").exists(), "the stale folder was replaced");
    }

    #[tokio::test]
    async fn documents_an_older_archive_recorded_in_its_metadata_are_kept_and_not_filed_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let archive = Archive::new(dir.path());
        let opened = archive.open_case(&case()).await.expect("open");
        let mut stored = archive.existing(&opened).await.expect("case");
        stored.documents.push(ArchivedDocument {
            id: "0001".into(),
            reference: "agora:1:response-a".into(),
            title: "Høringssvar nr. 1".into(),
            document_type: "Høringssvar".into(),
            filed_at: Utc::now(),
            files: Vec::new(),
        });
        archive.save(&stored).await.expect("an older archive's metadata");
        let archive = Archive::new(dir.path());
        let again = archive.file_document(&opened, &document("agora:1:response-a", "Høringssvar nr. 1")).await;
        assert_eq!(again.expect("the repeat"), "0001");
        let next = archive.file_document(&opened, &document("agora:1:response-b", "Høringssvar nr. 2")).await;
        assert_eq!(next.expect("the next"), "0002");
        archive.close_case(&opened).await.expect("close");
        let metadata = archive.metadata(&opened.number).await.expect("read").expect("case");
        let references: Vec<&str> = metadata.documents.iter().map(|d| d.reference.as_str()).collect();
        assert_eq!(references, ["agora:1:response-a", "agora:1:response-b"]);
        assert!(metadata.closed_at.is_some());
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
