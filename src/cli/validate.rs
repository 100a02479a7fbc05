//! `connect-payg validate`: the shared template validator on a local workbook.

use std::path::PathBuf;

use super::{CliError, Outcome};
use crate::usage::period::Period;
use crate::usage::validate_command::validate_file;

pub async fn validate(file: PathBuf, period: Option<String>) -> Result<Outcome, CliError> {
    let period = period
        .as_deref()
        .map(Period::parse)
        .transpose()
        .map_err(|reason| CliError::Usage(format!("--period: {reason}")))?;
    let report = tokio::task::spawn_blocking(move || validate_file(&file, period))
        .await
        .map_err(|e| CliError::Other(anyhow::anyhow!("validation stopped: {e}")))?
        .map_err(|e| CliError::Usage(e.to_string()))?;
    print!("{report}");
    Ok(if report.is_valid() {
        Outcome::Success
    } else {
        Outcome::WorkFailed
    })
}
