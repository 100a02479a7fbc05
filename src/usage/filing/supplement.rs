//! The executor of the late look: a run that finds a group's main file submitted compares the
//! group's files with the source as [`late`] decides — digests first, downloads only when they
//! differ — and carries out the plan: a supplemental file filed through the usual filing rules,
//! an unneeded one withdrawn, alerts handed to the run, late records kept for its CSV.
//!
//! It also serves the rebuild of a rejected file ([`Filer::without_filed`]): a group rebuilt
//! into one of its files must leave out what its other submitted files already hold.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::late::{self, Filed, Findings, LateStep, Look, Part};
use super::{Filer, FilingError, FilingResult, GroupOutcome, LateReport};
use crate::alert::Alert;
use crate::connect::models::UsageFile;
use crate::usage::group::{Group, GroupKey, ReportRow};
use crate::usage::period::Period;
use crate::usage::workbook::{self, UsageRow};

impl Filer {
    /// The late look at `group`, whose main file `main_id` (among `live`, the main files) is
    /// submitted; `others` is the group's other files when the caller listed them.
    pub(super) async fn check_late(
        &self,
        group: &Arc<Group>,
        live: &[UsageFile],
        main_id: &str,
        others: Option<Vec<UsageFile>>,
        outcome: &mut GroupOutcome,
    ) -> Result<FilingResult, FilingError> {
        let status = live
            .iter()
            .find(|file| file.id == main_id)
            .map(|file| file.status.clone())
            .unwrap_or_default();
        let already = format!("already {status}");
        let supplements = match others {
            Some(files) => files,
            None => self.supplemental_files(&group.key).await?,
        };
        let files: Vec<UsageFile> = live.iter().cloned().chain(supplements).collect();
        let (findings, rows) = match self.compare(Some(group), &group.key, &files).await? {
            Comparison::Unchanged => return Ok(FilingResult::Skipped(already)),
            Comparison::Wait(reason) => {
                return Ok(FilingResult::Skipped(format!(
                    "{already}; late records wait: {reason}"
                )))
            }
            Comparison::Differs { findings, rows } => (findings, rows),
        };
        let steps = late::plan(self.late_records, self.period, &findings, &rows, &files);
        let mut report = LateReport {
            late: findings.late.len() as u64,
            changed: findings.changed.len() as u64,
            ..LateReport::default()
        };
        let mut result = None;
        for step in steps {
            match step {
                LateStep::File(part) => {
                    result = Some(
                        self.file_late(group, &findings, part, files.clone(), outcome)
                            .await,
                    );
                }
                LateStep::Withdraw { file_id, reason } => {
                    tracing::info!(%file_id, key = %group.key, %reason, "deleting an unneeded supplemental usage file");
                    match self.client.delete_usage_file(&file_id).await {
                        // It moved on meanwhile (another run uploaded or submitted it).
                        Err(error) if error.status() == Some(400) => {
                            tracing::info!(%file_id, %error, "the supplemental file moved on; a later run looks again")
                        }
                        other => other.map(drop)?,
                    }
                }
                LateStep::Alert {
                    kind,
                    severity,
                    message,
                    details,
                } => report.alerts.push(
                    Alert::new(kind, severity, message)
                        .group(
                            &group.key.contract_id,
                            &group.key.product_id,
                            self.period.to_string(),
                        )
                        .file(main_id)
                        .details(details),
                ),
                LateStep::ListLate => {
                    report.rows = findings.late.iter().map(|at| rows[*at].clone()).collect()
                }
                LateStep::Settle(found) if found.is_empty() => {
                    result = Some(Ok(FilingResult::Skipped(already.clone())))
                }
                LateStep::Settle(found) => {
                    result = Some(Ok(FilingResult::Skipped(format!("{already}; {found}"))))
                }
            }
        }
        outcome.late = Some(report);
        result.unwrap_or_else(|| {
            Err(FilingError::Group(
                "the late look came to no result (a bug)".into(),
            ))
        })
    }

    /// The group's files (all parts) against the source's records of the group (`None`: the
    /// source has none now): the digests first ([`late::look`]), the submitted workbooks
    /// downloaded and compared record by record only when they differ. Reads only.
    pub(crate) async fn compare(
        &self,
        group: Option<&Arc<Group>>,
        key: &GroupKey,
        files: &[UsageFile],
    ) -> Result<Comparison, FilingError> {
        let source = match group {
            Some(group) => self.digest(group).await?,
            None => late::Digest::default(),
        };
        let filed = match late::look(source, files) {
            Look::Unchanged => return Ok(Comparison::Unchanged),
            Look::Wait(reason) => return Ok(Comparison::Wait(reason)),
            Look::Compare { filed } => filed,
        };
        tracing::info!(%key, period = %self.period, files = filed.len(), records = source.records(), "the source differs from the submitted files; comparing them");
        let filed = self.download_all(&filed).await?;
        let rows = match group {
            Some(group) => self.rows_of(group).await?,
            None => Vec::new(),
        };
        let findings = {
            let rows = rows.clone();
            tokio::task::spawn_blocking(move || late::classify(&rows, &filed))
                .await
                .map_err(|join| FilingError::Group(format!("comparing failed: {join}")))?
        };
        Ok(Comparison::Differs { findings, rows })
    }

    /// Files the late records of `group` as `part`, through the usual filing rules (a file of
    /// that part found already is carried on with; the replica rule keeps one per part).
    async fn file_late(
        &self,
        group: &Arc<Group>,
        findings: &Findings,
        part: Part,
        files: Vec<UsageFile>,
        outcome: &mut GroupOutcome,
    ) -> Result<FilingResult, FilingError> {
        let rows: Vec<ReportRow> = group
            .rows
            .pick(&findings.late)
            .map_err(|error| FilingError::Group(error.to_string()))?;
        tracing::info!(key = %group.key, period = %self.period, records = rows.len(), %part, "filing late records");
        outcome.part = part;
        outcome.file_id = None;
        outcome.rows = rows.len() as u64;
        let late = Arc::new(Group {
            key: group.key.clone(),
            product: group.product.clone(),
            currency: group.currency.clone(),
            rows: rows.into(),
        });
        Box::pin(self.file_group_inner(&late, Some(files), outcome)).await
    }

    /// The rows of each of `file_ids`' uploaded workbooks, downloaded and read.
    async fn download_all(&self, file_ids: &[String]) -> Result<Vec<Filed>, FilingError> {
        let mut filed = Vec::with_capacity(file_ids.len());
        for file_id in file_ids {
            let bytes = self.client.download_usage_workbook(file_id).await?;
            let read = tokio::task::spawn_blocking(move || workbook::read_workbook(&bytes))
                .await
                .map_err(|join| FilingError::Group(format!("reading a workbook failed: {join}")))?;
            let rows = read.map_err(|problems| FilingError::Filed {
                file_id: file_id.clone(),
                reason: problems
                    .first()
                    .map_or_else(|| "no detail".to_string(), ToString::to_string),
            })?;
            filed.push(Filed {
                file_id: file_id.clone(),
                rows,
            });
        }
        Ok(filed)
    }

    /// The group's rows as its workbook holds them.
    async fn rows_of(&self, group: &Arc<Group>) -> Result<Vec<UsageRow>, FilingError> {
        let (group, period) = (group.clone(), self.period);
        tokio::task::spawn_blocking(move || {
            group
                .rows
                .iter()
                .map(|row| row.map(|row| workbook::usage_row(&row, period)))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|join| FilingError::Group(format!("building the group's rows failed: {join}")))?
        .map_err(|error| FilingError::Group(error.to_string()))
    }

    /// `group` without the records the group's submitted files other than `file_id` hold: what
    /// a rebuild of `file_id` may upload. `None` when nothing is left.
    pub async fn without_filed(
        &self,
        mut group: Group,
        file_id: &str,
    ) -> Result<Option<Group>, FilingError> {
        let mut files = self.live_files(&group.key, Part::Main).await?;
        files.extend(self.supplemental_files(&group.key).await?);
        let others: Vec<String> = files
            .iter()
            .filter(|file| file.id != file_id && file.status.is_done())
            .map(|file| file.id.clone())
            .collect();
        if !others.is_empty() {
            let filed: HashSet<String> = self
                .download_all(&others)
                .await?
                .into_iter()
                .flat_map(|filed| filed.rows)
                .filter_map(|row| match row.record_id {
                    workbook::Cell::Text(id) => Some(id),
                    _ => None,
                })
                .collect();
            let period = self.period;
            let before = group.rows.len();
            group
                .rows
                .retain(|row| !filed.contains(&row.record_id.spelled(period)))
                .map_err(|error| FilingError::Group(error.to_string()))?;
            tracing::info!(key = %group.key, %file_id, left_out = before - group.rows.len(), "records other files of the group hold are left out of the rebuild");
        }
        Ok((!group.rows.is_empty()).then_some(group))
    }
}

/// What [`Filer::compare`] found.
#[derive(Debug)]
pub(crate) enum Comparison {
    /// The submitted files hold exactly the source's records (their digests say so).
    Unchanged,
    /// Not comparable yet; the reason says why (a part of the group is still being filed).
    Wait(String),
    /// Compared record by record: the findings, and the source's rows they point into.
    Differs {
        findings: Findings,
        rows: Vec<UsageRow>,
    },
}

/// Writes `late-records-<period>.csv` into `dir` when any group has late records listed
/// (`LATE_RECORDS = alert`), replacing an earlier one whole; returns its path.
pub async fn write_late_records(
    dir: &Path,
    period: Period,
    outcomes: &[GroupOutcome],
) -> std::io::Result<Option<PathBuf>> {
    let listed: Vec<(GroupKey, Vec<UsageRow>)> = outcomes
        .iter()
        .filter_map(|outcome| {
            let late = outcome.late.as_ref().filter(|late| !late.rows.is_empty())?;
            Some((outcome.key.clone(), late.rows.clone()))
        })
        .collect();
    if listed.is_empty() {
        return Ok(None);
    }
    let path = dir.join(format!("late-records-{period}.csv"));
    let target = path.clone();
    tokio::task::spawn_blocking(move || {
        crate::output::replace_with(
            &target,
            |mut out| {
                out.write_all(late::CSV_HEADER.as_bytes())?;
                for (key, rows) in &listed {
                    for row in rows {
                        out.write_all(late::csv_line(key, row).as_bytes())?;
                    }
                }
                Ok(out)
            },
            |failed| failed.source,
        )
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(Some(path))
}
