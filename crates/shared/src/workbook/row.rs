//! The row model of a usage workbook: the `usage_records` sheet, its 17 columns in order, a
//! row as typed cells, and an item's quantity precision.
//!
//! Everything that reads or writes a workbook speaks in these types (the writer, the reader,
//! the rules, the simulator's store of uploads), so a column can be named in one place only.

use std::fmt::{self, Write as _};
use std::str::FromStr;

/// The sheet the platform reads records from.
pub const SHEET: &str = "usage_records";

/// The header row of [`SHEET`], exactly, in this order.
pub const COLUMNS: [&str; 17] = [
    "record_id",
    "record_note",
    "item_search_criteria",
    "item_search_value",
    "amount",
    "quantity",
    "start_time_utc",
    "end_time_utc",
    "asset_search_criteria",
    "asset_search_value",
    "item_name",
    "item_mpn",
    "item_precision",
    "item_unit",
    "category_id",
    "asset_recon_id",
    "tier",
];

/// How many fractional digits an item's quantity may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Integer,
    Decimal(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown item precision {0:?} (expected integer or decimal(n))")]
pub struct UnknownPrecision(pub String);

impl Precision {
    /// Parses `integer` or `decimal(n)`, in any letter case (the published model capitalises).
    pub fn parse(text: &str) -> Result<Self, UnknownPrecision> {
        let unknown = || UnknownPrecision(text.to_string());
        let lower = text.trim().to_ascii_lowercase();
        if lower == "integer" {
            return Ok(Precision::Integer);
        }
        let digits = lower
            .strip_prefix("decimal(")
            .and_then(|rest| rest.strip_suffix(')'))
            .ok_or_else(unknown)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unknown());
        }
        digits
            .parse()
            .map(Precision::Decimal)
            .map_err(|_| unknown())
    }

    /// The most fractional digits a quantity may have.
    pub fn max_fraction_digits(self) -> u32 {
        match self {
            Precision::Integer => 0,
            Precision::Decimal(digits) => u32::from(digits),
        }
    }
}

impl FromStr for Precision {
    type Err = UnknownPrecision;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Precision::parse(text)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Precision::Integer => f.write_str("integer"),
            Precision::Decimal(digits) => write!(f, "decimal({digits})"),
        }
    }
}

/// Fractional digits of the shortest decimal text that reads back as `value` (what a person
/// sees in the cell), e.g. 0.1 → 1 although its binary value has more. `value` must be finite.
pub fn fraction_digits(value: f64, scratch: &mut String) -> u32 {
    if value.fract() == 0.0 {
        return 0;
    }
    if let Some(short) = ShortDecimal::of(value.abs()) {
        return short.digits;
    }
    scratch.clear();
    // Display of f64 is the shortest round-trip form and never uses exponent notation.
    write!(scratch, "{value}").expect("writing to a String cannot fail");
    scratch
        .split_once('.')
        .map_or(0, |(_, fraction)| fraction.len() as u32)
}

/// A positive fraction below a billion with at most six fraction digits, as the shortest
/// decimal text that reads back as it (what `Display` writes): `units / 10^digits`.
///
/// Most quantities are such numbers, and every fractional one was spelled twice by the
/// formatting machinery (its precision checked, then its cell written): 154 M of a 300k-record
/// dry run's 6,975 M instructions went to formatting, 7 M after. Here it takes a
/// multiplication, a rounding and a division per digit count tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortDecimal {
    pub units: u64,
    pub digits: u32,
}

impl ShortDecimal {
    const MAX_DIGITS: u32 = 6;
    const BELOW: f64 = 1e9;

    /// `value` as its shortest decimal, if it is a fraction in range; `None` for the rest
    /// (whole, negative, out of range, more digits), which `Display` spells.
    ///
    /// Why it is exact: a decimal of `k` fraction digits, `m / 10^k`, reads back as `value`
    /// exactly when it lies within half a unit in the last place of `value`. Below 1e9
    /// (< 2^30) that half unit is at most 2^-24, so for k ≤ 6 at most one whole `m` lies within
    /// 0.06 of `value · 10^k`; the rounded product (itself within 2^-4 of the exact one, being
    /// below 2^50) is that `m` when there is one. Both `m` (< 2^53) and `10^k` are exact
    /// doubles and division rounds correctly, so `m / 10^k == value` is exactly the read-back
    /// test. The first `k` that passes is the fewest fraction digits; no decimal in that half
    /// unit is whole, so the integer part is fixed and fewest fraction digits means fewest
    /// digits: the text `Display` writes, with no trailing zero.
    pub fn of(value: f64) -> Option<ShortDecimal> {
        if !(value > 0.0 && value < Self::BELOW) || value.fract() == 0.0 {
            return None;
        }
        let mut scale = 1.0;
        for digits in 1..=Self::MAX_DIGITS {
            scale *= 10.0;
            let units = (value * scale).round();
            if units / scale == value {
                return Some(ShortDecimal {
                    units: units as u64,
                    digits,
                });
            }
        }
        None
    }

    /// Appends the text, e.g. `12.05`.
    pub fn push_to(self, out: &mut Vec<u8>) {
        let scale = 10u64.pow(self.digits);
        let mut buffer = itoa::Buffer::new();
        out.extend_from_slice(buffer.format(self.units / scale).as_bytes());
        out.push(b'.');
        let fraction = buffer.format(self.units % scale).as_bytes();
        out.extend(std::iter::repeat_n(
            b'0',
            self.digits as usize - fraction.len(),
        ));
        out.extend_from_slice(fraction);
    }
}

/// One cell's content as the template sees it. An empty string reads as [`Cell::Empty`]: the
/// template wants unused cells truly empty, and an empty text cell is that in all but name.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Cell {
    #[default]
    Empty,
    Text(String),
    Number(f64),
}

impl Cell {
    /// A text cell, or [`Cell::Empty`] for an empty string.
    pub fn text(text: impl Into<String>) -> Cell {
        let text = text.into();
        if text.is_empty() {
            Cell::Empty
        } else {
            Cell::Text(text)
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Cell::Empty)
    }
}

/// One row of [`SHEET`], one field per column of [`COLUMNS`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UsageRow {
    pub record_id: Cell,
    pub record_note: Cell,
    pub item_search_criteria: Cell,
    pub item_search_value: Cell,
    pub amount: Cell,
    pub quantity: Cell,
    pub start_time_utc: Cell,
    pub end_time_utc: Cell,
    pub asset_search_criteria: Cell,
    pub asset_search_value: Cell,
    pub item_name: Cell,
    pub item_mpn: Cell,
    pub item_precision: Cell,
    pub item_unit: Cell,
    pub category_id: Cell,
    pub asset_recon_id: Cell,
    pub tier: Cell,
}

impl UsageRow {
    /// The cells in [`COLUMNS`] order.
    pub fn cells(&self) -> [&Cell; 17] {
        [
            &self.record_id,
            &self.record_note,
            &self.item_search_criteria,
            &self.item_search_value,
            &self.amount,
            &self.quantity,
            &self.start_time_utc,
            &self.end_time_utc,
            &self.asset_search_criteria,
            &self.asset_search_value,
            &self.item_name,
            &self.item_mpn,
            &self.item_precision,
            &self.item_unit,
            &self.category_id,
            &self.asset_recon_id,
            &self.tier,
        ]
    }

    /// The cells in [`COLUMNS`] order, moved out of the row.
    pub fn into_cells(self) -> [Cell; 17] {
        [
            self.record_id,
            self.record_note,
            self.item_search_criteria,
            self.item_search_value,
            self.amount,
            self.quantity,
            self.start_time_utc,
            self.end_time_utc,
            self.asset_search_criteria,
            self.asset_search_value,
            self.item_name,
            self.item_mpn,
            self.item_precision,
            self.item_unit,
            self.category_id,
            self.asset_recon_id,
            self.tier,
        ]
    }

    /// The row whose cells, in [`COLUMNS`] order, are `cells`.
    pub fn from_cells(cells: [Cell; 17]) -> UsageRow {
        let mut cells = cells.into_iter();
        // Fields of a struct expression are evaluated in the order written: COLUMNS order.
        let mut next = || cells.next().unwrap_or_default();
        UsageRow {
            record_id: next(),
            record_note: next(),
            item_search_criteria: next(),
            item_search_value: next(),
            amount: next(),
            quantity: next(),
            start_time_utc: next(),
            end_time_utc: next(),
            asset_search_criteria: next(),
            asset_search_value: next(),
            item_name: next(),
            item_mpn: next(),
            item_precision: next(),
            item_unit: next(),
            category_id: next(),
            asset_recon_id: next(),
            tier: next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_parses_any_case_and_displays_lower_case() {
        assert_eq!(Precision::parse("integer"), Ok(Precision::Integer));
        assert_eq!(Precision::parse("Integer"), Ok(Precision::Integer));
        assert_eq!(Precision::parse("decimal(2)"), Ok(Precision::Decimal(2)));
        assert_eq!("Decimal(8)".parse(), Ok(Precision::Decimal(8)));
        for bad in [
            "",
            "decimal",
            "decimal()",
            "decimal(-1)",
            "decimal(2",
            "float",
            "decimal(999)",
        ] {
            assert!(Precision::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Precision::Decimal(4).to_string(), "decimal(4)");
        assert_eq!(Precision::Integer.to_string(), "integer");
    }

    #[test]
    fn fraction_digits_counts_what_a_person_sees() {
        let mut scratch = String::new();
        for (value, digits) in [
            (3.0, 0),
            (0.0, 0),
            (1e20, 0),
            (12.5, 1),
            (0.1, 1),
            (0.1 + 0.2, 17), // 0.30000000000000004
            (1.25, 2),
            (1e-7, 7),
            (123456.789, 3),
        ] {
            assert_eq!(fraction_digits(value, &mut scratch), digits, "{value}");
        }
        assert!(Precision::Decimal(2).max_fraction_digits() == 2);
    }

    proptest::proptest! {
        /// Decimals of up to six fraction digits below a billion, and any positive double,
        /// spelled and counted as `Display` spells them.
        #[test]
        fn short_decimals_are_what_display_writes(
            units in 1u64..1_000_000_000_000_000,
            digits in 1u32..=6,
            bits in 0x3E00_0000_0000_0000u64..0x41D0_0000_0000_0000,
        ) {
            let decimal = units as f64 / 10f64.powi(digits as i32);
            for value in [decimal, f64::from_bits(bits)] {
                let shown = value.to_string();
                let mut scratch = String::new();
                let counted = shown.split_once('.').map_or(0, |(_, fraction)| fraction.len());
                proptest::prop_assert_eq!(fraction_digits(value, &mut scratch) as usize, counted);
                if let Some(short) = ShortDecimal::of(value) {
                    let mut text = Vec::new();
                    short.push_to(&mut text);
                    proptest::prop_assert_eq!(String::from_utf8(text).unwrap(), shown);
                }
            }
        }
    }

    #[test]
    fn short_decimals_cover_fractions_in_range_only() {
        for (value, short) in [
            (12.05, Some((1205, 2))),
            (0.5, Some((5, 1))),
            (0.000001, Some((1, 6))),
            (999_999_999.5, Some((9_999_999_995, 1))),
            (4391.16, Some((439_116, 2))),
            (0.1 + 0.2, None),
            (1e-7, None),
            (1e9 + 0.5, None),
            (3.0, None),
            (0.0, None),
            (-1.5, None),
            (f64::NAN, None),
            (f64::INFINITY, None),
        ] {
            let found = ShortDecimal::of(value).map(|short| (short.units, short.digits));
            assert_eq!(found, short, "{value}");
        }
    }

    #[test]
    fn cells_follow_the_column_order() {
        let named = UsageRow::from_cells(COLUMNS.map(Cell::text));
        assert_eq!(named.quantity, Cell::text("quantity"));
        assert_eq!(named.tier, Cell::text("tier"));
        let names: Vec<&Cell> = named.cells().into();
        assert_eq!(names, COLUMNS.map(Cell::text).iter().collect::<Vec<_>>());
        assert_eq!(named.into_cells(), COLUMNS.map(Cell::text));
    }
}
