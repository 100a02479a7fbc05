//! The DevOps events runner: `connect-payg run` as a drop-in for the official Python runner as
//! far as the platform can tell (see docs/architecture.md, The runner).
//!
//! How the pieces fit:
//!
//! * [`protocol`] — the wire messages; `extension` — `extension.json`, the declarations;
//!   `registry` — handlers for those declarations ([`Handler`], [`HandlerOutcome`],
//!   [`TaskContext`], [`Registry`]).
//! * [`run`] starts two connections (`runner_type=background` and `interactive`, as the
//!   official runner does), each kept up by a supervisor (reconnects, backoff) that opens it
//!   (URL, upgrade, liveness ping, handshake) and serves it (tasks in, results out, keepalive,
//!   watchdog). Both accept every task category.
//! * Each task runs in the background: argument resolution, the handler under its time limit,
//!   the result queued on the connection it came from and sent when that connection is up.
//! * Stopping (the caller's token or the platform's `shutdown`): no new tasks, running ones
//!   finish (bounded by the drain limit), their results are sent, connections close with 1000.

mod backoff;
mod channel;
mod connection;
mod executor;
pub(crate) mod extension;
mod options;
mod outbox;
mod outcome;
mod platform;
pub(crate) use payg_shared::protocol;
mod proxy;
mod refusals;
pub(crate) mod registry;
mod resolve;
mod running;
mod session;
mod shared;
mod supervisor;
mod task_client;
mod tls;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use channel::RunnerType;
pub use options::RunnerOptions;
pub use proxy::ProxyError;
pub use registry::{
    status_mismatch_message, Handler, HandlerOutcome, Registry, RegistryBuilder, RegistryError,
    TaskContext,
};
pub use tls::TlsError;

use crate::config::{ConfigError, SettingsSources};
use crate::connect::{ClientOptions, ConnectClient, ConnectError};
use channel::Channel;
use platform::Platform;
use shared::{Limits, Shared, Stop};

/// Grace added to the background time limit for the default drain limit (the official 90 s).
const DRAIN_GRACE: Duration = Duration::from_secs(90);

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("setting API_KEY is invalid: it cannot be sent as an HTTP header")]
    ApiKeyNotAHeader,
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("cannot create the REST client: {0}")]
    Client(#[from] ConnectError),
    #[error("runner start-up failed: {0}")]
    Startup(String),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::ServeError),
    #[error(
        "the platform refused the API key on every connection attempt for {} s \
         (AUTH_FAILURE_EXIT_AFTER): check API_KEY and ENVIRONMENT_ID",
        .0.as_secs()
    )]
    KeyRefused(Duration),
}

/// Serves the DevOps events channel until `shutdown` is cancelled or the platform sends
/// `shutdown`; returns `Ok` after a clean stop. Fails only at start-up (bad configuration).
pub async fn run(
    sources: SettingsSources,
    registry: Registry,
    shutdown: CancellationToken,
) -> Result<(), RunnerError> {
    run_with(sources, registry, RunnerOptions::default(), shutdown).await
}

/// [`run`] with explicit timing and capacity knobs (tests shrink them).
pub async fn run_with(
    sources: SettingsSources,
    registry: Registry,
    options: RunnerOptions,
    shutdown: CancellationToken,
) -> Result<(), RunnerError> {
    let shared = Arc::new(start(sources, registry, options).await?);
    // Stopped when dropped, on every way out of the runner.
    let _endpoint = match shared
        .platform
        .snapshot()
        .settings
        .connection
        .metrics_address
    {
        Some(address) => Some(
            crate::metrics::serve(
                address,
                shared.metrics.clone(),
                shared.health.clone(),
                shared.options.health_grace,
                &shared.options.metrics_listening,
            )
            .await?,
        ),
        None => None,
    };
    let drain_limit = shared.options.drain_limit.unwrap_or_else(|| {
        shared
            .platform
            .snapshot()
            .settings
            .runner
            .background_time_limit
            + DRAIN_GRACE
    });
    info!(
        environment_id = %shared.environment_id,
        instance_id = %shared.instance_id,
        "runner started"
    );
    let supervisors: Vec<_> = [RunnerType::Background, RunnerType::Interactive]
        .into_iter()
        .map(|runner_type| {
            tokio::spawn(supervisor::supervise(
                Arc::clone(&shared),
                Arc::new(Channel::new(runner_type)),
            ))
        })
        .collect();

    tokio::select! {
        _ = shutdown.cancelled() => {
            info!("stop requested; finishing running tasks");
            shared.stop.local_request();
        }
        _ = shared.stop.platform.cancelled() => info!("stopping at the platform's request"),
        _ = shared.stop.refused.cancelled() => {}
    }
    let abandon = shared.stop.abandon.clone();
    let deadline = tokio::spawn(async move {
        tokio::time::sleep(drain_limit).await;
        warn!(limit = ?drain_limit, "drain limit reached; abandoning unfinished tasks");
        abandon.cancel();
    });
    for supervisor in supervisors {
        if let Err(join) = supervisor.await {
            error!(%join, "a connection supervisor failed");
        }
    }
    deadline.abort();
    if shared.stop.refused.is_cancelled() {
        let limit = shared
            .platform
            .snapshot()
            .settings
            .runner
            .auth_failure_exit_after;
        error!("runner stopped: the platform refuses the API key");
        return Err(RunnerError::KeyRefused(limit));
    }
    info!("runner stopped");
    Ok(())
}

async fn start(
    sources: SettingsSources,
    registry: Registry,
    options: RunnerOptions,
) -> Result<Shared, RunnerError> {
    let layers = sources.clone();
    let settings = tokio::task::spawn_blocking(move || layers.load())
        .await
        .map_err(|e| RunnerError::Startup(e.to_string()))??;
    let api_key = settings.connection.require_api_key()?.clone();
    let environment_id = settings.connection.require_environment_id()?.to_string();
    if tokio_tungstenite::tungstenite::http::HeaderValue::from_str(api_key.expose()).is_err() {
        return Err(RunnerError::ApiKeyNotAHeader);
    }
    let tls = if settings.connection.unsecure {
        None
    } else {
        let ca_file = settings.connection.ssl_cert_file.clone();
        let config = tokio::task::spawn_blocking(move || tls::client_config(ca_file.as_deref()))
            .await
            .map_err(|e| RunnerError::Startup(e.to_string()))??;
        Some(config)
    };
    // Proxy variables are read from the same environment as the settings (tests pass a map).
    let lookup = |name: &str| match &sources.env {
        Some(variables) => variables.get(name).cloned(),
        None => std::env::var(name).ok(),
    };
    let server_host = settings
        .connection
        .server_address
        .rsplit_once(':')
        .map_or(settings.connection.server_address.as_str(), |(host, _)| {
            host
        });
    let proxy = proxy::select(&lookup, !settings.connection.unsecure, server_host)?;
    let metrics = match settings.connection.metrics_address {
        Some(_) => crate::metrics::Metrics::with_log_shipping(crate::logging::control()),
        None => crate::metrics::Metrics::off(),
    };
    let client = ConnectClient::new(ClientOptions {
        metrics: metrics.clone(),
        ..ClientOptions::from_settings(&settings)?
    })?;
    Ok(Shared {
        limits: Limits::new(&options),
        options,
        registry,
        environment_id,
        instance_id: settings.connection.instance_id.clone(),
        websocket_origin: settings.connection.websocket_origin(),
        api_key,
        tls,
        proxy,
        stop: Stop::default(),
        in_flight: Mutex::new(HashSet::new()),
        refusals: Mutex::new(refusals::Refusals::default()),
        metrics,
        health: crate::metrics::Health::new(),
        platform: Platform::new(sources, settings, client),
    })
}
