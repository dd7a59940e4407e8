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

pub use agora_files::{Clamd, FileRules};

/// Where attachments go, and how they are checked.
#[derive(Clone)]
pub struct Attachments {
    pub store: Arc<dyn ObjectStore>,
    pub scanner: Option<Clamd>,
}

pub fn path(id: Uuid) -> ObjectPath {
    ObjectPath::from(format!("responses/attachments/{id}"))
}

impl Attachments {
    /// Checks every file (naming the file and the rule it breaks), scans them, and stores
    /// them; a refusal stores nothing.
    pub async fn accept(&self, uploads: &[Upload], rules: &FileRules) -> Result<Vec<Attachment>, IntakeError> {
        rules.check_count(uploads.len()).map_err(IntakeError::Invalid)?;
        let mut checked = Vec::with_capacity(uploads.len());
        for upload in uploads {
            let name = agora_files::sanitize_file_name(&upload.name);
            let kind = rules.check(&name, &upload.content).map_err(IntakeError::Invalid)?;
            let size = upload.content.len() as u64;
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

    /// Deletes stored attachments for good (an erasure, retention); how many are gone. One
    /// already gone counts: a repeated deletion finds nothing, which is as good.
    pub async fn delete(&self, attachments: &[Attachment]) -> Result<u64, String> {
        for attachment in attachments {
            match self.store.delete(&path(attachment.id)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(format!("cannot delete attachment {}: {e}", attachment.id)),
            }
        }
        Ok(attachments.len() as u64)
    }
}
