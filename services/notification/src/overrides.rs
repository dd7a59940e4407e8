//! Templates the owner of a hearing (or an administrator, for the whole municipality) has
//! changed. The one in force is the hearing's own, else the municipality's, else Agora's.
//! Every change is an event (`NotificationTemplate`), so the audit log shows who wrote what.

use agora_eventstore::{Store, StoreError, on_reader, on_tx};
use serde::Serialize;

use crate::templates::{Kind, Language, Template, TemplateError, default_template};

pub const AGGREGATE: &str = "NotificationTemplate";

pub const SCHEMA: &[&str] = &["CREATE TABLE IF NOT EXISTS notification_templates (
        hearing_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        language TEXT NOT NULL,
        subject TEXT NOT NULL,
        text TEXT NOT NULL,
        html TEXT NOT NULL,
        PRIMARY KEY (hearing_id, kind, language))"];

/// Where the template in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Hearing,
    Municipality,
    Default,
}

impl Source {
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Hearing => "hearing",
            Source::Municipality => "municipality",
            Source::Default => "default",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    #[error(transparent)]
    Invalid(#[from] TemplateError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

async fn stored(store: &Store, hearing: &str, kind: Kind, language: Language) -> Result<Option<Template>, StoreError> {
    let row: Option<(String, String, String)> = on_reader!(store.backend(), pool => {
        sqlx::query_as(
            "SELECT subject, text, html FROM notification_templates WHERE hearing_id = $1 AND kind = $2 AND language = $3",
        )
        .bind(hearing)
        .bind(kind.as_str())
        .bind(language.code())
        .fetch_optional(pool)
        .await?
    });
    Ok(row.map(|(subject, text, html)| Template { subject, text, html }))
}

/// The template in force for a message about `hearing` (none: the municipality's).
pub async fn effective(
    store: &Store,
    hearing: Option<&str>,
    kind: Kind,
    language: Language,
) -> Result<(Template, Source), StoreError> {
    if let Some(hearing) = hearing.filter(|h| !h.is_empty())
        && let Some(template) = stored(store, hearing, kind, language).await?
    {
        return Ok((template, Source::Hearing));
    }
    if let Some(template) = stored(store, "", kind, language).await? {
        return Ok((template, Source::Municipality));
    }
    Ok((default_template(kind, language), Source::Default))
}

#[derive(Serialize)]
struct Saved<'a> {
    hearing_id: &'a str,
    kind: &'a str,
    language: &'a str,
    template: Option<&'a Template>,
}

/// Saves (or with `None` removes) a template after checking it; the change is an event.
pub async fn save(
    store: &Store,
    hearing: &str,
    kind: Kind,
    language: Language,
    template: Option<&Template>,
    actor: &str,
) -> Result<(), OverrideError> {
    if let Some(template) = template {
        template.validate(kind)?;
    }
    let stream =
        format!("{}/{}/{}", if hearing.is_empty() { "municipality" } else { hearing }, kind.as_str(), language.code());
    let sequence = store.read_stream(AGGREGATE, &stream, 0).await?.last().map(|e| e.sequence).unwrap_or(0) + 1;
    let name = if template.is_some() { "TemplateSaved" } else { "TemplateReset" };
    let saved = Saved { hearing_id: hearing, kind: kind.as_str(), language: language.code(), template };
    let event = agora_jobs::new_event(AGGREGATE, stream, sequence, name, &saved, actor)?;
    let mut tx = store.begin().await?;
    let recorded = store.append_in(&mut tx, &[event]).await?;
    on_tx!(&mut tx, conn => {
        match template {
            Some(t) => {
                sqlx::query(
                    "INSERT INTO notification_templates (hearing_id, kind, language, subject, text, html) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (hearing_id, kind, language) DO UPDATE SET subject = excluded.subject, text = excluded.text, html = excluded.html",
                )
                .bind(hearing)
                .bind(kind.as_str())
                .bind(language.code())
                .bind(&t.subject)
                .bind(&t.text)
                .bind(&t.html)
                .execute(&mut **conn)
                .await
                .map_err(StoreError::from)?;
            }
            None => {
                sqlx::query("DELETE FROM notification_templates WHERE hearing_id = $1 AND kind = $2 AND language = $3")
                    .bind(hearing)
                    .bind(kind.as_str())
                    .bind(language.code())
                    .execute(&mut **conn)
                    .await
                    .map_err(StoreError::from)?;
            }
        }
    });
    tx.commit().await.map_err(StoreError::from)?;
    store.committed(&recorded);
    Ok(())
}
