//! What the simulated Connect account contains: marketplaces, contracts, products with their
//! items, and assets (subscriptions), as typed values plus their JSON renderings.
//!
//! Tests build or tweak a [`Catalogue`] and install it in the simulator; the REST side serves the
//! JSON renderings. The few marketplaces, contracts and products are rendered once per install;
//! assets (up to millions) are rendered when a page or a filter needs them, found through
//! [`AssetIndex`]: a JSON tree per asset held for the whole run was ~20 KiB a subscription,
//! more than the rest of a month's world together. An asset is rendered in two ways from one
//! set of typed fields ([`AssetField`]): as a tree of only the top-level fields a query's filter,
//! search or ordering reads, to be checked; and written straight out for the page, skipping
//! the fields `select(-…)` removes. Building the full tree of every asset of the runner's
//! pages (`in(id,(…100 ids…))&select(-configuration,-items,-tiers,-connection)`), then
//! projecting and dropping it, was about a fifth of the simulator's CPU in the
//! 10k-subscription month; rendered this way the month's simulator CPU went from 0.61-0.65 to
//! 0.50-0.51 CPU-s (release bench, 0 ms latency), the asset pages from ~17% of its samples to
//! ~4%. The answers are byte for byte what the trees gave (tested against a stored full
//! rendering and a golden asset). The renderings follow Connect's published
//! models — including what is *not* there: contracts carry no `marketplace`, so clients must
//! take the currency from the assets' marketplace.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::rql::{ListRequest, Stored};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marketplace {
    pub id: String,
    pub name: String,
    pub currency: String,
    pub zone: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contract {
    pub id: String,
    pub name: String,
    /// `distribution`, `program`, `service`, `syndication` or `referral`.
    pub contract_type: String,
    /// `active`, `terminated`, `pending`, …
    pub status: String,
    /// Where this contract's assets live; not rendered (the published model has no such field).
    pub marketplace_id: String,
}

impl Contract {
    pub fn is_active_distribution(&self) -> bool {
        self.contract_type == "distribution" && self.status == "active"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The global id `PRD-…-NNNN`.
    pub id: String,
    pub local_id: String,
    pub mpn: String,
    pub name: String,
    /// `ppu` or `reservation` (lower case, as real payloads spell it).
    pub item_type: String,
    /// `integer`, `decimal(2)`, …
    pub precision: String,
    pub unit: String,
}

impl Item {
    pub fn is_ppu(&self) -> bool {
        self.item_type.eq_ignore_ascii_case("ppu")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    pub name: String,
    /// `capabilities.ppu.schema` (`QT`, `TR`, …); `None` renders `ppu: null`.
    pub ppu_schema: Option<String>,
    pub items: Vec<Item>,
}

impl Product {
    pub fn is_qt(&self) -> bool {
        self.ppu_schema
            .as_deref()
            .is_some_and(|schema| schema.eq_ignore_ascii_case("qt"))
    }

    pub fn ppu_items(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(|item| item.is_ppu())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssetParam {
    pub id: String,
    pub value: String,
    pub reconciliation: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Asset {
    pub id: String,
    /// `active`, `terminated`, …
    pub status: String,
    pub external_id: String,
    pub external_uid: String,
    pub product_id: String,
    pub contract_id: String,
    pub marketplace_id: String,
    pub params: Vec<AssetParam>,
}

impl Asset {
    pub fn param(&self, id: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|param| param.id == id)
            .map(|param| param.value.as_str())
    }
}

/// Everything the simulated account can see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalogue {
    pub vendor: Account,
    pub provider: Account,
    pub marketplaces: Vec<Marketplace>,
    pub contracts: Vec<Contract>,
    pub products: Vec<Product>,
    pub assets: Vec<Asset>,
}

impl Default for Catalogue {
    fn default() -> Self {
        Catalogue {
            vendor: Account {
                id: "VA-000-001".into(),
                name: "Simulated Vendor".into(),
            },
            provider: Account {
                id: "PA-000-001".into(),
                name: "Simulated Provider".into(),
            },
            marketplaces: Vec::new(),
            contracts: Vec::new(),
            products: Vec::new(),
            assets: Vec::new(),
        }
    }
}

impl Catalogue {
    pub fn contract(&self, id: &str) -> Option<&Contract> {
        self.contracts.iter().find(|contract| contract.id == id)
    }

    pub fn product(&self, id: &str) -> Option<&Product> {
        self.products.iter().find(|product| product.id == id)
    }

    pub fn marketplace(&self, id: &str) -> Option<&Marketplace> {
        self.marketplaces
            .iter()
            .find(|marketplace| marketplace.id == id)
    }

    pub fn asset(&self, id: &str) -> Option<&Asset> {
        self.assets.iter().find(|asset| asset.id == id)
    }

    /// An asset's records are reported when its contract is an active distribution
    /// contract and its product reports with the QT schema (terminated assets included).
    pub fn in_scope(&self, asset: &Asset) -> bool {
        let contract_ok = self
            .contract(&asset.contract_id)
            .is_some_and(Contract::is_active_distribution);
        let product_ok = self.product(&asset.product_id).is_some_and(Product::is_qt);
        contract_ok && product_ok
    }
}

/// The JSON each REST collection serves, rendered once per installed catalogue, and the
/// index assets are found through (they are rendered on demand, see [`Rendered::asset`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Rendered {
    pub accounts: Vec<Value>,
    pub marketplaces: Collection,
    pub contracts: Collection,
    pub products: Collection,
    /// Product id → that product's items.
    pub items: HashMap<String, Vec<Value>>,
    pub assets: AssetIndex,
}

/// The asset fields list requests pin (`in(id,(…))`, `eq(contract.id,…)`, a search criteria's
/// `in(external_id,(…))` or `in(params.value,(…))`), each indexed in [`AssetIndex`].
const INDEXED_ASSET_FIELDS: [&str; 6] = [
    "id",
    "external_id",
    "external_uid",
    "params.value",
    "contract.id",
    "product.id",
];

/// Where to find the assets a query can match without rendering every asset: for each of
/// [`INDEXED_ASSET_FIELDS`], (hash of a value, position) pairs sorted. A hash names a superset
/// (collisions are possible), so candidates are always checked against the whole filter.
#[derive(Debug, Clone, Default)]
pub(crate) struct AssetIndex {
    len: usize,
    by_field: Vec<Vec<(u64, u32)>>,
}

fn text_hash(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

impl AssetIndex {
    fn of(assets: &[Asset]) -> Self {
        let by_field = INDEXED_ASSET_FIELDS
            .iter()
            .map(|field| {
                let mut entries: Vec<(u64, u32)> = Vec::with_capacity(assets.len());
                for (at, asset) in assets.iter().enumerate() {
                    let at = u32::try_from(at).expect("fewer than 4 billion assets");
                    let mut add = |text: &str| entries.push((text_hash(text), at));
                    match *field {
                        "id" => add(&asset.id),
                        "external_id" => add(&asset.external_id),
                        "external_uid" => add(&asset.external_uid),
                        "params.value" => asset.params.iter().for_each(|p| add(&p.value)),
                        "contract.id" => add(&asset.contract_id),
                        _ => add(&asset.product_id),
                    }
                }
                entries.sort_unstable();
                entries.dedup();
                entries
            })
            .collect();
        AssetIndex {
            len: assets.len(),
            by_field,
        }
    }

    /// Positions whose `field` (one of [`INDEXED_ASSET_FIELDS`]) may hold one of `values`,
    /// ascending.
    fn positions(&self, field: usize, values: &[&str]) -> Vec<u32> {
        let entries = &self.by_field[field];
        let mut found: Vec<u32> = values
            .iter()
            .flat_map(|value| {
                let hash = text_hash(value);
                let from = entries.partition_point(|(h, _)| *h < hash);
                entries[from..]
                    .iter()
                    .take_while(move |(h, _)| *h == hash)
                    .map(|(_, at)| *at)
            })
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    }

    /// The position of the asset whose id is `id`, if any.
    pub fn find(&self, catalogue: &Catalogue, id: &str) -> Option<usize> {
        self.positions(0, &[id])
            .into_iter()
            .map(|at| at as usize)
            .find(|&at| catalogue.assets[at].id == id)
    }

    /// The positions of the assets `query` can match, in catalogue order: those every indexed
    /// field it pins allows, or all.
    pub fn candidates(&self, query: &ListRequest) -> Vec<u32> {
        let mut sets: Vec<Vec<u32>> = INDEXED_ASSET_FIELDS
            .iter()
            .enumerate()
            .filter_map(|(field, name)| Some(self.positions(field, &query.pinned(name)?)))
            .collect();
        sets.sort_by_key(Vec::len);
        let mut sets = sets.into_iter();
        let Some(mut smallest) = sets.next() else {
            let len = u32::try_from(self.len).expect("fewer than 4 billion assets");
            return (0..len).collect();
        };
        for other in sets {
            smallest.retain(|at| other.binary_search(at).is_ok());
        }
        smallest
    }
}

/// A rendered collection in catalogue order, indexed by id: a page of `in(id,(…))` or a
/// detail read touches the objects asked for, not every one of thousands.
#[derive(Debug, Clone, Default)]
pub(crate) struct Collection {
    values: Vec<Stored>,
    by_id: HashMap<String, usize>,
}

impl Collection {
    fn new(values: Vec<Value>) -> Self {
        let by_id = values
            .iter()
            .enumerate()
            .filter_map(|(at, value)| Some((value["id"].as_str()?.to_string(), at)))
            .collect();
        let values = values.into_iter().map(Stored::new).collect();
        Collection { values, by_id }
    }

    pub fn get(&self, id: &str) -> Option<&Stored> {
        self.by_id.get(id).map(|&at| &self.values[at])
    }

    /// The objects `query` can match, in collection order: the ones it pins by id, or all.
    pub fn candidates(&self, query: &ListRequest) -> Vec<&Stored> {
        match query.pinned("id") {
            Some(ids) => {
                let mut at: Vec<usize> = ids
                    .iter()
                    .filter_map(|id| self.by_id.get(*id))
                    .copied()
                    .collect();
                at.sort_unstable();
                at.dedup();
                at.into_iter().map(|at| &self.values[at]).collect()
            }
            None => self.values.iter().collect(),
        }
    }
}

impl Rendered {
    pub fn of(catalogue: &Catalogue) -> Self {
        let render = Renderer { catalogue };
        Rendered {
            accounts: vec![json!({
                "id": catalogue.vendor.id, "name": catalogue.vendor.name, "type": "vendor",
                "events": {"created": {"at": "2020-01-01T00:00:00+00:00"}},
            })],
            marketplaces: Collection::new(
                catalogue
                    .marketplaces
                    .iter()
                    .map(Renderer::marketplace)
                    .collect(),
            ),
            contracts: Collection::new(
                catalogue
                    .contracts
                    .iter()
                    .map(|contract| render.contract(contract))
                    .collect(),
            ),
            products: Collection::new(
                catalogue
                    .products
                    .iter()
                    .map(|product| render.product(product))
                    .collect(),
            ),
            items: catalogue
                .products
                .iter()
                .map(|product| {
                    let items = product.items.iter().map(Renderer::item).collect();
                    (product.id.clone(), items)
                })
                .collect(),
            assets: AssetIndex::of(&catalogue.assets),
        }
    }

    /// The JSON of the asset at `at` in `catalogue` (the one these renderings were made of),
    /// with at least the top-level fields `wanted` accepts.
    pub fn asset(catalogue: &Catalogue, at: usize, wanted: &dyn Fn(&str) -> bool) -> Value {
        Renderer { catalogue }.asset(&catalogue.assets[at], wanted)
    }

    /// The asset at `at` in `catalogue` as a list answer to `query` shows it, serialized
    /// without building its tree.
    pub fn shown_asset<'c, 'q>(
        catalogue: &'c Catalogue,
        at: usize,
        query: &'q ListRequest,
    ) -> ShownAsset<'c, 'q> {
        ShownAsset {
            renderer: Renderer { catalogue },
            asset: &catalogue.assets[at],
            query,
        }
    }
}

struct Renderer<'a> {
    catalogue: &'a Catalogue,
}

impl Renderer<'_> {
    fn account(account: &Account) -> Value {
        json!({"id": account.id, "name": account.name})
    }

    fn marketplace(marketplace: &Marketplace) -> Value {
        json!({
            "id": marketplace.id, "name": marketplace.name, "currency": marketplace.currency,
            "zone": marketplace.zone, "icon": format!("/media/{}/icon.png", marketplace.id),
            "alt_currency_1": null, "alt_currency_2": null,
        })
    }

    fn contract(&self, contract: &Contract) -> Value {
        json!({
            "id": contract.id,
            "name": contract.name,
            "type": contract.contract_type,
            "status": contract.status,
            "version": 1,
            "kind": "production",
            "owner": Self::account(&self.catalogue.provider),
            "issuer": Self::account(&self.catalogue.provider),
            "agreement": {"id": format!("AGP-{}", contract.id.trim_start_matches("CRD-")), "name": "Distribution agreement"},
            "events": {"created": {"at": "2023-01-01T00:00:00+00:00"}},
        })
    }

    fn product(&self, product: &Product) -> Value {
        let ppu = product.ppu_schema.as_ref().map(|schema| {
            json!({"schema": schema, "dynamic": false, "predictive": true, "future": false,
                   "late": false, "required_custom_fields": []})
        });
        json!({
            "id": product.id,
            "name": product.name,
            "status": "published",
            "icon": format!("/media/{}/logo.png", product.id),
            "owner": Self::account(&self.catalogue.vendor),
            "capabilities": {"ppu": ppu, "reservation": {"consumption": false}},
            "usage_rule": {"enabled": product.ppu_schema.is_some()},
        })
    }

    fn item(item: &Item) -> Value {
        json!({
            "id": item.id,
            "local_id": item.local_id,
            "mpn": item.mpn,
            "name": item.name,
            "display_name": item.name,
            "type": item.item_type,
            "period": "monthly",
            "precision": item.precision,
            "unit": {"id": item.unit, "name": item.unit, "title": item.unit, "unit": item.unit},
            "status": "published",
            "dynamic": false,
        })
    }
}

/// The top-level fields of an asset's JSON, in the order serde_json's maps (sorted by key)
/// hold them: written straight out in this order, an asset reads byte for byte as its tree.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AssetField {
    Configuration,
    Connection,
    Contract,
    ExternalId,
    ExternalUid,
    Id,
    Items,
    Marketplace,
    Params,
    Product,
    Status,
    Tiers,
}

impl AssetField {
    const ALL: [AssetField; 12] = [
        AssetField::Configuration,
        AssetField::Connection,
        AssetField::Contract,
        AssetField::ExternalId,
        AssetField::ExternalUid,
        AssetField::Id,
        AssetField::Items,
        AssetField::Marketplace,
        AssetField::Params,
        AssetField::Product,
        AssetField::Status,
        AssetField::Tiers,
    ];

    fn name(self) -> &'static str {
        match self {
            AssetField::Configuration => "configuration",
            AssetField::Connection => "connection",
            AssetField::Contract => "contract",
            AssetField::ExternalId => "external_id",
            AssetField::ExternalUid => "external_uid",
            AssetField::Id => "id",
            AssetField::Items => "items",
            AssetField::Marketplace => "marketplace",
            AssetField::Params => "params",
            AssetField::Product => "product",
            AssetField::Status => "status",
            AssetField::Tiers => "tiers",
        }
    }
}

/// One top-level field of an asset, ready to serialize. Every struct below lists its keys
/// sorted, as a serde_json map orders them (a test holds each to its tree's text).
#[derive(Serialize)]
#[serde(untagged)]
enum FieldJson<'c> {
    Text(&'c str),
    Configuration(ConfigurationJson),
    Connection(ConnectionJson<'c>),
    Contract(NamedJson<'c>),
    Items(Vec<AssetItemJson<'c>>),
    Marketplace(MarketplaceJson<'c>),
    Params(Vec<AssetParamJson<'c>>),
    Product(AssetProductJson<'c>),
    Tiers(TiersJson),
}

#[derive(Serialize)]
struct ConfigurationJson {
    params: [(); 0],
}

/// `{"id", "name"}`: accounts, the hub and an asset's contract (`name` null when unknown).
#[derive(Serialize)]
struct NamedJson<'c> {
    id: &'c str,
    name: Option<&'c str>,
}

#[derive(Serialize)]
struct ConnectionJson<'c> {
    hub: NamedJson<'c>,
    id: String,
    provider: NamedJson<'c>,
    #[serde(rename = "type")]
    kind: &'c str,
    vendor: NamedJson<'c>,
}

#[derive(Serialize)]
struct AssetItemJson<'c> {
    display_name: &'c str,
    global_id: &'c str,
    id: &'c str,
    item_type: &'c str,
    mpn: &'c str,
    period: &'c str,
    quantity: &'c str,
}

#[derive(Serialize)]
struct MarketplaceJson<'c> {
    icon: String,
    id: &'c str,
    name: Option<&'c str>,
}

#[derive(Serialize)]
struct AssetParamJson<'c> {
    constraints: ConstraintsJson,
    id: &'c str,
    name: &'c str,
    phase: &'c str,
    scope: &'c str,
    title: &'c str,
    #[serde(rename = "type")]
    kind: &'c str,
    value: &'c str,
}

#[derive(Serialize)]
struct ConstraintsJson {
    hidden: bool,
    reconciliation: bool,
    required: bool,
    unique: bool,
}

#[derive(Serialize)]
struct AssetProductJson<'c> {
    icon: String,
    id: &'c str,
    name: Option<&'c str>,
    status: &'c str,
}

#[derive(Serialize)]
struct TiersJson {
    customer: CustomerJson,
}

#[derive(Serialize)]
struct CustomerJson {
    id: String,
}

impl<'c> Renderer<'c> {
    /// The asset's JSON with the top-level fields `wanted` accepts, as a tree (what filters
    /// and orderings look at): a field nobody looks at is never built.
    fn asset(&self, asset: &'c Asset, wanted: &dyn Fn(&str) -> bool) -> Value {
        let fields: Map<String, Value> = AssetField::ALL
            .iter()
            .filter(|field| wanted(field.name()))
            .map(|field| {
                let value = serde_json::to_value(self.asset_field(asset, *field))
                    .expect("asset fields serialize");
                (field.name().to_string(), value)
            })
            .collect();
        Value::Object(fields)
    }

    fn asset_field(&self, asset: &'c Asset, field: AssetField) -> FieldJson<'c> {
        let catalogue = self.catalogue;
        let named = |account: &'c Account| NamedJson {
            id: &account.id,
            name: Some(&account.name),
        };
        let serial = asset.id.trim_start_matches("AS-");
        match field {
            AssetField::Id => FieldJson::Text(&asset.id),
            AssetField::Status => FieldJson::Text(&asset.status),
            AssetField::ExternalId => FieldJson::Text(&asset.external_id),
            AssetField::ExternalUid => FieldJson::Text(&asset.external_uid),
            AssetField::Product => FieldJson::Product(AssetProductJson {
                icon: format!("/media/{}/logo.png", asset.product_id),
                id: &asset.product_id,
                name: catalogue
                    .product(&asset.product_id)
                    .map(|p| p.name.as_str()),
                status: "published",
            }),
            AssetField::Connection => FieldJson::Connection(ConnectionJson {
                hub: NamedJson {
                    id: "HB-0000-0001",
                    name: Some("Simulated hub"),
                },
                id: format!("CT-{serial}"),
                provider: named(&catalogue.provider),
                kind: "production",
                vendor: named(&catalogue.vendor),
            }),
            AssetField::Marketplace => FieldJson::Marketplace(MarketplaceJson {
                icon: format!("/media/{}/icon.png", asset.marketplace_id),
                id: &asset.marketplace_id,
                name: catalogue
                    .marketplace(&asset.marketplace_id)
                    .map(|m| m.name.as_str()),
            }),
            AssetField::Contract => FieldJson::Contract(NamedJson {
                id: &asset.contract_id,
                name: catalogue
                    .contract(&asset.contract_id)
                    .map(|c| c.name.as_str()),
            }),
            AssetField::Items => FieldJson::Items(
                catalogue
                    .product(&asset.product_id)
                    .into_iter()
                    .flat_map(Product::ppu_items)
                    .map(|item| AssetItemJson {
                        display_name: &item.name,
                        global_id: &item.id,
                        id: &item.local_id,
                        item_type: "PPU",
                        mpn: &item.mpn,
                        period: "monthly",
                        quantity: "0",
                    })
                    .collect(),
            ),
            AssetField::Params => FieldJson::Params(
                asset
                    .params
                    .iter()
                    .map(|param| AssetParamJson {
                        constraints: ConstraintsJson {
                            hidden: false,
                            reconciliation: param.reconciliation,
                            required: true,
                            unique: param.reconciliation,
                        },
                        id: &param.id,
                        name: &param.id,
                        phase: "fulfillment",
                        scope: "asset",
                        title: &param.id,
                        kind: "text",
                        value: &param.value,
                    })
                    .collect(),
            ),
            AssetField::Tiers => FieldJson::Tiers(TiersJson {
                customer: CustomerJson {
                    id: format!("TA-{serial}"),
                },
            }),
            AssetField::Configuration => FieldJson::Configuration(ConfigurationJson { params: [] }),
        }
    }
}

/// An asset as `query`'s `select(-…)` shows it, serialized field by field: a field with paths
/// removed below it (`-params.value`) is built as a tree and projected, any other written out
/// whole or skipped.
pub(crate) struct ShownAsset<'c, 'q> {
    renderer: Renderer<'c>,
    asset: &'c Asset,
    query: &'q ListRequest,
}

impl Serialize for ShownAsset<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap};
        let mut out = serializer.serialize_map(None)?;
        for field in AssetField::ALL {
            let name = field.name();
            if !self.query.shows(name) {
                continue;
            }
            let json = self.renderer.asset_field(self.asset, field);
            if self.query.removes_below(name) {
                let tree = serde_json::to_value(&json).map_err(S::Error::custom)?;
                out.serialize_entry(name, &self.query.project_below(name, &tree))?;
            } else {
                out.serialize_entry(name, &json)?;
            }
        }
        out.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::SeedSpec;

    /// Every asset rendered up front and stored, as the REST side served them before assets
    /// were rendered on demand.
    fn stored_assets(catalogue: &Catalogue) -> Collection {
        let render = Renderer { catalogue };
        Collection::new(
            catalogue
                .assets
                .iter()
                .map(|a| render.asset(a, &|_| true))
                .collect(),
        )
    }

    /// (Content-Range, body) of a list answer over assets rendered on demand.
    fn on_demand(catalogue: &Catalogue, index: &AssetIndex, raw: &str) -> (String, String) {
        let query = ListRequest::parse(raw).unwrap();
        let (page, total) = query.select(
            index.candidates(&query),
            |at, wanted| Rendered::asset(catalogue, at as usize, wanted),
            100,
        );
        let shown = page
            .into_iter()
            .map(|at| Rendered::shown_asset(catalogue, at as usize, &query))
            .collect();
        let page = query.page_of(shown, total);
        (
            page.content_range(),
            serde_json::to_string(&page.items).unwrap(),
        )
    }

    #[test]
    fn assets_rendered_on_demand_answer_byte_for_byte_as_stored_ones() {
        let catalogue = Catalogue::generate(&SeedSpec {
            subscriptions: 400,
            ..SeedSpec::default()
        });
        let stored = stored_assets(&catalogue);
        let index = AssetIndex::of(&catalogue.assets);
        let asset = |at: usize| &catalogue.assets[at];
        let (a, b, c) = (asset(3), asset(150), asset(399));
        let queries = [
            String::new(),
            "limit=1000&offset=350".into(),
            "limit=0".into(),
            format!("in(id,({},{},{},AS-0000-0000-0000))", c.id, a.id, b.id),
            format!("eq(id,{})&select(-items,-params.value)", b.id),
            format!(
                "and(eq(contract.id,{}),eq(product.id,{}))&select(-configuration,-items,-tiers,-connection)&ordering(id)",
                a.contract_id, a.product_id
            ),
            format!("eq(contract.id,{})&ordering(-external_id)&limit=7&offset=3", b.contract_id),
            format!("in(external_id,({},{}))", a.external_id, c.external_id),
            format!("in(external_uid,({}))", b.external_uid),
            format!(
                "and(eq(params.id,tenant_id),in(params.value,({},{})))",
                a.param("tenant_id").unwrap(),
                c.param("tenant_id").unwrap()
            ),
            "and(eq(params.id,region),in(params.value,(eu)))&ordering(external_id)".into(),
            format!("eq(product.id,{})&eq(status,terminated)", c.product_id),
            "eq(status,terminated)&ordering(-id)&limit=5".into(),
            "search=EXT-00012".into(),
            "in(id,(AS-0000-0000-0000))".into(),
            // The runner's page: a hundred ids, the heavy parts removed.
            format!(
                "in(id,({}))&select(-configuration,-items,-tiers,-connection)",
                catalogue.assets[..100].iter().map(|a| a.id.as_str()).collect::<Vec<_>>().join(",")
            ),
            format!("in(id,({},{}))&select(-configuration)", a.id, c.id),
            format!("and(in(id,({},{})),eq(params.id,tenant_id))&select(-params,-configuration)&limit=10", a.id, b.id),
            // Removed fields the filter or ordering still reads; paths below a field.
            format!("eq(contract.id,{})&select(-contract,-items.mpn,-params.constraints.unique)&ordering(-product.id,id)", b.contract_id),
            "select(-id,-status,-external_id,-external_uid,-product,-marketplace,-contract,-params,-connection,-items,-tiers,-configuration)&limit=3".into(),
            "select(-product.name,-connection.vendor.id,-tiers.customer)&ordering(-marketplace.name)&limit=4".into(),
            "search=tenant&select(-external_id)&limit=2".into(),
        ];
        for raw in &queries {
            let query = ListRequest::parse(raw).unwrap();
            let page = query.apply(stored.candidates(&query), 100);
            let expected = (
                page.content_range(),
                serde_json::to_string(&page.items).unwrap(),
            );
            assert_eq!(on_demand(&catalogue, &index, raw), expected, "{raw}");
        }
        for asset in &catalogue.assets {
            let at = index
                .find(&catalogue, &asset.id)
                .expect("every asset is found");
            let query = ListRequest::parse("select(-tiers)").unwrap();
            assert_eq!(
                serde_json::to_string(&query.project(&Rendered::asset(&catalogue, at, &|_| true)))
                    .unwrap(),
                serde_json::to_string(&query.project(stored.get(&asset.id).unwrap())).unwrap()
            );
        }
        assert_eq!(index.find(&catalogue, "AS-0000-0000-0000"), None);
    }

    #[test]
    fn pinned_fields_narrow_the_candidates_to_a_superset_of_the_matches() {
        let catalogue = Catalogue::generate(&SeedSpec {
            subscriptions: 200,
            ..SeedSpec::default()
        });
        let index = AssetIndex::of(&catalogue.assets);
        let a = &catalogue.assets[10];
        let query = ListRequest::parse(&format!(
            "and(eq(contract.id,{}),eq(product.id,{}))",
            a.contract_id, a.product_id
        ))
        .unwrap();
        let candidates = index.candidates(&query);
        let on_pair: Vec<u32> = (0..catalogue.assets.len() as u32)
            .filter(|&at| {
                let asset = &catalogue.assets[at as usize];
                asset.contract_id == a.contract_id && asset.product_id == a.product_id
            })
            .collect();
        assert_eq!(candidates, on_pair);
        let query = ListRequest::parse(&format!("in(id,({},{}))", a.id, a.id)).unwrap();
        assert_eq!(index.candidates(&query), vec![10]);
        let everything = ListRequest::parse("eq(status,active)").unwrap();
        assert_eq!(index.candidates(&everything).len(), 200);
    }

    /// One asset as Connect's model has it, every field: the text the simulator has always
    /// served (rendered through `json!` trees before fields were written straight out).
    const ASSET_0: &str = r#"{"configuration":{"params":[]},"connection":{"hub":{"id":"HB-0000-0001","name":"Simulated hub"},"id":"CT-3968-1386-5407","provider":{"id":"PA-000-001","name":"Simulated Provider"},"type":"production","vendor":{"id":"VA-000-001","name":"Simulated Vendor"}},"contract":{"id":"CRD-81285-44974-99767","name":"distribution contract United States #1"},"external_id":"EXT-000001","external_uid":"3eccae03-43ca-4903-8f50-840f9bc3246c","id":"AS-3968-1386-5407","items":[{"display_name":"vCPU hours","global_id":"PRD-240-446-586-0001","id":"VCPU_HOURS","item_type":"PPU","mpn":"MPN-P1-VCPU-HOURS","period":"monthly","quantity":"0"},{"display_name":"Storage GB","global_id":"PRD-240-446-586-0002","id":"STORAGE_GB","item_type":"PPU","mpn":"MPN-P1-STORAGE-GB","period":"monthly","quantity":"0"},{"display_name":"Bandwidth TB","global_id":"PRD-240-446-586-0003","id":"BANDWIDTH_TB","item_type":"PPU","mpn":"MPN-P1-BANDWIDTH-TB","period":"monthly","quantity":"0"}],"marketplace":{"icon":"/media/MP-84245/icon.png","id":"MP-84245","name":"United States"},"params":[{"constraints":{"hidden":false,"reconciliation":true,"required":true,"unique":true},"id":"tenant_id","name":"tenant_id","phase":"fulfillment","scope":"asset","title":"tenant_id","type":"text","value":"tenant-00001"},{"constraints":{"hidden":false,"reconciliation":false,"required":true,"unique":false},"id":"region","name":"region","phase":"fulfillment","scope":"asset","title":"region","type":"text","value":"apac"}],"product":{"icon":"/media/PRD-240-446-586/logo.png","id":"PRD-240-446-586","name":"Cloud Service 1","status":"published"},"status":"active","tiers":{"customer":{"id":"TA-3968-1386-5407"}}}"#;

    #[test]
    fn an_asset_reads_as_it_always_has_as_a_tree_and_written_straight_out() {
        let catalogue = Catalogue::generate(&SeedSpec {
            subscriptions: 400,
            ..SeedSpec::default()
        });
        let tree = Rendered::asset(&catalogue, 0, &|_| true);
        assert_eq!(serde_json::to_string(&tree).unwrap(), ASSET_0);
        let everything = ListRequest::parse("").unwrap();
        let shown = Rendered::shown_asset(&catalogue, 0, &everything);
        assert_eq!(serde_json::to_string(&shown).unwrap(), ASSET_0);
    }

    #[test]
    fn every_asset_field_is_written_in_its_trees_key_order() {
        // A struct's keys out of order would still make the same tree, but not the same text.
        let catalogue = Catalogue::generate(&SeedSpec {
            subscriptions: 50,
            ..SeedSpec::default()
        });
        let render = Renderer {
            catalogue: &catalogue,
        };
        let names: Vec<&str> = AssetField::ALL.iter().map(|f| f.name()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        for asset in &catalogue.assets {
            for field in AssetField::ALL {
                let json = render.asset_field(asset, field);
                let direct = serde_json::to_string(&json).unwrap();
                let tree = serde_json::to_value(&json).unwrap();
                assert_eq!(
                    direct,
                    serde_json::to_string(&tree).unwrap(),
                    "{}",
                    field.name()
                );
            }
        }
    }
}
