//! The DevOps runner against the simulator's events websocket: handshake and declarations,
//! scheduled and background tasks end to end, the status re-check, failures answered instead
//! of crashing, reconnects that lose and duplicate nothing, the keepalive watchdog, malformed
//! server messages, configuration pushes and both ways of stopping.
//!
//! The handlers are small test doubles registered for the declarations of the real
//! `extension.json`. Timing knobs are shrunk through `RunnerOptions`; every wait below is an
//! upper bound on a condition, never an assertion about speed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use connect_payg::config::SettingsSources;
use connect_payg::devops::{
    run_with, Handler, HandlerOutcome, Registry, RunnerError, RunnerOptions, TaskContext,
};
use connect_sim::devops::{DevopsStats, Malformed, TaskResult, USAGE_FILE_EVENT};
use connect_sim::{SeedSpec, SimConfig, Simulator};
use payg_shared::protocol::{ResultCode, TaskCategory, Variable};

// Log lines written while a test runs on this thread (the tests' runtime is single-threaded,
// so every task of the runner logs here).
#[path = "support/captured.rs"]
mod captured;
use captured::Captured;

const SCHEDULE: &str = "generate_monthly_usage_reports";
const INSTANCE: &str = "test-instance-1";
const WAIT: Duration = Duration::from_secs(20);

/// What a test handler was called with.
struct Call {
    context: TaskContext,
    argument: Value,
}

/// A handler that reports each call on a channel and answers with `answer`.
fn recording(
    answer: impl Fn(&TaskContext, &Value) -> HandlerOutcome + Send + Sync + 'static,
) -> (Arc<dyn Handler>, mpsc::UnboundedReceiver<Call>) {
    let (calls, received) = mpsc::unbounded_channel();
    let answer = Arc::new(answer);
    let handler = move |context: TaskContext, argument: Value| {
        let calls = calls.clone();
        let answer = Arc::clone(&answer);
        async move {
            let outcome = answer(&context, &argument);
            let _ = calls.send(Call { context, argument });
            outcome
        }
    };
    (Arc::new(handler), received)
}

fn success() -> Arc<dyn Handler> {
    Arc::new(|_: TaskContext, _: Value| async { HandlerOutcome::Success(None) })
}

fn registry(events: Arc<dyn Handler>, schedule: Arc<dyn Handler>) -> Registry {
    Registry::embedded()
        .unwrap()
        .on_event(USAGE_FILE_EVENT, events)
        .on_schedule(SCHEDULE, schedule)
        .build()
        .unwrap()
}

/// Production behaviour with test-sized delays.
fn fast_options() -> RunnerOptions {
    RunnerOptions {
        reconnect_delay: Duration::from_millis(50),
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        close_timeout: Duration::from_millis(200),
        drain_limit: Some(Duration::from_secs(15)),
        ..RunnerOptions::default()
    }
}

struct Harness {
    sim: Simulator,
    stop_token: CancellationToken,
    runner: JoinHandle<Result<(), RunnerError>>,
}

impl Harness {
    async fn start(registry: Registry, options: RunnerOptions) -> Harness {
        Self::start_with(registry, options, &[], |_| {}).await
    }

    /// Starts a seeded simulator (prepared by `prepare`) and a runner against it, and waits
    /// for both connections.
    async fn start_with(
        registry: Registry,
        options: RunnerOptions,
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Simulator),
    ) -> Harness {
        let harness = Self::launch(registry, options, env, prepare).await;
        harness.wait_for(|s| s.handshakes >= 2 && s.open >= 2).await;
        harness
    }

    /// Like `start_with`, without waiting for the runner to connect.
    async fn launch(
        registry: Registry,
        options: RunnerOptions,
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Simulator),
    ) -> Harness {
        // Logs show up with the output of a failing test (RUST_LOG filters, default info).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_test_writer()
            .try_init();
        let sim = Simulator::start(SimConfig::default()).await.unwrap();
        sim.state().seed(&SeedSpec::default());
        prepare(&sim);
        let mut variables: HashMap<String, String> = [
            ("API_KEY", sim.api_key()),
            ("ENVIRONMENT_ID", sim.environment_id()),
            ("SERVER_ADDRESS", &sim.server_address()),
            ("INSTANCE_ID", INSTANCE),
            ("CONNECT_UNSECURE", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        variables.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let sources = SettingsSources {
            env: Some(variables),
            ..SettingsSources::default()
        };
        let stop = CancellationToken::new();
        let runner = tokio::spawn(run_with(sources, registry, options, stop.clone()));
        Harness {
            sim,
            stop_token: stop,
            runner,
        }
    }

    fn devops(&self) -> &Arc<connect_sim::devops::DevopsHub> {
        self.sim.devops()
    }

    async fn wait_for(&self, condition: impl Fn(&DevopsStats) -> bool) {
        assert!(
            self.devops().wait_until(WAIT, condition).await,
            "condition not reached; stats {:?}, errors {:?}",
            self.devops().stats(),
            self.devops().protocol_errors()
        );
    }

    async fn result(&self, task_id: &str) -> TaskResult {
        self.devops()
            .wait_for_result(task_id, WAIT)
            .await
            .unwrap_or_else(|| panic!("no result for {task_id}; stats {:?}", self.devops().stats()))
    }

    fn assert_no_protocol_errors(&self) {
        assert_eq!(self.devops().protocol_errors(), Vec::<String>::new());
    }

    /// Stops the runner locally and checks that `run` returned `Ok`.
    async fn stop(self) -> Simulator {
        self.stop_token.cancel();
        let outcome = tokio::time::timeout(WAIT, self.runner)
            .await
            .expect("run() did not return after the stop request")
            .expect("run() panicked");
        assert!(outcome.is_ok(), "{outcome:?}");
        self.sim
    }
}

async fn next_call(calls: &mut mpsc::UnboundedReceiver<Call>) -> Call {
    tokio::time::timeout(WAIT, calls.recv())
        .await
        .expect("handler not called")
        .expect("handler gone")
}

/// A draft usage file on an in-scope (contract, product) pair of the seeded world.
fn draft_file(sim: &Simulator) -> String {
    let catalogue = sim.state().catalogue();
    let asset = catalogue
        .assets
        .iter()
        .find(|asset| catalogue.in_scope(asset))
        .expect("the default world has in-scope assets");
    let created = sim
        .state()
        .create_file(&json!({
            "name": "runner test",
            "period": {"from": "2024-01-01", "to": "2024-01-31"},
            "product": {"id": asset.product_id},
            "contract": {"id": asset.contract_id},
        }))
        .unwrap();
    created["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn handshake_declares_the_extension_on_both_connections() {
    let harness = Harness::start(registry(success(), success()), fast_options()).await;
    let devops = harness.devops();

    let requests = devops.setup_requests();
    assert_eq!(requests.len(), 2, "one setup_request per connection");
    let expected = registry(success(), success()).setup_request();
    for request in &requests {
        assert_eq!(request, &expected);
    }
    let request = &requests[0];
    assert_eq!(
        request.event_subscriptions[USAGE_FILE_EVENT],
        ["ready", "invalid", "rejected", "accepted"]
    );
    assert_eq!(request.schedulables[0].method, SCHEDULE);
    assert_eq!(
        request.audience.as_deref(),
        Some(&["vendor".to_string()][..])
    );
    assert_eq!(request.runner_version, "43.1");
    let secure: Vec<&str> = request
        .variables
        .iter()
        .filter(|v| v.secure)
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(secure, ["USAGE_SOURCE_AUTH", "ALERT_WEBHOOK_URL"]);

    let mut runner_types: Vec<String> = devops
        .connect_queries()
        .into_iter()
        .map(|q| {
            assert_eq!(q.instance_id, INSTANCE);
            assert_eq!(
                (q.running_tasks, q.running_scheduled_tasks),
                (Some(0), Some(0))
            );
            q.runner_type.unwrap()
        })
        .collect();
    runner_types.sort();
    assert_eq!(runner_types, ["background", "interactive"]);

    harness.assert_no_protocol_errors();
    let sim = harness.stop().await;
    assert_eq!(
        sim.devops().stats().shutdowns,
        2,
        "a local stop is announced on each connection"
    );
    assert_eq!(sim.devops().protocol_errors(), Vec::<String>::new());
}

#[tokio::test]
async fn scheduled_task_reaches_its_handler_with_the_platform_variables() {
    let (schedule, mut calls) = recording(|context, argument| {
        HandlerOutcome::Success(Some(format!(
            "{} with MAX_RESUBMISSIONS={}",
            argument["method"].as_str().unwrap_or("?"),
            context.settings.report.max_resubmissions
        )))
    });
    let harness = Harness::start_with(registry(success(), schedule), fast_options(), &[], |sim| {
        sim.devops().set_variables(vec![Variable {
            name: "MAX_RESUBMISSIONS".into(),
            value: Some("5".into()),
            secure: false,
        }])
    })
    .await;

    let task_id = harness.devops().fire_schedule(SCHEDULE);
    let call = next_call(&mut calls).await;
    assert_eq!(call.context.task_id, task_id);
    assert_eq!(call.context.category, TaskCategory::Scheduled);
    assert_eq!(call.context.event_type, "scheduled_execution");
    assert_eq!(call.argument["method"], SCHEDULE);
    assert_eq!(
        call.context.object_id,
        call.argument["id"].as_str().unwrap()
    );

    let result = harness.result(&task_id).await;
    assert_eq!(result.output.result, ResultCode::Success);
    assert_eq!(
        result.output.message.as_deref(),
        Some("generate_monthly_usage_reports with MAX_RESUBMISSIONS=5")
    );
    assert!(result.output.runtime >= 0.0);
    harness.assert_no_protocol_errors();
    harness.stop().await;
}

#[tokio::test]
async fn usage_file_event_reaches_its_handler_with_the_current_file() {
    let (events, mut calls) = recording(|_, _| HandlerOutcome::Success(Some("noted".into())));
    let harness = Harness::start(registry(events, success()), fast_options()).await;
    let sim = &harness.sim;

    // Junk bytes make the platform mark the file invalid, a subscribed status: the platform
    // sends the task by itself.
    let file_id = draft_file(sim);
    sim.state()
        .upload(&file_id, bytes::Bytes::from_static(b"not a workbook"))
        .unwrap();

    let call = next_call(&mut calls).await;
    assert_eq!(call.context.category, TaskCategory::Background);
    assert_eq!(call.context.event_type, USAGE_FILE_EVENT);
    assert_eq!(call.context.object_id, file_id);
    assert_eq!(call.argument["id"], file_id.as_str());
    assert_eq!(call.argument["status"], "invalid");

    let result = harness.result(&call.context.task_id).await;
    assert_eq!(result.output.result, ResultCode::Success);
    assert_eq!(
        result.output.message, None,
        "background successes carry no message"
    );
    harness.assert_no_protocol_errors();
    harness.stop().await;
}

#[tokio::test]
async fn object_no_longer_in_a_subscribed_status_is_skipped() {
    let (events, mut calls) = recording(|_, _| HandlerOutcome::Success(None));
    let harness = Harness::start(registry(events, success()), fast_options()).await;

    let file_id = draft_file(&harness.sim);
    let task_id = harness
        .devops()
        .send_background_task(USAGE_FILE_EVENT, &file_id);
    let result = harness.result(&task_id).await;
    assert_eq!(result.output.result, ResultCode::Skip);
    assert_eq!(
        result.output.message.as_deref(),
        Some("The request status does not match the supported statuses: ready,invalid,rejected,accepted.")
    );
    assert!(calls.try_recv().is_err(), "the handler is not called");
    harness.assert_no_protocol_errors();
    harness.stop().await;
}

#[tokio::test]
async fn handler_panic_is_answered_and_the_runner_keeps_serving() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let schedule = move |_: TaskContext, _: Value| {
        let call = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if call == 0 {
                panic!("handler exploded");
            }
            HandlerOutcome::Success(Some("second run".into()))
        }
    };
    let harness = Harness::start(registry(success(), Arc::new(schedule)), fast_options()).await;

    let first = harness.devops().fire_schedule(SCHEDULE);
    let failed = harness.result(&first).await;
    assert_eq!(failed.output.result, ResultCode::Retry);
    assert!(
        failed
            .output
            .message
            .as_deref()
            .unwrap()
            .contains("handler exploded"),
        "{:?}",
        failed.output.message
    );
    assert_eq!(failed.output.runtime, 0.0);

    let second = harness.devops().fire_schedule(SCHEDULE);
    assert_eq!(
        harness.result(&second).await.output.result,
        ResultCode::Success
    );
    harness.assert_no_protocol_errors();
    harness.stop().await;
}

#[tokio::test]
async fn retried_tasks_are_redelivered_when_the_platform_does_so() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let schedule = move |_: TaskContext, _: Value| {
        let call = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            match call {
                0 => HandlerOutcome::Retry("source not reachable yet".into()),
                _ => HandlerOutcome::Success(Some("caught up".into())),
            }
        }
    };
    let harness = Harness::start(registry(success(), Arc::new(schedule)), fast_options()).await;
    let devops = harness.devops();
    devops.set_redelivery(Some(Duration::from_millis(10)));
    let first = devops.fire_schedule(SCHEDULE);
    assert_eq!(
        harness.result(&first).await.output.result,
        ResultCode::Retry
    );
    harness.wait_for(|s| s.results >= 2).await;
    let results = devops.results();
    assert_eq!(results[1].output.result, ResultCode::Success);
    assert_eq!(results[1].object_id, results[0].object_id);
    harness.assert_no_protocol_errors();
    harness.stop().await;
}

#[tokio::test]
async fn handler_over_its_time_limit_is_answered_with_retry() {
    let schedule = |_: TaskContext, _: Value| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        HandlerOutcome::Success(None)
    };
    let harness = Harness::start_with(
        registry(success(), Arc::new(schedule)),
        fast_options(),
        &[("SCHEDULED_TASK_MAX_EXECUTION_TIME", "1")],
        |_| {},
    )
    .await;
    let task_id = harness.devops().fire_schedule(SCHEDULE);
    let result = harness.result(&task_id).await;
    assert_eq!(result.output.result, ResultCode::Retry);
    assert!(
        result
            .output
            .message
            .as_deref()
            .unwrap()
            .contains("time limit"),
        "{:?}",
        result.output.message
    );
    harness.assert_no_protocol_errors();
    harness.stop().await;
}

#[tokio::test]
async fn result_of_a_task_outliving_its_connection_is_delivered_exactly_once() {
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (finished_tx, mut finished) = mpsc::unbounded_channel();
    let schedule = {
        let gate = Arc::clone(&gate);
        move |context: TaskContext, _: Value| {
            let gate = Arc::clone(&gate);
            let started = started_tx.clone();
            let finished = finished_tx.clone();
            async move {
                let _ = started.send(context.task_id.clone());
                let _permit = gate.acquire().await;
                let _ = finished.send(());
                HandlerOutcome::Success(Some("survived".into()))
            }
        }
    };
    let harness = Harness::start(registry(success(), Arc::new(schedule)), fast_options()).await;
    let devops = harness.devops();

    let task_id = devops.fire_schedule(SCHEDULE);
    assert_eq!(
        tokio::time::timeout(WAIT, started.recv())
            .await
            .unwrap()
            .unwrap(),
        task_id
    );
    // Cut the sockets and keep the runner out while the handler finishes.
    devops.refuse_upgrades(503, usize::MAX);
    devops.drop_connections();
    harness.wait_for(|s| s.open == 0 && s.refused >= 2).await;
    gate.add_permits(1);
    tokio::time::timeout(WAIT, finished.recv()).await.unwrap();
    assert!(
        devops.result(&task_id).is_none(),
        "no connection to send on yet"
    );

    devops.refuse_upgrades(503, 0);
    let result = harness.result(&task_id).await;
    assert_eq!(result.output.result, ResultCode::Success);
    assert_eq!(result.output.message.as_deref(), Some("survived"));
    harness.wait_for(|s| s.handshakes >= 4).await;

    // The reconnect told the platform about the scheduled task still running.
    assert!(devops
        .connect_queries()
        .iter()
        .any(|q| q.running_scheduled_tasks == Some(1)));
    // Give a duplicate every chance to show up before counting.
    let next = devops.fire_schedule(SCHEDULE);
    gate.add_permits(1);
    harness.result(&next).await;
    let delivered = devops
        .results()
        .iter()
        .filter(|r| r.task_id == task_id)
        .count();
    assert_eq!(delivered, 1);
    harness.assert_no_protocol_errors();
    harness.stop().await;
}

#[tokio::test]
async fn silent_server_is_detected_and_replaced() {
    let options = RunnerOptions {
        ping_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_millis(500),
        ..fast_options()
    };
    let harness = Harness::start(registry(success(), success()), options).await;
    let devops = harness.devops();
    devops.go_silent();
    harness.wait_for(|s| s.handshakes >= 4 && s.open >= 2).await;

    let task_id = devops.fire_schedule(SCHEDULE);
    assert_eq!(
        harness.result(&task_id).await.output.result,
        ResultCode::Success
    );
    harness.assert_no_protocol_errors();
    harness.stop().await;
}

#[tokio::test]
async fn malformed_server_messages_are_survived() {
    let options = RunnerOptions {
        max_message_size: 64 * 1024,
        ..fast_options()
    };
    let harness = Harness::start(registry(success(), success()), options).await;
    let devops = harness.devops();
    for kind in [
        Malformed::NotJson,
        Malformed::WrongVersion,
        Malformed::UnknownType,
        Malformed::MissingModelType,
    ] {
        devops.send_malformed(kind);
    }
    let task_id = devops.fire_schedule(SCHEDULE);
    assert_eq!(
        harness.result(&task_id).await.output.result,
        ResultCode::Success
    );
    assert_eq!(
        devops.stats().opened,
        2,
        "malformed messages do not cost the connection"
    );

    // An oversized frame is refused unread: the connection goes, a new one comes.
    devops.send_malformed(Malformed::Huge(1024 * 1024));
    harness.wait_for(|s| s.handshakes >= 4 && s.open >= 2).await;
    let task_id = devops.fire_schedule(SCHEDULE);
    assert_eq!(
        harness.result(&task_id).await.output.result,
        ResultCode::Success
    );
    harness.assert_no_protocol_errors();
    harness.stop().await;
}

#[tokio::test]
async fn refused_upgrades_are_retried_until_the_platform_accepts() {
    let harness = Harness::start_with(registry(success(), success()), fast_options(), &[], |sim| {
        sim.devops().refuse_upgrades(502, 3)
    })
    .await;
    assert_eq!(harness.devops().stats().refused, 3);
    let task_id = harness.devops().fire_schedule(SCHEDULE);
    assert_eq!(
        harness.result(&task_id).await.output.result,
        ResultCode::Success
    );
    harness.assert_no_protocol_errors();
    harness.stop().await;
}

#[tokio::test]
async fn unanswered_handshake_is_abandoned_and_retried() {
    let options = RunnerOptions {
        handshake_timeout: Duration::from_millis(300),
        ..fast_options()
    };
    let harness = Harness::start_with(registry(success(), success()), options, &[], |sim| {
        sim.devops().withhold_setup_responses(3)
    })
    .await;
    let devops = harness.devops();
    assert!(
        devops.setup_requests().len() >= 5,
        "3 unanswered, then 2 answered"
    );
    // Abandoned connections are closed, not left half-open.
    harness.wait_for(|s| s.open == 2).await;
    let task_id = devops.fire_schedule(SCHEDULE);
    assert_eq!(
        harness.result(&task_id).await.output.result,
        ResultCode::Success
    );
    harness.assert_no_protocol_errors();
    harness.stop().await;
}

/// A minimal HTTP `CONNECT` proxy on loopback; returns its address and the targets asked for.
async fn connect_proxy() -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let targets = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&targets);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    head.push(client.read_u8().await?);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                seen.lock().unwrap().push(target.clone());
                let mut server = tokio::net::TcpStream::connect(&target).await?;
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await?;
                tokio::io::copy_bidirectional(&mut client, &mut server).await?;
                Ok::<_, std::io::Error>(())
            });
        }
    });
    (address, targets)
}

#[tokio::test]
async fn websocket_tunnels_through_the_configured_proxy() {
    let (proxy, targets) = connect_proxy().await;
    let proxy_url = format!("http://{proxy}");
    let harness = Harness::start_with(
        registry(success(), success()),
        fast_options(),
        &[("HTTP_PROXY", &proxy_url)],
        |_| {},
    )
    .await;
    let task_id = harness.devops().fire_schedule(SCHEDULE);
    assert_eq!(
        harness.result(&task_id).await.output.result,
        ResultCode::Success
    );
    let expected = harness.sim.server_address();
    assert_eq!(*targets.lock().unwrap(), [expected.clone(), expected]);
    harness.assert_no_protocol_errors();
    harness.stop().await;
}

#[tokio::test]
async fn stop_while_the_platform_refuses_the_key_returns_at_once() {
    let harness = Harness::launch(
        registry(success(), success()),
        RunnerOptions {
            // Long enough that only the stop request can end the wait.
            backoff_base: Duration::from_secs(60),
            backoff_max: Duration::from_secs(60),
            ..fast_options()
        },
        &[("API_KEY", "ApiKey SU-000-000-001:wrong")],
        |_| {},
    )
    .await;
    harness.wait_for(|s| s.refused >= 2).await;
    assert_eq!(harness.devops().stats().handshakes, 0);
    harness.stop().await;
}

#[tokio::test]
async fn pushed_variables_apply_to_later_tasks_and_bad_ones_are_refused() {
    let (schedule, mut calls) = recording(|_, _| HandlerOutcome::Success(None));
    let harness = Harness::start(registry(success(), schedule), fast_options()).await;
    let devops = harness.devops();
    let variable = |name: &str, value: &str| Variable {
        name: name.into(),
        value: Some(value.into()),
        secure: false,
    };
    let run_once = || async {
        let task_id = devops.fire_schedule(SCHEDULE);
        harness.result(&task_id).await;
    };

    devops.set_variables(vec![variable("MAX_RESUBMISSIONS", "7")]);
    devops.push_setup_response();
    // The push travels on the same connection as the next task, so it is applied first.
    run_once().await;
    let call = next_call(&mut calls).await;
    assert_eq!(call.context.settings.report.max_resubmissions, 7);

    devops.set_variables(vec![
        variable("MAX_RESUBMISSIONS", "9"),
        variable("API_CONCURRENCY", "many"),
    ]);
    devops.push_setup_response();
    run_once().await;
    let call = next_call(&mut calls).await;
    assert_eq!(
        call.context.settings.report.max_resubmissions, 7,
        "a bad variable keeps the previous settings"
    );
    harness.assert_no_protocol_errors();
    harness.stop().await;
}

#[tokio::test]
async fn platform_shutdown_ends_run_after_answering_running_tasks() {
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let schedule = {
        let gate = Arc::clone(&gate);
        move |_: TaskContext, _: Value| {
            let gate = Arc::clone(&gate);
            let started = started_tx.clone();
            async move {
                let _ = started.send(());
                let _permit = gate.acquire().await;
                HandlerOutcome::Success(None)
            }
        }
    };
    let harness = Harness::start(registry(success(), Arc::new(schedule)), fast_options()).await;
    let devops = Arc::clone(harness.devops());
    let task_id = devops.fire_schedule(SCHEDULE);
    tokio::time::timeout(WAIT, started.recv()).await.unwrap();

    devops.send_shutdown();
    // Tasks sent after the shutdown are not taken.
    let late = devops.fire_schedule(SCHEDULE);
    gate.add_permits(1);
    let outcome = tokio::time::timeout(WAIT, harness.runner)
        .await
        .expect("run() did not return after the platform's shutdown")
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(
        devops.result(&task_id).map(|r| r.output.result),
        Some(ResultCode::Success),
        "the running task was answered before exit"
    );
    assert!(devops.result(&late).is_none());
    assert_eq!(
        devops.stats().shutdowns,
        0,
        "only a local stop is announced"
    );
    assert_eq!(devops.protocol_errors(), Vec::<String>::new());
    harness.stop_token.cancel();
}

#[tokio::test]
async fn local_stop_waits_for_running_tasks() {
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let schedule = {
        let gate = Arc::clone(&gate);
        move |_: TaskContext, _: Value| {
            let gate = Arc::clone(&gate);
            let started = started_tx.clone();
            async move {
                let _ = started.send(());
                let _permit = gate.acquire().await;
                HandlerOutcome::Success(Some("finished while stopping".into()))
            }
        }
    };
    let harness = Harness::start(registry(success(), Arc::new(schedule)), fast_options()).await;
    let task_id = harness.devops().fire_schedule(SCHEDULE);
    tokio::time::timeout(WAIT, started.recv()).await.unwrap();

    harness.stop_token.cancel();
    harness.wait_for(|s| s.shutdowns >= 2).await;
    assert!(
        !harness.runner.is_finished(),
        "run() waits for the running task"
    );
    gate.add_permits(1);
    let sim = harness.stop().await;
    assert_eq!(
        sim.devops().result(&task_id).and_then(|r| r.output.message),
        Some("finished while stopping".into())
    );
    assert_eq!(sim.devops().protocol_errors(), Vec::<String>::new());
}

/// A schedule handler whose first call panics before it has a future to return, and whose
/// second call awaits a spawned job that panics (passing the panic on).
#[derive(Default)]
struct Panicky(AtomicUsize);

impl Handler for Panicky {
    fn handle(
        &self,
        _: TaskContext,
        _: Value,
    ) -> futures::future::BoxFuture<'static, HandlerOutcome> {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("handle exploded before its future existed");
        }
        Box::pin(async {
            let job = tokio::task::spawn_blocking(|| -> HandlerOutcome { panic!("job exploded") });
            match job.await {
                Ok(outcome) => outcome,
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            }
        })
    }
}

#[tokio::test]
async fn a_panic_anywhere_in_a_handlers_work_is_answered() {
    let harness = Harness::start(
        registry(success(), Arc::new(Panicky::default())),
        fast_options(),
    )
    .await;
    for expected in ["handle exploded before its future existed", "job exploded"] {
        let task_id = harness.devops().fire_schedule(SCHEDULE);
        let output = harness.result(&task_id).await.output;
        assert_eq!(output.result, ResultCode::Retry, "{expected}");
        let message = output.message.unwrap_or_default();
        assert!(message.contains(expected), "{message}");
    }
    harness.assert_no_protocol_errors();
    harness.stop().await;
}

#[tokio::test]
async fn input_reaches_the_logs_clipped() {
    let (captured, _guard) = Captured::start(tracing::Level::DEBUG);
    let harness = Harness::start(registry(success(), success()), fast_options()).await;
    let huge = "y".repeat(3 * 1024 * 1024);
    let task_id = harness
        .devops()
        .send_task(TaskCategory::Background, &huge, "PR-1", Value::Null);
    assert_eq!(
        harness.result(&task_id).await.output.result,
        ResultCode::Fail
    );
    harness.assert_no_protocol_errors();
    harness.stop().await;
    let lines = captured.lines();
    assert!(
        lines.iter().any(|line| line.contains("bytes)")),
        "the clip says so"
    );
    let longest = lines.iter().map(String::len).max().unwrap_or(0);
    assert!(longest < 8 * 1024, "a log line of {longest} bytes");
}

#[tokio::test]
async fn a_refused_key_is_logged_at_error_rate_limited_and_ends_the_runner() {
    let (captured, _guard) = Captured::start(tracing::Level::DEBUG);
    let options = RunnerOptions {
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        refused_log_interval: Duration::from_millis(400),
        ..fast_options()
    };
    let harness = Harness::launch(
        registry(success(), success()),
        options,
        &[
            ("API_KEY", "ApiKey SU-000-000-001:wrong"),
            ("AUTH_FAILURE_EXIT_AFTER", "1"),
        ],
        |_| {},
    )
    .await;
    let outcome = tokio::time::timeout(WAIT, harness.runner)
        .await
        .expect("run() gives up on a refused key")
        .expect("run() panicked");
    let error = outcome.expect_err("a refused key is a failure");
    assert!(matches!(error, RunnerError::KeyRefused(_)), "{error}");
    assert!(
        error.to_string().contains("AUTH_FAILURE_EXIT_AFTER"),
        "{error}"
    );

    let refused = harness.sim.devops().stats().refused;
    let lines = captured.lines();
    let logged: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("ERROR") && line.contains("refuses the API key;"))
        .collect();
    assert!(!logged.is_empty(), "{lines:#?}");
    assert!(
        logged.iter().all(|line| line.contains("refused=")),
        "{logged:#?}"
    );
    // About one a 400 ms over one second, both connections together, however many refusals.
    assert!(
        logged.len() <= 5 && logged.len() < refused,
        "{} lines for {refused} refusals",
        logged.len()
    );
}
