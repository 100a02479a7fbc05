//! A group's workbook: its rows in the template's layout, checked by the same
//! [`RowValidator`] the simulator and `validate` use, then built for upload (or written to
//! disk for a dry run).
//!
//! Nothing leaves for the platform that the shared rules refuse: a row that fails them stops the
//! group before upload (it would mean a bug in the pipeline, and the platform would mark the
//! whole file invalid anyway). Writing is CPU and file work, so it runs on the blocking pool.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use super::{
    save_as, Cell, Package, Problem, RowValidator, Rules, RunPackage, UsageRow, WorkbookError,
    WorkbookStats, WorkbookWriter,
};
use crate::usage::group::{Group, ReportRow};
use crate::usage::period::{LastTime, Period};
use crate::usage::phases::{self, Phase};
use crate::usage::resolve::{ResolvedAsset, ResolvedItem};
use crate::usage::spill::SpillError;

/// Category every record is filed under (the template's recommended default).
pub const CATEGORY: &str = "generic_category";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the workbook breaks the template rules ({} problems), first: {}", .0.len(), .0[0])]
    Template(Vec<Problem>),
    #[error(transparent)]
    Workbook(#[from] WorkbookError),
    #[error("the workbook task stopped unexpectedly: {0}")]
    Task(String),
    #[error(transparent)]
    Rows(#[from] SpillError),
}

/// The template row for one record: QT columns only, dynamic-item and amount/tier left empty.
pub fn usage_row(row: &ReportRow, period: Period) -> UsageRow {
    let mut filler = RowFiller::default();
    filler.fill(row, period);
    filler.usage
}

/// One [`UsageRow`] filled with a group's records one after the other ([`usage_row`] of each),
/// reusing what it holds: a row costs no allocation (ten a row were a tenth of a 10M-record
/// run's writing), a time equal to the last one is not spelled again, and the asset's and the
/// item's columns are copied only when the record names another asset or item than the last
/// (records come a subscription at a time).
#[derive(Default)]
pub struct RowFiller {
    usage: UsageRow,
    /// The last start and end spelled.
    times: [LastTime; 2],
    /// The asset and the item whose columns `usage` holds.
    asset: Option<Arc<ResolvedAsset>>,
    item: Option<Arc<ResolvedItem>>,
}

impl RowFiller {
    /// The template row of `row`.
    pub fn fill(&mut self, row: &ReportRow, period: Period) -> &UsageRow {
        let usage = &mut self.usage;
        row.record_id
            .spell_into(text_of(&mut usage.record_id), period);
        set_optional(&mut usage.record_note, row.note.as_deref());
        if !same(&self.item, &row.item) {
            set_text(&mut usage.item_search_criteria, &row.item.search.0);
            set_text(&mut usage.item_search_value, &row.item.search.1);
            self.item = Some(row.item.clone());
        }
        usage.amount = Cell::Empty;
        usage.quantity = Cell::Number(row.quantity.value());
        let [starts, ends] = &mut self.times;
        starts.push(text_of(&mut usage.start_time_utc), row.start);
        ends.push(text_of(&mut usage.end_time_utc), row.end);
        if !same(&self.asset, &row.asset) {
            set_text(&mut usage.asset_search_criteria, &row.asset.search.0);
            set_text(&mut usage.asset_search_value, &row.asset.search.1);
            set_optional(&mut usage.asset_recon_id, row.asset.recon_id.as_deref());
            self.asset = Some(row.asset.clone());
        }
        usage.item_name = Cell::Empty;
        usage.item_mpn = Cell::Empty;
        usage.item_precision = Cell::Empty;
        usage.item_unit = Cell::Empty;
        if !matches!(&usage.category_id, Cell::Text(category) if category == CATEGORY) {
            set_text(&mut usage.category_id, CATEGORY);
        }
        usage.tier = Cell::Empty;
        &self.usage
    }
}

/// Whether `last` is `next` itself (the same shared copy, so the same columns).
fn same<T>(last: &Option<Arc<T>>, next: &Arc<T>) -> bool {
    last.as_ref().is_some_and(|last| Arc::ptr_eq(last, next))
}

/// `cell` as an emptied text cell, keeping its string's room when it was one.
fn text_of(cell: &mut Cell) -> &mut String {
    if !matches!(cell, Cell::Text(_)) {
        *cell = Cell::Text(String::new());
    }
    match cell {
        Cell::Text(text) => {
            text.clear();
            text
        }
        _ => unreachable!("made a text cell above"),
    }
}

fn set_text(cell: &mut Cell, value: &str) {
    text_of(cell).push_str(value);
}

/// A text cell, or an empty cell for `None`.
fn set_optional(cell: &mut Cell, value: Option<&str>) {
    match value {
        Some(value) => set_text(cell, value),
        None => *cell = Cell::Empty,
    }
}

/// The rules the platform will apply to this group's file: its month, its product's PAYG items
/// and the assets on its contract and product.
fn group_rules(group: &Group, period: Period) -> Result<Rules, SpillError> {
    let items: HashMap<(String, String), _> = group
        .product
        .items
        .values()
        .map(|item| (item.search.clone(), item.precision))
        .collect();
    // The group's distinct assets, from the asset tables of its stored rows (not the rows).
    let assets: HashSet<(String, String)> = group
        .rows
        .assets()?
        .iter()
        .map(|asset| (asset.search.0.to_string(), asset.search.1.to_string()))
        .collect();
    Ok(Rules {
        period: Some(period),
        items: Some(items),
        assets: Some(assets),
    })
}

/// Workbooks written at once: one more than the cores. Writing is CPU-bound, but between two
/// groups a writer waits for the next one to be handed over through the runtime, and with one
/// writer per core a scheduler trace showed cores going idle during filing while the runner's
/// threads slept (not one waited on I/O): measured on 2 cores, a third writer files the
/// 10k-subscription month 0.60 → 0.55 s and the 100k one 4.9 → 4.5 s. More than that only
/// adds threads and buffers (many groups are filed concurrently, mostly waiting on the
/// platform).
fn writers() -> &'static tokio::sync::Semaphore {
    static WRITERS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    WRITERS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(cores + 1)
    })
}

/// Checks and writes the group's workbook to `path` (`--dry-run`).
pub async fn write_group(
    group: Arc<Group>,
    period: Period,
    package: RunPackage,
    path: PathBuf,
) -> Result<WorkbookStats, BuildError> {
    on_writer_pool(move || {
        let package = package.get()?;
        let bytes = save_as(&path, |file| {
            write_checked(&group, period, &package, file, &mut ())
        })?;
        Ok(WorkbookStats {
            rows: group.rows.len() as u64,
            bytes,
        })
    })
    .await
}

/// What a build learns from each row it writes, besides the workbook: filling an existing
/// file (a draft, a rebuild) records the digest of its rows in the file's note, taken in the
/// same pass instead of a second read of the group's rows.
pub trait RowTally: Send + 'static {
    fn tally(&mut self, row: &UsageRow);
}

/// No tally (`--dry-run` writes only the workbook).
impl RowTally for () {
    fn tally(&mut self, _row: &UsageRow) {}
}

/// Checks and builds the group's workbook in memory, for upload, with `tally` of its rows.
pub async fn build_group<T: RowTally>(
    group: Arc<Group>,
    period: Period,
    package: RunPackage,
    mut tally: T,
) -> Result<(Vec<u8>, T), BuildError> {
    on_writer_pool(move || {
        let package = package.get()?;
        let bytes = write_checked(&group, period, &package, Vec::new(), &mut tally)?;
        Ok((bytes, tally))
    })
    .await
}

async fn on_writer_pool<T: Send + 'static>(
    write: impl FnOnce() -> Result<T, BuildError> + Send + 'static,
) -> Result<T, BuildError> {
    let _writer = writers()
        .acquire()
        .await
        .map_err(|e| BuildError::Task(e.to_string()))?;
    tokio::task::spawn_blocking(|| {
        let started = std::time::Instant::now();
        let written = write();
        phases::add(Phase::Write, started);
        written
    })
    .await
    .map_err(|e| BuildError::Task(e.to_string()))?
}

/// Writes every row of the group into `output`, each one checked by the shared rules first
/// and counted in `tally`.
fn write_checked<W: Write>(
    group: &Group,
    period: Period,
    package: &Package,
    output: W,
    tally: &mut impl RowTally,
) -> Result<W, BuildError> {
    let rules = group_rules(group, period)?;
    let mut validator = RowValidator::new(&rules).expecting(group.rows.len());
    let mut writer = WorkbookWriter::new(package, output, group.rows.len())?;
    let mut problems = Vec::new();
    // The rows come one at a time, read back from the scratch file when the month spilled.
    let mut filler = RowFiller::default();
    for (row, sheet_row) in group.rows.iter().zip(2u32..) {
        let usage = filler.fill(&row?, period);
        problems.extend(validator.check(sheet_row, usage));
        if problems.is_empty() {
            writer.push(usage)?;
            tally.tally(usage);
        }
    }
    if !problems.is_empty() {
        return Err(BuildError::Template(problems));
    }
    Ok(writer.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::record::{Quantity, RecordId};
    use crate::usage::resolve::{ResolvedAsset, ResolvedItem};
    use crate::usage::workbook::Precision;

    fn row(n: u8, note: Option<&str>, recon: Option<&str>) -> ReportRow {
        let start = chrono::DateTime::from_timestamp(1_704_067_200 + i64::from(n) * 3_601, 0)
            .unwrap()
            .naive_utc();
        ReportRow {
            asset: Arc::new(ResolvedAsset {
                id: format!("AS-{n}").into(),
                contract_id: "CRD-1".into(),
                product_id: "PRD-1".into(),
                marketplace_id: "MP-1".into(),
                search: ("asset.id".into(), format!("AS-{n}").into()),
                recon_id: recon.map(Into::into),
            }),
            item: Arc::new(ResolvedItem {
                precision: Precision::Decimal(2),
                search: ("item.mpn".into(), format!("MPN-{n}")),
            }),
            record_id: match n % 2 {
                0 => RecordId::Vendor(format!("R-{n}").into()),
                _ => RecordId::Derived {
                    digest: [n; 12],
                    occurrence: u32::from(n),
                },
            },
            note: note.map(Arc::from),
            quantity: Quantity::parse(&format!("{n}.5")).unwrap(),
            start,
            end: start + chrono::Duration::seconds(59),
        }
    }

    #[test]
    fn a_reused_row_is_filled_exactly_as_a_fresh_one() {
        let period = Period::parse("2024-01").unwrap();
        let first = row(1, Some("a long note, with commas"), Some("RECON-1"));
        // The first record's asset and item again (the same shared copies) on other facts.
        let again = ReportRow {
            asset: first.asset.clone(),
            item: first.item.clone(),
            ..row(5, None, None)
        };
        let rows = [
            first,
            again.clone(),
            row(2, None, None),
            again,
            row(3, Some(""), Some("R")),
            row(4, Some("n"), None),
        ];
        let mut reused = RowFiller::default();
        for row in rows.iter().chain(rows.iter().rev()) {
            assert_eq!(*reused.fill(row, period), usage_row(row, period));
        }
        let fresh = usage_row(&rows[0], period);
        assert_eq!(
            fresh.start_time_utc,
            Cell::Text("2024-01-01 01:00:01".into())
        );
        assert_eq!(
            fresh.record_note,
            Cell::Text("a long note, with commas".into())
        );
        assert_eq!(usage_row(&rows[1], period).record_note, Cell::Empty);
    }
}
