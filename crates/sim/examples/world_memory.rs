//! Where a seeded world's memory goes: the resident set (and its peak) after each step
//! `World::start` takes, for `N` subscriptions (the first argument; 100,000 by default).
//! `cargo run --profile profiling -p connect-sim --example world_memory -- 100000`

use connect_sim::{BadRowSpec, Catalogue, SeedSpec, SimConfig, SimState};
use payg_shared::Period;

/// `VmRSS` and `VmHWM` of this process, in MiB.
fn rss() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn step(name: &str, started: std::time::Instant) {
    let (now, peak) = rss();
    println!(
        "{name:<40} rss {now:>9.1} MiB  peak {peak:>9.1} MiB  at {:>6.2} s",
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let subscriptions: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("a number of subscriptions"))
        .unwrap_or(100_000);
    let started = std::time::Instant::now();
    step("start", started);
    let spec = SeedSpec {
        contracts: 100,
        products: 20,
        subscriptions,
        ..SeedSpec::default()
    };
    let catalogue = Catalogue::generate(&spec);
    step("catalogue generated", started);
    let state = SimState::new(SimConfig::default(), "http://127.0.0.1:1".into());
    state.install(catalogue);
    step("installed (seed)", started);
    let catalogue = state.catalogue();
    step("catalogue snapshot", started);
    state.install(catalogue);
    step("installed again (World::start_with)", started);
    let period = Period::parse("2024-02").expect("a period");
    let usage = state
        .vendor_usage(period, &BadRowSpec::default())
        .expect("usage");
    step("vendor usage generated", started);
    println!(
        "records {}, csv {:.1} MiB, expected rows {}, groups {}",
        usage.records.len(),
        usage.csv.len() as f64 / 1048576.0,
        usage.expected.good_rows(),
        usage.expected.groups.len()
    );
    drop(usage);
    step("vendor usage dropped", started);
}
