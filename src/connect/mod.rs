//! The Connect REST client: everything this program sends to or reads from
//! `https://<host>/public/v1`.
//!
//! * [`ConnectClient`] — one shared connection pool (rustls, system roots plus
//!   `SSL_CERT_FILE`), a concurrency limit (`API_CONCURRENCY`), retries with exponential
//!   backoff and full jitter, and typed errors. Built from [`ClientOptions`].
//! * [`Rql`] / [`Query`] — filters, projection and ordering, rendered as the official builder
//!   renders them (the shared crate's RQL tree, the one the simulator parses).
//! * [`Page`] — limit/offset paging driven by `Content-Range`; `list_all` and `list_stream`
//!   walk every page.
//! * `models` — the objects read and written, decoded leniently.
//! * Usage-file operations, each safe to retry; how is documented in `usage_files.rs`.
//!
//! Retry rules in short: reads are retried on transport errors, 429 (`Retry-After`
//! honoured) and 500/502/503/504; writes only when the server certainly did nothing, and after
//! an ambiguous failure only once a re-read of the platform's state shows it is needed.
//! 400/401/403/404 are never retried. The API key is sent verbatim as `Authorization` and
//! never appears in logs, errors or `Debug` output.

mod client;
mod error;
mod lenient;
pub(crate) mod models;
mod options;
mod paging;
mod resources;
mod retry;
mod usage_files;

pub use client::ConnectClient;
pub(crate) use error::network_error_text;
pub use error::{ConnectError, TransportKind};
pub use models::{Asset, NewUsageFile, Reference, UsageFile, UsagePeriod};
pub use options::ClientOptions;
pub use paging::{ContentRange, Page};
pub use payg_shared::rql::{Query, Rql};
pub use payg_shared::FileStatus;
