//! Deterministic test worlds: a [`SeedSpec`] and a `u64` seed always give the same
//! [`Catalogue`], with the awkward cases a real account has — inactive and non-distribution
//! contracts, a TR product, a product without pay-as-you-go, terminated assets, several
//! marketplaces and currencies, items of mixed precision and a reservation item beside the PPU
//! ones.

use std::collections::{BTreeSet, HashSet};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::catalogue::{Asset, AssetParam, Catalogue, Contract, Item, Marketplace, Product};

/// The shape of a generated world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SeedSpec {
    pub seed: u64,
    /// Active distribution contracts (marketplaces assigned round robin).
    pub contracts: usize,
    /// Distribution contracts that are not active (terminated, pending, enrolling).
    pub inactive_contracts: usize,
    /// Active contracts of other types (program, service, syndication, referral).
    pub other_contracts: usize,
    /// QT products. One TR product and one product without PPU are always added.
    pub products: usize,
    pub marketplaces: usize,
    /// Assets, spread over (contract, product); about one in six on an out-of-scope pair.
    pub subscriptions: usize,
    /// Share of assets that are terminated (terminated assets stay in scope).
    pub terminated_share: f64,
}

impl Default for SeedSpec {
    fn default() -> Self {
        SeedSpec {
            seed: 1,
            contracts: 3,
            inactive_contracts: 1,
            other_contracts: 1,
            products: 2,
            marketplaces: 3,
            subscriptions: 40,
            terminated_share: 0.15,
        }
    }
}

/// What a seed produced, for logs and sanity checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedSummary {
    pub contracts: usize,
    pub products: usize,
    pub marketplaces: usize,
    pub assets: usize,
    pub in_scope_assets: usize,
    /// (contract, product) pairs holding at least one in-scope asset.
    pub groups: usize,
}

impl SeedSummary {
    pub fn of(catalogue: &Catalogue) -> Self {
        let in_scope: Vec<&Asset> = catalogue
            .assets
            .iter()
            .filter(|asset| catalogue.in_scope(asset))
            .collect();
        let groups: BTreeSet<(&str, &str)> = in_scope
            .iter()
            .map(|asset| (asset.contract_id.as_str(), asset.product_id.as_str()))
            .collect();
        SeedSummary {
            contracts: catalogue.contracts.len(),
            products: catalogue.products.len(),
            marketplaces: catalogue.marketplaces.len(),
            assets: catalogue.assets.len(),
            in_scope_assets: in_scope.len(),
            groups: groups.len(),
        }
    }
}

const MARKETPLACES: [(&str, &str, &str); 7] = [
    ("United States", "USD", "NA"),
    ("Germany", "EUR", "EU"),
    ("India", "INR", "AS"),
    ("United Kingdom", "GBP", "EU"),
    ("Japan", "JPY", "AS"),
    ("Brazil", "BRL", "SA"),
    ("Australia", "AUD", "OC"),
];

/// (local id, name, precision, unit). The first two go on every QT product so each has an
/// integer and a decimal(2) item.
const PPU_ITEMS: [(&str, &str, &str, &str); 5] = [
    ("VCPU_HOURS", "vCPU hours", "integer", "unit-h"),
    ("STORAGE_GB", "Storage GB", "decimal(2)", "gb"),
    ("API_CALLS", "API calls", "integer", "unit"),
    ("BANDWIDTH_TB", "Bandwidth TB", "decimal(4)", "tb"),
    ("LICENSE_DAYS", "License days", "decimal(1)", "day"),
];

const OTHER_CONTRACT_TYPES: [&str; 4] = ["program", "service", "syndication", "referral"];
const INACTIVE_STATUSES: [&str; 3] = ["terminated", "pending", "enrolling"];
const REGIONS: [&str; 3] = ["eu", "us", "apac"];

impl Catalogue {
    /// The world described by `spec`; the same spec always gives the same catalogue.
    pub fn generate(spec: &SeedSpec) -> Catalogue {
        Generator {
            rng: StdRng::seed_from_u64(spec.seed),
            issued: HashSet::new(),
        }
        .catalogue(spec)
    }
}

struct Generator {
    rng: StdRng,
    issued: HashSet<String>,
}

impl Generator {
    fn catalogue(mut self, spec: &SeedSpec) -> Catalogue {
        let marketplaces: Vec<Marketplace> = (0..spec.marketplaces.max(1))
            .map(|index| self.marketplace(index))
            .collect();
        let kinds = (0..spec.contracts)
            .map(|index| (index, "distribution", "active"))
            .chain((0..spec.inactive_contracts).map(|index| {
                let status = INACTIVE_STATUSES[index % INACTIVE_STATUSES.len()];
                (index, "distribution", status)
            }))
            .chain((0..spec.other_contracts).map(|index| {
                let kind = OTHER_CONTRACT_TYPES[index % OTHER_CONTRACT_TYPES.len()];
                (index, kind, "active")
            }));
        let contracts = kinds
            .map(|(index, kind, status)| {
                let marketplace = &marketplaces[index % marketplaces.len()];
                self.contract(marketplace, index, kind, status)
            })
            .collect();
        let mut products: Vec<Product> = (0..spec.products).map(|i| self.qt_product(i)).collect();
        products.push(self.tr_product(spec.products));
        products.push(self.product_without_ppu(spec.products + 1));
        let mut catalogue = Catalogue {
            marketplaces,
            contracts,
            products,
            ..Catalogue::default()
        };
        catalogue.assets = self.assets(&catalogue, spec);
        catalogue
    }

    /// An id of the given shape not issued before in this world.
    fn unique(&mut self, shape: impl Fn(&mut StdRng) -> String) -> String {
        loop {
            let id = shape(&mut self.rng);
            if self.issued.insert(id.clone()) {
                return id;
            }
        }
    }

    fn marketplace(&mut self, index: usize) -> Marketplace {
        let (name, currency, zone) = MARKETPLACES[index % MARKETPLACES.len()];
        let round = index / MARKETPLACES.len();
        let name = match round {
            0 => name.to_string(),
            n => format!("{name} {}", n + 1),
        };
        Marketplace {
            id: self.unique(|rng| format!("MP-{:05}", rng.random_range(10000..100000))),
            name,
            currency: currency.into(),
            zone: zone.into(),
        }
    }

    fn contract(
        &mut self,
        marketplace: &Marketplace,
        index: usize,
        kind: &str,
        status: &str,
    ) -> Contract {
        let id = self.unique(|rng| {
            let mut group = || rng.random_range(10000..100000);
            format!("CRD-{:05}-{:05}-{:05}", group(), group(), group())
        });
        Contract {
            id,
            name: format!("{kind} contract {} #{}", marketplace.name, index + 1),
            contract_type: kind.into(),
            status: status.into(),
            marketplace_id: marketplace.id.clone(),
        }
    }

    fn product_id(&mut self) -> String {
        self.unique(|rng| {
            let mut group = || rng.random_range(100..1000);
            format!("PRD-{:03}-{:03}-{:03}", group(), group(), group())
        })
    }

    fn qt_product(&mut self, index: usize) -> Product {
        let id = self.product_id();
        let extra = self.rng.random_range(1..=PPU_ITEMS.len() - 2);
        let mut templates: Vec<_> = PPU_ITEMS[..2].to_vec();
        templates.extend(PPU_ITEMS[2..].choose_multiple(&mut self.rng, extra));
        let code = format!("P{}", index + 1);
        let mut items: Vec<Item> = templates
            .iter()
            .enumerate()
            .map(|(n, template)| ppu_item(&id, &code, n, *template))
            .collect();
        items.push(reservation_item(&id, &code, items.len()));
        Product {
            id,
            name: format!("Cloud Service {}", index + 1),
            ppu_schema: Some("QT".into()),
            items,
        }
    }

    fn tr_product(&mut self, index: usize) -> Product {
        let id = self.product_id();
        let code = format!("P{}", index + 1);
        let items = PPU_ITEMS[..2]
            .iter()
            .enumerate()
            .map(|(n, template)| ppu_item(&id, &code, n, *template))
            .collect();
        Product {
            id,
            name: "Tiered Rating Service".into(),
            ppu_schema: Some("TR".into()),
            items,
        }
    }

    fn product_without_ppu(&mut self, index: usize) -> Product {
        let id = self.product_id();
        let code = format!("P{}", index + 1);
        Product {
            items: vec![reservation_item(&id, &code, 0)],
            id,
            name: "Licences Only".into(),
            ppu_schema: None,
        }
    }

    /// The first assets cover every out-of-scope case `spec` allows; the rest are mostly in
    /// scope, with an occasional random (contract, product) pair.
    fn assets(&mut self, catalogue: &Catalogue, spec: &SeedSpec) -> Vec<Asset> {
        let active: Vec<&Contract> = catalogue
            .contracts
            .iter()
            .filter(|c| c.is_active_distribution())
            .collect();
        let qt: Vec<&Product> = catalogue.products.iter().filter(|p| p.is_qt()).collect();
        let mut specials: Vec<(&Contract, &Product)> = Vec::new();
        if let (Some(contract), Some(qt_product)) = (active.first(), qt.first()) {
            let others = catalogue
                .contracts
                .iter()
                .filter(|c| !c.is_active_distribution());
            specials.extend(others.map(|other| (other, *qt_product)));
            let not_qt = catalogue.products.iter().filter(|p| !p.is_qt());
            specials.extend(not_qt.map(|product| (*contract, product)));
        }
        if catalogue.contracts.is_empty() {
            return Vec::new();
        }
        (0..spec.subscriptions)
            .map(|index| {
                let (contract, product) = match specials.get(index) {
                    Some(pair) => *pair,
                    None if !active.is_empty() && !qt.is_empty() && self.rng.random_ratio(5, 6) => {
                        (
                            *active.choose(&mut self.rng).expect("not empty"),
                            *qt.choose(&mut self.rng).expect("not empty"),
                        )
                    }
                    None => (
                        catalogue
                            .contracts
                            .choose(&mut self.rng)
                            .expect("not empty"),
                        catalogue.products.choose(&mut self.rng).expect("not empty"),
                    ),
                };
                // The first asset after the specials is terminated, so every world has one.
                let terminated = spec.terminated_share > 0.0
                    && (index == specials.len()
                        || self.rng.random_bool(spec.terminated_share.min(1.0)));
                self.asset(index, contract, product, terminated)
            })
            .collect()
    }

    fn asset(
        &mut self,
        index: usize,
        contract: &Contract,
        product: &Product,
        terminated: bool,
    ) -> Asset {
        let id = self.unique(|rng| {
            let mut group = || rng.random_range(1000..10000);
            format!("AS-{:04}-{:04}-{:04}", group(), group(), group())
        });
        let uid_bits: u128 = self.rng.random();
        let external_uid = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (uid_bits >> 96) as u32,
            (uid_bits >> 80) as u16,
            (uid_bits >> 68) as u16 & 0xfff,
            (uid_bits >> 56) as u16 & 0xfff,
            uid_bits as u64 & 0xffff_ffff_ffff
        );
        let region = *REGIONS.choose(&mut self.rng).expect("not empty");
        Asset {
            id,
            status: if terminated { "terminated" } else { "active" }.into(),
            external_id: format!("EXT-{:06}", index + 1),
            external_uid,
            product_id: product.id.clone(),
            contract_id: contract.id.clone(),
            marketplace_id: contract.marketplace_id.clone(),
            params: vec![
                AssetParam {
                    id: "tenant_id".into(),
                    value: format!("tenant-{:05}", index + 1),
                    reconciliation: true,
                },
                AssetParam {
                    id: "region".into(),
                    value: region.into(),
                    reconciliation: false,
                },
            ],
        }
    }
}

fn ppu_item(
    product_id: &str,
    product_code: &str,
    position: usize,
    (local_id, name, precision, unit): (&str, &str, &str, &str),
) -> Item {
    Item {
        id: format!("{product_id}-{:04}", position + 1),
        local_id: local_id.into(),
        mpn: format!("MPN-{product_code}-{}", local_id.replace('_', "-")),
        name: name.into(),
        item_type: "ppu".into(),
        precision: precision.into(),
        unit: unit.into(),
    }
}

fn reservation_item(product_id: &str, product_code: &str, position: usize) -> Item {
    Item {
        id: format!("{product_id}-{:04}", position + 1),
        local_id: "SEATS".into(),
        mpn: format!("MPN-{product_code}-SEATS"),
        name: "Seats".into(),
        item_type: "reservation".into(),
        precision: "integer".into(),
        unit: "unit".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_world() {
        let spec = SeedSpec::default();
        assert_eq!(Catalogue::generate(&spec), Catalogue::generate(&spec));
        let other = SeedSpec { seed: 2, ..spec };
        assert_ne!(
            Catalogue::generate(&other).assets,
            Catalogue::generate(&SeedSpec::default()).assets
        );
    }

    #[test]
    fn every_awkward_case_is_present() {
        let catalogue = Catalogue::generate(&SeedSpec::default());
        let summary = SeedSummary::of(&catalogue);
        assert_eq!(summary.contracts, 5);
        assert_eq!(summary.products, 4);
        assert!(summary.in_scope_assets < summary.assets);
        assert!(catalogue.products.iter().any(|p| p.ppu_schema.is_none()));
        assert!(catalogue
            .products
            .iter()
            .any(|p| p.ppu_schema.as_deref() == Some("TR")));
        assert!(catalogue
            .assets
            .iter()
            .any(|a| a.status == "terminated" && catalogue.in_scope(a)));
        for product in catalogue.products.iter().filter(|p| p.is_qt()) {
            let precisions: Vec<&str> = product.ppu_items().map(|i| i.precision.as_str()).collect();
            assert!(precisions.contains(&"integer") && precisions.contains(&"decimal(2)"));
            assert!(product.items.iter().any(|i| !i.is_ppu()));
        }
        let currencies: HashSet<&str> = catalogue
            .marketplaces
            .iter()
            .map(|m| m.currency.as_str())
            .collect();
        assert_eq!(currencies.len(), 3);
        for asset in &catalogue.assets {
            let contract = catalogue.contract(&asset.contract_id).unwrap();
            assert_eq!(asset.marketplace_id, contract.marketplace_id);
        }
    }
}
