//! The ledger over time (issue 17, part 1), end to end over the real runner (and the real
//! binary) against the simulator: a scheduled run covers the catch-up window, oldest first, and
//! files only what is missing; a period that cannot be read does not stop the others; daily
//! cadence over a week; the schedule's parameters and a malformed one; a period that is not
//! reportable yet refused wherever it is named; `report --from/--to`; SIGKILL in the middle of
//! a catch-up and a restart; and what a run that finds nothing missing costs.
//!
//! The runner chooses its window from the real clock, so every test first makes sure the next
//! period boundary (UTC) is not about to pass while it runs ([`clear_of_the_boundary`]).

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{expected_rows, uploaded, world, World};
use connect_payg::connect::FileStatus;
use connect_payg::usage::{Attention, FilingResult, Ledger, PeriodRequest, ReportJob, Submission};
use connect_sim::{BadRowSpec, Expected, Faults, FileSummary, RequestCounts, SeedSpec};
use payg_shared::period::{Cadence, Period};
use payg_shared::protocol::ResultCode;
use serde_json::{json, Value};

const SCHEDULE: &str = "generate_monthly_usage_reports";

/// Longest a test here takes; a period boundary closer than this is waited out first.
const TEST_SPAN: Duration = Duration::from_secs(180);

/// The time, once the next period boundary of `cadence` is at least [`TEST_SPAN`] away (waiting
/// past it when it is nearer): the window the runner computes is then the one the test
/// computed.
async fn clear_of_the_boundary(cadence: Cadence) -> DateTime<Utc> {
    loop {
        let now = Utc::now();
        let boundary = cadence.period_of(now.naive_utc()).next().start().and_utc();
        let left = (boundary - now).to_std().unwrap_or_default();
        if left >= TEST_SPAN {
            return now;
        }
        eprintln!("waiting {left:?} for the period boundary to pass");
        tokio::time::sleep(left + Duration::from_secs(1)).await;
    }
}

fn small_seed(seed: u64) -> SeedSpec {
    SeedSpec {
        seed,
        ..SeedSpec::default()
    }
}

/// A world for the newest of `periods`, with the vendor's export of every other one beside it;
/// returns what each period must come to.
async fn ledger_world(seed: SeedSpec, periods: &[Period]) -> (World, BTreeMap<Period, Expected>) {
    let newest = *periods.last().unwrap();
    let world = world(seed, BadRowSpec::default(), newest).await;
    let mut expected = BTreeMap::new();
    expected.insert(newest, world.usage.expected.clone());
    for &period in periods.iter().filter(|p| **p != newest) {
        let usage = world.export_period(period, &BadRowSpec::default()).unwrap();
        expected.insert(period, usage.expected);
    }
    (world, expected)
}

/// The three most recent reportable months, once clear of a month boundary, and a world
/// exporting them.
async fn three_months(seed: SeedSpec) -> (Vec<Period>, World, BTreeMap<Period, Expected>) {
    let now = clear_of_the_boundary(Cadence::Monthly).await;
    let months = Cadence::Monthly.window(now, chrono::Duration::zero(), 3);
    let (world, expected) = ledger_world(seed, &months).await;
    (months, world, expected)
}

/// The live files of `period` (by the external id's last part).
fn files_of(world: &World, period: Period) -> Vec<FileSummary> {
    let suffix = format!(":{period}");
    world
        .live_files()
        .into_iter()
        .filter(|f| {
            f.external_id
                .as_deref()
                .is_some_and(|id| id.ends_with(&suffix))
        })
        .collect()
}

/// The promise for one period: one live file per expected group, pending, holding exactly its
/// rows, with the period's first and last day as its period and the period in its name.
async fn assert_period_filed(world: &World, period: Period, expected: &Expected) {
    let client = world.client(&world.settings(&[("REPORT_PERIOD", "")]));
    let live = files_of(world, period);
    assert_eq!(
        live.len(),
        expected.groups.len(),
        "{period}: one live file per group: {live:#?}"
    );
    for group in &expected.groups {
        let external_id = format!("{}:{}:{period}", group.contract_id, group.product_id);
        let files: Vec<&FileSummary> = live
            .iter()
            .filter(|f| f.external_id.as_deref() == Some(external_id.as_str()))
            .collect();
        assert_eq!(files.len(), 1, "{external_id}: {live:#?}");
        let file = files[0];
        assert_eq!(file.status, FileStatus::Pending, "{external_id}: {file:?}");
        assert_eq!(
            uploaded(&world.sim, &file.id),
            expected_rows(group),
            "rows of {external_id}"
        );
        let detail = client.usage_file(&file.id).await.unwrap();
        let file_period = detail.period.expect("a period");
        assert_eq!(file_period.from, period.first_day().to_string());
        assert_eq!(file_period.to, period.last_day().to_string());
        let name = detail.name.unwrap_or_default();
        assert!(name.ends_with(&format!(" {period}")), "{name}");
    }
}

/// Waits until the files of `periods` (and no others) are live and all pending — the runner's
/// `ready` events submit them — and checks each period's promise.
async fn assert_filed(world: &World, expected: &BTreeMap<Period, Expected>, periods: &[Period]) {
    let files: usize = periods.iter().map(|p| expected[p].groups.len()).sum();
    world
        .wait_until(&format!("{files} files are pending"), |w| {
            let live = w.live_files();
            live.len() == files && live.iter().all(|f| f.status == FileStatus::Pending)
        })
        .await;
    for period in periods {
        assert_period_filed(world, *period, &expected[period]).await;
    }
}

/// Requests that change a usage file.
fn writes(counts: &RequestCounts) -> [(&'static str, u64); 4] {
    [
        ("create", counts.get("POST", "/usage/files")),
        ("upload", counts.get("POST", "/usage/files/{id}/upload")),
        ("submit", counts.get("POST", "/usage/files/{id}/submit")),
        ("delete", counts.get("POST", "/usage/files/{id}/delete")),
    ]
}

fn shown(counts: &RequestCounts) -> String {
    counts
        .by_route
        .iter()
        .map(|((method, route), n)| format!("{method} {route}: {n}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Fires the schedule (with `parameter`) through the runner and returns its answer.
async fn fire(world: &World, parameter: Value) -> (ResultCode, String) {
    fire_within(world, parameter, Duration::from_secs(90)).await
}

async fn fire_within(world: &World, parameter: Value, limit: Duration) -> (ResultCode, String) {
    let devops = world.sim.devops();
    let task = devops.fire_schedule_with(SCHEDULE, parameter);
    let result = devops
        .wait_for_result(&task, limit)
        .await
        .expect("the schedule answered");
    (
        result.output.result,
        result.output.message.unwrap_or_default(),
    )
}

/// Fires the schedule with `parameter` and checks the answer: `code`, and a message that
/// starts with `start`. Returns the message.
async fn answered(world: &World, parameter: Value, code: ResultCode, start: &str) -> String {
    let (answer, message) = fire(world, parameter.clone()).await;
    assert_eq!(answer, code, "{parameter}: {message}");
    assert!(
        message.starts_with(start),
        "{parameter}: {message}\n---\n{start}"
    );
    message
}

/// A run that changed no usage file.
fn assert_no_writes(counts: &RequestCounts) {
    assert_eq!(
        writes(counts),
        [("create", 0), ("upload", 0), ("submit", 0), ("delete", 0)],
        "{}",
        shown(counts)
    );
}

fn expected_files(expected: &BTreeMap<Period, Expected>) -> usize {
    expected.values().map(|e| e.groups.len()).sum()
}

/// A run after a three-month window with one month partly filed: only the missing groups are
/// created, the filed ones see no request beyond reads; a second run changes nothing and costs
/// one file listing per period plus reading the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_month_catch_up_files_only_the_missing_groups() {
    let (months, world, expected) = three_months(small_seed(11)).await;
    let total = expected_files(&expected);

    // The middle month partly filed already (one contract's groups), as by an earlier run.
    let partial = months[1];
    let contract = expected[&partial].groups[0].contract_id.clone();
    let mut job = world.job();
    job.period = partial;
    job.contracts = vec![contract.clone()];
    let earlier = world.reporter(&[]).run(&job, None).await.unwrap();
    assert_eq!(earlier.failed(), 0, "{}", earlier.headline());
    let filed_before: Vec<FileSummary> = world.live_files();
    let already = filed_before.len();
    assert!(
        already > 0 && already < expected[&partial].groups.len(),
        "one month partly filed: {already} of {}",
        expected[&partial].groups.len()
    );

    world.set_extension_variables(&[("REPORT_PERIOD", "")]);
    let extension = world.start_extension().await;
    world.sim.state().reset_request_counts();
    let overview = format!(
        "3 periods, oldest first: {} filed, {} filed, {} filed",
        months[0], months[1], months[2]
    );
    answered(&world, json!({}), ResultCode::Success, &overview).await;
    assert_filed(&world, &expected, &months).await;
    // No group got a second file, and the filed ones were only read.
    assert_eq!(world.sim.state().files().len(), total);
    let after: BTreeMap<String, FileSummary> = world
        .live_files()
        .into_iter()
        .map(|f| (f.id.clone(), f))
        .collect();
    for file in &filed_before {
        assert_eq!(after.get(&file.id), Some(file), "{} was touched", file.id);
    }
    let counts = world.sim.state().request_counts();
    let missing = (total - already) as u64;
    let [create, upload, submit, delete] = writes(&counts);
    assert_eq!(
        [create, upload, delete],
        [("create", missing), ("upload", missing), ("delete", 0)],
        "{}",
        shown(&counts)
    );
    // Each new file is submitted by its `ready` event; the run's own follow-up may try too
    // when an event is slow, and finds the file submitted.
    assert!(submit.1 >= missing, "{}", shown(&counts));

    // Nothing missing now: the next run reads the source and lists each period's files once.
    world.sim.state().reset_request_counts();
    let overview = format!(
        "3 periods, oldest first: {} unchanged, {} unchanged, {} unchanged",
        months[0], months[1], months[2]
    );
    answered(&world, json!({}), ResultCode::Success, &overview).await;
    let counts = world.sim.state().request_counts();
    assert_no_writes(&counts);
    assert_eq!(
        counts.get("GET", "/usage/files"),
        3,
        "one listing per period:\n{}",
        shown(&counts)
    );
    eprintln!("a no-change catch-up run of 3 months:\n{}", shown(&counts));
    extension.stop().await;
}

/// The extension was down: one month's export cannot be read. The run files the others and
/// answers `retry` naming it; once the export is there, the next run files it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_that_cannot_be_read_does_not_stop_the_others() {
    let (months, world, expected) = three_months(small_seed(12)).await;
    let gap = months[1];
    std::fs::remove_file(world.dir.path().join(format!("usage-{gap}.csv"))).unwrap();
    world.set_extension_variables(&[("REPORT_PERIOD", "")]);
    let extension = world.start_extension().await;

    let start = format!(
        "retry: {gap} failed for a reason a later attempt may fix\n3 periods, oldest first: {} filed, {gap} not reported, {} filed",
        months[0], months[2]
    );
    let message = answered(&world, json!({}), ResultCode::Retry, &start).await;
    assert!(
        message.contains(&format!("period {gap}: not reported: usage source")),
        "{message}"
    );
    assert!(message.contains("file not found"), "{message}");
    assert_filed(&world, &expected, &[months[0], months[2]]).await;
    assert!(files_of(&world, gap).is_empty());

    world.export_period(gap, &BadRowSpec::default()).unwrap();
    let start = format!(
        "3 periods, oldest first: {} unchanged, {gap} filed, {} unchanged",
        months[0], months[2]
    );
    answered(&world, json!({}), ResultCode::Success, &start).await;
    assert_filed(&world, &expected, &months).await;
    extension.stop().await;
}

/// `REPORT_CADENCE=daily`: a week of days, one file per group and day, external ids and file
/// names with the day, file periods of one day; a second run changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_cadence_files_every_day_of_the_week() {
    let now = clear_of_the_boundary(Cadence::Daily).await;
    let days = Cadence::Daily.window(now, chrono::Duration::zero(), 7);
    let (world, expected) = ledger_world(small_seed(13), &days).await;
    world.set_extension_variables(&[("REPORT_PERIOD", ""), ("REPORT_CADENCE", "daily")]);
    let extension = world.start_extension().await;

    let overview: Vec<String> = days.iter().map(|d| format!("{d} filed")).collect();
    let start = format!("7 periods, oldest first: {}", overview.join(", "));
    answered(&world, json!({}), ResultCode::Success, &start).await;
    assert!(days.iter().all(|day| day.cadence() == Cadence::Daily));
    assert_filed(&world, &expected, &days).await;

    world.sim.state().reset_request_counts();
    answered(
        &world,
        json!({}),
        ResultCode::Success,
        "7 periods, oldest first: ",
    )
    .await;
    let counts = world.sim.state().request_counts();
    assert_no_writes(&counts);
    assert_eq!(counts.get("GET", "/usage/files"), 7, "{}", shown(&counts));
    // What was looked up in Connect serves the run's every period: the week resolves its
    // subscriptions about once, not once a day.
    let week = counts.get("GET", "/assets");
    world.sim.state().reset_request_counts();
    let newest = days[6].to_string();
    answered(
        &world,
        json!({ "period": newest }),
        ResultCode::Success,
        &format!("1 period: {newest} unchanged"),
    )
    .await;
    let one_day = world.sim.state().request_counts().get("GET", "/assets");
    assert!(
        week * 2 < one_day * 7,
        "asset requests: {week} for the week, {one_day} for one day"
    );
    extension.stop().await;
}

/// A daily period reaches an HTTP source as `{from}` = `{to}` = the day and `{period}` as
/// `YYYY-MM-DD`; the reporter files each day on its own.
#[tokio::test]
async fn a_day_reaches_the_source_as_one_day() {
    let days = [
        Period::parse("2024-03-04").unwrap(),
        Period::parse("2024-03-05").unwrap(),
    ];
    let (world, expected) = ledger_world(small_seed(14), &days).await;
    for day in days {
        let csv =
            std::fs::read_to_string(world.dir.path().join(format!("usage-{day}.csv"))).unwrap();
        world
            .sim
            .state()
            .serve_usage(Some(day), csv, connect_sim::UsageFormat::Csv);
    }
    let source = format!(
        "http://{}/_sim/usage?from={{from}}&to={{to}}&day={{period}}",
        world.sim.server_address()
    );
    let reporter = world.reporter(&[
        ("USAGE_SOURCE", &source),
        ("REPORT_CADENCE", "daily"),
        ("REPORT_PERIOD", ""),
    ]);
    let request = PeriodRequest {
        named: Some((days.to_vec(), "test")),
        ..PeriodRequest::default()
    };
    let periods = request.choose(&reporter.settings, Utc::now()).unwrap();
    let ledger: Ledger = reporter
        .run_periods(&periods, &job_of(&world, periods[0]), None)
        .await;
    assert!(ledger.errors().next().is_none(), "{}", ledger.headline());
    assert_eq!(ledger.failed(), 0, "{}", ledger.headline());
    for day in days {
        assert_period_filed(&world, day, &expected[&day]).await;
    }
    let table = ledger.table();
    assert!(table.starts_with("period "), "{table}");
    assert!(table.contains("\n2024-03-04 CRD-"), "{table}");
}

fn job_of(world: &World, period: Period) -> ReportJob {
    ReportJob {
        period,
        submission: Submission::Poll,
        ..world.job()
    }
}

/// The schedule's parameters override the variables for that run: `period` files exactly that
/// period, `catch_up_periods` that many recent ones; a malformed value, a period that is not
/// reportable and one of the other cadence answer `fail` naming the key and touch nothing; an
/// unknown key is only a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_parameters_choose_the_periods() {
    let (months, world, expected) = three_months(small_seed(15)).await;
    // The variables name the newest month alone.
    world.set_extension_variables(&[]);
    let extension = world.start_extension().await;

    let oldest = months[0].to_string();
    let start = format!("1 period: {oldest} filed");
    answered(
        &world,
        json!({"period": oldest}),
        ResultCode::Success,
        &start,
    )
    .await;
    assert_filed(&world, &expected, &months[..1]).await;

    let start = format!(
        "2 periods, oldest first: {} filed, {} filed",
        months[1], months[2]
    );
    answered(
        &world,
        json!({"catch_up_periods": 2}),
        ResultCode::Success,
        &start,
    )
    .await;
    assert_filed(&world, &expected, &months).await;

    let running = months[2].next();
    world.sim.state().reset_request_counts();
    for (parameter, answer) in [
        (
            json!({"catch_up_periods": "two"}),
            "schedule parameter catch_up_periods: \"two\" is not a whole number of periods between 1 and 366".to_string(),
        ),
        (
            json!({"period": "last month"}),
            "schedule parameter period: \"last month\" is not a YYYY-MM month or a YYYY-MM-DD day".to_string(),
        ),
        (
            json!({"period": running.to_string()}),
            format!("schedule parameter period: period {running} is not reportable yet: it becomes reportable at {} 00:00 UTC", running.next().first_day()),
        ),
        (
            json!({"period": months[1].last_day().to_string()}),
            format!("schedule parameter period: {} is a daily period, but REPORT_CADENCE is monthly", months[1].last_day()),
        ),
        (
            json!({"period": oldest, "catch_up_periods": 2}),
            format!("schedule parameter period: names exactly {oldest}, and catch_up_periods asks for 2 periods; give one of the two"),
        ),
    ] {
        answered(&world, parameter, ResultCode::Fail, &answer).await;
    }
    assert_eq!(
        world
            .sim
            .state()
            .request_counts()
            .get("GET", "/usage/files"),
        0,
        "a refused run reads nothing"
    );

    // An unknown key is a warning; the rest of the parameters apply.
    let parameter = json!({"period": oldest, "note": "re-run"});
    let start = format!("1 period: {oldest} unchanged");
    answered(&world, parameter, ResultCode::Success, &start).await;
    assert_eq!(world.sim.state().files().len(), expected_files(&expected));
    extension.stop().await;
}

/// The binary against the world's simulator, with nothing from this process's environment.
fn binary(world: &World) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_connect-payg"));
    command
        .current_dir(world.dir.path())
        .env_clear()
        .env("API_KEY", world.sim.api_key())
        .env("SERVER_ADDRESS", world.sim.server_address())
        .env("USAGE_SOURCE", world.usage_source())
        .env("READY_POLL_INTERVAL_MS", "5")
        .env("READY_TIMEOUT", "30")
        .env("API_RETRY_BASE_MS", "2")
        .env("API_RETRY_MAX_MS", "20")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// A period that is not reportable yet is refused wherever it is named: `--period`, a range
/// ending in it, `REPORT_PERIOD`, and within `REPORT_DELAY_HOURS` of its end; nothing is filed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_not_reportable_yet_is_refused() {
    let now = clear_of_the_boundary(Cadence::Daily).await;
    let today = Cadence::Daily.period_of(now.naive_utc());
    let yesterday = today.previous();
    let world = world(small_seed(16), BadRowSpec::default(), yesterday).await;
    let out = world.dir.path().join("out");
    for (args, env, named) in [
        (
            vec!["--period".to_string(), today.to_string()],
            vec![],
            "--period",
        ),
        (
            vec![
                "--from".to_string(),
                yesterday.to_string(),
                "--to".to_string(),
                today.to_string(),
            ],
            vec![],
            "--from/--to",
        ),
        (
            vec![],
            vec![
                ("REPORT_CADENCE", "daily".to_string()),
                ("REPORT_PERIOD", today.to_string()),
            ],
            "REPORT_PERIOD",
        ),
        (
            vec!["--period".to_string(), yesterday.to_string()],
            vec![("REPORT_DELAY_HOURS", "48".to_string())],
            "--period",
        ),
    ] {
        let output = binary(&world)
            .args(["report", "--unsecure", "--dry-run", "--out"])
            .arg(&out)
            .args(&args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{named}: period "))
                && stderr.contains("is not reportable yet: it becomes reportable at"),
            "{args:?}: {stderr}"
        );
        if env.iter().any(|(k, _)| *k == "REPORT_DELAY_HOURS") {
            assert!(
                stderr.contains("48 h after it ends, REPORT_DELAY_HOURS"),
                "{stderr}"
            );
        }
    }
    assert!(!out.exists(), "nothing was written");

    world.set_extension_variables(&[
        ("REPORT_CADENCE", "daily"),
        ("REPORT_PERIOD", &today.to_string()),
    ]);
    let extension = world.start_extension().await;
    let start = format!("REPORT_PERIOD: period {today} is not reportable yet");
    answered(&world, json!({}), ResultCode::Fail, &start).await;
    assert!(world.sim.state().files().is_empty());
    extension.stop().await;
}

/// `report --from P --to P` files each period in turn, one table with a period column, a
/// bad-records CSV per period; the same range again changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_files_a_range_of_periods() {
    let months = [
        Period::parse("2024-01").unwrap(),
        Period::parse("2024-02").unwrap(),
    ];
    let (world, expected) = ledger_world(small_seed(17), &months).await;
    let out = world.dir.path().join("out");
    let run = || async {
        binary(&world)
            .args([
                "report",
                "--unsecure",
                "--from",
                "2024-01",
                "--to",
                "2024-02",
                "--out",
            ])
            .arg(&out)
            .output()
            .await
            .unwrap()
    };
    let output = run().await;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("period     contract"), "{stdout}");
    for month in months {
        assert!(stdout.contains(&format!("\n{month}    CRD-")), "{stdout}");
        assert!(out.join(format!("bad-records-{month}.csv")).exists());
        assert_period_filed(&world, month, &expected[&month]).await;
    }
    assert!(
        stdout.contains("2 periods, oldest first: 2024-01 filed, 2024-02 filed"),
        "{stdout}"
    );
    world.sim.state().reset_request_counts();
    let output = run().await;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("2 periods, oldest first: 2024-01 unchanged, 2024-02 unchanged"),
        "{stdout}"
    );
    assert_no_writes(&world.sim.state().request_counts());
}

/// `connect-payg run`, the extension as deployed.
async fn start_runner(world: &World) -> tokio::process::Child {
    let hub = world.sim.devops();
    let before = hub.stats().handshakes;
    let child = binary(world)
        .args(["run", "--unsecure"])
        .env_remove("USAGE_SOURCE")
        .env("ENVIRONMENT_ID", world.sim.environment_id())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    assert!(
        hub.wait_until(Duration::from_secs(30), |s| s.handshakes >= before + 2)
            .await,
        "the runner connected"
    );
    child
}

/// The deployed extension SIGKILLed in the middle of a catch-up (once the second month's files
/// are being created), restarted and handed the schedule again: every month ends filed exactly,
/// and no group ever got a second file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_killed_midway_ends_the_same_after_a_restart() {
    let seed = SeedSpec {
        seed: 18,
        contracts: 4,
        products: 3,
        subscriptions: 300,
        ..SeedSpec::default()
    };
    let (months, world, expected) = three_months(seed).await;
    let total = expected_files(&expected);
    let first_month = expected[&months[0]].groups.len();
    // Every call takes a little while, so that the kill lands inside the run.
    world.sim.state().set_faults(Faults {
        latency: Duration::from_millis(8),
        ..Faults::default()
    });
    world.set_extension_variables(&[("REPORT_PERIOD", "")]);
    let hub = world.sim.devops();
    let mut child = start_runner(&world).await;
    let first = hub.fire_schedule(SCHEDULE);
    let deadline = Instant::now() + Duration::from_secs(60);
    while world.sim.state().files().len() < first_month + 2 {
        assert!(
            hub.result(&first).is_none(),
            "the run ended before the kill"
        );
        assert!(Instant::now() < deadline, "the run hangs");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    child.start_kill().expect("SIGKILL");
    child.wait().await.unwrap();
    let at_kill: Vec<(Option<String>, FileStatus)> = world
        .sim
        .state()
        .files()
        .into_iter()
        .map(|f| (f.external_id, f.status))
        .collect();
    assert!(
        at_kill.len() < total,
        "the kill left work to do: {at_kill:?}"
    );

    let mut child = start_runner(&world).await;
    let again = hub.fire_schedule(SCHEDULE);
    let result = hub
        .wait_for_result(&again, Duration::from_secs(90))
        .await
        .expect("the schedule answered after the restart");
    assert_eq!(
        result.output.result,
        ResultCode::Success,
        "{:?}",
        result.output.message
    );
    world.sim.state().clear_faults();
    assert_filed(&world, &expected, &months).await;
    child.start_kill().expect("SIGKILL");
    child.wait().await.unwrap();
    assert_eq!(
        world.sim.state().files().len(),
        total,
        "a group got a second file; at the kill: {at_kill:?}"
    );
    assert!(
        hub.result(&first).is_none(),
        "the killed run never answered"
    );
    assert!(
        hub.protocol_errors().is_empty(),
        "{:#?}",
        hub.protocol_errors()
    );
}

/// What a catch-up run that finds nothing missing costs at 10k subscriptions (three months,
/// monthly): printed for the notes. `cargo test --test ledger -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: cargo test --test ledger -- --ignored --nocapture"]
async fn no_change_catch_up_request_counts_at_10k_subscriptions() {
    let seed = SeedSpec {
        seed: 19,
        contracts: 40,
        products: 5,
        subscriptions: 10_000,
        ..SeedSpec::default()
    };
    let (_, world, expected) = three_months(seed).await;
    let total = expected_files(&expected);
    let records: usize = expected.values().map(|e| e.records).sum();
    world.set_extension_variables(&[("REPORT_PERIOD", "")]);
    let extension = world.start_extension().await;
    let started = Instant::now();
    let (code, message) = fire_within(&world, json!({}), Duration::from_secs(1800)).await;
    assert_eq!(code, ResultCode::Success, "{message}");
    let filing = started.elapsed();
    world
        .wait_until("every file is pending", |w| w.live_files().len() == total)
        .await;
    world.sim.state().reset_request_counts();
    let started = Instant::now();
    let (code, message) = fire_within(&world, json!({}), Duration::from_secs(1800)).await;
    let took = started.elapsed();
    assert_eq!(code, ResultCode::Success, "{message}");
    let counts = world.sim.state().request_counts();
    assert_no_writes(&counts);
    eprintln!(
        "10k subscriptions, 3 months, {total} files, {records} records: filing took {filing:.1?}; the no-change run took {took:.1?} and made {} requests:\n{}",
        counts.total,
        shown(&counts)
    );
    extension.stop().await;
}

/// Reports `period` alone with `cadence` through the reporter (polling submission) and returns
/// its summary.
async fn report_one(
    world: &World,
    cadence: Cadence,
    period: Period,
) -> connect_payg::usage::Summary {
    let webhook = world.webhook_url();
    let reporter = world.reporter(&[
        ("REPORT_CADENCE", cadence.as_str()),
        ("REPORT_PERIOD", ""),
        ("ALERT_WEBHOOK_URL", &webhook),
    ]);
    reporter
        .run(&job_of(world, period), None)
        .await
        .unwrap_or_else(|error| panic!("{period}: {error}"))
}

/// Switching `REPORT_CADENCE` never reports usage twice: a day of a month filed monthly is
/// covered (skipped, naming the month's file, no write); a month with days filed daily is not
/// filed monthly for those groups, and a `cadence_overlap` alert tells a person how to finish
/// it, while groups without a daily file are filed monthly as usual.
#[tokio::test]
async fn a_cadence_switch_never_reports_usage_twice() {
    let march = Period::parse("2024-03").unwrap();
    let march_4 = Period::parse("2024-03-04").unwrap();
    let april = Period::parse("2024-04").unwrap();
    let april_2 = Period::parse("2024-04-02").unwrap();
    let (world, expected) = ledger_world(small_seed(16), &[march_4, march, april_2, april]).await;

    // Monthly, then daily: the day is covered by the month's file.
    let summary = report_one(&world, Cadence::Monthly, march).await;
    assert_eq!(summary.failed(), 0, "{}", summary.headline());
    assert_period_filed(&world, march, &expected[&march]).await;
    let monthly: BTreeMap<String, String> = files_of(&world, march)
        .into_iter()
        .map(|f| (f.external_id.unwrap(), f.id))
        .collect();
    world.sim.state().reset_request_counts();
    let summary = report_one(&world, Cadence::Daily, march_4).await;
    assert_no_writes(&world.sim.state().request_counts());
    assert!(files_of(&world, march_4).is_empty());
    assert!(!summary.groups.is_empty());
    for group in &summary.groups {
        let month_file = &monthly[&group.key.external_id(march)];
        assert_eq!(
            group.result,
            FilingResult::Skipped(format!(
                "covered by the monthly file {month_file} of 2024-03"
            )),
            "{:?}",
            group.key
        );
    }
    assert!(world.webhooks_of_kind("cadence_overlap").is_empty());

    // Daily, then monthly: groups with a daily file are left to a person, the others filed.
    let summary = report_one(&world, Cadence::Daily, april_2).await;
    assert_eq!(summary.failed(), 0, "{}", summary.headline());
    let daily: BTreeMap<String, String> = files_of(&world, april_2)
        .into_iter()
        .map(|f| (f.external_id.unwrap(), f.id))
        .collect();
    assert!(!daily.is_empty());
    let summary = report_one(&world, Cadence::Monthly, april).await;
    let mut left = 0;
    for group in &summary.groups {
        match daily.get(&group.key.external_id(april_2)) {
            Some(day_file) => {
                left += 1;
                let FilingResult::Skipped(reason) = &group.result else {
                    panic!("{:?}: {:?}", group.key, group.result);
                };
                assert!(
                    reason.contains("1 day(s) of 2024-04 were filed daily")
                        && reason.contains(day_file.as_str()),
                    "{reason}"
                );
            }
            None => assert!(
                matches!(
                    group.result,
                    FilingResult::Created | FilingResult::Submitted
                ),
                "{:?}: {:?}",
                group.key,
                group.result
            ),
        }
    }
    let alerts = world.webhooks_of_kind("cadence_overlap");
    assert_eq!(alerts.len(), left, "{alerts:#?}");
    for alert in &alerts {
        let text = alert.to_string();
        assert!(text.contains("--from 2024-04-01 --to 2024-04-30"), "{text}");
        assert!(text.contains("2024-04-02"), "{text}");
    }
    let monthly_april: Vec<String> = files_of(&world, april)
        .into_iter()
        .map(|f| f.external_id.unwrap())
        .collect();
    for external_id in &monthly_april {
        let day_id = external_id.replace(":2024-04", ":2024-04-02");
        assert!(
            !daily.contains_key(&day_id),
            "{external_id} filed beside {day_id}"
        );
    }
    assert_eq!(monthly_april.len() + left, summary.groups.len());

    // `status` says the same: the covered day needs nobody; the month's groups with days filed
    // daily need a person.
    let world = &world;
    let status = |cadence: Cadence, period: Period| async move {
        world
            .reporter(&[("REPORT_CADENCE", cadence.as_str()), ("REPORT_PERIOD", "")])
            .status(&[period], &[], &[])
            .await
    };
    let day = status(Cadence::Daily, march_4).await;
    assert!(!day.needs_attention, "{}", day.text());
    assert!(day.periods[0].groups.iter().all(|g| g
        .other_cadence
        .as_deref()
        .is_some_and(|o| o.starts_with("covered by the monthly file"))));
    let month = status(Cadence::Monthly, april).await;
    let overlapping = month.periods[0]
        .groups
        .iter()
        .filter(|g| g.attention == [Attention::CadenceOverlap])
        .count();
    assert_eq!(overlapping, left, "{}", month.text());
    assert!(
        month.text().contains("days filed daily"),
        "{}",
        month.text()
    );
}
