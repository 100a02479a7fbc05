//! `connect-payg validate FILE.xlsx… [--period YYYY-MM]`: the workbook rules applied offline,
//! and the report printed.
//!
//! The same validator the simulator and the pre-upload check use ([`crate::usage::workbook`]);
//! this module only opens each file, runs it with what can be known offline, and renders every
//! problem plus the checks that needed the platform and were skipped. Every file named is
//! checked, whatever the others hold: a file that cannot be read is said (naming it) and the
//! rest go on. Exit 2 when any file could not be read at all (a wrong argument), else 1 when
//! any workbook has a problem.

use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::{CliError, Outcome};
use crate::usage::period::Period;
use crate::usage::workbook::{inspect_workbook_reader, Problem, Rules};

/// Checks each file in turn, printing its report; the outcome is as the module says.
pub async fn validate(files: Vec<PathBuf>, period: Option<String>) -> Result<Outcome, CliError> {
    let period = period
        .as_deref()
        .map(Period::parse)
        .transpose()
        .map_err(|reason| CliError::Usage(format!("--period: {reason}")))?;
    let mut unreadable = Vec::new();
    let mut problems = false;
    for file in files {
        let report = tokio::task::spawn_blocking(move || validate_file(&file, period))
            .await
            .map_err(|e| CliError::Other(anyhow::anyhow!("validation stopped: {e}")))?;
        match report {
            Ok(report) => {
                print!("{report}");
                problems |= !report.is_valid();
            }
            Err(error) => {
                println!("{error}");
                unreadable.push(error.to_string());
            }
        }
    }
    if !unreadable.is_empty() {
        return Err(CliError::Usage(unreadable.join("; ")));
    }
    Ok(match problems {
        true => Outcome::WorkFailed,
        false => Outcome::Success,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: not a file (a directory?); give the path of an .xlsx workbook")]
    NotAFile { path: PathBuf },
}

/// Most problems a report lists; the rest are counted ("… and N more problems").
pub const LISTED_PROBLEMS: usize = 1000;

/// What `validate` found in one workbook.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationReport {
    pub path: PathBuf,
    pub period: Option<Period>,
    /// Data rows read, valid or not.
    pub records: u64,
    pub problems: Vec<Problem>,
    /// Rules that need the platform's data and were not applied.
    pub skipped_checks: Vec<&'static str>,
}

impl ValidationReport {
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Validates the workbook at `path` with every rule that can be applied offline; `period` adds
/// the reporting-month bounds. Blocking file and CPU work: async callers use `spawn_blocking`.
pub fn validate_file(
    path: &Path,
    period: Option<Period>,
) -> Result<ValidationReport, ValidateError> {
    let file = File::open(path).map_err(|source| ValidateError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // A directory opens on Unix, and then reads fail with a confusing message.
    if file.metadata().is_ok_and(|metadata| !metadata.is_file()) {
        return Err(ValidateError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let rules = Rules::offline(period);
    // Streamed from the file: a million-row workbook is never held in memory whole.
    let inspection = inspect_workbook_reader(BufReader::new(file), &rules);
    Ok(ValidationReport {
        path: path.to_path_buf(),
        period,
        records: inspection.records,
        problems: inspection.problems,
        skipped_checks: rules.skipped_checks(),
    })
}

/// Every problem on its own line (at most [`LISTED_PROBLEMS`], then how many more), then the
/// skipped checks, then a one-line verdict.
impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in self.problems.iter().take(LISTED_PROBLEMS) {
            writeln!(f, "{problem}")?;
        }
        if let Some(more) = self.problems.len().checked_sub(LISTED_PROBLEMS) {
            if more > 0 {
                let noun = if more == 1 { "problem" } else { "problems" };
                writeln!(f, "… and {more} more {noun} (not listed)")?;
            }
        }
        if !self.skipped_checks.is_empty() {
            writeln!(f, "Not checked offline (needs the platform):")?;
            for check in &self.skipped_checks {
                writeln!(f, "  - {check}")?;
            }
        }
        let path = self.path.display();
        let records = plural(self.records, "usage record");
        let within = match self.period {
            Some(period) => format!(", period {period}"),
            None => String::new(),
        };
        match self.problems.len() {
            0 => writeln!(f, "VALID: {path}: {records}{within}, no problems found"),
            n => {
                let problems = plural(n as u64, "problem");
                writeln!(f, "INVALID: {path}: {problems} in {records}{within}")
            }
        }
    }
}

fn plural(count: u64, noun: &str) -> String {
    match count {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::workbook::{write_workbook, Cell, UsageRow};

    fn problem(row: u32, column: &'static str, message: &str) -> Problem {
        Problem {
            sheet: "usage_records".into(),
            row: Some(row),
            column: Some(column),
            message: message.into(),
        }
    }

    #[test]
    fn a_report_lists_problems_skipped_checks_and_a_verdict() {
        let report = ValidationReport {
            path: PathBuf::from("usage.xlsx"),
            period: None,
            records: 12,
            problems: vec![problem(12, "quantity", "-1 is negative")],
            skipped_checks: Rules::offline(None).skipped_checks(),
        };
        let text = report.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "usage_records row 12, column quantity: -1 is negative"
        );
        assert_eq!(lines[1], "Not checked offline (needs the platform):");
        assert_eq!(lines.len(), 2 + 3 + 1);
        assert_eq!(
            lines.last(),
            Some(&"INVALID: usage.xlsx: 1 problem in 12 usage records")
        );
        assert!(!report.is_valid());
    }

    #[test]
    fn a_valid_report_says_so_in_one_line() {
        let report = ValidationReport {
            path: PathBuf::from("usage.xlsx"),
            period: Some(Period::parse("2024-01").unwrap()),
            records: 1,
            problems: vec![],
            skipped_checks: vec![],
        };
        assert!(report.is_valid());
        assert_eq!(
            report.to_string(),
            "VALID: usage.xlsx: 1 usage record, period 2024-01, no problems found\n"
        );
    }

    fn january_row(record_id: &str) -> UsageRow {
        UsageRow {
            record_id: Cell::text(record_id),
            item_search_criteria: Cell::text("item.mpn"),
            item_search_value: Cell::text("MPN-A"),
            quantity: Cell::Number(2.0),
            start_time_utc: Cell::text("2024-01-01 00:00:00"),
            end_time_utc: Cell::text("2024-01-31 23:59:59"),
            asset_search_criteria: Cell::text("asset.id"),
            asset_search_value: Cell::text("AS-1"),
            ..UsageRow::default()
        }
    }

    #[test]
    fn a_good_workbook_is_valid_and_the_period_is_checked_when_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.xlsx");
        let rows = [january_row("R-1"), january_row("R-2")];
        write_workbook(&path, rows.into_iter()).unwrap();

        let report = validate_file(&path, None).unwrap();
        assert!(report.is_valid(), "{report}");
        assert_eq!((report.records, report.skipped_checks.len()), (2, 3));

        let report = validate_file(&path, Some(Period::parse("2024-02").unwrap())).unwrap();
        assert_eq!(report.skipped_checks.len(), 2);
        let located: Vec<_> = report.problems.iter().map(|p| (p.row, p.column)).collect();
        assert_eq!(
            located,
            [
                (Some(2), Some("start_time_utc")),
                (Some(3), Some("start_time_utc"))
            ]
        );
        let verdict = format!(
            "INVALID: {}: 2 problems in 2 usage records, period 2024-02\n",
            path.display()
        );
        assert!(report.to_string().ends_with(&verdict), "{report}");
    }

    #[test]
    fn a_file_that_is_no_workbook_is_a_problem_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.xlsx");
        std::fs::write(&path, "record_id,quantity\nR-1,3\n").unwrap();
        let report = validate_file(&path, None).unwrap();
        assert_eq!(report.problems.len(), 1);
        assert!(report.problems[0]
            .to_string()
            .starts_with("workbook: not an xlsx workbook"));
    }

    #[test]
    fn a_long_list_of_problems_is_cut_and_counted() {
        let report = ValidationReport {
            path: PathBuf::from("usage.xlsx"),
            period: None,
            records: 5000,
            problems: (2..LISTED_PROBLEMS as u32 + 5)
                .map(|row| problem(row, "quantity", "-1 is negative"))
                .collect(),
            skipped_checks: vec![],
        };
        let text = report.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), LISTED_PROBLEMS + 2);
        assert_eq!(lines[LISTED_PROBLEMS], "… and 3 more problems (not listed)");
        assert!(
            lines[LISTED_PROBLEMS + 1].contains("1003 problems"),
            "{text}"
        );
    }

    #[test]
    fn a_directory_is_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let error = validate_file(dir.path(), None).unwrap_err();
        assert!(matches!(error, ValidateError::NotAFile { .. }), "{error}");
        assert!(error.to_string().contains("not a file"), "{error}");
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let error = validate_file(Path::new("/nonexistent/usage.xlsx"), None).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot read /nonexistent/usage.xlsx: "),
            "{error}"
        );
    }
}
