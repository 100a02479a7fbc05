//! The platform's log service (Logz.io behind the Connect portal's logs view), as a runner
//! meets it: a listener taking `POST /?token=<key>&type=<type>` with newline-delimited JSON,
//! which it records; and what the setup response says about logging (the shipping key, the two
//! levels), set per test.
//!
//! The listener accepts only keys the hub has handed out in a setup response (anything else is
//! a 401, as the real service answers an unknown token), and a test can make it hang or refuse
//! every request, to play a slow or revoked service. Routes, under the loopback-only `/_sim/`:
//! `POST /_sim/logs/` (the listener; `LOG_SHIPPING_URL` is `http://<sim>/_sim/logs`),
//! `GET /_sim/logs` (what it received), `PUT /_sim/logs/mode`, `PUT /_sim/logging` (the setup
//! response's logging object, pushed to connected runners at once).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::DevopsHub;

/// What the setup response's `logging` object carries (its `meta` is the hub's own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SetupLogging {
    /// `logging_api_key`: the token a runner ships with; `None` tells it not to ship.
    pub logging_api_key: Option<String>,
    pub log_level: Option<String>,
    pub runner_log_level: Option<String>,
}

impl Default for SetupLogging {
    /// As the platform answers an environment whose logging nobody changed: no key, INFO.
    fn default() -> Self {
        SetupLogging {
            logging_api_key: None,
            log_level: Some("INFO".into()),
            runner_log_level: Some("INFO".into()),
        }
    }
}

/// How the listener answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListenerMode {
    /// Records the batch and answers 200 (a known token) or 401 (an unknown one).
    #[default]
    Accept,
    /// Never answers while the mode lasts; afterwards answers as the new mode says.
    Hang,
    /// Answers this status to every request, recording nothing.
    Refuse(u16),
}

/// One request the listener recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShippedBatch {
    pub token: String,
    /// The `type` query parameter.
    pub log_type: Option<String>,
    pub content_type: Option<String>,
    /// Each non-empty line of the body, parsed.
    pub lines: Vec<Value>,
    /// Lines that were not a JSON object (none, from a well-behaved runner).
    pub bad_lines: Vec<String>,
}

#[derive(Default)]
struct Listener {
    mode: ListenerMode,
    /// Every key a setup response has carried.
    known_tokens: BTreeSet<String>,
    batches: Vec<ShippedBatch>,
    /// Requests received, hung, refused and unauthorised ones included.
    requests: usize,
    /// Requests answered 401 or 400 (by the mode or for an unknown token).
    refused: usize,
}

/// The listener's state; the hub owns one.
pub struct LogListener {
    listener: Mutex<Listener>,
    /// Bumped on every change, for waiters and hung requests.
    version: watch::Sender<u64>,
}

impl Default for LogListener {
    fn default() -> Self {
        LogListener {
            listener: Mutex::new(Listener::default()),
            version: watch::Sender::new(0),
        }
    }
}

impl LogListener {
    pub fn set_mode(&self, mode: ListenerMode) {
        self.lock().mode = mode;
        self.changed();
    }

    pub fn mode(&self) -> ListenerMode {
        self.lock().mode
    }

    pub fn batches(&self) -> Vec<ShippedBatch> {
        self.lock().batches.clone()
    }

    /// Every line received, in order.
    pub fn lines(&self) -> Vec<Value> {
        self.lock()
            .batches
            .iter()
            .flat_map(|batch| batch.lines.iter().cloned())
            .collect()
    }

    /// Requests received so far (recorded, hung, refused).
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// Requests answered 400 or 401.
    pub fn refused(&self) -> usize {
        self.lock().refused
    }

    /// Waits until `condition` holds on the recorded batches; false on time-out.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        condition: impl Fn(&[ShippedBatch]) -> bool,
    ) -> bool {
        let mut changes = self.version.subscribe();
        let wait = async {
            loop {
                if condition(&self.lock().batches) {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    pub(super) fn know_token(&self, token: &str) {
        self.lock().known_tokens.insert(token.to_string());
    }

    /// Serves one `POST`: waits out a hang, then answers as the mode and the token say.
    async fn receive(
        &self,
        token: Option<String>,
        log_type: Option<String>,
        content_type: Option<String>,
        body: &[u8],
    ) -> StatusCode {
        let mut changes = self.version.subscribe();
        self.lock().requests += 1;
        self.changed();
        while self.mode() == ListenerMode::Hang {
            if changes.changed().await.is_err() {
                return StatusCode::SERVICE_UNAVAILABLE;
            }
        }
        let mut listener = self.lock();
        let status = match (listener.mode, token) {
            (ListenerMode::Refuse(status), _) => {
                StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED)
            }
            (_, Some(token)) if listener.known_tokens.contains(&token) => {
                let text = String::from_utf8_lossy(body);
                let (mut lines, mut bad_lines) = (Vec::new(), Vec::new());
                for line in text.lines().filter(|line| !line.trim().is_empty()) {
                    match serde_json::from_str::<Value>(line) {
                        Ok(value @ Value::Object(_)) => lines.push(value),
                        _ => bad_lines.push(line.to_string()),
                    }
                }
                listener.batches.push(ShippedBatch {
                    token,
                    log_type,
                    content_type,
                    lines,
                    bad_lines,
                });
                StatusCode::OK
            }
            _ => StatusCode::UNAUTHORIZED,
        };
        if matches!(status.as_u16(), 400 | 401) {
            listener.refused += 1;
        }
        drop(listener);
        self.changed();
        status
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Listener> {
        self.listener.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }
}

pub(super) fn router(hub: Arc<DevopsHub>) -> Router {
    let routes = Router::new()
        .route("/logs/", post(listen))
        .route("/logs", axum::routing::get(received))
        .route("/logs/mode", put(set_mode))
        .route("/logging", put(set_logging))
        .layer(axum::middleware::from_fn(crate::control::loopback_only));
    Router::new().nest("/_sim", routes).with_state(hub)
}

async fn listen(
    State(hub): State<Arc<DevopsHub>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> StatusCode {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    hub.logs()
        .receive(
            query.get("token").cloned(),
            query.get("type").cloned(),
            content_type,
            &body,
        )
        .await
}

async fn received(State(hub): State<Arc<DevopsHub>>) -> Json<Value> {
    let listener = hub.logs();
    Json(json!({
        "requests": listener.requests(),
        "refused": listener.refused(),
        "batches": listener.batches(),
    }))
}

#[derive(Deserialize)]
struct ModeBody {
    /// `accept`, `hang` or `refuse`.
    mode: String,
    /// With `refuse`: the status answered (default 401).
    status: Option<u16>,
}

async fn set_mode(State(hub): State<Arc<DevopsHub>>, body: bytes::Bytes) -> Response {
    let Ok(ModeBody { mode, status }) = serde_json::from_slice(&body) else {
        return bad_request("body: expected {\"mode\": \"accept\" | \"hang\" | \"refuse\"}");
    };
    let mode = match mode.as_str() {
        "accept" => ListenerMode::Accept,
        "hang" => ListenerMode::Hang,
        "refuse" => ListenerMode::Refuse(status.unwrap_or(401)),
        _ => return bad_request("mode: expected accept, hang or refuse"),
    };
    hub.logs().set_mode(mode);
    StatusCode::NO_CONTENT.into_response()
}

/// Sets the setup response's logging object and sends a fresh setup response to every
/// connected runner, as the portal does when someone changes the settings.
async fn set_logging(State(hub): State<Arc<DevopsHub>>, body: bytes::Bytes) -> Response {
    let Ok(logging) = serde_json::from_slice::<SetupLogging>(&body) else {
        return bad_request(
            "body: expected {\"logging_api_key\", \"log_level\", \"runner_log_level\"}",
        );
    };
    hub.set_logging(logging);
    hub.push_setup_response();
    StatusCode::NO_CONTENT.into_response()
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error_code": "VAL_001", "errors": [message]})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn known_tokens_are_recorded_and_others_refused() {
        let listener = LogListener::default();
        let body = b"{\"message\": \"a\"}\n\nnot json\n{\"message\": \"b\"}\n";
        let unknown = listener
            .receive(Some("nobody".into()), None, None, body)
            .await;
        assert_eq!(unknown, StatusCode::UNAUTHORIZED);
        listener.know_token("t0k3n");
        let known = listener
            .receive(
                Some("t0k3n".into()),
                Some("python".into()),
                Some("text/plain".into()),
                body,
            )
            .await;
        assert_eq!(known, StatusCode::OK);
        let batches = listener.batches();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].lines.len(), 2);
        assert_eq!(batches[0].bad_lines, vec!["not json".to_string()]);
        assert_eq!(batches[0].log_type.as_deref(), Some("python"));
        listener.set_mode(ListenerMode::Refuse(400));
        let refused = listener
            .receive(Some("t0k3n".into()), None, None, body)
            .await;
        assert_eq!(refused, StatusCode::BAD_REQUEST);
        assert_eq!((listener.requests(), listener.refused()), (3, 2));
        assert_eq!(listener.lines().len(), 2, "nothing recorded when refusing");
    }

    #[tokio::test]
    async fn a_hung_request_answers_once_the_hang_ends() {
        let listener = Arc::new(LogListener::default());
        listener.know_token("t");
        listener.set_mode(ListenerMode::Hang);
        let pending = tokio::spawn({
            let listener = Arc::clone(&listener);
            async move {
                listener
                    .receive(Some("t".into()), None, None, b"{\"message\": \"late\"}")
                    .await
            }
        });
        while listener.requests() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!pending.is_finished());
        listener.set_mode(ListenerMode::Accept);
        assert_eq!(pending.await.unwrap(), StatusCode::OK);
        assert_eq!(listener.lines().len(), 1);
    }
}
