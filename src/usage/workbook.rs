//! Writing usage workbooks: the `usage_records` sheet of the template, one row per record.
//!
//! The workbook is a minimal Office Open XML package (content types, relationships, workbook,
//! styles, one worksheet) whose sheet XML is streamed straight into a deflate entry of the zip
//! as rows arrive: memory stays flat however many records a file holds, and nothing is written
//! twice. A general spreadsheet library buffers every cell in a row map and the whole sheet in
//! a second temporary file; for this one fixed sheet that cost several times the time.
//!
//! Text goes into inline-string cells, numbers into number cells, empty cells are left out.
//! The file is built under a scratch name and renamed into place when complete, so nobody ever
//! uploads half a workbook. Writing is blocking CPU and file work: async callers use
//! `spawn_blocking`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use crate::usage::template::{Cell, UsageRow, COLUMNS, SHEET};

/// Data rows a worksheet can hold: Excel's 1,048,576 rows minus the header.
pub const MAX_RECORDS: u32 = 1_048_575;

/// The longest text Excel keeps in a cell, in characters.
pub const MAX_TEXT_CHARS: usize = 32_767;

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
    #[error("record {record}: {column} is longer than {MAX_TEXT_CHARS} characters")]
    TextTooLong { record: u64, column: &'static str },
    #[error("cannot write the workbook {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Writes `rows` to a new workbook at `path` (replacing any file there).
pub fn write_workbook(
    path: &Path,
    rows: impl Iterator<Item = UsageRow>,
) -> Result<WorkbookStats, WorkbookError> {
    let mut writer = WorkbookWriter::new(directory_of(path))?;
    for row in rows {
        writer.push(&row)?;
    }
    writer.finish(path)
}

/// The workbook as bytes, for small workbooks (tests, the simulator); large ones go to a file.
pub fn workbook_bytes(rows: impl IntoIterator<Item = UsageRow>) -> Result<Vec<u8>, WorkbookError> {
    let mut writer = WorkbookWriter::new(&std::env::temp_dir())?;
    for row in rows {
        writer.push(&row)?;
    }
    writer.finish_to_bytes()
}

/// Sheet XML is handed to the compressor in chunks of about this size.
const CHUNK: usize = 64 * 1024;

/// A usage workbook being written, one row at a time.
pub struct WorkbookWriter {
    zip: ZipWriter<BufWriter<File>>,
    scratch: ScratchFile,
    xml: Vec<u8>,
    records: u32,
}

impl WorkbookWriter {
    /// Starts a workbook in a scratch file in `scratch_dir`; [`WorkbookWriter::finish`] renames
    /// it, so the directory should be the destination's (the rename is then atomic).
    pub fn new(scratch_dir: &Path) -> Result<Self, WorkbookError> {
        let (scratch, file) = ScratchFile::create(scratch_dir)?;
        let mut writer = WorkbookWriter {
            zip: ZipWriter::new(BufWriter::with_capacity(CHUNK, file)),
            scratch,
            xml: Vec::with_capacity(CHUNK + 4096),
            records: 0,
        };
        writer
            .start_package()
            .map_err(|e| writer.scratch.error(e))?;
        Ok(writer)
    }

    /// Appends one record.
    pub fn push(&mut self, row: &UsageRow) -> Result<(), WorkbookError> {
        if self.records == MAX_RECORDS {
            return Err(WorkbookError::TooManyRows);
        }
        let record = u64::from(self.records) + 1;
        let start = self.xml.len();
        if let Err(error) = sheet_row(&mut self.xml, self.records + 2, row.cells(), record) {
            self.xml.truncate(start);
            return Err(error);
        }
        self.records += 1;
        if self.xml.len() >= CHUNK {
            self.flush_xml().map_err(|e| self.scratch.error(e))?;
        }
        Ok(())
    }

    /// Completes the workbook and moves it to `path`.
    pub fn finish(self, path: &Path) -> Result<WorkbookStats, WorkbookError> {
        let rows = u64::from(self.records);
        let scratch = self.complete()?;
        let bytes = scratch.persist(path)?;
        Ok(WorkbookStats { rows, bytes })
    }

    /// Completes the workbook and returns its bytes.
    pub fn finish_to_bytes(self) -> Result<Vec<u8>, WorkbookError> {
        let scratch = self.complete()?;
        fs::read(&scratch.path).map_err(|e| scratch.error(e))
    }

    fn start_package(&mut self) -> io::Result<()> {
        let workbook = ("xl/workbook.xml", workbook_part());
        let fixed = PACKAGE_PARTS.map(|(name, content)| (name, content.to_string()));
        for (name, content) in fixed.into_iter().chain([workbook]) {
            self.zip.start_file(name, entry_options())?;
            self.zip.write_all(content.as_bytes())?;
        }
        self.zip.start_file(SHEET_PART, entry_options())?;
        self.xml.extend_from_slice(SHEET_START.as_bytes());
        let header = COLUMNS.map(|name| Cell::Text(name.to_string()));
        sheet_row(&mut self.xml, 1, header.each_ref(), 0).expect("the header is plain text");
        Ok(())
    }

    fn flush_xml(&mut self) -> io::Result<()> {
        self.zip.write_all(&self.xml)?;
        self.xml.clear();
        Ok(())
    }

    /// Closes the sheet and the zip; the scratch file then holds the whole workbook.
    fn complete(mut self) -> Result<ScratchFile, WorkbookError> {
        self.xml.extend_from_slice(SHEET_END.as_bytes());
        let WorkbookWriter {
            mut zip,
            scratch,
            xml,
            ..
        } = self;
        let closed = zip
            .write_all(&xml)
            .and_then(|()| Ok(zip.finish()?))
            .and_then(|file| file.into_inner().map_err(|e| e.into_error()));
        match closed {
            Ok(_) => Ok(scratch),
            Err(error) => Err(scratch.error(error)),
        }
    }
}

fn entry_options() -> SimpleFileOptions {
    // Level 1 deflates several times faster than the default 6 for a file about 1.5× larger;
    // at a million rows compression would otherwise take most of the time. A fixed timestamp
    // makes the same rows give the same bytes.
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(1))
        .last_modified_time(DateTime::default())
}

/// Appends `<row>` number `sheet_row` (1-based) holding `cells`; `record` names it in errors.
fn sheet_row(
    xml: &mut Vec<u8>,
    sheet_row: u32,
    cells: [&Cell; 17],
    record: u64,
) -> Result<(), WorkbookError> {
    let mut digits = itoa_buffer();
    let row_number = decimal(sheet_row, &mut digits);
    xml.extend_from_slice(b"<row r=\"");
    xml.extend_from_slice(row_number);
    xml.extend_from_slice(b"\">");
    for ((letter, column), cell) in COLUMN_LETTERS.iter().zip(COLUMNS).zip(cells) {
        let reference = |xml: &mut Vec<u8>| {
            xml.extend_from_slice(b"<c r=\"");
            xml.push(*letter);
            xml.extend_from_slice(row_number);
        };
        match cell {
            Cell::Empty => {}
            Cell::Text(text) if text.is_empty() => {}
            Cell::Text(text) => {
                if text.len() > MAX_TEXT_CHARS && text.chars().count() > MAX_TEXT_CHARS {
                    return Err(WorkbookError::TextTooLong { record, column });
                }
                reference(xml);
                xml.extend_from_slice(b"\" t=\"inlineStr\"><is><t");
                if text.starts_with(char::is_whitespace) || text.ends_with(char::is_whitespace) {
                    xml.extend_from_slice(b" xml:space=\"preserve\"");
                }
                xml.push(b'>');
                escape_text(xml, text);
                xml.extend_from_slice(b"</t></is></c>");
            }
            Cell::Number(number) if !number.is_finite() => {
                return Err(WorkbookError::NotFinite { record, column });
            }
            Cell::Number(number) => {
                reference(xml);
                xml.extend_from_slice(b"\"><v>");
                // Display is the shortest text that reads back as the same f64, never exponent
                // notation: what a person reads in the cell is what the validator counts.
                write!(xml, "{number}").expect("writing to a Vec cannot fail");
                xml.extend_from_slice(b"</v></c>");
            }
        }
    }
    xml.extend_from_slice(b"</row>");
    Ok(())
}

const COLUMN_LETTERS: [u8; 17] = *b"ABCDEFGHIJKLMNOPQ";

fn itoa_buffer() -> [u8; 10] {
    [0; 10]
}

/// `value` in decimal, written at the end of `buffer`.
fn decimal(mut value: u32, buffer: &mut [u8; 10]) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buffer[start..];
        }
    }
}

/// Appends `text` as XML character data. Besides `&`, `<` and `>`, characters XML 1.0 cannot
/// carry at all (control characters, U+FFFE, U+FFFF) use Excel's `_xHHHH_` escape, and a
/// literal `_xHHHH_` gets its `_` escaped as `_x005F_` so that readers do not decode it (Excel
/// and calamine decode these; openpyxl shows them as written).
fn escape_text(xml: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let mut plain_from = 0;
    let mut index = 0;
    while index < bytes.len() {
        let (replacement, width): (Option<&[u8]>, usize) = match bytes[index] {
            b'&' => (Some(b"&amp;"), 1),
            b'<' => (Some(b"&lt;"), 1),
            b'>' => (Some(b"&gt;"), 1),
            b'\t' | b'\n' => (None, 1),
            // A literal CR would reach readers as LF (XML end-of-line handling); a character
            // reference survives in every conforming parser.
            b'\r' => (Some(b"&#13;"), 1),
            control @ 0..=0x1f => {
                xml.extend_from_slice(&bytes[plain_from..index]);
                write!(xml, "_x{control:04X}_").expect("writing to a Vec cannot fail");
                index += 1;
                plain_from = index;
                continue;
            }
            b'_' if looks_like_escape(&bytes[index..]) => (Some(b"_x005F_"), 1),
            0xEF if bytes[index + 1..].starts_with(&[0xBF, 0xBE]) => (Some(b"_xFFFE_"), 3),
            0xEF if bytes[index + 1..].starts_with(&[0xBF, 0xBF]) => (Some(b"_xFFFF_"), 3),
            _ => (None, 1),
        };
        if let Some(replacement) = replacement {
            xml.extend_from_slice(&bytes[plain_from..index]);
            xml.extend_from_slice(replacement);
            plain_from = index + width;
        }
        index += width;
    }
    xml.extend_from_slice(&bytes[plain_from..]);
}

/// True when `bytes` starts with `_xHHHH_`.
fn looks_like_escape(bytes: &[u8]) -> bool {
    bytes.len() >= 7
        && bytes[1] == b'x'
        && bytes[2..6].iter().all(u8::is_ascii_hexdigit)
        && bytes[6] == b'_'
}

/// The workbook file under construction: removed unless [`ScratchFile::persist`]ed.
struct ScratchFile {
    path: PathBuf,
}

impl ScratchFile {
    fn create(dir: &Path) -> Result<(Self, File), WorkbookError> {
        let path = dir.join(format!(".usage-{}.xlsx.partial", uuid::Uuid::new_v4()));
        let file = OpenOptions::new().write(true).create_new(true).open(&path);
        match file {
            Ok(file) => Ok((ScratchFile { path }, file)),
            Err(source) => Err(WorkbookError::Io { path, source }),
        }
    }

    /// Moves the finished workbook to `path`; returns its size.
    fn persist(self, path: &Path) -> Result<u64, WorkbookError> {
        let failed = |source| WorkbookError::Io {
            path: path.to_path_buf(),
            source,
        };
        fs::rename(&self.path, path).map_err(failed)?;
        fs::metadata(path).map(|m| m.len()).map_err(failed)
    }

    fn error(&self, source: io::Error) -> WorkbookError {
        WorkbookError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        // After a successful persist the path no longer exists; otherwise this cleans up.
        let _ = fs::remove_file(&self.path);
    }
}

/// The `.partial` scratch file lives beside the destination (`.` for a bare file name).
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

const SHEET_PART: &str = "xl/worksheets/sheet1.xml";

const SHEET_START: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>"#,
    "\n",
    r#"<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">"#,
    "<sheetData>",
);

const SHEET_END: &str = "</sheetData></worksheet>";

/// The workbook part: its one sheet.
fn workbook_part() -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>"#,
            "\n",
            r#"<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" "#,
            r#"xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">"#,
            r#"<sheets><sheet name="{sheet}" sheetId="1" r:id="rId1"/></sheets>"#,
            "</workbook>",
        ),
        sheet = SHEET
    )
}

/// The fixed parts of the package besides the workbook part, written before the sheet.
const PACKAGE_PARTS: [(&str, &str); 5] = [
    (
        "[Content_Types].xml",
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>"#,
            "\n",
            r#"<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">"#,
            r#"<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>"#,
            r#"<Default Extension="xml" ContentType="application/xml"/>"#,
            r#"<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>"#,
            r#"<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>"#,
            r#"<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>"#,
            r#"<Override PartName="/docProps/app.xml" ContentType="application/vnd.openxmlformats-officedocument.extended-properties+xml"/>"#,
            "</Types>",
        ),
    ),
    (
        "_rels/.rels",
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>"#,
            "\n",
            r#"<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">"#,
            r#"<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>"#,
            r#"<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/extended-properties" Target="docProps/app.xml"/>"#,
            "</Relationships>",
        ),
    ),
    (
        "docProps/app.xml",
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>"#,
            "\n",
            r#"<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties">"#,
            "<Application>connect-payg</Application>",
            "</Properties>",
        ),
    ),
    (
        "xl/_rels/workbook.xml.rels",
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>"#,
            "\n",
            r#"<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">"#,
            r#"<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>"#,
            r#"<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/>"#,
            "</Relationships>",
        ),
    ),
    (
        "xl/styles.xml",
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>"#,
            "\n",
            r#"<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">"#,
            r#"<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>"#,
            r#"<fills count="2"><fill><patternFill patternType="none"/></fill>"#,
            r#"<fill><patternFill patternType="gray125"/></fill></fills>"#,
            r#"<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>"#,
            r#"<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>"#,
            r#"<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>"#,
            r#"<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>"#,
            "</styleSheet>",
        ),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::template::{read_workbook, validate_workbook, Rules};

    fn row(n: u64) -> UsageRow {
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
        let rows: Vec<UsageRow> = (0..quantities.len() as u64)
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
    fn awkward_text_reads_back_exactly() {
        let awkward = [
            "a & b < c > d \"quoted\" 'single'",
            "tab\tnew line\ncarriage\r\nreturn",
            "control \u{1} \u{1f} bell \u{7}",
            "literal _x0041_ and _x005F_ and _xZZZZ_ and _x12_",
            "  leading and trailing  ",
            "ünïcödé — 日本語 — 🚀",
            "\n",
        ];
        let rows: Vec<UsageRow> = (0..awkward.len() as u64)
            .map(|n| UsageRow {
                record_note: Cell::text(awkward[n as usize]),
                ..row(n)
            })
            .collect();
        let read = read_workbook(&workbook_bytes(rows.clone()).unwrap()).unwrap();
        assert_eq!(read, rows);
    }

    #[test]
    fn characters_xml_cannot_carry_use_excel_escapes() {
        let mut xml = Vec::new();
        escape_text(&mut xml, "a\u{0}b\rc\u{FFFE}d\u{FFFF}_x00e9_ & <>");
        assert_eq!(
            String::from_utf8(xml).unwrap(),
            "a_x0000_b&#13;c_xFFFE_d_xFFFF__x005F_x00e9_ &amp; &lt;&gt;"
        );
    }

    #[test]
    fn the_same_rows_give_the_same_bytes() {
        let first = workbook_bytes((0..100).map(row)).unwrap();
        assert_eq!(first, workbook_bytes((0..100).map(row)).unwrap());
    }

    #[test]
    fn text_longer_than_excel_keeps_is_refused() {
        let long = UsageRow {
            record_note: Cell::text("é".repeat(MAX_TEXT_CHARS + 1)),
            ..row(1)
        };
        let error = workbook_bytes([long]).unwrap_err();
        assert!(
            matches!(
                error,
                WorkbookError::TextTooLong {
                    record: 1,
                    column: "record_note"
                }
            ),
            "{error}"
        );
        let longest = UsageRow {
            record_note: Cell::text("é".repeat(MAX_TEXT_CHARS)),
            ..row(1)
        };
        assert!(workbook_bytes([longest]).is_ok());
    }

    #[test]
    fn non_finite_numbers_are_refused() {
        let bad = UsageRow {
            quantity: Cell::Number(f64::NAN),
            ..row(1)
        };
        let error = workbook_bytes([row(0), bad]).unwrap_err();
        assert!(
            matches!(
                error,
                WorkbookError::NotFinite {
                    record: 2,
                    column: "quantity"
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_file_appears_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.xlsx");
        let stats = write_workbook(&path, (0..10).map(row)).unwrap();
        assert_eq!(stats.rows, 10);
        assert_eq!(stats.bytes, std::fs::metadata(&path).unwrap().len());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["usage.xlsx"]);

        let failed = write_workbook(
            &path,
            [
                row(1),
                UsageRow {
                    quantity: Cell::Number(f64::INFINITY),
                    ..row(2)
                },
            ]
            .into_iter(),
        );
        assert!(failed.is_err());
        assert_eq!(
            read_workbook(&std::fs::read(&path).unwrap()).unwrap().len(),
            10
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["usage.xlsx"],
            "the failed attempt left its scratch file"
        );
    }

    #[test]
    fn a_missing_directory_is_a_clear_error() {
        let error =
            write_workbook(Path::new("/nonexistent/dir/usage.xlsx"), (0..1).map(row)).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/dir"), "{error}");
    }

    /// Scale checks, run one at a time to measure each (time, peak RSS with /usr/bin/time -v):
    /// `cargo test --release --lib usage::workbook::tests::a_million -- --ignored --exact …`.
    fn write_a_million(dir: &Path) -> PathBuf {
        let path = dir.join("million.xlsx");
        let started = std::time::Instant::now();
        let stats = write_workbook(&path, (0..1_000_000).map(row)).unwrap();
        println!("write: {stats:?} in {:?}", started.elapsed());
        path
    }

    #[test]
    #[ignore]
    fn a_million_rows_write() {
        let dir = tempfile::tempdir().unwrap();
        write_a_million(dir.path());
    }

    #[test]
    #[ignore]
    fn a_million_rows_validate() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::open(write_a_million(dir.path())).unwrap();
        let started = std::time::Instant::now();
        let inspection = crate::usage::template::inspect_workbook_reader(
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
