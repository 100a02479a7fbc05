//! connect-payg: a CloudBlue Connect DevOps extension that reports Pay-As-You-Go (QT) usage.
//!
//! Read this file top-down to see how the pieces fit:
//!
//! * [`config`] — layered settings (defaults < file < environment < extension variables) and the
//!   [`config::Secret`] wrapper that keeps API keys out of logs.
//! * [`connect`] — the sink: a REST client for Connect (RQL, pagination, retries, usage files).
//! * [`usage`] — where usage comes from and what we make of it: sources (file / HTTP / object
//!   storage; CSV, JSON, JSON lines, Parquet; gzip, zstd), record validation, resolution against Connect, grouping, workbooks, the
//!   shared template validator and idempotent filing.
//! * [`devops`] — the DevOps events websocket: protocol types, the handler registry and the
//!   connection loop that turns tasks into handler calls and results.
//! * [`handlers`] — what this extension does with tasks: the monthly schedule and usage-file
//!   status events.
//! * [`alert`] — operator alerts: a structured log line, and a webhook when configured.
//! * [`allocator`] — the memory allocator and its tuning.
//! * [`sim`] — a Connect simulator (REST, usage-file life cycle, DevOps websocket, faults) used
//!   by the tests and by `connect-payg sandbox`.
//! * [`output`] — files left for a person: checked names, private modes, atomic replacement.
//! * [`sandbox`] — the whole product against the simulator in one command.
//! * [`cli`] — the command line: `run`, `report`, `validate`, `sandbox`.
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
pub mod output;
pub mod sandbox;
pub mod sim;
pub mod usage;
