//! payg-shared: what connect-payg and its Connect simulator must agree on byte for byte.
//!
//! The product files usage with these types and the simulator, standing in for Connect, judges
//! it with the very same ones; neither depends on the other. Nothing here does I/O beyond
//! reading and writing bytes handed to it.
//!
//! * [`period`] — the reporting month, its first and last instants, and the time format of
//!   usage records.
//! * [`record`] — the vendor record's fields as sources deliver them, and how a record names its
//!   asset and item.
//! * [`workbook`] — the usage-file template: the row model and precision, the rules Connect
//!   checks each row against, the streaming reader with its size limits, and the streaming
//!   writer.
//! * [`file_status`] — a usage file's status and what each one means.
//! * [`protocol`] — the DevOps events-channel messages (the websocket between runner and
//!   platform).
//! * [`rql`] — RQL, the filter language of Connect's list endpoints: the syntax tree the client
//!   builds and renders and the simulator parses and evaluates.

pub mod file_status;
pub mod period;
pub mod protocol;
pub mod record;
pub mod rql;
pub mod workbook;

pub use file_status::FileStatus;
pub use period::Period;
