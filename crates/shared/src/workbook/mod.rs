//! Usage workbooks, the xlsx files Connect accepts as usage reports: the parts both the product
//! and the simulator use, one job per file.
//!
//! * `row` — the row model: the `usage_records` sheet, its [`COLUMNS`], [`UsageRow`] of
//!   [`Cell`]s, and an item's [`Precision`].
//! * `rules` — what the platform checks on each row ([`Rules`]), the one validator of them, and
//!   the [`Problem`]s it reports.
//! * `reader` — the streaming reader: checks a workbook's structure and hands each row to the
//!   rules, holding one row at a time.
//! * `guard` — the size limits checked before the reader sees a workbook (zip bombs).
//! * `writer` — writes rows into a workbook, streamed, the same bytes rust_xlsxwriter writes.
//!
//! The simulator refuses uploads with the same rules and reader the product checks its own
//! workbooks with, and `connect-payg validate` reports: they cannot disagree. Callers use the
//! names exported here, never the files' paths.

mod guard;
mod reader;
mod row;
mod rules;
mod writer;

pub use reader::{
    inspect_workbook, inspect_workbook_reader, inspect_workbook_rows, read_workbook,
    validate_workbook, Inspection,
};
pub use row::{Cell, Precision, UnknownPrecision, UsageRow, COLUMNS, SHEET};
pub use rules::{Problem, RowValidator, Rules};
pub use writer::{
    too_long, workbook_bytes, Package, RunPackage, WorkbookError, WorkbookStats, WorkbookWriter,
    MAX_TEXT,
};
