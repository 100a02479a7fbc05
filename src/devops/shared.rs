//! State shared by the runner's connections and tasks: configuration fixed at start, the
//! platform state, the per-category concurrency limits and the stop signals.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::options::RunnerOptions;
use super::platform::Platform;
use super::protocol::TaskCategory;
use super::proxy::Proxy;
use super::refusals::Refusals;
use super::registry::Registry;
use crate::config::Secret;

pub(crate) struct Shared {
    pub options: RunnerOptions,
    pub registry: Registry,
    pub platform: Platform,
    pub environment_id: String,
    pub instance_id: String,
    pub api_key: Secret,
    /// `ws://host` or `wss://host`.
    pub websocket_origin: String,
    /// `None` when running unsecure (`ws://`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The HTTP proxy the websocket tunnels through, if any.
    pub proxy: Option<Proxy>,
    pub stop: Stop,
    pub limits: Limits,
    /// Tasks taken and not yet answered on a socket: a re-delivery of one of them is ignored
    /// (its result is coming).
    pub in_flight: Mutex<HashSet<String>>,
    /// The current streak of refused handshakes, both connections together.
    pub refusals: Mutex<Refusals>,
    /// Counted when `METRICS_ADDRESS` is set; the REST clients hold the same handle.
    pub metrics: crate::metrics::Metrics,
    /// The background connection as `/healthz` reports it.
    pub health: crate::metrics::Health,
}

impl Shared {
    /// Records a task as taken; false when it already was.
    pub(crate) fn take(&self, task_id: &str) -> bool {
        self.in_flight_set().insert(task_id.to_string())
    }

    /// Forgets a task once its result was written to a socket.
    pub(crate) fn answered(&self, task_id: &str) {
        self.in_flight_set().remove(task_id);
    }

    fn in_flight_set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The stages of stopping: tell the platform, take no new tasks, drain, close with 1000.
#[derive(Default)]
pub(crate) struct Stop {
    /// SIGTERM/SIGINT (the caller's token): tell the platform with a `shutdown` message.
    pub local: CancellationToken,
    /// The platform sent `shutdown`.
    pub platform: CancellationToken,
    /// Either of the above: take no new tasks, finish and answer the running ones.
    pub draining: CancellationToken,
    /// The drain limit expired: cancel what still runs and close.
    pub abandon: CancellationToken,
    /// The platform refused the API key for `AUTH_FAILURE_EXIT_AFTER`: stop at once, and fail.
    pub refused: CancellationToken,
}

impl Stop {
    /// The caller asked to stop.
    pub(crate) fn local_request(&self) {
        self.local.cancel();
        self.draining.cancel();
    }

    /// Nothing but refused handshakes for too long: no result can be delivered, so stop now.
    pub(crate) fn give_up(&self) {
        self.refused.cancel();
        self.draining.cancel();
        self.abandon.cancel();
    }

    /// The platform sent `shutdown`: from this message on, no task is taken.
    pub(crate) fn platform_request(&self) {
        self.platform.cancel();
        self.draining.cancel();
    }
}

pub(crate) struct Limits {
    background: Semaphore,
    interactive: Semaphore,
    scheduled: Semaphore,
}

impl Limits {
    pub(crate) fn new(options: &RunnerOptions) -> Self {
        Limits {
            background: Semaphore::new(options.background_concurrency.max(1)),
            interactive: Semaphore::new(options.interactive_concurrency.max(1)),
            scheduled: Semaphore::new(options.scheduled_concurrency.max(1)),
        }
    }

    pub(crate) async fn acquire(&self, category: TaskCategory) -> SemaphorePermit<'_> {
        let semaphore = match category {
            TaskCategory::Background => &self.background,
            TaskCategory::Interactive => &self.interactive,
            TaskCategory::Scheduled => &self.scheduled,
        };
        // The semaphores are never closed.
        semaphore
            .acquire()
            .await
            .expect("runner semaphores are never closed")
    }
}
