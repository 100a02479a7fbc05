//! The simulator's shared state and its in-process control surface: the installed catalogue,
//! usage files, served vendor usage, webhooks received, request counts, faults and the
//! usage-file event channel.
//!
//! Tests and the sandbox drive the simulator through these methods; the `/_sim/` HTTP routes
//! are thin wrappers over the same calls. Usage-file operations live in `files.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::catalogue::{Asset, Catalogue, Rendered};
use super::faults::{FaultInjector, Faults};
use super::seed::{SeedSpec, SeedSummary};
use super::storage::Storage;
use super::usage_file::UsageFile;
use super::vendor_usage::{BadRowSpec, UsageFormat, VendorUsage, VendorUsageError};
use super::SimConfig;
use payg_shared::period::Period;
use payg_shared::FileStatus;

/// Sent on every usage-file status change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEvent {
    pub file_id: String,
    pub status: FileStatus,
}

/// Requests served on `/public/v1`, by (method, route template) such as
/// `("POST", "/usage/files/{id}/upload")`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCounts {
    pub total: u64,
    pub by_route: BTreeMap<(String, String), u64>,
}

impl RequestCounts {
    pub fn get(&self, method: &str, route: &str) -> u64 {
        self.by_route
            .get(&(method.to_string(), route.to_string()))
            .copied()
            .unwrap_or(0)
    }

    pub fn to_json(&self) -> Value {
        let routes: Vec<Value> = self
            .by_route
            .iter()
            .map(|((method, route), count)| json!({"method": method, "route": route, "count": count}))
            .collect();
        json!({"total": self.total, "routes": routes})
    }
}

/// Vendor usage served at `GET /_sim/usage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedUsage {
    pub body: String,
    pub format: UsageFormat,
}

/// A usage file as the sandbox prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSummary {
    pub id: String,
    pub external_id: Option<String>,
    pub contract_id: String,
    pub product_id: String,
    pub status: FileStatus,
    /// Every status the file went through, in order.
    pub history: Vec<FileStatus>,
    pub records: u64,
    pub error_detail: Option<String>,
    pub rejection_note: Option<String>,
    pub acceptance_note: Option<String>,
}

/// The installed catalogue with its JSON renderings.
pub(crate) struct World {
    pub catalogue: Catalogue,
    pub rendered: Rendered,
    /// Positions in `catalogue.assets` by (contract, product): every upload is checked against
    /// the assets of its pair, and scanning ten thousand assets per upload (under the state
    /// lock) made the simulator, not the extension, the slow side of a benchmark.
    assets_by_pair: HashMap<(String, String), Vec<usize>>,
}

impl World {
    /// The assets on one (contract, product) pair, whatever their status, in catalogue order.
    pub fn assets_on<'a>(
        &'a self,
        contract_id: &str,
        product_id: &str,
    ) -> impl Iterator<Item = &'a Asset> + 'a {
        self.assets_by_pair
            .get(&(contract_id.to_string(), product_id.to_string()))
            .into_iter()
            .flatten()
            .map(|&at| &self.catalogue.assets[at])
    }
}

pub(crate) struct Inner {
    pub world: Arc<World>,
    pub files: BTreeMap<String, UsageFile>,
    /// Each file's list rendering, kept until the file changes: listing thousands of files
    /// per request must not re-render every one of them each time.
    pub file_list_cache: BTreeMap<String, Value>,
    pub file_serial: u64,
    webhooks: Vec<Value>,
    served_usage: BTreeMap<Option<Period>, ServedUsage>,
    usage_auth: Option<String>,
}

pub struct SimState {
    config: SimConfig,
    origin: String,
    storage: Storage,
    inner: Mutex<Inner>,
    requests: Mutex<RequestCounts>,
    faults: FaultInjector,
    events: broadcast::Sender<FileEvent>,
}

impl SimState {
    /// State for a simulator reachable at `origin` (`http://127.0.0.1:PORT`), with an empty
    /// catalogue (only the vendor and provider accounts).
    pub fn new(config: SimConfig, origin: String) -> Arc<SimState> {
        let (events, _) = broadcast::channel(1024);
        Arc::new(SimState {
            storage: Storage::new(origin.clone(), config.link_ttl),
            config,
            origin,
            inner: Mutex::new(Inner {
                world: Arc::new(world(Catalogue::default())),
                files: BTreeMap::new(),
                file_list_cache: BTreeMap::new(),
                file_serial: 0,
                webhooks: Vec::new(),
                served_usage: BTreeMap::new(),
                usage_auth: None,
            }),
            requests: Mutex::new(RequestCounts::default()),
            faults: FaultInjector::new(),
            events,
        })
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The signed download links of files' workbooks.
    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("simulator state lock")
    }

    /// Installs the world `spec` describes (see [`SimState::install`]).
    pub fn seed(&self, spec: &SeedSpec) -> SeedSummary {
        self.install(Catalogue::generate(spec))
    }

    /// Replaces the catalogue and forgets every usage file: a fresh world.
    pub fn install(&self, catalogue: Catalogue) -> SeedSummary {
        let summary = SeedSummary::of(&catalogue);
        let mut inner = self.lock();
        inner.world = Arc::new(world(catalogue));
        inner.files.clear();
        inner.file_list_cache.clear();
        summary
    }

    /// A snapshot of the installed catalogue.
    pub fn catalogue(&self) -> Catalogue {
        self.world().catalogue.clone()
    }

    pub(crate) fn world(&self) -> Arc<World> {
        Arc::clone(&self.lock().world)
    }

    /// Vendor usage for `period` over the installed catalogue (deterministic).
    pub fn vendor_usage(
        &self,
        period: Period,
        spec: &BadRowSpec,
    ) -> Result<VendorUsage, VendorUsageError> {
        self.world().catalogue.vendor_usage(period, spec)
    }

    /// Serves `body` at `GET /_sim/usage` for `period` (`None`: for any period without its own).
    pub fn serve_usage(&self, period: Option<Period>, body: String, format: UsageFormat) {
        self.lock()
            .served_usage
            .insert(period, ServedUsage { body, format });
    }

    /// The usage served for the month `period` (falling back to the any-period entry).
    pub fn served_usage(&self, period: Period) -> Option<ServedUsage> {
        let inner = self.lock();
        inner
            .served_usage
            .get(&Some(period))
            .or_else(|| inner.served_usage.get(&None))
            .cloned()
    }

    /// Makes `GET /_sim/usage` demand this exact `Authorization` value (`None`: no check).
    pub fn require_usage_auth(&self, value: Option<String>) {
        self.lock().usage_auth = value;
    }

    pub(crate) fn usage_auth(&self) -> Option<String> {
        self.lock().usage_auth.clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.faults.set(faults);
    }

    pub fn clear_faults(&self) {
        self.faults.set(Faults::default());
    }

    pub fn faults(&self) -> Faults {
        self.faults.get()
    }

    pub(crate) fn fault_injector(&self) -> &FaultInjector {
        &self.faults
    }

    pub(crate) fn count_request(&self, method: &str, route: &str) {
        let mut requests = self.requests.lock().expect("request count lock");
        requests.total += 1;
        *requests
            .by_route
            .entry((method.to_string(), route.to_string()))
            .or_default() += 1;
    }

    pub fn request_counts(&self) -> RequestCounts {
        self.requests.lock().expect("request count lock").clone()
    }

    pub fn request_count(&self, method: &str, route: &str) -> u64 {
        self.request_counts().get(method, route)
    }

    pub fn reset_request_counts(&self) {
        *self.requests.lock().expect("request count lock") = RequestCounts::default();
    }

    pub fn record_webhook(&self, body: Value) {
        self.lock().webhooks.push(body);
    }

    /// JSON bodies POSTed to `/_sim/webhook`, oldest first.
    pub fn webhooks(&self) -> Vec<Value> {
        self.lock().webhooks.clone()
    }

    pub fn subscribe_file_events(&self) -> broadcast::Receiver<FileEvent> {
        self.events.subscribe()
    }

    pub(crate) fn publish(&self, event: FileEvent) {
        // No subscriber is fine: nobody is listening yet.
        let _ = self.events.send(event);
    }

    /// Everything at once, for `GET /_sim/state`.
    pub fn dump(&self) -> Value {
        json!({
            "files": self.files(),
            "requests": self.request_counts().to_json(),
            "faults": self.faults(),
            "webhooks": self.webhooks().len(),
            "catalogue": SeedSummary::of(&self.world().catalogue),
        })
    }
}

fn world(catalogue: Catalogue) -> World {
    let mut assets_by_pair: HashMap<(String, String), Vec<usize>> = HashMap::new();
    for (at, asset) in catalogue.assets.iter().enumerate() {
        assets_by_pair
            .entry((asset.contract_id.clone(), asset.product_id.clone()))
            .or_default()
            .push(at);
    }
    World {
        rendered: Rendered::of(&catalogue),
        catalogue,
        assets_by_pair,
    }
}
