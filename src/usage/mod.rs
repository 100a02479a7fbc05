//! The pipeline from vendor records to usage workbooks: sources, validation, resolution against
//! Connect, grouping, workbooks (made, read and validated in `workbook/`), and idempotent filing.

pub mod filing;
pub mod group;
mod interner;
pub use payg_shared::period;
pub mod record;
pub mod report;
pub mod resolve;
pub mod source;
pub mod summary;
pub mod sweep;
pub mod workbook;
