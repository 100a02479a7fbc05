//! Object-storage sources: `s3://bucket/key`, `gs://bucket/key` and `az://container/key`,
//! read through the `object_store` crate with each cloud's standard environment variables
//! (`AWS_*`, `GOOGLE_*`, `AZURE_*`, captured from the process environment into
//! [`crate::config::ReportSettings::cloud_env`]; never from extension variables, which could
//! otherwise send the credentials to an endpoint of their choosing). `AWS_ENDPOINT_URL` names an
//! S3-compatible store; plain http is allowed to a loopback endpoint only (or with
//! `AWS_ALLOW_HTTP=true`).
//!
//! A key with `*` is a pattern over the last segments (`usage/{period}/*.jsonl`): the objects
//! under the fixed prefix before the first `*` whose keys match it segment by segment (`*` is
//! any run of characters within one segment) are read in key order as one source, each opened
//! only when the one before it is done. A record keeps its line within its object, and names
//! the object ([`RawRecord::object`]) so a bad record can be found; a single object names
//! none. No match is an error naming the pattern: a month without its export is never empty.
//!
//! Each object's format comes from its name (`.csv`, `.json`, `.jsonl`, `.ndjson`, `.parquet`,
//! optionally `.gz`/`.zst` for the text ones). An object's length is known, so a body cut short
//! is a transport error and its last line may lack a line break, as a local file's.
//!
//! Errors name the object without credentials; the values of the secret variables are
//! scrubbed from any message that still carried them ([`Scrubber`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ::parquet::arrow::async_reader::ParquetObjectReader;
use futures::stream::{Stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectMeta, ObjectStore};
use tokio::time::{Instant, Sleep};

use super::compression::Compression;
use super::{decode, parquet, Format, LastLine, RecordStream, SourceError, TimedOut};
use crate::config::Secret;
use crate::usage::record::RawRecord;

/// The clouds an object source may be on, by URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    S3,
    Gcs,
    Azure,
}

impl Cloud {
    /// The URL schemes of object sources, with the cloud of each.
    pub const SCHEMES: [(&'static str, Cloud); 3] =
        [("s3", Cloud::S3), ("gs", Cloud::Gcs), ("az", Cloud::Azure)];

    fn scheme(self) -> &'static str {
        match self {
            Cloud::S3 => "s3",
            Cloud::Gcs => "gs",
            Cloud::Azure => "az",
        }
    }

    /// The prefix of this cloud's environment variables (lower case, as settings keep them).
    fn variable_prefix(self) -> &'static str {
        match self {
            Cloud::S3 => "aws_",
            Cloud::Gcs => "google_",
            Cloud::Azure => "azure_",
        }
    }
}

/// An object source's location: `<scheme>://<bucket>/<key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectUrl {
    pub cloud: Cloud,
    /// The bucket (a container on Azure).
    pub bucket: String,
    pub key: String,
}

impl ObjectUrl {
    /// `None` when `location` is not an object-storage URL; an error when it is one that
    /// names no bucket or no object.
    pub fn parse(location: &str) -> Option<Result<ObjectUrl, String>> {
        let (scheme, rest) = location.split_once("://")?;
        let cloud = Cloud::SCHEMES
            .iter()
            .find(|(name, _)| scheme.eq_ignore_ascii_case(name))?
            .1;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        Some(if bucket.is_empty() {
            Err(format!("{scheme}:// names no bucket"))
        } else if key.is_empty() || key.ends_with('/') {
            Err(format!(
                "{scheme}:// must name an object or a pattern of objects after the bucket"
            ))
        } else if key.contains('?') || key.contains('#') {
            Err("an object key cannot hold ? or #".to_string())
        } else {
            Ok(ObjectUrl {
                cloud,
                bucket: bucket.to_string(),
                key: key.to_string(),
            })
        })
    }

    fn name_of(&self, key: &str) -> String {
        format!("{}://{}/{key}", self.cloud.scheme(), self.bucket)
    }
}

/// The prefix to list for a key pattern (every segment before the first one with a `*`), or
/// `None` when the key names one object.
fn pattern_prefix(key: &str) -> Option<&str> {
    let star = key.find('*')?;
    Some(key[..star].rfind('/').map_or("", |slash| &key[..slash]))
}

/// Whether `key` matches `pattern` segment by segment; `*` is any run of characters within
/// one segment.
fn key_matches(pattern: &str, key: &str) -> bool {
    let patterns: Vec<&str> = pattern.split('/').collect();
    let segments: Vec<&str> = key.split('/').collect();
    patterns.len() == segments.len()
        && patterns
            .iter()
            .zip(&segments)
            .all(|(pattern, segment)| segment_matches(pattern.as_bytes(), segment.as_bytes()))
}

/// Wildcard match of one segment (`*` only), in linear time: on a mismatch, the last `*` takes
/// one more byte.
fn segment_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Whether a cloud variable holds a credential (its value is scrubbed from messages).
fn is_secret_variable(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["secret", "token", "password", "sas", "credential"]
        .iter()
        .any(|word| name.contains(word))
        || name.ends_with("_key")
}

/// Replaces the values of secret cloud variables in messages.
#[derive(Clone, Default)]
struct Scrubber(Arc<Vec<String>>);

impl Scrubber {
    fn new(env: &BTreeMap<String, Secret>) -> Self {
        let mut secrets: Vec<String> = env
            .iter()
            .filter(|(name, value)| is_secret_variable(name) && value.expose().len() >= 4)
            .map(|(_, value)| value.expose().to_string())
            .collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        Scrubber(Arc::new(secrets))
    }

    fn text(&self, text: String) -> String {
        self.0
            .iter()
            .fold(text, |text, secret| text.replace(secret.as_str(), "***"))
    }

    fn error(&self, error: SourceError) -> SourceError {
        match error {
            SourceError::Unreadable {
                source_name,
                reason,
            } => SourceError::Unreadable {
                source_name,
                reason: self.text(reason),
            },
            SourceError::Format {
                source_name,
                reason,
            } => SourceError::Format {
                source_name,
                reason: self.text(reason),
            },
            other => other,
        }
    }
}

/// How an object source is read, besides where.
pub(super) struct ObjectOptions<'a> {
    /// The cloud variables (lower-case names).
    pub env: &'a BTreeMap<String, Secret>,
    pub timeout: Duration,
    pub max_inflated: u64,
}

/// The store of `url`'s bucket, configured from the cloud's variables in `env`.
fn store(
    url: &ObjectUrl,
    env: &BTreeMap<String, Secret>,
    timeout: Duration,
) -> object_store::Result<Arc<dyn ObjectStore>> {
    let client = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(30))
        .with_timeout(timeout);
    let variables = env
        .iter()
        .filter(|(name, _)| name.starts_with(url.cloud.variable_prefix()))
        .map(|(name, value)| (name.as_str(), value.expose()));
    Ok(match url.cloud {
        Cloud::S3 => {
            let mut builder = AmazonS3Builder::new().with_client_options(client);
            for (name, value) in variables {
                if let Ok(key) = name.parse::<AmazonS3ConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            let endpoint = ["aws_endpoint_url", "aws_endpoint"]
                .iter()
                .find_map(|name| env.get(*name));
            if endpoint.is_some_and(|endpoint| plain_http_to_loopback(endpoint.expose())) {
                builder = builder.with_allow_http(true);
            }
            Arc::new(builder.with_bucket_name(&url.bucket).build()?)
        }
        Cloud::Gcs => {
            let mut builder = GoogleCloudStorageBuilder::new().with_client_options(client);
            for (name, value) in variables {
                if let Ok(key) = name.parse::<GoogleConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            Arc::new(builder.with_bucket_name(&url.bucket).build()?)
        }
        Cloud::Azure => {
            let mut builder = MicrosoftAzureBuilder::new().with_client_options(client);
            for (name, value) in variables {
                if let Ok(key) = name.parse::<AzureConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            Arc::new(builder.with_container_name(&url.bucket).build()?)
        }
    })
}

/// Whether an endpoint is `http://` to this machine (plain http anywhere else needs the
/// cloud's own `allow_http` variable).
fn plain_http_to_loopback(endpoint: &str) -> bool {
    url::Url::parse(endpoint).is_ok_and(|url| url.scheme() == "http" && super::auth_may_go_to(&url))
}

/// One object to read.
struct Part {
    path: Path,
    name: String,
    size: Option<u64>,
}

/// Opens an object source: one object, or the objects matching a pattern in key order.
pub(super) async fn open(
    url: ObjectUrl,
    source_name: String,
    options: ObjectOptions<'_>,
) -> Result<RecordStream, SourceError> {
    let scrubber = Scrubber::new(options.env);
    let deadline = Instant::now() + options.timeout;
    let timeout = options.timeout;
    let max_inflated = options.max_inflated;
    let store = store(&url, options.env, options.timeout).map_err(|error| {
        scrubber.error(SourceError::Unreadable {
            source_name: source_name.clone(),
            reason: format!("cannot set up the object store: {}", error_chain(&error)),
        })
    })?;
    let timed_out = |name: &str| SourceError::Unreadable {
        source_name: name.to_string(),
        reason: TimedOut(timeout).to_string(),
    };
    let records = match pattern_prefix(&url.key) {
        None => {
            let part = Part {
                path: object_path(&url.key, &source_name)?,
                name: source_name.clone(),
                size: None,
            };
            let opened = open_part(store, part, max_inflated);
            tokio::time::timeout_at(deadline, opened)
                .await
                .map_err(|_| timed_out(&source_name))?
                .map_err(|error| scrubber.error(error))?
        }
        Some(prefix) => {
            let listed = list(&*store, &url, prefix, &source_name);
            let parts = tokio::time::timeout_at(deadline, listed)
                .await
                .map_err(|_| timed_out(&source_name))?
                .map_err(|error| scrubber.error(error))?;
            tracing::info!(source = %source_name, objects = parts.len(), "reading the objects the pattern matches");
            futures::stream::iter(parts)
                .then(move |part| {
                    let store = store.clone();
                    async move {
                        let object: Arc<str> = part.name.clone().into();
                        match open_part(store, part, max_inflated).await {
                            Ok(records) => in_object(records, object),
                            Err(error) => futures::stream::once(async { Err(error) }).boxed(),
                        }
                    }
                })
                .flatten()
                .boxed()
        }
    };
    let records = records.map_err(move |error| scrubber.error(error)).boxed();
    Ok(Within {
        inner: records,
        deadline: Box::pin(tokio::time::sleep_until(deadline)),
        timeout,
        source_name,
        done: false,
    }
    .boxed())
}

fn object_path(key: &str, source_name: &str) -> Result<Path, SourceError> {
    Path::parse(key).map_err(|error| SourceError::Format {
        source_name: source_name.to_string(),
        reason: format!("not a valid object key: {error}"),
    })
}

/// The objects under `prefix` that match the key pattern, in key order; none is an error.
async fn list(
    store: &dyn ObjectStore,
    url: &ObjectUrl,
    prefix: &str,
    source_name: &str,
) -> Result<Vec<Part>, SourceError> {
    let prefix = match prefix {
        "" => None,
        prefix => Some(object_path(prefix, source_name)?),
    };
    let objects: Vec<ObjectMeta> = store
        .list(prefix.as_ref())
        .try_filter(|object| {
            futures::future::ready(key_matches(&url.key, object.location.as_ref()))
        })
        .try_collect()
        .await
        .map_err(|error| failed(source_name, &error))?;
    let mut parts: Vec<Part> = objects
        .into_iter()
        .map(|object| Part {
            name: url.name_of(object.location.as_ref()),
            path: object.location,
            size: Some(object.size),
        })
        .collect();
    parts.sort_by(|a, b| a.path.as_ref().cmp(b.path.as_ref()));
    if parts.is_empty() {
        return Err(SourceError::NoMatch {
            source_name: source_name.to_string(),
        });
    }
    Ok(parts)
}

/// An error and those of its causes it does not already quote (object_store's messages repeat
/// their causes', which a plain chain would print twice or thrice).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let message = error.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = error.source();
    }
    text
}

/// The error of an object-store request, naming the object or pattern.
fn failed(source_name: &str, error: &object_store::Error) -> SourceError {
    match error {
        object_store::Error::NotFound { .. } => SourceError::NotFound {
            source_name: source_name.to_string(),
        },
        _ => SourceError::Unreadable {
            source_name: source_name.to_string(),
            reason: error_chain(error),
        },
    }
}

/// Opens one object by its name's format.
async fn open_part(
    store: Arc<dyn ObjectStore>,
    part: Part,
    max_inflated: u64,
) -> Result<RecordStream, SourceError> {
    let key = part.path.as_ref().to_string();
    let (compression, plain) = Compression::split(&key);
    if parquet::is_parquet(plain) {
        if compression.is_some() {
            return Err(parquet::compressed_whole(part.name));
        }
        let size = match part.size {
            Some(size) => size,
            None => {
                store
                    .head(&part.path)
                    .await
                    .map_err(|error| failed(&part.name, &error))?
                    .size
            }
        };
        let reader = ParquetObjectReader::new(store, part.path).with_file_size(size);
        return parquet::records(reader, part.name).await;
    }
    let format = Format::from_path(plain).ok_or_else(|| SourceError::Format {
        source_name: part.name.clone(),
        reason: "cannot tell the format: name the object .csv, .json, .jsonl, .ndjson or \
                 .parquet (the text ones optionally .gz or .zst)"
            .into(),
    })?;
    let body = store
        .get(&part.path)
        .await
        .map_err(|error| failed(&part.name, &error))?
        .into_stream()
        .map_err(|error| std::io::Error::other(error_chain(&error)));
    let reader = tokio_util::io::StreamReader::new(body);
    let reader = super::compression::inflate(Box::new(reader), compression, max_inflated);
    Ok(decode(format, reader, part.name, LastLine::MayLackBreak))
}

/// The records of one object of several, each naming the object.
fn in_object(records: RecordStream, object: Arc<str>) -> RecordStream {
    records
        .map_ok(move |items| {
            items
                .into_iter()
                .map(|item| match item {
                    Ok(raw) => Ok(RawRecord {
                        object: Some(object.clone()),
                        ..raw
                    }),
                    Err(bad) => Err(bad.in_object(Some(object.clone()))),
                })
                .collect()
        })
        .boxed()
}

/// A source that fails once `USAGE_SOURCE_TIMEOUT` has passed since it was opened, however
/// steadily its objects trickle in.
struct Within {
    inner: RecordStream,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
    source_name: String,
    done: bool,
}

impl Stream for Within {
    type Item = <RecordStream as Stream>::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(Some(Err(SourceError::Unreadable {
                source_name: this.source_name.clone(),
                reason: TimedOut(this.timeout).to_string(),
            })));
        }
        this.inner.poll_next_unpin(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_urls() {
        let parsed = ObjectUrl::parse("s3://usage-bucket/usage/2024-01/*.jsonl")
            .unwrap()
            .unwrap();
        assert_eq!(parsed.cloud, Cloud::S3);
        assert_eq!(parsed.bucket, "usage-bucket");
        assert_eq!(parsed.key, "usage/2024-01/*.jsonl");
        assert_eq!(
            parsed.name_of("usage/2024-01/a.jsonl"),
            "s3://usage-bucket/usage/2024-01/a.jsonl"
        );
        let parsed = ObjectUrl::parse("az://container/u.csv").unwrap().unwrap();
        assert_eq!(parsed.cloud, Cloud::Azure);
        assert_eq!(
            ObjectUrl::parse("GS://b/u.csv").unwrap().unwrap().cloud,
            Cloud::Gcs
        );
        for not_object in ["file:///x.csv", "https://h/x.csv", "s3:/b/x"] {
            assert!(ObjectUrl::parse(not_object).is_none(), "{not_object}");
        }
        for (bad, reason) in [
            ("s3:///key.csv", "names no bucket"),
            ("s3://bucket", "must name an object"),
            ("s3://bucket/", "must name an object"),
            ("gs://bucket/usage/", "must name an object"),
            ("s3://bucket/u.csv?versionId=1", "cannot hold ?"),
        ] {
            let error = ObjectUrl::parse(bad).unwrap().unwrap_err();
            assert!(error.contains(reason), "{bad}: {error}");
        }
    }

    #[test]
    fn patterns_list_their_fixed_prefix_and_match_segment_by_segment() {
        assert_eq!(pattern_prefix("usage/2024-01/part.csv"), None);
        assert_eq!(
            pattern_prefix("usage/2024-01/*.jsonl"),
            Some("usage/2024-01")
        );
        assert_eq!(pattern_prefix("usage/*/part-*.csv"), Some("usage"));
        assert_eq!(pattern_prefix("usage-*.csv"), Some(""));
        for (pattern, key, matches) in [
            ("usage/2024-01/*.jsonl", "usage/2024-01/part-1.jsonl", true),
            ("usage/2024-01/*.jsonl", "usage/2024-01/.jsonl", true),
            ("usage/2024-01/*.jsonl", "usage/2024-01/part-1.csv", false),
            (
                "usage/2024-01/*.jsonl",
                "usage/2024-01/deeper/part.jsonl",
                false,
            ),
            ("usage/2024-01/*.jsonl", "usage/2024-01x/part.jsonl", false),
            ("usage/*/part-*.csv.gz", "usage/a/part-7.csv.gz", true),
            ("usage/*/part-*.csv.gz", "usage/a/b/part-7.csv.gz", false),
            ("u/*a*b*", "u/xxaxxbxx", true),
            ("u/*a*b", "u/ab_ab_b", true),
            ("u/*a*b", "u/ab_ab_c", false),
            ("u/**", "u/anything", true),
            ("u/*", "u/", true),
        ] {
            assert_eq!(key_matches(pattern, key), matches, "{pattern} {key}");
        }
    }

    /// The plain recursive definition of a `*` pattern, to check the linear one against.
    fn matches_slowly(pattern: &[u8], text: &[u8]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some((b'*', rest)) => (0..=text.len()).any(|skip| matches_slowly(rest, &text[skip..])),
            Some((byte, rest)) => text.first() == Some(byte) && matches_slowly(rest, &text[1..]),
        }
    }

    proptest::proptest! {
        #[test]
        fn segment_matching_agrees_with_the_definition(
            pattern in "[ab*]{0,8}",
            text in "[ab]{0,10}",
        ) {
            proptest::prop_assert_eq!(
                segment_matches(pattern.as_bytes(), text.as_bytes()),
                matches_slowly(pattern.as_bytes(), text.as_bytes()),
                "{} {}", pattern, text
            );
        }
    }

    #[test]
    fn secret_variables_are_scrubbed_from_messages() {
        for (name, secret) in [
            ("aws_secret_access_key", true),
            ("aws_session_token", true),
            ("google_service_account_key", true),
            ("google_application_credentials", true),
            ("azure_storage_account_key", true),
            ("azure_storage_sas_key", true),
            ("azure_client_secret", true),
            ("aws_region", false),
            ("aws_endpoint_url", false),
            ("aws_access_key_id", false),
        ] {
            assert_eq!(is_secret_variable(name), secret, "{name}");
        }
        let env: BTreeMap<String, Secret> = [
            ("aws_secret_access_key", "s3cr3t-VALUE"),
            ("aws_session_token", "s3cr3t-VALUE-and-more"),
            ("aws_region", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Secret::new(v)))
        .collect();
        let scrubbed = Scrubber::new(&env)
            .text("signed with s3cr3t-VALUE-and-more and s3cr3t-VALUE in us-east-1".to_string());
        assert_eq!(scrubbed, "signed with *** and *** in us-east-1");
    }

    #[test]
    fn causes_already_quoted_are_not_repeated() {
        #[derive(Debug)]
        struct Failure(&'static str, Option<Box<Failure>>);
        impl std::fmt::Display for Failure {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Failure {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let error = Failure(
            "GET failed: 403 Forbidden",
            Some(Box::new(Failure(
                "403 Forbidden",
                Some(Box::new(Failure("connection reset", None))),
            ))),
        );
        assert_eq!(
            error_chain(&error),
            "GET failed: 403 Forbidden: connection reset"
        );
    }

    #[tokio::test]
    async fn a_source_still_going_at_its_deadline_ends_with_an_error() {
        // A source that never yields: only the deadline can end it.
        let timeout = Duration::from_millis(100);
        let mut within = Within {
            inner: futures::stream::pending().boxed(),
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            source_name: "s3://b/usage/*.csv".into(),
            done: false,
        };
        let error = within.next().await.unwrap().unwrap_err().to_string();
        assert!(error.contains("s3://b/usage/*.csv"), "{error}");
        assert!(error.contains("USAGE_SOURCE_TIMEOUT (0.1 s)"), "{error}");
        assert!(within.next().await.is_none());
    }

    #[test]
    fn plain_http_only_to_this_machine() {
        for (endpoint, allowed) in [
            ("http://127.0.0.1:9000", true),
            ("http://localhost:9000", true),
            ("http://[::1]:9000", true),
            ("https://s3.example", false),
            ("http://minio.internal:9000", false),
            ("not a url", false),
        ] {
            assert_eq!(plain_http_to_loopback(endpoint), allowed, "{endpoint}");
        }
    }
}
