//! Tracing set-up: human-readable text on a terminal, JSON lines otherwise (or as `LOG_FORMAT`
//! says). `RUST_LOG` filters as usual; the default is `info`.

use std::io::IsTerminal;

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
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
