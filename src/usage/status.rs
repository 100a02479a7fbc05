//! `connect-payg status`: is a period done, and what needs a person? A read-only look at each
//! period and group in scope — the groups of the source and the groups of the platform's files
//! carrying this program's external ids (supplemental `:late-<n>` files included) — that says,
//! per group, which files it has, in which status, how often rebuilt, how many rows the source
//! and the files hold, and what needs attention.
//!
//! Nothing here is a second copy of filing: the source is read by the report's own collection
//! ([`Reporter::collect`]), files are grouped by [`GroupKey`] and [`Part`] as filing groups
//! them ([`late::by_part`], the replica rule's kept file per part), the rebuild count is the
//! one the rejection handler keeps in the note ([`note::rebuild_count`]), and late records and
//! changes after filing are found by filing's own comparison ([`Filer::compare`]: digests
//! first, the submitted workbooks downloaded only when they differ). What is wrong with a group
//! is decided by one pure function, [`assess`], with a table test.
//!
//! Read-only: a look sends GET requests only (listings, lookups, workbook downloads), never a
//! create, upload, submit, update or delete, and raises no alert.
//!
//! Bad and out-of-scope records belong to no group (a bad record may lack the very fields that
//! place it), so they are counted per period, not per group.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

use crate::connect::models::{FileStatus, UsageFile};
use crate::connect::{ConnectError, Rql};
use crate::usage::filing::cadence::{self, Overlap};
use crate::usage::filing::late::{self, Part};
use crate::usage::filing::{note, Comparison, Filer};
use crate::usage::group::GroupKey;
use crate::usage::period::Period;
use crate::usage::report::{ReportJob, Reporter};

/// What needs a person about a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attention {
    /// The source has records for the group and the platform no file.
    Missing,
    /// A file of the group is `invalid` (the platform refused its upload).
    Invalid,
    /// A file was rejected by the provider and rebuilt `MAX_RESUBMISSIONS` times already: left
    /// for a person.
    RejectedLimitReached,
    /// A file is not (yet, or no longer) with the provider: `draft`, being processed, `ready`,
    /// or rejected and not rebuilt yet.
    NotSubmitted,
    /// The source holds records of the group that no submitted file holds.
    LateRecords,
    /// Filed records the source now says otherwise about, or that left the source.
    ChangedAfterFiling,
    /// Days of the month were filed daily (`REPORT_CADENCE` changed): the month is not filed
    /// monthly for the group, and its other days wait for daily runs.
    CadenceOverlap,
}

impl Attention {
    /// Every kind, in the order they are listed.
    pub const ALL: [Attention; 7] = [
        Attention::Missing,
        Attention::Invalid,
        Attention::RejectedLimitReached,
        Attention::NotSubmitted,
        Attention::LateRecords,
        Attention::ChangedAfterFiling,
        Attention::CadenceOverlap,
    ];

    /// The name in `--json` (stable).
    pub fn code(self) -> &'static str {
        match self {
            Attention::Missing => "missing",
            Attention::Invalid => "invalid",
            Attention::RejectedLimitReached => "rejected_limit_reached",
            Attention::NotSubmitted => "not_submitted",
            Attention::LateRecords => "late_records",
            Attention::ChangedAfterFiling => "changed_after_filing",
            Attention::CadenceOverlap => "cadence_overlap",
        }
    }
}

impl std::fmt::Display for Attention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Attention::Missing => "missing",
            Attention::Invalid => "invalid",
            Attention::RejectedLimitReached => "rejected (limit reached)",
            Attention::NotSubmitted => "not submitted",
            Attention::LateRecords => "late records",
            Attention::ChangedAfterFiling => "changed after filing",
            Attention::CadenceOverlap => "days filed daily",
        })
    }
}

/// What a look found about one group, the input of [`assess`].
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The group's good records in the source now.
    pub rows_in_source: u64,
    /// The group's files of the period: the file every replica keeps, per part.
    pub files: &'a [(Part, &'a UsageFile)],
    /// `MAX_RESUBMISSIONS`.
    pub max_resubmissions: u32,
    /// Records in the source that no submitted file holds (0 when not compared).
    pub late: u64,
    /// Filed records changed or gone since (0 when not compared).
    pub changed: u64,
    /// The group's files of the other cadence overlapping the period.
    pub other_cadence: Option<&'a Overlap>,
}

/// What needs a person about a group, in [`Attention`]'s order, each kind once.
///
/// Rules: no main file while the source has records is `missing`; each file counts by its
/// status — `invalid`; `rejected` after `MAX_RESUBMISSIONS` rebuilds (as its note counts them)
/// is `rejected (limit reached)`, a rejected file below the limit waits for its rebuild and is
/// `not submitted`, as is every other status short of submitted (`pending`, `accepted`,
/// `closed` are done); late and changed records found by the comparison are said as such.
pub fn assess(observed: &Observed<'_>) -> Vec<Attention> {
    let mut found = BTreeSet::new();
    let has_main = observed.files.iter().any(|(part, _)| *part == Part::Main);
    match observed.other_cadence {
        // A day of a month filed monthly is covered by the month's file.
        Some(Overlap::CoveredByMonth(_)) => {}
        Some(Overlap::DaysFiled { .. }) => {
            found.insert(Attention::CadenceOverlap);
        }
        None if !has_main && observed.rows_in_source > 0 => {
            found.insert(Attention::Missing);
        }
        None => {}
    }
    for (_, file) in observed.files {
        match &file.status {
            status if status.is_done() => {}
            FileStatus::Invalid => {
                found.insert(Attention::Invalid);
            }
            FileStatus::Rejected
                if note::rebuild_count(file.note.as_deref()) >= observed.max_resubmissions =>
            {
                found.insert(Attention::RejectedLimitReached);
            }
            _ => {
                found.insert(Attention::NotSubmitted);
            }
        }
    }
    if observed.late > 0 {
        found.insert(Attention::LateRecords);
    }
    if observed.changed > 0 {
        found.insert(Attention::ChangedAfterFiling);
    }
    found.into_iter().collect()
}

/// One file of a group, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FileFacts {
    pub id: String,
    pub external_id: String,
    /// `main`, or `late-<n>` for a supplemental file of late records.
    pub part: String,
    pub status: String,
    /// The provider's note, when it rejected the file.
    pub rejection_note: Option<String>,
    /// The platform's reason, when the file is invalid.
    pub error_detail: Option<String>,
    /// Rebuilds after rejections, as the file's note counts them.
    pub rebuilds: u32,
    /// Records the file was filled with (the digest in its note; else the platform's count of
    /// uploaded records); `None` when neither says.
    pub rows: Option<u64>,
}

impl FileFacts {
    fn of(part: Part, file: &UsageFile) -> FileFacts {
        FileFacts {
            id: file.id.clone(),
            external_id: file.external_id.clone().unwrap_or_default(),
            part: match part {
                Part::Main => "main".into(),
                Part::Late(n) => format!("late-{n}"),
            },
            status: file.status.to_string(),
            rejection_note: (file.status == FileStatus::Rejected)
                .then(|| file.rejection_note.clone())
                .flatten(),
            error_detail: (file.status == FileStatus::Invalid)
                .then(|| file.error_detail.clone())
                .flatten(),
            rebuilds: note::rebuild_count(file.note.as_deref()),
            rows: note::digest_in_note(file.note.as_deref())
                .map(|digest| digest.records())
                .or_else(|| {
                    file.stats
                        .as_ref()
                        .map(|stats| stats.uploaded)
                        .filter(|n| *n > 0)
                }),
        }
    }
}

/// One group of a period.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub contract: String,
    pub product: String,
    pub period: String,
    /// The group's files, main first (the one every replica keeps per part).
    pub files: Vec<FileFacts>,
    /// The main file's status; `None` when there is none.
    pub status: Option<String>,
    /// The provider's note when the main file is rejected.
    pub rejection_note: Option<String>,
    /// The main file's rebuilds after rejections.
    pub rebuilds: u32,
    /// The group's good records in the source now.
    pub rows_in_source: u64,
    /// Records the group's submitted files hold.
    pub rows_filed: u64,
    /// Records in the source no submitted file holds; `None` when not compared (no submitted
    /// main file, or a part still being filed).
    pub late_records: Option<u64>,
    /// Filed records changed or gone since; `None` when not compared.
    pub changed_after_filing: Option<u64>,
    /// What needs a person ([`Attention::code`]s).
    pub attention: Vec<Attention>,
    /// The group's files of the other cadence overlapping the period, said in words (a day
    /// covered by its month's file, or days of the month filed daily); `None` when there are
    /// none.
    pub other_cadence: Option<String>,
    /// Why the group could not be looked at completely (a download failed, …).
    pub error: Option<String>,
}

impl GroupStatus {
    fn needs_attention(&self) -> bool {
        !self.attention.is_empty() || self.error.is_some()
    }
}

/// The source of a period, counted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceCounts {
    pub records_read: u64,
    /// Good records, in groups (all groups, whatever the filters).
    pub good: u64,
    pub bad: u64,
    pub out_of_scope: u64,
}

/// A period's totals over its groups in scope.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub groups: u64,
    pub files: u64,
    pub rows_in_source: u64,
    pub rows_filed: u64,
    pub late_records: u64,
    pub changed_after_filing: u64,
    /// Groups with at least one attention or an error.
    pub groups_needing_attention: u64,
    /// Groups per attention code.
    pub attention: BTreeMap<&'static str, u64>,
}

/// One period.
#[derive(Debug, Clone, Serialize)]
pub struct PeriodStatus {
    pub period: String,
    /// Why the period could not be looked at (the source or the platform unreachable, …).
    pub error: Option<String>,
    pub source: SourceCounts,
    /// The source has no record at all for the period: almost always a broken export.
    pub empty_source: bool,
    pub groups: Vec<GroupStatus>,
    pub totals: Totals,
    /// Anything in the period needs a person.
    pub needs_attention: bool,
}

impl PeriodStatus {
    fn failed(period: Period, error: String) -> PeriodStatus {
        PeriodStatus {
            period: period.to_string(),
            error: Some(error),
            source: SourceCounts::default(),
            empty_source: false,
            groups: Vec::new(),
            totals: Totals::default(),
            needs_attention: true,
        }
    }

    fn conclude(mut self) -> PeriodStatus {
        let mut totals = Totals::default();
        for group in &self.groups {
            totals.groups += 1;
            totals.files += group.files.len() as u64;
            totals.rows_in_source += group.rows_in_source;
            totals.rows_filed += group.rows_filed;
            totals.late_records += group.late_records.unwrap_or(0);
            totals.changed_after_filing += group.changed_after_filing.unwrap_or(0);
            totals.groups_needing_attention += u64::from(group.needs_attention());
            for attention in &group.attention {
                *totals.attention.entry(attention.code()).or_default() += 1;
            }
        }
        self.needs_attention =
            self.error.is_some() || self.empty_source || totals.groups_needing_attention > 0;
        self.totals = totals;
        self
    }
}

/// What `status` found, for people ([`StatusReport::text`]) and programs (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The version of this document's shape; raised when a field changes meaning or goes.
    pub format: u32,
    pub periods: Vec<PeriodStatus>,
    /// Anything in any period needs a person (`status` exits 1).
    pub needs_attention: bool,
}

/// [`StatusReport::format`] now.
pub const STATUS_FORMAT: u32 = 1;

impl StatusReport {
    fn of(periods: Vec<PeriodStatus>) -> StatusReport {
        let needs_attention = periods.iter().any(|p| p.needs_attention);
        StatusReport {
            format: STATUS_FORMAT,
            periods,
            needs_attention,
        }
    }

    /// The document `--json` prints.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the status serialises")
    }

    /// A table per period and its totals, for a terminal.
    pub fn text(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "{:<10} {:<23} {:<17} {:<22} {:<16} {:>8} {:>8} {:>8}  attention",
            "period", "contract", "product", "files", "status", "rebuilds", "source", "filed"
        );
        for period in &self.periods {
            for group in &period.groups {
                let files = group
                    .files
                    .iter()
                    .map(|f| match f.part.as_str() {
                        "main" => f.id.clone(),
                        part => format!("{} ({part})", f.id),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut status = group.status.clone().unwrap_or_else(|| "-".into());
                for file in group.files.iter().filter(|f| f.part != "main") {
                    let _ = write!(status, "; {} {}", file.part, file.status);
                }
                let mut attention: Vec<String> =
                    group.attention.iter().map(ToString::to_string).collect();
                if let Some(late) = group.late_records.filter(|n| *n > 0) {
                    attention.retain(|a| a != "late records");
                    attention.push(format!("late records ({late})"));
                }
                if let Some(changed) = group.changed_after_filing.filter(|n| *n > 0) {
                    attention.retain(|a| a != "changed after filing");
                    attention.push(format!("changed after filing ({changed})"));
                }
                if let Some(error) = &group.error {
                    attention.push(format!("error: {error}"));
                }
                let mut line = format!(
                    "{:<10} {:<23} {:<17} {:<22} {:<16} {:>8} {:>8} {:>8}  {}",
                    group.period,
                    group.contract,
                    group.product,
                    if files.is_empty() { "-".into() } else { files },
                    status,
                    group.rebuilds,
                    group.rows_in_source,
                    group.rows_filed,
                    if attention.is_empty() {
                        "-".into()
                    } else {
                        attention.join(", ")
                    },
                );
                let notes: Vec<String> = group
                    .files
                    .iter()
                    .filter_map(|f| {
                        let note = f.rejection_note.as_ref().or(f.error_detail.as_ref())?;
                        let what = match f.status.as_str() {
                            "rejected" => "rejected by the provider",
                            _ => "invalid",
                        };
                        Some(format!("{} {what}: {note}", f.id))
                    })
                    .collect();
                if !notes.is_empty() {
                    let _ = write!(line, " — {}", notes.join("; "));
                }
                let _ = writeln!(text, "{line}");
            }
            let _ = writeln!(text, "{}", period.totals_line());
        }
        if self.needs_attention {
            let _ = writeln!(text, "needs attention");
        } else {
            let _ = writeln!(text, "nothing needs attention");
        }
        text
    }
}

impl StatusReport {
    /// The totals line of each period and the verdict, for a short ending (the sandbox).
    pub fn brief(&self) -> String {
        let mut text = String::new();
        for period in &self.periods {
            let _ = writeln!(text, "{}", period.totals_line());
        }
        if self.periods.len() != 1 {
            let _ = writeln!(
                text,
                "{}",
                match self.needs_attention {
                    true => "needs attention",
                    false => "nothing needs attention",
                }
            );
        }
        text
    }
}

impl PeriodStatus {
    /// The period's totals in a line.
    fn totals_line(&self) -> String {
        let period = &self.period;
        if let Some(error) = &self.error {
            return format!("{period}: could not be looked at: {error}");
        }
        let t = &self.totals;
        let s = &self.source;
        let mut line = format!(
            "{period}: {} groups, {} files; source {} records (good {}, bad {}, out of scope {}); rows filed {}",
            t.groups, t.files, s.records_read, s.good, s.bad, s.out_of_scope, t.rows_filed
        );
        if t.late_records + t.changed_after_filing > 0 {
            let _ = write!(
                line,
                "; late records {}, changed after filing {}",
                t.late_records, t.changed_after_filing
            );
        }
        if self.empty_source {
            let _ = write!(
                line,
                "; the source has no records for {period}: almost always a broken export"
            );
        }
        if t.groups_needing_attention == 0 {
            if !self.empty_source {
                line.push_str("; nothing needs attention");
            }
        } else {
            let counts: Vec<String> = Attention::ALL
                .iter()
                .filter_map(|kind| Some(format!("{kind} {}", t.attention.get(kind.code())?)))
                .collect();
            let _ = write!(
                line,
                "; {} groups need attention ({})",
                t.groups_needing_attention,
                counts.join(", ")
            );
        }
        line
    }
}

impl Reporter {
    /// The status of `periods` (oldest first), limited to `contracts` and `products` when they
    /// name any. Reads the source and the platform; changes nothing and alerts nobody.
    pub async fn status(
        &self,
        periods: &[Period],
        contracts: &[String],
        products: &[String],
    ) -> StatusReport {
        let mut looked = Vec::with_capacity(periods.len());
        for &period in periods {
            let job = ReportJob {
                contracts: contracts.to_vec(),
                products: products.to_vec(),
                ..ReportJob::on_platform(period)
            };
            looked.push(self.period_status(&job).await.conclude());
        }
        StatusReport::of(looked)
    }

    async fn period_status(&self, job: &ReportJob) -> PeriodStatus {
        let period = job.period;
        let mut collection = match self.collect(period).await {
            Ok(collection) => collection,
            Err(error) => return PeriodStatus::failed(period, error.to_string()),
        };
        let filer = self.filer(job);
        let (mut files, other_cadence) = match files_of_period(&filer).await {
            Ok(files) => files,
            Err(error) => {
                return PeriodStatus::failed(
                    period,
                    format!("listing the period's usage files failed: {error}"),
                )
            }
        };
        let source = SourceCounts {
            records_read: collection.records_read,
            good: collection
                .groups
                .values()
                .map(|g| g.rows.len() as u64)
                .sum(),
            bad: collection.bad.len() as u64,
            out_of_scope: collection.out_of_scope.values().sum(),
        };
        let keys: BTreeSet<GroupKey> = collection
            .groups
            .keys()
            .chain(files.keys())
            .chain(other_cadence.keys())
            .filter(|key| job.wants(key))
            .cloned()
            .collect();
        let mut groups = Vec::with_capacity(keys.len());
        for key in keys {
            let group = collection.groups.remove(&key).map(Arc::new);
            let files = files.remove(&key).unwrap_or_default();
            let kept = late::by_part(&files);
            let main = kept.iter().find(|(part, _)| *part == Part::Main);
            let rows_in_source = group.as_ref().map_or(0, |g| g.rows.len() as u64);
            let (mut late_records, mut changed, mut error) = (None, None, None);
            if main.is_some_and(|(_, file)| file.status.is_done()) {
                match filer.compare(group.as_ref(), &key, &files).await {
                    Ok(Comparison::Unchanged) => (late_records, changed) = (Some(0), Some(0)),
                    Ok(Comparison::Wait(_)) => {}
                    Ok(Comparison::Differs { findings, .. }) => {
                        late_records = Some(findings.late.len() as u64);
                        changed = Some(findings.changed.len() as u64);
                    }
                    Err(failed) => error = Some(failed.to_string()),
                }
            }
            let attention = assess(&Observed {
                rows_in_source,
                files: &kept,
                max_resubmissions: self.settings.max_resubmissions,
                late: late_records.unwrap_or(0),
                changed: changed.unwrap_or(0),
                other_cadence: other_cadence.get(&key),
            });
            let facts: Vec<FileFacts> = kept
                .iter()
                .map(|(part, file)| FileFacts::of(*part, file))
                .collect();
            let rows_filed = kept
                .iter()
                .zip(&facts)
                .filter(|((_, file), _)| file.status.is_done())
                .filter_map(|(_, facts)| facts.rows)
                .sum();
            let main_facts = facts.iter().find(|f| f.part == "main");
            groups.push(GroupStatus {
                contract: key.contract_id.clone(),
                product: key.product_id.clone(),
                period: period.to_string(),
                status: main_facts.map(|f| f.status.clone()),
                rejection_note: main_facts.and_then(|f| f.rejection_note.clone()),
                rebuilds: main_facts.map_or(0, |f| f.rebuilds),
                files: facts,
                rows_in_source,
                rows_filed,
                late_records,
                changed_after_filing: changed,
                attention,
                other_cadence: other_cadence.get(&key).map(|o| o.reason(period)),
                error,
            });
        }
        PeriodStatus {
            period: period.to_string(),
            error: None,
            empty_source: source.records_read == 0,
            source,
            groups,
            totals: Totals::default(),
            needs_attention: false,
        }
    }
}

/// The live files of `filer`'s period that carry this program's external ids (main and
/// supplemental), by group, and what our files of the other cadence overlapping the period
/// mean ([`cadence::overlap`]), in one listing; files of a foreign id are left out.
async fn files_of_period(
    filer: &Filer,
) -> Result<
    (
        BTreeMap<GroupKey, Vec<UsageFile>>,
        BTreeMap<GroupKey, Overlap>,
    ),
    ConnectError,
> {
    let period = filer.period;
    let filter = Rql::all([
        Rql::any([
            Rql::like("external_id", format!("*:{period}")),
            Rql::like("external_id", format!("*:{period}:late-*")),
            cadence::overlap_ids(period),
        ]),
        Rql::ne("status", FileStatus::Deleted),
    ]);
    let files = filer.client.usage_files(filter).await?;
    let other_cadence = cadence::overlap(period, &files);
    let mut by_key: BTreeMap<GroupKey, Vec<UsageFile>> = BTreeMap::new();
    for file in files {
        let Some((key, of, _)) = file
            .external_id
            .as_deref()
            .and_then(late::parse_external_id)
        else {
            continue;
        };
        let same_group = file.product_id() == Some(key.product_id.as_str())
            && file.contract_id() == Some(key.contract_id.as_str());
        if of == period && same_group {
            by_key.entry(key).or_default().push(file);
        }
    }
    Ok((by_key, other_cadence))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::filing::late::Digest;
    use crate::usage::workbook::{Cell, UsageRow};
    use Attention::{ChangedAfterFiling, LateRecords, Missing, NotSubmitted, RejectedLimitReached};
    use FileStatus::*;

    fn file(status: FileStatus, rebuilds: u32) -> UsageFile {
        UsageFile {
            id: "UF-1".into(),
            status,
            note: Some(note::rebuild_note(
                Some("generated by connect-payg"),
                rebuilds,
            )),
            ..UsageFile::default()
        }
    }

    /// (what, rows in the source, the files by part, late, changed, the attention)
    type Case = (
        &'static str,
        u64,
        Vec<(Part, UsageFile)>,
        u64,
        u64,
        Vec<Attention>,
    );

    #[test]
    fn what_needs_a_person_about_a_group() {
        let main = |status, rebuilds| (Part::Main, file(status, rebuilds));
        let late1 = |status| (Part::Late(1), file(status, 0));
        let mut cases: Vec<Case> = vec![
            (
                "no file, records in the source",
                5,
                vec![],
                0,
                0,
                vec![Missing],
            ),
            ("no file, no records: not a group", 0, vec![], 0, 0, vec![]),
            (
                "submitted, unchanged",
                5,
                vec![main(Pending, 0)],
                0,
                0,
                vec![],
            ),
            ("accepted", 5, vec![main(Accepted, 0)], 0, 0, vec![]),
            ("closed", 5, vec![main(Closed, 0)], 0, 0, vec![]),
            (
                "invalid",
                5,
                vec![main(Invalid, 0)],
                0,
                0,
                vec![Attention::Invalid],
            ),
            (
                "rejected below the limit: waits for its rebuild",
                5,
                vec![main(Rejected, 1)],
                0,
                0,
                vec![NotSubmitted],
            ),
            (
                "rejected at the limit",
                5,
                vec![main(Rejected, 2)],
                0,
                0,
                vec![RejectedLimitReached],
            ),
            (
                "rejected past the limit",
                5,
                vec![main(Rejected, 7)],
                0,
                0,
                vec![RejectedLimitReached],
            ),
            (
                "late records",
                6,
                vec![main(Pending, 0)],
                1,
                0,
                vec![LateRecords],
            ),
            (
                "changed after filing",
                5,
                vec![main(Accepted, 0)],
                0,
                2,
                vec![ChangedAfterFiling],
            ),
            (
                "gone from the source: the filed records changed",
                0,
                vec![main(Pending, 0)],
                0,
                5,
                vec![ChangedAfterFiling],
            ),
            (
                "late and changed",
                5,
                vec![main(Pending, 0)],
                1,
                1,
                vec![LateRecords, ChangedAfterFiling],
            ),
            (
                "a supplement left ready",
                6,
                vec![main(Pending, 0), late1(Ready)],
                0,
                0,
                vec![NotSubmitted],
            ),
            (
                "a supplement invalid",
                6,
                vec![main(Pending, 0), late1(Invalid)],
                0,
                0,
                vec![Attention::Invalid],
            ),
            (
                "a supplement submitted",
                6,
                vec![main(Pending, 0), late1(Accepted)],
                0,
                0,
                vec![],
            ),
            (
                "a supplement without its main file",
                6,
                vec![late1(Pending)],
                0,
                0,
                vec![Missing],
            ),
        ];
        for status in [
            Draft,
            Uploading,
            Uploaded,
            Processing,
            Ready,
            Other("x".into()),
        ] {
            cases.push((
                "not with the provider",
                5,
                vec![main(status, 0)],
                0,
                0,
                vec![NotSubmitted],
            ));
        }
        for (what, rows_in_source, files, late, changed, expected) in cases {
            let kept: Vec<(Part, &UsageFile)> = files.iter().map(|(p, f)| (*p, f)).collect();
            let observed = Observed {
                rows_in_source,
                files: &kept,
                max_resubmissions: 2,
                late,
                changed,
                other_cadence: None,
            };
            assert_eq!(assess(&observed), expected, "{what}");
        }
    }

    /// (what, the files by part, the other cadence's files, the attention)
    type OverlapCase<'a> = (
        &'static str,
        &'a [(Part, &'a UsageFile)],
        Option<&'a Overlap>,
        Vec<Attention>,
    );

    #[test]
    fn files_of_the_other_cadence_say_what_is_missing() {
        let covered = Overlap::CoveredByMonth(vec!["UF-9".into()]);
        let days = Overlap::DaysFiled {
            files: vec!["UF-1".into()],
            days: vec![Period::parse("2024-05-02").unwrap()],
        };
        let pending = file(Pending, 0);
        let main = [(Part::Main, &pending)];
        let cases: [OverlapCase; 4] = [
            ("a day covered by its month", &[], Some(&covered), vec![]),
            (
                "a month with days filed daily",
                &[],
                Some(&days),
                vec![Attention::CadenceOverlap],
            ),
            (
                "a month filed monthly beside days filed daily",
                &main,
                Some(&days),
                vec![Attention::CadenceOverlap],
            ),
            ("nothing of the other cadence", &[], None, vec![Missing]),
        ];
        for (what, files, other_cadence, expected) in cases {
            let observed = Observed {
                rows_in_source: 5,
                files,
                max_resubmissions: 2,
                late: 0,
                changed: 0,
                other_cadence,
            };
            assert_eq!(assess(&observed), expected, "{what}");
        }
    }

    #[test]
    fn attention_has_stable_names() {
        let all = Attention::ALL;
        let json: Vec<String> = all
            .iter()
            .map(|a| serde_json::to_string(a).unwrap())
            .collect();
        let codes: Vec<String> = all.iter().map(|a| format!("\"{}\"", a.code())).collect();
        assert_eq!(json, codes);
        let text: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "missing",
                "invalid",
                "rejected (limit reached)",
                "not submitted",
                "late records",
                "changed after filing",
                "days filed daily"
            ]
        );
    }

    #[test]
    fn a_file_shows_its_part_note_and_rows() {
        let row = UsageRow {
            record_id: Cell::text("r-1"),
            quantity: Cell::Number(1.0),
            ..UsageRow::default()
        };
        let digest = Digest::of_rows([&row, &row]);
        let mut rejected = file(Rejected, 2);
        rejected.external_id = Some("CRD-1:PRD-1:2024-02:late-1".into());
        rejected.rejection_note = Some("too high".into());
        rejected.note = Some(note::note_with_digest(rejected.note.as_deref(), digest));
        let facts = FileFacts::of(Part::Late(1), &rejected);
        assert_eq!(facts.part, "late-1");
        assert_eq!(facts.status, "rejected");
        assert_eq!(facts.rejection_note.as_deref(), Some("too high"));
        assert_eq!(facts.rebuilds, 2);
        assert_eq!(facts.rows, Some(2));
        let plain = FileFacts::of(Part::Main, &file(Pending, 0));
        assert_eq!((plain.part.as_str(), plain.rows), ("main", None));
        assert_eq!(plain.rejection_note, None);
    }
}
