//! `connect-payg run`: the extension itself, until the platform's `shutdown` or SIGTERM/SIGINT.

use tokio_util::sync::CancellationToken;

use super::{CliError, Outcome};
use crate::config::SettingsSources;

/// Longest a stopping runner waits for its last log lines to be shipped.
const SHIPPING_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn run(sources: SettingsSources) -> Result<Outcome, CliError> {
    let settings = sources.load()?;
    crate::logging::init(&settings.connection);
    settings.connection.require_api_key()?;
    settings.connection.require_environment_id()?;
    let registry =
        crate::handlers::registry().map_err(|e| CliError::Other(anyhow::Error::new(e)))?;
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    let stopped = crate::devops::run(sources, registry, stop).await;
    // The last lines (the runner stopping) reach the portal too, unless its service is down.
    if let Some(logging) = crate::logging::control() {
        logging.flush(SHIPPING_FLUSH_LIMIT).await;
    }
    stopped.map_err(|error| match error {
        crate::devops::RunnerError::Config(error) => CliError::Config(error),
        // Settings the runner checks as it starts are bad configuration too (exit 2).
        error @ (crate::devops::RunnerError::Proxy(_)
        | crate::devops::RunnerError::ApiKeyNotAHeader) => CliError::Usage(error.to_string()),
        other => CliError::Other(anyhow::Error::new(other)),
    })?;
    Ok(Outcome::Success)
}

/// Cancels `stop` on the first SIGTERM or SIGINT.
async fn stop_on_signal(stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!(
            "cannot listen for SIGTERM/SIGINT; stop the runner with the platform's shutdown"
        );
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT received; stopping"),
    }
    stop.cancel();
}
