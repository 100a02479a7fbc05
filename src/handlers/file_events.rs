//! `usage_file_request_processing`: what to do when one of our usage files changes status
//! (see docs/architecture.md, Events).
//!
//! The handler acts on the file's *current* status, not on the status that triggered the
//! event, so a late or repeated delivery does the right thing: a file that was rejected and has
//! since been rebuilt is `ready` (submit) or `pending` (skipped as the runner's status re-check
//! would), never rebuilt twice. It reads the file itself, in one request where the runner's
//! re-check and read take two: a file this process filed is found in the listing of its group's
//! live files, which is also the look the `ready` path makes before submitting (the replica
//! rule), so submitting a `ready` file costs that listing and the submit; any other file is
//! read by id.
//!
//! The scheduled run, before it answers, follows its uploads and submits a file whose event
//! never came ([`crate::usage::sweep`]); so that it and this handler do not both submit a file,
//! the handler takes its turn at the file ([`in_hand`]) before its look and keeps it until its
//! submit is answered: the sweep leaves the file alone meanwhile, and when the sweep has it
//! (submitting), the handler waits and then finds the file submitted.
//!
//! What to do at each status is decided with the rest of filing's rules
//! ([`crate::usage::filing::decide`], `Trigger::Event`): `ready` is submitted after the replica
//! rule, `invalid` alerted, `accepted` logged, `rejected` rebuilt below the resubmission limit
//! and left for a person at it. This handler carries the steps out: the alerts, the submit, the
//! rebuild.
//!
//! Rebuilds after rejections are counted on the platform, in the file's `note`
//! (`… [connect-payg rebuilds: N]`): a restart does not reset the count. The count is written
//! right before the upload and put back when the upload did not happen, so only a rebuild whose
//! upload went out uses up a resubmission (a crash between the two still counts: the safe side).
//! A rebuild that failed answers `retry` when a later attempt may succeed (Connect or the source
//! unreachable) and `fail` with an alert when it cannot (the corrected source has no records for
//! the group, the workbook breaks the rules): never `success`.
//!
//! Neither a `ready` nor a `rejected` file of a month that has not ended is acted on: the task
//! answers `fail` saying when the month ends.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;

use super::Workdir;
use crate::alert::{Alert, AlertKind, Severity};
use crate::connect::models::UsageFile;
use crate::connect::{ConnectError, FileStatus};
use crate::devops::registry::{status_mismatch_message, Handler, HandlerOutcome, TaskContext};
use crate::metrics::FileAction;
use crate::usage::filing::decide::{decide, unexpected, Step, Trigger};
use crate::usage::filing::late::{self, Part};
use crate::usage::filing::{in_hand, live_files, recent, FilingResult};
use crate::usage::group::GroupKey;
use crate::usage::period::Period;
use crate::usage::report::ReportError;
use crate::usage::report::Reporter;

pub use crate::usage::filing::note::{rebuild_count, rebuild_note};

/// The event handler; remembers which files it is rebuilding right now so two deliveries
/// racing each other in this process do not both rebuild.
#[derive(Default)]
pub struct FileEvents {
    rebuilding: Arc<Mutex<HashSet<String>>>,
}

/// A file claimed for rebuilding in this process, released when dropped: whichever way the
/// handler ends, including cancelled at its time limit.
struct Rebuilding {
    files: Arc<Mutex<HashSet<String>>>,
    file_id: String,
}

impl Rebuilding {
    /// `None` when another delivery in this process is rebuilding the file.
    fn claim(files: &Arc<Mutex<HashSet<String>>>, file_id: &str) -> Option<Rebuilding> {
        let mut claimed = files.lock().unwrap_or_else(PoisonError::into_inner);
        claimed.insert(file_id.to_string()).then(|| Rebuilding {
            files: files.clone(),
            file_id: file_id.to_string(),
        })
    }
}

impl Drop for Rebuilding {
    fn drop(&mut self) {
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.file_id);
    }
}

impl Handler for FileEvents {
    fn handle(&self, ctx: TaskContext, _argument: Value) -> BoxFuture<'static, HandlerOutcome> {
        handle(ctx, self.rebuilding.clone()).boxed()
    }

    fn reads_own_object(&self) -> bool {
        true
    }
}

/// The event's file as it is now; `looked` is the listing of its group's live files when that
/// is how it was read.
struct Current {
    file: UsageFile,
    looked: Option<Vec<UsageFile>>,
}

/// Reads the event's file fresh, in one request: a file this process filed is found in the
/// listing of its group part's live files (the look before submitting, made now instead of
/// later), any other file (or one missing from that listing) is read by id. `None` when the
/// file is in none of the statuses subscribed to, deleted or gone: the event is stale.
async fn read_current(ctx: &TaskContext) -> Result<Option<Current>, ConnectError> {
    let id = ctx.object_id.as_str();
    let subscribed = |file: &UsageFile| ctx.statuses.iter().any(|s| s == file.status.as_str());
    if let Some((key, period, part)) = recent::group_of(ctx.client.base_url(), id) {
        let looked = live_files(&ctx.client, &key, period, part).await?;
        if let Some(file) = looked.iter().find(|file| file.id == id).cloned() {
            return Ok(subscribed(&file).then_some(Current {
                file,
                looked: Some(looked),
            }));
        }
    }
    match ctx.client.usage_file(id).await {
        Ok(file) => Ok(subscribed(&file).then_some(Current { file, looked: None })),
        Err(error) if error.status() == Some(404) => Ok(None),
        Err(error) => Err(error),
    }
}

/// The group, period and part a file belongs to, when it is one of ours (a supplemental file
/// of late records included).
fn ours(file: &UsageFile) -> Option<(GroupKey, Period, Part)> {
    let (key, period, part) = late::parse_external_id(file.external_id.as_deref()?)?;
    let matches = file.product_id().is_none_or(|p| p == key.product_id)
        && file.contract_id().is_none_or(|c| c == key.contract_id);
    matches.then_some((key, period, part))
}

async fn handle(ctx: TaskContext, rebuilding: Arc<Mutex<HashSet<String>>>) -> HandlerOutcome {
    // Kept from the look to the submit's answer; let go at once when there is nothing to submit.
    let turn = in_hand::wait_turn(ctx.client.base_url(), &ctx.object_id).await;
    let Current { file, mut looked } = match read_current(&ctx).await {
        Ok(Some(current)) => current,
        Ok(None) => return HandlerOutcome::Skip(status_mismatch_message(&ctx.statuses)),
        Err(error) => {
            return HandlerOutcome::Retry(format!("Reading {} failed: {error}", ctx.object_id))
        }
    };
    let Some((key, period, part)) = ours(&file) else {
        return HandlerOutcome::Skip(format!(
            "usage file {} is not managed by connect-payg (external_id {:?})",
            file.id, file.external_id
        ));
    };
    if file.status == FileStatus::Rejected {
        ctx.client.metrics().usage_file(FileAction::Rejected);
    }
    let reporter = Reporter::new(ctx.client.clone(), ctx.settings.report.clone());
    let alert = |kind, severity, message: String| {
        let mut alert = Alert::new(kind, severity, message).group(
            &key.contract_id,
            &key.product_id,
            period.to_string(),
        );
        alert.file_id = Some(file.id.clone());
        alert
    };
    let look = Trigger::Event {
        file_id: file.id.clone(),
        ended: period.check_ended((reporter.now)()),
        rebuilds: rebuild_count(file.note.as_deref()),
        limit: ctx.settings.report.max_resubmissions,
    };
    // Held until the handler ends, however it ends.
    let mut _claim = None;
    let steps = decide(&look, std::slice::from_ref(&file));
    if !matches!(steps.first(), Some(Step::SubmitIfPreferred(_))) {
        drop(turn);
    }
    for step in steps {
        match step {
            Step::Fail(reason) => return HandlerOutcome::Fail(reason),
            Step::LeaveAlone(reason) => return HandlerOutcome::Skip(reason),
            Step::SubmitIfPreferred(file_id) => {
                return match reporter
                    .submit_ready(&key, period, part, &file_id, looked.take())
                    .await
                {
                    Ok(true) => {
                        tracing::info!(%file_id, "submitted ready usage file");
                        HandlerOutcome::Success(None)
                    }
                    Ok(false) => HandlerOutcome::Success(Some(format!(
                        "usage file {file_id} lost to another file of its group and was withdrawn"
                    ))),
                    Err(error) => {
                        HandlerOutcome::Retry(format!("submitting {file_id} failed: {error}"))
                    }
                }
            }
            Step::Alert {
                kind,
                severity,
                message,
                details,
            } => {
                reporter
                    .alerter
                    .send(alert(kind, severity, message).details(details))
                    .await
            }
            Step::LogAccepted => {
                let records = file.records.unwrap_or_default();
                let stats = file.stats.unwrap_or_default();
                tracing::info!(
                    file_id = %file.id,
                    contract = %key.contract_id,
                    product = %key.product_id,
                    %period,
                    valid_records = records.valid,
                    accepted = stats.accepted,
                    note = file.acceptance_note.as_deref().unwrap_or(""),
                    "usage file accepted by the provider"
                );
            }
            Step::Claim(file_id) => match Rebuilding::claim(&rebuilding, &file_id) {
                Some(claim) => _claim = Some(claim),
                None => {
                    return HandlerOutcome::Skip(format!(
                        "usage file {file_id} is already being rebuilt"
                    ))
                }
            },
            Step::Rebuild { count, .. } => {
                let target = Target {
                    key: &key,
                    period,
                    part,
                };
                return rebuild(&ctx, &reporter, &file, target, count, alert).await;
            }
            other => {
                return HandlerOutcome::Fail(format!(
                    "usage file {}: {}",
                    file.id,
                    unexpected(&[other])
                ))
            }
        }
    }
    HandlerOutcome::Success(None)
}

/// Which file of which group a rebuild is for.
struct Target<'k> {
    key: &'k GroupKey,
    period: Period,
    part: Part,
}

/// Rebuilds the rejected `file` from the (corrected) source into the same file, as rebuild
/// number `count`, and uploads it; its own `ready` event submits it. Records the group's other
/// submitted files hold (its main file, its supplemental files of late records) are left out.
async fn rebuild(
    ctx: &TaskContext,
    reporter: &Reporter,
    file: &UsageFile,
    Target { key, period, part }: Target<'_>,
    count: u32,
    alert: impl Fn(AlertKind, Severity, String) -> Alert,
) -> HandlerOutcome {
    let group = match reporter.regroup(key, period).await {
        Ok(Some(group)) => match reporter.without_filed(group, period, &file.id).await {
            Ok(Some(group)) => group,
            Ok(None) => {
                let message = "every record the corrected source has for this contract and product is in another submitted file of the group; the rejected usage file is left for a person";
                return left_for_person(reporter, file, message, &alert).await;
            }
            Err(error) if error.is_transient() => {
                return HandlerOutcome::Retry(format!("rebuilding {} failed: {error}", file.id))
            }
            Err(error) => {
                return HandlerOutcome::Fail(format!("rebuilding {} failed: {error}", file.id))
            }
        },
        Ok(None) => {
            let message = "the corrected source has no records for this contract and product; the rejected usage file is left for a person";
            return left_for_person(reporter, file, message, &alert).await;
        }
        Err(error @ (ReportError::Config(_) | ReportError::NotEnded(_))) => {
            return HandlerOutcome::Fail(format!("rebuilding {} failed: {error}", file.id))
        }
        Err(error) => {
            return HandlerOutcome::Retry(format!("rebuilding {} failed: {error}", file.id))
        }
    };
    let workdir = match Workdir::for_task(&ctx.settings.report) {
        Ok(workdir) => workdir,
        Err(error) => {
            return HandlerOutcome::Retry(format!("cannot create a scratch directory: {error}"))
        }
    };
    // Counted before the upload (a crash after it must still count), uncounted if it failed.
    let counted = rebuild_note(file.note.as_deref(), count);
    if let Err(error) = ctx.client.update_usage_file_note(&file.id, &counted).await {
        return HandlerOutcome::Retry(format!(
            "recording the rebuild on {} failed: {error}",
            file.id
        ));
    }
    let outcome = match reporter
        .rebuild_into(group, part, &file.id, workdir.job(period))
        .await
    {
        Ok(outcome) => outcome,
        Err(error) => {
            uncount(ctx, file).await;
            return HandlerOutcome::Retry(format!("rebuilding {} failed: {error}", file.id));
        }
    };
    let FilingResult::Failed(reason) = outcome.result else {
        ctx.client.metrics().usage_file(FileAction::Rebuilt);
        tracing::info!(file_id = %file.id, rows = outcome.rows, "rejected usage file rebuilt and uploaded; its ready event submits it");
        return HandlerOutcome::Success(None);
    };
    uncount(ctx, file).await;
    if outcome.transient {
        return HandlerOutcome::Retry(format!("rebuilding {} failed: {reason}", file.id));
    }
    let kind = if outcome.error_detail.is_some() {
        AlertKind::InvalidFile
    } else {
        AlertKind::FilingFailed
    };
    reporter
        .alerter
        .send(
            alert(
                kind,
                Severity::Error,
                "rebuilding the rejected usage file failed; it is left for a person".into(),
            )
            .details(reason.clone()),
        )
        .await;
    HandlerOutcome::Fail(format!("rebuilding {} failed: {reason}", file.id))
}

/// A rebuild that has nothing to upload: `filing_failed` alert, the task fails.
async fn left_for_person(
    reporter: &Reporter,
    file: &UsageFile,
    message: &str,
    alert: &impl Fn(AlertKind, Severity, String) -> Alert,
) -> HandlerOutcome {
    reporter
        .alerter
        .send(alert(
            AlertKind::FilingFailed,
            Severity::Error,
            message.into(),
        ))
        .await;
    HandlerOutcome::Fail(format!("usage file {}: {message}", file.id))
}

/// Puts the file's note back as it was before this rebuild was counted (its upload did not go
/// out). When that fails the rebuild stays counted: a person is asked sooner, never later.
async fn uncount(ctx: &TaskContext, file: &UsageFile) {
    let note = file.note.as_deref().unwrap_or_default();
    if let Err(error) = ctx.client.update_usage_file_note(&file.id, note).await {
        tracing::warn!(file_id = %file.id, %error, "cannot take back the count of a rebuild that did not upload");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_released_however_its_holder_ends() {
        let files = Arc::new(Mutex::new(HashSet::new()));
        let claim = Rebuilding::claim(&files, "UF-1").expect("free");
        assert!(Rebuilding::claim(&files, "UF-1").is_none(), "held");
        assert!(Rebuilding::claim(&files, "UF-2").is_some(), "per file");
        drop(claim);
        assert!(Rebuilding::claim(&files, "UF-1").is_some(), "released");
        // A holder cancelled mid-way (its future dropped) releases it too.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let holder = {
            let files = files.clone();
            async move {
                let _claim = Rebuilding::claim(&files, "UF-3").unwrap();
                std::future::pending::<()>().await;
            }
        };
        runtime.block_on(async {
            let _ = tokio::time::timeout(std::time::Duration::from_millis(10), holder).await;
        });
        assert!(
            Rebuilding::claim(&files, "UF-3").is_some(),
            "released on cancel"
        );
    }
}
