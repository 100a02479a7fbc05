//! The schedulable `generate_monthly_usage_reports`: the report of the catch-up window (or of
//! exactly the period named) as a task (see docs/architecture.md, The scheduled report).
//!
//! Which periods: the schedule's `parameter` object first (`period`: exactly that period;
//! `catch_up_periods`: that many recent periods), then the variables (`REPORT_PERIOD`, else the
//! `CATCH_UP_PERIODS` most recent reportable periods of `REPORT_CADENCE`). A key this extension
//! does not read is a warning in the log; a value it cannot use answers `fail` naming the key.
//!
//! Each period is filed as a run of that period alone, oldest first, and one that fails does
//! not stop the others. The answer covers them all ([`answer`]): `retry` when any period failed
//! for a reason a later attempt can fix (the source or Connect unreachable, a group that could
//! not be filed) — re-running is safe because filing is idempotent, and the periods filed
//! meanwhile cost one file listing each next time; `fail` when what failed cannot be fixed by
//! retrying (a setting, a period that is not reportable, a source without a single record for
//! a period — a broken export is not fixed by retrying right away, and the `empty_source` alert
//! says so —, uploads the platform found invalid); `success` otherwise. The message's first
//! line names every period and what became of it.

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;

use super::Workdir;
use crate::config::MAX_CATCH_UP_PERIODS;
use crate::devops::registry::{Handler, HandlerOutcome, TaskContext};
use crate::usage::filing::FilingResult;
use crate::usage::period::Period;
use crate::usage::periods::PeriodRequest;
use crate::usage::report::Reporter;
use crate::usage::summary::{write_bad_records, Ledger, Summary};

pub struct MonthlyReport;

impl Handler for MonthlyReport {
    fn handle(&self, ctx: TaskContext, schedule: Value) -> BoxFuture<'static, HandlerOutcome> {
        run(ctx, schedule).boxed()
    }
}

async fn run(ctx: TaskContext, schedule: Value) -> HandlerOutcome {
    let parameters = match ScheduleParameters::read(&schedule) {
        Ok(parameters) => parameters,
        Err(error) => return HandlerOutcome::Fail(error.to_string()),
    };
    for key in &parameters.unknown {
        tracing::warn!(
            parameter = %key,
            "the schedule's parameter {key:?} is not one this extension reads (period, catch_up_periods); ignored"
        );
    }
    let reporter = Reporter::new(ctx.client.clone(), ctx.settings.report.clone());
    let periods = match parameters
        .request()
        .choose(&ctx.settings.report, (reporter.now)())
    {
        Ok(periods) => periods,
        Err(error) => return HandlerOutcome::Fail(error.to_string()),
    };
    let workdir = match Workdir::for_task(&ctx.settings.report) {
        Ok(workdir) => workdir,
        Err(error) => {
            return HandlerOutcome::Retry(format!("cannot create a scratch directory: {error}"))
        }
    };
    let first = *periods.first().expect("a run covers at least one period");
    let ledger = reporter
        .run_periods(&periods, &workdir.job(first), None)
        .await;
    if workdir.keep() {
        for summary in ledger.summaries() {
            if let Err(error) = write_bad_records(&workdir.path(), summary).await {
                tracing::warn!(period = %summary.period, %error, "cannot write the bad-records file");
            }
        }
    }
    for summary in ledger.summaries() {
        if state(summary) == PeriodState::Done {
            ctx.client
                .metrics()
                .scheduled_report_succeeded(&summary.period.to_string());
        }
    }
    answer(&ledger)
}

/// The schedule's `parameter` object, as this extension reads it.
#[derive(Debug, Clone, Default, PartialEq)]
struct ScheduleParameters {
    /// `period`: exactly this period.
    period: Option<Period>,
    /// `catch_up_periods`: this many recent periods.
    catch_up_periods: Option<u32>,
    /// Keys this extension does not read.
    unknown: Vec<String>,
}

/// A schedule parameter this extension cannot use; the task answers `fail` with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("schedule parameter {key}: {reason}")]
struct ParameterError {
    key: String,
    reason: String,
}

const PERIOD: &str = "period";
const CATCH_UP_PERIODS: &str = "catch_up_periods";

impl ScheduleParameters {
    /// Reads `schedule.parameter`; absent, `null` or `{}` is no parameter, and so is a key
    /// whose value is `null` (a field left empty in the portal).
    fn read(schedule: &Value) -> Result<ScheduleParameters, ParameterError> {
        let error = |key: &str, reason: String| ParameterError {
            key: key.to_string(),
            reason,
        };
        let fields = match schedule.get("parameter") {
            None | Some(Value::Null) => return Ok(ScheduleParameters::default()),
            Some(Value::Object(fields)) => fields,
            Some(other) => {
                return Err(error(
                    "parameter",
                    format!("is {}, not an object of parameters", kind(other)),
                ))
            }
        };
        let mut parameters = ScheduleParameters::default();
        for (key, value) in fields {
            match (key.as_str(), value) {
                (_, Value::Null) => {}
                (PERIOD, Value::String(text)) => {
                    parameters.period =
                        Some(Period::parse(text.trim()).map_err(|reason| error(PERIOD, reason))?);
                }
                (PERIOD, other) => {
                    return Err(error(
                        PERIOD,
                        format!(
                            "is {}, not a YYYY-MM month or a YYYY-MM-DD day in quotes",
                            kind(other)
                        ),
                    ))
                }
                (CATCH_UP_PERIODS, value) => {
                    parameters.catch_up_periods = Some(
                        catch_up_count(value).map_err(|reason| error(CATCH_UP_PERIODS, reason))?,
                    );
                }
                (other, _) => parameters.unknown.push(other.to_string()),
            }
        }
        if let (Some(period), Some(count)) = (parameters.period, parameters.catch_up_periods) {
            return Err(error(
                PERIOD,
                format!(
                    "names exactly {period}, and {CATCH_UP_PERIODS} asks for {count} periods; give one of the two"
                ),
            ));
        }
        Ok(parameters)
    }

    /// What the parameters ask of the period choice.
    fn request(&self) -> PeriodRequest {
        PeriodRequest {
            named: self
                .period
                .map(|period| (vec![period], "schedule parameter period")),
            cadence: None,
            catch_up: self
                .catch_up_periods
                .map(|count| (count, "schedule parameter catch_up_periods")),
        }
    }
}

/// A whole number of periods, 1 to [`MAX_CATCH_UP_PERIODS`]: a JSON number, or its digits as
/// text (the portal may keep every value as text).
fn catch_up_count(value: &Value) -> Result<u32, String> {
    let number = match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) if !text.trim().is_empty() => {
            let text = text.trim();
            match text.bytes().all(|b| b.is_ascii_digit()) {
                true => Some(text.parse::<u64>().unwrap_or(u64::MAX)),
                false => None,
            }
        }
        _ => None,
    };
    match number {
        Some(n) if (1..=u64::from(MAX_CATCH_UP_PERIODS)).contains(&n) => {
            Ok(u32::try_from(n).expect("within the bound"))
        }
        Some(n) => Err(format!("{n} is not between 1 and {MAX_CATCH_UP_PERIODS}")),
        None => Err(format!(
            "{value} is not a whole number of periods between 1 and {MAX_CATCH_UP_PERIODS}"
        )),
    }
}

/// What a JSON value is, for a message that does not repeat it.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// How a period came out, for the task's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeriodState {
    Done,
    /// Failed for a reason a later attempt may fix.
    Transient,
    /// Failed for a reason retrying cannot fix.
    Permanent,
}

fn state(summary: &Summary) -> PeriodState {
    if summary.empty_source() {
        PeriodState::Permanent
    } else if summary.failed() == 0 {
        PeriodState::Done
    } else if only_invalid_files(summary) {
        // The platform refused the uploads themselves: the same source would be refused again,
        // so only a person can help (the alerts name the files and the platform's detail).
        PeriodState::Permanent
    } else {
        PeriodState::Transient
    }
}

/// The task's answer for the whole run: `retry` naming the periods a later attempt may fix,
/// else `fail` naming the ones it cannot, else `success`; the ledger's headline follows.
fn answer(ledger: &Ledger) -> HandlerOutcome {
    let states: Vec<(Period, PeriodState)> = ledger
        .periods
        .iter()
        .map(|report| {
            let state = match &report.result {
                Ok(summary) => state(summary),
                Err(error) if error.is_transient() => PeriodState::Transient,
                Err(_) => PeriodState::Permanent,
            };
            (report.period, state)
        })
        .collect();
    let named = |wanted: PeriodState| -> Vec<String> {
        states
            .iter()
            .filter(|(_, state)| *state == wanted)
            .map(|(period, _)| period.to_string())
            .collect()
    };
    let (transient, permanent) = (named(PeriodState::Transient), named(PeriodState::Permanent));
    let headline = ledger.headline();
    if !transient.is_empty() {
        return HandlerOutcome::Retry(format!(
            "retry: {} failed for a reason a later attempt may fix\n{headline}",
            transient.join(", ")
        ));
    }
    if !permanent.is_empty() {
        return HandlerOutcome::Fail(format!(
            "{} failed for a reason retrying cannot fix\n{headline}",
            permanent.join(", ")
        ));
    }
    HandlerOutcome::Success(Some(headline))
}

/// Every group that failed did so because the platform found its upload invalid.
fn only_invalid_files(summary: &Summary) -> bool {
    summary
        .groups
        .iter()
        .filter(|g| matches!(g.result, FilingResult::Failed(_)))
        .all(|g| g.error_detail.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;
    use crate::usage::filing::GroupOutcome;
    use crate::usage::group::{CollectError, GroupKey};
    use crate::usage::record::BadRecords;
    use crate::usage::report::ReportError;
    use crate::usage::source::SourceError;
    use crate::usage::summary::PeriodReport;
    use serde_json::json;

    fn p(text: &str) -> Period {
        Period::parse(text).unwrap()
    }

    #[test]
    fn schedule_parameters_are_read_or_refused_naming_the_key() {
        let read = |parameter: Value| {
            ScheduleParameters::read(&json!({"id": "EFS-1", "method": "m", "parameter": parameter}))
        };
        let ok = |period: Option<&str>, count: Option<u32>, unknown: &[&str]| ScheduleParameters {
            period: period.map(p),
            catch_up_periods: count,
            unknown: unknown.iter().map(|k| k.to_string()).collect(),
        };
        assert_eq!(
            ScheduleParameters::read(&json!({"id": "EFS-1"})),
            Ok(ok(None, None, &[]))
        );
        for (parameter, expected) in [
            (json!(null), ok(None, None, &[])),
            (json!({}), ok(None, None, &[])),
            (json!({"period": "2024-02"}), ok(Some("2024-02"), None, &[])),
            (
                json!({"period": " 2024-02-29 "}),
                ok(Some("2024-02-29"), None, &[]),
            ),
            (json!({"catch_up_periods": 12}), ok(None, Some(12), &[])),
            (json!({"catch_up_periods": "5"}), ok(None, Some(5), &[])),
            (json!({"catch_up_periods": 366}), ok(None, Some(366), &[])),
            (
                json!({"period": null, "catch_up_periods": 2}),
                ok(None, Some(2), &[]),
            ),
            (
                json!({"catch_up_periods": 2, "note": "quarterly", "Period": "x"}),
                ok(None, Some(2), &["Period", "note"]),
            ),
        ] {
            assert_eq!(read(parameter.clone()), Ok(expected), "{parameter}");
        }
        for (parameter, key, reason) in [
            (json!("2024-02"), "parameter", "is a text, not an object of parameters"),
            (json!([1]), "parameter", "is a list, not an object of parameters"),
            (json!({"period": "2024-13"}), "period", "\"2024-13\": month 13 is not between 1 and 12"),
            (json!({"period": "February"}), "period", "\"February\" is not a YYYY-MM month or a YYYY-MM-DD day"),
            (json!({"period": 202402}), "period", "is a number, not a YYYY-MM month or a YYYY-MM-DD day in quotes"),
            (json!({"catch_up_periods": 0}), "catch_up_periods", "0 is not between 1 and 366"),
            (json!({"catch_up_periods": 367}), "catch_up_periods", "367 is not between 1 and 366"),
            (json!({"catch_up_periods": -1}), "catch_up_periods", "-1 is not a whole number of periods between 1 and 366"),
            (json!({"catch_up_periods": 2.5}), "catch_up_periods", "2.5 is not a whole number of periods between 1 and 366"),
            (json!({"catch_up_periods": "three"}), "catch_up_periods", "\"three\" is not a whole number of periods between 1 and 366"),
            (json!({"catch_up_periods": ""}), "catch_up_periods", "\"\" is not a whole number of periods between 1 and 366"),
            (json!({"catch_up_periods": true}), "catch_up_periods", "true is not a whole number of periods between 1 and 366"),
            (json!({"catch_up_periods": "99999999999999999999999"}), "catch_up_periods", "18446744073709551615 is not between 1 and 366"),
            (
                json!({"period": "2024-02", "catch_up_periods": 2}),
                "period",
                "names exactly 2024-02, and catch_up_periods asks for 2 periods; give one of the two",
            ),
        ] {
            let error = read(parameter.clone()).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("schedule parameter {key}: {reason}"),
                "{parameter}"
            );
        }
    }

    fn summary(period: &str, records_read: u64, groups: Vec<GroupOutcome>) -> Summary {
        Summary {
            period: p(period),
            records_read,
            groups,
            unmatched: Vec::new(),
            bad: BadRecords::default(),
            out_of_scope: Default::default(),
        }
    }

    fn group(result: FilingResult, invalid: bool) -> GroupOutcome {
        GroupOutcome {
            key: GroupKey {
                contract_id: "CRD-1".into(),
                product_id: "PRD-1".into(),
            },
            file_id: Some("UF-1".into()),
            rows: 3,
            result,
            workbook: None,
            error_detail: invalid.then(|| "row 2: bad".to_string()),
            awaiting_ready: false,
            transient: false,
            part: Default::default(),
            late: None,
        }
    }

    #[test]
    fn the_answer_retries_what_may_pass_and_fails_what_cannot() {
        let filed = |period| {
            Ok(summary(
                period,
                5,
                vec![group(FilingResult::Uploaded, false)],
            ))
        };
        let unchanged = |period| {
            Ok(summary(
                period,
                5,
                vec![group(
                    FilingResult::Skipped("already pending".into()),
                    false,
                )],
            ))
        };
        let empty = |period| Ok(summary(period, 0, Vec::new()));
        let invalid = |period| {
            Ok(summary(
                period,
                5,
                vec![group(FilingResult::Failed("invalid".into()), true)],
            ))
        };
        let stuck = |period| {
            Ok(summary(
                period,
                5,
                vec![group(
                    FilingResult::Failed("still processing".into()),
                    false,
                )],
            ))
        };
        let unreachable = || {
            Err(ReportError::Collect(CollectError::Source(
                SourceError::Http {
                    source_name: "https://vendor.example/u".into(),
                    status: 503,
                },
            )))
        };
        let unset = || {
            Err(ReportError::Config(ConfigError::Missing {
                name: "USAGE_SOURCE",
            }))
        };
        type Case = (
            Vec<(&'static str, Result<Summary, ReportError>)>,
            &'static str,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                vec![("2024-01", unchanged("2024-01")), ("2024-02", filed("2024-02"))],
                "success",
                "2 periods, oldest first: 2024-01 unchanged, 2024-02 filed\nperiod 2024-01: 5 records read",
            ),
            (vec![("2024-02", filed("2024-02"))], "success", "1 period: 2024-02 filed\nperiod 2024-02:"),
            (
                vec![("2024-01", unreachable()), ("2024-02", filed("2024-02"))],
                "retry",
                "retry: 2024-01 failed for a reason a later attempt may fix\n2 periods, oldest first: 2024-01 not reported, 2024-02 filed\nperiod 2024-01: not reported: usage source https://vendor.example/u: HTTP status 503\nperiod 2024-02:",
            ),
            (
                vec![("2024-01", empty("2024-01")), ("2024-02", stuck("2024-02")), ("2024-03", invalid("2024-03"))],
                "retry",
                "retry: 2024-02 failed for a reason a later attempt may fix\n3 periods, oldest first: 2024-01 empty source, 2024-02 1 group failed, 2024-03 1 group failed",
            ),
            (
                vec![("2024-01", empty("2024-01")), ("2024-02", filed("2024-02"))],
                "fail",
                "2024-01 failed for a reason retrying cannot fix\n2 periods, oldest first: 2024-01 empty source, 2024-02 filed",
            ),
            (
                vec![("2024-01", invalid("2024-01"))],
                "fail",
                "2024-01 failed for a reason retrying cannot fix\n1 period: 2024-01 1 group failed",
            ),
            (
                vec![("2024-01", unset()), ("2024-02", unset())],
                "fail",
                "2024-01, 2024-02 failed for a reason retrying cannot fix\n2 periods, oldest first: 2024-01 not reported, 2024-02 not reported\nperiod 2024-01: not reported: setting USAGE_SOURCE is required but not set",
            ),
        ];
        for (periods, code, start) in cases {
            let ledger = Ledger {
                periods: periods
                    .into_iter()
                    .map(|(period, result)| PeriodReport {
                        period: p(period),
                        result,
                    })
                    .collect(),
            };
            let (got, message) = match answer(&ledger) {
                HandlerOutcome::Success(message) => ("success", message.unwrap_or_default()),
                HandlerOutcome::Retry(message) => ("retry", message),
                HandlerOutcome::Fail(message) => ("fail", message),
                other => panic!("{other:?}"),
            };
            assert_eq!(got, code, "{message}");
            assert!(message.starts_with(start), "{message}\n---\n{start}");
        }
    }
}
