//! JSON records: a top-level array of objects, or one object per line (JSON lines). Values may
//! be strings or numbers; `null` counts as missing.
//!
//! Arrays are split into elements by a small scanner instead of parsing the whole document, so
//! a large file is read in constant memory and one broken element does not lose the others.

use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::{broken, cut_short, LastLine, RecordStream, SourceError, MAX_RECORD_BYTES};
use crate::usage::record::{BadReason, BadRecord, RawRecord, FIELDS};

fn to_record(line: u64, element: Option<u64>, bytes: &[u8]) -> Result<RawRecord, BadRecord> {
    let unreadable = |detail: String| {
        BadRecord::new(line, BadReason::UnparsableField, detail).in_element(element)
    };
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| unreadable(format!("the record is not valid JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(unreadable("the record is not a JSON object".into()));
    };
    let mut record = RawRecord {
        line,
        element,
        ..Default::default()
    };
    for name in FIELDS {
        let text = match object.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                return Err(unreadable(format!(
                    "{name} must be a string or a number, not {other}"
                )))
            }
        };
        record.set(name, text);
    }
    Ok(record)
}

/// What [`read_bounded_line`] read.
struct LineRead {
    /// Longer than [`MAX_RECORD_BYTES`]: consumed, not kept.
    oversized: bool,
    /// Ended by a line break (not by the end of the source).
    terminated: bool,
}

/// Reads one line of at most [`MAX_RECORD_BYTES`]; a longer one is consumed and reported.
async fn read_bounded_line(
    reader: &mut (impl AsyncBufReadExt + Unpin),
    line: &mut Vec<u8>,
) -> std::io::Result<Option<LineRead>> {
    line.clear();
    let mut oversized = false;
    let mut read_any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(read_any.then_some(LineRead {
                oversized,
                terminated: false,
            }));
        }
        read_any = true;
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(end) => (&available[..end], Some(end + 1)),
            None => (available, None),
        };
        if line.len() + chunk.len() > MAX_RECORD_BYTES {
            oversized = true;
            line.clear();
        } else {
            line.extend_from_slice(chunk);
        }
        let consumed = done.unwrap_or(available.len());
        reader.consume(consumed);
        if done.is_some() {
            return Ok(Some(LineRead {
                oversized,
                terminated: true,
            }));
        }
    }
}

pub(super) fn line_records(
    reader: Box<dyn AsyncRead + Send + Unpin>,
    source_name: String,
    last_line: LastLine,
) -> RecordStream {
    let state = Some((BufReader::new(reader), Vec::new(), 0u64, source_name));
    let lines = futures::stream::unfold(state, move |state| async move {
        let (mut reader, mut buffer, mut number, source_name) = state?;
        loop {
            number += 1;
            let item = match read_bounded_line(&mut reader, &mut buffer).await {
                // After an I/O failure the stream ends: the rest of the source is unknown.
                Err(error) => return Some((Err(broken(&source_name, error)), None)),
                Ok(None) => return None,
                Ok(Some(read))
                    if !read.terminated
                        && last_line == LastLine::NeedsBreak
                        && (read.oversized || !buffer.iter().all(u8::is_ascii_whitespace)) =>
                {
                    return Some((Err(broken(&source_name, cut_short(number))), None))
                }
                Ok(Some(read)) if read.oversized => Err(BadRecord::new(
                    number,
                    BadReason::UnparsableField,
                    "the line is larger than 1 MiB",
                )),
                Ok(Some(_)) if buffer.iter().all(u8::is_ascii_whitespace) => continue,
                Ok(Some(_)) => to_record(number, None, &buffer),
            };
            return Some((Ok(item), Some((reader, buffer, number, source_name))));
        }
    });
    super::in_batches(lines)
}

/// Scanner state for splitting a top-level JSON array into its elements.
struct ArraySplitter {
    started: bool,
    finished: bool,
    depth: u32,
    in_string: bool,
    escaped: bool,
    element: Vec<u8>,
    oversized: bool,
    line: u64,
    element_line: u64,
    /// Elements finished so far: the next one's 0-based index.
    elements: u64,
}

enum Piece {
    Element {
        line: u64,
        index: u64,
        bytes: Vec<u8>,
    },
    Oversized {
        line: u64,
        index: u64,
    },
}

impl ArraySplitter {
    fn new() -> Self {
        ArraySplitter {
            started: false,
            finished: false,
            depth: 0,
            in_string: false,
            escaped: false,
            element: Vec::new(),
            oversized: false,
            line: 1,
            element_line: 1,
            elements: 0,
        }
    }

    fn finish_element(&mut self, pieces: &mut Vec<Piece>) {
        let (line, index) = (self.element_line, self.elements);
        if self.oversized {
            pieces.push(Piece::Oversized { line, index });
        } else if !self.element.is_empty() {
            pieces.push(Piece::Element {
                line,
                index,
                bytes: std::mem::take(&mut self.element),
            });
        } else {
            return;
        }
        self.elements += 1;
        self.element.clear();
        self.oversized = false;
    }

    /// Feeds a chunk; complete elements are appended to `pieces`.
    fn feed(&mut self, chunk: &[u8], pieces: &mut Vec<Piece>) -> Result<(), String> {
        for &byte in chunk {
            if byte == b'\n' {
                self.line += 1;
            }
            if self.finished {
                if !byte.is_ascii_whitespace() {
                    return Err("content after the end of the top-level array".into());
                }
                continue;
            }
            if !self.started {
                match byte {
                    b'[' => self.started = true,
                    b'\xef' | b'\xbb' | b'\xbf' => {}
                    b if b.is_ascii_whitespace() => {}
                    _ => return Err("a JSON source must be an array of records".into()),
                }
                continue;
            }
            if self.depth == 0 && !self.in_string {
                match byte {
                    b',' => {
                        self.finish_element(pieces);
                        continue;
                    }
                    b']' => {
                        self.finish_element(pieces);
                        self.finished = true;
                        continue;
                    }
                    b if b.is_ascii_whitespace() && self.element.is_empty() && !self.oversized => {
                        continue
                    }
                    _ => {}
                }
            }
            if self.element.is_empty() && !self.oversized {
                self.element_line = self.line;
            }
            if self.in_string {
                match (self.escaped, byte) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
            } else {
                match byte {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                    _ => {}
                }
            }
            if self.oversized {
                continue;
            }
            if self.element.len() >= MAX_RECORD_BYTES {
                self.oversized = true;
                self.element.clear();
            } else {
                self.element.push(byte);
            }
        }
        Ok(())
    }
}

pub(super) fn array_records(
    reader: Box<dyn AsyncRead + Send + Unpin>,
    source_name: String,
) -> RecordStream {
    let state = Some((reader, ArraySplitter::new(), source_name));
    futures::stream::unfold(state, |state| async move {
        let (mut reader, mut splitter, source_name) = state?;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut pieces = Vec::new();
        let read = tokio::io::AsyncReadExt::read(&mut reader, &mut chunk).await;
        let items: Vec<_> = match read {
            Err(error) => return Some((Err(broken(&source_name, error)), None)),
            Ok(0) if !splitter.finished => {
                let reason = if splitter.started {
                    "the JSON array is not closed (truncated file?)"
                } else {
                    "the source is empty; expected a JSON array"
                };
                let error = SourceError::Format {
                    source_name,
                    reason: reason.into(),
                };
                return Some((Err(error), None));
            }
            Ok(0) => return None,
            Ok(n) => {
                if let Err(reason) = splitter.feed(&chunk[..n], &mut pieces) {
                    let error = SourceError::Format {
                        source_name,
                        reason,
                    };
                    return Some((Err(error), None));
                }
                pieces
                    .into_iter()
                    .map(|piece| match piece {
                        Piece::Element { line, index, bytes } => {
                            to_record(line, Some(index), &bytes)
                        }
                        Piece::Oversized { line, index } => Err(BadRecord::new(
                            line,
                            BadReason::UnparsableField,
                            "the record is larger than 1 MiB",
                        )
                        .in_element(Some(index))),
                    })
                    .collect()
            }
        };
        Some((Ok(items), Some((reader, splitter, source_name))))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    async fn collect(
        stream: RecordStream,
    ) -> Result<Vec<Result<RawRecord, BadRecord>>, SourceError> {
        stream.try_concat().await
    }

    #[tokio::test]
    async fn array_elements_with_numbers_strings_and_nulls() {
        let text = "[\n {\"subscription_id\": \"AS-1\", \"item_mpn\": \"M\", \"quantity\": 2.5,\n  \"record_note\": \"a ] \\\" , {\"},\n {\"subscription_id\": \"AS-2\", \"quantity\": null}\n]\n";
        let rows = collect(array_records(Box::new(text.as_bytes()), "t.json".into()))
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        let first = rows[0].as_ref().unwrap();
        assert_eq!(first.line, 2);
        assert_eq!(first.quantity.as_deref(), Some("2.5"));
        assert_eq!(first.record_note.as_deref(), Some("a ] \" , {"));
        let second = rows[1].as_ref().unwrap();
        assert_eq!(second.line, 4);
        assert_eq!(second.quantity, None);
    }

    #[tokio::test]
    async fn a_broken_element_is_bad_and_the_rest_survive() {
        let text = "[{\"subscription_id\": true}, 42, {\"subscription_id\": \"AS-3\"}]";
        let rows = collect(array_records(Box::new(text.as_bytes()), "t.json".into()))
            .await
            .unwrap();
        assert_eq!(rows.len(), 3);
        assert!(rows[0].is_err());
        assert!(rows[1].is_err());
        assert_eq!(
            rows[2].as_ref().unwrap().subscription_id.as_deref(),
            Some("AS-3")
        );
    }

    #[tokio::test]
    async fn elements_of_a_one_line_array_are_named_by_their_index() {
        let huge = format!("{{\"record_note\": \"{}\"}}", "x".repeat(MAX_RECORD_BYTES));
        let text = format!("[{{\"subscription_id\": \"AS-0\"}}, 42, {{}}, {huge}, [1]]");
        let data: &'static [u8] = Box::leak(text.into_bytes().into_boxed_slice());
        let rows = collect(array_records(Box::new(data), "t.json".into()))
            .await
            .unwrap();
        let first = rows[0].as_ref().unwrap();
        assert_eq!((first.line, first.element), (1, Some(0)));
        let third = rows[2].as_ref().unwrap();
        assert_eq!((third.line, third.element), (1, Some(2)));
        for (row, index) in [(&rows[1], 1), (&rows[3], 3), (&rows[4], 4)] {
            let bad = row.as_ref().unwrap_err();
            assert_eq!((bad.line, bad.element), (1, Some(index)));
            assert!(
                bad.to_string()
                    .starts_with(&format!("line 1, index {index}: ")),
                "{bad}"
            );
        }
        // A record that fails its checks later keeps its index.
        let mut checker = crate::usage::record::RecordChecker::new(
            crate::usage::period::Period::parse("2024-01").unwrap(),
        );
        let bad = checker.check(third.clone()).unwrap_err();
        assert_eq!(bad.element, Some(2));
        assert!(
            bad.to_string()
                .starts_with("line 1, index 2: missing_field"),
            "{bad}"
        );
    }

    #[tokio::test]
    async fn structural_problems_are_source_errors() {
        for text in ["{\"a\": 1}", "[{\"a\": 1}", "", "[] x"] {
            let result = collect(array_records(Box::new(text.as_bytes()), "t.json".into())).await;
            let error = result.unwrap_err().to_string();
            assert!(error.contains("t.json"), "{text}: {error}");
        }
    }

    #[tokio::test]
    async fn json_lines_skip_blank_lines_and_report_bad_ones() {
        let text = "{\"subscription_id\": \"AS-1\"}\n\nnot json\n{\"subscription_id\": \"AS-4\"}";
        let rows = collect(line_records(
            Box::new(text.as_bytes()),
            "t.jsonl".into(),
            LastLine::MayLackBreak,
        ))
        .await
        .unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].as_ref().unwrap().line, 1);
        assert_eq!(rows[1].as_ref().unwrap_err().line, 3);
        assert_eq!(rows[2].as_ref().unwrap().line, 4);
    }

    #[tokio::test]
    async fn a_last_json_line_without_its_break_is_cut_short_only_when_a_break_is_needed() {
        let text = "{\"subscription_id\": \"AS-1\"}\n{\"subscription_id\": \"AS-2\"}";
        let lines =
            |last_line| line_records(Box::new(text.as_bytes()), "t.jsonl".into(), last_line);
        assert_eq!(
            collect(lines(LastLine::MayLackBreak)).await.unwrap().len(),
            2
        );
        let error = collect(lines(LastLine::NeedsBreak))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("t.jsonl"), "{error}");
        assert!(
            error.contains("line 2") && error.contains("cut short"),
            "{error}"
        );
        let whole = format!("{text}\n\n");
        let rows = collect(line_records(
            Box::new(std::io::Cursor::new(whole.into_bytes())),
            "t.jsonl".into(),
            LastLine::NeedsBreak,
        ))
        .await
        .unwrap();
        assert_eq!(rows.len(), 2);
    }

    #[tokio::test]
    async fn oversized_records_are_refused_not_buffered() {
        let huge = format!(
            "{{\"record_note\": \"{}\"}}\n{{\"subscription_id\": \"AS-5\"}}\n",
            "x".repeat(MAX_RECORD_BYTES + 10)
        );
        let data: &'static [u8] = Box::leak(huge.clone().into_bytes().into_boxed_slice());
        let rows = collect(line_records(
            Box::new(data),
            "t.jsonl".into(),
            LastLine::MayLackBreak,
        ))
        .await
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].is_err());
        assert!(rows[1].is_ok());
        let array = format!("[{}]", huge.trim_end().replace('\n', ","));
        let data: &'static [u8] = Box::leak(array.into_bytes().into_boxed_slice());
        let rows = collect(array_records(Box::new(data), "t.json".into()))
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].is_err());
        assert!(rows[1].is_ok());
    }
}
