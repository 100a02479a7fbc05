//! The alert webhook's URL is a secret (chat webhooks carry their token in the path): a
//! webhook that answers with a redirect must not lead the alert, or the URL in `Referer`, to
//! another host.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use connect_payg::alert::{Alert, AlertKind, Alerter, Severity};

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

#[tokio::test]
async fn a_redirecting_webhook_is_not_followed() {
    let stolen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let thief = {
        let stolen = stolen.clone();
        serve(axum::Router::new().route(
            "/stolen",
            post(move |headers: HeaderMap| async move {
                stolen.lock().unwrap().push(headers);
                StatusCode::OK
            }),
        ))
        .await
    };
    let target = format!("{thief}/stolen");
    let webhook = serve(axum::Router::new().route(
        "/hooks/T0-secret-token",
        post(move || async move {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [("location", target.clone())],
            )
                .into_response()
        }),
    ))
    .await;
    let alerter = Alerter::new(Some(&format!("{webhook}/hooks/T0-secret-token")));
    alerter
        .send(Alert::new(AlertKind::FilingFailed, Severity::Error, "test"))
        .await;
    assert!(
        stolen.lock().unwrap().is_empty(),
        "the redirect was followed: {:?}",
        stolen.lock().unwrap()
    );
}
