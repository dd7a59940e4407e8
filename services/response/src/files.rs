//! Attachments: checked by content, size and count, scanned by clamd where one is configured,
//! stored before the response is accepted and removed again if it is not.

use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::IntakeError;

/// A file as a respondent sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub name: String,
    pub content: Bytes,
}

/// A stored attachment, as the response's event records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub id: Uuid,
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
}

/// The rules for attachments (OS2agora's defaults: ten files of 10 MB).
#[derive(Debug, Clone)]
pub struct AttachmentRules {
    pub max_files: usize,
    pub max_size: u64,
    pub allowed_types: Vec<String>,
}

impl Default for AttachmentRules {
    fn default() -> Self {
        Self {
            max_files: 10,
            max_size: 10 * 1024 * 1024,
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

pub use agora_files::Clamd;

/// Where attachments go, and how they are checked.
#[derive(Clone)]
pub struct Attachments {
    pub store: Arc<dyn ObjectStore>,
    pub rules: AttachmentRules,
    pub scanner: Option<Clamd>,
}

pub fn path(id: Uuid) -> ObjectPath {
    ObjectPath::from(format!("responses/attachments/{id}"))
}

impl Attachments {
    /// Checks every file (naming the file and the rule it breaks), scans them, and stores
    /// them; a refusal stores nothing.
    pub async fn accept(&self, uploads: &[Upload]) -> Result<Vec<Attachment>, IntakeError> {
        if uploads.len() > self.rules.max_files {
            return Err(IntakeError::Invalid(format!(
                "{} files; at most {} are allowed",
                uploads.len(),
                self.rules.max_files
            )));
        }
        let mut checked = Vec::with_capacity(uploads.len());
        for upload in uploads {
            let name = agora_files::sanitize_file_name(&upload.name);
            let size = upload.content.len() as u64;
            if size == 0 {
                return Err(IntakeError::Invalid(format!("{name}: the file is empty")));
            }
            if size > self.rules.max_size {
                return Err(IntakeError::Invalid(format!(
                    "{name}: {size} bytes; at most {} are allowed",
                    self.rules.max_size
                )));
            }
            let Some(kind) = agora_files::sniff_content_type(&upload.content) else {
                return Err(IntakeError::Invalid(format!(
                    "{name}: the file's type cannot be recognised from its content"
                )));
            };
            if !self.rules.allowed_types.iter().any(|t| t == kind) {
                return Err(IntakeError::Invalid(format!("{name}: files of type {kind} are not allowed")));
            }
            if let Some(scanner) = &self.scanner {
                match scanner.scan(&upload.content).await {
                    Ok(None) => {}
                    Ok(Some(signature)) => {
                        return Err(IntakeError::Invalid(format!("{name}: the virus scanner found {signature}")));
                    }
                    Err(e) => return Err(IntakeError::Storage(format!("the virus scanner is not available: {e}"))),
                }
            }
            checked.push(Attachment {
                id: Uuid::now_v7(),
                name,
                content_type: kind.to_string(),
                size,
                sha256: hex::encode(Sha256::digest(&upload.content)),
            });
        }
        for (attachment, upload) in checked.iter().zip(uploads) {
            if let Err(e) = self.store.put(&path(attachment.id), upload.content.clone().into()).await {
                self.remove(&checked).await;
                return Err(IntakeError::Storage(format!("cannot store {}: {e}", attachment.name)));
            }
        }
        Ok(checked)
    }

    /// Removes stored files of a submit that was not accepted.
    pub async fn remove(&self, attachments: &[Attachment]) {
        for attachment in attachments {
            let _ = self.store.delete(&path(attachment.id)).await;
        }
    }
}
