//! Hostile input for every parser that reads what others wrote: the usage sources (CSV, JSON
//! array, JSON lines), the DevOps protocol decoder and the workbook validator. None may panic,
//! and none may hold memory in proportion to what an attacker sends.
//!
//! The properties run inside `cargo test` with a few dozen cases each; a long run is
//! `PROPTEST_CASES=200000 cargo test --release --test hostile`. Memory is measured by a
//! counting allocator that keeps, per thread, the bytes live and the most live at once: each
//! check runs on its own thread (a current-thread runtime for the async sources), so the
//! figure is exactly what that parser held.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell as StdCell;
use std::io::{Cursor, Read, Write};
use std::path::Path;

use futures::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{json, Value};

use connect_payg::usage::workbook::{
    inspect_workbook, read_workbook, validate_workbook, workbook_bytes, Cell, Rules, UsageRow,
};
use connect_payg::usage::{UsageSource, MAX_RECORD_BYTES};
use payg_shared::period::Period;
use payg_shared::protocol::{
    LoggingSettings, RunnerMessage, ServerMessage, SetupResponse, Task, TaskCategory, TaskInput,
    TaskOptions, Variable,
};
use payg_shared::record::{RawRecord, FIELDS};

// ----- memory accounting -----

struct Counting;

thread_local! {
    static LIVE: StdCell<i64> = const { StdCell::new(0) };
    static PEAK: StdCell<i64> = const { StdCell::new(0) };
}

fn track(delta: i64) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters move.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = System.alloc(layout);
        if !pointer.is_null() {
            track(layout.size() as i64);
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let pointer = System.alloc_zeroed(layout);
        if !pointer.is_null() {
            track(layout.size() as i64);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        System.dealloc(pointer, layout);
        track(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = System.realloc(pointer, layout, new_size);
        if !moved.is_null() {
            track(new_size as i64 - layout.size() as i64);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the most bytes this thread held at once meanwhile,
/// above what it held before.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.with(StdCell::get);
    PEAK.with(|peak| peak.set(before));
    let result = f();
    let peak = PEAK.with(StdCell::get);
    (result, (peak - before).max(0) as usize)
}

const MIB: usize = 1 << 20;

// ----- harness -----

/// `PROPTEST_CASES` when set (the long run), else `cases` (the quick run in `cargo test`).
fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    static SCRATCH: tempfile::TempDir = tempfile::tempdir().expect("a scratch directory");
}

/// One item of a decoded source.
type Item = Result<RawRecord, String>;

/// Everything a source yields for `bytes` stored as `scratch/usage.{extension}`, up to the
/// first source error (which ends the stream).
fn decode(extension: &str, bytes: &[u8]) -> (Vec<Item>, Option<String>) {
    SCRATCH.with(|dir| {
        let path = dir.path().join(format!("usage.{extension}"));
        std::fs::write(&path, bytes).expect("scratch file written");
        decode_path(&path)
    })
}

fn decode_path(path: &Path) -> (Vec<Item>, Option<String>) {
    let source = UsageSource::new(format!("file://{}", path.display()), None);
    let period = Period::parse("2024-01").expect("a period");
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            let mut stream = match source.open(period).await {
                Ok(stream) => stream,
                Err(error) => return (Vec::new(), Some(error.to_string())),
            };
            let mut items = Vec::new();
            while let Some(batch) = stream.next().await {
                match batch {
                    Ok(batch) => {
                        items.extend(batch.into_iter().map(|item| item.map_err(|bad| bad.detail)))
                    }
                    Err(error) => return (items, Some(error.to_string())),
                }
            }
            (items, None)
        })
    })
}

/// Records come with 1-based line numbers that never go backwards (elements of a one-line
/// JSON array share line 1).
fn assert_lines_ascend(items: &[Item]) {
    let lines: Vec<u64> = items
        .iter()
        .filter_map(|item| item.as_ref().ok().map(|record| record.line))
        .collect();
    assert!(lines.iter().all(|line| *line >= 1), "{lines:?}");
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
}

fn record_fields(record: &RawRecord) -> [Option<&str>; 7] {
    [
        record.subscription_id.as_deref(),
        record.item_mpn.as_deref(),
        record.quantity.as_deref(),
        record.start_time_utc.as_deref(),
        record.end_time_utc.as_deref(),
        record.record_id.as_deref(),
        record.record_note.as_deref(),
    ]
}

/// What a source must make of a field's text: blank is missing.
fn expected_text(text: &str) -> Option<String> {
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

/// Random byte-level damage: flips, insertions, deletions, a truncation.
fn damage(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(position, kind, byte) in edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let at = position % bytes.len();
        match kind % 4 {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            2 => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6)
}

// ----- CSV -----

/// Field text with everything CSV must quote: commas, quotes, line breaks, padding.
fn csv_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,\"\r\n\t:.;é{}\\[\\]-]{0,10}"
}

/// A header (the fields in any order, maybe with extra columns) and rows of quoted text.
fn csv_document() -> impl Strategy<Value = (Vec<String>, Vec<Vec<String>>)> {
    let header = (
        Just(FIELDS.to_vec()).prop_shuffle(),
        prop::collection::vec("x[a-z]{0,5}|Quantity|ITEM_MPN", 0..3),
    )
        .prop_map(|(fields, extras)| {
            let mut header: Vec<String> = fields.into_iter().map(String::from).collect();
            for extra in extras {
                if !header.contains(&extra) {
                    header.push(extra);
                }
            }
            header
        });
    header.prop_flat_map(|header| {
        let width = header.len();
        let rows = prop::collection::vec(prop::collection::vec(csv_text(), 1..width + 2), 0..6);
        (Just(header), rows)
    })
}

fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

fn render_csv(header: &[String], rows: &[Vec<String>], bom: bool, crlf: bool) -> Vec<u8> {
    let newline = if crlf { "\r\n" } else { "\n" };
    let mut text = String::new();
    if bom {
        text.push('\u{feff}');
    }
    text.push_str(&header.join(","));
    text.push_str(newline);
    for row in rows {
        let cells: Vec<String> = row.iter().map(|cell| quoted(cell)).collect();
        text.push_str(&cells.join(","));
        text.push_str(newline);
    }
    text.into_bytes()
}

proptest! {
    #![proptest_config(config(48))]

    /// Well-formed CSV in any column order comes back field for field.
    #[test]
    fn csv_records_come_back_as_written(
        (header, rows) in csv_document(),
        bom in any::<bool>(),
        crlf in any::<bool>(),
    ) {
        let (items, error) = decode("csv", &render_csv(&header, &rows, bom, crlf));
        prop_assert_eq!(error, None);
        prop_assert_eq!(items.len(), rows.len());
        assert_lines_ascend(&items);
        for (item, row) in items.iter().zip(&rows) {
            let record = item.as_ref().expect("a well-formed row");
            let mut expected = RawRecord { line: record.line, ..RawRecord::default() };
            for (name, text) in header.iter().zip(row) {
                expected.set(name, expected_text(text));
            }
            prop_assert_eq!(record_fields(record), record_fields(&expected));
        }
    }

    /// Damaged CSV and plain noise: records, bad records or one source error, never a panic.
    #[test]
    fn damaged_csv_is_survived(
        (header, rows) in csv_document(),
        damage_edits in edits(),
        noise in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let damaged = damage(render_csv(&header, &rows, false, false), &damage_edits);
        for bytes in [damaged, noise] {
            let (items, _) = decode("csv", &bytes);
            assert_lines_ascend(&items);
            prop_assert!(items.len() <= bytes.len());
        }
    }
}

// ----- JSON -----

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        // Strings full of what a scanner must not mistake for structure.
        "[a-z \\[\\]{},:\"\\\\\n\té€]{0,8}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,6}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// An object shaped like a record: some of the fields, mostly text or numbers.
fn json_record() -> impl Strategy<Value = Value> {
    let value = prop_oneof![
        6 => "[a-zA-Z0-9 :.\\-\"\\]\\[{},]{0,10}".prop_map(Value::String),
        2 => any::<u32>().prop_map(Value::from),
        1 => (0f64..1e6).prop_map(Value::from),
        1 => Just(Value::Null),
        1 => json_value(),
    ];
    prop::collection::btree_map(prop::sample::select(FIELDS.to_vec()), value, 0..8).prop_map(
        |map| {
            Value::Object(
                map.into_iter()
                    .map(|(name, value)| (name.to_string(), value))
                    .collect(),
            )
        },
    )
}

fn json_elements() -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(prop_oneof![4 => json_record(), 1 => json_value()], 0..8)
}

/// The record a source must make of one JSON element, or `None` for a bad record.
fn expected_record(element: &Value) -> Option<RawRecord> {
    let Value::Object(object) = element else {
        return None;
    };
    let mut record = RawRecord::default();
    for name in FIELDS {
        let text = match object.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Number(number)) => Some(number.to_string()),
            Some(_) => return None,
        };
        record.set(name, text);
    }
    Some(record)
}

/// Each element is one item, good or bad, exactly as serde_json reads it.
fn assert_elements(items: &[Item], oracle: &[Value]) -> Result<(), TestCaseError> {
    prop_assert_eq!(items.len(), oracle.len());
    for (item, element) in items.iter().zip(oracle) {
        match (item, expected_record(element)) {
            (Ok(record), Some(expected)) => {
                prop_assert_eq!(record_fields(record), record_fields(&expected))
            }
            (Err(_), None) => {}
            (item, expected) => prop_assert!(false, "{item:?} for {element}: {expected:?}"),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(48))]

    /// The array scanner splits exactly where a JSON parser would, however elements nest.
    #[test]
    fn json_array_elements_come_back_one_for_one(elements in json_elements(), pretty in any::<bool>()) {
        let text = match pretty {
            true => serde_json::to_string_pretty(&elements).unwrap(),
            false => serde_json::to_string(&elements).unwrap(),
        };
        let oracle: Vec<Value> = serde_json::from_str(&text).unwrap();
        let (items, error) = decode("json", text.as_bytes());
        prop_assert_eq!(error, None);
        assert_elements(&items, &oracle)?;
        assert_lines_ascend(&items);
    }

    #[test]
    fn json_lines_come_back_one_for_one(
        elements in json_elements(),
        blank_after in prop::collection::vec(any::<bool>(), 8),
        crlf in any::<bool>(),
    ) {
        let newline = if crlf { "\r\n" } else { "\n" };
        let mut text = String::new();
        for (element, blank) in elements.iter().zip(&blank_after) {
            text.push_str(&serde_json::to_string(element).unwrap());
            text.push_str(newline);
            if *blank {
                text.push_str(" \t");
                text.push_str(newline);
            }
        }
        let oracle: Vec<Value> = elements
            .iter()
            .map(|e| serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap())
            .collect();
        let (items, error) = decode("jsonl", text.as_bytes());
        prop_assert_eq!(error, None);
        assert_elements(&items, &oracle)?;
        assert_lines_ascend(&items);
    }

    /// Damaged JSON and noise, as an array and as lines: never a panic.
    #[test]
    fn damaged_json_is_survived(
        elements in json_elements(),
        damage_edits in edits(),
        noise in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let damaged = damage(serde_json::to_vec(&elements).unwrap(), &damage_edits);
        for bytes in [damaged, noise] {
            for extension in ["json", "jsonl"] {
                let (items, _) = decode(extension, &bytes);
                assert_lines_ascend(&items);
                prop_assert!(items.len() <= bytes.len() + 1);
            }
        }
    }
}

// ----- sources: bounded memory -----

/// Writes `head`, then `body_byte` `body_len` times, then `tail` — without holding it all.
fn write_big(path: &Path, head: &[u8], body_byte: u8, body_len: usize, tail: &[u8]) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    file.write_all(head).unwrap();
    let chunk = vec![body_byte; MIB];
    let mut left = body_len;
    while left > 0 {
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    file.write_all(tail).unwrap();
    file.flush().unwrap();
}

const HEADER: &[u8] = b"subscription_id,item_mpn,quantity,start_time_utc,end_time_utc\n";
const GOOD_ROW: &[u8] = b"AS-1,MPN-A,1,2024-01-01 00:00:00,2024-01-31 23:59:59\n";
/// Far larger than a record may be, so holding one would show.
const HOSTILE_BYTES: usize = 48 * MIB;
/// What a source may hold at once: a record at the limit plus its buffers.
const SOURCE_MEMORY: usize = 8 * MIB;

/// Decodes a big hostile file on a fresh thread; returns what came out and the peak memory.
fn decode_big(
    name: &str,
    head: &[u8],
    body_byte: u8,
    tail: &[u8],
) -> (Vec<Item>, Option<String>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    write_big(&path, head, body_byte, HOSTILE_BYTES, tail);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                RUNTIME.with(|_| ());
                let ((items, error), peak) = peak_during(|| decode_path(&path));
                (items, error, peak)
            })
            .join()
            .unwrap()
    })
}

#[test]
fn a_csv_row_without_end_is_refused_not_buffered() {
    // An unclosed quote makes the rest of the file one field; a missing newline, one row.
    for (head, byte) in [(&b"\"AS-1"[..], b'x'), (&b"AS-1,"[..], b'y')] {
        let mut start = HEADER.to_vec();
        start.extend_from_slice(GOOD_ROW);
        start.extend_from_slice(head);
        let (items, error, peak) = decode_big("usage.csv", &start, byte, GOOD_ROW);
        assert!(peak < SOURCE_MEMORY, "held {} MiB", peak / MIB);
        assert!(
            items.first().is_some_and(Result::is_ok),
            "{:?}",
            items.first()
        );
        let refused = error.is_some() || items.iter().skip(1).any(Result::is_err);
        assert!(refused, "the oversized row is reported: {error:?}");
    }
}

#[test]
fn oversized_json_records_are_refused_not_buffered() {
    let cases: [(&str, &[u8], u8, &[u8]); 4] = [
        // One endless line.
        ("usage.jsonl", b"{\"record_note\": \"", b'x', b"\"}\n{}\n"),
        // One endless element.
        ("usage.json", b"[{\"record_note\": \"", b'x', b"\"}, {}]"),
        // Endless nesting.
        ("usage.json", b"[", b'[', b""),
        // Endless padding between elements.
        ("usage.json", b"[{}, ", b' ', b"{}]"),
    ];
    for (name, head, byte, tail) in cases {
        let (items, error, peak) = decode_big(name, head, byte, tail);
        assert!(
            peak < SOURCE_MEMORY,
            "{name} {:?}: held {} MiB",
            byte as char,
            peak / MIB
        );
        assert!(
            error.is_some() || items.iter().any(Result::is_err) || items.len() == 2,
            "{name}: {items:?} {error:?}"
        );
    }
}

#[test]
fn records_just_under_the_limit_are_read() {
    let note = "n".repeat(MAX_RECORD_BYTES - 200);
    let line = format!("{{\"subscription_id\": \"AS-1\", \"record_note\": \"{note}\"}}\n");
    let (items, error) = decode("jsonl", line.as_bytes());
    assert_eq!(error, None);
    assert_eq!(
        items[0].as_ref().unwrap().record_note.as_deref(),
        Some(&note[..])
    );
    let mut csv = HEADER.to_vec();
    csv.extend_from_slice(format!("AS-1,M,1,a,\"{note}\"\n").as_bytes());
    let (items, error) = decode("csv", &csv);
    assert_eq!(error, None);
    assert_eq!(
        items[0].as_ref().unwrap().end_time_utc.as_deref(),
        Some(&note[..])
    );
}

// ----- the DevOps protocol decoder -----

/// Stands for a secret on the wire; must never come back in an error or `Debug` output.
const SECRET: &str = "S3CR3T-on-the-wire";

fn short_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _.:\"\\\\/-]{0,12}"
}

fn task() -> impl Strategy<Value = Task> {
    (
        short_text(),
        prop::sample::select(vec![
            TaskCategory::Background,
            TaskCategory::Interactive,
            TaskCategory::Scheduled,
        ]),
        prop::option::of(short_text()),
        (short_text(), short_text()),
        json_value().prop_map(integral),
    )
        .prop_map(
            |(task_id, task_category, correlation_id, (event_type, object_id), data)| Task {
                options: TaskOptions {
                    task_id,
                    task_category,
                    correlation_id,
                    reply_to: None,
                    api_key: Some(SECRET.into()),
                    installation_id: None,
                    connect_correlation_id: None,
                },
                input: TaskInput {
                    event_type,
                    object_id,
                    data,
                },
                output: None,
            },
        )
}

/// `value` with every fraction dropped: floats need not survive a JSON round trip exactly.
fn integral(value: Value) -> Value {
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            Value::from(n.as_f64().unwrap_or_default() as i64)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(integral).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| (key, integral(value)))
                .collect(),
        ),
        other => other,
    }
}

fn setup_response() -> impl Strategy<Value = SetupResponse> {
    (
        prop::collection::vec((short_text(), short_text()), 0..3),
        prop::option::of(short_text()),
    )
        .prop_map(|(plain, environment_type)| {
            let mut variables: Vec<Variable> = plain
                .into_iter()
                .map(|(name, value)| Variable {
                    name,
                    value: Some(value),
                    secure: false,
                })
                .collect();
            variables.push(Variable {
                name: "USAGE_SOURCE_AUTH".into(),
                value: Some(SECRET.into()),
                secure: true,
            });
            SetupResponse {
                variables: Some(variables),
                environment_type,
                logging: Some(LoggingSettings {
                    logging_api_key: Some(SECRET.into()),
                    ..LoggingSettings::default()
                }),
                ..SetupResponse::default()
            }
        })
}

/// Replaces the value at the `choice`-th place of `value` (depth first) with `new` (or
/// `null`). The secrets are left in place, and so is the `secure` flag that marks one.
fn mutate(value: &mut Value, choice: &mut usize, new: &Option<Value>) -> bool {
    let children: Vec<&mut Value> = match value {
        Value::Object(map) if map.contains_key("secure") => Vec::new(),
        Value::Object(map) => map.values_mut().collect(),
        Value::Array(items) => items.iter_mut().collect(),
        _ => Vec::new(),
    };
    for child in children {
        if child.as_str() == Some(SECRET) {
            continue;
        }
        if *choice == 0 {
            *child = new.clone().unwrap_or(Value::Null);
            return true;
        }
        *choice -= 1;
        if mutate(child, choice, new) {
            return true;
        }
    }
    false
}

fn envelope() -> impl Strategy<Value = String> {
    let version = prop_oneof![Just(json!(2)), Just(json!(1)), json_leaf()];
    let message_type = prop_oneof![
        Just("task".to_string()),
        Just("setup_response".to_string()),
        Just("setup_request".to_string()),
        Just("shutdown".to_string()),
        short_text(),
    ];
    let data = prop_oneof![
        task().prop_map(|t| serde_json::to_value(t).unwrap()),
        setup_response().prop_map(|s| serde_json::to_value(s).unwrap()),
        json_value(),
    ];
    (
        version,
        message_type,
        data,
        any::<usize>(),
        prop::option::of(json_value()),
        any::<bool>(),
    )
        .prop_map(
            |(version, message_type, mut data, choice, new, model_type)| {
                mutate(&mut data, &mut { choice % 16 }, &new);
                if model_type {
                    if let Value::Object(fields) = &mut data {
                        fields.insert("model_type".into(), json!(message_type));
                    }
                }
                json!({"version": version, "message_type": message_type, "data": data}).to_string()
            },
        )
}

/// Decodes with both decoders: never a panic, and no secret in an error. Unless the bytes
/// were damaged (which may well unmark a secure variable), none in `Debug` output either.
fn decode_both(text: &str, damaged: bool) -> Result<(), TestCaseError> {
    let server = ServerMessage::decode(text);
    let runner = RunnerMessage::decode(text);
    let mut shown = vec![
        server
            .as_ref()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
        runner
            .as_ref()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
    ];
    if !damaged {
        shown.extend([format!("{server:?}"), format!("{runner:?}")]);
    }
    for shown in shown {
        prop_assert!(!shown.contains(SECRET), "{shown}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn tasks_and_setup_responses_survive_a_round_trip(task in task(), setup in setup_response()) {
        let message = ServerMessage::Task(task.clone());
        prop_assert_eq!(ServerMessage::decode(&message.encode()).unwrap(), message);
        let message = RunnerMessage::Task(task);
        prop_assert_eq!(RunnerMessage::decode(&message.encode()).unwrap(), message);
        let message = ServerMessage::SetupResponse(setup);
        prop_assert_eq!(ServerMessage::decode(&message.encode()).unwrap(), message);
    }

    #[test]
    fn damaged_messages_are_decoding_errors(text in envelope(), damage_edits in edits()) {
        decode_both(&text, false)?;
        let damaged = damage(text.into_bytes(), &damage_edits);
        decode_both(&String::from_utf8_lossy(&damaged), true)?;
    }

    #[test]
    fn noise_is_a_decoding_error(text in ".{0,256}", json in json_value()) {
        decode_both(&text, false)?;
        decode_both(&json.to_string(), false)?;
    }
}

#[test]
fn deep_nesting_is_refused_not_recursed() {
    for opening in ["[", "{\"a\":"] {
        let text = format!(
            "{{\"version\": 2, \"message_type\": \"task\", \"data\": {}}}",
            opening.repeat(100_000)
        );
        assert!(ServerMessage::decode(&text).is_err());
        assert!(RunnerMessage::decode(&text).is_err());
    }
}

// ----- the workbook validator -----

fn good_row(n: u32) -> UsageRow {
    UsageRow {
        record_id: Cell::text(format!("r-{n}")),
        item_search_criteria: Cell::text("item.mpn"),
        item_search_value: Cell::text("MPN-A"),
        quantity: Cell::Number(f64::from(n) + 0.5),
        start_time_utc: Cell::text("2024-01-01 00:00:00"),
        end_time_utc: Cell::text("2024-01-31 23:59:59"),
        asset_search_criteria: Cell::text("asset.id"),
        asset_search_value: Cell::text("AS-1"),
        ..UsageRow::default()
    }
}

/// Valid workbooks to damage: ours, and one written by openpyxl.
fn base_workbooks() -> &'static [Vec<u8>] {
    static BASES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    BASES.get_or_init(|| {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openpyxl-valid.xlsx");
        vec![
            workbook_bytes((1..=3).map(good_row)).unwrap(),
            std::fs::read(fixture).unwrap(),
        ]
    })
}

/// The parts of a zip, in order.
fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    (0..archive.len())
        .map(|index| {
            let mut part = archive.by_index(index).unwrap();
            let mut content = Vec::new();
            part.read_to_end(&mut content).unwrap();
            (part.name().unwrap().to_string(), content)
        })
        .collect()
}

fn rezip(parts: &[(String, Vec<u8>)], deflate: bool) -> Vec<u8> {
    let method = match deflate {
        true => zip::CompressionMethod::Deflated,
        false => zip::CompressionMethod::Stored,
    };
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, content) in parts {
        writer.start_file(name.as_str(), options).unwrap();
        writer.write_all(content).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// Pieces of spreadsheet XML that readers get wrong: odd references, types, entities.
const XML_TOKENS: &[&str] = &[
    "<row r=\"3\">",
    "</row>",
    "<row r=\"0\">",
    "<row r=\"4294967296\">",
    "<row>",
    "<c r=\"B2\" t=\"s\"><v>0</v></c>",
    "<c r=\"B2\" t=\"s\"><v>99999999</v></c>",
    "<c r=\"XFD1048576\" t=\"inlineStr\"><is><t>x</t></is></c>",
    "<c r=\"A0\">",
    "<c r=\"\">",
    "<c r=\"ZZZZZZZZ1\">",
    "<c>",
    "</c>",
    "<v>1e308</v>",
    "<v>-0</v>",
    "<v>NaN</v>",
    "<v>inf</v>",
    "<v></v>",
    " t=\"b\"",
    " t=\"e\"",
    " t=\"d\"",
    " t=\"n\"",
    " t=\"str\"",
    " s=\"99\"",
    " s=\"1\"",
    "<v>#DIV/0!</v>",
    "<f>SUM(A1:A2)</f>",
    "&amp;",
    "&#0;",
    "&#xFFFFFF;",
    "&bogus;",
    "<![CDATA[x]]>",
    "<!DOCTYPE x [<!ENTITY a \"aaaaaaaa\">]>",
    "<?xml version=\"1.0\"?>",
    "<sheetData>",
    "</sheetData>",
    "<si><t>x</t></si>",
    "<dimension ref=\"A1:XFD1048576\"/>",
    "<sheet name=\"usage_records\" sheetId=\"9\" r:id=\"rId9\"/>",
    "<is><t>",
    "</t></is>",
    "\u{feff}",
    "</",
    "<",
    ">",
    "\"",
];

/// One edit of a part: a token inserted, a span removed, or a byte replaced.
fn xml_edits() -> impl Strategy<Value = Vec<(usize, u8, usize)>> {
    prop::collection::vec((any::<usize>(), 0u8..3, any::<usize>()), 1..5)
}

fn edit_xml(content: &mut Vec<u8>, edits: &[(usize, u8, usize)]) {
    for &(position, kind, extra) in edits {
        let at = position % (content.len() + 1);
        match kind {
            0 => {
                let token = XML_TOKENS[extra % XML_TOKENS.len()].as_bytes();
                content.splice(at..at, token.iter().copied());
            }
            1 => {
                let end = (at + extra % 64).min(content.len());
                content.drain(at..end);
            }
            _ if at < content.len() => content[at] = extra as u8,
            _ => content.push(extra as u8),
        }
    }
}

/// A hostile workbook: noise, a damaged zip, or a well-formed zip with damaged XML inside
/// (sometimes with a shared-strings part added).
fn hostile_workbook() -> impl Strategy<Value = Vec<u8>> {
    let base = 0..base_workbooks().len();
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        (base.clone(), edits()).prop_map(|(base, edits)| damage(base_workbooks()[base].clone(), &edits)),
        (base, any::<usize>(), xml_edits(), any::<bool>(), prop::option::of(xml_edits())).prop_map(
            |(base, part, edits, deflate, shared)| {
                let mut parts = unzip(&base_workbooks()[base]);
                let count = parts.len();
                if let Some(shared_edits) = shared {
                    let mut strings = b"<?xml version=\"1.0\"?><sst xmlns=\"http://schemas.openxmlformats.org/spreadsheetml/2006/main\"><si><t>item.mpn</t></si></sst>".to_vec();
                    edit_xml(&mut strings, &shared_edits);
                    parts.push(("xl/sharedStrings.xml".into(), strings));
                }
                edit_xml(&mut parts[part % count].1, &edits);
                rezip(&parts, deflate)
            }
        ),
    ]
}

/// Memory a small hostile workbook may cost the validator.
const WORKBOOK_MEMORY: usize = 64 * MIB;

proptest! {
    #![proptest_config(config(64))]

    /// Hostile workbooks are problems to report, never a panic, and cheap to look at.
    #[test]
    fn hostile_workbooks_are_reported_not_fatal(bytes in hostile_workbook()) {
        let rules = Rules::offline(Some(Period::parse("2024-01").unwrap()));
        let ((read, inspection, problems), peak) = peak_during(|| {
            (read_workbook(&bytes), inspect_workbook(&bytes, &rules), validate_workbook(&bytes, &rules))
        });
        prop_assert!(peak < WORKBOOK_MEMORY, "held {} MiB", peak / MIB);
        prop_assert_eq!(&problems, &inspection.problems);
        if let Ok(rows) = read {
            prop_assert_eq!(rows.len() as u64, inspection.records);
        } else {
            prop_assert!(!problems.is_empty());
        }
    }
}

/// A workbook whose sheet part is `head`, `filler` `size` times, then `tail` — compressed
/// while it is written, so a few hundred KiB can unpack to hundreds of MiB.
fn workbook_bomb(part: &str, head: &str, filler: &str, size: usize, tail: &str) -> Vec<u8> {
    let parts = unzip(&base_workbooks()[0]);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let mut replaced = false;
    for (name, content) in &parts {
        writer.start_file(name.as_str(), options).unwrap();
        if name != part {
            writer.write_all(content).unwrap();
            continue;
        }
        replaced = true;
        writer.write_all(head.as_bytes()).unwrap();
        let chunk = filler.repeat((MIB / filler.len()).max(1));
        let mut written = 0;
        while written < size {
            writer.write_all(chunk.as_bytes()).unwrap();
            written += chunk.len();
        }
        writer.write_all(tail.as_bytes()).unwrap();
    }
    if !replaced {
        writer.start_file(part, options).unwrap();
        writer.write_all(head.as_bytes()).unwrap();
        let chunk = filler.repeat((MIB / filler.len()).max(1));
        let mut written = 0;
        while written < size {
            writer.write_all(chunk.as_bytes()).unwrap();
            written += chunk.len();
        }
        writer.write_all(tail.as_bytes()).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// Unpacked size of a bomb: more than a validator may hold.
const BOMB_BYTES: usize = 80 * MIB;
/// Shared strings beyond what the validator accepts (128 MiB).
const SHARED_STRINGS_BOMB_BYTES: usize = 144 * MIB;

const SHEET_HEAD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><worksheet xmlns=\"http://schemas.openxmlformats.org/spreadsheetml/2006/main\"><sheetData>";
const SHEET_TAIL: &str = "</sheetData></worksheet>";

#[test]
fn workbook_bombs_cost_bounded_memory() {
    let sheet = "xl/worksheets/sheet1.xml";
    let header: String = {
        let cells: String = connect_payg::usage::workbook::COLUMNS
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let letter = char::from(b'A' + i as u8);
                format!("<c r=\"{letter}1\" t=\"inlineStr\"><is><t>{name}</t></is></c>")
            })
            .collect();
        format!("<row r=\"1\">{cells}</row>")
    };
    let bombs = [
        (
            "one huge cell",
            workbook_bomb(
                sheet,
                &format!("{SHEET_HEAD}{header}<row r=\"2\"><c r=\"A2\" t=\"inlineStr\"><is><t>"),
                "a",
                BOMB_BYTES,
                &format!("</t></is></c></row>{SHEET_TAIL}"),
            ),
        ),
        (
            "one huge shared string",
            workbook_bomb(
                "xl/sharedStrings.xml",
                "<?xml version=\"1.0\"?><sst xmlns=\"http://schemas.openxmlformats.org/spreadsheetml/2006/main\"><si><t>",
                "a",
                BOMB_BYTES,
                "</t></si></sst>",
            ),
        ),
        (
            "many shared strings",
            workbook_bomb(
                "xl/sharedStrings.xml",
                "<?xml version=\"1.0\"?><sst xmlns=\"http://schemas.openxmlformats.org/spreadsheetml/2006/main\">",
                "<si><t>a</t></si>",
                SHARED_STRINGS_BOMB_BYTES,
                "</sst>",
            ),
        ),
        (
            "a huge attribute",
            workbook_bomb(
                sheet,
                &format!("{SHEET_HEAD}{header}<row r=\"2\" x=\""),
                "a",
                BOMB_BYTES,
                &format!("\"></row>{SHEET_TAIL}"),
            ),
        ),
    ];
    let mut greedy = Vec::new();
    for (what, bomb) in bombs {
        let rules = Rules::offline(None);
        let (problems, peak) = std::thread::scope(|scope| {
            scope
                .spawn(|| peak_during(|| validate_workbook(&bomb, &rules)))
                .join()
                .unwrap()
        });
        if peak >= WORKBOOK_MEMORY {
            greedy.push(format!(
                "{what} ({} KiB): held {} MiB; {}",
                bomb.len() / 1024,
                peak / MIB,
                problems
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ));
        }
    }
    assert!(greedy.is_empty(), "{greedy:#?}");
}
