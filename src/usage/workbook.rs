//! Writing usage workbooks: the `usage_records` sheet of the template, one row per record.
//!
//! Rows stream through rust_xlsxwriter's constant-memory mode, which flushes each finished row
//! to a scratch file, so memory stays flat however many records a file holds. The scratch file
//! sits beside the output (not in a possibly RAM-backed /tmp), and the workbook appears under
//! its final name only once complete, so nobody ever uploads half a file.
//!
//! Writing is blocking CPU and file work: async callers use `spawn_blocking`.

use std::path::{Path, PathBuf};

use rust_xlsxwriter::{Workbook, Worksheet, XlsxError};

use crate::usage::template::{Cell, UsageRow, COLUMNS, SHEET};

/// Data rows a worksheet can hold: Excel's 1,048,576 rows minus the header.
pub const MAX_RECORDS: u32 = 1_048_575;

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
    #[error("cannot write the workbook: {0}")]
    Xlsx(#[from] XlsxError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes `rows` to a new workbook at `path` (replacing any file there).
pub fn write_workbook(
    path: &Path,
    rows: impl Iterator<Item = UsageRow>,
) -> Result<WorkbookStats, WorkbookError> {
    let mut writer = WorkbookWriter::new(scratch_dir_for(path))?;
    for row in rows {
        writer.push(row)?;
    }
    writer.finish(path)
}

/// The workbook as bytes, for small workbooks (tests, the simulator); large ones go to a file.
pub fn workbook_bytes(rows: impl IntoIterator<Item = UsageRow>) -> Result<Vec<u8>, WorkbookError> {
    let mut writer = WorkbookWriter::new(&std::env::temp_dir())?;
    for row in rows {
        writer.push(row)?;
    }
    writer.finish_to_bytes()
}

/// A usage workbook being written, one row at a time.
pub struct WorkbookWriter {
    workbook: Workbook,
    sheet: Worksheet,
    records: u32,
}

impl WorkbookWriter {
    /// Starts a workbook whose rows are buffered in an (unnamed) scratch file in `scratch_dir`.
    pub fn new(scratch_dir: &Path) -> Result<Self, WorkbookError> {
        let mut workbook = Workbook::new();
        workbook
            .set_tempdir(scratch_dir)
            .map_err(|error| match error {
                XlsxError::IoError(source) => WorkbookError::Io {
                    path: scratch_dir.to_path_buf(),
                    source,
                },
                other => WorkbookError::Xlsx(other),
            })?;
        // Level 1 deflates several times faster than the default 6 for files about 1.5× larger:
        // at a million rows compression would otherwise dominate the whole write.
        workbook.set_zip_compression_level(1);
        let mut sheet = workbook.new_worksheet_with_constant_memory()?;
        sheet.set_name(SHEET)?;
        for (column, name) in (0u16..).zip(COLUMNS) {
            sheet.write_string(0, column, name)?;
        }
        Ok(WorkbookWriter {
            workbook,
            sheet,
            records: 0,
        })
    }

    /// Appends one record: text cells as text, numbers as numbers, empty cells not at all. The
    /// row's strings move into the sheet rather than being copied there.
    pub fn push(&mut self, row: UsageRow) -> Result<(), WorkbookError> {
        if self.records == MAX_RECORDS {
            return Err(WorkbookError::TooManyRows);
        }
        let sheet_row = self.records + 1;
        for ((column, name), cell) in (0u16..).zip(COLUMNS).zip(row.into_cells()) {
            match cell {
                Cell::Empty => {}
                Cell::Text(text) if text.is_empty() => {}
                Cell::Text(text) => {
                    self.sheet.write_string(sheet_row, column, text)?;
                }
                Cell::Number(number) if !number.is_finite() => {
                    return Err(WorkbookError::NotFinite {
                        record: u64::from(sheet_row),
                        column: name,
                    });
                }
                Cell::Number(number) => {
                    self.sheet.write_number(sheet_row, column, number)?;
                }
            }
        }
        self.records += 1;
        Ok(())
    }

    /// Saves the workbook at `path`: written under a temporary name beside it, then renamed.
    pub fn finish(self, path: &Path) -> Result<WorkbookStats, WorkbookError> {
        let io_error = |source| WorkbookError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let records = u64::from(self.records);
        let mut workbook = self.into_workbook();
        if let Err(error) = workbook.save(&partial) {
            let _ = std::fs::remove_file(&partial);
            return Err(error.into());
        }
        if let Err(error) = std::fs::rename(&partial, path) {
            let _ = std::fs::remove_file(&partial);
            return Err(io_error(error));
        }
        let bytes = std::fs::metadata(path).map_err(io_error)?.len();
        Ok(WorkbookStats {
            rows: records,
            bytes,
        })
    }

    pub fn finish_to_bytes(self) -> Result<Vec<u8>, WorkbookError> {
        Ok(self.into_workbook().save_to_buffer()?)
    }

    fn into_workbook(self) -> Workbook {
        let mut workbook = self.workbook;
        workbook.push_worksheet(self.sheet);
        workbook
    }
}

/// The directory `path` will be written in (`.` for a bare file name).
fn scratch_dir_for(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

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
