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
use crate::usage::period::{format_time, Period};
use crate::usage::phases::{self, Phase};
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

fn text(value: &str) -> Cell {
    Cell::Text(value.to_string())
}

fn optional_text(value: Option<&str>) -> Cell {
    value.map_or(Cell::Empty, text)
}

/// The template row for one record: QT columns only, dynamic-item and amount/tier left empty.
pub fn usage_row(row: &ReportRow, period: Period) -> UsageRow {
    UsageRow {
        record_id: Cell::Text(row.record_id.spelled(period)),
        record_note: optional_text(row.note.as_deref()),
        item_search_criteria: text(&row.item.search.0),
        item_search_value: text(&row.item.search.1),
        amount: Cell::Empty,
        quantity: Cell::Number(row.quantity.value()),
        start_time_utc: Cell::Text(format_time(row.start)),
        end_time_utc: Cell::Text(format_time(row.end)),
        asset_search_criteria: text(&row.asset.search.0),
        asset_search_value: text(&row.asset.search.1),
        item_name: Cell::Empty,
        item_mpn: Cell::Empty,
        item_precision: Cell::Empty,
        item_unit: Cell::Empty,
        category_id: text(CATEGORY),
        asset_recon_id: optional_text(row.asset.recon_id.as_deref()),
        tier: Cell::Empty,
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
        let bytes = save_as(&path, |file| write_checked(&group, period, &package, file))?;
        Ok(WorkbookStats {
            rows: group.rows.len() as u64,
            bytes,
        })
    })
    .await
}

/// Checks and builds the group's workbook in memory, for upload.
pub async fn build_group(
    group: Arc<Group>,
    period: Period,
    package: RunPackage,
) -> Result<Vec<u8>, BuildError> {
    on_writer_pool(move || {
        let package = package.get()?;
        write_checked(&group, period, &package, Vec::new())
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

/// Writes every row of the group into `output`, each one checked by the shared rules first.
fn write_checked<W: Write>(
    group: &Group,
    period: Period,
    package: &Package,
    output: W,
) -> Result<W, BuildError> {
    let rules = group_rules(group, period)?;
    let mut validator = RowValidator::new(&rules);
    let mut writer = WorkbookWriter::new(package, output, group.rows.len())?;
    let mut problems = Vec::new();
    // The rows come one at a time, read back from the scratch file when the month spilled.
    for (row, sheet_row) in group.rows.iter().zip(2u32..) {
        let usage_row = usage_row(&row?, period);
        problems.extend(validator.check(sheet_row, &usage_row));
        if problems.is_empty() {
            writer.push(&usage_row)?;
        }
    }
    if !problems.is_empty() {
        return Err(BuildError::Template(problems));
    }
    Ok(writer.finish()?)
}
