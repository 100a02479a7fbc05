//! Late records and changes after filing, decided without I/O: which files a group has for a
//! period, what they hold (a digest kept in each file's note), what a run must do when the
//! source no longer matches what was filed.
//!
//! A group's records for a period are filed in its main file (`<contract>:<product>:<period>`)
//! and, with `LATE_RECORDS = file`, in supplemental files (`…:late-1`, `…:late-2`, …), each
//! holding records no earlier file holds. Every file carries in its note the [`Digest`] of the
//! records it was filled with; digests add up over disjoint files, so the sum over a group's
//! submitted files says what the platform holds for it. A run that finds the group's main file
//! submitted compares that sum with the source's records first ([`look`]): equal means nothing
//! changed, and nothing is downloaded. Otherwise the submitted workbooks are downloaded and
//! compared record by record ([`classify`]):
//!
//! * **late**: in the source, but in no filed file — alerted (`late_records`, and listed in
//!   `late-records-<period>.csv`) or filed in the next supplemental file ([`plan`]);
//! * **changed after filing**: filed with other content, or gone from the source since — never
//!   filed again automatically, always alerted (`changed_after_filing`), old and new values.
//!
//! The platform is the only state: a submitted file's note cannot be changed any more, so a
//! run repeats the alerts while the difference stands, and a supplemental file being filed is
//! found again by its external id and carried on by the usual filing rules (the replica rule
//! included: two replicas filing `late-1` keep one file).

use std::collections::HashMap;
use std::fmt::Write as _;

use sha2::{Digest as _, Sha256};

use super::decide::preferred;
use super::note::digest_in_note;
use crate::alert::{listed, AlertKind, Severity};
use crate::config::LateRecords;
use crate::connect::models::{FileStatus, UsageFile};
use crate::usage::group::GroupKey;
use crate::usage::period::Period;
use crate::usage::workbook::RowTally;
use crate::usage::workbook::{Cell, UsageRow, COLUMNS};

/// Records named one by one in an alert; the rest are counted.
pub const RECORDS_IN_ALERT: usize = 20;
/// Characters of one record's line in an alert, so one long note cannot hide the others.
const RECORD_IN_ALERT: usize = 200;

const SUPPLEMENT: &str = ":late-";

/// Which of a group's files for a period: its main file or its n-th supplemental one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Part {
    #[default]
    Main,
    /// Late records filed after the main file was submitted (numbered from 1).
    Late(u32),
}

impl Part {
    /// The file's dedupe key: the group's, with `:late-<n>` for a supplemental file.
    pub fn external_id(self, key: &GroupKey, period: Period) -> String {
        format!("{}{}", key.external_id(period), self.suffix())
    }

    /// `""` or `:late-<n>`.
    pub fn suffix(self) -> String {
        match self {
            Part::Main => String::new(),
            Part::Late(n) => format!("{SUPPLEMENT}{n}"),
        }
    }

    /// The part an external id names: a trailing `:late-<n>` (n ≥ 1), else the main file.
    pub fn of(external_id: &str) -> Part {
        external_id
            .rsplit_once(SUPPLEMENT)
            .and_then(|(_, n)| n.parse::<u32>().ok())
            .filter(|n| *n >= 1)
            .map_or(Part::Main, Part::Late)
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Part::Main => f.write_str("main file"),
            Part::Late(n) => write!(f, "supplemental file late-{n}"),
        }
    }
}

/// Parses an external id this extension wrote, supplemental ones included; `None` for any
/// other.
pub fn parse_external_id(external_id: &str) -> Option<(GroupKey, Period, Part)> {
    let part = Part::of(external_id);
    let main = match part {
        Part::Main => external_id,
        Part::Late(_) => external_id.rsplit_once(SUPPLEMENT)?.0,
    };
    let (key, period) = GroupKey::parse_external_id(main)?;
    // Only the spelling this program writes (no `late-01`).
    (part.external_id(&key, period) == external_id).then_some((key, period, part))
}

/// What a set of records holds, independent of their order: the count and the sum (mod 2^128)
/// of each record's fingerprint (SHA-256 over its id and [`content`] cells). Sums of disjoint
/// sets add up, so the digests of a group's files give the digest of all it has filed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digest {
    records: u64,
    sum: u128,
}

/// A workbook's build takes the digest of the rows it writes.
impl RowTally for Digest {
    fn tally(&mut self, row: &UsageRow) {
        *self = self.add(Digest::of_row(row));
    }
}

impl Digest {
    pub fn of_row(row: &UsageRow) -> Digest {
        let mut hash = Sha256::new();
        hash.update(canonical(&row.record_id).as_bytes());
        for cell in content(row) {
            hash.update([0x1f]);
            hash.update(canonical(cell).as_bytes());
        }
        let bytes = hash.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&bytes[..16]);
        Digest {
            records: 1,
            sum: u128::from_be_bytes(first),
        }
    }

    pub fn of_rows<R: std::borrow::Borrow<UsageRow>>(rows: impl IntoIterator<Item = R>) -> Digest {
        rows.into_iter()
            .map(|row| Digest::of_row(row.borrow()))
            .fold(Digest::default(), Digest::add)
    }

    pub fn add(self, other: Digest) -> Digest {
        Digest {
            records: self.records + other.records,
            sum: self.sum.wrapping_add(other.sum),
        }
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    /// `<records>/<32 hex digits>`.
    pub(super) fn text(&self) -> String {
        format!("{}/{:032x}", self.records, self.sum)
    }

    pub(super) fn parse(text: &str) -> Option<Digest> {
        let (records, sum) = text.split_once('/')?;
        if sum.len() != 32 {
            return None;
        }
        Some(Digest {
            records: records.parse().ok()?,
            sum: u128::from_str_radix(sum, 16).ok()?,
        })
    }
}

/// The cells of a row that say what it reports (besides its id): a change in any of them is a
/// change after filing. They are the template's columns from `record_note` to
/// `asset_search_value`; columns the platform or the catalogue fill (dynamic items, category,
/// reconciliation id, tier) are not among them.
pub fn content(row: &UsageRow) -> [&Cell; 9] {
    let cells = row.cells();
    std::array::from_fn(|at| cells[CONTENT.start + at])
}

/// Where [`content`]'s cells are in [`COLUMNS`].
const CONTENT: std::ops::Range<usize> = 1..10;

/// The names of [`content`]'s cells, in the same order.
fn content_columns() -> &'static [&'static str] {
    &COLUMNS[CONTENT]
}

/// A cell as text: empty, the text, or the shortest decimal that reads back as the number.
fn canonical(cell: &Cell) -> std::borrow::Cow<'_, str> {
    match cell {
        Cell::Empty => "".into(),
        Cell::Text(text) => text.as_str().into(),
        Cell::Number(number) => number.to_string().into(),
    }
}

/// What to do before downloading anything, given the group's live files of the period (its
/// main file, submitted, and any supplemental ones).
#[derive(Debug, Clone, PartialEq)]
pub enum Look {
    /// The submitted files hold exactly the source's records: nothing to do.
    Unchanged,
    /// Download the workbooks of these submitted files (main first) and compare.
    Compare { filed: Vec<String> },
    /// Leave the group's late records to a later run; the reason says why.
    Wait(String),
}

/// The file every replica keeps for each part, in part order.
pub fn by_part(files: &[UsageFile]) -> Vec<(Part, &UsageFile)> {
    let mut parts: HashMap<Part, Vec<UsageFile>> = HashMap::new();
    for file in files {
        let part = Part::of(file.external_id.as_deref().unwrap_or_default());
        parts.entry(part).or_default().push(file.clone());
    }
    let mut kept: Vec<(Part, &UsageFile)> = parts
        .into_iter()
        .filter_map(|(part, candidates)| {
            let id = preferred(&candidates)?.id.clone();
            Some((part, files.iter().find(|f| f.id == id)?))
        })
        .collect();
    kept.sort_by_key(|(part, _)| *part);
    kept
}

/// The supplemental file still being filed (the highest-numbered one not submitted), if any.
pub fn open_supplement(files: &[UsageFile]) -> Option<(Part, &UsageFile)> {
    by_part(files)
        .into_iter()
        .rev()
        .find(|(part, file)| *part != Part::Main && !file.status.is_done())
}

/// The number of the last supplemental file (0: none).
pub fn last_supplement(files: &[UsageFile]) -> u32 {
    by_part(files)
        .into_iter()
        .filter_map(|(part, _)| match part {
            Part::Late(n) => Some(n),
            Part::Main => None,
        })
        .max()
        .unwrap_or(0)
}

/// The first look at a group whose main file is submitted: `source` is the digest of the
/// source's records now, `files` the group's live files of the period, all parts.
pub fn look(source: Digest, files: &[UsageFile]) -> Look {
    let kept = by_part(files);
    let Some((_, main)) = kept.iter().find(|(part, _)| *part == Part::Main) else {
        return Look::Wait("the group's main file is not among its files".into());
    };
    if !main.status.is_done() {
        return Look::Wait(format!("its main file {} is {}", main.id, main.status));
    }
    let open = open_supplement(files);
    for (part, file) in &kept {
        let settled = file.status.is_done()
            || open.is_some_and(|(open, _)| open == *part && file.status != FileStatus::Rejected);
        if !settled {
            return Look::Wait(format!(
                "its {part} {} is {}: it is settled first",
                file.id, file.status
            ));
        }
        if !file.status.is_done() && !known_to_filing(&file.status) {
            return Look::Wait(format!(
                "its {part} {} is in a status this program does not know ({:?})",
                file.id,
                file.status.as_str()
            ));
        }
    }
    let filed: Vec<&UsageFile> = kept
        .iter()
        .filter(|(_, file)| file.status.is_done())
        .map(|(_, file)| *file)
        .collect();
    let digests: Option<Vec<Digest>> = filed
        .iter()
        .map(|file| digest_in_note(file.note.as_deref()))
        .collect();
    let together = digests.map(|all| all.into_iter().fold(Digest::default(), Digest::add));
    if open.is_none() && together == Some(source) {
        return Look::Unchanged;
    }
    Look::Compare {
        filed: filed.iter().map(|file| file.id.clone()).collect(),
    }
}

/// Statuses the filing rules act on for a file not yet submitted.
fn known_to_filing(status: &FileStatus) -> bool {
    status.is_deletable() || status.is_processing()
}

/// A submitted file's records, as its downloaded workbook holds them.
#[derive(Debug, Clone)]
pub struct Filed {
    pub file_id: String,
    pub rows: Vec<UsageRow>,
}

/// A filed record the source now says otherwise about.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub record_id: String,
    /// The file it was filed in.
    pub file_id: String,
    /// `column: filed → now` for each content cell that differs; empty when it left the source.
    pub differences: Vec<String>,
    /// What was filed, for a record gone from the source.
    pub filed: String,
}

impl Change {
    pub fn gone(&self) -> bool {
        self.differences.is_empty()
    }

    fn line(&self) -> String {
        let what = match self.gone() {
            true => format!("gone from the source (filed: {})", self.filed),
            false => self.differences.join(", "),
        };
        format!("{} (in {}): {what}", self.record_id, self.file_id)
    }
}

/// The source against what the group's submitted files hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Findings {
    /// Positions in the source rows of the records no filed file holds, in source order.
    pub late: Vec<usize>,
    /// Filed records with other content now, or gone from the source, by record id.
    pub changed: Vec<Change>,
}

fn text_of(cell: &Cell) -> String {
    match cell {
        Cell::Empty => "(empty)".into(),
        other => canonical(other).into_owned(),
    }
}

/// The record's content in one line, for a person.
pub fn describe(row: &UsageRow) -> String {
    content_columns()
        .iter()
        .zip(content(row))
        .filter(|(_, cell)| !cell.is_empty())
        .map(|(column, cell)| format!("{column} {}", text_of(cell)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `column: filed → now` for each content cell of `was` that `now` says otherwise.
fn differences(was: &UsageRow, now: &UsageRow) -> Vec<String> {
    content_columns()
        .iter()
        .zip(content(was).into_iter().zip(content(now)))
        .filter(|(_, (old, new))| canonical(old) != canonical(new))
        .map(|(column, (old, new))| format!("{column}: {} → {}", text_of(old), text_of(new)))
        .collect()
}

/// What a row reports, whatever its id: subscription, item and interval.
type Usage<'r> = [std::borrow::Cow<'r, str>; 4];

/// A filed record gone from the source: its id, its row, its file.
type Gone<'r> = (String, &'r UsageRow, &'r str);

/// The usage a row reports, whatever its id.
fn usage_of(row: &UsageRow) -> Usage<'_> {
    [
        canonical(&row.asset_search_value),
        canonical(&row.item_search_value),
        canonical(&row.start_time_utc),
        canonical(&row.end_time_utc),
    ]
}

/// Compares the source's rows of a group with the rows of its submitted files. A record id
/// filed twice (never by this program) counts where it was filed first.
///
/// A record's id may change with it: one without a vendor `record_id` is known by an id derived
/// from its content. So a source record under a new id that reports the same usage
/// (subscription, item, interval) as a filed record gone from the source is that record
/// changed, never a late one: the same usage is not filed twice.
pub fn classify(source: &[UsageRow], filed: &[Filed]) -> Findings {
    let mut held: HashMap<String, (&UsageRow, &str)> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for file in filed {
        for row in &file.rows {
            let id = canonical(&row.record_id).into_owned();
            if let std::collections::hash_map::Entry::Vacant(slot) = held.entry(id) {
                order.push(slot.key().clone());
                slot.insert((row, &file.file_id));
            }
        }
    }
    let mut findings = Findings::default();
    let mut unmatched = Vec::new();
    for (at, row) in source.iter().enumerate() {
        let id = canonical(&row.record_id);
        let Some((was, file_id)) = held.remove(id.as_ref()) else {
            unmatched.push(at);
            continue;
        };
        let differences = differences(was, row);
        if !differences.is_empty() {
            findings.changed.push(Change {
                record_id: id.into_owned(),
                file_id: file_id.to_string(),
                differences,
                filed: describe(was),
            });
        }
    }
    // Filed records gone from the source, by the usage they report, in filing order.
    let mut gone: HashMap<Usage<'_>, Vec<Gone<'_>>> = HashMap::new();
    for id in order.into_iter().rev() {
        if let Some((was, file_id)) = held.remove(&id) {
            gone.entry(usage_of(was))
                .or_default()
                .push((id, was, file_id));
        }
    }
    for at in unmatched {
        let row = &source[at];
        let Some((id, was, file_id)) = gone.get_mut(&usage_of(row)).and_then(Vec::pop) else {
            findings.late.push(at);
            continue;
        };
        let mut changes = vec![format!("record_id: {id} → {}", canonical(&row.record_id))];
        changes.extend(differences(was, row));
        findings.changed.push(Change {
            record_id: id,
            file_id: file_id.to_string(),
            differences: changes,
            filed: describe(was),
        });
    }
    for (id, was, file_id) in gone.into_values().flatten() {
        findings.changed.push(Change {
            record_id: id,
            file_id: file_id.to_string(),
            differences: Vec::new(),
            filed: describe(was),
        });
    }
    findings
        .changed
        .sort_by(|a, b| a.record_id.cmp(&b.record_id));
    findings
}

/// One step of what to do about a group's findings, in the order [`plan`] lists them.
#[derive(Debug, Clone, PartialEq)]
pub enum LateStep {
    /// File the late records (only those) as this supplemental part, by the usual filing rules
    /// (a file of that part already there is carried on with).
    File(Part),
    /// Delete the unsubmitted supplemental `file_id`: no record is late any more.
    Withdraw { file_id: String, reason: String },
    /// Tell a person.
    Alert {
        kind: AlertKind,
        severity: Severity,
        message: String,
        details: String,
    },
    /// List the late records in `late-records-<period>.csv`.
    ListLate,
    /// What the group came to, when nothing is filed: what was found (empty: nothing, the
    /// files hold every record of the source).
    Settle(String),
}

/// What to do about `findings` for a group of `period` whose `files` (all parts) were compared;
/// `source` is the source's rows (the findings point into them), to name late ones in alerts.
pub fn plan(
    mode: LateRecords,
    period: Period,
    findings: &Findings,
    source: &[UsageRow],
    files: &[UsageFile],
) -> Vec<LateStep> {
    let mut steps = Vec::new();
    let late = findings.late.len();
    let open = open_supplement(files);
    match (late, mode, open) {
        (0, _, Some((part, file))) if file.status.is_deletable() => {
            steps.push(LateStep::Withdraw {
                file_id: file.id.clone(),
                reason: format!(
                    "no record of {period} is late any more; the unsubmitted {part} is not needed"
                ),
            })
        }
        (0, _, _) => {}
        (_, LateRecords::File, open) => steps.push(LateStep::File(match open {
            Some((part, _)) => part,
            None => Part::Late(last_supplement(files) + 1),
        })),
        (_, LateRecords::Alert, _) => {
            let lines = findings
                .late
                .iter()
                .filter_map(|at| source.get(*at))
                .map(|row| format!("{}: {}", text_of(&row.record_id), describe(row)));
            let details = listed(lines, late, RECORDS_IN_ALERT, RECORD_IN_ALERT);
            steps.push(LateStep::Alert {
                kind: AlertKind::LateRecords,
                severity: Severity::Warning,
                message: format!(
                    "{late} usage records of {period} arrived after the group's usage file was submitted; they are not reported (LATE_RECORDS = alert)"
                ),
                details,
            });
            steps.push(LateStep::ListLate);
        }
    }
    let changed = findings.changed.len();
    if changed > 0 {
        let gone = findings.changed.iter().filter(|c| c.gone()).count();
        let lines = findings.changed.iter().map(Change::line);
        let details = listed(lines, changed, RECORDS_IN_ALERT, RECORD_IN_ALERT);
        steps.push(LateStep::Alert {
            kind: AlertKind::ChangedAfterFiling,
            severity: Severity::Error,
            message: format!(
                "{changed} usage records of {period} changed after their usage file was submitted ({} with other values, {gone} gone from the source); they are never filed again automatically",
                changed - gone
            ),
            details,
        });
    }
    if !steps.iter().any(|step| matches!(step, LateStep::File(_))) {
        let mut said = Vec::new();
        if late > 0 {
            said.push(format!("{late} late records alerted"));
        }
        if changed > 0 {
            said.push(format!("{changed} records changed after filing"));
        }
        steps.push(LateStep::Settle(said.join("; ")));
    }
    steps
}

/// One line per record for the late-records CSV: contract, product, record id and content.
pub fn csv_line(key: &GroupKey, row: &UsageRow) -> String {
    let quoted = |text: &str| format!("\"{}\"", text.replace('"', "\"\""));
    let mut line = format!(
        "{},{},{}",
        quoted(&key.contract_id),
        quoted(&key.product_id),
        quoted(&canonical(&row.record_id))
    );
    for cell in [
        &row.asset_search_value,
        &row.item_search_value,
        &row.quantity,
        &row.start_time_utc,
        &row.end_time_utc,
        &row.record_note,
    ] {
        let _ = write!(line, ",{}", quoted(&canonical(cell)));
    }
    line.push('\n');
    line
}

/// The late-records CSV's header.
pub const CSV_HEADER: &str =
    "contract,product,record_id,asset_search_value,item_search_value,quantity,start_time_utc,end_time_utc,record_note\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::models::UsageFileEvent;
    use FileStatus::*;

    fn key() -> GroupKey {
        GroupKey {
            contract_id: "CRD-1".into(),
            product_id: "PRD-2".into(),
        }
    }

    fn period() -> Period {
        Period::parse("2024-02").unwrap()
    }

    fn row(id: &str, quantity: f64) -> UsageRow {
        UsageRow {
            record_id: Cell::text(id),
            item_search_criteria: Cell::text("item.mpn"),
            item_search_value: Cell::text("MPN-1"),
            quantity: Cell::Number(quantity),
            start_time_utc: Cell::text("2024-02-01 00:00:00"),
            end_time_utc: Cell::text("2024-02-02 00:00:00"),
            asset_search_criteria: Cell::text("asset.id"),
            asset_search_value: Cell::text("AS-1"),
            category_id: Cell::text("generic_category"),
            ..UsageRow::default()
        }
    }

    fn file(id: &str, part: Part, status: FileStatus, digest: Option<Digest>) -> UsageFile {
        let mut events = std::collections::BTreeMap::new();
        events.insert(
            "created".to_string(),
            UsageFileEvent {
                at: Some(format!("2024-03-01T00:00:{:02}", id.len())),
                by: None,
            },
        );
        UsageFile {
            id: id.into(),
            external_id: Some(part.external_id(&key(), period())),
            status,
            note: digest.map(|d| {
                super::super::note::note_with_digest(Some("generated by connect-payg 0.1.0"), d)
            }),
            events,
            ..UsageFile::default()
        }
    }

    #[test]
    fn external_ids_name_the_part() {
        let main = Part::Main.external_id(&key(), period());
        assert_eq!(main, "CRD-1:PRD-2:2024-02");
        let late = Part::Late(3).external_id(&key(), period());
        assert_eq!(late, "CRD-1:PRD-2:2024-02:late-3");
        assert_eq!(
            parse_external_id(&main),
            Some((key(), period(), Part::Main))
        );
        assert_eq!(
            parse_external_id(&late),
            Some((key(), period(), Part::Late(3)))
        );
        let day = Period::parse("2024-02-05").unwrap();
        let daily = Part::Late(1).external_id(&key(), day);
        assert_eq!(parse_external_id(&daily), Some((key(), day, Part::Late(1))));
        for foreign in [
            "CRD-1:PRD-2:2024-02:late-0",
            "CRD-1:PRD-2:2024-02:late-01",
            "CRD-1:PRD-2:2024-02:late-",
            "CRD-1:PRD-2:2024-02:late-x",
            "CRD-1:PRD-2:late-1",
            "X:PRD-2:2024-02:late-1",
        ] {
            assert_eq!(parse_external_id(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn the_content_is_what_was_used() {
        let names = content_columns();
        assert_eq!(names.len(), content(&row("a", 1.0)).len());
        assert_eq!(names.first(), Some(&"record_note"));
        assert_eq!(names.last(), Some(&"asset_search_value"));
        assert!(names.contains(&"quantity") && !names.contains(&"category_id"));
        assert_eq!(content(&row("a", 2.5))[4], &Cell::Number(2.5), "quantity");
    }

    #[test]
    fn digests_add_up_over_disjoint_files_in_any_order() {
        let rows = [row("a", 1.0), row("b", 2.5), row("c", 3.0)];
        let all = Digest::of_rows(&rows);
        let reversed = Digest::of_rows(rows.iter().rev());
        assert_eq!(all, reversed);
        assert_eq!(all.records(), 3);
        let split = Digest::of_rows(&rows[..1]).add(Digest::of_rows(&rows[1..]));
        assert_eq!(all, split);
        assert_ne!(
            all,
            Digest::of_rows(&[row("a", 1.0), row("b", 2.5), row("c", 3.5)])
        );
        assert_ne!(
            all,
            Digest::of_rows(&[row("a", 1.0), row("b", 2.5), row("d", 3.0)])
        );
        // Cells outside the content (the category) do not count.
        let mut recategorised = row("a", 1.0);
        recategorised.category_id = Cell::text("other");
        assert_eq!(
            Digest::of_row(&recategorised),
            Digest::of_row(&row("a", 1.0))
        );
    }

    /// The first look at every arrangement of a group's files.
    #[test]
    fn the_first_look_downloads_only_when_the_files_may_differ_from_the_source() {
        let rows = [row("a", 1.0), row("b", 2.0), row("c", 3.0)];
        let all = Digest::of_rows(&rows);
        let first = Digest::of_rows(&rows[..2]);
        let last = Digest::of_rows(&rows[2..]);
        let main = |status, digest| file("UF-1", Part::Main, status, digest);
        let late = |id: &str, n, status, digest| file(id, Part::Late(n), status, digest);
        let compare = |ids: &[&str]| Look::Compare {
            filed: ids.iter().map(|id| id.to_string()).collect(),
        };
        let cases: Vec<(&str, Vec<UsageFile>, Look)> = vec![
            (
                "unchanged: no download",
                vec![main(Pending, Some(all))],
                Look::Unchanged,
            ),
            (
                "accepted and closed count as filed",
                vec![main(Closed, Some(first)), late("UF-22", 1, Accepted, Some(last))],
                Look::Unchanged,
            ),
            (
                "a record more in the source",
                vec![main(Pending, Some(first))],
                compare(&["UF-1"]),
            ),
            (
                "a file without a digest (an older version's)",
                vec![main(Pending, None)],
                compare(&["UF-1"]),
            ),
            (
                "digests of main and supplement add up",
                vec![main(Pending, Some(first)), late("UF-22", 1, Pending, Some(last))],
                Look::Unchanged,
            ),
            (
                "a supplement being filed is carried on",
                vec![main(Pending, Some(first)), late("UF-22", 1, Draft, Some(last))],
                compare(&["UF-1"]),
            ),
            (
                "a supplement being processed",
                vec![main(Pending, Some(all)), late("UF-22", 1, Processing, Some(last))],
                compare(&["UF-1"]),
            ),
            (
                "a rejected supplement is rebuilt first",
                vec![main(Pending, Some(first)), late("UF-22", 1, Rejected, Some(last))],
                Look::Wait(s("its supplemental file late-1 UF-22 is rejected: it is settled first")),
            ),
            (
                "an earlier supplement not submitted",
                vec![
                    main(Pending, Some(first)),
                    late("UF-22", 1, Ready, Some(last)),
                    late("UF-333", 2, Draft, None),
                ],
                Look::Wait(s("its supplemental file late-1 UF-22 is ready: it is settled first")),
            ),
            (
                "a supplement in a status of a future Connect",
                vec![main(Pending, Some(first)), late("UF-22", 1, Other(s("archived")), None)],
                Look::Wait(s(
                    "its supplemental file late-1 UF-22 is in a status this program does not know (\"archived\")",
                )),
            ),
            (
                "the main file not submitted",
                vec![main(Ready, Some(all))],
                Look::Wait(s("its main file UF-1 is ready")),
            ),
            (
                "duplicates of a part: the preferred one counts",
                vec![
                    main(Pending, Some(first)),
                    late("UF-22", 1, Pending, Some(last)),
                    late("UF-4444", 1, Draft, None),
                ],
                Look::Unchanged,
            ),
        ];
        for (what, files, expected) in cases {
            assert_eq!(look(all, &files), expected, "{what}");
        }
        assert_eq!(
            look(all, &[]),
            Look::Wait(s("the group's main file is not among its files"))
        );
    }

    #[test]
    fn records_are_late_changed_or_gone() {
        // Each record on a day of its own: records are about different usage.
        let on = |id: &str, quantity: f64, day: u32| {
            let mut row = row(id, quantity);
            row.start_time_utc = Cell::text(format!("2024-02-{day:02} 00:00:00"));
            row
        };
        let source = vec![
            on("a", 1.0, 1),
            on("b", 5.0, 2),
            on("d", 4.0, 4),
            on("e", 1.0, 5),
        ];
        let filed = vec![
            Filed {
                file_id: "UF-1".into(),
                rows: vec![on("a", 1.0, 1), on("b", 2.0, 2), on("c", 3.0, 3)],
            },
            Filed {
                file_id: "UF-2".into(),
                rows: vec![on("d", 4.0, 4)],
            },
        ];
        let findings = classify(&source, &filed);
        assert_eq!(findings.late, [3], "e is in no filed file");
        assert_eq!(findings.changed.len(), 2);
        let changed = &findings.changed[0];
        assert_eq!(changed.record_id, "b");
        assert_eq!(changed.file_id, "UF-1");
        assert_eq!(changed.differences, ["quantity: 2 → 5"]);
        assert_eq!(changed.line(), "b (in UF-1): quantity: 2 → 5",);
        let gone = &findings.changed[1];
        assert_eq!(gone.record_id, "c");
        assert!(gone.gone());
        assert!(
            gone.line()
                .starts_with("c (in UF-1): gone from the source (filed: "),
            "{}",
            gone.line()
        );
        assert!(gone.line().contains("quantity 3"), "{}", gone.line());
        assert_eq!(classify(&source[..3], &filed[..1]).late, [2]);
        // Without a vendor id a record's id follows its content: a changed quantity shows as a
        // new id for the same usage, which is a change, not a late record.
        let mut rekeyed = row("PAYG-202402-bbb-1", 7.0);
        rekeyed.start_time_utc = Cell::text("2024-02-03 00:00:00");
        let mut was = row("PAYG-202402-aaa-1", 6.0);
        was.start_time_utc = Cell::text("2024-02-03 00:00:00");
        let other_usage = row("PAYG-202402-ccc-1", 6.0);
        let findings = classify(
            &[rekeyed, other_usage],
            &[Filed {
                file_id: "UF-9".into(),
                rows: vec![was],
            }],
        );
        assert_eq!(findings.late, [1], "another interval is late");
        assert_eq!(findings.changed.len(), 1);
        assert_eq!(findings.changed[0].record_id, "PAYG-202402-aaa-1");
        assert_eq!(
            findings.changed[0].differences,
            [
                "record_id: PAYG-202402-aaa-1 → PAYG-202402-bbb-1",
                "quantity: 6 → 7"
            ]
        );
        assert_eq!(classify(&[], &[]), Findings::default());
    }

    fn s(text: &str) -> String {
        text.to_string()
    }

    /// What a run does about its findings, in both modes.
    #[test]
    fn the_plan_files_or_alerts_late_records_and_never_files_changes() {
        let rows: Vec<UsageRow> = (0..25).map(|n| row(&format!("r-{n:02}"), 1.0)).collect();
        let submitted = vec![file("UF-1", Part::Main, Pending, None)];
        let with = |extra: Vec<UsageFile>| {
            let mut files = submitted.clone();
            files.extend(extra);
            files
        };
        let late = |positions: &[usize]| Findings {
            late: positions.to_vec(),
            changed: Vec::new(),
        };
        let change = Change {
            record_id: s("r-00"),
            file_id: s("UF-1"),
            differences: vec![s("quantity: 1 → 2")],
            filed: s("quantity 1"),
        };
        let changed = Findings {
            late: Vec::new(),
            changed: vec![change.clone()],
        };
        let both = Findings {
            late: vec![4],
            changed: vec![change],
        };
        let late_alert = |n: usize, details: &str| {
            LateStep::Alert {
            kind: AlertKind::LateRecords,
            severity: Severity::Warning,
            message: format!(
                "{n} usage records of 2024-02 arrived after the group's usage file was submitted; they are not reported (LATE_RECORDS = alert)"
            ),
            details: s(details),
        }
        };
        let changed_alert = LateStep::Alert {
            kind: AlertKind::ChangedAfterFiling,
            severity: Severity::Error,
            message: s(
                "1 usage records of 2024-02 changed after their usage file was submitted (1 with other values, 0 gone from the source); they are never filed again automatically",
            ),
            details: s("r-00 (in UF-1): quantity: 1 → 2"),
        };
        let line = |n: usize| {
            format!(
                "r-{n:02}: item_search_criteria item.mpn, item_search_value MPN-1, quantity 1, start_time_utc 2024-02-01 00:00:00, end_time_utc 2024-02-02 00:00:00, asset_search_criteria asset.id, asset_search_value AS-1"
            )
        };
        let all_lines: Vec<String> = (0..20).map(line).chain([s("… and 5 more")]).collect();
        use LateRecords::{Alert, File};
        /// (what, mode, findings, the group's files, the plan)
        type Case = (
            &'static str,
            LateRecords,
            Findings,
            Vec<UsageFile>,
            Vec<LateStep>,
        );
        let cases: Vec<Case> = vec![
            (
                "file: the first supplement",
                File,
                late(&[1, 2]),
                submitted.clone(),
                vec![LateStep::File(Part::Late(1))],
            ),
            (
                "file: after two submitted supplements",
                File,
                late(&[1]),
                with(vec![
                    file("UF-2", Part::Late(1), Pending, None),
                    file("UF-3", Part::Late(2), Accepted, None),
                ]),
                vec![LateStep::File(Part::Late(3))],
            ),
            (
                "file: a supplement left as a draft is filled",
                File,
                late(&[1]),
                with(vec![file("UF-2", Part::Late(1), Draft, None)]),
                vec![LateStep::File(Part::Late(1))],
            ),
            (
                "file: a ready supplement is carried on (submitted)",
                File,
                late(&[1]),
                with(vec![file("UF-2", Part::Late(1), Ready, None)]),
                vec![LateStep::File(Part::Late(1))],
            ),
            (
                "alert: counted, named, listed",
                Alert,
                late(&[1, 2]),
                submitted.clone(),
                vec![
                    late_alert(2, &format!("{}\n{}", line(1), line(2))),
                    LateStep::ListLate,
                    LateStep::Settle(s("2 late records alerted")),
                ],
            ),
            (
                "alert: bounded",
                Alert,
                late(&(0..25).collect::<Vec<_>>()),
                submitted.clone(),
                vec![
                    late_alert(25, &all_lines.join("\n")),
                    LateStep::ListLate,
                    LateStep::Settle(s("25 late records alerted")),
                ],
            ),
            (
                "changed: alerted, never filed, in either mode",
                File,
                changed.clone(),
                submitted.clone(),
                vec![
                    changed_alert.clone(),
                    LateStep::Settle(s("1 records changed after filing")),
                ],
            ),
            (
                "late and changed: the late ones filed, the changed one alerted",
                File,
                both.clone(),
                submitted.clone(),
                vec![LateStep::File(Part::Late(1)), changed_alert.clone()],
            ),
            (
                "late and changed, alert mode",
                Alert,
                both,
                submitted.clone(),
                vec![
                    late_alert(1, &line(4)),
                    LateStep::ListLate,
                    changed_alert,
                    LateStep::Settle(s("1 late records alerted; 1 records changed after filing")),
                ],
            ),
            (
                "nothing late: an unsubmitted supplement is withdrawn",
                File,
                late(&[]),
                with(vec![file("UF-2", Part::Late(1), Ready, None)]),
                vec![
                    LateStep::Withdraw {
                        file_id: s("UF-2"),
                        reason: s("no record of 2024-02 is late any more; the unsubmitted supplemental file late-1 is not needed"),
                    },
                    LateStep::Settle(String::new()),
                ],
            ),
            (
                "nothing late, a supplement still processing: left to a later run",
                Alert,
                late(&[]),
                with(vec![file("UF-2", Part::Late(1), Processing, None)]),
                vec![LateStep::Settle(String::new())],
            ),
            (
                "nothing found (a file without a digest matched)",
                Alert,
                late(&[]),
                submitted.clone(),
                vec![LateStep::Settle(String::new())],
            ),
        ];
        for (what, mode, findings, files, expected) in cases {
            assert_eq!(
                plan(mode, period(), &findings, &rows, &files),
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn the_csv_names_the_group_and_the_record() {
        let line = csv_line(&key(), &row("r-\"1\"", 2.5));
        assert_eq!(
            line,
            "\"CRD-1\",\"PRD-2\",\"r-\"\"1\"\"\",\"AS-1\",\"MPN-1\",\"2.5\",\"2024-02-01 00:00:00\",\"2024-02-02 00:00:00\",\"\"\n"
        );
        assert_eq!(
            CSV_HEADER.matches(',').count(),
            line.matches("\",\"").count()
        );
    }
}
