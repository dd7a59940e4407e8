//! Tables as Excel workbooks: a bold, frozen header row with filters on every sheet.

use rust_xlsxwriter::{DocProperties, Format, FormatAlign, Workbook, XlsxError};

use crate::DocumentError;

/// Excel keeps at most this many characters in a cell.
pub const MAX_CELL_CHARS: usize = 32_767;

#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Number(f64),
    Empty,
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell::Text(text)
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell::Text(text.to_string())
    }
}

impl From<i64> for Cell {
    fn from(n: i64) -> Self {
        Cell::Number(n as f64)
    }
}

/// A column: its header and its width in characters; long text wraps in wide columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub title: String,
    pub width: f64,
}

impl Column {
    pub fn new(title: &str, width: f64) -> Self {
        Self { title: title.into(), width }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sheet {
    /// At most 31 characters, as Excel wants; longer names are cut.
    pub name: String,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
}

/// Text cut to what a cell holds, saying that it was cut. Excel counts UTF-16 units, so a
/// character outside the BMP (an emoji) counts twice.
fn cell_text(text: &str) -> String {
    if text.encode_utf16().count() <= MAX_CELL_CHARS {
        return text.to_string();
    }
    let note = " … [forkortet: hele teksten står i PDF-udtrækket]";
    let mut budget = MAX_CELL_CHARS - note.encode_utf16().count();
    let mut out = String::with_capacity(MAX_CELL_CHARS + note.len());
    for c in text.chars() {
        if c.len_utf16() > budget {
            break;
        }
        budget -= c.len_utf16();
        out.push(c);
    }
    out.push_str(note);
    out
}

fn failed(e: XlsxError) -> DocumentError {
    DocumentError::Workbook(e.to_string())
}

/// Writes the sheets as one workbook.
pub fn workbook(title: &str, sheets: &[Sheet]) -> Result<Vec<u8>, DocumentError> {
    let mut book = Workbook::new();
    book.set_properties(&DocProperties::new().set_title(title).set_author("Agora"));
    let header = Format::new().set_bold().set_align(FormatAlign::Top);
    let wrapped = Format::new().set_text_wrap().set_align(FormatAlign::Top);
    let plain = Format::new().set_align(FormatAlign::Top);
    for sheet in sheets {
        let worksheet = book.add_worksheet();
        let name: String = sheet.name.chars().filter(|c| !"[]:*?/\\".contains(*c)).take(31).collect();
        worksheet.set_name(name).map_err(failed)?;
        for (col, column) in sheet.columns.iter().enumerate() {
            let col = col as u16;
            worksheet.set_column_width(col, column.width).map_err(failed)?;
            worksheet.write_string_with_format(0, col, &column.title, &header).map_err(failed)?;
        }
        for (index, row) in sheet.rows.iter().enumerate() {
            let r = index as u32 + 1;
            for (col, cell) in row.iter().enumerate() {
                let format = match sheet.columns.get(col) {
                    Some(column) if column.width >= 40.0 => &wrapped,
                    _ => &plain,
                };
                let col = col as u16;
                match cell {
                    Cell::Text(text) => {
                        worksheet.write_string_with_format(r, col, cell_text(text), format).map_err(failed)?;
                    }
                    Cell::Number(n) => {
                        worksheet.write_number_with_format(r, col, *n, format).map_err(failed)?;
                    }
                    Cell::Empty => {}
                }
            }
        }
        if !sheet.columns.is_empty() {
            worksheet.set_freeze_panes(1, 0).map_err(failed)?;
            worksheet.autofilter(0, 0, sheet.rows.len() as u32, sheet.columns.len() as u16 - 1).map_err(failed)?;
        }
    }
    book.save_to_buffer().map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_longer_than_a_cell_is_cut_and_says_so() {
        let long = "æ".repeat(40_000);
        let cut = cell_text(&long);
        assert_eq!(cut.chars().count(), MAX_CELL_CHARS);
        assert!(cut.ends_with("står i PDF-udtrækket]"));
        assert_eq!(cell_text("kort"), "kort");
        let emoji = "🌳".repeat(20_000);
        let cut = cell_text(&emoji);
        assert!(cut.encode_utf16().count() <= MAX_CELL_CHARS, "Excel counts UTF-16 units");
        assert!(
            workbook("x", &[Sheet { name: "a".into(), columns: vec![], rows: vec![vec![Cell::Text(emoji)]] }]).is_ok()
        );
    }

    #[test]
    fn a_workbook_is_a_zip_of_sheets() {
        let sheet = Sheet {
            name: "Høringssvar: [alle]".into(),
            columns: vec![Column::new("Nr.", 6.0), Column::new("Tekst", 60.0)],
            rows: vec![vec![Cell::from(1), Cell::from("Vi ønsker flere træer på Åboulevarden")]],
        };
        let bytes = workbook("Høring", &[sheet]).expect("workbook");
        assert!(bytes.starts_with(b"PK"), "xlsx is a zip archive");
    }
}
