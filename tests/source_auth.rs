//! The environment's `USAGE_SOURCE_AUTH` through the real runner: an extension variable that
//! points `USAGE_SOURCE` at another host does not take the credential there. The settings
//! pushed by the platform are refused and the runner keeps reporting from the environment's
//! source.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::default_world;

const AUTH: &str = "Bearer environment-only-token";

/// A loopback listener that keeps whatever is sent to it.
fn eavesdropper() -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&heard);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        }
    });
    (address, heard)
}

#[tokio::test]
async fn an_extension_variable_cannot_send_the_environments_auth_elsewhere() {
    let world = default_world().await;
    let (evil, heard) = eavesdropper();
    world.set_extension_variables(&[(
        "USAGE_SOURCE",
        &format!("http://{evil}/usage-{{period}}.csv"),
    )]);
    let source = world.usage_source();
    let period = world.period.to_string();
    let running = world
        .start_extension_with(&[
            ("USAGE_SOURCE", &source),
            ("USAGE_SOURCE_AUTH", AUTH),
            ("REPORT_PERIOD", &period),
        ])
        .await;

    world.run_schedule().await;
    world.wait_until_all_pending().await;
    running.stop.cancel();
    let _ = running.task.await;

    let heard = String::from_utf8_lossy(&heard.lock().unwrap()).into_owned();
    assert!(!heard.contains("environment-only-token"), "{heard}");
    assert!(
        heard.is_empty(),
        "nothing was sent to the other host: {heard}"
    );
}
