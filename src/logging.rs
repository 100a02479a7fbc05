//! Tracing set-up: human-readable text on a terminal, JSON lines otherwise (or as `LOG_FORMAT`
//! says). `RUST_LOG` filters as usual; the default is `info`.
//!
//! Whatever `RUST_LOG` asks, TRACE events of the websocket library are dropped: they quote the
//! handshake request (`Authorization` included) and every message (secure variables included)
//! verbatim, and secrets never go to logs.

use std::io::IsTerminal;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Installs the global subscriber; later calls are no-ops (tests and the sandbox may call twice).
pub fn init(format: Option<LogFormat>) {
    init_with_default(format, "info");
}

/// [`init`] with another default level, for commands whose own output is the point (sandbox).
pub fn init_with_default(format: Option<LogFormat>, default_filter: &str) {
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let layer = fmt::layer().with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer.with_filter(filter_fn(quotes_no_credentials)))
        .try_init();
}

fn quotes_no_credentials(metadata: &Metadata<'_>) -> bool {
    *metadata.level() < Level::TRACE || !metadata.target().contains("tungstenite")
}
