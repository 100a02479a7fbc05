//! The monthly report end to end against the simulator: every group filed once
//! with exactly its rows, nothing bad uploaded, idempotent re-runs, recovery after interrupted
//! runs, January, every bad-record kind, and every source format from file and HTTP.

mod common;

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use common::{default_world, period, world, World};
use connect_payg::connect::FileStatus;
use connect_payg::connect::{NewUsageFile, Reference, UsagePeriod};
use connect_payg::usage::workbook::{usage_row, workbook_bytes};
use connect_payg::usage::BadReason;
use connect_payg::usage::FilingResult;
use connect_payg::usage::GroupKey;
use connect_sim::{BadKind, BadRowSpec, SeedSpec, UsageFormat};

fn reason_of(kind: BadKind) -> BadReason {
    match kind {
        BadKind::MissingField => BadReason::MissingField,
        BadKind::UnparsableQuantity | BadKind::UnparsableTime => BadReason::UnparsableField,
        BadKind::NegativeQuantity => BadReason::NegativeQuantity,
        BadKind::FractionalQuantity => BadReason::FractionalQuantity,
        BadKind::EndBeforeStart => BadReason::EndBeforeStart,
        BadKind::OutsidePeriod => BadReason::OutsidePeriod,
        BadKind::UnknownSubscription => BadReason::UnknownSubscription,
        BadKind::UnknownItem => BadReason::UnknownItem,
        BadKind::RepeatedRecordId => BadReason::DuplicateRecordId,
    }
}

fn expected_bad(world: &World) -> BTreeMap<BadReason, u64> {
    let mut counts = BTreeMap::new();
    for bad in &world.usage.expected.bad {
        *counts.entry(reason_of(bad.kind)).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn every_group_is_filed_once_with_exactly_its_rows() {
    let world = default_world().await;
    let summary = world.reporter(&[]).run(&world.job(), None).await.unwrap();
    assert_eq!(summary.failed(), 0, "{}", summary.headline());
    assert_eq!(summary.created(), world.usage.expected.groups.len());
    world.assert_filed_exactly(FileStatus::Pending).await;

    // Every record is accounted for: bad ones by reason and line, out-of-scope ones counted.
    assert_eq!(summary.bad_by_reason(), expected_bad(&world));
    let lines: Vec<u64> = summary.bad.iter().map(|b| b.line).collect();
    let mut expected_lines: Vec<u64> = world.usage.expected.bad.iter().map(|b| b.line).collect();
    expected_lines.sort();
    assert_eq!(lines, expected_lines);
    assert_eq!(
        summary.out_of_scope.values().sum::<u64>(),
        world.usage.expected.out_of_scope as u64
    );
    assert_eq!(
        summary.rows(),
        world.usage.expected.good_rows() as u64,
        "one record, one row"
    );
    assert!(world
        .live_files()
        .iter()
        .all(|f| !f.history.contains(&FileStatus::Invalid)));
}

#[tokio::test]
async fn a_second_run_changes_nothing() {
    let world = default_world().await;
    let reporter = world.reporter(&[]);
    reporter.run(&world.job(), None).await.unwrap();
    let files_before = world.sim.state().files();
    world.sim.state().reset_request_counts();

    let again = reporter.run(&world.job(), None).await.unwrap();
    assert_eq!(
        again.created() + again.submitted() + again.failed(),
        0,
        "{}",
        again.headline()
    );
    assert_eq!(again.skipped(), world.usage.expected.groups.len());
    let counts = world.sim.state().request_counts();
    for (method, route) in [
        ("POST", "/usage/files"),
        ("POST", "/usage/files/{id}/upload"),
        ("POST", "/usage/files/{id}/submit"),
        ("POST", "/usage/files/{id}/delete"),
    ] {
        assert_eq!(counts.get(method, route), 0, "{method} {route}");
    }
    assert_eq!(world.sim.state().files(), files_before);
}

fn key_of(world: &World, index: usize) -> GroupKey {
    let group = &world.usage.expected.groups[index];
    GroupKey {
        contract_id: group.contract_id.clone(),
        product_id: group.product_id.clone(),
    }
}

fn new_file(world: &World, key: &GroupKey, currency: &str) -> NewUsageFile {
    NewUsageFile {
        name: "left over".into(),
        description: String::new(),
        note: None,
        period: UsagePeriod::new(world.period.first_day(), world.period.last_day()),
        currency: currency.into(),
        product: Reference::id(&key.product_id),
        contract: Reference::id(&key.contract_id),
        external_id: key.external_id(world.period),
    }
}

/// Where an interrupted run stopped for one group.
#[derive(Clone, Copy, PartialEq)]
enum Stage {
    Created,
    /// Uploaded; still processing, or ready by now.
    Uploaded,
    Ready,
    Submitted,
    /// An earlier broken upload left the file invalid.
    BrokenUpload,
}

/// A run interrupted after create, after upload (processed and not) and after submit, and one
/// that left an invalid file: the next run completes every group with no duplicate.
#[tokio::test]
async fn an_interrupted_run_completes_on_the_next_one() {
    let world = world(
        SeedSpec {
            contracts: 3,
            products: 2,
            subscriptions: 60,
            ..SeedSpec::default()
        },
        BadRowSpec::default(),
        period("2024-03"),
    )
    .await;
    assert!(
        world.usage.expected.groups.len() >= 5,
        "enough groups for every case"
    );
    let settings = world.settings(&[]);
    let client = world.client(&settings);

    // The real pipeline's workbook for a group, as an interrupted run would have uploaded it.
    let reporter = world.reporter(&[]);
    let collection = reporter.collect(world.period).await.unwrap();
    let leave_behind = |index: usize, stage: Stage| {
        let key = key_of(&world, index);
        let currency = world.usage.expected.groups[index].currency.clone();
        let group = &collection.groups[&key];
        let workbook = match stage {
            Stage::BrokenUpload => workbook_bytes(std::iter::empty()).unwrap(),
            _ => workbook_bytes(
                group
                    .rows
                    .iter()
                    .map(|row| usage_row(&row.unwrap(), world.period)),
            )
            .unwrap(),
        };
        let client = client.clone();
        let new = new_file(&world, &key, &currency);
        async move {
            let file = client
                .usage_file(&client.create_usage_file(&new).await.unwrap())
                .await
                .unwrap();
            if stage == Stage::Created {
                return;
            }
            client
                .upload_usage_file(&file.id, workbook.into())
                .await
                .unwrap();
            if stage == Stage::Uploaded {
                return;
            }
            let processed = ["ready", "invalid"];
            while !processed.contains(&client.usage_file(&file.id).await.unwrap().status.as_str()) {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            if stage == Stage::Submitted {
                client.submit_usage_file(&file.id).await.unwrap();
            }
        }
    };
    leave_behind(0, Stage::Created).await;
    leave_behind(1, Stage::Uploaded).await;
    leave_behind(2, Stage::Ready).await;
    leave_behind(3, Stage::Submitted).await;
    leave_behind(4, Stage::BrokenUpload).await;

    let summary = reporter.run(&world.job(), None).await.unwrap();
    assert_eq!(summary.failed(), 0, "{}", summary.headline());
    world.assert_filed_exactly(FileStatus::Pending).await;
    let result_of = |i: usize| {
        let key = key_of(&world, i);
        summary
            .groups
            .iter()
            .find(|g| g.key == key)
            .unwrap()
            .result
            .clone()
    };
    assert_eq!(
        result_of(0),
        FilingResult::Created,
        "draft deleted and rebuilt"
    );
    assert_eq!(result_of(1), FilingResult::Submitted);
    assert_eq!(result_of(2), FilingResult::Submitted);
    assert_eq!(
        result_of(3),
        FilingResult::Skipped("already pending".into())
    );
    assert_eq!(
        result_of(4),
        FilingResult::Created,
        "invalid deleted and rebuilt"
    );
}

#[tokio::test]
async fn january_reports_december_of_the_previous_year() {
    let world = world(
        SeedSpec::default(),
        BadRowSpec::default(),
        period("2024-12"),
    )
    .await;
    let reporter = world.reporter(&[("REPORT_PERIOD", "")]);
    let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 1).unwrap();
    let mut job = world.job();
    job.period = reporter.period(now);
    assert_eq!(job.period, period("2024-12"));
    let summary = reporter.run(&job, None).await.unwrap();
    assert_eq!(summary.failed(), 0, "{}", summary.headline());
    world.assert_filed_exactly(FileStatus::Pending).await;
    let files = world.live_files();
    assert!(files
        .iter()
        .all(|f| f.external_id.as_deref().unwrap().ends_with(":2024-12")));
}

#[tokio::test]
async fn every_bad_record_kind_is_caught_and_never_uploaded() {
    let world = world(
        SeedSpec::default(),
        BadRowSpec {
            bad_share: 0.5,
            ..BadRowSpec::default()
        },
        period("2024-05"),
    )
    .await;
    let expected = expected_bad(&world);
    for kind in [
        BadReason::MissingField,
        BadReason::UnparsableField,
        BadReason::NegativeQuantity,
        BadReason::FractionalQuantity,
        BadReason::EndBeforeStart,
        BadReason::OutsidePeriod,
        BadReason::UnknownSubscription,
        BadReason::UnknownItem,
        BadReason::DuplicateRecordId,
    ] {
        assert!(
            expected.get(&kind).copied().unwrap_or(0) > 0,
            "the data has {kind}"
        );
    }
    let summary = world.reporter(&[]).run(&world.job(), None).await.unwrap();
    assert_eq!(summary.bad_by_reason(), expected);
    world.assert_filed_exactly(FileStatus::Pending).await;
}

#[tokio::test]
async fn excess_decimals_are_refused_not_rounded() {
    let world = default_world().await;
    let catalogue = world.sim.state().catalogue();
    let (asset, mpn, digits) = catalogue
        .assets
        .iter()
        .filter(|a| catalogue.in_scope(a))
        .find_map(|asset| {
            let product = catalogue.product(&asset.product_id)?;
            product.ppu_items().find_map(|item| {
                let digits = item.precision.strip_prefix("decimal(")?.strip_suffix(')')?;
                Some((
                    asset.id.clone(),
                    item.mpn.clone(),
                    digits.parse::<usize>().ok()?,
                ))
            })
        })
        .expect("a decimal item on an in-scope asset");
    let quantity = format!("1.{}", "1".repeat(digits + 1));
    let csv = format!(
        "subscription_id,item_mpn,quantity,start_time_utc,end_time_utc\n{asset},{mpn},{quantity},2024-02-01 00:00:00,2024-02-29 23:59:59\n"
    );
    std::fs::write(world.dir.path().join("usage-2024-02.csv"), csv).unwrap();
    let summary = world.reporter(&[]).run(&world.job(), None).await.unwrap();
    assert_eq!(summary.bad.len(), 1);
    assert_eq!(summary.bad[0].reason, BadReason::ExcessPrecision);
    assert_eq!(summary.bad[0].line, 2);
    assert!(world.live_files().is_empty(), "no records, no file");
}

/// The same records from every source kind give the same groups.
#[tokio::test]
async fn sources_in_every_format_from_file_and_http() {
    let world = default_world().await;
    let expected: Vec<(GroupKey, usize)> = world
        .usage
        .expected
        .groups
        .iter()
        .map(|g| {
            (
                GroupKey {
                    contract_id: g.contract_id.clone(),
                    product_id: g.product_id.clone(),
                },
                g.rows.len(),
            )
        })
        .collect();
    let groups_of = |collection: &connect_payg::usage::Collection| -> Vec<(GroupKey, usize)> {
        collection
            .groups
            .values()
            .map(|g| (g.key.clone(), g.rows.len()))
            .collect()
    };
    world
        .sim
        .state()
        .require_usage_auth(Some("Bearer vendor-token".into()));
    for (format, extension) in [
        (UsageFormat::Csv, "csv"),
        (UsageFormat::Json, "json"),
        (UsageFormat::JsonLines, "jsonl"),
    ] {
        let body = world.usage.render(format);
        let path = world.dir.path().join(format!("usage-2024-02.{extension}"));
        std::fs::write(&path, &body).unwrap();
        let source = format!(
            "file://{}/usage-{{period}}.{extension}",
            world.dir.path().display()
        );
        let collection = world
            .reporter(&[("USAGE_SOURCE", &source)])
            .collect(world.period)
            .await
            .unwrap();
        assert_eq!(groups_of(&collection), expected, "file {extension}");
        assert_eq!(
            collection.bad.len(),
            world.usage.expected.bad.len(),
            "file {extension}"
        );

        world
            .sim
            .state()
            .serve_usage(Some(world.period), body, format);
        let source = format!(
            "http://{}/_sim/usage?from={{from}}&to={{to}}",
            world.sim.server_address()
        );
        let collection = world
            .reporter(&[
                ("USAGE_SOURCE", &source),
                ("USAGE_SOURCE_AUTH", "Bearer vendor-token"),
            ])
            .collect(world.period)
            .await
            .unwrap();
        assert_eq!(groups_of(&collection), expected, "http {extension}");
        assert_eq!(
            collection.bad.len(),
            world.usage.expected.bad.len(),
            "http {extension}"
        );
    }

    let source = format!(
        "http://{}/_sim/usage?from={{from}}&to={{to}}",
        world.sim.server_address()
    );
    let error = world
        .reporter(&[
            ("USAGE_SOURCE", &source),
            ("USAGE_SOURCE_AUTH", "Bearer wrong-token"),
        ])
        .collect(world.period)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("401"), "{error}");
    assert!(error.contains("/_sim/usage"), "names the source: {error}");
    assert!(
        !error.contains("wrong-token") && !error.contains("from="),
        "no secrets: {error}"
    );
}

#[tokio::test]
async fn subscriptions_found_by_parameter_and_external_id() {
    for (criteria, key) in [
        (
            "parameter.tenant_id",
            connect_payg::config::AssetCriteria::Parameter("tenant_id".into()),
        ),
        (
            "asset.external_id",
            connect_payg::config::AssetCriteria::ExternalId,
        ),
    ] {
        let world = world(
            SeedSpec::default(),
            BadRowSpec {
                subscription_key: key,
                ..BadRowSpec::default()
            },
            period("2024-02"),
        )
        .await;
        let summary = world
            .reporter(&[("ASSET_SEARCH_CRITERIA", criteria)])
            .run(&world.job(), None)
            .await
            .unwrap();
        assert_eq!(summary.failed(), 0, "{criteria}: {}", summary.headline());
        assert_eq!(summary.bad_by_reason(), expected_bad(&world), "{criteria}");
        assert_eq!(
            summary.created(),
            world.usage.expected.groups.len(),
            "{criteria}"
        );
        assert!(world
            .live_files()
            .iter()
            .all(|f| f.status == FileStatus::Pending));
    }
}

#[tokio::test]
async fn dry_run_writes_workbooks_and_changes_nothing() {
    let world = default_world().await;
    let mut job = world.job();
    job.dry_run = true;
    job.keep_workbooks = true;
    let summary = world.reporter(&[]).run(&job, None).await.unwrap();
    assert_eq!(summary.dry_run(), world.usage.expected.groups.len());
    assert!(world.sim.state().files().is_empty());
    for group in &summary.groups {
        let path = group.workbook.as_ref().unwrap();
        let bytes = std::fs::read(path).unwrap();
        let rows = connect_payg::usage::workbook::read_workbook(&bytes).unwrap();
        assert_eq!(rows.len() as u64, group.rows);
    }
}

/// A month bigger than the lookup chunk (records are resolved a few thousand at a time): every
/// record still lands exactly once, and each object is still asked for once — assets in
/// batches of 100, at most one partial batch per chunk.
#[tokio::test]
async fn a_month_larger_than_a_lookup_chunk_is_sorted_exactly() {
    let world = world(
        SeedSpec {
            seed: 7,
            contracts: 6,
            products: 3,
            subscriptions: 3_000,
            ..SeedSpec::default()
        },
        BadRowSpec::default(),
        period("2024-03"),
    )
    .await;
    let records = world.usage.csv.lines().count() - 1;
    assert!(records > 10_000, "several chunks: {records} records");
    let summary = world.reporter(&[]).run(&world.job(), None).await.unwrap();
    assert_eq!(summary.failed(), 0, "{}", summary.headline());
    world.assert_filed_exactly(FileStatus::Pending).await;
    assert_eq!(summary.bad_by_reason(), expected_bad(&world));
    assert_eq!(
        summary.out_of_scope.values().sum::<u64>(),
        world.usage.expected.out_of_scope as u64
    );
    assert_eq!(summary.rows(), world.usage.expected.good_rows() as u64);

    let state = world.sim.state();
    let chunks = records.div_ceil(5_000) as u64;
    let asset_pages = state.request_count("GET", "/assets");
    assert!(
        asset_pages <= 3_000u64.div_ceil(100) + chunks,
        "{asset_pages} asset pages"
    );
    let products = world.sim.state().catalogue().products.len() as u64;
    assert!(state.request_count("GET", "/products/{id}") <= products);
    assert!(state.request_count("GET", "/contracts") <= chunks);
}

/// The simulator's webhook sink, as `ALERT_WEBHOOK_URL`.
fn webhook(world: &World) -> String {
    format!("http://{}/_sim/webhook", world.sim.server_address())
}

/// A running or future month is refused before anything is read or filed.
#[tokio::test]
async fn a_month_that_has_not_ended_is_refused_and_nothing_is_filed() {
    let world = default_world().await;
    let mut reporter = world.reporter(&[]);
    // 2024-02 is the running month on 2024-02-10; 2024-03 lies ahead.
    reporter.now = || Utc.with_ymd_and_hms(2024, 2, 10, 12, 0, 0).unwrap();
    for month in ["2024-02", "2024-03"] {
        let mut job = world.job();
        job.period = period(month);
        let error = reporter.run(&job, None).await.err().unwrap().to_string();
        assert!(
            error.contains(&format!("period {month} is not reportable yet")),
            "{error}"
        );
    }
    assert!(world.sim.state().files().is_empty());
    assert!(world.sim.state().webhooks().is_empty());
    // Once March has begun, February is reported.
    reporter.now = || Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap();
    let summary = reporter.run(&world.job(), None).await.unwrap();
    assert_eq!(summary.failed(), 0, "{}", summary.headline());
    world.assert_filed_exactly(FileStatus::Pending).await;
}

/// `report` names the month and when it ends, exit 2, whichever way the month was named.
#[test]
fn report_refuses_an_unfinished_month_with_exit_2() {
    for (args, env, named) in [
        (vec!["--period", "2999-01"], None, "--period"),
        (vec![], Some("2999-01"), "REPORT_PERIOD"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_connect-payg"));
        command
            .arg("report")
            .args(&args)
            .current_dir(dir.path())
            .env("API_KEY", "ApiKey SU-1:x")
            .env("USAGE_SOURCE", "file:///nowhere/usage-{period}.csv")
            .env("SERVER_ADDRESS", "127.0.0.1:9")
            .env_remove("REPORT_PERIOD");
        if let Some(month) = env {
            command.env("REPORT_PERIOD", month);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "{named}: period 2999-01 is not reportable yet: it becomes reportable at 2999-02-01 00:00 UTC"
            )),
            "{stderr}"
        );
    }
}

/// A source with no record at all is an error alert and a sentence in the summary, not a
/// quiet success; `allow_empty` says it is expected.
#[tokio::test]
async fn an_empty_source_raises_an_alert() {
    let world = default_world().await;
    let hook = webhook(&world);
    for (name, body) in [
        (
            "usage-2024-02.csv",
            "subscription_id,item_mpn,quantity,start_time_utc,end_time_utc\n",
        ),
        ("usage-2024-02.json", "[]"),
    ] {
        std::fs::write(world.dir.path().join(name), body).unwrap();
        let source = format!("file://{}/{}", world.dir.path().display(), name);
        let reporter = world.reporter(&[("USAGE_SOURCE", &source), ("ALERT_WEBHOOK_URL", &hook)]);
        let before = world.webhooks_of_kind("empty_source").len();
        let summary = reporter.run(&world.job(), None).await.unwrap();
        assert!(summary.empty_source(), "{name}");
        assert!(
            summary
                .headline()
                .contains("the usage source has no records for 2024-02"),
            "{}",
            summary.headline()
        );
        let alerts = world.webhooks_of_kind("empty_source");
        assert_eq!(alerts.len(), before + 1, "{name}");
        assert_eq!(alerts[before]["severity"], "error");
        assert_eq!(alerts[before]["period"], "2024-02");

        let mut job = world.job();
        job.allow_empty = true;
        reporter.run(&job, None).await.unwrap();
        assert_eq!(world.webhooks_of_kind("empty_source").len(), before + 1);
    }
    assert!(world.sim.state().files().is_empty());
}

/// The headline agrees with the table on every run, and the bad-records alert goes out once
/// for a month: from the run that filed it, not from re-runs.
#[tokio::test]
async fn counters_agree_with_the_table_and_bad_records_are_alerted_once() {
    let world = default_world().await;
    let hook = webhook(&world);
    let reporter = world.reporter(&[("ALERT_WEBHOOK_URL", &hook)]);
    let groups = world.usage.expected.groups.len();
    let rows = world.usage.expected.good_rows() as u64;
    let first = reporter.run(&world.job(), None).await.unwrap();
    assert_eq!(first.created(), groups);
    assert_eq!(first.submitted(), groups, "{}", first.headline());
    assert_eq!(first.rows(), rows);
    let again = reporter.run(&world.job(), None).await.unwrap();
    assert_eq!(again.skipped(), groups);
    assert_eq!(again.submitted(), 0);
    assert_eq!(again.rows(), rows, "{}", again.headline());
    assert_eq!(again.rows_written(), 0);
    let table_rows: u64 = again.groups.iter().map(|g| g.rows).sum();
    assert!(again
        .headline()
        .contains(&format!("rows {table_rows} (written this run 0)")));
    assert!(!world.usage.expected.bad.is_empty());
    assert_eq!(world.webhooks_of_kind("bad_records").len(), 1);

    // Every bad record carries the id it has or would have been given.
    let path = connect_payg::usage::write_bad_records(world.dir.path(), &again)
        .await
        .unwrap();
    let csv = std::fs::read_to_string(path).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("line,index,record_id,reason,detail,object")
    );
    let mut count = 0;
    for line in lines {
        let record_id = line.split(',').nth(2).unwrap();
        assert!(record_id.len() > 2 && record_id.starts_with('"'), "{line}");
        count += 1;
    }
    assert_eq!(count, world.usage.expected.bad.len());
}

/// A contract filter naming no active distribution contract says so.
#[tokio::test]
async fn a_contract_filter_that_selects_nothing_is_said() {
    let world = default_world().await;
    let mut job = world.job();
    job.contracts = vec!["CRD-NOPE".into()];
    let summary = world.reporter(&[]).run(&job, None).await.unwrap();
    assert!(summary.groups.is_empty());
    assert_eq!(
        summary.unmatched,
        vec!["contract CRD-NOPE is not an active distribution contract; nothing was filed for it"]
    );
    assert!(summary
        .table()
        .contains("CRD-NOPE is not an active distribution contract"));
    assert!(world.sim.state().files().is_empty());
}
