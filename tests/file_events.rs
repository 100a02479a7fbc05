//! Usage-file events end to end: the real runner and handlers against the simulator's
//! websocket, which emits `usage_file_request_processing` tasks as files change status.

mod common;

use std::time::Duration;

use common::{default_world, expected_rows, uploaded, World};
use connect_payg::connect::FileStatus;
use connect_payg::usage::workbook::{workbook_bytes, Cell};
use connect_sim::devops::USAGE_FILE_EVENT;
use connect_sim::ExpectedGroup;
use payg_shared::protocol::ResultCode;
use serde_json::json;

const SCHEDULE: &str = "generate_monthly_usage_reports";

/// Runs the schedule through the runner and waits until every group's file is pending.
async fn file_the_month(world: &World) {
    world.run_schedule().await;
    world.wait_until_all_pending().await;
}

/// A file for `group`'s contract, product and month made directly on the platform (by another
/// tool or replica); its id.
fn create_file(world: &World, group: &ExpectedGroup, name: &str, external_id: &str) -> String {
    let created = world
        .sim
        .state()
        .create_file(&json!({
            "name": name, "description": "", "currency": group.currency,
            "period": {"from": world.period.first_day().to_string(), "to": world.period.last_day().to_string()},
            "product": {"id": group.product_id}, "contract": {"id": group.contract_id},
            "external_id": external_id,
        }))
        .unwrap();
    created["id"].as_str().unwrap().to_string()
}

/// The vendor corrects one record of the first group and re-exports the month in another
/// format and place; the platform pushes the new USAGE_SOURCE to the running extension.
/// Returns (the group's file id, the rows the rebuilt file must hold).
fn correct_the_source(world: &World) -> (String, Vec<common::Row>) {
    let group = &world.usage.expected.groups[0];
    let (usage, _) = world
        .usage
        .correct_quantity(
            &world.sim.state().catalogue(),
            &group.contract_id,
            &group.product_id,
            "7",
        )
        .expect("a good record to correct");
    let corrected = world
        .dir
        .path()
        .join(format!("corrected-{}.jsonl", world.period));
    std::fs::write(&corrected, usage.json_lines()).unwrap();
    let source = format!(
        "file://{}/corrected-{{period}}.jsonl",
        world.dir.path().display()
    );
    world.set_extension_variables(&[("USAGE_SOURCE", &source)]);
    world.sim.devops().push_setup_response();
    let rows = expected_rows(&usage.expected.groups[0]);
    let file = world
        .live_files()
        .into_iter()
        .find(|f| f.contract_id == group.contract_id && f.product_id == group.product_id)
        .unwrap();
    (file.id, rows)
}

#[tokio::test]
async fn a_rejected_file_is_rebuilt_from_the_corrected_source_and_resubmitted() {
    let world = default_world().await;
    world.set_extension_variables(&[]);
    let extension = world.start_extension().await;
    file_the_month(&world).await;
    world.assert_filed_exactly(FileStatus::Pending).await;

    let (file_id, corrected) = correct_the_source(&world);
    assert_ne!(uploaded(&world.sim, &file_id), corrected);
    world
        .sim
        .state()
        .reject(&file_id, "quantity looks too high")
        .unwrap();
    world
        .wait_until("the rejected file is pending again", |w| {
            let history = w.sim.state().status_history(&file_id).unwrap();
            history.last() == Some(&FileStatus::Pending) && history.contains(&FileStatus::Rejected)
        })
        .await;
    assert_eq!(
        uploaded(&world.sim, &file_id),
        corrected,
        "the corrected rows were uploaded"
    );
    assert_eq!(
        world.live_files().len(),
        world.usage.expected.groups.len(),
        "no new file"
    );
    let alerts = world.webhooks_of_kind("rejected_file");
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["file_id"], file_id.as_str());
    assert_eq!(alerts[0]["details"], "quantity looks too high");
    assert!(alerts[0]["text"].as_str().unwrap().contains("rejected"));
    assert_eq!(world.sim.devops().protocol_errors(), Vec::<String>::new());
    extension.stop().await;
}

#[tokio::test]
async fn rejections_past_the_limit_are_left_for_a_person() {
    let world = default_world().await;
    world.set_extension_variables(&[("MAX_RESUBMISSIONS", "1")]);
    let extension = world.start_extension().await;
    file_the_month(&world).await;
    let file_id = world.live_files()[0].id.clone();

    world.sim.state().reject(&file_id, "first").unwrap();
    world
        .wait_until("rebuilt once", |w| {
            let history = w.sim.state().status_history(&file_id).unwrap();
            history.last() == Some(&FileStatus::Pending) && history.contains(&FileStatus::Rejected)
        })
        .await;
    world.sim.state().reject(&file_id, "second").unwrap();
    world
        .wait_until("the limit alert went out", |w| {
            !w.webhooks_of_kind("resubmission_limit").is_empty()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let history = world.sim.state().status_history(&file_id).unwrap();
    assert_eq!(history.last(), Some(&FileStatus::Rejected), "{history:?}");
    assert_eq!(
        history
            .iter()
            .filter(|s| **s == FileStatus::Rejected)
            .count(),
        2,
        "{history:?}"
    );
    let alert = &world.webhooks_of_kind("resubmission_limit")[0];
    assert_eq!(alert["details"], "second");
    assert_eq!(alert["severity"], "error");
    extension.stop().await;
}

#[tokio::test]
async fn an_invalid_file_raises_an_alert_with_the_platform_detail() {
    let world = default_world().await;
    world.set_extension_variables(&[]);
    let extension = world.start_extension().await;
    let group = &world.usage.expected.groups[0];
    let external_id = format!(
        "{}:{}:{}",
        group.contract_id, group.product_id, world.period
    );
    let id = create_file(&world, group, "broken", &external_id);
    let mut row = connect_payg::usage::workbook::UsageRow::from_cells(Default::default());
    row.record_id = Cell::Text("r-1".into());
    world
        .sim
        .state()
        .upload(&id, workbook_bytes([row]).unwrap().into())
        .unwrap();
    world
        .wait_until("the invalid alert went out", |w| {
            !w.webhooks_of_kind("invalid_file").is_empty()
        })
        .await;
    let alert = &world.webhooks_of_kind("invalid_file")[0];
    let detail = world
        .sim
        .state()
        .files()
        .into_iter()
        .find(|f| f.id == id)
        .unwrap()
        .error_detail;
    assert_eq!(alert["file_id"], id.as_str());
    assert_eq!(alert["contract"], group.contract_id.as_str());
    assert_eq!(alert["period"], world.period.to_string().as_str());
    assert_eq!(alert["details"].as_str(), detail.as_deref());
    extension.stop().await;
}

#[tokio::test]
async fn a_foreign_file_is_skipped_and_left_alone() {
    let world = default_world().await;
    world.set_extension_variables(&[]);
    let extension = world.start_extension().await;
    let group = &world.usage.expected.groups[0];
    let id = create_file(&world, group, "someone else's", "made-by-another-tool-42");
    let task = world
        .sim
        .devops()
        .send_background_task(USAGE_FILE_EVENT, &id);
    let _ = task;
    // A file in draft is not a subscribed status: make it ready through a valid upload.
    let collection = world.reporter(&[]).collect(world.period).await.unwrap();
    let rows = collection.groups.values().next().unwrap().rows.clone();
    let bytes = workbook_bytes(
        rows.iter()
            .map(|row| connect_payg::usage::workbook::usage_row(&row.unwrap(), world.period)),
    )
    .unwrap();
    world.sim.state().upload(&id, bytes.into()).unwrap();
    world
        .wait_until("the ready event was answered", |w| {
            w.sim.devops().results().iter().any(|r| {
                r.object_id == id
                    && r.output.result == ResultCode::Skip
                    && r.output
                        .message
                        .as_deref()
                        .is_some_and(|m| m.contains("not managed"))
            })
        })
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let file = world
        .sim
        .state()
        .files()
        .into_iter()
        .find(|f| f.id == id)
        .unwrap();
    assert_eq!(
        file.status,
        FileStatus::Ready,
        "never submitted: {:?}",
        file.history
    );
    extension.stop().await;
}

#[tokio::test]
async fn the_same_rejection_delivered_twice_rebuilds_once() {
    let world = default_world().await;
    world.set_extension_variables(&[]);
    let extension = world.start_extension().await;
    file_the_month(&world).await;
    let file_id = world.live_files()[0].id.clone();
    world.sim.state().reset_request_counts();
    world.sim.state().reject(&file_id, "again please").unwrap();
    world
        .sim
        .devops()
        .send_background_task(USAGE_FILE_EVENT, &file_id);
    world
        .wait_until("pending again", |w| {
            let history = w.sim.state().status_history(&file_id).unwrap();
            history.last() == Some(&FileStatus::Pending) && history.contains(&FileStatus::Rejected)
        })
        .await;
    world
        .sim
        .devops()
        .send_background_task(USAGE_FILE_EVENT, &file_id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        world
            .sim
            .state()
            .request_count("POST", "/usage/files/{id}/upload"),
        1,
        "one rebuild"
    );
    assert_eq!(world.webhooks_of_kind("rejected_file").len(), 1);
    let file = world
        .sim
        .state()
        .files()
        .into_iter()
        .find(|f| f.id == file_id)
        .unwrap();
    assert_eq!(file.status, FileStatus::Pending);
    extension.stop().await;
}

#[tokio::test]
async fn a_failing_webhook_does_not_break_the_task() {
    let world = default_world().await;
    // Nothing listens on the discard port: every delivery fails.
    world.set_extension_variables(&[("ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook")]);
    let extension = world.start_extension().await;
    file_the_month(&world).await;
    let file_id = world.live_files()[0].id.clone();
    world.sim.state().reject(&file_id, "webhook down").unwrap();
    world
        .wait_until("rebuilt despite the webhook", |w| {
            let history = w.sim.state().status_history(&file_id).unwrap();
            history.last() == Some(&FileStatus::Pending) && history.contains(&FileStatus::Rejected)
        })
        .await;
    let results = world.sim.devops().results();
    assert!(results
        .iter()
        .filter(|r| r.object_id == file_id)
        .all(|r| matches!(r.output.result, ResultCode::Success | ResultCode::Skip)));
    extension.stop().await;
}

/// Two files for one group (another replica's, say): the `ready` of the one that lost is
/// answered by withdrawing it, never by submitting a second file for the group.
#[tokio::test]
async fn a_ready_duplicate_of_a_filed_group_is_withdrawn_not_submitted() {
    let world = default_world().await;
    world.set_extension_variables(&[]);
    let extension = world.start_extension().await;
    file_the_month(&world).await;
    let group = &world.usage.expected.groups[0];
    let filed = world
        .live_files()
        .into_iter()
        .find(|f| f.contract_id == group.contract_id && f.product_id == group.product_id)
        .unwrap();
    let id = create_file(
        &world,
        group,
        "duplicate",
        filed.external_id.as_deref().unwrap(),
    );
    let rows = world.sim.state().uploaded_rows(&filed.id).unwrap();
    let bytes = workbook_bytes(rows).unwrap();
    world.sim.state().upload(&id, bytes.into()).unwrap();
    world
        .wait_until("the duplicate was withdrawn", |w| {
            w.sim.state().status_history(&id).unwrap().last() == Some(&FileStatus::Deleted)
        })
        .await;
    let history = world.sim.state().status_history(&id).unwrap();
    assert!(!history.contains(&FileStatus::Pending), "{history:?}");
    // The handler withdraws the file before it answers: wait for the answer.
    world
        .wait_until("the ready event was answered", |w| {
            w.sim
                .devops()
                .results()
                .iter()
                .any(|r| r.object_id == id && r.output.result == ResultCode::Success)
        })
        .await;
    world.assert_filed_exactly(FileStatus::Pending).await;
    extension.stop().await;
}

/// The rebuilds counted in the file's note on the platform.
async fn rebuilds_counted(world: &World, file_id: &str) -> u32 {
    let client = world.client(&world.settings(&[]));
    let file = client.usage_file(file_id).await.unwrap();
    connect_payg::handlers::rebuild_count(file.note.as_deref())
}

/// Waits for the answer of a task about `file_id` with `code`; its message.
async fn answer_for(world: &World, file_id: &str, code: ResultCode) -> String {
    world
        .wait_until("the task was answered", |w| {
            w.sim
                .devops()
                .results()
                .iter()
                .any(|r| r.object_id == file_id && r.output.result == code)
        })
        .await;
    world
        .sim
        .devops()
        .results()
        .into_iter()
        .find(|r| r.object_id == file_id && r.output.result == code)
        .unwrap()
        .output
        .message
        .unwrap_or_default()
}

/// Points the running extension at another source.
fn use_source(world: &World, source: &str) {
    world.set_extension_variables(&[("USAGE_SOURCE", source)]);
    world.sim.devops().push_setup_response();
}

fn is_pending_after_rejection(world: &World, file_id: &str) -> bool {
    let history = world.sim.state().status_history(file_id).unwrap();
    history.last() == Some(&FileStatus::Pending) && history.contains(&FileStatus::Rejected)
}

/// A rebuild cut off at the task's time limit releases its file: the next delivery rebuilds
/// it (instead of answering "already being rebuilt" until a restart), and the cut-off attempt
/// used up no resubmission.
#[tokio::test]
async fn a_timed_out_rebuild_does_not_block_its_file() {
    let world = default_world().await;
    world.set_extension_variables(&[]);
    let extension = world
        .start_extension_with(&[("BACKGROUND_TASK_MAX_EXECUTION_TIME", "1")])
        .await;
    file_the_month(&world).await;
    let file_id = world.live_files()[0].id.clone();

    // A usage source that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let hang = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    use_source(&world, &format!("http://{address}/usage-{{period}}.csv"));
    world.sim.state().reject(&file_id, "too high").unwrap();
    answer_for(&world, &file_id, ResultCode::Retry).await;
    hang.abort();

    world.set_extension_variables(&[]);
    world.sim.devops().push_setup_response();
    world
        .sim
        .devops()
        .send_background_task(USAGE_FILE_EVENT, &file_id);
    world
        .wait_until("the file was rebuilt after the timed-out attempt", |w| {
            is_pending_after_rejection(w, &file_id)
        })
        .await;
    assert_eq!(rebuilds_counted(&world, &file_id).await, 1);
    extension.stop().await;
}

/// A source that cannot be read right now: `retry`, and the rebuild is not counted.
#[tokio::test]
async fn a_rebuild_that_cannot_read_the_source_retries_without_using_a_resubmission() {
    let world = default_world().await;
    world.set_extension_variables(&[]);
    let extension = world.start_extension().await;
    file_the_month(&world).await;
    let file_id = world.live_files()[0].id.clone();
    use_source(
        &world,
        &format!(
            "file://{}/missing-{{period}}.csv",
            world.dir.path().display()
        ),
    );
    world.sim.state().reject(&file_id, "too high").unwrap();
    let message = answer_for(&world, &file_id, ResultCode::Retry).await;
    assert!(message.contains("missing-2024-02.csv"), "{message}");
    assert_eq!(rebuilds_counted(&world, &file_id).await, 0);
    let history = world.sim.state().status_history(&file_id).unwrap();
    assert_eq!(history.last(), Some(&FileStatus::Rejected));
    extension.stop().await;
}

/// The corrected source no longer has the group: `fail` with an error alert, the file left
/// rejected for a person, and no resubmission used up.
#[tokio::test]
async fn a_rebuild_whose_source_lost_the_group_fails_with_an_alert() {
    let world = default_world().await;
    world.set_extension_variables(&[]);
    let extension = world.start_extension().await;
    file_the_month(&world).await;
    let group = &world.usage.expected.groups[0];
    let file_id = world
        .live_files()
        .into_iter()
        .find(|f| f.contract_id == group.contract_id && f.product_id == group.product_id)
        .unwrap()
        .id;
    let assets: Vec<&str> = group.rows.iter().map(|r| r.asset_id.as_str()).collect();
    let without: String = world
        .usage
        .csv
        .lines()
        .filter(|line| !assets.iter().any(|a| line.starts_with(&format!("{a},"))))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(world.dir.path().join("without-2024-02.csv"), without).unwrap();
    use_source(
        &world,
        &format!(
            "file://{}/without-{{period}}.csv",
            world.dir.path().display()
        ),
    );
    world.sim.state().reject(&file_id, "too high").unwrap();
    let message = answer_for(&world, &file_id, ResultCode::Fail).await;
    assert!(message.contains("no records"), "{message}");
    let alerts = world.webhooks_of_kind("filing_failed");
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["severity"], "error");
    assert_eq!(alerts[0]["file_id"], file_id.as_str());
    assert_eq!(rebuilds_counted(&world, &file_id).await, 0);
    let history = world.sim.state().status_history(&file_id).unwrap();
    assert_eq!(history.last(), Some(&FileStatus::Rejected));
    extension.stop().await;
}

/// The scheduled report of a month that has not ended, or of a source without a record,
/// answers `fail` saying so and files nothing.
#[tokio::test]
async fn a_scheduled_run_refuses_an_unfinished_month_and_an_empty_source() {
    let world = default_world().await;
    world.set_extension_variables(&[("REPORT_PERIOD", "2999-01")]);
    let extension = world.start_extension().await;
    let run = || async {
        let task = world.sim.devops().fire_schedule(SCHEDULE);
        world
            .sim
            .devops()
            .wait_for_result(&task, Duration::from_secs(30))
            .await
            .expect("the schedule answered")
            .output
    };
    let output = run().await;
    assert_eq!(output.result, ResultCode::Fail, "{:?}", output.message);
    let message = output.message.unwrap_or_default();
    assert!(
        message.contains(
            "period 2999-01 is not reportable yet: it becomes reportable at 2999-02-01 00:00 UTC"
        ),
        "{message}"
    );

    std::fs::write(
        world.dir.path().join("usage-2024-02.csv"),
        "subscription_id,item_mpn,quantity,start_time_utc,end_time_utc\n",
    )
    .unwrap();
    world.set_extension_variables(&[]);
    world.sim.devops().push_setup_response();
    let output = run().await;
    assert_eq!(output.result, ResultCode::Fail, "{:?}", output.message);
    let message = output.message.unwrap_or_default();
    assert!(
        message.contains("the usage source has no records for 2024-02"),
        "{message}"
    );
    let alerts = world.webhooks_of_kind("empty_source");
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["severity"], "error");
    assert!(world.sim.state().files().is_empty());
    extension.stop().await;
}

/// The handler reads its event's file itself, in one request where the runner's re-check and
/// read took two: a stale event of a file this process filed (now pending) costs the listing of
/// its group and is skipped with the runner's message; a file of no group this process filed
/// (a draft made by another tool) is read by id and skipped the same way. Neither changes it.
#[tokio::test]
async fn a_stale_event_costs_one_request_and_is_skipped_as_the_runner_would() {
    let world = default_world().await;
    world.set_extension_variables(&[]);
    let extension = world.start_extension().await;
    file_the_month(&world).await;
    // The month's own events (some may find their file submitted by the run already) first.
    world
        .wait_until("every task was answered", |w| w.sim.devops().all_answered())
        .await;
    let skipped = "The request status does not match the supported statuses: ready,invalid,rejected,accepted.";
    let group = &world.usage.expected.groups[0];
    let foreign = create_file(&world, group, "someone else's", "made-by-another-tool-7");
    let filed = world
        .live_files()
        .into_iter()
        .find(|f| f.id != foreign)
        .unwrap()
        .id;
    for (file_id, read) in [
        (&filed, "GET /usage/files"),
        (&foreign, "GET /usage/files/{id}"),
    ] {
        let state = world.sim.state();
        state.reset_request_counts();
        let task = world
            .sim
            .devops()
            .send_background_task(USAGE_FILE_EVENT, file_id);
        let result = world
            .sim
            .devops()
            .wait_for_result(&task, Duration::from_secs(30))
            .await
            .expect("answered");
        assert_eq!(result.output.result, ResultCode::Skip, "{file_id}");
        assert_eq!(result.output.message.as_deref(), Some(skipped), "{file_id}");
        let counts = state.request_counts();
        let (method, route) = read.split_once(' ').unwrap();
        assert_eq!(counts.total, 1, "{file_id}: {:#}", counts.to_json());
        assert_eq!(
            counts.get(method, route),
            1,
            "{file_id}: {:#}",
            counts.to_json()
        );
    }
    let status = |id: &str| {
        world
            .sim
            .state()
            .status_history(id)
            .unwrap()
            .last()
            .cloned()
    };
    assert_eq!(status(&filed), Some(FileStatus::Pending));
    assert_eq!(status(&foreign), Some(FileStatus::Draft));
    extension.stop().await;
}
