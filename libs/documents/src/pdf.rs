//! A4 reports: headings, labelled fields and wrapped paragraphs, with page numbers.
//!
//! The layout is done here, line by line, with the advance widths of the embedded DejaVu Sans;
//! krilla writes the PDF and embeds the subset of the font that the text uses.

use std::sync::OnceLock;

use krilla::Document;
use krilla::geom::Point;
use krilla::metadata::Metadata;
use krilla::page::PageSettings;
use krilla::text::{Font, TextDirection};

use crate::DocumentError;

static REGULAR: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");
static BOLD: &[u8] = include_bytes!("../fonts/DejaVuSans-Bold.ttf");

const PAGE_WIDTH: f32 = 595.0;
const PAGE_HEIGHT: f32 = 842.0;
const MARGIN: f32 = 56.0;
const FOOTER: f32 = 28.0;
const BODY_SIZE: f32 = 10.0;
const LINE: f32 = 1.4;

/// What a report is made of, in reading order.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Level 1 is the document's title, 2 a section, 3 a subsection.
    Heading(u8, String),
    /// A label in bold, then its value on the same line (wrapped under itself).
    Field(String, String),
    /// Running text; line breaks in it are kept.
    Paragraph(String),
    /// Starts the next block on a new page.
    PageBreak,
}

/// A report to render: a title for the document's metadata and footer, and its blocks.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub title: String,
    /// BCP 47, e.g. `da`.
    pub language: String,
    pub blocks: Vec<Block>,
}

impl Report {
    pub fn new(title: impl Into<String>) -> Self {
        Self { title: title.into(), language: "da".into(), blocks: Vec::new() }
    }

    pub fn heading(&mut self, level: u8, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Heading(level, text.into()));
        self
    }

    pub fn field(&mut self, label: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Field(label.into(), value.into()));
        self
    }

    pub fn paragraph(&mut self, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Paragraph(text.into()));
        self
    }

    pub fn page_break(&mut self) -> &mut Self {
        self.blocks.push(Block::PageBreak);
        self
    }

    /// Lays the report out on A4 pages and writes the PDF.
    pub fn render(&self) -> Result<Vec<u8>, DocumentError> {
        let fonts = Fonts::get()?;
        let pages = layout(&self.blocks, fonts);
        let regular = Font::new(REGULAR.into(), 0).ok_or_else(|| DocumentError::Pdf("the regular font".into()))?;
        let bold = Font::new(BOLD.into(), 0).ok_or_else(|| DocumentError::Pdf("the bold font".into()))?;
        let mut document = Document::new();
        document.set_metadata(
            Metadata::new().title(self.title.clone()).language(self.language.clone()).creator("Agora".into()),
        );
        let settings =
            || PageSettings::from_wh(PAGE_WIDTH, PAGE_HEIGHT).ok_or_else(|| DocumentError::Pdf("page size".into()));
        let count = pages.len().max(1);
        for (index, runs) in pages.iter().enumerate() {
            let mut page = document.start_page_with(settings()?);
            let mut surface = page.surface();
            for run in runs {
                let font = if run.bold { bold.clone() } else { regular.clone() };
                surface.draw_text(Point::from_xy(run.x, run.y), font, run.size, &run.text, false, TextDirection::Auto);
            }
            let footer = format!("{} · side {} af {count}", clip(&self.title, 80), index + 1);
            surface.draw_text(
                Point::from_xy(MARGIN, PAGE_HEIGHT - FOOTER),
                regular.clone(),
                8.0,
                &footer,
                false,
                TextDirection::Auto,
            );
            surface.finish();
            page.finish();
        }
        document.finish().map_err(|e| DocumentError::Pdf(format!("{e:?}")))
    }
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max { text.to_string() } else { text.chars().take(max - 1).chain(['…']).collect() }
}

/// One line of text placed on a page (baseline at `y`, from the top).
#[derive(Debug, Clone, PartialEq)]
struct Run {
    x: f32,
    y: f32,
    size: f32,
    bold: bool,
    text: String,
}

/// Advance widths of the two faces, parsed once.
struct Fonts {
    regular: ttf_parser::Face<'static>,
    bold: ttf_parser::Face<'static>,
}

impl Fonts {
    fn get() -> Result<&'static Fonts, DocumentError> {
        static FONTS: OnceLock<Option<Fonts>> = OnceLock::new();
        FONTS
            .get_or_init(|| {
                Some(Fonts {
                    regular: ttf_parser::Face::parse(REGULAR, 0).ok()?,
                    bold: ttf_parser::Face::parse(BOLD, 0).ok()?,
                })
            })
            .as_ref()
            .ok_or_else(|| DocumentError::Pdf("the embedded fonts cannot be read".into()))
    }

    /// The width of `text` at `size` points (without kerning: a little generous).
    fn width(&self, text: &str, size: f32, bold: bool) -> f32 {
        let face = if bold { &self.bold } else { &self.regular };
        let units: u32 = text
            .chars()
            .map(|c| {
                face.glyph_index(c).and_then(|g| face.glyph_hor_advance(g)).map(u32::from).unwrap_or_else(|| {
                    // A character the font lacks is drawn as the missing-glyph box.
                    face.glyph_hor_advance(ttf_parser::GlyphId(0)).map(u32::from).unwrap_or(0)
                })
            })
            .sum();
        units as f32 * size / f32::from(face.units_per_em())
    }
}

/// Fills pages top to bottom.
struct Layout<'f> {
    fonts: &'f Fonts,
    pages: Vec<Vec<Run>>,
    y: f32,
}

impl Layout<'_> {
    fn new_page(&mut self) {
        self.pages.push(Vec::new());
        self.y = MARGIN;
    }

    /// Places one line; starts a new page when it would run into the footer.
    fn line(&mut self, x: f32, text: String, size: f32, bold: bool) {
        let height = size * LINE;
        if self.y + height > PAGE_HEIGHT - MARGIN - FOOTER {
            self.new_page();
        }
        self.y += height;
        if let Some(page) = self.pages.last_mut()
            && !text.is_empty()
        {
            page.push(Run { x, y: self.y - size * (LINE - 1.0), size, bold, text });
        }
    }

    fn space(&mut self, points: f32) {
        // Space at the top of a page is wasted.
        if self.y > MARGIN {
            self.y += points;
        }
    }

    fn wrapped(&mut self, x: f32, width: f32, text: &str, size: f32, bold: bool) {
        for line in wrap(self.fonts, text, width, size, bold) {
            self.line(x, line, size, bold);
        }
    }
}

fn layout(blocks: &[Block], fonts: &Fonts) -> Vec<Vec<Run>> {
    let mut out = Layout { fonts, pages: Vec::new(), y: MARGIN };
    out.new_page();
    let width = PAGE_WIDTH - 2.0 * MARGIN;
    let mut after_field = false;
    for block in blocks {
        if after_field && !matches!(block, Block::Field(..)) {
            out.space(BODY_SIZE * 0.5);
        }
        after_field = matches!(block, Block::Field(..));
        match block {
            Block::Heading(level, text) => {
                let size = match level {
                    1 => 18.0,
                    2 => 14.0,
                    _ => 11.5,
                };
                out.space(size * 0.8);
                // A heading is not left alone at the foot of a page.
                if out.y + size * LINE * 3.0 > PAGE_HEIGHT - MARGIN - FOOTER {
                    out.new_page();
                }
                out.wrapped(MARGIN, width, text, size, true);
                out.space(size * 0.3);
            }
            Block::Field(label, value) => {
                let label = format!("{label}: ");
                let indent = fonts.width(&label, BODY_SIZE, true).min(width / 3.0);
                let lines = wrap(fonts, value, width - indent, BODY_SIZE, false);
                for (i, line) in lines.into_iter().enumerate() {
                    if i == 0 {
                        out.line(MARGIN, clip(&label, 40), BODY_SIZE, true);
                        out.y -= BODY_SIZE * LINE;
                    }
                    out.line(MARGIN + indent, line, BODY_SIZE, false);
                }
            }
            Block::Paragraph(text) => {
                out.wrapped(MARGIN, width, text, BODY_SIZE, false);
                out.space(BODY_SIZE * 0.6);
            }
            Block::PageBreak => out.new_page(),
        }
    }
    out.pages.retain(|p| !p.is_empty());
    out.pages
}

/// Breaks text into lines that fit `width`: at spaces where it can, inside a word where a
/// word is wider than the line. Kept line breaks, tabs as spaces, control characters dropped.
fn wrap(fonts: &Fonts, text: &str, width: f32, size: f32, bold: bool) -> Vec<String> {
    let mut lines = Vec::new();
    let cleaned: String =
        text.chars().map(|c| if c == '\t' { ' ' } else { c }).filter(|c| *c == '\n' || !c.is_control()).collect();
    for source in cleaned.split('\n') {
        let mut line = String::new();
        for word in source.split(' ') {
            let candidate = if line.is_empty() { word.to_string() } else { format!("{line} {word}") };
            if fonts.width(&candidate, size, bold) <= width {
                line = candidate;
                continue;
            }
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            // A word wider than the line is cut where it must be.
            let mut piece = String::new();
            for c in word.chars() {
                piece.push(c);
                if fonts.width(&piece, size, bold) > width && piece.chars().count() > 1 {
                    piece.pop();
                    lines.push(std::mem::take(&mut piece));
                    piece.push(c);
                }
            }
            line = piece;
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_wraps_within_the_margins_and_keeps_every_word() {
        let fonts = Fonts::get().expect("fonts");
        let text = "Æbleskiver og rødgrød med fløde ".repeat(40);
        let lines = wrap(fonts, &text, 200.0, BODY_SIZE, false);
        assert!(lines.len() > 10);
        assert!(lines.iter().all(|l| fonts.width(l, BODY_SIZE, false) <= 200.0), "{lines:?}");
        assert_eq!(lines.join(" ").split_whitespace().count(), text.split_whitespace().count());
        let long_word = "x".repeat(500);
        let lines = wrap(fonts, &long_word, 100.0, BODY_SIZE, false);
        assert_eq!(lines.concat(), long_word);
        assert_eq!(wrap(fonts, "a\n\nb\tc\u{7}", 100.0, BODY_SIZE, false), vec!["a", "", "b c"]);
    }

    #[test]
    fn many_paragraphs_fill_several_pages_within_the_page() {
        let fonts = Fonts::get().expect("fonts");
        let blocks: Vec<Block> = (0..200).map(|i| Block::Paragraph(format!("Afsnit {i}"))).collect();
        let pages = layout(&blocks, fonts);
        assert!(pages.len() > 2);
        for run in pages.iter().flatten() {
            assert!(run.y > MARGIN && run.y < PAGE_HEIGHT - MARGIN - FOOTER + BODY_SIZE, "{run:?}");
        }
        let texts: Vec<&str> = pages.iter().flatten().map(|r| r.text.as_str()).collect();
        assert_eq!(texts.len(), 200);
        assert_eq!(texts[199], "Afsnit 199");
    }

    #[test]
    fn a_report_renders_to_a_pdf_with_the_fonts_embedded() {
        let mut report = Report::new("Høring om cykelstier på Østerbro");
        report.heading(1, "Høring om cykelstier på Østerbro").field("Frist", "20. december 2026").paragraph("Svar");
        let pdf = report.render().expect("pdf");
        assert!(pdf.starts_with(b"%PDF-"));
        let text = String::from_utf8_lossy(&pdf);
        assert!(text.contains("/FontFile2"), "the TrueType font is embedded");
    }
}
