//! How to build a [`super::ConnectClient`]: where Connect is, the key, and the knobs for
//! concurrency, retries, timeouts and page size, with production defaults that tests can
//! shrink.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Secret, Settings};

use super::error::ConnectError;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `http(s)://host/public/v1`, without a trailing slash.
    pub base_url: String,
    /// Sent verbatim as `Authorization` (it already reads `ApiKey SU-…:…`).
    pub api_key: Secret,
    /// Requests in flight at once, shared by every clone of the client.
    pub concurrency: usize,
    /// A PEM bundle of extra CAs trusted on top of the system roots (`SSL_CERT_FILE`).
    pub extra_ca_file: Option<PathBuf>,
    /// Attempts per request in total, the first included.
    pub max_attempts: u32,
    /// Backoff scale: the n-th retry waits a random time up to `base_delay · 2^(n-1)`.
    pub base_delay: Duration,
    /// Upper bound of any single wait, `Retry-After` included.
    pub max_delay: Duration,
    /// Whole-request timeout (uploads and big lists are slow; official clients use 180–300 s).
    pub timeout: Duration,
    /// Items asked for per list page.
    pub page_size: u32,
    /// Largest answer body read; a bigger one is refused unread (a list page of 100 objects
    /// is a few hundred kilobytes).
    pub max_body_bytes: usize,
    /// Where requests and retries are counted (off unless a runner serves metrics).
    pub metrics: crate::metrics::Metrics,
}

impl ClientOptions {
    pub fn new(base_url: impl Into<String>, api_key: Secret) -> Self {
        ClientOptions {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            api_key,
            concurrency: 8,
            extra_ca_file: None,
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            timeout: Duration::from_secs(180),
            page_size: 100,
            max_body_bytes: 64 * 1024 * 1024,
            metrics: crate::metrics::Metrics::off(),
        }
    }

    /// Options for the configured Connect (`API_KEY`, `SERVER_ADDRESS`/`API_ADDRESS`,
    /// `--unsecure`, `SSL_CERT_FILE`, `API_CONCURRENCY`, `API_RETRY_BASE_MS`, `API_RETRY_MAX_MS`).
    pub fn from_settings(settings: &Settings) -> Result<Self, ConnectError> {
        let connection = &settings.connection;
        let api_key = connection
            .require_api_key()
            .map_err(|e| ConnectError::Config(e.to_string()))?;
        let mut options = ClientOptions::new(connection.rest_base_url(), api_key.clone());
        options.concurrency = settings.report.api_concurrency;
        options.extra_ca_file = connection.ssl_cert_file.clone();
        options.base_delay = connection.retry_base_delay;
        options.max_delay = connection.retry_max_delay;
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SettingsSources;

    fn settings(env: &[(&str, &str)]) -> Settings {
        SettingsSources {
            env: Some(
                env.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
        .load()
        .unwrap()
    }

    #[test]
    fn a_missing_api_key_is_named() {
        let error = ClientOptions::from_settings(&settings(&[])).unwrap_err();
        assert!(matches!(error, ConnectError::Config(_)));
        assert!(error.to_string().contains("API_KEY"), "{error}");
    }

    #[test]
    fn settings_fill_the_options() {
        let options = ClientOptions::from_settings(&settings(&[
            ("API_KEY", "ApiKey SU-1:secret"),
            ("API_ADDRESS", "api.example.com:8443"),
            ("API_CONCURRENCY", "3"),
            ("API_RETRY_BASE_MS", "5"),
            ("API_RETRY_MAX_MS", "40"),
        ]))
        .unwrap();
        assert_eq!(options.base_url, "https://api.example.com:8443/public/v1");
        assert_eq!(options.api_key.expose(), "ApiKey SU-1:secret");
        assert_eq!(options.concurrency, 3);
        assert_eq!(options.page_size, 100);
        assert_eq!(options.base_delay, Duration::from_millis(5));
        assert_eq!(options.max_delay, Duration::from_millis(40));
        assert!(!format!("{options:?}").contains("secret"));
    }

    #[test]
    fn trailing_slashes_are_dropped() {
        let options = ClientOptions::new("http://127.0.0.1:1/public/v1/", Secret::new("k"));
        assert_eq!(options.base_url, "http://127.0.0.1:1/public/v1");
    }
}
