//! What the simulated Connect account contains: marketplaces, contracts, products with their
//! items, and assets (subscriptions), as typed values plus their JSON renderings.
//!
//! Tests build or tweak a [`Catalogue`] and install it in the simulator; the REST side serves the
//! JSON renderings. The few marketplaces, contracts and products are rendered once per install;
//! assets (up to millions) are rendered when a page or a filter needs them, found through
//! [`AssetIndex`]: a JSON tree per asset held for the whole run was ~20 KiB a subscription,
//! more than the rest of a month's world together. The renderings follow Connect's published
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

    /// The asset's JSON with the top-level fields `wanted` accepts ([`ASSET_FIELDS`]): a
    /// field nobody looks at is never built (a page of assets without `items`, `connection`,
    /// `tiers` and `configuration` was half spent building and dropping them).
    fn asset(&self, asset: &Asset, wanted: &dyn Fn(&str) -> bool) -> Value {
        let fields: Map<String, Value> = ASSET_FIELDS
            .iter()
            .filter(|(name, _)| wanted(name))
            .map(|(name, render)| (name.to_string(), render(self, asset)))
            .collect();
        Value::Object(fields)
    }
}

/// How each top-level field of an asset is rendered, by name.
type AssetField = (&'static str, fn(&Renderer<'_>, &Asset) -> Value);

/// Every top-level field of an asset's JSON.
const ASSET_FIELDS: [AssetField; 12] = [
    ("id", |_, asset| json!(asset.id)),
    ("status", |_, asset| json!(asset.status)),
    ("external_id", |_, asset| json!(asset.external_id)),
    ("external_uid", |_, asset| json!(asset.external_uid)),
    ("product", |render, asset| {
        let product = render.catalogue.product(&asset.product_id);
        json!({
            "id": asset.product_id,
            "name": product.map(|p| p.name.as_str()),
            "icon": format!("/media/{}/logo.png", asset.product_id),
            "status": "published",
        })
    }),
    ("connection", |render, asset| {
        json!({
            "id": format!("CT-{}", asset.id.trim_start_matches("AS-")),
            "type": "production",
            "vendor": Renderer::account(&render.catalogue.vendor),
            "provider": Renderer::account(&render.catalogue.provider),
            "hub": {"id": "HB-0000-0001", "name": "Simulated hub"},
        })
    }),
    ("marketplace", |render, asset| {
        let marketplace = render.catalogue.marketplace(&asset.marketplace_id);
        json!({
            "id": asset.marketplace_id,
            "name": marketplace.map(|m| m.name.as_str()),
            "icon": format!("/media/{}/icon.png", asset.marketplace_id),
        })
    }),
    ("contract", |render, asset| {
        let contract = render.catalogue.contract(&asset.contract_id);
        json!({"id": asset.contract_id, "name": contract.map(|c| c.name.as_str())})
    }),
    ("items", |render, asset| {
        let items: Vec<Value> = render
            .catalogue
            .product(&asset.product_id)
            .into_iter()
            .flat_map(|product| product.ppu_items())
            .map(|item| {
                json!({"id": item.local_id, "global_id": item.id, "mpn": item.mpn,
                       "display_name": item.name, "item_type": "PPU", "period": "monthly",
                       "quantity": "0"})
            })
            .collect();
        Value::Array(items)
    }),
    ("params", |_, asset| {
        let params: Vec<Value> = asset
            .params
            .iter()
            .map(|param| {
                json!({"id": param.id, "name": param.id, "title": param.id, "type": "text",
                       "value": param.value, "scope": "asset", "phase": "fulfillment",
                       "constraints": {"required": true, "hidden": false,
                                       "unique": param.reconciliation,
                                       "reconciliation": param.reconciliation}})
            })
            .collect();
        Value::Array(params)
    }),
    (
        "tiers",
        |_, asset| json!({"customer": {"id": format!("TA-{}", asset.id.trim_start_matches("AS-"))}}),
    ),
    ("configuration", |_, _| json!({"params": []})),
];

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
        let (objects, total) = query.select(
            index.candidates(&query),
            |at, wanted| Rendered::asset(catalogue, at as usize, wanted),
            100,
        );
        let page = query.page_of(&objects, total);
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
}
