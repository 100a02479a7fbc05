//! Late records and changes after filing (issue 17): records that reach the source after their
//! group's file was submitted are alerted (`LATE_RECORDS = alert`, the default) or filed, and
//! only they, in supplemental files `…:late-<n>` (`LATE_RECORDS = file`); records whose values
//! changed after filing, or that left the source, are alerted and never filed. A group whose
//! records did not change costs no download: the digest in its files' notes says so.
//!
//! The reporter and the real runner run against the simulator, which serves each file's
//! uploaded workbook at a short-lived signed link, as Connect does; its request counts show
//! what was downloaded.

mod common;

use std::collections::BTreeSet;

use common::{period, world, World};
use connect_payg::connect::FileStatus;
use connect_payg::usage::workbook::Cell;
use connect_payg::usage::{FilingResult, Part, Summary};
use connect_sim::vendor_usage::render_csv;
use connect_sim::{BadRowSpec, SeedSpec, STORAGE_ROUTE};
use payg_shared::protocol::ResultCode;
use payg_shared::record::RawRecord;

/// A small month whose every record is good and in scope, so each one belongs to a group.
async fn late_world() -> World {
    world(
        SeedSpec {
            contracts: 2,
            products: 2,
            subscriptions: 24,
            ..SeedSpec::default()
        },
        BadRowSpec {
            bad_share: 0.0,
            out_of_scope_share: 0.0,
            ..BadRowSpec::default()
        },
        period("2024-02"),
    )
    .await
}

/// (contract, product) of the world's first group.
fn first_group(world: &World) -> (String, String) {
    let group = &world.usage.expected.groups[0];
    (group.contract_id.clone(), group.product_id.clone())
}

/// The (contract, product) a record's subscription belongs to.
fn group_of(world: &World, record: &RawRecord) -> (String, String) {
    let catalogue = world.sim.state().catalogue();
    let asset = catalogue
        .assets
        .iter()
        .find(|a| Some(a.id.as_str()) == record.subscription_id.as_deref())
        .expect("every record names a seeded asset");
    (asset.contract_id.clone(), asset.product_id.clone())
}

/// Positions of the group's records in the source that carry a vendor record id.
fn records_with_ids(world: &World, records: &[RawRecord], group: &(String, String)) -> Vec<usize> {
    records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.record_id.is_some() && group_of(world, r) == *group)
        .map(|(at, _)| at)
        .collect()
}

/// A record of `template`'s subscription and item that arrived late, with its own id.
fn late_record(template: &RawRecord, id: &str, quantity: &str) -> RawRecord {
    RawRecord {
        record_id: Some(id.into()),
        quantity: Some(quantity.into()),
        record_note: Some("arrived late".into()),
        ..template.clone()
    }
}

/// Writes `records` as the month's export, where the world's `USAGE_SOURCE` reads it.
fn write_source(world: &World, records: &[RawRecord]) {
    let path = world.dir.path().join(format!("usage-{}.csv", world.period));
    std::fs::write(path, render_csv(records)).unwrap();
}

/// The source as the world wrote it, plus late copies of the first group's first records.
fn with_late_records(world: &World, ids: &[&str]) -> Vec<RawRecord> {
    let mut records = world.usage.records.clone();
    let group = first_group(world);
    let template = records
        .iter()
        .find(|r| group_of(world, r) == group)
        .expect("the group has records")
        .clone();
    for (n, id) in ids.iter().enumerate() {
        records.push(late_record(&template, id, &format!("{}", 11 + n)));
    }
    records
}

/// The record ids of a file's last upload.
fn uploaded_ids(world: &World, file_id: &str) -> BTreeSet<String> {
    world
        .sim
        .state()
        .uploaded_rows(file_id)
        .unwrap_or_default()
        .into_iter()
        .map(|row| match row.record_id {
            Cell::Text(id) => id,
            other => panic!("record id cell {other:?}"),
        })
        .collect()
}

fn external_id(world: &World, group: &(String, String), part: &str) -> String {
    format!("{}:{}:{}{part}", group.0, group.1, world.period)
}

/// The live files whose external id is `external_id`.
fn live_with(world: &World, external_id: &str) -> Vec<connect_sim::FileSummary> {
    world
        .live_files()
        .into_iter()
        .filter(|f| f.external_id.as_deref() == Some(external_id))
        .collect()
}

fn ids(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

/// POST requests that create or change a file, and downloads.
fn writes_and_downloads(world: &World) -> (u64, u64) {
    let counts = world.sim.state().request_counts();
    let writes = [
        "/usage/files",
        "/usage/files/{id}/upload",
        "/usage/files/{id}/submit",
        "/usage/files/{id}/delete",
    ]
    .iter()
    .map(|route| counts.get("POST", route))
    .sum::<u64>()
        + counts.get("PUT", "/usage/files/{id}");
    (writes, counts.get("GET", STORAGE_ROUTE))
}

async fn run(world: &World, extra: &[(&str, &str)]) -> Summary {
    let webhook = world.webhook_url();
    let mut settings = vec![("ALERT_WEBHOOK_URL", webhook.as_str())];
    settings.extend_from_slice(extra);
    let mut job = world.job();
    job.keep_workbooks = true;
    world
        .reporter(&settings)
        .run(&job, None)
        .await
        .expect("the run completes")
}

const FILE: [(&str, &str); 1] = [("LATE_RECORDS", "file")];

/// Files the month (`LATE_RECORDS = file`); the first group, its main file and that file's
/// record ids.
async fn filed_month(world: &World) -> ((String, String), String, BTreeSet<String>) {
    run(world, &FILE).await;
    let group = first_group(world);
    let main = live_with(world, &external_id(world, &group, ""))[0]
        .id
        .clone();
    let main_ids = uploaded_ids(world, &main);
    (group, main, main_ids)
}

#[tokio::test]
async fn an_unchanged_month_is_compared_by_digest_and_never_downloaded() {
    let world = late_world().await;
    run(&world, &FILE).await;
    world.assert_filed_exactly(FileStatus::Pending).await;
    let file_id = world.live_files()[0].id.clone();
    world.sim.state().accept(&file_id, Some("fine")).unwrap();
    let files = world.sim.state().files();
    world.sim.state().reset_request_counts();

    let again = run(&world, &FILE).await;
    assert_eq!(
        again.failed() + again.created() + again.submitted(),
        0,
        "{}",
        again.headline()
    );
    assert_eq!(again.skipped(), world.usage.expected.groups.len());
    assert_eq!(writes_and_downloads(&world), (0, 0));
    let counts = world.sim.state().request_counts();
    assert_eq!(counts.get("GET", "/usage/files/{id}"), 0, "no detail read");
    assert_eq!(
        counts.get("GET", "/usage/files"),
        1,
        "one listing for the month"
    );
    assert!(again
        .groups
        .iter()
        .all(|g| g.late.is_none() && g.part == Part::Main));
    assert_eq!(world.sim.state().files(), files);
}

#[tokio::test]
async fn late_records_are_alerted_and_listed_by_default() {
    let world = late_world().await;
    run(&world, &[]).await;
    world.assert_filed_exactly(FileStatus::Pending).await;
    let group = first_group(&world);
    write_source(&world, &with_late_records(&world, &["late-a", "late-b"]));
    world.sim.state().reset_request_counts();

    let summary = run(&world, &[]).await;
    assert_eq!(
        writes_and_downloads(&world),
        (0, 1),
        "only the changed group's file is downloaded"
    );
    world.assert_filed_exactly(FileStatus::Pending).await;
    let outcome = summary
        .groups
        .iter()
        .find(|g| (g.key.contract_id.clone(), g.key.product_id.clone()) == group)
        .unwrap();
    let late = outcome.late.as_ref().expect("compared");
    assert_eq!((late.late, late.changed), (2, 0));
    assert!(
        matches!(&outcome.result, FilingResult::Skipped(why) if why.contains("2 late records alerted")),
        "{:?}",
        outcome.result
    );
    let alerts = world.webhooks_of_kind("late_records");
    assert_eq!(
        alerts.len(),
        1,
        "one alert per group and period: {alerts:#?}"
    );
    assert_eq!(alerts[0]["contract"], group.0.as_str());
    assert_eq!(alerts[0]["product"], group.1.as_str());
    assert_eq!(alerts[0]["period"], "2024-02");
    assert_eq!(alerts[0]["severity"], "warning");
    assert!(alerts[0]["message"]
        .as_str()
        .unwrap()
        .starts_with("2 usage records of 2024-02 arrived after"));
    let details = alerts[0]["details"].as_str().unwrap();
    assert!(
        details.contains("late-a: ") && details.contains("late-b: "),
        "{details}"
    );
    assert!(world.webhooks_of_kind("changed_after_filing").is_empty());

    let csv = std::fs::read_to_string(common::workdir(&world).join("late-records-2024-02.csv"))
        .expect("the late records are listed");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("contract,product,record_id,"));
    for (line, id) in lines[1..].iter().zip(["late-a", "late-b"]) {
        assert!(
            line.starts_with(&format!("\"{}\",\"{}\",\"{id}\",", group.0, group.1)),
            "{line}"
        );
    }
}

#[tokio::test]
async fn late_records_are_filed_in_supplemental_files_and_nothing_twice() {
    let world = late_world().await;
    let (group, main, main_ids) = filed_month(&world).await;
    let records = with_late_records(&world, &["late-a", "late-b"]);
    write_source(&world, &records);

    let summary = run(&world, &FILE).await;
    assert_eq!(summary.created(), 1, "{}", summary.headline());
    let outcome = summary
        .groups
        .iter()
        .find(|g| g.part != Part::Main)
        .unwrap();
    assert_eq!(outcome.part, Part::Late(1));
    assert_eq!(outcome.result, FilingResult::Created);
    assert_eq!(outcome.rows, 2);
    let late_1 = live_with(&world, &external_id(&world, &group, ":late-1"));
    assert_eq!(late_1.len(), 1, "{late_1:#?}");
    assert_eq!(late_1[0].status, FileStatus::Pending);
    assert_eq!(
        uploaded_ids(&world, &late_1[0].id),
        ids(&["late-a", "late-b"]),
        "exactly the late rows"
    );
    assert_eq!(
        uploaded_ids(&world, &main),
        main_ids,
        "the main file is untouched"
    );
    let detail = world
        .client(&world.settings(&[]))
        .usage_file(&late_1[0].id)
        .await
        .unwrap();
    let file_period = detail.period.unwrap();
    assert_eq!(
        (file_period.from.as_str(), file_period.to.as_str()),
        ("2024-02-01", "2024-02-29")
    );
    assert!(
        world.webhooks_of_kind("late_records").is_empty(),
        "filed, not alerted"
    );

    // A second run adds nothing, and downloads nothing: main + late-1 hold the source.
    world.sim.state().reset_request_counts();
    let again = run(&world, &FILE).await;
    assert_eq!(
        again.created() + again.submitted() + again.failed(),
        0,
        "{}",
        again.headline()
    );
    assert_eq!(writes_and_downloads(&world), (0, 0));

    // More late records: the next supplemental file, never repeating the earlier ones.
    let mut more = records.clone();
    more.push(late_record(&records[records.len() - 1], "late-c", "20"));
    write_source(&world, &more);
    let third = run(&world, &FILE).await;
    assert_eq!(third.created(), 1, "{}", third.headline());
    let late_2 = live_with(&world, &external_id(&world, &group, ":late-2"));
    assert_eq!(late_2.len(), 1);
    assert_eq!(late_2[0].status, FileStatus::Pending);
    assert_eq!(uploaded_ids(&world, &late_2[0].id), ids(&["late-c"]));
    let live = world.live_files();
    assert_eq!(
        live.len(),
        world.usage.expected.groups.len() + 2,
        "{live:#?}"
    );
}

#[tokio::test]
async fn changes_after_filing_are_alerted_and_never_filed() {
    let world = late_world().await;
    let (group, main, main_ids) = filed_month(&world).await;
    let mut records = with_late_records(&world, &["late-a"]);
    let with_ids = records_with_ids(&world, &records, &group);
    assert!(with_ids.len() >= 3, "the group has records with vendor ids");
    let changed = records[with_ids[0]].record_id.clone().unwrap();
    let old_quantity = records[with_ids[0]].quantity.clone().unwrap();
    records[with_ids[0]].quantity = Some("999".into());
    // A record without a vendor id is known by its content: changed, it has a new id.
    let template = records
        .iter()
        .position(|r| group_of(&world, r) == group)
        .unwrap();
    let derived = (0..records.len())
        .rev()
        .find(|&at| {
            at != template
                && records[at].record_id.is_none()
                && group_of(&world, &records[at]) == group
        })
        .expect("the group has a record without a vendor id");
    let derived_quantity = records[derived].quantity.clone().unwrap();
    records[derived].quantity = Some("123".into());
    let gone = records.remove(with_ids[1]).record_id.unwrap();
    write_source(&world, &records);
    world.sim.state().reset_request_counts();

    let summary = run(&world, &FILE).await;
    let outcome = summary
        .groups
        .iter()
        .find(|g| (g.key.contract_id.clone(), g.key.product_id.clone()) == group)
        .unwrap();
    let late = outcome.late.as_ref().unwrap();
    assert_eq!((late.late, late.changed), (1, 3));
    assert!(
        summary
            .headline()
            .contains("late records 1, changed after filing 3"),
        "{}",
        summary.headline()
    );
    assert_eq!(outcome.part, Part::Late(1));
    let late_1 = live_with(&world, &external_id(&world, &group, ":late-1"));
    assert_eq!(late_1.len(), 1);
    assert_eq!(
        uploaded_ids(&world, &late_1[0].id),
        ids(&["late-a"]),
        "only the late record is filed"
    );
    assert_eq!(
        uploaded_ids(&world, &main),
        main_ids,
        "the changed records are not filed again"
    );
    let counts = world.sim.state().request_counts();
    assert_eq!(counts.get("POST", "/usage/files"), 1, "late-1 only");

    let alerts = world.webhooks_of_kind("changed_after_filing");
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["severity"], "error");
    assert_eq!(alerts[0]["file_id"], main.as_str());
    assert!(alerts[0]["message"]
        .as_str()
        .unwrap()
        .starts_with("3 usage records of 2024-02 changed after their usage file was submitted (2 with other values, 1 gone from the source)"));
    let details = alerts[0]["details"].as_str().unwrap();
    let derived_old = format!("{}", derived_quantity.parse::<f64>().unwrap());
    assert!(
        details.lines().any(|line| line.starts_with("PAYG-202402-")
            && line.contains(": record_id: PAYG-202402-")
            && line.ends_with(&format!("quantity: {derived_old} → 123"))),
        "{details}"
    );
    let old = format!("{}", old_quantity.parse::<f64>().unwrap());
    assert!(
        details.contains(&format!("{changed} (in {main}): quantity: {old} → 999")),
        "{details}"
    );
    assert!(
        details.contains(&format!(
            "{gone} (in {main}): gone from the source (filed: "
        )),
        "{details}"
    );

    // The change stands: the next run says so again and still files nothing.
    let again = run(&world, &FILE).await;
    assert_eq!(
        again.created() + again.submitted() + again.failed(),
        0,
        "{}",
        again.headline()
    );
    assert_eq!(world.webhooks_of_kind("changed_after_filing").len(), 2);
    assert_eq!(
        world.live_files().len(),
        world.usage.expected.groups.len() + 1
    );
}

#[tokio::test]
async fn two_replicas_file_one_supplemental_file() {
    let world = late_world().await;
    run(&world, &FILE).await;
    let group = first_group(&world);
    write_source(
        &world,
        &with_late_records(&world, &["late-a", "late-b", "late-c"]),
    );
    let (first, second) = tokio::join!(run(&world, &FILE), run(&world, &FILE));
    for summary in [&first, &second] {
        assert_eq!(summary.failed(), 0, "{}", summary.headline());
    }
    let late_1 = live_with(&world, &external_id(&world, &group, ":late-1"));
    assert_eq!(late_1.len(), 1, "{:#?}", world.sim.state().files());
    assert_eq!(late_1[0].status, FileStatus::Pending);
    assert_eq!(
        uploaded_ids(&world, &late_1[0].id),
        ids(&["late-a", "late-b", "late-c"])
    );
    assert!(live_with(&world, &external_id(&world, &group, ":late-2")).is_empty());
}

/// The real runner: the schedule files late records, the platform's `ready` event submits the
/// supplemental file, and a rejection rebuilds it from the late records alone.
#[tokio::test]
async fn the_runner_files_late_records_and_rebuilds_a_rejected_supplement() {
    let world = late_world().await;
    world.set_extension_variables(&[("LATE_RECORDS", "file")]);
    let extension = world.start_extension().await;
    world.run_schedule().await;
    world.wait_until_all_pending().await;
    let group = first_group(&world);
    write_source(&world, &with_late_records(&world, &["late-a", "late-b"]));

    let result = world.run_schedule().await;
    let late_id = external_id(&world, &group, ":late-1");
    world
        .wait_until("the supplemental file is pending", |w| {
            live_with(w, &late_id)
                .first()
                .is_some_and(|f| f.status == FileStatus::Pending)
        })
        .await;
    assert!(
        result
            .output
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("files created 1"),
        "{:?}",
        result.output.message
    );
    let file = live_with(&world, &late_id).remove(0);
    assert_eq!(uploaded_ids(&world, &file.id), ids(&["late-a", "late-b"]));
    // Its `ready` event was the handler's to answer: the file is recognised as ours.
    world
        .wait_until(
            "the ready event of the supplemental file is answered",
            |w| {
                w.sim
                    .devops()
                    .results()
                    .iter()
                    .any(|r| r.object_id == file.id && r.output.result == ResultCode::Success)
            },
        )
        .await;
    let skipped: Vec<_> = world
        .sim
        .devops()
        .results()
        .into_iter()
        .filter(|r| {
            r.object_id == file.id
                && r.output
                    .message
                    .as_deref()
                    .is_some_and(|m| m.contains("not managed"))
        })
        .collect();
    assert!(skipped.is_empty(), "{skipped:#?}");

    world
        .sim
        .state()
        .reject(&file.id, "late records look wrong")
        .unwrap();
    world
        .wait_until("the rebuilt supplemental file is pending again", |w| {
            let history = w.sim.state().status_history(&file.id).unwrap();
            history.last() == Some(&FileStatus::Pending) && history.contains(&FileStatus::Rejected)
        })
        .await;
    assert_eq!(
        uploaded_ids(&world, &file.id),
        ids(&["late-a", "late-b"]),
        "rebuilt from the late records only, never the whole group"
    );
    assert_eq!(
        world.live_files().len(),
        world.usage.expected.groups.len() + 1
    );
    assert_eq!(world.sim.devops().protocol_errors(), Vec::<String>::new());
    extension.stop().await;
}

/// The simulator serves what was uploaded at the signed link of the file's detail, and only
/// there: the client downloads it without its API key.
#[tokio::test]
async fn the_uploaded_workbook_is_downloaded_from_its_signed_link() {
    let world = late_world().await;
    run(&world, &[]).await;
    let file_id = world.live_files()[0].id.clone();
    let client = world.client(&world.settings(&[]));
    let bytes = client.download_usage_workbook(&file_id).await.unwrap();
    let rows = connect_payg::usage::workbook::read_workbook(&bytes).unwrap();
    assert_eq!(Some(rows), world.sim.state().uploaded_rows(&file_id));

    let link = client
        .usage_file(&file_id)
        .await
        .unwrap()
        .usage_file_uri
        .unwrap();
    let http = reqwest::Client::new();
    let status = |request: reqwest::RequestBuilder| async move {
        request.send().await.unwrap().status().as_u16()
    };
    assert_eq!(status(http.get(&link)).await, 200);
    assert_eq!(
        status(http.get(&link).header("Authorization", world.sim.api_key())).await,
        403,
        "the API key never travels with a signed link"
    );
    let (unsigned, _) = link.split_once("&sig=").unwrap();
    assert_eq!(status(http.get(format!("{unsigned}&sig=0"))).await, 403);
    assert_eq!(status(http.get(unsigned)).await, 403);
    let other = world.live_files()[1].id.clone();
    assert_eq!(
        status(http.get(link.replace(&file_id, &other))).await,
        403,
        "a link names one file"
    );
}
