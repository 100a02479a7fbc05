//! Read helpers for the catalogue objects the monthly report needs: contracts, assets,
//! products and their PAYG items, marketplaces.

use super::client::{segment, ConnectClient};
use super::error::ConnectError;
use super::models::{Asset, Contract, Item, Marketplace, Product};
use super::{Query, Rql};

impl ConnectClient {
    /// Contracts matching `filter`, in id order (stable while paging).
    pub async fn contracts(&self, filter: Rql) -> Result<Vec<Contract>, ConnectError> {
        self.list_all("contracts", &Query::new(filter).ordering(["id"]))
            .await
    }

    /// Assets (subscriptions) matching `query`; keep `in(id,(…))` lists to about 100 ids.
    pub async fn assets(&self, query: Query) -> Result<Vec<Asset>, ConnectError> {
        self.list_all("assets", &query).await
    }

    pub async fn product(&self, id: &str) -> Result<Product, ConnectError> {
        self.get_json(&format!("products/{}", segment(id))).await
    }

    /// The product's Pay-As-You-Go items. Payloads spell the type `PPU` or `ppu`, so both are
    /// asked for and the answer is filtered again case-insensitively.
    pub async fn product_items(&self, id: &str) -> Result<Vec<Item>, ConnectError> {
        let path = format!("products/{}/items", segment(id));
        let items: Vec<Item> = self
            .list_all(&path, &Query::new(Rql::one_of("type", ["PPU", "ppu"])))
            .await?;
        Ok(items.into_iter().filter(Item::is_ppu).collect())
    }

    pub async fn marketplace(&self, id: &str) -> Result<Marketplace, ConnectError> {
        self.get_json(&format!("marketplaces/{}", segment(id)))
            .await
    }
}
