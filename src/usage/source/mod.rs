//! Where usage comes from (`USAGE_SOURCE`): a local file or an HTTP(S) endpoint, holding CSV,
//! a JSON array or JSON lines. Every source is read as a stream of [`RawRecord`]s so memory does
//! not grow with the file.
//!
//! Errors are split by consequence: a record that cannot be decoded is a [`BadRecord`] in the
//! stream (reported, the run goes on); a source that cannot be opened or breaks mid-way is a
//! [`SourceError`] (the run stops and is retried), because silently losing the rest of a file
//! would under-report usage. Errors name the source without credentials or query string.

mod csv;
mod json;

use std::time::Duration;

use futures::stream::BoxStream;
use futures::TryStreamExt;
use tokio::io::AsyncRead;

use crate::config::Secret;
use crate::usage::period::Period;
use crate::usage::record::{BadRecord, RawRecord};

/// One item of a source: a record, a record that could not be decoded, or the end of the road.
pub type RecordStream = BoxStream<'static, Result<Result<RawRecord, BadRecord>, SourceError>>;

/// A single record larger than this is refused rather than buffered (hostile or broken input).
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// How much of a local source file one read takes.
const FILE_READ_SIZE: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("usage source {source_name}: file not found")]
    NotFound { source_name: String },
    #[error("usage source {source_name}: {reason}")]
    Unreadable { source_name: String, reason: String },
    #[error("usage source {source_name}: HTTP status {status}")]
    Http { source_name: String, status: u16 },
    #[error("usage source {source_name}: {reason}")]
    Format { source_name: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonArray,
    JsonLines,
}

impl Format {
    fn from_path(path: &str) -> Option<Format> {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Some(Format::Csv)
        } else if lower.ends_with(".json") {
            Some(Format::JsonArray)
        } else if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
            Some(Format::JsonLines)
        } else {
            None
        }
    }

    fn from_content_type(content_type: &str) -> Option<Format> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "text/csv" | "application/csv" => Some(Format::Csv),
            "application/json" => Some(Format::JsonArray),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/jsonlines" => Some(Format::JsonLines),
            _ => None,
        }
    }
}

/// A configured `USAGE_SOURCE` with its optional `USAGE_SOURCE_AUTH`.
#[derive(Debug, Clone)]
pub struct UsageSource {
    template: String,
    auth: Option<Secret>,
}

impl UsageSource {
    pub fn new(template: impl Into<String>, auth: Option<Secret>) -> Self {
        UsageSource {
            template: template.into(),
            auth,
        }
    }

    /// The location for a month: `{period}` → `YYYY-MM`, `{from}`/`{to}` → first/last day.
    pub fn location(&self, period: Period) -> String {
        self.template
            .replace("{period}", &period.to_string())
            .replace("{from}", &period.first_day().to_string())
            .replace("{to}", &period.last_day().to_string())
    }

    /// The location as it may appear in logs and errors: no credentials, no query string.
    pub fn display_name(&self, period: Period) -> String {
        redact(&self.location(period))
    }

    /// Opens the month's records as a stream.
    pub async fn open(&self, period: Period) -> Result<RecordStream, SourceError> {
        let location = self.location(period);
        let source_name = redact(&location);
        if let Some(path) = location.strip_prefix("file://") {
            let format = Format::from_path(path).ok_or_else(|| SourceError::Format {
                source_name: source_name.clone(),
                reason: "cannot tell the format: name the file .csv, .json, .jsonl or .ndjson"
                    .into(),
            })?;
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|error| match error.kind() {
                    std::io::ErrorKind::NotFound => SourceError::NotFound {
                        source_name: source_name.clone(),
                    },
                    _ => SourceError::Unreadable {
                        source_name: source_name.clone(),
                        reason: error.to_string(),
                    },
                })?;
            // tokio reads a file on its blocking pool, one hand-off per read: big reads keep
            // the record reader from waiting on hundreds of small ones.
            let file = tokio::io::BufReader::with_capacity(FILE_READ_SIZE, file);
            Ok(decode(format, Box::new(file), source_name))
        } else if location.starts_with("http://") || location.starts_with("https://") {
            self.open_http(&location, source_name).await
        } else {
            Err(SourceError::Format {
                source_name,
                reason: "USAGE_SOURCE must start with file://, http:// or https://".into(),
            })
        }
    }

    async fn open_http(
        &self,
        location: &str,
        source_name: String,
    ) -> Result<RecordStream, SourceError> {
        let unreadable = |reason: String| SourceError::Unreadable {
            source_name: source_name.clone(),
            reason,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300))
            .user_agent(concat!("connect-payg/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| unreadable(e.without_url().to_string()))?;
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            let mut request = client.get(location);
            if let Some(auth) = &self.auth {
                request = request.header(reqwest::header::AUTHORIZATION, auth.expose());
            }
            match request.send().await {
                Ok(response) if response.status().is_server_error() && attempt < 3 => {}
                Ok(response) => break response,
                Err(error) if attempt >= 3 => {
                    return Err(unreadable(error.without_url().to_string()))
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
        };
        let status = response.status();
        if !status.is_success() {
            return Err(SourceError::Http {
                source_name,
                status: status.as_u16(),
            });
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let path = url::Url::parse(location)
            .map(|u| u.path().to_string())
            .unwrap_or_default();
        let format = Format::from_content_type(&content_type)
            .or_else(|| Format::from_path(&path))
            .ok_or_else(|| SourceError::Format {
                source_name: source_name.clone(),
                reason: format!(
                    "unsupported Content-Type {content_type:?}: expected text/csv, application/json or application/x-ndjson"
                ),
            })?;
        let body = response
            .bytes_stream()
            .map_err(|e| std::io::Error::other(e.without_url()));
        let reader = tokio_util::io::StreamReader::new(body);
        Ok(decode(format, Box::new(reader), source_name))
    }
}

fn decode(
    format: Format,
    reader: Box<dyn AsyncRead + Send + Unpin>,
    source_name: String,
) -> RecordStream {
    match format {
        Format::Csv => csv::records(reader, source_name),
        Format::JsonArray => json::array_records(reader, source_name),
        Format::JsonLines => json::line_records(reader, source_name),
    }
}

fn redact(location: &str) -> String {
    match url::Url::parse(location) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => location.split('?').next().unwrap_or_default().to_string(),
    }
}

/// The I/O failure that ends a stream, named after its source.
fn broken(source_name: &str, error: impl std::fmt::Display) -> SourceError {
    SourceError::Unreadable {
        source_name: source_name.to_string(),
        reason: format!("reading failed: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_redaction() {
        let source = UsageSource::new(
            "https://user:pw@vendor.example/usage/{period}?from={from}&to={to}&token=abc",
            None,
        );
        let feb = Period::parse("2024-02").unwrap();
        assert_eq!(
            source.location(feb),
            "https://user:pw@vendor.example/usage/2024-02?from=2024-02-01&to=2024-02-29&token=abc"
        );
        assert_eq!(
            source.display_name(feb),
            "https://vendor.example/usage/2024-02"
        );
    }

    #[test]
    fn formats_by_name_and_content_type() {
        assert_eq!(Format::from_path("/x/usage.CSV"), Some(Format::Csv));
        assert_eq!(Format::from_path("u.jsonl"), Some(Format::JsonLines));
        assert_eq!(Format::from_path("u.txt"), None);
        assert_eq!(
            Format::from_content_type("text/csv; charset=utf-8"),
            Some(Format::Csv)
        );
        assert_eq!(
            Format::from_content_type("application/x-ndjson"),
            Some(Format::JsonLines)
        );
        assert_eq!(Format::from_content_type("text/html"), None);
    }

    #[tokio::test]
    async fn a_missing_file_names_the_source() {
        let source = UsageSource::new("file:///nonexistent/usage-{period}.csv", None);
        let error = source
            .open(Period::parse("2024-01").unwrap())
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("/nonexistent/usage-2024-01.csv"), "{error}");
        assert!(error.contains("not found"), "{error}");
    }
}
