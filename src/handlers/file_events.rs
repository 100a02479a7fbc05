//! `usage_file_request_processing` (spec §6): what to do when one of our usage files changes
//! status.
//!
//! The handler acts on the file's *current* status (the runner fetches it fresh), not on the
//! status that triggered the event, so a late or repeated delivery does the right thing: a file
//! that was rejected and has since been rebuilt is `ready` (submit) or `pending` (skipped by the
//! runner's status re-check), never rebuilt twice.
//!
//! Rebuilds after rejections are counted on the platform, in the file's `note`
//! (`… [connect-payg rebuilds: N]`), written before each rebuild starts: a restart does not
//! reset the count, and a crash mid-rebuild still counts against `MAX_RESUBMISSIONS`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;

use super::Workdir;
use crate::alert::{Alert, AlertKind, Severity};
use crate::connect::models::UsageFile;
use crate::devops::registry::{Handler, HandlerOutcome, TaskContext};
use crate::usage::filing::FilingResult;
use crate::usage::group::GroupKey;
use crate::usage::period::Period;
use crate::usage::report::Reporter;

const REBUILD_MARKER: &str = "[connect-payg rebuilds: ";

/// How many rebuilds the file's note records.
pub fn rebuild_count(note: Option<&str>) -> u32 {
    note.and_then(|note| {
        let start = note.rfind(REBUILD_MARKER)? + REBUILD_MARKER.len();
        let end = start + note[start..].find(']')?;
        note[start..end].trim().parse().ok()
    })
    .unwrap_or(0)
}

/// The note with the rebuild count set to `count` (other text kept, within the 200-char limit).
pub fn rebuild_note(note: Option<&str>, count: u32) -> String {
    let base = note
        .map(|n| match n.rfind(REBUILD_MARKER) {
            Some(at) => n[..at].trim_end(),
            None => n.trim_end(),
        })
        .unwrap_or_default();
    let marker = format!("{REBUILD_MARKER}{count}]");
    let room = 200 - marker.len() - 1;
    let base: String = base.chars().take(room).collect();
    if base.is_empty() {
        marker
    } else {
        format!("{base} {marker}")
    }
}

/// The event handler; remembers which files it is rebuilding right now so two deliveries
/// racing each other in this process do not both rebuild.
#[derive(Default)]
pub struct FileEvents {
    rebuilding: Arc<Mutex<HashSet<String>>>,
}

impl Handler for FileEvents {
    fn handle(&self, ctx: TaskContext, argument: Value) -> BoxFuture<'static, HandlerOutcome> {
        handle(ctx, argument, self.rebuilding.clone()).boxed()
    }
}

/// The group a file belongs to, when it is one of ours.
fn ours(file: &UsageFile) -> Option<(GroupKey, Period)> {
    let (key, period) = GroupKey::parse_external_id(file.external_id.as_deref()?)?;
    let matches = file.product_id().is_none_or(|p| p == key.product_id)
        && file.contract_id().is_none_or(|c| c == key.contract_id);
    matches.then_some((key, period))
}

async fn handle(
    ctx: TaskContext,
    argument: Value,
    rebuilding: Arc<Mutex<HashSet<String>>>,
) -> HandlerOutcome {
    let file: UsageFile = match serde_json::from_value(argument) {
        Ok(file) => file,
        Err(error) => {
            return HandlerOutcome::Fail(format!(
                "usage file {} could not be read: {error}",
                ctx.object_id
            ))
        }
    };
    let Some((key, period)) = ours(&file) else {
        return HandlerOutcome::Skip(format!(
            "usage file {} is not managed by connect-payg (external_id {:?})",
            file.id, file.external_id
        ));
    };
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
    match file.status.as_str() {
        "ready" => match reporter.submit_ready(&key, period, &file.id).await {
            Ok(true) => {
                tracing::info!(file_id = %file.id, "submitted ready usage file");
                HandlerOutcome::Success(None)
            }
            Ok(false) => HandlerOutcome::Success(Some(format!(
                "usage file {} lost to another file of its group and was withdrawn",
                file.id
            ))),
            Err(error) => HandlerOutcome::Retry(format!("submitting {} failed: {error}", file.id)),
        },
        "invalid" => {
            let detail = file
                .error_detail
                .clone()
                .unwrap_or_else(|| "the platform gave no detail".into());
            reporter
                .alerter
                .send(
                    alert(
                        AlertKind::InvalidFile,
                        Severity::Error,
                        "the platform marked the usage file invalid".into(),
                    )
                    .details(detail),
                )
                .await;
            HandlerOutcome::Success(None)
        }
        "accepted" => {
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
            HandlerOutcome::Success(None)
        }
        "rejected" => {
            if !rebuilding
                .lock()
                .expect("not poisoned")
                .insert(file.id.clone())
            {
                return HandlerOutcome::Skip(format!(
                    "usage file {} is already being rebuilt",
                    file.id
                ));
            }
            let outcome = rejected(&ctx, &reporter, &file, &key, period, alert).await;
            rebuilding.lock().expect("not poisoned").remove(&file.id);
            outcome
        }
        other => HandlerOutcome::Skip(format!("usage file {} is {other}; nothing to do", file.id)),
    }
}

async fn rejected(
    ctx: &TaskContext,
    reporter: &Reporter,
    file: &UsageFile,
    key: &GroupKey,
    period: Period,
    alert: impl Fn(AlertKind, Severity, String) -> Alert,
) -> HandlerOutcome {
    let note = file
        .rejection_note
        .clone()
        .unwrap_or_else(|| "no note given".into());
    let rebuilds = rebuild_count(file.note.as_deref());
    let limit = ctx.settings.report.max_resubmissions;
    if rebuilds >= limit {
        reporter
            .alerter
            .send(
                alert(
                    AlertKind::ResubmissionLimit,
                    Severity::Error,
                    format!(
                        "the provider rejected the usage file again after {rebuilds} rebuilds; it is left for a person (MAX_RESUBMISSIONS = {limit})"
                    ),
                )
                .details(note),
            )
            .await;
        return HandlerOutcome::Success(None);
    }
    reporter
        .alerter
        .send(
            alert(
                AlertKind::RejectedFile,
                Severity::Warning,
                format!(
                    "the provider rejected the usage file; rebuilding it from the source (rebuild {} of {limit})",
                    rebuilds + 1
                ),
            )
            .details(note),
        )
        .await;
    let workdir = match Workdir::for_task(&ctx.settings.report) {
        Ok(workdir) => workdir,
        Err(error) => {
            return HandlerOutcome::Retry(format!("cannot create a scratch directory: {error}"))
        }
    };
    let counted = rebuild_note(file.note.as_deref(), rebuilds + 1);
    if let Err(error) = ctx.client.update_usage_file_note(&file.id, &counted).await {
        return HandlerOutcome::Retry(format!(
            "recording the rebuild on {} failed: {error}",
            file.id
        ));
    }
    let result = reporter
        .rebuild_into(key, &file.id, workdir.job(period))
        .await;
    match result {
        Ok(outcome) => match outcome.result {
            FilingResult::Failed(reason) => {
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
                            "rebuilding the rejected usage file failed".into(),
                        )
                        .details(reason.clone()),
                    )
                    .await;
                HandlerOutcome::Success(Some(reason))
            }
            _ => {
                tracing::info!(file_id = %file.id, rows = outcome.rows, "rejected usage file rebuilt and uploaded; its ready event submits it");
                HandlerOutcome::Success(None)
            }
        },
        Err(error) => HandlerOutcome::Retry(format!("rebuilding {} failed: {error}", file.id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuild_counts_live_in_the_note() {
        assert_eq!(rebuild_count(None), 0);
        assert_eq!(rebuild_count(Some("generated by connect-payg 0.1.0")), 0);
        let once = rebuild_note(Some("generated by connect-payg 0.1.0"), 1);
        assert_eq!(
            once,
            "generated by connect-payg 0.1.0 [connect-payg rebuilds: 1]"
        );
        assert_eq!(rebuild_count(Some(&once)), 1);
        let twice = rebuild_note(Some(&once), 2);
        assert_eq!(
            twice,
            "generated by connect-payg 0.1.0 [connect-payg rebuilds: 2]"
        );
        assert_eq!(rebuild_count(Some(&twice)), 2);
        let long = "x".repeat(300);
        let note = rebuild_note(Some(&long), 3);
        assert!(note.chars().count() <= 200);
        assert_eq!(rebuild_count(Some(&note)), 3);
    }
}
