//! What this extension does with the tasks the platform sends: the monthly schedule and the
//! usage-file status events. [`registry`] binds them to the declarations in `extension.json`.

mod file_events;
mod schedule;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::ReportSettings;
use crate::devops::registry::{Registry, RegistryError};
use crate::usage::filing::Submission;
use crate::usage::period::Period;
use crate::usage::report::ReportJob;

pub use file_events::rebuild_count;
use file_events::FileEvents;
use schedule::MonthlyReport;

/// The schedulable method that runs the monthly report, as `extension.json` declares it.
pub const MONTHLY_REPORT_METHOD: &str = "generate_monthly_usage_reports";
pub use crate::devops::protocol::USAGE_FILE_EVENT;

/// The registry `connect-payg run` serves.
pub fn registry() -> Result<Registry, RegistryError> {
    Registry::from_extension_json(crate::devops::extension::EXTENSION_JSON)?
        .on_schedule(MONTHLY_REPORT_METHOD, Arc::new(MonthlyReport))
        .on_event(USAGE_FILE_EVENT, Arc::new(FileEvents::default()))
        .build()
}

/// Where a task writes workbooks: `WORKBOOK_DIR` when configured (kept as an audit copy), else
/// a fresh scratch directory of its own, removed when the task is done.
enum Workdir {
    Kept(PathBuf),
    Scratch(tempfile::TempDir),
}

impl Workdir {
    fn for_task(settings: &ReportSettings) -> std::io::Result<Workdir> {
        Ok(match &settings.workbook_dir {
            Some(dir) => Workdir::Kept(dir.clone()),
            None => Workdir::Scratch(tempfile::Builder::new().prefix("connect-payg-").tempdir()?),
        })
    }

    fn path(&self) -> PathBuf {
        match self {
            Workdir::Kept(dir) => dir.clone(),
            Workdir::Scratch(dir) => dir.path().to_path_buf(),
        }
    }

    fn keep(&self) -> bool {
        matches!(self, Workdir::Kept(_))
    }

    /// A month's report as a task runs it: workbooks here, each file submitted by its `ready`
    /// event (the runner is listening for them).
    fn job(&self, period: Period) -> ReportJob {
        ReportJob {
            period,
            contracts: Vec::new(),
            products: Vec::new(),
            dry_run: false,
            workdir: self.path(),
            keep_workbooks: self.keep(),
            submission: Submission::OnReadyEvent,
            allow_empty: false,
        }
    }
}
