//! Writing usage workbooks: the `usage_records` sheet of the template, one row per record.
//!
//! A usage file's workbook is a fixed package (content types, relationships, styles, theme,
//! document properties) around one sheet whose only variable part is its rows. rust_xlsxwriter
//! renders that package once ([`Package`]: a workbook holding just the header row); every
//! workbook then copies its parts still compressed and streams its rows, in rust_xlsxwriter's
//! own cell markup, straight into the sheet's deflate stream. Rendering the package for every
//! file (nine compressors set up and torn down, a scratch file created and read back) cost
//! about 0.3 ms a file, twice what its rows cost. A differential test keeps every part
//! byte-identical to what rust_xlsxwriter writes for the same rows. Nothing is buffered but
//! the compressor's window and a block of XML, so memory stays flat however many records a
//! file holds (an upload's zip itself is held whole to be sent).
//!
//! A workbook written to disk appears under its final name only once complete, so nobody ever
//! uploads half a file. Writing is blocking CPU and file work: async callers use
//! `spawn_blocking`.

use std::io::{Cursor, Read, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use rust_xlsxwriter::{Workbook, Worksheet, XlsxError};
use zip::result::ZipError;
use zip::write::{SimpleFileOptions, StreamWriter};
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

use super::row::{Cell, ShortDecimal, UsageRow, COLUMNS, SHEET};

/// Data rows a worksheet can hold: Excel's 1,048,576 rows minus the header.
pub const MAX_RECORDS: u32 = 1_048_575;
/// The most UTF-16 units Excel keeps in a cell.
pub const MAX_TEXT: usize = 32_767;

/// The one worksheet's part in the package.
const SHEET_PART: &str = "xl/worksheets/sheet1.xml";
/// Rows reach the compressor in blocks of about this many bytes of XML.
const XML_BLOCK: usize = 64 * 1024;
/// Where the rendered sheet names its last row (the header's), written anew for each workbook.
const DIMENSION_START: &str = r#"<dimension ref="A1:Q"#;
const HEADER_DIMENSION_END: &str = r#"1"/>"#;
const SHEET_DATA_END: &str = "</sheetData>";
/// Text rust_xlsxwriter marks `xml:space="preserve"` when it starts or ends with one of these.
const SIGNIFICANT_SPACE: [char; 3] = ['\t', '\n', ' '];

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkbookStats {
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkbookError {
    #[error("a usage workbook holds at most {MAX_RECORDS} records")]
    TooManyRows,
    #[error("record {record}: {column} is not a finite number")]
    NotFinite { record: u64, column: &'static str },
    #[error("record {record}: {column} is longer than the {MAX_TEXT} characters a cell holds")]
    TextTooLong { record: u64, column: &'static str },
    #[error("the workbook was started for {expected} records but given {given}")]
    RecordCount { expected: u32, given: u32 },
    #[error("cannot render the workbook package: {0}")]
    Xlsx(#[from] XlsxError),
    #[error("the rendered workbook package has no {0}")]
    Package(&'static str),
    #[error("cannot write the workbook: {0}")]
    Zip(#[from] ZipError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The workbook as bytes, for small workbooks (tests, the simulator); large ones go to a file.
pub fn workbook_bytes(rows: impl IntoIterator<Item = UsageRow>) -> Result<Vec<u8>, WorkbookError> {
    let rows: Vec<UsageRow> = rows.into_iter().collect();
    let package = Package::new()?;
    let mut writer = WorkbookWriter::new(&package, Vec::new(), rows.len())?;
    for row in &rows {
        writer.push(row)?;
    }
    writer.finish()
}

/// The parts of a usage workbook around its rows, rendered by rust_xlsxwriter.
#[derive(Debug)]
pub struct Package {
    /// A complete workbook holding only the header row, whose parts are copied as they are.
    frame: ZipArchive<Cursor<Arc<[u8]>>>,
    /// Which of `frame`'s parts is the sheet: the others keep their places around it.
    sheet_index: usize,
    /// The sheet's XML up to its last row's number, from there through the header row, and
    /// after the data rows.
    sheet_start: Box<str>,
    header: Box<str>,
    sheet_end: Box<str>,
}

impl Package {
    /// Renders the package (its document properties dated now).
    pub fn new() -> Result<Package, WorkbookError> {
        let (mut workbook, sheet) = header_only()?;
        workbook.push_worksheet(sheet);
        let mut frame = ZipArchive::new(Cursor::new(Arc::from(workbook.save_to_buffer()?)))?;
        let sheet_index = frame
            .index_for_name(SHEET_PART)
            .ok_or(WorkbookError::Package(SHEET_PART))?;
        let mut xml = String::new();
        frame
            .by_index(sheet_index)?
            .read_to_string(&mut xml)
            .map_err(ZipError::Io)?;
        let (start, rest) = xml
            .split_once(DIMENSION_START)
            .ok_or(WorkbookError::Package("sheet dimension"))?;
        let rest = rest
            .strip_prefix(HEADER_DIMENSION_END)
            .ok_or(WorkbookError::Package("header-only sheet dimension"))?;
        let (header, end) = rest
            .rsplit_once(SHEET_DATA_END)
            .ok_or(WorkbookError::Package("sheet data"))?;
        Ok(Package {
            frame,
            sheet_index,
            sheet_start: format!("{start}{DIMENSION_START}").into(),
            header: format!(r#""/>{header}"#).into(),
            sheet_end: format!("{SHEET_DATA_END}{end}").into(),
        })
    }

    /// Copies the frame's parts at `indexes`, still compressed.
    fn copy_parts<W: Write>(
        &self,
        zip: &mut ZipWriter<StreamWriter<W>>,
        indexes: Range<usize>,
    ) -> Result<(), WorkbookError> {
        let mut frame = self.frame.clone();
        for index in indexes {
            zip.raw_copy_file(frame.by_index_raw(index)?)?;
        }
        Ok(())
    }
}

/// A workbook and its sheet holding the header row, not yet pushed into the workbook.
fn header_only() -> Result<(Workbook, Worksheet), XlsxError> {
    let mut workbook = Workbook::new();
    // Level 1 deflates several times faster than the default 6 for files about 1.5× larger: at
    // a million rows compression would otherwise dominate the whole write.
    workbook.set_zip_compression_level(1);
    // Constant-memory sheets write text inline, as the rows are written.
    let mut sheet = workbook.new_worksheet_with_constant_memory()?;
    sheet.set_name(SHEET)?;
    for (column, name) in (0u16..).zip(COLUMNS) {
        sheet.write_string(0, column, name)?;
    }
    Ok((workbook, sheet))
}

/// One run's package (the workbook's parts around its rows), rendered when its first workbook
/// is written (runs that write none, such as submitting, never render it) so that its date is
/// the run's.
#[derive(Debug, Clone, Default)]
pub struct RunPackage(Arc<Mutex<Option<Arc<Package>>>>);

impl RunPackage {
    /// The run's package; the first writers wait for one rendering rather than each render.
    pub fn get(&self) -> Result<Arc<Package>, WorkbookError> {
        let mut rendered = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(package) = &*rendered {
            return Ok(package.clone());
        }
        let package = Arc::new(Package::new()?);
        *rendered = Some(package.clone());
        Ok(package)
    }
}

/// A usage workbook being written into `W`, one row at a time.
pub struct WorkbookWriter<'a, W: Write> {
    package: &'a Package,
    zip: ZipWriter<StreamWriter<W>>,
    xml: Vec<u8>,
    expected: u32,
    records: u32,
}

impl<'a, W: Write> WorkbookWriter<'a, W> {
    /// Starts a workbook of exactly `records` rows: the sheet states its size before its rows.
    pub fn new(package: &'a Package, output: W, records: usize) -> Result<Self, WorkbookError> {
        let records = u32::try_from(records)
            .ok()
            .filter(|records| *records <= MAX_RECORDS)
            .ok_or(WorkbookError::TooManyRows)?;
        let mut zip = ZipWriter::new_stream(output);
        package.copy_parts(&mut zip, 0..package.sheet_index)?;
        // The options rust_xlsxwriter writes its parts with.
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .compression_level(Some(1))
            .unix_permissions(0o600)
            .last_modified_time(DateTime::default());
        zip.start_file(SHEET_PART, options)?;
        let mut xml = Vec::with_capacity(2 * XML_BLOCK);
        xml.extend_from_slice(package.sheet_start.as_bytes());
        xml.extend_from_slice(itoa::Buffer::new().format(records + 1).as_bytes());
        xml.extend_from_slice(package.header.as_bytes());
        Ok(WorkbookWriter {
            package,
            zip,
            xml,
            expected: records,
            records: 0,
        })
    }

    /// Appends one record: text cells as text, numbers as numbers, empty cells not at all.
    pub fn push(&mut self, row: &UsageRow) -> Result<(), WorkbookError> {
        if self.records == self.expected {
            return Err(WorkbookError::RecordCount {
                expected: self.expected,
                given: self.records + 1,
            });
        }
        let cells = row.cells();
        let record = u64::from(self.records) + 1;
        for (column, cell) in COLUMNS.into_iter().zip(cells) {
            match cell {
                Cell::Number(number) if !number.is_finite() => {
                    return Err(WorkbookError::NotFinite { record, column });
                }
                Cell::Text(text) if too_long(text) => {
                    return Err(WorkbookError::TextTooLong { record, column });
                }
                _ => {}
            }
        }
        self.records += 1;
        write_row(&mut self.xml, self.records + 1, cells);
        if self.xml.len() >= XML_BLOCK {
            self.zip.write_all(&self.xml).map_err(ZipError::Io)?;
            self.xml.clear();
        }
        Ok(())
    }

    /// Completes the workbook and hands back what it was written into.
    pub fn finish(mut self) -> Result<W, WorkbookError> {
        if self.records != self.expected {
            return Err(WorkbookError::RecordCount {
                expected: self.expected,
                given: self.records,
            });
        }
        self.xml
            .extend_from_slice(self.package.sheet_end.as_bytes());
        self.zip.write_all(&self.xml).map_err(ZipError::Io)?;
        let parts = self.package.frame.len();
        self.package
            .copy_parts(&mut self.zip, self.package.sheet_index + 1..parts)?;
        Ok(self.zip.finish()?.into_inner())
    }
}

/// Whether `text` is more than a cell holds ([`MAX_TEXT`] UTF-16 units).
pub fn too_long(text: &str) -> bool {
    // A UTF-16 unit takes at least one byte of UTF-8: only long texts need counting.
    text.len() > MAX_TEXT && text.encode_utf16().count() > MAX_TEXT
}

/// One sheet row in rust_xlsxwriter's markup (a row without cells is left out, as it does).
fn write_row(xml: &mut Vec<u8>, sheet_row: u32, cells: [&Cell; 17]) {
    // A cell opens with `<c r="` and its reference, e.g. `<c r="K12345"`, spelled once for the
    // row and copied whole for each cell with its letter set. With the parts copied one by one
    // (six copies a text cell, the row number's through `memcpy`), this function took ~2,440
    // instructions a row of the 300k-record dry run, texts included; so, ~2,210.
    let mut number = itoa::Buffer::new();
    let digits = number.format(sheet_row).as_bytes();
    let mut reference = [b'?'; REFERENCE.len() + 12];
    reference[..REFERENCE.len()].copy_from_slice(REFERENCE);
    let letter_at = REFERENCE.len();
    reference[letter_at + 1..letter_at + 1 + digits.len()].copy_from_slice(digits);
    reference[letter_at + 1 + digits.len()] = b'"';
    let reference_len = letter_at + 2 + digits.len();
    let mut started = false;
    for (letter, cell) in (b'A'..).zip(cells) {
        if matches!(cell, Cell::Empty) || matches!(cell, Cell::Text(text) if text.is_empty()) {
            continue;
        }
        if !started {
            xml.extend_from_slice(b"<row r=\"");
            xml.extend_from_slice(digits);
            xml.extend_from_slice(b"\">");
            started = true;
        }
        // The whole array, cut back (a fixed-size copy is a few moves, a variable one a call),
        // its letter set in place: set in the array first, the byte stored then read back
        // within a wider load stalled the copy (38% of this function's samples).
        let at = xml.len();
        xml.extend_from_slice(&reference);
        xml[at + letter_at] = letter;
        xml.truncate(at + reference_len);
        match cell {
            Cell::Text(text) => {
                if text.starts_with(SIGNIFICANT_SPACE) || text.ends_with(SIGNIFICANT_SPACE) {
                    xml.extend_from_slice(b" t=\"inlineStr\"><is><t xml:space=\"preserve\">");
                } else {
                    xml.extend_from_slice(b" t=\"inlineStr\"><is><t>");
                }
                escape_text(text, xml);
                xml.extend_from_slice(b"</t></is></c>");
            }
            Cell::Number(number) => {
                xml.extend_from_slice(b"><v>");
                push_number(xml, *number);
                xml.extend_from_slice(b"</v></c>");
            }
            Cell::Empty => {}
        }
    }
    if started {
        xml.extend_from_slice(b"</row>");
    }
}

/// How a cell's markup opens, before its reference.
const REFERENCE: &[u8] = b"<c r=\"";

/// Appends `number` as `Display` spells it (the shortest text that reads back as it). Whole
/// numbers go through `itoa` and fractions of a few digits through [`ShortDecimal`]: the
/// formatting machinery took a few percent of a 10M-record run. Other fractions keep
/// `Display`: `ryu` writes the same digits but for a tie between two shortest spellings
/// (1.43228912353515625 is `…562` here, `…563` in `ryu`).
fn push_number(xml: &mut Vec<u8>, number: f64) {
    // Below 2^53 every whole number is exact, and `Display` writes it without exponent or
    // fraction; -0 keeps its sign in `Display`, so it takes the general path.
    if number.fract() == 0.0
        && number.abs() < 9.0e15
        && !(number == 0.0 && number.is_sign_negative())
    {
        xml.extend_from_slice(itoa::Buffer::new().format(number as i64).as_bytes());
    } else if let Some(short) = ShortDecimal::of(number.abs()) {
        if number < 0.0 {
            xml.push(b'-');
        }
        short.push_to(xml);
    } else {
        write!(xml, "{number}").expect("writing to a Vec cannot fail");
    }
}

/// The bytes [`escape_text`] must look at: XML's `&`, `<`, `>`; `_` (a literal `_xHHHH_`);
/// control characters; and 0xEF, the first byte of U+FFFE and U+FFFF. A table, since every
/// byte of every text cell passes it.
const SPECIAL: [bool; 256] = {
    let mut special = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        special[byte] = true;
        byte += 1;
    }
    special[b'&' as usize] = true;
    special[b'<' as usize] = true;
    special[b'>' as usize] = true;
    special[b'_' as usize] = true;
    special[0xEF] = true;
    special
};

/// Escapes text as Excel (and rust_xlsxwriter) does: XML's `&`, `<` and `>`; control
/// characters but tab and newline, and the non-characters U+FFFE and U+FFFF, as `_xHHHH_`; and
/// the `_` opening any literal `_xHHHH_` as `_x005F_`, so a reader does not decode it.
fn escape_text(text: &str, xml: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let mut done = 0;
    while let Some(offset) = bytes[done..]
        .iter()
        .position(|byte| SPECIAL[usize::from(*byte)])
    {
        let at = done + offset;
        xml.extend_from_slice(&bytes[done..at]);
        done = at + 1;
        match bytes[at] {
            b'&' => xml.extend_from_slice(b"&amp;"),
            b'<' => xml.extend_from_slice(b"&lt;"),
            b'>' => xml.extend_from_slice(b"&gt;"),
            b'_' => {
                if is_escape_sequence(&bytes[at..]) {
                    xml.extend_from_slice(b"_x005F");
                }
                xml.push(b'_');
            }
            b'\t' | b'\n' => xml.push(bytes[at]),
            control @ 0..0x20 => {
                write!(xml, "_x{control:04X}_").expect("writing to a Vec cannot fail");
            }
            // U+FFFE and U+FFFF are EF BF BE and EF BF BF; other characters pass unchanged.
            _ => match &bytes[at..] {
                [0xEF, 0xBF, 0xBE, ..] => {
                    xml.extend_from_slice(b"_xFFFE_");
                    done = at + 3;
                }
                [0xEF, 0xBF, 0xBF, ..] => {
                    xml.extend_from_slice(b"_xFFFF_");
                    done = at + 3;
                }
                _ => xml.push(0xEF),
            },
        }
    }
    xml.extend_from_slice(&bytes[done..]);
}

/// Whether `text` opens with `_xHHHH_` (four hexadecimal digits).
fn is_escape_sequence(text: &[u8]) -> bool {
    matches!(text, [b'_', b'x', a, b, c, d, b'_', ..]
        if [a, b, c, d].iter().all(|digit| digit.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::super::reader::{read_workbook, validate_workbook};
    use super::super::rules::Rules;
    use super::*;

    #[test]
    fn numbers_are_spelled_as_display_spells_them() {
        let whole = (0..60).map(|shift| (1u64 << shift) as f64 - 1.0);
        let others = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            0.1,
            1e-7,
            123.456,
            1e15,
            9.0e15,
            9.1e15,
            1e16,
            1e21,
            -42.0,
            f64::MAX,
            f64::MIN_POSITIVE,
            1e-4,
            0.99e-4,
            1.01e-4,
            1e15 - 0.5,
            1e15 + 0.5,
            999_999_999_999_999.9,
            0.30000000000000004,
            -12.345,
            1.432_289_123_535_156_2,
        ];
        for number in whole.chain(others) {
            let mut xml = Vec::new();
            push_number(&mut xml, number);
            assert_eq!(
                String::from_utf8(xml).unwrap(),
                number.to_string(),
                "{number:?}"
            );
        }
    }

    proptest::proptest! {
        /// Any fraction, whatever its magnitude or digits, as `Display` spells it.
        #[test]
        fn fractions_are_spelled_as_display_spells_them(
            mantissa in proptest::num::f64::NORMAL,
            exponent in -8i32..18,
        ) {
            let number = mantissa.signum() * (mantissa.abs().fract() + 0.5) * 10f64.powi(exponent);
            let mut xml = Vec::new();
            push_number(&mut xml, number);
            proptest::prop_assert_eq!(String::from_utf8(xml).unwrap(), number.to_string());
        }
    }

    fn row(n: u32) -> UsageRow {
        UsageRow {
            record_id: Cell::text(format!("CRD-1-AS-{n}-MPN-A-202401")),
            record_note: Cell::text(match n % 3 {
                0 => String::new(),
                1 => "note with, comma & \"quotes\" <b>not html</b>".to_string(),
                _ => format!("  padded ünïcödé {n}  "),
            }),
            item_search_criteria: Cell::text("item.mpn"),
            item_search_value: Cell::text("MPN-A"),
            quantity: Cell::Number(n as f64 * 0.25 + 0.1),
            start_time_utc: Cell::text("2024-01-01 00:00:00"),
            end_time_utc: Cell::text("2024-01-31 23:59:59"),
            asset_search_criteria: Cell::text("asset.id"),
            asset_search_value: Cell::text(format!("AS-{n}")),
            category_id: Cell::text("generic_category"),
            ..UsageRow::default()
        }
    }

    #[test]
    fn rows_read_back_exactly_as_written() {
        let rows: Vec<UsageRow> = (0..500).map(row).collect();
        let bytes = workbook_bytes(rows.clone()).unwrap();
        assert_eq!(read_workbook(&bytes), Ok(rows));
        assert_eq!(validate_workbook(&bytes, &Rules::offline(None)), vec![]);
    }

    /// What rust_xlsxwriter itself writes for `rows` (the package's header sheet, filled).
    fn written_by_rust_xlsxwriter(rows: &[UsageRow]) -> Vec<u8> {
        let (mut workbook, mut sheet) = header_only().unwrap();
        for (row, sheet_row) in rows.iter().zip(1u32..) {
            for (column, cell) in (0u16..).zip(row.cells()) {
                match cell {
                    Cell::Text(text) => sheet.write_string(sheet_row, column, text).unwrap(),
                    Cell::Number(number) => sheet.write_number(sheet_row, column, *number).unwrap(),
                    Cell::Empty => continue,
                };
            }
        }
        workbook.push_worksheet(sheet);
        workbook.save_to_buffer().unwrap()
    }

    /// Each part's name and content, the document's dates blanked (they are the writing time).
    fn parts(workbook: &[u8]) -> Vec<(String, String)> {
        let mut archive = ZipArchive::new(Cursor::new(workbook)).unwrap();
        (0..archive.len())
            .map(|index| {
                let mut part = archive.by_index(index).unwrap();
                let mut content = String::new();
                part.read_to_string(&mut content).unwrap();
                let mut dated = content.split(r#"W3CDTF">"#);
                let mut blanked = dated.next().unwrap().to_string();
                for rest in dated {
                    blanked.push_str(&rest[rest.find('<').unwrap()..]);
                }
                (part.name().unwrap().to_string(), blanked)
            })
            .collect()
    }

    #[test]
    fn every_part_is_what_rust_xlsxwriter_writes() {
        let texts = [
            "a & b < c > d \"quoted\" 'apostrophes'",
            "  leading spaces",
            "trailing tab\t",
            "\nnewline first",
            "inner\ttab and\nnewline",
            "controls \u{0}\u{1}\u{8}\u{b}\u{c}\r\u{1a}\u{1f} end",
            "_x0041_ literal escape, _X0041_ and _x00G1_ and _x004_ not",
            "_x0000_x0001_ back to back, trailing _x1234_",
            "ünïcödé 中文 😀 \u{f000}\u{fffd} non-characters \u{fffe}\u{ffff}",
            "_",
            "",
        ];
        let numbers = [0.0, -0.0, 0.1, 1e-7, 12.5, 123456789.125, 1e20, -3.75];
        let rows: Vec<UsageRow> = (0..40u32)
            .map(|n| UsageRow {
                record_note: Cell::text(texts[n as usize % texts.len()]),
                item_name: Cell::text(texts[(n as usize + 3) % texts.len()]),
                quantity: Cell::Number(numbers[n as usize % numbers.len()]),
                ..row(n)
            })
            .collect();
        let ours = workbook_bytes(rows.clone()).unwrap();
        assert_eq!(parts(&ours), parts(&written_by_rust_xlsxwriter(&rows)));
        // And an empty workbook: the header alone.
        let empty = workbook_bytes([]).unwrap();
        assert_eq!(parts(&empty), parts(&written_by_rust_xlsxwriter(&[])));
    }

    #[test]
    fn cells_name_their_reference_at_any_row_number() {
        let row_of = row;
        let row = row_of(7);
        for sheet_row in [2, 9, 10, 99, 100_000, 1_048_576, u32::MAX] {
            let mut xml = Vec::new();
            write_row(&mut xml, sheet_row, row.cells());
            let xml = String::from_utf8(xml).unwrap();
            let n = sheet_row;
            assert!(xml.starts_with(&format!(
                r#"<row r="{n}"><c r="A{n}" t="inlineStr"><is><t>"#
            )));
            assert!(xml.contains(&format!(r#"<c r="F{n}"><v>1.85</v></c><c r="G{n}" t="#)));
            assert!(xml.ends_with(&format!(
                r#"<c r="O{n}" t="inlineStr"><is><t>generic_category</t></is></c></row>"#
            )));
            assert_eq!(xml.matches("<c r=").count(), 10, "{xml}");
            let mut padded = Vec::new();
            write_row(&mut padded, sheet_row, row_of(8).cells());
            let padded = String::from_utf8(padded).unwrap();
            let note = format!(r#"<c r="B{n}" t="inlineStr"><is><t xml:space="preserve">  padded"#);
            assert!(padded.contains(&note), "{padded}");
        }
    }

    #[test]
    fn a_workbook_holds_exactly_the_records_it_was_started_for() {
        let package = Package::new().unwrap();
        let mut writer = WorkbookWriter::new(&package, Vec::new(), 2).unwrap();
        writer.push(&row(1)).unwrap();
        let error = writer.finish().unwrap_err();
        assert!(
            matches!(
                error,
                WorkbookError::RecordCount {
                    expected: 2,
                    given: 1
                }
            ),
            "{error}"
        );
        let mut writer = WorkbookWriter::new(&package, Vec::new(), 1).unwrap();
        writer.push(&row(1)).unwrap();
        assert!(writer.push(&row(2)).is_err());
        assert!(WorkbookWriter::new(&package, Vec::new(), MAX_RECORDS as usize + 1).is_err());
    }

    #[test]
    fn a_run_renders_its_package_once() {
        let run = RunPackage::default();
        assert!(Arc::ptr_eq(
            &run.get().unwrap(),
            &run.clone().get().unwrap()
        ));
    }

    #[test]
    fn numbers_keep_their_exact_value() {
        let quantities = [
            0.0,
            1.0,
            0.1,
            0.1 + 0.2,
            12.5,
            1e-7,
            123456789.125,
            9007199254740993.0,
            1e20,
        ];
        let rows: Vec<UsageRow> = (0..quantities.len() as u32)
            .map(|n| UsageRow {
                quantity: Cell::Number(quantities[n as usize]),
                ..row(n)
            })
            .collect();
        let read = read_workbook(&workbook_bytes(rows.clone()).unwrap()).unwrap();
        assert_eq!(read, rows);
    }

    #[test]
    fn empty_cells_stay_truly_empty() {
        let bytes = workbook_bytes([UsageRow {
            amount: Cell::text(""),
            ..row(1)
        }])
        .unwrap();
        let read = read_workbook(&bytes).unwrap();
        assert_eq!(read[0].amount, Cell::Empty);
        assert_eq!(read[0].tier, Cell::Empty);
    }

    #[test]
    fn cells_a_workbook_cannot_hold_are_refused_by_record_and_column() {
        let fits = UsageRow {
            record_note: Cell::text("é".repeat(MAX_TEXT)),
            ..row(1)
        };
        assert!(workbook_bytes([fits]).is_ok());
        let refused = [
            (
                UsageRow {
                    quantity: Cell::Number(f64::NAN),
                    ..row(2)
                },
                "record 2: quantity is not a finite number",
            ),
            (
                // 16,384 characters outside the basic plane take 32,768 UTF-16 units.
                UsageRow {
                    item_name: Cell::text("😀".repeat(MAX_TEXT / 2 + 1)),
                    ..row(2)
                },
                "record 2: item_name is longer than the 32767 characters a cell holds",
            ),
        ];
        for (bad, message) in refused {
            let error = workbook_bytes([row(1), bad]).unwrap_err();
            assert_eq!(error.to_string(), message);
        }
    }

    /// A scale check, run alone to measure it (time, peak RSS with /usr/bin/time -v):
    /// `cargo test --release -p payg-shared a_million_rows_validate -- --ignored`.
    #[test]
    #[ignore]
    fn a_million_rows_validate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("million.xlsx");
        let package = Package::new().unwrap();
        let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut writer = WorkbookWriter::new(&package, file, 1_000_000).unwrap();
        for n in 0..1_000_000 {
            writer.push(&row(n)).unwrap();
        }
        writer.finish().unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let started = std::time::Instant::now();
        let inspection = super::super::reader::inspect_workbook_reader(
            std::io::BufReader::new(file),
            &Rules::offline(None),
        );
        println!(
            "validate: {} records, {} problems in {:?}",
            inspection.records,
            inspection.problems.len(),
            started.elapsed()
        );
        assert_eq!(
            (inspection.records, inspection.problems.len()),
            (1_000_000, 0)
        );
    }
}
