//! Files whose `ready` events wait their turn behind a slow runner are left to those events
//! (issue 19), end to end through the real runner.
//!
//! The scheduled run, before it answers, follows the files it uploaded and submits any still
//! `ready` once their event had its chance. With the runner answering one event at a time and
//! every request slow, the month's events are answered for several times the run's grace after
//! its last upload: the run waits for them rather than submitting their files too (which the
//! platform would refuse as a second submit), and one event lost all the same is still caught.
//! In a binary of its own: a long test beside the other lost-event tests saw its process stall
//! for tens of seconds at times (every thread idle, the runtime parked with a short timer),
//! which no test here should depend on.

mod common;

use std::time::Duration;

use common::small_month;
use connect_payg::connect::FileStatus;
use connect_sim::Faults;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_behind_a_slow_runner_are_waited_for_not_raced() {
    let world = small_month(7, 120).await;
    let hub = world.sim.devops().clone();
    let groups = world.usage.expected.groups.len();
    assert!(groups >= 8, "the world has {groups} groups");
    hub.lose_file_events(FileStatus::Ready, 1);
    world.set_extension_variables(&[]);
    // One event at a time, each a listing and a submit of 150 ms: the month's events are
    // answered for several times the run's 2 s grace after its last upload.
    // READY_TIMEOUT well beyond the run, so that a busy machine's pause cannot end the
    // follow-up before the events went quiet.
    let extension = world
        .start_extension_tuned(&[("READY_TIMEOUT", "300")], |options| {
            options.background_concurrency = 1
        })
        .await;
    world.sim.state().set_faults(Faults {
        latency: Duration::from_millis(150),
        ..Faults::default()
    });
    world.sim.state().reset_request_counts();

    let result = world.run_schedule().await;
    world.sim.state().set_faults(Faults::default());
    let headline = result.output.message.unwrap_or_default();
    assert!(
        headline.contains(&format!("files created {groups}, submitted {groups},")),
        "{headline}"
    );
    assert!(
        world.all_pending(),
        "files not submitted when the run answered: {:#?}",
        world.live_files()
    );
    // Every file was submitted once, by its event or (the lost one) by the run: no second
    // submit the platform refused, and no read of a file after one.
    let state = world.sim.state();
    assert_eq!(
        state.request_count("POST", "/usage/files/{id}/submit"),
        groups as u64
    );
    assert_eq!(state.request_count("GET", "/usage/files/{id}"), 0);
    assert_eq!(hub.stats().events_lost, 1);
    extension.stop().await;
    world.assert_filed_exactly(FileStatus::Pending).await;
    assert!(
        hub.protocol_errors().is_empty(),
        "{:#?}",
        hub.protocol_errors()
    );
}
