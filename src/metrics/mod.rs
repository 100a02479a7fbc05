//! The operator's view of a running instance: Prometheus metrics, the health check, and the
//! HTTP endpoint serving both at `METRICS_ADDRESS` (unset: no endpoint, and counting is off).
//!
//! * [`Metrics`] — one `prometheus-client` [`Registry`] per runner, built when it starts (never
//!   a process-global default registry), behind a cheap-to-clone handle. Everything is counted
//!   with one-line calls where the work already is: the runner's executor (tasks, durations)
//!   and supervisor (handshakes, reconnects), the REST client's attempt loop (requests,
//!   retries), filing (files), the report's summary (records), the alerter; the log lines
//!   shipped and dropped are read from the log subscriber's [`LogControl`] at each scrape.
//! * [`Health`] — the background websocket as the health check sees it (see `health.rs`).
//! * `server` — `GET /healthz` and `GET /metrics` with axum (`connect-payg health` asks the
//!   former: `cli/health.rs`).
//!
//! How the handle reaches the code: it is threaded, not global. The runner holds it (and the
//! [`Health`]) in its shared state, and puts it in the [`crate::connect::ClientOptions`] of
//! every REST client it builds; every clone of that client — the task clients, the filer,
//! the reporter and its alerter — reaches it with [`crate::connect::ConnectClient::metrics`].
//! A process-wide `OnceLock` would have been fewer lines, but two runners in one process (the
//! tests run many) would count into one registry, and library use (`report`, the sandbox, the
//! tests' own clients) gets [`Metrics::off`], which costs one branch per call and nothing else.
//!
//! Label values are closed sets (task categories and results, HTTP methods and statuses, the
//! REST endpoint *family* with ids replaced by `:id`, reasons, alert kinds), so the number of
//! series is bounded; the one open label is the reported `period` of the last-report gauge,
//! which grows by one per period.

mod health;
mod server;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use payg_shared::protocol::{ResultCode, TaskCategory};

use crate::logging::LogControl;

pub use health::Health;
pub(crate) use server::serve;
pub use server::{Listening, ServeError};

/// Upper bounds (seconds) of the task duration buckets: an event handler takes milliseconds
/// to minutes, the monthly report up to the scheduled time limit (12 h).
const TASK_SECONDS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 10800.0, 43200.0,
];

/// What happened to a usage file, as `connect_payg_usage_files_total{action}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAction {
    /// Created on the platform by this instance.
    Created,
    /// A workbook uploaded into it (new files, filled drafts, rebuilds).
    Uploaded,
    /// Submitted to the provider.
    Submitted,
    /// Our file's rejection by the provider, handled.
    Rejected,
    /// A rejected file rebuilt from the source and uploaded again.
    Rebuilt,
}

impl FileAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FileAction::Created => "created",
            FileAction::Uploaded => "uploaded",
            FileAction::Submitted => "submitted",
            FileAction::Rejected => "rejected",
            FileAction::Rebuilt => "rebuilt",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    category: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabel {
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    endpoint: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    method: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunnerTypeLabel {
    runner_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeriodLabel {
    period: String,
}

type DurationFamily = Family<CategoryLabel, Histogram, fn() -> Histogram>;

fn task_histogram() -> Histogram {
    Histogram::new(TASK_SECONDS)
}

/// The counters of one runner. Cheap to clone (clones count into the same registry);
/// [`Metrics::off`] (the default) counts nothing.
#[derive(Clone, Default)]
pub struct Metrics(Option<Arc<Inner>>);

struct Inner {
    registry: Registry,
    tasks: Family<TaskLabels, Counter>,
    task_duration: DurationFamily,
    rest_requests: Family<RequestLabels, Counter>,
    rest_retries: Family<RetryLabels, Counter>,
    websocket_handshakes: Family<RunnerTypeLabel, Counter>,
    websocket_reconnects: Family<RunnerTypeLabel, Counter>,
    usage_files: Family<ActionLabel, Counter>,
    records_read: Counter,
    records_bad: Family<ReasonLabel, Counter>,
    records_out_of_scope: Family<ReasonLabel, Counter>,
    alerts_sent: Family<KindLabel, Counter>,
    alerts_failed: Family<KindLabel, Counter>,
    log_lines_shipped: Counter,
    log_lines_dropped: Counter,
    last_scheduled_report: Family<PeriodLabel, Gauge>,
    /// The log subscriber whose shipping the log-line counters follow (read at each scrape).
    log_shipping: Option<LogControl>,
    /// Its (shipped, dropped) totals already counted.
    log_lines_counted: Mutex<(u64, u64)>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Some(_) => "Metrics(on)",
            None => "Metrics(off)",
        })
    }
}

impl Metrics {
    /// Counting off: every call returns at once.
    pub fn off() -> Metrics {
        Metrics(None)
    }

    /// A fresh registry with every metric this program exposes, all at zero.
    pub fn new() -> Metrics {
        Metrics::with_log_shipping(None)
    }

    /// [`Metrics::new`], its log-line counters following `control`'s shipping
    /// ([`LogControl::shipping`]): each scrape counts what was shipped and dropped since the
    /// one before.
    pub fn with_log_shipping(control: Option<LogControl>) -> Metrics {
        let mut inner = Inner {
            registry: Registry::with_prefix("connect_payg"),
            tasks: Family::default(),
            task_duration: DurationFamily::new_with_constructor(task_histogram),
            rest_requests: Family::default(),
            rest_retries: Family::default(),
            websocket_handshakes: Family::default(),
            websocket_reconnects: Family::default(),
            usage_files: Family::default(),
            records_read: Counter::default(),
            records_bad: Family::default(),
            records_out_of_scope: Family::default(),
            alerts_sent: Family::default(),
            alerts_failed: Family::default(),
            log_lines_shipped: Counter::default(),
            log_lines_dropped: Counter::default(),
            last_scheduled_report: Family::default(),
            log_shipping: control,
            log_lines_counted: Mutex::new((0, 0)),
        };
        let registry = &mut inner.registry;
        registry.register(
            "tasks",
            "Tasks answered to the platform, by category and result",
            inner.tasks.clone(),
        );
        registry.register_with_unit(
            "task_duration",
            "Time from taking a task to queueing its result, by category",
            Unit::Seconds,
            inner.task_duration.clone(),
        );
        registry.register(
            "rest_requests",
            "Connect REST attempts, by method, endpoint family and HTTP status (no_answer: \
             the request got no HTTP answer)",
            inner.rest_requests.clone(),
        );
        registry.register(
            "rest_retries",
            "Connect REST requests tried again after a failed attempt",
            inner.rest_retries.clone(),
        );
        registry.register(
            "websocket_handshakes",
            "DevOps websocket connections opened and handshaken, by runner type",
            inner.websocket_handshakes.clone(),
        );
        registry.register(
            "websocket_reconnects",
            "DevOps websocket connection attempts after a lost connection or a failed attempt",
            inner.websocket_reconnects.clone(),
        );
        registry.register(
            "usage_files",
            "Usage files created, uploaded, submitted, rejected (handled) and rebuilt",
            inner.usage_files.clone(),
        );
        registry.register(
            "records_read",
            "Usage records read by report runs",
            inner.records_read.clone(),
        );
        registry.register(
            "records_bad",
            "Usage records not reported because they are bad, by reason",
            inner.records_bad.clone(),
        );
        registry.register(
            "records_out_of_scope",
            "Usage records left out as not this extension's to report, by reason",
            inner.records_out_of_scope.clone(),
        );
        registry.register(
            "alerts_sent",
            "Operator alerts raised (logged, and posted when a webhook is set), by kind",
            inner.alerts_sent.clone(),
        );
        registry.register(
            "alerts_failed",
            "Operator alerts the webhook did not take after every attempt, by kind",
            inner.alerts_failed.clone(),
        );
        registry.register(
            "log_lines_shipped",
            "Log lines shipped to the Connect portal's log service",
            inner.log_lines_shipped.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log service was slow or down",
            inner.log_lines_dropped.clone(),
        );
        registry.register_with_unit(
            "last_scheduled_report_timestamp",
            "When a scheduled report of the period last succeeded (Unix time)",
            Unit::Seconds,
            inner.last_scheduled_report.clone(),
        );
        Metrics(Some(Arc::new(inner)))
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// A task answered with `result` after `took`.
    pub fn task(&self, category: TaskCategory, result: ResultCode, took: Duration) {
        let Some(m) = &self.0 else { return };
        let category = category.as_str();
        m.tasks
            .get_or_create(&TaskLabels {
                category,
                result: result.as_str(),
            })
            .inc();
        m.task_duration
            .get_or_create(&CategoryLabel { category })
            .observe(took.as_secs_f64());
    }

    /// One REST attempt to `path` (relative to `/public/v1`), answered with `status` or not
    /// answered at all (`None`).
    pub fn rest_request(&self, method: &str, path: &str, status: Option<u16>) {
        let Some(m) = &self.0 else { return };
        let status = status.map_or_else(|| "no_answer".to_string(), |s| s.to_string());
        m.rest_requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                endpoint: endpoint_family(path),
                status,
            })
            .inc();
    }

    /// A REST request about to be tried again.
    pub fn rest_retry(&self, method: &str, path: &str) {
        let Some(m) = &self.0 else { return };
        m.rest_retries
            .get_or_create(&RetryLabels {
                method: method.to_string(),
                endpoint: endpoint_family(path),
            })
            .inc();
    }

    /// A websocket connection of `runner_type` handshaken.
    pub fn websocket_handshake(&self, runner_type: &'static str) {
        let Some(m) = &self.0 else { return };
        m.websocket_handshakes
            .get_or_create(&RunnerTypeLabel { runner_type })
            .inc();
    }

    /// Another attempt to connect `runner_type` after a lost connection or a failed attempt.
    pub fn websocket_reconnect(&self, runner_type: &'static str) {
        let Some(m) = &self.0 else { return };
        m.websocket_reconnects
            .get_or_create(&RunnerTypeLabel { runner_type })
            .inc();
    }

    pub fn usage_file(&self, action: FileAction) {
        let Some(m) = &self.0 else { return };
        m.usage_files
            .get_or_create(&ActionLabel {
                action: action.as_str(),
            })
            .inc();
    }

    /// What a report run read: records in all, bad ones and out-of-scope ones by reason code.
    pub fn records(
        &self,
        read: u64,
        bad: impl IntoIterator<Item = (&'static str, u64)>,
        out_of_scope: impl IntoIterator<Item = (&'static str, u64)>,
    ) {
        let Some(m) = &self.0 else { return };
        m.records_read.inc_by(read);
        for (reason, count) in bad {
            m.records_bad
                .get_or_create(&ReasonLabel { reason })
                .inc_by(count);
        }
        for (reason, count) in out_of_scope {
            m.records_out_of_scope
                .get_or_create(&ReasonLabel { reason })
                .inc_by(count);
        }
    }

    /// An alert of `kind` raised; `delivered` false when the webhook did not take it.
    pub fn alert(&self, kind: &str, delivered: bool) {
        let Some(m) = &self.0 else { return };
        let label = KindLabel {
            kind: kind.to_string(),
        };
        m.alerts_sent.get_or_create(&label).inc();
        if !delivered {
            m.alerts_failed.get_or_create(&label).inc();
        }
    }

    /// Log lines the log shipper delivered and dropped since its last call.
    pub fn log_lines(&self, shipped: u64, dropped: u64) {
        let Some(m) = &self.0 else { return };
        m.log_lines_shipped.inc_by(shipped);
        m.log_lines_dropped.inc_by(dropped);
    }

    /// Counts what the followed log shipper shipped and dropped since the last call (its
    /// totals only grow; a counter never goes back).
    fn count_log_shipping(&self) {
        let Some(m) = &self.0 else { return };
        let Some(control) = &m.log_shipping else {
            return;
        };
        let stats = control.shipping();
        let mut counted = m
            .log_lines_counted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (shipped, dropped) = *counted;
        m.log_lines_shipped
            .inc_by(stats.shipped.saturating_sub(shipped));
        m.log_lines_dropped
            .inc_by(stats.dropped.saturating_sub(dropped));
        *counted = (shipped.max(stats.shipped), dropped.max(stats.dropped));
    }

    /// A scheduled report of `period` succeeded now.
    pub fn scheduled_report_succeeded(&self, period: &str) {
        let Some(m) = &self.0 else { return };
        m.last_scheduled_report
            .get_or_create(&PeriodLabel {
                period: period.to_string(),
            })
            .set(chrono::Utc::now().timestamp());
    }

    /// The exposition: the Prometheus text format, or OpenMetrics when `openmetrics`; `None`
    /// when counting is off.
    pub fn encode(&self, openmetrics: bool) -> Option<String> {
        self.count_log_shipping();
        let m = self.0.as_ref()?;
        let mut text = String::new();
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut text, &m.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut text, &m.registry)
        };
        // Writing into a String cannot fail.
        encoded.ok()?;
        Some(text)
    }
}

/// `path` with each segment that holds a digit (an id: `UF-2024-…`, `PRD-…`, a percent-escape)
/// replaced by `:id`, so that a label names the kind of request, never the object.
pub fn endpoint_family(path: &str) -> String {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .map(|segment| {
            if segment.bytes().any(|b| b.is_ascii_digit()) {
                ":id"
            } else {
                segment
            }
        })
        .collect();
    segments.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_families_name_the_request_not_the_object() {
        for (path, family) in [
            ("usage/files", "usage/files"),
            ("usage/files/UF-2024-02-1234-5678", "usage/files/:id"),
            (
                "/usage/files/UF-2024-02-1234-5678/upload/",
                "usage/files/:id/upload",
            ),
            ("products/PRD-123-456/items", "products/:id/items"),
            ("subscriptions/assets", "subscriptions/assets"),
            ("products/..%2Fx", "products/:id"),
            ("", ""),
        ] {
            assert_eq!(endpoint_family(path), family, "{path}");
        }
    }

    #[test]
    fn off_counts_nothing_and_encodes_nothing() {
        let off = Metrics::off();
        off.task(
            TaskCategory::Background,
            ResultCode::Success,
            Duration::ZERO,
        );
        off.log_lines(3, 1);
        assert!(!off.is_on());
        assert_eq!(off.encode(false), None);
        assert_eq!(format!("{off:?}"), "Metrics(off)");
    }

    #[test]
    fn every_family_is_exposed_with_its_counts() {
        let metrics = Metrics::new();
        let clone = metrics.clone();
        clone.task(
            TaskCategory::Scheduled,
            ResultCode::Success,
            Duration::from_millis(1500),
        );
        clone.rest_request("GET", "usage/files/UF-1", Some(200));
        clone.rest_request("POST", "usage/files", None);
        clone.rest_retry("POST", "usage/files");
        clone.websocket_handshake("background");
        clone.websocket_reconnect("interactive");
        clone.usage_file(FileAction::Submitted);
        clone.records(10, [("negative_quantity", 2)], [("product_not_qt", 1)]);
        clone.alert("bad_records", false);
        clone.log_lines(5, 2);
        clone.scheduled_report_succeeded("2024-02");
        let text = metrics.encode(false).unwrap();
        for line in [
            "connect_payg_tasks_total{category=\"scheduled\",result=\"success\"} 1",
            "connect_payg_task_duration_seconds_bucket{category=\"scheduled\",le=\"5\"} 1",
            "connect_payg_task_duration_seconds_count{category=\"scheduled\"} 1",
            "connect_payg_rest_requests_total{method=\"GET\",endpoint=\"usage/files/:id\",status=\"200\"} 1",
            "connect_payg_rest_requests_total{method=\"POST\",endpoint=\"usage/files\",status=\"no_answer\"} 1",
            "connect_payg_rest_retries_total{method=\"POST\",endpoint=\"usage/files\"} 1",
            "connect_payg_websocket_handshakes_total{runner_type=\"background\"} 1",
            "connect_payg_websocket_reconnects_total{runner_type=\"interactive\"} 1",
            "connect_payg_usage_files_total{action=\"submitted\"} 1",
            "connect_payg_records_read_total 10",
            "connect_payg_records_bad_total{reason=\"negative_quantity\"} 2",
            "connect_payg_records_out_of_scope_total{reason=\"product_not_qt\"} 1",
            "connect_payg_alerts_sent_total{kind=\"bad_records\"} 1",
            "connect_payg_alerts_failed_total{kind=\"bad_records\"} 1",
            "connect_payg_log_lines_shipped_total 5",
            "connect_payg_log_lines_dropped_total 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(text.contains(
            "# TYPE connect_payg_last_scheduled_report_timestamp_seconds gauge\n\
             connect_payg_last_scheduled_report_timestamp_seconds{period=\"2024-02\"} "
        ));
        let openmetrics = metrics.encode(true).unwrap();
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    }
}
