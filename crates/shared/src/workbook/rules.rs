//! What the platform checks on a usage workbook's rows, as one validator shared by everyone.
//!
//! The simulator refuses uploads with it, the pipeline checks every row with it before
//! uploading, and `connect-payg validate` reports what it finds: one implementation, so the
//! three can never disagree about what a valid row is. [`Rules`] carries what only the
//! platform knows (the period, the product's items, the contract's assets); a rule whose data
//! is unknown is skipped and said to be. [`Problem`] locates what is wrong, for the reader's
//! structural checks too.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;

use foldhash::{HashMap as FastMap, HashMapExt, HashSet as FastSet};

use super::row::{fraction_digits, Cell, Precision, UsageRow, SHEET};
use crate::period::{format_time, LastTime, Period};
use crate::record::{trim, IdKeys};

/// Item criteria the spreadsheet accepts; `item.id` is not among them (the platform does not
/// confirm it for spreadsheet uploads).
pub const ITEM_CRITERIA: [&str; 2] = ["item.mpn", "item.local_id"];

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
    pub(super) fn workbook(message: impl Into<String>) -> Problem {
        Problem {
            sheet: String::new(),
            row: None,
            column: None,
            message: message.into(),
        }
    }

    pub(super) fn sheet(message: impl Into<String>) -> Problem {
        Problem {
            sheet: SHEET.to_string(),
            ..Problem::workbook(message)
        }
    }

    pub(super) fn row(row: u32, message: impl Into<String>) -> Problem {
        Problem {
            row: Some(row),
            ..Problem::sheet(message)
        }
    }

    pub(super) fn cell(row: u32, column: &'static str, message: impl Into<String>) -> Problem {
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
    /// The record ids seen, by their keys ([`IdKeys`]), with the row of each: an entry costs
    /// 24 bytes instead of a copy of the string; a pair of u64 rather than a u128 saves a
    /// quarter of the table.
    seen_ids: FastMap<(u64, u64), u32>,
    id_keys: IdKeys,
    scratch: String,
    /// The period's bounds, worked out once instead of per row.
    bounds: Option<(chrono::NaiveDateTime, chrono::NaiveDateTime)>,
    /// The last start and end time read.
    times: [LastTime; 2],
    /// The last item found and its precision, and the last asset found.
    last_item: LastFound<Precision>,
    last_asset: LastFound<()>,
}

/// The last search criteria and value found, with what was found for them. Rows come an asset
/// (and an item) at a time, so most rows repeat the last ones: two comparisons instead of a
/// hash and look-up of each text (in a 300k-record dry run, `check` and the string hashing
/// took 24 M fewer instructions with it, ~80 a row).
struct LastFound<T> {
    criteria: String,
    value: String,
    found: Option<T>,
}

impl<T> Default for LastFound<T> {
    fn default() -> Self {
        LastFound {
            criteria: String::new(),
            value: String::new(),
            found: None,
        }
    }
}

impl<T: Copy> LastFound<T> {
    fn get(&self, criteria: &str, value: &str) -> Option<T> {
        self.found
            .filter(|_| self.criteria == criteria && self.value == value)
    }

    fn set(&mut self, criteria: &str, value: &str, found: T) {
        self.criteria.clear();
        self.criteria.push_str(criteria);
        self.value.clear();
        self.value.push_str(value);
        self.found = Some(found);
    }
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
            id_keys: IdKeys::default(),
            scratch: String::new(),
            bounds: rules.period.map(|period| (period.start(), period.end())),
            times: Default::default(),
            last_item: LastFound::default(),
            last_asset: LastFound::default(),
        }
    }

    /// Makes room for the ids of `rows` rows at once: grown row by row, the id table was
    /// rehashed a dozen times for a 20k-row file (1.2–1.3% of the workbook phase's CPU samples
    /// in the report's 1M- and 4M-record profiles).
    pub fn expecting(mut self, rows: usize) -> Self {
        self.seen_ids.reserve(rows);
        self
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
        match self.seen_ids.entry(self.id_keys.pair(id)) {
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
    fn check_item(&mut self, row: &UsageRow, report: &mut Report<'_>) -> Option<Precision> {
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
        let precision = self.last_item.get(criteria, value).or_else(|| {
            let found = items
                .get(criteria)
                .and_then(|by_value| by_value.get(value))
                .copied();
            if let Some(precision) = found {
                self.last_item.set(criteria, value, precision);
            }
            found
        });
        if precision.is_none() {
            report(
                "item_search_value",
                format!("no PPU item of the product has {criteria} {value:?}"),
            );
        }
        precision
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

    fn check_times(&mut self, row: &UsageRow, report: &mut Report<'_>) {
        let [starts, ends] = &mut self.times;
        let start = time("start_time_utc", &row.start_time_utc, starts, report);
        let end = time("end_time_utc", &row.end_time_utc, ends, report);
        if let (Some(start), Some(end)) = (start, end) {
            if end < start {
                report(
                    "end_time_utc",
                    format!("ends before it starts ({})", format_time(start)),
                );
            }
        }
        let (Some(period), Some((first, last))) = (self.rules.period, self.bounds) else {
            return;
        };
        if start.is_some_and(|start| start < first) {
            report(
                "start_time_utc",
                format!("is before the reporting period {period}"),
            );
        }
        if end.is_some_and(|end| end > last) {
            report(
                "end_time_utc",
                format!("is after the reporting period {period}"),
            );
        }
    }

    fn check_asset(&mut self, row: &UsageRow, report: &mut Report<'_>) {
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
        if self.last_asset.get(criteria, value).is_some() {
            return;
        }
        let known = assets
            .get(criteria)
            .is_some_and(|values| values.contains(value));
        if known {
            self.last_asset.set(criteria, value, ());
        } else {
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
        Cell::Text(text) if trim(text).is_empty() => report(column, "is blank".into()),
        Cell::Text(text) => return Some(text),
    }
    None
}

fn time(
    column: &'static str,
    cell: &Cell,
    last: &mut LastTime,
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
    let time = last.parse(text);
    if time.is_none() {
        report(
            column,
            format!("{text:?} is not a YYYY-MM-DD HH:MM:SS time"),
        );
    }
    time
}

pub(super) const TIMES_AS_TEXT: &str = "write times as text YYYY-MM-DD HH:MM:SS, not date serials";

#[cfg(test)]
pub(super) mod tests {
    use super::super::row::COLUMNS;
    use super::*;

    pub(crate) fn good_row(n: u32) -> UsageRow {
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

    pub(crate) fn platform_rules() -> Rules {
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
    fn a_validator_that_checked_rows_before_judges_each_row_as_a_fresh_one() {
        // Known and unknown items and assets in turn, each unknown one sharing its criteria or
        // its value with the known one checked just before, so a remembered match that
        // compared only one of the two would pass it.
        fn with(item: (&str, &str), asset: (&str, &str)) -> UsageRow {
            UsageRow {
                item_search_criteria: Cell::text(item.0),
                item_search_value: Cell::text(item.1),
                asset_search_criteria: Cell::text(asset.0),
                asset_search_value: Cell::text(asset.1),
                quantity: Cell::Number(12.0),
                ..good_row(0)
            }
        }
        let rows = [
            with(("item.mpn", "MPN-A"), ("asset.id", "AS-1")),
            with(("item.mpn", "MPN-A"), ("asset.id", "AS-1")),
            with(("item.mpn", "MPN-B"), ("asset.id", "AS-2")),
            with(("item.mpn", "MPN-A"), ("asset.id", "AS-1")),
            with(("item.local_id", "MPN-A"), ("parameter.tenant_id", "AS-1")),
            with(("item.mpn", "MPN-I"), ("parameter.tenant_id", "tenant-77")),
            with(("item.local_id", "MPN-I"), ("asset.id", "tenant-77")),
            with(("item.local_id", "A"), ("parameter.tenant_id", "tenant-77")),
            with(("item.local_id", "A"), ("parameter.tenant_id", "tenant-77")),
        ];
        let rules = platform_rules();
        let mut reused = RowValidator::new(&rules);
        let mut unknown = 0;
        for (n, row) in rows.into_iter().enumerate() {
            let row = UsageRow {
                record_id: Cell::text(format!("R-{n}")),
                ..row
            };
            let sheet_row = n as u32 + 2;
            let fresh = RowValidator::new(&rules).check(sheet_row, &row);
            assert_eq!(reused.check(sheet_row, &row), fresh, "row {n}");
            unknown += fresh.len();
        }
        // Rows 2, 4 and 6 name an unknown item and an unknown asset each.
        assert_eq!(unknown, 6);
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
}
