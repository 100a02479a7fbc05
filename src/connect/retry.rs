//! When a failed request may be tried again, and how long to wait first.
//!
//! Waits grow exponentially with *full jitter* (a random pause between zero and
//! `base_delay · 2^(attempt-1)`, capped at `max_delay`), so that many clients hit by the same
//! outage do not come back in lock step. A `Retry-After` header (seconds) is honoured as a
//! floor, still capped at `max_delay` so a confused server cannot park us for hours.
//!
//! Which failures are worth another attempt depends on whether the first one could have
//! taken effect; see [`Verdict`].

use std::time::Duration;

use super::error::{ConnectError, TransportKind};

#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Attempts in total, the first one included (at least 1).
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

/// What a failure means for the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The request certainly had no effect (throttled, or never reached the server): safe to
    /// repeat whatever it was.
    Retry,
    /// The request may have taken effect (5xx, timeout or broken connection after sending):
    /// repeat an idempotent request; re-read state before repeating any other.
    Ambiguous,
    /// Repeating cannot help (4xx other than 429, undecodable answers, configuration).
    Fatal,
}

pub(crate) fn classify(error: &ConnectError) -> Verdict {
    match error {
        ConnectError::Api { status: 429, .. } => Verdict::Retry,
        ConnectError::Transport {
            kind: TransportKind::Connect,
            ..
        } => Verdict::Retry,
        error if error.is_ambiguous() => Verdict::Ambiguous,
        _ => Verdict::Fatal,
    }
}

/// `Retry-After` in seconds (integral or decimal). HTTP dates are not used by Connect and
/// fall back to the normal backoff. A value too large for a `Duration` (`1e20`) is read as the
/// longest one; the caller's cap applies either way.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0)
        .then(|| Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX))
}

/// The attempt counter of one logical request.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    attempt: u32,
}

impl Backoff {
    pub fn new(policy: RetryPolicy) -> Self {
        Backoff { policy, attempt: 1 }
    }

    /// The number of the attempt about to be made (1-based).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Sleeps before the next attempt; `false` (without sleeping) when attempts are used up.
    pub async fn pause(&mut self, retry_after: Option<Duration>) -> bool {
        if self.attempt >= self.policy.max_attempts {
            return false;
        }
        let delay = delay(
            &self.policy,
            self.attempt,
            retry_after,
            rand::random::<f64>(),
        );
        self.attempt += 1;
        tokio::time::sleep(delay).await;
        true
    }
}

/// The pause after failed attempt number `attempt`, for a uniform random `unit` in [0, 1).
fn delay(policy: &RetryPolicy, attempt: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let ceiling = policy
        .base_delay
        .saturating_mul(1u32 << exponent)
        .min(policy.max_delay);
    let jitter = ceiling.mul_f64(unit.clamp(0.0, 1.0));
    retry_after
        .map_or(jitter, |floor| floor.max(jitter))
        .min(policy.max_delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after(""), None);
        assert_eq!(parse_retry_after("NaN"), None);
        assert_eq!(parse_retry_after("inf"), None);
    }

    #[test]
    fn huge_retry_after_is_clamped_not_a_panic() {
        assert_eq!(parse_retry_after("1e20"), Some(Duration::MAX));
        assert_eq!(parse_retry_after("1e300"), Some(Duration::MAX));
        let floor = parse_retry_after("1e20");
        assert_eq!(delay(&policy(), 1, floor, 0.5), Duration::from_secs(10));
    }

    #[test]
    fn delays_grow_exponentially_with_full_jitter_and_a_cap() {
        let p = policy();
        assert_eq!(delay(&p, 1, None, 0.0), Duration::ZERO);
        assert_eq!(
            delay(&p, 1, None, 0.999_999),
            Duration::from_secs(1).mul_f64(0.999_999)
        );
        assert_eq!(delay(&p, 3, None, 0.5), Duration::from_secs(2));
        assert_eq!(
            delay(&p, 10, None, 0.5),
            Duration::from_secs(5),
            "capped at 10s"
        );
        assert_eq!(
            delay(&p, 100, None, 0.5),
            Duration::from_secs(5),
            "no overflow"
        );
    }

    #[test]
    fn retry_after_is_a_floor_below_the_cap() {
        let p = policy();
        assert_eq!(
            delay(&p, 1, Some(Duration::from_secs(3)), 0.1),
            Duration::from_secs(3)
        );
        assert_eq!(
            delay(&p, 1, Some(Duration::from_secs(3600)), 0.1),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn failures_are_classified_by_whether_they_could_have_taken_effect() {
        let api = |status| ConnectError::Api {
            method: "POST".into(),
            path: "usage/files".into(),
            status,
            code: None,
            errors: vec![],
        };
        let transport = |kind| ConnectError::Transport {
            method: "POST".into(),
            path: "usage/files".into(),
            host: "127.0.0.1:1".into(),
            kind,
            message: String::new(),
        };
        assert_eq!(classify(&api(429)), Verdict::Retry);
        assert_eq!(classify(&transport(TransportKind::Connect)), Verdict::Retry);
        for status in [500, 502, 503, 504] {
            assert_eq!(classify(&api(status)), Verdict::Ambiguous, "{status}");
        }
        assert_eq!(
            classify(&transport(TransportKind::Timeout)),
            Verdict::Ambiguous
        );
        assert_eq!(
            classify(&transport(TransportKind::Other)),
            Verdict::Ambiguous
        );
        for status in [400, 401, 403, 404, 409, 501] {
            assert_eq!(classify(&api(status)), Verdict::Fatal, "{status}");
        }
        assert_eq!(classify(&ConnectError::Config("x".into())), Verdict::Fatal);
    }
}
