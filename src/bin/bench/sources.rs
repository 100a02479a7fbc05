//! Reading usage sources: the same N records as a CSV file, a gzip CSV file and a Parquet file
//! (typed columns, snappy pages, as most exporters write them), each read in its own process
//! through the product's source and record checks (what a report does before its lookups), for
//! records per second and peak RSS.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::builder::{Decimal128Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};
use connect_payg::usage::RecordChecker;
use connect_payg::usage::UsageSource;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use payg_shared::Period;

use crate::measure::{self, ChildReport};

const NOTES: [&str; 4] = [
    "monthly usage",
    "tenant \"gold\", EU region",
    "spike, see ticket #42",
    "",
];

/// The month every record is in.
const PERIOD: &str = "2024-01";
const START: &str = "2024-01-01 00:00:00";
const END: &str = "2024-01-31 23:59:59";
/// `START` and `END` in microseconds since the epoch.
const START_MICROS: i64 = 1_704_067_200_000_000;
const END_MICROS: i64 = 1_706_745_599_000_000;

/// Record `n`'s fields: subscription, item, quantity in hundredths, record id, note.
fn record(n: u64) -> (String, String, u64, String, &'static str) {
    (
        format!("AS-{:06}", n % 50_000),
        format!("MPN-{:03}", n % 20),
        (n % 10_000) * 25,
        format!("R-{n:08}"),
        NOTES[(n % 4) as usize],
    )
}

fn quantity_text(hundredths: u64) -> String {
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

/// One measured source: its label and file.
pub struct SourceFile {
    pub label: &'static str,
    pub path: PathBuf,
}

/// Writes the `records` records as `usage.csv`, `usage.csv.gz` and `usage.parquet` in `dir`.
pub fn write_files(records: u64, dir: &Path) -> Result<Vec<SourceFile>, String> {
    let io = |e: std::io::Error| e.to_string();
    let csv_path = dir.join("usage.csv");
    let gz_path = dir.join("usage.csv.gz");
    let mut csv = std::io::BufWriter::new(std::fs::File::create(&csv_path).map_err(io)?);
    writeln!(
        csv,
        "subscription_id,item_mpn,quantity,start_time_utc,end_time_utc,record_id,record_note"
    )
    .map_err(io)?;
    for n in 0..records {
        let (subscription, item, quantity, id, note) = record(n);
        let note = match note.contains(['"', ',']) {
            true => format!("\"{}\"", note.replace('"', "\"\"")),
            false => note.to_string(),
        };
        writeln!(
            csv,
            "{subscription},{item},{},{START},{END},{id},{note}",
            quantity_text(quantity)
        )
        .map_err(io)?;
    }
    csv.flush().map_err(io)?;
    drop(csv);
    let status = std::process::Command::new("gzip")
        .args(["-k", "-6", "-f"])
        .arg(&csv_path)
        .status()
        .map_err(|e| format!("gzip: {e}"))?;
    if !status.success() || !gz_path.exists() {
        return Err(format!("gzip failed: {status}"));
    }
    let parquet_path = dir.join("usage.parquet");
    write_parquet(records, &parquet_path)?;
    Ok(vec![
        SourceFile {
            label: "CSV",
            path: csv_path,
        },
        SourceFile {
            label: "CSV, gzip",
            path: gz_path,
        },
        SourceFile {
            label: "Parquet (DECIMAL, TIMESTAMP, snappy)",
            path: parquet_path,
        },
    ])
}

/// The records as Parquet in row groups of 128k rows, written a batch at a time.
fn write_parquet(records: u64, path: &Path) -> Result<(), String> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("subscription_id", arrow_schema::DataType::Utf8, false),
        Field::new("item_mpn", arrow_schema::DataType::Utf8, false),
        Field::new("quantity", arrow_schema::DataType::Decimal128(18, 2), false),
        Field::new(
            "start_time_utc",
            arrow_schema::DataType::Timestamp(
                arrow_schema::TimeUnit::Microsecond,
                Some("UTC".into()),
            ),
            false,
        ),
        Field::new(
            "end_time_utc",
            arrow_schema::DataType::Timestamp(
                arrow_schema::TimeUnit::Microsecond,
                Some("UTC".into()),
            ),
            false,
        ),
        Field::new("record_id", arrow_schema::DataType::Utf8, false),
        Field::new("record_note", arrow_schema::DataType::Utf8, true),
    ]));
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_size(128 * 1024)
        .build();
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let mut writer =
        ArrowWriter::try_new(file, schema.clone(), Some(properties)).map_err(|e| e.to_string())?;
    let mut first = 0;
    while first < records {
        let last = (first + 65_536).min(records);
        let mut subscriptions = StringBuilder::new();
        let mut items = StringBuilder::new();
        let mut quantities = Decimal128Builder::new();
        let mut starts = TimestampMicrosecondBuilder::new();
        let mut ends = TimestampMicrosecondBuilder::new();
        let mut ids = StringBuilder::new();
        let mut notes = StringBuilder::new();
        for n in first..last {
            let (subscription, item, quantity, id, note) = record(n);
            subscriptions.append_value(subscription);
            items.append_value(item);
            quantities.append_value(i128::from(quantity));
            starts.append_value(START_MICROS);
            ends.append_value(END_MICROS);
            ids.append_value(id);
            notes.append_option((!note.is_empty()).then_some(note));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(subscriptions.finish()),
            Arc::new(items.finish()),
            Arc::new(
                quantities
                    .finish()
                    .with_precision_and_scale(18, 2)
                    .map_err(|e| e.to_string())?,
            ),
            Arc::new(starts.finish().with_timezone("UTC")),
            Arc::new(ends.finish().with_timezone("UTC")),
            Arc::new(ids.finish()),
            Arc::new(notes.finish()),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())?;
        writer.write(&batch).map_err(|e| e.to_string())?;
        first = last;
    }
    writer.close().map_err(|e| e.to_string())?;
    Ok(())
}

/// Child side: reads `path` through the product's source and record checks; every record must
/// pass.
pub fn child(records: u64, path: &Path) -> Result<ChildReport, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let period = Period::parse(PERIOD)?;
    let started = Instant::now();
    let good = runtime.block_on(async {
        let source = UsageSource::new(format!("file://{}", path.display()), None);
        let mut stream = source.open(period).await.map_err(|e| e.to_string())?;
        let mut checker = RecordChecker::new(period);
        let mut good = 0u64;
        while let Some(item) = stream.next().await {
            let raw = item
                .map_err(|e| e.to_string())?
                .map_err(|bad| bad.to_string())?;
            checker.check(raw).map_err(|bad| bad.to_string())?;
            good += 1;
        }
        Ok::<u64, String>(good)
    })?;
    if good != records {
        return Err(format!("{good} of {records} records read"));
    }
    Ok(ChildReport {
        seconds: started.elapsed().as_secs_f64(),
        peak_rss_kb: measure::peak_rss_kb(),
        cpu_seconds: measure::cpu_seconds(),
        bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
    })
}

pub struct Outcome {
    pub label: &'static str,
    pub records: u64,
    pub report: ChildReport,
}

/// Parent side: one child per source file.
pub fn run(records: u64, dir: &Path) -> Result<Vec<Outcome>, String> {
    let files = write_files(records, dir)?;
    let mut outcomes = Vec::new();
    for file in files {
        let child = measure::spawn_self(
            &["source", &records.to_string(), &file.path.to_string_lossy()],
            &BTreeMap::new(),
        )
        .map_err(|e| e.to_string())?;
        let report = measure::collect(child, file.label)?;
        eprintln!("  {}: {:.3} s", file.label, report.seconds);
        outcomes.push(Outcome {
            label: file.label,
            records,
            report,
        });
    }
    Ok(outcomes)
}

pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| source | records | time | records/s | CPU | records per CPU second | peak RSS | file |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for o in outcomes {
        out.push_str(&format!(
            "| {} | {} | {:.3} s | **{:.0}** | {:.2} s | {:.0} | {} | {} |\n",
            o.label,
            o.records,
            o.report.seconds,
            o.records as f64 / o.report.seconds,
            o.report.cpu_seconds,
            o.records as f64 / o.report.cpu_seconds.max(0.01),
            measure::mib(o.report.peak_rss_kb),
            measure::mib(o.report.bytes / 1024),
        ));
    }
    out
}
