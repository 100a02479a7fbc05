//! The pipeline from vendor records to usage workbooks: which periods a run reports
//! (`periods`), sources, validation, resolution against Connect, grouping, workbooks (made, read and validated in `workbook/`), and idempotent filing
//! (`filing/`: the rules per usage-file status decided in one pure function, carried out by the
//! run, the sweep and the event handler; late records compared and filed in supplemental files),
//! and the read-only `status` of periods and groups (`status`).

pub(crate) mod filing;
pub(crate) mod group;
mod interner;
mod partition;
pub(crate) use payg_shared::period;
pub(crate) mod periods;
pub mod phases;
pub(crate) mod record;
pub(crate) mod report;
pub(crate) mod resolve;
mod scoped;
mod seen;
pub(crate) mod source;
pub(crate) mod spill;
pub(crate) mod status;
pub(crate) mod summary;
pub(crate) mod sweep;
pub mod workbook;

pub use filing::late::Part;
pub use filing::{FilingResult, Submission};
pub use group::{Collection, GroupKey, DEFAULT_RESOLVE_CACHE};
pub use periods::{PeriodRequest, PeriodsError};
pub use record::{BadReason, BadRecord, RecordChecker, MAX_HELD_BAD_RECORDS};
pub use report::{ReportError, ReportJob, Reporter};
pub use source::sql::{QueryValues, SqlSource};
pub use source::{SourceError, UsageSource, MAX_RECORD_BYTES};
pub use spill::{scratch_root, GroupRows, SpillError, DEFAULT_SPILL_BUDGET};
pub use status::{
    assess, Attention, FileFacts, GroupStatus, Observed, PeriodStatus, SourceCounts, StatusReport,
    Totals, STATUS_FORMAT,
};
pub use summary::{write_bad_records, Ledger, PeriodReport, Summary};
