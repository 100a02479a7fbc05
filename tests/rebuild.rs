//! A rejected file's rebuild costs what its group costs (issue 19, target 3): it resolves only
//! the assets of that contract × product, yet holds exactly the rows the full run gives the
//! group — compared as multisets of workbook rows, for every group, with subscriptions named by
//! asset id and by a name another group's asset shares; and end to end through the runner, a
//! rejection's rebuild makes at most a tenth of the month's requests.

mod common;

use common::{period, world, world_with, World};
use connect_payg::config::AssetCriteria;
use connect_payg::connect::{ConnectClient, FileStatus};
use connect_payg::usage::workbook::{usage_row, UsageRow};
use connect_payg::usage::Reporter;
use connect_sim::{BadRowSpec, SeedSpec};
use payg_shared::period::Period;

/// A multiset of rows, as sorted debug renderings (every column, the record id included).
fn multiset(rows: impl IntoIterator<Item = UsageRow>) -> Vec<String> {
    let mut rows: Vec<String> = rows.into_iter().map(|row| format!("{row:?}")).collect();
    rows.sort();
    rows
}

fn seed(subscriptions: usize) -> SeedSpec {
    SeedSpec {
        seed: 19,
        contracts: 6,
        products: 3,
        subscriptions,
        ..SeedSpec::default()
    }
}

/// For every group of the full run: the rebuild's read of the group has the same rows, and
/// asks Connect for that group's objects only: one page of its assets (and, when records name
/// assets otherwise than by id, one lookup of those names), its contract, product, items and
/// marketplace.
async fn every_group_regroups_exactly(
    world: &World,
    reporter: &Reporter,
    what: &str,
    lookups: u64,
) {
    let period: Period = world.period;
    let state = world.sim.state();
    let full = reporter.collect(period).await.unwrap();
    assert!(
        full.groups.len() > 5,
        "{what}: {} groups",
        full.groups.len()
    );
    assert!(!full.bad.is_empty(), "{what}: the month has bad records");
    for (key, group) in &full.groups {
        state.reset_request_counts();
        let rebuilt = reporter
            .regroup(key, period)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: {key} regrouped"));
        let requests = state.request_counts();
        assert_eq!(rebuilt.key, *key);
        assert_eq!(rebuilt.currency, group.currency, "{what}: {key}");
        assert_eq!(
            multiset(
                rebuilt
                    .rows
                    .iter()
                    .map(|row| usage_row(&row.unwrap(), period))
            ),
            multiset(
                group
                    .rows
                    .iter()
                    .map(|row| usage_row(&row.unwrap(), period))
            ),
            "{what}: the rows of {key}"
        );
        assert_eq!(
            requests.get("GET", "/assets"),
            1 + lookups,
            "{what}: {key}: {:#}",
            requests.to_json()
        );
        assert_eq!(
            requests.total,
            5 + lookups,
            "{what}: {key}: {:#}",
            requests.to_json()
        );
    }
}

#[tokio::test]
async fn a_regrouped_group_holds_exactly_the_full_runs_rows() {
    let world = world(seed(600), BadRowSpec::default(), period("2024-02")).await;
    let reporter = world.reporter(&[]);
    every_group_regroups_exactly(&world, &reporter, "by asset id", 0).await;

    // A group the source has no records for is none.
    let key = connect_payg::usage::GroupKey {
        contract_id: "CRD-00000-00000-00009".into(),
        product_id: "PRD-000-000-009".into(),
    };
    assert!(reporter
        .regroup(&key, world.period)
        .await
        .unwrap()
        .is_none());
}

/// Records name subscriptions by external id, and one asset shares its external id with an
/// asset of another group: the full run finds the name ambiguous, so must the rebuild, which
/// only sees its own group's asset in its listing.
#[tokio::test]
async fn a_name_another_groups_asset_shares_stays_ambiguous_in_a_rebuild() {
    let world = world_with(
        seed(300),
        BadRowSpec {
            subscription_key: AssetCriteria::ExternalId,
            ..BadRowSpec::default()
        },
        period("2024-02"),
        |catalogue| {
            let first = catalogue.assets[0].clone();
            let other = catalogue
                .assets
                .iter_mut()
                .find(|a| a.contract_id != first.contract_id && a.product_id == first.product_id)
                .expect("an asset of another contract");
            other.external_id = first.external_id.clone();
        },
    )
    .await;
    let reporter = world.reporter(&[("ASSET_SEARCH_CRITERIA", "asset.external_id")]);
    let full = reporter.collect(world.period).await.unwrap();
    assert!(
        full.bad
            .iter()
            .any(|bad| bad.detail.contains("matches several assets")),
        "the shared name is ambiguous in the full run"
    );
    every_group_regroups_exactly(&world, &reporter, "by external id", 1).await;
}

/// Through the runner: the month is filed, one file is rejected, and its rebuild (the rejected
/// event, the rebuild, the upload's ready event and the submit) holds the same rows as before
/// with at most a tenth of the month's requests.
#[tokio::test]
async fn a_rejections_rebuild_costs_a_tenth_of_the_month_at_most() {
    let spec = SeedSpec {
        contracts: 20,
        products: 5,
        ..seed(2000)
    };
    let world = world(spec, BadRowSpec::default(), period("2024-02")).await;
    world.set_extension_variables(&[]);
    let extension = world.start_extension().await;
    let state = world.sim.state();
    state.reset_request_counts();
    world.run_schedule().await;
    world.wait_until_all_pending().await;
    let answered = |w: &World| w.sim.devops().all_answered();
    world.wait_until("every task was answered", answered).await;
    let month = state.request_counts().total;
    let files = world.live_files();
    assert!(files.len() >= 10, "{} files", files.len());

    let file_id = files[files.len() / 2].id.clone();
    let before = multiset(state.uploaded_rows(&file_id).unwrap());
    let client = world.client(&world.settings(&[]));
    // The digest part of the file's note (the note also counts rebuilds).
    let note = |client: ConnectClient, file_id: String| async move {
        let note = client.usage_file(&file_id).await.unwrap().note.unwrap();
        let start = note
            .find("[connect-payg digest: ")
            .expect("a digest in the note");
        note[start..]
            .split_inclusive(']')
            .next()
            .unwrap()
            .to_string()
    };
    let note_before = note(client.clone(), file_id.clone()).await;
    state.reset_request_counts();
    state.reject(&file_id, "please check").unwrap();
    world
        .wait_until("the rejected file is pending again", |w| {
            let history = w.sim.state().status_history(&file_id).unwrap();
            history.last() == Some(&FileStatus::Pending) && history.contains(&FileStatus::Rejected)
        })
        .await;
    world.wait_until("every task was answered", answered).await;
    let rebuild = state.request_counts();
    assert_eq!(
        multiset(state.uploaded_rows(&file_id).unwrap()),
        before,
        "the rebuilt file holds the group's rows"
    );
    // The fill takes the digest of the rows while building the workbook; the same rows give
    // the digest the created file's note recorded (a later run compares it, not the rows).
    assert_eq!(
        note(client, file_id.clone()).await,
        note_before,
        "the rebuilt file's note records its rows' digest"
    );
    assert!(
        rebuild.total * 10 <= month,
        "the rebuild took {} requests, the month {month}: {:#}",
        rebuild.total,
        rebuild.to_json()
    );
    assert_eq!(
        rebuild.get("GET", "/assets"),
        1,
        "one page of the group's assets: {:#}",
        rebuild.to_json()
    );
    // The `rejected` and the `ready` events found the file in its group's listing (the
    // latter's is the look before submitting); only the fill reads it by id, right before its
    // upload, and the file is submitted once.
    assert_eq!(
        rebuild.get("GET", "/usage/files/{id}"),
        1,
        "{:#}",
        rebuild.to_json()
    );
    assert_eq!(
        rebuild.get("POST", "/usage/files/{id}/submit"),
        1,
        "{:#}",
        rebuild.to_json()
    );
    extension.stop().await;
}
