//! `connect-payg report`: the monthly report once, from a terminal, against the REST API.

use std::io::IsTerminal;
use std::path::PathBuf;

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};

use super::{CliError, Outcome};
use crate::config::SettingsSources;
use crate::connect::{ClientOptions, ConnectClient};
use crate::usage::filing::Submission;
use crate::usage::period::Period;
use crate::usage::report::{ReportJob, Reporter};
use crate::usage::summary::write_bad_records;

pub struct ReportArgs {
    pub period: Option<String>,
    pub contracts: Vec<String>,
    pub products: Vec<String>,
    pub dry_run: bool,
    pub out: PathBuf,
}

pub async fn report(sources: SettingsSources, args: ReportArgs) -> Result<Outcome, CliError> {
    let settings = sources.load()?;
    crate::logging::init(settings.connection.log_format);
    let period = args
        .period
        .as_deref()
        .map(Period::parse)
        .transpose()
        .map_err(|reason| CliError::Usage(format!("--period: {reason}")))?;
    settings.report.require_usage_source()?;
    settings.connection.require_api_key()?;
    let client = ConnectClient::new(ClientOptions::from_settings(&settings)?)?;
    let reporter = Reporter::new(client, settings.report.clone());
    let job = ReportJob {
        period: period.unwrap_or_else(|| reporter.period(Utc::now())),
        contracts: args.contracts,
        products: args.products,
        dry_run: args.dry_run,
        workdir: args.out.clone(),
        keep_workbooks: true,
        submission: Submission::Poll,
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
        .map_err(|e| CliError::Other(e.into()))?;
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
    Ok(if summary.failed() > 0 {
        Outcome::WorkFailed
    } else {
        Outcome::Success
    })
}
