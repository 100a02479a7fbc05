//! What Connect knows about the records of a run: assets, products and their PAYG items,
//! contracts and marketplace currencies.
//!
//! Each object is asked for once per run, never once per record: assets in batches of
//! [`BATCH`] ids with RQL `in()`, contracts likewise, products and marketplaces one request per
//! distinct id. Batches run concurrently; the client's own limit (`API_CONCURRENCY`) bounds how
//! many requests are in flight.
//!
//! A rebuild of one group's file needs only that group's assets: a resolver
//! [scoped](Resolver::scoped_to) to a contract × product lists them (paged) and resolves the
//! month's subscriptions against that list locally. An asset is resolved from the list exactly
//! as from an id lookup (the same fields of the same object); only when records name assets by
//! something other than their id may another group's asset share the name, so then the names
//! found in the list are still looked up across the account to see such ambiguities.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};

use crate::config::{AssetCriteria, ItemCriteria};
use crate::connect::models::{Asset, Item};
use crate::connect::{ConnectClient, ConnectError, Query, Rql};
use crate::usage::interner::Interner;
use crate::usage::workbook::Precision;

/// Values per `in()` list: Connect advises about 100 per request to stay clear of URL limits.
pub const BATCH: usize = 100;

/// An asset as the workbook needs it. Held for every subscription of the month, so the ids
/// many assets share (contract, product, marketplace, criteria) are shared copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedAsset {
    pub id: Box<str>,
    pub contract_id: Arc<str>,
    pub product_id: Arc<str>,
    pub marketplace_id: Arc<str>,
    /// `(asset_search_criteria, asset_search_value)` written to the workbook.
    pub search: (Arc<str>, Box<str>),
    /// The value of the asset's reconciliation parameter, if it has one.
    pub recon_id: Option<Box<str>>,
}

/// A PAYG item as the workbook needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedItem {
    pub precision: Precision,
    /// `(item_search_criteria, item_search_value)` written to the workbook.
    pub search: (String, String),
}

/// A product's reporting facts.
#[derive(Debug, Clone)]
pub struct ResolvedProduct {
    pub id: String,
    pub qt: bool,
    /// PPU items keyed by the value vendor records use (`ITEM_SEARCH_CRITERIA`); looked up
    /// once a record, so hashed with foldhash (std's SipHash was ~0.7% of a 10M-record run).
    pub items: foldhash::HashMap<String, Arc<ResolvedItem>>,
}

/// How a subscription id resolved.
#[derive(Debug, Clone)]
pub enum AssetMatch {
    Found(Arc<ResolvedAsset>),
    Unknown,
    Ambiguous(Vec<String>),
}

/// Looks objects up in Connect for one run.
#[derive(Clone)]
pub struct Resolver {
    client: ConnectClient,
    asset_criteria: AssetCriteria,
    item_criteria: ItemCriteria,
    concurrency: usize,
    /// Set for a rebuild: the only assets the run may resolve to.
    scope: Option<Arc<Scope>>,
}

/// The assets of one contract × product, by the value vendor records name them with.
#[derive(Debug, Default)]
struct Scope {
    assets: HashMap<String, Vec<ResolvedAsset>>,
}

/// The asset projection every asset page asks for: the runner keeps ids, parameters and the
/// three references; the rest of an asset (items, tiers, connection, configuration) is most of
/// each page's bytes.
const ASSET_SELECT: [&str; 4] = ["-configuration", "-items", "-tiers", "-connection"];

fn batches(ids: impl IntoIterator<Item = String>) -> Vec<Vec<String>> {
    let ids: BTreeSet<String> = ids.into_iter().collect();
    let ids: Vec<String> = ids.into_iter().collect();
    ids.chunks(BATCH).map(<[String]>::to_vec).collect()
}

impl Resolver {
    pub fn new(
        client: ConnectClient,
        asset_criteria: AssetCriteria,
        item_criteria: ItemCriteria,
        concurrency: usize,
    ) -> Self {
        Resolver {
            client,
            asset_criteria,
            item_criteria,
            concurrency: concurrency.max(1),
            scope: None,
        }
    }

    /// This resolver limited to the assets of `contract_id` × `product_id` (listed here, every
    /// page): subscriptions that name none of them resolve as unknown without a request.
    pub async fn scoped_to(
        &self,
        contract_id: &str,
        product_id: &str,
    ) -> Result<Resolver, ConnectError> {
        // Ordered by id: a group of many pages is paged through while assets may be added.
        let query = Query::new(Rql::all([
            Rql::eq("contract.id", contract_id),
            Rql::eq("product.id", product_id),
        ]))
        .select(ASSET_SELECT)
        .ordering(["id"]);
        let mut names = Interner::default();
        let mut scope = Scope::default();
        for asset in self.client.assets(query).await? {
            let Some(key) = self.subscription_key(&asset) else {
                continue;
            };
            let asset = self.resolved(asset, &mut names);
            let entry = scope.assets.entry(key).or_default();
            if !entry.iter().any(|a| a.id == asset.id) {
                entry.push(asset);
            }
        }
        Ok(Resolver {
            scope: Some(Arc::new(scope)),
            ..self.clone()
        })
    }

    /// Whether a record naming `subscription_id` may belong to this resolver's scope (always,
    /// when it has none).
    pub fn may_resolve(&self, subscription_id: &str) -> bool {
        self.scope
            .as_ref()
            .is_none_or(|scope| scope.assets.contains_key(subscription_id))
    }

    /// Runs `lookup` over every batch concurrently and merges the answers.
    async fn per_batch<T, F, Fut>(
        &self,
        ids: impl IntoIterator<Item = String>,
        lookup: F,
    ) -> Result<Vec<T>, ConnectError>
    where
        F: Fn(Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<T>, ConnectError>>,
    {
        let results: Vec<Vec<T>> = futures::stream::iter(batches(ids).into_iter().map(lookup))
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        Ok(results.into_iter().flatten().collect())
    }

    /// The value of `asset` that vendor records use to name it.
    fn subscription_key(&self, asset: &Asset) -> Option<String> {
        match &self.asset_criteria {
            AssetCriteria::Id => Some(asset.id.clone()),
            AssetCriteria::ExternalId => asset.external_id.clone(),
            AssetCriteria::ExternalUid => asset.external_uid.clone(),
            AssetCriteria::Parameter(name) => asset
                .params
                .iter()
                .find(|p| &p.id == name)
                .and_then(|p| p.value.clone()),
        }
    }

    fn asset_filter(&self, values: Vec<String>) -> Rql {
        match &self.asset_criteria {
            AssetCriteria::Id => Rql::one_of("id", values),
            AssetCriteria::ExternalId => Rql::one_of("external_id", values),
            AssetCriteria::ExternalUid => Rql::one_of("external_uid", values),
            AssetCriteria::Parameter(name) => Rql::all([
                Rql::eq("params.id", name.clone()),
                Rql::one_of("params.value", values),
            ]),
        }
    }

    /// What the workbook names the asset by. `asset.external_id`/`external_uid` are not
    /// confirmed spreadsheet criteria on the platform, so those configurations write `asset.id`.
    fn workbook_search(&self, asset: &Asset) -> (String, String) {
        match &self.asset_criteria {
            AssetCriteria::Parameter(name) => match asset.params.iter().find(|p| &p.id == name) {
                Some(param) if param.value.is_some() => (
                    format!("parameter.{name}"),
                    param.value.clone().unwrap_or_default(),
                ),
                _ => ("asset.id".into(), asset.id.clone()),
            },
            _ => ("asset.id".into(), asset.id.clone()),
        }
    }

    /// Resolves subscription ids (as vendor records name them) to assets; within the scope
    /// when there is one.
    pub async fn assets(
        &self,
        subscription_ids: impl IntoIterator<Item = String>,
    ) -> Result<HashMap<String, AssetMatch>, ConnectError> {
        let wanted: HashSet<String> = subscription_ids.into_iter().collect();
        let Some(scope) = &self.scope else {
            return self.look_up_assets(wanted).await;
        };
        let (inside, outside): (HashSet<String>, HashSet<String>) = wanted
            .into_iter()
            .partition(|id| scope.assets.contains_key(id));
        // An id names one asset, so the scope's answer is the account's; any other name may
        // also be another group's asset's, which only the account-wide lookup sees.
        let mut matches = match self.asset_criteria {
            AssetCriteria::Id => inside
                .into_iter()
                .map(|id| {
                    let found = match scope.assets[&id].as_slice() {
                        [asset] => AssetMatch::Found(Arc::new(asset.clone())),
                        assets => {
                            AssetMatch::Ambiguous(assets.iter().map(|a| a.id.to_string()).collect())
                        }
                    };
                    (id, found)
                })
                .collect(),
            _ => self.look_up_assets(inside).await?,
        };
        matches.extend(outside.into_iter().map(|id| (id, AssetMatch::Unknown)));
        Ok(matches)
    }

    /// Resolves `wanted` across the account, in `in()` batches.
    async fn look_up_assets(
        &self,
        wanted: HashSet<String>,
    ) -> Result<HashMap<String, AssetMatch>, ConnectError> {
        let names = Mutex::new(Interner::default());
        // Each page is boiled down to what the report keeps as soon as it arrives: full asset
        // models (items, parameters) for every subscription at once would be most of the
        // report's peak memory.
        let found = self
            .per_batch(wanted.iter().cloned(), |batch| {
                let query = Query::new(self.asset_filter(batch)).select(ASSET_SELECT);
                let client = self.client.clone();
                let (wanted, names) = (&wanted, &names);
                async move {
                    let assets = client.assets(query).await?;
                    let mut names = names.lock().expect("not poisoned");
                    Ok(assets
                        .into_iter()
                        .filter_map(|asset| {
                            let key = self
                                .subscription_key(&asset)
                                .filter(|k| wanted.contains(k))?;
                            Some((key, self.resolved(asset, &mut names)))
                        })
                        .collect())
                }
            })
            .await?;
        let mut matches: HashMap<String, Vec<ResolvedAsset>> = HashMap::new();
        for (key, asset) in found {
            let entry = matches.entry(key).or_default();
            if !entry.iter().any(|a| a.id == asset.id) {
                entry.push(asset);
            }
        }
        Ok(wanted
            .into_iter()
            .map(|key| {
                let resolved = match matches.remove(&key) {
                    None => AssetMatch::Unknown,
                    Some(mut assets) if assets.len() == 1 => {
                        AssetMatch::Found(Arc::new(assets.pop().expect("one asset")))
                    }
                    Some(assets) => {
                        AssetMatch::Ambiguous(assets.into_iter().map(|a| a.id.into()).collect())
                    }
                };
                (key, resolved)
            })
            .collect())
    }

    fn resolved(&self, asset: Asset, names: &mut Interner) -> ResolvedAsset {
        let (criteria, value) = self.workbook_search(&asset);
        ResolvedAsset {
            search: (names.shared(&criteria), value.into()),
            recon_id: asset
                .reconciliation_param()
                .and_then(|p| p.value.as_deref())
                .map(Into::into),
            id: asset.id.into(),
            contract_id: names.shared(&asset.contract.id),
            product_id: names.shared(&asset.product.id),
            marketplace_id: names.shared(&asset.marketplace.id),
        }
    }

    fn item_key(&self, item: &Item) -> Option<String> {
        match self.item_criteria {
            ItemCriteria::Mpn => item.mpn.clone(),
            ItemCriteria::LocalId => item.local_id.clone(),
            ItemCriteria::Id => Some(item.id.clone()),
        }
    }

    /// The workbook names items by MPN, or by local id when so configured; `item.id` is not a
    /// confirmed spreadsheet criteria on the platform, so it is written as the MPN.
    fn item_search(&self, item: &Item) -> Option<(String, String)> {
        match self.item_criteria {
            ItemCriteria::LocalId => item
                .local_id
                .clone()
                .map(|v| ("item.local_id".to_string(), v)),
            _ => item.mpn.clone().map(|v| ("item.mpn".to_string(), v)),
        }
    }

    /// Products with their PPU items; a product whose items cannot be read fails the run.
    pub async fn products(
        &self,
        ids: impl IntoIterator<Item = String>,
    ) -> Result<HashMap<String, ResolvedProduct>, ConnectError> {
        let ids: BTreeSet<String> = ids.into_iter().collect();
        let products: Vec<ResolvedProduct> = futures::stream::iter(ids)
            .map(|id| async move {
                let product = self.client.product(&id).await?;
                let qt = product.is_qt();
                let mut items = foldhash::HashMap::default();
                if qt {
                    for item in self.client.product_items(&id).await?.into_iter().filter(Item::is_ppu) {
                        let (Some(key), Some(search)) = (self.item_key(&item), self.item_search(&item)) else {
                            continue;
                        };
                        let Ok(precision) = Precision::parse(item.precision.as_deref().unwrap_or("decimal(8)")) else {
                            tracing::warn!(item = %item.id, precision = ?item.precision, "item has an unknown precision; records for it will be refused");
                            continue;
                        };
                        items.insert(key, Arc::new(ResolvedItem { precision, search }));
                    }
                }
                Ok::<_, ConnectError>(ResolvedProduct { id, qt, items })
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        Ok(products.into_iter().map(|p| (p.id.clone(), p)).collect())
    }

    /// Which of `ids` are active distribution contracts.
    pub async fn active_distribution_contracts(
        &self,
        ids: impl IntoIterator<Item = String>,
    ) -> Result<HashSet<String>, ConnectError> {
        let contracts = self
            .per_batch(ids, |batch| {
                let filter = Rql::all([
                    Rql::one_of("id", batch),
                    Rql::one_of("type", ["distribution"]),
                    Rql::one_of("status", ["active"]),
                ]);
                let client = self.client.clone();
                async move { client.contracts(filter).await }
            })
            .await?;
        Ok(contracts.into_iter().map(|c| c.id).collect())
    }

    /// Currency of each marketplace.
    pub async fn currencies(
        &self,
        marketplace_ids: impl IntoIterator<Item = String>,
    ) -> Result<HashMap<String, String>, ConnectError> {
        let ids: BTreeSet<String> = marketplace_ids.into_iter().collect();
        futures::stream::iter(ids)
            .map(|id| async move {
                let marketplace = self.client.marketplace(&id).await?;
                Ok::<_, ConnectError>(marketplace.currency.map(|currency| (id, currency)))
            })
            .buffer_unordered(self.concurrency)
            .try_filter_map(|found| async move { Ok(found) })
            .try_collect()
            .await
    }
}
