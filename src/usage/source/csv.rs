//! CSV records: a header row naming the fields (any order, extra columns ignored), then one
//! record per row. Quoted fields may hold commas, quotes and line breaks.
//!
//! Rows are split here ([`Rows`]) rather than by a CSV reader: where a row ends (a line break
//! outside quotes) is found by jumping with `memchr` from one quote or line break to the next
//! ([`row_end`]); a row without a quote, almost every row, is cut at its commas, and a row with
//! a quote is read field by field, jumping to each quoted part's closing quote ([`unquote`]).
//! Read byte by byte through `csv_async` (`csv_core`'s state machine per byte, the row copied
//! field by field, and this module's own scan for the row limit on top), the CSV's reading
//! took ~910 M of a 300k-record dry run's 7.66 G instructions; split here, ~330 M fewer (what
//! is left is mostly the UTF-8 check and the fields' copies into the records).
//!
//! The grammar is `csv_core`'s with its defaults: `,` between fields; a row ends at `\n`, `\r\n`
//! or a lone `\r` outside quotes; blank lines are skipped; a field opening with `"` is quoted up
//! to the next lone `"` (`""` inside is one quote) and what follows the closing quote up to the
//! next comma is added to it; a quote inside an unquoted field is text. A property test reads
//! random texts both ways, in random pieces, and compares every row and field.
//!
//! A row's line is the one its first byte is on, each of those three line breaks counting one.
//! (`csv_async` counted only `\n`, and only up to where it had stopped reading the row before:
//! a CRLF file's rows were named one line early, and a row after blank lines as many lines
//! early as blank lines were right before it.)
//!
//! Rows are measured as they are split: a row larger than [`MAX_RECORD_BYTES`] ends the source
//! instead of being buffered. It is almost always an unclosed quote, after which no row boundary
//! can be trusted: reading on would silently swallow the rest of the file. The splitter also
//! sees where the source ends: an HTTP body whose last row has no line break was cut short
//! ([`LastLine::NeedsBreak`]), and the rows read so far must not be filed as all.

use std::io;
use std::ops::Range;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{broken, cut_short, LastLine, RecordStream, SourceError, MAX_RECORD_BYTES};
use crate::usage::record::{BadReason, BadRecord, RawRecord, FIELDS};
use payg_shared::record::trim;

/// Fields a header must name; `record_id` and `record_note` are optional.
pub(super) const REQUIRED: [&str; 5] = [
    "subscription_id",
    "item_mpn",
    "quantity",
    "start_time_utc",
    "end_time_utc",
];

/// Rows read before any is handed on: the batch the record checks take at a time.
const ROWS_AT_A_TIME: usize = 512;

/// Bytes asked of the source at a time, and the buffer's first size (it grows for a row
/// longer than it, up to the row limit).
const READ_SIZE: usize = 256 << 10;

pub(super) fn records(
    reader: Box<dyn AsyncRead + Send + Unpin>,
    source_name: String,
    last_line: LastLine,
) -> RecordStream {
    let stream = futures::stream::once(async move {
        let mut rows = Rows::new(reader, last_line);
        let header = rows.next_row().await.map_err(|e| broken(&source_name, e))?;
        // Each column's place in FIELDS, if it is one of them (an empty source names none).
        let columns: Vec<Option<usize>> = header.map_or_else(Vec::new, |header| {
            header
                .fields
                .iter()
                .map(|at| {
                    let name = String::from_utf8_lossy(&header.bytes[at.clone()]);
                    let name = name.trim().trim_start_matches('\u{feff}').trim();
                    FIELDS.iter().position(|field| *field == name)
                })
                .collect()
        });
        if let Some(missing) = REQUIRED
            .iter()
            .find(|field| !columns.iter().flatten().any(|&at| FIELDS[at] == **field))
        {
            return Err(SourceError::Format {
                source_name,
                reason: format!("the CSV header has no {missing} column"),
            });
        }
        // Rows are read a batch at a time: a stream step per row moved the reader's state in
        // and out of a new future each time (those copies were 2% of a 10M-record run).
        let rows = futures::stream::unfold(Next::Rows(rows, columns, source_name), |next| {
            read_batch(next)
        });
        Ok(rows)
    });
    stream
        .flat_map(|opened| match opened {
            Ok(rows) => rows.left_stream(),
            Err(error) => futures::stream::iter([Err(error)]).right_stream(),
        })
        .boxed()
}

/// What is left to read: the rows (with each column's place in FIELDS), the error that broke
/// the source (handed on after the rows before it; nothing after it can be trusted), or
/// nothing.
enum Next {
    Rows(Box<Rows>, Vec<Option<usize>>, String),
    Broken(SourceError),
    Done,
}

async fn read_batch(
    next: Next,
) -> Option<(Result<Vec<Result<RawRecord, BadRecord>>, SourceError>, Next)> {
    let (mut rows, columns, source_name) = match next {
        Next::Rows(rows, columns, source_name) => (rows, columns, source_name),
        Next::Broken(error) => return Some((Err(error), Next::Done)),
        Next::Done => return None,
    };
    let mut batch = Vec::with_capacity(ROWS_AT_A_TIME);
    while batch.len() < ROWS_AT_A_TIME {
        match rows.next_row().await {
            Ok(Some(row)) => push_record(&mut batch, &row, &columns),
            Ok(None) => return (!batch.is_empty()).then_some((Ok(batch), Next::Done)),
            Err(error) => {
                let error = broken(&source_name, error);
                return Some(match batch.is_empty() {
                    true => (Err(error), Next::Done),
                    false => (Ok(batch), Next::Broken(error)),
                });
            }
        }
    }
    Some((Ok(batch), Next::Rows(rows, columns, source_name)))
}

/// Adds the record of one CSV row to `batch`: its fields trimmed, an empty one missing. A row
/// that is not UTF-8 text (in any column, as the platform reads the whole row) is bad at its
/// line. The record is filled where it lies in the batch: made elsewhere and moved in, the
/// move was 1.6% of the reading's CPU samples in a 1M-record call-graph profile.
fn push_record(
    batch: &mut Vec<Result<RawRecord, BadRecord>>,
    row: &Row<'_>,
    columns: &[Option<usize>],
) {
    batch.push(Ok(RawRecord {
        line: row.line,
        ..Default::default()
    }));
    let slot = batch.last_mut().expect("a record was just pushed");
    if let Ok(record) = slot {
        if let Err(bad) = fill_record(record, row, columns) {
            *slot = Err(bad);
        }
    }
}

/// Fills `record` (its line set) from `row` ([`push_record`]).
fn fill_record(
    record: &mut RawRecord,
    row: &Row<'_>,
    columns: &[Option<usize>],
) -> Result<(), BadRecord> {
    let line = record.line;
    // The row is checked as one text (one call instead of one a field, 2% of a 10M-record
    // run), each field is then that text cut at its bounds, unless a bound splits a
    // character; then, as when the text is not UTF-8, field by field, to name the field at
    // fault.
    let whole = std::str::from_utf8(row.bytes).ok();
    for (field, at) in row.fields.iter().enumerate() {
        let cut = whole.and_then(|text| text.get(at.clone()));
        let text = match cut.map_or_else(|| std::str::from_utf8(&row.bytes[at.clone()]), Ok) {
            Ok(text) => text,
            Err(error) => {
                return Err(BadRecord::new(
                    line,
                    BadReason::UnparsableField,
                    format!(
                        "the row cannot be read: field {} is not UTF-8 text (near byte {})",
                        field + 1,
                        error.valid_up_to()
                    ),
                ))
            }
        };
        let Some(Some(at)) = columns.get(field) else {
            continue;
        };
        let text = trim(text);
        if let Some(slot) = record.field_mut(*at) {
            *slot = (!text.is_empty()).then(|| text.into());
        }
    }
    Ok(())
}

/// One row: the line it starts on, and its fields, each a range of `bytes`.
struct Row<'r> {
    line: u64,
    bytes: &'r [u8],
    fields: &'r [Range<usize>],
}

/// The source's bytes, split into rows ([`Rows::next_row`]).
struct Rows {
    reader: Box<dyn AsyncRead + Send + Unpin>,
    last_line: LastLine,
    /// `buffer[start..end]` was read and not yet split.
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    /// The source has no more bytes.
    ended: bool,
    /// The line `buffer[start]` is on.
    line: u64,
    /// The last byte split off was a `\r`: a `\n` right after it ends the same line.
    after_cr: bool,
    /// The fields of the row last split when it held a quote, end to end, unquoted.
    unquoted: Vec<u8>,
    /// The fields of the row last split.
    fields: Vec<Range<usize>>,
}

impl Rows {
    fn new(reader: Box<dyn AsyncRead + Send + Unpin>, last_line: LastLine) -> Box<Rows> {
        Box::new(Rows {
            reader,
            last_line,
            buffer: Vec::new(),
            start: 0,
            end: 0,
            ended: false,
            line: 1,
            after_cr: false,
            unquoted: Vec::new(),
            fields: Vec::new(),
        })
    }

    /// The next row, `None` at the end of the source. An error ends the source: the reader's,
    /// a row larger than [`MAX_RECORD_BYTES`], or a last row without its line break when one
    /// is needed.
    async fn next_row(&mut self) -> io::Result<Option<Row<'_>>> {
        let length = loop {
            self.skip_line_breaks();
            if self.start == self.end {
                if self.ended {
                    return Ok(None);
                }
                self.fill().await?;
                continue;
            }
            let waiting = &self.buffer[self.start..self.end];
            if let Some(end) = row_end(waiting) {
                break end;
            }
            if waiting.len() > MAX_RECORD_BYTES {
                return Err(too_large(self.line));
            }
            if self.ended {
                // The last row, without a line break after it.
                if self.last_line == LastLine::NeedsBreak {
                    return Err(cut_short(self.line));
                }
                break RowEnd {
                    length: waiting.len(),
                    quotes: waiting.contains(&b'"'),
                    line_breaks: line_breaks(waiting),
                };
            }
            self.fill().await?;
        };
        if length.length > MAX_RECORD_BYTES {
            return Err(too_large(self.line));
        }
        let line = self.line;
        let row = &self.buffer[self.start..self.start + length.length];
        self.start += length.length;
        self.line += length.line_breaks;
        self.fields.clear();
        let bytes = if length.quotes {
            unquote(row, &mut self.unquoted, &mut self.fields);
            &self.unquoted[..]
        } else {
            let mut from = 0;
            for comma in memchr::memchr_iter(b',', row) {
                self.fields.push(from..comma);
                from = comma + 1;
            }
            self.fields.push(from..row.len());
            row
        };
        Ok(Some(Row {
            line,
            bytes,
            fields: &self.fields,
        }))
    }

    /// Passes the line breaks before the next row (blank lines, and the row before's end),
    /// counting them.
    fn skip_line_breaks(&mut self) {
        while let Some(&byte) = self.buffer[..self.end].get(self.start) {
            if byte != b'\n' && byte != b'\r' {
                self.after_cr = false;
                return;
            }
            if !(byte == b'\n' && self.after_cr) {
                self.line += 1;
            }
            self.after_cr = byte == b'\r';
            self.start += 1;
        }
    }

    /// Reads more of the source after the bytes not yet split (moved to the buffer's start;
    /// the buffer grows when they fill it).
    async fn fill(&mut self) -> io::Result<()> {
        self.buffer.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.end == self.buffer.len() {
            let grown = (self.buffer.len() * 2).max(READ_SIZE);
            self.buffer.resize(grown, 0);
        }
        let read = self.reader.read(&mut self.buffer[self.end..]).await?;
        self.end += read;
        self.ended = read == 0;
        Ok(())
    }
}

/// Where a row ends, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RowEnd {
    /// Bytes before its line break.
    length: usize,
    /// Whether it holds a quote (then its fields are read by [`unquote`]).
    quotes: bool,
    /// Line breaks inside its quoted fields.
    line_breaks: u64,
}

/// Where the row starting at `bytes[0]` ends (at a line break outside quotes); `None` when the
/// bytes end first. Jumps from one byte that matters to the next (a quote or a line break; in
/// a quoted field, a quote) with `memchr`.
fn row_end(bytes: &[u8]) -> Option<RowEnd> {
    let mut at = 0;
    let mut quotes = false;
    // Whether `at` is where a field starts (a quote there opens a quoted field).
    let mut field_start = true;
    loop {
        let next = at + memchr::memchr3(b'"', b'\n', b'\r', &bytes[at..])?;
        if bytes[next] != b'"' {
            return Some(RowEnd {
                length: next,
                quotes,
                line_breaks: if quotes {
                    line_breaks(&bytes[..next])
                } else {
                    0
                },
            });
        }
        quotes = true;
        let opens = match next.checked_sub(1) {
            None => true,
            Some(before) if before < at => field_start,
            Some(before) => bytes[before] == b',',
        };
        at = next + 1;
        if !opens {
            // A quote inside an unquoted field is text.
            field_start = false;
            continue;
        }
        // A quoted field: to its closing quote (`""` is a quote inside it).
        loop {
            at += memchr::memchr(b'"', &bytes[at..])? + 1;
            match bytes.get(at) {
                Some(b'"') => at += 1,
                Some(_) => break,
                None => return None,
            }
        }
        // After the closing quote: a comma starts a field, a line break ends the row, any
        // other byte continues the field unquoted.
        field_start = bytes[at] == b',';
        if field_start {
            at += 1;
        }
    }
}

/// Line breaks in `bytes` (inside a row's quoted fields): `\n`, `\r\n` and a lone `\r` count
/// one each.
fn line_breaks(bytes: &[u8]) -> u64 {
    let newlines = memchr::memchr_iter(b'\n', bytes).count();
    let lone_returns = memchr::memchr_iter(b'\r', bytes)
        .filter(|&at| bytes.get(at + 1) != Some(&b'\n'))
        .count();
    (newlines + lone_returns) as u64
}

/// The fields of `row` (a row holding a quote), end to end in `unquoted`, each one's range in
/// `fields`. A field opening with a quote is quoted up to the next lone quote (`""` is one
/// quote, commas and line breaks are text), or to the row's end when the source ended inside
/// it; what follows its closing quote up to the next comma is added to it as it is. Elsewhere a
/// quote is text.
fn unquote(row: &[u8], unquoted: &mut Vec<u8>, fields: &mut Vec<Range<usize>>) {
    unquoted.clear();
    let mut at = 0;
    loop {
        let start = unquoted.len();
        if row.get(at) == Some(&b'"') {
            at += 1;
            loop {
                let Some(quote) = memchr::memchr(b'"', &row[at..]) else {
                    // No closing quote (the source ended inside the field): the rest of the row.
                    unquoted.extend_from_slice(&row[at..]);
                    at = row.len();
                    break;
                };
                unquoted.extend_from_slice(&row[at..at + quote]);
                at += quote + 1;
                if row.get(at) != Some(&b'"') {
                    break;
                }
                unquoted.push(b'"');
                at += 1;
            }
        }
        let end = memchr::memchr(b',', &row[at..]).map_or(row.len(), |comma| at + comma);
        unquoted.extend_from_slice(&row[at..end]);
        fields.push(start..unquoted.len());
        if end == row.len() {
            return;
        }
        at = end + 1;
    }
}

/// The error a row larger than [`MAX_RECORD_BYTES`] gives.
fn too_large(line: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "the row at line {line} is larger than 1 MiB (an unclosed quote?); \
             the rest of the file cannot be split into rows reliably"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    /// A reader handing out its text a few bytes at a time (`pieces` cycled), so that rows are
    /// cut between reads.
    struct Trickle {
        text: Vec<u8>,
        at: usize,
        pieces: Vec<usize>,
        read: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let piece = self.pieces[self.read % self.pieces.len()].max(1);
            self.read += 1;
            let end = (self.at + piece)
                .min(self.text.len())
                .min(self.at + buf.remaining());
            buf.put_slice(&self.text[self.at..end]);
            self.at = end;
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Every row of `text` split by [`Rows`]: its line and fields.
    async fn split(
        text: &[u8],
        pieces: Vec<usize>,
        last_line: LastLine,
    ) -> io::Result<Vec<(u64, Vec<Vec<u8>>)>> {
        let trickle = Trickle {
            text: text.to_vec(),
            at: 0,
            pieces,
            read: 0,
        };
        let mut rows = Rows::new(Box::new(trickle), last_line);
        let mut split = Vec::new();
        while let Some(row) = rows.next_row().await? {
            let fields = row.fields.iter().map(|at| row.bytes[at.clone()].to_vec());
            split.push((row.line, fields.collect()));
        }
        Ok(split)
    }

    /// What `csv_async` reads from `text`: each row's fields, and the line of its first byte
    /// (the first byte that is not a line break from where `csv_async` says the row starts),
    /// every `\n`, `\r\n` and lone `\r` before it counting one.
    async fn split_by_csv_async(text: &[u8]) -> Vec<(u64, Vec<Vec<u8>>)> {
        let mut reader = csv_async::AsyncReaderBuilder::new()
            .flexible(true)
            .has_headers(false)
            .create_reader(text);
        let mut row = csv_async::ByteRecord::new();
        let mut split = Vec::new();
        while reader.read_byte_record(&mut row).await.unwrap() {
            let mut first = row.position().unwrap().byte() as usize;
            while matches!(text.get(first), Some(b'\n' | b'\r')) {
                first += 1;
            }
            let before = &text[..first];
            let breaks = before.iter().enumerate().filter(|(at, byte)| {
                **byte == b'\n' || (**byte == b'\r' && before.get(at + 1) != Some(&b'\n'))
            });
            let fields = row.iter().map(<[u8]>::to_vec).collect();
            split.push((breaks.count() as u64 + 1, fields));
        }
        split
    }

    proptest::proptest! {
        /// Rows and fields as `csv_async` reads them, whatever the text and however it is cut
        /// into reads; lines as the line breaks count.
        #[test]
        fn rows_split_as_csv_async_reads_them(
            text in proptest::collection::vec(
                proptest::sample::select(b"ab,,,\"\"\n\r \xc3".to_vec()), 0..300),
            pieces in proptest::collection::vec(1usize..40, 1..5),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let ours = runtime
                .block_on(split(&text, pieces, LastLine::MayLackBreak))
                .unwrap();
            let theirs = runtime.block_on(split_by_csv_async(&text));
            proptest::prop_assert_eq!(ours, theirs);
        }
    }

    #[tokio::test]
    async fn lines_count_every_kind_of_line_break_and_blank_lines() {
        let cases: [(&[u8], &[u64]); 6] = [
            (b"h\na\nb\n", &[1, 2, 3]),
            (b"h\r\na\r\n\r\nb\r\n", &[1, 2, 4]),
            (b"h\ra\rb", &[1, 2, 3]),
            (b"\n\nh\n\n\na\n", &[3, 6]),
            (b"h\n\"a\r\nb\rc\"\nd\n", &[1, 2, 5]),
            (b"h\r\n\"x\"\"\n\",b\"c\r\nz\r\n", &[1, 2, 4]),
        ];
        for (text, lines) in cases {
            for pieces in [vec![1], vec![2, 3], vec![1000]] {
                let rows = split(text, pieces, LastLine::MayLackBreak).await.unwrap();
                let got: Vec<u64> = rows.iter().map(|(line, _)| *line).collect();
                assert_eq!(got, lines, "{:?}", String::from_utf8_lossy(text));
            }
        }
        let rows = split(b"a,\"x\"\"\n\",b\"c\nz\n", vec![3], LastLine::MayLackBreak)
            .await
            .unwrap();
        let fields: Vec<&[u8]> = rows[0].1.iter().map(Vec::as_slice).collect();
        assert_eq!(fields, [&b"a"[..], b"x\"\n", b"b\"c"]);
        assert_eq!(rows[1], (3, vec![b"z".to_vec()]));
    }

    #[tokio::test]
    async fn a_row_larger_than_the_limit_ends_the_source_at_its_line() {
        let mut text = b"a,b\r\nc,\"".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES));
        let error = split(&text, vec![1 << 16], LastLine::MayLackBreak)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 2 is larger than 1 MiB"), "{error}");
        // Complete, yet too large.
        text.extend(b"\"\n");
        let error = split(&text, vec![1 << 16], LastLine::MayLackBreak)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 2 is larger than 1 MiB"), "{error}");
    }

    async fn read(text: &'static str) -> Result<Vec<Result<RawRecord, BadRecord>>, SourceError> {
        records(
            Box::new(text.as_bytes()),
            "test.csv".into(),
            LastLine::MayLackBreak,
        )
        .try_concat()
        .await
    }

    #[tokio::test]
    async fn reads_quoted_fields_any_column_order_and_line_numbers() {
        let rows = read(
            "quantity,subscription_id,item_mpn,start_time_utc,end_time_utc,record_note,extra\n\
             1.5,AS-1,MPN,2024-01-01 00:00:00,2024-01-31 23:59:59,\"a, \"\"b\"\"\nc\",x\n\
             2,AS-2,MPN,2024-01-01 00:00:00,2024-01-31 23:59:59,,y\n",
        )
        .await
        .unwrap();
        assert_eq!(rows.len(), 2);
        let first = rows[0].as_ref().unwrap();
        assert_eq!(first.line, 2);
        assert_eq!(first.quantity.as_deref(), Some("1.5"));
        assert_eq!(first.record_note.as_deref(), Some("a, \"b\"\nc"));
        let second = rows[1].as_ref().unwrap();
        assert_eq!(second.line, 4);
        assert_eq!(second.record_note, None);
    }

    #[tokio::test]
    async fn short_rows_come_through_with_missing_fields() {
        let rows =
            read("subscription_id,item_mpn,quantity,start_time_utc,end_time_utc\nAS-1,MPN\n")
                .await
                .unwrap();
        let record = rows[0].as_ref().unwrap();
        assert_eq!(record.subscription_id.as_deref(), Some("AS-1"));
        assert_eq!(record.quantity, None);
    }

    #[tokio::test]
    async fn a_header_without_a_required_column_is_a_source_error() {
        let error = read("subscription_id,item_mpn,quantity\nAS-1,M,1\n")
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("start_time_utc"), "{error}");
        assert!(error.contains("test.csv"), "{error}");
    }

    #[tokio::test]
    async fn an_unclosed_quote_ends_the_source_at_the_row_limit() {
        let text = format!(
            "subscription_id,item_mpn,quantity,start_time_utc,end_time_utc\n\
             AS-1,M,1,a,b\n\
             \"AS-2,M,1,a,b\n{}",
            "AS-3,M,1,a,b\n".repeat(MAX_RECORD_BYTES / 10)
        );
        let data: &'static [u8] = Box::leak(text.into_bytes().into_boxed_slice());
        let mut rows = records(Box::new(data), "t.csv".into(), LastLine::MayLackBreak);
        let first = rows.next().await.unwrap().unwrap();
        assert!(first.len() == 1 && first[0].is_ok(), "{first:?}");
        let error = rows.next().await.unwrap().unwrap_err().to_string();
        assert!(error.contains("t.csv"), "{error}");
        assert!(error.contains("line 3 is larger than 1 MiB"), "{error}");
        assert!(rows.next().await.is_none());
    }

    #[tokio::test]
    async fn a_last_row_without_its_break_is_cut_short_only_when_a_break_is_needed() {
        const HEADER: &str = "subscription_id,item_mpn,quantity,start_time_utc,end_time_utc\n";
        let read_as = |text: String, last_line| async move {
            let data: &'static [u8] = Box::leak(text.into_bytes().into_boxed_slice());
            // Item by item, the error that ends the source last.
            let rows: Vec<Result<Result<RawRecord, BadRecord>, SourceError>> =
                records(Box::new(data), "t.csv".into(), last_line)
                    .flat_map(|batch| {
                        futures::stream::iter(match batch {
                            Ok(items) => items.into_iter().map(Ok).collect(),
                            Err(error) => vec![Err(error)],
                        })
                    })
                    .collect()
                    .await;
            rows
        };
        // A body cut inside a value: `4652` would be read as `46`.
        let cut = format!("{HEADER}AS-1,M,1,a,b\nAS-2,M,46");
        let rows = read_as(cut.clone(), LastLine::MayLackBreak).await;
        assert_eq!(rows.len(), 2);
        let last = rows[1].as_ref().unwrap().as_ref().unwrap();
        assert_eq!(last.quantity.as_deref(), Some("46"));
        let rows = read_as(cut, LastLine::NeedsBreak).await;
        assert_eq!(rows.len(), 2, "the complete row, then the error");
        assert!(rows[0].as_ref().unwrap().is_ok());
        let error = rows[1].as_ref().unwrap_err().to_string();
        assert!(error.contains("t.csv"), "{error}");
        assert!(
            error.contains("line 3") && error.contains("cut short"),
            "{error}"
        );
        // Cut inside a quoted value, even right after a line break within it.
        let rows = read_as(format!("{HEADER}AS-1,M,1,a,\"b\n"), LastLine::NeedsBreak).await;
        assert!(rows.last().unwrap().is_err(), "{rows:?}");
        // Complete bodies, with either line break, are read whole.
        for text in [
            format!("{HEADER}AS-1,M,1,a,b\n"),
            format!("{HEADER}AS-1,M,1,a,\"b\nc\"\r\n"),
        ] {
            let rows = read_as(text, LastLine::NeedsBreak).await;
            assert_eq!(rows.len(), 1);
            assert!(rows[0].as_ref().unwrap().is_ok());
        }
    }

    #[tokio::test]
    async fn invalid_utf8_is_a_bad_record_and_reading_goes_on() {
        let data: &'static [u8] =
            b"subscription_id,item_mpn,quantity,start_time_utc,end_time_utc\n\
            AS-\xff,M,1,a,b\nAS-2,M,1,a,b\n";
        let rows: Vec<_> = records(Box::new(data), "t.csv".into(), LastLine::MayLackBreak)
            .try_concat()
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].as_ref().unwrap_err().reason,
            BadReason::UnparsableField
        );
        assert!(rows[1].is_ok());
    }

    /// A row is checked as one text, yet each field must be text on its own: "é" split by a
    /// comma (its two bytes in two fields) reads as UTF-8 end to end but not field by field.
    #[tokio::test]
    async fn a_character_split_between_fields_names_the_field() {
        let data: &'static [u8] =
            b"subscription_id,item_mpn,quantity,start_time_utc,end_time_utc\n\
            AS-\xc3,\xa9M,1,a,b\nAS-\xc3\xa9,M\xc3\xa9,1,a,b\n";
        let rows: Vec<_> = records(Box::new(data), "t.csv".into(), LastLine::MayLackBreak)
            .try_concat()
            .await
            .unwrap();
        let bad = rows[0].as_ref().unwrap_err();
        assert_eq!(bad.reason, BadReason::UnparsableField);
        assert!(
            bad.detail.contains("field 1 is not UTF-8"),
            "{}",
            bad.detail
        );
        let good = rows[1].as_ref().unwrap();
        assert_eq!(good.subscription_id.as_deref(), Some("AS-é"));
        assert_eq!(good.item_mpn.as_deref(), Some("Mé"));
    }
}
