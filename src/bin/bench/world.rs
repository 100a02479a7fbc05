//! The parent side of the end-to-end benches: the simulator crate's world (a seeded simulator
//! with the month's vendor usage on disk), and the real runner in a child process connected to it over loopback, so
//! the child's peak RSS is the extension's alone.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use connect_sim::devops::{SetupLogging, TaskResult};
use connect_sim::{SeedSpec, WorldSpec};
use payg_shared::period::Period;

use crate::measure::{self, ChildReport};

pub const PERIOD: &str = "2024-02";
/// How long after an upload the simulator processes it, unless `--processing-delay` says.
pub const PROCESSING_DELAY: Duration = Duration::from_millis(5);
const HANDSHAKE_WAIT: Duration = Duration::from_secs(30);

/// The simulator crate's world (seeded simulator, the month's export in `dir`), with the
/// bench's runner child.
pub struct World(connect_sim::World);

impl std::ops::Deref for World {
    type Target = connect_sim::World;

    fn deref(&self) -> &connect_sim::World {
        &self.0
    }
}

impl World {
    /// A simulator seeded with `seed` whose uploads are processed `processing_delay` after
    /// they arrive, and the month's vendor usage written to `dir`.
    pub async fn start(
        seed: &SeedSpec,
        dir: &Path,
        processing_delay: Duration,
    ) -> Result<World, String> {
        let period = Period::parse(PERIOD).expect("a valid period");
        let spec = WorldSpec {
            processing_delay,
            dir: Some(dir.to_path_buf()),
            ..WorldSpec::new(seed.clone(), period)
        };
        connect_sim::World::start(spec)
            .await
            .map(World)
            .map_err(|e| e.to_string())
    }

    /// Stops the simulator and frees the world here and now.
    pub async fn close(self) {
        self.0.close().await;
    }

    /// The settings the extension gets, as environment variables.
    pub fn env(&self) -> BTreeMap<String, String> {
        let mut env = self.connection_env();
        env.extend(
            [
                ("INSTANCE_ID", "bench-instance".to_string()),
                ("USAGE_SOURCE", self.usage_source()),
                ("REPORT_PERIOD", PERIOD.to_string()),
                ("READY_POLL_INTERVAL_MS", "5".to_string()),
                ("READY_TIMEOUT", "600".to_string()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        env
    }

    /// Starts the runner child and waits for both of its connections to be handshaken.
    pub async fn start_runner(&self) -> Result<Child, String> {
        self.start_runner_with(&BTreeMap::new()).await
    }

    /// Turns on what an operator watches: the setup response carries a logging key, so the
    /// runner ships its lines (INFO) to the simulator's log service, and the runner serves
    /// `/metrics`; returns the runner's extra environment and the metrics address.
    pub fn observe(&self) -> (BTreeMap<String, String>, String) {
        self.sim.devops().set_logging(SetupLogging {
            logging_api_key: Some("bench-logging-key".into()),
            log_level: Some("INFO".into()),
            runner_log_level: Some("INFO".into()),
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9464);
        let metrics = format!("127.0.0.1:{port}");
        let env = [
            (
                "LOG_SHIPPING_URL",
                format!("http://{}/_sim/logs", self.sim.server_address()),
            ),
            ("METRICS_ADDRESS", metrics.clone()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into();
        (env, metrics)
    }

    /// [`World::start_runner`] with `extra` environment.
    pub async fn start_runner_with(
        &self,
        extra: &BTreeMap<String, String>,
    ) -> Result<Child, String> {
        let mut env = self.env();
        env.insert("RUST_LOG".into(), "info".into());
        env.extend(extra.clone());
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
