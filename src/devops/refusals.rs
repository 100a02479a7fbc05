//! A platform that refuses the API key (HTTP 401/403 on every upgrade) is a configuration
//! error, not an outage: it is logged at ERROR (at most once per interval, with the number of
//! refusals since the last line), and after `AUTH_FAILURE_EXIT_AFTER` of nothing else the
//! runner gives up so that an orchestrator shows a crash loop instead of a healthy container.
//!
//! Both connections share one streak: any other outcome (a connection, another failure) ends it.

use std::time::{Duration, Instant};

/// What to do about one more refused handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusalStep {
    /// Log at ERROR: `refused` handshakes since the last line, the streak `lasting` so far.
    Log { refused: u64, lasting: Duration },
    /// Already logged within the interval.
    Quiet,
    /// Nothing but refusals for `lasting` (at least the exit limit): stop the runner.
    GiveUp { refused: u64, lasting: Duration },
}

#[derive(Debug, Default)]
pub(crate) struct Refusals {
    since: Option<Instant>,
    total: u64,
    unlogged: u64,
    last_log: Option<Instant>,
}

impl Refusals {
    /// Records a refused handshake at `now`.
    pub(crate) fn refused(
        &mut self,
        now: Instant,
        log_interval: Duration,
        exit_after: Duration,
    ) -> RefusalStep {
        let since = *self.since.get_or_insert(now);
        let lasting = now.saturating_duration_since(since);
        self.total += 1;
        self.unlogged += 1;
        if lasting >= exit_after {
            return RefusalStep::GiveUp {
                refused: self.total,
                lasting,
            };
        }
        match self.last_log {
            Some(last) if now.saturating_duration_since(last) < log_interval => RefusalStep::Quiet,
            _ => {
                self.last_log = Some(now);
                let refused = std::mem::take(&mut self.unlogged);
                RefusalStep::Log { refused, lasting }
            }
        }
    }

    /// Anything but a refusal happened: the streak is over.
    pub(crate) fn reset(&mut self) {
        *self = Refusals::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const EXIT: Duration = Duration::from_secs(900);

    #[test]
    fn refusals_are_logged_once_per_interval_with_their_count() {
        let start = Instant::now();
        let mut refusals = Refusals::default();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let steps: Vec<RefusalStep> = [0, 1, 10, 59, 60, 61, 130]
            .into_iter()
            .map(|s| refusals.refused(at(s), MINUTE, EXIT))
            .collect();
        let log = |refused, seconds| RefusalStep::Log {
            refused,
            lasting: Duration::from_secs(seconds),
        };
        use RefusalStep::Quiet;
        assert_eq!(
            steps,
            [
                log(1, 0),
                Quiet,
                Quiet,
                Quiet,
                log(4, 60),
                Quiet,
                log(2, 130)
            ]
        );
    }

    #[test]
    fn only_an_unbroken_streak_reaches_the_exit_limit() {
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let mut refusals = Refusals::default();
        refusals.refused(at(0), MINUTE, EXIT);
        assert!(matches!(
            refusals.refused(at(899), MINUTE, EXIT),
            RefusalStep::Log { .. }
        ));
        refusals.reset();
        assert!(matches!(
            refusals.refused(at(900), MINUTE, EXIT),
            RefusalStep::Log { refused: 1, .. }
        ));
        assert_eq!(
            refusals.refused(at(1800), MINUTE, EXIT),
            RefusalStep::GiveUp {
                refused: 2,
                lasting: EXIT
            }
        );
    }
}
