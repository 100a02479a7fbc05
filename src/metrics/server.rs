//! The HTTP endpoint at `METRICS_ADDRESS`: `GET /healthz` (200 or 503 with a short JSON body,
//! see `health.rs`) and `GET /metrics` (the Prometheus text format, or OpenMetrics when the
//! scraper's `Accept` asks for it). It serves nothing else, reads no request body and holds no
//! secret, so it can listen on `0.0.0.0` in a container.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{Health, Metrics};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Where the endpoint listens once it does (with port 0 in `METRICS_ADDRESS`, the port the
/// system picked). Clones share the slot: a caller keeps one and passes one to the runner.
#[derive(Debug, Clone, Default)]
pub struct Listening(Arc<OnceLock<SocketAddr>>);

impl Listening {
    pub fn address(&self) -> Option<SocketAddr> {
        self.0.get().copied()
    }
}

/// The endpoint could not start; named by its setting.
#[derive(Debug, thiserror::Error)]
#[error("METRICS_ADDRESS {address}: cannot listen: {source}")]
pub struct ServeError {
    address: SocketAddr,
    source: std::io::Error,
}

/// The running endpoint; stopped when dropped.
pub(crate) struct Server {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Served {
    metrics: Metrics,
    health: Health,
    grace: Duration,
}

/// Listens at `address` and serves until the returned [`Server`] is dropped.
pub(crate) async fn serve(
    address: SocketAddr,
    metrics: Metrics,
    health: Health,
    grace: Duration,
    listening: &Listening,
) -> Result<Server, ServeError> {
    let failed = |source| ServeError { address, source };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    let _ = listening.0.set(bound);
    let app = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(Served {
            metrics,
            health,
            grace,
        });
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the health and metrics endpoint stopped");
        }
    });
    tracing::info!(address = %bound, "health and metrics served at /healthz and /metrics");
    Ok(Server { task })
}

async fn healthz(State(served): State<Served>) -> Response {
    let verdict = served.health.verdict(served.grace);
    let status = if verdict.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(verdict),
    )
        .into_response()
}

async fn metrics_text(State(served): State<Served>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    match served.metrics.encode(openmetrics) {
        Some(text) => {
            let content_type = if openmetrics {
                OPENMETRICS
            } else {
                PROMETHEUS_TEXT
            };
            ([(header::CONTENT_TYPE, content_type)], text).into_response()
        }
        None => (StatusCode::NOT_FOUND, "metrics are off\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET http://{address}{path}`: status and body, or `None` without an answer.
    async fn get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let response = client
            .get(format!("http://{address}{path}"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        Some((response.status().as_u16(), response.text().await.ok()?))
    }

    #[tokio::test]
    async fn serves_health_and_both_text_formats() {
        let metrics = Metrics::new();
        let health = Health::new();
        let listening = Listening::default();
        let server = serve(
            "127.0.0.1:0".parse().unwrap(),
            metrics.clone(),
            health.clone(),
            Duration::from_secs(60),
            &listening,
        )
        .await
        .unwrap();
        let address = listening.address().unwrap();
        assert_ne!(address.port(), 0);
        let (status, body) = get(address, "/healthz").await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("not connected yet"), "{body}");
        health.connected("background");
        let (status, body) = get(address, "/healthz").await.unwrap();
        assert_eq!(status, 200, "{body}");
        metrics.log_lines(1, 0);
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("http://{address}/metrics");
        let text = client.get(&url).send().await.unwrap();
        assert_eq!(text.headers()[header::CONTENT_TYPE], PROMETHEUS_TEXT);
        assert!(text
            .text()
            .await
            .unwrap()
            .contains("connect_payg_log_lines_shipped_total 1\n"));
        let open = client
            .get(&url)
            .header(
                header::ACCEPT,
                "application/openmetrics-text; version=1.0.0",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(open.headers()[header::CONTENT_TYPE], OPENMETRICS);
        assert!(open.text().await.unwrap().ends_with("# EOF\n"));
        let missing = client
            .get(format!("http://{address}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
        drop(server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(get(address, "/healthz").await.is_none());
    }
}
