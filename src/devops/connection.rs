//! Opening one connection, up to a finished handshake: the URL with this instance's
//! running counts, the upgrade with the `Authorization` header, the liveness ping, and the
//! `setup_request` / `setup_response` handshake, each step bounded in time.
//!
//! Any failure is a failed attempt, classified for the backoff (HTTP 502 = maintenance); the
//! socket is dropped, never left half-open.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, warn};

use super::backoff::FailureClass;
use super::channel::Channel;
use super::protocol::{RunnerMessage, ServerMessage, SetupResponse};
use super::proxy;
use super::shared::Shared;

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Payload of the liveness ping sent right after the upgrade.
const LIVENESS_PING: &[u8] = b"connect-payg";

#[derive(Debug)]
pub(crate) struct Failure {
    pub class: FailureClass,
    pub reason: String,
    /// The HTTP status the upgrade was refused with (401/403), for the health check.
    pub refused_status: Option<u16>,
}

impl Failure {
    fn communication(reason: impl Into<String>) -> Self {
        Failure {
            class: FailureClass::Communication,
            reason: reason.into(),
            refused_status: None,
        }
    }
}

/// A handshaken connection.
pub(crate) struct Opened {
    pub socket: Socket,
    pub setup: SetupResponse,
    /// Messages that arrived before the `setup_response`, to be handled after it.
    pub backlog: Vec<ServerMessage>,
}

pub(crate) fn websocket_config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

/// `{origin}/public/v1/devops/ws/{env}/{instance}?running_tasks=…`, rebuilt per attempt so the
/// platform learns about work that survived a disconnect.
pub(crate) fn url(shared: &Shared, channel: &Channel) -> String {
    let counts = channel.running.counts();
    let segment = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC_BUT_SAFE).to_string();
    format!(
        "{}/public/v1/devops/ws/{}/{}?running_tasks={}&running_scheduled_tasks={}&runner_type={}",
        shared.websocket_origin,
        segment(&shared.environment_id),
        segment(&shared.instance_id),
        counts.background,
        counts.scheduled,
        channel.runner_type,
    )
}

/// Ids keep their dashes and dots; anything else unusual in a path segment is escaped.
const NON_ALPHANUMERIC_BUT_SAFE: &percent_encoding::AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

pub(crate) async fn open(shared: &Shared, channel: &Channel) -> Result<Opened, Failure> {
    let options = &shared.options;
    let url = url(shared, channel);
    debug!(%url, "connecting");
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| Failure::communication(format!("bad websocket URL: {e}")))?;
    let mut authorization = HeaderValue::from_str(shared.api_key.expose())
        .map_err(|_| Failure::communication("API_KEY is not a valid header value"))?;
    authorization.set_sensitive(true);
    request.headers_mut().insert(AUTHORIZATION, authorization);
    let connector = match &shared.tls {
        Some(config) => Connector::Rustls(config.clone()),
        None => Connector::Plain,
    };
    let config = Some(websocket_config(options.max_message_size));
    let host = target(request.uri()).unwrap_or_else(|| shared.websocket_origin.clone());
    let upgrade = async {
        match &shared.proxy {
            None => tokio_tungstenite::connect_async_tls_with_config(
                request,
                config,
                true,
                Some(connector),
            )
            .await
            .map_err(|e| upgrade_failure(e, &host)),
            Some(proxy) => {
                let target = target(request.uri())
                    .ok_or_else(|| Failure::communication("bad websocket URL"))?;
                let stream = proxy::tunnel(proxy, &target)
                    .await
                    .map_err(Failure::communication)?;
                tokio_tungstenite::client_async_tls_with_config(
                    request,
                    stream,
                    config,
                    Some(connector),
                )
                .await
                .map_err(|e| upgrade_failure(e, &host))
            }
        }
    };
    let (mut socket, _response) = tokio::time::timeout(options.connect_timeout, upgrade)
        .await
        .map_err(|_| Failure::communication(format!("connecting to {host} timed out")))??;

    let mut backlog = Vec::new();
    match handshake(shared, &mut socket, &mut backlog).await {
        Ok(setup) => Ok(Opened {
            socket,
            setup,
            backlog,
        }),
        Err(failure) => {
            // Never leave a half-open connection behind (runner 43.0 did).
            close(&mut socket, CloseCode::Normal, options.close_timeout).await;
            Err(failure)
        }
    }
}

async fn handshake(
    shared: &Shared,
    socket: &mut Socket,
    backlog: &mut Vec<ServerMessage>,
) -> Result<SetupResponse, Failure> {
    let limit = shared.options.handshake_timeout;
    liveness(socket, limit, backlog).await?;
    let request = RunnerMessage::SetupRequest(shared.registry.setup_request());
    socket
        .send(Message::text(request.encode()))
        .await
        .map_err(|e| Failure::communication(format!("sending setup_request failed: {e}")))?;
    setup_response(socket, limit, backlog).await
}

/// `host:port` a proxy tunnel must reach for this URI.
fn target(uri: &tokio_tungstenite::tungstenite::http::Uri) -> Option<String> {
    let host = uri.host()?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("wss") {
            443
        } else {
            80
        });
    Some(format!("{host}:{port}"))
}

/// A failed upgrade to `host`, classified; network errors name their cause.
fn upgrade_failure(error: WsError, host: &str) -> Failure {
    match error {
        WsError::Http(response) if response.status().as_u16() == 502 => Failure {
            class: FailureClass::Maintenance,
            reason: "the platform is in maintenance (HTTP 502)".into(),
            refused_status: None,
        },
        WsError::Http(response) if matches!(response.status().as_u16(), 401 | 403) => Failure {
            class: FailureClass::Refused,
            reason: format!(
                "{host} refused the API key (HTTP {}): check API_KEY and ENVIRONMENT_ID",
                response.status()
            ),
            refused_status: Some(response.status().as_u16()),
        },
        WsError::Http(response) => Failure::communication(format!(
            "{host} refused the upgrade with HTTP {}",
            response.status()
        )),
        other => Failure::communication(format!(
            "cannot connect to {host}: {}",
            crate::connect::network_error_text(&other)
        )),
    }
}

/// One ping right after the upgrade; the connection is only used once it is answered.
async fn liveness(
    socket: &mut Socket,
    limit: Duration,
    backlog: &mut Vec<ServerMessage>,
) -> Result<(), Failure> {
    socket
        .send(Message::Ping(LIVENESS_PING.into()))
        .await
        .map_err(|e| Failure::communication(format!("liveness ping failed: {e}")))?;
    let wait = async {
        loop {
            match next_message(socket, backlog).await? {
                Received::Pong => return Ok(()),
                Received::Setup(_) | Received::Other => {}
            }
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .map_err(|_| Failure::communication("no pong to the liveness ping"))?
}

async fn setup_response(
    socket: &mut Socket,
    limit: Duration,
    backlog: &mut Vec<ServerMessage>,
) -> Result<SetupResponse, Failure> {
    let wait = async {
        loop {
            if let Received::Setup(setup) = next_message(socket, backlog).await? {
                return Ok(*setup);
            }
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .map_err(|_| Failure::communication("no setup_response in time"))?
}

enum Received {
    Pong,
    Setup(Box<SetupResponse>),
    /// Anything else; decoded messages went to the backlog.
    Other,
}

async fn next_message(
    socket: &mut Socket,
    backlog: &mut Vec<ServerMessage>,
) -> Result<Received, Failure> {
    let frame = match socket.next().await {
        None => return Err(Failure::communication("closed during the handshake")),
        Some(Err(e)) => return Err(Failure::communication(format!("handshake failed: {e}"))),
        Some(Ok(frame)) => frame,
    };
    Ok(match frame {
        Message::Pong(_) => Received::Pong,
        Message::Text(text) => match ServerMessage::decode(text.as_str()) {
            Ok(ServerMessage::SetupResponse(setup)) => Received::Setup(Box::new(setup)),
            Ok(other) => {
                backlog.push(other);
                Received::Other
            }
            Err(problem) => {
                warn!(problem = %crate::logging::clip(&problem), "malformed message ignored");
                Received::Other
            }
        },
        Message::Close(frame) => {
            return Err(Failure::communication(format!(
                "closed during the handshake ({})",
                frame.map_or("no code".into(), |f| f.code.to_string())
            )))
        }
        Message::Ping(_) | Message::Binary(_) | Message::Frame(_) => Received::Other,
    })
}

/// Offers a close frame and waits briefly for the server's answer.
pub(crate) async fn close(socket: &mut Socket, code: CloseCode, limit: Duration) {
    let frame = CloseFrame {
        code,
        reason: "".into(),
    };
    let _ = tokio::time::timeout(limit, async {
        if socket.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = socket.next().await {}
        }
    })
    .await;
}
