//! The owner's exports of a hearing's responses: Excel reports (the responses; the
//! respondents), PDF (the hearing with all its responses, or the responses alone), and a zip
//! of all attachments written as a stream.
//!
//! What goes into each document is decided by pure functions over the read model's response
//! states; the adapters below only load, render on a blocking thread, and hand out chunks.

use std::collections::BTreeMap;

use agora_documents::archive::ArchiveWriter;
use agora_documents::pdf::Report;
use agora_documents::workbook::{Cell, Column, Sheet, workbook};
use agora_eventstore::Store;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::app::{ResponseApp, ResponseAppError};
use crate::domain::{Actor, HearingContent, ModerationStatus, OnBehalfOf, Response, ResponseError};
use crate::files::{Attachments, path};

/// What the owner asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// Excel: one row per response.
    ResponsesWorkbook,
    /// Excel: one row per respondent, with their response numbers.
    RespondentsWorkbook,
    /// PDF: the hearing's texts, then every response.
    HearingPdf,
    /// PDF: the responses alone.
    ResponsesPdf,
    /// Zip: every attachment, in a folder per response number.
    AttachmentsZip,
}

impl ExportKind {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::ResponsesWorkbook | Self::RespondentsWorkbook => {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            }
            Self::HearingPdf | Self::ResponsesPdf => "application/pdf",
            Self::AttachmentsZip => "application/zip",
        }
    }

    pub fn file_name(self, hearing_id: Uuid) -> String {
        let short = &hearing_id.simple().to_string()[..8];
        match self {
            Self::ResponsesWorkbook => format!("hoeringssvar-{short}.xlsx"),
            Self::RespondentsWorkbook => format!("afsendere-{short}.xlsx"),
            Self::HearingPdf => format!("hoering-med-svar-{short}.pdf"),
            Self::ResponsesPdf => format!("hoeringssvar-{short}.pdf"),
            Self::AttachmentsZip => format!("bilag-{short}.zip"),
        }
    }
}

/// Which responses an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selection {
    /// Every response but the withdrawn ones (the spreadsheets list those too, marked).
    #[default]
    All,
    Approved,
}

impl Selection {
    pub fn includes(self, response: &Response, listing: bool) -> bool {
        match self {
            Self::Approved => response.status == ModerationStatus::Approved,
            Self::All => listing || response.status != ModerationStatus::Withdrawn,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Document(#[from] agora_documents::DocumentError),
    #[error("an attachment could not be read: {0}")]
    Attachment(String),
    #[error("the responses could not be read: {0}")]
    Storage(String),
}

/// An export on its way: the file's name and type, its bytes as they are made, and how the
/// making ended (an error after the first chunk can only be told at the end).
pub struct Export {
    pub file_name: String,
    pub content_type: &'static str,
    pub chunks: mpsc::Receiver<Bytes>,
    pub done: tokio::task::JoinHandle<Result<(), ExportError>>,
}

const CHUNK: usize = 64 * 1024;

/// Exports rendered at once; more wait their turn.
static RENDERING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Starts an export for the hearing's owner or an administrator.
pub async fn export(
    app: &ResponseApp,
    actor: &Actor,
    hearing_id: Uuid,
    kind: ExportKind,
    selection: Selection,
) -> Result<Export, ResponseAppError> {
    let terms = app.terms(hearing_id).await?.ok_or(ResponseError::NotFound)?;
    if !(actor.administrator || actor.reference == terms.owner_id) {
        return Err(ResponseError::NotAllowed(
            "only the hearing's owner or an administrator may export its responses".into(),
        )
        .into());
    }
    let content = crate::hearings::content(&app.store, hearing_id).await?.unwrap_or_default();
    let respondents = crate::projections::authors(&app.store, hearing_id).await?;
    app.record_access(actor, hearing_id, respondents, &format!("export:{kind:?}")).await?;
    let (sender, chunks) = mpsc::channel(8);
    let store = app.store.clone();
    let done = match kind {
        ExportKind::AttachmentsZip => {
            let files = app.intake.files().clone();
            let keys = app.keys().clone();
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                match write_attachments(&runtime, &store, &keys, &files, hearing_id, selection, sender) {
                    // The caller went away: nothing is wrong with the export.
                    Err(ExportError::Document(agora_documents::DocumentError::Closed)) => Ok(()),
                    other => other,
                }
            })
        }
        _ => {
            // Workbooks and PDFs are made whole in memory: a few at a time per process.
            let permit = RENDERING.acquire().await.map_err(|e| ResponseAppError::Storage(e.to_string()))?;
            let responses = all_responses(app, hearing_id).await?;
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let bytes = render(kind, &content, &responses, selection)?;
                for chunk in bytes.chunks(CHUNK) {
                    if sender.blocking_send(Bytes::copy_from_slice(chunk)).is_err() {
                        break;
                    }
                }
                Ok(())
            })
        }
    };
    Ok(Export { file_name: kind.file_name(hearing_id), content_type: kind.content_type(), chunks, done })
}

/// Every response of the hearing, opened for display (erased respondents show as erased).
async fn all_responses(app: &ResponseApp, hearing_id: Uuid) -> Result<Vec<(Uuid, Response)>, ResponseAppError> {
    let mut all = Vec::new();
    loop {
        let after = all.last().map(|(_, r): &(Uuid, Response)| r.number).unwrap_or(0);
        let page = crate::projections::hearing_responses(&app.store, hearing_id, after, 500).await?;
        if page.is_empty() {
            return Ok(all);
        }
        for (id, response) in page {
            all.push((id, app.reveal(response).await?));
        }
    }
}

/// Renders a workbook or a PDF.
pub fn render(
    kind: ExportKind,
    content: &HearingContent,
    responses: &[(Uuid, Response)],
    selection: Selection,
) -> Result<Vec<u8>, ExportError> {
    let title = if content.title.is_empty() { "Høring".to_string() } else { content.title.clone() };
    Ok(match kind {
        ExportKind::ResponsesWorkbook => workbook(&title, &[responses_sheet(responses, selection)])?,
        ExportKind::RespondentsWorkbook => workbook(&title, &[respondents_sheet(responses, selection)])?,
        ExportKind::HearingPdf => report(content, responses, selection, true).render()?,
        ExportKind::ResponsesPdf => report(content, responses, selection, false).render()?,
        ExportKind::AttachmentsZip => Vec::new(),
    })
}

/// Time as people in Copenhagen read it.
fn local(time: Option<DateTime<Utc>>) -> String {
    time.map(|t| t.with_timezone(&chrono_tz::Europe::Copenhagen).format("%d-%m-%Y %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// A calendar date (`YYYY-MM-DD`) as Danes write it.
fn date(iso: &str) -> String {
    chrono::NaiveDate::parse_from_str(iso, "%Y-%m-%d").map(|d| d.format("%d-%m-%Y").to_string()).unwrap_or_default()
}

fn hearing_status_label(status: &str) -> &str {
    match status {
        "Created" => "Oprettet",
        "Draft" => "Kladde",
        "AwaitingStartDate" => "Afventer startdato",
        "Active" => "Aktiv",
        "AwaitingConclusion" => "Afventer konklusion",
        "Concluded" => "Konkluderet",
        "Deleted" => "Slettet",
        other => other,
    }
}

pub fn status_label(status: ModerationStatus) -> &'static str {
    match status {
        ModerationStatus::Pending => "Afventer",
        ModerationStatus::Approved => "Godkendt",
        ModerationStatus::Declined => "Afvist",
        ModerationStatus::Withdrawn => "Trukket tilbage",
    }
}

fn on_behalf(response: &Response) -> String {
    match &response.on_behalf_of {
        Some(OnBehalfOf::Organisation { name }) => format!("Organisation: {name}"),
        Some(OnBehalfOf::Company { reference }) => format!("Virksomhed ({reference})"),
        None => String::new(),
    }
}

fn yes_no(value: bool) -> &'static str {
    if value { "Ja" } else { "Nej" }
}

pub fn responses_sheet(responses: &[(Uuid, Response)], selection: Selection) -> Sheet {
    let columns = [
        ("Nr.", 6.0),
        ("Modtaget", 20.0),
        ("Status", 14.0),
        ("Afsender", 24.0),
        ("På vegne af", 28.0),
        ("Tekst", 80.0),
        ("Offentliggjort tekst", 60.0),
        ("Bilag", 30.0),
        ("Redigeret", 20.0),
        ("Afvisningsgrund", 30.0),
        ("Kommunens svar", 50.0),
        ("CPR-mønster fundet", 10.0),
        ("Registreret af ejeren", 10.0),
        ("Vilkår (version)", 14.0),
        ("Kvittering (SHA-256)", 66.0),
        ("Svar-id", 38.0),
    ];
    let rows = responses
        .iter()
        .filter(|(_, r)| selection.includes(r, true))
        .map(|(id, r)| {
            vec![
                Cell::from(r.number),
                local(r.accepted_at).into(),
                status_label(r.status).into(),
                r.author.as_str().into(),
                on_behalf(r).into(),
                r.text.as_str().into(),
                r.redacted_text.clone().map(Cell::from).unwrap_or(Cell::Empty),
                r.attachments.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ").into(),
                local(r.edited_at).into(),
                r.decline_reason.clone().map(Cell::from).unwrap_or(Cell::Empty),
                r.reply.clone().map(Cell::from).unwrap_or(Cell::Empty),
                yes_no(r.sensitive).into(),
                yes_no(r.registered_by_owner).into(),
                r.terms_version.as_str().into(),
                r.content_sha256.as_str().into(),
                id.to_string().into(),
            ]
        })
        .collect();
    Sheet {
        name: "Høringssvar".into(),
        columns: columns.iter().map(|(title, width)| Column::new(title, *width)).collect(),
        rows,
    }
}

/// One row per respondent (the author, and whom they answered for), with their responses.
pub fn respondents_sheet(responses: &[(Uuid, Response)], selection: Selection) -> Sheet {
    // A paper or e-mail response the owner registered is its own respondent: its author is
    // the owner, who registered it for someone else.
    let mut respondents: BTreeMap<(String, String, Option<Uuid>), Vec<&Response>> = BTreeMap::new();
    for (id, r) in responses.iter().filter(|(_, r)| selection.includes(r, true)) {
        let registered = r.registered_by_owner.then_some(*id);
        respondents.entry((r.author.clone(), on_behalf(r), registered)).or_default().push(r);
    }
    let mut rows: Vec<(i64, Vec<Cell>)> = respondents
        .into_iter()
        .map(|((author, behalf, _), list)| {
            let kind = match list[0].on_behalf_of {
                Some(OnBehalfOf::Company { .. }) => "Virksomhed",
                Some(OnBehalfOf::Organisation { .. }) => "Organisation",
                None if list[0].registered_by_owner => "Registreret af ejeren",
                None => "Person",
            };
            let numbers: Vec<String> = list.iter().map(|r| r.number.to_string()).collect();
            let first = list.iter().filter_map(|r| r.accepted_at).min();
            let row = vec![
                Cell::from(author),
                kind.into(),
                behalf.into(),
                Cell::from(list.len() as i64),
                numbers.join(", ").into(),
                local(first).into(),
            ];
            (list[0].number, row)
        })
        .collect();
    rows.sort_by_key(|(first, _)| *first);
    Sheet {
        name: "Afsendere".into(),
        columns: [
            ("Afsender", 30.0),
            ("Type", 20.0),
            ("På vegne af", 30.0),
            ("Antal svar", 10.0),
            ("Svarnumre", 20.0),
            ("Første svar", 20.0),
        ]
        .iter()
        .map(|(title, width)| Column::new(title, *width))
        .collect(),
        rows: rows.into_iter().map(|(_, row)| row).collect(),
    }
}

/// The PDF: the hearing (when asked) and every selected response in number order.
pub fn report(
    content: &HearingContent,
    responses: &[(Uuid, Response)],
    selection: Selection,
    with_hearing: bool,
) -> Report {
    let title = if content.title.is_empty() { "Høring".to_string() } else { content.title.clone() };
    let mut report = Report::new(title.clone());
    let selected: Vec<&Response> = responses.iter().map(|(_, r)| r).filter(|r| selection.includes(r, false)).collect();
    if with_hearing {
        report.heading(1, title.clone());
        report.field("Status", hearing_status_label(&content.status));
        if !content.start_date.is_empty() || !content.deadline.is_empty() {
            report.field("Høringsperiode", format!("{} – {}", date(&content.start_date), date(&content.deadline)));
        }
        if !content.kle_number.is_empty() {
            report.field("KLE", content.kle_number.clone());
        }
        if !content.case_number.is_empty() {
            report.field("Sagsnummer", content.case_number.clone());
        }
        // The title heads the document; the ESDH title is for the records system.
        let shown = |t: &&crate::domain::HearingText| !matches!(t.key.as_str(), "title" | "esdh_title");
        for text in content.texts.iter().filter(shown).filter(|t| !t.text.trim().is_empty()) {
            report.heading(2, text.label.clone());
            report.paragraph(text.text.clone());
        }
        if !content.documents.is_empty() {
            report.heading(2, "Dokumenter");
            for name in &content.documents {
                report.paragraph(name.clone());
            }
        }
        report.page_break();
    }
    report.heading(1, format!("Høringssvar: {title}"));
    report.paragraph(format!("{} høringssvar", selected.len()));
    for r in selected {
        response_block(&mut report, r, 2);
    }
    report
}

/// One response as a document of its own: what the records system files as a høringssvar.
pub fn response_report(content: &HearingContent, response: &Response) -> Report {
    let title = if content.title.is_empty() { "Høring".to_string() } else { content.title.clone() };
    let mut report = Report::new(format!("Høringssvar nr. {}: {title}", response.number));
    report.field("Høring", title);
    if !content.case_number.is_empty() {
        report.field("Sagsnummer", content.case_number.clone());
    }
    response_block(&mut report, response, 1);
    report
}

/// A response's heading, facts, text, redaction and reply.
fn response_block(report: &mut Report, r: &Response, level: u8) {
    report.heading(level, format!("Høringssvar nr. {}", r.number));
    report.field("Modtaget", local(r.accepted_at));
    report.field("Status", status_label(r.status));
    let behalf = on_behalf(r);
    if !behalf.is_empty() {
        report.field("På vegne af", behalf);
    }
    if let Some(reason) = &r.decline_reason {
        report.field("Afvist med begrundelsen", reason.clone());
    }
    if !r.attachments.is_empty() {
        let names: Vec<&str> = r.attachments.iter().map(|a| a.name.as_str()).collect();
        report.field("Bilag", names.join(", "));
    }
    report.paragraph(r.text.clone());
    if let Some(redacted) = &r.redacted_text {
        report.heading(level + 1, "Offentliggjort i redigeret form");
        report.paragraph(redacted.clone());
    }
    if let Some(reply) = &r.reply {
        report.heading(level + 1, "Kommunens svar");
        report.paragraph(reply.clone());
    }
}

/// Writes every selected response's attachments into the archive, a page of responses and
/// one attachment at a time, each read as a stream from the object store.
fn write_attachments(
    runtime: &tokio::runtime::Handle,
    store: &Store,
    keys: &crate::personal::Keys,
    files: &Attachments,
    hearing_id: Uuid,
    selection: Selection,
    sender: mpsc::Sender<Bytes>,
) -> Result<(), ExportError> {
    let mut archive = ArchiveWriter::new(sender);
    let mut after = 0;
    loop {
        let page = runtime
            .block_on(crate::projections::hearing_responses(store, hearing_id, after, 200))
            .map_err(|e| ExportError::Storage(e.to_string()))?;
        let Some((_, last)) = page.last() else { break };
        after = last.number;
        for (_, response) in page.into_iter().filter(|(_, r)| selection.includes(r, false)) {
            let response = runtime
                .block_on(crate::personal::reveal(keys.as_ref(), response))
                .map_err(|e| ExportError::Storage(e.to_string()))?;
            // An erased respondent's files are theirs: they leave the export with them.
            if response.author_erased {
                continue;
            }
            for attachment in &response.attachments {
                let mut stream = runtime
                    .block_on(files.store.get(&path(attachment.id)))
                    .map_err(|e| ExportError::Attachment(format!("{}: {e}", attachment.name)))?
                    .into_stream();
                archive.start(&format!("{:04}/{}", response.number, attachment.name), false)?;
                while let Some(chunk) = runtime.block_on(stream.next()) {
                    let chunk = chunk.map_err(|e| ExportError::Attachment(format!("{}: {e}", attachment.name)))?;
                    archive.write(&chunk)?;
                }
            }
        }
    }
    archive.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::HearingText;
    use crate::files::Attachment;

    fn response(number: i64, status: ModerationStatus, text: &str) -> (Uuid, Response) {
        (
            Uuid::now_v7(),
            Response {
                exists: true,
                number,
                author: format!("user:{}", number % 2),
                text: text.into(),
                status,
                accepted_at: Some("2026-12-01T11:00:00Z".parse().expect("time")),
                ..Response::default()
            },
        )
    }

    #[test]
    fn spreadsheets_list_every_response_and_each_respondent_once() {
        let mut responses = vec![
            response(1, ModerationStatus::Approved, "Ja tak"),
            response(2, ModerationStatus::Withdrawn, "Fortrudt"),
            response(3, ModerationStatus::Declined, "Nej"),
        ];
        responses[0].1.on_behalf_of = Some(OnBehalfOf::Organisation { name: "Grundejerforeningen Ø".into() });
        let sheet = responses_sheet(&responses, Selection::All);
        assert_eq!(sheet.rows.len(), 3, "the spreadsheet marks withdrawn responses instead of leaving them out");
        assert_eq!(sheet.rows[0][1], Cell::from("01-12-2026 12:00:00"), "Copenhagen time");
        assert_eq!(sheet.rows[1][2], Cell::from("Trukket tilbage"));
        assert_eq!(responses_sheet(&responses, Selection::Approved).rows.len(), 1);
        let people = respondents_sheet(&responses, Selection::All);
        // user:1 answered as an organisation once and as themself once; user:0 once.
        assert_eq!(people.rows.len(), 3);
        assert_eq!(people.rows[0][2], Cell::from("Organisation: Grundejerforeningen Ø"));
        assert_eq!(people.rows[1][4], Cell::from("2"));

        // Two paper responses the owner registered are two respondents, not the owner.
        let mut paper =
            vec![response(1, ModerationStatus::Approved, "Brev"), response(3, ModerationStatus::Approved, "Brev")];
        for (_, r) in &mut paper {
            r.registered_by_owner = true;
            r.author = "user:owner".into();
        }
        let people = respondents_sheet(&paper, Selection::All);
        assert_eq!(people.rows.len(), 2);
        assert!(people.rows.iter().all(|row| row[1] == Cell::from("Registreret af ejeren")));
    }

    #[test]
    fn the_pdf_holds_the_hearing_then_each_response_but_the_withdrawn() {
        let mut responses = vec![
            response(1, ModerationStatus::Approved, "Første svar"),
            response(2, ModerationStatus::Withdrawn, "Fortrudt"),
        ];
        responses[0].1.redacted_text = Some("Første [redigeret]".into());
        responses[0].1.attachments = vec![Attachment {
            id: Uuid::nil(),
            name: "kort.pdf".into(),
            content_type: String::new(),
            size: 1,
            sha256: String::new(),
        }];
        let content = HearingContent {
            title: "Cykelsti på Åboulevarden".into(),
            texts: vec![
                HearingText { key: "title".into(), label: "Titel".into(), text: "Cykelsti på Åboulevarden".into() },
                HearingText { key: "body".into(), label: "Høringstekst".into(), text: "Forslaget …".into() },
            ],
            ..HearingContent::default()
        };
        let report = report(&content, &responses, Selection::All, true);
        let text: Vec<String> = report.blocks.iter().map(|b| format!("{b:?}")).collect();
        let joined = text.join("\n");
        assert!(joined.contains("Høringstekst") && joined.contains("Forslaget"));
        assert!(joined.contains("Høringssvar nr. 1") && !joined.contains("Høringssvar nr. 2"));
        assert!(joined.contains("Første [redigeret]") && joined.contains("kort.pdf"));
        assert!(!joined.contains("\"Titel\""), "the title is the heading, not a section");
    }
}
