//! Keeps one connection up for the life of the runner: reconnects after a
//! lost connection (after a pause) or a failed attempt (with backoff), logs each change of
//! state once rather than once per attempt, and ends when the runner stops and this connection
//! has nothing left to deliver.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, info_span, warn, Instrument};

use super::backoff::{Backoff, FailureClass};
use super::channel::Channel;
use super::connection::{self, Failure};
use super::refusals::RefusalStep;
use super::session::{self, SessionEnd};
use super::shared::Shared;

pub(crate) async fn supervise(shared: Arc<Shared>, channel: Arc<Channel>) {
    let span = info_span!("connection", runner_type = %channel.runner_type);
    async {
        let options = &shared.options;
        let mut backoff = Backoff::new(
            options.backoff_base,
            options.backoff_max,
            options.reconnect_delay,
        );
        let mut failed_attempts = 0u32;
        let mut last_problem: Option<String> = None;
        let mut first = true;
        while !finished(&shared, &channel) {
            if !std::mem::take(&mut first) {
                shared.metrics.websocket_reconnect(channel.runner_type.as_str());
            }
            let attempt = tokio::select! {
                attempt = connection::open(&shared, &channel) => attempt,
                _ = shared.stop.abandon.cancelled() => break,
            };
            match attempt {
                Ok(opened) => {
                    refusals(&shared).reset();
                    shared.platform.apply(opened.setup).await;
                    shared.metrics.websocket_handshake(channel.runner_type.as_str());
                    shared.health.connected(channel.runner_type.as_str());
                    backoff.reset();
                    info!(
                        failed_attempts,
                        queued_results = channel.outbox.len(),
                        "connected"
                    );
                    failed_attempts = 0;
                    last_problem = None;
                    match session::serve(&shared, &channel, opened.socket, opened.backlog).await {
                        SessionEnd::Finished => break,
                        SessionEnd::Lost(reason) => {
                            shared.health.lost(channel.runner_type.as_str(), &reason);
                            warn!(%reason, reconnect_in = ?options.reconnect_delay, "connection lost");
                            pause(&shared, &channel, options.reconnect_delay).await;
                        }
                    }
                }
                Err(failure) => {
                    failed_attempts += 1;
                    shared.health.failed(channel.runner_type.as_str(), &failure.reason, failure.refused_status);
                    let delay = backoff.next_delay(failure.class);
                    if failure.class == FailureClass::Refused {
                        if refused(&shared, &failure, failed_attempts, delay) {
                            break;
                        }
                    } else if last_problem.as_deref() == Some(failure.reason.as_str()) {
                        debug!(reason = %failure.reason, failed_attempts, retry_in = ?delay, "still cannot connect");
                    } else {
                        warn!(reason = %failure.reason, class = ?failure.class, failed_attempts, retry_in = ?delay, "cannot connect");
                        last_problem = Some(failure.reason);
                    }
                    if failure.class != FailureClass::Refused {
                        refusals(&shared).reset();
                    }
                    pause(&shared, &channel, delay).await;
                }
            }
        }
        info!("connection closed for good");
    }
    .instrument(span)
    .await
}

fn refusals(shared: &Shared) -> std::sync::MutexGuard<'_, super::refusals::Refusals> {
    shared
        .refusals
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Logs a refused handshake as the shared streak decides; true when the runner gives up.
fn refused(shared: &Shared, failure: &Failure, failed_attempts: u32, delay: Duration) -> bool {
    let exit_after = shared
        .platform
        .snapshot()
        .settings
        .runner
        .auth_failure_exit_after;
    let step = refusals(shared).refused(
        Instant::now(),
        shared.options.refused_log_interval,
        exit_after,
    );
    match step {
        RefusalStep::Log { refused, lasting } => error!(
            reason = %failure.reason,
            refused,
            refusing_for = ?lasting,
            exit_after_s = exit_after.as_secs(),
            retry_in = ?delay,
            "the platform refuses the API key; the runner exits if this lasts AUTH_FAILURE_EXIT_AFTER"
        ),
        RefusalStep::Quiet => {
            debug!(reason = %failure.reason, failed_attempts, retry_in = ?delay, "still refused")
        }
        RefusalStep::GiveUp { refused, lasting } => {
            error!(
                reason = %failure.reason,
                refused,
                refusing_for = ?lasting,
                "the platform refused the API key for AUTH_FAILURE_EXIT_AFTER; stopping"
            );
            shared.stop.give_up();
            return true;
        }
    }
    false
}

/// Stopped for good: abandoned, or stopping with nothing left to deliver on this connection.
fn finished(shared: &Shared, channel: &Channel) -> bool {
    shared.stop.abandon.is_cancelled() || (shared.stop.draining.is_cancelled() && channel.is_idle())
}

/// Waits `delay`, or less when there is no point in reconnecting any more.
async fn pause(shared: &Shared, channel: &Channel, delay: Duration) {
    let mut counts = channel.running.subscribe();
    let until_finished = async {
        while !finished(shared, channel) {
            tokio::select! {
                _ = shared.stop.draining.cancelled() , if !shared.stop.draining.is_cancelled() => {}
                _ = shared.stop.abandon.cancelled() => {}
                _ = counts.changed() => {}
            }
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = until_finished => {}
    }
}
