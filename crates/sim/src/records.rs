//! Usage records (`GET /usage/records`, filtered by `usagefile.id`): the rows of each file's last
//! processed upload, resolved against the catalogue the way Connect stores them.

use serde_json::{json, Value};

use super::catalogue::{Asset, Catalogue};
use super::state::{SimState, World};
use super::usage_file::UsageFile;
use payg_shared::workbook::{Cell, UsageRow};
use payg_shared::FileStatus;

impl SimState {
    /// Every stored record of every file, as the list endpoint renders them.
    pub(crate) fn record_list_json(&self) -> Vec<Value> {
        let inner = self.lock();
        inner
            .files
            .values()
            .flat_map(|file| file_records(file, &inner.world))
            .collect()
    }
}

fn file_records(file: &UsageFile, world: &World) -> Vec<Value> {
    let Some(upload) = file.upload.as_ref().filter(|upload| upload.processed) else {
        return Vec::new();
    };
    let suffix = file.id.trim_start_matches("UF-");
    let assets: Vec<&Asset> = world
        .assets_on(&file.contract_id, &file.product_id)
        .collect();
    upload
        .rows()
        .iter()
        .enumerate()
        .map(|(index, row)| {
            let sheet_row = index as u32 + 2;
            let status = match file.status {
                FileStatus::Accepted => "approved",
                FileStatus::Rejected => "rejected",
                FileStatus::Closed => "closed",
                _ if upload.invalid_rows.contains(&sheet_row) => "invalid",
                _ => "valid",
            };
            json!({
                "id": format!("UR-{suffix}-{:04}-{:04}", index / 10_000, index % 10_000),
                "usagefile": {"id": file.id, "name": file.fields.name, "schema": file.schema,
                              "currency": file.fields.currency},
                "status": status,
                "record_id": cell_json(&row.record_id),
                "record_note": cell_json(&row.record_note),
                "start_date": timestamp(&row.start_time_utc),
                "end_date": timestamp(&row.end_time_utc),
                "item": item_json(file, &world.catalogue, row),
                "asset": asset_json(&assets, row),
                "product": {"id": file.product_id},
                "contract": {"id": file.contract_id},
                "usage": cell_json(&row.quantity),
                "amount": cell_json(&row.amount),
                "tier": cell_json(&row.tier),
                "category": cell_json(&row.category_id),
                "params": [],
                "external_billing_id": null,
                "external_billing_note": null,
            })
        })
        .collect()
}

/// A cell as JSON: null, text or number.
pub(crate) fn cell_json(cell: &Cell) -> Value {
    match cell {
        Cell::Empty => Value::Null,
        Cell::Text(text) => Value::from(text.as_str()),
        Cell::Number(number) => Value::from(*number),
    }
}

fn cell_text(cell: &Cell) -> Option<&str> {
    match cell {
        Cell::Text(text) => Some(text),
        _ => None,
    }
}

/// `YYYY-MM-DD HH:MM:SS` → `YYYY-MM-DDTHH:MM:SS+00:00`.
fn timestamp(cell: &Cell) -> Value {
    match cell_text(cell) {
        Some(text) => Value::from(format!("{}+00:00", text.replacen(' ', "T", 1))),
        None => Value::Null,
    }
}

fn item_json(file: &UsageFile, catalogue: &Catalogue, row: &UsageRow) -> Value {
    let criteria = cell_text(&row.item_search_criteria).unwrap_or_default();
    let value = cell_text(&row.item_search_value).unwrap_or_default();
    let item = catalogue.product(&file.product_id).and_then(|product| {
        product.ppu_items().find(|item| match criteria {
            "item.mpn" => item.mpn == value,
            "item.local_id" => item.local_id == value,
            _ => false,
        })
    });
    match item {
        Some(item) => json!({"id": item.id, "local_id": item.local_id, "mpn": item.mpn,
                             "name": item.name, "unit": item.unit,
                             "precision": item.precision, "type": item.item_type}),
        None => json!({"id": null, "search_criteria": criteria, "search_value": value}),
    }
}

/// The asset `row` names among `assets` (its file's contract and product).
fn asset_json(assets: &[&Asset], row: &UsageRow) -> Value {
    let criteria = cell_text(&row.asset_search_criteria).unwrap_or_default();
    let value = cell_text(&row.asset_search_value).unwrap_or_default();
    let asset = assets
        .iter()
        .find(|asset| match criteria.strip_prefix("parameter.") {
            Some(param) => asset.param(param) == Some(value),
            None => criteria == "asset.id" && asset.id == value,
        });
    match asset {
        Some(asset) => json!({"id": asset.id, "external_id": asset.external_id,
                              "external_uid": asset.external_uid}),
        None => json!({"id": null, "search_criteria": criteria, "search_value": value}),
    }
}
