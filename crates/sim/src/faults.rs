//! Injected trouble on the REST API: added latency, throttling (429 with `Retry-After`) and
//! server errors (500), drawn from a seeded RNG so a failing test replays the same way.
//!
//! Half the injected 500s strike *after* the request took effect (the answer is lost on the
//! way back), because that is the case a client must survive without creating duplicates.

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// What to inject on `/public/v1` requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Share of requests (0..=1) answered with an injected 429 or 500.
    pub error_rate: f64,
    /// The `Retry-After` of injected 429s.
    pub retry_after_secs: u64,
    /// Added to every request (`latency_ms` over HTTP).
    #[serde(rename = "latency_ms", with = "millis")]
    pub latency: Duration,
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            retry_after_secs: 1,
            latency: Duration::ZERO,
            seed: 0,
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Injection {
    Pass,
    Throttle,
    FailBefore,
    FailAfter,
}

/// The current faults and the RNG drawing from them (reseeded whenever faults are set).
pub(crate) struct FaultInjector {
    inner: Mutex<(Faults, StdRng)>,
}

impl FaultInjector {
    pub fn new() -> Self {
        FaultInjector {
            inner: Mutex::new((Faults::default(), StdRng::seed_from_u64(0))),
        }
    }

    pub fn set(&self, faults: Faults) {
        let rng = StdRng::seed_from_u64(faults.seed);
        *self.inner.lock().expect("fault lock") = (faults, rng);
    }

    pub fn get(&self) -> Faults {
        self.inner.lock().expect("fault lock").0.clone()
    }

    pub(crate) fn draw(&self) -> (Duration, u64, Injection) {
        let mut guard = self.inner.lock().expect("fault lock");
        let (faults, rng) = &mut *guard;
        let rate = faults.error_rate.clamp(0.0, 1.0);
        let injection = if rate > 0.0 && rng.random_bool(rate) {
            match rng.random_range(0..4) {
                0 | 1 => Injection::Throttle,
                2 => Injection::FailBefore,
                _ => Injection::FailAfter,
            }
        } else {
            Injection::Pass
        };
        (faults.latency, faults.retry_after_secs, injection)
    }
}
