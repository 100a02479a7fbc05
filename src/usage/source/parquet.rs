//! Parquet records (`.parquet`, a local file or an object): columns found by name, read a
//! batch of rows at a time through the `parquet` crate's async reader, so memory holds one row
//! group's projected columns, not the file.
//!
//! Every value becomes the exact text the CSV path would have read, so the same checks apply
//! ([`crate::usage::record`]):
//! * `quantity`: a DECIMAL (written with its scale: `12.50`), an integer or text. A FLOAT or
//!   DOUBLE column is refused whole, naming it: a binary float cannot say which decimal the
//!   vendor meant (`0.1` is stored as 0.1000000000000000055…), and the product never rounds.
//! * `start_time_utc`, `end_time_utc`: a TIMESTAMP of any unit (an instant, so UTC whatever
//!   zone the column names), written `YYYY-MM-DD HH:MM:SS` (with its fraction of a second when
//!   there is one, which the record check then refuses as the CSV path does), or text.
//! * the other fields: text, an integer or a DECIMAL.
//!
//! Dictionary-encoded columns are read through their dictionary; nulls are missing values. A
//! record's line is its 1-based row number in the file.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Decimal128Type, Decimal256Type, Decimal32Type, Decimal64Type, Int16Type, Int32Type, Int64Type,
    Int8Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use chrono::{NaiveDateTime, Timelike};
use futures::StreamExt;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::ProjectionMask;

use super::csv::REQUIRED;
use super::{open_file, RecordStream, SourceError};
use crate::usage::period::format_time;
use crate::usage::record::{BadReason, BadRecord, RawRecord, FIELDS};

/// Rows converted at a time (one batch of each projected column in memory).
const BATCH_ROWS: usize = 4096;

/// Whether a name is a Parquet file's (after any compression suffix).
pub fn is_parquet(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".parquet")
}

/// The error for a `.parquet.gz` or `.parquet.zst`.
pub(super) fn compressed_whole(source_name: String) -> SourceError {
    SourceError::Format {
        source_name,
        reason: "a Parquet file is read in pieces, so it cannot be compressed whole; Parquet \
                 compresses its own pages"
            .into(),
    }
}

/// The records of the Parquet file `reader` reads.
pub(super) async fn records<R>(reader: R, source_name: String) -> Result<RecordStream, SourceError>
where
    R: AsyncFileReader + Unpin + Send + 'static,
{
    let unreadable = |error: parquet::errors::ParquetError| SourceError::Unreadable {
        source_name: source_name.clone(),
        reason: format!("not a readable Parquet file: {error}"),
    };
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(unreadable)?;
    let schema = builder.schema().clone();
    let mut roots = Vec::new();
    for (index, field) in schema.fields().iter().enumerate() {
        if FIELDS.contains(&field.name().as_str()) {
            column_type_allowed(field.name(), field.data_type()).map_err(|reason| {
                SourceError::Format {
                    source_name: source_name.clone(),
                    reason,
                }
            })?;
            roots.push(index);
        }
    }
    if let Some(missing) = REQUIRED
        .iter()
        .find(|name| schema.field_with_name(name).is_err())
    {
        return Err(SourceError::Format {
            source_name,
            reason: format!("the Parquet file has no {missing} column"),
        });
    }
    let projection = ProjectionMask::roots(builder.parquet_schema(), roots);
    let batches = builder
        .with_projection(projection)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(unreadable)?;
    let mut next_row = 0u64;
    let records = batches.map(move |batch| match batch {
        Ok(batch) => {
            let first = next_row;
            next_row += batch.num_rows() as u64;
            Ok(batch_records(&batch, first))
        }
        Err(error) => Err(SourceError::Unreadable {
            source_name: source_name.clone(),
            reason: format!("reading failed: {error}"),
        }),
    });
    Ok(records.boxed())
}

/// Whether a column of `data_type` can hold `field` exactly; the error names the column.
fn column_type_allowed(field: &str, data_type: &DataType) -> Result<(), String> {
    let value_type = match data_type {
        DataType::Dictionary(_, values) => values.as_ref(),
        other => other,
    };
    let time = field.ends_with("_time_utc");
    let allowed = match value_type {
        DataType::Null | DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Timestamp(_, _) => time,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Decimal32(_, _)
        | DataType::Decimal64(_, _)
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => !time,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            return Err(format!(
                "column {field} is floating point ({data_type}): its values cannot be read \
                 exactly; write it as DECIMAL, an integer or text"
            ))
        }
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    let expected = match time {
        true => "TIMESTAMP or text",
        false => "text, an integer or DECIMAL",
    };
    Err(format!(
        "column {field} has type {data_type}; expected {expected}"
    ))
}

/// A batch's columns, each as values to read by row.
struct Column {
    name: &'static str,
    values: ArrayRef,
    /// For a dictionary column: each row's index into `values` (`None`: null).
    keys: Option<Vec<Option<usize>>>,
}

impl Column {
    fn new(name: &'static str, array: &ArrayRef) -> Column {
        match array.as_any_dictionary_opt() {
            Some(dictionary) => {
                let keys = dictionary.normalized_keys();
                let keys = (0..array.len())
                    .map(|row| (!array.is_null(row)).then(|| keys[row]))
                    .collect();
                Column {
                    name,
                    values: dictionary.values().clone(),
                    keys: Some(keys),
                }
            }
            None => Column {
                name,
                values: array.clone(),
                keys: None,
            },
        }
    }

    fn text(&self, row: usize) -> Result<Option<String>, String> {
        let index = match &self.keys {
            Some(keys) => match keys[row] {
                Some(index) => index,
                None => return Ok(None),
            },
            None => row,
        };
        value_text(self.values.as_ref(), index).map_err(|reason| format!("{}: {reason}", self.name))
    }
}

/// The records of one batch whose first row is the file's row `first` (0-based).
fn batch_records(batch: &RecordBatch, first: u64) -> Vec<Result<RawRecord, BadRecord>> {
    let columns: Vec<Column> = FIELDS
        .iter()
        .filter_map(|name| Some(Column::new(name, batch.column_by_name(name)?)))
        .collect();
    (0..batch.num_rows())
        .map(|row| {
            let line = first + row as u64 + 1;
            let mut record = RawRecord {
                line,
                ..Default::default()
            };
            for column in &columns {
                let text = column
                    .text(row)
                    .map_err(|detail| BadRecord::new(line, BadReason::UnparsableField, detail))?;
                record.set(column.name, text);
            }
            Ok(record)
        })
        .collect()
}

/// The value at `row` as the text a CSV would hold; `None` when null.
fn value_text(array: &dyn Array, row: usize) -> Result<Option<String>, String> {
    if array.is_null(row) {
        return Ok(None);
    }
    let text = match array.data_type() {
        DataType::Null => return Ok(None),
        DataType::Utf8 => array.as_string::<i32>().value(row).to_string(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row).to_string(),
        DataType::Utf8View => array.as_string_view().value(row).to_string(),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).to_string(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).to_string(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).to_string(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).to_string(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).to_string(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).to_string(),
        DataType::Decimal32(_, scale) => {
            let unscaled = array.as_primitive::<Decimal32Type>().value(row);
            decimal_text(&unscaled.to_string(), *scale)
        }
        DataType::Decimal64(_, scale) => {
            let unscaled = array.as_primitive::<Decimal64Type>().value(row);
            decimal_text(&unscaled.to_string(), *scale)
        }
        DataType::Decimal128(_, scale) => {
            let unscaled = array.as_primitive::<Decimal128Type>().value(row);
            decimal_text(&unscaled.to_string(), *scale)
        }
        DataType::Decimal256(_, scale) => {
            let unscaled = array.as_primitive::<Decimal256Type>().value(row);
            decimal_text(&unscaled.to_string(), *scale)
        }
        DataType::Timestamp(unit, _) => {
            let time = match unit {
                TimeUnit::Second => array
                    .as_primitive::<TimestampSecondType>()
                    .value_as_datetime(row),
                TimeUnit::Millisecond => array
                    .as_primitive::<TimestampMillisecondType>()
                    .value_as_datetime(row),
                TimeUnit::Microsecond => array
                    .as_primitive::<TimestampMicrosecondType>()
                    .value_as_datetime(row),
                TimeUnit::Nanosecond => array
                    .as_primitive::<TimestampNanosecondType>()
                    .value_as_datetime(row),
            };
            time_text(time.ok_or("the timestamp is out of range")?)
        }
        // Column types are checked when the file is opened.
        other => return Err(format!("type {other} is not read")),
    };
    Ok(Some(text))
}

/// An unscaled decimal's digits (`-1250`) with `scale` (`2`) as exact text (`-12.50`); a
/// negative scale appends zeros. Never through a float, never cut to the declared precision.
fn decimal_text(unscaled: &str, scale: i8) -> String {
    let (sign, digits) = match unscaled.strip_prefix('-') {
        Some(digits) => ("-", digits),
        None => ("", unscaled),
    };
    let scale = i32::from(scale);
    if scale <= 0 {
        let zeros = if digits == "0" { 0 } else { -scale as usize };
        return format!("{sign}{digits}{}", "0".repeat(zeros));
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

/// `YYYY-MM-DD HH:MM:SS`, with the fraction of a second (trailing zeros dropped) when there is
/// one: written out, not cut, so the record check can refuse it.
fn time_text(time: NaiveDateTime) -> String {
    let whole = format_time(time);
    match time.nanosecond() {
        0 => whole,
        nanos => {
            let fraction = format!("{nanos:09}");
            format!("{whole}.{}", fraction.trim_end_matches('0'))
        }
    }
}

/// The records of a local Parquet file.
pub(super) async fn file_records(
    path: &str,
    source_name: String,
) -> Result<RecordStream, SourceError> {
    records(open_file(path, &source_name).await?, source_name).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{Decimal128Builder, StringBuilder};
    use arrow_array::{
        DictionaryArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
        TimestampNanosecondArray,
    };
    use arrow_schema::{Field, Schema};
    use futures::TryStreamExt;
    use parquet::arrow::ArrowWriter;
    use std::sync::Arc;

    #[test]
    fn decimals_are_written_exactly_with_their_scale() {
        for (unscaled, scale, text) in [
            ("1250", 2, "12.50"),
            ("-1250", 2, "-12.50"),
            ("5", 3, "0.005"),
            ("-5", 3, "-0.005"),
            ("0", 2, "0.00"),
            ("12", 0, "12"),
            ("12", -3, "12000"),
            ("0", -3, "0"),
            (
                "123456789012345678901234567890123456",
                30,
                "123456.789012345678901234567890123456",
            ),
        ] {
            assert_eq!(
                decimal_text(unscaled, scale),
                text,
                "{unscaled} scale {scale}"
            );
        }
    }

    proptest::proptest! {
        /// The text is the unscaled digits, the point `scale` digits from the right (zeros
        /// appended for a negative scale), one leading zero at most: nothing lost, nothing added.
        #[test]
        fn decimal_text_is_exact(unscaled in proptest::num::i128::ANY, scale in -5i8..=38) {
            let text = decimal_text(&unscaled.to_string(), scale);
            let body = text.strip_prefix('-');
            proptest::prop_assert_eq!(body.is_some(), unscaled < 0);
            let body = body.unwrap_or(&text);
            let (whole, fraction) = body.split_once('.').unwrap_or((body, ""));
            proptest::prop_assert_eq!(fraction.len(), scale.max(0) as usize);
            proptest::prop_assert!(whole == "0" || !whole.starts_with('0'), "{}", text);
            let digits = format!("{whole}{fraction}");
            let zeros = if unscaled == 0 { 0 } else { (-scale).max(0) as usize };
            let expected = format!("{}{}", unscaled.unsigned_abs(), "0".repeat(zeros));
            proptest::prop_assert_eq!(
                digits.trim_start_matches('0'),
                expected.trim_start_matches('0')
            );
        }
    }

    #[test]
    fn times_keep_their_fraction_so_the_check_can_refuse_it() {
        let time =
            |text: &str| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap();
        assert_eq!(
            time_text(time("2024-01-31 23:59:59")),
            "2024-01-31 23:59:59"
        );
        assert_eq!(
            time_text(time("2024-01-31 23:59:59.250")),
            "2024-01-31 23:59:59.25"
        );
    }

    #[test]
    fn column_types_by_field() {
        let utf8 = DataType::Utf8;
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let decimal = DataType::Decimal128(18, 4);
        let stamp = DataType::Timestamp(TimeUnit::Microsecond, Some("+02:00".into()));
        for (field, data_type, allowed) in [
            ("quantity", &decimal, true),
            ("quantity", &DataType::Int64, true),
            ("quantity", &utf8, true),
            ("quantity", &stamp, false),
            ("subscription_id", &dictionary, true),
            ("subscription_id", &DataType::UInt32, true),
            ("start_time_utc", &stamp, true),
            ("end_time_utc", &utf8, true),
            ("end_time_utc", &DataType::Date32, false),
            ("end_time_utc", &DataType::Int64, false),
            ("record_note", &DataType::Boolean, false),
            ("record_note", &DataType::Binary, false),
        ] {
            let result = column_type_allowed(field, data_type);
            assert_eq!(result.is_ok(), allowed, "{field} {data_type}: {result:?}");
            if let Err(reason) = result {
                assert!(reason.contains(field), "{reason}");
            }
        }
        for float in [DataType::Float32, DataType::Float64] {
            let reason = column_type_allowed("quantity", &float).unwrap_err();
            assert!(
                reason.contains("column quantity is floating point"),
                "{reason}"
            );
            assert!(reason.contains("cannot be read exactly"), "{reason}");
        }
    }

    /// A Parquet file of `columns` (two rows a row group, to read across groups).
    fn parquet(columns: Vec<(&str, ArrayRef)>) -> bytes::Bytes {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
            .collect();
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns.into_iter().map(|(_, array)| array).collect(),
        )
        .unwrap();
        let properties = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_size(2)
            .build();
        let mut out = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(properties)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        out.into()
    }

    async fn read(data: bytes::Bytes) -> Result<Vec<Result<RawRecord, BadRecord>>, SourceError> {
        records(std::io::Cursor::new(data.to_vec()), "t.parquet".into())
            .await?
            .try_concat()
            .await
    }

    fn strings(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    #[tokio::test]
    async fn typed_columns_become_the_texts_a_csv_would_hold() {
        let mut quantity = Decimal128Builder::new()
            .with_precision_and_scale(18, 3)
            .unwrap();
        for value in [Some(12_500), Some(-3), None] {
            quantity.append_option(value);
        }
        let mut subscription = StringBuilder::new();
        for value in ["AS-1", "AS-2", "AS-3"] {
            subscription.append_value(value);
        }
        // 2024-01-01 00:00:00 UTC in ms, with a zone that does not change the instant.
        let start = TimestampMillisecondArray::from(vec![1_704_067_200_000, 1_704_067_200_000, 0])
            .with_timezone("+05:00");
        let end = TimestampNanosecondArray::from(vec![
            1_706_745_599_000_000_000,
            1_706_745_599_500_000_000,
            0,
        ]);
        let items: DictionaryArray<Int32Type> = vec!["M-1", "M-2", "M-1"].into_iter().collect();
        let data = parquet(vec![
            ("extra", strings(&[Some("x"), Some("y"), Some("z")])),
            ("quantity", Arc::new(quantity.finish())),
            ("subscription_id", Arc::new(subscription.finish())),
            ("item_mpn", Arc::new(items)),
            ("start_time_utc", Arc::new(start)),
            ("end_time_utc", Arc::new(end)),
            (
                "record_id",
                Arc::new(Int64Array::from(vec![Some(7), None, Some(9)])),
            ),
        ]);
        let rows = read(data).await.unwrap();
        assert_eq!(rows.len(), 3);
        let first = rows[0].as_ref().unwrap();
        assert_eq!(first.line, 1);
        assert_eq!(first.quantity.as_deref(), Some("12.500"));
        assert_eq!(first.subscription_id.as_deref(), Some("AS-1"));
        assert_eq!(first.item_mpn.as_deref(), Some("M-1"));
        assert_eq!(first.start_time_utc.as_deref(), Some("2024-01-01 00:00:00"));
        assert_eq!(first.end_time_utc.as_deref(), Some("2024-01-31 23:59:59"));
        assert_eq!(first.record_id.as_deref(), Some("7"));
        let second = rows[1].as_ref().unwrap();
        assert_eq!(second.quantity.as_deref(), Some("-0.003"));
        assert_eq!(second.item_mpn.as_deref(), Some("M-2"));
        assert_eq!(
            second.end_time_utc.as_deref(),
            Some("2024-01-31 23:59:59.5")
        );
        assert_eq!(second.record_id, None);
        let third = rows[2].as_ref().unwrap();
        assert_eq!(third.line, 3, "counted across row groups");
        assert_eq!(third.quantity, None);
        assert_eq!(third.start_time_utc.as_deref(), Some("1970-01-01 00:00:00"));
    }

    #[tokio::test]
    async fn a_float_quantity_or_a_missing_column_is_refused_by_name() {
        let text = |v: &str| strings(&[Some(v)]);
        let data = parquet(vec![
            ("subscription_id", text("AS-1")),
            ("item_mpn", text("M")),
            ("quantity", Arc::new(Float64Array::from(vec![1.5]))),
            ("start_time_utc", text("2024-01-01 00:00:00")),
            ("end_time_utc", text("2024-01-31 23:59:59")),
        ]);
        let error = read(data).await.unwrap_err().to_string();
        assert!(error.contains("t.parquet"), "{error}");
        assert!(
            error.contains("column quantity is floating point"),
            "{error}"
        );

        let data = parquet(vec![
            ("subscription_id", text("AS-1")),
            ("item_mpn", text("M")),
            ("quantity", text("1")),
            ("start_time_utc", text("2024-01-01 00:00:00")),
        ]);
        let error = read(data).await.unwrap_err().to_string();
        assert!(error.contains("no end_time_utc column"), "{error}");
    }

    #[tokio::test]
    async fn a_file_that_is_not_parquet_is_a_source_error() {
        let error = read(bytes::Bytes::from_static(b"subscription_id,item_mpn\n"))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("t.parquet"), "{error}");
        assert!(error.contains("not a readable Parquet file"), "{error}");
    }
}
