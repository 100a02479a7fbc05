//! connect-sim, a Connect simulator: an in-process axum server on loopback that impersonates CloudBlue
//! Connect well enough that the real client and the runner cannot tell the difference — REST
//! with RQL and paging, the usage-file life cycle with platform-side workbook validation,
//! provider actions, the DevOps websocket (`devops`), fault injection — plus a control API
//! (`/_sim/`, and the same in-process on [`SimState`]) and deterministic test data.
//!
//! It refuses what Connect refuses (bad keys, bad RQL, illegal transitions, malformed bodies,
//! invalid workbooks), with Connect's error body: a lax simulator makes tests lie.
//!
//! It depends only on the `payg-shared` crate (periods, record fields, the workbook template
//! and reader, file statuses, the DevOps protocol), never on the product, so it judges the
//! product's requests as an independent platform would. [`World`] is the one set-up the
//! product's tests, `connect-payg sandbox` and the bench start: a seeded simulator with the
//! month's vendor export on disk.
//!
//! ```text
//! rest ── usage_api ─┐ (both answer lists through `listing`)
//! storage (links) ───┤
//! control (/_sim) ───┼── state (SimState) ── catalogue (+ seed, vendor_usage)
//! devops (websocket) ┘       │        └── files (life cycle ops) ── processing (template)
//!                            └── faults, request counts, events
//! world: Simulator + SeedSpec + the month's export
//! ```

pub mod catalogue;
mod control;
pub mod devops;
pub mod error;
pub mod faults;
mod file_body;
mod files;
mod lifecycle;
mod listing;
mod processing;
mod records;
mod rest;
pub mod rql;
pub mod seed;
pub mod state;
mod storage;
mod usage_api;
mod usage_file;
pub mod vendor_usage;
pub mod world;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use catalogue::Catalogue;
pub use error::ApiError;
pub use faults::Faults;
pub use seed::{SeedSpec, SeedSummary};
pub use state::{FileEvent, FileSummary, RequestCounts, SimState};
pub use storage::STORAGE_ROUTE;
pub use vendor_usage::{
    BadKind, BadRow, BadRowSpec, Correction, Expected, ExpectedGroup, ExpectedRow, OutOfScopeKind,
    UsageFormat, VendorUsage, VendorUsageError,
};
pub use world::{World, WorldDir, WorldError, WorldSpec};

/// How long `shutdown` waits for open connections before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct SimConfig {
    /// The exact `Authorization` value accepted (e.g. `ApiKey SU-…:…`).
    pub api_key: String,
    pub environment_id: String,
    /// The most items a list answer holds, whatever `limit` asks.
    pub page_cap: usize,
    /// How long an uploaded workbook stays `processing`.
    pub processing_delay: Duration,
    /// How long a download link of a file's detail stays valid (Connect's: tens of seconds to
    /// minutes).
    pub link_ttl: Duration,
    pub bind: SocketAddr,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            api_key: "ApiKey SU-000-000-001:simulator-secret".into(),
            environment_id: "ENV-0000-0000-01".into(),
            page_cap: 100,
            processing_delay: Duration::from_millis(20),
            link_ttl: Duration::from_secs(60),
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("api_key", &"***")
            .field("environment_id", &self.environment_id)
            .field("page_cap", &self.page_cap)
            .field("processing_delay", &self.processing_delay)
            .field("link_ttl", &self.link_ttl)
            .field("bind", &self.bind)
            .finish()
    }
}

/// A running simulator. Dropping it stops the server too.
pub struct Simulator {
    addr: SocketAddr,
    state: Arc<SimState>,
    devops: Arc<devops::DevopsHub>,
    stop: CancellationToken,
    server: Option<JoinHandle<()>>,
}

impl Simulator {
    /// Binds `config.bind` (an ephemeral loopback port by default) and serves in the background.
    pub async fn start(config: SimConfig) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(config.bind).await?;
        let addr = listener.local_addr()?;
        let state = SimState::new(config.clone(), format!("http://{addr}"));
        let devops = devops::DevopsHub::new(state.clone(), &config);
        let app = rest::router(state.clone())
            .merge(control::router(state.clone()))
            .merge(storage::router(state.clone()))
            .merge(devops::router(devops.clone()));
        let stop = CancellationToken::new();
        // Small answers go out at once, as from Connect's own front ends: with Nagle's
        // algorithm on, an answer written in two parts waited for the client's delayed
        // acknowledgement, which alone added a tenth to the 10k-subscription month's wall time.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serve = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop.clone().cancelled_owned());
        let server = tokio::spawn(async move {
            if let Err(error) = serve.await {
                tracing::warn!(%error, "simulator server stopped with an error");
            }
        });
        tracing::debug!(%addr, "Connect simulator listening");
        Ok(Simulator {
            addr,
            state,
            devops,
            stop,
            server: Some(server),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, as `SERVER_ADDRESS` takes it.
    pub fn server_address(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT/public/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.addr, rest::PREFIX)
    }

    pub fn api_key(&self) -> &str {
        &self.state.config().api_key
    }

    pub fn environment_id(&self) -> &str {
        &self.state.config().environment_id
    }

    pub fn state(&self) -> &Arc<SimState> {
        &self.state
    }

    pub fn devops(&self) -> &Arc<devops::DevopsHub> {
        &self.devops
    }

    /// Stops accepting connections and waits (briefly) for open ones to finish.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(mut server) = self.server.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
                .await
                .is_err()
            {
                server.abort();
            }
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
