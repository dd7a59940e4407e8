//! Documents people read, made the same way by every service that makes them: PDF with the
//! fonts embedded (so Danish letters survive any reader), Excel workbooks, and zip archives
//! written as a stream so that a large export never sits whole in memory.

pub mod archive;
pub mod pdf;
pub mod testing;
pub mod workbook;

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("the PDF could not be written: {0}")]
    Pdf(String),
    #[error("the workbook could not be written: {0}")]
    Workbook(String),
    #[error("the archive could not be written: {0}")]
    Archive(String),
    /// The reader went away; nothing more is written.
    #[error("the reader stopped reading")]
    Closed,
}
