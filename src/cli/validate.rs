//! `connect-payg validate`: the shared template validator on local workbooks.
//!
//! Every file named is checked, whatever the others hold: a file that cannot be read is said
//! (naming it) and the rest go on. Exit 2 when any file could not be read at all (a wrong
//! argument), else 1 when any workbook has a problem.

use std::path::PathBuf;

use super::{CliError, Outcome};
use crate::usage::period::Period;
use crate::usage::validate_command::validate_file;

pub async fn validate(files: Vec<PathBuf>, period: Option<String>) -> Result<Outcome, CliError> {
    let period = period
        .as_deref()
        .map(Period::parse)
        .transpose()
        .map_err(|reason| CliError::Usage(format!("--period: {reason}")))?;
    let mut unreadable = Vec::new();
    let mut problems = false;
    for file in files {
        let report = tokio::task::spawn_blocking(move || validate_file(&file, period))
            .await
            .map_err(|e| CliError::Other(anyhow::anyhow!("validation stopped: {e}")))?;
        match report {
            Ok(report) => {
                print!("{report}");
                problems |= !report.is_valid();
            }
            Err(error) => {
                println!("{error}");
                unreadable.push(error.to_string());
            }
        }
    }
    if !unreadable.is_empty() {
        return Err(CliError::Usage(unreadable.join("; ")));
    }
    Ok(match problems {
        true => Outcome::WorkFailed,
        false => Outcome::Success,
    })
}
