//! Saving a usage workbook as a file: written beside its final name and renamed over it once
//! complete, so nobody ever uploads half a file (the bytes themselves come from the shared
//! crate's streaming writer).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use payg_shared::workbook::{Package, UsageRow, WorkbookError, WorkbookStats, WorkbookWriter};

/// Writes `rows` to a new workbook at `path` (replacing any file there).
pub fn write_workbook(
    path: &Path,
    rows: impl ExactSizeIterator<Item = UsageRow>,
) -> Result<WorkbookStats, WorkbookError> {
    let records = rows.len();
    let package = Package::new()?;
    let bytes = save_as(path, |file| {
        let mut writer = WorkbookWriter::new(&package, file, records)?;
        for row in rows {
            writer.push(&row)?;
        }
        writer.finish()
    })?;
    Ok(WorkbookStats {
        rows: records as u64,
        bytes,
    })
}

/// Saves what `write` writes as `path`: a new private file beside it, renamed over it once
/// complete, removed if anything fails (see `crate::output::replace_with`). Returns the size.
pub fn save_as<E: From<WorkbookError>>(
    path: &Path,
    write: impl FnOnce(BufWriter<File>) -> Result<BufWriter<File>, E>,
) -> Result<u64, E> {
    crate::output::replace_with(path, write, |failed| {
        WorkbookError::Io {
            path: failed.path,
            source: failed.source,
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use payg_shared::workbook::{read_workbook, Cell};

    use super::*;

    /// Writing checks no rules: a row needs only a value to be told apart.
    fn row(n: u32) -> UsageRow {
        UsageRow {
            asset_search_value: Cell::text(format!("AS-{n}")),
            quantity: Cell::Number(f64::from(n)),
            ..UsageRow::default()
        }
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
    /// `cargo test --release --lib usage::workbook::save::tests::a_million_rows_write -- --ignored`.
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
}
