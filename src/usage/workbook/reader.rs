//! The usage workbook template (the sheet, its columns, the platform's rules) and the one
//! validator of it.
//!
//! The simulator refuses uploads with it, the pipeline checks every workbook with it before
//! uploading, and `connect-payg validate` prints what it finds: one implementation, so the three
//! can never disagree about what a valid workbook is.
//!
//! Reading streams the `usage_records` sheet cell by cell (calamine's cell reader), so validating
//! a million-row workbook holds one row at a time; only [`read_workbook`] collects rows. What
//! the reader would hold whole is bounded first ([`super::guard`]): zip bombs are refused unread.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::hash::BuildHasher;
use std::io::{Cursor, Read, Seek};
use std::panic::{self, AssertUnwindSafe};
use std::str::FromStr;

use calamine::{DataRef, Reader, Xlsx};
use foldhash::{HashMap as FastMap, HashMapExt, HashSet as FastSet};

use super::guard;
use crate::usage::period::{format_time, parse_time, Period};

/// The sheet the platform reads records from.
pub const SHEET: &str = "usage_records";

/// The header row of [`SHEET`], exactly, in this order.
pub const COLUMNS: [&str; 17] = [
    "record_id",
    "record_note",
    "item_search_criteria",
    "item_search_value",
    "amount",
    "quantity",
    "start_time_utc",
    "end_time_utc",
    "asset_search_criteria",
    "asset_search_value",
    "item_name",
    "item_mpn",
    "item_precision",
    "item_unit",
    "category_id",
    "asset_recon_id",
    "tier",
];

/// Item criteria the spreadsheet accepts; `item.id` is not among them (the platform does not
/// confirm it for spreadsheet uploads).
pub const ITEM_CRITERIA: [&str; 2] = ["item.mpn", "item.local_id"];

/// How many fractional digits an item's quantity may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Integer,
    Decimal(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown item precision {0:?} (expected integer or decimal(n))")]
pub struct UnknownPrecision(pub String);

impl Precision {
    /// Parses `integer` or `decimal(n)`, in any letter case (the published model capitalises).
    pub fn parse(text: &str) -> Result<Self, UnknownPrecision> {
        let unknown = || UnknownPrecision(text.to_string());
        let lower = text.trim().to_ascii_lowercase();
        if lower == "integer" {
            return Ok(Precision::Integer);
        }
        let digits = lower
            .strip_prefix("decimal(")
            .and_then(|rest| rest.strip_suffix(')'))
            .ok_or_else(unknown)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unknown());
        }
        digits
            .parse()
            .map(Precision::Decimal)
            .map_err(|_| unknown())
    }

    /// The most fractional digits a quantity may have.
    pub fn max_fraction_digits(self) -> u32 {
        match self {
            Precision::Integer => 0,
            Precision::Decimal(digits) => u32::from(digits),
        }
    }
}

impl FromStr for Precision {
    type Err = UnknownPrecision;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Precision::parse(text)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Precision::Integer => f.write_str("integer"),
            Precision::Decimal(digits) => write!(f, "decimal({digits})"),
        }
    }
}

/// Fractional digits of the shortest decimal text that reads back as `value` (what a person
/// sees in the cell), e.g. 0.1 → 1 although its binary value has more. `value` must be finite.
pub fn fraction_digits(value: f64, scratch: &mut String) -> u32 {
    if value.fract() == 0.0 {
        return 0;
    }
    scratch.clear();
    // Display of f64 is the shortest round-trip form and never uses exponent notation.
    write!(scratch, "{value}").expect("writing to a String cannot fail");
    scratch
        .split_once('.')
        .map_or(0, |(_, fraction)| fraction.len() as u32)
}

/// One cell's content as the template sees it. An empty string reads as [`Cell::Empty`]: the
/// template wants unused cells truly empty, and an empty text cell is that in all but name.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Cell {
    #[default]
    Empty,
    Text(String),
    Number(f64),
}

impl Cell {
    /// A text cell, or [`Cell::Empty`] for an empty string.
    pub fn text(text: impl Into<String>) -> Cell {
        let text = text.into();
        if text.is_empty() {
            Cell::Empty
        } else {
            Cell::Text(text)
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Cell::Empty)
    }
}

/// One row of [`SHEET`], one field per column of [`COLUMNS`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UsageRow {
    pub record_id: Cell,
    pub record_note: Cell,
    pub item_search_criteria: Cell,
    pub item_search_value: Cell,
    pub amount: Cell,
    pub quantity: Cell,
    pub start_time_utc: Cell,
    pub end_time_utc: Cell,
    pub asset_search_criteria: Cell,
    pub asset_search_value: Cell,
    pub item_name: Cell,
    pub item_mpn: Cell,
    pub item_precision: Cell,
    pub item_unit: Cell,
    pub category_id: Cell,
    pub asset_recon_id: Cell,
    pub tier: Cell,
}

impl UsageRow {
    /// The cells in [`COLUMNS`] order.
    pub fn cells(&self) -> [&Cell; 17] {
        [
            &self.record_id,
            &self.record_note,
            &self.item_search_criteria,
            &self.item_search_value,
            &self.amount,
            &self.quantity,
            &self.start_time_utc,
            &self.end_time_utc,
            &self.asset_search_criteria,
            &self.asset_search_value,
            &self.item_name,
            &self.item_mpn,
            &self.item_precision,
            &self.item_unit,
            &self.category_id,
            &self.asset_recon_id,
            &self.tier,
        ]
    }

    /// The cells in [`COLUMNS`] order, moved out of the row.
    pub fn into_cells(self) -> [Cell; 17] {
        [
            self.record_id,
            self.record_note,
            self.item_search_criteria,
            self.item_search_value,
            self.amount,
            self.quantity,
            self.start_time_utc,
            self.end_time_utc,
            self.asset_search_criteria,
            self.asset_search_value,
            self.item_name,
            self.item_mpn,
            self.item_precision,
            self.item_unit,
            self.category_id,
            self.asset_recon_id,
            self.tier,
        ]
    }

    /// The row whose cells, in [`COLUMNS`] order, are `cells`.
    pub fn from_cells(cells: [Cell; 17]) -> UsageRow {
        let mut cells = cells.into_iter();
        // Fields of a struct expression are evaluated in the order written: COLUMNS order.
        let mut next = || cells.next().unwrap_or_default();
        UsageRow {
            record_id: next(),
            record_note: next(),
            item_search_criteria: next(),
            item_search_value: next(),
            amount: next(),
            quantity: next(),
            start_time_utc: next(),
            end_time_utc: next(),
            asset_search_criteria: next(),
            asset_search_value: next(),
            item_name: next(),
            item_mpn: next(),
            item_precision: next(),
            item_unit: next(),
            category_id: next(),
            asset_recon_id: next(),
            tier: next(),
        }
    }
}

/// What the platform knows about the file the workbook is uploaded to. `None` means unknown
/// (offline): the rule is skipped, and [`Rules::skipped_checks`] says so.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub period: Option<Period>,
    /// The product's PPU items keyed by (criteria, value), one entry per accepted criteria
    /// spelling (`item.mpn`, `item.local_id`).
    pub items: Option<HashMap<(String, String), Precision>>,
    /// The assets on the file's contract and product, keyed by (criteria, value).
    pub assets: Option<HashSet<(String, String)>>,
}

impl Rules {
    /// The rules `validate` can apply without the platform: everything but existence.
    pub fn offline(period: Option<Period>) -> Self {
        Rules {
            period,
            items: None,
            assets: None,
        }
    }

    /// The checks these rules cannot make, for telling the user what was not verified.
    pub fn skipped_checks(&self) -> Vec<&'static str> {
        let mut skipped = Vec::new();
        if self.period.is_none() {
            skipped.push("records lie within the reporting period");
        }
        if self.items.is_none() {
            skipped.push("items exist on the product, and quantities respect their precision");
        }
        if self.assets.is_none() {
            skipped.push("assets exist on the file's contract and product");
        }
        skipped
    }
}

/// Something wrong with a workbook, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The sheet, or empty when the problem is the workbook as a whole.
    pub sheet: String,
    /// 1-based sheet row; the header is row 1.
    pub row: Option<u32>,
    pub column: Option<&'static str>,
    pub message: String,
}

impl Problem {
    fn workbook(message: impl Into<String>) -> Problem {
        Problem {
            sheet: String::new(),
            row: None,
            column: None,
            message: message.into(),
        }
    }

    fn sheet(message: impl Into<String>) -> Problem {
        Problem {
            sheet: SHEET.to_string(),
            ..Problem::workbook(message)
        }
    }

    fn row(row: u32, message: impl Into<String>) -> Problem {
        Problem {
            row: Some(row),
            ..Problem::sheet(message)
        }
    }

    fn cell(row: u32, column: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            column: Some(column),
            ..Problem::row(row, message)
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sheet.is_empty() {
            f.write_str("workbook")?;
        } else {
            f.write_str(&self.sheet)?;
        }
        if let Some(row) = self.row {
            write!(f, " row {row}")?;
        }
        if let Some(column) = self.column {
            let separator = if self.row.is_some() { "," } else { "" };
            write!(f, "{separator} column {column}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Checks data rows one at a time, in O(1) per row; remembers record ids for uniqueness.
pub struct RowValidator<'a> {
    rules: &'a Rules,
    /// criteria → value → precision, so a lookup borrows the row's strings instead of
    /// building an owned (String, String) key per row.
    items: Option<FastMap<&'a str, FastMap<&'a str, Precision>>>,
    assets: Option<FastMap<&'a str, FastSet<&'a str>>>,
    /// 128-bit digests of the record ids seen, with the row of each: an entry costs 24 bytes
    /// instead of a copy of the string. Two independently keyed SipHashes make a false
    /// duplicate (a collision) practically impossible (~n²/2¹²⁹). A pair of u64 rather than a
    /// u128 keeps entries 8-aligned, which saves a quarter of the table.
    seen_ids: FastMap<(u64, u64), u32>,
    id_hashers: (RandomState, RandomState),
    scratch: String,
}

impl<'a> RowValidator<'a> {
    pub fn new(rules: &'a Rules) -> Self {
        let items = rules.items.as_ref().map(|items| {
            let mut index: FastMap<&str, FastMap<&str, Precision>> = FastMap::new();
            for ((criteria, value), precision) in items {
                index
                    .entry(criteria.as_str())
                    .or_default()
                    .insert(value.as_str(), *precision);
            }
            index
        });
        let assets = rules.assets.as_ref().map(|assets| {
            let mut index: FastMap<&str, FastSet<&str>> = FastMap::new();
            for (criteria, value) in assets {
                index
                    .entry(criteria.as_str())
                    .or_default()
                    .insert(value.as_str());
            }
            index
        });
        RowValidator {
            rules,
            items,
            assets,
            seen_ids: FastMap::new(),
            id_hashers: (RandomState::new(), RandomState::new()),
            scratch: String::new(),
        }
    }

    /// Every problem of one data row; `sheet_row` is its 1-based row in the sheet.
    pub fn check(&mut self, sheet_row: u32, row: &UsageRow) -> Vec<Problem> {
        let mut found = Vec::new();
        let mut report = |column: &'static str, message: String| {
            found.push(Problem::cell(sheet_row, column, message));
        };
        self.check_record_id(sheet_row, row, &mut report);
        let precision = self.check_item(row, &mut report);
        self.check_quantity(&row.quantity, precision, &mut report);
        self.check_times(row, &mut report);
        self.check_asset(row, &mut report);
        for (column, cell) in [("amount", &row.amount), ("tier", &row.tier)] {
            if !cell.is_empty() {
                report(column, "must be empty for the QT schema".into());
            }
        }
        for (column, cell) in [
            ("item_name", &row.item_name),
            ("item_mpn", &row.item_mpn),
            ("item_precision", &row.item_precision),
            ("item_unit", &row.item_unit),
        ] {
            if !cell.is_empty() {
                report(column, "must be empty (dynamic items are not used)".into());
            }
        }
        for (column, cell) in [
            ("record_note", &row.record_note),
            ("category_id", &row.category_id),
            ("asset_recon_id", &row.asset_recon_id),
        ] {
            if let Cell::Number(number) = cell {
                report(
                    column,
                    format!("must be a text cell, not the number {number}"),
                );
            }
        }
        found
    }

    fn check_record_id(&mut self, sheet_row: u32, row: &UsageRow, report: &mut Report<'_>) {
        let Some(id) = required_text("record_id", &row.record_id, report) else {
            return;
        };
        let digest = (
            self.id_hashers.0.hash_one(id),
            self.id_hashers.1.hash_one(id),
        );
        match self.seen_ids.entry(digest) {
            Entry::Occupied(first) => report(
                "record_id",
                format!("{id:?} repeats the record_id of row {}", first.get()),
            ),
            Entry::Vacant(slot) => {
                slot.insert(sheet_row);
            }
        }
    }

    /// Checks the item columns; returns the item's precision when the item is known.
    fn check_item(&self, row: &UsageRow, report: &mut Report<'_>) -> Option<Precision> {
        let criteria = required_text("item_search_criteria", &row.item_search_criteria, report);
        let criteria = criteria.filter(|criteria| {
            let accepted = ITEM_CRITERIA.contains(criteria);
            if !accepted {
                report(
                    "item_search_criteria",
                    format!("must be item.mpn or item.local_id, not {criteria:?}"),
                );
            }
            accepted
        });
        let value = required_text("item_search_value", &row.item_search_value, report);
        let (criteria, value, items) = (criteria?, value?, self.items.as_ref()?);
        let precision = items.get(criteria).and_then(|by_value| by_value.get(value));
        if precision.is_none() {
            report(
                "item_search_value",
                format!("no PPU item of the product has {criteria} {value:?}"),
            );
        }
        precision.copied()
    }

    fn check_quantity(
        &mut self,
        quantity: &Cell,
        precision: Option<Precision>,
        report: &mut Report<'_>,
    ) {
        let quantity = match quantity {
            Cell::Empty => return report("quantity", "is required".into()),
            Cell::Text(text) => {
                return report(
                    "quantity",
                    format!("must be a number cell, not the text {text:?}"),
                )
            }
            Cell::Number(quantity) => *quantity,
        };
        if !quantity.is_finite() {
            return report("quantity", format!("{quantity} is not a finite number"));
        }
        if quantity < 0.0 {
            return report("quantity", format!("{quantity} is negative"));
        }
        let Some(precision) = precision else { return };
        let digits = fraction_digits(quantity, &mut self.scratch);
        if digits > precision.max_fraction_digits() {
            let message = match precision {
                Precision::Integer => {
                    format!("{quantity} is not a whole number, but the item's precision is integer")
                }
                Precision::Decimal(_) => format!(
                    "{quantity} has {digits} decimal places, but the item's precision is {precision}"
                ),
            };
            report("quantity", message);
        }
    }

    fn check_times(&self, row: &UsageRow, report: &mut Report<'_>) {
        let start = time("start_time_utc", &row.start_time_utc, report);
        let end = time("end_time_utc", &row.end_time_utc, report);
        if let (Some(start), Some(end)) = (start, end) {
            if end < start {
                report(
                    "end_time_utc",
                    format!("ends before it starts ({})", format_time(start)),
                );
            }
        }
        let Some(period) = self.rules.period else {
            return;
        };
        if start.is_some_and(|start| start < period.start()) {
            report(
                "start_time_utc",
                format!("is before the reporting period {period}"),
            );
        }
        if end.is_some_and(|end| end > period.end()) {
            report(
                "end_time_utc",
                format!("is after the reporting period {period}"),
            );
        }
    }

    fn check_asset(&self, row: &UsageRow, report: &mut Report<'_>) {
        let criteria = required_text("asset_search_criteria", &row.asset_search_criteria, report);
        let criteria = criteria.filter(|criteria| {
            let accepted = *criteria == "asset.id"
                || criteria
                    .strip_prefix("parameter.")
                    .is_some_and(|parameter| !parameter.is_empty());
            if !accepted {
                report(
                    "asset_search_criteria",
                    format!("must be asset.id or parameter.<id>, not {criteria:?}"),
                );
            }
            accepted
        });
        let value = required_text("asset_search_value", &row.asset_search_value, report);
        let (Some(criteria), Some(value), Some(assets)) = (criteria, value, &self.assets) else {
            return;
        };
        let known = assets
            .get(criteria)
            .is_some_and(|values| values.contains(value));
        if !known {
            report(
                "asset_search_value",
                format!("no asset on the file's contract and product has {criteria} {value:?}"),
            );
        }
    }
}

type Report<'r> = dyn FnMut(&'static str, String) + 'r;

/// The text of a required text cell, reporting what is wrong otherwise.
fn required_text<'c>(
    column: &'static str,
    cell: &'c Cell,
    report: &mut Report<'_>,
) -> Option<&'c str> {
    match cell {
        Cell::Empty => report(column, "is required".into()),
        Cell::Number(number) => report(
            column,
            format!("must be a text cell, not the number {number}"),
        ),
        Cell::Text(text) if text.trim().is_empty() => report(column, "is blank".into()),
        Cell::Text(text) => return Some(text),
    }
    None
}

fn time(
    column: &'static str,
    cell: &Cell,
    report: &mut Report<'_>,
) -> Option<chrono::NaiveDateTime> {
    if let Cell::Number(serial) = cell {
        report(
            column,
            format!("{TIMES_AS_TEXT} (found the number {serial})"),
        );
        return None;
    }
    let text = required_text(column, cell, report)?;
    let time = parse_time(text);
    if time.is_none() {
        report(
            column,
            format!("{text:?} is not a YYYY-MM-DD HH:MM:SS time"),
        );
    }
    time
}

const TIMES_AS_TEXT: &str = "write times as text YYYY-MM-DD HH:MM:SS, not date serials";

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
    use super::super::writer::workbook_bytes;
    use super::*;
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};

    fn good_row(n: u32) -> UsageRow {
        UsageRow {
            record_id: Cell::text(format!("CRD-1-AS-1-MPN-A-202401-{n}")),
            record_note: Cell::text("Jan 2024 storage"),
            item_search_criteria: Cell::text("item.mpn"),
            item_search_value: Cell::text("MPN-A"),
            quantity: Cell::Number(12.5),
            start_time_utc: Cell::text("2024-01-01 00:00:00"),
            end_time_utc: Cell::text("2024-01-31 23:59:59"),
            asset_search_criteria: Cell::text("asset.id"),
            asset_search_value: Cell::text("AS-1"),
            category_id: Cell::text("generic_category"),
            asset_recon_id: Cell::text("tenant-42"),
            ..UsageRow::default()
        }
    }

    fn pair(criteria: &str, value: &str) -> (String, String) {
        (criteria.to_string(), value.to_string())
    }

    fn platform_rules() -> Rules {
        Rules {
            period: Some(Period::parse("2024-01").unwrap()),
            items: Some(HashMap::from([
                (pair("item.mpn", "MPN-A"), Precision::Decimal(2)),
                (pair("item.local_id", "A"), Precision::Decimal(2)),
                (pair("item.mpn", "MPN-I"), Precision::Integer),
            ])),
            assets: Some(HashSet::from([
                pair("asset.id", "AS-1"),
                pair("parameter.tenant_id", "tenant-77"),
            ])),
        }
    }

    fn check(rules: &Rules, row: &UsageRow) -> Vec<Problem> {
        RowValidator::new(rules).check(2, row)
    }

    #[test]
    fn a_good_row_passes_every_rule() {
        let rules = platform_rules();
        assert_eq!(check(&rules, &good_row(1)), vec![]);
        let by_parameter = UsageRow {
            item_search_criteria: Cell::text("item.local_id"),
            item_search_value: Cell::text("A"),
            asset_search_criteria: Cell::text("parameter.tenant_id"),
            asset_search_value: Cell::text("tenant-77"),
            quantity: Cell::Number(0.0),
            record_note: Cell::Empty,
            category_id: Cell::Empty,
            asset_recon_id: Cell::Empty,
            ..good_row(2)
        };
        assert_eq!(check(&rules, &by_parameter), vec![]);
    }

    #[test]
    fn each_broken_cell_yields_exactly_its_problem() {
        fn text(value: &str) -> Cell {
            Cell::text(value)
        }
        type Break = fn(&mut UsageRow);
        let cases: Vec<(Break, &str, &str)> = vec![
            (|r| r.record_id = Cell::Empty, "record_id", "is required"),
            (|r| r.record_id = text("  "), "record_id", "is blank"),
            (
                |r| r.record_id = Cell::Number(7.0),
                "record_id",
                "must be a text cell",
            ),
            (
                |r| r.item_search_criteria = text("item.id"),
                "item_search_criteria",
                "must be item.mpn or item.local_id",
            ),
            (
                |r| r.item_search_criteria = Cell::Empty,
                "item_search_criteria",
                "is required",
            ),
            (
                |r| r.item_search_value = text("MPN-X"),
                "item_search_value",
                "no PPU item",
            ),
            (
                |r| r.item_search_value = Cell::Empty,
                "item_search_value",
                "is required",
            ),
            (|r| r.quantity = Cell::Empty, "quantity", "is required"),
            (
                |r| r.quantity = text("12"),
                "quantity",
                "must be a number cell",
            ),
            (
                |r| r.quantity = Cell::Number(-1.0),
                "quantity",
                "is negative",
            ),
            (
                |r| r.quantity = Cell::Number(f64::NAN),
                "quantity",
                "not a finite number",
            ),
            (
                |r| r.quantity = Cell::Number(f64::INFINITY),
                "quantity",
                "not a finite number",
            ),
            (
                |r| r.quantity = Cell::Number(1.125),
                "quantity",
                "has 3 decimal places, but the item's precision is decimal(2)",
            ),
            (
                |r| {
                    r.item_search_value = text("MPN-I");
                    r.quantity = Cell::Number(2.5)
                },
                "quantity",
                "not a whole number",
            ),
            (
                |r| r.start_time_utc = Cell::Empty,
                "start_time_utc",
                "is required",
            ),
            (
                |r| r.start_time_utc = text("2024-01-01T00:00:00"),
                "start_time_utc",
                "is not a YYYY-MM-DD HH:MM:SS time",
            ),
            (
                |r| r.start_time_utc = Cell::Number(45292.0),
                "start_time_utc",
                TIMES_AS_TEXT,
            ),
            (
                |r| r.end_time_utc = text("2024-01-31"),
                "end_time_utc",
                "is not a YYYY-MM-DD HH:MM:SS time",
            ),
            (
                |r| r.start_time_utc = text("2023-12-31 23:59:59"),
                "start_time_utc",
                "before the reporting period 2024-01",
            ),
            (
                |r| r.end_time_utc = text("2024-02-01 00:00:00"),
                "end_time_utc",
                "after the reporting period 2024-01",
            ),
            (
                |r| r.end_time_utc = text("2024-01-01 00:00:00"),
                "end_time_utc",
                "",
            ),
            (
                |r| {
                    r.start_time_utc = text("2024-01-10 00:00:00");
                    r.end_time_utc = text("2024-01-09 00:00:00")
                },
                "end_time_utc",
                "ends before it starts",
            ),
            (
                |r| r.asset_search_criteria = text("asset.external_id"),
                "asset_search_criteria",
                "must be asset.id or parameter.<id>",
            ),
            (
                |r| r.asset_search_criteria = text("parameter."),
                "asset_search_criteria",
                "must be asset.id or parameter.<id>",
            ),
            (
                |r| r.asset_search_value = text("AS-2"),
                "asset_search_value",
                "no asset on the file's contract and product",
            ),
            (
                |r| r.asset_search_criteria = text("parameter.tenant_id"),
                "asset_search_value",
                "no asset",
            ),
            (
                |r| r.asset_search_value = Cell::Empty,
                "asset_search_value",
                "is required",
            ),
            (
                |r| r.amount = Cell::Number(1.0),
                "amount",
                "must be empty for the QT schema",
            ),
            (
                |r| r.tier = Cell::Number(1.0),
                "tier",
                "must be empty for the QT schema",
            ),
            (
                |r| r.item_name = text("Storage"),
                "item_name",
                "dynamic items",
            ),
            (|r| r.item_mpn = text("MPN-A"), "item_mpn", "dynamic items"),
            (
                |r| r.item_precision = text("integer"),
                "item_precision",
                "dynamic items",
            ),
            (|r| r.item_unit = text("GB"), "item_unit", "dynamic items"),
            (
                |r| r.category_id = Cell::Number(1.0),
                "category_id",
                "must be a text cell",
            ),
            (
                |r| r.record_note = Cell::Number(1.0),
                "record_note",
                "must be a text cell",
            ),
            (
                |r| r.asset_recon_id = Cell::Number(1.0),
                "asset_recon_id",
                "must be a text cell",
            ),
        ];
        let rules = platform_rules();
        for (index, (breaks, column, message)) in cases.into_iter().enumerate() {
            let mut row = good_row(1);
            breaks(&mut row);
            let problems = check(&rules, &row);
            // The one case whose message is empty is a valid edge: start == end is allowed.
            if message.is_empty() {
                assert_eq!(problems, vec![], "case {index}");
                continue;
            }
            assert_eq!(problems.len(), 1, "case {index}: {problems:?}");
            let problem = &problems[0];
            assert_eq!(
                (problem.row, problem.column),
                (Some(2), Some(column)),
                "case {index}"
            );
            assert!(problem.message.contains(message), "case {index}: {problem}");
            assert!(COLUMNS.contains(&column));
        }
    }

    #[test]
    fn record_ids_must_be_unique_within_the_file() {
        let rules = Rules::offline(None);
        let mut validator = RowValidator::new(&rules);
        assert_eq!(validator.check(2, &good_row(1)), vec![]);
        assert_eq!(validator.check(3, &good_row(2)), vec![]);
        let again = validator.check(4, &good_row(1));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].column, Some("record_id"));
        assert!(
            again[0].message.contains("repeats the record_id of row 2"),
            "{}",
            again[0]
        );
    }

    #[test]
    fn offline_rules_skip_existence_and_say_so() {
        let offline = Rules::offline(None);
        let row = UsageRow {
            item_search_value: Cell::text("unknown"),
            asset_search_value: Cell::text("unknown"),
            quantity: Cell::Number(1.123456),
            start_time_utc: Cell::text("1999-01-01 00:00:00"),
            ..good_row(1)
        };
        assert_eq!(check(&offline, &row), vec![]);
        assert_eq!(offline.skipped_checks().len(), 3);
        assert!(offline.skipped_checks()[1].contains("items exist"));
        let with_period = Rules::offline(Some(Period::parse("2024-01").unwrap()));
        assert_eq!(with_period.skipped_checks().len(), 2);
        assert_eq!(check(&with_period, &row).len(), 1);
        assert!(platform_rules().skipped_checks().is_empty());
    }

    #[test]
    fn precision_parses_any_case_and_displays_lower_case() {
        assert_eq!(Precision::parse("integer"), Ok(Precision::Integer));
        assert_eq!(Precision::parse("Integer"), Ok(Precision::Integer));
        assert_eq!(Precision::parse("decimal(2)"), Ok(Precision::Decimal(2)));
        assert_eq!("Decimal(8)".parse(), Ok(Precision::Decimal(8)));
        for bad in [
            "",
            "decimal",
            "decimal()",
            "decimal(-1)",
            "decimal(2",
            "float",
            "decimal(999)",
        ] {
            assert!(Precision::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Precision::Decimal(4).to_string(), "decimal(4)");
        assert_eq!(Precision::Integer.to_string(), "integer");
    }

    #[test]
    fn fraction_digits_counts_what_a_person_sees() {
        let mut scratch = String::new();
        for (value, digits) in [
            (3.0, 0),
            (0.0, 0),
            (1e20, 0),
            (12.5, 1),
            (0.1, 1),
            (0.1 + 0.2, 17), // 0.30000000000000004
            (1.25, 2),
            (1e-7, 7),
            (123456.789, 3),
        ] {
            assert_eq!(fraction_digits(value, &mut scratch), digits, "{value}");
        }
        assert!(Precision::Decimal(2).max_fraction_digits() == 2);
    }

    #[test]
    fn problems_display_sheet_row_and_column() {
        assert_eq!(
            Problem::cell(12, "quantity", "is negative").to_string(),
            "usage_records row 12, column quantity: is negative"
        );
        assert_eq!(Problem::row(3, "x").to_string(), "usage_records row 3: x");
        assert_eq!(
            Problem::sheet("no usage records").to_string(),
            "usage_records: no usage records"
        );
        assert_eq!(
            Problem::workbook("not an xlsx workbook").to_string(),
            "workbook: not an xlsx workbook"
        );
    }

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
    fn cells_follow_the_column_order() {
        let named = UsageRow::from_cells(COLUMNS.map(Cell::text));
        assert_eq!(named.quantity, Cell::text("quantity"));
        assert_eq!(named.tier, Cell::text("tier"));
        let names: Vec<&Cell> = named.cells().into();
        assert_eq!(names, COLUMNS.map(Cell::text).iter().collect::<Vec<_>>());
        assert_eq!(named.into_cells(), COLUMNS.map(Cell::text));
    }

    #[test]
    fn column_letters_follow_excel() {
        let letters: Vec<_> = [0, 16, 25, 26, 701, 702].map(column_letter).into();
        assert_eq!(letters, ["A", "Q", "Z", "AA", "ZZ", "AAA"]);
    }
}
