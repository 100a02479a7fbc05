//! No file is left `ready` by one lost event (issue 21), end to end through the real runner.
//!
//! Two paths bring an uploaded file to the provider. Its `ready` event, answered by the
//! runner's usage-file handler, is the usual one; the scheduled run, before it answers,
//! follows the files it uploaded and submits any still `ready` once their event had its
//! chance. The first test has the platform lose some `ready` events for good and shows those
//! files submitted anyway, each exactly once. The second has the events queue behind a slow
//! runner for longer than the run's grace and shows the run waiting for them rather than
//! submitting their files too (one event lost all the same is still caught). The third shows
//! the platform's own remedy: a task whose connection closes before its result arrives is
//! handed out again.

mod common;

use std::time::Duration;

use common::{default_world, small_month};
use connect_payg::connect::FileStatus;
use connect_sim::devops::USAGE_FILE_EVENT;
use connect_sim::Faults;
use payg_shared::protocol::{ResultCode, RunnerMessage};

const SCHEDULE: &str = "generate_monthly_usage_reports";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_whose_ready_events_were_lost_are_submitted_by_the_run() {
    let world = default_world().await;
    let hub = world.sim.devops().clone();
    let groups = world.usage.expected.groups.len();
    assert!(groups >= 4, "the default world has {groups} groups");
    let lost = 3;
    hub.lose_file_events(FileStatus::Ready, lost);
    world.set_extension_variables(&[]);
    let extension = world.start_extension().await;

    let result = world.run_schedule().await;
    answered_with_every_file_submitted(&world, &result.output.message.unwrap_or_default());
    assert_eq!(hub.stats().events_lost, lost);
    let ready_events = hub
        .results()
        .iter()
        .filter(|r| r.event_type == USAGE_FILE_EVENT)
        .count();
    assert!(
        ready_events >= groups - lost,
        "{ready_events} events answered"
    );
    stopped_with_every_file_filed(&world, extension).await;
    for file in world.live_files() {
        let submitted = file
            .history
            .iter()
            .filter(|s| **s == FileStatus::Pending)
            .count();
        assert_eq!(submitted, 1, "{file:?}");
    }
}

/// Every file the run uploaded ended submitted (by its event or by the run), its answer says
/// so, and it answered only once they all were.
fn answered_with_every_file_submitted(world: &common::World, headline: &str) {
    let groups = world.usage.expected.groups.len();
    assert!(
        headline.contains(&format!("files created {groups}, submitted {groups},")),
        "{headline}"
    );
    assert!(
        world.all_pending(),
        "files not submitted when the run answered: {:#?}",
        world.live_files()
    );
}

/// Stops the runner; every group ends with exactly one file, submitted, and the platform saw no
/// protocol error.
async fn stopped_with_every_file_filed(world: &common::World, extension: common::RunningExtension) {
    extension.stop().await;
    world.assert_filed_exactly(FileStatus::Pending).await;
    let errors = world.sim.devops().protocol_errors();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// A runner of the test's own that handshakes, takes one task and disconnects without
/// answering it.
async fn take_one_task_and_vanish(world: &common::World) -> String {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let url = format!(
        "ws://{}/public/v1/devops/ws/{}/INST-VANISHING?running_tasks=0&running_scheduled_tasks=0&runner_type=background",
        world.sim.server_address(),
        world.sim.environment_id()
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", world.sim.api_key().parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let setup = connect_payg::handlers::registry().unwrap().setup_request();
    socket
        .send(Message::text(RunnerMessage::SetupRequest(setup).encode()))
        .await
        .unwrap();
    let task = world.sim.devops().fire_schedule(SCHEDULE);
    let mut frames = 0;
    while let Some(frame) = socket.next().await {
        if frame.unwrap().to_text().unwrap_or_default().contains(&task) {
            break;
        }
        frames += 1;
        assert!(frames < 10, "the task never came");
    }
    drop(socket);
    task
}

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
    answered_with_every_file_submitted(&world, &result.output.message.unwrap_or_default());
    // Every file was submitted once, by its event or (the lost one) by the run: no second
    // submit the platform refused, and no read of a file after one.
    let state = world.sim.state();
    assert_eq!(
        state.request_count("POST", "/usage/files/{id}/submit"),
        groups as u64
    );
    assert_eq!(state.request_count("GET", "/usage/files/{id}"), 0);
    assert_eq!(hub.stats().events_lost, 1);
    stopped_with_every_file_filed(&world, extension).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cut_off_with_its_connection_is_handed_out_again() {
    let world = default_world().await;
    let hub = world.sim.devops().clone();
    hub.set_handout_timeout(Duration::from_millis(200));
    world.set_extension_variables(&[]);
    let task = take_one_task_and_vanish(&world).await;
    assert!(
        hub.wait_until(Duration::from_secs(10), |s| s.open == 0)
            .await
    );
    assert!(hub.result(&task).is_none());

    let extension = world.start_extension().await;
    let result = hub
        .wait_for_result(&task, Duration::from_secs(60))
        .await
        .expect("the task was handed out again and answered");
    assert_eq!(result.output.result, ResultCode::Success);
    assert_eq!(hub.stats().handed_out_again, 1);
    world.wait_until_all_pending().await;
    stopped_with_every_file_filed(&world, extension).await;
}
