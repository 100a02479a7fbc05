//! Which log levels are in force, as pure values: the extension's own logs (the portal's
//! `log_level`), the runner's internals (`runner_log_level`), and the libraries underneath
//! (the starting level, never changed by the portal), turned into the filter directives the
//! subscriber reloads.
//!
//! The split follows the official runner, whose `log_level` sets the logger handlers write to
//! and whose `runner_log_level` sets the runner's own: here the handlers, the usage reporting
//! and the alerts are the extension's work, and the rest of this crate (connection, protocol,
//! REST, configuration) is the runner's.

use crate::config::LogLevel;

/// This crate's log targets, under which the per-part directives apply.
pub const CRATE_TARGET: &str = "connect_payg";

/// Targets of the extension's own work, set by the portal's `log_level`; every other target of
/// this crate follows `runner_log_level`.
pub const EXTENSION_TARGETS: &[&str] = &[
    "connect_payg::handlers",
    "connect_payg::usage",
    "connect_payg::alert",
];

/// The levels in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    /// Handlers, reporting, alerts.
    pub extension: LogLevel,
    /// Connection, protocol, REST, configuration.
    pub runner: LogLevel,
    /// Everything that is not this crate (libraries); the starting level for good.
    pub libraries: LogLevel,
}

impl Levels {
    /// Every part at `level`, as a process starts.
    pub fn starting(level: LogLevel) -> Levels {
        Levels {
            extension: level,
            runner: level,
            libraries: level,
        }
    }

    /// With the platform's levels applied: a missing one keeps the current level.
    pub fn with(self, extension: Option<LogLevel>, runner: Option<LogLevel>) -> Levels {
        Levels {
            extension: extension.unwrap_or(self.extension),
            runner: runner.unwrap_or(self.runner),
            libraries: self.libraries,
        }
    }

    /// Filter directives (the `RUST_LOG` syntax): the most specific target wins.
    pub fn directives(&self) -> String {
        let mut text = format!("{},{CRATE_TARGET}={}", self.libraries, self.runner);
        for target in EXTENSION_TARGETS {
            text.push_str(&format!(",{target}={}", self.extension));
        }
        text
    }
}

/// `level` made more talkative by `verbosity` steps (`-v` counts up, `-q` down), within
/// ERROR..=TRACE.
pub fn shift(level: LogLevel, verbosity: i8) -> LogLevel {
    const ORDER: [LogLevel; 5] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];
    let at = ORDER.iter().position(|l| *l == level).unwrap_or(2) as i64;
    let shifted = (at + i64::from(verbosity)).clamp(0, ORDER.len() as i64 - 1);
    ORDER[shifted as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use LogLevel::*;

    #[test]
    fn the_platform_changes_only_what_it_names() {
        let start = Levels::starting(Info);
        assert_eq!(start.with(None, None), start);
        let changed = start.with(Some(Debug), None);
        assert_eq!(
            (changed.extension, changed.runner, changed.libraries),
            (Debug, Info, Info)
        );
        let changed = changed.with(None, Some(Error));
        assert_eq!(
            (changed.extension, changed.runner, changed.libraries),
            (Debug, Error, Info)
        );
    }

    #[test]
    fn directives_give_each_part_its_level() {
        let levels = Levels {
            extension: Debug,
            runner: Warn,
            libraries: Info,
        };
        assert_eq!(
            levels.directives(),
            "info,connect_payg=warn,connect_payg::handlers=debug,\
             connect_payg::usage=debug,connect_payg::alert=debug"
        );
        let filter = tracing_subscriber::EnvFilter::try_new(levels.directives());
        assert!(filter.is_ok(), "{filter:?}");
    }

    #[test]
    fn verbosity_shifts_within_the_levels() {
        for (level, verbosity, expected) in [
            (Info, 0, Info),
            (Info, 1, Debug),
            (Info, 2, Trace),
            (Info, 9, Trace),
            (Info, -1, Warn),
            (Info, -2, Error),
            (Info, -9, Error),
            (Error, 1, Warn),
            (Trace, -1, Debug),
        ] {
            assert_eq!(shift(level, verbosity), expected, "{level} {verbosity}");
        }
    }
}
