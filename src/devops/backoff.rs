//! Reconnect delays after failed connection attempts: exponential backoff with full jitter
//! (1, 2, 4 … s nominal, capped at 300 s), with a separate time budget per failure class
//! (3 hours for maintenance, 15 minutes otherwise) after which a new cycle starts (the
//! official 43.1 behaviour: never give up while not shutting down).

use std::time::{Duration, Instant};

use rand::Rng;

/// Why a connection attempt failed, as far as the retry policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureClass {
    /// HTTP 502 on the upgrade: the platform is in maintenance.
    Maintenance,
    /// HTTP 401 or 403 on the upgrade: the platform refuses the API key.
    Refused,
    /// Everything else: refused, timed out, other HTTP status, TLS, handshake.
    Communication,
}

impl FailureClass {
    fn budget(self) -> Duration {
        match self {
            FailureClass::Maintenance => Duration::from_secs(3 * 3600),
            FailureClass::Refused | FailureClass::Communication => Duration::from_secs(15 * 60),
        }
    }
}

pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    /// Pause between two cycles once a class exhausted its budget.
    cycle_pause: Duration,
    class: Option<FailureClass>,
    cycle_start: Instant,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration, cycle_pause: Duration) -> Self {
        Backoff {
            base,
            max,
            cycle_pause,
            class: None,
            cycle_start: Instant::now(),
            attempt: 0,
        }
    }

    /// Forget past failures (after a successful handshake).
    pub(crate) fn reset(&mut self) {
        self.class = None;
        self.attempt = 0;
    }

    /// How long to wait before the next attempt after a failure of `class`.
    pub(crate) fn next_delay(&mut self, class: FailureClass) -> Duration {
        let now = Instant::now();
        if self.class != Some(class) {
            self.class = Some(class);
            self.cycle_start = now;
            self.attempt = 0;
        } else if now.duration_since(self.cycle_start) > class.budget() {
            self.cycle_start = now;
            self.attempt = 0;
            return self.cycle_pause;
        }
        let nominal = self.nominal(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        full_jitter(nominal)
    }

    fn nominal(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        self.base.saturating_mul(factor).min(self.max)
    }
}

fn full_jitter(nominal: Duration) -> Duration {
    if nominal.is_zero() {
        return nominal;
    }
    rand::rng().random_range(Duration::ZERO..=nominal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nominal_delays_double_up_to_the_cap() {
        let backoff = Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(300),
            Duration::from_secs(5),
        );
        let nominal: Vec<u64> = (0..12).map(|a| backoff.nominal(a).as_secs()).collect();
        assert_eq!(nominal, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff.nominal(u32::MAX).as_secs(), 300);
    }

    #[test]
    fn delays_are_jittered_below_the_nominal_value() {
        let mut backoff = Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(300),
            Duration::from_secs(5),
        );
        for attempt in 0..20 {
            let delay = backoff.next_delay(FailureClass::Communication);
            assert!(delay <= backoff.nominal(attempt), "{attempt}: {delay:?}");
        }
    }

    #[test]
    fn a_new_class_or_a_reset_starts_from_the_base() {
        let mut backoff = Backoff::new(
            Duration::from_millis(10),
            Duration::from_secs(300),
            Duration::from_secs(5),
        );
        for _ in 0..10 {
            backoff.next_delay(FailureClass::Communication);
        }
        assert!(backoff.next_delay(FailureClass::Maintenance) <= Duration::from_millis(10));
        backoff.next_delay(FailureClass::Maintenance);
        backoff.reset();
        assert!(backoff.next_delay(FailureClass::Maintenance) <= Duration::from_millis(10));
    }
}
