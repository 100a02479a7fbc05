//! Vendor usage records (the README's "Vendor records"): the raw fields a source yields, the
//! checks that need nothing but the record itself and the month, and the reasons a record is
//! bad or out of scope.
//!
//! Checks that need Connect (does the subscription exist, what precision has the item) happen in
//! [`crate::usage::resolve`]; both produce the same [`BadRecord`] so every rejection is reported
//! the same way, with the record's line and reason.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufWriter, Write};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::NaiveDateTime;
use sha2::{Digest, Sha256};

use payg_shared::record::{trim, CompactString, IdKeys};
pub use payg_shared::record::{RawRecord, FIELDS};

use crate::usage::interner::Interner;
use crate::usage::period::{LastTime, Period};
use crate::usage::seen::{Counter, Key};
use crate::usage::spill::{scratch_root, ScratchDir};
use crate::usage::workbook::{too_long, Precision, MAX_TEXT};

/// A non-negative decimal quantity. The workbook cell is a number, so the value is kept as
/// one; the number of fractional digits the vendor wrote is kept to check the item's precision
/// (nothing is rounded: a quantity that does not fit is refused).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantity {
    value: f64,
    fraction_digits: u8,
}

/// Significant digits a workbook number (an IEEE double) carries exactly: any decimal with at
/// most this many converts to a double and back unchanged.
pub const MAX_SIGNIFICANT_DIGITS: usize = 15;

/// The double nearest `<whole>.<fraction>` (ASCII digits, at most [`MAX_SIGNIFICANT_DIGITS`]
/// significant ones), without the text-to-number machinery: the digits as one whole number
/// divided by a power of ten. Both are exact doubles (the number is below 10^15 < 2^53, and
/// powers of ten up to 10^22 are exact), and a division's result is the nearest double to the
/// true quotient, which is the decimal itself: so exactly what parsing the text gives. `None`
/// for more than 22 fractional digits (then the text is parsed). Parsing took ~1% of a
/// 10M-record dry run's CPU samples.
fn exact_decimal(whole: &str, fraction: &str) -> Option<f64> {
    const POWERS: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    let power = *POWERS.get(fraction.len())?;
    let digits = whole.bytes().chain(fraction.bytes());
    let number = digits.fold(0u64, |number, digit| number * 10 + u64::from(digit - b'0'));
    Some(number as f64 / power)
}

impl Quantity {
    /// Accepts plain decimals (`12`, `12.50`, `-3`, `.5`); no exponents, no separators. More
    /// than [`MAX_SIGNIFICANT_DIGITS`] significant digits are refused, never rounded.
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let text = trim(text);
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && fraction.is_empty())
            || !all_digits(whole)
            || !all_digits(fraction)
            || fraction.len() > 30
        {
            return Err(QuantityError::Unparsable);
        }
        let fraction = fraction.trim_end_matches('0');
        let whole = whole.trim_start_matches('0');
        if negative && !(whole.is_empty() && fraction.is_empty()) {
            return Err(QuantityError::Negative);
        }
        // Digits from the first non-zero one to the last one that is not a trailing zero.
        let significant = match whole.len() {
            0 => fraction.trim_start_matches('0').len(),
            whole => whole + fraction.len(),
        };
        if significant > MAX_SIGNIFICANT_DIGITS {
            return Err(QuantityError::TooManyDigits(significant));
        }
        let value = match exact_decimal(whole, fraction) {
            Some(value) => value,
            None => {
                // `0<whole>.<fraction>0` on the stack: at most 15 whole digits (checked above)
                // and 30 fractional ones.
                let mut text = [0u8; 50];
                let mut len = 0;
                for part in [b"0", whole.as_bytes(), b".", fraction.as_bytes(), b"0"] {
                    text[len..len + part.len()].copy_from_slice(part);
                    len += part.len();
                }
                std::str::from_utf8(&text[..len])
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or(QuantityError::Unparsable)?
            }
        };
        Ok(Quantity {
            value,
            fraction_digits: fraction.len() as u8,
        })
    }

    pub fn value(&self) -> f64 {
        self.value
    }

    /// The value and the fractional digits the vendor wrote, for storing the quantity.
    pub(crate) fn parts(&self) -> (f64, u8) {
        (self.value, self.fraction_digits)
    }

    /// A quantity stored with [`Quantity::parts`].
    pub(crate) fn from_parts(value: f64, fraction_digits: u8) -> Quantity {
        Quantity {
            value,
            fraction_digits,
        }
    }

    /// Whether the item's precision can hold this quantity exactly.
    pub fn fits(&self, precision: Precision) -> Result<(), BadReason> {
        match precision {
            Precision::Integer if self.fraction_digits > 0 => Err(BadReason::FractionalQuantity),
            Precision::Decimal(digits) if self.fraction_digits > digits => {
                Err(BadReason::ExcessPrecision)
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.value)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityError {
    Unparsable,
    Negative,
    /// More significant digits (this many) than a workbook number holds exactly.
    TooManyDigits(usize),
}

/// A record that passed every check that needs only itself and the month. Kept compact: a
/// month's records are held until grouping is done, so subscription ids and item names are
/// shared between the records that repeat them.
#[derive(Debug, Clone, PartialEq)]
pub struct VendorRecord {
    pub line: u64,
    pub element: Option<u64>,
    pub object: Option<Arc<str>>,
    pub subscription_id: Arc<str>,
    pub item: Arc<str>,
    pub quantity: Quantity,
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
    pub record_id: RecordId,
    /// Shared between the records that repeat it, like names.
    pub note: Option<Arc<str>>,
}

/// A record's id: the vendor's, or derived from the record's content (see [`RecordChecker`]).
/// A derived id is kept as its parts and spelled out only when written: a month holds one per
/// row, and the parts take a third of the text's room.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RecordId {
    Vendor(Box<str>),
    Derived { digest: [u8; 12], occurrence: u32 },
}

impl RecordId {
    /// The id as the workbook carries it: `PAYG-<YYYYMM>-<hash>-<n>` when derived.
    pub fn spelled(&self, period: Period) -> String {
        let mut spelled = String::new();
        self.spell_into(&mut spelled, period);
        spelled
    }

    /// Appends [`RecordId::spelled`] to `text` (the workbook writer reuses one string a column).
    pub fn spell_into(&self, text: &mut String, period: Period) {
        match self {
            RecordId::Vendor(id) => text.push_str(id),
            RecordId::Derived { digest, occurrence } => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let mut occurrence_digits = itoa::Buffer::new();
                let occurrence = occurrence_digits.format(*occurrence);
                text.reserve(13 + 2 * digest.len() + occurrence.len());
                text.push_str("PAYG-");
                text.push_str(&period.compact());
                text.push('-');
                for byte in digest {
                    text.push(char::from(HEX[usize::from(byte >> 4)]));
                    text.push(char::from(HEX[usize::from(byte & 0x0f)]));
                }
                text.push('-');
                text.push_str(occurrence);
            }
        }
    }
}

/// Why a record is bad: never uploaded, reported with its line.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum BadReason {
    MissingField,
    UnparsableField,
    NegativeQuantity,
    FractionalQuantity,
    ExcessPrecision,
    /// More significant digits than a workbook number holds exactly.
    TooManyDigits,
    /// A text longer than a workbook cell holds.
    FieldTooLong,
    EndBeforeStart,
    OutsidePeriod,
    UnknownSubscription,
    UnknownItem,
    DuplicateRecordId,
}

impl BadReason {
    pub const ALL: [BadReason; 12] = [
        BadReason::MissingField,
        BadReason::UnparsableField,
        BadReason::NegativeQuantity,
        BadReason::FractionalQuantity,
        BadReason::ExcessPrecision,
        BadReason::TooManyDigits,
        BadReason::FieldTooLong,
        BadReason::EndBeforeStart,
        BadReason::OutsidePeriod,
        BadReason::UnknownSubscription,
        BadReason::UnknownItem,
        BadReason::DuplicateRecordId,
    ];

    pub fn code(&self) -> &'static str {
        match self {
            BadReason::MissingField => "missing_field",
            BadReason::UnparsableField => "unparsable_field",
            BadReason::NegativeQuantity => "negative_quantity",
            BadReason::FractionalQuantity => "fractional_quantity",
            BadReason::ExcessPrecision => "excess_precision",
            BadReason::TooManyDigits => "too_many_digits",
            BadReason::FieldTooLong => "field_too_long",
            BadReason::EndBeforeStart => "end_before_start",
            BadReason::OutsidePeriod => "outside_period",
            BadReason::UnknownSubscription => "unknown_subscription",
            BadReason::UnknownItem => "unknown_item",
            BadReason::DuplicateRecordId => "duplicate_record_id",
        }
    }
}

impl fmt::Display for BadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BadRecord {
    pub line: u64,
    /// The record's 0-based index in a JSON array source.
    pub element: Option<u64>,
    /// The object of a multi-object source the record is in; its line is within the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Arc<str>>,
    pub reason: BadReason,
    pub detail: String,
    /// The id the record has or would have been given; none when the row could not be read.
    pub record_id: Option<RecordId>,
}

impl BadRecord {
    /// A detail longer than `MAX_DETAIL` characters (it quotes what the source sent) is
    /// shortened, marked with `…`.
    pub fn new(line: u64, reason: BadReason, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if let Some((cut, _)) = detail.char_indices().nth(MAX_DETAIL) {
            detail.truncate(cut);
            detail.push('…');
        }
        BadRecord {
            line,
            element: None,
            object: None,
            reason,
            detail,
            record_id: None,
        }
    }

    /// The same, naming the JSON array element it came from.
    pub fn in_element(self, element: Option<u64>) -> Self {
        BadRecord { element, ..self }
    }

    /// The same, naming the object of a multi-object source it came from.
    pub fn in_object(self, object: Option<Arc<str>>) -> Self {
        BadRecord { object, ..self }
    }

    /// Where the record is: `line 3`, `line 1, index 17` for a JSON array element, and the
    /// object first when the source is several (`s3://b/usage/part-2.jsonl, line 3`).
    pub fn position(&self) -> String {
        let line = match self.element {
            Some(index) => format!("line {}, index {index}", self.line),
            None => format!("line {}", self.line),
        };
        match &self.object {
            Some(object) => format!("{object}, {line}"),
            None => line,
        }
    }
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.position(), self.reason, self.detail)
    }
}

/// Characters of a bad record's detail kept: it may quote a field of up to a megabyte.
pub const MAX_DETAIL: usize = 500;

/// Bad records held in memory, for alerts and the task output; all of them are counted and
/// spilled to disk.
pub const MAX_HELD_BAD_RECORDS: usize = 1_000;

/// A run's bad records: the first [`MAX_HELD_BAD_RECORDS`] (in source order) held, every one
/// counted by reason and streamed to a spill file (in the run's scratch directory) as it is
/// found, so a source of endless bad rows costs disk, not memory. The bad-records CSV copies the spill ([`BadRecords::spilled`]).
#[derive(Debug, Clone, Default)]
pub struct BadRecords {
    held: Vec<BadRecord>,
    total: u64,
    by_reason: BTreeMap<BadReason, u64>,
    /// Created with the first bad record; shared by clones (only the collector writes).
    spill: Option<Arc<Mutex<Spill>>>,
}

/// Every bad record as a JSON line in a file of the run's scratch directory (removed with the
/// last clone; a killed run's is removed by the next run), or why that failed.
#[derive(Debug)]
struct Spill {
    file: Result<BufWriter<tempfile::NamedTempFile>, String>,
    /// Dropped after the file (fields drop in order).
    _dir: Option<ScratchDir>,
}

#[derive(Debug, thiserror::Error)]
#[error("the bad records could not be kept on disk: {0}")]
pub struct SpillError(String);

impl BadRecords {
    pub fn push(&mut self, bad: BadRecord) {
        self.total += 1;
        *self.by_reason.entry(bad.reason).or_default() += 1;
        let spill = self.spill.get_or_insert_with(|| {
            let dir = ScratchDir::create(&scratch_root());
            let file = match &dir {
                Ok(dir) => tempfile::NamedTempFile::new_in(dir.path())
                    .map(BufWriter::new)
                    .map_err(|error| error.to_string()),
                Err(error) => Err(error.to_string()),
            };
            Arc::new(Mutex::new(Spill {
                file,
                _dir: dir.ok(),
            }))
        });
        let mut spill = spill.lock().unwrap_or_else(PoisonError::into_inner);
        if let Ok(file) = &mut spill.file {
            let written = serde_json::to_writer(&mut *file, &bad)
                .map_err(std::io::Error::from)
                .and_then(|()| file.write_all(b"\n"));
            if let Err(error) = written {
                tracing::warn!(%error, "cannot spill bad records to disk; the CSV will say so");
                spill.file = Err(error.to_string());
            }
        }
        if self.held.len() < MAX_HELD_BAD_RECORDS {
            self.held.push(bad);
        }
    }

    /// How many bad records there are in all (not only the held ones).
    pub fn len(&self) -> usize {
        usize::try_from(self.total).unwrap_or(usize::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The held bad records: the first [`MAX_HELD_BAD_RECORDS`] in source order.
    pub fn iter(&self) -> std::slice::Iter<'_, BadRecord> {
        self.held.iter()
    }

    /// Counts of all bad records by reason.
    pub fn by_reason(&self) -> BTreeMap<BadReason, u64> {
        self.by_reason.clone()
    }

    /// Calls `each` with every bad record, in the order found, read back from the spill file
    /// (blocking file reads).
    pub fn spilled(
        &self,
        mut each: impl FnMut(BadRecord) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let Some(spill) = &self.spill else {
            return Ok(());
        };
        let path = {
            let mut spill = spill.lock().unwrap_or_else(PoisonError::into_inner);
            let file = spill
                .file
                .as_mut()
                .map_err(|error| std::io::Error::other(SpillError(error.clone())))?;
            file.flush()?;
            file.get_ref().path().to_path_buf()
        };
        let mut count = 0u64;
        for line in std::io::BufReader::new(std::fs::File::open(path)?).lines() {
            let bad = serde_json::from_str(&line?).map_err(std::io::Error::other)?;
            each(bad)?;
            count += 1;
        }
        if count != self.total {
            return Err(std::io::Error::other(SpillError(format!(
                "{count} of {} bad records read back",
                self.total
            ))));
        }
        Ok(())
    }
}

impl std::ops::Index<usize> for BadRecords {
    type Output = BadRecord;

    fn index(&self, index: usize) -> &BadRecord {
        &self.held[index]
    }
}

impl<'a> IntoIterator for &'a BadRecords {
    type Item = &'a BadRecord;
    type IntoIter = std::slice::Iter<'a, BadRecord>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Why a valid record is not reported (counted, not an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutOfScope {
    /// The asset's contract is not an active distribution contract.
    ContractNotActiveDistribution,
    /// The asset's product has no PPU capability or its schema is not QT.
    ProductNotQt,
}

impl OutOfScope {
    pub fn code(&self) -> &'static str {
        match self {
            OutOfScope::ContractNotActiveDistribution => "contract_not_active_distribution",
            OutOfScope::ProductNotQt => "product_not_qt",
        }
    }
}

impl fmt::Display for OutOfScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

fn required<'r>(
    line: u64,
    name: &str,
    value: &'r Option<CompactString>,
) -> Result<&'r str, BadRecord> {
    value
        .as_deref()
        .map(trim)
        .ok_or_else(|| BadRecord::new(line, BadReason::MissingField, format!("{name} is missing")))
}

fn time(
    line: u64,
    name: &str,
    value: &Option<CompactString>,
    last: &mut LastTime,
) -> Result<NaiveDateTime, BadRecord> {
    let text = required(line, name, value)?;
    last.parse(text).ok_or_else(|| {
        BadRecord::new(
            line,
            BadReason::UnparsableField,
            format!("{name} {text:?} is not YYYY-MM-DD HH:MM:SS"),
        )
    })
}

/// Checks a source's records one by one, remembering what the checks across records need:
/// the record ids seen (to refuse repeats) and the names records share.
///
/// A vendor id is kept as is. A record without one gets `PAYG-<YYYYMM>-<hash>` over its content
/// and the number of identical records seen before it, so re-reading the same data yields the
/// same ids (rebuilds replace rows instead of adding them) and identical rows stay distinct.
///
/// The checks come in two stages that can run on two cores ([`RecordChecker::into_stages`]):
/// [`FieldChecks`] needs nothing but the record and the month; [`IdChecks`] numbers the records
/// without an id and refuses repeated ids, in source order. A record's fate is the same either
/// way: [`RecordChecker::check`] is the one stage after the other.
pub struct RecordChecker {
    fields: FieldChecks,
    ids: IdChecks,
}

/// The checks of one record alone: fields present and parsable, quantity not negative,
/// interval ordered and inside the month, texts that fit a cell; and the digest its id check
/// needs. Shares the names records repeat.
pub struct FieldChecks {
    period: Period,
    /// The period's first and last second, worked out once: [`Period::contains`] works them
    /// out from its first day on every call, the month's end by calendar arithmetic (~1% of
    /// the 10M-record dry run's CPU samples).
    bounds: (NaiveDateTime, NaiveDateTime),
    names: Interner,
    keys: IdKeys,
    /// The last start and end read.
    times: [LastTime; 2],
}

/// The checks across records: record ids unique in the month, identical records numbered.
pub struct IdChecks {
    period: Period,
    /// The same keys as the field checks': a derived id and a vendor id spelled alike are
    /// one id. Not SHA-256 of the id, as before: the keys never outlive the run (the counter's
    /// scratch files go with it), and the digest was 3.6% of the reading's CPU samples in a
    /// 4M-record profile. A derived id's content digest stays SHA-256 ([`digest`]): the
    /// workbook spells it, and every run must give the same.
    keys: IdKeys,
    /// The ids seen, by their keys, counted in bounded memory (spilled to the run's scratch
    /// directory past a few hundred thousand).
    seen: Counter,
    /// Digests of the contents of records without a vendor id, counted the same way.
    identical: Counter,
}

/// A batch of records through their field checks, on its way to the id checks: the records
/// that passed, the ones that failed, and what the id checks need of each, in source order.
/// The id checks read only the ids: the records stay where the field checks wrote them, and
/// the id checks touch one only to number it or to take it out as a repeat.
#[derive(Default)]
pub struct CheckedBatch {
    /// The records that passed their own checks (and, after the id checks, theirs).
    pub records: Vec<VendorRecord>,
    /// The records that failed (after the id checks, with those whose ids repeat).
    pub bad: Vec<BadRecord>,
    /// One a record, good or bad, in source order.
    ids: Vec<PendingId>,
}

/// What the id checks need of a record.
#[derive(Clone, Copy)]
enum PendingId {
    /// A good record's vendor id, by its key.
    Vendor(Key),
    /// A good record without a vendor id: the digest of its content, numbered among identical
    /// records.
    Derived(Key),
    /// A bad record without a vendor id: the digest of its content; it is named as the next
    /// identical good record would be, and not counted.
    BadDerived(Key),
    /// A bad record whose id is final: its vendor id, or none when it could not be read.
    Bad,
}

impl CheckedBatch {
    /// A batch with room for `records` records, and `room` to fill again (its records and its
    /// bad ones gone, its space kept).
    pub fn with_room(records: usize, mut room: Vec<VendorRecord>) -> Self {
        room.clear();
        room.reserve(records);
        CheckedBatch {
            records: room,
            bad: Vec::new(),
            ids: Vec::with_capacity(records),
        }
    }

    /// A record that cannot be read: it has no id.
    pub fn push_unreadable(&mut self, bad: BadRecord) {
        self.bad.push(bad);
        self.ids.push(PendingId::Bad);
    }

    /// The records read into the batch.
    pub fn read(&self) -> u64 {
        self.ids.len() as u64
    }
}

fn digest(parts: &[&str]) -> Key {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0x1f]);
    }
    hasher.finalize()[..16].try_into().expect("16 bytes")
}

impl RecordChecker {
    pub fn new(period: Period) -> Self {
        let keys = IdKeys::default();
        RecordChecker {
            fields: FieldChecks {
                period,
                bounds: (period.start(), period.end()),
                names: Interner::default(),
                keys: keys.clone(),
                times: Default::default(),
            },
            ids: IdChecks {
                period,
                keys,
                seen: Counter::in_scratch(),
                identical: Counter::in_scratch(),
            },
        }
    }

    /// A checker remembering `recent` ids in memory before it spills them under `root`.
    #[cfg(test)]
    fn with_memory(period: Period, recent: usize, root: std::path::PathBuf) -> Self {
        let mut checker = RecordChecker::new(period);
        checker.ids.seen = Counter::new(recent, root.clone());
        checker.ids.identical = Counter::new(recent, root);
        checker
    }

    /// The two stages, to run one after the other on records in source order.
    pub fn into_stages(self) -> (FieldChecks, IdChecks) {
        (self.fields, self.ids)
    }

    /// Every check that needs only the record and the month, then the record id's: unique,
    /// or derived and numbered. A bad record carries the id it has or would have been given.
    pub fn check(&mut self, raw: RawRecord) -> Result<VendorRecord, BadRecord> {
        let mut batch = CheckedBatch::default();
        self.fields.check(raw, &mut batch);
        self.ids.check(&mut batch);
        match (batch.records.pop(), batch.bad.pop()) {
            (Some(record), None) => Ok(record),
            (None, Some(bad)) => Err(bad),
            _ => unreachable!("one record in, one out"),
        }
    }

    /// Why the ids seen could not be kept on disk, once: checks after it cannot be trusted.
    pub fn failure(&mut self) -> Option<std::io::Error> {
        self.ids.failure()
    }
}

impl FieldChecks {
    /// A record's own checks: into `batch`'s records or its bad ones, with what its id check
    /// needs.
    pub fn check(&mut self, raw: RawRecord, batch: &mut CheckedBatch) {
        match self.check_fields(&raw) {
            Ok((record, id)) => {
                batch.records.push(record);
                batch.ids.push(id);
            }
            Err(bad) => {
                let bad = bad.in_element(raw.element).in_object(raw.object.clone());
                let (bad, id) = match &raw.record_id {
                    Some(id) => (
                        BadRecord {
                            record_id: Some(RecordId::Vendor(trim(id).into())),
                            ..bad
                        },
                        PendingId::Bad,
                    ),
                    None => (bad, PendingId::BadDerived(content_of_bad(&raw))),
                };
                batch.bad.push(bad);
                batch.ids.push(id);
            }
        }
    }

    /// The record made of `raw` when it passes, and what its id check needs.
    fn check_fields(&mut self, raw: &RawRecord) -> Result<(VendorRecord, PendingId), BadRecord> {
        let line = raw.line;
        let period = self.period;
        let subscription_id = required(line, "subscription_id", &raw.subscription_id)?;
        let item = required(line, "item_mpn", &raw.item_mpn)?;
        let quantity_text = required(line, "quantity", &raw.quantity)?;
        let [starts, ends] = &mut self.times;
        let start = time(line, "start_time_utc", &raw.start_time_utc, starts)?;
        let end = time(line, "end_time_utc", &raw.end_time_utc, ends)?;
        // Texts that become workbook cells: one too long for a cell spoils only its record.
        for (name, text) in [
            ("subscription_id", Some(subscription_id)),
            ("item_mpn", Some(item)),
            ("record_id", raw.record_id.as_deref()),
            ("record_note", raw.record_note.as_deref()),
        ] {
            if text.is_some_and(too_long) {
                return Err(BadRecord::new(
                    line,
                    BadReason::FieldTooLong,
                    format!(
                        "{name} is longer than the {MAX_TEXT} characters a workbook cell holds"
                    ),
                ));
            }
        }
        let quantity = Quantity::parse(quantity_text).map_err(|error| match error {
            QuantityError::Unparsable => BadRecord::new(
                line,
                BadReason::UnparsableField,
                format!("quantity {quantity_text:?} is not a decimal number"),
            ),
            QuantityError::Negative => BadRecord::new(
                line,
                BadReason::NegativeQuantity,
                format!("quantity {quantity_text} is negative"),
            ),
            QuantityError::TooManyDigits(digits) => BadRecord::new(
                line,
                BadReason::TooManyDigits,
                format!(
                    "quantity {quantity_text} has {digits} significant digits; a workbook number holds {MAX_SIGNIFICANT_DIGITS} exactly"
                ),
            ),
        })?;
        if end < start {
            return Err(BadRecord::new(
                line,
                BadReason::EndBeforeStart,
                "end_time_utc is before start_time_utc",
            ));
        }
        let (first, last) = self.bounds;
        // As `period.contains(start, end)`, `end < start` refused above.
        if start < first || end > last {
            return Err(BadRecord::new(
                line,
                BadReason::OutsidePeriod,
                format!("the interval leaves {period}"),
            ));
        }
        let note = raw.record_note.as_deref().filter(|n| !n.is_empty());
        let (record_id, id) = match raw.record_id.as_deref() {
            // A vendor id is its own spelling: digested as it is.
            Some(text) => {
                let id: Box<str> = trim(text).into();
                let key = self.keys.bytes(&id);
                (RecordId::Vendor(id), PendingId::Vendor(key))
            }
            None => {
                let content = content_digest(raw, &quantity.to_string());
                // Numbered by the id checks.
                let digest = content[..12].try_into().expect("12 bytes");
                let derived = RecordId::Derived {
                    digest,
                    occurrence: 0,
                };
                (derived, PendingId::Derived(content))
            }
        };
        let record = VendorRecord {
            line,
            element: raw.element,
            object: raw.object.clone(),
            subscription_id: self.names.shared(subscription_id),
            item: self.names.shared(item),
            quantity,
            start,
            end,
            record_id,
            // Notes are not shared: rows are stored encoded, and a month's notes may all differ.
            note: note.map(Arc::from),
        };
        Ok((record, id))
    }
}

/// The digest a record without a vendor id is named by: its fields trimmed, `quantity` as a
/// good record's normalised quantity spells itself (a bad record's as written when it does not
/// parse), the times and note as written. One function for good and bad records, so a bad
/// record is named as a good one with the same fields would be.
fn content_digest(raw: &RawRecord, quantity: &str) -> Key {
    fn field(value: &Option<CompactString>) -> &str {
        trim(value.as_deref().unwrap_or_default())
    }
    let note = raw.record_note.as_deref().filter(|n| !n.is_empty());
    digest(&[
        field(&raw.subscription_id),
        field(&raw.item_mpn),
        quantity,
        raw.start_time_utc.as_deref().unwrap_or_default(),
        raw.end_time_utc.as_deref().unwrap_or_default(),
        note.unwrap_or_default(),
    ])
}

/// [`content_digest`] of a bad record.
fn content_of_bad(raw: &RawRecord) -> Key {
    let quantity = raw.quantity.as_deref().unwrap_or_default();
    let quantity = Quantity::parse(quantity)
        .map(|q| q.to_string())
        .unwrap_or_else(|_| quantity.to_string());
    content_digest(raw, &quantity)
}

/// The derived id of `content` after `before` identical records.
fn derived(content: &Key, before: u32) -> RecordId {
    RecordId::Derived {
        digest: content[..12].try_into().expect("12 bytes"),
        occurrence: before + 1,
    }
}

impl IdChecks {
    /// Numbers each record of `batch` without an id among the identical ones before it, and
    /// moves each whose id was seen before to the bad ones; a bad record without a vendor id
    /// gets the id it would have had (not counted as an occurrence). The records stay where
    /// they are unless one repeats.
    pub fn check(&mut self, batch: &mut CheckedBatch) {
        self.warm(&batch.ids);
        let (mut good, mut bad) = (0, 0);
        let mut repeated: Vec<usize> = Vec::new();
        for id in &batch.ids {
            let key = match *id {
                PendingId::Vendor(key) => key,
                PendingId::Derived(content) => {
                    let record_id = derived(&content, self.identical.bump(&content));
                    let key = self.keys.bytes(&record_id.spelled(self.period));
                    batch.records[good].record_id = record_id;
                    key
                }
                PendingId::BadDerived(content) => {
                    batch.bad[bad].record_id =
                        Some(derived(&content, self.identical.count(&content)));
                    bad += 1;
                    continue;
                }
                PendingId::Bad => {
                    bad += 1;
                    continue;
                }
            };
            if self.seen.bump(&key) > 0 {
                let record = &batch.records[good];
                let found = BadRecord::new(
                    record.line,
                    BadReason::DuplicateRecordId,
                    format!(
                        "record_id {:?} repeats an earlier record",
                        record.record_id.spelled(self.period)
                    ),
                );
                // A derived id is named after the identical records counted so far.
                let record_id = match id {
                    PendingId::Derived(content) => derived(content, self.identical.count(content)),
                    _ => record.record_id.clone(),
                };
                batch.bad.push(BadRecord {
                    record_id: Some(record_id),
                    ..found
                        .in_element(record.element)
                        .in_object(record.object.clone())
                });
                repeated.push(good);
            }
            good += 1;
        }
        if !repeated.is_empty() {
            let mut index = 0;
            let mut repeats = repeated.into_iter().peekable();
            batch.records.retain(|_| {
                let keep = repeats.next_if_eq(&index).is_none();
                index += 1;
                keep
            });
        }
    }

    /// Reads ahead the counters' filter blocks for a batch's ids ([`Counter::warm`]; a
    /// batch's ids are known before any of them is checked).
    fn warm(&self, ids: &[PendingId]) {
        self.seen.warm(ids.iter().filter_map(|id| match id {
            PendingId::Vendor(key) => Some(key),
            _ => None,
        }));
        self.identical.warm(ids.iter().filter_map(|id| match id {
            PendingId::Derived(content) => Some(content),
            _ => None,
        }));
    }

    /// Why the ids seen could not be kept on disk, once: checks after it cannot be trusted.
    pub fn failure(&mut self) -> Option<std::io::Error> {
        self.seen.failure().or_else(|| self.identical.failure())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(fields: [&str; 7]) -> RawRecord {
        let mut record = RawRecord {
            line: 7,
            ..Default::default()
        };
        for (name, value) in FIELDS.iter().zip(fields) {
            record.set(name, Some(value.to_string()));
        }
        record
    }

    fn good() -> [&'static str; 7] {
        [
            "AS-1",
            "MPN-A",
            "12.50",
            "2024-01-01 00:00:00",
            "2024-01-31 23:59:59",
            "",
            "a, \"quoted\" note",
        ]
    }

    fn jan() -> Period {
        Period::parse("2024-01").unwrap()
    }

    fn reason(fields: [&str; 7]) -> BadReason {
        RecordChecker::new(jan())
            .check(raw(fields))
            .unwrap_err()
            .reason
    }

    #[test]
    fn a_good_record_passes_with_a_derived_id() {
        let record = RecordChecker::new(jan()).check(raw(good())).unwrap();
        assert_eq!(record.quantity.to_string(), "12.5");
        assert!(record.record_id.spelled(jan()).starts_with("PAYG-202401-"));
        assert_eq!(record.note.as_deref(), Some("a, \"quoted\" note"));
    }

    #[test]
    fn derived_ids_are_spelled_as_earlier_versions_filed_them() {
        // Files already on the platform carry these spellings: a rerun must produce them again.
        let id = RecordId::Derived {
            digest: [
                0x00, 0x01, 0x0a, 0x10, 0x7f, 0x80, 0x9c, 0xab, 0xcd, 0xef, 0xf0, 0xff,
            ],
            occurrence: 12,
        };
        assert_eq!(id.spelled(jan()), "PAYG-202401-00010a107f809cabcdeff0ff-12");
        let record = RecordChecker::new(jan()).check(raw(good())).unwrap();
        let spelled = record.record_id.spelled(jan());
        let hex = &spelled["PAYG-202401-".len()..spelled.len() - "-1".len()];
        assert!(spelled.ends_with("-1"), "{spelled}");
        assert_eq!(hex.len(), 24, "{spelled}");
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn derived_ids_are_stable_and_distinct_for_identical_records() {
        let run = || {
            let mut checker = RecordChecker::new(jan());
            let a = checker.check(raw(good())).unwrap().record_id;
            let b = checker.check(raw(good())).unwrap().record_id;
            (a, b)
        };
        let (a, b) = run();
        assert_ne!(a, b);
        assert_eq!(run(), (a, b));
    }

    #[test]
    fn each_local_reason_is_detected() {
        let with = |index: usize, value: &'static str| {
            let mut fields = good();
            fields[index] = value;
            fields
        };
        assert_eq!(reason(with(0, "")), BadReason::MissingField);
        assert_eq!(reason(with(2, "")), BadReason::MissingField);
        assert_eq!(reason(with(2, "1e3")), BadReason::UnparsableField);
        assert_eq!(reason(with(2, "ten")), BadReason::UnparsableField);
        assert_eq!(
            reason(with(3, "2024-01-01T00:00:00")),
            BadReason::UnparsableField
        );
        assert_eq!(reason(with(2, "-1")), BadReason::NegativeQuantity);
        assert_eq!(
            reason(with(4, "2023-12-31 00:00:00")),
            BadReason::EndBeforeStart
        );
        assert_eq!(
            reason(with(4, "2024-02-01 00:00:00")),
            BadReason::OutsidePeriod
        );
        assert_eq!(
            reason(with(3, "2023-12-31 23:00:00")),
            BadReason::OutsidePeriod
        );
        // One second either side of the month (the good record spans it exactly).
        assert_eq!(
            reason(with(3, "2023-12-31 23:59:59")),
            BadReason::OutsidePeriod
        );
    }

    #[test]
    fn repeats_and_identical_records_are_found_after_the_ids_spill() {
        let root = tempfile::tempdir().unwrap();
        let run = |recent: usize| {
            let mut checker = RecordChecker::with_memory(jan(), recent, root.path().into());
            let outcomes: Vec<Result<String, BadReason>> = (0..600)
                .map(|n: u32| {
                    let mut fields = good();
                    // Vendor ids on even rows, repeating every 97th; derived ids on odd rows,
                    // with every content occurring three times.
                    let id = format!("R-{}", if n.is_multiple_of(97) { 0 } else { n });
                    let quantity = (n / 6).to_string();
                    fields[2] = &quantity;
                    fields[5] = if n.is_multiple_of(2) { &id } else { "" };
                    checker
                        .check(raw(fields))
                        .map(|r| r.record_id.spelled(jan()))
                        .map_err(|bad| bad.reason)
                })
                .collect();
            assert!(checker.failure().is_none());
            outcomes
        };
        let in_memory = run(1_000_000);
        assert_eq!(
            run(7),
            in_memory,
            "the same ids and repeats whatever the memory"
        );
        assert_eq!(
            in_memory
                .iter()
                .filter(|o| **o == Err(BadReason::DuplicateRecordId))
                .count(),
            3,
            "R-0 at rows 194, 388 and 582"
        );
        assert!(in_memory
            .iter()
            .any(|o| o.as_ref().is_ok_and(|id| id.ends_with("-3"))));
    }

    #[test]
    fn a_batch_comes_out_as_its_records_checked_one_by_one() {
        // Vendor ids repeating, identical records without ids, bad records with and without
        // ids, and unreadable ones, mixed in one batch: the batch's good records are the ones
        // that pass one by one, in order, and its bad ones the ones that fail, with the same
        // ids and reasons.
        let rows: Vec<Option<RawRecord>> = (0..40u64)
            .map(|n| {
                let mut fields = good();
                let id = format!("R-{}", n % 7);
                let quantity = match n % 5 {
                    4 => "-1".to_string(),
                    _ => (n % 3).to_string(),
                };
                fields[2] = &quantity;
                fields[5] = if n % 2 == 0 { &id } else { "" };
                let mut record = raw(fields);
                record.line = n + 2;
                (n % 11 != 10).then_some(record)
            })
            .collect();
        let unreadable = |line| BadRecord::new(line, BadReason::UnparsableField, "unreadable");
        let mut one_by_one = RecordChecker::new(jan());
        let (mut good_ones, mut bad_ones) = (Vec::new(), Vec::new());
        for (index, row) in rows.iter().enumerate() {
            match row {
                Some(raw) => match one_by_one.check(raw.clone()) {
                    Ok(record) => good_ones.push((record.line, record.record_id)),
                    Err(bad) => bad_ones.push((bad.line, bad.reason, bad.record_id)),
                },
                None => bad_ones.push((index as u64 + 2, BadReason::UnparsableField, None)),
            }
        }
        let (mut fields, mut ids) = RecordChecker::new(jan()).into_stages();
        let mut batch = CheckedBatch::with_room(rows.len(), Vec::new());
        for (index, row) in rows.into_iter().enumerate() {
            match row {
                Some(raw) => fields.check(raw, &mut batch),
                None => batch.push_unreadable(unreadable(index as u64 + 2)),
            }
        }
        ids.check(&mut batch);
        assert_eq!(batch.read(), 40);
        let batch_good: Vec<_> = batch
            .records
            .into_iter()
            .map(|record| (record.line, record.record_id))
            .collect();
        let mut batch_bad: Vec<_> = batch
            .bad
            .into_iter()
            .map(|bad| (bad.line, bad.reason, bad.record_id))
            .collect();
        batch_bad.sort_by_key(|bad| bad.0);
        assert_eq!(batch_good, good_ones);
        assert_eq!(batch_bad, bad_ones);
        let reasons: std::collections::BTreeSet<BadReason> =
            bad_ones.iter().map(|bad| bad.1).collect();
        assert_eq!(
            reasons,
            std::collections::BTreeSet::from([
                BadReason::DuplicateRecordId,
                BadReason::NegativeQuantity,
                BadReason::UnparsableField
            ]),
            "every kind of bad record is in the batch"
        );
        assert!(good_ones.iter().any(|(_, id)| matches!(
            id,
            RecordId::Derived { occurrence, .. } if *occurrence > 1
        )));
    }

    #[test]
    fn repeated_vendor_ids_are_bad() {
        let mut checker = RecordChecker::new(jan());
        let mut fields = good();
        fields[5] = "R-1";
        assert!(checker.check(raw(fields)).is_ok());
        fields[2] = "3";
        let error = checker.check(raw(fields)).unwrap_err();
        assert_eq!(error.reason, BadReason::DuplicateRecordId);
        assert_eq!(error.line, 7);
    }

    #[test]
    fn a_vendor_id_spelled_as_an_earlier_derived_id_repeats_it() {
        let mut checker = RecordChecker::new(jan());
        let derived = checker.check(raw(good())).unwrap().record_id.spelled(jan());
        assert!(derived.starts_with("PAYG-"));
        let mut fields = good();
        fields[2] = "3";
        fields[5] = &derived;
        let error = checker.check(raw(fields)).unwrap_err();
        assert_eq!(error.reason, BadReason::DuplicateRecordId);
    }

    #[test]
    fn quantities_normalise_and_check_precision() {
        let q = |s| Quantity::parse(s).unwrap();
        assert_eq!(q("007.100").to_string(), "7.1");
        assert_eq!(q("-0").to_string(), "0");
        assert_eq!(q(".5").to_string(), "0.5");
        assert_eq!(q("3.").to_string(), "3");
        assert!(q("3.0").fits(Precision::Integer).is_ok());
        assert_eq!(
            q("3.5").fits(Precision::Integer),
            Err(BadReason::FractionalQuantity)
        );
        assert_eq!(
            q("3.125").fits(Precision::Decimal(2)),
            Err(BadReason::ExcessPrecision)
        );
        assert!(q("3.12").fits(Precision::Decimal(2)).is_ok());
        assert_eq!(Quantity::parse("."), Err(QuantityError::Unparsable));
        assert_eq!(Quantity::parse("1,5"), Err(QuantityError::Unparsable));
        assert_eq!(Quantity::parse("NaN"), Err(QuantityError::Unparsable));
        assert_eq!(Quantity::parse("-2.5"), Err(QuantityError::Negative));
    }

    #[test]
    fn a_text_too_long_for_a_cell_makes_its_record_bad() {
        let check = |index: usize, text: &str| {
            let mut record = raw(good());
            record.set(FIELDS[index], Some(text.to_string()));
            RecordChecker::new(jan()).check(record)
        };
        // 32,767 UTF-16 units fit; one more, or the same count of two-unit characters, do not.
        let fits = "x".repeat(MAX_TEXT);
        let over = "x".repeat(MAX_TEXT + 1);
        let wide = "\u{1F600}".repeat(MAX_TEXT / 2 + 1);
        for index in [0, 1, 5, 6] {
            assert!(check(index, &fits).is_ok(), "{}", FIELDS[index]);
            for text in [&over, &wide, &"n".repeat(40_000)] {
                let bad = check(index, text).unwrap_err();
                assert_eq!(bad.reason, BadReason::FieldTooLong, "{}", FIELDS[index]);
                assert_eq!(bad.line, 7);
                assert!(bad.detail.starts_with(FIELDS[index]), "{bad}");
            }
        }
    }

    #[test]
    fn bad_records_beyond_the_first_thousand_are_counted_and_spilled_not_held() {
        let mut bad = BadRecords::default();
        let total = MAX_HELD_BAD_RECORDS as u64 * 2 + 500;
        for line in 1..=total {
            let reason = match line % 2 {
                0 => BadReason::MissingField,
                _ => BadReason::UnparsableField,
            };
            bad.push(BadRecord::new(line, reason, format!("row {line}")).in_element(Some(line)));
        }
        assert_eq!(bad.len() as u64, total);
        assert_eq!(bad.iter().count(), MAX_HELD_BAD_RECORDS);
        assert_eq!(
            bad[MAX_HELD_BAD_RECORDS - 1].line,
            MAX_HELD_BAD_RECORDS as u64
        );
        assert_eq!(
            bad.by_reason(),
            BTreeMap::from([
                (BadReason::MissingField, total / 2),
                (BadReason::UnparsableField, total - total / 2),
            ])
        );
        let mut lines = Vec::new();
        bad.clone()
            .spilled(|record| {
                assert_eq!(record.element, Some(record.line));
                assert_eq!(record.detail, format!("row {}", record.line));
                lines.push(record.line);
                Ok(())
            })
            .unwrap();
        assert_eq!(lines, (1..=total).collect::<Vec<_>>());
        let none = BadRecords::default();
        assert!(none.is_empty());
        none.spilled(|_| panic!("nothing spilled")).unwrap();
    }

    #[test]
    fn a_long_detail_is_shortened_visibly() {
        let long = "é".repeat(MAX_DETAIL * 3);
        let bad = BadRecord::new(1, BadReason::UnparsableField, long);
        assert_eq!(bad.detail.chars().count(), MAX_DETAIL + 1);
        assert!(bad.detail.ends_with('…'));
        let short = BadRecord::new(1, BadReason::UnparsableField, "x".repeat(MAX_DETAIL));
        assert_eq!(short.detail, "x".repeat(MAX_DETAIL));
    }

    #[test]
    fn quantities_keep_every_digit_or_are_refused() {
        for (text, kept) in [
            ("123456789012345", "123456789012345"),
            ("12345678901234.5", "12345678901234.5"),
            ("1234567.12345678", "1234567.12345678"),
            ("0.000000123456789012345", "0.000000123456789012345"),
            ("000000000000000012.5000000", "12.5"),
        ] {
            assert_eq!(Quantity::parse(text).unwrap().to_string(), kept, "{text}");
        }
        for (text, digits) in [
            ("123456789012345.12345678", 23),
            ("1234567890123456", 16),
            ("0.1234567890123456", 16),
            ("99999999999999999999", 20),
        ] {
            assert_eq!(
                Quantity::parse(text),
                Err(QuantityError::TooManyDigits(digits)),
                "{text}"
            );
        }
        let mut fields = good();
        fields[2] = "123456789012345.12345678";
        let bad = RecordChecker::new(jan()).check(raw(fields)).unwrap_err();
        assert_eq!(bad.reason, BadReason::TooManyDigits);
        assert!(bad.detail.contains("23 significant digits"), "{bad}");
    }

    proptest::proptest! {
        /// The fast decimal is the parsed one, for every quantity accepted: whole numbers,
        /// fractions with leading and trailing zeros, and the 22/23 fractional digits where
        /// the fast path ends.
        #[test]
        fn decimals_are_what_parsing_gives(
            whole in "[0-9]{0,15}",
            fraction in "[0-9]{0,25}",
        ) {
            let text = format!("{whole}.{fraction}");
            if let Ok(quantity) = Quantity::parse(&text) {
                let parsed: f64 = format!("0{text}0").parse().unwrap();
                proptest::prop_assert_eq!(quantity.value().to_bits(), parsed.to_bits(), "{}", text);
            }
            let whole = whole.trim_start_matches('0');
            let fraction = fraction.trim_end_matches('0');
            let significant = whole.len() + fraction.len();
            if significant <= MAX_SIGNIFICANT_DIGITS && significant > 0 {
                let fast = exact_decimal(whole, fraction);
                let parsed: f64 = format!("0{whole}.{fraction}0").parse().unwrap();
                proptest::prop_assert_eq!(fast.map(f64::to_bits), (fraction.len() <= 22).then_some(parsed.to_bits()));
            }
        }
    }
}
