//! The log subscriber: human-readable text on a terminal, JSON lines otherwise (or as
//! `LOG_FORMAT` says); levels that the portal can change while the runner runs; and the lines
//! shipped to the portal's log service when the setup response gives a key (`ship.rs`).
//!
//! Levels: `LOG_LEVEL` (default `info`, or the command's own) moved by `-v`/`-q` is where every
//! part starts; the setup response's `log_level` then sets the extension's own logs and
//! `runner_log_level` the runner's internals (`levels.rs`), at once, through a reload of the
//! filter. `RUST_LOG`, when set, is the filter and stays it: developers asked for exactly that.
//!
//! Whatever the filter asks, TRACE events of the websocket library are dropped: they quote the
//! handshake request (`Authorization` included) and every message (secure variables included)
//! verbatim, and secrets never go to logs.
//!
//! The runner finds the [`LogControl`] of the subscriber it logs to with [`control`], so a test
//! that installs its own subscriber (see [`build`]) controls its own runner's logs.

mod levels;
mod ship;

use std::fmt::{Display, Write as _};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicI8, Ordering};
use std::sync::{Arc, Mutex};

use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

pub use levels::{Levels, EXTENSION_TARGETS};
pub use ship::{
    LogMeta, ShipChange, ShipError, ShipOptions, ShipTarget, ShippingState, ShippingStats,
    LOG_TYPE, MAX_BATCH_BYTES,
};

use crate::config::{ConnectionSettings, LogFormat, LogLevel};

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

/// `-v` minus `-q` of the command line, set once before logging starts.
static VERBOSITY: AtomicI8 = AtomicI8::new(0);

/// Records the command line's `-v`/`-q` (their difference) for [`init`].
pub fn set_verbosity(verbosity: i8) {
    VERBOSITY.store(verbosity, Ordering::Relaxed);
}

/// What a command's logging starts from.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSetup {
    /// `LOG_FORMAT`; unset: text on a terminal, else JSON.
    pub format: Option<LogFormat>,
    /// `LOG_LEVEL`; unset: the command's default.
    pub level: Option<LogLevel>,
}

impl From<Option<LogFormat>> for LogSetup {
    fn from(format: Option<LogFormat>) -> Self {
        LogSetup {
            format,
            level: None,
        }
    }
}

impl From<&ConnectionSettings> for LogSetup {
    fn from(settings: &ConnectionSettings) -> Self {
        LogSetup {
            format: settings.log_format,
            level: settings.log_level,
        }
    }
}

/// Installs the global subscriber; later calls are no-ops (tests and the sandbox may call twice).
pub fn init(setup: impl Into<LogSetup>) {
    init_with_default(setup, LogLevel::Info);
}

/// [`init`] with another default level, for commands whose own output is the point (sandbox).
pub fn init_with_default(setup: impl Into<LogSetup>, default_level: LogLevel) {
    let setup = setup.into();
    let format = setup.format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let start = levels::shift(
        setup.level.unwrap_or(default_level),
        VERBOSITY.load(Ordering::Relaxed),
    );
    let (dispatch, _) = build(LogOptions {
        format,
        start,
        rust_log: std::env::var("RUST_LOG").ok(),
        writer: BoxMakeWriter::new(std::io::stderr),
        ship: ShipOptions::default(),
    });
    // Also routes records of the `log` crate (some libraries) through the same subscriber.
    let _ = dispatch.try_init();
}

/// Everything a subscriber is built from ([`init`] reads it from the environment; tests pass
/// their own writer and shipping sizes).
pub struct LogOptions {
    pub format: LogFormat,
    /// The level every part starts at.
    pub start: LogLevel,
    /// `RUST_LOG`: when set (and valid), the filter for good.
    pub rust_log: Option<String>,
    pub writer: BoxMakeWriter,
    pub ship: ShipOptions,
}

/// A subscriber (to install globally or for a scope) and its control.
pub fn build(options: LogOptions) -> (tracing::Dispatch, LogControl) {
    let levels = Levels::starting(options.start);
    let developer = options
        .rust_log
        .filter(|text| !text.trim().is_empty())
        .and_then(|text| EnvFilter::try_new(text).ok());
    let fixed = developer.is_some();
    let filter = developer.unwrap_or_else(|| EnvFilter::new(levels.directives()));
    let (filter, handle) = reload::Layer::new(filter);
    let control = LogControl(Arc::new(ControlInner {
        filter: handle,
        fixed,
        levels: Mutex::new(levels),
        shipper: ship::Shipper::new(options.ship),
    }));
    let output = fmt::layer().with_writer(options.writer);
    let output = match options.format {
        LogFormat::Text => output.boxed(),
        LogFormat::Json => output.json().flatten_event(true).boxed(),
    };
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(output.with_filter(filter_fn(quotes_no_credentials)))
        .with(ControlLayer {
            control: control.clone(),
        });
    (tracing::Dispatch::new(subscriber), control)
}

/// The control of the subscriber the current code logs to, when it is one [`build`] made.
pub fn control() -> Option<LogControl> {
    tracing::dispatcher::get_default(|dispatch| {
        dispatch
            .downcast_ref::<ControlLayer>()
            .map(|layer| layer.control.clone())
    })
}

/// Changes a running subscriber: its levels and its shipping.
#[derive(Clone)]
pub struct LogControl(Arc<ControlInner>);

struct ControlInner {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` decides the filter; levels from elsewhere are not applied.
    fixed: bool,
    levels: Mutex<Levels>,
    shipper: ship::Shipper,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("levels", &self.levels())
            .field("rust_log", &self.0.fixed)
            .field("shipping", &self.shipping())
            .finish()
    }
}

/// What [`LogControl::set_levels`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelChange {
    Applied(Levels),
    /// Nothing to change.
    Unchanged(Levels),
    /// `RUST_LOG` is set and stays the filter.
    RustLogWins,
}

impl LogControl {
    /// The levels in force (the starting ones while `RUST_LOG` decides).
    pub fn levels(&self) -> Levels {
        *self
            .0
            .levels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the extension's and the runner's levels; a `None` keeps that one. Takes effect
    /// for every event from now on.
    pub fn set_levels(&self, extension: Option<LogLevel>, runner: Option<LogLevel>) -> LevelChange {
        if self.0.fixed {
            return LevelChange::RustLogWins;
        }
        let mut levels = self
            .0
            .levels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let wanted = levels.with(extension, runner);
        if wanted == *levels {
            return LevelChange::Unchanged(wanted);
        }
        match self.0.filter.reload(EnvFilter::new(wanted.directives())) {
            Ok(()) => {
                *levels = wanted;
                LevelChange::Applied(wanted)
            }
            // The subscriber is gone: nothing logs through it any more.
            Err(_) => LevelChange::Unchanged(*levels),
        }
    }

    /// Ships this crate's log lines to `target` from now on.
    pub fn ship(&self, target: ShipTarget) -> Result<ShipChange, ShipError> {
        self.0.shipper.ship(target)
    }

    /// Stops shipping; true when it was on.
    pub fn stop_shipping(&self) -> bool {
        self.0.shipper.stop()
    }

    pub fn shipping(&self) -> ShippingStats {
        self.0.shipper.stats()
    }

    /// Waits (at most `limit`) until the lines waiting are shipped; true when none is left.
    pub async fn flush(&self, limit: std::time::Duration) -> bool {
        self.0.shipper.flush(limit).await
    }
}

/// Hands events to the shipper; found by [`control`] through the dispatcher.
struct ControlLayer {
    control: LogControl,
}

impl<S> Layer<S> for ControlLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        ship::remember_task_id(attrs, id, ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        self.control.0.shipper.capture(event, ctx);
    }
}

fn quotes_no_credentials(metadata: &Metadata<'_>) -> bool {
    *metadata.level() < Level::TRACE || !metadata.target().contains("tungstenite")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything written, shared with the subscriber.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl Written {
        fn writer(&self) -> BoxMakeWriter {
            let written = self.clone();
            BoxMakeWriter::new(move || written.clone())
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl std::io::Write for Written {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn subscriber(rust_log: Option<&str>) -> (tracing::Dispatch, LogControl, Written) {
        let written = Written::default();
        let (dispatch, control) = build(LogOptions {
            format: LogFormat::Json,
            start: LogLevel::Info,
            rust_log: rust_log.map(str::to_string),
            writer: written.writer(),
            ship: ShipOptions::default(),
        });
        (dispatch, control, written)
    }

    fn emit(n: u32) {
        tracing::debug!(target: "connect_payg::handlers::schedule", n, "extension debug");
        tracing::debug!(target: "connect_payg::devops::session", n, "runner debug");
        tracing::info!(target: "connect_payg::devops::session", n, "runner info");
    }

    #[test]
    fn the_platforms_levels_apply_at_once_each_to_its_part() {
        let (dispatch, own, written) = subscriber(None);
        tracing::dispatcher::with_default(&dispatch, || {
            let found = control().expect("the control of the subscriber in use");
            assert_eq!(found.levels(), Levels::starting(LogLevel::Info));
            emit(1);
            let change = found.set_levels(Some(LogLevel::Debug), None);
            assert!(matches!(change, LevelChange::Applied(_)), "{change:?}");
            emit(2);
            assert!(matches!(
                found.set_levels(None, None),
                LevelChange::Unchanged(_)
            ));
            found.set_levels(None, Some(LogLevel::Warn));
            emit(3);
        });
        let text = written.text();
        let seen = |message: &str, n: u32| {
            text.lines()
                .any(|line| line.contains(message) && line.contains(&format!("\"n\":{n}")))
        };
        assert!(!seen("extension debug", 1), "{text}");
        assert!(seen("runner info", 1), "{text}");
        assert!(seen("extension debug", 2), "{text}");
        assert!(!seen("runner debug", 2), "{text}");
        assert!(seen("extension debug", 3), "{text}");
        assert!(!seen("runner info", 3), "{text}");
        let levels = own.levels();
        assert_eq!(
            (levels.extension, levels.runner, levels.libraries),
            (LogLevel::Debug, LogLevel::Warn, LogLevel::Info)
        );
    }

    #[test]
    fn rust_log_stays_the_filter() {
        let (dispatch, control, written) = subscriber(Some("connect_payg=debug"));
        tracing::dispatcher::with_default(&dispatch, || {
            assert_eq!(
                control.set_levels(Some(LogLevel::Error), Some(LogLevel::Error)),
                LevelChange::RustLogWins
            );
            emit(1);
        });
        let text = written.text();
        assert!(text.contains("extension debug"), "{text}");
        assert!(text.contains("runner debug"), "{text}");
        // An empty RUST_LOG is as if unset.
        for rust_log in ["", " "] {
            let (_dispatch, control, _) = subscriber(Some(rust_log));
            assert!(matches!(
                control.set_levels(Some(LogLevel::Debug), None),
                LevelChange::Applied(_)
            ));
        }
    }

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
