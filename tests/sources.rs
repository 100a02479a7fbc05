//! Usage sources and records end to end: what a source may deliver and what the pipeline does
//! with records that cannot be filed as written (too long for a cell, too many digits), and how
//! HTTP sources guard against truncated bodies, endless bodies and unsafe redirects.

mod common;

use common::{default_world, World};
use connect_payg::usage::record::BadReason;

/// An in-scope asset and one of its product's PAYG items, as a CSV row's first two fields.
fn asset_and_item(world: &World) -> (String, String) {
    let catalogue = world.sim.state().catalogue();
    catalogue
        .assets
        .iter()
        .filter(|asset| catalogue.in_scope(asset))
        .find_map(|asset| {
            let item = catalogue.product(&asset.product_id)?.ppu_items().next()?;
            Some((asset.id.clone(), item.mpn.clone()))
        })
        .expect("an in-scope asset with a PAYG item")
}

/// The world's CSV with `rows` appended; returns the line of the first appended row.
fn append_rows(world: &World, rows: &[String]) -> u64 {
    let path = world.dir.path().join(format!("usage-{}.csv", world.period));
    let mut csv = std::fs::read_to_string(&path).unwrap();
    assert!(csv.ends_with('\n'));
    let first_line = csv.lines().count() as u64 + 1;
    for row in rows {
        csv.push_str(row);
        csv.push('\n');
    }
    std::fs::write(&path, csv).unwrap();
    first_line
}

#[tokio::test]
async fn a_note_too_long_for_a_cell_is_a_bad_record_and_its_group_is_filed() {
    let world = default_world().await;
    let (asset, mpn) = asset_and_item(&world);
    let line = append_rows(
        &world,
        &[format!(
            "{asset},{mpn},1,2024-02-01 00:00:00,2024-02-29 23:59:59,R-LONG-NOTE,{}",
            "n".repeat(40_000)
        )],
    );
    // The world's CSV names record_id and record_note in this order after the required five.
    let summary = world.reporter(&[]).run(&world.job(), None).await.unwrap();
    assert_eq!(summary.failed(), 0, "{}", summary.headline());
    let too_long: Vec<_> = summary
        .bad
        .iter()
        .filter(|bad| bad.reason == BadReason::FieldTooLong)
        .collect();
    assert_eq!(too_long.len(), 1, "{}", summary.headline());
    assert_eq!(too_long[0].line, line);
    assert!(
        too_long[0].detail.contains("record_note"),
        "{}",
        too_long[0]
    );
    world.assert_filed_exactly("pending").await;
}

/// An in-scope asset and a decimal PAYG item of its product, with the item's decimal places.
fn asset_and_decimal_item(world: &World) -> (String, String, usize) {
    let catalogue = world.sim.state().catalogue();
    catalogue
        .assets
        .iter()
        .filter(|asset| catalogue.in_scope(asset))
        .find_map(|asset| {
            let product = catalogue.product(&asset.product_id)?;
            product.ppu_items().find_map(|item| {
                let digits = item.precision.strip_prefix("decimal(")?.strip_suffix(')')?;
                Some((asset.id.clone(), item.mpn.clone(), digits.parse().ok()?))
            })
        })
        .expect("a decimal item on an in-scope asset")
}

#[tokio::test]
async fn a_quantity_with_too_many_digits_is_a_bad_record_not_rounded() {
    let world = default_world().await;
    let (asset, mpn, places) = asset_and_decimal_item(&world);
    // Within the item's decimal places, beyond what a workbook number holds.
    let quantity = format!("123456789012345.{}", "1".repeat(places));
    let line = append_rows(
        &world,
        &[format!(
            "{asset},{mpn},{quantity},2024-02-01 00:00:00,2024-02-29 23:59:59,R-DIGITS,"
        )],
    );
    let summary = world.reporter(&[]).run(&world.job(), None).await.unwrap();
    assert_eq!(summary.failed(), 0, "{}", summary.headline());
    let refused: Vec<_> = summary
        .bad
        .iter()
        .filter(|bad| bad.reason == BadReason::TooManyDigits)
        .collect();
    assert_eq!(refused.len(), 1, "{}", summary.headline());
    assert_eq!(refused[0].line, line);
    world.assert_filed_exactly("pending").await;
}
