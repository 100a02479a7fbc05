//! One handshaken connection in steady state:
//! reads server messages, sends queued results, keeps the connection alive with pings and
//! declares it dead when a ping goes unanswered, and closes it cleanly once a stopping runner
//! has nothing left to deliver on it.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::time::{interval_at, sleep_until, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{debug, info, warn};

use super::channel::Channel;
use super::connection::{close, Socket};
use super::executor;
use super::protocol::{RunnerMessage, ServerMessage};
use super::shared::Shared;

/// Payload of keepalive pings.
const KEEPALIVE_PING: &[u8] = b"keepalive";

pub(crate) enum SessionEnd {
    /// The runner is stopping and this connection delivered everything it could.
    Finished,
    /// The connection broke; reconnect.
    Lost(String),
}

/// Why the read side ended the session, and the close code to offer the server.
struct Broken {
    reason: String,
    close: Option<CloseCode>,
}

pub(crate) async fn serve(
    shared: &Arc<Shared>,
    channel: &Arc<Channel>,
    mut socket: Socket,
    backlog: Vec<ServerMessage>,
) -> SessionEnd {
    for message in backlog {
        handle(shared, channel, message).await;
    }
    let options = &shared.options;
    let mut counts = channel.running.subscribe();
    let mut keepalive = interval_at(
        Instant::now() + options.ping_interval,
        options.ping_interval,
    );
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pong_deadline: Option<Instant> = None;
    let mut shutdown_sent = false;
    loop {
        if shared.stop.abandon.is_cancelled() {
            close(&mut socket, CloseCode::Normal, options.close_timeout).await;
            return SessionEnd::Finished;
        }
        let draining = shared.stop.draining.is_cancelled();
        if draining && shared.stop.local.is_cancelled() && !shutdown_sent {
            // Announced once per connection; a socket that cannot take it cannot take results
            // either, so a failure means reconnecting, not giving up on them.
            shutdown_sent = true;
            if let Err(reason) = send(
                &mut socket,
                RunnerMessage::Shutdown.encode(),
                options.ping_timeout,
            )
            .await
            {
                return SessionEnd::Lost(reason);
            }
            info!("told the platform this instance is stopping");
        }
        if let Err(reason) = flush(shared, channel, &mut socket).await {
            return SessionEnd::Lost(reason);
        }
        if draining && channel.is_idle() {
            close(&mut socket, CloseCode::Normal, options.close_timeout).await;
            return SessionEnd::Finished;
        }
        let watchdog = pong_deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = shared.stop.abandon.cancelled() => {}
            _ = shared.stop.draining.cancelled(), if !draining => {}
            _ = channel.outbox.pushed() => {}
            _ = counts.changed() => {}
            _ = keepalive.tick() => {
                if pong_deadline.is_none() {
                    if let Err(reason) = send_frame(&mut socket, Message::Ping(KEEPALIVE_PING.into()), options.ping_timeout).await {
                        return SessionEnd::Lost(reason);
                    }
                    pong_deadline = Some(Instant::now() + options.ping_timeout);
                }
            }
            _ = sleep_until(watchdog), if pong_deadline.is_some() => {
                close(&mut socket, CloseCode::Error, options.close_timeout).await;
                return SessionEnd::Lost(format!(
                    "no pong within {} s: connection considered dead",
                    options.ping_timeout.as_secs_f64()
                ));
            }
            frame = socket.next() => match read(shared, channel, frame).await {
                Ok(Read::Pong) => pong_deadline = None,
                Ok(Read::Handled) => {}
                Err(broken) => {
                    if let Some(code) = broken.close {
                        close(&mut socket, code, options.close_timeout).await;
                    }
                    return SessionEnd::Lost(broken.reason);
                }
            },
        }
    }
}

enum Read {
    Pong,
    Handled,
}

async fn read(
    shared: &Arc<Shared>,
    channel: &Arc<Channel>,
    frame: Option<Result<Message, WsError>>,
) -> Result<Read, Broken> {
    let frame = match frame {
        None => {
            return Err(Broken {
                reason: "connection closed".into(),
                close: None,
            })
        }
        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
            // Refused unread, like the official runner (close 1009).
            return Err(Broken {
                reason: format!(
                    "inbound message of {size} bytes exceeds the {max_size}-byte limit"
                ),
                close: Some(CloseCode::Size),
            });
        }
        Some(Err(error)) => {
            return Err(Broken {
                reason: error.to_string(),
                close: None,
            })
        }
        Some(Ok(frame)) => frame,
    };
    match frame {
        Message::Text(text) => match ServerMessage::decode(text.as_str()) {
            Ok(message) => handle(shared, channel, message).await,
            Err(problem) => warn!(
                problem = %crate::logging::clip(&problem),
                bytes = text.len(),
                "malformed message ignored"
            ),
        },
        Message::Binary(bytes) => {
            warn!(
                bytes = bytes.len(),
                "binary frame ignored (the protocol uses text frames)"
            )
        }
        Message::Pong(_) => return Ok(Read::Pong),
        // Pings are answered by the websocket layer.
        Message::Ping(_) | Message::Frame(_) => {}
        Message::Close(frame) => {
            let (code, reason) = frame.map_or((None, String::new()), |f| {
                (Some(u16::from(f.code)), f.reason.as_str().to_string())
            });
            return Err(Broken {
                reason: format!(
                    "server closed the connection (code {}{})",
                    code.map_or("none".into(), |c| c.to_string()),
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(", {reason}")
                    }
                ),
                close: None,
            });
        }
    }
    Ok(Read::Handled)
}

async fn handle(shared: &Arc<Shared>, channel: &Arc<Channel>, message: ServerMessage) {
    match message {
        ServerMessage::Task(task) => executor::dispatch(shared, channel, task),
        ServerMessage::SetupResponse(setup) => {
            debug!("configuration update received");
            shared.platform.apply(setup).await;
        }
        ServerMessage::Shutdown => {
            info!("the platform asked this instance to shut down");
            shared.stop.platform_request();
        }
        ServerMessage::Ignored {
            message_type,
            version,
        } => {
            debug!(
                message_type = %crate::logging::clip(&message_type),
                version,
                "message type not handled on the events channel; ignored"
            )
        }
    }
}

/// Sends every queued result, oldest first; each leaves the queue only once written.
async fn flush(shared: &Shared, channel: &Channel, socket: &mut Socket) -> Result<(), String> {
    while let Some(result) = channel.outbox.front() {
        let task_id = result.options.task_id.clone();
        send(
            socket,
            RunnerMessage::Task(result).encode(),
            shared.options.ping_timeout,
        )
        .await?;
        channel.outbox.sent();
        shared.answered(&task_id);
        debug!(%task_id, queued = channel.outbox.len(), "result sent");
    }
    Ok(())
}

async fn send(socket: &mut Socket, text: String, limit: Duration) -> Result<(), String> {
    send_frame(socket, Message::text(text), limit).await
}

/// A write that cannot complete within `limit` means the peer stopped reading: dead.
async fn send_frame(socket: &mut Socket, frame: Message, limit: Duration) -> Result<(), String> {
    match tokio::time::timeout(limit, socket.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("sending failed: {error}")),
        Err(_) => Err("sending timed out".into()),
    }
}
