//! Whether this instance is healthy: its background websocket (the one the platform sends
//! events and schedules on) has a completed handshake now, or had one within a grace period
//! (60 s in production), so that an ordinary reconnect does not flap an orchestrator's check.
//!
//! The runner's supervisor reports what happens to the connection ([`Health::connected`],
//! [`Health::lost`], [`Health::failed`]); [`verdict`] turns that into the answer of `/healthz`,
//! a pure function of the state and the clock, with the reason a person needs when it is no:
//! "Connect refused the API key (401) 12 times since 10:02Z", "reconnecting since 10:02Z: …".
//! A refused key counts refused attempts since the first one of the streak; any other outcome
//! ends the streak, as the runner's exit rule (`AUTH_FAILURE_EXIT_AFTER`) counts it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The background connection's state, shared by the runner and the endpoint.
#[derive(Clone)]
pub struct Health(Arc<Mutex<Link>>);

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Link {
    /// Handshaken and serving since then.
    Up {
        since: DateTime<Utc>,
    },
    Down(Down),
}

/// No connection: since when, whether there was one before, and what went wrong last.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Down {
    pub at: Instant,
    pub since: DateTime<Utc>,
    pub was_up: bool,
    pub problem: Option<Problem>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Problem {
    /// The last attempt or connection failed for this reason.
    Failed(String),
    /// Every attempt since `since` was refused with `status` (401/403), `count` of them.
    Refused {
        status: u16,
        count: u64,
        since: DateTime<Utc>,
    },
}

/// The answer of `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    #[serde(skip)]
    pub healthy: bool,
    /// `ok` or `unhealthy`.
    pub status: &'static str,
    /// `connected`, `reconnecting`, `refused` or `connecting` (never connected yet).
    pub connection: &'static str,
    /// When the connection reached that state (RFC 3339, UTC).
    pub since: String,
    /// What is wrong, when anything is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    /// Not connected yet, from now.
    pub fn new() -> Health {
        Health(Arc::new(Mutex::new(Link::Down(Down {
            at: Instant::now(),
            since: Utc::now(),
            was_up: false,
            problem: None,
        }))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Link> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection of `runner_type` finished its handshake. Only `background` counts.
    pub fn connected(&self, runner_type: &str) {
        if runner_type == "background" {
            *self.lock() = Link::Up { since: Utc::now() };
        }
    }

    /// A handshaken connection of `runner_type` ended.
    pub fn lost(&self, runner_type: &str, reason: &str) {
        if runner_type == "background" {
            let mut link = self.lock();
            *link = went_down(&link, Problem::Failed(reason.to_string()));
        }
    }

    /// An attempt to connect `runner_type` failed; `refused` carries the HTTP status when the
    /// platform refused the API key.
    pub fn failed(&self, runner_type: &str, reason: &str, refused: Option<u16>) {
        if runner_type != "background" {
            return;
        }
        let mut link = self.lock();
        let problem = match (refused, &*link) {
            (
                Some(status),
                Link::Down(Down {
                    problem: Some(Problem::Refused { count, since, .. }),
                    ..
                }),
            ) => Problem::Refused {
                status,
                count: count + 1,
                since: *since,
            },
            (Some(status), _) => Problem::Refused {
                status,
                count: 1,
                since: Utc::now(),
            },
            (None, _) => Problem::Failed(reason.to_string()),
        };
        *link = went_down(&link, problem);
    }

    /// The verdict now, with `grace` after a lost connection.
    pub fn verdict(&self, grace: Duration) -> Verdict {
        let link = self.lock().clone();
        verdict(&link, Instant::now(), Utc::now(), grace)
    }
}

/// The link after a failure: down since now when it was up, else down as it was, with the new
/// problem.
fn went_down(link: &Link, problem: Problem) -> Link {
    match link {
        Link::Up { .. } => Link::Down(Down {
            at: Instant::now(),
            since: Utc::now(),
            was_up: true,
            problem: Some(problem),
        }),
        Link::Down(down) => Link::Down(Down {
            problem: Some(problem),
            ..down.clone()
        }),
    }
}

/// Healthy when up, or down for less than `grace` after having been up; otherwise the reason.
pub(crate) fn verdict(
    link: &Link,
    now: Instant,
    now_utc: DateTime<Utc>,
    grace: Duration,
) -> Verdict {
    let down = match link {
        Link::Up { since } => {
            return Verdict {
                healthy: true,
                status: "ok",
                connection: "connected",
                since: rfc3339(*since),
                reason: None,
            }
        }
        Link::Down(down) => down,
    };
    let in_grace = down.was_up && now.saturating_duration_since(down.at) < grace;
    let (connection, reason) = match &down.problem {
        Some(Problem::Refused {
            status,
            count,
            since,
        }) => (
            "refused",
            format!(
                "Connect refused the API key ({status}) {count} {} since {}",
                if *count == 1 { "time" } else { "times" },
                clock(*since, now_utc)
            ),
        ),
        problem => {
            let what = match problem {
                Some(Problem::Failed(reason)) => format!(": {reason}"),
                _ => String::new(),
            };
            if down.was_up {
                (
                    "reconnecting",
                    format!("reconnecting since {}{what}", clock(down.since, now_utc)),
                )
            } else {
                (
                    "connecting",
                    format!(
                        "not connected yet: connecting since {}{what}",
                        clock(down.since, now_utc)
                    ),
                )
            }
        }
    };
    Verdict {
        healthy: in_grace,
        status: if in_grace { "ok" } else { "unhealthy" },
        connection: if in_grace { "reconnecting" } else { connection },
        since: rfc3339(down.since),
        reason: Some(reason),
    }
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `10:02Z` on the day of `now`, `2024-03-01 10:02Z` before it.
fn clock(time: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if time.date_naive() == now.date_naive() {
        time.format("%H:%MZ").to_string()
    } else {
        time.format("%Y-%m-%d %H:%MZ").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn verdicts() {
        let start = Instant::now();
        let now = start + Duration::from_secs(100);
        let now_utc = at("2024-03-01T10:05:00Z");
        let grace = Duration::from_secs(60);
        let down = |seconds_ago: u64, was_up: bool, problem: Option<Problem>| {
            Link::Down(Down {
                at: now - Duration::from_secs(seconds_ago),
                since: at("2024-03-01T10:02:30Z"),
                was_up,
                problem,
            })
        };
        let refused = |count| {
            Some(Problem::Refused {
                status: 401,
                count,
                since: at("2024-03-01T10:02:40Z"),
            })
        };
        let failed = || Some(Problem::Failed("connection refused".into()));
        // (link, healthy, connection, reason)
        let cases = [
            (
                Link::Up {
                    since: at("2024-03-01T10:00:00Z"),
                },
                true,
                "connected",
                None,
            ),
            (
                down(10, true, failed()),
                true,
                "reconnecting",
                Some("reconnecting since 10:02Z: connection refused"),
            ),
            (
                down(60, true, failed()),
                false,
                "reconnecting",
                Some("reconnecting since 10:02Z: connection refused"),
            ),
            (
                down(90, true, refused(12)),
                false,
                "refused",
                Some("Connect refused the API key (401) 12 times since 10:02Z"),
            ),
            (
                down(5, true, refused(1)),
                true,
                "reconnecting",
                Some("Connect refused the API key (401) 1 time since 10:02Z"),
            ),
            (
                down(1, false, None),
                false,
                "connecting",
                Some("not connected yet: connecting since 10:02Z"),
            ),
            (
                down(1, false, refused(3)),
                false,
                "refused",
                Some("Connect refused the API key (401) 3 times since 10:02Z"),
            ),
        ];
        for (link, healthy, connection, reason) in cases {
            let verdict = verdict(&link, now, now_utc, grace);
            assert_eq!(verdict.healthy, healthy, "{link:?}");
            assert_eq!(verdict.connection, connection, "{link:?}");
            assert_eq!(verdict.reason.as_deref(), reason, "{link:?}");
            assert_eq!(verdict.status, if healthy { "ok" } else { "unhealthy" });
        }
    }

    #[test]
    fn an_older_day_is_named() {
        assert_eq!(
            clock(at("2024-02-29T23:59:00Z"), at("2024-03-01T00:01:00Z")),
            "2024-02-29 23:59Z"
        );
    }

    #[test]
    fn refusals_are_a_streak_of_the_background_connection() {
        let health = Health::new();
        let grace = Duration::ZERO;
        health.connected("interactive");
        assert_eq!(health.verdict(grace).connection, "connecting");
        health.connected("background");
        assert!(health.verdict(grace).healthy);
        health.lost("background", "connection closed");
        health.failed("interactive", "refused", Some(401));
        for _ in 0..3 {
            health.failed("background", "refused", Some(403));
        }
        let verdict = health.verdict(grace);
        assert!(!verdict.healthy);
        let reason = verdict.reason.unwrap();
        assert!(
            reason.starts_with("Connect refused the API key (403) 3 times since "),
            "{reason}"
        );
        health.failed("background", "cannot connect", None);
        health.failed("background", "refused", Some(401));
        let reason = health.verdict(grace).reason.unwrap();
        assert!(reason.contains("(401) 1 time since"), "{reason}");
        health.connected("background");
        assert!(health.verdict(grace).healthy);
    }

    #[test]
    fn the_body_is_short_json() {
        let verdict = Verdict {
            healthy: false,
            status: "unhealthy",
            connection: "refused",
            since: "2024-03-01T10:02:30Z".into(),
            reason: Some("Connect refused the API key (401) 2 times since 10:02Z".into()),
        };
        assert_eq!(
            serde_json::to_value(&verdict).unwrap(),
            serde_json::json!({"status": "unhealthy", "connection": "refused",
                "since": "2024-03-01T10:02:30Z",
                "reason": "Connect refused the API key (401) 2 times since 10:02Z"})
        );
    }
}
