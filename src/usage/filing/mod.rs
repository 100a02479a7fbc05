//! Filing one group as exactly one live usage file (see docs/architecture.md, Filing), safe to
//! repeat after any crash and with other replicas doing the same at the same time.
//!
//! The platform is the only state: every run looks the group's `external_id` up first and acts
//! on what it finds. What to do at each status is decided in one place, [`decide`] (a pure
//! function, with a table of every case); `execute.rs` carries a run's steps out through the
//! client, the sweep ([`crate::usage::sweep`]) and the event handler (`handlers::file_events`)
//! carry out theirs. This file holds the run's settings and results, the look-ups, and the
//! workbook a group uploads.
//!
//! In short: `pending`/`accepted`/`closed` are done (and a done main file is compared with the
//! source for late records and changes after filing: [`late`], carried out in
//! `supplement.rs`), `ready` is submitted, a `draft` is filled (uploaded to and submitted), an
//! `invalid` file is a broken upload and is deleted and rebuilt, files still `processing` are
//! waited for, `rejected` belongs to the event handler.
//!
//! A group's records of a period live in its main file and, with `LATE_RECORDS = file`, in
//! supplemental files of late records ([`late::Part`]); each part is a key of its own
//! (`…:late-<n>`), filed by the same rules. What the program keeps in a file's note (the
//! digest of its records, the rebuild count) is in [`note`].
//!
//! A `draft` is either left over by an interrupted run or another replica's file that it is
//! about to upload to; nothing tells the two apart. The workbook is the same whoever builds it,
//! so the draft is filled rather than deleted: deleting it would break the other replica's run
//! (its upload finds the file gone), and the two would take turns destroying each other's
//! files. Two replicas filling one file upload the same rows; the platform keeps one upload,
//! and whichever submit comes second finds the file already pending, which is success.
//!
//! Submission: the `report` command polls each upload until the platform has processed it and
//! submits it then; under the runner the platform's `ready` event does that, and the scheduled
//! run, before it answers, follows its uploads and submits any whose event never came
//! ([`crate::usage::sweep`]) — all apply the same replica rule before they submit.
//!
//! Replicas: when two instances create a file for the same key, both see both when they look
//! again right before submitting. The preferred file ([`decide::preferred`]) wins: one already
//! submitted, else the earliest created, else the lowest id; the loser deletes its own file and
//! leaves the group to the winner, and every look also deletes losing drafts nobody will fill
//! (a create whose answer was lost leaves one when the client, looking for it, finds the other
//! replica's file instead). Because every side applies the same order to the same platform
//! state, at most one file survives to be submitted.

pub mod cadence;
pub mod decide;
mod execute;
pub mod in_hand;
pub mod late;
pub mod note;
pub mod recent;
mod supplement;

pub use supplement::write_late_records;
pub(crate) use supplement::Comparison;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::alert::Alert;
use crate::config::LateRecords;
use crate::connect::models::{FileStatus, NewUsageFile, Reference, UsageFile, UsagePeriod};
use crate::connect::{ConnectClient, ConnectError, Rql};
use crate::usage::group::{Group, GroupKey};
use crate::usage::period::Period;
use crate::usage::workbook::{self, BuildError, RowTally, RunPackage, UsageRow};
use late::{Digest, Part};

/// Who submits an upload once the platform has processed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submission {
    /// The run itself: it polls the file with backoff and submits it when `ready` (the `report`
    /// command, where nobody listens to the platform's events).
    Poll,
    /// The platform's `ready` event, answered by the runner's usage-file handler: the run
    /// moves on as soon as the workbook is uploaded.
    OnReadyEvent,
}

/// What filing a group came to.
#[derive(Debug, Clone, PartialEq)]
pub enum FilingResult {
    /// The group's workbook was built and uploaded here — into a new file, or into an empty
    /// draft found for the key — and submitted.
    Created,
    /// As `Created`, but submitting is left to the file's `ready` event
    /// ([`Submission::OnReadyEvent`]).
    Uploaded,
    /// An existing file (ready, or uploaded again after a rejection) was submitted.
    Submitted,
    /// Nothing to do; the reason says why (e.g. "already pending").
    Skipped(String),
    /// The workbook was written locally only (`--dry-run`).
    DryRun,
    /// The group could not be filed; the message says why. A later run retries.
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct GroupOutcome {
    pub key: GroupKey,
    /// Which of the group's files `file_id` and `result` speak of: its main file, or the
    /// supplemental file this run filed its late records in.
    pub part: Part,
    pub file_id: Option<String>,
    /// Rows of the file filed (a supplemental file's: the late records only).
    pub rows: u64,
    pub result: FilingResult,
    pub workbook: Option<PathBuf>,
    /// The platform's `error_detail` when the file ended invalid.
    pub error_detail: Option<String>,
    /// The file was found still being processed and left to its `ready` event (the scheduled
    /// run follows it until submitted: [`crate::usage::sweep`]).
    pub awaiting_ready: bool,
    /// The failure is one a later attempt may fix (see [`FilingError::is_transient`]).
    pub transient: bool,
    /// What the group's submitted files were found to lack or hold differently, when the
    /// source no longer matched them ([`late`]).
    pub late: Option<LateReport>,
}

/// The comparison of a submitted group with the source, for the summary, alerts and CSV.
#[derive(Debug, Clone, Default)]
pub struct LateReport {
    /// Records in the source that no submitted file of the group holds.
    pub late: u64,
    /// Filed records with other values in the source now, or gone from it.
    pub changed: u64,
    /// The late records, for `late-records-<period>.csv` (`LATE_RECORDS = alert`).
    pub rows: Vec<UsageRow>,
    /// What a person is told (`late_records`, `changed_after_filing`); the run sends them.
    pub alerts: Vec<Alert>,
}

impl GroupOutcome {
    /// A group left alone for `reason`, without a request about it.
    pub fn skipped(group: &Group, reason: String) -> Self {
        GroupOutcome {
            result: FilingResult::Skipped(reason),
            ..GroupOutcome::of(group, None)
        }
    }

    fn of(group: &Group, file_id: Option<&str>) -> Self {
        GroupOutcome {
            key: group.key.clone(),
            part: Part::Main,
            file_id: file_id.map(str::to_string),
            rows: group.rows.len() as u64,
            result: FilingResult::Failed(String::new()),
            workbook: None,
            error_detail: None,
            awaiting_ready: false,
            transient: false,
            late: None,
        }
    }
}

/// What the listing at the start of a period's filing found ([`Filer::list_period`]).
#[derive(Debug, Default)]
pub struct Listing {
    /// The live files (all parts) of each group asked for.
    pub live: HashMap<GroupKey, Vec<UsageFile>>,
    /// The groups whose period the other cadence already filed.
    pub other_cadence: BTreeMap<GroupKey, cadence::Overlap>,
}

#[derive(Debug, thiserror::Error)]
pub enum FilingError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot save the workbook copy {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    UnsafeName(#[from] crate::output::UnsafeName),
    #[error("usage file {file_id} was still {status} after {waited:?}")]
    StillProcessing {
        file_id: String,
        status: FileStatus,
        waited: Duration,
    },
    #[error("usage file {file_id} is invalid: {detail}")]
    Invalid { file_id: String, detail: String },
    #[error("{0}")]
    Group(String),
    #[error("the submitted workbook of usage file {file_id} cannot be read: {reason}")]
    Filed { file_id: String, reason: String },
}

impl FilingError {
    /// A later attempt may succeed: Connect unreachable, throttled or failing, a file still
    /// processing, a local write failing. Not: a workbook or group the data itself breaks.
    pub fn is_transient(&self) -> bool {
        match self {
            FilingError::Connect(error) => {
                matches!(error, ConnectError::Transport { .. })
                    || error.is_ambiguous()
                    || error.status() == Some(429)
            }
            FilingError::StillProcessing { .. } | FilingError::Io { .. } => true,
            FilingError::Build(_)
            | FilingError::Filed { .. }
            | FilingError::Invalid { .. }
            | FilingError::Group(_)
            | FilingError::UnsafeName(_) => false,
        }
    }
}

/// Files groups for one period.
#[derive(Clone)]
pub struct Filer {
    pub client: ConnectClient,
    pub period: Period,
    /// Where workbooks are written.
    pub workdir: PathBuf,
    /// The package every workbook of the run is written in.
    pub package: RunPackage,
    /// Keep workbooks after upload (the `report` command and the sandbox show them).
    pub keep_workbooks: bool,
    pub dry_run: bool,
    pub ready_timeout: Duration,
    pub poll_interval: Duration,
    pub submission: Submission,
    /// What to do with records that arrive after a group's file was submitted.
    pub late_records: LateRecords,
}

impl Filer {
    /// Ids come from the platform: a name that could leave the work directory is refused.
    fn workbook_path(
        &self,
        key: &GroupKey,
        part: Part,
    ) -> Result<PathBuf, crate::output::UnsafeName> {
        let name = part.external_id(key, self.period).replace(':', "_");
        Ok(self
            .workdir
            .join(crate::output::file_name(format!("{name}.xlsx"))?))
    }

    /// Live (not deleted) files for one of the group's parts.
    pub async fn live_files(
        &self,
        key: &GroupKey,
        part: Part,
    ) -> Result<Vec<UsageFile>, ConnectError> {
        live_files(&self.client, key, self.period, part).await
    }

    /// Live supplemental files of the group (`…:late-<n>`).
    pub async fn supplemental_files(&self, key: &GroupKey) -> Result<Vec<UsageFile>, ConnectError> {
        let pattern = format!("{}:late-*", key.external_id(self.period));
        let filter = Rql::all([
            Rql::like("external_id", pattern),
            Rql::eq("product.id", key.product_id.clone()),
            Rql::eq("contract.id", key.contract_id.clone()),
            Rql::ne("status", FileStatus::Deleted),
        ]);
        let files = self.client.usage_files(filter).await?;
        Ok(files
            .into_iter()
            .filter(|file| {
                let id = file.external_id.as_deref().unwrap_or_default();
                matches!(late::parse_external_id(id), Some((k, p, Part::Late(_))) if k == *key && p == self.period)
            })
            .collect())
    }

    /// Live files of many groups at once, in `in()` batches of external ids, with the
    /// period's supplemental files and our files of the other cadence overlapping it
    /// ([`cadence`]) in the first batch: a period's filing starts without one lookup per group.
    /// Only a head start — every group still looks again right after creating and right before
    /// submitting, which is what keeps replicas apart.
    pub async fn list_period(
        &self,
        keys: impl IntoIterator<Item = &GroupKey>,
    ) -> Result<Listing, ConnectError> {
        let wanted: HashMap<String, GroupKey> = keys
            .into_iter()
            .map(|key| (key.external_id(self.period), key.clone()))
            .collect();
        let ids: Vec<&String> = wanted.keys().collect();
        let mut live: HashMap<GroupKey, Vec<UsageFile>> = wanted
            .values()
            .map(|key| (key.clone(), Vec::new()))
            .collect();
        let mut others = Vec::new();
        // Any group's supplemental files of the period, and the other cadence's, asked for
        // with the first batch.
        let supplements = Rql::like("external_id", format!("*:{}:late-*", self.period))
            .or(cadence::overlap_ids(self.period));
        for (at, batch) in ids.chunks(crate::usage::resolve::BATCH).enumerate() {
            let mains = Rql::one_of("external_id", batch.iter().copied());
            let filter = Rql::all([
                match at {
                    0 => mains.or(supplements.clone()),
                    _ => mains,
                },
                Rql::ne("status", FileStatus::Deleted),
            ]);
            for file in self.client.usage_files(filter).await? {
                let Some(external_id) = file.external_id.as_deref() else {
                    continue;
                };
                let main = match late::parse_external_id(external_id) {
                    Some((key, period, Part::Late(_))) if period == self.period => {
                        key.external_id(period)
                    }
                    _ => external_id.to_string(),
                };
                let Some(key) = wanted.get(&main) else {
                    others.push(file);
                    continue;
                };
                let same_group = file.product_id() == Some(key.product_id.as_str())
                    && file.contract_id() == Some(key.contract_id.as_str());
                if same_group {
                    live.get_mut(key)
                        .expect("every key has an entry")
                        .push(file);
                }
            }
        }
        Ok(Listing {
            live,
            other_cadence: cadence::overlap(self.period, &others),
        })
    }

    /// Files the group, never returning an error: failures become a `Failed` outcome.
    /// `known` is the group's live files (all parts) when the caller listed them already.
    pub async fn file_group(
        &self,
        group: Arc<Group>,
        known: Option<Vec<UsageFile>>,
    ) -> GroupOutcome {
        let mut outcome = GroupOutcome::of(&group, None);
        let result = self.file_group_inner(&group, known, &mut outcome).await;
        self.conclude(outcome, result).await
    }

    /// Uploads the group into its existing file `file_id`, the group's `part` (a rebuild after
    /// a rejection), never returning an error: failures become a `Failed` outcome.
    pub async fn refill_group(&self, group: Arc<Group>, part: Part, file_id: &str) -> GroupOutcome {
        let mut outcome = GroupOutcome::of(&group, Some(file_id));
        outcome.part = part;
        let result = self.fill(&group, file_id, &mut outcome).await;
        self.conclude(outcome, result).await
    }

    async fn conclude(
        &self,
        mut outcome: GroupOutcome,
        result: Result<FilingResult, FilingError>,
    ) -> GroupOutcome {
        match result {
            Ok(result) => outcome.result = result,
            Err(error) => {
                if let FilingError::Invalid { detail, .. } = &error {
                    outcome.error_detail = Some(detail.clone());
                }
                outcome.transient = error.is_transient();
                outcome.result = FilingResult::Failed(error.to_string());
            }
        }
        if !self.keep_workbooks {
            if let Some(path) = outcome.workbook.take() {
                let _ = tokio::fs::remove_file(path).await;
            }
        }
        outcome
    }

    /// A new file for `part` of the group, its note recording the `digest` of what it is
    /// filled with.
    fn new_file(&self, key: &GroupKey, part: Part, currency: &str, digest: Digest) -> NewUsageFile {
        let (name, description) = match part {
            Part::Main => (String::new(), String::new()),
            Part::Late(n) => (
                format!(" late-{n}"),
                format!(" (late records, supplement {n})"),
            ),
        };
        let generated = format!("generated by connect-payg {}", env!("CARGO_PKG_VERSION"));
        NewUsageFile {
            name: format!(
                "{} {} {}{name}",
                key.product_id, key.contract_id, self.period
            ),
            description: format!("PAYG usage for {}{description}", self.period.human()),
            note: Some(note::note_with_digest(Some(&generated), digest)),
            period: UsagePeriod::new(self.period.first_day(), self.period.last_day()),
            currency: currency.to_string(),
            product: Reference::id(&key.product_id),
            contract: Reference::id(&key.contract_id),
            external_id: part.external_id(key, self.period),
        }
    }

    /// The digest of the records a workbook of `group` holds (computed on the blocking pool).
    async fn digest(&self, group: &Arc<Group>) -> Result<Digest, FilingError> {
        let (group, period) = (group.clone(), self.period);
        tokio::task::spawn_blocking(move || {
            // The rows stream from the scratch file; one that cannot be read fails the group.
            let mut unreadable = None;
            let digest = Digest::of_rows(group.rows.iter().map_while(|row| match row {
                Ok(row) => Some(workbook::usage_row(&row, period)),
                Err(error) => {
                    unreadable = Some(error);
                    None
                }
            }));
            match unreadable {
                Some(error) => Err(FilingError::Group(error.to_string())),
                None => Ok(digest),
            }
        })
        .await
        .map_err(|join| {
            FilingError::Group(format!("computing the group's digest failed: {join}"))
        })?
    }

    /// The group's workbook for upload, with `tally` of its rows (taken as they are written:
    /// the digest a filled file's note records); also saved under the work directory when
    /// workbooks are kept (the `report` command, `WORKBOOK_DIR`).
    async fn write_workbook<T: RowTally>(
        &self,
        group: &Arc<Group>,
        outcome: &mut GroupOutcome,
        tally: T,
    ) -> Result<(Vec<u8>, T), FilingError> {
        let (bytes, tally) =
            workbook::build_group(group.clone(), self.period, self.package.clone(), tally).await?;
        if self.keep_workbooks {
            let path = self.workbook_path(&group.key, outcome.part)?;
            let target = path.clone();
            let (bytes, saved) = tokio::task::spawn_blocking(move || {
                let saved = crate::output::write_bytes(&target, &bytes);
                (bytes, saved)
            })
            .await
            .map_err(|join| FilingError::Io {
                path: path.clone(),
                source: std::io::Error::other(join.to_string()),
            })?;
            saved.map_err(|failed| FilingError::Io {
                path: failed.path,
                source: failed.source,
            })?;
            outcome.workbook = Some(path);
            return Ok((bytes, tally));
        }
        Ok((bytes, tally))
    }

    /// Polls the file with growing intervals until the platform has processed the upload.
    pub async fn wait_until_processed(&self, file_id: &str) -> Result<UsageFile, FilingError> {
        let started = Instant::now();
        let mut interval = self.poll_interval;
        loop {
            let file = self.client.usage_file(file_id).await?;
            if !file.status.is_processing() {
                return Ok(file);
            }
            if started.elapsed() >= self.ready_timeout {
                return Err(FilingError::StillProcessing {
                    file_id: file_id.to_string(),
                    status: file.status,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(Duration::from_secs(30));
        }
    }
}

/// Live (not deleted) files for `part` of the group's files of `period`: the look at a key
/// every filing decision starts from.
pub async fn live_files(
    client: &ConnectClient,
    key: &GroupKey,
    period: Period,
    part: Part,
) -> Result<Vec<UsageFile>, ConnectError> {
    let filter = Rql::all([
        Rql::eq("external_id", part.external_id(key, period)),
        Rql::eq("product.id", key.product_id.clone()),
        Rql::eq("contract.id", key.contract_id.clone()),
        Rql::ne("status", FileStatus::Deleted),
    ]);
    client.usage_files(filter).await
}

/// The outcome for a group whose file lost to another instance's file.
pub(crate) fn lost() -> FilingResult {
    FilingResult::Skipped("another instance is filing this group".into())
}
