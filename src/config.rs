//! Settings, layered: built-in defaults < a configuration file (only the one named by
//! `--config`) < environment variables < extension variables pushed by Connect in
//! `setup_response`.
//!
//! Everything is parsed and checked here, once, at start, so the rest of the program works with
//! typed values; a bad setting fails with a message naming the setting (by its environment
//! name) and never quoting a value that may hold a credential. [`SETTINGS`] lists every setting
//! (the `--help` text and the file's known keys come from it). Secrets are wrapped in
//! [`Secret`], whose `Debug` and `Display` never show the value.

pub use payg_shared::record::{AssetCriteria, ItemCriteria};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::usage::period::{Cadence, Period};
use crate::usage::source::sql;

/// Default REST and websocket host of Connect.
pub const DEFAULT_SERVER_ADDRESS: &str = "api.connect.cloudblue.com";
/// Where Connect's log service (Logz.io) listens for shipped logs.
pub const DEFAULT_LOG_SHIPPING_URL: &str = "https://listener.logz.io:8071";
/// Longest duration setting given in seconds (a week): more is a typo, and would overflow
/// the runner's deadline arithmetic.
pub const MAX_SECONDS: u64 = 7 * 24 * 3600;
/// Longest duration setting given in milliseconds (an hour).
pub const MAX_MILLIS: u64 = 3600 * 1000;

/// Which layers may set a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The process environment only (proxies, the log filter: read before any file is).
    Environment,
    /// The environment or the configuration file: a variable pushed by the platform must not
    /// redirect where this program connects, which key it uses or where it writes.
    Host,
    /// Also extension variables set in the Connect UI: what and how to report.
    Anywhere,
}

/// One setting: its environment name (a `--config` file uses it in lower case), which layers
/// may set it, its default as a person writes it, whether it is a secret, and what it does.
/// Loading, `--help`, the README's tables and `extension.json` are checked against this table.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub name: &'static str,
    pub reach: Reach,
    pub default: Option<&'static str>,
    pub secret: bool,
    pub meaning: &'static str,
}

impl Setting {
    /// The entry for `name` (any case), if this program reads such a setting.
    pub fn named(name: &str) -> Option<&'static Setting> {
        SETTINGS.iter().find(|s| s.name.eq_ignore_ascii_case(name))
    }

    /// The line `--help` shows.
    fn help_line(&self, width: usize) -> String {
        let mut text = format!("  {:<width$}  {}", self.name, self.meaning);
        if let Some(default) = self.default {
            text.push_str(&format!(" (default {default})"));
        }
        if self.secret {
            text.push_str("; secret");
        }
        if self.reach == Reach::Environment {
            text.push_str(" [environment only]");
        }
        text.push('\n');
        text
    }
}

/// Every setting this program reads, in the order `--help` lists them.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "API_KEY",
        reach: Reach::Host,
        default: None,
        secret: true,
        meaning: "Connect API key, sent as Authorization (ApiKey SU-...:...)",
    },
    Setting {
        name: "ENVIRONMENT_ID",
        reach: Reach::Host,
        default: None,
        secret: false,
        meaning: "ENV-... of the extension's environment (run)",
    },
    Setting {
        name: "INSTANCE_ID",
        reach: Reach::Host,
        default: None,
        secret: false,
        meaning: "this replica's id (default: a fresh UUID)",
    },
    Setting {
        name: "SERVER_ADDRESS",
        reach: Reach::Host,
        default: Some("api.connect.cloudblue.com"),
        secret: false,
        meaning: "host[:port] of Connect",
    },
    Setting {
        name: "API_ADDRESS",
        reach: Reach::Host,
        default: None,
        secret: false,
        meaning: "host[:port] of the REST API when it differs from SERVER_ADDRESS",
    },
    Setting {
        name: "CONNECT_UNSECURE",
        reach: Reach::Host,
        default: Some("false"),
        secret: false,
        meaning: "true: ws:// and http:// instead of TLS, loopback hosts only",
    },
    Setting {
        name: "CONNECT_UNSECURE_ANY_HOST",
        reach: Reach::Host,
        default: Some("false"),
        secret: false,
        meaning: "true: allow CONNECT_UNSECURE for a non-loopback host",
    },
    Setting {
        name: "SSL_CERT_FILE",
        reach: Reach::Host,
        default: None,
        secret: false,
        meaning: "extra CA bundle (PEM) for the websocket and REST",
    },
    Setting {
        name: "HTTPS_PROXY",
        reach: Reach::Environment,
        default: None,
        secret: false,
        meaning: "http:// proxy for the websocket over TLS",
    },
    Setting {
        name: "HTTP_PROXY",
        reach: Reach::Environment,
        default: None,
        secret: false,
        meaning: "http:// proxy for the websocket with CONNECT_UNSECURE",
    },
    Setting {
        name: "NO_PROXY",
        reach: Reach::Environment,
        default: None,
        secret: false,
        meaning: "hosts reached without the proxy",
    },
    Setting {
        name: "LOG_FORMAT",
        reach: Reach::Host,
        default: None,
        secret: false,
        meaning: "text or json (default: text on a terminal, else json)",
    },
    Setting {
        name: "RUST_LOG",
        reach: Reach::Environment,
        default: Some("info"),
        secret: false,
        meaning: "log filter",
    },
    Setting {
        name: "METRICS_ADDRESS",
        reach: Reach::Environment,
        default: None,
        secret: false,
        meaning: "ip:port serving /healthz and /metrics, e.g. 0.0.0.0:9464 (run; unset: off)",
    },
    Setting {
        name: "LOG_LEVEL",
        reach: Reach::Environment,
        default: Some("info"),
        secret: false,
        meaning: "starting log level (trace, debug, info, warning, error); the portal's levels replace it, RUST_LOG overrides both",
    },
    Setting {
        name: "LOG_SHIPPING_URL",
        reach: Reach::Environment,
        default: Some(DEFAULT_LOG_SHIPPING_URL),
        secret: false,
        meaning: "the log service logs are shipped to when the portal gives a logging key",
    },
    Setting {
        name: "API_RETRY_BASE_MS",
        reach: Reach::Host,
        default: Some("1000"),
        secret: false,
        meaning: "first wait between REST retries, ms",
    },
    Setting {
        name: "API_RETRY_MAX_MS",
        reach: Reach::Host,
        default: Some("60000"),
        secret: false,
        meaning: "longest wait between REST retries, ms",
    },
    Setting {
        name: "BACKGROUND_TASK_MAX_EXECUTION_TIME",
        reach: Reach::Host,
        default: Some("300"),
        secret: false,
        meaning: "seconds an event handler may run",
    },
    Setting {
        name: "INTERACTIVE_TASK_MAX_EXECUTION_TIME",
        reach: Reach::Host,
        default: Some("120"),
        secret: false,
        meaning: "seconds an interactive task may run",
    },
    Setting {
        name: "SCHEDULED_TASK_MAX_EXECUTION_TIME",
        reach: Reach::Host,
        default: Some("43200"),
        secret: false,
        meaning: "seconds the monthly report may run",
    },
    Setting {
        name: "AUTH_FAILURE_EXIT_AFTER",
        reach: Reach::Host,
        default: Some("900"),
        secret: false,
        meaning: "run exits after this many seconds of refused connections",
    },
    Setting {
        name: "WORKBOOK_DIR",
        reach: Reach::Host,
        default: None,
        secret: false,
        meaning: "keep workbooks and bad-records CSVs here",
    },
    Setting {
        name: "USAGE_SOURCE",
        reach: Reach::Anywhere,
        default: None,
        secret: false,
        meaning: "file:///path/usage-{period}.csv, https://host/...?from={from}&to={to}, s3://bucket/usage/{period}/*.jsonl (gs://, az://)",
    },
    Setting {
        name: "USAGE_SOURCE_AUTH",
        reach: Reach::Anywhere,
        default: None,
        secret: true,
        meaning: "Authorization header for an https USAGE_SOURCE; a database's password",
    },
    Setting {
        name: "USAGE_SOURCE_TIMEOUT",
        reach: Reach::Anywhere,
        default: Some("1800"),
        secret: false,
        meaning: "seconds reading an HTTP, database or object-storage source may take in all",
    },
    Setting {
        name: "USAGE_QUERY",
        reach: Reach::Anywhere,
        default: None,
        secret: false,
        meaning: "SQL returning the records, for a postgres:// or mysql:// USAGE_SOURCE",
    },
    Setting {
        name: "USAGE_SOURCE_MAX_INFLATED_BYTES",
        reach: Reach::Anywhere,
        default: Some("8589934592"),
        secret: false,
        meaning: "bytes one .gz/.zst file, body or object may inflate to",
    },
    Setting {
        name: "ASSET_SEARCH_CRITERIA",
        reach: Reach::Anywhere,
        default: Some("asset.id"),
        secret: false,
        meaning: "asset.id, asset.external_id, asset.external_uid or parameter.<name>",
    },
    Setting {
        name: "ITEM_SEARCH_CRITERIA",
        reach: Reach::Anywhere,
        default: Some("item.mpn"),
        secret: false,
        meaning: "item.mpn, item.local_id or item.id",
    },
    Setting {
        name: "REPORT_CADENCE",
        reach: Reach::Anywhere,
        default: Some("monthly"),
        secret: false,
        meaning: "monthly or daily: one usage file per group and month, or per group and UTC day",
    },
    Setting {
        name: "REPORT_DELAY_HOURS",
        reach: Reach::Anywhere,
        default: Some("0"),
        secret: false,
        meaning: "hours after a period ends before it is reported",
    },
    Setting {
        name: "CATCH_UP_PERIODS",
        reach: Reach::Anywhere,
        default: None,
        secret: false,
        meaning: "how many recent reportable periods each run covers (default 3 monthly, 7 daily)",
    },
    Setting {
        name: "REPORT_PERIOD",
        reach: Reach::Anywhere,
        default: None,
        secret: false,
        meaning:
            "exactly this YYYY-MM or YYYY-MM-DD, once reportable (default: the catch-up window)",
    },
    Setting {
        name: "LATE_RECORDS",
        reach: Reach::Anywhere,
        default: Some("alert"),
        secret: false,
        meaning: "records arriving after their group's file was submitted: alert or file",
    },
    Setting {
        name: "MAX_RESUBMISSIONS",
        reach: Reach::Anywhere,
        default: Some("2"),
        secret: false,
        meaning: "automatic rebuilds after rejections",
    },
    Setting {
        name: "ALERT_WEBHOOK_URL",
        reach: Reach::Anywhere,
        default: None,
        secret: true,
        meaning: "alerts are POSTed here as JSON",
    },
    Setting {
        name: "API_CONCURRENCY",
        reach: Reach::Anywhere,
        default: Some("8"),
        secret: false,
        meaning: "REST requests in flight at once",
    },
    Setting {
        name: "READY_TIMEOUT",
        reach: Reach::Anywhere,
        default: Some("900"),
        secret: false,
        meaning: "seconds to wait for an uploaded file to be processed and submitted",
    },
    Setting {
        name: "READY_POLL_INTERVAL_MS",
        reach: Reach::Anywhere,
        default: Some("2000"),
        secret: false,
        meaning: "first pause between status polls after an upload, ms",
    },
    Setting {
        name: "SPILL_BUDGET_BYTES",
        reach: Reach::Anywhere,
        default: Some("8388608"),
        secret: false,
        meaning: "bytes of the month's rows held in memory before they spill to scratch files",
    },
    Setting {
        name: "RESOLVE_CACHE_SUBSCRIPTIONS",
        reach: Reach::Anywhere,
        default: Some("20000"),
        secret: false,
        meaning: "subscriptions a run keeps resolved; past them records wait in partition files",
    },
];

/// The environment variables for `--help`: every setting, in two groups.
pub fn settings_help() -> String {
    let width = SETTINGS.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut text = String::from(
        "Environment variables (a --config TOML file takes the same names in lower case).\n\nConnection (environment or file only):\n",
    );
    for s in SETTINGS.iter().filter(|s| s.reach != Reach::Anywhere) {
        text.push_str(&s.help_line(width));
    }
    text.push_str("\nReporting (also extension variables set in the Connect UI):\n");
    for s in SETTINGS.iter().filter(|s| s.reach == Reach::Anywhere) {
        text.push_str(&s.help_line(width));
    }
    text
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("setting {name} is required but not set")]
    Missing { name: &'static str },
    #[error("setting {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("configuration file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// A value that must never be printed: API keys and source credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The real value, for the one place that must send it (an HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What a run does with records that arrive for a period after their group's usage file was
/// submitted (`LATE_RECORDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LateRecords {
    /// Alert (`late_records`) and list them in `late-records-<period>.csv`; file nothing.
    #[default]
    Alert,
    /// File them in a supplemental usage file of the group and period (`…:late-<n>`).
    File,
}

impl LateRecords {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "alert" => Ok(LateRecords::Alert),
            "file" => Ok(LateRecords::File),
            _ => Err("expected alert or file".into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A log level as a person (`LOG_LEVEL`) or the platform (`log_level`, `runner_log_level`)
/// writes it. Ordered from the quietest to the most talkative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// Any case; the platform's Python names too (`WARNING`; `CRITICAL` and `FATAL` are ERROR).
    pub fn parse(text: &str) -> Option<LogLevel> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" | "warning" => LogLevel::Warn,
            "error" | "critical" | "fatal" => LogLevel::Error,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where and how to reach Connect. Environment (or file) only: never from extension variables.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    pub api_key: Option<Secret>,
    pub environment_id: Option<String>,
    pub instance_id: String,
    pub server_address: String,
    pub api_address: Option<String>,
    pub unsecure: bool,
    pub ssl_cert_file: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    /// `LOG_LEVEL`: the level logging starts at.
    pub log_level: Option<LogLevel>,
    /// `LOG_SHIPPING_URL`: the log service; `/?token=…&type=…` is appended.
    pub log_shipping_url: String,
    /// Backoff scale of REST retries (`API_RETRY_BASE_MS`); tests and soaks shrink it.
    pub retry_base_delay: Duration,
    /// Longest single REST retry wait, `Retry-After` included (`API_RETRY_MAX_MS`).
    pub retry_max_delay: Duration,
    /// Where `run` serves `/healthz` and `/metrics` (`METRICS_ADDRESS`); `None`: not served.
    pub metrics_address: Option<std::net::SocketAddr>,
}

impl ConnectionSettings {
    pub fn require_api_key(&self) -> Result<&Secret, ConfigError> {
        self.api_key
            .as_ref()
            .ok_or(ConfigError::Missing { name: "API_KEY" })
    }

    pub fn require_environment_id(&self) -> Result<&str, ConfigError> {
        self.environment_id.as_deref().ok_or(ConfigError::Missing {
            name: "ENVIRONMENT_ID",
        })
    }

    fn scheme(&self, secure: &'static str, plain: &'static str) -> &'static str {
        if self.unsecure {
            plain
        } else {
            secure
        }
    }

    /// `https://{API_ADDRESS or SERVER_ADDRESS}/public/v1` (or `http://` when unsecure).
    pub fn rest_base_url(&self) -> String {
        let host = self.api_address.as_deref().unwrap_or(&self.server_address);
        format!("{}://{}/public/v1", self.scheme("https", "http"), host)
    }

    /// `wss://{SERVER_ADDRESS}` (or `ws://` when unsecure); the runner appends the path.
    pub fn websocket_origin(&self) -> String {
        format!("{}://{}", self.scheme("wss", "ws"), self.server_address)
    }
}

/// What the monthly report and the event handlers need; may change with extension variables.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    pub usage_source: Option<String>,
    pub usage_source_auth: Option<Secret>,
    /// `USAGE_SOURCE_TIMEOUT`: how long reading an HTTP or object-storage source may take in all.
    pub usage_source_timeout: Duration,
    /// `USAGE_QUERY`: what a database source runs.
    pub usage_query: Option<String>,
    /// `USAGE_SOURCE_MAX_INFLATED_BYTES`: what one compressed source may inflate to.
    pub usage_source_max_inflated: u64,
    /// The environment's `AWS_*`, `GOOGLE_*` and `AZURE_*` variables (lower-case names), for
    /// object-storage sources: from the process environment only, never from the file or
    /// extension variables (an endpoint set there could receive the credentials).
    pub cloud_env: BTreeMap<String, Secret>,
    pub asset_search_criteria: AssetCriteria,
    pub item_search_criteria: ItemCriteria,
    /// `REPORT_CADENCE`: a file per group and month, or per group and day.
    pub cadence: Cadence,
    /// `REPORT_DELAY_HOURS`: how long after its end a period becomes reportable.
    pub report_delay: chrono::Duration,
    /// `CATCH_UP_PERIODS` when set; otherwise the cadence's default ([`ReportSettings::catch_up`]).
    pub catch_up_periods: Option<u32>,
    /// `REPORT_PERIOD`: exactly this period instead of the catch-up window (of the cadence).
    pub report_period: Option<Period>,
    /// `LATE_RECORDS`: alert about late records, or file them in supplemental files.
    pub late_records: LateRecords,
    pub max_resubmissions: u32,
    pub alert_webhook_url: Option<String>,
    pub api_concurrency: usize,
    /// Upper bound on how long the report waits for an uploaded file to leave `processing`.
    pub ready_timeout: Duration,
    /// First pause between status polls after an upload; it doubles up to 30 s.
    pub ready_poll_interval: Duration,
    /// When set, scheduled runs keep their workbooks and bad-records CSV here (an audit copy);
    /// otherwise they use a scratch directory removed after the run.
    pub workbook_dir: Option<PathBuf>,
    /// `SPILL_BUDGET_BYTES`: the month's rows held in memory (encoded) before they spill to
    /// the run's scratch file.
    pub spill_budget: usize,
    /// `RESOLVE_CACHE_SUBSCRIPTIONS`: the subscriptions whose assets a run keeps resolved;
    /// records of the others are set aside in partition files and resolved a partition at a
    /// time after the source is read.
    pub resolve_cache: usize,
}

impl ReportSettings {
    pub fn require_usage_source(&self) -> Result<&str, ConfigError> {
        self.usage_source.as_deref().ok_or(ConfigError::Missing {
            name: "USAGE_SOURCE",
        })
    }

    /// How many periods a run covers: `CATCH_UP_PERIODS`, else the cadence's default.
    pub fn catch_up(&self, cadence: Cadence) -> u32 {
        self.catch_up_periods
            .unwrap_or_else(|| cadence.default_catch_up())
    }
}

/// Per-category time limits of the runner (seconds in the environment, as the official runner).
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    pub background_time_limit: Duration,
    pub interactive_time_limit: Duration,
    pub scheduled_time_limit: Duration,
    /// `run` exits non-zero after this long of nothing but refused (401/403) handshakes.
    pub auth_failure_exit_after: Duration,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub connection: ConnectionSettings,
    pub report: ReportSettings,
    pub runner: RunnerSettings,
}

/// The layers settings are read from. Keeping them lets the runner re-read the settings when
/// Connect pushes new extension variables.
#[derive(Debug, Clone, Default)]
pub struct SettingsSources {
    /// A config file (`--config`); no file is read unless one is named.
    pub file: Option<PathBuf>,
    /// Environment variables; `None` means the process environment. Tests pass a map.
    pub env: Option<HashMap<String, String>>,
    /// Extension variables from Connect (highest precedence), by their upper-case names.
    pub extension: BTreeMap<String, String>,
    /// `--unsecure` on the command line.
    pub unsecure_flag: bool,
}

impl SettingsSources {
    pub fn load(&self) -> Result<Settings, ConfigError> {
        let layers = self.layers()?;
        layers.check_file_keys(self.file.as_deref())?;
        layers.check_not_blank()?;
        let get = |key: &str| layers.value(key).map(|(_, v)| v.to_string());
        let mut settings = Settings::from_lookup(&get, self.unsecure_flag)?;
        layers.check_source_auth()?;
        settings.report.cloud_env = layers.cloud_env();
        Ok(settings)
    }

    fn layers(&self) -> Result<Layers, ConfigError> {
        let file = match &self.file {
            Some(path) => read_file(path)?,
            None => BTreeMap::new(),
        };
        let environment = match &self.env {
            Some(map) => map
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            // Variables that are not UTF-8 cannot be settings; they are left alone.
            None => std::env::vars_os()
                .filter_map(|(k, v)| {
                    Some((
                        k.into_string().ok()?.to_ascii_lowercase(),
                        v.into_string().ok()?,
                    ))
                })
                .collect(),
        };
        let mut extension = BTreeMap::new();
        for (name, value) in &self.extension {
            // One odd name from the platform must not stop the others from applying.
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                tracing::warn!(variable = ?name, "extension variable skipped: its name is not letters, digits and _");
                continue;
            }
            let key = name.to_ascii_lowercase();
            if Setting::named(&key).is_some_and(|s| s.reach != Reach::Anywhere) {
                tracing::warn!(variable = %name, "extension variable ignored: this setting is read from the environment or the configuration file only");
                continue;
            }
            extension.insert(key, value.clone());
        }
        Ok(Layers {
            file,
            environment,
            extension,
        })
    }
}

/// Where a value came from, lowest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    File,
    Environment,
    Extension,
}

impl Layer {
    fn describe(self) -> &'static str {
        match self {
            Layer::File => "the configuration file",
            Layer::Environment => "the environment",
            Layer::Extension => "the extension variables",
        }
    }
}

/// The raw values of each layer, by lower-case key.
struct Layers {
    file: BTreeMap<String, String>,
    environment: BTreeMap<String, String>,
    extension: BTreeMap<String, String>,
}

impl Layers {
    /// The cloud variables of the environment, each kept as a secret.
    fn cloud_env(&self) -> BTreeMap<String, Secret> {
        self.environment
            .iter()
            .filter(|(name, _)| {
                ["aws_", "google_", "azure_"]
                    .iter()
                    .any(|prefix| name.starts_with(prefix))
            })
            .map(|(name, value)| (name.clone(), Secret::new(value.clone())))
            .collect()
    }

    fn layer(&self, layer: Layer) -> &BTreeMap<String, String> {
        match layer {
            Layer::File => &self.file,
            Layer::Environment => &self.environment,
            Layer::Extension => &self.extension,
        }
    }

    /// The value a layer gives `key`; blank means not set there.
    fn at(&self, layer: Layer, key: &str) -> Option<&str> {
        Some(self.layer(layer).get(key)?.trim()).filter(|v| !v.is_empty())
    }

    /// The effective value of `key` and the layer it comes from.
    fn value(&self, key: &str) -> Option<(Layer, &str)> {
        [Layer::Extension, Layer::Environment, Layer::File]
            .into_iter()
            .find_map(|layer| Some((layer, self.at(layer, key)?)))
    }

    /// A file key no setting has is a typo: named with the closest known key.
    fn check_file_keys(&self, path: Option<&Path>) -> Result<(), ConfigError> {
        let known: Vec<String> = SETTINGS
            .iter()
            .filter(|s| s.reach != Reach::Environment)
            .map(|s| s.name.to_ascii_lowercase())
            .collect();
        let Some(unknown) = self.file.keys().find(|k| !known.contains(k)) else {
            return Ok(());
        };
        let closest = known
            .iter()
            .min_by_key(|k| edit_distance(unknown, k))
            .map(String::as_str)
            .unwrap_or_default();
        Err(ConfigError::File {
            path: path.map(Path::to_path_buf).unwrap_or_default(),
            reason: format!("unknown key {unknown:?}; the closest known key is {closest:?}"),
        })
    }

    /// Settings whose empty value would otherwise silently mean "the default".
    fn check_not_blank(&self) -> Result<(), ConfigError> {
        for (key, name) in [
            ("server_address", "SERVER_ADDRESS"),
            ("api_address", "API_ADDRESS"),
            ("ssl_cert_file", "SSL_CERT_FILE"),
            ("workbook_dir", "WORKBOOK_DIR"),
        ] {
            for layer in [Layer::File, Layer::Environment] {
                if self.layer(layer).contains_key(key) && self.at(layer, key).is_none() {
                    return Err(invalid(
                        name,
                        format!(
                            "is set but empty in {}; unset it or give a value",
                            layer.describe()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `USAGE_SOURCE_AUTH` goes only over https (or to loopback), and only to an origin that
    /// its own layer (or a lower one) configures: a platform variable cannot redirect the
    /// environment's credential to another host.
    fn check_source_auth(&self) -> Result<(), ConfigError> {
        let (Some((auth_layer, _)), Some((source_layer, source))) =
            (self.value("usage_source_auth"), self.value("usage_source"))
        else {
            return Ok(());
        };
        let Some(origin) = http_origin(source) else {
            return Ok(());
        };
        if !origin.secure_or_loopback {
            return Err(invalid(
                "USAGE_SOURCE_AUTH",
                format!(
                    "is only sent over https:// or a database's required TLS (sslmode=require or \
                     stricter), or to a loopback host, but USAGE_SOURCE is {}",
                    origin.text
                ),
            ));
        }
        let trusted: Vec<String> = [Layer::File, Layer::Environment, Layer::Extension]
            .into_iter()
            .filter(|layer| *layer <= auth_layer)
            .filter_map(|layer| Some(http_origin(self.at(layer, "usage_source")?)?.text))
            .collect();
        if source_layer <= auth_layer || trusted.contains(&origin.text) {
            return Ok(());
        }
        let configured = match trusted.as_slice() {
            [] => "configures no USAGE_SOURCE".to_string(),
            origins => format!("configures USAGE_SOURCE for {}", origins.join(", ")),
        };
        Err(invalid(
            "USAGE_SOURCE_AUTH",
            format!(
                "is not sent to {origin}: USAGE_SOURCE comes from {source_layer} and points there, \
                 but USAGE_SOURCE_AUTH comes from {auth_layer}, which {configured}; set \
                 USAGE_SOURCE_AUTH in {source_layer} too, or USAGE_SOURCE in {auth_layer}",
                origin = origin.text,
                source_layer = source_layer.describe(),
                auth_layer = auth_layer.describe(),
            ),
        ))
    }
}

/// The keys and values of a `--config` TOML file, keys in lower case.
fn read_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let error = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    let table = config::Source::collect(
        &config::File::from(path)
            .format(config::FileFormat::Toml)
            .required(true),
    )
    .map_err(|e| error(e.to_string()))?;
    table
        .into_iter()
        .map(|(key, value)| {
            let text = value
                .into_string()
                .map_err(|_| error(format!("key {key:?} must be a string, number or boolean")))?;
            Ok((key.to_ascii_lowercase(), text))
        })
        .collect()
}

/// Levenshtein distance, for naming the key a typo meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The origin of an http(s) `USAGE_SOURCE`, as it may be shown (no credentials, no path).
struct Origin {
    text: String,
    secure_or_loopback: bool,
}

fn http_origin(source: &str) -> Option<Origin> {
    if let Some((text, secure_or_loopback)) = sql::credential_target(&sample_location(source)) {
        return Some(Origin {
            text,
            secure_or_loopback,
        });
    }
    let url = url::Url::parse(&sample_location(source)).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let secure_or_loopback = url.scheme() == "https" || is_loopback(url.host_str()?);
    Some(Origin {
        text: url.origin().ascii_serialization(),
        secure_or_loopback,
    })
}

/// A source location with its month placeholders filled, to check its shape.
fn sample_location(source: &str) -> String {
    source
        .replace("{period}", "2024-01")
        .replace("{from}", "2024-01-01")
        .replace("{to}", "2024-01-31")
}

/// Whether `host` (a name or an IP, IPv6 with or without brackets) is this machine.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

fn parse_bool(name: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(invalid(name, format!("{other:?} is not true or false"))),
    }
}

fn parse_number<T>(
    name: &'static str,
    value: Option<String>,
    default: T,
    min: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display,
{
    let Some(value) = value else {
        return Ok(default);
    };
    let parsed: T = value
        .parse()
        .map_err(|_| invalid(name, format!("{value:?} is not a whole number")))?;
    if parsed < min {
        return Err(invalid(
            name,
            format!("{parsed} is below the minimum {min}"),
        ));
    }
    Ok(parsed)
}

/// [`parse_number`] with an upper bound too.
fn bounded<T>(
    name: &'static str,
    value: Option<String>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display,
{
    let too_big = || invalid(name, format!("is above the maximum {max}"));
    // A number too big for its type is above the maximum, not "not a number".
    if let Some(v) = &value {
        if v.parse::<T>().is_err() && !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(too_big());
        }
    }
    let parsed = parse_number(name, value, default, min)?;
    if parsed > max {
        return Err(too_big());
    }
    Ok(parsed)
}

/// `METRICS_ADDRESS`: an IP address and port (`0.0.0.0:9464`, `[::]:9464`, `127.0.0.1:0`), or
/// `:PORT` for every IPv4 address.
pub fn parse_metrics_address(value: &str) -> Result<std::net::SocketAddr, ConfigError> {
    let value = value.trim();
    let full = match value.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => value.to_string(),
    };
    full.parse().map_err(|_| {
        invalid(
            "METRICS_ADDRESS",
            format!("{value:?} is not an IP address and port such as 0.0.0.0:9464"),
        )
    })
}

fn seconds(
    name: &'static str,
    value: Option<String>,
    default: u64,
) -> Result<Duration, ConfigError> {
    bounded(name, value, default, 1, MAX_SECONDS).map(Duration::from_secs)
}

fn millis(
    name: &'static str,
    value: Option<String>,
    default: u64,
) -> Result<Duration, ConfigError> {
    bounded(name, value, default, 1, MAX_MILLIS).map(Duration::from_millis)
}

impl Settings {
    /// Reads the process environment (no configuration file).
    pub fn from_env(unsecure_flag: bool) -> Result<Settings, ConfigError> {
        SettingsSources {
            unsecure_flag,
            ..Default::default()
        }
        .load()
    }

    fn from_lookup(
        get: &dyn Fn(&str) -> Option<String>,
        unsecure_flag: bool,
    ) -> Result<Settings, ConfigError> {
        let unsecure = match get("connect_unsecure") {
            Some(v) => parse_bool("CONNECT_UNSECURE", &v)? || unsecure_flag,
            None => unsecure_flag,
        };
        let log_format = match get("log_format").as_deref() {
            None => None,
            Some("text") => Some(LogFormat::Text),
            Some("json") => Some(LogFormat::Json),
            Some(other) => {
                return Err(invalid(
                    "LOG_FORMAT",
                    format!("{other:?} is not text or json"),
                ))
            }
        };
        let log_level = get("log_level")
            .map(|text| {
                LogLevel::parse(&text).ok_or_else(|| {
                    invalid(
                        "LOG_LEVEL",
                        format!("{text:?} is not trace, debug, info, warning or error"),
                    )
                })
            })
            .transpose()?;
        let log_shipping_url =
            get("log_shipping_url").unwrap_or_else(|| DEFAULT_LOG_SHIPPING_URL.into());
        check_log_shipping_url(&log_shipping_url)?;
        let server_address = get("server_address").unwrap_or_else(|| DEFAULT_SERVER_ADDRESS.into());
        let mut hosts = vec![(
            "SERVER_ADDRESS",
            check_host("SERVER_ADDRESS", &server_address)?,
        )];
        let api_address = get("api_address");
        if let Some(address) = &api_address {
            hosts.push(("API_ADDRESS", check_host("API_ADDRESS", address)?));
        }
        let any_host = match get("connect_unsecure_any_host") {
            Some(v) => parse_bool("CONNECT_UNSECURE_ANY_HOST", &v)?,
            None => false,
        };
        if unsecure && !any_host {
            // Without TLS the API key crosses the network readable by anyone on the path.
            if let Some((name, host)) = hosts.iter().find(|(_, host)| !is_loopback(host)) {
                return Err(invalid(
                    "CONNECT_UNSECURE",
                    format!(
                        "--unsecure (or CONNECT_UNSECURE) would send the API key unencrypted to \
                         {name} {host}, which is not a loopback host; set \
                         CONNECT_UNSECURE_ANY_HOST=true as well to allow that"
                    ),
                ));
            }
        }
        let ssl_cert_file = get("ssl_cert_file").map(PathBuf::from);
        if let Some(path) = &ssl_cert_file {
            check_ca_bundle(path)?;
        }
        let environment_id = get("environment_id");
        if let Some(id) = &environment_id {
            if !id.starts_with("ENV-") {
                return Err(invalid(
                    "ENVIRONMENT_ID",
                    format!("{id:?} does not start with ENV-"),
                ));
            }
        }
        let connection = ConnectionSettings {
            api_key: get("api_key").map(Secret::new),
            environment_id,
            instance_id: get("instance_id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            server_address,
            api_address,
            unsecure,
            ssl_cert_file,
            log_format,
            log_level,
            log_shipping_url,
            retry_base_delay: millis("API_RETRY_BASE_MS", get("api_retry_base_ms"), 1000)?,
            retry_max_delay: millis("API_RETRY_MAX_MS", get("api_retry_max_ms"), 60_000)?,
            metrics_address: get("metrics_address")
                .map(|v| parse_metrics_address(&v))
                .transpose()?,
        };

        let cadence = match get("report_cadence") {
            Some(text) => text
                .parse::<Cadence>()
                .map_err(|reason| invalid("REPORT_CADENCE", reason))?,
            None => Cadence::default(),
        };
        let report_period = get("report_period")
            .map(|v| Period::parse(&v).map_err(|reason| invalid("REPORT_PERIOD", reason)))
            .transpose()?;
        if let Some(period) = report_period {
            // A day of a monthly ledger (or a month of a daily one) would file its usage twice.
            if period.cadence() != cadence {
                return Err(invalid(
                    "REPORT_PERIOD",
                    format!(
                        "{period} is a {} period, but REPORT_CADENCE is {cadence}",
                        period.cadence()
                    ),
                ));
            }
        }
        let report_delay = chrono::Duration::hours(i64::from(bounded(
            "REPORT_DELAY_HOURS",
            get("report_delay_hours"),
            0u32,
            0,
            MAX_DELAY_HOURS,
        )?));
        let catch_up_periods = get("catch_up_periods")
            .map(|value| {
                bounded(
                    "CATCH_UP_PERIODS",
                    Some(value),
                    1u32,
                    1,
                    MAX_CATCH_UP_PERIODS,
                )
            })
            .transpose()?;
        let asset_search_criteria = AssetCriteria::parse(
            &get("asset_search_criteria").unwrap_or_else(|| "asset.id".into()),
        )
        .map_err(|r| invalid("ASSET_SEARCH_CRITERIA", r))?;
        let item_search_criteria =
            ItemCriteria::parse(&get("item_search_criteria").unwrap_or_else(|| "item.mpn".into()))
                .map_err(|r| invalid("ITEM_SEARCH_CRITERIA", r))?;
        let alert_webhook_url = get("alert_webhook_url");
        if let Some(url) = &alert_webhook_url {
            let parsed =
                url::Url::parse(url).map_err(|e| invalid("ALERT_WEBHOOK_URL", e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(
                    "ALERT_WEBHOOK_URL",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        let usage_source = get("usage_source");
        if let Some(source) = &usage_source {
            check_usage_source(source)?;
        }
        let usage_query = get("usage_query");
        check_usage_query(usage_source.as_deref(), usage_query.as_deref())?;
        let report = ReportSettings {
            usage_source,
            usage_source_auth: get("usage_source_auth").map(Secret::new),
            usage_source_timeout: seconds(
                "USAGE_SOURCE_TIMEOUT",
                get("usage_source_timeout"),
                crate::usage::source::DEFAULT_TIMEOUT.as_secs(),
            )?,
            usage_query,
            usage_source_max_inflated: bounded(
                "USAGE_SOURCE_MAX_INFLATED_BYTES",
                get("usage_source_max_inflated_bytes"),
                crate::usage::source::DEFAULT_MAX_INFLATED_BYTES,
                1,
                u64::MAX,
            )?,
            cloud_env: BTreeMap::new(),
            asset_search_criteria,
            item_search_criteria,
            cadence,
            report_delay,
            catch_up_periods,
            report_period,
            late_records: get("late_records")
                .map(|v| LateRecords::parse(&v).map_err(|reason| invalid("LATE_RECORDS", reason)))
                .transpose()?
                .unwrap_or_default(),
            max_resubmissions: bounded(
                "MAX_RESUBMISSIONS",
                get("max_resubmissions"),
                2,
                0,
                MAX_RESUBMISSIONS,
            )?,
            alert_webhook_url,
            api_concurrency: bounded(
                "API_CONCURRENCY",
                get("api_concurrency"),
                8,
                1,
                MAX_CONCURRENCY,
            )?,
            ready_timeout: seconds("READY_TIMEOUT", get("ready_timeout"), 900)?,
            workbook_dir: get("workbook_dir")
                .map(|dir| writable_dir("WORKBOOK_DIR", PathBuf::from(dir)))
                .transpose()?,
            ready_poll_interval: millis(
                "READY_POLL_INTERVAL_MS",
                get("ready_poll_interval_ms"),
                2000,
            )?,
            spill_budget: bounded(
                "SPILL_BUDGET_BYTES",
                get("spill_budget_bytes"),
                crate::usage::DEFAULT_SPILL_BUDGET,
                1,
                MAX_SPILL_BUDGET,
            )?,
            resolve_cache: bounded(
                "RESOLVE_CACHE_SUBSCRIPTIONS",
                get("resolve_cache_subscriptions"),
                crate::usage::DEFAULT_RESOLVE_CACHE,
                1,
                MAX_RESOLVE_CACHE,
            )?,
        };
        let runner = RunnerSettings {
            background_time_limit: seconds(
                "BACKGROUND_TASK_MAX_EXECUTION_TIME",
                get("background_task_max_execution_time"),
                300,
            )?,
            interactive_time_limit: seconds(
                "INTERACTIVE_TASK_MAX_EXECUTION_TIME",
                get("interactive_task_max_execution_time"),
                120,
            )?,
            scheduled_time_limit: seconds(
                "SCHEDULED_TASK_MAX_EXECUTION_TIME",
                get("scheduled_task_max_execution_time"),
                43200,
            )?,
            auth_failure_exit_after: seconds(
                "AUTH_FAILURE_EXIT_AFTER",
                get("auth_failure_exit_after"),
                900,
            )?,
        };
        Ok(Settings {
            connection,
            report,
            runner,
        })
    }
}

/// Most automatic rebuilds of one file (`MAX_RESUBMISSIONS`).
const MAX_RESUBMISSIONS: u32 = 100;
/// Most REST requests in flight (`API_CONCURRENCY`).
const MAX_CONCURRENCY: usize = 1024;
/// A budget beyond this is no budget (4 GiB).
const MAX_SPILL_BUDGET: usize = 4 << 30;

/// The largest `RESOLVE_CACHE_SUBSCRIPTIONS`: ~400 bytes each, 16 million is ~6 GiB.
const MAX_RESOLVE_CACHE: usize = 16 << 20;
/// Longest `REPORT_DELAY_HOURS`: a month of waiting; more is a typo.
pub const MAX_DELAY_HOURS: u32 = 31 * 24;
/// Most periods one run covers (`CATCH_UP_PERIODS`, the `catch_up_periods` schedule parameter,
/// `report --from/--to`): a year of days.
pub const MAX_CATCH_UP_PERIODS: u32 = 366;

/// Checks `host[:port]` (IPv6 in brackets) and returns the host.
/// The log service gets the logging key in its query string: over TLS, or to this machine.
fn check_log_shipping_url(value: &str) -> Result<(), ConfigError> {
    let name = "LOG_SHIPPING_URL";
    let url = url::Url::parse(value).map_err(|e| invalid(name, format!("{value:?}: {e}")))?;
    let Some(host) = url.host_str() else {
        return Err(invalid(name, format!("{value:?} names no host")));
    };
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => {
            return Err(invalid(
                name,
                format!(
                    "{value:?} would send the logging key unencrypted to {host}, which is not \
                     a loopback host; use https://"
                ),
            ))
        }
        _ => return Err(invalid(name, "must be an https:// URL")),
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(invalid(
            name,
            "must be scheme://host[:port][/path], without credentials, query or fragment",
        ));
    }
    Ok(())
}

fn check_host(name: &'static str, value: &str) -> Result<String, ConfigError> {
    if value.contains("://") || value.contains('/') || value.contains(char::is_whitespace) {
        return Err(invalid(
            name,
            format!("{value:?} must be host[:port], without scheme or path"),
        ));
    }
    let (host, port) = match value.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => match port.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(invalid(name, format!("{value:?} is not [ipv6]:port"))),
            },
            None => return Err(invalid(name, format!("{value:?} lacks the closing ]"))),
        },
        None => match value.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err(invalid(
                    name,
                    format!("{value:?}: write an IPv6 address in brackets, [::1]:port"),
                ))
            }
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        },
    };
    if host.is_empty() {
        return Err(invalid(name, format!("{value:?} names no host")));
    }
    if let Some(port) = port {
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(invalid(
                name,
                format!("port {port:?} is not a number from 1 to 65535"),
            ));
        }
    }
    Ok(host.to_string())
}

/// A usage source must parse as a URL once its month placeholders are filled. The value
/// itself is never quoted: it may carry a password.
fn check_usage_source(source: &str) -> Result<(), ConfigError> {
    let bad = |reason: String| invalid("USAGE_SOURCE", reason);
    if let Some(object) = crate::usage::source::ObjectUrl::parse(&sample_location(source)) {
        return object.map(|_| ()).map_err(bad);
    }
    let database = sql::Engine::of(source).is_some();
    if !database
        && !["file://", "http://", "https://"]
            .iter()
            .any(|scheme| source.starts_with(scheme))
    {
        return Err(bad(
            "must start with file://, http://, https://, s3://, gs://, az://, postgres:// or mysql://".into(),
        ));
    }
    let url = url::Url::parse(&sample_location(source)).map_err(|e| {
        bad(format!(
            "is not a valid URL ({e}); the value is not shown, it may hold a password"
        ))
    })?;
    // A database URL's parameters are checked at start, as the source checks them.
    if let Some(engine) = sql::Engine::of(source) {
        sql::check_parameters(engine, &sample_location(source)).map_err(bad)?;
    }
    match url.scheme() {
        "file" if url.host_str().is_some_and(|h| !h.is_empty()) => Err(bad(
            "a file:// source names no host: write file:///absolute/path".into(),
        )),
        "file" if url.path().ends_with('/') => Err(bad("a file:// source must name a file".into())),
        "http" | "https" if url.host_str().is_none_or(str::is_empty) => {
            Err(bad("names no host".into()))
        }
        _ => Ok(()),
    }
}

/// A database source needs its query, and only a database source has one (a query left over
/// from a database source would silently be ignored).
fn check_usage_query(source: Option<&str>, query: Option<&str>) -> Result<(), ConfigError> {
    let Some(source) = source else {
        return Ok(());
    };
    match (sql::Engine::of(source).is_some(), query) {
        (true, None) => Err(invalid(
            "USAGE_QUERY",
            "is required when USAGE_SOURCE is a database (postgres:// or mysql://)",
        )),
        (false, Some(_)) => Err(invalid(
            "USAGE_QUERY",
            "is set, but USAGE_SOURCE is not a database (postgres:// or mysql://)",
        )),
        _ => Ok(()),
    }
}

/// An extra CA bundle must hold at least one PEM certificate.
fn check_ca_bundle(path: &Path) -> Result<(), ConfigError> {
    let bad = |reason: String| invalid("SSL_CERT_FILE", format!("{}: {reason}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
    let mut certificates = 0;
    for certificate in rustls_pemfile::certs(&mut std::io::BufReader::new(file)) {
        certificate.map_err(|e| bad(format!("is not a PEM bundle: {e}")))?;
        certificates += 1;
    }
    if certificates == 0 {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(())
}

/// A directory workbooks are kept in: created (0700) if missing, and proven writable now
/// rather than when the schedule fires.
fn writable_dir(name: &'static str, dir: PathBuf) -> Result<PathBuf, ConfigError> {
    let bad = |e: &dyn fmt::Display| {
        invalid(
            name,
            format!("{} is not a writable directory: {e}", dir.display()),
        )
    };
    crate::output::create_dir(&dir).map_err(|e| bad(&e.source))?;
    tempfile::Builder::new()
        .prefix(".connect-payg-probe-")
        .tempfile_in(&dir)
        .map_err(|e| bad(&e))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(env: &[(&str, &str)]) -> SettingsSources {
        SettingsSources {
            file: None,
            env: Some(
                env.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            extension: BTreeMap::new(),
            unsecure_flag: false,
        }
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let settings = sources(&[]).load().unwrap();
        assert_eq!(settings.connection.server_address, DEFAULT_SERVER_ADDRESS);
        assert_eq!(
            settings.connection.rest_base_url(),
            "https://api.connect.cloudblue.com/public/v1"
        );
        assert_eq!(settings.report.api_concurrency, 8);
        assert_eq!(settings.report.max_resubmissions, 2);
        assert_eq!(settings.report.late_records, LateRecords::Alert);
        assert_eq!(
            settings.report.usage_source_timeout,
            Duration::from_secs(30 * 60)
        );
        assert_eq!(settings.report.asset_search_criteria, AssetCriteria::Id);
        assert_eq!(settings.report.item_search_criteria, ItemCriteria::Mpn);
        assert!(settings.connection.api_key.is_none());
        assert_eq!(settings.connection.retry_base_delay, Duration::from_secs(1));
        assert_eq!(settings.connection.retry_max_delay, Duration::from_secs(60));
    }

    #[test]
    fn file_then_environment_then_extension_variables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "usage_source = \"file:///from-file.csv\"\napi_concurrency = 3\nmax_resubmissions = 5\n",
        )
        .unwrap();
        let mut layered = sources(&[("API_CONCURRENCY", "4"), ("MAX_RESUBMISSIONS", "6")]);
        layered.file = Some(path);
        layered
            .extension
            .insert("MAX_RESUBMISSIONS".into(), "7".into());
        layered
            .extension
            .insert("LATE_RECORDS".into(), "File".into());
        layered
            .extension
            .insert("SERVER_ADDRESS".into(), "evil.example".into());
        let settings = layered.load().unwrap();
        assert_eq!(settings.report.late_records, LateRecords::File);
        assert_eq!(
            settings.report.usage_source.as_deref(),
            Some("file:///from-file.csv")
        );
        assert_eq!(settings.report.api_concurrency, 4);
        assert_eq!(settings.report.max_resubmissions, 7);
        assert_eq!(
            settings.connection.server_address, DEFAULT_SERVER_ADDRESS,
            "extension variables never move the connection"
        );
    }

    #[test]
    fn bad_values_name_the_setting() {
        for (name, value) in [
            ("API_CONCURRENCY", "0"),
            ("API_CONCURRENCY", "many"),
            ("MAX_RESUBMISSIONS", "-1"),
            ("LATE_RECORDS", "ignore"),
            ("REPORT_PERIOD", "2024-13"),
            ("REPORT_PERIOD", "2024-03-05"),
            ("REPORT_CADENCE", "weekly"),
            ("REPORT_DELAY_HOURS", "-1"),
            ("REPORT_DELAY_HOURS", "745"),
            ("REPORT_DELAY_HOURS", "six"),
            ("CATCH_UP_PERIODS", "0"),
            ("CATCH_UP_PERIODS", "367"),
            ("CATCH_UP_PERIODS", "99999999999999999999"),
            ("ASSET_SEARCH_CRITERIA", "asset.name"),
            ("ITEM_SEARCH_CRITERIA", "item.sku"),
            ("LOG_FORMAT", "xml"),
            ("CONNECT_UNSECURE", "maybe"),
            ("ALERT_WEBHOOK_URL", "not a url"),
            ("USAGE_SOURCE", "ftp://x"),
            ("USAGE_SOURCE", "s3:///usage.csv"),
            ("USAGE_SOURCE", "gs://bucket/"),
            ("USAGE_SOURCE_TIMEOUT", "0"),
            ("USAGE_SOURCE_MAX_INFLATED_BYTES", "0"),
            ("USAGE_SOURCE_MAX_INFLATED_BYTES", "8GiB"),
            ("SERVER_ADDRESS", "https://host/path"),
            ("ENVIRONMENT_ID", "123"),
            ("LOG_LEVEL", "loud"),
            ("LOG_SHIPPING_URL", "listener.logz.io:8071"),
            ("LOG_SHIPPING_URL", "http://listener.logz.io:8070"),
            ("LOG_SHIPPING_URL", "https://listener.logz.io:8071/?token=x"),
            ("LOG_SHIPPING_URL", "ftp://listener.logz.io"),
        ] {
            let error = sources(&[(name, value)]).load().unwrap_err().to_string();
            assert!(error.contains(name), "{name}={value}: {error}");
        }
    }

    #[test]
    fn cadence_delay_and_catch_up_take_their_defaults_and_agree() {
        let defaults = sources(&[]).load().unwrap().report;
        assert_eq!(defaults.cadence, Cadence::Monthly);
        assert_eq!(defaults.report_delay, chrono::Duration::zero());
        assert_eq!(defaults.catch_up_periods, None);
        assert_eq!(defaults.catch_up(Cadence::Monthly), 3);
        assert_eq!(defaults.catch_up(Cadence::Daily), 7);
        let daily = sources(&[
            ("REPORT_CADENCE", "Daily"),
            ("REPORT_DELAY_HOURS", "6"),
            ("CATCH_UP_PERIODS", "30"),
            ("REPORT_PERIOD", "2024-03-05"),
        ])
        .load()
        .unwrap()
        .report;
        assert_eq!(daily.cadence, Cadence::Daily);
        assert_eq!(daily.report_delay, chrono::Duration::hours(6));
        assert_eq!(daily.catch_up(Cadence::Daily), 30);
        assert_eq!(
            daily.report_period,
            Some(Period::parse("2024-03-05").unwrap())
        );
        // A month named for a daily ledger is refused, naming both settings.
        let error = sources(&[("REPORT_CADENCE", "daily"), ("REPORT_PERIOD", "2024-03")])
            .load()
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "setting REPORT_PERIOD is invalid: 2024-03 is a monthly period, but REPORT_CADENCE is daily"
        );
        assert!(
            sources(&[("REPORT_DELAY_HOURS", "744"), ("CATCH_UP_PERIODS", "366")])
                .load()
                .is_ok()
        );
    }

    #[test]
    fn object_sources_read_cloud_variables_from_the_environment_only() {
        let mut layered = sources(&[
            ("USAGE_SOURCE", "s3://bucket/usage/{period}/*.jsonl"),
            ("AWS_SECRET_ACCESS_KEY", "aws-hidden"),
            ("AWS_REGION", "eu-west-1"),
            ("GOOGLE_SERVICE_ACCOUNT_KEY", "gcp-hidden"),
            ("AZURE_STORAGE_ACCOUNT_NAME", "vendor"),
            ("USAGE_SOURCE_MAX_INFLATED_BYTES", "1048576"),
            ("HOME", "/root"),
        ]);
        layered.extension.insert(
            "AWS_ENDPOINT_URL".into(),
            "https://elsewhere.example".into(),
        );
        let settings = layered.load().unwrap();
        let names: Vec<&str> = settings
            .report
            .cloud_env
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            names,
            [
                "aws_region",
                "aws_secret_access_key",
                "azure_storage_account_name",
                "google_service_account_key"
            ]
        );
        assert_eq!(settings.report.usage_source_max_inflated, 1 << 20);
        let debug = format!("{settings:?}");
        assert!(
            !debug.contains("aws-hidden") && !debug.contains("gcp-hidden"),
            "{debug}"
        );
        for source in [
            "gs://b/usage-{period}.parquet",
            "az://container/u/{period}.csv.gz",
        ] {
            assert!(
                sources(&[("USAGE_SOURCE", source)]).load().is_ok(),
                "{source}"
            );
        }
        let defaults = sources(&[]).load().unwrap();
        assert_eq!(defaults.report.usage_source_max_inflated, 8 << 30);
        assert!(defaults.report.cloud_env.is_empty());
    }

    #[test]
    fn log_level_and_shipping_url() {
        let settings = sources(&[]).load().unwrap();
        assert_eq!(settings.connection.log_level, None);
        assert_eq!(
            settings.connection.log_shipping_url,
            DEFAULT_LOG_SHIPPING_URL
        );
        let settings = sources(&[
            ("LOG_LEVEL", "WARNING"),
            ("LOG_SHIPPING_URL", "http://127.0.0.1:9/_sim/logs"),
        ])
        .load()
        .unwrap();
        assert_eq!(settings.connection.log_level, Some(LogLevel::Warn));
        assert_eq!(
            settings.connection.log_shipping_url,
            "http://127.0.0.1:9/_sim/logs"
        );
        for (text, level) in [
            ("trace", Some(LogLevel::Trace)),
            ("DEBUG", Some(LogLevel::Debug)),
            (" Info ", Some(LogLevel::Info)),
            ("warn", Some(LogLevel::Warn)),
            ("WARNING", Some(LogLevel::Warn)),
            ("ERROR", Some(LogLevel::Error)),
            ("CRITICAL", Some(LogLevel::Error)),
            ("NOTSET", None),
            ("", None),
        ] {
            assert_eq!(LogLevel::parse(text), level, "{text:?}");
        }
        assert!(LogLevel::Error < LogLevel::Trace);
    }

    #[test]
    fn missing_file_named_explicitly_is_an_error() {
        let mut layered = sources(&[]);
        layered.file = Some(PathBuf::from("/nonexistent/connect-payg.toml"));
        let error = layered.load().unwrap_err().to_string();
        assert!(error.contains("/nonexistent/connect-payg.toml"), "{error}");
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let settings = sources(&[
            ("API_KEY", "ApiKey SU-1:topsecret"),
            ("USAGE_SOURCE_AUTH", "Bearer hidden-token"),
        ])
        .load()
        .unwrap();
        let debug = format!("{settings:?}");
        assert!(!debug.contains("topsecret"), "{debug}");
        assert!(!debug.contains("hidden-token"), "{debug}");
        assert_eq!(
            settings.connection.api_key.unwrap().expose(),
            "ApiKey SU-1:topsecret"
        );
    }

    #[test]
    fn unsecure_switches_schemes() {
        let mut layered = sources(&[("SERVER_ADDRESS", "127.0.0.1:9000")]);
        layered.unsecure_flag = true;
        let settings = layered.load().unwrap();
        assert_eq!(
            settings.connection.rest_base_url(),
            "http://127.0.0.1:9000/public/v1"
        );
        assert_eq!(
            settings.connection.websocket_origin(),
            "ws://127.0.0.1:9000"
        );
    }

    #[test]
    fn criteria_round_trip() {
        for s in [
            "asset.id",
            "asset.external_id",
            "asset.external_uid",
            "parameter.tenant_id",
        ] {
            assert_eq!(AssetCriteria::parse(s).unwrap().as_setting(), s);
        }
        for s in ["item.mpn", "item.local_id", "item.id"] {
            assert_eq!(ItemCriteria::parse(s).unwrap().as_setting(), s);
        }
    }

    fn with_extension(env: &[(&str, &str)], extension: &[(&str, &str)]) -> SettingsSources {
        let mut layered = sources(env);
        layered.extension = extension
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        layered
    }

    #[test]
    fn every_duration_and_count_has_an_upper_bound() {
        for name in [
            "BACKGROUND_TASK_MAX_EXECUTION_TIME",
            "INTERACTIVE_TASK_MAX_EXECUTION_TIME",
            "SCHEDULED_TASK_MAX_EXECUTION_TIME",
            "READY_TIMEOUT",
            "API_RETRY_BASE_MS",
            "API_RETRY_MAX_MS",
            "READY_POLL_INTERVAL_MS",
            "API_CONCURRENCY",
            "MAX_RESUBMISSIONS",
            "SPILL_BUDGET_BYTES",
        ] {
            for value in [
                "18446744073709551615",
                "99999999999999999999999",
                "9999999999",
            ] {
                let error = sources(&[(name, value)]).load().unwrap_err().to_string();
                assert!(error.contains(name), "{name}={value}: {error}");
                assert!(error.contains("maximum"), "{name}={value}: {error}");
            }
        }
        let week = MAX_SECONDS.to_string();
        let settings = sources(&[("BACKGROUND_TASK_MAX_EXECUTION_TIME", week.as_str())])
            .load()
            .unwrap();
        assert_eq!(
            settings.runner.background_time_limit,
            Duration::from_secs(MAX_SECONDS)
        );
    }

    #[test]
    fn an_invalid_extension_variable_name_is_skipped_and_the_rest_applied() {
        let settings = with_extension(
            &[],
            &[
                ("MY VAR", "x"),
                ("a.b", "y"),
                ("", "z"),
                ("MAX_RESUBMISSIONS", "5"),
                ("API_CONCURRENCY", "3"),
            ],
        )
        .load()
        .unwrap();
        assert_eq!(settings.report.max_resubmissions, 5);
        assert_eq!(settings.report.api_concurrency, 3);
    }

    #[test]
    fn workbook_dir_and_time_limits_are_not_taken_from_extension_variables() {
        let dir = tempfile::tempdir().unwrap();
        let settings = with_extension(
            &[],
            &[
                ("WORKBOOK_DIR", dir.path().to_str().unwrap()),
                ("BACKGROUND_TASK_MAX_EXECUTION_TIME", "5"),
            ],
        )
        .load()
        .unwrap();
        assert_eq!(settings.report.workbook_dir, None);
        assert_eq!(
            settings.runner.background_time_limit,
            Duration::from_secs(300)
        );
    }

    /// Variables of one layer, by name.
    type Vars<'a> = &'a [(&'a str, &'a str)];

    #[test]
    fn a_database_source_needs_its_query_and_keeps_its_password_to_its_origin() {
        const QUERY: &str = "SELECT * FROM usage WHERE month = {period}";
        const DB: &str = "postgres://payg@db.example/billing?sslmode=verify-full";
        let accepted: &[(Vars, Vars)] = &[
            (&[("USAGE_SOURCE", DB), ("USAGE_QUERY", QUERY)], &[]),
            (
                &[("USAGE_SOURCE_AUTH", "pw"), ("USAGE_SOURCE", DB)],
                &[("USAGE_QUERY", QUERY)],
            ),
            (
                &[("USAGE_SOURCE_AUTH", "pw"), ("USAGE_SOURCE", DB)],
                &[
                    (
                        "USAGE_SOURCE",
                        "postgres://payg@db.example/other?sslmode=require",
                    ),
                    ("USAGE_QUERY", QUERY),
                ],
            ),
            (
                &[
                    ("USAGE_SOURCE_AUTH", "pw"),
                    ("USAGE_SOURCE", "mysql://payg@127.0.0.1:3306/billing"),
                    ("USAGE_QUERY", QUERY),
                ],
                &[],
            ),
        ];
        for (env, extension) in accepted {
            let settings = with_extension(env, extension).load();
            assert!(
                settings.is_ok(),
                "{env:?} {extension:?}: {:?}",
                settings.err()
            );
        }
        let refused: &[(Vars, Vars, &str)] = &[
            (&[("USAGE_SOURCE", DB)], &[], "USAGE_QUERY"),
            (
                &[("USAGE_SOURCE", "file:///u.csv"), ("USAGE_QUERY", QUERY)],
                &[],
                "USAGE_QUERY",
            ),
            (
                &[
                    ("USAGE_SOURCE_AUTH", "pw"),
                    ("USAGE_SOURCE", "postgres://payg@db.example/billing"),
                    ("USAGE_QUERY", QUERY),
                ],
                &[],
                "USAGE_SOURCE_AUTH",
            ),
            (
                &[("USAGE_SOURCE_AUTH", "pw"), ("USAGE_SOURCE", DB)],
                &[
                    (
                        "USAGE_SOURCE",
                        "postgres://payg@evil.example/x?sslmode=require",
                    ),
                    ("USAGE_QUERY", QUERY),
                ],
                "USAGE_SOURCE_AUTH",
            ),
        ];
        for (env, extension, name) in refused {
            let error = with_extension(env, extension)
                .load()
                .unwrap_err()
                .to_string();
            assert!(error.contains(name), "{env:?} {extension:?}: {error}");
            assert!(!error.contains("pw"), "{error}");
        }
    }

    #[test]
    fn the_source_auth_goes_only_to_an_origin_its_layer_configures() {
        const AUTH: &str = "Bearer do-not-show";
        let file_dir = tempfile::tempdir().unwrap();
        let file = file_dir.path().join("c.toml");
        std::fs::write(
            &file,
            "usage_source_auth = \"Bearer do-not-show\"\nusage_source = \"https://vendor.example/u\"\n",
        )
        .unwrap();
        let accepted: &[(Vars, Vars)] = &[
            (
                &[
                    ("USAGE_SOURCE_AUTH", AUTH),
                    ("USAGE_SOURCE", "https://vendor.example/u"),
                ],
                &[],
            ),
            (
                &[
                    ("USAGE_SOURCE_AUTH", AUTH),
                    ("USAGE_SOURCE", "https://vendor.example/u"),
                ],
                &[("USAGE_SOURCE", "https://vendor.example/other?from={from}")],
            ),
            (
                &[],
                &[
                    ("USAGE_SOURCE_AUTH", AUTH),
                    ("USAGE_SOURCE", "https://x.example/u"),
                ],
            ),
            (
                &[("USAGE_SOURCE_AUTH", AUTH)],
                &[("USAGE_SOURCE", "file:///data/u.csv")],
            ),
            (
                &[
                    ("USAGE_SOURCE_AUTH", AUTH),
                    ("USAGE_SOURCE", "http://127.0.0.1:8080/u"),
                ],
                &[],
            ),
            (
                &[
                    ("USAGE_SOURCE_AUTH", AUTH),
                    ("USAGE_SOURCE", "http://[::1]:8080/u"),
                ],
                &[],
            ),
        ];
        for (env, extension) in accepted {
            let settings = with_extension(env, extension).load();
            assert!(
                settings.is_ok(),
                "{env:?} {extension:?}: {:?}",
                settings.err()
            );
        }
        let refused: &[(Vars, Vars)] = &[
            (
                &[
                    ("USAGE_SOURCE_AUTH", AUTH),
                    ("USAGE_SOURCE", "https://vendor.example/u"),
                ],
                &[("USAGE_SOURCE", "https://evil.example/u")],
            ),
            (
                &[("USAGE_SOURCE_AUTH", AUTH)],
                &[("USAGE_SOURCE", "https://evil.example/u")],
            ),
            (
                &[
                    ("USAGE_SOURCE_AUTH", AUTH),
                    ("USAGE_SOURCE", "https://vendor.example/u"),
                ],
                &[("USAGE_SOURCE", "https://vendor.example:8443/u")],
            ),
            (
                &[
                    ("USAGE_SOURCE_AUTH", AUTH),
                    ("USAGE_SOURCE", "http://vendor.example/u"),
                ],
                &[],
            ),
        ];
        for (env, extension) in refused {
            let error = with_extension(env, extension)
                .load()
                .unwrap_err()
                .to_string();
            assert!(error.contains("USAGE_SOURCE_AUTH"), "{error}");
            assert!(
                error.contains("USAGE_SOURCE "),
                "names both settings: {error}"
            );
            assert!(!error.contains("do-not-show"), "{error}");
        }
        // The file's auth does not follow an environment source to another origin.
        let mut layered = sources(&[("USAGE_SOURCE", "https://evil.example/u")]);
        layered.file = Some(file);
        let error = layered.load().unwrap_err().to_string();
        assert!(error.contains("the configuration file"), "{error}");
        assert!(error.contains("https://evil.example"), "{error}");
    }

    #[test]
    fn a_usage_source_that_does_not_parse_is_refused_without_echo() {
        for value in [
            "https://user:hunter2@ho st/u.csv",
            "https://user:hunter2@[bad/u.csv",
            "http://:hunter2@/u",
            "file://hunter2.example/u.csv",
            "file:///data/hunter2/",
        ] {
            let error = sources(&[("USAGE_SOURCE", value)])
                .load()
                .unwrap_err()
                .to_string();
            assert!(error.contains("USAGE_SOURCE"), "{value}: {error}");
            assert!(!error.contains("hunter2"), "{value}: {error}");
        }
        for value in [
            "file:///data/usage-{period}.csv",
            "https://user:pw@vendor.example/usage/{period}?from={from}&to={to}&token=abc",
        ] {
            assert!(
                sources(&[("USAGE_SOURCE", value)]).load().is_ok(),
                "{value}"
            );
        }
    }

    #[test]
    fn unsecure_is_refused_for_a_host_that_is_not_loopback() {
        for (address, allowed) in [
            ("127.0.0.1:9000", true),
            ("localhost:9000", true),
            ("[::1]:9000", true),
            ("api.connect.cloudblue.com", false),
            ("10.0.0.1:80", false),
        ] {
            let mut layered = sources(&[("SERVER_ADDRESS", address)]);
            layered.unsecure_flag = true;
            match layered.load() {
                Ok(_) => assert!(allowed, "{address} accepted"),
                Err(error) => {
                    assert!(!allowed, "{address}: {error}");
                    let error = error.to_string();
                    assert!(error.contains("CONNECT_UNSECURE_ANY_HOST"), "{error}");
                    assert!(error.contains("not a loopback host"), "{error}");
                }
            }
        }
        let refused = sources(&[
            ("SERVER_ADDRESS", "127.0.0.1:9000"),
            ("API_ADDRESS", "api.example.com"),
            ("CONNECT_UNSECURE", "true"),
        ]);
        assert!(refused
            .load()
            .unwrap_err()
            .to_string()
            .contains("API_ADDRESS"));
        let mut allowed = sources(&[
            ("SERVER_ADDRESS", "connect.test:80"),
            ("CONNECT_UNSECURE_ANY_HOST", "true"),
        ]);
        allowed.unsecure_flag = true;
        assert!(allowed.load().is_ok());
    }

    #[test]
    fn settings_that_would_fail_later_fail_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let empty_pem = dir.path().join("empty.pem");
        std::fs::write(&empty_pem, "").unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, "").unwrap();
        let under_a_file = not_a_dir.join("workbooks");
        for (name, value) in [
            ("SERVER_ADDRESS", ""),
            ("SERVER_ADDRESS", "  "),
            ("SERVER_ADDRESS", "host:abc"),
            ("SERVER_ADDRESS", "host:0"),
            ("SERVER_ADDRESS", "host:70000"),
            ("SERVER_ADDRESS", "host:"),
            ("SERVER_ADDRESS", ":443"),
            ("SERVER_ADDRESS", "::1:443"),
            ("SERVER_ADDRESS", "[::1"),
            ("API_ADDRESS", "api:x"),
            ("SSL_CERT_FILE", ""),
            ("SSL_CERT_FILE", empty_pem.to_str().unwrap()),
            ("SSL_CERT_FILE", "/nonexistent.pem"),
            ("WORKBOOK_DIR", ""),
            ("WORKBOOK_DIR", under_a_file.to_str().unwrap()),
        ] {
            let error = sources(&[(name, value)]).load().unwrap_err().to_string();
            assert!(error.contains(name), "{name}={value:?}: {error}");
        }
        let workbooks = dir.path().join("new/workbooks");
        let settings = sources(&[
            ("SERVER_ADDRESS", "[::1]:9000"),
            ("API_ADDRESS", "api.example.com:443"),
            ("WORKBOOK_DIR", workbooks.to_str().unwrap()),
        ])
        .load()
        .unwrap();
        assert_eq!(settings.report.workbook_dir, Some(workbooks.clone()));
        assert_eq!(
            std::fs::read_dir(&workbooks).unwrap().count(),
            0,
            "no probe left"
        );
    }

    #[test]
    fn unknown_file_keys_name_the_closest_known_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "usage_sorce = \"file:///x.csv\"\n").unwrap();
        let mut layered = sources(&[]);
        layered.file = Some(path.clone());
        let error = layered.load().unwrap_err().to_string();
        assert!(error.contains("\"usage_sorce\""), "{error}");
        assert!(error.contains("\"usage_source\""), "{error}");
        std::fs::write(&path, "[usage]\nsource = \"x\"\n").unwrap();
        let error = layered.load().unwrap_err().to_string();
        assert!(error.contains("usage"), "{error}");
        std::fs::write(&path, "https_proxy = \"http://p:3128\"\n").unwrap();
        assert!(layered.load().is_err(), "proxies are environment only");
    }

    #[test]
    fn every_setting_read_is_listed_for_help_and_files() {
        let asked = std::cell::RefCell::new(Vec::<String>::new());
        let get = |key: &str| {
            asked.borrow_mut().push(key.to_string());
            None
        };
        Settings::from_lookup(&get, false).unwrap();
        let listed: Vec<String> = SETTINGS
            .iter()
            .map(|s| s.name.to_ascii_lowercase())
            .collect();
        for key in asked.borrow().iter() {
            assert!(listed.contains(key), "{key} is missing from SETTINGS");
        }
        let help = settings_help();
        for setting in SETTINGS {
            assert!(help.contains(setting.name), "{}", setting.name);
        }
    }

    /// The README's configuration tables: rows of `| `NAME` / `NAME` | `default` | meaning |`
    /// between "## Configuration" and the next "## ", as (names, default cell).
    fn readme_rows() -> Vec<(Vec<String>, String)> {
        let readme = include_str!("../README.md");
        let start = readme
            .find("## Configuration")
            .expect("a Configuration section");
        let end = readme[start + 3..]
            .find("\n## ")
            .map_or(readme.len(), |at| start + 3 + at);
        readme[start..end]
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let first = cells.get(1)?;
                if !first.starts_with('`') || cells.len() < 4 {
                    return None;
                }
                let names = first
                    .split('/')
                    .map(|name| name.trim().trim_matches('`').to_string())
                    .filter(|name| name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
                    .collect();
                Some((names, cells[2].to_string()))
            })
            .collect()
    }

    #[test]
    fn the_readme_tables_name_every_setting_with_its_default() {
        let rows = readme_rows();
        assert!(rows.len() > 20, "{rows:?}");
        for (names, default) in &rows {
            for name in names {
                let setting = Setting::named(name)
                    .unwrap_or_else(|| panic!("README names {name}, which is not in SETTINGS"));
                if let (Some(value), true) = (setting.default, names.len() == 1) {
                    assert!(
                        default.contains(&format!("`{value}`")),
                        "README gives {name} the default {default:?}, SETTINGS {value:?}"
                    );
                }
            }
        }
        for setting in SETTINGS.iter().filter(|s| s.name != "RUST_LOG") {
            assert!(
                rows.iter()
                    .any(|(names, _)| names.iter().any(|n| n == setting.name)),
                "{} has no row in the README's configuration tables",
                setting.name
            );
        }
    }

    #[test]
    fn extension_json_declares_only_platform_settings_with_their_defaults() {
        let descriptor: serde_json::Value =
            serde_json::from_str(include_str!("../extension.json")).unwrap();
        let variables = descriptor["variables"].as_array().unwrap();
        assert!(!variables.is_empty());
        for variable in variables {
            let name = variable["name"].as_str().unwrap();
            let setting = Setting::named(name)
                .unwrap_or_else(|| panic!("extension.json declares {name}, not in SETTINGS"));
            assert_eq!(
                setting.reach,
                Reach::Anywhere,
                "{name}: the platform may not set it"
            );
            assert_eq!(
                variable["initial_value"].as_str().unwrap(),
                setting.default.unwrap_or_default(),
                "{name}"
            );
            assert_eq!(variable["secure"].as_bool(), Some(setting.secret), "{name}");
        }
    }
}
