//! The schedulable `generate_monthly_usage_reports`: the monthly report as a task (see
//! docs/architecture.md, The monthly report).
//!
//! Failures a later attempt can fix (the source or Connect unreachable, a group that could not
//! be filed) answer `retry`: re-running is safe because filing is idempotent. A configuration
//! problem answers `fail` with the setting named, since retrying cannot fix it; so do a month
//! that has not ended (`REPORT_PERIOD` in the future or the running month) and a source without
//! a single record for the month (a broken export is not fixed by retrying right away; nothing
//! is filed and the `empty_source` alert says so).

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;

use super::Workdir;
use crate::devops::registry::{Handler, HandlerOutcome, TaskContext};
use crate::usage::filing::FilingResult;
use crate::usage::report::{ReportError, Reporter};
use crate::usage::summary::{write_bad_records, Summary};

pub struct MonthlyReport;

impl Handler for MonthlyReport {
    fn handle(&self, ctx: TaskContext, _schedule: Value) -> BoxFuture<'static, HandlerOutcome> {
        run(ctx).boxed()
    }
}

async fn run(ctx: TaskContext) -> HandlerOutcome {
    let reporter = Reporter::new(ctx.client.clone(), ctx.settings.report.clone());
    let workdir = match Workdir::for_task(&ctx.settings.report) {
        Ok(workdir) => workdir,
        Err(error) => {
            return HandlerOutcome::Retry(format!("cannot create a scratch directory: {error}"))
        }
    };
    let job = workdir.job(reporter.period((reporter.now)()));
    let result = reporter.run(&job, None).await;
    if let (Ok(summary), true) = (&result, workdir.keep()) {
        if let Err(error) = write_bad_records(&job.workdir, summary).await {
            tracing::warn!(%error, "cannot write the bad-records file");
        }
    }
    match result {
        Ok(summary) if summary.empty_source() => HandlerOutcome::Fail(summary.headline()),
        Ok(summary) if summary.failed() == 0 => {
            ctx.client
                .metrics()
                .scheduled_report_succeeded(&summary.period.to_string());
            HandlerOutcome::Success(Some(summary.headline()))
        }
        // The platform refused the uploads themselves: the same source would be refused again,
        // so only a person can help (the alerts name the files and the platform's detail).
        Ok(summary) if only_invalid_files(&summary) => HandlerOutcome::Fail(summary.headline()),
        Ok(summary) => HandlerOutcome::Retry(summary.headline()),
        Err(error @ (ReportError::Config(_) | ReportError::NotEnded(_))) => {
            HandlerOutcome::Fail(error.to_string())
        }
        Err(error) => HandlerOutcome::Retry(error.to_string()),
    }
}

/// Every group that failed did so because the platform found its upload invalid.
fn only_invalid_files(summary: &Summary) -> bool {
    summary
        .groups
        .iter()
        .filter(|g| matches!(g.result, FilingResult::Failed(_)))
        .all(|g| g.error_detail.is_some())
}
