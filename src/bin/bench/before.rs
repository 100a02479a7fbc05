//! The figures each table had before issue 19 (BENCHMARKS.md, the full run of 2026-11-25 on a
//! quiet 2-core machine), printed next to this run's as "before → now" so that a change that
//! costs speed elsewhere shows in the table itself, not only in a comparison by hand.

/// Workbooks: rows → (Rust seconds, ratio against openpyxl).
const WORKBOOKS: [(u64, f64, f64); 3] = [
    (10_000, 0.011, 67.3),
    (100_000, 0.103, 73.7),
    (1_000_000, 1.013, 74.4),
];

/// The month: (subscriptions, latency ms) → (task wall s, runner peak RSS MiB, requests a file).
const MONTHS: [(usize, u128, f64, f64, f64); 6] = [
    (200, 0, 0.012, 15.5, 6.8),
    (10_000, 0, 0.396, 25.6, 6.3),
    (100_000, 0, 3.892, 123.8, 6.6),
    (200, 20, 0.247, 15.6, 6.8),
    (10_000, 20, 4.289, 24.6, 6.3),
    (100_000, 20, 21.230, 117.4, 6.6),
];

/// Events: (burst events/s, requests an event).
pub const EVENTS: (f64, f64) = (13_196.0, 2.0);

/// The workbook row of `rows` before: (Rust seconds, ratio).
pub fn workbook(rows: u64) -> Option<(f64, f64)> {
    WORKBOOKS
        .iter()
        .find(|w| w.0 == rows)
        .map(|&(_, seconds, ratio)| (seconds, ratio))
}

/// The month of `subscriptions` at `latency_ms` before: (task wall s, peak RSS MiB, requests a
/// file).
pub fn month(subscriptions: usize, latency_ms: u128) -> Option<(f64, f64, f64)> {
    MONTHS
        .iter()
        .find(|m| m.0 == subscriptions && m.1 == latency_ms)
        .map(|&(_, _, wall, rss, per_file)| (wall, rss, per_file))
}

/// `now` as "before → now" when there is a before, else as it is.
pub fn then_now(before: Option<String>, now: String) -> String {
    match before {
        Some(before) => format!("{before} → {now}"),
        None => now,
    }
}
