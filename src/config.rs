//! Settings, layered as spec §3 says: built-in defaults < `connect-payg.toml` (or `--config`)
//! < environment variables < extension variables pushed by Connect in `setup_response`.
//!
//! Everything is parsed and checked here, once, so the rest of the program works with typed
//! values; a bad setting fails with a message naming the setting (by its environment name).
//! Secrets are wrapped in [`Secret`], whose `Debug` and `Display` never show the value.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::usage::period::Period;

/// Default REST and websocket host of Connect.
pub const DEFAULT_SERVER_ADDRESS: &str = "api.connect.cloudblue.com";
/// Config file read from the working directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "connect-payg.toml";

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How a vendor record's `subscription_id` finds its asset (`ASSET_SEARCH_CRITERIA`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AssetCriteria {
    Id,
    ExternalId,
    ExternalUid,
    Parameter(String),
}

impl AssetCriteria {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "asset.id" => Ok(AssetCriteria::Id),
            "asset.external_id" => Ok(AssetCriteria::ExternalId),
            "asset.external_uid" => Ok(AssetCriteria::ExternalUid),
            other => match other.strip_prefix("parameter.") {
                Some(name) if !name.is_empty() => Ok(AssetCriteria::Parameter(name.to_string())),
                _ => Err(format!(
                    "{other:?} is not one of asset.id, asset.external_id, asset.external_uid, parameter.<name>"
                )),
            },
        }
    }

    /// The spelling used in configuration and in the workbook's `asset_search_criteria`.
    pub fn as_setting(&self) -> String {
        match self {
            AssetCriteria::Id => "asset.id".into(),
            AssetCriteria::ExternalId => "asset.external_id".into(),
            AssetCriteria::ExternalUid => "asset.external_uid".into(),
            AssetCriteria::Parameter(name) => format!("parameter.{name}"),
        }
    }
}

/// How a vendor record's `item_mpn` finds the PAYG item (`ITEM_SEARCH_CRITERIA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemCriteria {
    Mpn,
    LocalId,
    Id,
}

impl ItemCriteria {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "item.mpn" => Ok(ItemCriteria::Mpn),
            "item.local_id" => Ok(ItemCriteria::LocalId),
            "item.id" => Ok(ItemCriteria::Id),
            other => Err(format!(
                "{other:?} is not one of item.mpn, item.local_id, item.id"
            )),
        }
    }

    pub fn as_setting(&self) -> &'static str {
        match self {
            ItemCriteria::Mpn => "item.mpn",
            ItemCriteria::LocalId => "item.local_id",
            ItemCriteria::Id => "item.id",
        }
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
    /// Backoff scale of REST retries (`API_RETRY_BASE_MS`); tests and soaks shrink it.
    pub retry_base_delay: Duration,
    /// Longest single REST retry wait, `Retry-After` included (`API_RETRY_MAX_MS`).
    pub retry_max_delay: Duration,
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
    /// `USAGE_SOURCE_TIMEOUT`: how long reading an HTTP source may take in all.
    pub usage_source_timeout: Duration,
    pub asset_search_criteria: AssetCriteria,
    pub item_search_criteria: ItemCriteria,
    pub report_period: Option<Period>,
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
}

impl ReportSettings {
    pub fn require_usage_source(&self) -> Result<&str, ConfigError> {
        self.usage_source.as_deref().ok_or(ConfigError::Missing {
            name: "USAGE_SOURCE",
        })
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
    /// A config file; when `None`, `connect-payg.toml` is read if it exists.
    pub file: Option<PathBuf>,
    /// Environment variables; `None` means the process environment. Tests pass a map.
    pub env: Option<HashMap<String, String>>,
    /// Extension variables from Connect (highest precedence), by their upper-case names.
    pub extension: BTreeMap<String, String>,
    /// `--unsecure` on the command line.
    pub unsecure_flag: bool,
}

/// Settings that only the environment (or the file) may set: a platform-pushed variable must
/// not redirect where this program connects to or which key it uses.
const CONNECTION_KEYS: &[&str] = &[
    "api_key",
    "environment_id",
    "instance_id",
    "server_address",
    "api_address",
    "connect_unsecure",
    "ssl_cert_file",
    "log_format",
    "api_retry_base_ms",
    "api_retry_max_ms",
];

impl SettingsSources {
    pub fn load(&self) -> Result<Settings, ConfigError> {
        let merged = self.build()?;
        let get = |key: &str| -> Option<String> {
            merged
                .get_string(key)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Settings::from_lookup(&get, self.unsecure_flag)
    }

    fn build(&self) -> Result<config::Config, ConfigError> {
        let mut builder = config::Config::builder();
        let (path, required) = match &self.file {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        builder = builder.add_source(
            config::File::from(path.as_path())
                .format(config::FileFormat::Toml)
                .required(required),
        );
        let environment = config::Environment::default().try_parsing(false);
        let environment = match &self.env {
            Some(map) => environment.source(Some(
                map.iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<config::Map<String, String>>(),
            )),
            None => environment,
        };
        builder = builder.add_source(environment);
        for (name, value) in &self.extension {
            let key = name.to_ascii_lowercase();
            if CONNECTION_KEYS.contains(&key.as_str()) {
                continue;
            }
            builder = builder
                .set_override(key, value.clone())
                .map_err(|e| file_error(&path, e))?;
        }
        builder.build().map_err(|e| file_error(&path, e))
    }
}

fn file_error(path: &Path, error: config::ConfigError) -> ConfigError {
    ConfigError::File {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
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

fn seconds(
    name: &'static str,
    value: Option<String>,
    default: u64,
) -> Result<Duration, ConfigError> {
    parse_number(name, value, default, 1).map(Duration::from_secs)
}

impl Settings {
    /// Reads the process environment and the default config file.
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
        let server_address = get("server_address").unwrap_or_else(|| DEFAULT_SERVER_ADDRESS.into());
        check_host("SERVER_ADDRESS", &server_address)?;
        let api_address = get("api_address");
        if let Some(address) = &api_address {
            check_host("API_ADDRESS", address)?;
        }
        let ssl_cert_file = get("ssl_cert_file").map(PathBuf::from);
        if let Some(path) = &ssl_cert_file {
            if !path.is_file() {
                return Err(invalid(
                    "SSL_CERT_FILE",
                    format!("{} is not a readable file", path.display()),
                ));
            }
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
            retry_base_delay: Duration::from_millis(parse_number(
                "API_RETRY_BASE_MS",
                get("api_retry_base_ms"),
                1000,
                1,
            )?),
            retry_max_delay: Duration::from_millis(parse_number(
                "API_RETRY_MAX_MS",
                get("api_retry_max_ms"),
                60_000,
                1,
            )?),
        };

        let report_period = get("report_period")
            .map(|v| Period::parse(&v).map_err(|reason| invalid("REPORT_PERIOD", reason)))
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
            if !["file://", "http://", "https://"]
                .iter()
                .any(|scheme| source.starts_with(scheme))
            {
                return Err(invalid(
                    "USAGE_SOURCE",
                    "must start with file://, http:// or https://",
                ));
            }
        }
        let report = ReportSettings {
            usage_source,
            usage_source_auth: get("usage_source_auth").map(Secret::new),
            usage_source_timeout: seconds(
                "USAGE_SOURCE_TIMEOUT",
                get("usage_source_timeout"),
                crate::usage::source::DEFAULT_TIMEOUT.as_secs(),
            )?,
            asset_search_criteria,
            item_search_criteria,
            report_period,
            max_resubmissions: parse_number("MAX_RESUBMISSIONS", get("max_resubmissions"), 2, 0)?,
            alert_webhook_url,
            api_concurrency: parse_number("API_CONCURRENCY", get("api_concurrency"), 8, 1)?,
            ready_timeout: seconds("READY_TIMEOUT", get("ready_timeout"), 900)?,
            workbook_dir: get("workbook_dir").map(PathBuf::from),
            ready_poll_interval: Duration::from_millis(parse_number(
                "READY_POLL_INTERVAL_MS",
                get("ready_poll_interval_ms"),
                2000,
                1,
            )?),
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

fn check_host(name: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.contains("://") || value.contains('/') || value.contains(char::is_whitespace) {
        return Err(invalid(
            name,
            format!("{value:?} must be host[:port], without scheme or path"),
        ));
    }
    Ok(())
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
            .insert("SERVER_ADDRESS".into(), "evil.example".into());
        let settings = layered.load().unwrap();
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
            ("REPORT_PERIOD", "2024-13"),
            ("ASSET_SEARCH_CRITERIA", "asset.name"),
            ("ITEM_SEARCH_CRITERIA", "item.sku"),
            ("LOG_FORMAT", "xml"),
            ("CONNECT_UNSECURE", "maybe"),
            ("ALERT_WEBHOOK_URL", "not a url"),
            ("USAGE_SOURCE", "ftp://x"),
            ("USAGE_SOURCE_TIMEOUT", "0"),
            ("SERVER_ADDRESS", "https://host/path"),
            ("ENVIRONMENT_ID", "123"),
        ] {
            let error = sources(&[(name, value)]).load().unwrap_err().to_string();
            assert!(error.contains(name), "{name}={value}: {error}");
        }
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
}
