//! What this extension does with the tasks the platform sends: the monthly schedule and the
//! usage-file status events. [`registry`] binds them to the declarations in `extension.json`.

mod file_events;
mod schedule;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::ReportSettings;
use crate::devops::registry::{Registry, RegistryError};

pub use file_events::{rebuild_count, rebuild_note, FileEvents};
pub use schedule::MonthlyReport;

/// The schedulable method of spec §5.
pub const MONTHLY_REPORT_METHOD: &str = "generate_monthly_usage_reports";
/// The event type of spec §6.
pub const USAGE_FILE_EVENT: &str = "usage_file_request_processing";

/// The registry `connect-payg run` serves.
pub fn registry() -> Result<Registry, RegistryError> {
    Registry::from_extension_json(crate::devops::extension::EXTENSION_JSON)?
        .on_schedule(MONTHLY_REPORT_METHOD, Arc::new(MonthlyReport))
        .on_event(USAGE_FILE_EVENT, Arc::new(FileEvents::default()))
        .build()
}

/// Where a task writes workbooks, and whether they stay there afterwards: `WORKBOOK_DIR`
/// when configured, else a scratch directory the task removes when done.
fn task_workdir(settings: &ReportSettings, task_id: &str) -> (PathBuf, bool) {
    match &settings.workbook_dir {
        Some(dir) => (dir.clone(), true),
        None => (
            std::env::temp_dir().join(format!("connect-payg-{task_id}")),
            false,
        ),
    }
}
