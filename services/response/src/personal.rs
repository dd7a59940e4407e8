//! Personal data in response events: the respondent's text, the names of their attachments
//! and the organisation they answer for are sealed under the respondent's key before they are
//! written, and opened only for display. Once the respondent is erased, every event, read
//! model row and backup holding them shows [`agora_vault::ERASED`] instead.

use std::sync::Arc;

use agora_vault::{KeyOwner, PersonKeys, VaultError, reveal_for_display};
use uuid::Uuid;

use crate::domain::{OnBehalfOf, Response, ResponseEvent};
use crate::files::Attachment;

/// Where the respondents' keys are: the identity service's vault.
pub type Keys = Arc<dyn PersonKeys>;

/// The person behind an author reference (`user:<id>`).
pub fn person(author: &str) -> Option<Uuid> {
    author.strip_prefix("user:").and_then(|id| Uuid::parse_str(id).ok())
}

/// What a submission writes sealed.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub text: String,
    pub on_behalf_of: Option<OnBehalfOf>,
    pub attachments: Vec<Attachment>,
}

/// Whose key seals an author's data in a hearing.
pub fn owner(author: &str, hearing_id: Uuid) -> Option<KeyOwner> {
    person(author).map(|person| KeyOwner::in_hearing(person, hearing_id))
}

/// Whose key seals a paper or e-mail response the owner registered: the letter's writer has
/// no account, so it is the hearing's own (ended by retention), never the caseworker's.
pub fn paper_owner(hearing_id: Uuid) -> KeyOwner {
    KeyOwner::in_hearing(agora_vault::reference_person(&format!("paper:{hearing_id}")), hearing_id)
}

/// Whose key seals a submission's data.
pub fn submission_owner(author: &str, hearing_id: Uuid, registered_by_owner: bool) -> Option<KeyOwner> {
    if registered_by_owner { Some(paper_owner(hearing_id)) } else { owner(author, hearing_id) }
}

/// Seals a submission's personal data for its author. An author that is no person (never
/// the case through the API) keeps the data as it is.
pub async fn seal_submission(
    keys: &dyn PersonKeys,
    author: &str,
    hearing_id: Uuid,
    registered_by_owner: bool,
    text: &str,
    on_behalf_of: &Option<OnBehalfOf>,
    attachments: &[Attachment],
) -> Result<Sealed, VaultError> {
    let Some(owner) = submission_owner(author, hearing_id, registered_by_owner) else {
        return Ok(Sealed {
            text: text.to_string(),
            on_behalf_of: on_behalf_of.clone(),
            attachments: attachments.to_vec(),
        });
    };
    let key = keys.key_or_create(&owner).await?;
    let on_behalf_of = match on_behalf_of {
        Some(OnBehalfOf::Organisation { name }) => Some(OnBehalfOf::Organisation { name: key.seal(name)? }),
        other => other.clone(),
    };
    let mut sealed_attachments = attachments.to_vec();
    for attachment in &mut sealed_attachments {
        attachment.name = key.seal(&attachment.name)?;
    }
    Ok(Sealed { text: key.seal(text)?, on_behalf_of, attachments: sealed_attachments })
}

/// Seals what an event of `author`'s response carries of them: an edited text, or the
/// owner's redaction of it.
pub async fn seal_event(
    keys: &dyn PersonKeys,
    response: &Response,
    event: ResponseEvent,
) -> Result<ResponseEvent, VaultError> {
    let Some(owner) = submission_owner(&response.author, response.hearing_id, response.registered_by_owner) else {
        return Ok(event);
    };
    Ok(match event {
        ResponseEvent::ResponseEdited { text, content_sha256, at, status, sensitive } => {
            ResponseEvent::ResponseEdited {
                text: keys.seal(&owner, &text).await?,
                content_sha256,
                at,
                status,
                sensitive,
            }
        }
        ResponseEvent::ResponseRedacted { by, text, reason } => {
            ResponseEvent::ResponseRedacted { by, text: keys.seal(&owner, &text).await?, reason }
        }
        other => other,
    })
}

/// A response with its personal data opened for display; `author_erased` tells whether the
/// respondent's data is gone (erased, or past the hearing's retention period).
pub async fn reveal(keys: &dyn PersonKeys, mut response: Response) -> Result<Response, VaultError> {
    let erased = match agora_vault::sealed_for(&response.text) {
        Some(key) => keys.key(key).await?.is_none(),
        None => false,
    };
    response.text = reveal_for_display(keys, &response.text).await?;
    if let Some(redacted) = &response.redacted_text {
        response.redacted_text = Some(reveal_for_display(keys, redacted).await?);
    }
    if let Some(OnBehalfOf::Organisation { name }) = &response.on_behalf_of {
        response.on_behalf_of = Some(OnBehalfOf::Organisation { name: reveal_for_display(keys, name).await? });
    }
    for attachment in &mut response.attachments {
        attachment.name = reveal_for_display(keys, &attachment.name).await?;
    }
    response.author_erased = erased;
    Ok(response)
}

/// The organisation's name for display.
pub async fn reveal_on_behalf(
    keys: &dyn PersonKeys,
    on_behalf_of: Option<OnBehalfOf>,
) -> Result<Option<OnBehalfOf>, VaultError> {
    Ok(match on_behalf_of {
        Some(OnBehalfOf::Organisation { name }) => {
            Some(OnBehalfOf::Organisation { name: reveal_for_display(keys, &name).await? })
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_vault::{ERASED, MemoryKeys};
    use chrono::Utc;

    #[tokio::test]
    async fn a_submission_is_sealed_for_its_author_and_erased_with_them() {
        let keys = MemoryKeys::shared();
        let author = Uuid::now_v7();
        let reference = format!("user:{author}");
        let attachment = Attachment {
            id: Uuid::now_v7(),
            name: "Birgittes brev.pdf".into(),
            content_type: "application/pdf".into(),
            size: 1,
            sha256: String::new(),
        };
        let hearing = Uuid::now_v7();
        let org = Some(OnBehalfOf::Organisation { name: "Grundejerforeningen Æblehaven".into() });
        let sealed = seal_submission(keys.as_ref(), &reference, hearing, false, "Flere træer", &org, &[attachment])
            .await
            .unwrap();
        assert!(agora_vault::is_sealed(&sealed.text));
        assert!(agora_vault::is_sealed(&sealed.attachments[0].name));
        assert!(
            matches!(&sealed.on_behalf_of, Some(OnBehalfOf::Organisation { name }) if agora_vault::is_sealed(name))
        );

        let response = Response {
            exists: true,
            author: reference.clone(),
            text: sealed.text.clone(),
            on_behalf_of: sealed.on_behalf_of.clone(),
            attachments: sealed.attachments.clone(),
            ..Default::default()
        };
        let shown = reveal(keys.as_ref(), response.clone()).await.unwrap();
        assert_eq!(shown.text, "Flere træer");
        assert_eq!(shown.attachments[0].name, "Birgittes brev.pdf");
        assert!(!shown.author_erased);

        let edited = ResponseEvent::ResponseEdited {
            text: "Færre biler".into(),
            content_sha256: String::new(),
            at: Utc::now(),
            status: Default::default(),
            sensitive: false,
        };
        let ResponseEvent::ResponseEdited { text, .. } = seal_event(keys.as_ref(), &response, edited).await.unwrap()
        else {
            panic!()
        };
        assert!(agora_vault::is_sealed(&text));

        keys.erase(author);
        let shown = reveal(keys.as_ref(), response).await.unwrap();
        assert_eq!(shown.text, ERASED);
        assert_eq!(shown.attachments[0].name, ERASED);
        assert!(matches!(shown.on_behalf_of, Some(OnBehalfOf::Organisation { name }) if name == ERASED));
        assert!(shown.author_erased);
    }

    #[tokio::test]
    async fn a_registered_letter_is_the_hearings_not_the_caseworkers() {
        let keys = MemoryKeys::shared();
        let (caseworker, hearing) = (Uuid::now_v7(), Uuid::now_v7());
        let letter =
            seal_submission(keys.as_ref(), &format!("user:{caseworker}"), hearing, true, "Brev fra Jens", &None, &[])
                .await
                .unwrap();
        assert_eq!(agora_vault::sealed_for(&letter.text), Some(paper_owner(hearing).key_id()));
        keys.erase(caseworker);
        assert_eq!(reveal_for_display(keys.as_ref(), &letter.text).await.unwrap(), "Brev fra Jens");
        assert_eq!(keys.destroy_scope(&KeyOwner::hearing_scope(hearing)).await.unwrap(), 1, "retention ends it");
        assert_eq!(reveal_for_display(keys.as_ref(), &letter.text).await.unwrap(), ERASED);
    }
}
