//! Tracing set-up: human-readable text on a terminal, JSON lines otherwise (or as `LOG_FORMAT`
//! says). `RUST_LOG` filters as usual; the default is `info`.
//!
//! Whatever `RUST_LOG` asks, TRACE events of the websocket library are dropped: they quote the
//! handshake request (`Authorization` included) and every message (secure variables included)
//! verbatim, and secrets never go to logs.

use std::fmt::{Display, Write as _};
use std::io::IsTerminal;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Longest text of outside origin (a message type, a decode problem, an id) a log line quotes.
pub const LOG_TEXT_LIMIT: usize = 200;

/// `value` as text for a log line: whole when short, else its first [`LOG_TEXT_LIMIT`]
/// characters, an ellipsis and the original length, so that input never reaches the logs at
/// full size. Formats `value` once without keeping more than the kept head.
pub fn clip(value: impl Display) -> String {
    struct Head {
        kept: String,
        chars: usize,
        bytes: usize,
    }
    impl std::fmt::Write for Head {
        fn write_str(&mut self, text: &str) -> std::fmt::Result {
            self.bytes += text.len();
            for character in text.chars() {
                if self.chars >= LOG_TEXT_LIMIT {
                    self.chars += 1;
                    break;
                }
                self.kept.push(character);
                self.chars += 1;
            }
            Ok(())
        }
    }
    let mut head = Head {
        kept: String::new(),
        chars: 0,
        bytes: 0,
    };
    let _ = write!(head, "{value}");
    if head.chars > LOG_TEXT_LIMIT {
        format!("{}… ({} bytes)", head.kept, head.bytes)
    } else {
        head.kept
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_clipped_with_its_length() {
        assert_eq!(clip("short"), "short");
        let exact = "x".repeat(LOG_TEXT_LIMIT);
        assert_eq!(clip(&exact), exact);
        let huge = "é".repeat(3_000_000);
        let clipped = clip(&huge);
        assert!(clipped.starts_with(&"é".repeat(LOG_TEXT_LIMIT)));
        assert!(clipped.ends_with("… (6000000 bytes)"));
        assert!(clipped.len() < 500);
    }
}
