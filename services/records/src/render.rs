//! The PDFs the records service makes itself: the hearing's text and the conclusion,
//! rendered from the hearing's facts with the embedded fonts of agora-documents.

use agora_documents::pdf::Report;

use crate::domain::HearingFacts;

fn date(iso: &str) -> String {
    chrono::NaiveDate::parse_from_str(iso, "%Y-%m-%d").map(|d| d.format("%d-%m-%Y").to_string()).unwrap_or_default()
}

fn head(report: &mut Report, hearing: &HearingFacts, heading: &str) {
    report.heading(1, heading.to_string());
    report.field("Høring", hearing.title.clone());
    if !hearing.start_date.is_empty() || !hearing.deadline.is_empty() {
        report.field("Høringsperiode", format!("{} – {}", date(&hearing.start_date), date(&hearing.deadline)));
    }
    if !hearing.kle_number.is_empty() {
        report.field("KLE", hearing.kle_number.clone());
    }
}

/// The hearing as published: its facts and every text field.
pub fn hearing_text(hearing: &HearingFacts, version: u32) -> Report {
    let title = if hearing.title.is_empty() { "Høring".to_string() } else { hearing.title.clone() };
    let mut report = Report::new(format!("Høringstekst: {title}"));
    head(&mut report, hearing, &title);
    if version > 1 {
        report.field("Version", version.to_string());
    }
    for (key, label, text) in &hearing.texts {
        let filed_apart = key == crate::domain::CONCLUSION_FIELD;
        if matches!(key.as_str(), "title" | "esdh_title") || filed_apart || text.trim().is_empty() {
            continue;
        }
        report.heading(2, label.clone());
        report.paragraph(text.clone());
    }
    if !hearing.files.is_empty() {
        report.heading(2, "Dokumenter");
        for (_, name) in &hearing.files {
            report.paragraph(name.clone());
        }
    }
    report
}

/// The owner's conclusion of the hearing.
pub fn conclusion(hearing: &HearingFacts, conclusion: &str) -> Report {
    let mut report = Report::new(format!("Konklusion: {}", hearing.title));
    head(&mut report, hearing, "Konklusion");
    report.paragraph(if conclusion.trim().is_empty() {
        "(ingen konklusion skrevet)".to_string()
    } else {
        conclusion.to_string()
    });
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_documents::pdf::Block;

    #[test]
    fn the_hearing_text_shows_every_text_field_but_the_titles_and_lists_the_documents() {
        let hearing = HearingFacts {
            title: "Ny bydel på Ærø".into(),
            start_date: "2026-03-01".into(),
            deadline: "2026-03-29".into(),
            texts: vec![
                ("title".into(), "Titel".into(), "Ny bydel på Ærø".into()),
                ("body".into(), "Høringstekst".into(), "Kommunen foreslår én ny bydel.".into()),
                ("empty".into(), "Tom".into(), "  ".into()),
            ],
            files: vec![("f".into(), "kort.pdf".into())],
            ..Default::default()
        };
        let report = hearing_text(&hearing, 2);
        assert!(report.blocks.contains(&Block::Field("Høringsperiode".into(), "01-03-2026 – 29-03-2026".into())));
        assert!(report.blocks.contains(&Block::Field("Version".into(), "2".into())));
        assert!(report.blocks.contains(&Block::Paragraph("Kommunen foreslår én ny bydel.".into())));
        assert!(!report.blocks.contains(&Block::Heading(2, "Titel".into())));
        assert!(!report.blocks.contains(&Block::Heading(2, "Tom".into())));
        assert!(report.blocks.contains(&Block::Paragraph("kort.pdf".into())));
        let pdf = report.render().expect("pdf");
        assert!(pdf.starts_with(b"%PDF-"));
    }
}
