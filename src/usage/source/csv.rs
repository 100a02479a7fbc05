//! CSV records: a header row naming the fields (any order, extra columns ignored), then one
//! record per row. Quoted fields may hold commas, quotes and line breaks.
//!
//! The CSV reader buffers a whole row before it hands it on, so rows are measured on the way
//! in ([`RowLimit`]): a row larger than [`MAX_RECORD_BYTES`] ends the source instead of being
//! buffered. It is almost always an unclosed quote, after which no row boundary can be trusted:
//! reading on would silently swallow the rest of the file.
//!
//! The same scanner sees where the source ends: an HTTP body whose last row has no line break
//! was cut short ([`LastLine::NeedsBreak`]), and the rows read so far must not be filed as all.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::StreamExt;
use tokio::io::{AsyncRead, ReadBuf};

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

pub(super) fn records(
    reader: Box<dyn AsyncRead + Send + Unpin>,
    source_name: String,
    last_line: LastLine,
) -> RecordStream {
    let stream = futures::stream::once(async move {
        // Fields are read as bytes and trimmed here, only the columns a record uses: a
        // reader-side trim and text record copied every field of every row twice (a tenth of a
        // 10M-record run's parsing).
        let mut reader = csv_async::AsyncReaderBuilder::new()
            .flexible(true)
            .create_reader(RowLimit::new(reader, last_line));
        let headers = reader
            .headers()
            .await
            .map_err(|e| broken(&source_name, e))?
            .clone();
        // Each column's place in FIELDS, if it is one of them.
        let columns: Vec<Option<usize>> = headers
            .iter()
            .map(|name| {
                let name = name.trim().trim_start_matches('\u{feff}').trim();
                FIELDS.iter().position(|field| *field == name)
            })
            .collect();
        if let Some(missing) = REQUIRED
            .iter()
            .find(|field| !columns.iter().flatten().any(|&at| FIELDS[at] == **field))
        {
            return Err(SourceError::Format {
                source_name,
                reason: format!("the CSV header has no {missing} column"),
            });
        }
        // What is left to read: the reader (dropped after a broken source: nothing after it
        // can be trusted), or the error that broke it, handed on after the rows before it.
        let state = (
            Ok(reader),
            csv_async::ByteRecord::new(),
            columns,
            source_name,
        );
        // Rows are read a batch at a time: a stream step per row moved the reader's state in
        // and out of a new future each time (those copies were 2% of a 10M-record run).
        let rows = futures::stream::unfold(Some(state), |state| async move {
            let (reader, mut row, columns, source_name) = state?;
            let mut reader = match reader {
                Ok(reader) => reader,
                Err(error) => return Some((Err(error), None)),
            };
            let mut batch = Vec::with_capacity(ROWS_AT_A_TIME);
            while batch.len() < ROWS_AT_A_TIME {
                match reader.read_byte_record(&mut row).await {
                    Ok(false) => return (!batch.is_empty()).then_some((Ok(batch), None)),
                    Ok(true) => push_record(&mut batch, &row, &columns),
                    Err(error) => match error.kind() {
                        csv_async::ErrorKind::Io(io) => {
                            let error = broken(&source_name, io);
                            return Some(match batch.is_empty() {
                                true => (Err(error), None),
                                false => (Ok(batch), Some((Err(error), row, columns, source_name))),
                            });
                        }
                        _ => {
                            let line = error.position().map(|p| p.line()).unwrap_or_default();
                            batch.push(Err(BadRecord::new(
                                line,
                                BadReason::UnparsableField,
                                format!("the row cannot be read: {error}"),
                            )));
                        }
                    },
                }
            }
            Some((Ok(batch), Some((Ok(reader), row, columns, source_name))))
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

/// Adds the record of one CSV row to `batch`: its fields trimmed, an empty one missing. A row
/// that is not UTF-8 text (in any column, as the platform reads the whole row) is bad at its
/// line. The record is filled where it lies in the batch: made elsewhere and moved in, the
/// move was 1.6% of the reading's CPU samples in a 1M-record call-graph profile.
fn push_record(
    batch: &mut Vec<Result<RawRecord, BadRecord>>,
    row: &csv_async::ByteRecord,
    columns: &[Option<usize>],
) {
    let line = row.position().map(|p| p.line()).unwrap_or_default();
    batch.push(Ok(RawRecord {
        line,
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
    row: &csv_async::ByteRecord,
    columns: &[Option<usize>],
) -> Result<(), BadRecord> {
    let line = record.line;
    // The row's fields lie end to end in one buffer: checked as one text (one call instead of
    // one a field, 2% of a 10M-record run), each field is then that text cut at its bounds,
    // unless a bound splits a character; then, as when the text is not UTF-8, field by field,
    // to name the field at fault.
    let whole = std::str::from_utf8(row.as_slice()).ok();
    for (field, bytes) in row.iter().enumerate() {
        let cut = whole
            .zip(row.range(field))
            .and_then(|(text, at)| text.get(at));
        let text = match cut.map_or_else(|| std::str::from_utf8(bytes), Ok) {
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

/// Where the CSV grammar is within a row (the reader's own states, reduced to what decides
/// where a row ends: a line break outside quotes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowState {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: closes it, or escapes a second quote.
    QuoteInQuoted,
}

/// Passes the source through, failing it once a row grows beyond [`MAX_RECORD_BYTES`].
struct RowLimit<R> {
    inner: R,
    last_line: LastLine,
    state: RowState,
    row_bytes: usize,
    /// Line breaks seen so far, for naming the row that is too large.
    lines: u64,
    row_line: u64,
}

impl<R> RowLimit<R> {
    fn new(inner: R, last_line: LastLine) -> Self {
        RowLimit {
            inner,
            last_line,
            state: RowState::FieldStart,
            row_bytes: 0,
            lines: 0,
            row_line: 1,
        }
    }

    /// Follows `bytes`; an error once the current row is too large. Jumps from one byte that
    /// matters to the next (a quote; inside a quoted field, only a quote; a line break) with
    /// `memchr`: byte by byte, this scan was a sixth of a 10M-record run's parsing.
    fn scan(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            match self.state {
                RowState::Quoted => {
                    // Line breaks inside quotes are text: counted as lines, never row ends.
                    let taken = match memchr::memchr(b'"', rest) {
                        Some(quote) => {
                            self.state = RowState::QuoteInQuoted;
                            quote + 1
                        }
                        None => rest.len(),
                    };
                    self.lines += memchr::memchr_iter(b'\n', &rest[..taken]).count() as u64;
                    self.add(taken)?;
                    at += taken;
                }
                RowState::QuoteInQuoted => {
                    self.byte(rest[0])?;
                    at += 1;
                }
                RowState::FieldStart | RowState::Unquoted => {
                    let Some(next) = memchr::memchr3(b'"', b'\n', b'\r', rest) else {
                        self.plain(rest)?;
                        return Ok(());
                    };
                    self.plain(&rest[..next])?;
                    self.byte(rest[next])?;
                    at += next + 1;
                }
            }
        }
        Ok(())
    }

    /// Bytes outside quotes without a quote or a line break: commas and text.
    fn plain(&mut self, run: &[u8]) -> io::Result<()> {
        if let Some(&last) = run.last() {
            self.state = match last {
                b',' => RowState::FieldStart,
                _ => RowState::Unquoted,
            };
            self.add(run.len())?;
        }
        Ok(())
    }

    /// One byte, as the grammar reads it.
    fn byte(&mut self, byte: u8) -> io::Result<()> {
        let row_ends = match (self.state, byte) {
            (RowState::Quoted, b'"') => {
                self.state = RowState::QuoteInQuoted;
                false
            }
            (RowState::Quoted, _) => false,
            (RowState::FieldStart, b'"') | (RowState::QuoteInQuoted, b'"') => {
                self.state = RowState::Quoted;
                false
            }
            (_, b',') => {
                self.state = RowState::FieldStart;
                false
            }
            (_, b'\n' | b'\r') => true,
            _ => {
                self.state = RowState::Unquoted;
                false
            }
        };
        if byte == b'\n' {
            self.lines += 1;
        }
        if row_ends {
            self.state = RowState::FieldStart;
            self.row_bytes = 0;
            self.row_line = self.lines + 1;
            return Ok(());
        }
        self.add(1)
    }

    /// `n` more bytes of the current row; an error once it is too large.
    fn add(&mut self, n: usize) -> io::Result<()> {
        self.row_bytes += n;
        if self.row_bytes > MAX_RECORD_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the row at line {} is larger than 1 MiB (an unclosed quote?); \
                     the rest of the file cannot be split into rows reliably",
                    self.row_line
                ),
            ));
        }
        Ok(())
    }

    /// [`RowLimit::scan`] a byte at a time, every byte through [`RowLimit::byte`]: what the
    /// jumps must equal, for tests.
    #[cfg(test)]
    fn scan_bytewise(&mut self, bytes: &[u8]) -> io::Result<()> {
        bytes.iter().try_for_each(|&byte| self.byte(byte))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for RowLimit<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if room && buf.filled().len() == before => {
                // The end: inside a row (its bytes or an open quote) means no final line break.
                let inside_row = this.row_bytes > 0 || this.state != RowState::FieldStart;
                if inside_row && this.last_line == LastLine::NeedsBreak {
                    return Poll::Ready(Err(cut_short(this.row_line)));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) => Poll::Ready(this.scan(&buf.filled()[before..])),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    proptest::proptest! {
        /// The jumping scan ends every chunk exactly where the byte-by-byte grammar does.
        #[test]
        fn the_fast_scan_follows_the_grammar(
            text in proptest::collection::vec(
                proptest::sample::select(b"ab,,\"\"\n\r ".to_vec()), 0..400),
            cuts in proptest::collection::vec(0usize..400, 0..6),
        ) {
            let mut fast = RowLimit::new((), LastLine::MayLackBreak);
            let mut slow = RowLimit::new((), LastLine::MayLackBreak);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            cuts.push(text.len());
            cuts.sort_unstable();
            let mut from = 0;
            for to in cuts {
                fast.scan(&text[from..to]).unwrap();
                slow.scan_bytewise(&text[from..to]).unwrap();
                let seen = |r: &RowLimit<()>| (r.state, r.row_bytes, r.lines, r.row_line);
                proptest::prop_assert_eq!(seen(&fast), seen(&slow));
                from = to;
            }
        }
    }

    #[test]
    fn the_fast_scan_refuses_a_long_row_at_its_line() {
        let mut text = b"a,b\nc,\"".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES));
        let mut fast = RowLimit::new((), LastLine::MayLackBreak);
        let error = fast.scan(&text).unwrap_err().to_string();
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

    #[test]
    fn line_breaks_and_quotes_inside_quoted_fields_do_not_count_as_rows() {
        let mut scanner = RowLimit::new((), LastLine::MayLackBreak);
        let row = "a,\"x\"\"\n\",b\"c\n";
        scanner.scan(row.as_bytes()).unwrap();
        assert_eq!(
            (scanner.state, scanner.row_bytes),
            (RowState::FieldStart, 0)
        );
        assert_eq!(scanner.row_line, 3);
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
