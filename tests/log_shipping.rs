//! Logs in the Connect portal and live log levels, end to end: the runner against the
//! simulator, whose setup response carries the logging key and levels, and whose log listener
//! records what the runner ships.
//!
//! * The real binary at TRACE with every secret set: the lines arrive with their task ids and
//!   the setup's metadata, and none holds a secret in any form.
//! * A hanging listener: the tasks answer in their usual time, the queue stays bounded, the
//!   drops are counted and said.
//! * A 401 stops shipping until the next setup response; a new key switches; no key stops.
//! * A level change in a setup response applies from the next task on, each level to its part.
//!
//! The in-process tests give the runner a subscriber of their own (scoped to the test's
//! thread, where the current-thread runtime runs the runner and the simulator), so each test
//! controls and reads its own logs. Waits are upper bounds on conditions, never speed claims.

#[path = "support/captured.rs"]
mod captured;
mod common;

#[path = "support/leaks.rs"]
mod leaks;

use std::time::{Duration, Instant};

use serde_json::Value;

use captured::Captured;
use common::World;
use connect_payg::config::{LogFormat, LogLevel};
use connect_payg::logging::{LogControl, LogOptions, ShipOptions, ShippingState};
use connect_sim::devops::{ListenerMode, SetupLogging, ShippedBatch, USAGE_FILE_EVENT};
use connect_sim::Simulator;
use leaks::{period, random, run_connected, simulator, Secrets};
use payg_shared::protocol::{ResultCode, Variable};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

const WAIT: Duration = Duration::from_secs(30);

/// The test's own subscriber: JSON lines into memory, shipping sized by `ship`.
struct Logs {
    dispatch: tracing::Dispatch,
    control: LogControl,
    written: Captured,
}

fn logs(start: LogLevel, ship: ShipOptions) -> Logs {
    let written = Captured::default();
    let writer = written.clone();
    let (dispatch, control) = connect_payg::logging::build(LogOptions {
        format: LogFormat::Json,
        start,
        rust_log: None,
        writer: BoxMakeWriter::new(move || writer.clone()),
        ship,
    });
    Logs {
        dispatch,
        control,
        written,
    }
}

/// Shipping at test speed: a flush every 100 ms, quick retries.
fn quick() -> ShipOptions {
    ShipOptions {
        flush_interval: Duration::from_millis(100),
        request_timeout: Duration::from_secs(5),
        retry_base: Duration::from_millis(50),
        ..ShipOptions::default()
    }
}

fn logging(key: Option<&str>, level: &str, runner_level: &str) -> SetupLogging {
    SetupLogging {
        logging_api_key: key.map(str::to_string),
        log_level: Some(level.into()),
        runner_log_level: Some(runner_level.into()),
    }
}

fn listener_url(sim: &Simulator) -> String {
    format!("http://{}/_sim/logs", sim.server_address())
}

/// Polls `condition` until it holds; fails the test with `what` after [`WAIT`].
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The lines received for `task_id`.
fn lines_of(batches: &[ShippedBatch], task_id: &str) -> Vec<Value> {
    batches
        .iter()
        .flat_map(|batch| batch.lines.iter())
        .filter(|line| line["task_id"] == task_id)
        .cloned()
        .collect()
}

/// Whether the line saying `task_id` finished has arrived (the last line of a task).
fn finished(batches: &[ShippedBatch], task_id: &str) -> bool {
    lines_of(batches, task_id)
        .iter()
        .any(|line| line["message"] == "task finished" || line["message"] == "task failed")
}

/// A background task on a file the platform does not have: quick, and logged under its id.
async fn background_task(world: &World) -> String {
    let devops = world.sim.devops();
    let task = devops.send_background_task(USAGE_FILE_EVENT, "UF-0000-0000-0000-9999");
    devops
        .wait_for_result(&task, WAIT)
        .await
        .expect("the background task answered");
    task
}

async fn stop(extension: common::RunningExtension) {
    extension.stop.cancel();
    let stopped = tokio::time::timeout(WAIT, extension.task)
        .await
        .expect("the runner stops");
    assert!(stopped.unwrap().is_ok());
}

#[tokio::test]
async fn a_hanging_log_service_neither_slows_tasks_nor_grows_the_queue() {
    let request_timeout = Duration::from_secs(300);
    let logs = logs(
        LogLevel::Debug,
        ShipOptions {
            queue_lines: 50,
            request_timeout,
            ..quick()
        },
    );
    let _subscriber = tracing::dispatcher::set_default(&logs.dispatch);
    let world = common::default_world().await;
    world.set_extension_variables(&[]);
    let devops = world.sim.devops();
    devops.set_logging(logging(Some("hang-key"), "DEBUG", "DEBUG"));
    devops.logs().set_mode(ListenerMode::Hang);
    let extension = world
        .start_extension_with(&[("LOG_SHIPPING_URL", &listener_url(&world.sim))])
        .await;

    let started = Instant::now();
    world.run_schedule().await;
    let took = started.elapsed();
    assert!(
        took < request_timeout / 10,
        "the monthly report took {took:?} while the log service hung"
    );
    world.wait_until_all_pending().await;

    // How many of the run's lines the first (hanging) batch took depends on when its flush
    // fell, so the run alone may fit in the queue: quick tasks keep writing until it overflows.
    // CI once saw `queued: 45, dropped: 0` after the run.
    for _ in 0..100 {
        if logs.control.shipping().dropped > 0 {
            break;
        }
        let started = Instant::now();
        background_task(&world).await;
        assert!(
            started.elapsed() < request_timeout / 10,
            "a task took {:?} while the log service hung",
            started.elapsed()
        );
    }
    let stats = logs.control.shipping();
    assert_eq!(stats.state, ShippingState::On);
    assert!(stats.dropped > 0, "{stats:?}");
    assert!(stats.queued <= 50, "{stats:?}");
    assert!(devops.logs().requests() >= 1, "a request is hanging");
    assert!(devops.logs().batches().is_empty());
    eventually("the drops are said in a WARN line", || {
        logs.written.text().lines().any(|line| {
            line.contains("\"level\":\"WARN\"")
                && line.contains("log lines were not shipped")
                && line.contains("\"dropped\":")
        })
    })
    .await;

    // Once the service answers, lines flow again.
    devops.logs().set_mode(ListenerMode::Accept);
    let task = background_task(&world).await;
    eventually("the lines of a later task arrive", || {
        finished(&devops.logs().batches(), &task)
    })
    .await;
    assert!(logs.control.shipping().shipped > 0);
    stop(extension).await;
}

#[tokio::test]
async fn a_refused_key_stops_shipping_until_the_next_setup_response_and_keys_switch() {
    let logs = logs(LogLevel::Info, quick());
    let _subscriber = tracing::dispatcher::set_default(&logs.dispatch);
    let world = common::default_world().await;
    world.set_extension_variables(&[]);
    let devops = world.sim.devops();
    let listener = devops.logs();
    devops.set_logging(logging(Some("first-key"), "INFO", "INFO"));
    listener.set_mode(ListenerMode::Refuse(401));
    let extension = world
        .start_extension_with(&[("LOG_SHIPPING_URL", &listener_url(&world.sim))])
        .await;

    // Refused: shipping stops, and nothing more is captured or sent.
    background_task(&world).await;
    eventually("the refusal stops shipping", || {
        logs.control.shipping().state == ShippingState::Refused(401)
    })
    .await;
    let requests = listener.requests();
    let ignored = background_task(&world).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(listener.requests(), requests, "nothing sent after a 401");
    assert_eq!(logs.control.shipping().queued, 0, "nothing captured");
    assert!(logs
        .written
        .text()
        .contains("the log service refused the logging key"));

    // The next setup response (same key) resumes.
    listener.set_mode(ListenerMode::Accept);
    devops.push_setup_response();
    eventually("shipping resumes", || {
        logs.control.shipping().state == ShippingState::On
    })
    .await;
    let resumed = background_task(&world).await;
    eventually("the resumed task's lines arrive", || {
        finished(&listener.batches(), &resumed)
    })
    .await;
    assert!(lines_of(&listener.batches(), &ignored).is_empty());

    // Another key switches.
    devops.set_logging(logging(Some("second-key"), "INFO", "INFO"));
    devops.push_setup_response();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let switched = background_task(&world).await;
    eventually("the switched task's lines arrive", || {
        finished(&listener.batches(), &switched)
    })
    .await;
    for batch in listener.batches() {
        let tokens: Vec<&str> = batch
            .lines
            .iter()
            .filter(|line| line["task_id"] == switched.as_str())
            .map(|_| batch.token.as_str())
            .collect();
        assert!(tokens.iter().all(|t| *t == "second-key"), "{tokens:?}");
    }

    // No key stops.
    devops.set_logging(logging(None, "INFO", "INFO"));
    devops.push_setup_response();
    eventually("shipping stops", || {
        logs.control.shipping().state == ShippingState::Off
    })
    .await;
    let requests = listener.requests();
    let unshipped = background_task(&world).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(listener.requests(), requests);
    assert!(lines_of(&listener.batches(), &unshipped).is_empty());
    for batch in listener.batches() {
        assert_eq!(batch.log_type.as_deref(), Some("python"));
        assert_eq!(batch.content_type.as_deref(), Some("text/plain"));
        assert!(batch.bad_lines.is_empty(), "{:?}", batch.bad_lines);
    }
    stop(extension).await;
}

#[tokio::test]
async fn a_level_change_applies_from_the_next_task_each_level_to_its_part() {
    let logs = logs(LogLevel::Info, quick());
    let _subscriber = tracing::dispatcher::set_default(&logs.dispatch);
    let world = common::default_world().await;
    world.set_extension_variables(&[]);
    let devops = world.sim.devops();
    devops.set_logging(logging(Some("level-key"), "INFO", "INFO"));
    let extension = world
        .start_extension_with(&[("LOG_SHIPPING_URL", &listener_url(&world.sim))])
        .await;
    let listener = devops.logs();
    let from_extension = |line: &Value| {
        let logger = line["logger"].as_str().unwrap_or_default();
        logger.starts_with("connect_payg::usage") || logger.starts_with("connect_payg::handlers")
    };

    let before = world.run_schedule().await.task_id;
    eventually("the first report's lines arrive", || {
        finished(&listener.batches(), &before)
    })
    .await;
    let lines = lines_of(&listener.batches(), &before);
    assert!(
        lines
            .iter()
            .any(|l| from_extension(l) && l["log_level"] == "INFO"),
        "{lines:#?}"
    );
    assert!(
        lines.iter().all(|l| l["log_level"] != "DEBUG"),
        "{lines:#?}"
    );

    // The portal: the extension's logs to WARNING, the runner's to DEBUG.
    devops.set_logging(logging(Some("level-key"), "WARNING", "DEBUG"));
    devops.push_setup_response();
    eventually("the new levels are in force", || {
        let levels = logs.control.levels();
        (levels.extension, levels.runner) == (LogLevel::Warn, LogLevel::Debug)
    })
    .await;

    let after = world.run_schedule().await.task_id;
    eventually("the second report's lines arrive", || {
        finished(&listener.batches(), &after)
    })
    .await;
    let lines = lines_of(&listener.batches(), &after);
    assert!(
        lines.iter().any(|l| l["log_level"] == "DEBUG"
            && l["logger"]
                .as_str()
                .is_some_and(|logger| logger.starts_with("connect_payg::connect"))),
        "the runner's DEBUG lines: {lines:#?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| from_extension(l) && l["log_level"] == "INFO"),
        "the extension's INFO lines are gone: {lines:#?}"
    );
    // The local output follows the same levels.
    let local = logs.written.text();
    assert!(local
        .lines()
        .any(|line| line.contains(&after) && line.contains("\"level\":\"DEBUG\"")));
    stop(extension).await;
}

#[tokio::test]
async fn the_runner_at_trace_ships_task_ids_and_metadata_and_no_secret() {
    let mut secrets = Secrets::new();
    let logging_key = random();
    secrets.add("logging key", &logging_key);
    let sim = simulator(&secrets).await;
    let devops = sim.devops();
    let variable = |name: &str, value: String, secure: bool| Variable {
        name: name.into(),
        value: Some(value),
        secure,
    };
    let address = sim.server_address();
    devops.set_variables(vec![
        variable(
            "USAGE_SOURCE",
            format!(
                "http://{address}/_sim/usage?from={{from}}&to={{to}}&token={}",
                secrets.source_token
            ),
            false,
        ),
        variable("USAGE_SOURCE_AUTH", secrets.usage_auth.clone(), true),
        variable(
            "ALERT_WEBHOOK_URL",
            format!(
                "http://{address}/_sim/webhook?token={}",
                secrets.webhook_token
            ),
            true,
        ),
        variable("REPORT_PERIOD", period().to_string(), false),
    ]);
    devops.set_logging(logging(Some(&logging_key), "INFO", "INFO"));
    let dir = tempfile::tempdir().unwrap();
    let finished_run = run_connected(
        dir.path(),
        &[
            ("API_KEY", secrets.api_key.clone()),
            ("ENVIRONMENT_ID", sim.environment_id().to_string()),
            ("INSTANCE_ID", "instance-shipping-1".to_string()),
            ("SERVER_ADDRESS", address.clone()),
            ("LOG_SHIPPING_URL", listener_url(&sim)),
        ],
        &sim,
    )
    .await;

    let task = devops.fire_schedule(connect_payg::handlers::MONTHLY_REPORT_METHOD);
    let result = devops
        .wait_for_result(&task, Duration::from_secs(60))
        .await
        .expect("the schedule answered");
    assert_eq!(result.output.result, ResultCode::Success, "{result:?}");
    // A failure too: the alert path, with the credentials that are refused.
    sim.state()
        .require_usage_auth(Some(format!("Bearer {}", random())));
    let failing = devops.fire_schedule(connect_payg::handlers::MONTHLY_REPORT_METHOD);
    let failed = devops
        .wait_for_result(&failing, Duration::from_secs(60))
        .await
        .expect("the failing schedule answered");
    assert_ne!(failed.output.result, ResultCode::Success);
    assert!(
        devops
            .logs()
            .wait_until(WAIT, |batches| finished(batches, &failing))
            .await,
        "the failing task's lines arrived"
    );

    devops.send_shutdown();
    let output = tokio::time::timeout(WAIT, finished_run)
        .await
        .expect("the runner stops when the platform asks")
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");

    let batches = devops.logs().batches();
    let lines: Vec<&Value> = batches.iter().flat_map(|b| b.lines.iter()).collect();
    for batch in &batches {
        assert_eq!(batch.token, logging_key);
        assert_eq!(batch.log_type.as_deref(), Some("python"));
        assert!(batch.bad_lines.is_empty(), "{:?}", batch.bad_lines);
        let text = serde_json::to_string(&batch.lines).unwrap();
        secrets.assert_absent("a shipped batch", text.as_bytes());
    }
    secrets.assert_absent("stdout", &output.stdout);
    secrets.assert_absent("stderr", &output.stderr);
    for result in devops.results() {
        secrets.assert_absent("a task result", format!("{result:?}").as_bytes());
    }

    // At TRACE everything of this crate is shipped — but never the shipper's own lines.
    assert!(lines
        .iter()
        .any(|l| l["log_level"] == "TRACE" || l["log_level"] == "DEBUG"));
    assert!(lines.iter().all(|l| {
        let logger = l["logger"].as_str().unwrap();
        logger.starts_with("connect_payg") && !logger.starts_with("connect_payg::logging")
    }));
    let task_lines = lines_of(&batches, &task);
    assert!(task_lines.len() > 5, "{task_lines:#?}");
    assert!(task_lines.iter().any(|l| l["logger"]
        .as_str()
        .unwrap()
        .starts_with("connect_payg::usage")));
    for line in &lines {
        assert_eq!(line["service_id"], devops.service_id(), "{line}");
        assert_eq!(line["environment_id"], sim.environment_id());
        assert_eq!(line["environment_type"], "development");
        assert_eq!(line["instance_id"], "instance-shipping-1");
        assert_eq!(line["account_id"], "VA-000-000");
        assert_eq!(line["account_name"], "Simulated Vendor");
        let stamp = line["@timestamp"].as_str().unwrap();
        assert!(
            stamp.len() == 24
                && stamp.ends_with('Z')
                && chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%dT%H:%M:%S%.3fZ").is_ok(),
            "{stamp}"
        );
        assert!(line["message"].is_string() && line["log_level"].is_string());
    }
    // Lines written while stopping were shipped before the process ended.
    assert!(
        lines.iter().any(|l| l["message"] == "runner stopped"
            || l["message"] == "stopping at the platform's request"),
        "the last lines were flushed"
    );
    sim.shutdown().await;
}
