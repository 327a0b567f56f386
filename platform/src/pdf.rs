//! Text-only PDF reports: a title, headings, paragraphs, key/value fields and monospace lines.
//!
//! [`PdfDocument`] lays text out on A4 pages with the standard Type 1 fonts (Helvetica,
//! Helvetica-Bold, Courier) in WinAnsi encoding, so Portuguese and English text renders and
//! extracts (for example with `pdftotext`) without embedding any font. Each page carries a
//! "page N of M" footer.

const PAGE_WIDTH: f32 = 595.28;
const PAGE_HEIGHT: f32 = 841.89;
const MARGIN: f32 = 50.0;
const TEXT_WIDTH: f32 = PAGE_WIDTH - 2.0 * MARGIN;
const TOP: f32 = PAGE_HEIGHT - MARGIN;
const LEADING: f32 = 1.3;
const TITLE_SIZE: f32 = 20.0;
const HEADING_SIZE: f32 = 16.0;
const SUBHEADING_SIZE: f32 = 12.0;
const BODY_SIZE: f32 = 10.0;
const MONO_SIZE: f32 = 9.0;
const FOOTER_SIZE: f32 = 8.0;
const FOOTER_BASELINE: f32 = 30.0;
const FIELD_INDENT: f32 = 20.0;
const MONO_CHARS: usize = (TEXT_WIDTH / (0.6 * MONO_SIZE)) as usize;
const FIRST_PAGE_ID: usize = 7;

/// Helvetica advance widths (AFM units) for WinAnsi bytes 32..=255.
const HELVETICA: [u16; 224] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556, 556, 556, 556, 556,
    556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833,
    722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556,
    556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334,
    260, 334, 584, 0, 556, 0, 222, 556, 333, 1000, 556, 556, 333, 1000, 667, 333, 1000, 0, 611, 0, 0, 222, 222, 333,
    333, 350, 556, 1000, 333, 1000, 500, 333, 944, 0, 500, 667, 278, 333, 556, 556, 556, 556, 260, 556, 333, 737, 370,
    556, 584, 333, 737, 333, 400, 584, 333, 333, 333, 578, 537, 278, 333, 333, 365, 556, 834, 834, 834, 611, 667, 667,
    667, 667, 667, 667, 1000, 722, 667, 667, 667, 667, 278, 278, 278, 278, 722, 722, 778, 778, 778, 778, 778, 584, 778,
    722, 722, 722, 722, 667, 667, 611, 556, 556, 556, 556, 556, 556, 889, 500, 556, 556, 556, 556, 278, 278, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 584, 611, 556, 556, 556, 556, 500, 556, 500,
];

/// Helvetica-Bold advance widths (AFM units) for WinAnsi bytes 32..=255.
const HELVETICA_BOLD: [u16; 224] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556, 556, 556, 556, 556,
    556, 556, 556, 333, 333, 584, 584, 584, 611, 975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833,
    722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556, 333, 556, 611, 556, 611,
    556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611, 611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389,
    280, 389, 584, 0, 556, 0, 278, 556, 500, 1000, 556, 556, 333, 1000, 667, 333, 1000, 0, 611, 0, 0, 278, 278, 500,
    500, 350, 556, 1000, 333, 1000, 556, 333, 944, 0, 500, 667, 278, 333, 556, 556, 556, 556, 280, 556, 333, 737, 370,
    556, 584, 333, 737, 333, 400, 584, 333, 333, 333, 611, 556, 278, 333, 333, 365, 556, 834, 834, 834, 611, 722, 722,
    722, 722, 722, 722, 1000, 722, 667, 667, 667, 667, 278, 278, 278, 278, 722, 722, 778, 778, 778, 778, 778, 584, 778,
    722, 722, 722, 722, 667, 667, 611, 556, 556, 556, 556, 556, 556, 889, 556, 556, 556, 556, 556, 278, 278, 278, 278,
    611, 611, 611, 611, 611, 611, 611, 584, 611, 611, 611, 611, 611, 556, 611, 556,
];

/// The characters of WinAnsi bytes 0x80..=0x9F; `'\0'` marks the five unassigned bytes.
const CP1252_HIGH: [char; 32] = [
    '\u{20AC}', '\0', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}', '\u{02C6}', '\u{2030}',
    '\u{0160}', '\u{2039}', '\u{0152}', '\0', '\u{017D}', '\0', '\0', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}',
    '\u{2022}', '\u{2013}', '\u{2014}', '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}', '\u{0153}', '\0', '\u{017E}',
    '\u{0178}',
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Font {
    Regular,
    Bold,
    Mono,
}

impl Font {
    const ALL: [Self; 3] = [Self::Regular, Self::Bold, Self::Mono];

    fn resource(self) -> &'static str {
        match self {
            Self::Regular => "F1",
            Self::Bold => "F2",
            Self::Mono => "F3",
        }
    }

    fn base_font(self) -> &'static str {
        match self {
            Self::Regular => "Helvetica",
            Self::Bold => "Helvetica-Bold",
            Self::Mono => "Courier",
        }
    }

    fn width(self, text: &[u8], size: f32) -> f32 {
        let table = match self {
            Self::Regular => &HELVETICA,
            Self::Bold => &HELVETICA_BOLD,
            Self::Mono => return text.len() as f32 * 0.6 * size,
        };
        let units: u32 =
            text.iter().map(|&byte| usize::from(byte).checked_sub(32).map_or(0, |i| u32::from(table[i]))).sum();
        units as f32 * size / 1000.0
    }
}

#[derive(Debug, Clone)]
struct Run {
    font: Font,
    size: f32,
    x: f32,
    y: f32,
    text: Vec<u8>,
}

/// A document being written: A4 pages, margins 50 pt, text flowing onto new pages as needed.
#[derive(Debug, Clone)]
pub struct PdfDocument {
    title: String,
    pages: Vec<Vec<Run>>,
    y: f32,
}

impl PdfDocument {
    /// Starts a document whose first page opens with `title`, also recorded as its `/Title`. A
    /// title in two languages (`Relatório … / … report`) too long for one line is printed one
    /// language a line rather than wrapped wherever its width runs out.
    pub fn new(title: &str) -> Self {
        let mut doc = Self { title: title.to_owned(), pages: vec![Vec::new()], y: TOP };
        let parts: Vec<&str> = match Font::Bold.width(&encode(title), TITLE_SIZE) > TEXT_WIDTH {
            true => title.split(" / ").collect(),
            false => vec![title],
        };
        for part in parts {
            doc.wrapped(Font::Bold, TITLE_SIZE, part);
        }
        doc.y -= 8.0;
        doc
    }

    /// Adds a section heading (Helvetica-Bold 16 pt) with space above it.
    pub fn heading(&mut self, text: &str) {
        self.gap(10.0);
        self.keep(HEADING_SIZE * LEADING + 3.0 * BODY_SIZE * LEADING);
        self.wrapped(Font::Bold, HEADING_SIZE, text);
        self.y -= 4.0;
    }

    /// Adds a subheading (Helvetica-Bold 12 pt).
    pub fn subheading(&mut self, text: &str) {
        self.gap(6.0);
        self.keep(SUBHEADING_SIZE * LEADING + 2.0 * BODY_SIZE * LEADING);
        self.wrapped(Font::Bold, SUBHEADING_SIZE, text);
        self.y -= 2.0;
    }

    /// Adds a paragraph (Helvetica 10 pt) word-wrapped to the page width; `\n` starts a new line.
    pub fn paragraph(&mut self, text: &str) {
        for line in text.split('\n') {
            self.wrapped(Font::Regular, BODY_SIZE, line);
        }
        self.gap(4.0);
    }

    /// Adds a "label: value" line with the label in bold and the value wrapped beside it.
    pub fn field(&mut self, label: &str, value: &str) {
        let label = encode(&format!("{label}:"));
        let value = encode(value);
        let offset = Font::Bold.width(&label, BODY_SIZE) + Font::Regular.width(b" ", BODY_SIZE);
        if offset > TEXT_WIDTH / 2.0 {
            self.lines(Font::Bold, BODY_SIZE, 0.0, wrap(&label, Font::Bold, BODY_SIZE, TEXT_WIDTH));
            let lines = wrap(&value, Font::Regular, BODY_SIZE, TEXT_WIDTH - FIELD_INDENT);
            self.lines(Font::Regular, BODY_SIZE, FIELD_INDENT, lines);
            return;
        }
        let mut lines = wrap(&value, Font::Regular, BODY_SIZE, TEXT_WIDTH - offset).into_iter();
        let y = self.next_line(BODY_SIZE);
        self.push(Font::Bold, BODY_SIZE, 0.0, y, label);
        if let Some(first) = lines.next() {
            self.push(Font::Regular, BODY_SIZE, offset, y, first);
        }
        self.lines(Font::Regular, BODY_SIZE, offset, lines);
    }

    /// Adds text in Courier 9 pt, broken at the page width without dropping any character.
    pub fn monospace(&mut self, text: &str) {
        for line in text.split('\n') {
            let bytes = encode(line);
            if bytes.is_empty() {
                self.next_line(MONO_SIZE);
            }
            for chunk in bytes.chunks(MONO_CHARS) {
                let y = self.next_line(MONO_SIZE);
                self.push(Font::Mono, MONO_SIZE, 0.0, y, chunk.to_vec());
            }
        }
    }

    /// Adds vertical space, unless at the top of a page.
    pub fn spacer(&mut self) {
        self.gap(BODY_SIZE);
    }

    /// Serializes the document as a PDF 1.4 file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let count = self.pages.len();
        let kids: Vec<String> = (0..count).map(|i| format!("{} 0 R", FIRST_PAGE_ID + 2 * i)).collect();
        let mut objects = vec![
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            format!("<< /Type /Pages /Kids [{}] /Count {count} >>", kids.join(" ")).into_bytes(),
        ];
        for font in Font::ALL {
            objects.push(
                format!("<< /Type /Font /Subtype /Type1 /BaseFont /{} /Encoding /WinAnsiEncoding >>", font.base_font())
                    .into_bytes(),
            );
        }
        objects.push(format!("<< /Title {} >>", utf16_hex(&self.title)).into_bytes());
        let fonts: Vec<String> =
            Font::ALL.iter().enumerate().map(|(i, font)| format!("/{} {} 0 R", font.resource(), i + 3)).collect();
        for (index, page) in self.pages.iter().enumerate() {
            objects.push(
                format!(
                    "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] \
                     /Resources << /Font << {} >> >> /Contents {} 0 R >>",
                    fonts.join(" "),
                    FIRST_PAGE_ID + 2 * index + 1
                )
                .into_bytes(),
            );
            let content = page_content(page, index + 1, count);
            let mut stream = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
            stream.extend_from_slice(&content);
            stream.extend_from_slice(b"\nendstream");
            objects.push(stream);
        }

        let mut out = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
        let mut offsets = Vec::with_capacity(objects.len());
        for (index, body) in objects.iter().enumerate() {
            offsets.push(out.len());
            out.extend_from_slice(format!("{} 0 obj\n", index + 1).as_bytes());
            out.extend_from_slice(body);
            out.extend_from_slice(b"\nendobj\n");
        }
        let xref = out.len();
        out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
        for offset in offsets {
            out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
        }
        out.extend_from_slice(
            format!("trailer\n<< /Size {} /Root 1 0 R /Info 6 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1)
                .as_bytes(),
        );
        out
    }

    fn wrapped(&mut self, font: Font, size: f32, text: &str) {
        let lines = wrap(&encode(text), font, size, TEXT_WIDTH);
        self.lines(font, size, 0.0, lines);
    }

    fn lines(&mut self, font: Font, size: f32, x: f32, lines: impl IntoIterator<Item = Vec<u8>>) {
        for line in lines {
            let y = self.next_line(size);
            self.push(font, size, x, y, line);
        }
    }

    fn push(&mut self, font: Font, size: f32, x: f32, y: f32, text: Vec<u8>) {
        if let Some(page) = self.pages.last_mut().filter(|_| !text.is_empty()) {
            page.push(Run { font, size, x: MARGIN + x, y, text });
        }
    }

    /// Reserves a line of text in `size` and returns its baseline.
    fn next_line(&mut self, size: f32) -> f32 {
        let leading = size * LEADING;
        self.keep(leading);
        let baseline = self.y - size;
        self.y -= leading;
        baseline
    }

    /// Starts a new page unless `height` fits above the bottom margin (or the page is empty).
    fn keep(&mut self, height: f32) {
        if self.y - height < MARGIN && self.y < TOP {
            self.pages.push(Vec::new());
            self.y = TOP;
        }
    }

    fn gap(&mut self, height: f32) {
        if self.y < TOP {
            self.y -= height;
        }
    }
}

fn page_content(runs: &[Run], number: usize, count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for run in runs {
        show(&mut out, run.font, run.size, run.x, run.y, &run.text);
    }
    let footer = encode(&format!("page {number} of {count}"));
    let x = (PAGE_WIDTH - Font::Regular.width(&footer, FOOTER_SIZE)) / 2.0;
    show(&mut out, Font::Regular, FOOTER_SIZE, x, FOOTER_BASELINE, &footer);
    out
}

fn show(out: &mut Vec<u8>, font: Font, size: f32, x: f32, y: f32, text: &[u8]) {
    out.extend_from_slice(format!("BT /{} {size} Tf {x:.2} {y:.2} Td (", font.resource()).as_bytes());
    for &byte in text {
        if matches!(byte, b'\\' | b'(' | b')') {
            out.push(b'\\');
        }
        out.push(byte);
    }
    out.extend_from_slice(b") Tj ET\n");
}

/// Breaks `text` into lines no wider than `width`, at spaces where possible and inside words
/// that are wider than a line on their own. Always returns at least one (possibly empty) line.
fn wrap(text: &[u8], font: Font, size: f32, width: f32) -> Vec<Vec<u8>> {
    let space = font.width(b" ", size);
    let mut lines = Vec::new();
    let mut line = Vec::new();
    let mut used = 0.0;
    for word in text.split(|&byte| byte == b' ').filter(|word| !word.is_empty()) {
        let word_width = font.width(word, size);
        if !line.is_empty() && used + space + word_width > width {
            lines.push(std::mem::take(&mut line));
            used = 0.0;
        }
        if line.is_empty() && word_width > width {
            for &byte in word {
                let byte_width = font.width(&[byte], size);
                if !line.is_empty() && used + byte_width > width {
                    lines.push(std::mem::take(&mut line));
                    used = 0.0;
                }
                line.push(byte);
                used += byte_width;
            }
        } else {
            if !line.is_empty() {
                line.push(b' ');
                used += space;
            }
            line.extend_from_slice(word);
            used += word_width;
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Converts UTF-8 text to WinAnsi (cp1252) bytes: composed first (NFC), so that a letter typed as
/// a base and its marks is the one letter cp1252 has; control characters become spaces; a letter
/// outside cp1252 is written as its base letter with what marks cp1252 keeps (`İ` → `I`, `ş` →
/// `s`, `ễ` → `ê`, `ı` → `i`), a ligature or compatibility form as its letters (`ﬁ` → `fi`); a mark
/// left alone is dropped, as is a character that shows nothing (a zero-width joiner), a decimal
/// digit of another script is written as its ASCII digit (`١` → `1`), and any other character
/// becomes `?`.
fn encode(text: &str) -> Vec<u8> {
    use unicode_normalization::UnicodeNormalization;
    let mut bytes = Vec::with_capacity(text.len());
    for c in text.nfc() {
        if c.is_control() {
            bytes.push(b' ');
        } else if crate::text::is_invisible(c) {
            continue;
        } else if let Some(byte) = win_ansi(c) {
            bytes.push(byte);
        } else if let Some(written) = written_as(c) {
            bytes.extend(written);
        } else if let Some(digit) = crate::text::decimal_digit(c) {
            // Another script's digit as its value: a masked card's last four stay legible.
            bytes.push(b'0' + digit as u8);
        } else {
            bytes.push(b'?');
        }
    }
    bytes
}

/// `c`'s cp1252 byte, if it has one.
fn win_ansi(c: char) -> Option<u8> {
    match c {
        ' '..='~' | '\u{A0}'..='\u{FF}' => u8::try_from(c).ok(),
        _ => CP1252_HIGH.iter().position(|&high| high == c && high != '\0').map(|i| 0x80 + i as u8),
    }
}

/// How `c`, which cp1252 lacks, is written in it: its compatibility decomposition, each letter
/// with as many of its marks as still give a cp1252 letter; `None` when a letter of it has no
/// cp1252 form.
fn written_as(c: char) -> Option<Vec<u8>> {
    use unicode_normalization::char::{compose, decompose_compatible, is_combining_mark};
    let mut parts = Vec::new();
    decompose_compatible(c, |part| parts.push(part));
    let mut letters: Vec<char> = Vec::new();
    for part in parts {
        if is_combining_mark(part) {
            if let Some(last) = letters.last_mut()
                && let Some(composed) = compose(*last, part).filter(|composed| win_ansi(*composed).is_some())
            {
                *last = composed;
            }
        } else {
            letters.push(if win_ansi(part).is_some() { part } else { read_as(part)? });
        }
    }
    letters.into_iter().map(win_ansi).collect()
}

/// The letter a Latin letter without a decomposition is read as.
fn read_as(c: char) -> Option<char> {
    Some(match c {
        'ı' => 'i',
        'ł' => 'l',
        'Ł' => 'L',
        'đ' => 'd',
        'Đ' => 'D',
        'ħ' => 'h',
        'Ħ' => 'H',
        _ => return None,
    })
}

/// A PDF text string holding `text` as UTF-16BE with a byte order mark.
fn utf16_hex(text: &str) -> String {
    text.encode_utf16().fold(String::from("<FEFF"), |mut hex, unit| {
        hex.push_str(&format!("{unit:04X}"));
        hex
    }) + ">"
}

#[cfg(test)]
mod tests {
    use std::{
        process::Command,
        time::{SystemTime, UNIX_EPOCH},
    };

    use super::*;

    const SENTENCE: &str = "Avaliação de risco clínico: não substitui o julgamento médico";
    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|window| window == needle)
    }

    fn count(haystack: &[u8], needle: &[u8]) -> usize {
        haystack.windows(needle.len()).filter(|window| *window == needle).count()
    }

    fn sample() -> PdfDocument {
        let mut doc = PdfDocument::new("Relatório (teste) \\ final");
        doc.heading("Resumo");
        doc.paragraph(SENTENCE);
        doc.subheading("Modelo");
        doc.field("Versão", "1.2.3");
        doc.field("Hash", HASH);
        doc.monospace(HASH);
        doc.spacer();
        doc
    }

    #[test]
    fn structure_and_xref_offsets() {
        let bytes = sample().to_bytes();
        assert!(bytes.starts_with(b"%PDF-1.4\n%"));
        assert!(bytes[10..14].iter().all(|&byte| byte >= 0x80));
        assert!(bytes.trim_ascii_end().ends_with(b"%%EOF"));

        let text = String::from_utf8_lossy(&bytes);
        let start = text.rfind("startxref\n").expect("startxref") + "startxref\n".len();
        let xref: usize = text[start..].lines().next().expect("offset").parse().expect("numeric offset");
        assert!(bytes[xref..].starts_with(b"xref\n0 "));
        let table = std::str::from_utf8(&bytes[xref..]).expect("ascii xref table and trailer");
        let mut lines = table.lines().skip(1);
        let size: usize = lines.next().and_then(|line| line.split(' ').nth(1)).expect("size").parse().expect("size");
        assert_eq!(lines.next(), Some("0000000000 65535 f "));
        for id in 1..size {
            let entry = lines.next().expect("xref entry");
            assert_eq!(entry.len(), 19, "{entry:?}");
            assert!(entry.ends_with(" 00000 n "), "{entry:?}");
            let offset: usize = entry[..10].parse().expect("10-digit offset");
            assert!(bytes[offset..].starts_with(format!("{id} 0 obj\n").as_bytes()), "object {id} at {offset}");
        }
        assert_eq!(lines.next(), Some("trailer"));
        assert!(text.contains(&format!("<< /Size {size} /Root 1 0 R /Info 6 0 R >>")));
        assert_eq!(count(&bytes, b"/Encoding /WinAnsiEncoding"), 3);
        assert!(find(&bytes, b"(Relat\xF3rio \\(teste\\) \\\\ final) Tj").is_some());
        assert!(text.contains("/Title <FEFF00520065006C0061007400F3007200690"));
    }

    #[test]
    fn long_content_flows_onto_pages_counted_in_the_tree() {
        let mut doc = PdfDocument::new("Long");
        for i in 0..200 {
            doc.heading(&format!("Section {i}"));
            doc.paragraph(&"lorem ipsum dolor sit amet ".repeat(20));
        }
        let pages = doc.pages.len();
        assert!(pages > 5, "{pages} pages");
        assert!(doc.pages.iter().flatten().all(|run| run.y >= MARGIN && run.y <= TOP));

        let bytes = doc.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        let tree = &text[text.find("/Type /Pages").expect("pages tree")..];
        let tree_count: usize = tree[tree.find("/Count ").expect("count") + 7..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .expect("count value")
            .parse()
            .expect("numeric count");
        assert_eq!(tree_count, pages);
        assert_eq!(count(&bytes, b"/Type /Page "), pages);
        assert!(text.contains(&format!("(page {pages} of {pages}) Tj")));
    }

    #[test]
    fn wrapping_keeps_every_character_within_the_width() {
        let long = "ab".repeat(150);
        let mut doc = PdfDocument::new("Wrap");
        doc.monospace(&long);
        doc.paragraph(&format!("short {long} words"));
        let runs: Vec<&Run> = doc.pages.iter().flatten().collect();
        let mono: Vec<u8> = runs.iter().filter(|run| run.font == Font::Mono).flat_map(|run| run.text.clone()).collect();
        assert_eq!(mono, long.as_bytes());
        assert!(runs.iter().all(|run| run.font.width(&run.text, run.size) <= TEXT_WIDTH));
        assert_eq!(MONO_CHARS, 91);
    }

    #[test]
    fn a_long_title_in_two_languages_is_one_language_a_line() {
        let title = "Relatório de avaliação de risco / Risk assessment report";
        let doc = PdfDocument::new(title);
        let lines: Vec<&[u8]> = doc.pages[0].iter().map(|run| run.text.as_slice()).collect();
        assert_eq!(lines, [encode("Relatório de avaliação de risco").as_slice(), b"Risk assessment report"]);
        assert_eq!(doc.title, title);
        let short = PdfDocument::new("Extrato / Statement");
        assert_eq!(short.pages[0].len(), 1, "one that fits stays on its line");
    }

    #[test]
    fn encodes_to_win_ansi() {
        assert_eq!(encode("****١١١١ ४२"), b"****1111 42");
        assert_eq!(encode("çãéíóúâêôà"), b"\xE7\xE3\xE9\xED\xF3\xFA\xE2\xEA\xF4\xE0");
        assert_eq!(encode("€ – “x” ™"), b"\x80 \x96 \x93x\x94 \x99");
        assert_eq!(encode("a\tb\u{7}c→日"), b"a b c??");
        assert_eq!(encode("İlker Işık Łódź Đorđe"), b"Ilker Isik L\xF3dz Dorde");
        // Typed decomposed (NFD), Portuguese letters are still cp1252's.
        assert_eq!(encode("Jose\u{301} Conceic\u{327}a\u{303}o"), b"Jos\xE9 Concei\xE7\xE3o");
        assert_eq!(encode("Nguyễn ő ǖ ﬁnn Ｆｕｌｌ ǅemal \u{301}x"), b"Nguy\xEAn o \xFC finn Full D\x9Eemal x");
        assert_eq!(encode("Иван"), b"????");
        assert_eq!(Font::Regular.width(b"Hello", 1000.0), 722.0 + 556.0 + 222.0 + 222.0 + 556.0);
        assert_eq!(Font::Bold.width(b"\xE7", 1000.0), 556.0);
    }

    #[test]
    fn pdftotext_extracts_the_text() {
        assert!(
            Command::new("pdftotext").arg("-v").output().is_ok(),
            "pdftotext not found: install poppler-utils (apt-get install poppler-utils) to run this test"
        );
        let title = "Relatório de avaliação do modelo";
        let mut doc = PdfDocument::new(title);
        doc.heading("Resumo");
        doc.paragraph(SENTENCE);
        doc.field("Hash", "sha256");
        doc.monospace(HASH);
        while doc.pages.len() < 2 {
            doc.paragraph("Texto de preenchimento para a segunda página do relatório.");
        }
        assert_eq!(doc.pages.len(), 2);

        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos());
        let path = std::env::temp_dir().join(format!("pdf-test-{}-{nanos}.pdf", std::process::id()));
        std::fs::write(&path, doc.to_bytes()).expect("write pdf");
        let output = Command::new("pdftotext").arg("-layout").arg(&path).arg("-").output();
        std::fs::remove_file(&path).expect("remove pdf");
        let output = output.expect("run pdftotext");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8(output.stdout).expect("utf-8 text");

        for expected in [title, SENTENCE, HASH, "Hash: sha256", "page 1 of 2", "page 2 of 2"] {
            assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
        }
    }
}
