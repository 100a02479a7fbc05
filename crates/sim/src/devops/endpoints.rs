//! The hub's HTTP side: the websocket upgrade (authorization, environment, injected refusals)
//! with the loop serving one connection, and the schedule resource a runner reads before a
//! scheduled task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{Command, ConnectQuery, DevopsHub};

/// How long a silenced socket is kept open before the simulator lets it go.
const SILENCE: Duration = Duration::from_secs(600);

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error_code": code, "errors": [message]})),
    )
        .into_response()
}

fn authorized(hub: &DevopsHub, headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(hub.api_key.as_str())
}

pub(super) async fn upgrade(
    State(hub): State<Arc<DevopsHub>>,
    Path((environment_id, instance_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let number = |name: &str| query.get(name).and_then(|v| v.parse().ok());
    let query = ConnectQuery {
        instance_id,
        runner_type: query.get("runner_type").cloned(),
        running_tasks: number("running_tasks"),
        running_scheduled_tasks: number("running_scheduled_tasks"),
    };
    hub.attempted(query.clone());
    if let Some(status) = hub.take_refusal() {
        hub.refused();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        return error(status, "SIM_REFUSED", "upgrade refused by the test");
    }
    if !authorized(&hub, &headers) {
        hub.refused();
        return error(StatusCode::UNAUTHORIZED, "AUTH_001", "API key is not valid");
    }
    if environment_id != hub.environment_id {
        hub.refused();
        return error(StatusCode::NOT_FOUND, "DEVOPS_001", "environment not found");
    }
    upgrade.on_upgrade(move |socket| serve(hub, socket, query))
}

async fn serve(hub: Arc<DevopsHub>, mut socket: WebSocket, query: ConnectQuery) {
    let (connection, mut commands) = hub.register(query);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Send(message)) => {
                    if socket.send(message).await.is_err() {
                        break;
                    }
                }
                Some(Command::Close(code)) => {
                    let frame = CloseFrame { code, reason: "closed by the test".into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    // Let the runner answer the close before the socket goes.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while let Some(Ok(_)) = socket.recv().await {}
                    })
                    .await;
                    break;
                }
                Some(Command::Silence) => {
                    // Neither read (so no pong) nor write: the runner must notice by itself.
                    let _ = tokio::time::timeout(SILENCE, async {
                        while let Some(command) = commands.recv().await {
                            if matches!(command, Command::Drop) {
                                return;
                            }
                        }
                    })
                    .await;
                    break;
                }
                Some(Command::Drop) | None => break,
            },
            frame = socket.recv() => match frame {
                Some(Ok(Message::Text(text))) => hub.on_text(connection, text.as_str()),
                Some(Ok(Message::Binary(_))) => hub.on_binary(connection),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                // Pings are answered by the websocket layer on the next read.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            },
        }
    }
    hub.unregister(connection);
}

pub(super) async fn schedule(
    State(hub): State<Arc<DevopsHub>>,
    Path((service_id, environment_id, schedule_id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&hub, &headers) {
        return error(StatusCode::UNAUTHORIZED, "AUTH_001", "API key is not valid");
    }
    if service_id != hub.service_id || environment_id != hub.environment_id {
        return error(
            StatusCode::NOT_FOUND,
            "DEVOPS_002",
            "extension or environment not found",
        );
    }
    match hub.schedule(&schedule_id) {
        Some(schedule) => Json(schedule).into_response(),
        None => error(StatusCode::NOT_FOUND, "DEVOPS_003", "schedule not found"),
    }
}
