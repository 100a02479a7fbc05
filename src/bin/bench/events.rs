//! Event throughput: `usage_file_request_processing` tasks for accepted usage files (the
//! handler reads the file and logs it, so this measures the runner's own path: websocket in,
//! the file read over REST, handler, result out) through the real runner in a child. The files
//! were filed by another process, so each event reads its file by id: one request (the
//! runner's status re-check and read took two before issue 19).
//!
//! Two measurements: one event at a time (latency with an idle runner), and a burst of N
//! events sent at once (throughput; latency then includes queueing behind the runner's
//! concurrency limit).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use connect_payg::config::SettingsSources;
use connect_payg::connect::{ClientOptions, ConnectClient, FileStatus};
use connect_payg::handlers::USAGE_FILE_EVENT;
use connect_payg::usage::Submission;
use connect_payg::usage::{ReportJob, Reporter};
use connect_sim::SeedSpec;
use payg_shared::period::Period;
use payg_shared::protocol::ResultCode;

use crate::before;
use crate::measure::{self, ChildReport};
use crate::world::{World, PERIOD, PROCESSING_DELAY};

const WAIT: Duration = Duration::from_secs(300);

pub struct Outcome {
    pub files: usize,
    pub sequential: Vec<Duration>,
    pub burst: Vec<Duration>,
    pub burst_seconds: f64,
    pub failures: usize,
    pub requests: u64,
    pub runner: ChildReport,
    /// CPU time of this process (simulator and hub) while the events ran.
    pub simulator_cpu: f64,
}

pub async fn run(sequential: usize, burst: usize, dir: &Path) -> Result<Outcome, String> {
    let seed = SeedSpec {
        contracts: 10,
        products: 5,
        subscriptions: 500,
        ..SeedSpec::default()
    };
    let world = World::start(&seed, dir, PROCESSING_DELAY).await?;
    let files = accepted_files(&world, dir).await?;
    let runner = world.start_runner().await?;
    let hub = world.sim.devops();
    world.sim.state().reset_request_counts();
    let cpu_before = measure::cpu_seconds();

    let mut sequential_latencies = Vec::with_capacity(sequential);
    let mut failures = 0;
    for n in 0..sequential {
        let sent = Instant::now();
        let task = hub.send_background_task(USAGE_FILE_EVENT, &files[n % files.len()]);
        let result = hub
            .wait_for_result(&task, WAIT)
            .await
            .ok_or("an event got no result")?;
        sequential_latencies.push(sent.elapsed());
        failures += usize::from(result.output.result != ResultCode::Success);
    }

    let seen_before = hub.stats().results;
    let started = Instant::now();
    let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(burst);
    for n in 0..burst {
        let task = hub.send_background_task(USAGE_FILE_EVENT, &files[n % files.len()]);
        sent_at.insert(task, Instant::now());
    }
    let mut burst_latencies = Vec::with_capacity(burst);
    let mut seen = seen_before;
    while burst_latencies.len() < burst {
        let arrived = hub.wait_until(WAIT, |s| s.results > seen).await;
        if !arrived {
            return Err(format!(
                "{} of {burst} events got no result",
                burst - burst_latencies.len()
            ));
        }
        let now = Instant::now();
        let results = hub.results();
        for result in &results[seen..] {
            if let Some(sent) = sent_at.get(&result.task_id) {
                burst_latencies.push(now - *sent);
                failures += usize::from(result.output.result != ResultCode::Success);
            }
        }
        seen = results.len();
        // Let results gather (5 ms, well below the burst latencies): each look copies the
        // hub's whole result list, and the copying competes with the runner for the cores.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let burst_seconds = started.elapsed().as_secs_f64();
    let requests = world.sim.state().request_counts().total;
    let simulator_cpu = measure::cpu_seconds() - cpu_before;
    let runner = world.stop_runner(runner).await?;
    world.close().await;
    Ok(Outcome {
        files: files.len(),
        sequential: sequential_latencies,
        burst: burst_latencies,
        burst_seconds,
        failures,
        requests,
        runner,
        simulator_cpu,
    })
}

/// Files the month's report creates (run here, in the parent, before the runner starts),
/// then accepted by the provider.
async fn accepted_files(world: &World, dir: &Path) -> Result<Vec<String>, String> {
    let settings = SettingsSources {
        env: Some(world.env().into_iter().collect()),
        ..SettingsSources::default()
    }
    .load()
    .map_err(|e| e.to_string())?;
    let client =
        ConnectClient::new(ClientOptions::from_settings(&settings).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let reporter = Reporter::new(client, settings.report);
    let job = ReportJob {
        period: Period::parse(PERIOD).expect("a valid period"),
        contracts: Vec::new(),
        products: Vec::new(),
        dry_run: false,
        workdir: dir.join("workbooks"),
        keep_workbooks: false,
        submission: Submission::Poll,
        allow_empty: false,
    };
    let summary = reporter.run(&job, None).await.map_err(|e| e.to_string())?;
    if summary.failed() > 0 {
        return Err(summary.headline());
    }
    let state = world.sim.state();
    let mut accepted = Vec::new();
    for file in state.files() {
        if file.status == FileStatus::Pending {
            state
                .accept(&file.id, Some("accepted by the bench"))
                .map_err(|e| format!("{e:?}"))?;
            accepted.push(file.id);
        }
    }
    if accepted.is_empty() {
        return Err("the report filed nothing".into());
    }
    Ok(accepted)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

pub fn table(o: &mut Outcome) -> String {
    o.sequential.sort();
    o.burst.sort();
    format!(
        "| mode | events | events/s | p50 | p99 | failures |\n|---|---:|---:|---:|---:|---:|\n\
         | one at a time | {} | {:.0} | {} | {} | |\n\
         | burst (all sent at once) | {} | {:.0} → **{:.0}** | {} | {} | {} |\n\n\
         Runner peak RSS {}, runner CPU {:.2} s (start-up included), \
         simulator and hub CPU {:.2} s; {} REST requests for {} events over {} \
         accepted files ({:.0} → {:.2} per event, before issue 19 → now).\n",
        o.sequential.len(),
        o.sequential.len() as f64
            / o.sequential
                .iter()
                .sum::<Duration>()
                .as_secs_f64()
                .max(1e-9),
        ms(percentile(&o.sequential, 50.0)),
        ms(percentile(&o.sequential, 99.0)),
        o.burst.len(),
        before::EVENTS.0,
        o.burst.len() as f64 / o.burst_seconds,
        ms(percentile(&o.burst, 50.0)),
        ms(percentile(&o.burst, 99.0)),
        o.failures,
        measure::mib(o.runner.peak_rss_kb),
        o.runner.cpu_seconds,
        o.simulator_cpu,
        o.requests,
        o.sequential.len() + o.burst.len(),
        o.files,
        before::EVENTS.1,
        o.requests as f64 / (o.sequential.len() + o.burst.len()).max(1) as f64,
    )
}
