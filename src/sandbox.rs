//! `connect-payg sandbox`: the whole product against the built-in Connect simulator, in one
//! command, with no account and no network.
//!
//! Nothing is shortcut: the real runner connects to the simulator's DevOps websocket, the
//! platform side fires the schedule, the report reads a generated vendor export and files the
//! periods over REST, usage-file events flow back as tasks. The story a vendor meets in a year,
//! in one minute:
//!
//! 1. **Catch-up**: the export holds last month and the month before, which was never filed
//!    (the extension was down when it ended); one scheduled run files both, oldest first.
//! 2. **A late record**: a record of the earlier month reaches the export after its files were
//!    submitted; the next scheduled run files it, and only it, in a supplemental file.
//! 3. **A rejection**: the "provider" accepts every file but one; the "vendor" corrects the
//!    source; the rejection handler rebuilds and resubmits the file; the provider accepts it.
//!
//! The summary shows every file's history.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::config::SettingsSources;
use crate::connect::FileStatus;
use crate::devops::protocol::ResultCode;
use crate::usage::period::Period;
use connect_sim::devops::SetupLogging;
use connect_sim::{BadRowSpec, FileSummary, SeedSpec, WorldSpec};

/// The schedulable the sandbox fires.
const SCHEDULE: &str = crate::handlers::MONTHLY_REPORT_METHOD;
/// The id of the record that reaches the earlier month's export late.
const LATE_RECORD_ID: &str = "late-record-1";
/// How long any one stage may take before the sandbox gives up and says where it stopped.
const STAGE_LIMIT: Duration = Duration::from_secs(120);
/// Fewest subscriptions the story needs (two contracts, a rejected file, accepted ones).
pub const MIN_SUBSCRIPTIONS: usize = 10;
/// Most subscriptions, whatever the memory: beyond this the sandbox shows nothing new.
pub const MAX_SUBSCRIPTIONS: usize = 1_000_000;
/// Memory one subscription costs at the peak of a sandbox run (measured ~2.4 KB, with margin).
const BYTES_PER_SUBSCRIPTION: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{0}")]
    World(connect_sim::WorldError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the sandbox stopped while {stage}: {reason}")]
    Stage { stage: &'static str, reason: String },
}

pub struct SandboxOptions {
    pub subscriptions: usize,
    /// Where the vendor export, workbooks and bad-records CSV go.
    pub out_dir: PathBuf,
}

fn stage(stage: &'static str, reason: impl Into<String>) -> SandboxError {
    SandboxError::Stage {
        stage,
        reason: reason.into(),
    }
}

fn write(path: &Path, text: &str) -> Result<(), SandboxError> {
    crate::output::write_bytes(path, text.as_bytes())
        .map(drop)
        .map_err(|failed| SandboxError::Write {
            path: failed.path,
            source: failed.source,
        })
}

/// Refuses a `--subscriptions` the story cannot use or the machine cannot hold, naming the
/// limit; `available` is the memory free for it in bytes, when known.
pub fn check_subscriptions(subscriptions: usize, available: Option<u64>) -> Result<(), String> {
    if subscriptions < MIN_SUBSCRIPTIONS {
        return Err(format!(
            "--subscriptions {subscriptions}: the sandbox needs at least {MIN_SUBSCRIPTIONS}"
        ));
    }
    if subscriptions > MAX_SUBSCRIPTIONS {
        return Err(format!(
            "--subscriptions {subscriptions}: the sandbox takes at most {MAX_SUBSCRIPTIONS}"
        ));
    }
    if let Some(available) = available {
        let fits = usize::try_from(available / BYTES_PER_SUBSCRIPTION).unwrap_or(usize::MAX);
        if subscriptions > fits {
            return Err(format!(
                "--subscriptions {subscriptions}: this machine has {} MiB of memory available, \
                 enough for at most {fits} subscriptions (about {BYTES_PER_SUBSCRIPTION} bytes each)",
                available / (1024 * 1024)
            ));
        }
    }
    Ok(())
}

/// `MemAvailable` of `/proc/meminfo`, in bytes; `None` where there is no such file.
pub fn memory_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The simulator crate's world (a seeded simulator and the month's vendor export) in the
/// sandbox's output folder.
pub struct Playground(connect_sim::World);

impl std::ops::Deref for Playground {
    type Target = connect_sim::World;

    fn deref(&self) -> &connect_sim::World {
        &self.0
    }
}

impl Playground {
    pub async fn start(options: &SandboxOptions) -> Result<Playground, SandboxError> {
        let out_dir =
            std::path::absolute(&options.out_dir).map_err(|source| SandboxError::Write {
                path: options.out_dir.clone(),
                source,
            })?;
        // Each run starts with an empty workbook folder: an earlier run's workbooks would be
        // mistaken for this one's.
        let workbooks = out_dir.join("workbooks");
        match std::fs::remove_dir_all(&workbooks) {
            Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
                return Err(SandboxError::Write {
                    path: workbooks,
                    source,
                })
            }
            _ => {}
        }
        crate::output::create_dir(&workbooks).map_err(|failed| SandboxError::Write {
            path: failed.path,
            source: failed.source,
        })?;
        let subscriptions = options.subscriptions;
        let seed = SeedSpec {
            seed: 2024,
            contracts: (subscriptions / 60).clamp(2, 40),
            products: 3,
            subscriptions,
            ..SeedSpec::default()
        };
        let spec = WorldSpec {
            processing_delay: Duration::from_millis(30),
            dir: Some(out_dir),
            ..WorldSpec::new(seed, Period::previous_to(Utc::now()))
        };
        let world = connect_sim::World::start(spec)
            .await
            .map_err(SandboxError::World)?;
        Ok(Playground(world))
    }

    /// The sandbox's output folder: the vendor export, workbooks, bad-records CSV.
    pub fn out_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The extension variables the platform holds for this environment: the catch-up window
    /// is the two months the story exports, late records are filed.
    fn set_variables(&self, usage_source: &str) {
        self.set_extension_variables(&[
            ("USAGE_SOURCE", usage_source),
            ("MAX_RESUBMISSIONS", "2"),
            ("CATCH_UP_PERIODS", "2"),
            ("LATE_RECORDS", "file"),
        ]);
    }

    /// Where the vendor export of `period` is.
    fn export(&self, period: Period) -> PathBuf {
        self.out_dir().join(format!("usage-{period}.csv"))
    }

    /// Fires the schedule, waits until `done` holds for the files and the task answered
    /// `success`; returns its message.
    async fn scheduled_run(
        &self,
        what: &'static str,
        progress: &Progress,
        done: impl Fn(&[FileSummary]) -> bool,
    ) -> Result<String, SandboxError> {
        let task = self.sim.devops().fire_schedule(SCHEDULE);
        progress.step(&format!(
            "platform fired the schedule {SCHEDULE} (task {task})"
        ));
        self.wait_until(what, progress, done).await?;
        let result = self
            .sim
            .devops()
            .wait_for_result(&task, STAGE_LIMIT)
            .await
            .ok_or_else(|| stage(what, "the schedule gave no result"))?;
        match result.output.result {
            ResultCode::Success => Ok(result.output.message.unwrap_or_default()),
            _ => Err(stage(what, result.output.message.unwrap_or_default())),
        }
    }

    /// The environment a runner (ours in-process, or `connect-payg run` by hand) needs.
    pub fn runner_env(&self) -> Vec<(String, String)> {
        let mut env = self.connection_env();
        env.insert("READY_POLL_INTERVAL_MS".into(), "50".into());
        env.insert(
            "WORKBOOK_DIR".into(),
            self.out_dir().join("workbooks").display().to_string(),
        );
        env.into_iter().collect()
    }

    async fn wait_until(
        &self,
        what: &'static str,
        progress: &Progress,
        done: impl Fn(&[FileSummary]) -> bool,
    ) -> Result<(), SandboxError> {
        let started = Instant::now();
        loop {
            let files = self.live_files();
            progress.files(what, &files);
            if done(&files) {
                return Ok(());
            }
            if started.elapsed() > STAGE_LIMIT {
                return Err(stage(what, format!("not done after {STAGE_LIMIT:?}")));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Progress for a person: a spinner on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Progress { bar }
    }

    fn step(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("▸ {text}")),
            None => println!("▸ {text}"),
        }
    }

    fn files(&self, what: &str, files: &[FileSummary]) {
        if let Some(bar) = &self.bar {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for file in files {
                *counts.entry(file.status.as_str()).or_default() += 1;
            }
            let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
            bar.set_message(format!("{what}… files: {}", counts.join(", ")));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Runs the whole life cycle and returns the summary to print.
pub async fn run(options: SandboxOptions) -> Result<String, SandboxError> {
    let progress = Progress::new();
    let playground = Playground::start(&options).await?;
    let sim = &playground.sim;
    let latest = playground.period;
    let missed = latest.previous();
    let missed_usage = playground
        .export_period(missed, &BadRowSpec::default())
        .map_err(SandboxError::World)?;
    progress.step(&format!(
        "simulator on {} with {} subscriptions; vendor exports for {missed} and {latest} written to {}",
        sim.server_address(),
        options.subscriptions,
        playground.out_dir().display()
    ));
    playground.set_variables(&playground.usage_source());
    // The sandbox's own output is the point: the platform leaves the log levels as they are.
    sim.devops().set_logging(SetupLogging {
        logging_api_key: None,
        log_level: None,
        runner_log_level: None,
    });

    let stop = CancellationToken::new();
    let sources = SettingsSources {
        env: Some(playground.runner_env().into_iter().collect()),
        ..SettingsSources::default()
    };
    let registry =
        crate::handlers::registry().map_err(|e| stage("building the registry", e.to_string()))?;
    let runner = tokio::spawn(crate::devops::run(sources, registry, stop.clone()));
    if !sim
        .devops()
        .wait_until(STAGE_LIMIT, |s| s.handshakes >= 2 && s.open >= 2)
        .await
    {
        return Err(stage("connecting the runner", "no handshake"));
    }
    progress.step("runner connected over the DevOps websocket (background + interactive)");

    // 1. Catch-up: the month before last was never filed; one run files both months.
    let (missed_groups, latest_groups) = (
        missed_usage.expected.groups.len(),
        playground.usage.expected.groups.len(),
    );
    let all_pending = |count: usize| {
        move |files: &[FileSummary]| {
            files.len() == count && files.iter().all(|f| f.status == FileStatus::Pending)
        }
    };
    let headline = playground
        .scheduled_run(
            "catching up",
            &progress,
            all_pending(missed_groups + latest_groups),
        )
        .await?;
    progress.step(&format!(
        "catch-up: the run covered {missed} and {latest}, oldest first; {missed_groups} files for {missed} (missed while the extension was down) and {latest_groups} for {latest}, built, uploaded, validated and submitted"
    ));

    // 2. A late record of the earlier month: filed alone in a supplemental file.
    let late_group = missed_usage
        .expected
        .groups
        .first()
        .ok_or_else(|| stage("adding a late record", "the earlier month has no group"))?;
    let late_usage = missed_usage
        .with_late_record(
            &sim.state().catalogue(),
            &late_group.contract_id,
            &late_group.product_id,
            LATE_RECORD_ID,
            "3",
        )
        .ok_or_else(|| stage("adding a late record", "the group has no good record"))?;
    write(&playground.export(missed), &late_usage.csv)?;
    playground
        .scheduled_run(
            "filing the late record",
            &progress,
            all_pending(missed_groups + latest_groups + 1),
        )
        .await?;
    let supplement = playground
        .live_files()
        .into_iter()
        .find(|f| {
            f.external_id
                .as_deref()
                .is_some_and(|id| id.ends_with(":late-1"))
        })
        .ok_or_else(|| stage("filing the late record", "no supplemental file"))?;
    progress.step(&format!(
        "record {LATE_RECORD_ID} of {missed} reached the export after its files were submitted; the next run filed it alone in {} ({})",
        supplement.id,
        supplement.external_id.as_deref().unwrap_or_default()
    ));

    // 3. The provider reviews: one file of the latest month is rejected, the rest accepted.
    let files = playground.live_files();
    let latest_suffix = format!(":{latest}");
    let rejected = files
        .iter()
        .find(|f| {
            f.external_id
                .as_deref()
                .is_some_and(|id| id.ends_with(&latest_suffix))
        })
        .cloned()
        .ok_or_else(|| stage("rejecting a file", format!("no file of {latest}")))?;
    let (corrected, correction) = playground
        .usage
        .correct_quantity(
            &sim.state().catalogue(),
            &rejected.contract_id,
            &rejected.product_id,
            "7",
        )
        .ok_or_else(|| stage("correcting the source", "the group has no good record"))?;
    for file in files.iter().filter(|f| f.id != rejected.id) {
        sim.state()
            .accept(&file.id, Some("Approved for billing"))
            .map_err(|e| stage("accepting files", e.to_string()))?;
    }
    // The corrected export holds both months, as the vendor's export job writes them.
    let corrected_path = |period: Period| {
        playground
            .out_dir()
            .join(format!("usage-{period}-corrected.csv"))
    };
    write(&corrected_path(latest), &corrected.csv)?;
    write(&corrected_path(missed), &late_usage.csv)?;
    playground.set_variables(&format!(
        "file://{}/usage-{{period}}-corrected.csv",
        playground.out_dir().display()
    ));
    sim.devops().push_setup_response();
    let note = format!(
        "Quantity {} for {} looks wrong; please check",
        correction.old_quantity, correction.asset_id
    );
    sim.state()
        .reject(&rejected.id, &note)
        .map_err(|e| stage("rejecting a file", e.to_string()))?;
    progress.step(&format!(
        "provider accepted {} files and rejected {} (\"{note}\"); vendor corrected the source",
        files.len() - 1,
        rejected.id
    ));
    playground
        .wait_until("rebuilding the rejected file", &progress, |files| {
            files.iter().any(|f| {
                f.id == rejected.id
                    && f.status == FileStatus::Pending
                    && f.history.contains(&FileStatus::Rejected)
            })
        })
        .await?;
    sim.state()
        .accept(&rejected.id, Some("Corrected, thanks"))
        .map_err(|e| stage("accepting the resubmission", e.to_string()))?;
    playground
        .wait_until("finishing", &progress, |files| {
            files.iter().all(|f| f.status == FileStatus::Accepted)
        })
        .await?;
    // Let the last `accepted` events reach the runner and be answered before stopping it.
    let settle = Instant::now();
    while sim.devops().stats().results < sim.devops().stats().tasks_sent
        && settle.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.cancel();
    let stopped = runner.await;
    progress.finish();
    if let Ok(Err(error)) = stopped {
        return Err(stage("stopping the runner", error.to_string()));
    }

    let rebuilt_rows = sim.state().uploaded_rows(&rejected.id).unwrap_or_default();
    let quantity_fixed = rebuilt_rows.iter().any(|row| {
        row.asset_search_value == crate::usage::workbook::Cell::Text(correction.asset_id.clone())
            && row.quantity
                == crate::usage::workbook::Cell::Number(
                    correction.new_quantity.parse().unwrap_or_default(),
                )
    });
    let late_line = format!(
        "Late record: {LATE_RECORD_ID} of {missed} arrived after filing and was filed alone in {} ({}).",
        supplement.id,
        supplement.external_id.as_deref().unwrap_or_default()
    );
    Ok(summary(
        &playground,
        &headline,
        &late_line,
        &rejected.id,
        &note,
        quantity_fixed,
    ))
}

fn summary(
    playground: &Playground,
    headline: &str,
    late_line: &str,
    rejected_id: &str,
    note: &str,
    quantity_fixed: bool,
) -> String {
    let sim = &playground.sim;
    let mut text = String::new();
    let periods = [playground.period.previous(), playground.period];
    let _ = writeln!(
        text,
        "\nconnect-payg sandbox: periods {} and {}, {} subscriptions\n",
        periods[0],
        periods[1],
        sim.state().catalogue().assets.len()
    );
    let _ = writeln!(
        text,
        "{:<23} {:<16} {:<14} {:<21} {:>6}  status history",
        "contract", "product", "period", "usage file", "rows"
    );
    let mut files = playground.live_files();
    files.sort_by(|a, b| a.external_id.cmp(&b.external_id));
    for file in files {
        // `<contract>:<product>:<period>[:late-<n>]`: the period and the part.
        let period = file
            .external_id
            .as_deref()
            .and_then(|id| id.splitn(3, ':').nth(2))
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "{:<23} {:<16} {:<14} {:<21} {:>6}  {}",
            file.contract_id,
            file.product_id,
            period,
            file.id,
            file.records,
            file.history
                .iter()
                .map(FileStatus::as_str)
                .collect::<Vec<_>>()
                .join(" → ")
        );
    }
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "Resubmission: {rejected_id} was rejected (\"{note}\"), rebuilt from the corrected source{}, resubmitted and accepted.",
        if quantity_fixed { " with the corrected quantity" } else { "" }
    );
    let _ = writeln!(text, "{late_line}");
    let _ = writeln!(text, "Catch-up run's result: {headline}");
    let webhooks = sim.state().webhooks();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for hook in &webhooks {
        *kinds
            .entry(hook["kind"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(
        text,
        "Alerts sent to the webhook: {} ({})",
        webhooks.len(),
        kinds.join(", ")
    );
    let stats = sim.devops().stats();
    let _ = writeln!(
        text,
        "Runner: {} handshakes, {} tasks answered, {} protocol errors",
        stats.handshakes, stats.results, stats.protocol_errors
    );
    let workbooks = playground.out_dir().join("workbooks");
    for period in periods {
        let _ = writeln!(
            text,
            "Vendor export of {period}: {}",
            playground.export(period).display()
        );
    }
    let _ = writeln!(text, "Workbooks: {}", workbooks.display());
    for period in periods {
        let _ = writeln!(
            text,
            "Bad records of {period}: {}",
            workbooks
                .join(format!("bad-records-{period}.csv"))
                .display()
        );
    }
    text
}

/// `--serve`: a seeded simulator that stays up, and how to point `run` and `report` at it.
/// Each time a runner connects, the platform side fires the monthly schedule for it.
pub async fn serve(options: SandboxOptions) -> Result<(), SandboxError> {
    let playground = Playground::start(&options).await?;
    // The schedule's window is two months: the earlier one is exported too.
    let earlier = playground.period.previous();
    playground
        .export_period(earlier, &BadRowSpec::default())
        .map_err(SandboxError::World)?;
    playground.set_variables(&playground.usage_source());
    let sim = &playground.sim;
    // The platform hands out a logging key: the runner ships its logs to the simulator.
    sim.devops().set_logging(SetupLogging {
        logging_api_key: Some("sandbox-logging-key".into()),
        ..SetupLogging::default()
    });
    let mut env = playground.runner_env();
    env.push((
        "LOG_SHIPPING_URL".into(),
        format!("http://{}/_sim/logs", sim.server_address()),
    ));
    let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}='{v}'")).collect();
    println!(
        "Connect simulator listening on http://{}",
        sim.server_address()
    );
    println!("  environment id: {}", sim.environment_id());
    println!("  API key:        {}", sim.api_key());
    println!("  usage source:   {}", playground.usage_source());
    println!(
        "  periods:        {earlier} and {} (the schedule's catch-up window)",
        playground.period
    );
    println!();
    println!("Run the extension against it (the schedule fires when it connects):");
    println!("  env {} connect-payg run --unsecure", env.join(" "));
    println!("Or the report once:");
    println!(
        "  env {} USAGE_SOURCE='{}' connect-payg report --unsecure --period {} --out ./report-out",
        env.join(" "),
        playground.usage_source(),
        playground.period
    );
    println!(
        "State of the simulator: curl http://{}/_sim/state",
        sim.server_address()
    );
    println!(
        "Log lines the runner shipped (the portal's Logs view): curl http://{}/_sim/logs",
        sim.server_address()
    );
    println!("Press Ctrl-C to stop.");
    // A runner opens two connections, each with its own handshake.
    let mut handshakes_seen = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let handshakes = sim.devops().stats().handshakes;
                if handshakes >= handshakes_seen + 2 {
                    handshakes_seen = handshakes;
                    let task = sim.devops().fire_schedule(SCHEDULE);
                    println!("a runner connected: fired {SCHEDULE} (task {task})");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_bounded_by_the_story_and_the_memory() {
        const GIB: u64 = 1024 * 1024 * 1024;
        for (subscriptions, available, limit) in [
            (0, None, Some("at least 10")),
            (9, Some(GIB), Some("at least 10")),
            (10, None, None),
            (300, Some(GIB), None),
            (10_000_000, None, Some("at most 1000000")),
            (10_000_000, Some(64 * GIB), Some("at most 1000000")),
            (500_000, Some(GIB), Some("at most 262144 subscriptions")),
            (262_144, Some(GIB), None),
        ] {
            let checked = check_subscriptions(subscriptions, available);
            match limit {
                None => assert!(checked.is_ok(), "{subscriptions}: {checked:?}"),
                Some(limit) => {
                    let error = checked.unwrap_err();
                    assert!(error.contains(limit), "{subscriptions}: {error}");
                    assert!(error.contains("--subscriptions"), "{error}");
                }
            }
        }
    }
}
