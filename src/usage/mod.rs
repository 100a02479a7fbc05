//! The pipeline from vendor records to usage workbooks: sources, validation, resolution against
//! Connect, grouping, workbooks (made, read and validated in `workbook/`), and idempotent filing
//! (`filing/`: the rules per usage-file status decided in one pure function, carried out by the
//! run, the sweep and the event handler).

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
pub mod workbook;
