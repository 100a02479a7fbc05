//! Shared fixtures for the end-to-end tests: a seeded simulator, the month's vendor usage on
//! disk, settings pointing at both, and the property every test ends on — each expected group
//! has exactly one live usage file holding exactly its rows.

#![allow(dead_code)]

pub mod task_ledger;

use std::path::PathBuf;
use std::time::Duration;

use connect_payg::config::{Settings, SettingsSources};
use connect_payg::connect::{ClientOptions, ConnectClient, FileStatus};
use connect_payg::usage::workbook::{Cell, UsageRow};
use connect_payg::usage::Submission;
use connect_payg::usage::{ReportJob, Reporter};
use connect_sim::devops::TaskResult;
use connect_sim::{
    BadRowSpec, Catalogue, ExpectedGroup, FileSummary, SeedSpec, Simulator, WorldSpec,
};
use payg_shared::period::Period;
use payg_shared::protocol::ResultCode;

/// The simulator crate's world, with what the product's tests do in it: settings, a client,
/// a reporter, a runner, and the filing promise every test ends on.
pub struct World(pub connect_sim::World);

impl std::ops::Deref for World {
    type Target = connect_sim::World;

    fn deref(&self) -> &connect_sim::World {
        &self.0
    }
}

/// Each group's rows as the workbook holds them, as a sorted multiset: what two ways of reading
/// the same month must agree on.
pub fn rows_by_group(
    collection: &connect_payg::usage::Collection,
    period: Period,
) -> std::collections::BTreeMap<connect_payg::usage::GroupKey, Vec<String>> {
    collection
        .groups
        .iter()
        .map(|(key, group)| {
            let mut rows: Vec<String> = group
                .rows
                .iter()
                .map(|row| {
                    let row = row.expect("a spilled row reads back");
                    format!(
                        "{:?}",
                        connect_payg::usage::workbook::usage_row(&row, period)
                    )
                })
                .collect();
            rows.sort();
            (key.clone(), rows)
        })
        .collect()
}

pub fn period(text: &str) -> Period {
    Period::parse(text).unwrap()
}

/// A small month, 2024-06 over 4 contracts × 3 products, everything seeded by `seed`: the
/// world of the tests that kill or spill a run.
pub async fn small_month(seed: u64, subscriptions: usize) -> World {
    world(
        SeedSpec {
            seed,
            contracts: 4,
            products: 3,
            subscriptions,
            ..SeedSpec::default()
        },
        BadRowSpec {
            seed,
            ..BadRowSpec::default()
        },
        period("2024-06"),
    )
    .await
}

pub async fn world(seed: SeedSpec, bad: BadRowSpec, period: Period) -> World {
    world_with(seed, bad, period, |_| {}).await
}

/// [`world`] with the seeded catalogue changed by `edit` before the month's usage is made.
pub async fn world_with(
    seed: SeedSpec,
    bad: BadRowSpec,
    period: Period,
    edit: impl FnOnce(&mut Catalogue),
) -> World {
    let spec = WorldSpec {
        bad,
        ..WorldSpec::new(seed, period)
    };
    World(connect_sim::World::start_with(spec, edit).await.unwrap())
}

pub async fn default_world() -> World {
    world(
        SeedSpec::default(),
        BadRowSpec::default(),
        period("2024-02"),
    )
    .await
}

impl World {
    pub fn settings(&self, extra: &[(&str, &str)]) -> Settings {
        let mut env = self.connection_env();
        env.extend(
            [
                ("USAGE_SOURCE", self.usage_source()),
                ("REPORT_PERIOD", self.period.to_string()),
                ("READY_POLL_INTERVAL_MS", "5".to_string()),
                ("READY_TIMEOUT", "30".to_string()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        SettingsSources {
            env: Some(env.into_iter().collect()),
            file: Some(self.dir.path().join("none.toml")).filter(|p| p.exists()),
            ..Default::default()
        }
        .load()
        .unwrap()
    }

    pub fn client(&self, settings: &Settings) -> ConnectClient {
        let mut options = ClientOptions::from_settings(settings).unwrap();
        options.base_delay = Duration::from_millis(2);
        options.max_delay = Duration::from_millis(20);
        ConnectClient::new(options).unwrap()
    }

    pub fn reporter(&self, extra: &[(&str, &str)]) -> Reporter {
        let settings = self.settings(extra);
        Reporter::new(self.client(&settings), settings.report)
    }

    pub fn job(&self) -> ReportJob {
        ReportJob {
            period: self.period,
            contracts: Vec::new(),
            products: Vec::new(),
            dry_run: false,
            workdir: self.dir.path().join("workbooks"),
            keep_workbooks: false,
            submission: Submission::Poll,
            allow_empty: false,
        }
    }

    /// Asserts the promise: one live file per expected group, in `status`, with exactly the
    /// expected rows (as multisets), the group's currency and the month as period.
    pub async fn assert_filed_exactly(&self, status: FileStatus) {
        let client = self.client(&self.settings(&[]));
        let live = self.live_files();
        let expected = &self.usage.expected.groups;
        assert_eq!(
            live.len(),
            expected.len(),
            "one live file per group: {live:#?}"
        );
        for group in expected {
            let files: Vec<&FileSummary> = live
                .iter()
                .filter(|f| f.contract_id == group.contract_id && f.product_id == group.product_id)
                .collect();
            assert_eq!(
                files.len(),
                1,
                "group {}/{}",
                group.contract_id,
                group.product_id
            );
            let file = files[0];
            assert_eq!(
                file.status, status,
                "file {} history {:?}",
                file.id, file.history
            );
            assert_eq!(
                file.external_id.as_deref(),
                Some(
                    format!("{}:{}:{}", group.contract_id, group.product_id, self.period).as_str()
                )
            );
            assert_eq!(
                uploaded(&self.sim, &file.id),
                expected_rows(group),
                "rows of {}",
                file.id
            );
            let detail = client.usage_file(&file.id).await.unwrap();
            assert_eq!(
                detail.currency.as_deref(),
                Some(group.currency.as_str()),
                "currency of {}",
                file.id
            );
            let file_period = detail.period.expect("period");
            assert_eq!(file_period.from, self.period.first_day().to_string());
            assert_eq!(file_period.to, self.period.last_day().to_string());
        }
    }
}

pub type Row = (String, String, String, String, String);

fn text(cell: &Cell) -> String {
    match cell {
        Cell::Empty => String::new(),
        Cell::Text(text) => text.clone(),
        Cell::Number(number) => format!("{number}"),
    }
}

/// The rows of a file's last upload as (asset, item, quantity, start, end), sorted.
pub fn uploaded(sim: &Simulator, file_id: &str) -> Vec<Row> {
    let rows: Vec<UsageRow> = sim.state().uploaded_rows(file_id).unwrap_or_default();
    let mut rows: Vec<Row> = rows
        .iter()
        .map(|row| {
            (
                text(&row.asset_search_value),
                text(&row.item_search_value),
                text(&row.quantity),
                text(&row.start_time_utc),
                text(&row.end_time_utc),
            )
        })
        .collect();
    rows.sort();
    rows
}

pub fn expected_rows(group: &ExpectedGroup) -> Vec<Row> {
    let mut rows: Vec<Row> = group
        .rows
        .iter()
        .map(|r| {
            (
                r.asset_id.clone(),
                r.item_mpn.clone(),
                r.quantity.clone(),
                r.start.clone(),
                r.end.clone(),
            )
        })
        .collect();
    rows.sort();
    rows
}

pub fn workdir(world: &World) -> PathBuf {
    world.dir.path().join("workbooks")
}

/// The real runner with the real handlers, connected to the world's simulator over its
/// websocket. Extension variables come from the simulator's `setup_response`, as in production.
pub struct RunningExtension {
    pub stop: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), connect_payg::devops::RunnerError>>,
}

impl World {
    /// Connection settings for a runner; report settings are pushed as extension variables.
    pub fn runner_env(&self) -> std::collections::HashMap<String, String> {
        let mut env: std::collections::HashMap<String, String> =
            self.connection_env().into_iter().collect();
        env.insert("READY_POLL_INTERVAL_MS".into(), "5".into());
        env.insert("READY_TIMEOUT".into(), "30".into());
        env
    }

    /// Sets the extension variables the platform will send (`USAGE_SOURCE`, `REPORT_PERIOD`,
    /// the webhook of the simulator, and `extra`).
    pub fn set_extension_variables(&self, extra: &[(&str, &str)]) {
        let period = self.period.to_string();
        let mut variables = vec![("REPORT_PERIOD", period.as_str())];
        variables.extend_from_slice(extra);
        self.0.set_extension_variables(&variables);
    }

    pub async fn start_extension(&self) -> RunningExtension {
        self.start_extension_with(&[]).await
    }

    /// Starts one more runner (another replica when one is already running), with `extra`
    /// added to its environment, and waits until both its connections are handshaken.
    pub async fn start_extension_with(&self, extra: &[(&str, &str)]) -> RunningExtension {
        self.start_extension_tuned(extra, |_| {}).await
    }

    /// [`World::start_extension_with`] with the runner's test options changed by `tune`.
    pub async fn start_extension_tuned(
        &self,
        extra: &[(&str, &str)],
        tune: impl FnOnce(&mut connect_payg::devops::RunnerOptions),
    ) -> RunningExtension {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_test_writer()
            .try_init();
        let mut env = self.runner_env();
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let sources = SettingsSources {
            env: Some(env),
            ..SettingsSources::default()
        };
        let mut options = connect_payg::devops::RunnerOptions {
            reconnect_delay: Duration::from_millis(50),
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            close_timeout: Duration::from_millis(200),
            drain_limit: Some(Duration::from_secs(15)),
            ..connect_payg::devops::RunnerOptions::default()
        };
        tune(&mut options);
        let stop = tokio_util::sync::CancellationToken::new();
        let registry = connect_payg::handlers::registry().unwrap();
        let before = self.sim.devops().stats();
        let task = tokio::spawn(connect_payg::devops::run_with(
            sources,
            registry,
            options,
            stop.clone(),
        ));
        assert!(
            self.sim
                .devops()
                .wait_until(Duration::from_secs(20), |s| s.handshakes
                    >= before.handshakes + 2
                    && s.open >= before.open + 2)
                .await,
            "the runner connected"
        );
        RunningExtension { stop, task }
    }

    /// Polls the simulator until `condition` holds (or fails the test after 30 s).
    /// Every expected group has exactly one live file, and all of them are `pending`.
    pub fn all_pending(&self) -> bool {
        let live = self.live_files();
        live.len() == self.usage.expected.groups.len()
            && live.iter().all(|f| f.status == FileStatus::Pending)
    }

    /// Waits until [`World::all_pending`].
    /// Fires the monthly schedule through the runner and returns its answer, which must be
    /// `success`.
    pub async fn run_schedule(&self) -> TaskResult {
        let devops = self.sim.devops();
        let task = devops.fire_schedule("generate_monthly_usage_reports");
        let result = devops
            .wait_for_result(&task, Duration::from_secs(60))
            .await
            .expect("the schedule answered");
        assert_eq!(
            result.output.result,
            ResultCode::Success,
            "{:?}",
            result.output.message
        );
        result
    }

    pub async fn wait_until_all_pending(&self) {
        self.wait_until("every file is pending", World::all_pending)
            .await;
    }

    pub async fn wait_until(&self, what: &str, condition: impl Fn(&World) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !condition(self) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting until {what}; files {:#?}",
                self.sim.state().files()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl RunningExtension {
    pub async fn stop(self) {
        self.stop.cancel();
        let result = tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the runner stops")
            .expect("the runner task did not panic");
        assert!(result.is_ok(), "{result:?}");
    }
}
