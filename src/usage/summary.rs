//! What a report run did, for the task output, the `report` table and the bad-records CSV:
//! a [`Summary`] per period, and the [`Ledger`] of a run over several periods.
//!
//! The headline's counters agree with the table: `submitted` counts every file submitted by
//! this run (new ones too), `rows` is the rows of the groups the table lists (whatever their
//! result; `uploaded this run` says how many went out now), and a filter that matched nothing
//! or a source without a single record is said in words, never shown as an empty success.
//! A ledger's first line names every period and what became of it, so the task result says
//! which period failed even when the platform cuts the message short.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::usage::filing::{FilingResult, GroupOutcome};
use crate::usage::period::Period;
use crate::usage::record::{BadReason, BadRecord, BadRecords, OutOfScope};
use crate::usage::report::ReportError;

#[derive(Debug, Clone)]
pub struct Summary {
    pub period: Period,
    pub records_read: u64,
    pub groups: Vec<GroupOutcome>,
    /// `--contract`/`--product` filters that selected no group, each said in a sentence.
    pub unmatched: Vec<String>,
    /// All bad records counted; the first ones held, every one in the bad-records CSV.
    pub bad: BadRecords,
    pub out_of_scope: BTreeMap<OutOfScope, u64>,
}

impl Summary {
    fn count(&self, wanted: fn(&FilingResult) -> bool) -> usize {
        self.groups.iter().filter(|g| wanted(&g.result)).count()
    }

    pub fn created(&self) -> usize {
        self.count(|r| matches!(r, FilingResult::Created | FilingResult::Uploaded))
    }

    /// Uploaded here, left for the file's `ready` event to submit.
    pub fn uploaded(&self) -> usize {
        self.count(|r| matches!(r, FilingResult::Uploaded))
    }

    /// Submitted by this run: new files and existing ready ones.
    pub fn submitted(&self) -> usize {
        self.count(|r| matches!(r, FilingResult::Created | FilingResult::Submitted))
    }

    /// This run created, uploaded or submitted at least one file of the month.
    pub fn filed_any(&self) -> bool {
        self.created() + self.submitted() > 0
    }

    /// The source held no record at all for the month (almost always a broken export).
    pub fn empty_source(&self) -> bool {
        self.records_read == 0
    }

    pub fn skipped(&self) -> usize {
        self.count(|r| matches!(r, FilingResult::Skipped(_)))
    }

    pub fn dry_run(&self) -> usize {
        self.count(|r| matches!(r, FilingResult::DryRun))
    }

    pub fn failed(&self) -> usize {
        self.count(|r| matches!(r, FilingResult::Failed(_)))
    }

    /// Rows of the groups listed, as the table shows them.
    pub fn rows(&self) -> u64 {
        self.groups.iter().map(|g| g.rows).sum()
    }

    /// Rows written to workbooks this run.
    pub fn rows_written(&self) -> u64 {
        self.groups
            .iter()
            .filter(|g| {
                matches!(
                    g.result,
                    FilingResult::Created | FilingResult::Uploaded | FilingResult::DryRun
                )
            })
            .map(|g| g.rows)
            .sum()
    }

    pub fn bad_by_reason(&self) -> BTreeMap<BadReason, u64> {
        self.bad.by_reason()
    }

    /// The compact account used as the scheduled task's output and in logs.
    pub fn headline(&self) -> String {
        let mut text = format!(
            "period {}: {} records read; files created {}, submitted {}, skipped {}, failed {}; rows {} (written this run {}); bad records {}",
            self.period,
            self.records_read,
            self.created(),
            self.submitted(),
            self.skipped(),
            self.failed(),
            self.rows(),
            self.rows_written(),
            self.bad.len(),
        );
        if self.empty_source() {
            let _ = write!(
                text,
                "; the usage source has no records for {}: almost always a broken export, so nothing was filed",
                self.period
            );
        }
        let bad = self.bad_by_reason();
        if !bad.is_empty() {
            let parts: Vec<String> = bad.iter().map(|(r, n)| format!("{r} {n}")).collect();
            let _ = write!(text, " ({})", parts.join(", "));
        }
        let out: u64 = self.out_of_scope.values().sum();
        let _ = write!(text, "; out of scope {out}");
        if out > 0 {
            let parts: Vec<String> = self
                .out_of_scope
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            let _ = write!(text, " ({})", parts.join(", "));
        }
        let (late, changed) = self
            .groups
            .iter()
            .flat_map(|g| &g.late)
            .fold((0, 0), |(l, c), r| (l + r.late, c + r.changed));
        if late + changed > 0 {
            let _ = write!(
                text,
                "; late records {late}, changed after filing {changed}"
            );
        }
        if self.uploaded() > 0 {
            let _ = write!(
                text,
                "; {} uploaded files are submitted on their ready events",
                self.uploaded()
            );
        }
        if self.dry_run() > 0 {
            let _ = write!(text, "; dry run: {} workbooks written", self.dry_run());
        }
        for unmatched in &self.unmatched {
            let _ = write!(text, "\n{unmatched}");
        }
        for group in self.groups.iter() {
            if let FilingResult::Failed(reason) = &group.result {
                let _ = write!(text, "\nfailed {}: {reason}", group.key);
            }
        }
        text
    }

    /// A table per group, for people at a terminal.
    pub fn table(&self) -> String {
        let mut text = table_header();
        text.push_str(&self.table_rows());
        let _ = writeln!(text);
        let _ = writeln!(text, "{}", self.headline());
        text
    }

    /// One line per group, under [`table_header`].
    fn table_rows(&self) -> String {
        let mut text = String::new();
        for group in &self.groups {
            let result = match &group.result {
                FilingResult::Created => "created and submitted".to_string(),
                FilingResult::Uploaded => "created; submitted on its ready event".to_string(),
                FilingResult::Submitted => "submitted".to_string(),
                FilingResult::Skipped(why) => format!("skipped: {why}"),
                FilingResult::DryRun => format!(
                    "written to {}",
                    group
                        .workbook
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ),
                FilingResult::Failed(why) => format!("FAILED: {why}"),
            };
            let _ = writeln!(
                text,
                "{:<10} {:<24} {:<17} {:<22} {:>8}  {result}",
                self.period.to_string(),
                group.key.contract_id,
                group.key.product_id,
                group.file_id.as_deref().unwrap_or("-"),
                group.rows,
            );
        }
        text
    }

    /// What became of the period, in a word or two, for a ledger's first line.
    fn verdict(&self) -> String {
        if self.empty_source() {
            "empty source".into()
        } else if self.failed() > 0 {
            match self.failed() {
                1 => "1 group failed".into(),
                n => format!("{n} groups failed"),
            }
        } else if self.dry_run() > 0 {
            "dry run".into()
        } else if self.filed_any() {
            "filed".into()
        } else if self.groups.is_empty() {
            "no group".into()
        } else {
            "unchanged".into()
        }
    }
}

/// The columns of the `report` table.
fn table_header() -> String {
    format!(
        "{:<10} {:<24} {:<17} {:<22} {:>8}  result\n",
        "period", "contract", "product", "file", "rows"
    )
}

/// One period of a run: its summary, or why it could not be reported at all (the source or
/// Connect unreachable, a setting missing).
#[derive(Debug)]
pub struct PeriodReport {
    pub period: Period,
    pub result: Result<Summary, ReportError>,
}

/// A run over several periods, oldest first: each was filed as a run of that period alone.
#[derive(Debug, Default)]
pub struct Ledger {
    pub periods: Vec<PeriodReport>,
}

impl Ledger {
    /// The summaries of the periods that were reported.
    pub fn summaries(&self) -> impl Iterator<Item = &Summary> {
        self.periods.iter().filter_map(|p| p.result.as_ref().ok())
    }

    /// The summary of `period`, when it was reported.
    pub fn summary(&self, period: Period) -> Option<&Summary> {
        self.summaries().find(|s| s.period == period)
    }

    /// The periods that could not be reported at all, with why.
    pub fn errors(&self) -> impl Iterator<Item = (Period, &ReportError)> {
        self.periods
            .iter()
            .filter_map(|p| Some((p.period, p.result.as_ref().err()?)))
    }

    fn sum(&self, count: fn(&Summary) -> usize) -> usize {
        self.summaries().map(count).sum()
    }

    pub fn created(&self) -> usize {
        self.sum(Summary::created)
    }

    pub fn submitted(&self) -> usize {
        self.sum(Summary::submitted)
    }

    pub fn skipped(&self) -> usize {
        self.sum(Summary::skipped)
    }

    /// Groups that failed, in all periods.
    pub fn failed(&self) -> usize {
        self.sum(Summary::failed)
    }

    /// The first line: every period and what became of it.
    pub fn overview(&self) -> String {
        let periods: Vec<String> = self
            .periods
            .iter()
            .map(|report| match &report.result {
                Ok(summary) => format!("{} {}", report.period, summary.verdict()),
                Err(_) => format!("{} not reported", report.period),
            })
            .collect();
        let noun = match periods.len() {
            1 => "period",
            _ => "periods, oldest first",
        };
        format!("{} {noun}: {}", periods.len(), periods.join(", "))
    }

    /// The account used as the scheduled task's output: the overview, then each period's
    /// headline (or why it was not reported).
    pub fn headline(&self) -> String {
        let mut text = self.overview();
        for report in &self.periods {
            match &report.result {
                Ok(summary) => {
                    let _ = write!(text, "\n{}", summary.headline());
                }
                Err(error) => {
                    let _ = write!(text, "\nperiod {}: not reported: {error}", report.period);
                }
            }
        }
        text
    }

    /// One table of every period's groups, for people at a terminal, then the headline.
    pub fn table(&self) -> String {
        let mut text = table_header();
        for summary in self.summaries() {
            text.push_str(&summary.table_rows());
        }
        let _ = writeln!(text);
        let _ = writeln!(text, "{}", self.headline());
        text
    }
}

/// Writes `bad-records-<period>.csv` (line, JSON array index, record_id, reason, detail) into
/// `dir` and returns its path: every bad record, copied from the run's spill as it is read back.
pub async fn write_bad_records(
    dir: &Path,
    summary: &Summary,
) -> std::io::Result<std::path::PathBuf> {
    let path = dir.join(format!("bad-records-{}.csv", summary.period));
    let bad = summary.bad.clone();
    let period = summary.period;
    let target = path.clone();
    // Streamed from the spill into a private file that replaces any earlier one whole.
    tokio::task::spawn_blocking(move || {
        crate::output::replace_with(
            &target,
            |mut out| {
                out.write_all(BAD_RECORDS_HEADER.as_bytes())?;
                bad.spilled(|bad| out.write_all(bad_record_row(&bad, period).as_bytes()))?;
                Ok(out)
            },
            |failed| failed.source,
        )
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(path)
}

/// The bad-records CSV's columns.
const BAD_RECORDS_HEADER: &str = "line,index,record_id,reason,detail,object\n";

/// One bad record as a CSV row: `index` is the JSON array element (empty for other sources),
/// `record_id` is empty for a row that could not be read at all, `object` names the object of a
/// multi-object source the line is in (empty for other sources).
fn bad_record_row(bad: &BadRecord, period: Period) -> String {
    let quoted = |text: &str| format!("\"{}\"", text.replace('"', "\"\""));
    let index = bad.element.map(|i| i.to_string()).unwrap_or_default();
    let record_id = bad
        .record_id
        .as_ref()
        .map(|id| quoted(&id.spelled(period)))
        .unwrap_or_default();
    let object = bad.object.as_deref().map(quoted).unwrap_or_default();
    format!(
        "{},{index},{record_id},{},{},{object}\n",
        bad.line,
        bad.reason,
        quoted(&bad.detail)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::filing::GroupOutcome;
    use crate::usage::group::GroupKey;
    use crate::usage::record::{BadReason, RawRecord, RecordChecker, RecordId};

    fn outcome(contract: &str, rows: u64, result: FilingResult) -> GroupOutcome {
        GroupOutcome {
            key: GroupKey {
                contract_id: contract.into(),
                product_id: "PRD-1".into(),
            },
            file_id: Some(format!("UF-{contract}")),
            rows,
            result,
            workbook: None,
            error_detail: None,
            awaiting_ready: false,
            transient: false,
            part: Default::default(),
            late: None,
        }
    }

    fn summary(groups: Vec<GroupOutcome>) -> Summary {
        Summary {
            period: Period::parse("2024-02").unwrap(),
            records_read: 10,
            groups,
            unmatched: Vec::new(),
            bad: BadRecords::default(),
            out_of_scope: BTreeMap::new(),
        }
    }

    #[test]
    fn counters_agree_with_the_table() {
        // (results, created, submitted, skipped, rows, rows written)
        let skipped = || FilingResult::Skipped("already pending".into());
        for (results, created, submitted, skipped_n, rows, written) in [
            (
                vec![FilingResult::Created, FilingResult::Created],
                2,
                2,
                0,
                7,
                7,
            ),
            (vec![skipped(), skipped()], 0, 0, 2, 7, 0),
            (
                vec![FilingResult::Uploaded, FilingResult::Submitted],
                1,
                1,
                0,
                7,
                3,
            ),
            (vec![FilingResult::Created, skipped()], 1, 1, 1, 7, 3),
        ] {
            let groups = results
                .into_iter()
                .zip([3, 4])
                .enumerate()
                .map(|(i, (result, rows))| outcome(&format!("CRD-{i}"), rows, result))
                .collect();
            let summary = summary(groups);
            let what = summary.headline();
            assert_eq!(summary.created(), created, "{what}");
            assert_eq!(summary.submitted(), submitted, "{what}");
            assert_eq!(summary.skipped(), skipped_n, "{what}");
            assert_eq!(summary.rows(), rows, "{what}");
            assert_eq!(summary.rows_written(), written, "{what}");
            assert!(what.contains(&format!("submitted {submitted},")), "{what}");
            assert!(
                what.contains(&format!("rows {rows} (written this run {written})")),
                "{what}"
            );
        }
    }

    #[test]
    fn an_empty_source_and_unmatched_filters_are_said() {
        let mut empty = summary(Vec::new());
        empty.records_read = 0;
        assert!(empty.empty_source());
        assert!(empty
            .headline()
            .contains("the usage source has no records for 2024-02"));
        let mut unmatched = summary(Vec::new());
        unmatched
            .unmatched
            .push("contract CRD-NOPE is not an active distribution contract".into());
        assert!(!unmatched.empty_source());
        assert!(unmatched
            .table()
            .contains("contract CRD-NOPE is not an active distribution contract"));
    }

    #[test]
    fn bad_records_csv_names_each_record_id() {
        let period = Period::parse("2024-02").unwrap();
        let mut checker = RecordChecker::new(period);
        let raw = |id: Option<&str>, quantity: &str| {
            let mut raw = RawRecord {
                line: 2,
                ..RawRecord::default()
            };
            for (name, value) in [
                ("subscription_id", Some("AS-1")),
                ("item_mpn", Some("MPN-1")),
                ("quantity", Some(quantity)),
                ("start_time_utc", Some("2024-02-01 00:00:00")),
                ("end_time_utc", Some("2024-02-02 00:00:00")),
                ("record_id", id),
            ] {
                raw.set(name, value.map(str::to_string));
            }
            raw
        };
        let vendor = checker.check(raw(Some("r-1"), "-1")).unwrap_err();
        let derived = checker.check(raw(None, "-1")).unwrap_err();
        assert_eq!(vendor.record_id, Some(RecordId::Vendor("r-1".into())));
        assert!(matches!(
            derived.record_id,
            Some(RecordId::Derived { occurrence: 1, .. })
        ));
        // Derived from the content: the same on every run.
        let again = RecordChecker::new(period)
            .check(raw(None, "-1"))
            .unwrap_err();
        assert_eq!(again.record_id, derived.record_id);
        let unreadable =
            BadRecord::new(9, BadReason::UnparsableField, "not \"JSON\"").in_element(Some(17));
        let in_part = BadRecord::new(3, BadReason::MissingField, "quantity is missing")
            .in_object(Some("s3://b/usage/part-2.jsonl".into()));
        let csv: String = [&vendor, &derived, &unreadable, &in_part]
            .into_iter()
            .map(|bad| bad_record_row(bad, period))
            .collect();
        let derived_id = derived.record_id.unwrap().spelled(period);
        assert!(derived_id.starts_with("PAYG-202402-"));
        assert_eq!(
            csv,
            format!(
                "2,,\"r-1\",negative_quantity,\"quantity -1 is negative\",\n\
                 2,,\"{derived_id}\",negative_quantity,\"quantity -1 is negative\",\n\
                 9,17,,unparsable_field,\"not \"\"JSON\"\"\",\n\
                 3,,,missing_field,\"quantity is missing\",\"s3://b/usage/part-2.jsonl\"\n"
            )
        );
    }
}
