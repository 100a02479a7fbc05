//! `connect-payg status`: the read-only look at the periods named (`--period`, repeatable, or
//! `--from P --to P`), else `REPORT_PERIOD`, else the catch-up window — chosen exactly as
//! `report` chooses them — one line per group and the totals per period, or one JSON document
//! (`--json`, its fields in the README's "Status" section).
//!
//! Exit 0 when nothing needs attention, 1 when something does (or a period could not be looked
//! at), 2 on bad arguments or settings; so it can drive a monitor.

use super::report::{periods_asked, set_up};
use super::{CliError, Outcome};
use crate::config::SettingsSources;

pub struct StatusArgs {
    /// `--period`, as typed, in order.
    pub periods: Vec<String>,
    /// `--from` and `--to`, as typed.
    pub range: Option<(String, String)>,
    pub contracts: Vec<String>,
    pub products: Vec<String>,
    pub json: bool,
}

pub async fn status(sources: SettingsSources, args: StatusArgs) -> Result<Outcome, CliError> {
    let (reporter, periods) = set_up(sources, || {
        periods_asked(&args.periods, args.range.as_ref(), None)
    })?;
    let report = reporter
        .status(&periods, &args.contracts, &args.products)
        .await;
    match args.json {
        true => println!("{}", report.json()),
        false => print!("{}", report.text()),
    }
    Ok(match report.needs_attention {
        true => Outcome::WorkFailed,
        false => Outcome::Success,
    })
}
