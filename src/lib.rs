//! connect-payg: a CloudBlue Connect DevOps extension that reports Pay-As-You-Go (QT) usage.
//!
//! This is the product crate of a workspace of three: what it shares byte for byte with the
//! Connect simulator (periods, record fields, the usage workbook template, file statuses, the
//! DevOps protocol) is the `payg-shared` crate, and the simulator is `connect-sim`, which never
//! depends on this one. Each component below exports its API from its root; the rest is
//! private to the crate. Read this file top-down to see how the pieces fit:
//!
//! * [`config`] — layered settings (defaults < file < environment < extension variables) and the
//!   [`config::Secret`] wrapper that keeps API keys out of logs.
//! * [`connect`] — the sink: a REST client for Connect (RQL, pagination, retries, usage files).
//! * [`usage`] — where usage comes from and what we make of it: which periods a run reports
//!   (the catch-up window of months or days), sources (file / HTTP / SQL / object storage; CSV,
//!   JSON, JSON lines, Parquet; gzip, zstd), record validation, resolution against Connect,
//!   grouping, workbooks, the shared template validator and idempotent filing, one period
//!   after another; and the read-only status of periods and groups (what needs a person).
//! * [`devops`] — the DevOps events websocket: the handler registry and the
//!   connection loop that turns tasks into handler calls and results.
//! * [`handlers`] — what this extension does with tasks: the scheduled report (with the
//!   schedule's parameters) and usage-file status events.
//! * [`alert`] — operator alerts: a structured log line, and a webhook when configured.
//! * [`allocator`] — the memory allocator and its tuning.
//! * [`logging`] — the log subscriber: text or JSON lines, levels the portal can change while
//!   running, and the lines shipped to the portal's log service.
//! * [`metrics`] — the operator's view of a running instance: Prometheus counters, the health
//!   check, and the `/metrics` and `/healthz` endpoint at `METRICS_ADDRESS`.
//! * `output` — files left for a person: checked names, private modes, atomic replacement.
//! * `sandbox` — the whole product against the simulator (the `connect-sim` crate) in one
//!   command.
//! * [`cli`] — the command line: `run`, `report`, `status`, `validate`, `sandbox`, `health`.
//!
//! The picture (runner → registry → handlers, the data path from source to Connect, where the
//! simulator sits) is in `docs/architecture.md`; running the product is in `docs/operations.md`.

pub mod alert;
pub mod allocator;
pub mod cli;
pub mod config;
pub mod connect;
pub mod devops;
pub mod handlers;
pub mod logging;
pub mod metrics;
pub(crate) mod output;
pub(crate) mod sandbox;
pub mod usage;
