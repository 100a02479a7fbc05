//! Generated vendor usage for a period — a month or a day, the input of the report — together
//! with the outcome a correct report must reach ([`Expected`]).
//!
//! Records are drawn from an installed [`Catalogue`]: good rows for in-scope assets, rows that
//! are out of scope (inactive or non-distribution contract, product not QT), and bad rows of
//! every kind the product refuses ([`BadKind`]), shuffled so that grouping cannot lean on
//! input order. The same catalogue, period and [`BadRowSpec`] always give byte-identical output.

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::catalogue::{Asset, Catalogue, Item, Product};
use payg_shared::period::{format_time, Cadence, Period};
use payg_shared::record::{AssetCriteria, ItemCriteria, RawRecord, FIELDS};

/// Why a generated record is bad: one kind per reason the product must report a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadKind {
    MissingField,
    UnparsableQuantity,
    UnparsableTime,
    NegativeQuantity,
    FractionalQuantity,
    EndBeforeStart,
    OutsidePeriod,
    UnknownSubscription,
    UnknownItem,
    RepeatedRecordId,
}

impl BadKind {
    pub const ALL: [BadKind; 10] = [
        BadKind::MissingField,
        BadKind::UnparsableQuantity,
        BadKind::UnparsableTime,
        BadKind::NegativeQuantity,
        BadKind::FractionalQuantity,
        BadKind::EndBeforeStart,
        BadKind::OutsidePeriod,
        BadKind::UnknownSubscription,
        BadKind::UnknownItem,
        BadKind::RepeatedRecordId,
    ];
}

/// Why a record is out of scope (counted, not an error). When both apply, the contract wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutOfScopeKind {
    NotDistribution,
    InactiveContract,
    ProductNotQt,
}

/// How to render a month of vendor usage.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRowSpec {
    pub seed: u64,
    /// Bad records per good record (0.1: one bad for ten good). When above zero, every
    /// [`BadKind`] appears at least once.
    pub bad_share: f64,
    /// Out-of-scope records per good record.
    pub out_of_scope_share: f64,
    /// Each (asset, item) gets 1..=this records, on disjoint intervals of the period (whole
    /// days of a month, whole hours of a day).
    pub max_rows_per_item: usize,
    /// What the `subscription_id` column holds (a `Parameter` must name a seeded asset param,
    /// e.g. `tenant_id`).
    pub subscription_key: AssetCriteria,
    /// What the `item_mpn` column holds.
    pub item_key: ItemCriteria,
}

impl Default for BadRowSpec {
    fn default() -> Self {
        BadRowSpec {
            seed: 7,
            bad_share: 0.1,
            out_of_scope_share: 0.05,
            max_rows_per_item: 2,
            subscription_key: AssetCriteria::Id,
            item_key: ItemCriteria::Mpn,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VendorUsageError {
    #[error("asset {asset} has no parameter {parameter:?} to use as subscription_id")]
    UnknownParameter { asset: String, parameter: String },
}

/// The JSON object form of a record: absent keys for empty fields, numbers for numeric
/// quantities.
pub fn record_json(record: &RawRecord) -> Value {
    let mut object = Map::new();
    for (name, value) in record.fields() {
        let Some(text) = value else { continue };
        let rendered = match name {
            "quantity" => serde_json::from_str::<serde_json::Number>(text)
                .map(Value::Number)
                .unwrap_or_else(|_| Value::String(text.to_string())),
            _ => Value::String(text.to_string()),
        };
        object.insert(name.into(), rendered);
    }
    Value::Object(object)
}

/// A row the report must upload: the asset and item it resolves to and the values it carries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExpectedRow {
    pub asset_id: String,
    pub item_mpn: String,
    /// Canonical decimal text (no trailing zeros), as `f64`'s `Display` prints it.
    pub quantity: String,
    pub start: String,
    pub end: String,
}

/// The rows of one usage file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedGroup {
    pub contract_id: String,
    pub product_id: String,
    pub currency: String,
    /// Sorted: compare as a multiset.
    pub rows: Vec<ExpectedRow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRow {
    /// 0-based position among the records (the JSON-lines line is `index + 1`).
    pub index: usize,
    /// CSV line, the header being line 1.
    pub line: u64,
    pub kind: BadKind,
}

/// What a correct monthly report makes of the generated usage.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub period: Period,
    pub records: usize,
    /// Sorted by (contract, product).
    pub groups: Vec<ExpectedGroup>,
    /// In record order.
    pub bad: Vec<BadRow>,
    pub out_of_scope: usize,
    pub out_of_scope_by: BTreeMap<OutOfScopeKind, usize>,
}

impl Expected {
    pub fn group(&self, contract_id: &str, product_id: &str) -> Option<&ExpectedGroup> {
        self.groups
            .iter()
            .find(|group| group.contract_id == contract_id && group.product_id == product_id)
    }

    pub fn good_rows(&self) -> usize {
        self.groups.iter().map(|group| group.rows.len()).sum()
    }

    pub fn bad_by_kind(&self) -> BTreeMap<BadKind, usize> {
        let mut counts = BTreeMap::new();
        for bad in &self.bad {
            *counts.entry(bad.kind).or_default() += 1;
        }
        counts
    }
}

/// The serialisations a usage source can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UsageFormat {
    #[serde(rename = "csv")]
    Csv,
    #[serde(rename = "json")]
    Json,
    #[serde(rename = "jsonl")]
    JsonLines,
}

impl UsageFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            UsageFormat::Csv => "text/csv",
            UsageFormat::Json => "application/json",
            UsageFormat::JsonLines => "application/x-ndjson",
        }
    }
}

/// What [`VendorUsage::correct_quantity`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correction {
    /// 0-based position among the records.
    pub index: usize,
    pub asset_id: String,
    pub old_quantity: String,
    pub new_quantity: String,
}

/// A month of vendor usage and what a correct report makes of it.
#[derive(Debug, Clone, PartialEq)]
pub struct VendorUsage {
    pub records: Vec<RawRecord>,
    pub csv: String,
    pub expected: Expected,
}

impl VendorUsage {
    /// The records as one JSON array.
    pub fn json_array(&self) -> String {
        let array: Vec<Value> = self.records.iter().map(record_json).collect();
        serde_json::to_string_pretty(&array).expect("JSON values serialise")
    }

    /// The records as JSON lines, one object per line.
    pub fn json_lines(&self) -> String {
        self.records
            .iter()
            .map(|record| format!("{}\n", record_json(record)))
            .collect()
    }

    /// The vendor's correction of one record of a group: the first good record of
    /// (`contract_id`, `product_id`) now reports `quantity`. Records, CSV and expectations all
    /// follow, so a test (or the sandbox) can reject a file, "fix" the source and check that the
    /// rebuilt file holds exactly the corrected rows. `None` when the group has no good record.
    pub fn correct_quantity(
        &self,
        catalogue: &Catalogue,
        contract_id: &str,
        product_id: &str,
        quantity: &str,
    ) -> Option<(VendorUsage, Correction)> {
        let (index, asset) = self.first_good(catalogue, contract_id, product_id)?;
        let record = &self.records[index];
        let old_quantity: f64 = record.quantity.as_deref()?.parse().ok()?;
        let mut corrected = self.clone();
        corrected.records[index].quantity = Some(quantity.into());
        corrected.csv = render_csv(&corrected.records);
        let group = corrected
            .expected
            .groups
            .iter_mut()
            .find(|g| g.contract_id == contract_id && g.product_id == product_id)?;
        let row = group.rows.iter_mut().find(|row| {
            row.asset_id == asset.id
                && Some(row.start.as_str()) == record.start_time_utc.as_deref()
                && Some(row.end.as_str()) == record.end_time_utc.as_deref()
                && row.quantity == format!("{old_quantity}")
        })?;
        let new_quantity: f64 = quantity.parse().ok()?;
        row.quantity = format!("{new_quantity}");
        let correction = Correction {
            index,
            asset_id: asset.id.clone(),
            old_quantity: format!("{old_quantity}"),
            new_quantity: row.quantity.clone(),
        };
        group.rows.sort();
        Some((corrected, correction))
    }

    /// A record of (`contract_id`, `product_id`) that reaches the export after its period was
    /// filed: a copy of the group's first good record under the id `record_id`, reporting
    /// `quantity`, appended at the end. Records, CSV and expectations all follow. `None` when
    /// the group has no good record.
    pub fn with_late_record(
        &self,
        catalogue: &Catalogue,
        contract_id: &str,
        product_id: &str,
        record_id: &str,
        quantity: &str,
    ) -> Option<VendorUsage> {
        let (index, asset) = self.first_good(catalogue, contract_id, product_id)?;
        let mut record = self.records[index].clone();
        record.record_id = Some(record_id.into());
        record.quantity = Some(quantity.into());
        // The header is line 1.
        record.line = self.records.len() as u64 + 2;
        record.element = None;
        let row = ExpectedRow {
            asset_id: asset.id.clone(),
            item_mpn: record.item_mpn.as_deref()?.to_string(),
            quantity: format!("{}", quantity.parse::<f64>().ok()?),
            start: record.start_time_utc.as_deref()?.to_string(),
            end: record.end_time_utc.as_deref()?.to_string(),
        };
        let mut late = self.clone();
        late.records.push(record);
        late.csv = render_csv(&late.records);
        late.expected.records += 1;
        let group = late
            .expected
            .groups
            .iter_mut()
            .find(|g| g.contract_id == contract_id && g.product_id == product_id)?;
        group.rows.push(row);
        group.rows.sort();
        Some(late)
    }

    /// The first good record of (`contract_id`, `product_id`) and its asset.
    fn first_good<'c>(
        &self,
        catalogue: &'c Catalogue,
        contract_id: &str,
        product_id: &str,
    ) -> Option<(usize, &'c Asset)> {
        let bad: std::collections::HashSet<usize> =
            self.expected.bad.iter().map(|b| b.index).collect();
        let names = |asset: &Asset, key: &str| {
            asset.id == key
                || asset.external_id == key
                || asset.external_uid == key
                || asset.params.iter().any(|p| p.value == key)
        };
        self.records.iter().enumerate().find_map(|(index, record)| {
            if bad.contains(&index) {
                return None;
            }
            let key = record.subscription_id.as_deref()?;
            let asset = catalogue.assets.iter().find(|a| names(a, key))?;
            (asset.contract_id == contract_id && asset.product_id == product_id)
                .then_some((index, asset))
        })
    }

    pub fn render(&self, format: UsageFormat) -> String {
        match format {
            UsageFormat::Csv => self.csv.clone(),
            UsageFormat::Json => self.json_array(),
            UsageFormat::JsonLines => self.json_lines(),
        }
    }
}

impl Catalogue {
    /// Vendor usage for `period` over this catalogue; deterministic in (catalogue, period, spec).
    pub fn vendor_usage(
        &self,
        period: Period,
        spec: &BadRowSpec,
    ) -> Result<VendorUsage, VendorUsageError> {
        UsageGenerator {
            catalogue: self,
            period,
            spec,
            rng: StdRng::seed_from_u64(spec.seed),
            next_record_id: 0,
        }
        .generate()
    }
}

/// What a generated record is, before its final position is known (the group's ids borrowed
/// from the catalogue: millions of records are held at once).
#[derive(Debug, Clone)]
enum Outcome<'a> {
    Good {
        contract_id: &'a str,
        product_id: &'a str,
        row: ExpectedRow,
    },
    Bad(BadKind),
    OutOfScope(OutOfScopeKind),
}

#[derive(Debug, Clone)]
struct Generated<'a> {
    serial: usize,
    record: RawRecord,
    outcome: Outcome<'a>,
}

struct UsageGenerator<'a> {
    catalogue: &'a Catalogue,
    period: Period,
    spec: &'a BadRowSpec,
    rng: StdRng,
    next_record_id: usize,
}

const NOTES: [&str; 5] = [
    "monthly usage",
    "tenant \"gold\", EU region",
    "spike, see ticket #42",
    "re-rated, \"final\"",
    "plain note",
];

impl<'a> UsageGenerator<'a> {
    fn generate(mut self) -> Result<VendorUsage, VendorUsageError> {
        let reportable: Vec<(&Asset, &Product)> = self.assets_with_items(true);
        let mut records = self.good_records(&reportable)?;
        let good_count = records.len();
        let bad_count = self.bad_count(good_count);
        let repeat_count = match bad_count {
            0 => 0,
            n => (n / BadKind::ALL.len()).max(1).min(good_count),
        };
        let repeats = self.repeated_records(&mut records, repeat_count);
        records.extend(self.out_of_scope_records(good_count)?);
        records.extend(self.bad_records(&reportable, bad_count - repeats.len())?);
        for (serial, record) in records.iter_mut().enumerate() {
            record.serial = serial;
        }
        records.shuffle(&mut self.rng);
        let records = self.place_repeats(records, repeats);
        Ok(self.finish(records))
    }

    /// Puts each repeat somewhere after its original (given by serial) in the shuffled records,
    /// in place: a second copy of millions of records was most of a large world's peak.
    fn place_repeats(
        &mut self,
        mut records: Vec<Generated<'a>>,
        repeats: Vec<(usize, Generated<'a>)>,
    ) -> Vec<Generated<'a>> {
        let mut position_of = vec![0; records.len()];
        for (position, record) in records.iter().enumerate() {
            position_of[record.serial] = position;
        }
        let originals = records.len();
        let mut placed: Vec<(usize, Generated)> = repeats
            .into_iter()
            .map(|(serial, repeat)| {
                let after = self.rng.random_range(position_of[serial]..originals);
                (after, repeat)
            })
            .collect();
        drop(position_of);
        // Stable: repeats placed after the same record keep their order.
        placed.sort_by_key(|(after, _)| *after);
        // From the back: each original moves up past the repeats placed after it and those
        // behind it; the slots it leaves were already passed.
        records.resize_with(originals + placed.len(), || Generated {
            serial: 0,
            record: RawRecord::default(),
            outcome: Outcome::Bad(BadKind::RepeatedRecordId),
        });
        let mut write = records.len();
        let mut placed = placed.into_iter().rev().peekable();
        for read in (0..originals).rev() {
            while let Some((_, repeat)) = placed.next_if(|(after, _)| *after == read) {
                write -= 1;
                records[write] = repeat;
            }
            write -= 1;
            records.swap(read, write);
        }
        debug_assert_eq!(write, 0);
        records
    }

    /// Assets whose product has PPU items, in or out of scope.
    fn assets_with_items(&self, in_scope: bool) -> Vec<(&'a Asset, &'a Product)> {
        let catalogue = self.catalogue;
        catalogue
            .assets
            .iter()
            .filter(|asset| catalogue.in_scope(asset) == in_scope)
            .filter_map(|asset| Some((asset, catalogue.product(&asset.product_id)?)))
            .filter(|(_, product)| product.ppu_items().next().is_some())
            .collect()
    }

    fn good_records(
        &mut self,
        reportable: &[(&'a Asset, &'a Product)],
    ) -> Result<Vec<Generated<'a>>, VendorUsageError> {
        let mut records = Vec::new();
        for (asset, product) in reportable {
            let items: Vec<&Item> = product.ppu_items().collect();
            let count = self.rng.random_range(1..=items.len());
            let chosen: Vec<&Item> = items
                .choose_multiple(&mut self.rng, count)
                .copied()
                .collect();
            for item in chosen {
                let parts = self
                    .rng
                    .random_range(1..=self.spec.max_rows_per_item.clamp(1, max_parts(self.period)));
                for part in 0..parts {
                    let (start, end) = interval(self.period, part, parts);
                    let quantity = self.quantity(item);
                    let record = self.record(asset, item, &quantity, start, end)?;
                    records.push(Generated {
                        serial: 0,
                        record,
                        outcome: Outcome::Good {
                            contract_id: &asset.contract_id,
                            product_id: &asset.product_id,
                            row: ExpectedRow {
                                asset_id: asset.id.clone(),
                                item_mpn: item.mpn.clone(),
                                quantity,
                                start: format_time(start),
                                end: format_time(end),
                            },
                        },
                    });
                }
            }
        }
        Ok(records)
    }

    /// A well-formed record; about seven in ten carry a vendor record id.
    fn record(
        &mut self,
        asset: &Asset,
        item: &Item,
        quantity: &str,
        start: NaiveDateTime,
        end: NaiveDateTime,
    ) -> Result<RawRecord, VendorUsageError> {
        let record_id = self
            .rng
            .random_ratio(7, 10)
            .then(|| self.fresh_record_id().into());
        let record_note = self
            .rng
            .random_ratio(1, 2)
            .then(|| (*NOTES.choose(&mut self.rng).expect("not empty")).into());
        Ok(RawRecord {
            subscription_id: Some(self.subscription_value(asset)?.into()),
            item_mpn: Some(self.item_value(item).into()),
            quantity: Some(quantity.into()),
            start_time_utc: Some(format_time(start).into()),
            end_time_utc: Some(format_time(end).into()),
            record_id,
            record_note,
            ..RawRecord::default()
        })
    }

    fn fresh_record_id(&mut self) -> String {
        self.next_record_id += 1;
        format!("rec-{:06}", self.next_record_id)
    }

    fn subscription_value(&self, asset: &Asset) -> Result<String, VendorUsageError> {
        Ok(match &self.spec.subscription_key {
            AssetCriteria::Id => asset.id.clone(),
            AssetCriteria::ExternalId => asset.external_id.clone(),
            AssetCriteria::ExternalUid => asset.external_uid.clone(),
            AssetCriteria::Parameter(name) => asset
                .param(name)
                .ok_or_else(|| VendorUsageError::UnknownParameter {
                    asset: asset.id.clone(),
                    parameter: name.clone(),
                })?
                .to_string(),
        })
    }

    fn unknown_subscription(&self, n: usize) -> String {
        match &self.spec.subscription_key {
            AssetCriteria::Id => format!("AS-0000-0000-{n:04}"),
            AssetCriteria::ExternalId => format!("EXT-UNKNOWN-{n}"),
            AssetCriteria::ExternalUid => format!("00000000-0000-4000-8000-{n:012}"),
            AssetCriteria::Parameter(_) => format!("unknown-{n}"),
        }
    }

    fn item_value(&self, item: &Item) -> String {
        match self.spec.item_key {
            ItemCriteria::Mpn => item.mpn.clone(),
            ItemCriteria::LocalId => item.local_id.clone(),
            ItemCriteria::Id => item.id.clone(),
        }
    }

    /// An item the asset's product cannot resolve: a made-up one, the product's reservation
    /// item, or another product's PPU item (the last two only where the key is global).
    fn unknown_item(&mut self, product: &Product, n: usize) -> String {
        let made_up = match self.spec.item_key {
            ItemCriteria::Mpn => format!("MPN-UNKNOWN-{n}"),
            ItemCriteria::LocalId => format!("UNKNOWN_{n}"),
            ItemCriteria::Id => format!("PRD-000-000-000-{n:04}"),
        };
        if self.spec.item_key == ItemCriteria::LocalId {
            return made_up;
        }
        let reservation = product.items.iter().find(|item| !item.is_ppu());
        let foreign = self
            .catalogue
            .products
            .iter()
            .filter(|other| other.id != product.id)
            .flat_map(|other| other.ppu_items())
            .next();
        let borrowed = match n % 3 {
            1 => reservation,
            2 => foreign,
            _ => None,
        };
        borrowed.map_or(made_up, |item| self.item_value(item))
    }

    /// A quantity allowed by the item's precision, in canonical text.
    fn quantity(&mut self, item: &Item) -> String {
        let decimals = decimals_of(&item.precision);
        let whole = self.rng.random_range(0..5000u32);
        let digits = self.rng.random_range(0..=decimals);
        let fraction = self.rng.random_range(0..10u64.pow(digits as u32));
        canonical(whole, fraction, digits)
    }

    /// Picks good records to repeat (same record id, other note) and returns the copies with the
    /// position of their original; originals without a record id get one.
    fn repeated_records(
        &mut self,
        good: &mut [Generated<'a>],
        count: usize,
    ) -> Vec<(usize, Generated<'a>)> {
        let mut repeats = Vec::new();
        for _ in 0..count.min(good.len()) {
            let position = self.rng.random_range(0..good.len());
            let original = &mut good[position];
            if original.record.record_id.is_none() {
                original.record.record_id = Some(self.fresh_record_id().into());
            }
            let mut record = original.record.clone();
            record.record_note = Some("sent twice, \"corrected\"".into());
            repeats.push((
                position,
                Generated {
                    serial: 0,
                    record,
                    outcome: Outcome::Bad(BadKind::RepeatedRecordId),
                },
            ));
        }
        repeats
    }

    /// How many bad records to make in all: the share of the good ones, at least one per kind.
    fn bad_count(&self, good_count: usize) -> usize {
        if self.spec.bad_share <= 0.0 {
            return 0;
        }
        let wanted = (self.spec.bad_share * good_count as f64).round() as usize;
        wanted.max(BadKind::ALL.len())
    }

    fn out_of_scope_records(
        &mut self,
        good_count: usize,
    ) -> Result<Vec<Generated<'a>>, VendorUsageError> {
        let candidates = self.assets_with_items(false);
        if self.spec.out_of_scope_share <= 0.0 || candidates.is_empty() {
            return Ok(Vec::new());
        }
        let count = ((self.spec.out_of_scope_share * good_count as f64).round() as usize).max(1);
        let mut records = Vec::new();
        for _ in 0..count {
            let (asset, product) = *candidates.choose(&mut self.rng).expect("not empty");
            let item = *product
                .ppu_items()
                .collect::<Vec<_>>()
                .choose(&mut self.rng)
                .expect("has PPU items");
            let quantity = self.quantity(item);
            let record = self.record(
                asset,
                item,
                &quantity,
                self.period.start(),
                self.period.end(),
            )?;
            records.push(Generated {
                serial: 0,
                record,
                outcome: Outcome::OutOfScope(self.out_of_scope_kind(asset)),
            });
        }
        Ok(records)
    }

    fn out_of_scope_kind(&self, asset: &Asset) -> OutOfScopeKind {
        match self.catalogue.contract(&asset.contract_id) {
            Some(contract) if contract.contract_type != "distribution" => {
                OutOfScopeKind::NotDistribution
            }
            Some(contract) if contract.status != "active" => OutOfScopeKind::InactiveContract,
            _ => OutOfScopeKind::ProductNotQt,
        }
    }

    /// Bad records of every kind but repeats, each with exactly one defect, on in-scope assets.
    fn bad_records(
        &mut self,
        reportable: &[(&'a Asset, &'a Product)],
        count: usize,
    ) -> Result<Vec<Generated<'a>>, VendorUsageError> {
        if reportable.is_empty() {
            return Ok(Vec::new());
        }
        let with_integer_items: Vec<(&Asset, &Product)> = reportable
            .iter()
            .copied()
            .filter(|(_, product)| {
                product
                    .ppu_items()
                    .any(|item| decimals_of(&item.precision) == 0)
            })
            .collect();
        let kinds: Vec<BadKind> = BadKind::ALL
            .into_iter()
            .filter(|kind| *kind != BadKind::RepeatedRecordId)
            .filter(|kind| *kind != BadKind::FractionalQuantity || !with_integer_items.is_empty())
            .collect();
        let mut records = Vec::new();
        for n in 0..count {
            let kind = kinds[n % kinds.len()];
            let pool = if kind == BadKind::FractionalQuantity {
                &with_integer_items
            } else {
                reportable
            };
            let (asset, product) = *pool.choose(&mut self.rng).expect("not empty");
            let items: Vec<&Item> = match kind {
                BadKind::FractionalQuantity => product
                    .ppu_items()
                    .filter(|item| decimals_of(&item.precision) == 0)
                    .collect(),
                _ => product.ppu_items().collect(),
            };
            let item = *items.choose(&mut self.rng).expect("has PPU items");
            let (start, end) = (self.period.start(), self.period.end());
            let quantity = self.quantity(item);
            let mut record = self.record(asset, item, &quantity, start, end)?;
            // Bad records never share a record id with anything (only repeats do).
            record.record_id = record.record_id.map(|_| format!("bad-{n:06}").into());
            self.break_record(&mut record, kind, product, n, n / kinds.len());
            records.push(Generated {
                serial: 0,
                record,
                outcome: Outcome::Bad(kind),
            });
        }
        Ok(records)
    }

    /// Gives a well-formed record the one defect `kind`; `variant` rotates between spellings.
    fn break_record(
        &mut self,
        record: &mut RawRecord,
        kind: BadKind,
        product: &Product,
        n: usize,
        variant: usize,
    ) {
        let period = self.period;
        let day = |n: u32| moment(period, n);
        match kind {
            BadKind::MissingField => {
                let field = match variant % 5 {
                    0 => &mut record.subscription_id,
                    1 => &mut record.item_mpn,
                    2 => &mut record.quantity,
                    3 => &mut record.start_time_utc,
                    _ => &mut record.end_time_utc,
                };
                *field = None;
            }
            BadKind::UnparsableQuantity => {
                let text = ["abc", "1,5", "12..3", "ten"][variant % 4];
                record.quantity = Some(text.into());
            }
            BadKind::UnparsableTime => {
                let start = period.start() + Duration::days(4);
                let text = match variant % 3 {
                    0 => start.format("%Y-%m-%dT%H:%M:%S").to_string(),
                    1 => start.format("%d/%m/%Y %H:%M:%S").to_string(),
                    _ => period.first_day().format("%Y-%m-32 00:00:00").to_string(),
                };
                if variant.is_multiple_of(2) {
                    record.start_time_utc = Some(text.into());
                } else {
                    record.end_time_utc = Some(text.into());
                }
            }
            BadKind::NegativeQuantity => {
                record.quantity = Some(format!("-{}", self.rng.random_range(1..100)).into());
            }
            BadKind::FractionalQuantity => {
                record.quantity = Some(format!("{}.5", self.rng.random_range(0..100)).into());
            }
            BadKind::EndBeforeStart => {
                record.start_time_utc = Some(format_time(day(10)).into());
                record.end_time_utc = Some(format_time(day(5)).into());
            }
            BadKind::OutsidePeriod => {
                let (start, end) = if variant.is_multiple_of(2) {
                    (period.start() - Duration::hours(12), day(2))
                } else {
                    (
                        period.end() - Duration::hours(12),
                        period.end() + Duration::hours(7),
                    )
                };
                record.start_time_utc = Some(format_time(start).into());
                record.end_time_utc = Some(format_time(end).into());
            }
            BadKind::UnknownSubscription => {
                record.subscription_id = Some(self.unknown_subscription(n).into());
            }
            BadKind::UnknownItem => {
                record.item_mpn = Some(self.unknown_item(product, variant).into());
            }
            BadKind::RepeatedRecordId => unreachable!("repeats are made from good records"),
        }
    }

    /// The records in their final order, their outcomes moved (not copied) into the
    /// expectations as they are taken apart.
    fn finish(self, generated: Vec<Generated<'a>>) -> VendorUsage {
        let mut groups: BTreeMap<(&str, &str), Vec<ExpectedRow>> = BTreeMap::new();
        let mut bad = Vec::new();
        let mut out_of_scope_by: BTreeMap<OutOfScopeKind, usize> = BTreeMap::new();
        // Collected in place: the records take over the generated records' buffer.
        let mut records: Vec<RawRecord> = generated
            .into_iter()
            .enumerate()
            .map(|(index, generated)| {
                match generated.outcome {
                    Outcome::Good {
                        contract_id,
                        product_id,
                        row,
                    } => groups
                        .entry((contract_id, product_id))
                        .or_default()
                        .push(row),
                    Outcome::Bad(kind) => bad.push(BadRow {
                        index,
                        line: index as u64 + 2,
                        kind,
                    }),
                    Outcome::OutOfScope(kind) => *out_of_scope_by.entry(kind).or_default() += 1,
                }
                generated.record
            })
            .collect();
        records.shrink_to_fit();
        let groups = groups
            .into_iter()
            .map(|((contract_id, product_id), mut rows)| {
                rows.sort();
                rows.shrink_to_fit();
                ExpectedGroup {
                    currency: self.currency_of(contract_id),
                    contract_id: contract_id.to_string(),
                    product_id: product_id.to_string(),
                    rows,
                }
            })
            .collect();
        VendorUsage {
            csv: render_csv(&records),
            expected: Expected {
                period: self.period,
                records: records.len(),
                groups,
                bad,
                out_of_scope: out_of_scope_by.values().sum(),
                out_of_scope_by,
            },
            records,
        }
    }

    fn currency_of(&self, contract_id: &str) -> String {
        self.catalogue
            .contract(contract_id)
            .and_then(|contract| self.catalogue.marketplace(&contract.marketplace_id))
            .map(|marketplace| marketplace.currency.clone())
            .unwrap_or_default()
    }
}

/// `part` of `parts` consecutive intervals covering the period: whole days of a month, whole
/// hours of a day.
fn interval(period: Period, part: usize, parts: usize) -> (NaiveDateTime, NaiveDateTime) {
    let (units, unit) = match period.cadence() {
        Cadence::Monthly => (period.last_day().day() as usize, Duration::days(1)),
        Cadence::Daily => (24, Duration::hours(1)),
    };
    debug_assert!((1..=units).contains(&parts) && part < parts);
    let first = (part * units / parts) as i32;
    let last = ((part + 1) * units / parts) as i32 - 1;
    let start = period.start() + unit * first;
    let end = period.start() + unit * last + unit - Duration::seconds(1);
    (start, end)
}

/// The most intervals a period is cut into: 28 days of a month (every month has them), 24
/// hours of a day.
fn max_parts(period: Period) -> usize {
    match period.cadence() {
        Cadence::Monthly => 28,
        Cadence::Daily => 24,
    }
}

/// A moment inside the period, `n` (1 to 28) steps in: noon of day `n` of a month, hour `n`
/// of a day — for records that must break one rule and no other.
fn moment(period: Period, n: u32) -> NaiveDateTime {
    match period.cadence() {
        Cadence::Monthly => {
            NaiveDate::from_ymd_opt(period.first_day().year(), period.first_day().month(), n)
                .expect("every month has 28 days")
                .and_hms_opt(12, 0, 0)
                .expect("valid time")
        }
        Cadence::Daily => period.start() + Duration::hours(i64::from(n % 24)),
    }
}

/// Digits after the point an item precision allows (`integer` → 0, `decimal(n)` → n).
fn decimals_of(precision: &str) -> u8 {
    let lower = precision.to_ascii_lowercase();
    lower
        .strip_prefix("decimal(")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

/// `whole.fraction` with `digits` fraction digits, trailing zeros removed.
fn canonical(whole: u32, fraction: u64, digits: u8) -> String {
    if digits == 0 {
        return whole.to_string();
    }
    let text = format!("{whole}.{fraction:0width$}", width = digits as usize);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `records` as a vendor CSV export: the [`FIELDS`] header, one line per record.
pub fn render_csv(records: &[RawRecord]) -> String {
    let mut csv = FIELDS.join(",");
    csv.push('\n');
    for record in records {
        let cells: Vec<String> = record
            .fields()
            .iter()
            .map(|(_, value)| csv_cell(value.as_deref().unwrap_or("")))
            .collect();
        csv.push_str(&cells.join(","));
        csv.push('\n');
    }
    csv
}

fn csv_cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::SeedSpec;

    fn usage(spec: &BadRowSpec) -> VendorUsage {
        let catalogue = Catalogue::generate(&SeedSpec::default());
        catalogue
            .vendor_usage(Period::parse("2024-02").unwrap(), spec)
            .unwrap()
    }

    #[test]
    fn quantities_are_canonical_decimal_text() {
        assert_eq!(canonical(12, 50, 2), "12.5");
        assert_eq!(canonical(7, 0, 2), "7");
        assert_eq!(canonical(3, 25, 2), "3.25");
        assert_eq!(canonical(0, 1, 4), "0.0001");
        for text in ["12.5", "7", "0.0001", "4999.12345678"] {
            assert_eq!(text.parse::<f64>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn intervals_tile_the_month() {
        let feb = Period::parse("2024-02").unwrap();
        assert_eq!(interval(feb, 0, 1), (feb.start(), feb.end()));
        let (first_start, first_end) = interval(feb, 0, 2);
        let (second_start, second_end) = interval(feb, 1, 2);
        assert_eq!(first_start, feb.start());
        assert_eq!(second_start - first_end, Duration::seconds(1));
        assert_eq!(second_end, feb.end());
    }

    #[test]
    fn intervals_tile_a_day_by_hours() {
        let day = Period::parse("2024-02-29").unwrap();
        assert_eq!(interval(day, 0, 1), (day.start(), day.end()));
        let parts: Vec<_> = (0..24).map(|part| interval(day, part, 24)).collect();
        assert_eq!(parts[0].0, day.start());
        assert_eq!(parts[23].1, day.end());
        for pair in parts.windows(2) {
            assert_eq!(pair[1].0 - pair[0].1, Duration::seconds(1));
        }
    }

    /// A day's usage: every good row inside the day, every bad kind for its own reason only.
    #[test]
    fn a_day_of_usage_stays_inside_the_day() {
        let catalogue = Catalogue::generate(&SeedSpec::default());
        let day = Period::parse("2024-03-05").unwrap();
        let usage = catalogue
            .vendor_usage(
                day,
                &BadRowSpec {
                    max_rows_per_item: 40,
                    ..BadRowSpec::default()
                },
            )
            .unwrap();
        assert!(usage.expected.good_rows() > 0);
        let time = |text: &str| payg_shared::period::parse_time(text).unwrap();
        for group in &usage.expected.groups {
            for row in &group.rows {
                assert!(day.contains(time(&row.start), time(&row.end)), "{row:?}");
            }
        }
        let kinds = usage.expected.bad_by_kind();
        for kind in BadKind::ALL {
            assert!(kinds.contains_key(&kind), "{kind:?} missing");
        }
        for bad in &usage.expected.bad {
            let record = &usage.records[bad.index];
            let times = (
                record
                    .start_time_utc
                    .as_deref()
                    .and_then(payg_shared::period::parse_time),
                record
                    .end_time_utc
                    .as_deref()
                    .and_then(payg_shared::period::parse_time),
            );
            if let (Some(start), Some(end)) = times {
                match bad.kind {
                    BadKind::EndBeforeStart => {
                        assert!(end < start && start <= day.end() && end >= day.start())
                    }
                    BadKind::OutsidePeriod => assert!(start <= end && !day.contains(start, end)),
                    _ => assert!(day.contains(start, end), "{:?}: {record:?}", bad.kind),
                }
            }
        }
    }

    #[test]
    fn every_bad_kind_and_both_scopes_appear() {
        let usage = usage(&BadRowSpec::default());
        let kinds = usage.expected.bad_by_kind();
        for kind in BadKind::ALL {
            assert!(kinds.contains_key(&kind), "{kind:?} missing");
        }
        assert!(usage.expected.out_of_scope > 0);
        assert_eq!(
            usage.expected.records,
            usage.expected.good_rows() + usage.expected.bad.len() + usage.expected.out_of_scope
        );
    }

    #[test]
    fn repeats_follow_their_original() {
        let usage = usage(&BadRowSpec::default());
        for bad in usage
            .expected
            .bad
            .iter()
            .filter(|b| b.kind == BadKind::RepeatedRecordId)
        {
            let id = usage.records[bad.index].record_id.clone().unwrap();
            let first = usage
                .records
                .iter()
                .position(|r| r.record_id.as_deref() == Some(&id))
                .unwrap();
            assert!(first < bad.index);
        }
    }

    #[test]
    fn json_forms_carry_the_same_records() {
        let usage = usage(&BadRowSpec::default());
        let array: Vec<Value> = serde_json::from_str(&usage.json_array()).unwrap();
        assert_eq!(array.len(), usage.records.len());
        let json_lines = usage.json_lines();
        let lines: Vec<&str> = json_lines.lines().collect();
        assert_eq!(lines.len(), usage.records.len());
        assert_eq!(serde_json::from_str::<Value>(lines[0]).unwrap(), array[0]);
    }
}
