//! Health and metrics end to end: the real runner with `METRICS_ADDRESS` against the
//! simulator. `/metrics` is read with a Prometheus text-format parser (the `prometheus-parse`
//! crate, not ours) and every counter is compared with what the simulator saw of the run;
//! `/healthz` (and `connect-payg health`, the container's health check) answer 200 while the
//! background websocket is up and 503, with the reason, while the platform refuses the key.
//! The log lines shipped to the portal and dropped are counted from the log subscriber's own
//! shipping counts.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{default_world, World};
use connect_payg::config::{LogFormat, LogLevel};
use connect_payg::connect::FileStatus;
use connect_payg::logging::{LogControl, LogOptions, ShipOptions, ShippingStats};
use connect_payg::metrics::Listening;
use connect_payg::usage::BadReason;
use connect_sim::devops::{ListenerMode, SetupLogging, USAGE_FILE_EVENT};
use prometheus_parse::{Scrape, Value};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// Both health and metrics on a port the system picks, and a grace short enough for a test.
const GRACE: Duration = Duration::from_millis(300);

/// `GET http://{address}{path}`; `None` without an answer.
async fn get(address: SocketAddr, path: &str) -> Option<reqwest::Response> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(format!("http://{address}{path}"))
        .send()
        .await
        .ok()
}

/// `/healthz`: its status and JSON body.
async fn healthz(address: SocketAddr) -> (u16, serde_json::Value) {
    let response = get(address, "/healthz").await.expect("an answer");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, body)
}

/// Asks `/healthz` until `wanted` holds of its status and body (or fails after 20 s).
async fn healthz_until(
    address: SocketAddr,
    what: &str,
    wanted: impl Fn(u16, &serde_json::Value) -> bool,
) -> (u16, serde_json::Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = healthz(address).await;
        if wanted(status, &body) {
            return (status, body);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/healthz never became {what}; last {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/metrics`, as a scraper parses it.
async fn scrape(address: SocketAddr) -> Scrape {
    let response = get(address, "/metrics").await.expect("an answer");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_string()))).unwrap();
    // Every sample line was understood: nothing dropped by the parser.
    let sample_lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    let parsed: usize = scrape
        .samples
        .iter()
        .map(|s| match &s.value {
            Value::Histogram(buckets) => buckets.len(),
            _ => 1,
        })
        .sum();
    assert_eq!(parsed, sample_lines, "{text}");
    scrape
}

/// The sum of the counter `name` over the samples carrying every label of `labels`.
fn counter(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            Value::Counter(value) => value,
            ref other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

/// Every value of `label` among the samples of `name`, with the sum of each.
fn by_label(scrape: &Scrape, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut values = BTreeMap::new();
    for sample in scrape.samples.iter().filter(|s| s.metric == name) {
        if let (Some(key), Value::Counter(value)) = (sample.labels.get(label), &sample.value) {
            *values.entry(key.to_string()).or_default() += value;
        }
    }
    values
}

fn is_pending_after_rejection(world: &World, file_id: &str) -> bool {
    let history = world.sim.state().status_history(file_id).unwrap();
    history.last() == Some(&FileStatus::Pending) && history.contains(&FileStatus::Rejected)
}

/// `connect-payg health` with `METRICS_ADDRESS` set to `address` (unset for `None`): its exit
/// code, what it printed, and what it said on stderr.
async fn health_command(address: Option<&str>) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_connect-payg"));
    command.arg("health").env_remove("METRICS_ADDRESS");
    if let Some(address) = address {
        command.env("METRICS_ADDRESS", address);
    }
    let output = command.output().await.unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `connect-payg health` as in the image, with `0.0.0.0:<port>` (it asks on loopback).
async fn image_health(address: SocketAddr) -> (i32, String, String) {
    health_command(Some(&format!("0.0.0.0:{}", address.port()))).await
}

#[tokio::test]
async fn metrics_count_the_run_and_health_follows_the_background_connection() {
    let world = default_world().await;
    world.set_extension_variables(&[]);
    let listening = Listening::default();
    let tuned = listening.clone();
    let extension = world
        .start_extension_tuned(&[("METRICS_ADDRESS", "127.0.0.1:0")], move |options| {
            options.health_grace = GRACE;
            options.metrics_listening = tuned;
        })
        .await;
    let address = listening.address().expect("the endpoint is listening");
    assert!(address.ip().is_loopback() && address.port() != 0);
    let (_, body) = healthz_until(address, "healthy", |status, _| status == 200).await;
    assert_eq!(body["status"], "ok");
    assert_eq!(body["connection"], "connected");
    assert_eq!(image_health(address).await.0, 0);

    // A month filed by the schedule, one file rejected and rebuilt by its event.
    let started = chrono::Utc::now().timestamp();
    world.run_schedule().await;
    world.wait_until_all_pending().await;
    let rejected = world.live_files()[0].id.clone();
    world.sim.state().reject(&rejected, "too high").unwrap();
    world
        .wait_until("the rejected file is pending again", |w| {
            is_pending_after_rejection(w, &rejected)
        })
        .await;
    let devops = world.sim.devops();
    assert!(
        world
            .poll_until(Duration::from_secs(20), |w| w.sim.devops().all_answered())
            .await
    );

    let metrics = scrape(address).await;
    let expected = &world.usage.expected;
    let groups = expected.groups.len() as f64;

    // Tasks: what the platform received, by category and result.
    let mut answered: BTreeMap<(String, String), f64> = BTreeMap::new();
    for result in devops.results() {
        *answered
            .entry((
                result.category.as_str().to_string(),
                result.output.result.as_str().to_string(),
            ))
            .or_default() += 1.0;
    }
    assert!(answered.contains_key(&("scheduled".into(), "success".into())));
    for ((category, result), count) in &answered {
        assert_eq!(
            counter(
                &metrics,
                "connect_payg_tasks_total",
                &[("category", category), ("result", result)]
            ),
            *count,
            "{category} {result}"
        );
    }
    let tasks = counter(&metrics, "connect_payg_tasks_total", &[]);
    assert_eq!(tasks, answered.values().sum::<f64>());
    let durations: f64 = metrics
        .samples
        .iter()
        .filter(|s| s.metric == "connect_payg_task_duration_seconds_count")
        .map(|s| match s.value {
            Value::Untyped(count) | Value::Counter(count) => count,
            ref other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(durations, tasks, "one duration per task");
    let histograms = metrics
        .samples
        .iter()
        .filter(|s| s.metric == "connect_payg_task_duration_seconds")
        .count();
    assert!(histograms >= 2, "scheduled and background histograms");

    // Files: every group created, uploaded and submitted once; the rejected one again.
    let files = |action| {
        counter(
            &metrics,
            "connect_payg_usage_files_total",
            &[("action", action)],
        )
    };
    assert_eq!(files("created"), groups);
    assert_eq!(files("uploaded"), groups + 1.0);
    assert_eq!(files("submitted"), groups + 1.0);
    assert_eq!(files("rejected"), 1.0);
    assert_eq!(files("rebuilt"), 1.0);

    // Records: the scheduled run read the export once (the rebuild's re-read of one group is
    // not a report run).
    assert_eq!(
        counter(&metrics, "connect_payg_records_read_total", &[]),
        expected.records as f64
    );
    let bad = by_label(&metrics, "connect_payg_records_bad_total", "reason");
    assert_eq!(bad.values().sum::<f64>(), expected.bad.len() as f64);
    let codes: Vec<&str> = BadReason::ALL.iter().map(|r| r.code()).collect();
    assert!(bad.keys().all(|r| codes.contains(&r.as_str())), "{bad:?}");
    assert_eq!(
        counter(&metrics, "connect_payg_records_out_of_scope_total", &[]),
        expected.out_of_scope as f64
    );

    // Alerts: each one the webhook received, none failed.
    let mut webhooks: BTreeMap<String, f64> = BTreeMap::new();
    for alert in world.sim.state().webhooks() {
        *webhooks
            .entry(alert["kind"].as_str().unwrap().to_string())
            .or_default() += 1.0;
    }
    assert!(webhooks.contains_key("bad_records") && webhooks.contains_key("rejected_file"));
    assert_eq!(
        by_label(&metrics, "connect_payg_alerts_sent_total", "kind"),
        webhooks
    );
    assert_eq!(
        counter(&metrics, "connect_payg_alerts_failed_total", &[]),
        0.0
    );

    // REST: every request the simulator's API served, by route, and nothing else.
    let served = world.sim.state().request_counts();
    assert!(served.total > 0);
    for ((method, route), count) in &served.by_route {
        let endpoint = route.trim_start_matches('/').replace("{id}", ":id");
        assert_eq!(
            counter(
                &metrics,
                "connect_payg_rest_requests_total",
                &[("method", method), ("endpoint", &endpoint)]
            ),
            *count as f64,
            "{method} {route}"
        );
    }
    let rest: f64 = by_label(&metrics, "connect_payg_rest_requests_total", "endpoint")
        .iter()
        .filter(|(endpoint, _)| !endpoint.starts_with("devops/"))
        .map(|(_, count)| count)
        .sum();
    assert_eq!(rest, served.total as f64);
    assert_eq!(
        counter(&metrics, "connect_payg_rest_retries_total", &[]),
        0.0
    );

    // The websocket: one handshake per connection, no reconnect yet.
    for runner_type in ["background", "interactive"] {
        assert_eq!(
            counter(
                &metrics,
                "connect_payg_websocket_handshakes_total",
                &[("runner_type", runner_type)]
            ),
            1.0,
            "{runner_type}"
        );
    }
    assert_eq!(
        counter(&metrics, "connect_payg_websocket_reconnects_total", &[]),
        0.0
    );
    assert_eq!(
        counter(&metrics, "connect_payg_log_lines_shipped_total", &[]),
        0.0
    );

    // The month's last successful scheduled report: during this test.
    let last = metrics
        .samples
        .iter()
        .find(|s| s.metric == "connect_payg_last_scheduled_report_timestamp_seconds")
        .expect("the last-report gauge");
    assert_eq!(last.labels.get("period"), Some("2024-02"));
    let Value::Gauge(at) = last.value else {
        panic!("{last:?}")
    };
    assert!(at as i64 >= started && at as i64 <= chrono::Utc::now().timestamp());

    // The platform refuses the key: healthy for the grace period, then 503 with the reason.
    devops.refuse_upgrades(401, 1_000_000);
    devops.drop_connections();
    let (status, body) = healthz_until(address, "refused", |status, body| {
        status != 200 && body["connection"] == "refused"
    })
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "unhealthy");
    let reason = body["reason"].as_str().unwrap().to_string();
    let count: usize = reason
        .strip_prefix("Connect refused the API key (401) ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{reason}"));
    assert!(
        reason.ends_with('Z') && reason.contains(" since "),
        "{reason}"
    );
    assert!(count >= 1 && count <= devops.stats().refused, "{reason}");
    let (code, printed, _) = image_health(address).await;
    assert_eq!(code, 1, "{printed}");
    assert!(
        printed.contains("Connect refused the API key (401)"),
        "{printed}"
    );
    let refusing = scrape(address).await;
    assert!(
        counter(
            &refusing,
            "connect_payg_websocket_reconnects_total",
            &[("runner_type", "background")]
        ) >= count as f64
    );

    // Accepted again: healthy as soon as the background connection is handshaken.
    devops.refuse_upgrades(401, 0);
    let (_, body) = healthz_until(address, "healthy again", |status, _| status == 200).await;
    assert_eq!(body["connection"], "connected");
    assert_eq!(image_health(address).await.0, 0);
    let metrics = scrape(address).await;
    assert_eq!(
        counter(
            &metrics,
            "connect_payg_websocket_handshakes_total",
            &[("runner_type", "background")]
        ),
        2.0
    );
    assert_eq!(devops.protocol_errors(), Vec::<String>::new());
    // Neither endpoint shows a secret: the API key, the webhook URL (its token is in the path).
    let key = world.sim.api_key().to_string();
    let secret_part = key.rsplit(':').next().unwrap().to_string();
    for path in ["/metrics", "/healthz"] {
        let text = get(address, path).await.unwrap().text().await.unwrap();
        for secret in [&key, &secret_part, &world.webhook_url()] {
            assert!(!text.contains(secret.as_str()), "{path} shows {secret}");
        }
    }
    extension.stop().await;
    // The endpoint goes with the runner.
    assert!(get(address, "/healthz").await.is_none());
    let (code, _, _) = image_health(address).await;
    assert_eq!(code, 1);
}

#[tokio::test]
async fn health_without_metrics_address_is_unhealthy_not_a_usage_error() {
    let (code, _, error) = health_command(None).await;
    assert_eq!(code, 1);
    assert!(error.contains("METRICS_ADDRESS is not set"), "{error}");
    let (code, _, error) = health_command(Some("localhost:9464")).await;
    assert_eq!(code, 1);
    assert!(
        error.contains("setting METRICS_ADDRESS is invalid"),
        "{error}"
    );
}

#[tokio::test]
async fn an_address_in_use_stops_the_runner_at_start_naming_the_setting() {
    let world = default_world().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let mut env = world.runner_env();
    env.insert("METRICS_ADDRESS".into(), address.clone());
    let error = connect_payg::devops::run(
        connect_payg::config::SettingsSources {
            env: Some(env),
            ..Default::default()
        },
        connect_payg::handlers::registry().unwrap(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        error.contains(&format!("METRICS_ADDRESS {address}: cannot listen")),
        "{error}"
    );
    assert_eq!(world.sim.devops().stats().opened, 0, "no connection made");
}

/// A background task on a file the platform does not have: quick, and logged.
async fn background_task(world: &World) {
    let devops = world.sim.devops();
    let task = devops.send_background_task(USAGE_FILE_EVENT, "UF-0000-0000-0000-9999");
    devops
        .wait_for_result(&task, Duration::from_secs(30))
        .await
        .expect("the background task answered");
}

/// Runs background tasks until `condition` holds on the log shipping (at most 30 s).
async fn tasks_until(
    world: &World,
    control: &LogControl,
    what: &str,
    condition: impl Fn(ShippingStats) -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !condition(control.shipping()) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}: {:?}",
            control.shipping()
        );
        background_task(world).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The log lines shipped to the portal and dropped are `/metrics` counters, following the
/// log subscriber's own counts: lines shipped while the listener takes them, lines dropped
/// once it refuses the key.
#[tokio::test]
async fn metrics_count_the_log_lines_shipped_and_dropped() {
    // The runner logs to a subscriber of this test's own (scoped to the test's thread, where
    // the current-thread runtime runs the runner and the simulator), which ships.
    let (dispatch, control) = connect_payg::logging::build(LogOptions {
        format: LogFormat::Json,
        start: LogLevel::Info,
        rust_log: None,
        writer: BoxMakeWriter::new(std::io::sink),
        ship: ShipOptions {
            flush_interval: Duration::from_millis(100),
            request_timeout: Duration::from_secs(5),
            retry_base: Duration::from_millis(50),
            ..ShipOptions::default()
        },
    });
    let _subscriber = tracing::dispatcher::set_default(&dispatch);
    let world = default_world().await;
    world.set_extension_variables(&[]);
    let devops = world.sim.devops();
    devops.set_logging(SetupLogging {
        logging_api_key: Some("metrics-key".into()),
        log_level: Some("INFO".into()),
        runner_log_level: Some("INFO".into()),
    });
    let listener = format!("http://{}/_sim/logs", world.sim.server_address());
    let listening = Listening::default();
    let tuned = listening.clone();
    let extension = world
        .start_extension_tuned(
            &[
                ("METRICS_ADDRESS", "127.0.0.1:0"),
                ("LOG_SHIPPING_URL", listener.as_str()),
            ],
            move |options| {
                options.health_grace = GRACE;
                options.metrics_listening = tuned;
            },
        )
        .await;
    let address = listening.address().expect("the endpoint is listening");

    tasks_until(&world, &control, "lines are shipped", |s| s.shipped > 0).await;
    devops.logs().set_mode(ListenerMode::Refuse(401));
    tasks_until(&world, &control, "lines are dropped", |s| s.dropped > 0).await;

    let before = control.shipping();
    let metrics = scrape(address).await;
    let after = control.shipping();
    let shipped = counter(&metrics, "connect_payg_log_lines_shipped_total", &[]);
    let dropped = counter(&metrics, "connect_payg_log_lines_dropped_total", &[]);
    assert!(
        before.shipped as f64 <= shipped && shipped <= after.shipped as f64,
        "shipped {shipped}, the shipper {before:?} … {after:?}"
    );
    assert!(
        before.dropped as f64 <= dropped && dropped <= after.dropped as f64,
        "dropped {dropped}, the shipper {before:?} … {after:?}"
    );
    assert!(shipped > 0.0 && dropped > 0.0);
    // The listener received at least the lines counted as shipped.
    let received: usize = devops.logs().batches().iter().map(|b| b.lines.len()).sum();
    assert!(
        received as f64 >= shipped,
        "{received} received, {shipped} counted"
    );
    // A later scrape never counts less.
    let again = scrape(address).await;
    assert!(counter(&again, "connect_payg_log_lines_shipped_total", &[]) >= shipped);
    assert!(counter(&again, "connect_payg_log_lines_dropped_total", &[]) >= dropped);
    extension.stop().await;
}
