//! Reading a usage workbook: the streaming reader of the `usage_records` sheet, checking the
//! structure (sheet, header, cell types, empty rows) and handing each row to the rules.
//!
//! Reading streams the sheet cell by cell (calamine's cell reader), so validating a
//! million-row workbook holds one row at a time; only [`read_workbook`] collects rows. What the
//! reader would hold whole is bounded first ([`super::guard`]): zip bombs are refused unread.
//! Hostile bytes never panic the caller: any reader failure becomes a [`Problem`].
//!
//! Where the time goes (the simulator validating the 10k-subscription month's 500 uploads,
//! ~80 rows each): about three quarters in calamine's cell reader parsing the sheet's XML,
//! the rest in opening the workbook (styles and theme included: they decide which numbers are
//! dates), the guard's unpacking and the rules.

use std::io::{Cursor, Read, Seek};
use std::panic::{self, AssertUnwindSafe};

use calamine::{DataRef, Reader, Xlsx};

use super::guard;
use super::row::{Cell, UsageRow, COLUMNS, SHEET};
use super::rules::{Problem, RowValidator, Rules, TIMES_AS_TEXT};

/// Reads every data row of [`SHEET`], checking only the structure: the sheet exists, the header
/// is exactly [`COLUMNS`], every cell is empty, text or a number, there are records. Holds all
/// rows in memory: for the simulator and tests; large workbooks go through [`validate_workbook`].
pub fn read_workbook(bytes: &[u8]) -> Result<Vec<UsageRow>, Vec<Problem>> {
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    scan(Cursor::new(bytes), &mut problems, |data, _| {
        rows.push(data.row)
    });
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(problems)
    }
}

/// Every problem of the workbook, structure and rows, in sheet order; empty means valid.
pub fn validate_workbook(bytes: &[u8], rules: &Rules) -> Vec<Problem> {
    inspect_workbook(bytes, rules).problems
}

/// What [`inspect_workbook`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    /// Data rows read (valid or not).
    pub records: u64,
    pub problems: Vec<Problem>,
}

/// [`validate_workbook`] that also counts the records, for reports.
pub fn inspect_workbook(bytes: &[u8], rules: &Rules) -> Inspection {
    inspect_workbook_reader(Cursor::new(bytes), rules)
}

/// [`inspect_workbook`] of a workbook read from anywhere, so a file need not be loaded whole.
pub fn inspect_workbook_reader<R: Read + Seek>(workbook: R, rules: &Rules) -> Inspection {
    inspect_workbook_rows(workbook, rules, |_| {})
}

/// [`inspect_workbook_reader`] that also hands every data row read to `keep`, so a reader
/// that wants the rows (the simulator storing an upload) checks and keeps them in one pass.
pub fn inspect_workbook_rows<R: Read + Seek>(
    workbook: R,
    rules: &Rules,
    mut keep: impl FnMut(UsageRow),
) -> Inspection {
    let mut validator = RowValidator::new(rules);
    let mut problems = Vec::new();
    let mut records = 0;
    scan(workbook, &mut problems, |data, problems| {
        records += 1;
        let unreadable = data.unreadable;
        problems.extend(
            validator
                .check(data.sheet_row, &data.row)
                .into_iter()
                // A cell whose type was already reported is not reported again as missing.
                .filter(|problem| {
                    problem
                        .column
                        .is_none_or(|c| unreadable & column_bit(c) == 0)
                }),
        );
        keep(data.row);
    });
    Inspection { records, problems }
}

/// A data row as read, with the columns whose cells could not be typed (already reported).
struct DataRow {
    sheet_row: u32,
    row: UsageRow,
    unreadable: u32,
}

fn column_bit(column: &str) -> u32 {
    COLUMNS
        .iter()
        .position(|name| *name == column)
        .map_or(0, |index| 1 << index)
}

/// Streams the data rows of [`SHEET`] to `on_row`, pushing structural problems to `problems`
/// in sheet order. Never panics: a reader failure on hostile bytes becomes a problem.
fn scan<R: Read + Seek>(
    mut workbook: R,
    problems: &mut Vec<Problem>,
    on_row: impl FnMut(DataRow, &mut Vec<Problem>),
) {
    if let Err(message) = guard::check(&mut workbook) {
        return problems.push(Problem::workbook(message));
    }
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        scan_sheet(workbook, SheetRows::new(&mut *problems, on_row))
    }));
    if outcome.is_err() {
        problems.push(Problem::workbook(
            "not a readable xlsx workbook (the reader failed)",
        ));
    }
}

fn scan_sheet<R: Read + Seek, F: FnMut(DataRow, &mut Vec<Problem>)>(
    workbook: R,
    mut sheet: SheetRows<'_, F>,
) {
    let mut workbook = match Xlsx::new(workbook) {
        Ok(workbook) => workbook,
        Err(error) => {
            let message = format!("not an xlsx workbook ({error})");
            return sheet.problems.push(Problem::workbook(message));
        }
    };
    let names = workbook.sheet_names();
    if !names.iter().any(|name| name == SHEET) {
        let found = match names.is_empty() {
            true => "none".to_string(),
            false => names.join(", "),
        };
        let message = format!("the sheet is missing (sheets found: {found})");
        return sheet.problems.push(Problem::sheet(message));
    }
    let mut cells = match workbook.worksheet_cells_reader(SHEET) {
        Ok(cells) => cells,
        Err(error) => {
            let message = format!("the sheet cannot be read ({error})");
            return sheet.problems.push(Problem::sheet(message));
        }
    };
    loop {
        match cells.next_cell() {
            Ok(Some(cell)) => {
                let (row, column) = cell.get_position();
                if !sheet.put(row, column, cell.get_value()) {
                    return;
                }
            }
            Ok(None) => return sheet.finish(),
            Err(error) => {
                let message = format!("the sheet is damaged ({error})");
                return sheet.problems.push(Problem::sheet(message));
            }
        }
    }
}

/// Assembles the reader's cells into rows: the header first, then data rows, reporting empty
/// rows between records (trailing ones are fine) and cells outside the template.
struct SheetRows<'p, F> {
    problems: &'p mut Vec<Problem>,
    on_row: F,
    pending: Option<PendingRow>,
    header_seen: bool,
    /// The template column of each sheet column: the identity, unless the header names the
    /// template's columns in another order (then rows are still checked, by column name).
    order: [usize; 17],
    /// 0-based index of the last non-empty row handed on.
    last_index: u32,
    records: u64,
}

#[derive(Default)]
struct PendingRow {
    index: u32,
    cells: [Cell; 17],
    unreadable: u32,
    problems: Vec<Problem>,
    /// First column beyond the template that holds a value.
    beyond: Option<u32>,
    has_values: bool,
}

impl<'p, F: FnMut(DataRow, &mut Vec<Problem>)> SheetRows<'p, F> {
    fn new(problems: &'p mut Vec<Problem>, on_row: F) -> Self {
        SheetRows {
            problems,
            on_row,
            pending: None,
            header_seen: false,
            order: std::array::from_fn(|c| c),
            last_index: 0,
            records: 0,
        }
    }

    /// Adds one cell (0-based position); false when reading must stop.
    fn put(&mut self, index: u32, column: u32, value: &DataRef<'_>) -> bool {
        match &self.pending {
            Some(pending) if pending.index == index => {}
            Some(pending) if index < pending.index => {
                let message = "cells are out of order (this row follows a later one)";
                self.problems
                    .push(Problem::row(index.saturating_add(1), message));
                return false;
            }
            _ => {
                if !self.complete_row() {
                    return false;
                }
                self.pending = Some(PendingRow {
                    index,
                    ..PendingRow::default()
                });
            }
        }
        let pending = self.pending.as_mut().expect("a row was just started");
        if matches!(value, DataRef::Empty) {
            return true;
        }
        pending.has_values = true;
        let sheet_row = index.saturating_add(1);
        let order = self.order;
        match usize::try_from(column).ok().filter(|c| *c < COLUMNS.len()) {
            None => {
                pending.beyond.get_or_insert(column);
            }
            Some(c) => match typed(value, order[c]).map(|cell| (order[c], cell)) {
                Ok((c, cell)) => pending.cells[c] = cell,
                Err(message) => {
                    let c = order[c];
                    pending.unreadable |= 1 << c;
                    pending
                        .problems
                        .push(Problem::cell(sheet_row, COLUMNS[c], message));
                }
            },
        }
        true
    }

    fn finish(mut self) {
        if !self.complete_row() {
            return;
        }
        if !self.header_seen {
            self.problems.push(Problem::sheet(
                "the sheet is empty (expected the header row)",
            ));
        } else if self.records == 0 {
            self.problems.push(Problem::sheet("no usage records"));
        }
    }

    /// Hands on the pending row; false when reading must stop (a bad header).
    fn complete_row(&mut self) -> bool {
        let Some(row) = self.pending.take().filter(|row| row.has_values) else {
            return true;
        };
        if !self.header_seen {
            self.header_seen = true;
            return match check_header(&row, self.problems) {
                Header::Matches => true,
                Header::Reordered(order) => {
                    self.order = order;
                    true
                }
                Header::Unusable => false,
            };
        }
        if row.index > self.last_index + 1 {
            let (first, last) = (self.last_index + 2, row.index);
            let message = match first == last {
                true => "the row is empty, but records follow".to_string(),
                false => format!("rows {first} to {last} are empty, but records follow"),
            };
            self.problems.push(Problem::row(first, message));
        }
        self.last_index = row.index;
        self.records += 1;
        let sheet_row = row.index.saturating_add(1);
        self.problems.extend(row.problems);
        if let Some(column) = row.beyond {
            let message = format!(
                "column {} holds a value outside the template's {} columns",
                column_letter(column),
                COLUMNS.len()
            );
            self.problems.push(Problem::row(sheet_row, message));
        }
        let data = DataRow {
            sheet_row,
            row: UsageRow::from_cells(row.cells),
            unreadable: row.unreadable,
        };
        (self.on_row)(data, self.problems);
        true
    }
}

/// What the header allows: checking the rows as they stand, by column name, or not at all.
#[derive(Debug, PartialEq)]
enum Header {
    Matches,
    /// Every template column is named once, in another order: the sheet column `c` holds
    /// template column `order[c]`.
    Reordered([usize; 17]),
    Unusable,
}

/// The template column each header cell names, when the header names every template column
/// exactly once.
fn order_by_name(row: &PendingRow) -> Option<[usize; 17]> {
    let mut order = [usize::MAX; 17];
    let mut seen = [false; 17];
    for (c, cell) in row.cells.iter().enumerate() {
        let Cell::Text(text) = cell else { return None };
        let template = COLUMNS.iter().position(|name| name == text)?;
        if std::mem::replace(&mut seen[template], true) {
            return None;
        }
        order[c] = template;
    }
    Some(order)
}

/// Reports the first way the header differs from [`COLUMNS`] (it is still a problem: the
/// platform requires the template's order); says whether the rows can be checked anyway.
fn check_header(row: &PendingRow, problems: &mut Vec<Problem>) -> Header {
    if row.index != 0 {
        let message = format!(
            "row 1 must be the header, but the sheet starts at row {}",
            row.index.saturating_add(1)
        );
        problems.push(Problem::sheet(message));
        return Header::Unusable;
    }
    let mismatch = COLUMNS.iter().enumerate().find_map(|(c, expected)| {
        let found = match &row.cells[c] {
            _ if row.unreadable & (1 << c) != 0 => "not text".to_string(),
            Cell::Text(text) if text == expected => return None,
            Cell::Text(text) => format!("{text:?}"),
            Cell::Number(number) => format!("the number {number}"),
            Cell::Empty => "empty".to_string(),
        };
        let letter = column_letter(c as u32);
        Some(Problem::cell(
            1,
            COLUMNS[c],
            format!("header cell {letter}1 is {found}, expected {expected:?}"),
        ))
    });
    let order = order_by_name(row).filter(|_| row.beyond.is_none());
    if let Some(mut problem) = mismatch {
        if order.is_some() {
            problem
                .message
                .push_str("; the columns are in another order, rows are checked by column name");
        }
        problems.push(problem);
        return order.map_or(Header::Unusable, Header::Reordered);
    }
    if let Some(column) = row.beyond {
        let message = format!(
            "the header has an extra column {}; only the {} template columns are allowed",
            column_letter(column),
            COLUMNS.len()
        );
        problems.push(Problem::row(1, message));
        return Header::Unusable;
    }
    Header::Matches
}

/// The template cell for a reader value in column `column` (0-based), or what is wrong with it.
fn typed(value: &DataRef<'_>, column: usize) -> Result<Cell, String> {
    let is_time = matches!(COLUMNS[column], "start_time_utc" | "end_time_utc");
    match value {
        DataRef::Empty => Ok(Cell::Empty),
        DataRef::String(text) => Ok(Cell::text(text.as_str())),
        DataRef::SharedString(text) => Ok(Cell::text(*text)),
        DataRef::Float(number) => Ok(Cell::Number(*number)),
        DataRef::Int(number) => Ok(Cell::Number(*number as f64)),
        DataRef::DateTime(_) | DataRef::DateTimeIso(_) | DataRef::DurationIso(_) if is_time => {
            Err(TIMES_AS_TEXT.to_string())
        }
        DataRef::DateTime(_) | DataRef::DateTimeIso(_) | DataRef::DurationIso(_) => {
            Err("holds a date or duration; write plain text or a plain number".into())
        }
        DataRef::Bool(value) => Err(format!(
            "holds the boolean {value}; booleans are not allowed"
        )),
        DataRef::Error(error) => Err(format!("holds the error {error}")),
    }
}

/// Excel's letters for a 0-based column index: 0 → A, 26 → AA.
fn column_letter(column: u32) -> String {
    let mut letters = Vec::new();
    let mut n = u64::from(column) + 1;
    while n > 0 {
        let digit = ((n - 1) % 26) as u8;
        letters.push(char::from(b'A' + digit));
        n = (n - 1) / 26;
    }
    letters.iter().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::super::rules::tests::{good_row, platform_rules};
    use super::super::writer::workbook_bytes;
    use super::*;
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};

    /// A workbook with arbitrary content, for what our own writer would never produce.
    enum Raw {
        Text(&'static str),
        Number(f64),
        Bool(bool),
        Date,
        Blank,
    }

    fn raw_workbook(sheet: &str, rows: &[(u32, Vec<Raw>)]) -> Vec<u8> {
        let mut workbook = Workbook::new();
        let worksheet = workbook.add_worksheet();
        worksheet.set_name(sheet).unwrap();
        let date_format = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
        let blank_format = Format::new().set_bold();
        for (row, cells) in rows {
            for (column, cell) in (0u16..).zip(cells) {
                match cell {
                    Raw::Text(text) => worksheet.write_string(*row, column, *text),
                    Raw::Number(number) => worksheet.write_number(*row, column, *number),
                    Raw::Bool(value) => worksheet.write_boolean(*row, column, *value),
                    Raw::Date => {
                        let date = ExcelDateTime::from_ymd(2024, 1, 1).unwrap();
                        worksheet.write_datetime_with_format(*row, column, date, &date_format)
                    }
                    Raw::Blank => worksheet.write_blank(*row, column, &blank_format),
                }
                .unwrap();
            }
        }
        workbook.save_to_buffer().unwrap()
    }

    fn header() -> Vec<Raw> {
        COLUMNS.iter().map(|name| Raw::Text(name)).collect()
    }

    /// A good data row as raw cells, with cell `column` replaced.
    fn raw_row(replace: Option<(usize, Raw)>) -> Vec<Raw> {
        let mut cells: Vec<Raw> = vec![
            Raw::Text("R-1"),
            Raw::Blank,
            Raw::Text("item.mpn"),
            Raw::Text("MPN-A"),
            Raw::Blank,
            Raw::Number(3.0),
            Raw::Text("2024-01-01 00:00:00"),
            Raw::Text("2024-01-31 23:59:59"),
            Raw::Text("asset.id"),
            Raw::Text("AS-1"),
        ];
        if let Some((column, cell)) = replace {
            cells[column] = cell;
        }
        cells
    }

    fn only_problem(bytes: &[u8]) -> Problem {
        let problems = validate_workbook(bytes, &platform_rules());
        assert_eq!(problems.len(), 1, "{problems:?}");
        problems.into_iter().next().unwrap()
    }

    #[test]
    fn garbage_is_not_a_workbook() {
        for bytes in [&b""[..], b"hello, world", b"PK\x03\x04 truncated zip"] {
            let problem = only_problem(bytes);
            assert_eq!((problem.sheet.as_str(), problem.row), ("", None));
            assert!(
                problem.message.starts_with("not an xlsx workbook"),
                "{problem}"
            );
            assert!(read_workbook(bytes).is_err());
        }
    }

    #[test]
    fn damaged_workbooks_give_problems_not_panics() {
        let good = workbook_bytes((0..50).map(good_row)).unwrap();
        assert_eq!(validate_workbook(&good, &platform_rules()), vec![]);
        for cut in [good.len() / 3, good.len() / 2, good.len() - 10] {
            assert!(!validate_workbook(&good[..cut], &platform_rules()).is_empty());
        }
        // Flipped bytes may or may not break the zip; either way we get an answer.
        for position in (0..good.len()).step_by(97) {
            let mut bent = good.clone();
            bent[position] ^= 0x5a;
            let _ = validate_workbook(&bent, &platform_rules());
        }
    }

    #[test]
    fn the_sheet_must_be_named_usage_records() {
        let bytes = raw_workbook("Sheet1", &[(0, header()), (1, raw_row(None))]);
        let problem = only_problem(&bytes);
        assert_eq!(problem.sheet, SHEET);
        assert!(
            problem.message.contains("missing (sheets found: Sheet1)"),
            "{problem}"
        );
    }

    #[test]
    fn the_header_must_be_exactly_the_template_columns() {
        let renamed = {
            let mut h = header();
            h[0] = Raw::Text("usage_record_id");
            h
        };
        let short = {
            let mut h = header();
            h.pop();
            h
        };
        let extra = {
            let mut h = header();
            h.push(Raw::Text("custom_field"));
            h
        };
        let boolean = {
            let mut h = header();
            h[5] = Raw::Bool(true);
            h
        };
        for (header, row, column, message) in [
            (
                renamed,
                Some(1),
                Some("record_id"),
                "A1 is \"usage_record_id\", expected \"record_id\"",
            ),
            (short, Some(1), Some("tier"), "Q1 is empty"),
            (extra, Some(1), None, "extra column R"),
            (boolean, Some(1), Some("quantity"), "F1 is not text"),
        ] {
            let problem = only_problem(&raw_workbook(SHEET, &[(0, header), (1, raw_row(None))]));
            assert_eq!((problem.row, problem.column), (row, column), "{problem}");
            assert!(problem.message.contains(message), "{problem}");
        }
        let late = only_problem(&raw_workbook(SHEET, &[(2, header()), (3, raw_row(None))]));
        assert!(late.message.contains("row 1 must be the header"), "{late}");
        let empty = only_problem(&raw_workbook(SHEET, &[]));
        assert!(empty.message.contains("expected the header row"), "{empty}");
    }

    #[test]
    fn rows_are_still_checked_by_name_under_a_reordered_header() {
        let mut swapped = header();
        swapped.swap(6, 7);
        // The row written as its header says: column G holds the end, H the start.
        let row = |quantity: Raw| {
            let mut cells = raw_row(Some((5, quantity)));
            cells.swap(6, 7);
            cells
        };
        let fine = validate_workbook(
            &raw_workbook(SHEET, &[(0, swapped), (1, row(Raw::Number(3.0)))]),
            &platform_rules(),
        );
        assert_eq!(fine.len(), 1, "{fine:?}");
        assert_eq!(
            (fine[0].row, fine[0].column),
            (Some(1), Some("start_time_utc"))
        );
        assert!(
            fine[0].message.contains("G1 is \"end_time_utc\"")
                && fine[0].message.contains("checked by column name"),
            "{}",
            fine[0]
        );
        let mut swapped = header();
        swapped.swap(6, 7);
        let bad = validate_workbook(
            &raw_workbook(SHEET, &[(0, swapped), (1, row(Raw::Number(-3.0)))]),
            &platform_rules(),
        );
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert_eq!((bad[1].row, bad[1].column), (Some(2), Some("quantity")));
        // A renamed column cannot be matched: the rows are not read.
        let mut renamed = header();
        renamed[0] = Raw::Text("usage_record_id");
        let stopped = validate_workbook(
            &raw_workbook(SHEET, &[(0, renamed), (1, row(Raw::Number(-3.0)))]),
            &platform_rules(),
        );
        assert_eq!(stopped.len(), 1, "{stopped:?}");
    }

    #[test]
    fn a_workbook_without_records_is_a_problem() {
        let trailing_blanks = vec![Raw::Blank, Raw::Blank];
        let bytes = raw_workbook(SHEET, &[(0, header()), (4, trailing_blanks)]);
        let problem = only_problem(&bytes);
        assert_eq!(problem.message, "no usage records");
    }

    #[test]
    fn cell_types_are_checked_once() {
        let rows = |column, cell| {
            raw_workbook(SHEET, &[(0, header()), (1, raw_row(Some((column, cell))))])
        };
        let date = only_problem(&rows(6, Raw::Date));
        assert_eq!((date.row, date.column), (Some(2), Some("start_time_utc")));
        assert_eq!(date.message, TIMES_AS_TEXT);
        let boolean = only_problem(&rows(5, Raw::Bool(true)));
        assert_eq!(boolean.column, Some("quantity"));
        assert!(boolean.message.contains("boolean"), "{boolean}");
        let date_quantity = only_problem(&rows(5, Raw::Date));
        assert!(date_quantity.message.contains("date"), "{date_quantity}");
        let as_text = only_problem(&rows(5, Raw::Text("3")));
        assert!(
            as_text.message.contains("must be a number cell"),
            "{as_text}"
        );
    }

    #[test]
    fn empty_rows_between_records_are_reported_but_trailing_ones_ignored() {
        let mut second = raw_row(None);
        second[0] = Raw::Text("R-2");
        let bytes = raw_workbook(
            SHEET,
            &[
                (0, header()),
                (1, raw_row(None)),
                (2, vec![Raw::Blank]),
                (4, second),
                (7, vec![Raw::Blank, Raw::Blank]),
            ],
        );
        let problem = only_problem(&bytes);
        assert_eq!(problem.row, Some(3));
        assert!(
            problem.message.contains("rows 3 to 4 are empty"),
            "{problem}"
        );
    }

    #[test]
    fn values_outside_the_template_columns_are_reported() {
        let mut row = raw_row(None);
        row.extend((10..18).map(|_| Raw::Blank));
        row.push(Raw::Text("surprise"));
        let problem = only_problem(&raw_workbook(SHEET, &[(0, header()), (1, row)]));
        assert_eq!((problem.row, problem.column), (Some(2), None));
        assert!(problem.message.contains("column S"), "{problem}");
    }

    #[test]
    fn problems_come_in_sheet_order_with_structure_and_rules_together() {
        let mut bad_second = raw_row(Some((5, Raw::Bool(false))));
        bad_second[0] = Raw::Text("R-1");
        let bytes = raw_workbook(
            SHEET,
            &[
                (0, header()),
                (1, raw_row(Some((5, Raw::Number(-2.0))))),
                (2, bad_second),
            ],
        );
        let problems = validate_workbook(&bytes, &platform_rules());
        let located: Vec<_> = problems.iter().map(|p| (p.row, p.column)).collect();
        assert_eq!(
            located,
            vec![
                (Some(2), Some("quantity")),
                (Some(3), Some("quantity")),
                (Some(3), Some("record_id"))
            ]
        );
        let inspection = inspect_workbook(&bytes, &platform_rules());
        assert_eq!(inspection.records, 2);
    }

    #[test]
    fn column_letters_follow_excel() {
        let letters: Vec<_> = [0, 16, 25, 26, 701, 702].map(column_letter).into();
        assert_eq!(letters, ["A", "Q", "Z", "AA", "ZZ", "AAA"]);
    }
}
