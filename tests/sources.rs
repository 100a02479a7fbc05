//! Usage sources and records end to end: what a source may deliver and what the pipeline does
//! with records that cannot be filed as written (too long for a cell, too many digits), and how
//! HTTP sources guard against truncated bodies, endless bodies and unsafe redirects.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{default_world, World};
use connect_payg::config::Secret;
use connect_payg::connect::FileStatus;
use connect_payg::usage::{write_bad_records, Summary};
use connect_payg::usage::{BadReason, BadRecord, MAX_HELD_BAD_RECORDS};
use connect_payg::usage::{SourceError, UsageSource};
use futures::StreamExt;
use payg_shared::period::Period;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An in-scope asset and one of its product's PAYG items, as a CSV row's first two fields.
fn asset_and_item(world: &World) -> (String, String) {
    let catalogue = world.sim.state().catalogue();
    catalogue
        .assets
        .iter()
        .filter(|asset| catalogue.in_scope(asset))
        .find_map(|asset| {
            let item = catalogue.product(&asset.product_id)?.ppu_items().next()?;
            Some((asset.id.clone(), item.mpn.clone()))
        })
        .expect("an in-scope asset with a PAYG item")
}

/// The world's CSV with `rows` appended; returns the line of the first appended row.
fn append_rows(world: &World, rows: &[String]) -> u64 {
    let path = world.dir.path().join(format!("usage-{}.csv", world.period));
    let mut csv = std::fs::read_to_string(&path).unwrap();
    assert!(csv.ends_with('\n'));
    let first_line = csv.lines().count() as u64 + 1;
    for row in rows {
        csv.push_str(row);
        csv.push('\n');
    }
    std::fs::write(&path, csv).unwrap();
    first_line
}

#[tokio::test]
async fn a_note_too_long_for_a_cell_is_a_bad_record_and_its_group_is_filed() {
    let world = default_world().await;
    let (asset, mpn) = asset_and_item(&world);
    let line = append_rows(
        &world,
        &[format!(
            "{asset},{mpn},1,2024-02-01 00:00:00,2024-02-29 23:59:59,R-LONG-NOTE,{}",
            "n".repeat(40_000)
        )],
    );
    // The world's CSV names record_id and record_note in this order after the required five.
    let summary = world.reporter(&[]).run(&world.job(), None).await.unwrap();
    assert_eq!(summary.failed(), 0, "{}", summary.headline());
    let too_long = bad_for(&summary, BadReason::FieldTooLong);
    assert_eq!(too_long.len(), 1, "{}", summary.headline());
    assert_eq!(too_long[0].line, line);
    assert!(
        too_long[0].detail.contains("record_note"),
        "{}",
        too_long[0]
    );
    world.assert_filed_exactly(FileStatus::Pending).await;
}

/// An in-scope asset and a decimal PAYG item of its product, with the item's decimal places.
fn asset_and_decimal_item(world: &World) -> (String, String, usize) {
    let catalogue = world.sim.state().catalogue();
    catalogue
        .assets
        .iter()
        .filter(|asset| catalogue.in_scope(asset))
        .find_map(|asset| {
            let product = catalogue.product(&asset.product_id)?;
            product.ppu_items().find_map(|item| {
                let digits = item.precision.strip_prefix("decimal(")?.strip_suffix(')')?;
                Some((asset.id.clone(), item.mpn.clone(), digits.parse().ok()?))
            })
        })
        .expect("a decimal item on an in-scope asset")
}

#[tokio::test]
async fn a_quantity_with_too_many_digits_is_a_bad_record_not_rounded() {
    let world = default_world().await;
    let (asset, mpn, places) = asset_and_decimal_item(&world);
    // Within the item's decimal places, beyond what a workbook number holds.
    let quantity = format!("123456789012345.{}", "1".repeat(places));
    let line = append_rows(
        &world,
        &[format!(
            "{asset},{mpn},{quantity},2024-02-01 00:00:00,2024-02-29 23:59:59,R-DIGITS,"
        )],
    );
    let summary = world.reporter(&[]).run(&world.job(), None).await.unwrap();
    assert_eq!(summary.failed(), 0, "{}", summary.headline());
    let refused = bad_for(&summary, BadReason::TooManyDigits);
    assert_eq!(refused.len(), 1, "{}", summary.headline());
    assert_eq!(refused[0].line, line);
    world.assert_filed_exactly(FileStatus::Pending).await;
}

const HEADER: &str = "subscription_id,item_mpn,quantity,start_time_utc,end_time_utc\r\n";

/// What a raw HTTP server on loopback answers to each connection.
type Respond = Arc<dyn Fn(&str) -> Vec<Response> + Send + Sync>;

/// One piece of a response: bytes to write, or a pause before the next piece.
enum Response {
    Bytes(Vec<u8>),
    Pause(Duration),
}

fn bytes(text: impl Into<String>) -> Response {
    Response::Bytes(text.into().into_bytes())
}

/// A server on 127.0.0.1 that reads each request's head, records it, writes what `respond`
/// gives for it and closes the connection. Returns its origin and the requests seen.
async fn serve(respond: Respond) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let respond = respond.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                seen.lock().unwrap().push(head.clone());
                for piece in respond(&head) {
                    match piece {
                        Response::Bytes(bytes) => {
                            if socket.write_all(&bytes).await.is_err() {
                                return;
                            }
                        }
                        Response::Pause(pause) => tokio::time::sleep(pause).await,
                    }
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    (origin, requests)
}

/// A 200 response of `content_type` without a length: the body ends when the connection does.
fn close_delimited(content_type: &str, body: &str) -> Vec<Response> {
    vec![bytes(format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n{body}"
    ))]
}

fn jan() -> Period {
    Period::parse("2024-01").unwrap()
}

/// Reads a source to its end: the records and bad records, then the error that ended it.
async fn drain(source: &UsageSource) -> (usize, Option<SourceError>) {
    let mut stream = match source.open(jan()).await {
        Ok(stream) => stream,
        Err(error) => return (0, Some(error)),
    };
    let mut items = 0;
    while let Some(batch) = stream.next().await {
        match batch {
            Ok(batch) => items += batch.len(),
            Err(error) => return (items, Some(error)),
        }
    }
    (items, None)
}

#[tokio::test]
async fn a_body_cut_short_is_a_source_error_not_a_shorter_file() {
    let csv = format!("{HEADER}AS-1,M,1,a,b\r\nAS-2,M,46");
    let jsonl = "{\"subscription_id\": \"AS-1\"}\n{\"subscription_id\": \"AS-2\", \"quantity\": 46";
    let json = "[{\"subscription_id\": \"AS-1\"}, {\"subscription_id\": \"AS-2\"}";
    for (content_type, body, reason) in [
        ("text/csv", csv.as_str(), "cut short"),
        ("application/x-ndjson", jsonl, "cut short"),
        ("application/json", json, "not closed"),
    ] {
        let body = body.to_string();
        let (origin, _) = serve(Arc::new(move |_: &str| {
            close_delimited(content_type, &body)
        }))
        .await;
        let source = UsageSource::new(format!("{origin}/usage/{{period}}?token=abc"), None);
        let (_, error) = drain(&source).await;
        let error = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains(reason), "{content_type}: {error:?}");
        assert!(
            error.contains(&format!("{origin}/usage/2024-01")),
            "{error}"
        );
        assert!(!error.contains("abc"), "{error}");
    }
    // The same bytes complete with their final line break are read whole.
    let body = format!("{HEADER}AS-1,M,1,a,b\r\nAS-2,M,4652\r\n");
    let (origin, _) = serve(Arc::new(move |_: &str| close_delimited("text/csv", &body))).await;
    let source = UsageSource::new(format!("{origin}/usage.csv"), None);
    let (items, error) = drain(&source).await;
    assert_eq!((items, error.map(|e| e.to_string())), (2, None));
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_is_refused() {
    // Complete rows, but fewer bytes than announced.
    let body = format!("{HEADER}AS-1,M,1,a,b\r\n");
    let (origin, _) = serve(Arc::new(move |_: &str| {
        vec![bytes(format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: {}\r\n\r\n{body}",
            body.len() + 100
        ))]
    }))
    .await;
    let source = UsageSource::new(format!("{origin}/usage.csv"), None);
    let (_, error) = drain(&source).await;
    let error = error.expect("a short body is an error").to_string();
    assert!(error.contains(&origin), "{error}");
}

#[tokio::test]
async fn redirects_are_followed_only_within_the_origin_without_referer() {
    let (elsewhere, elsewhere_requests) =
        serve(Arc::new(|_: &str| close_delimited("text/csv", HEADER))).await;
    let target = elsewhere.clone();
    let (origin, requests) = serve(Arc::new(move |head: &str| {
        let location = if head.starts_with("GET /start ") {
            "/moved".to_string()
        } else if head.starts_with("GET /moved ") {
            format!("{target}/stolen")
        } else {
            return close_delimited("text/csv", &format!("{HEADER}AS-1,M,1,a,b\r\n"));
        };
        vec![bytes(format!(
            "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ))]
    }))
    .await;
    let auth = Some(Secret::new("Bearer vendor-token"));

    // Within the origin: followed, without Referer, with the auth header (loopback).
    let same = UsageSource::new(format!("{origin}/same"), auth.clone());
    assert_eq!(drain(&same).await.0, 1);

    // /start → /moved (same origin, followed) → another origin: refused, never asked.
    let source = UsageSource::new(format!("{origin}/start"), auth);
    let (_, error) = drain(&source).await;
    let error = error
        .expect("a cross-origin redirect is refused")
        .to_string();
    assert!(
        error.contains("redirect") && error.contains("refused"),
        "{error}"
    );
    assert!(!error.contains("vendor-token"), "{error}");
    assert!(elsewhere_requests.lock().unwrap().is_empty());
    let requests = requests.lock().unwrap();
    let paths: Vec<&str> = requests
        .iter()
        .map(|head| head.split(' ').nth(1).unwrap_or_default())
        .collect();
    assert_eq!(paths, ["/same", "/start", "/moved"]);
    for head in requests.iter() {
        let lower = head.to_ascii_lowercase();
        assert!(!lower.contains("\r\nreferer:"), "{head}");
        assert!(
            lower.contains("\r\nauthorization: bearer vendor-token"),
            "{head}"
        );
    }
}

#[tokio::test]
async fn the_auth_header_is_never_sent_in_clear_beyond_loopback() {
    let source = UsageSource::new(
        "http://vendor.invalid/usage/{period}",
        Some(Secret::new("Bearer vendor-token")),
    );
    let error = source.open(jan()).await.err().expect("refused").to_string();
    assert!(error.contains("USAGE_SOURCE_AUTH"), "{error}");
    assert!(error.contains("https"), "{error}");
    assert!(!error.contains("vendor-token"), "{error}");
}

#[tokio::test]
async fn a_body_that_never_ends_stops_at_the_total_deadline() {
    // A steady trickle: never idle long enough for the idle timeout to end it.
    let (origin, _) = serve(Arc::new(|_: &str| {
        let mut pieces = vec![bytes(format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nConnection: close\r\n\r\n{HEADER}"
        ))];
        for _ in 0..10_000 {
            pieces.push(bytes("AS-1,M,1,a,b\r\n"));
            pieces.push(Response::Pause(Duration::from_millis(20)));
        }
        pieces
    }))
    .await;
    let source = UsageSource::new(format!("{origin}/usage.csv"), None)
        .with_timeout(Duration::from_millis(700));
    let started = Instant::now();
    let (items, error) = drain(&source).await;
    let error = error.expect("the deadline ends the read").to_string();
    assert!(error.contains("USAGE_SOURCE_TIMEOUT"), "{error}");
    assert!(items > 0, "rows arrived before the deadline");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn every_bad_record_reaches_the_csv_while_only_the_first_are_held() {
    let world = default_world().await;
    let (asset, mpn) = asset_and_item(&world);
    let extra = MAX_HELD_BAD_RECORDS * 3;
    let rows: Vec<String> = (0..extra)
        .map(|n| {
            format!(
                "{asset},{mpn},not-a-number-{n},2024-02-01 00:00:00,2024-02-29 23:59:59,R-BAD-{n},"
            )
        })
        .collect();
    let first_line = append_rows(&world, &rows);
    let summary = world.reporter(&[]).run(&world.job(), None).await.unwrap();
    assert_eq!(summary.failed(), 0, "{}", summary.headline());
    let total = world.usage.expected.bad.len() + extra;
    assert_eq!(summary.bad.len(), total);
    assert_eq!(summary.bad.iter().count(), MAX_HELD_BAD_RECORDS);
    assert_eq!(summary.bad_by_reason().values().sum::<u64>(), total as u64);
    assert!(
        summary.headline().contains(&format!("bad records {total}")),
        "{}",
        summary.headline()
    );
    world.assert_filed_exactly(FileStatus::Pending).await;

    let csv = std::fs::read_to_string(write_bad_records(world.dir.path(), &summary).await.unwrap())
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "line,index,record_id,reason,detail,object");
    assert_eq!(lines.len(), total + 1);
    let numbers: Vec<u64> = lines[1..]
        .iter()
        .map(|row| row.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        numbers.windows(2).all(|pair| pair[0] <= pair[1]),
        "in source order"
    );
    assert_eq!(numbers[numbers.len() - extra], first_line);
    assert!(
        lines.last().unwrap().contains("not-a-number-"),
        "{}",
        lines.last().unwrap()
    );
}

/// The held bad records of `reason`.
fn bad_for(summary: &Summary, reason: BadReason) -> Vec<&BadRecord> {
    summary
        .bad
        .iter()
        .filter(|bad| bad.reason == reason)
        .collect()
}
