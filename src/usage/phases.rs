//! Where a run's time goes, by phase of the pipeline: reading and parsing the source, the
//! record checks, resolution against Connect, grouping (placing and storing rows), and writing
//! workbooks. Each phase adds the time it took to a process-wide counter, measured per chunk
//! or group (never per record), so the figures cost nothing measurable; phases run on several
//! threads at once, so they add up to more than the wall time. The bench prints them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Parse,
    Check,
    Resolve,
    Group,
    Write,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Parse,
        Phase::Check,
        Phase::Resolve,
        Phase::Group,
        Phase::Write,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Parse => "parse",
            Phase::Check => "check",
            Phase::Resolve => "resolve",
            Phase::Group => "group",
            Phase::Write => "write",
        }
    }
}

static NANOS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

/// Wall time from opening the source to the last record placed (every period of the process):
/// parsing, checks, resolution and grouping overlap there, workbooks come after it.
static COLLECTING: AtomicU64 = AtomicU64::new(0);

/// Adds the time since `since` to `phase`; returns now, for the next phase.
pub fn add(phase: Phase, since: Instant) -> Instant {
    let now = Instant::now();
    let nanos = u64::try_from((now - since).as_nanos()).unwrap_or(u64::MAX);
    NANOS[phase as usize].fetch_add(nanos, Ordering::Relaxed);
    now
}

/// Seconds spent in each phase so far in this process.
pub fn seconds() -> Vec<(&'static str, f64)> {
    Phase::ALL
        .iter()
        .map(|phase| {
            let nanos = NANOS[*phase as usize].load(Ordering::Relaxed);
            (phase.name(), nanos as f64 / 1e9)
        })
        .collect()
}

/// Adds the wall time since `since` to the collection's (one call a read of the source).
pub fn collected(since: Instant) {
    let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
    COLLECTING.fetch_add(nanos, Ordering::Relaxed);
}

/// Seconds of wall time spent collecting records so far in this process.
pub fn collecting_seconds() -> f64 {
    COLLECTING.load(Ordering::Relaxed) as f64 / 1e9
}
