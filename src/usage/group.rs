//! From a stream of vendor records to groups ready for workbooks: local checks, resolution
//! against Connect, scope, item precision, and grouping by (contract, product).
//!
//! Every record ends in exactly one place: a group's rows, the bad list (with line and reason),
//! or an out-of-scope count. Nothing is aggregated and nothing is dropped silently.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use futures::StreamExt;

use crate::connect::ConnectError;
use crate::usage::period::Period;
use crate::usage::record::{BadReason, BadRecord, OutOfScope, RecordChecker, VendorRecord};
use crate::usage::resolve::{AssetMatch, Catalog, ResolvedAsset, ResolvedItem, ResolvedProduct};
use crate::usage::source::{RecordStream, SourceError};

/// One usage file's worth of records: a contract and a product in the reported month.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    pub contract_id: String,
    pub product_id: String,
}

impl GroupKey {
    /// The file's dedupe key on the platform: `<contract>:<product>:<YYYY-MM>`.
    pub fn external_id(&self, period: Period) -> String {
        format!("{}:{}:{}", self.contract_id, self.product_id, period)
    }

    /// Parses an external id this extension wrote; `None` for anything else.
    pub fn parse_external_id(external_id: &str) -> Option<(GroupKey, Period)> {
        let mut parts = external_id.split(':');
        let (contract, product, period) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !contract.starts_with("CRD-") || !product.starts_with("PRD-") {
            return None;
        }
        let period = Period::parse(period).ok()?;
        Some((
            GroupKey {
                contract_id: contract.to_string(),
                product_id: product.to_string(),
            },
            period,
        ))
    }
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} × {}", self.contract_id, self.product_id)
    }
}

#[derive(Debug, Clone)]
pub struct ReportRow {
    pub record: VendorRecord,
    pub asset: Arc<ResolvedAsset>,
    pub item: Arc<ResolvedItem>,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub key: GroupKey,
    pub product: Arc<ResolvedProduct>,
    /// The currency of the assets' marketplace; an error when they disagree.
    pub currency: Result<String, String>,
    pub rows: Vec<ReportRow>,
}

/// What one read of the source came to.
#[derive(Debug, Default)]
pub struct Collection {
    pub groups: BTreeMap<GroupKey, Group>,
    pub bad: Vec<BadRecord>,
    pub out_of_scope: BTreeMap<OutOfScope, u64>,
    pub records_read: u64,
}

impl Collection {
    pub fn bad_by_reason(&self) -> BTreeMap<BadReason, u64> {
        let mut counts = BTreeMap::new();
        for bad in &self.bad {
            *counts.entry(bad.reason).or_default() += 1;
        }
        counts
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("looking up usage objects in Connect failed: {0}")]
    Connect(#[from] ConnectError),
}

/// Reads the whole source for `period` and sorts every record into groups, bad or out of scope.
pub async fn collect(
    mut records: RecordStream,
    period: Period,
    catalog: &Catalog,
) -> Result<Collection, CollectError> {
    let mut collection = Collection::default();
    let mut checker = RecordChecker::new(period);
    let mut good: Vec<VendorRecord> = Vec::new();
    while let Some(item) = records.next().await {
        collection.records_read += 1;
        match item? {
            Ok(raw) => match checker.check(raw) {
                Ok(record) => good.push(record),
                Err(bad) => collection.bad.push(bad),
            },
            Err(bad) => collection.bad.push(bad),
        }
    }

    let assets = catalog
        .assets(good.iter().map(|r| r.subscription_id.to_string()))
        .await?;
    let contracts = catalog
        .active_distribution_contracts(assets.values().filter_map(|m| match m {
            AssetMatch::Found(asset) => Some(asset.contract_id.clone()),
            _ => None,
        }))
        .await?;
    let in_scope_contract = |asset: &ResolvedAsset| contracts.contains(&asset.contract_id);
    let products = catalog
        .products(assets.values().filter_map(|m| match m {
            AssetMatch::Found(asset) if in_scope_contract(asset) => Some(asset.product_id.clone()),
            _ => None,
        }))
        .await?;
    let products: HashMap<String, Arc<ResolvedProduct>> = products
        .into_iter()
        .map(|(id, p)| (id, Arc::new(p)))
        .collect();

    let mut rows: BTreeMap<GroupKey, Vec<ReportRow>> = BTreeMap::new();
    for record in good {
        let line = record.line;
        let asset = match &assets[&*record.subscription_id] {
            AssetMatch::Found(asset) => asset.clone(),
            AssetMatch::Unknown => {
                collection.bad.push(BadRecord::new(
                    line,
                    BadReason::UnknownSubscription,
                    format!(
                        "no asset matches subscription_id {:?}",
                        record.subscription_id
                    ),
                ));
                continue;
            }
            AssetMatch::Ambiguous(ids) => {
                collection.bad.push(BadRecord::new(
                    line,
                    BadReason::UnknownSubscription,
                    format!(
                        "subscription_id {:?} matches several assets: {}",
                        record.subscription_id,
                        ids.join(", ")
                    ),
                ));
                continue;
            }
        };
        if !in_scope_contract(&asset) {
            *collection
                .out_of_scope
                .entry(OutOfScope::ContractNotActiveDistribution)
                .or_default() += 1;
            continue;
        }
        let product = &products[&asset.product_id];
        if !product.qt {
            *collection
                .out_of_scope
                .entry(OutOfScope::ProductNotQt)
                .or_default() += 1;
            continue;
        }
        let Some(item) = product.items.get(&*record.item) else {
            collection.bad.push(BadRecord::new(
                line,
                BadReason::UnknownItem,
                format!(
                    "item {:?} is not a PAYG item of product {}",
                    record.item, product.id
                ),
            ));
            continue;
        };
        if let Err(reason) = record.quantity.fits(item.precision) {
            collection.bad.push(BadRecord::new(
                line,
                reason,
                format!(
                    "quantity {} does not fit the item's precision {:?}",
                    record.quantity, item.precision
                ),
            ));
            continue;
        }
        let key = GroupKey {
            contract_id: asset.contract_id.clone(),
            product_id: asset.product_id.clone(),
        };
        rows.entry(key).or_default().push(ReportRow {
            item: item.clone(),
            asset,
            record,
        });
    }

    let marketplaces: BTreeSet<String> = rows
        .values()
        .flatten()
        .map(|row| row.asset.marketplace_id.clone())
        .collect();
    let currencies = catalog.currencies(marketplaces).await?;
    for (key, rows) in rows {
        let found: BTreeSet<&String> = rows
            .iter()
            .filter_map(|row| currencies.get(&row.asset.marketplace_id))
            .collect();
        let currency = match found.len() {
            1 => Ok(found.into_iter().next().expect("one").clone()),
            0 => Err("the assets' marketplace has no currency".to_string()),
            _ => Err(format!(
                "the assets span marketplaces with different currencies ({}); one usage file holds one currency",
                found.into_iter().cloned().collect::<Vec<_>>().join(", ")
            )),
        };
        collection.groups.insert(
            key.clone(),
            Group {
                product: products[&key.product_id].clone(),
                key,
                currency,
                rows,
            },
        );
    }
    collection.bad.sort_by_key(|bad| bad.line);
    Ok(collection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_round_trip_and_foreign_ones_are_refused() {
        let key = GroupKey {
            contract_id: "CRD-1".into(),
            product_id: "PRD-2".into(),
        };
        let period = Period::parse("2024-12").unwrap();
        let id = key.external_id(period);
        assert_eq!(id, "CRD-1:PRD-2:2024-12");
        assert_eq!(GroupKey::parse_external_id(&id), Some((key, period)));
        for foreign in [
            "",
            "CRD-1:PRD-2",
            "CRD-1:PRD-2:2024-13",
            "X:PRD-2:2024-01",
            "CRD-1:PRD-2:2024-01:x",
        ] {
            assert_eq!(GroupKey::parse_external_id(foreign), None, "{foreign}");
        }
    }
}
