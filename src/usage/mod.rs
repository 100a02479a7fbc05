//! The pipeline from vendor records to usage workbooks: sources, validation, resolution against
//! Connect, grouping, workbook writing, the shared template validator, and idempotent filing.

pub mod build;
pub mod filing;
pub mod group;
mod interner;
pub mod period;
pub mod record;
pub mod report;
pub mod resolve;
pub mod source;
pub mod summary;
pub mod sweep;
pub mod template;
mod unpacked;
pub mod validate_command;
pub mod workbook;
