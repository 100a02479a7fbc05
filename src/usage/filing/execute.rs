//! The executor of a run's filing: it looks at the platform, asks [`decide`] what to do, and
//! carries the steps out through the client. It decides nothing about statuses itself; what
//! it adds is how each step is done (retries of a refused submit, polling with backoff, a
//! refused withdrawal left to the file's owner) and how many looks a group may take.

use std::sync::Arc;

use super::decide::{decide, unexpected, Step, Trigger};
use super::late::{Digest, Part};
use super::note::{digest_in_note, note_with_digest};
use super::recent;
use super::{lost, Filer, FilingError, FilingResult, GroupOutcome, Submission};
use crate::connect::models::UsageFile;
use crate::connect::ConnectError;
use crate::metrics::FileAction;
use crate::usage::group::{Group, GroupKey};
use crate::usage::workbook;

/// Where a group's filing stands after a step.
enum Next {
    /// Take the next step.
    Continue,
    /// Look at the key again.
    LookAgain,
    /// The group's result.
    Done(FilingResult),
}

impl Filer {
    /// Files `outcome.part` of the group; `known` is the group's live files of every part when
    /// the caller listed them already.
    pub(super) async fn file_group_inner(
        &self,
        group: &Arc<Group>,
        known: Option<Vec<UsageFile>>,
        outcome: &mut GroupOutcome,
    ) -> Result<FilingResult, FilingError> {
        let currency = group.currency.clone().map_err(FilingError::Group)?;
        if self.dry_run {
            let path = self.workbook_path(&group.key, outcome.part)?;
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
        let part = outcome.part;
        let look = Trigger::Run {
            submission: self.submission,
            part,
        };
        // This part's files, and the other parts' (what a late look compares with).
        let (mut known, mut others) = match known {
            Some(files) => {
                let (mine, others): (Vec<UsageFile>, Vec<UsageFile>) =
                    files.into_iter().partition(|file| {
                        Part::of(file.external_id.as_deref().unwrap_or_default()) == part
                    });
                (Some(mine), Some(others))
            }
            None => (None, None),
        };
        // A few rounds at most: each round either finishes or removes a leftover file.
        'rounds: for _ in 0..4 {
            let live = match known.take() {
                Some(files) => files,
                None => self.live_files(&group.key, part).await?,
            };
            let steps = decide(&look, &live);
            for step in steps.iter().cloned() {
                let next = match step {
                    Step::Create => {
                        Next::Done(self.create_and_upload(group, &currency, outcome).await?)
                    }
                    Step::Fill(file_id) => {
                        tracing::info!(%file_id, key = %group.key, %part, "filling an existing empty usage file");
                        Next::Done(self.fill(group, &file_id, outcome).await?)
                    }
                    Step::CheckLate(file_id) => Next::Done(
                        self.check_late(group, &live, &file_id, others.take(), outcome)
                            .await?,
                    ),
                    step => self.take(step, &group.key, outcome).await?,
                };
                match next {
                    Next::Continue => {}
                    Next::LookAgain => continue 'rounds,
                    Next::Done(result) => return Ok(result),
                }
            }
            return Err(FilingError::Group(unexpected(&steps)));
        }
        Err(FilingError::Group(
            "the group's usage file kept changing; a later run will retry".into(),
        ))
    }

    /// Carries out one step of a group's filing, other than making or filling its file.
    async fn take(
        &self,
        step: Step,
        key: &GroupKey,
        outcome: &mut GroupOutcome,
    ) -> Result<Next, FilingError> {
        match step {
            Step::Withdraw { file_id, winner } => self.withdraw_loser(&file_id, &winner).await?,
            Step::KeepDuplicate {
                file_id,
                status,
                winner,
            } => {
                tracing::warn!(%file_id, %status, %winner, "a duplicate usage file cannot be deleted in its status");
            }
            Step::Delete { file_id, reason } => self.delete(key, &file_id, &reason).await?,
            Step::Adopt(file_id) => outcome.file_id = Some(file_id),
            Step::Follow(_) => outcome.awaiting_ready = true,
            Step::AwaitProcessing(file_id) => {
                self.wait_until_processed(&file_id).await?;
            }
            Step::SubmitIfPreferred(file_id) => {
                if !self
                    .submit_if_still_preferred(key, outcome.part, &file_id)
                    .await?
                {
                    return Ok(Next::Done(lost()));
                }
            }
            Step::LookAgain => return Ok(Next::LookAgain),
            Step::Conclude(result) => return Ok(Next::Done(result)),
            Step::LeaveAlone(reason) => return Ok(Next::Done(FilingResult::Skipped(reason))),
            Step::Lost => return Ok(Next::Done(lost())),
            Step::Invalid { file_id, detail } => {
                return Err(FilingError::Invalid { file_id, detail })
            }
            Step::Fail(reason) => return Err(FilingError::Group(reason)),
            other => return Err(FilingError::Group(unexpected(&[other]))),
        }
        Ok(Next::Continue)
    }

    /// Deletes a file the decision gave up on; the platform refusing is an error.
    async fn delete(
        &self,
        key: &GroupKey,
        file_id: &str,
        reason: &str,
    ) -> Result<(), ConnectError> {
        tracing::info!(file_id, %key, reason, "deleting a usage file");
        self.client.delete_usage_file(file_id).await.map(drop)
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

    /// Creates the group's file and uploads its workbook. Nobody else can be uploading to a
    /// file this run has only just created, so the upload goes straight out; a replica that
    /// created its own file for the key meets this one at the look before submitting.
    async fn create_and_upload(
        &self,
        group: &Arc<Group>,
        currency: &str,
        outcome: &mut GroupOutcome,
    ) -> Result<FilingResult, FilingError> {
        // The file is created before its workbook is built: a create whose answer is lost can
        // leave a draft, and replicas withdraw such drafts at their look before submitting,
        // which comes after the build; created right before its upload instead, such a draft
        // could appear after the other replica's last look and stay (tests/replicas.rs).
        let digest = self.digest(group).await?;
        let file_id = self
            .client
            .create_usage_file(&self.new_file(&group.key, outcome.part, currency, digest))
            .await?;
        self.client.metrics().usage_file(FileAction::Created);
        recent::remember(
            self.client.base_url(),
            &file_id,
            &group.key,
            self.period,
            outcome.part,
        );
        outcome.file_id = Some(file_id.clone());
        let (bytes, ()) = self.write_workbook(group, outcome, ()).await?;
        if !self.upload(&file_id, bytes).await? {
            return Ok(lost());
        }
        self.after_upload(&group.key, &file_id, outcome).await
    }

    /// Uploads the group's workbook into an existing file — an empty draft found for the key,
    /// or a rejected file being rebuilt — and submits it once processed (see [`Submission`]).
    pub(super) async fn fill(
        &self,
        group: &Arc<Group>,
        file_id: &str,
        outcome: &mut GroupOutcome,
    ) -> Result<FilingResult, FilingError> {
        recent::remember(
            self.client.base_url(),
            file_id,
            &group.key,
            self.period,
            outcome.part,
        );
        let (bytes, digest) = self
            .write_workbook(group, outcome, Digest::default())
            .await?;
        // Another replica filling the same file may have got its upload in while this one built
        // the workbook (from the same source: the same rows). Uploading again would only send
        // the file back to processing under that replica's submit, so carry on with it as is.
        let current = self.client.usage_file(file_id).await?;
        let look = Trigger::Upload {
            file_id: file_id.to_string(),
        };
        match decide(&look, std::slice::from_ref(&current)).as_slice() {
            [Step::Upload(_)] => {
                self.note_digest(digest, &current).await?;
                if !self.upload(file_id, bytes).await? {
                    return Ok(lost());
                }
            }
            [Step::CarryOn(_)] => {
                tracing::info!(file_id, status = %current.status, "another instance uploaded this file first");
            }
            [Step::Lost] => return Ok(lost()),
            other => return Err(FilingError::Group(unexpected(other))),
        }
        self.after_upload(&group.key, file_id, outcome).await
    }

    /// Makes the note of `file`, about to be filled with rows of this `digest`, record it (a
    /// draft made from an earlier read of the source, a rebuild). The platform refusing (the
    /// file moved on meanwhile) only leaves a stale digest: a later run downloads to compare.
    async fn note_digest(&self, digest: Digest, file: &UsageFile) -> Result<(), FilingError> {
        if digest_in_note(file.note.as_deref()) == Some(digest) {
            return Ok(());
        }
        let note = note_with_digest(file.note.as_deref(), digest);
        if let Err(error) = self.client.update_usage_file_note(&file.id, &note).await {
            tracing::warn!(file_id = %file.id, %error, "cannot record the digest of the upload in the file's note");
        }
        Ok(())
    }

    /// Uploads; false when the file was deleted meanwhile (another instance's file won the
    /// group and withdrew this one). An upload refused because the file already holds one
    /// (another instance got there first with the same rows) is carried on with.
    async fn upload(&self, file_id: &str, bytes: Vec<u8>) -> Result<bool, FilingError> {
        tracing::info!(file_id, bytes = bytes.len(), "uploading usage workbook");
        let Err(error) = self.client.upload_usage_file(file_id, bytes.into()).await else {
            self.client.metrics().usage_file(FileAction::Uploaded);
            return Ok(true);
        };
        let Ok(file) = self.client.usage_file(file_id).await else {
            return Err(error.into());
        };
        let look = Trigger::UploadRefused {
            file_id: file_id.to_string(),
        };
        match decide(&look, &[file]).as_slice() {
            [Step::Lost] => {
                tracing::info!(
                    file_id,
                    "another instance's file won this group; this one was withdrawn"
                );
                Ok(false)
            }
            [Step::CarryOn(_)] => {
                tracing::info!(file_id, %error, "another instance uploaded this file first");
                Ok(true)
            }
            // The refusal stands.
            _ => Err(error.into()),
        }
    }

    /// Polls the upload until processed and acts on what it became, or leaves it to its
    /// `ready` event (under the runner, where the sweep follows it).
    async fn after_upload(
        &self,
        key: &GroupKey,
        file_id: &str,
        outcome: &mut GroupOutcome,
    ) -> Result<FilingResult, FilingError> {
        if self.submission == Submission::OnReadyEvent {
            return Ok(FilingResult::Uploaded);
        }
        let file = self.wait_until_processed(file_id).await?;
        let look = Trigger::Processed {
            file_id: file_id.to_string(),
        };
        let steps = decide(&look, &[file]);
        for step in steps.iter().cloned() {
            match self.take(step, key, outcome).await? {
                Next::Continue => {}
                Next::Done(result) => return Ok(result),
                Next::LookAgain => break,
            }
        }
        Err(FilingError::Group(unexpected(&steps)))
    }

    /// Submits the ready `file_id` unless another file won the group (the `ready` handler and
    /// the sweep call this too); false when it lost and was withdrawn. A replica filling the
    /// same file may upload it again in between (back to processing): then it is waited for
    /// and submitted once ready again.
    pub async fn submit_if_still_preferred(
        &self,
        key: &GroupKey,
        part: Part,
        file_id: &str,
    ) -> Result<bool, FilingError> {
        self.submit_if_still_preferred_after(key, part, file_id, None)
            .await
    }

    /// [`Filer::submit_if_still_preferred`], its first look `looked` when the caller has just
    /// listed the key's live files (`Filer::live_files`) itself.
    pub async fn submit_if_still_preferred_after(
        &self,
        key: &GroupKey,
        part: Part,
        file_id: &str,
        mut looked: Option<Vec<UsageFile>>,
    ) -> Result<bool, FilingError> {
        let before_submit = Trigger::Submit {
            file_id: file_id.to_string(),
        };
        let refused = Trigger::SubmitRefused {
            file_id: file_id.to_string(),
        };
        'looks: for _ in 0..3 {
            let live = match looked.take() {
                Some(live) => live,
                None => self.live_files(key, part).await?,
            };
            let steps = decide(&before_submit, &live);
            for step in steps.iter().cloned() {
                match step {
                    Step::Withdraw { file_id, winner } => {
                        self.withdraw_loser(&file_id, &winner).await?
                    }
                    Step::Delete { file_id, reason } => self.delete(key, &file_id, &reason).await?,
                    Step::Lost => return Ok(false),
                    Step::Submit(file_id) => {
                        let Err(error) = self.client.submit_usage_file(&file_id).await else {
                            self.client.metrics().usage_file(FileAction::Submitted);
                            recent::submitted(self.client.base_url(), &file_id);
                            return Ok(true);
                        };
                        let file = self.wait_until_processed(&file_id).await?;
                        match decide(&refused, &[file]).as_slice() {
                            [Step::SubmitIfPreferred(_)] => {
                                tracing::info!(file_id, %error, "submitting again");
                                continue 'looks;
                            }
                            [Step::Conclude(_)] => {
                                recent::submitted(self.client.base_url(), &file_id);
                                return Ok(true);
                            }
                            // The refusal stands.
                            _ => return Err(error.into()),
                        }
                    }
                    other => return Err(FilingError::Group(unexpected(&[other]))),
                }
            }
            return Err(FilingError::Group(unexpected(&steps)));
        }
        Err(FilingError::Group(format!(
            "usage file {file_id} could not be submitted; a later run will retry"
        )))
    }
}
