//! What a report run did, for the task output, the `report` table and the bad-records CSV.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::usage::filing::{FilingResult, GroupOutcome};
use crate::usage::period::Period;
use crate::usage::record::{BadReason, BadRecord, OutOfScope};

#[derive(Debug, Clone)]
pub struct Summary {
    pub period: Period,
    pub records_read: u64,
    pub groups: Vec<GroupOutcome>,
    pub bad: Vec<BadRecord>,
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

    pub fn submitted(&self) -> usize {
        self.count(|r| matches!(r, FilingResult::Submitted))
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

    /// Rows written to workbooks this run.
    pub fn rows(&self) -> u64 {
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
        let mut counts = BTreeMap::new();
        for bad in &self.bad {
            *counts.entry(bad.reason).or_default() += 1;
        }
        counts
    }

    /// The compact account used as the scheduled task's output and in logs.
    pub fn headline(&self) -> String {
        let mut text = format!(
            "period {}: {} records read; files created {}, submitted {}, skipped {}, failed {}; rows {}; bad records {}",
            self.period,
            self.records_read,
            self.created(),
            self.submitted(),
            self.skipped(),
            self.failed(),
            self.rows(),
            self.bad.len(),
        );
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
        for group in self.groups.iter() {
            if let FilingResult::Failed(reason) = &group.result {
                let _ = write!(text, "\nfailed {}: {reason}", group.key);
            }
        }
        text
    }

    /// A table per group, for people at a terminal.
    pub fn table(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "{:<24} {:<17} {:<22} {:>8}  result",
            "contract", "product", "file", "rows"
        );
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
                "{:<24} {:<17} {:<22} {:>8}  {result}",
                group.key.contract_id,
                group.key.product_id,
                group.file_id.as_deref().unwrap_or("-"),
                group.rows,
            );
        }
        let _ = writeln!(text);
        let _ = writeln!(text, "{}", self.headline());
        text
    }
}

/// Writes `bad-records-<period>.csv` (line, reason, detail) into `dir` and returns its path.
pub async fn write_bad_records(
    dir: &Path,
    summary: &Summary,
) -> std::io::Result<std::path::PathBuf> {
    let path = dir.join(format!("bad-records-{}.csv", summary.period));
    let mut text = String::from("line,reason,detail\n");
    for bad in &summary.bad {
        let detail = bad.detail.replace('"', "\"\"");
        let _ = writeln!(text, "{},{},\"{detail}\"", bad.line, bad.reason);
    }
    let target = path.clone();
    tokio::task::spawn_blocking(move || crate::output::write_bytes(&target, text.as_bytes()))
        .await
        .map_err(|join| std::io::Error::other(join.to_string()))?
        .map_err(|failed| failed.source)?;
    Ok(path)
}
