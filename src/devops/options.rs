//! Timing and capacity knobs of the runner, with the official runner's values as defaults.
//!
//! They are not user settings: production always runs with the defaults. They exist so that
//! tests can shrink a five-second reconnect pause or a sixty-second keepalive to milliseconds
//! and still exercise the real code paths.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Pause before reconnecting after an established connection dropped (official: 5 s).
    pub reconnect_delay: Duration,
    /// First nominal backoff delay after a failed connection attempt (doubles each time).
    pub backoff_base: Duration,
    /// Cap of the nominal backoff delay.
    pub backoff_max: Duration,
    /// Limit for the TCP/TLS connect and the HTTP upgrade.
    pub connect_timeout: Duration,
    /// Limit for the liveness pong and for the `setup_response` after `setup_request`.
    pub handshake_timeout: Duration,
    /// Keepalive ping period.
    pub ping_interval: Duration,
    /// A connection whose ping is not answered (or whose write does not complete) within this
    /// time is dead.
    pub ping_timeout: Duration,
    /// How long to wait for the server's answer to our close frame.
    pub close_timeout: Duration,
    /// How long a stopping runner waits for running tasks and unsent results; `None` means the
    /// official limit, background time limit + 90 s.
    pub drain_limit: Option<Duration>,
    /// Largest inbound frame or message; bigger ones drop the connection unread.
    pub max_message_size: usize,
    /// Tasks of each category that run at once (others wait, counted as running).
    pub background_concurrency: usize,
    pub interactive_concurrency: usize,
    pub scheduled_concurrency: usize,
    /// At most one ERROR line per this interval while the platform refuses the API key.
    pub refused_log_interval: Duration,
    /// `/healthz` stays healthy this long after the background connection was lost (60 s).
    pub health_grace: Duration,
    /// Filled with the address `/healthz` and `/metrics` are served at, once they are
    /// (`METRICS_ADDRESS` with port 0 lets the system pick the port).
    pub metrics_listening: crate::metrics::Listening,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            reconnect_delay: Duration::from_secs(5),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(60),
            close_timeout: Duration::from_secs(1),
            drain_limit: None,
            max_message_size: 4 * 1024 * 1024,
            background_concurrency: 8,
            interactive_concurrency: 8,
            // The monthly report must not race a second run of itself.
            scheduled_concurrency: 1,
            refused_log_interval: Duration::from_secs(60),
            health_grace: Duration::from_secs(60),
            metrics_listening: crate::metrics::Listening::default(),
        }
    }
}
