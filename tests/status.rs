//! `connect-payg status` end to end: the real binary against the simulator.
//!
//! * A month with every kind of attention — a group missing, an invalid file, a file rejected
//!   after the rebuild limit, late records, a record changed after filing, a file left as a
//!   draft — and a group whose late records were filed in a supplemental file: the lines, the
//!   JSON document, exit 1, and not one write request (downloads only where digests differ).
//! * A clean month filed by `report` (which ends with the status of what it touched): exit 0;
//!   then a group whose records all left the source, in scope through its file: exit 1.
//! * Bad arguments: exit 2, naming the argument.

mod common;

use std::process::Stdio;

use common::{period, world, World};
use connect_payg::connect::{FileStatus, NewUsageFile, Reference, UsagePeriod};
use connect_payg::usage::workbook::workbook_bytes;
use connect_payg::usage::GroupKey;
use connect_sim::vendor_usage::render_csv;
use connect_sim::{BadRowSpec, SeedSpec, STORAGE_ROUTE};
use payg_shared::record::RawRecord;
use serde_json::Value;
use tokio::process::Command;

/// The binary with nothing from this environment but the world's connection and source, and
/// `extra`; its logs (stderr) at info.
fn binary(world: &World, extra: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_connect-payg"));
    command
        .env_clear()
        .env("LOG_LEVEL", "info")
        .env("USAGE_SOURCE", world.usage_source())
        .env("READY_POLL_INTERVAL_MS", "5")
        .current_dir(world.dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (name, value) in world.connection_env() {
        command.env(name, value);
    }
    for (name, value) in extra {
        command.env(name, value);
    }
    command
}

/// Runs `connect-payg <args>`: (exit code, stdout, stderr).
async fn run(world: &World, extra: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        binary(world, extra).args(args).output(),
    )
    .await
    .expect("the command finishes")
    .unwrap();
    (
        output.status.code().expect("an exit code"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Requests that change something on the platform (create, upload, submit, update, delete).
fn writes(world: &World) -> u64 {
    world
        .sim
        .state()
        .request_counts()
        .by_route
        .iter()
        .filter(|((method, _), _)| method != "GET" && method != "HEAD")
        .map(|(_, count)| count)
        .sum()
}

fn key_of(world: &World, index: usize) -> GroupKey {
    let group = &world.usage.expected.groups[index];
    GroupKey {
        contract_id: group.contract_id.clone(),
        product_id: group.product_id.clone(),
    }
}

/// The group a record's subscription belongs to (`None`: no seeded subscription).
fn group_of(world: &World, record: &RawRecord) -> Option<GroupKey> {
    let catalogue = world.sim.state().catalogue();
    let asset = catalogue
        .assets
        .iter()
        .find(|a| Some(a.id.as_str()) == record.subscription_id.as_deref())?;
    Some(GroupKey {
        contract_id: asset.contract_id.clone(),
        product_id: asset.product_id.clone(),
    })
}

/// Writes `records` as the month's export, where `USAGE_SOURCE` reads it.
fn write_source(world: &World, records: &[RawRecord]) {
    let path = world.dir.path().join(format!("usage-{}.csv", world.period));
    std::fs::write(path, render_csv(records)).unwrap();
}

/// A record of `key`'s first record's subscription and item that arrived late, with its id.
fn late_record(world: &World, key: &GroupKey, id: &str) -> RawRecord {
    let template = world
        .usage
        .records
        .iter()
        .find(|r| group_of(world, r).as_ref() == Some(key))
        .expect("the group has records");
    RawRecord {
        record_id: Some(id.into()),
        quantity: Some("7".into()),
        record_note: Some("arrived late".into()),
        ..template.clone()
    }
}

fn job_of(world: &World, key: &GroupKey) -> connect_payg::usage::ReportJob {
    let mut job = world.job();
    job.contracts = vec![key.contract_id.clone()];
    job.products = vec![key.product_id.clone()];
    job
}

/// A file for `key` made by hand, as a person or an interrupted run leaves one.
async fn file_by_hand(world: &World, key: &GroupKey, index: usize) -> String {
    let client = world.client(&world.settings(&[]));
    let new = NewUsageFile {
        name: "by hand".into(),
        description: String::new(),
        note: None,
        period: UsagePeriod::new(world.period.first_day(), world.period.last_day()),
        currency: world.usage.expected.groups[index].currency.clone(),
        product: Reference::id(&key.product_id),
        contract: Reference::id(&key.contract_id),
        external_id: key.external_id(world.period),
    };
    client.create_usage_file(&new).await.unwrap()
}

/// The JSON document's group of `key`.
fn group_in<'d>(document: &'d Value, key: &GroupKey) -> &'d Value {
    document["periods"][0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| {
            g["contract"] == key.contract_id.as_str() && g["product"] == key.product_id.as_str()
        })
        .unwrap_or_else(|| panic!("{key} in {document:#}"))
}

fn attention_of(document: &Value, key: &GroupKey) -> Vec<String> {
    group_in(document, key)["attention"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The text line of `key`'s group.
fn line_of<'t>(text: &'t str, key: &GroupKey) -> &'t str {
    text.lines()
        .find(|line| line.contains(&key.contract_id) && line.contains(&key.product_id))
        .unwrap_or_else(|| panic!("{key} in\n{text}"))
}

#[tokio::test]
async fn a_month_with_every_kind_of_attention() {
    let world = world(
        SeedSpec {
            contracts: 3,
            products: 3,
            subscriptions: 90,
            ..SeedSpec::default()
        },
        BadRowSpec {
            bad_share: 0.0,
            out_of_scope_share: 0.0,
            ..BadRowSpec::default()
        },
        period("2024-02"),
    )
    .await;
    let groups = world.usage.expected.groups.len();
    assert!(groups >= 8, "a group for every case: {groups}");
    let [missing, invalid, draft, rejected, late, changed, supplemented, clean] =
        std::array::from_fn(|i| key_of(&world, i));
    let all = world.usage.records.clone();

    // Filed without the first three groups (they stay missing, or get hand-made files).
    let held_back = [&missing, &invalid, &draft];
    let filed: Vec<RawRecord> = all
        .iter()
        .filter(|r| !held_back.contains(&&group_of(&world, r).expect("a good record")))
        .cloned()
        .collect();
    write_source(&world, &filed);
    let summary = world.reporter(&[]).run(&world.job(), None).await.unwrap();
    assert_eq!(summary.failed(), 0, "{}", summary.headline());

    // A late record filed in a supplemental file (LATE_RECORDS = file): nothing to attend to.
    let mut with_supplement = filed.clone();
    with_supplement.push(late_record(&world, &supplemented, "late-filed-1"));
    write_source(&world, &with_supplement);
    let summary = world
        .reporter(&[("LATE_RECORDS", "file")])
        .run(&job_of(&world, &supplemented), None)
        .await
        .unwrap();
    assert_eq!(summary.failed(), 0, "{}", summary.headline());
    assert!(
        world.live_files().iter().any(|f| f.external_id.as_deref()
            == Some(&format!(
                "{}:late-1",
                supplemented.external_id(world.period)
            ))
            && f.status == FileStatus::Pending),
        "{:#?}",
        world.live_files()
    );

    // The source now: every group, the supplement's record, a late record, a changed one.
    let mut source = all.clone();
    source.push(late_record(&world, &supplemented, "late-filed-1"));
    source.push(late_record(&world, &late, "late-alerted-1"));
    let at = source
        .iter()
        .position(|r| group_of(&world, r).as_ref() == Some(&changed) && r.record_id.is_some())
        .expect("a record of the group with a vendor id");
    source[at].quantity = Some("999".into());
    write_source(&world, &source);

    // An invalid file, a draft, a rejection after two rebuilds.
    let client = world.client(&world.settings(&[]));
    let invalid_id = file_by_hand(&world, &invalid, 1).await;
    client
        .upload_usage_file(
            &invalid_id,
            workbook_bytes(std::iter::empty()).unwrap().into(),
        )
        .await
        .unwrap();
    world
        .wait_until("the broken upload is invalid", |w| {
            w.live_files()
                .iter()
                .any(|f| f.id == invalid_id && f.status == FileStatus::Invalid)
        })
        .await;
    let draft_id = file_by_hand(&world, &draft, 2).await;
    let rejected_id = world
        .live_files()
        .into_iter()
        .find(|f| f.external_id.as_deref() == Some(&rejected.external_id(world.period)))
        .unwrap()
        .id;
    world
        .sim
        .state()
        .reject(&rejected_id, "Quantities look too high")
        .unwrap();
    let note = client.usage_file(&rejected_id).await.unwrap().note.unwrap();
    world
        .sim
        .state()
        .update_file(
            &rejected_id,
            &serde_json::json!({"note": format!("{note} [connect-payg rebuilds: 2]")}),
        )
        .unwrap();

    world.sim.state().reset_request_counts();
    let env = [("MAX_RESUBMISSIONS", "2")];
    let (code, text, stderr) = run(&world, &env, &["status", "--period", "2024-02"]).await;
    assert_eq!(code, 1, "{text}\n{stderr}");
    let (code, json, stderr) =
        run(&world, &env, &["status", "--period", "2024-02", "--json"]).await;
    assert_eq!(code, 1, "{json}\n{stderr}");
    let counts = world.sim.state().request_counts();
    assert_eq!(writes(&world), 0, "read-only: {:#}", counts.to_json());
    assert_eq!(
        counts.get("GET", STORAGE_ROUTE),
        4,
        "two runs, each downloading only the two groups whose digests differ"
    );

    // The JSON document.
    let document: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(document["format"], 1);
    assert_eq!(document["needs_attention"], true);
    let month = &document["periods"][0];
    assert_eq!(month["period"], "2024-02");
    assert_eq!(month["error"], Value::Null);
    assert_eq!(month["source"]["records_read"], source.len() as u64);
    assert_eq!(month["source"]["good"], source.len() as u64);
    assert_eq!(month["source"]["bad"], 0);
    assert_eq!(month["groups"].as_array().unwrap().len(), groups);
    for (key, expected) in [
        (&missing, "missing"),
        (&invalid, "invalid"),
        (&draft, "not_submitted"),
        (&rejected, "rejected_limit_reached"),
        (&late, "late_records"),
        (&changed, "changed_after_filing"),
    ] {
        assert_eq!(attention_of(&document, key), [expected], "{key}");
    }
    for key in [&supplemented, &clean] {
        assert!(attention_of(&document, key).is_empty(), "{key}");
    }
    let group = group_in(&document, &missing);
    assert_eq!(group["files"], serde_json::json!([]));
    assert_eq!(group["status"], Value::Null);
    assert_eq!(group["rows_filed"], 0);
    assert!(group["rows_in_source"].as_u64().unwrap() > 0);
    let group = group_in(&document, &invalid);
    assert_eq!(group["status"], "invalid");
    assert_eq!(group["files"][0]["id"], invalid_id.as_str());
    assert!(group["files"][0]["error_detail"].is_string(), "{group:#}");
    assert_eq!(
        group_in(&document, &draft)["files"][0]["id"],
        draft_id.as_str()
    );
    assert_eq!(group_in(&document, &draft)["status"], "draft");
    let group = group_in(&document, &rejected);
    assert_eq!(group["status"], "rejected");
    assert_eq!(group["rejection_note"], "Quantities look too high");
    assert_eq!(group["rebuilds"], 2);
    let group = group_in(&document, &late);
    assert_eq!(group["late_records"], 1);
    assert_eq!(group["changed_after_filing"], 0);
    assert_eq!(
        group["rows_in_source"].as_u64().unwrap(),
        group["rows_filed"].as_u64().unwrap() + 1
    );
    let group = group_in(&document, &changed);
    assert_eq!(group["late_records"], 0);
    assert_eq!(group["changed_after_filing"], 1);
    let group = group_in(&document, &supplemented);
    let parts: Vec<&str> = group["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["part"].as_str().unwrap())
        .collect();
    assert_eq!(parts, ["main", "late-1"]);
    assert_eq!(group["files"][1]["rows"], 1);
    assert_eq!(group["rows_filed"], group["rows_in_source"]);
    assert_eq!(group["late_records"], 0);
    let totals = &month["totals"];
    assert_eq!(totals["groups"], groups as u64);
    assert_eq!(totals["groups_needing_attention"], 6);
    assert_eq!(totals["late_records"], 1);
    assert_eq!(totals["changed_after_filing"], 1);
    for code in [
        "missing",
        "invalid",
        "rejected_limit_reached",
        "not_submitted",
        "late_records",
        "changed_after_filing",
    ] {
        assert_eq!(totals["attention"][code], 1, "{code}: {totals:#}");
    }

    // The lines.
    assert!(line_of(&text, &missing).ends_with("missing"), "{text}");
    assert!(line_of(&text, &invalid).contains("  invalid"), "{text}");
    assert!(line_of(&text, &draft).ends_with("not submitted"), "{text}");
    let line = line_of(&text, &rejected);
    assert!(line.contains("rejected (limit reached)"), "{line}");
    assert!(line.contains("Quantities look too high"), "{line}");
    assert!(
        line_of(&text, &late).ends_with("late records (1)"),
        "{text}"
    );
    assert!(
        line_of(&text, &changed).ends_with("changed after filing (1)"),
        "{text}"
    );
    let line = line_of(&text, &supplemented);
    assert!(line.contains("(late-1)") && line.ends_with("  -"), "{line}");
    assert!(line_of(&text, &clean).ends_with("  -"), "{text}");
    assert!(
        text.contains("2024-02: ") && text.contains("6 groups need attention"),
        "{text}"
    );
    assert!(text.ends_with("needs attention\n"), "{text}");

    // Filters: only the groups asked for, and a clean one alone exits 0.
    let (code, text, _) = run(
        &world,
        &env,
        &[
            "status",
            "--period",
            "2024-02",
            "--contract",
            &clean.contract_id,
            "--product",
            &clean.product_id,
        ],
    )
    .await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("2024-02: 1 groups"), "{text}");
    assert!(text.ends_with("nothing needs attention\n"), "{text}");
    assert_eq!(writes(&world), 0);
}

#[tokio::test]
async fn a_clean_month_reported_then_looked_at_exits_0() {
    let world = world(
        SeedSpec::default(),
        BadRowSpec::default(),
        period("2024-02"),
    )
    .await;
    let env = [("REPORT_PERIOD", "2024-02")];
    let out = world.dir.path().join("out");
    let out = out.to_str().unwrap();
    let (code, report, stderr) = run(&world, &env, &["report", "--out", out]).await;
    assert_eq!(code, 0, "{report}\n{stderr}");
    // The report ends with the status of what it touched.
    let status_at = report
        .find("\nstatus:\n")
        .expect("the status after the table");
    assert!(
        report[status_at..].ends_with("nothing needs attention\n"),
        "{report}"
    );

    world.sim.state().reset_request_counts();
    let (code, json, stderr) = run(&world, &env, &["status", "--json"]).await;
    assert_eq!(code, 0, "{json}\n{stderr}");
    assert_eq!(writes(&world), 0);
    assert_eq!(
        world.sim.state().request_counts().get("GET", STORAGE_ROUTE),
        0,
        "every digest matches: nothing downloaded"
    );
    let document: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(document["needs_attention"], false);
    let month = &document["periods"][0];
    assert_eq!(month["period"], "2024-02", "REPORT_PERIOD chose it");
    let expected = &world.usage.expected;
    assert_eq!(month["source"]["records_read"], world.records() as u64);
    assert_eq!(month["source"]["good"], expected.good_rows() as u64);
    assert_eq!(month["source"]["bad"], expected.bad.len() as u64);
    assert_eq!(
        month["source"]["out_of_scope"],
        expected.out_of_scope as u64
    );
    assert_eq!(month["totals"]["groups"], expected.groups.len() as u64);
    assert_eq!(month["totals"]["files"], expected.groups.len() as u64);
    assert_eq!(month["totals"]["rows_filed"], expected.good_rows() as u64);
    assert_eq!(month["totals"]["groups_needing_attention"], 0);
    for group in month["groups"].as_array().unwrap() {
        assert_eq!(group["status"], "pending", "{group:#}");
        assert_eq!(group["rows_filed"], group["rows_in_source"], "{group:#}");
        assert_eq!(group["attention"], serde_json::json!([]), "{group:#}");
    }

    let (code, text, _) = run(&world, &env, &["status"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("; nothing needs attention\n"), "{text}");
    assert_eq!(writes(&world), 0);

    // A group whose records all left the source stays in scope through its file: every record
    // it filed changed after filing.
    let gone = key_of(&world, 0);
    let left: Vec<RawRecord> = world
        .usage
        .records
        .iter()
        .filter(|r| group_of(&world, r).as_ref() != Some(&gone))
        .cloned()
        .collect();
    write_source(&world, &left);
    let (code, json, stderr) = run(&world, &env, &["status", "--json"]).await;
    assert_eq!(code, 1, "{json}\n{stderr}");
    let document: Value = serde_json::from_str(&json).unwrap();
    let group = group_in(&document, &gone);
    assert_eq!(group["rows_in_source"], 0);
    assert_eq!(group["status"], "pending");
    assert_eq!(
        group["changed_after_filing"], group["rows_filed"],
        "{group:#}"
    );
    assert_eq!(attention_of(&document, &gone), ["changed_after_filing"]);
    assert_eq!(writes(&world), 0);
}

#[tokio::test]
async fn bad_arguments_exit_2_naming_the_argument() {
    let world = world(
        SeedSpec {
            contracts: 1,
            products: 1,
            subscriptions: 10,
            ..SeedSpec::default()
        },
        BadRowSpec::default(),
        period("2024-02"),
    )
    .await;
    for (args, named) in [
        (vec!["status", "--period", "2024-13"], "--period"),
        (vec!["status", "--period", "2999-01"], "--period"),
        (
            vec!["status", "--period", "2024-01", "--period", "2024-01-05"],
            "--period",
        ),
        (
            vec!["status", "--from", "2024-03", "--to", "2024-01"],
            "--from/--to",
        ),
        (vec!["status", "--from", "2024-01"], "--to"),
        (
            vec![
                "status", "--period", "2024-01", "--from", "2024-01", "--to", "2024-02",
            ],
            "--from",
        ),
        (vec!["status", "--contract"], "--contract"),
        (vec!["status", "--jsn"], "--jsn"),
    ] {
        let (code, stdout, stderr) = run(&world, &[], &args).await;
        assert_eq!(code, 2, "{args:?}: {stdout}\n{stderr}");
        assert!(stderr.contains(named), "{args:?} names {named}: {stderr}");
    }
    assert_eq!(world.sim.state().request_counts().total, 0, "nothing asked");
}
