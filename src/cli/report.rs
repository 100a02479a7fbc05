//! `connect-payg report`: the usage reports once, from a terminal, against the REST API — the
//! periods named (`--period`, repeatable, or `--from P --to P`), else `REPORT_PERIOD`, else
//! the catch-up window, as the schedule chooses them ([`PeriodRequest`]); unless `--dry-run`,
//! it ends with the status of the periods and groups it was asked for (`status`).
//!
//! Exit 2 before anything is read when a period named is not reportable yet, is of another
//! cadence than the run's, or does not parse; exit 1 when a period could not be reported, a
//! group failed, a `--contract`/`--product` selected nothing, or the source has no record for
//! a period (unless `--allow-empty`).

use std::io::IsTerminal;
use std::path::PathBuf;

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};

use super::{CliError, Outcome};
use crate::config::SettingsSources;
use crate::connect::{ClientOptions, ConnectClient};
use crate::usage::filing::Submission;
use crate::usage::period::{Cadence, Period};
use crate::usage::periods::{self, PeriodRequest};
use crate::usage::report::{ReportJob, Reporter};
use crate::usage::summary::{write_bad_records, Ledger};

pub struct ReportArgs {
    /// `--period`, as typed, in order.
    pub periods: Vec<String>,
    /// `--from` and `--to`, as typed.
    pub range: Option<(String, String)>,
    /// `--cadence`, as typed.
    pub cadence: Option<String>,
    pub contracts: Vec<String>,
    pub products: Vec<String>,
    pub dry_run: bool,
    pub out: PathBuf,
    /// A source without any record for a period is expected.
    pub allow_empty: bool,
}

/// What the arguments ask of the period choice; a malformed one is an error naming it.
fn period_request(args: &ReportArgs) -> Result<PeriodRequest, CliError> {
    periods_asked(&args.periods, args.range.as_ref(), args.cadence.as_deref())
}

/// `--period` (repeated), `--from`/`--to` and `--cadence` as typed, as a period request (the
/// `report` and `status` commands choose their periods the same way).
pub(super) fn periods_asked(
    named: &[String],
    range: Option<&(String, String)>,
    cadence: Option<&str>,
) -> Result<PeriodRequest, CliError> {
    let usage = |reason: String| CliError::Usage(reason);
    let cadence = cadence
        .map(|text| text.parse::<Cadence>())
        .transpose()
        .map_err(|reason| usage(format!("--cadence: {reason}")))?;
    let named: Option<(Vec<Period>, &'static str)> = match range {
        Some((from, to)) => {
            let parse = |text: &str, flag: &str| {
                Period::parse(text).map_err(|reason| usage(format!("{flag}: {reason}")))
            };
            let (from, to) = (parse(from, "--from")?, parse(to, "--to")?);
            let periods = periods::range(from, to)
                .map_err(|reason| usage(format!("--from/--to: {reason}")))?;
            Some((periods, "--from/--to"))
        }
        None if named.is_empty() => None,
        None => {
            let periods = named
                .iter()
                .map(|text| Period::parse(text))
                .collect::<Result<Vec<Period>, String>>()
                .map_err(|reason| usage(format!("--period: {reason}")))?;
            Some((periods, "--period"))
        }
    };
    // Without --cadence, the periods named say it; months and days are not mixed in one run.
    let cadence = match (cadence, &named) {
        (Some(cadence), _) => Some((cadence, "--cadence")),
        (None, Some((periods, source))) => {
            let first = periods[0];
            if let Some(other) = periods.iter().find(|p| p.cadence() != first.cadence()) {
                return Err(usage(format!(
                    "{source}: {first} and {other} mix months and days; report one cadence at a time"
                )));
            }
            Some((first.cadence(), *source))
        }
        (None, None) => None,
    };
    Ok(PeriodRequest {
        named,
        cadence,
        catch_up: None,
    })
}

/// The set-up `report` and `status` share: the settings loaded, logging started, the periods
/// `request` chooses now (exit 2 on one not reportable), the source and key required, and the
/// reporter.
pub(super) fn set_up(
    sources: SettingsSources,
    request: impl FnOnce() -> Result<PeriodRequest, CliError>,
) -> Result<(Reporter, Vec<Period>), CliError> {
    let settings = sources.load()?;
    crate::logging::init(&settings.connection);
    let periods = request()?
        .choose(&settings.report, Utc::now())
        .map_err(|error| CliError::Usage(error.to_string()))?;
    settings.report.require_usage_source()?;
    settings.connection.require_api_key()?;
    let client = ConnectClient::new(ClientOptions::from_settings(&settings)?)?;
    Ok((Reporter::new(client, settings.report), periods))
}

pub async fn report(sources: SettingsSources, args: ReportArgs) -> Result<Outcome, CliError> {
    let (reporter, periods) = set_up(sources, || period_request(&args))?;
    let job = ReportJob {
        period: periods[0],
        contracts: args.contracts.clone(),
        products: args.products.clone(),
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
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let ledger = reporter
        .run_periods(&periods, &job, progress.as_ref())
        .await;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    print!("{}", ledger.table());
    for (period, error) in ledger.errors() {
        eprintln!("error: period {period}: {error}");
    }
    for summary in ledger.summaries() {
        let bad_path = write_bad_records(&args.out, summary).await.map_err(|e| {
            CliError::Other(anyhow::anyhow!("cannot write the bad-records file: {e}"))
        })?;
        println!("bad records: {}", bad_path.display());
    }
    if args.dry_run {
        println!("workbooks: {}", args.out.display());
    } else {
        // What the run touched, as `status` shows it (read again from the source and platform).
        let status = reporter
            .status(&periods, &args.contracts, &args.products)
            .await;
        print!("\nstatus:\n{}", status.text());
    }
    Ok(match work_failed(&ledger, args.allow_empty) {
        true => Outcome::WorkFailed,
        false => Outcome::Success,
    })
}

/// A period could not be reported, or one reported has a failed group, a filter that selected
/// nothing, or (unless expected) no record at all.
fn work_failed(ledger: &Ledger, allow_empty: bool) -> bool {
    ledger.errors().next().is_some()
        || ledger.summaries().any(|summary| {
            summary.failed() > 0
                || !summary.unmatched.is_empty()
                || (summary.empty_source() && !allow_empty)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(periods: &[&str], range: Option<(&str, &str)>, cadence: Option<&str>) -> ReportArgs {
        ReportArgs {
            periods: periods.iter().map(|p| p.to_string()).collect(),
            range: range.map(|(a, b)| (a.to_string(), b.to_string())),
            cadence: cadence.map(str::to_string),
            contracts: Vec::new(),
            products: Vec::new(),
            dry_run: false,
            out: PathBuf::new(),
            allow_empty: false,
        }
    }

    fn p(text: &str) -> Period {
        Period::parse(text).unwrap()
    }

    #[test]
    fn arguments_become_a_period_request() {
        let request = period_request(&args(&["2024-02", "2024-01"], None, None)).unwrap();
        assert_eq!(
            request,
            PeriodRequest {
                named: Some((vec![p("2024-02"), p("2024-01")], "--period")),
                cadence: Some((Cadence::Monthly, "--period")),
                catch_up: None,
            }
        );
        let request = period_request(&args(&[], Some(("2024-02-28", "2024-03-01")), None)).unwrap();
        assert_eq!(
            request.named,
            Some((
                vec![p("2024-02-28"), p("2024-02-29"), p("2024-03-01")],
                "--from/--to"
            ))
        );
        assert_eq!(request.cadence, Some((Cadence::Daily, "--from/--to")));
        let request = period_request(&args(&[], None, Some("daily"))).unwrap();
        assert_eq!(request.named, None);
        assert_eq!(request.cadence, Some((Cadence::Daily, "--cadence")));
        assert_eq!(
            period_request(&args(&["2024-02"], None, Some("daily")))
                .unwrap()
                .cadence,
            Some((Cadence::Daily, "--cadence"))
        );
        for (args, message) in [
            (
                args(&["2024-13"], None, None),
                "--period: \"2024-13\": month 13",
            ),
            (
                args(&[], None, Some("weekly")),
                "--cadence: \"weekly\" is not monthly or daily",
            ),
            (
                args(&["2024-02", "2024-02-01"], None, None),
                "--period: 2024-02 and 2024-02-01 mix months and days",
            ),
            (
                args(&[], Some(("2024-03", "2024-01")), None),
                "--from/--to: 2024-03 comes after 2024-01",
            ),
            (
                args(&[], Some(("x", "2024-01")), None),
                "--from: \"x\" is not",
            ),
        ] {
            let error = period_request(&args).unwrap_err().to_string();
            assert!(error.starts_with(message), "{error}");
        }
    }
}
