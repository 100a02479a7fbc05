//! The reporting month. All date math lives here so January (→ December of the previous year)
//! and leap years are handled in one tested place, in UTC.
//!
//! A month is reported only after it has ended: a file filed for a running or future month
//! would be submitted with part of its usage missing, and re-runs skip filed groups, so it
//! could never be corrected. [`Period::check_ended`] is that rule, a pure function of the month
//! and the time given.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};

/// A month that has not ended yet was asked to be reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "period {period} has not ended yet: it ends at {} UTC, and a month can be reported only after it has ended",
    .period.next().start().format("%Y-%m-%d %H:%M")
)]
pub struct NotEnded {
    pub period: Period,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    year: i32,
    month: u32,
}

impl Period {
    pub fn new(year: i32, month: u32) -> Result<Self, String> {
        if !(1..=12).contains(&month) {
            return Err(format!("month {month} is not between 1 and 12"));
        }
        if !(2000..=9999).contains(&year) {
            return Err(format!("year {year} is out of range"));
        }
        Ok(Period { year, month })
    }

    /// Parses `YYYY-MM`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a YYYY-MM month");
        let (year, month) = text.split_once('-').ok_or_else(bad)?;
        if year.len() != 4 || month.len() != 2 {
            return Err(bad());
        }
        let year: i32 = year.parse().map_err(|_| bad())?;
        let month: u32 = month.parse().map_err(|_| bad())?;
        Period::new(year, month).map_err(|reason| format!("{text:?}: {reason}"))
    }

    /// The calendar month before the one `now` falls in (UTC).
    pub fn previous_to(now: DateTime<Utc>) -> Self {
        let (year, month) = match now.month() {
            1 => (now.year() - 1, 12),
            m => (now.year(), m - 1),
        };
        Period { year, month }
    }

    pub fn year(&self) -> i32 {
        self.year
    }

    pub fn month(&self) -> u32 {
        self.month
    }

    pub fn first_day(&self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("validated month")
    }

    pub fn last_day(&self) -> NaiveDate {
        self.next()
            .first_day()
            .pred_opt()
            .expect("not the first representable day")
    }

    pub fn next(&self) -> Period {
        match self.month {
            12 => Period {
                year: self.year + 1,
                month: 1,
            },
            m => Period {
                year: self.year,
                month: m + 1,
            },
        }
    }

    /// The month may be reported at `now`: its last second has passed (the next month has
    /// begun, in UTC).
    pub fn check_ended(&self, now: DateTime<Utc>) -> Result<(), NotEnded> {
        if now.naive_utc() >= self.next().start() {
            Ok(())
        } else {
            Err(NotEnded { period: *self })
        }
    }

    /// First second of the month.
    pub fn start(&self) -> NaiveDateTime {
        self.first_day().and_time(NaiveTime::MIN)
    }

    /// Last second of the month (`23:59:59` of the last day), as the template expects.
    pub fn end(&self) -> NaiveDateTime {
        self.last_day().and_hms_opt(23, 59, 59).expect("valid time")
    }

    /// True when `[start, end]` lies inside the month.
    pub fn contains(&self, start: NaiveDateTime, end: NaiveDateTime) -> bool {
        start >= self.start() && end <= self.end() && start <= end
    }

    /// `YYYYMM`, for compact identifiers.
    pub fn compact(&self) -> String {
        format!("{:04}{:02}", self.year, self.month)
    }

    /// "January 2024".
    pub fn human(&self) -> String {
        self.first_day().format("%B %Y").to_string()
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Parses a `YYYY-MM-DD HH:MM:SS` timestamp: exactly that shape, digits where the format has
/// them. Read field by field rather than through a strftime pattern: it runs for every time
/// of every record, and of every row the validator checks.
pub fn parse_time(text: &str) -> Option<NaiveDateTime> {
    let bytes = text.as_bytes();
    if bytes.len() != 19 {
        return None;
    }
    let separators = [(4, b'-'), (7, b'-'), (10, b' '), (13, b':'), (16, b':')];
    if separators.iter().any(|&(at, byte)| bytes[at] != byte) {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u32> {
        bytes[from..to].iter().try_fold(0u32, |value, &byte| {
            byte.is_ascii_digit()
                .then(|| value * 10 + u32::from(byte - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(number(0, 4)?).ok()?,
        number(5, 7)?,
        number(8, 10)?,
    )?;
    date.and_hms_opt(number(11, 13)?, number(14, 16)?, number(17, 19)?)
}

/// `YYYY-MM-DD HH:MM:SS`, the inverse of [`parse_time`].
pub fn format_time(time: NaiveDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        time.year(),
        time.month(),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn times_round_trip_in_exactly_one_shape() {
        for text in [
            "2024-02-29 23:59:59",
            "0001-01-01 00:00:00",
            "2024-12-31 00:00:00",
        ] {
            let time = parse_time(text).unwrap();
            assert_eq!(format_time(time), text);
        }
        for bad in [
            "",
            "2024-02-30 00:00:00",
            "2023-02-29 12:00:00",
            "2024-13-01 00:00:00",
            "2024-01-01 24:00:00",
            "2024-01-01 00:60:00",
            "2024-01-01 00:00:60",
            "2024-01-01T00:00:00",
            "2024/01/01 00:00:00",
            "2024-1-01 00:00:00 ",
            "+024-01-01 00:00:00",
            "2024-01-01 00:00:0x",
            "2024-01-01 00:00:00Z",
            "２024-01-01 00:00:0",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn january_reports_december_of_the_previous_year() {
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 5).unwrap();
        assert_eq!(Period::previous_to(now), Period::parse("2024-12").unwrap());
        let now = Utc.with_ymd_and_hms(2025, 3, 31, 23, 59, 59).unwrap();
        assert_eq!(Period::previous_to(now).to_string(), "2025-02");
    }

    #[test]
    fn a_month_can_be_reported_only_after_it_has_ended() {
        let at = |y, m, d, h, min, s| Utc.with_ymd_and_hms(y, m, d, h, min, s).unwrap();
        for (month, now, ended) in [
            ("2026-11", at(2026, 12, 6, 12, 0, 0), true),
            ("2026-12", at(2026, 12, 6, 12, 0, 0), false),
            ("2027-05", at(2026, 12, 6, 12, 0, 0), false),
            ("2026-12", at(2026, 12, 31, 23, 59, 59), false),
            ("2026-12", at(2027, 1, 1, 0, 0, 0), true),
            ("2024-02", at(2024, 2, 29, 23, 59, 59), false),
            ("2024-02", at(2024, 3, 1, 0, 0, 0), true),
            ("2020-01", at(2026, 12, 6, 0, 0, 0), true),
        ] {
            let period = Period::parse(month).unwrap();
            assert_eq!(period.check_ended(now).is_ok(), ended, "{month} at {now}");
        }
        let error = Period::parse("2026-12")
            .unwrap()
            .check_ended(at(2026, 12, 6, 0, 0, 0))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "period 2026-12 has not ended yet: it ends at 2027-01-01 00:00 UTC, and a month can be reported only after it has ended"
        );
    }

    #[test]
    fn month_bounds_include_leap_days() {
        let feb = Period::parse("2024-02").unwrap();
        assert_eq!(feb.last_day().to_string(), "2024-02-29");
        assert_eq!(format_time(feb.end()), "2024-02-29 23:59:59");
        assert_eq!(Period::parse("2023-02").unwrap().last_day().day(), 28);
        assert_eq!(
            Period::parse("2024-12").unwrap().last_day().to_string(),
            "2024-12-31"
        );
        assert_eq!(format_time(feb.start()), "2024-02-01 00:00:00");
    }

    #[test]
    fn parse_rejects_malformed_months() {
        for bad in [
            "2024-13", "2024-00", "24-01", "2024-1", "2024/01", "", "abcd-ef",
        ] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn contains_checks_both_ends() {
        let p = Period::parse("2024-01").unwrap();
        let t = |s: &str| parse_time(s).unwrap();
        assert!(p.contains(t("2024-01-01 00:00:00"), t("2024-01-31 23:59:59")));
        assert!(!p.contains(t("2023-12-31 23:59:59"), t("2024-01-02 00:00:00")));
        assert!(!p.contains(t("2024-01-31 00:00:00"), t("2024-02-01 00:00:00")));
        assert!(!p.contains(t("2024-01-05 00:00:00"), t("2024-01-04 00:00:00")));
    }

    #[test]
    fn time_parsing_is_strict() {
        assert!(parse_time("2024-01-01 00:00:00").is_some());
        for bad in [
            "2024-01-01T00:00:00",
            "2024-01-01 0:00:00",
            "2024-02-30 00:00:00",
            "2024-01-01",
        ] {
            assert!(parse_time(bad).is_none(), "{bad}");
        }
    }
}
