//! Shipping log lines to the portal's log service (Logz.io), as the official runner does when
//! the setup response carries `logging.logging_api_key`: newline-delimited JSON objects POSTed
//! in batches (at most [`MAX_BATCH_BYTES`], at least every flush interval) to
//! `LOG_SHIPPING_URL/?token=<key>&type=python`.
//!
//! * Capturing ([`Shipper::capture`], called by the subscriber for every enabled event) costs
//!   one atomic load while nothing is shipped; otherwise it formats the line and appends it to a
//!   bounded queue. It never waits on the network: when the queue is full the oldest lines go,
//!   counted, and a WARN says how many at most once per warn interval.
//! * Only this crate's lines are shipped, and never the shipper's own (`connect_payg::logging`):
//!   the HTTP client's logs and the shipper's warnings about the log service stay local, so
//!   shipping cannot feed itself.
//! * One background task sends the batches: up to `tries` attempts with doubling waits; a
//!   400/401 stops shipping until the next setup response; a batch that still fails is dropped
//!   and counted. A new key switches at the next attempt, no key stops and empties the queue.
//! * Each line carries `@timestamp` (UTC, milliseconds, `Z`), `log_level`, `message`, `logger`
//!   (the target), `task_id` when written while handling a task (the nearest span with a
//!   `task_id` field), `line_number`, `path_name`, the event's own fields, and the setup's
//!   metadata. The key is a [`Secret`] and is never logged (the request URL that holds it is
//!   never printed; errors are described without it); known secret values are replaced by
//!   `***` in every line before it leaves, though nothing is expected to log them.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;
use tokio::sync::Notify;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{info, warn, Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::config::Secret;

/// The `type` of every batch and line: the official runner's, which the portal's log views
/// were built for.
pub const LOG_TYPE: &str = "python";
/// Largest batch body the log service takes in one request.
pub const MAX_BATCH_BYTES: usize = 1_000_000;
/// A longer line is shipped without its fields and with its message clipped.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// How often lost lines are looked at while a request is under way.
const LOSSES_CHECK: Duration = Duration::from_secs(1);
/// Secrets shorter than this are not searched for (they would match ordinary text).
const MIN_SCRUBBED_LEN: usize = 4;

/// Line fields this module writes; an event field of the same name is shipped as `event.<name>`.
const RESERVED: &[&str] = &[
    "@timestamp",
    "log_level",
    "message",
    "logger",
    "task_id",
    "line_number",
    "path_name",
    "type",
    "truncated_bytes",
    "service_id",
    "environment_id",
    "environment_type",
    "instance_id",
    "account_id",
    "account_name",
    "repository_tag",
];

/// Sizes and timings of shipping; production uses the defaults, tests shrink them.
#[derive(Debug, Clone)]
pub struct ShipOptions {
    /// Most lines waiting; more drop the oldest.
    pub queue_lines: usize,
    /// Most bytes waiting; more drop the oldest.
    pub queue_bytes: usize,
    /// Largest request body.
    pub batch_bytes: usize,
    /// Longest a line waits before it is sent.
    pub flush_interval: Duration,
    /// Limit of one request.
    pub request_timeout: Duration,
    /// Attempts per batch.
    pub tries: u32,
    /// Wait before the second attempt; doubles after each.
    pub retry_base: Duration,
    /// At most one WARN about lost lines per this interval.
    pub warn_interval: Duration,
}

impl Default for ShipOptions {
    fn default() -> Self {
        ShipOptions {
            queue_lines: 10_000,
            queue_bytes: 8 * 1024 * 1024,
            batch_bytes: MAX_BATCH_BYTES,
            flush_interval: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            tries: 4,
            retry_base: Duration::from_secs(2),
            warn_interval: Duration::from_secs(60),
        }
    }
}

/// Who is logging, added to every line (what the setup response and the environment say).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogMeta {
    pub service_id: Option<String>,
    pub environment_id: Option<String>,
    pub environment_type: Option<String>,
    pub instance_id: Option<String>,
    pub account_id: Option<String>,
    pub account_name: Option<String>,
    pub repository_tag: Option<String>,
}

impl LogMeta {
    /// The end of every line: `,"service_id":"…",…}` (the fields that are given).
    fn suffix(&self) -> String {
        let mut text = String::new();
        for (name, value) in [
            ("service_id", &self.service_id),
            ("environment_id", &self.environment_id),
            ("environment_type", &self.environment_type),
            ("instance_id", &self.instance_id),
            ("account_id", &self.account_id),
            ("account_name", &self.account_name),
            ("repository_tag", &self.repository_tag),
        ] {
            if let Some(value) = value {
                push_pair(&mut text, name, &Value::String(value.clone()));
            }
        }
        text.push('}');
        text
    }
}

/// Where and as whom to ship.
#[derive(Clone)]
pub struct ShipTarget {
    /// `LOG_SHIPPING_URL`.
    pub url: String,
    /// `logging.logging_api_key`.
    pub token: Secret,
    pub meta: LogMeta,
    /// Values replaced by `***` in every line (the API key, secure variables …).
    pub secrets: Vec<Secret>,
}

impl fmt::Debug for ShipTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShipTarget")
            .field("url", &self.url)
            .field("token", &self.token)
            .field("meta", &self.meta)
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("LOG_SHIPPING_URL {url:?} cannot take the logging key: {reason}")]
    Url { url: String, reason: String },
    #[error("log shipping needs an async runtime to send from")]
    NoRuntime,
}

/// What `Shipper::ship` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipChange {
    Started,
    /// Another key or service: lines not yet sent go with the new one.
    Switched,
    /// The same key again after the log service refused it.
    Resumed,
    /// The same key, still shipping (metadata and secrets refreshed).
    Unchanged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShippingState {
    /// No key (or shipping stopped by a setup response without one).
    Off,
    On,
    /// The log service answered this (400/401) and nothing is shipped until the next setup
    /// response.
    Refused(u16),
}

/// Counters since start (for status lines, metrics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShippingStats {
    pub state: ShippingState,
    /// Lines the log service took.
    pub shipped: u64,
    /// Lines captured and never shipped: the queue overflowed, a batch failed every attempt or
    /// was refused, or shipping stopped with lines waiting.
    pub dropped: u64,
    /// Lines waiting now.
    pub queued: usize,
}

/// A span's `task_id`, kept for the events inside it.
struct TaskId(String);

/// Records the `task_id` field of a new span (the runner's `task` span has one).
pub(super) fn remember_task_id<S>(attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if attrs.metadata().fields().field("task_id").is_none() {
        return;
    }
    let mut fields = Fields::default();
    attrs.record(&mut fields);
    if let (Some(task_id), Some(span)) = (fields.task_id, ctx.span(id)) {
        span.extensions_mut().insert(TaskId(task_id));
    }
}

/// The queue and the sending task; cheap to clone (one shared state).
#[derive(Clone)]
pub(super) struct Shipper {
    inner: Arc<Inner>,
}

struct Inner {
    options: ShipOptions,
    /// Lines are captured only while set: a key is given and was not refused.
    active: AtomicBool,
    queue: Mutex<Queue>,
    /// Wakes the sending task early when a full batch waits.
    wake: Notify,
    control: Mutex<Control>,
    /// A batch is on its way (taken from the queue, not yet shipped or given up).
    sending: AtomicBool,
    shipped: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Queue {
    lines: VecDeque<String>,
    bytes: usize,
    /// Lost since the last WARN: overflowed, and in failed batches.
    untold_overflow: u64,
    untold_failed: u64,
    last_failure: Option<String>,
    last_told: Option<Instant>,
}

#[derive(Default)]
struct Control {
    target: Option<Arc<Prepared>>,
    refused: Option<u16>,
    /// Bumped whenever the key or service changes or shipping stops.
    generation: u64,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A target ready to send to. Holds the key in `endpoint`: never printed.
struct Prepared {
    generation: u64,
    endpoint: url::Url,
    url: String,
    token: Secret,
    suffix: String,
    scrub: Vec<String>,
}

impl Prepared {
    fn new(target: ShipTarget, generation: u64) -> Result<Prepared, ShipError> {
        let bad = |reason: String| ShipError::Url {
            url: target.url.clone(),
            reason,
        };
        let mut endpoint = url::Url::parse(&target.url).map_err(|e| bad(e.to_string()))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err(bad("not an http(s) URL with a host".into()));
        }
        if !endpoint.path().ends_with('/') {
            let path = format!("{}/", endpoint.path());
            endpoint.set_path(&path);
        }
        endpoint
            .query_pairs_mut()
            .clear()
            .append_pair("token", target.token.expose())
            .append_pair("type", LOG_TYPE);
        let mut scrub = Vec::new();
        for secret in target.secrets.iter().chain([&target.token]) {
            scrub_forms(secret.expose(), &mut scrub);
        }
        scrub.sort_by_key(|s| std::cmp::Reverse(s.len()));
        scrub.dedup();
        Ok(Prepared {
            generation,
            endpoint,
            url: target.url,
            token: target.token,
            suffix: target.meta.suffix(),
            scrub,
        })
    }

    /// The request body: each line scrubbed and closed with the metadata, one per line.
    fn body(&self, lines: &[String]) -> bytes::Bytes {
        let mut body = String::with_capacity(
            lines.iter().map(String::len).sum::<usize>() + lines.len() * (self.suffix.len() + 1),
        );
        for line in lines {
            if self
                .scrub
                .iter()
                .any(|secret| line.contains(secret.as_str()))
            {
                body.push_str(&scrubbed(line, &self.scrub));
            } else {
                body.push_str(line);
            }
            body.push_str(&self.suffix);
            body.push('\n');
        }
        bytes::Bytes::from(body)
    }
}

/// The forms in which `secret` could stand in a JSON line: as is, JSON-escaped,
/// percent-encoded, and the secret part of an `ApiKey SU-…:secret`.
fn scrub_forms(secret: &str, forms: &mut Vec<String>) {
    if secret.len() < MIN_SCRUBBED_LEN {
        return;
    }
    forms.push(secret.to_string());
    let escaped = serde_json::to_string(secret).unwrap_or_default();
    forms.push(escaped.trim_matches('"').to_string());
    forms.push(utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string());
    if let Some((_, tail)) = secret.rsplit_once(':') {
        scrub_forms(tail, forms);
    }
}

fn scrubbed(line: &str, secrets: &[String]) -> String {
    secrets.iter().fold(line.to_string(), |line, secret| {
        line.replace(secret.as_str(), "***")
    })
}

impl Shipper {
    pub(super) fn new(options: ShipOptions) -> Shipper {
        Shipper {
            inner: Arc::new(Inner {
                options,
                active: AtomicBool::new(false),
                queue: Mutex::new(Queue::default()),
                wake: Notify::new(),
                control: Mutex::new(Control::default()),
                sending: AtomicBool::new(false),
                shipped: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// Queues `event` as a line when shipping is on and the event is this crate's.
    pub(super) fn capture<S>(&self, event: &Event<'_>, ctx: Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        if !self.inner.active.load(Ordering::Relaxed) || !is_shipped(event.metadata().target()) {
            return;
        }
        let task_id = ctx.event_scope(event).and_then(|scope| {
            scope
                .into_iter()
                .find_map(|span| span.extensions().get::<TaskId>().map(|id| id.0.clone()))
        });
        self.inner.push(format_line(event, task_id));
    }

    /// Ships to `target` from now on (start, switch, or resume after a refusal).
    pub(super) fn ship(&self, target: ShipTarget) -> Result<ShipChange, ShipError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ShipError::NoRuntime)?;
        let mut control = self.inner.lock_control();
        let same = control
            .target
            .as_ref()
            .is_some_and(|t| t.token == target.token && t.url == target.url);
        let change = match (&control.target, control.refused, same) {
            (None, _, _) => ShipChange::Started,
            (Some(_), _, false) => ShipChange::Switched,
            (Some(_), Some(_), true) => ShipChange::Resumed,
            (Some(_), None, true) => ShipChange::Unchanged,
        };
        let generation = control.generation + u64::from(!same);
        let prepared = Prepared::new(target, generation)?;
        control.generation = generation;
        let host = prepared.endpoint.host_str().unwrap_or_default().to_string();
        control.target = Some(Arc::new(prepared));
        control.refused = None;
        if control.task.as_ref().is_none_or(|task| task.is_finished()) {
            control.task = Some(runtime.spawn(send_loop(Arc::clone(&self.inner))));
        }
        self.inner.active.store(true, Ordering::Relaxed);
        drop(control);
        match change {
            ShipChange::Started => info!(%host, "shipping logs to the portal's log service"),
            ShipChange::Switched => info!(%host, "shipping logs with a new logging key"),
            ShipChange::Resumed => info!(%host, "shipping logs again after a new setup response"),
            ShipChange::Unchanged => {}
        }
        Ok(change)
    }

    /// Stops shipping and forgets the waiting lines; true when it was shipping.
    pub(super) fn stop(&self) -> bool {
        let mut control = self.inner.lock_control();
        let was_on = control.target.take().is_some();
        control.refused = None;
        control.generation += 1;
        self.inner.active.store(false, Ordering::Relaxed);
        drop(control);
        let cleared = self.inner.clear();
        self.inner.dropped.fetch_add(cleared, Ordering::Relaxed);
        if was_on {
            info!(
                discarded = cleared,
                "log shipping stopped: the setup response carries no logging key"
            );
        }
        was_on
    }

    /// Waits until every waiting line is shipped (or given up), at most `limit`; true when
    /// nothing is left. For a clean exit: lines written just before it are not lost.
    pub(super) async fn flush(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let idle = self.inner.lock_queue().lines.is_empty()
                && !self.inner.sending.load(Ordering::Relaxed);
            if idle || self.inner.current().is_none() {
                return idle;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.inner.wake.notify_one();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(super) fn stats(&self) -> ShippingStats {
        let state = {
            let control = self.inner.lock_control();
            match (&control.target, control.refused) {
                (None, _) => ShippingState::Off,
                (Some(_), Some(status)) => ShippingState::Refused(status),
                (Some(_), None) => ShippingState::On,
            }
        };
        ShippingStats {
            state,
            shipped: self.inner.shipped.load(Ordering::Relaxed),
            dropped: self.inner.dropped.load(Ordering::Relaxed),
            queued: self.inner.lock_queue().lines.len(),
        }
    }
}

/// Whether lines of `target` are shipped: this crate's, except the shipper's own.
fn is_shipped(target: &str) -> bool {
    let ours = target == "connect_payg" || target.starts_with("connect_payg::");
    ours && !target.starts_with("connect_payg::logging")
}

impl Inner {
    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a line, dropping the oldest while the queue is over its bounds.
    fn push(&self, line: String) {
        let mut queue = self.lock_queue();
        queue.bytes += line.len();
        queue.lines.push_back(line);
        let mut overflow = 0;
        while queue.lines.len() > self.options.queue_lines || queue.bytes > self.options.queue_bytes
        {
            let Some(oldest) = queue.lines.pop_front() else {
                break;
            };
            queue.bytes -= oldest.len();
            overflow += 1;
        }
        queue.untold_overflow += overflow;
        let full_batch = queue.bytes >= self.options.batch_bytes;
        drop(queue);
        if overflow > 0 {
            self.dropped.fetch_add(overflow, Ordering::Relaxed);
        }
        if full_batch {
            self.wake.notify_one();
        }
    }

    /// Empties the queue; returns how many lines it held.
    fn clear(&self) -> u64 {
        let mut queue = self.lock_queue();
        let count = queue.lines.len() as u64;
        queue.lines.clear();
        queue.bytes = 0;
        count
    }

    /// The target to send to, unless shipping is off or refused.
    fn current(&self) -> Option<Arc<Prepared>> {
        let control = self.lock_control();
        match control.refused {
            Some(_) => None,
            None => control.target.clone(),
        }
    }

    /// The next batch (at most `batch_bytes`, at least one line) and where it goes.
    fn next_batch(&self) -> Option<(Arc<Prepared>, Vec<String>)> {
        let target = self.current()?;
        let mut queue = self.lock_queue();
        let mut lines = Vec::new();
        let mut size = 0;
        while let Some(line) = queue.lines.front() {
            let grown = size + line.len() + target.suffix.len() + 1;
            if !lines.is_empty() && grown > self.options.batch_bytes {
                break;
            }
            size = grown;
            let line = queue.lines.pop_front().expect("a front line");
            queue.bytes -= line.len();
            lines.push(line);
        }
        if lines.is_empty() {
            return None;
        }
        self.sending.store(true, Ordering::Relaxed);
        drop(queue);
        Some((target, lines))
    }

    fn lose(&self, count: u64, failure: String) {
        self.dropped.fetch_add(count, Ordering::Relaxed);
        let mut queue = self.lock_queue();
        queue.untold_failed += count;
        queue.last_failure = Some(failure);
    }

    /// One WARN about lost lines, unless one was written within the warn interval.
    fn tell_losses(&self) {
        let mut queue = self.lock_queue();
        let untold = queue.untold_overflow + queue.untold_failed;
        let recent = queue
            .last_told
            .is_some_and(|at| at.elapsed() < self.options.warn_interval);
        if untold == 0 || recent {
            return;
        }
        let (overflow, failed) = (queue.untold_overflow, queue.untold_failed);
        let failure = queue.last_failure.take().unwrap_or_default();
        queue.untold_overflow = 0;
        queue.untold_failed = 0;
        queue.last_told = Some(Instant::now());
        drop(queue);
        warn!(
            dropped = untold,
            queue_full = overflow,
            failed_batches = failed,
            failure = %failure,
            dropped_since_start = self.dropped.load(Ordering::Relaxed),
            "log lines were not shipped to the portal: the queue was full or the log service did not take them"
        );
    }

    /// The log service refused `target`'s key: nothing more is shipped with it.
    fn refuse(&self, target: &Prepared, status: u16, count: u64) {
        self.dropped.fetch_add(count, Ordering::Relaxed);
        let mut control = self.lock_control();
        if control.generation != target.generation {
            // An earlier key was refused; the current one stands.
            return;
        }
        control.refused = Some(status);
        self.active.store(false, Ordering::Relaxed);
        drop(control);
        let cleared = self.clear();
        self.dropped.fetch_add(cleared, Ordering::Relaxed);
        warn!(
            status,
            discarded = count + cleared,
            "the log service refused the logging key; no logs are shipped until the next setup response"
        );
    }

    /// Sends one batch, retrying; a switch while waiting sends it with the new key.
    async fn send(&self, client: &reqwest::Client, mut target: Arc<Prepared>, lines: Vec<String>) {
        let count = lines.len() as u64;
        let mut body = target.body(&lines);
        let mut failure = String::new();
        for attempt in 0..self.options.tries.max(1) {
            if attempt > 0 {
                let wait = self
                    .options
                    .retry_base
                    .saturating_mul(2u32.saturating_pow(attempt - 1));
                tokio::time::sleep(wait).await;
                self.tell_losses();
                match self.current() {
                    None => {
                        self.dropped.fetch_add(count, Ordering::Relaxed);
                        return;
                    }
                    Some(current) if current.generation != target.generation => {
                        target = current;
                        body = target.body(&lines);
                    }
                    Some(_) => {}
                }
            }
            let request = client
                .post(target.endpoint.clone())
                .header(reqwest::header::CONTENT_TYPE, "text/plain")
                .body(body.clone())
                .send();
            tokio::pin!(request);
            // Lines keep overflowing while the service is slow: say so without waiting for it.
            let sent = loop {
                tokio::select! {
                    sent = &mut request => break sent,
                    _ = tokio::time::sleep(LOSSES_CHECK) => self.tell_losses(),
                }
            };
            match sent {
                Ok(response) if response.status().is_success() => {
                    self.shipped.fetch_add(count, Ordering::Relaxed);
                    return;
                }
                Ok(response) if matches!(response.status().as_u16(), 400 | 401) => {
                    self.refuse(&target, response.status().as_u16(), count);
                    return;
                }
                Ok(response) => {
                    failure = format!("the log service answered {}", response.status());
                }
                Err(error) => failure = describe(&error, self.options.request_timeout),
            }
        }
        self.lose(count, failure);
    }
}

/// A request failure without its URL (which holds the key).
fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        format!("no answer within {} s", timeout.as_secs_f64())
    } else if error.is_connect() {
        "cannot connect to the log service".into()
    } else {
        "the request to the log service failed".into()
    }
}

/// The sending task: every flush interval (or sooner when a full batch waits) it sends all
/// waiting lines, batch by batch.
async fn send_loop(inner: Arc<Inner>) {
    let client = match reqwest::Client::builder()
        .timeout(inner.options.request_timeout)
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            warn!(%error, "cannot create the HTTP client for log shipping; no logs are shipped");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(inner.options.flush_interval) => {}
        }
        inner.tell_losses();
        while let Some((target, lines)) = inner.next_batch() {
            inner.send(&client, target, lines).await;
            inner.sending.store(false, Ordering::Relaxed);
            inner.tell_losses();
        }
    }
}

/// The line for `event` without its metadata and closing brace (added when it is sent).
fn format_line(event: &Event<'_>, span_task_id: Option<String>) -> String {
    let metadata = event.metadata();
    let mut fields = Fields::default();
    event.record(&mut fields);
    let timestamp = Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let task_id = match (span_task_id, fields.task_id.take()) {
        (Some(span), Some(own)) => {
            fields.fields.push(("task_id", Value::String(own)));
            Some(span)
        }
        (span, own) => span.or(own),
    };
    let mut head = String::with_capacity(256);
    head.push_str("{\"@timestamp\":");
    push_json_str(&mut head, &timestamp);
    push_pair(
        &mut head,
        "log_level",
        &Value::from(level_name(metadata.level())),
    );
    push_pair(&mut head, "logger", &Value::from(metadata.target()));
    if let Some(task_id) = &task_id {
        push_pair(&mut head, "task_id", &Value::from(task_id.as_str()));
    }
    if let Some(line) = metadata.line() {
        push_pair(&mut head, "line_number", &Value::from(line));
    }
    if let Some(file) = metadata.file() {
        push_pair(&mut head, "path_name", &Value::from(file));
    }
    let mut line = head.clone();
    push_pair(&mut line, "message", &Value::String(fields.message.clone()));
    for (name, value) in &fields.fields {
        if RESERVED.contains(name) {
            push_pair(&mut line, &format!("event.{name}"), value);
        } else {
            push_pair(&mut line, name, value);
        }
    }
    if line.len() <= MAX_LINE_BYTES {
        return line;
    }
    push_pair(
        &mut head,
        "message",
        &Value::String(super::clip(&fields.message)),
    );
    push_pair(&mut head, "truncated_bytes", &Value::from(line.len()));
    head
}

/// `,"name":value`: a field after the first.
fn push_pair(line: &mut String, name: &str, value: &Value) {
    line.push(',');
    push_json_str(line, name);
    line.push(':');
    let _ = write!(line, "{value}");
}

fn push_json_str(line: &mut String, text: &str) {
    let _ = write!(line, "{}", Value::from(text));
}

/// Level names as the official runner's lines carry them (Python's).
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARNING",
        Level::ERROR => "ERROR",
    }
}

/// An event's (or span's) fields as JSON values.
#[derive(Default)]
struct Fields {
    message: String,
    task_id: Option<String>,
    fields: Vec<(&'static str, Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        let text = |value: Value| match value {
            Value::String(text) => text,
            other => other.to_string(),
        };
        match field.name() {
            "message" => self.message = text(value),
            "task_id" if self.task_id.is_none() => self.task_id = Some(text(value)),
            name => self.fields.push((name, value)),
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let value = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.put(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str, token: &str) -> ShipTarget {
        ShipTarget {
            url: url.into(),
            token: Secret::new(token),
            meta: LogMeta {
                service_id: Some("SRVC-1".into()),
                account_name: Some("Vendor \"A\"".into()),
                ..LogMeta::default()
            },
            secrets: vec![Secret::new("ApiKey SU-1:s3cr3t-part"), Secret::new("ab")],
        }
    }

    #[test]
    fn the_endpoint_carries_the_token_and_type() {
        for (url, expected) in [
            (
                "https://listener.logz.io:8071",
                "https://listener.logz.io:8071/?token=t%2Bk&type=python",
            ),
            (
                "http://127.0.0.1:9/_sim/logs",
                "http://127.0.0.1:9/_sim/logs/?token=t%2Bk&type=python",
            ),
            (
                "http://127.0.0.1:9/_sim/logs/",
                "http://127.0.0.1:9/_sim/logs/?token=t%2Bk&type=python",
            ),
        ] {
            let prepared = Prepared::new(target(url, "t+k"), 0).unwrap();
            assert_eq!(prepared.endpoint.as_str(), expected);
        }
        assert!(Prepared::new(target("listener", "t"), 0).is_err());
        let debug = format!("{:?}", target("https://x", "t0k3n-value"));
        assert!(!debug.contains("t0k3n-value"), "{debug}");
    }

    #[test]
    fn lines_get_the_metadata_and_lose_known_secrets() {
        let prepared = Prepared::new(target("https://x", "t0k3n-value"), 0).unwrap();
        let lines = vec![
            r#"{"message":"plain""#.to_string(),
            r#"{"message":"key ApiKey SU-1:s3cr3t-part, part s3cr3t-part, token t0k3n-value, short ab""#
                .to_string(),
            r#"{"message":"encoded ApiKey%20SU%2D1%3As3cr3t%2Dpart""#.to_string(),
        ];
        let body = String::from_utf8(prepared.body(&lines).to_vec()).unwrap();
        let parsed: Vec<Value> = body
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0]["service_id"], "SRVC-1");
        assert_eq!(parsed[0]["account_name"], "Vendor \"A\"");
        assert!(
            parsed[0].get("environment_id").is_none(),
            "absent, not null"
        );
        assert_eq!(
            parsed[1]["message"],
            "key ***, part ***, token ***, short ab"
        );
        assert_eq!(parsed[2]["message"], "encoded ***");
    }

    #[test]
    fn only_this_crates_lines_leave_and_never_the_shippers_own() {
        for (target, shipped) in [
            ("connect_payg", true),
            ("connect_payg::devops::executor", true),
            ("connect_payg::usage::report", true),
            ("connect_payg::logging::ship", false),
            ("connect_payg_other", false),
            ("reqwest::connect", false),
            ("hyper_util::client", false),
            ("connect_sim::devops", false),
        ] {
            assert_eq!(is_shipped(target), shipped, "{target}");
        }
    }

    /// A queue of `lines` lines and the shipper around it, without a network.
    fn shipper(lines: usize, batch_bytes: usize) -> Shipper {
        Shipper::new(ShipOptions {
            queue_lines: lines,
            batch_bytes,
            ..ShipOptions::default()
        })
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts() {
        let shipper = shipper(3, MAX_BATCH_BYTES);
        for n in 0..5 {
            shipper.inner.push(format!("{{\"n\":{n}"));
        }
        let queue = shipper.inner.lock_queue();
        let kept: Vec<&str> = queue.lines.iter().map(String::as_str).collect();
        assert_eq!(kept, ["{\"n\":2", "{\"n\":3", "{\"n\":4"]);
        assert_eq!(queue.untold_overflow, 2);
        assert_eq!(queue.bytes, kept.iter().map(|l| l.len()).sum::<usize>());
        drop(queue);
        assert_eq!(shipper.stats().dropped, 2);
        assert_eq!(shipper.stats().queued, 3);
        assert_eq!(shipper.stats().state, ShippingState::Off);
    }

    #[test]
    fn batches_stay_within_their_size() {
        let shipper = shipper(100, 40);
        shipper.inner.lock_control().target = Some(Arc::new(
            Prepared::new(target("https://x", "tok3n"), 0).unwrap(),
        ));
        for n in 0..6 {
            shipper.inner.push(format!("{{\"n\":{n}"));
        }
        let suffix = shipper.inner.current().unwrap().suffix.len();
        let mut sizes = Vec::new();
        while let Some((_, lines)) = shipper.inner.next_batch() {
            let size: usize = lines.iter().map(|l| l.len() + suffix + 1).sum();
            assert!(size <= 40 || lines.len() == 1, "{size}");
            sizes.push(lines.len());
        }
        assert_eq!(sizes.iter().sum::<usize>(), 6);
        assert!(sizes.len() > 1, "{sizes:?}");
        // A refused key sends nothing.
        shipper.inner.push("{\"n\":9".into());
        shipper.inner.lock_control().refused = Some(401);
        assert!(shipper.inner.next_batch().is_none());
    }

    #[tokio::test]
    async fn lines_carry_level_logger_task_id_and_fields() {
        use crate::config::{LogFormat, LogLevel};
        let (dispatch, control) = super::super::build(super::super::LogOptions {
            format: LogFormat::Json,
            start: LogLevel::Debug,
            rust_log: None,
            writer: tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::sink),
            ship: ShipOptions {
                flush_interval: Duration::from_secs(3600),
                ..ShipOptions::default()
            },
        });
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!(target: "connect_payg::devops::executor", "before shipping");
        });
        assert_eq!(
            control.ship(target("http://127.0.0.1:9", "tok3n")).unwrap(),
            ShipChange::Started
        );
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("task", task_id = "TQ-1", category = "scheduled");
            span.in_scope(|| {
                let inner = tracing::debug_span!("group", contract = "CRD-1");
                inner.in_scope(|| {
                    tracing::warn!(
                        target: "connect_payg::usage::report",
                        rows = 3_u64,
                        ok = true,
                        ratio = 0.5,
                        logger = "mine",
                        detail = %"shown",
                        "inside {}", "a task"
                    );
                });
            });
            tracing::info!(target: "connect_payg::devops::executor", task_id = "TQ-2", "outside");
            tracing::info!(target: "connect_payg::logging::ship", "the shipper's own");
            tracing::info!(target: "reqwest::connect", "a library's");
            tracing::trace!(target: "connect_payg::devops::executor", "below the level");
        });
        let lines: Vec<Value> = control
            .0
            .shipper
            .inner
            .lock_queue()
            .lines
            .iter()
            .map(|line| serde_json::from_str(&format!("{line}}}")).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{lines:#?}");
        let inside = &lines[0];
        assert_eq!(inside["message"], "inside a task");
        assert_eq!(inside["log_level"], "WARNING");
        assert_eq!(inside["logger"], "connect_payg::usage::report");
        assert_eq!(inside["task_id"], "TQ-1", "from the enclosing task span");
        assert_eq!(inside["rows"], 3);
        assert_eq!(inside["ok"], true);
        assert_eq!(inside["ratio"], 0.5);
        assert_eq!(inside["detail"], "shown");
        assert_eq!(
            inside["event.logger"], "mine",
            "reserved names are kept apart"
        );
        assert!(inside["line_number"].is_u64() && inside["path_name"].is_string());
        let stamp = inside["@timestamp"].as_str().unwrap();
        assert!(
            chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%dT%H:%M:%S%.3fZ").is_ok()
                && stamp.len() == 24,
            "{stamp}"
        );
        assert_eq!(lines[1]["task_id"], "TQ-2", "an event's own task id");
        assert_eq!(lines[1]["log_level"], "INFO");
        assert!(control.stop_shipping());
        assert_eq!(control.shipping().state, ShippingState::Off);
        assert_eq!(control.shipping().queued, 0);
    }

    #[tokio::test]
    async fn keys_start_switch_resume_and_stop() {
        let shipper = shipper(100, MAX_BATCH_BYTES);
        let url = "http://127.0.0.1:9/_sim/logs";
        assert_eq!(
            shipper.ship(target(url, "k1")).unwrap(),
            ShipChange::Started
        );
        assert_eq!(
            shipper.ship(target(url, "k1")).unwrap(),
            ShipChange::Unchanged
        );
        let first = shipper.inner.current().unwrap();
        assert_eq!(
            shipper.ship(target(url, "k2")).unwrap(),
            ShipChange::Switched
        );
        let second = shipper.inner.current().unwrap();
        assert_ne!(first.generation, second.generation);
        // A refusal of the earlier key does not stop the current one.
        shipper.inner.refuse(&first, 401, 1);
        assert_eq!(shipper.stats().state, ShippingState::On);
        shipper.inner.refuse(&second, 401, 1);
        assert_eq!(shipper.stats().state, ShippingState::Refused(401));
        assert!(!shipper.inner.active.load(Ordering::Relaxed));
        assert_eq!(
            shipper.ship(target(url, "k2")).unwrap(),
            ShipChange::Resumed
        );
        assert_eq!(shipper.stats().state, ShippingState::On);
        assert!(shipper.ship(target("not a url", "k3")).is_err());
        assert_eq!(
            shipper.inner.current().unwrap().generation,
            second.generation,
            "a bad target changes nothing"
        );
        assert!(shipper.stop());
        assert!(!shipper.stop());
        assert_eq!(shipper.stats().state, ShippingState::Off);
        assert_eq!(shipper.stats().dropped, 2);
    }

    #[test]
    fn an_oversized_line_keeps_its_head() {
        let huge = "x".repeat(MAX_LINE_BYTES * 2);
        let (dispatch, control) = super::super::build(super::super::LogOptions {
            format: crate::config::LogFormat::Json,
            start: crate::config::LogLevel::Info,
            rust_log: None,
            writer: tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::sink),
            ship: ShipOptions::default(),
        });
        control
            .0
            .shipper
            .inner
            .active
            .store(true, Ordering::Relaxed);
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!(target: "connect_payg::usage", body = %huge, "a huge field");
        });
        let line = control.0.shipper.inner.lock_queue().lines[0].clone();
        let value: Value = serde_json::from_str(&format!("{line}}}")).unwrap();
        assert!(line.len() < 1024, "{}", line.len());
        assert_eq!(value["message"], "a huge field");
        assert!(value["truncated_bytes"].as_u64().unwrap() > MAX_LINE_BYTES as u64);
        assert!(value.get("body").is_none());
    }

    #[test]
    fn the_losses_warning_is_rate_limited() {
        let shipper = shipper(1, MAX_BATCH_BYTES);
        shipper.inner.push("{\"n\":0".into());
        shipper.inner.push("{\"n\":1".into());
        shipper.inner.tell_losses();
        let told = shipper.inner.lock_queue().last_told;
        assert!(told.is_some());
        assert_eq!(shipper.inner.lock_queue().untold_overflow, 0);
        shipper.inner.push("{\"n\":2".into());
        shipper.inner.tell_losses();
        let queue = shipper.inner.lock_queue();
        assert_eq!(queue.last_told, told, "not again within the interval");
        assert_eq!(queue.untold_overflow, 1, "kept for the next warning");
    }
}
