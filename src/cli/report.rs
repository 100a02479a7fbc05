//! `connect-payg report`: the monthly report once, from a terminal, against the REST API.
//!
//! Exit 2 before anything is read when the month named (`--period` or `REPORT_PERIOD`) has not
//! ended; exit 1 when a group failed, a `--contract`/`--product` selected nothing, or the source
//! has no record for the month (unless `--allow-empty`).

use std::io::IsTerminal;
use std::path::PathBuf;

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};

use super::{CliError, Outcome};
use crate::config::SettingsSources;
use crate::connect::{ClientOptions, ConnectClient};
use crate::usage::filing::Submission;
use crate::usage::period::Period;
use crate::usage::report::{ReportError, ReportJob, Reporter};
use crate::usage::summary::write_bad_records;

pub struct ReportArgs {
    pub period: Option<String>,
    pub contracts: Vec<String>,
    pub products: Vec<String>,
    pub dry_run: bool,
    pub out: PathBuf,
    /// A source without any record for the month is expected.
    pub allow_empty: bool,
}

pub async fn report(sources: SettingsSources, args: ReportArgs) -> Result<Outcome, CliError> {
    let settings = sources.load()?;
    crate::logging::init(&settings.connection);
    let period = args
        .period
        .as_deref()
        .map(Period::parse)
        .transpose()
        .map_err(|reason| CliError::Usage(format!("--period: {reason}")))?;
    let now = Utc::now();
    if let Some(period) = period {
        period
            .check_ended(now)
            .map_err(|not_ended| CliError::Usage(format!("--period: {not_ended}")))?;
    }
    settings.report.require_usage_source()?;
    settings.connection.require_api_key()?;
    let client = ConnectClient::new(ClientOptions::from_settings(&settings)?)?;
    let reporter = Reporter::new(client, settings.report.clone());
    let period = match period {
        Some(period) => period,
        None => {
            let period = reporter.period(now);
            period
                .check_ended(now)
                .map_err(|not_ended| CliError::Usage(format!("REPORT_PERIOD: {not_ended}")))?;
            period
        }
    };
    let job = ReportJob {
        period,
        contracts: args.contracts,
        products: args.products,
        dry_run: args.dry_run,
        workdir: args.out.clone(),
        keep_workbooks: true,
        submission: Submission::Poll,
        allow_empty: args.allow_empty,
    };
    let progress = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} ({elapsed})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(format!("reading usage for {}", job.period));
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let summary = reporter
        .run(&job, progress.as_ref())
        .await
        .map_err(|error| match error {
            ReportError::NotEnded(not_ended) => CliError::Usage(not_ended.to_string()),
            error => CliError::Other(error.into()),
        })?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    print!("{}", summary.table());
    let bad_path = write_bad_records(&args.out, &summary)
        .await
        .map_err(|e| CliError::Other(anyhow::anyhow!("cannot write the bad-records file: {e}")))?;
    println!("bad records: {}", bad_path.display());
    if args.dry_run {
        println!("workbooks: {}", args.out.display());
    }
    let empty = summary.empty_source() && !args.allow_empty;
    Ok(
        if summary.failed() > 0 || !summary.unmatched.is_empty() || empty {
            Outcome::WorkFailed
        } else {
            Outcome::Success
        },
    )
}
