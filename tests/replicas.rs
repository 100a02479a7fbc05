//! Two instances at once (issue 8, part 3): the platform may run several replicas of an
//! extension and hand the monthly schedule to each. However their runs interleave, the end
//! state is one live file per group with exactly its rows, submitted — the filing's tie-break
//! (src/usage/filing/decide.rs) must make every replica agree on which file survives.
//!
//! In-process reporters race each other from the same start and from staggered starts (so one
//! meets the other's files in every state), with and without REST faults; then two real
//! runners both receive the schedule.
//! Long variant: `cargo test --release --test replicas -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::{period, world, World};
use connect_payg::connect::FileStatus;
use connect_payg::usage::FilingResult;
use connect_payg::usage::Summary;
use connect_sim::{BadRowSpec, Faults, SeedSpec};
use futures::future::join_all;
use payg_shared::protocol::ResultCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SCHEDULE: &str = "generate_monthly_usage_reports";

/// A runner's environment: its own workbook directory and fast REST retries.
fn runner_env(workbooks: &std::path::Path) -> [(&'static str, &str); 3] {
    [
        ("WORKBOOK_DIR", workbooks.to_str().unwrap()),
        ("API_RETRY_BASE_MS", "2"),
        ("API_RETRY_MAX_MS", "20"),
    ]
}

async fn replica_world(seed: u64, subscriptions: usize) -> World {
    world(
        SeedSpec {
            seed,
            contracts: 5,
            products: 4,
            subscriptions,
            ..SeedSpec::default()
        },
        BadRowSpec {
            seed,
            ..BadRowSpec::default()
        },
        period("2024-07"),
    )
    .await
}

/// How one race is run.
#[derive(Debug, Clone, Copy)]
struct Race {
    seed: u64,
    subscriptions: usize,
    replicas: usize,
    /// Each replica after the first starts after a random pause up to this long.
    max_stagger: Duration,
    /// Share of REST calls failing (429/500, some after taking effect).
    error_rate: f64,
}

/// No file that was given up on (deleted) had ever been submitted.
fn assert_no_submitted_file_deleted(world: &World, what: &str) {
    for file in world.sim.state().files() {
        if file.status == FileStatus::Deleted {
            assert!(
                !file.history.contains(&FileStatus::Pending),
                "{what}: a submitted file was deleted: {file:?}"
            );
        }
    }
}

/// `replicas` reporters, each with its own client and scratch directory, run the same month
/// at once; afterwards the month must be filed exactly once.
async fn race(race: Race) -> Vec<Summary> {
    let world = replica_world(race.seed, race.subscriptions).await;
    world.sim.state().set_faults(Faults {
        error_rate: race.error_rate,
        retry_after_secs: 1,
        latency: Duration::from_millis(1),
        seed: race.seed,
    });
    let mut rng = StdRng::seed_from_u64(race.seed);
    let runs = (0..race.replicas).map(|replica| {
        let stagger = if replica == 0 {
            Duration::ZERO
        } else {
            race.max_stagger.mul_f64(rng.random_range(0.0..1.0))
        };
        let reporter = world.reporter(&[]);
        let mut job = world.job();
        job.workdir = world.dir.path().join(format!("replica-{replica}"));
        async move {
            tokio::time::sleep(stagger).await;
            reporter.run(&job, None).await
        }
    });
    let runs = join_all(runs).await;
    world.sim.state().clear_faults();
    let what = format!("{race:?}");
    let summaries: Vec<Summary> = runs.into_iter().filter_map(Result::ok).collect();
    let incomplete = summaries.len() < race.replicas || summaries.iter().any(|s| s.failed() > 0);
    if incomplete {
        // A replica that ran out of attempts (REST faults) may have left a file half done;
        // whatever happened, no group was submitted twice, and the retry the platform makes
        // completes the month.
        for group in &world.usage.expected.groups {
            let submitted = world
                .sim
                .state()
                .files()
                .into_iter()
                .filter(|f| f.contract_id == group.contract_id && f.product_id == group.product_id)
                .filter(|f| f.history.contains(&FileStatus::Pending))
                .count();
            assert!(
                submitted <= 1,
                "{what}: {} submitted {submitted} times",
                group.contract_id
            );
        }
        let retry = world.reporter(&[]).run(&world.job(), None).await.unwrap();
        assert_eq!(retry.failed(), 0, "{what}: {}", retry.headline());
    }
    world.assert_filed_exactly(FileStatus::Pending).await;
    assert_no_submitted_file_deleted(&world, &what);
    // Between them the replicas filed every group (the loser of a race skips it).
    for group in world.usage.expected.groups.iter().filter(|_| !incomplete) {
        let filed = summaries.iter().any(|summary| {
            summary.groups.iter().any(|g| {
                g.key.contract_id == group.contract_id
                    && g.key.product_id == group.product_id
                    && matches!(g.result, FilingResult::Created | FilingResult::Submitted)
            })
        });
        assert!(
            filed,
            "{what}: nobody filed {}/{}: {summaries:#?}",
            group.contract_id, group.product_id
        );
    }
    let files = world.sim.state().files();
    eprintln!(
        "{what}: {} groups, {} files created, {} deleted; failed groups per replica {:?}{}",
        world.usage.expected.groups.len(),
        files.len(),
        files
            .iter()
            .filter(|f| f.status == FileStatus::Deleted)
            .count(),
        summaries.iter().map(Summary::failed).collect::<Vec<_>>(),
        if incomplete {
            " (completed by a retry)"
        } else {
            ""
        }
    );
    summaries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_file_each_group_once() {
    for seed in 1..=3 {
        let summaries = race(Race {
            seed,
            subscriptions: 800,
            replicas: 2,
            max_stagger: Duration::ZERO,
            error_rate: 0.0,
        })
        .await;
        for summary in &summaries {
            assert_eq!(summary.failed(), 0, "seed {seed}: {}", summary.headline());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staggered_replicas_meet_each_others_files_in_every_state() {
    for seed in 11..=16 {
        let summaries = race(Race {
            seed,
            subscriptions: 800,
            replicas: 3,
            max_stagger: Duration::from_millis(400),
            error_rate: 0.0,
        })
        .await;
        for summary in &summaries {
            assert_eq!(summary.failed(), 0, "seed {seed}: {}", summary.headline());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_through_rest_faults_file_each_group_once() {
    for seed in 21..=24 {
        race(Race {
            seed,
            subscriptions: 800,
            replicas: 2,
            max_stagger: Duration::from_millis(200),
            error_rate: 0.2,
        })
        .await;
    }
}

/// Two real runners (two instances of the extension) both receive the schedule; their runs
/// overlap. Each keeps its workbooks in its own directory, which shows both really ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_both_receiving_the_schedule_file_each_group_once() {
    for seed in 31..=32 {
        let started = Instant::now();
        let world = replica_world(seed, 1_500).await;
        world.set_extension_variables(&[]);
        // Calls take a while, so the second run starts while the first is still filing.
        world.sim.state().set_faults(Faults {
            latency: Duration::from_millis(3),
            ..Faults::default()
        });
        let dir = |name: &str| world.dir.path().join(name);
        let (first_dir, second_dir) = (dir("first"), dir("second"));
        let hub = world.sim.devops().clone();
        // The hub hands a task to the newest connection: the first schedule goes to the
        // first runner, the second (once the second runner is up) to the second.
        let first = world.start_extension_with(&runner_env(&first_dir)).await;
        let first_task = hub.fire_schedule(SCHEDULE);
        let second = world.start_extension_with(&runner_env(&second_dir)).await;
        let second_task = hub.fire_schedule(SCHEDULE);
        for task in [&first_task, &second_task] {
            let result = hub
                .wait_for_result(task, Duration::from_secs(120))
                .await
                .unwrap_or_else(|| panic!("seed {seed}: {task} answered"));
            assert_eq!(
                result.output.result,
                ResultCode::Success,
                "seed {seed}: {task}: {:?}",
                result.output.message
            );
        }
        world.wait_until_all_pending().await;
        first.stop().await;
        second.stop().await;
        world.sim.state().clear_faults();
        let what = format!("seed {seed}, two runners");
        world.assert_filed_exactly(FileStatus::Pending).await;
        assert_no_submitted_file_deleted(&world, &what);
        assert!(
            hub.protocol_errors().is_empty(),
            "{what}: {:#?}",
            hub.protocol_errors()
        );
        for (name, workbooks) in [("first", &first_dir), ("second", &second_dir)] {
            let ran = std::fs::read_dir(workbooks)
                .map(|entries| {
                    entries
                        .flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with("bad-records-"))
                })
                .unwrap_or(false);
            assert!(ran, "{what}: the {name} runner ran the report");
        }
        let files = world.sim.state().files();
        eprintln!(
            "{what}: {} groups, {} files created, {} deleted, {:.1?}",
            world.usage.expected.groups.len(),
            files.len(),
            files
                .iter()
                .filter(|f| f.status == FileStatus::Deleted)
                .count(),
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long: cargo test --release --test replicas -- --ignored"]
async fn long_replica_races() {
    for seed in 100..200 {
        let mut rng = StdRng::seed_from_u64(seed);
        race(Race {
            seed,
            subscriptions: 3_000,
            replicas: rng.random_range(2..=4),
            max_stagger: Duration::from_millis(rng.random_range(0..1500)),
            error_rate: [0.0, 0.1, 0.3][seed as usize % 3],
        })
        .await;
    }
}
