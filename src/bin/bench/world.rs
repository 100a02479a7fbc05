//! The parent side of the end-to-end benches: a seeded simulator with the month's vendor
//! usage on disk, and the real runner in a child process connected to it over loopback, so
//! the child's peak RSS is the extension's alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use connect_sim::devops::TaskResult;
use connect_sim::{BadRowSpec, SeedSpec, SimConfig, Simulator, VendorUsage};
use connect_payg::usage::period::Period;

use crate::measure::{self, ChildReport};

pub const PERIOD: &str = "2024-02";
/// How long after an upload the simulator processes it, unless `--processing-delay` says.
pub const PROCESSING_DELAY: Duration = Duration::from_millis(5);
const HANDSHAKE_WAIT: Duration = Duration::from_secs(30);

pub struct World {
    pub sim: Simulator,
    pub usage: VendorUsage,
    pub source_dir: PathBuf,
}

impl World {
    /// A simulator seeded with `seed` whose uploads are processed `processing_delay` after
    /// they arrive, and the month's vendor usage written to `dir`.
    pub async fn start(
        seed: &SeedSpec,
        dir: &Path,
        processing_delay: Duration,
    ) -> Result<World, String> {
        let sim = Simulator::start(SimConfig {
            processing_delay,
            ..SimConfig::default()
        })
        .await
        .map_err(|e| e.to_string())?;
        sim.state().seed(seed);
        let period = Period::parse(PERIOD).expect("a valid period");
        let usage = sim
            .state()
            .vendor_usage(period, &BadRowSpec::default())
            .map_err(|e| e.to_string())?;
        let source_dir = dir.to_path_buf();
        std::fs::write(source_dir.join(format!("usage-{PERIOD}.csv")), &usage.csv)
            .map_err(|e| e.to_string())?;
        Ok(World {
            sim,
            usage,
            source_dir,
        })
    }

    /// Stops the simulator and frees the world here and now: left to the runtime, a
    /// 100k-subscription world was still being freed inside the next measurement's window.
    pub async fn close(self) {
        self.sim.shutdown().await;
    }

    /// Records in the vendor file (header excluded).
    pub fn records(&self) -> usize {
        self.usage.csv.lines().count().saturating_sub(1)
    }

    /// The settings the extension gets, as environment variables.
    pub fn env(&self) -> BTreeMap<String, String> {
        [
            ("API_KEY", self.sim.api_key().to_string()),
            ("ENVIRONMENT_ID", self.sim.environment_id().to_string()),
            ("SERVER_ADDRESS", self.sim.server_address()),
            ("INSTANCE_ID", "bench-instance".to_string()),
            ("CONNECT_UNSECURE", "true".to_string()),
            (
                "USAGE_SOURCE",
                format!("file://{}/usage-{{period}}.csv", self.source_dir.display()),
            ),
            ("REPORT_PERIOD", PERIOD.to_string()),
            ("READY_POLL_INTERVAL_MS", "5".to_string()),
            ("READY_TIMEOUT", "600".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Starts the runner child and waits for both of its connections to be handshaken.
    pub async fn start_runner(&self) -> Result<Child, String> {
        let mut env = self.env();
        env.insert("RUST_LOG".into(), "info".into());
        let mut child = measure::spawn_self(&["runner"], &env).map_err(|e| e.to_string())?;
        let connected = self
            .sim
            .devops()
            .wait_until(HANDSHAKE_WAIT, |s| s.handshakes >= 2 && s.open >= 2)
            .await;
        if !connected {
            let _ = child.kill();
            return Err("the runner did not connect".into());
        }
        Ok(child)
    }

    /// Waits (by polling, cheap for the hub) for the result of `task_id`.
    pub async fn result_of(&self, task_id: &str, timeout: Duration) -> Option<TaskResult> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(result) = self.sim.devops().result(task_id) {
                return Some(result);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        None
    }

    /// Waits until every task sent has a result, then stops the runner and reads its report.
    pub async fn stop_runner(&self, child: Child) -> Result<ChildReport, String> {
        let hub = self.sim.devops();
        hub.wait_until(Duration::from_secs(120), |s| s.results >= s.tasks_sent)
            .await;
        hub.send_shutdown();
        tokio::task::spawn_blocking(move || measure::collect(child, "runner"))
            .await
            .map_err(|e| e.to_string())?
    }
}
