//! Object storage, compressed and Parquet sources end to end, against a real S3 server
//! (`s3s-fs`, see `support/s3.rs`) on loopback: each form of the simulator's month must give
//! the same workbook rows (as a multiset, record ids included) and the same bad records (by
//! record and reason) as the plain CSV file of the same records. And what must fail does, with
//! an error naming the source and never a credential: a compression bomb, a pattern that
//! matches nothing, wrong credentials, a Parquet float quantity.

mod common;
#[path = "support/s3.rs"]
mod s3;

use std::sync::Arc;

use arrow_array::builder::{Decimal128Builder, StringBuilder, StringDictionaryBuilder};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{Field, Schema};
use async_compression::tokio::write::{GzipEncoder, ZstdEncoder};
use chrono::NaiveDateTime;
use common::{default_world, World};
use connect_payg::connect::FileStatus;
use connect_payg::usage::{write_bad_records, BadReason, BadRecord, Collection};
use connect_sim::vendor_usage::record_json;
use parquet::arrow::ArrowWriter;
use payg_shared::record::{CompactString, RawRecord};
use payg_shared::Period;
use s3::S3Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BUCKET: &str = "vendor-usage";

/// A workbook row as compared: contract, product, asset, item, quantity, start, end, record
/// id, note.
type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
);

fn rows(collection: &Collection, period: Period) -> Vec<Row> {
    let mut rows: Vec<Row> = collection
        .groups
        .values()
        .flat_map(|group| {
            group.rows.iter().map(|row| {
                let row = row.unwrap();
                (
                    group.key.contract_id.clone(),
                    group.key.product_id.clone(),
                    row.asset.id.to_string(),
                    row.item.search.1.clone(),
                    row.quantity.to_string(),
                    row.start.to_string(),
                    row.end.to_string(),
                    row.record_id.spelled(period),
                    row.note.as_deref().map(str::to_string),
                )
            })
        })
        .collect();
    rows.sort();
    rows
}

/// The bad records as (index of the record in the month's records, reason), sorted.
fn bad_by_record(
    collection: &Collection,
    index_of: impl Fn(&BadRecord) -> usize,
) -> Vec<(usize, BadReason)> {
    let mut bad: Vec<(usize, BadReason)> = collection
        .bad
        .iter()
        .map(|bad| (index_of(bad), bad.reason))
        .collect();
    bad.sort();
    bad
}

/// The CSV path: the world's month as its plain CSV file, and its bad records by record (the
/// header is line 1 and no generated record spans lines).
async fn csv_baseline(world: &World) -> (Collection, Vec<(usize, BadReason)>) {
    for bad in &world.usage.expected.bad {
        assert_eq!(bad.line, bad.index as u64 + 2, "one line a record");
    }
    let collection = world.reporter(&[]).collect(world.period).await.unwrap();
    let bad = bad_by_record(&collection, |bad| {
        assert_eq!(bad.object, None);
        bad.line as usize - 2
    });
    assert!(!bad.is_empty(), "the month has bad records to compare");
    (collection, bad)
}

/// The same rows as the CSV path and the same bad records, line for line: for a source that
/// is the CSV file itself, compressed.
fn assert_same_as_csv(collection: &Collection, baseline: &Collection, period: Period) {
    assert_eq!(rows(collection, period), rows(baseline, period));
    let bad: Vec<&BadRecord> = collection.bad.iter().collect();
    assert_eq!(bad, baseline.bad.iter().collect::<Vec<_>>());
}

/// The world's settings plus the S3 server's variables and `extra`.
fn with_server<'a>(server: &'a S3Server, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, String)> {
    let mut env = server.env();
    env.extend(extra.iter().map(|(name, value)| (*name, value.to_string())));
    env
}

async fn collect(world: &World, env: &[(&str, String)]) -> Result<Collection, String> {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    world
        .reporter(&env)
        .collect(world.period)
        .await
        .map_err(|error| error.to_string())
}

fn json_lines(records: &[RawRecord]) -> String {
    records
        .iter()
        .map(|record| format!("{}\n", record_json(record)))
        .collect()
}

async fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzipEncoder::new(Vec::new());
    encoder.write_all(data).await.unwrap();
    encoder.shutdown().await.unwrap();
    encoder.into_inner()
}

async fn zstd(data: &[u8]) -> Vec<u8> {
    let mut encoder = ZstdEncoder::new(Vec::new());
    encoder.write_all(data).await.unwrap();
    encoder.shutdown().await.unwrap();
    encoder.into_inner()
}

/// A Parquet file of `columns`, a few hundred rows a row group (a month spans several).
fn parquet(columns: Vec<(&str, ArrayRef)>) -> Vec<u8> {
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
        .set_max_row_group_size(300)
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(properties)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    out
}

/// One text column of a record field.
fn text_column(records: &[RawRecord], field: fn(&RawRecord) -> &Option<CompactString>) -> ArrayRef {
    Arc::new(StringArray::from(
        records
            .iter()
            .map(|record| field(record).as_deref())
            .collect::<Vec<_>>(),
    ))
}

#[tokio::test]
async fn part_files_under_a_prefix_are_one_source_filed_as_the_csv_is() {
    let world = default_world().await;
    let (baseline, baseline_bad) = csv_baseline(&world).await;
    let server = S3Server::start(&[BUCKET]);
    let records = &world.usage.records;
    let third = records.len() / 3 + 1;
    let parts: Vec<&[RawRecord]> = records.chunks(third).collect();
    assert_eq!(parts.len(), 3);
    // Written out of order: the source reads them in key order.
    for index in [2, 0, 1] {
        let key = format!("usage/2024-02/part-{index:03}.jsonl");
        server.put(BUCKET, &key, json_lines(parts[index])).await;
    }
    // Near misses the pattern must not read: another format, a deeper key, another month.
    for key in [
        "usage/2024-02/manifest.json",
        "usage/2024-02/old/part-000.jsonl",
        "usage/2024-03/part-000.jsonl",
        "usage/2024-02.jsonl",
    ] {
        server.put(BUCKET, key, "not a record\n").await;
    }
    let source = format!("s3://{BUCKET}/usage/{{period}}/*.jsonl");
    let env = with_server(&server, &[("USAGE_SOURCE", &source)]);
    let collection = collect(&world, &env).await.unwrap();

    assert_eq!(collection.records_read, baseline.records_read);
    assert_eq!(
        rows(&collection, world.period),
        rows(&baseline, world.period)
    );
    let part_name = |index: usize| format!("s3://{BUCKET}/usage/2024-02/part-{index:03}.jsonl");
    let bad = bad_by_record(&collection, |bad| {
        let object = bad
            .object
            .as_deref()
            .expect("a bad record names its object");
        let part = (0..3).find(|&i| part_name(i) == object).expect(object);
        part * third + bad.line as usize - 1
    });
    assert_eq!(bad, baseline_bad);
    // In the order read: object by object, line by line.
    let positions: Vec<(String, u64)> = collection
        .bad
        .iter()
        .map(|bad| (bad.object.as_deref().unwrap().to_string(), bad.line))
        .collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] <= pair[1]),
        "{positions:?}"
    );

    // Filed end to end, and the bad-records CSV says which object each line is in.
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let summary = world.reporter(&env).run(&world.job(), None).await.unwrap();
    assert_eq!(summary.failed(), 0, "{}", summary.headline());
    world.assert_filed_exactly(FileStatus::Pending).await;
    let first = &summary.bad.iter().next().unwrap();
    assert!(
        first
            .to_string()
            .starts_with(&format!("{}, line {}: ", part_name(0), first.line)),
        "{first}"
    );
    let csv = std::fs::read_to_string(write_bad_records(world.dir.path(), &summary).await.unwrap())
        .unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("line,index,record_id,reason,detail,object")
    );
    let row = lines.next().unwrap();
    assert!(row.ends_with(&format!(",\"{}\"", part_name(0))), "{row}");
}

#[tokio::test]
async fn a_gzip_object_reads_as_its_csv() {
    let world = default_world().await;
    let (baseline, _) = csv_baseline(&world).await;
    let server = S3Server::start(&[BUCKET]);
    let key = "exports/usage-2024-02.csv.gz";
    server
        .put(BUCKET, key, gzip(world.usage.csv.as_bytes()).await)
        .await;
    let source = format!("s3://{BUCKET}/exports/usage-{{period}}.csv.gz");
    let collection = collect(&world, &with_server(&server, &[("USAGE_SOURCE", &source)]))
        .await
        .unwrap();
    // One object: the same lines, no object named.
    assert_same_as_csv(&collection, &baseline, world.period);
}

#[tokio::test]
async fn a_parquet_object_of_text_columns_reads_as_the_csv() {
    let world = default_world().await;
    let (baseline, baseline_bad) = csv_baseline(&world).await;
    let records = &world.usage.records;
    let data = parquet(vec![
        (
            "subscription_id",
            text_column(records, |r| &r.subscription_id),
        ),
        ("item_mpn", text_column(records, |r| &r.item_mpn)),
        ("quantity", text_column(records, |r| &r.quantity)),
        (
            "start_time_utc",
            text_column(records, |r| &r.start_time_utc),
        ),
        ("end_time_utc", text_column(records, |r| &r.end_time_utc)),
        ("record_id", text_column(records, |r| &r.record_id)),
        ("record_note", text_column(records, |r| &r.record_note)),
    ]);
    let server = S3Server::start(&[BUCKET]);
    server
        .put(BUCKET, "usage/2024-02/usage.parquet", data)
        .await;
    let source = format!("s3://{BUCKET}/usage/{{period}}/usage.parquet");
    let collection = collect(&world, &with_server(&server, &[("USAGE_SOURCE", &source)]))
        .await
        .unwrap();
    assert_eq!(collection.records_read, baseline.records_read);
    assert_eq!(
        rows(&collection, world.period),
        rows(&baseline, world.period)
    );
    // A record's line is its row, from 1.
    let bad = bad_by_record(&collection, |bad| bad.line as usize - 1);
    assert_eq!(bad, baseline_bad);
}

/// `12.5` → (125, 1); `None` for anything but a plain decimal.
fn decimal(text: &str) -> Option<(i128, usize)> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let plain = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !plain(whole) || !plain(fraction) {
        return None;
    }
    let unscaled: i128 = format!("{whole}{fraction}").parse().ok()?;
    Some((
        if text.starts_with('-') {
            -unscaled
        } else {
            unscaled
        },
        fraction.len(),
    ))
}

fn time(text: &Option<CompactString>) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text.as_deref()?, "%Y-%m-%d %H:%M:%S").ok()
}

#[tokio::test]
async fn a_typed_parquet_file_reads_as_the_csv_of_the_same_records() {
    let world = default_world().await;
    // The records a typed file can hold: a plain decimal quantity, two timestamps.
    let typed: Vec<RawRecord> = world
        .usage
        .records
        .iter()
        .filter(|r| {
            r.quantity.as_deref().and_then(decimal).is_some()
                && time(&r.start_time_utc).is_some()
                && time(&r.end_time_utc).is_some()
        })
        .cloned()
        .collect();
    assert!(
        typed.len() * 10 > world.usage.records.len() * 8,
        "most records are typed"
    );
    let scale = typed
        .iter()
        .map(|r| decimal(r.quantity.as_deref().unwrap()).unwrap().1)
        .max()
        .unwrap();
    let mut quantity = Decimal128Builder::new()
        .with_precision_and_scale(38, scale as i8)
        .unwrap();
    for record in &typed {
        let (unscaled, digits) = decimal(record.quantity.as_deref().unwrap()).unwrap();
        quantity.append_value(unscaled * 10i128.pow((scale - digits) as u32));
    }
    let mut subscriptions = StringDictionaryBuilder::<Int32Type>::new();
    let mut items = StringBuilder::new();
    for record in &typed {
        subscriptions.append_option(record.subscription_id.as_deref());
        items.append_option(record.item_mpn.as_deref());
    }
    let stamps = |field: fn(&RawRecord) -> &Option<CompactString>| -> ArrayRef {
        let micros: Vec<i64> = typed
            .iter()
            .map(|r| time(field(r)).unwrap().and_utc().timestamp_micros())
            .collect();
        Arc::new(TimestampMicrosecondArray::from(micros).with_timezone("UTC"))
    };
    let data = parquet(vec![
        ("quantity", Arc::new(quantity.finish()) as ArrayRef),
        ("subscription_id", Arc::new(subscriptions.finish())),
        ("item_mpn", Arc::new(items.finish())),
        ("start_time_utc", stamps(|r| &r.start_time_utc)),
        ("end_time_utc", stamps(|r| &r.end_time_utc)),
        ("record_id", text_column(&typed, |r| &r.record_id)),
        ("record_note", text_column(&typed, |r| &r.record_note)),
    ]);
    std::fs::write(world.dir.path().join("typed-2024-02.parquet"), data).unwrap();
    let mut csv = String::from(
        "subscription_id,item_mpn,quantity,start_time_utc,end_time_utc,record_id,record_note\n",
    );
    for record in &typed {
        let cells: Vec<String> = [
            &record.subscription_id,
            &record.item_mpn,
            &record.quantity,
            &record.start_time_utc,
            &record.end_time_utc,
            &record.record_id,
            &record.record_note,
        ]
        .iter()
        .map(|value| {
            format!(
                "\"{}\"",
                value.as_deref().unwrap_or("").replace('"', "\"\"")
            )
        })
        .collect();
        csv.push_str(&cells.join(","));
        csv.push('\n');
    }
    std::fs::write(world.dir.path().join("typed-2024-02.csv"), csv).unwrap();
    let read = |extension: &str| {
        let source = format!(
            "file://{}/typed-{{period}}.{extension}",
            world.dir.path().display()
        );
        let world = &world;
        async move {
            world
                .reporter(&[("USAGE_SOURCE", &source)])
                .collect(world.period)
                .await
                .unwrap()
        }
    };
    let from_parquet = read("parquet").await;
    let from_csv = read("csv").await;
    assert_eq!(from_parquet.records_read, typed.len() as u64);
    assert!(!rows(&from_csv, world.period).is_empty());
    assert_eq!(
        rows(&from_parquet, world.period),
        rows(&from_csv, world.period)
    );
    let parquet_bad = bad_by_record(&from_parquet, |bad| bad.line as usize - 1);
    let csv_bad = bad_by_record(&from_csv, |bad| bad.line as usize - 2);
    assert!(!csv_bad.is_empty());
    assert_eq!(parquet_bad, csv_bad);
}

#[tokio::test]
async fn a_zstd_file_reads_as_its_csv() {
    let world = default_world().await;
    let (baseline, _) = csv_baseline(&world).await;
    let path = world.dir.path().join("usage-2024-02.csv.zst");
    std::fs::write(&path, zstd(world.usage.csv.as_bytes()).await).unwrap();
    let source = format!(
        "file://{}/usage-{{period}}.csv.zst",
        world.dir.path().display()
    );
    let collection = world
        .reporter(&[("USAGE_SOURCE", &source)])
        .collect(world.period)
        .await
        .unwrap();
    assert_same_as_csv(&collection, &baseline, world.period);
}

#[tokio::test]
async fn an_http_body_sent_gzip_encoded_reads_as_its_csv() {
    let world = default_world().await;
    let (baseline, _) = csv_baseline(&world).await;
    let body = gzip(world.usage.csv.as_bytes()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let encoding = match String::from_utf8_lossy(&head).contains("GET /br") {
                    true => "br",
                    false => "gzip",
                };
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Encoding: {encoding}\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.write_all(&body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    let source = format!("{origin}/usage/{{period}}");
    let collection = world
        .reporter(&[("USAGE_SOURCE", &source)])
        .collect(world.period)
        .await
        .unwrap();
    assert_eq!(
        rows(&collection, world.period),
        rows(&baseline, world.period)
    );
    assert_eq!(collection.bad.len(), baseline.bad.len());

    let source = format!("{origin}/br/{{period}}");
    let error = world
        .reporter(&[("USAGE_SOURCE", &source)])
        .collect(world.period)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("/br/2024-02"), "{error}");
    assert!(
        error.contains("unsupported Content-Encoding \"br\""),
        "{error}"
    );
}

#[tokio::test]
async fn a_compression_bomb_is_a_source_error_naming_the_object() {
    let world = default_world().await;
    let server = S3Server::start(&[BUCKET]);
    // 8 MiB of one row over and over: 8 KiB of gzip.
    let row = world.usage.csv.lines().nth(1).unwrap().to_string() + "\n";
    let mut csv = world.usage.csv.lines().next().unwrap().to_string() + "\n";
    while csv.len() < 8 << 20 {
        csv.push_str(&row);
    }
    let bomb = gzip(csv.as_bytes()).await;
    assert!(bomb.len() < 256 << 10, "{} bytes", bomb.len());
    server
        .put(BUCKET, "usage/2024-02/part-000.csv.gz", bomb)
        .await;
    let source = format!("s3://{BUCKET}/usage/{{period}}/*.csv.gz");
    let env = with_server(
        &server,
        &[
            ("USAGE_SOURCE", &source),
            ("USAGE_SOURCE_MAX_INFLATED_BYTES", "1048576"),
        ],
    );
    let error = collect(&world, &env).await.err().unwrap();
    assert!(
        error.contains(&format!("s3://{BUCKET}/usage/2024-02/part-000.csv.gz")),
        "{error}"
    );
    assert!(error.contains("inflates beyond 1048576 bytes"), "{error}");
}

#[tokio::test]
async fn a_pattern_that_matches_nothing_names_the_pattern() {
    let world = default_world().await;
    let server = S3Server::start(&[BUCKET]);
    server
        .put(BUCKET, "usage/2024-02/part-000.jsonl", "{}\n")
        .await;
    server
        .put(BUCKET, "usage/2024-01/part-000.csv", "x\n")
        .await;
    let source = format!("s3://{BUCKET}/usage/{{period}}/*.csv");
    let error = collect(&world, &with_server(&server, &[("USAGE_SOURCE", &source)]))
        .await
        .err()
        .unwrap();
    assert!(
        error.contains(&format!(
            "s3://{BUCKET}/usage/2024-02/*.csv: no object matches"
        )),
        "{error}"
    );
    // One object that is not there.
    let source = format!("s3://{BUCKET}/usage/{{period}}/usage.csv");
    let error = collect(&world, &with_server(&server, &[("USAGE_SOURCE", &source)]))
        .await
        .err()
        .unwrap();
    assert!(
        error.contains(&format!(
            "s3://{BUCKET}/usage/2024-02/usage.csv: file not found"
        )),
        "{error}"
    );
}

#[tokio::test]
async fn wrong_credentials_are_an_error_naming_the_source_without_the_secret() {
    const WRONG: &str = "wrong-secret-Hk29fQ0pLm";
    let world = default_world().await;
    let server = S3Server::start(&[BUCKET]);
    server
        .put(BUCKET, "usage/2024-02/usage.csv", world.usage.csv.clone())
        .await;
    for key in ["usage/{period}/usage.csv", "usage/{period}/*.csv"] {
        let source = format!("s3://{BUCKET}/{key}");
        let mut env = with_server(&server, &[("USAGE_SOURCE", &source)]);
        for (name, value) in &mut env {
            if *name == "AWS_SECRET_ACCESS_KEY" {
                *value = WRONG.to_string();
            }
        }
        env.push(("AWS_SESSION_TOKEN", "session-token-Qm4uY8".to_string()));
        let error = collect(&world, &env).await.err().unwrap();
        let named = format!("s3://{BUCKET}/{}", key.replace("{period}", "2024-02"));
        assert!(error.contains(&named), "{error}");
        assert!(error.contains("403"), "{error}");
        for secret in [WRONG, s3::SECRET_KEY, "session-token-Qm4uY8"] {
            assert!(!error.contains(secret), "{error}");
        }
    }
}

#[tokio::test]
async fn a_parquet_float_quantity_is_refused_naming_the_column() {
    let world = default_world().await;
    let records = &world.usage.records[..10];
    let data = parquet(vec![
        (
            "subscription_id",
            text_column(records, |r| &r.subscription_id),
        ),
        ("item_mpn", text_column(records, |r| &r.item_mpn)),
        ("quantity", Arc::new(Float64Array::from(vec![1.5; 10]))),
        (
            "start_time_utc",
            text_column(records, |r| &r.start_time_utc),
        ),
        ("end_time_utc", text_column(records, |r| &r.end_time_utc)),
    ]);
    let server = S3Server::start(&[BUCKET]);
    server
        .put(BUCKET, "usage/2024-02/usage.parquet", data)
        .await;
    let source = format!("s3://{BUCKET}/usage/{{period}}/usage.parquet");
    let error = collect(&world, &with_server(&server, &[("USAGE_SOURCE", &source)]))
        .await
        .err()
        .unwrap();
    assert!(
        error.contains(&format!("s3://{BUCKET}/usage/2024-02/usage.parquet")),
        "{error}"
    );
    assert!(
        error.contains("column quantity is floating point"),
        "{error}"
    );
}
