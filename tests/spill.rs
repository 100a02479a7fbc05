//! The month's rows past the memory budget (issue 19): a month whose groups outgrow
//! `SPILL_BUDGET_BYTES` is spilled to scratch files and files exactly the rows the in-memory
//! path files (multisets equal, per group); a month whose subscriptions outgrow
//! `RESOLVE_CACHE_SUBSCRIPTIONS` is resolved partition by partition to the same rows, bad
//! records and counts; and a run killed while it holds scratch files leaves them only until the
//! next run, which removes them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{rows_by_group, small_month, World};
use connect_payg::connect::FileStatus;
use connect_sim::Faults;
use tokio::process::Command;

#[tokio::test]
async fn a_month_past_the_budget_is_spilled_and_files_exactly_the_rows_held_in_memory() {
    let world = small_month(19, 300).await;
    let held = world.reporter(&[]).collect(world.period).await.unwrap();
    assert!(
        held.groups.values().all(|group| !group.rows.spilled()),
        "the default budget holds a small month"
    );
    // A few rows' worth: the buffers spill many times over, every group into many segments.
    let small = [("SPILL_BUDGET_BYTES", "2000")];
    let spilled = world.reporter(&small).collect(world.period).await.unwrap();
    assert!(
        spilled.groups.values().all(|group| group.rows.spilled()),
        "every group is spilled"
    );
    let expected = rows_by_group(&held, world.period);
    assert!(expected.len() > 3, "{} groups", expected.len());
    assert_eq!(rows_by_group(&spilled, world.period), expected);
    assert_eq!(spilled.records_read, held.records_read);
    assert_eq!(spilled.bad.len(), held.bad.len());
    drop((held, spilled));

    // Filed from the scratch file: one live file per group with exactly its rows.
    let summary = world
        .reporter(&small)
        .run(&world.job(), None)
        .await
        .unwrap();
    assert_eq!(summary.groups.len(), expected.len());
    world.assert_filed_exactly(FileStatus::Pending).await;
}

#[tokio::test]
async fn a_month_past_the_resolution_cache_is_resolved_partition_by_partition_to_the_same_rows() {
    let world = small_month(23, 400).await;
    // 30 subscriptions cached, the others (a few a partition) set aside; spilled as well.
    assert_partitioned_as_held(
        &world,
        &[
            &[("RESOLVE_CACHE_SUBSCRIPTIONS", "30")][..],
            &[
                ("RESOLVE_CACHE_SUBSCRIPTIONS", "1"),
                ("SPILL_BUDGET_BYTES", "3000"),
            ][..],
        ],
    )
    .await;
}

/// A month of several chunks of records: their subscriptions are asked for chunks ahead until
/// the cache could not take the next chunk's, and from there on set aside as before (in debug
/// builds the sorter also asserts that the cache never holds more than its cap).
#[tokio::test]
async fn subscriptions_asked_for_ahead_stop_at_the_resolution_cache() {
    let world = small_month(29, 2_400).await;
    assert!(world.records() > 8_000, "{} records", world.records());
    assert_partitioned_as_held(&world, &[&[("RESOLVE_CACHE_SUBSCRIPTIONS", "1500")][..]]).await;
}

/// Collects `world`'s month with the default cache and with each of `settings`: the same rows
/// by group, records read, out-of-scope counts and bad records in source order.
async fn assert_partitioned_as_held(world: &World, settings: &[&[(&str, &str)]]) {
    let state = world.sim.state();
    state.reset_request_counts();
    let held = world.reporter(&[]).collect(world.period).await.unwrap();
    let held_asset_requests = state.request_count("GET", "/assets");
    for settings in settings {
        state.reset_request_counts();
        let partitioned = world
            .reporter(settings)
            .collect(world.period)
            .await
            .unwrap();
        let asset_requests = state.request_count("GET", "/assets");
        assert_eq!(
            rows_by_group(&partitioned, world.period),
            rows_by_group(&held, world.period),
            "{settings:?}"
        );
        assert_eq!(partitioned.records_read, held.records_read);
        assert_eq!(partitioned.out_of_scope, held.out_of_scope);
        assert_eq!(partitioned.bad_by_reason(), held.bad_by_reason());
        // In source order still: the bad records found in partitions are merged back in.
        let bad = |collection: &connect_payg::usage::Collection| {
            collection
                .bad
                .iter()
                .map(|b| format!("{b:?}"))
                .collect::<Vec<_>>()
        };
        assert!(held.bad.len() < connect_payg::usage::MAX_HELD_BAD_RECORDS);
        assert_eq!(bad(&partitioned), bad(&held));
        // Every subscription is asked for once, in the cache or in its partition: at most one
        // partial batch of 100 per partition (64) beyond what the in-memory path asks.
        assert!(
            asset_requests > held_asset_requests && asset_requests <= held_asset_requests + 64,
            "{asset_requests} asset requests, {held_asset_requests} in memory"
        );
    }
}

/// Directories under the scratch root a run has left.
fn scratch_dirs(tmp: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(tmp.join("connect-payg-scratch")) {
        Ok(entries) => entries.map(|entry| entry.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

fn report(world: &World, tmp: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_connect-payg"));
    command
        .current_dir(world.dir.path())
        .env_clear()
        .env("TMPDIR", tmp)
        .env("API_KEY", world.sim.api_key())
        .env("SERVER_ADDRESS", world.sim.server_address())
        .env("USAGE_SOURCE", world.usage_source())
        .env("SPILL_BUDGET_BYTES", "4096")
        .env("READY_POLL_INTERVAL_MS", "5")
        .env("READY_TIMEOUT", "30")
        .env("API_CONCURRENCY", "2")
        .env("RUST_LOG", "warn")
        .args(["report", "--unsecure", "--period"])
        .arg(world.period.to_string())
        .arg("--out")
        .arg(world.dir.path().join("out"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn a_killed_run_leaves_its_scratch_files_only_until_the_next_run() {
    let world = small_month(7, 400).await;
    // Every call takes a little while: the run is still filing when it is killed.
    world.sim.state().set_faults(Faults {
        latency: Duration::from_millis(8),
        ..Faults::default()
    });
    let tmp = world.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let mut child = report(&world, &tmp).spawn().expect("the binary starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    // Killed once the run has spilled rows to its scratch file.
    let spilled = loop {
        let spilled = scratch_dirs(&tmp)
            .into_iter()
            .find(|dir| dir.join("rows").exists());
        if let Some(dir) = spilled {
            break dir;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended before it spilled: {status}");
        }
        assert!(Instant::now() < deadline, "the run never spilled");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    child.start_kill().expect("SIGKILL");
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "killed mid-run: {status}");
    assert!(
        spilled.join("rows").exists(),
        "a killed run leaves its files"
    );

    world.sim.state().clear_faults();
    let output = tokio::time::timeout(Duration::from_secs(120), report(&world, &tmp).output())
        .await
        .expect("the next run finishes")
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        scratch_dirs(&tmp),
        Vec::<PathBuf>::new(),
        "no scratch files remain"
    );
    world.assert_filed_exactly(FileStatus::Pending).await;
}
