//! One simulated usage file: its fields, status history, last upload and how Connect renders it.
//!
//! Three renderings exist because Connect has three: the flat object `POST /usage/files`
//! answers with, the list entry (no download links) and the detail with short-lived links.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Map, Value};

use super::catalogue::Catalogue;
use super::storage::{Storage, Stored};
use payg_shared::workbook::{self, Rules, UsageRow};
use payg_shared::FileStatus;

/// The editable fields (create body, `PUT`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FileFields {
    pub name: String,
    pub description: String,
    pub note: String,
    pub external_id: Option<String>,
    pub currency: String,
    pub period_from: NaiveDate,
    pub period_to: NaiveDate,
}

/// Where a file belongs; fixed at creation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Placement {
    pub product_id: String,
    pub contract_id: String,
    pub marketplace_id: String,
    /// Lower case, as files spell it (`qt`).
    pub schema: String,
}

/// The last spreadsheet uploaded and what processing made of it. Its rows are read again from
/// the bytes when asked for ([`Upload::rows`]): kept parsed, the rows of a 1M-subscription
/// month were ~900 bytes each, gigabytes for what only record listings and tests look at.
#[derive(Debug, Clone, Default)]
pub(crate) struct Upload {
    pub bytes: Bytes,
    /// Whether the data rows could be read (false when the structure was unreadable).
    pub readable: bool,
    /// Sheet rows (header = 1) that had a problem.
    pub invalid_rows: BTreeSet<u32>,
    pub records: u64,
    pub processed: bool,
}

impl Upload {
    /// The data rows as read (none when the structure was unreadable).
    pub fn rows(&self) -> Vec<UsageRow> {
        let mut rows = Vec::new();
        if self.readable {
            // Which rows are read does not depend on the rules they are checked against.
            workbook::inspect_workbook_rows(
                Cursor::new(&self.bytes[..]),
                &Rules::offline(None),
                |row| rows.push(row),
            );
        }
        rows
    }
}

/// Who stamped an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Actor {
    Vendor,
    Provider,
}

#[derive(Debug, Clone)]
pub(crate) struct UsageFile {
    pub id: String,
    pub fields: FileFields,
    pub product_id: String,
    pub contract_id: String,
    pub marketplace_id: String,
    pub schema: String,
    pub status: FileStatus,
    pub history: Vec<FileStatus>,
    pub error_detail: Option<String>,
    pub acceptance_note: Option<String>,
    pub rejection_note: Option<String>,
    pub events: BTreeMap<&'static str, (DateTime<Utc>, Actor)>,
    pub upload: Option<Upload>,
    /// Bumped by each upload, so a late result of an older upload is ignored.
    pub generation: u64,
}

impl UsageFile {
    pub fn new(id: String, fields: FileFields, placement: Placement) -> Self {
        let mut events = BTreeMap::new();
        events.insert("created", (Utc::now(), Actor::Vendor));
        UsageFile {
            id,
            fields,
            product_id: placement.product_id,
            contract_id: placement.contract_id,
            marketplace_id: placement.marketplace_id,
            schema: placement.schema,
            status: FileStatus::Draft,
            history: vec![FileStatus::Draft],
            error_detail: None,
            acceptance_note: None,
            rejection_note: None,
            events,
            upload: None,
            generation: 0,
        }
    }

    pub fn stamp(&mut self, event: &'static str, actor: Actor) {
        self.events.insert(event, (Utc::now(), actor));
    }

    /// The answer to `POST /usage/files`: the published model's flat object.
    pub fn created_json(&self, catalogue: &Catalogue) -> Value {
        json!({
            "id": self.id,
            "name": self.fields.name,
            "external_id": self.fields.external_id,
            "vendor": catalogue.vendor.id,
            "provider": catalogue.provider.id,
            "environment": "production",
            "marketplace": self.marketplace_id,
            "distribution_contract": self.contract_id,
            "product_id": self.product_id,
            "product_name": catalogue.product(&self.product_id).map(|p| p.name.as_str()),
            "description": self.fields.description,
            "note": self.fields.note,
            "schema": self.schema,
            "currency": self.fields.currency,
            "status": self.status,
            "start_datetime_utc": format!("{}T00:00:00+00:00", self.fields.period_from),
            "end_datetime_utc": format!("{}T00:00:00+00:00", self.fields.period_to),
        })
    }

    /// A list entry: the detail without the download links.
    pub fn list_json(&self, catalogue: &Catalogue) -> Value {
        self.render(catalogue, None)
    }

    /// The detail, with short-lived signed links to the workbooks in `storage`.
    pub fn detail_json(&self, catalogue: &Catalogue, storage: &Storage) -> Value {
        self.render(catalogue, Some(storage))
    }

    fn render(&self, catalogue: &Catalogue, storage: Option<&Storage>) -> Value {
        let product = catalogue.product(&self.product_id);
        let contract = catalogue.contract(&self.contract_id);
        let marketplace = catalogue.marketplace(&self.marketplace_id);
        let upload = self.upload.as_ref();
        let records = upload.map_or(0, |u| u.records);
        let invalid = upload.map_or(0, |u| u.invalid_rows.len() as u64);
        let processed = upload.is_some_and(|u| u.processed);
        let count_if = |reached: bool| if reached { records } else { 0 };
        let mut object = json!({
            "id": self.id,
            "name": self.fields.name,
            "external_id": self.fields.external_id,
            "description": self.fields.description,
            "note": self.fields.note,
            "status": self.status,
            "sub_status": match self.status {
                FileStatus::Processing => Value::from("processing"),
                _ if processed => Value::from("processed"),
                _ => Value::Null,
            },
            "schema": self.schema,
            "environment": "production",
            "currency": self.fields.currency,
            "period": {"from": self.fields.period_from.to_string(),
                       "to": self.fields.period_to.to_string()},
            "product": {"id": self.product_id, "name": product.map(|p| p.name.as_str()),
                        "icon": format!("/media/{}/logo.png", self.product_id)},
            "contract": {"id": self.contract_id, "name": contract.map(|c| c.name.as_str())},
            "marketplace": {"id": self.marketplace_id, "name": marketplace.map(|m| m.name.as_str()),
                            "icon": format!("/media/{}/icon.png", self.marketplace_id)},
            "vendor": {"id": catalogue.vendor.id, "name": catalogue.vendor.name},
            "provider": {"id": catalogue.provider.id, "name": catalogue.provider.name},
            "error_detail": self.error_detail,
            "acceptance_note": self.acceptance_note,
            "rejection_note": self.rejection_note,
            "stats": {
                "uploaded": records,
                "validated": if processed { records.saturating_sub(invalid) } else { 0 },
                "pending": count_if(self.status == FileStatus::Pending),
                "accepted": count_if(matches!(self.status, FileStatus::Accepted | FileStatus::Closed)),
                "closed": count_if(self.status == FileStatus::Closed),
                "billed": 0,
            },
            "records": {"valid": if processed { records.saturating_sub(invalid) } else { 0 },
                        "invalid": invalid,
                        "closed": count_if(self.status == FileStatus::Closed)},
            "events": self.events_json(catalogue),
        });
        if let (Some(storage), Value::Object(map)) = (storage, &mut object) {
            let link = |stored: Stored| match upload {
                Some(_) => Value::from(storage.link(&self.id, self.generation, stored)),
                None => Value::Null,
            };
            map.insert("usage_file_uri".into(), link(Stored::Upload));
            let processed_link = if processed {
                link(Stored::Processed)
            } else {
                Value::Null
            };
            map.insert("processed_file_uri".into(), processed_link);
            map.insert("reconciliation_file_uri".into(), Value::Null);
        }
        object
    }

    fn events_json(&self, catalogue: &Catalogue) -> Value {
        let mut events = Map::new();
        for (name, (at, actor)) in &self.events {
            let by = match actor {
                Actor::Vendor => json!({"id": "SU-000-000-001", "name": catalogue.vendor.name}),
                Actor::Provider => json!({"id": "UR-000-000-002", "name": catalogue.provider.name}),
            };
            events.insert(
                (*name).into(),
                json!({"at": at.format("%Y-%m-%dT%H:%M:%S%:z").to_string(), "by": by}),
            );
        }
        Value::Object(events)
    }
}
