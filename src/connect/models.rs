//! The Connect objects this program reads and writes, limited to the fields it uses.
//!
//! Decoding is deliberately lenient (see [`super::lenient`]): unknown fields are ignored,
//! `null` reads as "absent", quantities may be strings, and a usage-file status the platform
//! adds later never breaks a report: it reads as [`FileStatus::Other`], "unknown, keep
//! watching". Other objects' statuses stay plain strings.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

pub use super::lenient::Reference;
use super::lenient::{count, number, or_default, text};
pub use payg_shared::FileStatus;

/// A contract (`GET /contracts`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Contract {
    #[serde(deserialize_with = "or_default")]
    pub id: String,
    pub name: Option<String>,
    /// `distribution`, `program`, `service`, `syndication`, `referral`.
    #[serde(rename = "type", deserialize_with = "or_default")]
    pub contract_type: String,
    /// `new`, `enrolling`, `pending`, `active`, `terminated`, `rejected`.
    #[serde(deserialize_with = "or_default")]
    pub status: String,
    /// `production` or `test`.
    pub kind: Option<String>,
    /// Present on older payloads only; take the marketplace from the asset instead.
    pub marketplace: Option<Reference>,
}

/// An asset, i.e. a subscription (`GET /assets`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Asset {
    #[serde(deserialize_with = "or_default")]
    pub id: String,
    /// `draft`, `processing`, `active`, `terminating`, `suspended`, `terminated`.
    #[serde(deserialize_with = "or_default")]
    pub status: String,
    #[serde(deserialize_with = "text")]
    pub external_id: Option<String>,
    #[serde(deserialize_with = "text")]
    pub external_uid: Option<String>,
    #[serde(deserialize_with = "or_default")]
    pub product: Reference,
    #[serde(deserialize_with = "or_default")]
    pub contract: Reference,
    #[serde(deserialize_with = "or_default")]
    pub marketplace: Reference,
    #[serde(deserialize_with = "or_default")]
    pub connection: Connection,
    #[serde(deserialize_with = "or_default")]
    pub items: Vec<AssetItem>,
    #[serde(deserialize_with = "or_default")]
    pub params: Vec<AssetParam>,
}

impl Asset {
    /// The parameter marked as the vendor's reconciliation key, if any.
    pub fn reconciliation_param(&self) -> Option<&AssetParam> {
        self.params.iter().find(|p| p.constraints.reconciliation)
    }

    /// The value of parameter `id`, if the asset has it and it is set.
    pub fn param_value(&self, id: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.id == id)
            .and_then(|p| p.value.as_deref())
    }
}

/// The hub connection of an asset; its type tells production from test/preview data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Connection {
    pub id: Option<String>,
    /// `production`, `test`, or `preview` on older data.
    #[serde(rename = "type", deserialize_with = "or_default")]
    pub connection_type: String,
}

/// An item line of an asset.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct AssetItem {
    /// The product-local item id.
    #[serde(deserialize_with = "or_default")]
    pub id: String,
    /// `PRD-…-NNNN`.
    pub global_id: Option<String>,
    pub mpn: Option<String>,
    pub display_name: Option<String>,
    /// `PPU`, `Reservation` (any case).
    pub item_type: Option<String>,
    pub period: Option<String>,
    #[serde(deserialize_with = "number")]
    pub quantity: Option<f64>,
}

/// A parameter of an asset.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct AssetParam {
    #[serde(deserialize_with = "or_default")]
    pub id: String,
    pub name: Option<String>,
    #[serde(deserialize_with = "text")]
    pub value: Option<String>,
    #[serde(deserialize_with = "or_default")]
    pub constraints: ParamConstraints,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ParamConstraints {
    #[serde(deserialize_with = "or_default")]
    pub required: bool,
    #[serde(deserialize_with = "or_default")]
    pub hidden: bool,
    #[serde(deserialize_with = "or_default")]
    pub unique: bool,
    /// Marks the vendor's reconciliation key.
    #[serde(deserialize_with = "or_default")]
    pub reconciliation: bool,
}

/// A product (`GET /products/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Product {
    #[serde(deserialize_with = "or_default")]
    pub id: String,
    pub name: Option<String>,
    pub status: Option<String>,
    #[serde(deserialize_with = "or_default")]
    pub capabilities: Capabilities,
}

impl Product {
    /// The Pay-As-You-Go schema (`QT`, `TR`, `PR`, `CR`), `None` when PAYG is disabled.
    pub fn ppu_schema(&self) -> Option<&str> {
        self.capabilities
            .ppu
            .as_ref()
            .map(|ppu| ppu.schema.as_str())
    }

    /// True when the product reports usage with the QT schema (compared case-insensitively:
    /// products say `QT`, usage files `qt`).
    pub fn is_qt(&self) -> bool {
        self.ppu_schema()
            .is_some_and(|schema| schema.eq_ignore_ascii_case("qt"))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    /// `null` when Pay-As-You-Go is disabled.
    pub ppu: Option<PpuCapability>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PpuCapability {
    #[serde(deserialize_with = "or_default")]
    pub schema: String,
    #[serde(deserialize_with = "or_default")]
    pub dynamic: bool,
    #[serde(deserialize_with = "or_default")]
    pub predictive: bool,
    #[serde(deserialize_with = "or_default")]
    pub future: bool,
    #[serde(deserialize_with = "or_default")]
    pub late: bool,
    #[serde(deserialize_with = "or_default")]
    pub required_custom_fields: Vec<serde_json::Value>,
}

/// A product item (`GET /products/{id}/items`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Item {
    /// The global id, `PRD-…-NNNN`.
    #[serde(deserialize_with = "or_default")]
    pub id: String,
    pub local_id: Option<String>,
    pub mpn: Option<String>,
    pub name: Option<String>,
    pub display_name: Option<String>,
    /// `PPU`/`ppu` or `Reservation`/`reservation`.
    #[serde(rename = "type", deserialize_with = "or_default")]
    pub item_type: String,
    pub period: Option<String>,
    /// `integer`, `decimal(2)`, … (any case), as the platform writes it.
    pub precision: Option<String>,
    /// `draft`, `published`, `endofsale`.
    pub status: Option<String>,
    #[serde(deserialize_with = "or_default")]
    pub dynamic: bool,
}

impl Item {
    pub fn is_ppu(&self) -> bool {
        self.item_type.eq_ignore_ascii_case("ppu")
    }
}

/// A marketplace (`GET /marketplaces/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Marketplace {
    #[serde(deserialize_with = "or_default")]
    pub id: String,
    pub name: Option<String>,
    /// ISO 4217.
    pub currency: Option<String>,
}

/// A usage file (`GET /usage/files/{id}`; list results lack the `*_uri` fields).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct UsageFile {
    #[serde(deserialize_with = "or_default")]
    pub id: String,
    pub name: Option<String>,
    #[serde(deserialize_with = "text")]
    pub external_id: Option<String>,
    pub description: Option<String>,
    pub note: Option<String>,
    /// Kept as [`FileStatus::Other`] when this program does not know it yet.
    #[serde(deserialize_with = "or_default")]
    pub status: FileStatus,
    pub sub_status: Option<String>,
    /// `qt`, `tr`, `pr`, `cr`.
    pub schema: Option<String>,
    pub environment: Option<String>,
    pub currency: Option<String>,
    pub period: Option<UsagePeriod>,
    pub product: Option<Reference>,
    pub contract: Option<Reference>,
    pub marketplace: Option<Reference>,
    pub vendor: Option<Reference>,
    pub provider: Option<Reference>,
    /// Flat create responses name the product and contract this way instead.
    pub product_id: Option<String>,
    pub distribution_contract: Option<String>,
    /// Why the file is `invalid` (older clients call it `error_details`).
    #[serde(alias = "error_details")]
    pub error_detail: Option<String>,
    pub acceptance_note: Option<String>,
    pub rejection_note: Option<String>,
    pub stats: Option<UsageStats>,
    pub records: Option<RecordCounts>,
    /// What we uploaded; a short-lived signed link, detail GET only.
    pub usage_file_uri: Option<String>,
    /// The platform's annotated copy; a short-lived signed link, detail GET only.
    pub processed_file_uri: Option<String>,
    pub reconciliation_file_uri: Option<String>,
    #[serde(deserialize_with = "or_default")]
    pub events: BTreeMap<String, UsageFileEvent>,
}

impl UsageFile {
    pub fn product_id(&self) -> Option<&str> {
        self.product
            .as_ref()
            .map(|r| r.id.as_str())
            .or(self.product_id.as_deref())
    }

    pub fn contract_id(&self) -> Option<&str> {
        self.contract
            .as_ref()
            .map(|r| r.id.as_str())
            .or(self.distribution_contract.as_deref())
    }
}

/// The reporting period of a usage file: calendar dates `YYYY-MM-DD` (kept as text when read,
/// as the platform's rendering is not guaranteed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UsagePeriod {
    #[serde(deserialize_with = "or_default")]
    pub from: String,
    #[serde(deserialize_with = "or_default")]
    pub to: String,
}

impl UsagePeriod {
    pub fn new(from: NaiveDate, to: NaiveDate) -> Self {
        UsagePeriod {
            from: from.format("%Y-%m-%d").to_string(),
            to: to.format("%Y-%m-%d").to_string(),
        }
    }
}

/// Record counts per life-cycle stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct UsageStats {
    #[serde(deserialize_with = "count")]
    pub uploaded: u64,
    #[serde(deserialize_with = "count")]
    pub validated: u64,
    #[serde(deserialize_with = "count")]
    pub pending: u64,
    #[serde(deserialize_with = "count")]
    pub accepted: u64,
    #[serde(deserialize_with = "count")]
    pub closed: u64,
    #[serde(deserialize_with = "count")]
    pub billed: u64,
}

/// Record counts of the last processed upload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RecordCounts {
    #[serde(deserialize_with = "count")]
    pub valid: u64,
    #[serde(deserialize_with = "count")]
    pub invalid: u64,
    #[serde(deserialize_with = "count")]
    pub closed: u64,
}

/// When something happened to a file, and who did it (`by` is absent for automatic steps).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct UsageFileEvent {
    pub at: Option<String>,
    pub by: Option<Reference>,
}

/// The body of `POST /usage/files`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewUsageFile {
    /// At most 100 characters.
    pub name: String,
    /// At most 200 characters; sent as `""` rather than omitted.
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub period: UsagePeriod,
    pub currency: String,
    pub product: Reference,
    pub contract: Reference,
    /// Our dedupe key `<CRD>:<PRD>:<YYYY-MM>`; how a lost create is found again.
    pub external_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_create_response_decodes() {
        let file: UsageFile = serde_json::from_str(
            r#"{
              "id": "UF-2024-02-1234-5678",
              "name": "PRD-276-377-545 CRD-25852-19745-24928 2024-01",
              "external_id": "CRD-25852-19745-24928:PRD-276-377-545:2024-01",
              "vendor": "VA-392-495",
              "provider": "PA-988-713",
              "environment": "production",
              "marketplace": "MP-41136",
              "distribution_contract": "CRD-25852-19745-24928",
              "product_id": "PRD-276-377-545",
              "product_name": "My Product",
              "description": "PAYG usage for January 2024",
              "schema": "qt",
              "currency": "INR",
              "start_datetime_utc": "2024-01-01T00:00:00+00:00",
              "end_datetime_utc": "2024-01-31T00:00:00+00:00"
            }"#,
        )
        .unwrap();
        assert_eq!(file.id, "UF-2024-02-1234-5678");
        assert_eq!(file.product_id(), Some("PRD-276-377-545"));
        assert_eq!(file.contract_id(), Some("CRD-25852-19745-24928"));
        assert_eq!(file.marketplace, Some(Reference::id("MP-41136")));
        assert_eq!(
            file.status,
            FileStatus::default(),
            "a create response may carry no status"
        );
    }

    #[test]
    fn nested_detail_decodes() {
        let file: UsageFile = serde_json::from_str(
            r#"{
              "id": "UF-2024-02-1234-5678",
              "name": "PRD-276-377-545 CRD-25852-19745-24928 2024-01",
              "external_id": "CRD-25852-19745-24928:PRD-276-377-545:2024-01",
              "description": "PAYG usage for January 2024",
              "status": "rejected",
              "sub_status": null,
              "schema": "qt",
              "environment": "production",
              "currency": "INR",
              "period": {"from": "2024-01-01", "to": "2024-01-31"},
              "product": {"id": "PRD-276-377-545", "name": "My Product", "icon": "/media/x"},
              "contract": {"id": "CRD-25852-19745-24928", "name": "Distribution contract India"},
              "marketplace": {"id": "MP-41136", "name": "India", "icon": "/media/x"},
              "vendor": {"id": "VA-392-495", "name": "Vendor Inc"},
              "provider": {"id": "PA-988-713", "name": "Provider LLC"},
              "error_detail": null,
              "acceptance_note": null,
              "rejection_note": "Quantity for tenant-42 looks too high",
              "stats": {"uploaded": 2, "validated": 2, "pending": 0, "accepted": 0, "closed": 0, "billed": 0},
              "records": {"valid": 2, "invalid": 0, "closed": 0},
              "usage_file_uri": "https://x/uploaded/UF.xlsx?se=1&sig=2",
              "processed_file_uri": "https://x/processed/UF-PROCESSED.xlsx?se=1&sig=2",
              "reconciliation_file_uri": null,
              "events": {
                "created":   {"at": "2024-02-01T03:24:28+00:00", "by": {"id": "SU-123-456-789", "name": "usage-reporter"}},
                "uploaded":  {"at": "2024-02-01T03:24:40+00:00", "by": {"id": "SU-123-456-789", "name": "usage-reporter"}},
                "submitted": {"at": "2024-02-01T03:25:35+00:00", "by": {"id": "SU-123-456-789", "name": "usage-reporter"}},
                "rejected":  {"at": "2024-02-02T09:10:00+00:00", "by": {"id": "UR-552-340-461", "name": "Billing team"}},
                "accepted":  {"at": "2024-02-02T09:10:00+00:00"}
              }
            }"#,
        )
        .unwrap();
        assert!(file.status == FileStatus::Rejected);
        assert_eq!(file.product_id(), Some("PRD-276-377-545"));
        assert_eq!(file.contract_id(), Some("CRD-25852-19745-24928"));
        assert_eq!(
            file.period,
            Some(UsagePeriod {
                from: "2024-01-01".into(),
                to: "2024-01-31".into()
            })
        );
        assert_eq!(
            file.rejection_note.as_deref(),
            Some("Quantity for tenant-42 looks too high")
        );
        assert_eq!(file.stats.unwrap().validated, 2);
        assert_eq!(file.records.unwrap().valid, 2);
        assert_eq!(
            file.events["rejected"].by.as_ref().unwrap().id,
            "UR-552-340-461"
        );
        assert!(file.events["accepted"].by.is_none());
        assert!(file.processed_file_uri.is_some());
    }

    #[test]
    fn error_details_alias_and_unknown_status() {
        let file: UsageFile = serde_json::from_str(
            r#"{"id": "UF-1", "status": "quarantined", "error_details": "row 3: bad quantity",
                "stats": null, "events": null, "brand_new_field": {"x": 1}}"#,
        )
        .unwrap();
        assert_eq!(file.status, FileStatus::Other("quarantined".into()));
        assert_eq!(file.error_detail.as_deref(), Some("row 3: bad quantity"));
        assert!(file.events.is_empty());
        let file: UsageFile =
            serde_json::from_str(r#"{"id": "UF-1", "error_detail": "bad"}"#).unwrap();
        assert_eq!(file.error_detail.as_deref(), Some("bad"));
    }

    #[test]
    fn asset_example_decodes() {
        let asset: Asset = serde_json::from_str(
            r#"{
              "id": "AS-8055-3268-5577",
              "status": "active",
              "external_id": "EXT-000042",
              "external_uid": "5f1c2a9e-0000-4000-8000-000000000042",
              "product": {"id": "PRD-276-377-545", "name": "My Product", "icon": "/media/logo.png", "status": "published"},
              "connection": {
                "id": "CT-0000-0000-0000",
                "type": "production",
                "vendor": {"id": "VA-392-495", "name": "Vendor Inc"},
                "provider": {"id": "PA-988-713", "name": "Provider LLC"},
                "hub": {"id": "HB-1234-1234", "name": "Main hub"}
              },
              "marketplace": {"id": "MP-41136", "name": "India", "icon": "/media/icon.png"},
              "contract": {"id": "CRD-25852-19745-24928", "name": "Distribution contract India"},
              "items": [
                {"id": "STORAGE_GB", "global_id": "PRD-276-377-545-0002", "mpn": "MPN-STORAGE-GB",
                 "display_name": "Storage GB", "item_type": "PPU", "period": "monthly", "quantity": "0"}
              ],
              "params": [
                {"id": "tenant_id", "name": "tenant_id", "title": "Tenant", "type": "text", "value": "tenant-42",
                 "scope": "asset", "phase": "fulfillment",
                 "constraints": {"required": true, "hidden": false, "unique": true, "reconciliation": true}},
                {"id": "seats", "value": 5, "constraints": null}
              ],
              "tiers": {"customer": {"id": "TA-1"}, "tier1": {"id": "TA-2"}}
            }"#,
        )
        .unwrap();
        assert_eq!(asset.product.id, "PRD-276-377-545");
        assert_eq!(asset.contract.id, "CRD-25852-19745-24928");
        assert_eq!(asset.marketplace.id, "MP-41136");
        assert_eq!(asset.connection.connection_type, "production");
        assert_eq!(asset.items[0].quantity, Some(0.0));
        assert_eq!(asset.items[0].mpn.as_deref(), Some("MPN-STORAGE-GB"));
        assert_eq!(asset.reconciliation_param().unwrap().id, "tenant_id");
        assert_eq!(asset.param_value("tenant_id"), Some("tenant-42"));
        assert_eq!(asset.param_value("seats"), Some("5"));
        assert_eq!(
            asset.external_uid.as_deref(),
            Some("5f1c2a9e-0000-4000-8000-000000000042")
        );
    }

    #[test]
    fn product_item_marketplace_and_contract_examples_decode() {
        let product: Product = serde_json::from_str(
            r#"{"id": "PRD-276-377-545", "name": "My Product", "status": "published",
                "capabilities": {"ppu": {"schema": "QT", "dynamic": false, "predictive": true,
                  "future": false, "late": false, "required_custom_fields": []},
                  "reservation": {"consumption": false}},
                "usage_rule": {"enabled": true}}"#,
        )
        .unwrap();
        assert!(product.is_qt());
        let no_payg: Product =
            serde_json::from_str(r#"{"id": "PRD-1", "capabilities": {"ppu": null}}"#).unwrap();
        assert_eq!(no_payg.ppu_schema(), None);
        assert!(!no_payg.is_qt());

        let items: Vec<Item> = serde_json::from_str(
            r#"[{"id": "PRD-276-377-545-0002", "local_id": "STORAGE_GB", "mpn": "MPN-STORAGE-GB",
                 "name": "Storage GB", "display_name": "Storage GB", "type": "ppu", "period": "monthly",
                 "precision": "decimal(2)",
                 "unit": {"id": "unith", "name": "Unit*H", "title": "Unit*H", "unit": "unit-h"},
                 "status": "published", "dynamic": false},
                {"id": "PRD-276-377-545-0001", "type": "Reservation", "precision": "Integer"}]"#,
        )
        .unwrap();
        assert!(items[0].is_ppu());
        assert_eq!(items[0].precision.as_deref(), Some("decimal(2)"));
        assert!(!items[1].is_ppu());

        let marketplace: Marketplace = serde_json::from_str(
            r#"{"id": "MP-41136", "name": "India", "currency": "INR", "zone": "AS",
                "alt_currency_1": null, "alt_currency_2": null}"#,
        )
        .unwrap();
        assert_eq!(marketplace.currency.as_deref(), Some("INR"));

        let contract: Contract = serde_json::from_str(
            r#"{"id": "CRD-1", "type": "distribution", "status": "active", "kind": "production",
                "name": null, "version": 3}"#,
        )
        .unwrap();
        assert_eq!(contract.contract_type, "distribution");
        assert_eq!(contract.status, "active");
    }

    #[test]
    fn new_usage_file_serialises_as_documented() {
        let body = NewUsageFile {
            name: "PRD-276-377-545 CRD-25852-19745-24928 2024-01".into(),
            description: "PAYG usage for January 2024".into(),
            note: None,
            period: UsagePeriod::new(
                NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
                NaiveDate::from_ymd_opt(2024, 1, 31).unwrap(),
            ),
            currency: "INR".into(),
            product: Reference::id("PRD-276-377-545"),
            contract: Reference::id("CRD-25852-19745-24928"),
            external_id: "CRD-25852-19745-24928:PRD-276-377-545:2024-01".into(),
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({
                "name": "PRD-276-377-545 CRD-25852-19745-24928 2024-01",
                "description": "PAYG usage for January 2024",
                "period": {"from": "2024-01-01", "to": "2024-01-31"},
                "currency": "INR",
                "product": {"id": "PRD-276-377-545"},
                "contract": {"id": "CRD-25852-19745-24928"},
                "external_id": "CRD-25852-19745-24928:PRD-276-377-545:2024-01"
            })
        );
    }
}
