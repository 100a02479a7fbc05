//! Child side of the end-to-end benches: the real runner (`connect-payg run`'s registry and
//! defaults, settings from this process's environment) until the platform says `shutdown`,
//! then its peak RSS.

use tokio_util::sync::CancellationToken;

use connect_payg::config::SettingsSources;
use connect_payg::devops;
use connect_payg::handlers;

use crate::measure::{self, ChildReport};

/// Longest the child waits for its last log lines to be shipped, as `connect-payg run` does.
const SHIPPING_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn child() -> Result<ChildReport, String> {
    connect_payg::logging::init(None);
    let registry = handlers::registry().map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime
        .block_on(async {
            let stopped = devops::run(
                SettingsSources::default(),
                registry,
                CancellationToken::new(),
            )
            .await;
            // As `connect-payg run` does: the last lines reach the log service before the end.
            if let Some(logging) = connect_payg::logging::control() {
                logging.flush(SHIPPING_FLUSH_LIMIT).await;
            }
            stopped
        })
        .map_err(|e| e.to_string())?;
    Ok(ChildReport {
        seconds: 0.0,
        peak_rss_kb: measure::peak_rss_kb(),
        cpu_seconds: measure::cpu_seconds(),
        bytes: 0,
    })
}
