//! Reading usage sources: the same N records as a CSV file, a gzip CSV file and a Parquet file
//! (typed columns, snappy pages, as most exporters write them), and as a table in PostgreSQL and
//! in MariaDB (the same typed columns, read with `USAGE_QUERY` over loopback TCP), each read in
//! its own process through the product's source and record checks (what a report does before
//! its lookups), for records per second, CPU and peak RSS of the reading process.
//!
//! The database servers are the tests' throwaway ones (`tests/support/servers.rs`, included by
//! `main.rs`), loaded from the CSV file in bulk (`COPY … FROM STDIN`, `LOAD DATA LOCAL INFILE`).
//! A server that cannot be started (its binaries missing) makes a row saying why; the other rows
//! are still measured.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{Decimal128Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};
use connect_payg::config::Secret;
use connect_payg::usage::RecordChecker;
use connect_payg::usage::UsageSource;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use payg_shared::Period;

use crate::measure::{self, ChildReport};
use crate::servers::{self, Server};

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

/// The variables a child reads a database source with: `USAGE_QUERY` and the password.
const QUERY_VARIABLE: &str = "BENCH_SOURCE_QUERY";
const AUTH_VARIABLE: &str = "BENCH_SOURCE_AUTH";

/// Child side: reads `location` (a file's path, or a database URL with [`QUERY_VARIABLE`] and
/// [`AUTH_VARIABLE`] set) through the product's source and record checks; every record must
/// pass.
pub fn child(records: u64, location: &str) -> Result<ChildReport, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let period = Period::parse(PERIOD)?;
    let file = !location.contains("://");
    let url = match file {
        true => format!("file://{location}"),
        false => location.to_string(),
    };
    let source = UsageSource::new(url, std::env::var(AUTH_VARIABLE).ok().map(Secret::new))
        .with_query(std::env::var(QUERY_VARIABLE).ok())
        .with_timeout(Duration::from_secs(3600));
    let started = Instant::now();
    let good = runtime.block_on(async {
        let mut stream = source.open(period).await.map_err(|e| e.to_string())?;
        let mut checker = RecordChecker::new(period);
        let mut good = 0u64;
        while let Some(batch) = stream.next().await {
            for item in batch.map_err(|e| e.to_string())? {
                let raw = item.map_err(|bad| bad.to_string())?;
                checker.check(raw).map_err(|bad| bad.to_string())?;
                good += 1;
            }
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
        bytes: match file {
            true => std::fs::metadata(location).map(|m| m.len()).unwrap_or(0),
            false => 0,
        },
    })
}

/// The databases the records are read from.
#[derive(Debug, Clone, Copy)]
enum Engine {
    Postgres,
    MariaDb,
}

/// The table both engines hold the records in, with the types the Parquet file has.
const TABLE: &str = "usage_records";

/// What the reading process runs (`{from}` is a bound parameter; every record passes it).
const QUERY: &str = "SELECT subscription_id, item_mpn, quantity, start_time_utc, end_time_utc, \
     record_id, record_note FROM usage_records WHERE start_time_utc >= {from}";

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Postgres => "PostgreSQL",
            Engine::MariaDb => "MariaDB",
        }
    }

    fn start(self) -> Result<Server, String> {
        match self {
            Engine::Postgres => servers::start_postgres(None),
            Engine::MariaDb => servers::start_mariadb(None),
        }
    }

    /// The row's label: engine, version and column types.
    fn label(self, server: &Server) -> String {
        let (version, types) = match self {
            Engine::Postgres => ("SHOW server_version", "NUMERIC, TIMESTAMP"),
            Engine::MariaDb => ("SELECT VERSION()", "DECIMAL, DATETIME"),
        };
        let version = server.sql(version, None).unwrap_or_default();
        // "15.14 (Debian …)", "10.11.14-MariaDB-0+deb12u2": the number is enough.
        let number = version
            .split(|c: char| c.is_whitespace() || c == '-')
            .next()
            .unwrap_or_default();
        format!("{} {number} ({types}; loopback TCP)", self.name())
    }

    /// Creates the table and loads `csv` (the CSV file's records) into it in one bulk load.
    fn load(self, server: &Server, csv: &Path) -> Result<(), String> {
        match self {
            Engine::Postgres => {
                server.sql(
                    &format!(
                        "CREATE TABLE {TABLE} (subscription_id TEXT NOT NULL, \
                         item_mpn TEXT NOT NULL, quantity NUMERIC(18,2) NOT NULL, \
                         start_time_utc TIMESTAMP NOT NULL, end_time_utc TIMESTAMP NOT NULL, \
                         record_id TEXT NOT NULL, record_note TEXT)"
                    ),
                    None,
                )?;
                server.sql(
                    &format!("COPY {TABLE} FROM STDIN WITH (FORMAT csv, HEADER true)"),
                    Some(csv),
                )?;
                // Hint bits and statistics now, so the measured read does not write them.
                server.sql(&format!("VACUUM ANALYZE {TABLE}"), None)?;
            }
            Engine::MariaDb => {
                server.sql(
                    &format!(
                        "CREATE TABLE {TABLE} (subscription_id VARCHAR(32) NOT NULL, \
                         item_mpn VARCHAR(32) NOT NULL, quantity DECIMAL(18,2) NOT NULL, \
                         start_time_utc DATETIME NOT NULL, end_time_utc DATETIME NOT NULL, \
                         record_id VARCHAR(32) NOT NULL, record_note VARCHAR(200) NULL) \
                         CHARACTER SET utf8mb4"
                    ),
                    None,
                )?;
                // The CSV's quoting: doubled quotes inside quoted cells; an empty note is NULL.
                server.sql(
                    &format!(
                        "LOAD DATA LOCAL INFILE '{}' INTO TABLE {TABLE} CHARACTER SET utf8mb4 \
                         FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' \
                         LINES TERMINATED BY '\\n' IGNORE 1 LINES (subscription_id, item_mpn, \
                         quantity, start_time_utc, end_time_utc, record_id, @note) \
                         SET record_note = NULLIF(@note, '')",
                        csv.display()
                    ),
                    None,
                )?;
                server.sql(&format!("ANALYZE TABLE {TABLE}"), None)?;
            }
        }
        Ok(())
    }

    /// The table's size on the server (data and indexes), in bytes.
    fn table_bytes(self, server: &Server) -> u64 {
        let query = match self {
            Engine::Postgres => format!("SELECT pg_total_relation_size('{TABLE}')"),
            Engine::MariaDb => format!(
                "SELECT data_length + index_length FROM information_schema.tables \
                 WHERE table_schema = 'payg' AND table_name = '{TABLE}'"
            ),
        };
        server
            .sql(&query, None)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    }

    fn url(self, server: &Server) -> String {
        let scheme = match self {
            Engine::Postgres => "postgres",
            Engine::MariaDb => "mysql",
        };
        format!("{scheme}://payg@127.0.0.1:{}/payg", server.port)
    }
}

/// CPU seconds of process `pid` and its reaped children (PostgreSQL's backends are the
/// postmaster's children; MariaDB's connections are threads of its one process).
fn process_cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            // utime, stime, cutime, cstime: fields 14 to 17, in ticks of 1/100 s.
            let ticks: Option<Vec<u64>> = (11..15)
                .map(|i| fields.get(i)?.parse::<u64>().ok())
                .collect();
            Some(ticks?.iter().sum::<u64>() as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

/// Starts the engine's server, loads the records and measures one reading child; the server's
/// own CPU time during the read comes with it.
fn measure_database(
    engine: Engine,
    records: u64,
    csv: &Path,
) -> Result<(String, ChildReport, f64), String> {
    let server = engine.start()?;
    let label = engine.label(&server);
    let loading = Instant::now();
    engine.load(&server, csv)?;
    eprintln!(
        "  {label}: {records} rows loaded in {:.1} s",
        loading.elapsed().as_secs_f64()
    );
    let bytes = engine.table_bytes(&server);
    let environment = BTreeMap::from([
        (QUERY_VARIABLE.to_string(), QUERY.to_string()),
        (AUTH_VARIABLE.to_string(), servers::PASSWORD.to_string()),
    ]);
    let before = process_cpu_seconds(server.pid());
    let child = measure::spawn_self(
        &["source", &records.to_string(), &engine.url(&server)],
        &environment,
    )
    .map_err(|e| e.to_string())?;
    let mut report = measure::collect(child, &label)?;
    // The backend ends with the connection; the postmaster reaps it (and counts its CPU) soon.
    std::thread::sleep(Duration::from_millis(500));
    let server_cpu = process_cpu_seconds(server.pid()) - before;
    report.bytes = bytes;
    Ok((label, report, server_cpu))
}

pub struct Outcome {
    pub label: String,
    pub records: u64,
    /// The reading process's figures, or why the source could not be measured.
    pub report: Result<ChildReport, String>,
    /// CPU seconds the database server spent serving the read (files: none).
    pub server_cpu: Option<f64>,
}

/// Parent side: one child per source file, then one per database.
pub fn run(records: u64, dir: &Path) -> Result<Vec<Outcome>, String> {
    let files = write_files(records, dir)?;
    let mut outcomes = Vec::new();
    for file in &files {
        let child = measure::spawn_self(
            &["source", &records.to_string(), &file.path.to_string_lossy()],
            &BTreeMap::new(),
        )
        .map_err(|e| e.to_string())?;
        let report = measure::collect(child, file.label)?;
        eprintln!("  {}: {:.3} s", file.label, report.seconds);
        outcomes.push(Outcome {
            label: file.label.to_string(),
            records,
            report: Ok(report),
            server_cpu: None,
        });
    }
    let csv = &files[0].path;
    for engine in [Engine::Postgres, Engine::MariaDb] {
        let outcome = match measure_database(engine, records, csv) {
            Ok((label, report, server_cpu)) => {
                eprintln!("  {label}: {:.3} s", report.seconds);
                Outcome {
                    label,
                    records,
                    report: Ok(report),
                    server_cpu: Some(server_cpu),
                }
            }
            Err(reason) => {
                eprintln!("  {}: not measured: {reason}", engine.name());
                Outcome {
                    label: engine.name().to_string(),
                    records,
                    report: Err(reason),
                    server_cpu: None,
                }
            }
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| source | records | time | records/s | CPU | records per CPU second | peak RSS | server CPU | size |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for o in outcomes {
        let report = match &o.report {
            Ok(report) => report,
            Err(reason) => {
                // The first line says why (a server's log follows it).
                let reason = reason.lines().next().unwrap_or_default();
                out.push_str(&format!(
                    "| {} | {} | not measured: {} | | | | | | |\n",
                    o.label,
                    o.records,
                    reason.replace('|', "\\|")
                ));
                continue;
            }
        };
        out.push_str(&format!(
            "| {} | {} | {:.3} s | **{:.0}** | {:.2} s | {:.0} | {} | {} | {} |\n",
            o.label,
            o.records,
            report.seconds,
            o.records as f64 / report.seconds,
            report.cpu_seconds,
            o.records as f64 / report.cpu_seconds.max(0.01),
            measure::mib(report.peak_rss_kb),
            o.server_cpu
                .map_or("—".to_string(), |cpu| format!("{cpu:.2} s")),
            measure::mib(report.bytes / 1024),
        ));
    }
    out
}
