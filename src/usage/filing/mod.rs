//! Filing one group as exactly one live usage file (see docs/architecture.md, Filing), safe to
//! repeat after any crash and with other replicas doing the same at the same time.
//!
//! The platform is the only state: every run looks the group's `external_id` up first and acts
//! on what it finds — `pending`/`accepted`/`closed` are done, `ready` is submitted, a `draft`
//! is filled (uploaded to and submitted), an `invalid` file is a broken upload and is deleted
//! and rebuilt, files still `processing` are waited for, `rejected` belongs to the event
//! handler.
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
//! ([`crate::usage::sweep`]) — both apply the same replica rule below before they submit.
//!
//! Replicas: when two instances create a file for the same key, both see both when they look
//! again right before submitting. The preferred file wins:
//! one already submitted, else the earliest created, else the lowest id; the loser deletes its
//! own file and leaves the group to the winner, and every look also deletes losing drafts
//! nobody will fill (a create whose answer was lost leaves one when the client, looking for
//! it, finds the other replica's file instead). Because every side applies the same order to
//! the same platform state, at most one file survives to be submitted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connect::models::{FileStatus, NewUsageFile, Reference, UsageFile, UsagePeriod};
use crate::connect::{ConnectClient, ConnectError, Rql};
use crate::usage::group::{Group, GroupKey};
use crate::usage::period::Period;
use crate::usage::workbook::{self, BuildError, RunPackage};

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
    pub file_id: Option<String>,
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
}

impl GroupOutcome {
    fn of(group: &Group, file_id: Option<&str>) -> Self {
        GroupOutcome {
            key: group.key.clone(),
            file_id: file_id.map(str::to_string),
            rows: group.rows.len() as u64,
            result: FilingResult::Failed(String::new()),
            workbook: None,
            error_detail: None,
            awaiting_ready: false,
            transient: false,
        }
    }
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
            | FilingError::Invalid { .. }
            | FilingError::Group(_)
            | FilingError::UnsafeName(_) => false,
        }
    }
}

/// Files groups for one month.
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
}

fn created_at(file: &UsageFile) -> Option<&str> {
    file.events
        .get("created")
        .and_then(|event| event.at.as_deref())
}

fn status_rank(file: &UsageFile) -> u8 {
    if file.status.is_done() {
        0
    } else {
        1
    }
}

/// The file every replica agrees to keep among several live ones for a key.
fn preferred(files: &[UsageFile]) -> Option<&UsageFile> {
    files.iter().min_by(|a, b| {
        (status_rank(a), created_at(a), &a.id).cmp(&(status_rank(b), created_at(b), &b.id))
    })
}

impl Filer {
    /// Ids come from the platform: a name that could leave the work directory is refused.
    fn workbook_path(&self, key: &GroupKey) -> Result<PathBuf, crate::output::UnsafeName> {
        let name = key.external_id(self.period).replace(':', "_");
        Ok(self
            .workdir
            .join(crate::output::file_name(format!("{name}.xlsx"))?))
    }

    /// Live (not deleted) files for the group's key.
    pub async fn live_files(&self, key: &GroupKey) -> Result<Vec<UsageFile>, ConnectError> {
        let filter = Rql::all([
            Rql::eq("external_id", key.external_id(self.period)),
            Rql::eq("product.id", key.product_id.clone()),
            Rql::eq("contract.id", key.contract_id.clone()),
            Rql::ne("status", FileStatus::Deleted),
        ]);
        self.client.usage_files(filter).await
    }

    /// Files the group, never returning an error: failures become a `Failed` outcome.
    /// Live files of many groups at once, in `in()` batches of external ids: a month's filing
    /// starts without one lookup per group. Only a head start — every group still looks again
    /// right after creating and right before submitting, which is what keeps replicas apart.
    pub async fn live_files_of(
        &self,
        keys: impl IntoIterator<Item = &GroupKey>,
    ) -> Result<HashMap<GroupKey, Vec<UsageFile>>, ConnectError> {
        let wanted: HashMap<String, GroupKey> = keys
            .into_iter()
            .map(|key| (key.external_id(self.period), key.clone()))
            .collect();
        let ids: Vec<&String> = wanted.keys().collect();
        let mut found: HashMap<GroupKey, Vec<UsageFile>> = wanted
            .values()
            .map(|key| (key.clone(), Vec::new()))
            .collect();
        for batch in ids.chunks(crate::usage::resolve::BATCH) {
            let filter = Rql::all([
                Rql::one_of("external_id", batch.iter().copied()),
                Rql::ne("status", FileStatus::Deleted),
            ]);
            for file in self.client.usage_files(filter).await? {
                let Some(key) = file.external_id.as_ref().and_then(|id| wanted.get(id)) else {
                    continue;
                };
                let same_group = file.product_id() == Some(key.product_id.as_str())
                    && file.contract_id() == Some(key.contract_id.as_str());
                if same_group {
                    found
                        .get_mut(key)
                        .expect("every key has an entry")
                        .push(file);
                }
            }
        }
        Ok(found)
    }

    /// Files the group, never returning an error: failures become a `Failed` outcome.
    /// `known` is the group's live files when the caller listed them already.
    pub async fn file_group(
        &self,
        group: Arc<Group>,
        known: Option<Vec<UsageFile>>,
    ) -> GroupOutcome {
        let mut outcome = GroupOutcome::of(&group, None);
        let result = self.file_group_inner(&group, known, &mut outcome).await;
        self.conclude(outcome, result).await
    }

    /// Uploads the group into its existing file `file_id` (a rebuild after a rejection), never
    /// returning an error: failures become a `Failed` outcome.
    pub async fn refill_group(&self, group: Arc<Group>, file_id: &str) -> GroupOutcome {
        let mut outcome = GroupOutcome::of(&group, Some(file_id));
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

    async fn file_group_inner(
        &self,
        group: &Arc<Group>,
        mut known: Option<Vec<UsageFile>>,
        outcome: &mut GroupOutcome,
    ) -> Result<FilingResult, FilingError> {
        let currency = group.currency.clone().map_err(FilingError::Group)?;
        if self.dry_run {
            let path = self.workbook_path(&group.key)?;
            workbook::write_group(
                group.clone(),
                self.period,
                self.package.clone(),
                path.clone(),
            )
            .await?;
            outcome.workbook = Some(path);
            return Ok(FilingResult::DryRun);
        }
        // A few rounds at most: each round either finishes or removes a leftover file.
        for _ in 0..4 {
            let live = match known.take() {
                Some(files) => files,
                None => self.live_files(&group.key).await?,
            };
            let Some(file) = self.settle_duplicates(live).await? else {
                return self.create_and_upload(group, &currency, outcome).await;
            };
            outcome.file_id = Some(file.id.clone());
            match &file.status {
                status if status.is_done() => {
                    return Ok(FilingResult::Skipped(format!("already {status}")))
                }
                FileStatus::Rejected => {
                    return Ok(FilingResult::Skipped(
                        "rejected; the rejection handler rebuilds it".into(),
                    ))
                }
                FileStatus::Ready => {
                    return Ok(
                        match self.submit_if_still_preferred(&group.key, &file.id).await? {
                            true => FilingResult::Submitted,
                            false => lost(),
                        },
                    )
                }
                status if status.is_processing() => {
                    if self.submission == Submission::OnReadyEvent {
                        outcome.awaiting_ready = true;
                        return Ok(FilingResult::Skipped(format!(
                            "{status}; its ready event submits it"
                        )));
                    }
                    self.wait_until_processed(&file.id).await?;
                }
                FileStatus::Draft => {
                    tracing::info!(file_id = %file.id, key = %group.key, "filling an existing empty usage file");
                    return self.fill(group, &file.id, outcome).await;
                }
                FileStatus::Invalid => {
                    tracing::info!(file_id = %file.id, key = %group.key, "deleting an invalid file to rebuild it");
                    self.client.delete_usage_file(&file.id).await?;
                }
                other => {
                    return Err(FilingError::Group(format!(
                        "usage file {} is in an unexpected status {:?}",
                        file.id,
                        other.as_str()
                    )))
                }
            }
        }
        Err(FilingError::Group(
            "the group's usage file kept changing; a later run will retry".into(),
        ))
    }

    /// Deletes the live files that lose to the preferred one (where the platform allows) and
    /// returns the preferred one.
    async fn settle_duplicates(
        &self,
        live: Vec<UsageFile>,
    ) -> Result<Option<UsageFile>, ConnectError> {
        let Some(winner) = preferred(&live).cloned() else {
            return Ok(None);
        };
        for file in live.iter().filter(|f| f.id != winner.id) {
            if file.status.is_deletable() {
                self.withdraw_loser(&file.id, &winner.id).await?;
            } else {
                tracing::warn!(file_id = %file.id, status = %file.status, winner = %winner.id, "a duplicate usage file cannot be deleted in its status");
            }
        }
        Ok(Some(winner))
    }

    /// True when `file_id` is (still) the preferred live file of the group; otherwise withdraws
    /// it. Also deletes losing drafts, such as the file of a create whose answer was lost while
    /// the client, looking for it, found another replica's file instead: nobody else would.
    /// Another replica's uploaded loser is left to it (it withdraws it at its own look before
    /// submitting). A listing that does not show the file yet cannot prove another one won.
    async fn still_preferred(&self, key: &GroupKey, file_id: &str) -> Result<bool, ConnectError> {
        let live = self.live_files(key).await?;
        let Some(winner) = preferred(&live).map(|f| f.id.clone()) else {
            return Ok(true);
        };
        if winner != file_id && !live.iter().any(|f| f.id == file_id) {
            self.client.delete_usage_file(file_id).await?;
        }
        for file in live.iter().filter(|f| f.id != winner) {
            let withdraw = if file.id == file_id {
                file.status.is_deletable()
            } else {
                file.status == FileStatus::Draft
            };
            if withdraw {
                self.withdraw_loser(&file.id, &winner).await?;
            }
        }
        Ok(winner == file_id)
    }

    /// Deletes a file that lost its group to `winner`. The platform refusing (400: its owner
    /// uploaded or submitted it since the listing) leaves it to the owner, who withdraws its own
    /// losing upload at its look before submitting.
    async fn withdraw_loser(&self, file_id: &str, winner: &str) -> Result<(), ConnectError> {
        tracing::warn!(
            file_id,
            winner,
            "another file won this group; deleting a losing one"
        );
        match self.client.delete_usage_file(file_id).await {
            Err(error) if error.status() == Some(400) => {
                tracing::info!(file_id, %error, "the losing file moved on; its owner withdraws it");
                Ok(())
            }
            other => other.map(drop),
        }
    }

    fn new_file(&self, key: &GroupKey, currency: &str) -> NewUsageFile {
        NewUsageFile {
            name: format!("{} {} {}", key.product_id, key.contract_id, self.period),
            description: format!("PAYG usage for {}", self.period.human()),
            note: Some(format!(
                "generated by connect-payg {}",
                env!("CARGO_PKG_VERSION")
            )),
            period: UsagePeriod::new(self.period.first_day(), self.period.last_day()),
            currency: currency.to_string(),
            product: Reference::id(&key.product_id),
            contract: Reference::id(&key.contract_id),
            external_id: key.external_id(self.period),
        }
    }

    /// Creates the group's file and uploads its workbook. Nobody else can be uploading to a
    /// file this run has only just created, so the upload goes straight out; a replica that
    /// created its own file for the key meets this one at the look before submitting.
    async fn create_and_upload(
        &self,
        group: &Arc<Group>,
        currency: &str,
        outcome: &mut GroupOutcome,
    ) -> Result<FilingResult, FilingError> {
        let file_id = self
            .client
            .create_usage_file(&self.new_file(&group.key, currency))
            .await?;
        outcome.file_id = Some(file_id.clone());
        let bytes = self.write_workbook(group, outcome).await?;
        if !self.upload(&file_id, bytes).await? {
            return Ok(lost());
        }
        self.after_upload(&group.key, &file_id).await
    }

    /// Uploads the group's workbook into an existing file — an empty draft found for the key,
    /// or a rejected file being rebuilt — and submits it once processed (see [`Submission`]).
    async fn fill(
        &self,
        group: &Arc<Group>,
        file_id: &str,
        outcome: &mut GroupOutcome,
    ) -> Result<FilingResult, FilingError> {
        let bytes = self.write_workbook(group, outcome).await?;
        // Another replica filling the same file may have got its upload in while this one built
        // the workbook (from the same source: the same rows). Uploading again would only send
        // the file back to processing under that replica's submit, so carry on with it as is.
        let current = self.client.usage_file(file_id).await?;
        if current.status.holds_upload() {
            tracing::info!(file_id, status = %current.status, "another instance uploaded this file first");
        } else if current.status == FileStatus::Deleted || !self.upload(file_id, bytes).await? {
            return Ok(lost());
        }
        self.after_upload(&group.key, file_id).await
    }

    /// The group's workbook for upload; also saved under the work directory when workbooks
    /// are kept (the `report` command, `WORKBOOK_DIR`).
    async fn write_workbook(
        &self,
        group: &Arc<Group>,
        outcome: &mut GroupOutcome,
    ) -> Result<Vec<u8>, FilingError> {
        let bytes = workbook::build_group(group.clone(), self.period, self.package.clone()).await?;
        if self.keep_workbooks {
            let path = self.workbook_path(&group.key)?;
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
            return Ok(bytes);
        }
        Ok(bytes)
    }

    /// Uploads; false when the file was deleted meanwhile (another instance's file won the
    /// group and withdrew this one). An upload refused because the file already holds one
    /// (another instance got there first with the same rows) is carried on with.
    async fn upload(&self, file_id: &str, bytes: Vec<u8>) -> Result<bool, FilingError> {
        tracing::info!(file_id, bytes = bytes.len(), "uploading usage workbook");
        let Err(error) = self.client.upload_usage_file(file_id, bytes.into()).await else {
            return Ok(true);
        };
        let Ok(status) = self
            .client
            .usage_file(file_id)
            .await
            .map(|file| file.status)
        else {
            return Err(error.into());
        };
        if status == FileStatus::Deleted {
            tracing::info!(
                file_id,
                "another instance's file won this group; this one was withdrawn"
            );
            return Ok(false);
        }
        if !status.holds_upload() {
            return Err(error.into());
        }
        tracing::info!(file_id, %error, "another instance uploaded this file first");
        Ok(true)
    }

    /// Polls the upload until processed and submits it, or leaves that to its `ready` event.
    async fn after_upload(
        &self,
        key: &GroupKey,
        file_id: &str,
    ) -> Result<FilingResult, FilingError> {
        if self.submission == Submission::OnReadyEvent {
            return Ok(FilingResult::Uploaded);
        }
        let file = self.wait_until_processed(file_id).await?;
        match &file.status {
            FileStatus::Ready => Ok(match self.submit_if_still_preferred(key, file_id).await? {
                true => FilingResult::Created,
                false => lost(),
            }),
            FileStatus::Invalid => Err(FilingError::Invalid {
                file_id: file_id.to_string(),
                detail: file
                    .error_detail
                    .unwrap_or_else(|| "no detail given".into()),
            }),
            status if status.is_done() => Ok(FilingResult::Created),
            // Another replica's file won the group and withdrew this one while it was being
            // processed: the group is that replica's to finish.
            FileStatus::Deleted => Ok(lost()),
            other => Err(FilingError::Group(format!(
                "usage file {file_id} went to {:?} after upload",
                other.as_str()
            ))),
        }
    }

    /// Submits the ready `file_id` unless another file won the group (the `ready` handler
    /// calls this too); false when it lost and was withdrawn. A replica filling the same file
    /// may upload it again in between (back to processing): then it is waited for and
    /// submitted once ready again.
    pub async fn submit_if_still_preferred(
        &self,
        key: &GroupKey,
        file_id: &str,
    ) -> Result<bool, FilingError> {
        for _ in 0..3 {
            if !self.still_preferred(key, file_id).await? {
                return Ok(false);
            }
            let Err(error) = self.client.submit_usage_file(file_id).await else {
                return Ok(true);
            };
            let file = self.wait_until_processed(file_id).await?;
            match &file.status {
                FileStatus::Ready => tracing::info!(file_id, %error, "submitting again"),
                status if status.is_done() => return Ok(true),
                _ => return Err(error.into()),
            }
        }
        Err(FilingError::Group(format!(
            "usage file {file_id} could not be submitted; a later run will retry"
        )))
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

/// The outcome for a group whose file lost to another instance's file.
pub(crate) fn lost() -> FilingResult {
    FilingResult::Skipped("another instance is filing this group".into())
}
