//! The HTTP core of the Connect client: one connection pool and one concurrency limit shared
//! by every clone, one attempt loop that every request goes through, and the generic read
//! operations (`get_json`, `count`, paging).
//!
//! Every attempt holds a permit of the shared semaphore while it is on the wire (body read
//! included) and releases it before any backoff sleep, so `API_CONCURRENCY` bounds requests in
//! flight, not requests waiting to retry. Each attempt is logged at DEBUG with method, path,
//! status and elapsed time; the `Authorization` header is marked sensitive and never logged.
//!
//! Downloads from the signed links a file's detail carries ([`ConnectClient::fetch_signed`])
//! go through the same pool, limit and retries, but without the `Authorization` header or any
//! other header of the client: the link is the credential, and the API key must not travel to
//! the storage host. Such a link is never logged or put in an error (its query is a secret
//! for as long as it is valid).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use crate::config::Secret;

use super::error::ConnectError;
use super::options::ClientOptions;
use super::paging::{ContentRange, Page};
use super::retry::{classify, parse_retry_after, Backoff, RetryPolicy, Verdict};
use super::Query;

const JSON: &str = "application/json";
const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
/// Connecting is quick or hopeless; only the exchange itself gets the long timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client for the Connect REST API. Cheap to clone; clones share the connection pool and
/// the concurrency limit.
#[derive(Clone)]
pub struct ConnectClient {
    shared: Arc<Shared>,
    api_key: Secret,
    headers: HeaderMap,
}

struct Shared {
    http: reqwest::Client,
    base_url: String,
    permits: Semaphore,
    retry: RetryPolicy,
    page_size: u32,
    max_body_bytes: usize,
    /// `host:port` of `base_url`, named in network errors.
    host: String,
    metrics: crate::metrics::Metrics,
}

impl fmt::Debug for ConnectClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectClient")
            .field("base_url", &self.shared.base_url)
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

/// What a request sends, kept so an attempt can be rebuilt for a retry.
pub(super) struct Request<'a> {
    pub method: Method,
    pub path: &'a str,
    pub query: String,
    pub body: Body,
}

pub(super) enum Body {
    Empty,
    Json(Bytes),
    /// A usage workbook, sent as the multipart field `usage_file`.
    Workbook(Bytes),
}

/// Whether a request may be repeated after an ambiguous failure without looking first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Repeat {
    /// Reads and replacements (GET, PUT): repeating changes nothing.
    Freely,
    /// Creations and actions: only when the failure proves the server did nothing.
    OnlyIfUnsent,
}

/// A successful (2xx) answer, fully read.
pub(super) struct Reply {
    pub content_range: Option<String>,
    pub body: Bytes,
}

/// A failed attempt, with the server's `Retry-After` if it sent one.
struct Failure {
    error: ConnectError,
    retry_after: Option<Duration>,
}

impl<'a> Request<'a> {
    pub fn get(path: &'a str, query: String) -> Self {
        Request {
            method: Method::GET,
            path,
            query,
            body: Body::Empty,
        }
    }

    pub fn put(path: &'a str, body: Body) -> Self {
        Request {
            method: Method::PUT,
            path,
            query: String::new(),
            body,
        }
    }

    pub fn post(path: &'a str, body: Body) -> Self {
        Request {
            method: Method::POST,
            path,
            query: String::new(),
            body,
        }
    }
}

impl Reply {
    pub fn json<T: DeserializeOwned>(&self, request: &Request<'_>) -> Result<T, ConnectError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ConnectError::decode(request.method.as_str(), request.path, e))
    }
}

impl ConnectClient {
    pub fn new(options: ClientOptions) -> Result<Self, ConnectError> {
        let base_url = options.base_url.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base_url)
            .map_err(|e| ConnectError::Config(format!("base URL {base_url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ConnectError::Config(format!(
                "base URL {base_url:?} must be http:// or https://"
            )));
        }
        authorization(&options.api_key)?;
        let host = match (parsed.host_str(), parsed.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => base_url.clone(),
        };
        // No `Referer` on redirects: request paths name the vendor's objects.
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .referer(false)
            .user_agent(user_agent())
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(MAX_CONNECT_TIMEOUT));
        if let Some(path) = &options.extra_ca_file {
            for certificate in extra_certificates(path)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ConnectError::Config(format!("cannot set up HTTPS: {e}")))?;
        Ok(ConnectClient {
            shared: Arc::new(Shared {
                http,
                base_url,
                permits: Semaphore::new(options.concurrency.max(1)),
                retry: RetryPolicy {
                    max_attempts: options.max_attempts.max(1),
                    base_delay: options.base_delay,
                    max_delay: options.max_delay,
                },
                page_size: options.page_size.max(1),
                max_body_bytes: options.max_body_bytes.max(1),
                host,
                metrics: options.metrics,
            }),
            api_key: options.api_key,
            headers: HeaderMap::new(),
        })
    }

    /// The same client with one more header on every request (e.g. `EAAS_TASK_ID`). A name or
    /// value HTTP cannot carry is dropped with a warning.
    pub fn with_header(&self, name: &str, value: &str) -> Self {
        let mut client = self.clone();
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                client.headers.insert(name, value);
            }
            _ => tracing::warn!(header = name, "header not valid in HTTP; not sent"),
        }
        client
    }

    /// The same pool and limits, authenticated with another key (e.g. a task's own key).
    pub fn with_api_key(&self, key: Secret) -> Self {
        ConnectClient {
            api_key: key,
            ..self.clone()
        }
    }

    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// The counters of the runner this client belongs to (off for a client of its own).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.shared.metrics
    }

    /// GETs `path` (e.g. `usage/files/UF-1`) and decodes the JSON answer.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ConnectError> {
        let request = Request::get(path, String::new());
        self.send(&request).await?.json(&request)
    }

    /// How many objects `rql` matches: `?{rql}&limit=0&offset=0`, total from `Content-Range`.
    pub async fn count(&self, path: &str, rql: &str) -> Result<u64, ConnectError> {
        let request = Request::get(path, with_paging(rql, 0, 0));
        let reply = self.send(&request).await?;
        reply
            .content_range
            .as_deref()
            .and_then(ContentRange::parse_total)
            .ok_or_else(|| {
                ConnectError::decode("GET", path, "no Content-Range total in the answer")
            })
    }

    /// One page: `?{query}&limit={limit}&offset={offset}`.
    pub async fn list_page<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &Query,
        limit: u32,
        offset: u64,
    ) -> Result<Page<T>, ConnectError> {
        let request = Request::get(path, with_paging(&query.to_string(), limit, offset));
        let reply = self.send(&request).await?;
        Ok(Page {
            items: reply.json(&request)?,
            range: reply.content_range.as_deref().and_then(ContentRange::parse),
        })
    }

    /// Every object matching `query`, page after page.
    pub async fn list_all<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &Query,
    ) -> Result<Vec<T>, ConnectError> {
        let mut all = Vec::new();
        let mut next = Some(0);
        while let Some(offset) = next {
            let page = self
                .list_page(path, query, self.shared.page_size, offset)
                .await?;
            next = page
                .next_offset(offset)
                .map_err(|e| ConnectError::decode("GET", path, e))?;
            all.extend(page.items);
        }
        Ok(all)
    }

    /// Every object matching `query`, fetched a page at a time as the stream is consumed.
    pub fn list_stream<T: DeserializeOwned + Send + 'static>(
        &self,
        path: &str,
        query: Query,
    ) -> BoxStream<'static, Result<T, ConnectError>> {
        let client = self.clone();
        let path = path.to_string();
        stream::try_unfold(Some(0), move |next: Option<u64>| {
            let (client, path, query) = (client.clone(), path.clone(), query.clone());
            async move {
                let Some(offset) = next else {
                    return Ok(None);
                };
                let page: Page<T> = client
                    .list_page(&path, &query, client.shared.page_size, offset)
                    .await?;
                let after = page
                    .next_offset(offset)
                    .map_err(|e| ConnectError::decode("GET", &path, e))?;
                Ok(Some((stream::iter(page.items.into_iter().map(Ok)), after)))
            }
        })
        .try_flatten()
        .boxed()
    }

    pub(super) fn backoff(&self) -> Backoff {
        Backoff::new(self.shared.retry)
    }

    /// Sends an idempotent request, retrying every transient failure.
    pub(super) async fn send(&self, request: &Request<'_>) -> Result<Reply, ConnectError> {
        self.send_with(request, &mut self.backoff(), Repeat::Freely)
            .await
    }

    /// The attempt loop. Retries what `repeat` allows within `backoff`'s budget and returns
    /// any other failure — for [`Repeat::OnlyIfUnsent`] that includes ambiguous ones, which
    /// the caller resolves by re-reading state (and may then call again with the same budget).
    pub(super) async fn send_with(
        &self,
        request: &Request<'_>,
        backoff: &mut Backoff,
        repeat: Repeat,
    ) -> Result<Reply, ConnectError> {
        loop {
            let failure = match self.attempt(request, backoff.attempt()).await {
                Ok(reply) => return Ok(reply),
                Err(failure) => failure,
            };
            let retry = match classify(&failure.error) {
                Verdict::Retry => true,
                Verdict::Ambiguous => repeat == Repeat::Freely,
                Verdict::Fatal => false,
            };
            if !retry || !backoff.pause(failure.retry_after).await {
                return Err(failure.error);
            }
            self.shared
                .metrics
                .rest_retry(request.method.as_str(), request.path);
            tracing::info!(
                method = %request.method,
                path = request.path,
                attempt = backoff.attempt(),
                error = %failure.error,
                "retrying Connect request"
            );
        }
    }

    /// One attempt: permit, request, whole body, log line.
    async fn attempt(&self, request: &Request<'_>, attempt: u32) -> Result<Reply, Failure> {
        let method = request.method.as_str();
        let fail = |error| Failure {
            error,
            retry_after: None,
        };
        let url = self.url(request).map_err(fail)?;
        let auth = authorization(&self.api_key).map_err(fail)?;
        let _permit = self.permit().await?;
        let mut builder = self
            .shared
            .http
            .request(request.method.clone(), url)
            .headers(self.headers.clone())
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, JSON);
        builder = match &request.body {
            Body::Empty => builder,
            Body::Json(json) => builder.header(CONTENT_TYPE, JSON).body(json.clone()),
            Body::Workbook(bytes) => builder.multipart(workbook_form(bytes.clone())),
        };
        let (status, headers, body) = self
            .exchange(builder, method, request.path, &self.shared.host, attempt)
            .await?;
        if status.is_success() {
            return Ok(Reply {
                content_range: header_text(&headers, "content-range"),
                body,
            });
        }
        Err(self.refused(method, request.path, status, &headers, &body))
    }

    /// GETs a short-lived signed link (a usage file's `usage_file_uri`), retrying transient
    /// failures; `label` names it in errors and logs instead of the link. Sends no
    /// `Authorization` and none of the client's extra headers.
    pub(super) async fn fetch_signed(
        &self,
        link: &str,
        label: &str,
    ) -> Result<Bytes, ConnectError> {
        let url = reqwest::Url::parse(link)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some())
            .ok_or_else(|| ConnectError::decode("GET", label, "the link is not an http(s) URL"))?;
        let host = match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (host, _) => host.unwrap_or_default().to_string(),
        };
        let mut backoff = self.backoff();
        loop {
            let failure = match self.fetch_once(&url, label, &host, backoff.attempt()).await {
                Ok(body) => return Ok(body),
                Err(failure) => failure,
            };
            let retry = classify(&failure.error) != Verdict::Fatal;
            if !retry || !backoff.pause(failure.retry_after).await {
                return Err(failure.error);
            }
            self.shared.metrics.rest_retry("GET", label);
            tracing::info!(path = label, attempt = backoff.attempt(), error = %failure.error, "retrying a download");
        }
    }

    /// One attempt of [`ConnectClient::fetch_signed`]: no header of the client goes out.
    async fn fetch_once(
        &self,
        url: &reqwest::Url,
        label: &str,
        host: &str,
        attempt: u32,
    ) -> Result<Bytes, Failure> {
        let _permit = self.permit().await?;
        let builder = self
            .shared
            .http
            .get(url.clone())
            .header(ACCEPT, format!("{XLSX}, {JSON}"));
        let (status, headers, body) = self.exchange(builder, "GET", label, host, attempt).await?;
        if status.is_success() {
            return Ok(body);
        }
        Err(self.refused("GET", label, status, &headers, &body))
    }

    /// Sends one attempt and reads its whole answer, logged at DEBUG (method, path, status or
    /// error, elapsed time); `host` is named in a network error.
    async fn exchange(
        &self,
        builder: reqwest::RequestBuilder,
        method: &str,
        path: &str,
        host: &str,
        attempt: u32,
    ) -> Result<(StatusCode, HeaderMap, Bytes), Failure> {
        let started = Instant::now();
        let result = exchange(builder, self.shared.max_body_bytes).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let error = match result {
            Ok((status, headers, body)) => {
                tracing::debug!(
                    method,
                    path,
                    status = status.as_u16(),
                    attempt,
                    elapsed_ms,
                    "Connect request"
                );
                self.shared
                    .metrics
                    .rest_request(method, path, Some(status.as_u16()));
                return Ok((status, headers, body));
            }
            Err(Exchange::Transport(error)) => {
                self.shared.metrics.rest_request(method, path, None);
                ConnectError::transport(method, path, host, error)
            }
            Err(Exchange::TooLarge(status)) => {
                self.shared
                    .metrics
                    .rest_request(method, path, Some(status.as_u16()));
                self.too_large(method, path, status)
            }
        };
        tracing::debug!(method, path, attempt, elapsed_ms, error = %error, "Connect request failed");
        Err(Failure {
            error,
            retry_after: None,
        })
    }

    /// An error answer, with the server's `Retry-After` if it sent one.
    fn refused(
        &self,
        method: &str,
        path: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Failure {
        Failure {
            error: ConnectError::api(method, path, status.as_u16(), body, self.api_key.expose()),
            retry_after: header_text(headers, "retry-after")
                .as_deref()
                .and_then(parse_retry_after),
        }
    }

    /// A permit of the shared limit on requests in flight.
    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Failure> {
        self.shared.permits.acquire().await.map_err(|_| Failure {
            error: ConnectError::Config("the client was shut down".into()),
            retry_after: None,
        })
    }

    fn too_large(&self, method: &str, path: &str, status: StatusCode) -> ConnectError {
        ConnectError::decode(
            method,
            path,
            format!(
                "the answer (HTTP {}) is larger than the {} bytes this client reads",
                status.as_u16(),
                self.shared.max_body_bytes
            ),
        )
    }

    fn url(&self, request: &Request<'_>) -> Result<reqwest::Url, ConnectError> {
        let mut url = format!(
            "{}/{}",
            self.shared.base_url,
            request.path.trim_start_matches('/')
        );
        if !request.query.is_empty() {
            url.push('?');
            url.push_str(&request.query);
        }
        reqwest::Url::parse(&url).map_err(|e| {
            ConnectError::Config(format!("cannot build a URL for {}: {e}", request.path))
        })
    }
}

/// Why an exchange produced no answer to look at.
enum Exchange {
    Transport(reqwest::Error),
    /// The body (of an answer with this status) passed the size limit.
    TooLarge(StatusCode),
}

/// Sends and reads the whole answer, so the timeout and the permit cover the body too; stops
/// reading once the body passes `limit` bytes, whatever `Content-Length` claimed.
async fn exchange(
    builder: reqwest::RequestBuilder,
    limit: usize,
) -> Result<(StatusCode, HeaderMap, Bytes), Exchange> {
    let mut response = builder.send().await.map_err(Exchange::Transport)?;
    let status = response.status();
    let headers = response.headers().clone();
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(Exchange::TooLarge(status));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Exchange::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(Exchange::TooLarge(status));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, headers, Bytes::from(body)))
}

fn workbook_form(bytes: Bytes) -> reqwest::multipart::Form {
    let length = bytes.len() as u64;
    let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::from(bytes), length)
        .file_name("usage_file.xlsx")
        .mime_str(XLSX)
        .expect("the xlsx media type is valid");
    reqwest::multipart::Form::new().part("usage_file", part)
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn authorization(key: &Secret) -> Result<HeaderValue, ConnectError> {
    let mut value = HeaderValue::from_str(key.expose()).map_err(|_| {
        ConnectError::Config("API_KEY holds characters an HTTP header cannot carry".into())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

fn with_paging(query: &str, limit: u32, offset: u64) -> String {
    let paging = format!("limit={limit}&offset={offset}");
    if query.is_empty() {
        paging
    } else {
        format!("{query}&{paging}")
    }
}

/// An id made safe to put into a path (`products/{id}`).
pub(super) fn segment(id: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet =
        &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');
    utf8_percent_encode(id, KEEP).to_string()
}

fn user_agent() -> String {
    format!(
        "connect-payg/{} Rust {}/{}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// The CAs of `SSL_CERT_FILE`, trusted in addition to the system roots. Read once, at start-up.
fn extra_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>, ConnectError> {
    let config = |reason: String| {
        ConnectError::Config(format!("SSL_CERT_FILE {}: {reason}", path.display()))
    };
    let pem = std::fs::read(path).map_err(|e| config(e.to_string()))?;
    let certificates =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| config(e.to_string()))?;
    if certificates.is_empty() {
        return Err(config("holds no PEM certificate".into()));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_is_appended_to_the_query() {
        assert_eq!(with_paging("", 0, 0), "limit=0&offset=0");
        assert_eq!(
            with_paging("eq(status,active)&ordering(id)", 100, 200),
            "eq(status,active)&ordering(id)&limit=100&offset=200"
        );
    }

    #[test]
    fn ids_are_escaped_in_paths() {
        assert_eq!(segment("UF-2024-02-1234-5678"), "UF-2024-02-1234-5678");
        assert_eq!(segment("../x?y"), "..%2Fx%3Fy");
    }

    #[test]
    fn user_agent_names_the_program() {
        assert!(user_agent().starts_with(concat!(
            "connect-payg/",
            env!("CARGO_PKG_VERSION"),
            " Rust "
        )));
    }

    #[test]
    fn bad_options_are_configuration_errors() {
        let bad_url = ConnectClient::new(ClientOptions::new("not a url", Secret::new("k")));
        assert!(matches!(bad_url, Err(ConnectError::Config(_))));
        let bad_key = ConnectClient::new(ClientOptions::new(
            "http://127.0.0.1:1/public/v1",
            Secret::new("ApiKey bad\nkey"),
        ))
        .unwrap_err();
        assert!(bad_key.to_string().contains("API_KEY"), "{bad_key}");
        assert!(!bad_key.to_string().contains("bad\nkey"));
    }

    #[test]
    fn ssl_cert_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let mut options = ClientOptions::new("https://127.0.0.1:1/public/v1", Secret::new("k"));
        options.extra_ca_file = Some(empty);
        let error = ConnectClient::new(options).unwrap_err();
        assert!(error.to_string().contains("SSL_CERT_FILE"), "{error}");
    }

    #[test]
    fn debug_output_hides_the_key() {
        let client = ConnectClient::new(ClientOptions::new(
            "http://127.0.0.1:1/public/v1",
            Secret::new("ApiKey SU-1:topsecret"),
        ))
        .unwrap();
        assert!(!format!("{client:?}").contains("topsecret"));
    }
}
