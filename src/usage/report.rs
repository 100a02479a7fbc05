//! The monthly report (spec §5), shared by the schedulable, the `report` command and the
//! rejection handler: read the month's records, group them, file each group, and account for
//! every record.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use indicatif::ProgressBar;

use crate::alert::{Alert, AlertKind, Alerter, Severity};
use crate::config::{ConfigError, ReportSettings};
use crate::connect::ConnectClient;
use crate::usage::filing::{Filer, FilingError, FilingResult, GroupOutcome, Submission};
use crate::usage::group::{self, CollectError, Collection, Group, GroupKey};
use crate::usage::period::Period;
use crate::usage::resolve::Catalog;
use crate::usage::source::UsageSource;
use crate::usage::summary::Summary;
use crate::usage::workbook::RunPackage;

/// Bad records listed by line in an alert; the rest are counted (the CSV has them all).
const BAD_RECORDS_IN_ALERT: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Collect(#[from] CollectError),
    #[error("cannot prepare the workbook directory {path}: {source}")]
    Workdir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One run's request: which month, which groups, and whether to touch the platform.
#[derive(Debug, Clone)]
pub struct ReportJob {
    pub period: Period,
    /// Only these contracts (all when empty).
    pub contracts: Vec<String>,
    /// Only these products (all when empty).
    pub products: Vec<String>,
    pub dry_run: bool,
    /// Where workbooks are written.
    pub workdir: PathBuf,
    /// Keep workbooks after upload.
    pub keep_workbooks: bool,
    /// Whether this run submits its uploads or their `ready` events do.
    pub submission: Submission,
}

impl ReportJob {
    fn wants(&self, key: &GroupKey) -> bool {
        (self.contracts.is_empty() || self.contracts.contains(&key.contract_id))
            && (self.products.is_empty() || self.products.contains(&key.product_id))
    }
}

/// Runs reports against one Connect account with one set of report settings.
#[derive(Clone)]
pub struct Reporter {
    pub client: ConnectClient,
    pub settings: ReportSettings,
    pub alerter: Alerter,
}

impl Reporter {
    pub fn new(client: ConnectClient, settings: ReportSettings) -> Self {
        let alerter = Alerter::new(settings.alert_webhook_url.as_deref());
        Reporter {
            client,
            settings,
            alerter,
        }
    }

    /// `REPORT_PERIOD`, or the calendar month before `now` (UTC).
    pub fn period(&self, now: DateTime<Utc>) -> Period {
        self.settings
            .report_period
            .unwrap_or_else(|| Period::previous_to(now))
    }

    fn filer(&self, job: &ReportJob) -> Filer {
        Filer {
            client: self.client.clone(),
            period: job.period,
            workdir: job.workdir.clone(),
            package: RunPackage::default(),
            keep_workbooks: job.keep_workbooks,
            dry_run: job.dry_run,
            ready_timeout: self.settings.ready_timeout,
            poll_interval: self.settings.ready_poll_interval,
            submission: job.submission,
        }
    }

    /// Reads and sorts the month's records.
    pub async fn collect(&self, period: Period) -> Result<Collection, ReportError> {
        let source = UsageSource::new(
            self.settings.require_usage_source()?,
            self.settings.usage_source_auth.clone(),
        );
        tracing::info!(source = %source.display_name(period), %period, "reading usage records");
        let records = source.open(period).await.map_err(CollectError::from)?;
        let catalog = Catalog::new(
            self.client.clone(),
            self.settings.asset_search_criteria.clone(),
            self.settings.item_search_criteria,
            self.settings.api_concurrency,
        );
        Ok(group::collect(records, period, &catalog).await?)
    }

    /// The whole report: collect, file every wanted group, alert, summarise.
    pub async fn run(
        &self,
        job: &ReportJob,
        progress: Option<&ProgressBar>,
    ) -> Result<Summary, ReportError> {
        prepare_workdir(job).await?;
        let collection = self.collect(job.period).await?;
        let groups: Vec<Arc<Group>> = collection
            .groups
            .into_values()
            .filter(|g| job.wants(&g.key))
            .map(Arc::new)
            .collect();
        if let Some(bar) = progress {
            bar.set_length(groups.len() as u64);
            bar.set_message("filing usage files");
        }
        let filer = self.filer(job);
        let mut known = match job.dry_run {
            true => HashMap::new(),
            false => filer
                .live_files_of(groups.iter().map(|g| &g.key))
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "listing the month's files failed; looking them up one by one");
                    HashMap::new()
                }),
        };
        // Filing a group is mostly waiting for the platform to process its upload, so many more
        // groups are in progress than requests in flight (the client enforces API_CONCURRENCY).
        let concurrency = self.settings.api_concurrency * 4;
        let outcomes: Vec<GroupOutcome> = futures::stream::iter(groups)
            .map(|group| {
                let filer = &filer;
                let known = known.remove(&group.key);
                async move {
                    let outcome = filer.file_group(group, known).await;
                    if let Some(bar) = progress {
                        bar.inc(1);
                    }
                    outcome
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut outcomes = outcomes;
        outcomes.sort_by(|a, b| a.key.cmp(&b.key));
        let summary = Summary {
            period: job.period,
            records_read: collection.records_read,
            groups: outcomes,
            bad: collection.bad,
            out_of_scope: collection.out_of_scope,
        };
        if !job.dry_run {
            self.alert(&summary).await;
        }
        tracing::info!("{}", summary.headline());
        Ok(summary)
    }

    async fn alert(&self, summary: &Summary) {
        let period = summary.period.to_string();
        if !summary.bad.is_empty() {
            let mut details: Vec<String> = summary
                .bad
                .iter()
                .take(BAD_RECORDS_IN_ALERT)
                .map(ToString::to_string)
                .collect();
            if summary.bad.len() > BAD_RECORDS_IN_ALERT {
                details.push(format!(
                    "… and {} more",
                    summary.bad.len() - BAD_RECORDS_IN_ALERT
                ));
            }
            let counts: Vec<String> = summary
                .bad_by_reason()
                .iter()
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect();
            let mut alert = Alert::new(
                AlertKind::BadRecords,
                Severity::Warning,
                format!(
                    "{} usage records for {period} were not reported ({})",
                    summary.bad.len(),
                    counts.join(", ")
                ),
            )
            .details(details.join("\n"));
            alert.period = Some(period.clone());
            self.alerter.send(alert).await;
        }
        for group in &summary.groups {
            let FilingResult::Failed(reason) = &group.result else {
                continue;
            };
            let (kind, message) = match &group.error_detail {
                Some(_) => (
                    AlertKind::InvalidFile,
                    "the platform marked the usage file invalid",
                ),
                None => (AlertKind::FilingFailed, "the usage file could not be filed"),
            };
            let mut alert = Alert::new(kind, Severity::Error, message)
                .group(&group.key.contract_id, &group.key.product_id, &period)
                .details(group.error_detail.clone().unwrap_or_else(|| reason.clone()));
            alert.file_id = group.file_id.clone();
            self.alerter.send(alert).await;
        }
    }

    /// Submits our `ready` file `file_id` unless another file won its group (the reaction to
    /// its `ready` event); false when it lost and was withdrawn.
    pub async fn submit_ready(
        &self,
        key: &GroupKey,
        period: Period,
        file_id: &str,
    ) -> Result<bool, FilingError> {
        let job = ReportJob {
            period,
            contracts: Vec::new(),
            products: Vec::new(),
            dry_run: false,
            // Submitting writes no workbook.
            workdir: PathBuf::new(),
            keep_workbooks: false,
            submission: Submission::OnReadyEvent,
        };
        self.filer(&job)
            .submit_if_still_preferred(key, file_id)
            .await
    }

    /// Rebuilds one group of `job`'s month from the source and uploads it into the existing
    /// file `file_id` (after a rejection), to be submitted once ready.
    pub async fn rebuild_into(
        &self,
        key: &GroupKey,
        file_id: &str,
        job: ReportJob,
    ) -> Result<GroupOutcome, ReportError> {
        let period = job.period;
        let job = ReportJob {
            contracts: vec![key.contract_id.clone()],
            products: vec![key.product_id.clone()],
            dry_run: false,
            ..job
        };
        prepare_workdir(&job).await?;
        let mut collection = self.collect(period).await?;
        let Some(group) = collection.groups.remove(key) else {
            return Ok(GroupOutcome {
                key: key.clone(),
                file_id: Some(file_id.to_string()),
                rows: 0,
                result: FilingResult::Failed(
                    "the corrected source has no records for this contract and product".into(),
                ),
                workbook: None,
                error_detail: None,
            });
        };
        Ok(self
            .filer(&job)
            .refill_group(Arc::new(group), file_id)
            .await)
    }
}

async fn prepare_workdir(job: &ReportJob) -> Result<(), ReportError> {
    crate::output::create_dir(&job.workdir).map_err(|failed| ReportError::Workdir {
        path: failed.path,
        source: failed.source,
    })
}
