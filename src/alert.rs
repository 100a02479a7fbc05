//! Operator alerts: things a person must look at (bad records, an invalid or rejected file, a
//! group that could not be filed, records that arrived or changed after their file was
//! submitted).
//!
//! Every alert is a structured log line at WARN or ERROR. When `ALERT_WEBHOOK_URL` is set it is
//! also POSTed there as JSON: a Slack-compatible `text` plus the structured fields. Delivery is
//! retried briefly and bounded in time, so an unreachable webhook delays a task by seconds at
//! most and never fails it. The webhook URL itself is treated as a secret (chat webhooks carry
//! their token in the path) and never logged.
//!
//! An alert is for a person to read, not a copy of the input: its `message` and `details` are
//! cut at [`FIELD_LIMIT`] characters, ending in `… (N characters)` with the original length,
//! so a source row of a megabyte cannot flood a chat channel or the log.

use std::time::Duration;

use serde::Serialize;

/// Characters kept of an alert's `message` and of its `details`.
pub const FIELD_LIMIT: usize = 4000;

/// `text` cut to `limit` characters, ending in `… (N characters)` (N the original length)
/// when it was longer.
pub fn truncated(text: &str, limit: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(limit) {
        None => std::borrow::Cow::Borrowed(text),
        Some((cut, _)) => std::borrow::Cow::Owned(format!(
            "{}… ({} characters)",
            &text[..cut],
            text.chars().count()
        )),
    }
}

/// An alert's `details` listing the first `limit` of `total` items, one line each cut at
/// `each` characters, then `… and N more`: a person sees the first ones, the rest are counted.
pub fn listed(
    lines: impl IntoIterator<Item = String>,
    total: usize,
    limit: usize,
    each: usize,
) -> String {
    let mut details: Vec<String> = lines
        .into_iter()
        .take(limit)
        .map(|line| truncated(&line, each).into_owned())
        .collect();
    if total > limit {
        details.push(format!("… and {} more", total - limit));
    }
    details.join("\n")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    BadRecords,
    InvalidFile,
    RejectedFile,
    ResubmissionLimit,
    FilingFailed,
    /// The source had no records at all for the month: almost always a broken export.
    EmptySource,
    /// Records arrived for a period after its group's usage file was submitted, and were not
    /// filed (`LATE_RECORDS = alert`).
    LateRecords,
    /// Records filed in a submitted usage file have other values in the source now, or left
    /// it: never filed again automatically.
    ChangedAfterFiling,
    /// Days of a month were filed daily, so the month was not filed monthly for the group
    /// (it would report those days twice): a person finishes the month.
    CadenceOverlap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub kind: AlertKind,
    pub severity: Severity,
    pub file_id: Option<String>,
    pub contract: Option<String>,
    pub product: Option<String>,
    pub period: Option<String>,
    pub message: String,
    pub details: Option<String>,
}

impl Alert {
    pub fn new(kind: AlertKind, severity: Severity, message: impl Into<String>) -> Self {
        Alert {
            kind,
            severity,
            file_id: None,
            contract: None,
            product: None,
            period: None,
            message: message.into(),
            details: None,
        }
    }

    pub fn file(mut self, file_id: impl Into<String>) -> Self {
        self.file_id = Some(file_id.into());
        self
    }

    pub fn group(
        mut self,
        contract: impl Into<String>,
        product: impl Into<String>,
        period: impl Into<String>,
    ) -> Self {
        self.contract = Some(contract.into());
        self.product = Some(product.into());
        self.period = Some(period.into());
        self
    }

    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    /// One human line for chat: what happened and to which file.
    fn text(&self) -> String {
        let mut text = format!("[connect-payg {:?}] {}", self.severity, self.message);
        let context: Vec<String> = [
            self.file_id.as_ref().map(|v| format!("file {v}")),
            self.contract.as_ref().map(|v| format!("contract {v}")),
            self.product.as_ref().map(|v| format!("product {v}")),
            self.period.as_ref().map(|v| format!("period {v}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !context.is_empty() {
            text.push_str(&format!(" ({})", context.join(", ")));
        }
        if let Some(details) = &self.details {
            text.push_str(&format!(": {details}"));
        }
        text
    }
}

#[derive(Serialize)]
struct WebhookBody<'a> {
    text: String,
    #[serde(flatten)]
    alert: &'a Alert,
}

/// Sends alerts to the log and, when configured, to a webhook.
#[derive(Clone)]
pub struct Alerter {
    webhook: Option<(reqwest::Client, String)>,
    attempts: u32,
    retry_delay: Duration,
    metrics: crate::metrics::Metrics,
}

impl std::fmt::Debug for Alerter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerter")
            .field("webhook", &self.webhook.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Alerter {
    pub fn new(webhook_url: Option<&str>) -> Self {
        let webhook = webhook_url.map(|url| {
            // The URL is a secret (chat webhooks carry their token in the path): a redirect
            // would hand it to another host in `Referer`, so none is followed or sent.
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .referer(false)
                .build()
                .expect("a plain HTTP client always builds");
            (client, url.to_string())
        });
        Alerter {
            webhook,
            attempts: 3,
            retry_delay: Duration::from_millis(500),
            metrics: crate::metrics::Metrics::off(),
        }
    }

    /// The same alerter, counting the alerts it sends and fails to deliver.
    pub fn with_metrics(self, metrics: crate::metrics::Metrics) -> Self {
        Alerter { metrics, ..self }
    }

    /// Logs the alert and delivers it to the webhook; never fails.
    pub async fn send(&self, mut alert: Alert) {
        alert.message = truncated(&alert.message, FIELD_LIMIT).into_owned();
        alert.details = alert
            .details
            .map(|details| truncated(&details, FIELD_LIMIT).into_owned());
        let text = alert.text();
        // tracing needs the level at compile time: one arm per severity, same fields.
        macro_rules! log_alert {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    alert = ?alert.kind,
                    file_id = alert.file_id.as_deref(),
                    contract = alert.contract.as_deref(),
                    product = alert.product.as_deref(),
                    period = alert.period.as_deref(),
                    details = alert.details.as_deref(),
                    "{}",
                    alert.message
                )
            };
        }
        match alert.severity {
            Severity::Warning => log_alert!(tracing::Level::WARN),
            Severity::Error => log_alert!(tracing::Level::ERROR),
        }
        let kind = serde_json::to_value(alert.kind).ok();
        let kind = kind.as_ref().and_then(|k| k.as_str()).unwrap_or("unknown");
        let Some((client, url)) = &self.webhook else {
            self.metrics.alert(kind, true);
            return;
        };
        let body = WebhookBody {
            text,
            alert: &alert,
        };
        for attempt in 1..=self.attempts {
            let outcome = client.post(url).json(&body).send().await;
            match outcome {
                Ok(response) if response.status().is_success() => {
                    self.metrics.alert(kind, true);
                    return;
                }
                Ok(response) => tracing::warn!(
                    status = response.status().as_u16(),
                    attempt,
                    "alert webhook refused the alert"
                ),
                Err(error) => tracing::warn!(
                    error = %error.without_url(),
                    attempt,
                    "alert webhook unreachable"
                ),
            }
            if attempt < self.attempts {
                tokio::time::sleep(self.retry_delay * attempt).await;
            }
        }
        self.metrics.alert(kind, false);
        tracing::error!(alert = ?alert.kind, "alert could not be delivered to the webhook; it is in this log only");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_carries_message_and_context() {
        let alert = Alert::new(
            AlertKind::InvalidFile,
            Severity::Error,
            "usage file is invalid",
        )
        .file("UF-1")
        .group("CRD-1", "PRD-1", "2024-01")
        .details("row 3: quantity");
        assert_eq!(
            alert.text(),
            "[connect-payg Error] usage file is invalid (file UF-1, contract CRD-1, product PRD-1, period 2024-01): row 3: quantity"
        );
        let body = serde_json::to_value(WebhookBody {
            text: alert.text(),
            alert: &alert,
        })
        .unwrap();
        assert_eq!(body["kind"], "invalid_file");
        assert_eq!(body["severity"], "error");
        assert_eq!(body["file_id"], "UF-1");
        assert_eq!(body["details"], "row 3: quantity");
    }

    #[test]
    fn long_text_is_cut_with_its_length() {
        assert_eq!(truncated("short", 10), "short");
        assert_eq!(truncated("exactly10!", 10), "exactly10!");
        assert_eq!(truncated("abcdefghijk", 10), "abcdefghij… (11 characters)");
        // Cut at a character, not a byte.
        assert_eq!(truncated("ééé", 2), "éé… (3 characters)");
    }

    /// A bad record's 900 KB detail reaches the webhook cut to a few KB, saying how long it was.
    #[tokio::test]
    async fn alert_fields_reach_the_webhook_bounded() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (sender, mut received) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let sender = sender.clone();
                async move {
                    let _ = sender.send(body);
                    "ok"
                }
            }),
        );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let huge = "x".repeat(912_345);
        Alerter::new(Some(&url))
            .send(Alert::new(AlertKind::BadRecords, Severity::Warning, huge.clone()).details(huge))
            .await;
        // Uncut, the body (2.7 MB) is refused by the webhook and never arrives.
        let body = tokio::time::timeout(Duration::from_secs(20), received.recv())
            .await
            .expect("the webhook received the alert")
            .unwrap();
        server.abort();
        let suffix = "… (912345 characters)";
        for field in ["message", "details"] {
            let text = body[field].as_str().unwrap();
            assert!(text.ends_with(suffix), "{field}");
            assert_eq!(text.chars().count(), FIELD_LIMIT + suffix.chars().count());
        }
        assert!(body["text"].as_str().unwrap().len() < 3 * FIELD_LIMIT);
    }

    #[tokio::test]
    async fn an_unreachable_webhook_does_not_fail() {
        let mut alerter = Alerter::new(Some("http://127.0.0.1:9/hook"));
        alerter.retry_delay = Duration::from_millis(1);
        alerter
            .send(Alert::new(AlertKind::FilingFailed, Severity::Warning, "x"))
            .await;
        assert!(format!("{alerter:?}").contains("***"));
    }
}
