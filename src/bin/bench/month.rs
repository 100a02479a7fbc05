//! The end-to-end month: the `generate_monthly_usage_reports` schedule fired at the real
//! runner (a child process) over the simulator, at several sizes and REST latencies. Wall
//! time runs from firing the schedule to its result; requests are the simulator's counters
//! (the report's and those of the usage-file events the platform sends meanwhile).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use connect_payg::connect::FileStatus;
use connect_payg::handlers::MONTHLY_REPORT_METHOD;
use connect_sim::{Faults, RequestCounts, SeedSpec, SimState};
use payg_shared::protocol::ResultCode;

use crate::measure::{self, ChildReport};
use crate::world::World;

const TASK_WAIT: Duration = Duration::from_secs(1800);

#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub subscriptions: usize,
    pub contracts: usize,
    pub products: usize,
}

pub struct Outcome {
    pub size: Size,
    pub latency: Duration,
    pub records: usize,
    pub good_rows: usize,
    pub groups: usize,
    pub seconds: f64,
    /// From firing the schedule until every group's file is submitted (`pending`): under the
    /// runner, the files' `ready` events submit them, partly after the task has answered.
    pub submitted_seconds: f64,
    pub result: String,
    pub runner: ChildReport,
    /// CPU time of this process (the simulator) during the run.
    pub simulator_cpu: f64,
    /// Peak RSS of this process (the simulator) so far, in KiB.
    pub simulator_peak_rss_kb: u64,
    pub counts: RequestCounts,
    /// Log lines the simulator's log service received (observed runs).
    pub shipped_lines: usize,
    /// `/metrics` answers scraped during the run (observed runs).
    pub scrapes: usize,
}

/// Asks `http://address/metrics` every second until aborted, counting the answers in
/// `answered`.
async fn scrape_every_second(address: String, answered: Arc<AtomicUsize>) {
    let client = reqwest::Client::new();
    let url = format!("http://{address}/metrics");
    loop {
        if let Ok(response) = client.get(&url).send().await {
            if response.status().is_success() && response.text().await.is_ok() {
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One month at `size` with `latency` added to every REST answer; uploads are processed (and
/// their `ready` events sent) `processing_delay` after they arrive.
pub async fn run_one(
    size: Size,
    latency: Duration,
    processing_delay: Duration,
    dir: &Path,
) -> Result<Outcome, String> {
    run_observed(size, latency, processing_delay, dir, false).await
}

/// [`run_one`], with log shipping and `/metrics` on when `observed` (scraped every second
/// meanwhile, as a busy Prometheus would).
pub async fn run_observed(
    size: Size,
    latency: Duration,
    processing_delay: Duration,
    dir: &Path,
    observed: bool,
) -> Result<Outcome, String> {
    let seed = SeedSpec {
        contracts: size.contracts,
        products: size.products,
        subscriptions: size.subscriptions,
        ..SeedSpec::default()
    };
    let world = World::start(&seed, dir, processing_delay).await?;
    let (extra, metrics) = match observed {
        true => {
            let (extra, metrics) = world.observe();
            (extra, Some(metrics))
        }
        false => Default::default(),
    };
    let runner = world.start_runner_with(&extra).await?;
    let scrapes = Arc::new(AtomicUsize::new(0));
    let scraper =
        metrics.map(|address| tokio::spawn(scrape_every_second(address, scrapes.clone())));
    let state = world.sim.state();
    state.set_faults(Faults {
        latency,
        error_rate: 0.0,
        ..Faults::default()
    });
    state.reset_request_counts();

    let cpu_before = measure::cpu_seconds();
    let started = Instant::now();
    let task = world.sim.devops().fire_schedule(MONTHLY_REPORT_METHOD);
    let result = world.result_of(&task, TASK_WAIT).await;
    let seconds = started.elapsed().as_secs_f64();
    let groups = world.usage.expected.groups.len();
    let submitted_seconds = every_file_submitted(state, groups, started).await;
    if let Some(scraper) = scraper {
        scraper.abort();
    }
    let scrapes = scrapes.load(Ordering::Relaxed);
    let runner = world.stop_runner(runner).await?;
    let shipped_lines = world.sim.devops().logs().lines().len();
    let simulator_cpu = measure::cpu_seconds() - cpu_before;
    let result = match result {
        Some(result) => {
            let output = result.output;
            let text = format!(
                "{:?}: {}",
                output.result,
                output.message.as_deref().unwrap_or_default()
            );
            if output.result != ResultCode::Success {
                return Err(format!("the monthly report did not succeed: {text}"));
            }
            text
        }
        None => return Err("no result from the monthly report".into()),
    };
    let outcome = Outcome {
        size,
        latency,
        records: world.records(),
        good_rows: world.usage.expected.good_rows(),
        groups: world.usage.expected.groups.len(),
        seconds,
        submitted_seconds,
        result,
        runner,
        simulator_cpu,
        simulator_peak_rss_kb: measure::peak_rss_kb(),
        counts: state.request_counts(),
        shipped_lines,
        scrapes,
    };
    world.close().await;
    Ok(outcome)
}

/// Seconds from `started` until `groups` files are pending (polled every millisecond).
async fn every_file_submitted(state: &SimState, groups: usize, started: Instant) -> f64 {
    loop {
        let pending = state.files_in(&FileStatus::Pending);
        if pending >= groups || started.elapsed() > TASK_WAIT {
            return started.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| subscriptions | contracts × products | records (good) | files | REST latency | task wall time | all files submitted | runner CPU | simulator CPU | runner peak RSS | REST requests | requests / file |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for o in outcomes {
        out.push_str(&format!(
            "| {} | {} × {} | {} ({}) | {} | {} ms | **{:.3} s** | {:.3} s | {:.2} s | {:.2} s | {} | {} | {:.1} |\n",
            o.size.subscriptions,
            o.size.contracts,
            o.size.products,
            o.records,
            o.good_rows,
            o.groups,
            o.latency.as_millis(),
            o.seconds,
            o.submitted_seconds,
            o.runner.cpu_seconds,
            o.simulator_cpu,
            measure::mib(o.runner.peak_rss_kb),
            o.counts.total,
            o.counts.total as f64 / o.groups.max(1) as f64,
        ));
    }
    out.push_str("\nSimulator (the bench's own process, peak so far): ");
    let simulator: Vec<String> = outcomes
        .iter()
        .map(|o| {
            format!(
                "{} after {} subscriptions",
                measure::mib(o.simulator_peak_rss_kb),
                o.size.subscriptions
            )
        })
        .collect();
    out.push_str(&simulator.join(", "));
    out.push_str(".\n\nTask results:\n\n");
    for o in outcomes {
        out.push_str(&format!(
            "- {} subscriptions, {} ms: {}\n",
            o.size.subscriptions,
            o.latency.as_millis(),
            o.result
        ));
    }
    out
}

/// Requests by endpoint, one column per run.
pub fn endpoints(outcomes: &[Outcome]) -> String {
    let routes: BTreeSet<&(String, String)> = outcomes
        .iter()
        .flat_map(|o| o.counts.by_route.keys())
        .collect();
    let mut out = String::from("| endpoint |");
    let mut rule = String::from("|---|");
    for o in outcomes {
        out.push_str(&format!(
            " {} subs, {} ms |",
            o.size.subscriptions,
            o.latency.as_millis()
        ));
        rule.push_str("---:|");
    }
    out.push('\n');
    out.push_str(&rule);
    out.push('\n');
    for route in routes {
        out.push_str(&format!("| `{} {}` |", route.0, route.1));
        for o in outcomes {
            out.push_str(&format!(" {} |", o.counts.get(&route.0, &route.1)));
        }
        out.push('\n');
    }
    out
}
