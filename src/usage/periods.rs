//! Which periods a run reports: exactly the ones named (`report --period`/`--from`/`--to`,
//! the schedule's `period` parameter, `REPORT_PERIOD`), or else the catch-up window — the
//! `CATCH_UP_PERIODS` most recent reportable periods of the cadence, oldest first.
//!
//! A pure function of what was asked, the settings and the time, so the command line and the
//! schedule choose the same way and a table test covers every combination. Rules it applies:
//! * a named period must be reportable (ended, plus `REPORT_DELAY_HOURS`): filed too early, a
//!   period could never be corrected, since re-runs leave filed groups alone;
//! * a named period must be of the run's cadence: a day filed beside its month (or a month
//!   beside its days) would report the same usage twice;
//! * named periods are reported once each, oldest first, at most [`MAX_CATCH_UP_PERIODS`].

use chrono::{DateTime, Utc};

use crate::config::{ReportSettings, MAX_CATCH_UP_PERIODS};
use crate::usage::period::{Cadence, NotEnded, Period};

/// What a run was asked to report, besides the settings. `source` fields name where a value
/// came from (`--period`, `schedule parameter period`, …) for the messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeriodRequest {
    /// Exactly these periods, and where they were named.
    pub named: Option<(Vec<Period>, &'static str)>,
    /// The cadence, overriding `REPORT_CADENCE` (`report --cadence`), and where it was given.
    pub cadence: Option<(Cadence, &'static str)>,
    /// How many recent periods, overriding `CATCH_UP_PERIODS` and `REPORT_PERIOD` (the
    /// schedule's `catch_up_periods` parameter), and where it was given.
    pub catch_up: Option<(u32, &'static str)>,
}

/// Why the periods asked for cannot be reported; the message starts with where they were named.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PeriodsError {
    #[error("{named_by}: {not_ended}")]
    NotReportable {
        named_by: &'static str,
        not_ended: NotEnded,
    },
    #[error("{named_by}: {reason}")]
    Invalid {
        named_by: &'static str,
        reason: String,
    },
}

impl PeriodRequest {
    /// The periods to report at `now`, oldest first.
    pub fn choose(
        &self,
        settings: &ReportSettings,
        now: DateTime<Utc>,
    ) -> Result<Vec<Period>, PeriodsError> {
        choose(self, settings, now)
    }
}

fn choose(
    request: &PeriodRequest,
    settings: &ReportSettings,
    now: DateTime<Utc>,
) -> Result<Vec<Period>, PeriodsError> {
    let (cadence, cadence_source) = request
        .cadence
        .unwrap_or((settings.cadence, "REPORT_CADENCE"));
    let delay = settings.report_delay;
    let named = match (&request.named, request.catch_up) {
        (Some((periods, source)), _) => Some((periods.clone(), *source)),
        (None, Some(_)) => None,
        (None, None) => settings
            .report_period
            .map(|period| (vec![period], "REPORT_PERIOD")),
    };
    let Some((mut periods, source)) = named else {
        let (count, source) = request
            .catch_up
            .unwrap_or((settings.catch_up(cadence), "CATCH_UP_PERIODS"));
        if !(1..=MAX_CATCH_UP_PERIODS).contains(&count) {
            return Err(PeriodsError::Invalid {
                named_by: source,
                reason: format!("{count} is not between 1 and {MAX_CATCH_UP_PERIODS}"),
            });
        }
        return Ok(cadence.window(now, delay, count));
    };
    periods.sort();
    periods.dedup();
    if periods.is_empty() {
        return Err(PeriodsError::Invalid {
            named_by: source,
            reason: "names no period".into(),
        });
    }
    if periods.len() > MAX_CATCH_UP_PERIODS as usize {
        return Err(PeriodsError::Invalid {
            named_by: source,
            reason: format!(
                "names {} periods; one run reports at most {MAX_CATCH_UP_PERIODS}",
                periods.len()
            ),
        });
    }
    for period in &periods {
        if period.cadence() != cadence {
            return Err(PeriodsError::Invalid {
                named_by: source,
                reason: format!(
                    "{period} is a {} period, but {cadence_source} is {cadence}",
                    period.cadence()
                ),
            });
        }
        period
            .check_reportable(now, delay)
            .map_err(|not_ended| PeriodsError::NotReportable {
                named_by: source,
                not_ended,
            })?;
    }
    Ok(periods)
}

/// Every period from `from` to `to`, both included (`report --from P --to P`).
pub fn range(from: Period, to: Period) -> Result<Vec<Period>, String> {
    if from.cadence() != to.cadence() {
        return Err(format!(
            "{from} is a {} period and {to} a {} one",
            from.cadence(),
            to.cadence()
        ));
    }
    if from > to {
        return Err(format!("{from} comes after {to}"));
    }
    let mut periods = vec![from];
    while *periods.last().expect("not empty") < to {
        if periods.len() >= MAX_CATCH_UP_PERIODS as usize {
            return Err(format!(
                "{from} to {to} is more than {MAX_CATCH_UP_PERIODS} periods, the most one run reports"
            ));
        }
        periods.push(periods.last().expect("not empty").next());
    }
    Ok(periods)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SettingsSources;
    use chrono::TimeZone;

    fn settings(env: &[(&str, &str)]) -> ReportSettings {
        SettingsSources {
            env: Some(
                env.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..SettingsSources::default()
        }
        .load()
        .unwrap()
        .report
    }

    fn p(text: &str) -> Period {
        Period::parse(text).unwrap()
    }

    fn shown(periods: &[Period]) -> String {
        periods
            .iter()
            .map(Period::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn the_request_then_the_settings_choose_the_periods() {
        // 2024-03-02 05:00 UTC.
        let now = Utc.with_ymd_and_hms(2024, 3, 2, 5, 0, 0).unwrap();
        let named =
            |periods: &[&str], source| Some((periods.iter().map(|t| p(t)).collect(), source));
        let none = PeriodRequest::default();
        type Env<'a> = &'a [(&'a str, &'a str)];
        let cases: Vec<(Env, PeriodRequest, Result<&str, &str>)> = vec![
            // The window of the cadence, its default size, oldest first.
            (&[], none.clone(), Ok("2023-12 2024-01 2024-02")),
            (
                &[("REPORT_CADENCE", "daily")],
                none.clone(),
                Ok("2024-02-24 2024-02-25 2024-02-26 2024-02-27 2024-02-28 2024-02-29 2024-03-01"),
            ),
            (&[("CATCH_UP_PERIODS", "1")], none.clone(), Ok("2024-02")),
            // The delay moves the window: 1 March is not reportable before 06:00 on the 2nd.
            (
                &[
                    ("REPORT_CADENCE", "daily"),
                    ("REPORT_DELAY_HOURS", "6"),
                    ("CATCH_UP_PERIODS", "2"),
                ],
                none.clone(),
                Ok("2024-02-28 2024-02-29"),
            ),
            // REPORT_PERIOD is exactly one period.
            (
                &[("REPORT_PERIOD", "2023-06"), ("CATCH_UP_PERIODS", "5")],
                none.clone(),
                Ok("2023-06"),
            ),
            (
                &[("REPORT_PERIOD", "2024-03")],
                none.clone(),
                Err("REPORT_PERIOD: period 2024-03 is not reportable yet: it becomes reportable at 2024-04-01 00:00 UTC"),
            ),
            // A catch-up request beats REPORT_PERIOD and CATCH_UP_PERIODS.
            (
                &[("REPORT_PERIOD", "2023-06"), ("CATCH_UP_PERIODS", "5")],
                PeriodRequest {
                    catch_up: Some((2, "schedule parameter catch_up_periods")),
                    ..PeriodRequest::default()
                },
                Ok("2024-01 2024-02"),
            ),
            (
                &[],
                PeriodRequest {
                    catch_up: Some((0, "schedule parameter catch_up_periods")),
                    ..PeriodRequest::default()
                },
                Err("schedule parameter catch_up_periods: 0 is not between 1 and 366"),
            ),
            // Named periods beat everything; once each, oldest first.
            (
                &[("REPORT_PERIOD", "2023-06")],
                PeriodRequest {
                    named: named(&["2024-02", "2023-01", "2024-02"], "--period"),
                    catch_up: Some((2, "x")),
                    ..PeriodRequest::default()
                },
                Ok("2023-01 2024-02"),
            ),
            (
                &[],
                PeriodRequest {
                    named: named(&["2024-02", "2024-03"], "--period"),
                    ..PeriodRequest::default()
                },
                Err("--period: period 2024-03 is not reportable yet"),
            ),
            (
                &[("REPORT_DELAY_HOURS", "6")],
                PeriodRequest {
                    named: named(&["2024-03-01"], "schedule parameter period"),
                    cadence: Some((Cadence::Daily, "--cadence")),
                    ..PeriodRequest::default()
                },
                Err("schedule parameter period: period 2024-03-01 is not reportable yet: it becomes reportable at 2024-03-02 06:00 UTC (6 h after it ends, REPORT_DELAY_HOURS)"),
            ),
            (
                &[],
                PeriodRequest {
                    named: named(&["2024-02-29"], "--period"),
                    cadence: Some((Cadence::Daily, "--cadence")),
                    ..PeriodRequest::default()
                },
                Ok("2024-02-29"),
            ),
            // A period of the other cadence would file the same usage twice.
            (
                &[],
                PeriodRequest {
                    named: named(&["2024-02-29"], "schedule parameter period"),
                    ..PeriodRequest::default()
                },
                Err("schedule parameter period: 2024-02-29 is a daily period, but REPORT_CADENCE is monthly"),
            ),
            (
                &[("REPORT_PERIOD", "2024-01")],
                PeriodRequest {
                    cadence: Some((Cadence::Daily, "--cadence")),
                    ..PeriodRequest::default()
                },
                Err("REPORT_PERIOD: 2024-01 is a monthly period, but --cadence is daily"),
            ),
            // --cadence without periods: that cadence's window.
            (
                &[],
                PeriodRequest {
                    cadence: Some((Cadence::Daily, "--cadence")),
                    ..PeriodRequest::default()
                },
                Ok("2024-02-24 2024-02-25 2024-02-26 2024-02-27 2024-02-28 2024-02-29 2024-03-01"),
            ),
        ];
        for (env, request, expected) in cases {
            let chosen = choose(&request, &settings(env), now);
            match (chosen, expected) {
                (Ok(periods), Ok(expected)) => {
                    assert_eq!(shown(&periods), expected, "{env:?} {request:?}")
                }
                (Err(error), Err(expected)) => assert!(
                    error.to_string().starts_with(expected),
                    "{env:?} {request:?}: {error}"
                ),
                (chosen, expected) => {
                    panic!("{env:?} {request:?}: {chosen:?}, expected {expected:?}")
                }
            }
        }
    }

    #[test]
    fn a_range_holds_every_period_between_its_ends() {
        assert_eq!(
            shown(&range(p("2023-11"), p("2024-02")).unwrap()),
            "2023-11 2023-12 2024-01 2024-02"
        );
        assert_eq!(
            shown(&range(p("2024-02-28"), p("2024-03-01")).unwrap()),
            "2024-02-28 2024-02-29 2024-03-01"
        );
        assert_eq!(
            shown(&range(p("2024-02"), p("2024-02")).unwrap()),
            "2024-02"
        );
        assert_eq!(
            range(p("2024-02-01"), p("2024-02")).unwrap_err(),
            "2024-02-01 is a daily period and 2024-02 a monthly one"
        );
        assert_eq!(
            range(p("2024-03"), p("2024-02")).unwrap_err(),
            "2024-03 comes after 2024-02"
        );
        assert_eq!(range(p("2023-01-01"), p("2024-01-01")).unwrap().len(), 366);
        assert!(range(p("2023-01-01"), p("2024-01-02"))
            .unwrap_err()
            .contains("more than 366 periods"));
    }
}
