//! Usage workbooks, the xlsx files Connect accepts as usage reports: everything that makes,
//! reads or judges one lives in this folder, one job per file.
//!
//! The row model, the rules, the reader and the streaming writer live in the shared crate
//! (`payg_shared::workbook`), because the simulator judges uploads with them; they are
//! re-exported here so the product names one workbook module:
//!
//! * `row` — the row model: the `usage_records` sheet, its [`COLUMNS`], [`UsageRow`] of
//!   [`Cell`]s, and an item's [`Precision`].
//! * `rules` — what the platform checks on each row ([`Rules`]), the one validator of them, and
//!   the [`Problem`]s it reports.
//! * `reader` — the streaming reader: checks a workbook's structure and hands each row to the
//!   rules, holding one row at a time.
//! * `guard` — the size limits checked before the reader sees a workbook (zip bombs).
//! * `writer` — writes rows into a workbook, streamed, the same bytes rust_xlsxwriter writes.
//! * `save` (here) — a workbook saved as a file, appearing only once complete.
//! * `builder` (here) — a group's workbook: its records as rows, checked by the rules, then written.
//!
//! The simulator refuses uploads with the same rules and reader the pipeline checks its own
//! workbooks with, and `connect-payg validate` reports: they cannot disagree. Callers use the
//! names exported here, never the files' paths.

mod builder;
mod save;

pub use builder::{build_group, usage_row, write_group, BuildError, RowTally};
pub use payg_shared::workbook::*;
pub use save::{save_as, write_workbook};
