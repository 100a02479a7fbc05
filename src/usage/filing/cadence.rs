//! A change of `REPORT_CADENCE` must not report the same usage twice.
//!
//! A run looks for a group's files by the external id of its own period, so by itself a day's
//! run would not see the month's file that already holds that day, nor a month's run the daily
//! files of its days. Before filing a period, one listing finds our live files of the other
//! cadence that overlap it ([`overlap_filter`]), and [`overlap`] decides, without I/O, what each
//! group found that way means:
//!
//! * a **day inside a month already filed monthly** (monthly → daily): the day is covered; the
//!   group is skipped, naming the month's file. The month's own late-record checks belong to
//!   monthly runs of that month.
//! * a **month with days already filed daily** (daily → monthly): a monthly file would report
//!   those days again, and a file cannot leave days out of its period, so the group is not
//!   filed; a warning alert names the daily files and says how to finish the month (daily runs
//!   for its remaining days). Nothing is filed twice and nothing is dropped unsaid.
//!
//! Only files this program wrote count (external ids it can parse), of the same contract and
//! product, in any status but `deleted`.

use std::collections::BTreeMap;

use super::late::parse_external_id;
use crate::alert::{Alert, AlertKind, Severity};
use crate::connect::models::{FileStatus, UsageFile};
use crate::connect::{ConnectError, Rql};
use crate::usage::group::GroupKey;
use crate::usage::period::{Cadence, Period};

use super::Filer;

/// What a group's files of the other cadence mean for filing `period`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlap {
    /// The month holding this day was filed monthly: these files (ids).
    CoveredByMonth(Vec<String>),
    /// Days of this month were filed daily: these files (ids) of these days.
    DaysFiled {
        files: Vec<String>,
        days: Vec<Period>,
    },
}

impl Overlap {
    /// Why the group is not filed, for the summary.
    pub fn reason(&self, period: Period) -> String {
        match self {
            Overlap::CoveredByMonth(files) => format!(
                "covered by the monthly file {} of {}",
                files.join(", "),
                month_of(period)
            ),
            Overlap::DaysFiled { files, days } => format!(
                "{} day(s) of {period} were filed daily ({}): a monthly file would report them twice",
                days.len(),
                files.join(", ")
            ),
        }
    }

    /// The alert a person needs, when one is needed.
    pub fn alert(&self, key: &GroupKey, period: Period) -> Option<Alert> {
        let Overlap::DaysFiled { days, .. } = self else {
            return None;
        };
        let listed: Vec<String> = days.iter().map(Period::to_string).collect();
        let alert = Alert::new(
            AlertKind::CadenceOverlap,
            Severity::Warning,
            format!(
                "{period} was not filed monthly for this group: {} of its days already have daily files, \
                 which a monthly file would report again; report its other days with REPORT_CADENCE=daily \
                 (e.g. `report --cadence daily --from {} --to {}`)",
                days.len(),
                period.first_day(),
                period.last_day()
            ),
        )
        .group(&key.contract_id, &key.product_id, period.to_string())
        .details(format!("days filed daily: {}", listed.join(", ")));
        Some(alert)
    }
}

/// The month a day belongs to (a month is its own).
fn month_of(period: Period) -> Period {
    Cadence::Monthly.period_of(period.start())
}

/// Our files of the other cadence that could overlap `period`, by external id: a month's
/// days (`*:2024-05-*`, their supplemental files included), or a day's month (`*:2024-05` and
/// `*:2024-05:late-*`). The period's first listing asks for them beside its own files.
pub fn overlap_ids(period: Period) -> Rql {
    match period.cadence() {
        Cadence::Monthly => Rql::like("external_id", format!("*:{period}-*")),
        Cadence::Daily => {
            let month = month_of(period);
            Rql::any([
                Rql::like("external_id", format!("*:{month}")),
                Rql::like("external_id", format!("*:{month}:late-*")),
            ])
        }
    }
}

/// [`overlap_ids`], live files only: the listing of its own when the period's first listing
/// failed.
fn overlap_filter(period: Period) -> Rql {
    Rql::all([overlap_ids(period), Rql::ne("status", FileStatus::Deleted)])
}

/// Decides, per group, what `files` mean for `period`. Files of foreign external ids, of the
/// same cadence, deleted, not overlapping, or of another contract or product than their
/// external id says are ignored, so any listing may be passed.
pub fn overlap(period: Period, files: &[UsageFile]) -> BTreeMap<GroupKey, Overlap> {
    let mut found: BTreeMap<GroupKey, Overlap> = BTreeMap::new();
    for file in files {
        if file.status == FileStatus::Deleted {
            continue;
        }
        let Some((key, filed, _part)) = file.external_id.as_deref().and_then(parse_external_id)
        else {
            continue;
        };
        let same_group = file.product_id() == Some(key.product_id.as_str())
            && file.contract_id() == Some(key.contract_id.as_str());
        let overlaps =
            filed.first_day() <= period.last_day() && period.first_day() <= filed.last_day();
        if !same_group || !overlaps || filed.cadence() == period.cadence() {
            continue;
        }
        match found.entry(key).or_insert_with(|| match period.cadence() {
            Cadence::Daily => Overlap::CoveredByMonth(Vec::new()),
            Cadence::Monthly => Overlap::DaysFiled {
                files: Vec::new(),
                days: Vec::new(),
            },
        }) {
            Overlap::CoveredByMonth(ids) => ids.push(file.id.clone()),
            Overlap::DaysFiled { files, days } => {
                files.push(file.id.clone());
                if !days.contains(&filed) {
                    days.push(filed);
                }
                days.sort();
            }
        }
    }
    found
}

impl Filer {
    /// Our live files of the other cadence overlapping this period, by group, in a listing
    /// of their own.
    pub async fn other_cadence(&self) -> Result<BTreeMap<GroupKey, Overlap>, ConnectError> {
        let files = self.client.usage_files(overlap_filter(self.period)).await?;
        Ok(overlap(self.period, &files))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: &str, external_id: &str, status: FileStatus) -> UsageFile {
        let (contract, product) = external_id
            .split_once(':')
            .map(|(c, rest)| (c, rest.split(':').next().unwrap_or_default()))
            .unwrap_or_default();
        serde_json::from_value(serde_json::json!({
            "id": id,
            "status": status,
            "external_id": external_id,
            "product": {"id": product},
            "contract": {"id": contract},
        }))
        .expect("a usage file")
    }

    fn key() -> GroupKey {
        GroupKey {
            contract_id: "CRD-1".into(),
            product_id: "PRD-1".into(),
        }
    }

    fn period(text: &str) -> Period {
        Period::parse(text).unwrap()
    }

    #[test]
    fn filters_name_the_other_cadence() {
        assert_eq!(
            overlap_filter(period("2024-05")).to_string(),
            "and(like(external_id,*:2024-05-*),ne(status,deleted))"
        );
        assert_eq!(
            overlap_filter(period("2024-05-07")).to_string(),
            "and(or(like(external_id,*:2024-05),like(external_id,*:2024-05:late-*)),ne(status,deleted))"
        );
    }

    #[test]
    fn what_files_of_the_other_cadence_mean() {
        use FileStatus::*;
        let cases: Vec<(&str, Vec<UsageFile>, Option<Overlap>)> = vec![
            ("2024-05", vec![], None),
            (
                "2024-05",
                vec![
                    file("UF-2", "CRD-1:PRD-1:2024-05-09", Accepted),
                    file("UF-1", "CRD-1:PRD-1:2024-05-02", Pending),
                    file("UF-3", "CRD-1:PRD-1:2024-05-02:late-1", Ready),
                ],
                Some(Overlap::DaysFiled {
                    files: vec!["UF-2".into(), "UF-1".into(), "UF-3".into()],
                    days: vec![period("2024-05-02"), period("2024-05-09")],
                }),
            ),
            (
                "2024-05-07",
                vec![file("UF-9", "CRD-1:PRD-1:2024-05", Accepted)],
                Some(Overlap::CoveredByMonth(vec!["UF-9".into()])),
            ),
            // Deleted, other months, same cadence, foreign ids, mismatched group: ignored.
            (
                "2024-05",
                vec![
                    file("UF-1", "CRD-1:PRD-1:2024-05-02", Deleted),
                    file("UF-2", "CRD-1:PRD-1:2024-06-02", Accepted),
                    file("UF-3", "CRD-1:PRD-1:2024-05", Accepted),
                    file("UF-4", "vendor-own:2024-05-02", Accepted),
                ],
                None,
            ),
            (
                "2024-05-07",
                vec![file("UF-1", "CRD-1:PRD-1:2024-04", Accepted)],
                None,
            ),
        ];
        for (at, files, expected) in cases {
            let found = overlap(period(at), &files);
            assert_eq!(found.get(&key()).cloned(), expected, "{at}: {files:?}");
            assert!(found.len() <= 1, "{at}: {found:?}");
        }
        let mut wrong_group = file("UF-5", "CRD-1:PRD-1:2024-05-03", Accepted);
        wrong_group.contract =
            Some(serde_json::from_value(serde_json::json!({"id": "CRD-2"})).unwrap());
        assert!(overlap(period("2024-05"), &[wrong_group]).is_empty());
    }

    #[test]
    fn only_days_filed_need_a_person() {
        let covered = Overlap::CoveredByMonth(vec!["UF-9".into()]);
        assert_eq!(
            covered.reason(period("2024-05-07")),
            "covered by the monthly file UF-9 of 2024-05"
        );
        assert!(covered.alert(&key(), period("2024-05-07")).is_none());
        let days = Overlap::DaysFiled {
            files: vec!["UF-1".into()],
            days: vec![period("2024-05-02")],
        };
        let alert = days.alert(&key(), period("2024-05")).expect("an alert");
        assert_eq!(alert.kind, AlertKind::CadenceOverlap);
        assert!(
            alert.message.contains("--from 2024-05-01 --to 2024-05-31"),
            "{}",
            alert.message
        );
    }
}
