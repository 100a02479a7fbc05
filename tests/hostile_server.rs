//! The REST client against hostile or misconfigured servers on 127.0.0.1: an absurd
//! `Retry-After`, bodies bigger than the client reads, paging that makes no progress, and
//! network failures (nothing listening, plain HTTP where TLS was expected) whose messages name
//! their cause and host without repeating themselves.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use connect_payg::config::Secret;
use connect_payg::connect::{ClientOptions, ConnectClient, ConnectError, Rql};

/// Longest any test here may take; the old code looped or hung past it.
const LIMIT: Duration = Duration::from_secs(20);

/// A plain-HTTP server answering the n-th request (0-based) with `answer(n)`, one request per
/// connection (and anything that is not HTTP at once, as web servers answer garbage). Returns its `host:port` and the number of requests seen.
async fn server(
    answer: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let answer = Arc::clone(&answer);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                // Like a real HTTP server, answer at once what is not HTTP (a TLS hello).
                while !head.windows(4).any(|w| w == b"\r\n\r\n")
                    && head.first().is_none_or(u8::is_ascii_uppercase)
                {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&buffer[..read]),
                    }
                }
                let _ = stream.write_all(&answer(n)).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (address, seen)
}

fn response(status: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut text = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    text.into_bytes()
}

fn client(base_url: String, tune: impl FnOnce(&mut ClientOptions)) -> ConnectClient {
    let mut options = ClientOptions {
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_attempts: 3,
        ..ClientOptions::new(base_url, Secret::new("ApiKey SU-1:k"))
    };
    tune(&mut options);
    ConnectClient::new(options).unwrap()
}

const MARKETPLACE: &str = r#"{"id": "MP-1", "currency": "EUR"}"#;

#[tokio::test]
async fn an_absurd_retry_after_is_capped_not_a_panic() {
    let (host, seen) = server(|n| match n {
        0 => response("429 Too Many Requests", &[("Retry-After", "1e20")], ""),
        _ => response(
            "200 OK",
            &[("Content-Type", "application/json")],
            MARKETPLACE,
        ),
    })
    .await;
    let client = client(format!("http://{host}/public/v1"), |_| {});
    let marketplace = tokio::time::timeout(LIMIT, client.marketplace("MP-1"))
        .await
        .expect("the wait is capped at max_delay")
        .unwrap();
    assert_eq!(marketplace.currency.as_deref(), Some("EUR"));
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let big = format!(
        r#"{{"id": "MP-1", "currency": "EUR", "name": "{}"}}"#,
        "x".repeat(4096)
    );
    let declared = big.clone();
    // One answer says how long it is; the other does not (read until the connection closes).
    let (with_length, _) = server(move |_| response("200 OK", &[], &declared)).await;
    let (without_length, _) =
        server(move |_| format!("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{big}").into_bytes())
            .await;
    for host in [with_length, without_length] {
        let client = client(format!("http://{host}/public/v1"), |options| {
            options.max_body_bytes = 1024;
        });
        let error = client.marketplace("MP-1").await.unwrap_err();
        assert!(matches!(error, ConnectError::Decode { .. }), "{error}");
        assert!(
            error.to_string().contains("larger than the 1024 bytes"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn paging_without_progress_is_an_error_not_a_loop() {
    let (host, seen) = server(|_| {
        response(
            "200 OK",
            &[("Content-Range", "items 0-0/*")],
            r#"[{"id": "CRD-1", "type": "distribution", "status": "active"}]"#,
        )
    })
    .await;
    let client = client(format!("http://{host}/public/v1"), |_| {});
    let error = tokio::time::timeout(LIMIT, client.contracts(Rql::new()))
        .await
        .expect("paging stops")
        .unwrap_err();
    assert!(error.to_string().contains("no progress"), "{error}");
    assert!(error.to_string().contains("items 0-0/*"), "{error}");
    assert_eq!(seen.load(Ordering::SeqCst), 2, "the second page shows it");
}

/// No `: `-separated part of a message repeats an earlier one.
fn assert_no_repetition(message: &str) {
    let parts: Vec<&str> = message.split(": ").collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(
            !parts[..i].iter().any(|earlier| earlier.contains(part)),
            "{part:?} repeated in {message}"
        );
    }
}

#[tokio::test]
async fn a_refused_connection_names_its_host_and_cause_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    drop(listener);
    let client = client(format!("http://{host}/public/v1"), |o| o.max_attempts = 1);
    let error = client.marketplace("MP-1").await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains(&format!("cannot connect to {host}")),
        "{text}"
    );
    assert!(text.contains("connection refused"), "{text}");
    assert_no_repetition(&text);
}

#[tokio::test]
async fn tls_against_a_plain_http_server_says_so() {
    let (host, _) = server(|_| response("200 OK", &[], MARKETPLACE)).await;
    let client = client(format!("https://{host}/public/v1"), |o| o.max_attempts = 1);
    let error = client.marketplace("MP-1").await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains(&host), "{text}");
    assert!(text.contains("plain HTTP"), "{text}");
    assert!(text.contains("SERVER_ADDRESS"), "{text}");
    assert_no_repetition(&text);
}
