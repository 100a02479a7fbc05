//! The reporting period: a calendar month or a single day, in UTC. All date math lives here so
//! January (→ December of the previous year), leap years and month ends are handled in one
//! tested place.
//!
//! A period is reported only after it has ended, plus the vendor's `REPORT_DELAY_HOURS`: a
//! file filed for a running or future period would be submitted with part of its usage
//! missing, and re-runs skip filed groups, so it could never be corrected.
//! [`Period::check_reportable`] is that rule and [`Cadence::window`] the catch-up window built
//! on it, both pure functions of the time given.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Duration, Months, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc,
};

/// How often usage is reported: one file per group and month, or per group and day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Cadence {
    #[default]
    Monthly,
    Daily,
}

impl Cadence {
    /// `monthly` or `daily`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Cadence::Monthly => "monthly",
            Cadence::Daily => "daily",
        }
    }

    /// How many recent periods a scheduled run covers unless told otherwise: a quarter of
    /// months, a week of days.
    pub fn default_catch_up(&self) -> u32 {
        match self {
            Cadence::Monthly => 3,
            Cadence::Daily => 7,
        }
    }

    /// The period of this cadence that `time` falls in.
    pub fn period_of(&self, time: NaiveDateTime) -> Period {
        let date = time.date();
        match self {
            Cadence::Monthly => Period {
                cadence: Cadence::Monthly,
                first: date.with_day(1).expect("day 1 exists"),
            },
            Cadence::Daily => Period {
                cadence: Cadence::Daily,
                first: date,
            },
        }
    }

    /// The most recent period reportable at `now` with `delay` after its end.
    pub fn last_reportable(&self, now: DateTime<Utc>, delay: Duration) -> Period {
        self.period_of(now.naive_utc() - delay).previous()
    }

    /// The `count` most recent periods reportable at `now` (with `delay`), oldest first.
    pub fn window(&self, now: DateTime<Utc>, delay: Duration, count: u32) -> Vec<Period> {
        let mut periods = Vec::with_capacity(count as usize);
        let mut period = self.last_reportable(now, delay);
        for _ in 0..count {
            periods.push(period);
            period = period.previous();
        }
        periods.reverse();
        periods
    }
}

impl FromStr for Cadence {
    type Err = String;

    fn from_str(text: &str) -> Result<Cadence, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "monthly" => Ok(Cadence::Monthly),
            "daily" => Ok(Cadence::Daily),
            _ => Err(format!("{text:?} is not monthly or daily")),
        }
    }
}

impl fmt::Display for Cadence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A period that is not reportable yet was asked to be reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "period {period} is not reportable yet: it becomes reportable at {} UTC ({}), and a period can be reported only after it has ended",
    .reportable_at.format("%Y-%m-%d %H:%M"),
    match .delay_hours { 0 => "when it ends".to_string(), hours => format!("{hours} h after it ends, REPORT_DELAY_HOURS") }
)]
pub struct NotEnded {
    pub period: Period,
    pub reportable_at: NaiveDateTime,
    pub delay_hours: i64,
}

/// A month (`YYYY-MM`) or a day (`YYYY-MM-DD`). Periods order by cadence, then time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    cadence: Cadence,
    /// The period's first day (day 1 for a month).
    first: NaiveDate,
}

/// The years a period may fall in: a usage report before 2000 or after 9999 is a typo.
const YEARS: std::ops::RangeInclusive<i32> = 2000..=9999;

impl Period {
    /// The month `year-month`.
    pub fn new(year: i32, month: u32) -> Result<Self, String> {
        if !(1..=12).contains(&month) {
            return Err(format!("month {month} is not between 1 and 12"));
        }
        if !YEARS.contains(&year) {
            return Err(format!("year {year} is out of range"));
        }
        Ok(Period {
            cadence: Cadence::Monthly,
            first: NaiveDate::from_ymd_opt(year, month, 1).expect("validated month"),
        })
    }

    /// The day `date`.
    pub fn day(date: NaiveDate) -> Result<Self, String> {
        if !YEARS.contains(&date.year()) {
            return Err(format!("year {} is out of range", date.year()));
        }
        Ok(Period {
            cadence: Cadence::Daily,
            first: date,
        })
    }

    /// Parses `YYYY-MM` (a month) or `YYYY-MM-DD` (a day).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a YYYY-MM month or a YYYY-MM-DD day");
        let parts: Vec<&str> = text.split('-').collect();
        let digits =
            |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_digit());
        match parts[..] {
            [year, month] if digits(year, 4) && digits(month, 2) => {
                let year: i32 = year.parse().map_err(|_| bad())?;
                let month: u32 = month.parse().map_err(|_| bad())?;
                Period::new(year, month).map_err(|reason| format!("{text:?}: {reason}"))
            }
            [year, month, day] if digits(year, 4) && digits(month, 2) && digits(day, 2) => {
                let date = NaiveDate::from_ymd_opt(
                    year.parse().map_err(|_| bad())?,
                    month.parse().map_err(|_| bad())?,
                    day.parse().map_err(|_| bad())?,
                )
                .ok_or_else(|| format!("{text:?} is not a day of the calendar"))?;
                Period::day(date).map_err(|reason| format!("{text:?}: {reason}"))
            }
            _ => Err(bad()),
        }
    }

    /// The period a usage file covers, from its first to its last day: a whole month or a
    /// single day; `None` for any other span.
    pub fn covering(from: NaiveDate, to: NaiveDate) -> Option<Period> {
        if from == to {
            return Period::day(from).ok();
        }
        let month = Period::new(from.year(), from.month()).ok()?;
        (month.first_day() == from && month.last_day() == to).then_some(month)
    }

    /// The calendar month before the one `now` falls in (UTC).
    pub fn previous_to(now: DateTime<Utc>) -> Self {
        Cadence::Monthly.last_reportable(now, Duration::zero())
    }

    pub fn cadence(&self) -> Cadence {
        self.cadence
    }

    pub fn first_day(&self) -> NaiveDate {
        self.first
    }

    pub fn last_day(&self) -> NaiveDate {
        self.next()
            .first_day()
            .pred_opt()
            .expect("not the first representable day")
    }

    pub fn next(&self) -> Period {
        let first = match self.cadence {
            Cadence::Monthly => self.first + Months::new(1),
            Cadence::Daily => self.first.succ_opt().expect("a representable day"),
        };
        Period {
            cadence: self.cadence,
            first,
        }
    }

    pub fn previous(&self) -> Period {
        let first = match self.cadence {
            Cadence::Monthly => self.first - Months::new(1),
            Cadence::Daily => self.first.pred_opt().expect("a representable day"),
        };
        Period {
            cadence: self.cadence,
            first,
        }
    }

    /// When the period may be reported: its end plus `delay`.
    pub fn reportable_at(&self, delay: Duration) -> NaiveDateTime {
        self.next().start() + delay
    }

    /// The period may be reported at `now` with `delay` after its end (`REPORT_DELAY_HOURS`).
    pub fn check_reportable(&self, now: DateTime<Utc>, delay: Duration) -> Result<(), NotEnded> {
        let reportable_at = self.reportable_at(delay);
        if now.naive_utc() >= reportable_at {
            Ok(())
        } else {
            Err(NotEnded {
                period: *self,
                reportable_at,
                delay_hours: delay.num_hours(),
            })
        }
    }

    /// The period may be reported at `now`: its last second has passed (the next period has
    /// begun, in UTC).
    pub fn check_ended(&self, now: DateTime<Utc>) -> Result<(), NotEnded> {
        self.check_reportable(now, Duration::zero())
    }

    /// First second of the period.
    pub fn start(&self) -> NaiveDateTime {
        self.first_day().and_time(NaiveTime::MIN)
    }

    /// Last second of the period (`23:59:59` of its last day), as the template expects.
    pub fn end(&self) -> NaiveDateTime {
        self.last_day().and_hms_opt(23, 59, 59).expect("valid time")
    }

    /// True when `[start, end]` lies inside the period.
    pub fn contains(&self, start: NaiveDateTime, end: NaiveDateTime) -> bool {
        start >= self.start() && end <= self.end() && start <= end
    }

    /// `YYYYMM` or `YYYYMMDD`, for compact identifiers.
    pub fn compact(&self) -> String {
        match self.cadence {
            Cadence::Monthly => self.first.format("%Y%m").to_string(),
            Cadence::Daily => self.first.format("%Y%m%d").to_string(),
        }
    }

    /// "January 2024" or "5 January 2024".
    pub fn human(&self) -> String {
        match self.cadence {
            Cadence::Monthly => self.first.format("%B %Y").to_string(),
            Cadence::Daily => self.first.format("%-d %B %Y").to_string(),
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cadence {
            Cadence::Monthly => write!(f, "{}", self.first.format("%Y-%m")),
            Cadence::Daily => write!(f, "{}", self.first.format("%Y-%m-%d")),
        }
    }
}

impl FromStr for Period {
    type Err = String;

    fn from_str(text: &str) -> Result<Period, String> {
        Period::parse(text)
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
    let mut text = String::with_capacity(19);
    push_time(&mut text, time);
    text
}

/// Appends `time` as [`format_time`] spells it. Digits are written by hand: every workbook row
/// spells two times, and the formatting machinery took 7% of a 10M-record run's CPU.
pub fn push_time(text: &mut String, time: NaiveDateTime) {
    let year = time.year();
    if !(0..=9999).contains(&year) {
        // Outside four digits: the general form (never a reportable period).
        text.push_str(&format!(
            "{year:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            time.month(),
            time.day(),
            time.hour(),
            time.minute(),
            time.second()
        ));
        return;
    }
    let year = year as u32;
    let two = |value: u32| [b'0' + (value / 10) as u8, b'0' + (value % 10) as u8];
    let [y1, y2] = two(year / 100);
    let [y3, y4] = two(year % 100);
    let [mo1, mo2] = two(time.month());
    let [d1, d2] = two(time.day());
    let [h1, h2] = two(time.hour());
    let [mi1, mi2] = two(time.minute());
    let [s1, s2] = two(time.second());
    let bytes = [
        y1, y2, y3, y4, b'-', mo1, mo2, b'-', d1, d2, b' ', h1, h2, b':', mi1, mi2, b':', s1, s2,
    ];
    text.push_str(std::str::from_utf8(&bytes).expect("ASCII digits"));
}

/// The last two times read or spelled in one column, with their spellings. Records often
/// carry the same times as one of the two before: usage for the whole month, or for the same
/// day; or a subscription's records alternating between two intervals (the halves of a month,
/// two items on different intervals). So reading or spelling such a time again is a comparison
/// instead of the work. A record's two times are read from the source, spelled into its row
/// and read back by the row rules: in the 10M-record dry run's profile that was ~4.5% of the
/// CPU samples. Remembering one time, the 300k-record dry run took 0.6% fewer instructions
/// (7.709 → 7.661 billion). The bench's month alternates two intervals: remembering two, and
/// making quantities by one division (`Quantity::parse`) in the same change, took it from
/// 6.674 to 6.476 billion (3.0%).
#[derive(Debug, Clone, Default)]
pub struct LastTime {
    /// Each time with its spelling.
    recent: TwoRecent<(Option<NaiveDateTime>, String)>,
}

impl LastTime {
    /// [`parse_time`] of `text`.
    pub fn parse(&mut self, text: &str) -> Option<NaiveDateTime> {
        let known =
            |(time, spelled): &(Option<NaiveDateTime>, String)| time.is_some() && spelled == text;
        if let Some((time, _)) = self.recent.find(known) {
            return *time;
        }
        let time = parse_time(text)?;
        self.remember(time).push_str(text);
        Some(time)
    }

    /// [`push_time`] of `time` onto `text`.
    pub fn push(&mut self, text: &mut String, time: NaiveDateTime) {
        if self
            .recent
            .find(|(known, _)| *known == Some(time))
            .is_none()
        {
            push_time(self.remember(time), time);
        }
        text.push_str(&self.recent.latest().1);
    }

    /// Makes `time` the most recent, in place of the least recent; its spelling emptied.
    fn remember(&mut self, time: NaiveDateTime) -> &mut String {
        let (slot, spelled) = self.recent.replace_oldest();
        *slot = Some(time);
        spelled.clear();
        spelled
    }
}

/// The two most recently used of some entries, the most recent first: the memo of times read,
/// spelled or decoded again and again ([`LastTime`]; the report's times read back from its
/// scratch files). Two, not one: records alternating between two intervals missed a memo of one
/// on most rows; a look-up is then two comparisons at most.
#[derive(Debug, Clone, Default)]
pub struct TwoRecent<T> {
    entries: [T; 2],
}

impl<T> TwoRecent<T> {
    /// The entry `matches` picks, made the most recent.
    pub fn find(&mut self, matches: impl Fn(&T) -> bool) -> Option<&mut T> {
        let at = (0..2).find(|&at| matches(&self.entries[at]))?;
        self.entries.swap(0, at);
        Some(&mut self.entries[0])
    }

    /// The least recent entry, made the most recent, for the caller to overwrite.
    pub fn replace_oldest(&mut self) -> &mut T {
        self.entries.swap(0, 1);
        &mut self.entries[0]
    }

    /// The most recent entry.
    pub fn latest(&self) -> &T {
        &self.entries[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_last_time_reads_and_spells_as_the_functions_do() {
        let texts = [
            "2024-01-01 00:00:00",
            "2024-01-01 00:00:00",
            "2024-01-31 23:59:59",
            "2024-02-30 00:00:00",
            "2024-01-31 23:59:59",
            "2024-01-31 23:59:59 ",
            "",
            "2024-01-31 23:59:59",
            "2024-02-29 12:00:00",
            // Two times in turn, then a third in place of the least recent, each one again.
            "2024-01-31 23:59:59",
            "2024-02-29 12:00:00",
            "2024-01-15 00:00:00",
            "2024-02-29 12:00:00",
            "2024-01-31 23:59:59",
            "2024-01-15 00:00:00",
            "2024-01-15 00:00:00",
            "2024-02-29 12:00:00",
            "2024-01-31 23:59:59",
        ];
        let mut last = LastTime::default();
        for text in texts {
            assert_eq!(last.parse(text), parse_time(text), "{text:?}");
        }
        let mut last = LastTime::default();
        let mut spelled = String::from("kept ");
        let times = texts.iter().filter_map(|text| parse_time(text));
        let far = NaiveDate::from_ymd_opt(12_345, 1, 2)
            .unwrap()
            .and_hms_opt(3, 4, 5)
            .unwrap();
        for time in times.chain([far, far]) {
            spelled.truncate(5);
            last.push(&mut spelled, time);
            assert_eq!(spelled, format!("kept {}", format_time(time)));
        }
    }

    #[test]
    fn times_are_spelled_as_chrono_spells_them() {
        let start = parse_time("1999-12-31 23:59:58").unwrap();
        for step in (0..400_000).step_by(7_919) {
            let time = start + chrono::Duration::minutes(step) + chrono::Duration::seconds(step);
            assert_eq!(
                format_time(time),
                time.format("%Y-%m-%d %H:%M:%S").to_string()
            );
        }
        let far = NaiveDate::from_ymd_opt(12_345, 1, 2)
            .unwrap()
            .and_hms_opt(3, 4, 5)
            .unwrap();
        assert_eq!(format_time(far), "12345-01-02 03:04:05");
    }

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
            "period 2026-12 is not reportable yet: it becomes reportable at 2027-01-01 00:00 UTC (when it ends), and a period can be reported only after it has ended"
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
    fn parse_rejects_malformed_months_and_days() {
        for bad in [
            "2024-13",
            "2024-00",
            "24-01",
            "2024-1",
            "2024/01",
            "",
            "abcd-ef",
            "2024-02-30",
            "2023-02-29",
            "2024-01-1",
            "2024-01-01-01",
            "+024-01",
            "1999-12-31",
            "2024-01-01 ",
        ] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Period::parse("2024-02-30").unwrap_err(),
            "\"2024-02-30\" is not a day of the calendar"
        );
    }

    #[test]
    fn days_and_months_print_parse_and_step() {
        for (text, cadence, first, last, next, previous, compact, human) in [
            (
                "2024-02",
                Cadence::Monthly,
                "2024-02-01",
                "2024-02-29",
                "2024-03",
                "2024-01",
                "202402",
                "February 2024",
            ),
            (
                "2024-12",
                Cadence::Monthly,
                "2024-12-01",
                "2024-12-31",
                "2025-01",
                "2024-11",
                "202412",
                "December 2024",
            ),
            (
                "2025-01",
                Cadence::Monthly,
                "2025-01-01",
                "2025-01-31",
                "2025-02",
                "2024-12",
                "202501",
                "January 2025",
            ),
            (
                "2024-02-29",
                Cadence::Daily,
                "2024-02-29",
                "2024-02-29",
                "2024-03-01",
                "2024-02-28",
                "20240229",
                "29 February 2024",
            ),
            (
                "2025-01-01",
                Cadence::Daily,
                "2025-01-01",
                "2025-01-01",
                "2025-01-02",
                "2024-12-31",
                "20250101",
                "1 January 2025",
            ),
            (
                "2024-12-31",
                Cadence::Daily,
                "2024-12-31",
                "2024-12-31",
                "2025-01-01",
                "2024-12-30",
                "20241231",
                "31 December 2024",
            ),
        ] {
            let period: Period = text.parse().unwrap();
            assert_eq!(period.to_string(), text);
            assert_eq!(period.cadence(), cadence, "{text}");
            assert_eq!(period.first_day().to_string(), first, "{text}");
            assert_eq!(period.last_day().to_string(), last, "{text}");
            assert_eq!(period.next().to_string(), next, "{text}");
            assert_eq!(period.previous().to_string(), previous, "{text}");
            assert_eq!(period.compact(), compact, "{text}");
            assert_eq!(period.human(), human, "{text}");
            assert_eq!(
                Period::covering(period.first_day(), period.last_day()),
                Some(period)
            );
        }
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(Period::covering(day("2024-01-02"), day("2024-01-31")), None);
        assert_eq!(Period::covering(day("2024-01-01"), day("2024-02-29")), None);
    }

    #[test]
    fn the_window_holds_the_most_recent_reportable_periods_oldest_first() {
        let at = |y, m, d, h| Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap();
        let hours = Duration::hours;
        for (cadence, now, delay, count, expected) in [
            (
                Cadence::Monthly,
                at(2025, 1, 1, 0),
                hours(0),
                3,
                "2024-10 2024-11 2024-12",
            ),
            (
                Cadence::Monthly,
                at(2025, 1, 1, 5),
                hours(6),
                3,
                "2024-09 2024-10 2024-11",
            ),
            (Cadence::Monthly, at(2025, 1, 1, 6), hours(6), 1, "2024-12"),
            (
                Cadence::Monthly,
                at(2024, 3, 15, 0),
                hours(0),
                2,
                "2024-01 2024-02",
            ),
            (
                Cadence::Daily,
                at(2024, 3, 2, 0),
                hours(0),
                3,
                "2024-02-28 2024-02-29 2024-03-01",
            ),
            (
                Cadence::Daily,
                at(2025, 1, 1, 1),
                hours(2),
                2,
                "2024-12-29 2024-12-30",
            ),
            (Cadence::Daily, at(2025, 1, 1, 2), hours(2), 1, "2024-12-31"),
            (Cadence::Daily, at(2025, 1, 1, 2), hours(0), 0, ""),
        ] {
            let window: Vec<String> = cadence
                .window(now, delay, count)
                .iter()
                .map(Period::to_string)
                .collect();
            assert_eq!(
                window.join(" "),
                expected,
                "{cadence} at {now} delay {delay}"
            );
            for period in cadence.window(now, delay, count) {
                assert!(period.check_reportable(now, delay).is_ok(), "{period}");
            }
            assert!(cadence
                .last_reportable(now, delay)
                .next()
                .check_reportable(now, delay)
                .is_err());
        }
    }

    #[test]
    fn a_delay_moves_when_a_period_becomes_reportable_and_says_so() {
        let at = |y, m, d, h| Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap();
        let day = Period::parse("2024-03-01").unwrap();
        let delay = Duration::hours(6);
        assert!(day.check_reportable(at(2024, 3, 2, 5), delay).is_err());
        assert!(day.check_reportable(at(2024, 3, 2, 6), delay).is_ok());
        assert_eq!(
            day.check_reportable(at(2024, 3, 2, 5), delay).unwrap_err().to_string(),
            "period 2024-03-01 is not reportable yet: it becomes reportable at 2024-03-02 06:00 UTC (6 h after it ends, REPORT_DELAY_HOURS), and a period can be reported only after it has ended"
        );
    }

    #[test]
    fn cadences_parse_by_name() {
        assert_eq!("daily".parse(), Ok(Cadence::Daily));
        assert_eq!(" Monthly".parse(), Ok(Cadence::Monthly));
        assert!("weekly".parse::<Cadence>().is_err());
        assert_eq!(Cadence::Daily.default_catch_up(), 7);
        assert_eq!(Cadence::Monthly.default_catch_up(), 3);
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
