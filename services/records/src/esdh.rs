//! The seam to a municipality's records system (ESDH): open a case, change its handler, file
//! a document, close the case. Each adapter makes every call safe to repeat: a case is found
//! again by the hearing's reference, a document by the step's, so a call repeated after a
//! crash between the call and the record of its outcome never makes a second one.

use bytes::Bytes;

/// A case to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCase {
    /// Ours, unique per hearing (`agora:hearing:<id>`): how the case is found again.
    pub reference: String,
    pub title: String,
    /// The records system's case template.
    pub template: String,
    /// The case handler.
    pub handler: String,
    pub kle_number: String,
}

/// A case as the records system knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseRef {
    pub id: String,
    /// What people call it (e.g. `01.02.05-P20-1-26`).
    pub number: String,
}

/// A file of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentFile {
    pub name: String,
    pub content_type: String,
    pub content: Bytes,
}

/// A document to file on a case: the main file first, then its attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Ours, unique per document (`agora:<hearing id>:<step>`): how it is found again.
    pub reference: String,
    pub title: String,
    /// The records system's document type (høringstekst, høringssvar, konklusion).
    pub document_type: String,
    pub files: Vec<DocumentFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EsdhError {
    /// Worth another try later: unreachable, timed out, overloaded, a server error.
    #[error("{0}")]
    Unavailable(String),
    /// The records system refused the request itself; the same request will be refused again.
    #[error("refused: {0}")]
    Refused(String),
}

impl EsdhError {
    pub fn is_final(&self) -> bool {
        matches!(self, EsdhError::Refused(_))
    }
}

#[async_trait::async_trait]
pub trait RecordsSystem: Send + Sync {
    /// Names the adapter in logs and status.
    fn name(&self) -> &str;
    /// Opens the case, or finds the one opened before under the same reference.
    async fn open_case(&self, case: &NewCase) -> Result<CaseRef, EsdhError>;
    async fn change_handler(&self, case: &CaseRef, handler: &str) -> Result<(), EsdhError>;
    /// Files the document and returns its id in the records system; a document filed before
    /// under the same reference is not filed again, its id is returned.
    async fn file_document(&self, case: &CaseRef, document: &Document) -> Result<String, EsdhError>;
    /// Closes the case (closing a closed case is no error).
    async fn close_case(&self, case: &CaseRef) -> Result<(), EsdhError>;
}
