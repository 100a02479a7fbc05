//! The report of a period, shared by the schedulable, the `report` command and the rejection
//! handler: read the period's records, group them, file each group, and account for every
//! record. A run over several periods ([`Reporter::run_periods`], the catch-up window) files
//! them one after another, oldest first, each exactly as a run of that period alone: memory
//! holds one period's rows at a time (what was looked up in Connect is kept across them, so a
//! subscription is resolved once a run), and a period that fails does not stop the others.
//!
//! Rules a run applies besides filing:
//! * only a period that is reportable is reported ([`Period::check_reportable`]: ended, plus
//!   `REPORT_DELAY_HOURS`);
//! * a source without a single record for the month is an `empty_source` alert (error), since
//!   that is almost always a broken export, unless the job allows it;
//! * the bad-records alert goes out from the run that files (creates, uploads or submits) at
//!   least one file of the month, or when the month has no group to file at all: re-runs of a
//!   filed month do not repeat it, and the platform stays the only state;
//! * a `--contract`/`--product` filter that selects nothing is said in the summary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use indicatif::ProgressBar;

use crate::alert::{truncated, Alert, AlertKind, Alerter, Severity};
use crate::config::{ConfigError, ReportSettings};
use crate::connect::models::UsageFile;
use crate::connect::ConnectClient;
use crate::usage::filing::cadence::Overlap;
use crate::usage::filing::late::Part;
use crate::usage::filing::{
    write_late_records, Filer, FilingError, FilingResult, GroupOutcome, Listing, Submission,
};
use crate::usage::group::{self, CollectError, Collection, Group, GroupKey, Lookups};
use crate::usage::period::{NotEnded, Period};
use crate::usage::resolve::Resolver;
use crate::usage::scoped;
use crate::usage::source::{RecordStream, UsageSource};
use crate::usage::spill::{remove_stale, scratch_root};
use crate::usage::summary::{Ledger, PeriodReport, Summary};
use crate::usage::sweep;
use crate::usage::workbook::RunPackage;

/// Bad records listed by line in an alert; the rest are counted (the CSV has them all).
const BAD_RECORDS_IN_ALERT: usize = 20;
/// Characters of one bad record's line in an alert, so one huge row cannot hide the others.
const BAD_RECORD_IN_ALERT: usize = 150;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Collect(#[from] CollectError),
    #[error(transparent)]
    NotEnded(#[from] NotEnded),
    #[error("cannot look for files of the other cadence overlapping {period}: {source}")]
    OtherCadence {
        period: Period,
        source: crate::connect::ConnectError,
    },
    #[error("cannot prepare the workbook directory {path}: {source}")]
    Workdir {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ReportError {
    /// A later attempt may succeed (the source or Connect unreachable, a directory not
    /// writable); not a missing setting or a period that is not reportable yet.
    pub fn is_transient(&self) -> bool {
        match self {
            ReportError::Config(_) | ReportError::NotEnded(_) => false,
            ReportError::Collect(_)
            | ReportError::OtherCadence { .. }
            | ReportError::Workdir { .. } => true,
        }
    }
}

/// One run's request: which period, which groups, and whether to touch the platform.
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
    /// A source without any record for the month is expected (no `empty_source` alert).
    pub allow_empty: bool,
}

impl ReportJob {
    /// A job of `period` that only reads and acts on the platform (submits, compares) and
    /// writes no workbook.
    pub(crate) fn on_platform(period: Period) -> ReportJob {
        ReportJob {
            period,
            contracts: Vec::new(),
            products: Vec::new(),
            dry_run: false,
            workdir: PathBuf::new(),
            keep_workbooks: false,
            submission: Submission::OnReadyEvent,
            allow_empty: false,
        }
    }

    pub(crate) fn wants(&self, key: &GroupKey) -> bool {
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
    /// The clock deciding whether a month has ended (tests set their own).
    pub now: fn() -> DateTime<Utc>,
}

impl Reporter {
    pub fn new(client: ConnectClient, settings: ReportSettings) -> Self {
        let alerter = Alerter::new(settings.alert_webhook_url.as_deref())
            .with_metrics(client.metrics().clone());
        Reporter {
            client,
            settings,
            alerter,
            now: Utc::now,
        }
    }

    /// `REPORT_PERIOD`, or the most recent period of the cadence reportable at `now`.
    pub fn period(&self, now: DateTime<Utc>) -> Period {
        self.settings.report_period.unwrap_or_else(|| {
            self.settings
                .cadence
                .last_reportable(now, self.settings.report_delay)
        })
    }

    pub(crate) fn filer(&self, job: &ReportJob) -> Filer {
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
            late_records: self.settings.late_records,
        }
    }

    fn resolver(&self) -> Resolver {
        Resolver::new(
            self.client.clone(),
            self.settings.asset_search_criteria.clone(),
            self.settings.item_search_criteria,
            self.settings.api_concurrency,
        )
    }

    /// Reads and sorts the month's records.
    pub async fn collect(&self, period: Period) -> Result<Collection, ReportError> {
        self.collect_with(period, &mut Lookups::default()).await
    }

    /// [`Reporter::collect`], resolving with what `lookups` already knows (and adding to it).
    async fn collect_with(
        &self,
        period: Period,
        lookups: &mut Lookups,
    ) -> Result<Collection, ReportError> {
        let records = self.open_source(period).await?;
        self.group(records, period, &self.resolver(), lookups).await
    }

    /// Sorts `records` into groups, resolved by `resolver`, spilling rows past the budget.
    async fn group(
        &self,
        records: RecordStream,
        period: Period,
        resolver: &Resolver,
        lookups: &mut Lookups,
    ) -> Result<Collection, ReportError> {
        // Runs that were killed leave their scratch directories: the next run removes them,
        // whether or not it spills itself.
        let scratch = scratch_root();
        let root = scratch.clone();
        let _ = tokio::task::spawn_blocking(move || remove_stale(&root)).await;
        Ok(group::collect(
            records,
            period,
            resolver,
            lookups,
            self.settings.spill_budget,
            self.settings.resolve_cache,
            scratch,
        )
        .await?)
    }

    /// The configured source's records of `period`.
    async fn open_source(&self, period: Period) -> Result<RecordStream, ReportError> {
        let source = UsageSource::new(
            self.settings.require_usage_source()?,
            self.settings.usage_source_auth.clone(),
        )
        .with_timeout(self.settings.usage_source_timeout)
        .with_query(self.settings.usage_query.clone())
        .with_max_inflated(self.settings.usage_source_max_inflated)
        .with_cloud_env(self.settings.cloud_env.clone());
        tracing::info!(source = %source.display_name(period), %period, "reading usage records");
        Ok(source.open(period).await.map_err(CollectError::from)?)
    }

    /// The job's filters that select no group of the month, each said in a sentence.
    async fn unmatched_filters(&self, job: &ReportJob, collection: &Collection) -> Vec<String> {
        let period = job.period;
        let keys: Vec<&GroupKey> = collection.groups.keys().collect();
        let absent_contracts: Vec<String> = job
            .contracts
            .iter()
            .filter(|c| !keys.iter().any(|k| &k.contract_id == *c))
            .cloned()
            .collect();
        let mut unmatched = Vec::new();
        if !absent_contracts.is_empty() {
            let active = self
                .resolver()
                .active_distribution_contracts(absent_contracts.iter().cloned())
                .await;
            for contract in &absent_contracts {
                unmatched.push(match &active {
                    Ok(active) if active.contains(contract) => format!(
                        "contract {contract} has no usage in the source for {period}; nothing was filed for it"
                    ),
                    Ok(_) => format!(
                        "contract {contract} is not an active distribution contract; nothing was filed for it"
                    ),
                    Err(error) => format!(
                        "contract {contract} has no usage in the source for {period} (whether it is an active distribution contract could not be checked: {error})"
                    ),
                });
            }
        }
        for product in &job.products {
            if !keys.iter().any(|k| &k.product_id == product) {
                unmatched.push(format!(
                    "product {product} has no usage of an active distribution contract in the source for {period}; nothing was filed for it"
                ));
            }
        }
        let filtered = !job.contracts.is_empty() || !job.products.is_empty();
        if filtered && unmatched.is_empty() && !keys.iter().any(|k| job.wants(k)) {
            unmatched.push(format!(
                "no group of {period} has both a contract ({}) and a product ({}) asked for",
                job.contracts.join(", "),
                job.products.join(", ")
            ));
        }
        unmatched
    }

    /// The whole report: collect, file every wanted group, alert, summarise.
    pub async fn run(
        &self,
        job: &ReportJob,
        progress: Option<&ProgressBar>,
    ) -> Result<Summary, ReportError> {
        self.run_with(job, progress, &mut Lookups::default()).await
    }

    /// [`Reporter::run`], resolving with what `lookups` already knows (the run's earlier
    /// periods).
    async fn run_with(
        &self,
        job: &ReportJob,
        progress: Option<&ProgressBar>,
        lookups: &mut Lookups,
    ) -> Result<Summary, ReportError> {
        job.period
            .check_reportable((self.now)(), self.settings.report_delay)?;
        prepare_workdir(job).await?;
        let collection = self.collect_with(job.period, lookups).await?;
        let unmatched = self.unmatched_filters(job, &collection).await;
        let groups: Vec<Arc<Group>> = collection
            .groups
            .into_values()
            .filter(|g| job.wants(&g.key))
            .map(Arc::new)
            .collect();
        if let Some(bar) = progress {
            bar.set_length(groups.len() as u64);
            bar.set_message(format!("filing usage files for {}", job.period));
        }
        let filer = self.filer(job);
        let listing = match job.dry_run {
            true => Listing::default(),
            false => self.list_period(&filer, &groups).await?,
        };
        let mut known = listing.live;
        let (groups, mut overlapped) = self
            .without_other_cadence(&filer, groups, &listing.other_cadence)
            .await;
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
        outcomes.append(&mut overlapped);
        outcomes.sort_by(|a, b| a.key.cmp(&b.key));
        sweep::sweep(&filer, &mut outcomes).await;
        if job.keep_workbooks && !job.dry_run {
            if let Err(error) = write_late_records(&job.workdir, job.period, &outcomes).await {
                tracing::warn!(%error, "cannot write the late-records file");
            }
        }
        let summary = Summary {
            period: job.period,
            records_read: collection.records_read,
            groups: outcomes,
            unmatched,
            bad: collection.bad,
            out_of_scope: collection.out_of_scope,
        };
        if !job.dry_run {
            self.alert(&summary, job.allow_empty).await;
        }
        self.client.metrics().records(
            summary.records_read,
            summary.bad_by_reason().iter().map(|(r, n)| (r.code(), *n)),
            summary.out_of_scope.iter().map(|(r, n)| (r.code(), *n)),
        );
        tracing::info!("{}", summary.headline());
        Ok(summary)
    }

    /// The period's files in one listing ([`Filer::list_period`]). When it fails the groups
    /// look their files up one by one, but the other cadence's files must still be known (a
    /// changed `REPORT_CADENCE` must not report usage twice): without them the period fails.
    async fn list_period(
        &self,
        filer: &Filer,
        groups: &[Arc<Group>],
    ) -> Result<Listing, ReportError> {
        if groups.is_empty() {
            return Ok(Listing::default());
        }
        match filer.list_period(groups.iter().map(|g| &g.key)).await {
            Ok(listing) => Ok(listing),
            Err(error) => {
                tracing::warn!(%error, "listing the period's files failed; looking them up one by one");
                let other_cadence =
                    filer
                        .other_cadence()
                        .await
                        .map_err(|source| ReportError::OtherCadence {
                            period: filer.period,
                            source,
                        })?;
                Ok(Listing {
                    other_cadence,
                    ..Listing::default()
                })
            }
        }
    }

    /// Sets aside the groups whose period the other cadence already filed, as skipped outcomes
    /// with the reason, and sends the alert where a person must finish the period.
    async fn without_other_cadence(
        &self,
        filer: &Filer,
        groups: Vec<Arc<Group>>,
        other_cadence: &BTreeMap<GroupKey, Overlap>,
    ) -> (Vec<Arc<Group>>, Vec<GroupOutcome>) {
        let mut set_aside = Vec::new();
        let mut kept = Vec::with_capacity(groups.len());
        for group in groups {
            let Some(overlap) = other_cadence.get(&group.key) else {
                kept.push(group);
                continue;
            };
            let reason = overlap.reason(filer.period);
            tracing::warn!(contract = %group.key.contract_id, product = %group.key.product_id, period = %filer.period, "{reason}");
            if let Some(alert) = overlap.alert(&group.key, filer.period) {
                self.alerter.send(alert).await;
            }
            set_aside.push(GroupOutcome::skipped(&group, reason));
        }
        (kept, set_aside)
    }

    /// [`Reporter::run`] for each of `periods` in turn (`job` with its period replaced),
    /// whatever became of the ones before.
    pub async fn run_periods(
        &self,
        periods: &[Period],
        job: &ReportJob,
        progress: Option<&ProgressBar>,
    ) -> Ledger {
        let mut ledger = Ledger::default();
        let mut lookups = Lookups::default();
        for &period in periods {
            let job = ReportJob {
                period,
                ..job.clone()
            };
            if let Some(bar) = progress {
                bar.set_position(0);
                bar.set_message(format!("reading usage for {period}"));
            }
            let result = self.run_with(&job, progress, &mut lookups).await;
            if let Err(error) = &result {
                tracing::warn!(%period, %error, "the period could not be reported");
            }
            ledger.periods.push(PeriodReport { period, result });
        }
        ledger
    }

    async fn alert(&self, summary: &Summary, allow_empty: bool) {
        let period = summary.period.to_string();
        if summary.empty_source() && !allow_empty {
            let mut alert = Alert::new(
                AlertKind::EmptySource,
                Severity::Error,
                format!(
                    "the usage source has no records for {period}: almost always a broken export; nothing was filed"
                ),
            );
            alert.period = Some(period.clone());
            self.alerter.send(alert).await;
        }
        // Once per month and group set: from the run that files something, or every run when
        // there is nothing to file at all.
        let tell_bad = summary.filed_any() || summary.groups.is_empty();
        if !summary.bad.is_empty() && tell_bad {
            let mut details: Vec<String> = summary
                .bad
                .iter()
                .take(BAD_RECORDS_IN_ALERT)
                .map(|bad| truncated(&bad.to_string(), BAD_RECORD_IN_ALERT).into_owned())
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
        // Late records and changes after filing: one alert of each kind per group and period.
        for alert in summary.groups.iter().flat_map(|g| g.late.iter()) {
            for alert in &alert.alerts {
                self.alerter.send(alert.clone()).await;
            }
        }
    }

    /// Submits our `ready` file `file_id`, the group's `part`, unless another file won that part
    /// (the reaction to its `ready` event); false when it lost and was withdrawn. `looked`: the
    /// part's live files when the caller has just listed them (the look before submitting).
    pub async fn submit_ready(
        &self,
        key: &GroupKey,
        period: Period,
        part: Part,
        file_id: &str,
        looked: Option<Vec<UsageFile>>,
    ) -> Result<bool, FilingError> {
        self.filer(&ReportJob::on_platform(period))
            .submit_if_still_preferred_after(key, part, file_id, looked)
            .await
    }

    /// One group of `period` read again from the source (after a rejection); `None` when the
    /// source no longer has records for it. Changes nothing on the platform.
    ///
    /// Costs what the group costs: only the group's assets are asked for (listed by contract
    /// and product) and only the records naming them are resolved and grouped, each exactly
    /// as the full run would ([`scoped`]).
    pub async fn regroup(
        &self,
        key: &GroupKey,
        period: Period,
    ) -> Result<Option<Group>, ReportError> {
        period.check_ended((self.now)())?;
        let resolver = self
            .resolver()
            .scoped_to(&key.contract_id, &key.product_id)
            .await
            .map_err(CollectError::from)?;
        let records = self.open_source(period).await?;
        let records = scoped::within_scope(records, period, resolver.clone());
        // A rebuild's scoped resolver answers differently from the run's: its own lookups.
        let mut collection = self
            .group(records, period, &resolver, &mut Lookups::default())
            .await?;
        Ok(collection.groups.remove(key))
    }

    /// `group` of `period` without the records the group's other submitted files hold (its
    /// main file, its supplemental files): what a rebuild of `file_id` may upload. `None` when
    /// nothing is left. Reads the platform; changes nothing.
    pub async fn without_filed(
        &self,
        group: Group,
        period: Period,
        file_id: &str,
    ) -> Result<Option<Group>, FilingError> {
        self.filer(&ReportJob::on_platform(period))
            .without_filed(group, file_id)
            .await
    }

    /// Uploads `group` (from [`Reporter::regroup`]) into its existing file `file_id`, the
    /// group's `part`, to be submitted once ready. A failure is a `Failed` outcome that says
    /// whether it is transient.
    pub async fn rebuild_into(
        &self,
        group: Group,
        part: Part,
        file_id: &str,
        job: ReportJob,
    ) -> Result<GroupOutcome, ReportError> {
        let job = ReportJob {
            contracts: vec![group.key.contract_id.clone()],
            products: vec![group.key.product_id.clone()],
            dry_run: false,
            ..job
        };
        prepare_workdir(&job).await?;
        Ok(self
            .filer(&job)
            .refill_group(Arc::new(group), part, file_id)
            .await)
    }
}

async fn prepare_workdir(job: &ReportJob) -> Result<(), ReportError> {
    crate::output::create_dir(&job.workdir).map_err(|failed| ReportError::Workdir {
        path: failed.path,
        source: failed.source,
    })
}
