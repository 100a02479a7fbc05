//! A world to run connect-payg in: a seeded simulator, the month's vendor usage written where a
//! `file://` source reads it, and the settings that point a runner at both.
//!
//! The tests, `connect-payg sandbox` and the bench all start their world here, so the three
//! cannot drift apart in how the account is seeded, where the export lies or which variables
//! the platform holds. What differs between them (the seed, the bad rows, the month, how fast
//! uploads are processed, where the files go) is a [`WorldSpec`] field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use payg_shared::protocol::Variable;
use payg_shared::{FileStatus, Period};

use crate::{BadRowSpec, Catalogue, FileSummary, SeedSpec, SimConfig, Simulator, VendorUsage};

/// What a world holds.
#[derive(Debug, Clone)]
pub struct WorldSpec {
    pub seed: SeedSpec,
    pub bad: BadRowSpec,
    pub period: Period,
    /// How long after an upload the simulator processes it.
    pub processing_delay: Duration,
    /// Where the vendor export is written; `None`: a temporary directory removed with the world.
    pub dir: Option<PathBuf>,
}

impl WorldSpec {
    /// A world of `seed` for `period`, with the default bad rows, fast processing and a
    /// temporary directory.
    pub fn new(seed: SeedSpec, period: Period) -> WorldSpec {
        WorldSpec {
            seed,
            bad: BadRowSpec::default(),
            period,
            processing_delay: Duration::from_millis(5),
            dir: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("cannot start the simulator: {0}")]
    Simulator(std::io::Error),
    #[error("cannot generate the vendor usage: {0}")]
    Usage(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The folder the export is in: a temporary one the world owns, or one it was given.
pub struct WorldDir {
    path: PathBuf,
    _temporary: Option<tempfile::TempDir>,
}

impl WorldDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

pub struct World {
    pub sim: Simulator,
    pub dir: WorldDir,
    pub usage: VendorUsage,
    pub period: Period,
}

impl World {
    pub async fn start(spec: WorldSpec) -> Result<World, WorldError> {
        World::start_with(spec, |_| {}).await
    }

    /// [`World::start`] with the seeded catalogue changed by `edit` before the month's usage is
    /// made from it.
    pub async fn start_with(
        spec: WorldSpec,
        edit: impl FnOnce(&mut Catalogue),
    ) -> Result<World, WorldError> {
        let sim = Simulator::start(SimConfig {
            processing_delay: spec.processing_delay,
            ..SimConfig::default()
        })
        .await
        .map_err(WorldError::Simulator)?;
        // Generated and edited before it is installed once: seeding, taking a snapshot and
        // installing it again held two catalogues and indexed both.
        let mut catalogue = Catalogue::generate(&spec.seed);
        edit(&mut catalogue);
        sim.state().install(catalogue);
        let usage = sim
            .state()
            .vendor_usage(spec.period, &spec.bad)
            .map_err(|e| WorldError::Usage(e.to_string()))?;
        let dir = match spec.dir {
            Some(path) => WorldDir {
                path,
                _temporary: None,
            },
            None => {
                let temporary = tempfile::tempdir().map_err(|source| WorldError::Write {
                    path: std::env::temp_dir(),
                    source,
                })?;
                WorldDir {
                    path: temporary.path().to_path_buf(),
                    _temporary: Some(temporary),
                }
            }
        };
        let export = dir.path().join(format!("usage-{}.csv", spec.period));
        std::fs::write(&export, &usage.csv).map_err(|source| WorldError::Write {
            path: export,
            source,
        })?;
        Ok(World {
            sim,
            dir,
            usage,
            period: spec.period,
        })
    }

    /// Generates the vendor usage of one more `period` (the catch-up window's other months or
    /// days) over the installed catalogue and writes it beside the world's own export, where
    /// [`World::usage_source`] finds it.
    pub fn export_period(
        &self,
        period: Period,
        bad: &BadRowSpec,
    ) -> Result<VendorUsage, WorldError> {
        let usage = self
            .sim
            .state()
            .vendor_usage(period, bad)
            .map_err(|e| WorldError::Usage(e.to_string()))?;
        let export = self.dir.path().join(format!("usage-{period}.csv"));
        std::fs::write(&export, &usage.csv).map_err(|source| WorldError::Write {
            path: export,
            source,
        })?;
        Ok(usage)
    }

    /// Stops the simulator and frees the world here and now (left to the runtime, a
    /// 100k-subscription world was still being freed inside the bench's next measurement).
    pub async fn close(self) {
        self.sim.shutdown().await;
    }

    /// `USAGE_SOURCE` for the export: `file://<dir>/usage-{period}.csv`.
    pub fn usage_source(&self) -> String {
        format!("file://{}/usage-{{period}}.csv", self.dir.path().display())
    }

    /// Records in the vendor export (its header excluded).
    pub fn records(&self) -> usize {
        self.usage.csv.lines().count().saturating_sub(1)
    }

    /// Where and how a runner reaches this simulator: the environment-only settings.
    pub fn connection_env(&self) -> BTreeMap<String, String> {
        [
            ("API_KEY", self.sim.api_key().to_string()),
            ("ENVIRONMENT_ID", self.sim.environment_id().to_string()),
            ("SERVER_ADDRESS", self.sim.server_address()),
            ("CONNECT_UNSECURE", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The simulator's alert webhook, as `ALERT_WEBHOOK_URL`.
    pub fn webhook_url(&self) -> String {
        format!("http://{}/_sim/webhook", self.sim.server_address())
    }

    /// Sets the extension variables the platform sends in its setup response: `USAGE_SOURCE`,
    /// the simulator's webhook, and `extra` (which may replace either). Variables named
    /// `…_AUTH` are marked secure, as a vendor would mark them in the portal.
    pub fn set_extension_variables(&self, extra: &[(&str, &str)]) {
        let mut variables: BTreeMap<String, String> = [
            ("USAGE_SOURCE".to_string(), self.usage_source()),
            ("ALERT_WEBHOOK_URL".to_string(), self.webhook_url()),
        ]
        .into_iter()
        .collect();
        for (k, v) in extra {
            variables.insert(k.to_string(), v.to_string());
        }
        self.sim.devops().set_variables(
            variables
                .into_iter()
                .map(|(name, value)| Variable {
                    secure: name.ends_with("_AUTH"),
                    name,
                    value: Some(value),
                })
                .collect(),
        );
    }

    /// Files that are not deleted.
    pub fn live_files(&self) -> Vec<FileSummary> {
        self.sim
            .state()
            .files()
            .into_iter()
            .filter(|f| f.status != FileStatus::Deleted)
            .collect()
    }

    /// Alerts of `kind` the simulator's webhook received.
    pub fn webhooks_of_kind(&self, kind: &str) -> Vec<serde_json::Value> {
        self.sim
            .state()
            .webhooks()
            .into_iter()
            .filter(|w| w["kind"] == kind)
            .collect()
    }

    /// Polls until `condition` holds; false once `limit` has passed without it.
    pub async fn poll_until(&self, limit: Duration, condition: impl Fn(&World) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while !condition(self) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}
