//! The pipeline from vendor records to usage workbooks: sources, validation, resolution against
//! Connect, grouping, workbook writing, the shared template validator, and idempotent filing.

pub mod period;
pub mod record;
pub mod source;
pub mod template;
pub mod workbook;
