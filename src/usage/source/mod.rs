//! Where usage comes from (`USAGE_SOURCE`): a local file, an HTTP(S) endpoint or object storage
//! (`s3://`, `gs://`, `az://`: [`object`]), holding CSV, a JSON array, JSON lines or Parquet
//! ([`parquet`]), the text formats optionally gzip or zstd compressed ([`compression`]), or a
//! database query ([`sql`]). Every source is read as a stream of batches of [`RawRecord`]s, so
//! memory does not grow with the file.
//!
//! Errors are split by consequence: a record that cannot be decoded is a [`BadRecord`] in the
//! stream (reported, the run goes on); a source that cannot be opened or breaks mid-way is a
//! [`SourceError`] (the run stops and is retried), because silently losing the rest of a file
//! would under-report usage. Errors name the source without credentials or query string.
//!
//! An HTTP body may be cut short without any error (a close-delimited body ends when the
//! connection does), so an HTTP body must end with a line break after its last CSV row or JSON
//! line; a local file's last line may lack one (common in files written by hand). The HTTP
//! client follows only same-origin redirects, sends no `Referer`, sends `USAGE_SOURCE_AUTH` only
//! over https or to a loopback host, and gives up once `USAGE_SOURCE_TIMEOUT` has passed.

mod compression;
mod csv;
mod json;
mod object;
mod parquet;
pub mod sql;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::config::Secret;
use crate::usage::period::Period;
use crate::usage::record::{BadRecord, RawRecord};

pub use compression::{Compression, DEFAULT_MAX_INFLATED_BYTES};
pub use object::ObjectUrl;

/// One item of a source: a record, or a record that could not be decoded.
pub type Item = Result<RawRecord, BadRecord>;

/// A source's items, a batch at a time in source order; a source that breaks ends with its
/// error. Batches, not single items: a stream step per item moved each record through every
/// layer of the stream, copying it at each; in a profile of the bench's 1M-record month those
/// copies alone were ~6% of the reading's CPU samples. A batch may be empty.
pub type RecordStream = BoxStream<'static, Result<Vec<Item>, SourceError>>;

/// Items a source that reads one at a time hands on together, at most.
const BATCH_ITEMS: usize = 512;

/// A source that yields items one at a time, handed on in batches of the items it has ready
/// (at most [`BATCH_ITEMS`]); its error ends the stream after the items before it.
fn in_batches(
    items: impl futures::Stream<Item = Result<Item, SourceError>> + Send + 'static,
) -> RecordStream {
    items
        .ready_chunks(BATCH_ITEMS)
        .flat_map(|ready| {
            let mut batches = Vec::with_capacity(1);
            let mut items = Vec::with_capacity(ready.len());
            for item in ready {
                match item {
                    Ok(item) => items.push(item),
                    Err(error) => {
                        if !items.is_empty() {
                            batches.push(Ok(std::mem::take(&mut items)));
                        }
                        batches.push(Err(error));
                        break;
                    }
                }
            }
            if !items.is_empty() {
                batches.push(Ok(items));
            }
            futures::stream::iter(batches)
        })
        .boxed()
}

/// A single record larger than this is refused rather than buffered (hostile or broken input).
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// How much of a local source file one read takes.
const FILE_READ_SIZE: usize = 256 << 10;

/// How long an HTTP source may take as a whole unless `USAGE_SOURCE_TIMEOUT` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Redirects an HTTP source may take (all within its origin).
const MAX_REDIRECTS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("usage source {source_name}: file not found")]
    NotFound { source_name: String },
    #[error("usage source {source_name}: no object matches the pattern")]
    NoMatch { source_name: String },
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
    /// The whole of an HTTP or object-storage read, from the first request to the last byte.
    timeout: Duration,
    /// `USAGE_QUERY`, for a database source.
    query: Option<String>,
    /// `USAGE_SOURCE_MAX_INFLATED_BYTES`: what one compressed file, body or object may inflate to.
    max_inflated: u64,
    /// The cloud variables an object source is read with (see [`object`]).
    cloud_env: BTreeMap<String, Secret>,
}

impl UsageSource {
    pub fn new(template: impl Into<String>, auth: Option<Secret>) -> Self {
        UsageSource {
            template: template.into(),
            auth,
            timeout: DEFAULT_TIMEOUT,
            query: None,
            max_inflated: DEFAULT_MAX_INFLATED_BYTES,
            cloud_env: BTreeMap::new(),
        }
    }

    /// The same source with `USAGE_QUERY`: what a database source runs.
    pub fn with_query(self, query: Option<String>) -> Self {
        UsageSource { query, ..self }
    }
    /// The same source with `USAGE_SOURCE_MAX_INFLATED_BYTES`.
    pub fn with_max_inflated(self, max_inflated: u64) -> Self {
        UsageSource {
            max_inflated,
            ..self
        }
    }

    /// The same source reading object storage with these cloud variables (lower-case names).
    pub fn with_cloud_env(self, cloud_env: BTreeMap<String, Secret>) -> Self {
        UsageSource { cloud_env, ..self }
    }

    /// The same source with `USAGE_SOURCE_TIMEOUT`: the deadline of a whole HTTP or
    /// object-storage read.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        UsageSource { timeout, ..self }
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
        let database = sql::SqlSource::new(
            location.clone(),
            source_name.clone(),
            self.auth.clone(),
            self.query.clone(),
            self.timeout,
        );
        if let Some(database) = database {
            return database.open(&sql::QueryValues::of(period)).await;
        }
        if let Some(path) = location.strip_prefix("file://") {
            let (compression, plain) = Compression::split(path);
            if parquet::is_parquet(plain) {
                if compression.is_some() {
                    return Err(parquet::compressed_whole(source_name));
                }
                return parquet::file_records(path, source_name).await;
            }
            let format = Format::from_path(plain).ok_or_else(|| SourceError::Format {
                source_name: source_name.clone(),
                reason: "cannot tell the format: name the file .csv, .json, .jsonl, .ndjson \
                         (optionally .gz or .zst) or .parquet"
                    .into(),
            })?;
            let file = open_file(path, &source_name).await?;
            // tokio reads a file on its blocking pool, one hand-off per read: big reads keep
            // the record reader from waiting on hundreds of small ones.
            let file = tokio::io::BufReader::with_capacity(FILE_READ_SIZE, file);
            let reader = compression::inflate(Box::new(file), compression, self.max_inflated);
            Ok(decode(format, reader, source_name, LastLine::MayLackBreak))
        } else if location.starts_with("http://") || location.starts_with("https://") {
            self.open_http(&location, source_name).await
        } else if let Some(url) = ObjectUrl::parse(&location) {
            let url = url.map_err(|reason| SourceError::Format {
                source_name: source_name.clone(),
                reason,
            })?;
            let options = object::ObjectOptions {
                env: &self.cloud_env,
                timeout: self.timeout,
                max_inflated: self.max_inflated,
            };
            object::open(url, source_name, options).await
        } else {
            Err(SourceError::Format {
                source_name,
                reason: "USAGE_SOURCE must start with file://, http://, https://, s3://, gs://, \
                         az://, postgres:// or mysql://"
                    .into(),
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
        let url = url::Url::parse(location).map_err(|e| SourceError::Format {
            source_name: source_name.clone(),
            reason: format!("not a valid URL: {e}"),
        })?;
        if self.auth.is_some() && !auth_may_go_to(&url) {
            return Err(SourceError::Format {
                source_name,
                reason: "USAGE_SOURCE_AUTH is sent only over https:// or to a loopback host".into(),
            });
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300))
            .user_agent(concat!("connect-payg/", env!("CARGO_PKG_VERSION")))
            .referer(false)
            .redirect(reqwest::redirect::Policy::custom(same_origin_redirects))
            .build()
            .map_err(|e| unreadable(e.without_url().to_string()))?;
        let deadline = Instant::now() + self.timeout;
        let timed_out = || unreadable(format!("{}", TimedOut(self.timeout)));
        let mut attempt = 0;
        let request = async {
            loop {
                attempt += 1;
                let mut request = client.get(url.clone());
                if let Some(auth) = &self.auth {
                    request = request.header(reqwest::header::AUTHORIZATION, auth.expose());
                }
                match request.send().await {
                    Ok(response) if response.status().is_server_error() && attempt < 3 => {}
                    Ok(response) => break Ok(response),
                    // A refused redirect is not retried: it would be refused again.
                    Err(error) if attempt >= 3 || error.is_redirect() => {
                        break Err(unreadable(error_chain(&error.without_url())))
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
        };
        let response = tokio::time::timeout_at(deadline, request)
            .await
            .map_err(|_| timed_out())??;
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
        // A Content-Encoding says how this body is compressed; without one, the name does.
        let (named_compression, plain_path) = Compression::split(url.path());
        let compression = match response.headers().get(reqwest::header::CONTENT_ENCODING) {
            Some(value) => Compression::from_content_encoding(value.to_str().unwrap_or("?"))
                .map_err(|reason| SourceError::Format {
                    source_name: source_name.clone(),
                    reason,
                })?,
            None => named_compression,
        };
        let format = Format::from_content_type(&content_type)
            .or_else(|| Format::from_path(plain_path))
            .ok_or_else(|| SourceError::Format {
                source_name: source_name.clone(),
                reason: format!(
                    "unsupported Content-Type {content_type:?}: expected text/csv, application/json or application/x-ndjson"
                ),
            })?;
        let body = response
            .bytes_stream()
            .map_err(|e| std::io::Error::other(e.without_url()));
        let reader = Deadline {
            inner: tokio_util::io::StreamReader::new(body),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            timeout: self.timeout,
        };
        Ok(decode(
            format,
            compression::inflate(Box::new(reader), compression, self.max_inflated),
            source_name,
            LastLine::NeedsBreak,
        ))
    }
}

/// Opens a local source file; a missing one is [`SourceError::NotFound`].
async fn open_file(path: &str, source_name: &str) -> Result<tokio::fs::File, SourceError> {
    tokio::fs::File::open(path)
        .await
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => SourceError::NotFound {
                source_name: source_name.to_string(),
            },
            _ => SourceError::Unreadable {
                source_name: source_name.to_string(),
                reason: error.to_string(),
            },
        })
}

/// Whether a source's last CSV row or JSON line must end with a line break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LastLine {
    /// A local file: a missing final line break is common and harmless.
    MayLackBreak,
    /// An HTTP body: without its final line break it was cut short.
    NeedsBreak,
}

fn decode(
    format: Format,
    reader: Box<dyn AsyncRead + Send + Unpin>,
    source_name: String,
    last_line: LastLine,
) -> RecordStream {
    match format {
        Format::Csv => csv::records(reader, source_name, last_line),
        Format::JsonArray => json::array_records(reader, source_name),
        Format::JsonLines => json::line_records(reader, source_name, last_line),
    }
}

/// The error a body cut short gives: the line the last row or JSON line started on.
fn cut_short(line: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the body ends inside line {line}, before its line break: it was cut short"),
    )
}

/// Whether `USAGE_SOURCE_AUTH` may be sent to `url`: encrypted, or never leaving the machine.
fn auth_may_go_to(url: &url::Url) -> bool {
    url.scheme() == "https"
        || match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            None => false,
        }
}

/// Follows a redirect only within the source's origin (scheme, host and port: so never from
/// https to http), and at most [`MAX_REDIRECTS`] of them.
fn same_origin_redirects(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let first = attempt.previous().first();
    if attempt.previous().len() > MAX_REDIRECTS {
        attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
    } else if first.is_some_and(|first| redirect_allowed(first, attempt.url())) {
        attempt.follow()
    } else {
        let to = attempt.url().origin().ascii_serialization();
        attempt.error(format!(
            "redirect to {to} refused: a usage source is followed only within its own origin"
        ))
    }
}

/// Whether a source at `from` may be redirected to `to`: the same origin only.
fn redirect_allowed(from: &url::Url, to: &url::Url) -> bool {
    from.origin() == to.origin()
}

/// An error and its causes, one after another (reqwest's own message is often generic).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        text.push_str(": ");
        text.push_str(&error.to_string());
        cause = error.source();
    }
    text
}

/// The message of a read that ran past `USAGE_SOURCE_TIMEOUT`.
struct TimedOut(Duration);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not read completely within USAGE_SOURCE_TIMEOUT ({} s)",
            self.0.as_secs_f64()
        )
    }
}

/// A body that fails once its deadline has passed, however steadily it trickles in.
struct Deadline<R> {
    inner: R,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl<R: AsyncRead + Unpin> AsyncRead for Deadline<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.deadline.as_mut().poll(cx).is_ready() {
            let message = TimedOut(this.timeout).to_string();
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, message)));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
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

    #[tokio::test]
    async fn items_read_one_at_a_time_are_handed_on_in_batches_ending_with_the_error() {
        let bad = |line| {
            Err(BadRecord::new(
                line,
                crate::usage::BadReason::MissingField,
                "x",
            ))
        };
        let broken = || SourceError::Format {
            source_name: "s".into(),
            reason: "broken".into(),
        };
        let lines = |batch: &Result<Vec<Item>, SourceError>| match batch {
            Ok(items) => Ok(items
                .iter()
                .map(|item| item.as_ref().unwrap_err().line)
                .collect::<Vec<u64>>()),
            Err(error) => Err(error.to_string()),
        };
        // A batch as its items' lines, or the error.
        type Batch = Result<Vec<u64>, String>;
        // (items, then an error?) → the batches
        let cases: Vec<(u64, bool, Vec<Batch>)> = vec![
            (0, false, vec![]),
            (3, false, vec![Ok(vec![1, 2, 3])]),
            (3, true, vec![Ok(vec![1, 2, 3]), Err(broken().to_string())]),
            (0, true, vec![Err(broken().to_string())]),
            (
                BATCH_ITEMS as u64 + 1,
                false,
                vec![
                    Ok((1..=BATCH_ITEMS as u64).collect()),
                    Ok(vec![BATCH_ITEMS as u64 + 1]),
                ],
            ),
        ];
        for (count, ends_broken, expected) in cases {
            let mut items: Vec<Result<Item, SourceError>> =
                (1..=count).map(|n| Ok(bad(n))).collect();
            if ends_broken {
                items.push(Err(broken()));
            }
            let batches: Vec<_> = in_batches(futures::stream::iter(items)).collect().await;
            assert_eq!(
                batches.iter().map(lines).collect::<Vec<_>>(),
                expected,
                "{count} items, broken: {ends_broken}"
            );
        }
    }

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

    #[test]
    fn redirects_stay_within_the_origin_and_auth_goes_only_where_it_is_safe() {
        let url = |text: &str| url::Url::parse(text).unwrap();
        let from = url("https://vendor.example/usage/2024-01");
        for (to, allowed) in [
            ("https://vendor.example/elsewhere?x=1", true),
            ("https://vendor.example:443/x", true),
            ("http://vendor.example/usage/2024-01", false),
            ("https://vendor.example:8443/x", false),
            ("https://cdn.vendor.example/x", false),
            ("https://attacker.example/x", false),
        ] {
            assert_eq!(redirect_allowed(&from, &url(to)), allowed, "{to}");
        }
        for (to, allowed) in [
            ("https://vendor.example/x", true),
            ("http://127.0.0.1:8080/x", true),
            ("http://[::1]/x", true),
            ("http://localhost/x", true),
            ("http://vendor.example/x", false),
            ("http://10.0.0.1/x", false),
            ("http://localhost.vendor.example/x", false),
        ] {
            assert_eq!(auth_may_go_to(&url(to)), allowed, "{to}");
        }
    }

    /// The error opening `template` for January 2024, as shown.
    async fn open_error(template: &str) -> String {
        UsageSource::new(template, None)
            .open(Period::parse("2024-01").unwrap())
            .await
            .err()
            .expect("the source is refused")
            .to_string()
    }

    #[tokio::test]
    async fn a_parquet_file_compressed_whole_is_refused() {
        let error = open_error("file:///data/usage-{period}.parquet.gz").await;
        assert!(error.contains("/data/usage-2024-01.parquet.gz"), "{error}");
        assert!(error.contains("cannot be compressed whole"), "{error}");
    }

    #[tokio::test]
    async fn a_missing_file_names_the_source() {
        let error = open_error("file:///nonexistent/usage-{period}.csv").await;
        assert!(error.contains("/nonexistent/usage-2024-01.csv"), "{error}");
        assert!(error.contains("not found"), "{error}");
    }
}
