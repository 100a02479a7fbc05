//! `connect-payg health`: asks the running instance's `/healthz` at `METRICS_ADDRESS` (on
//! loopback when it is `0.0.0.0` or `[::]`) and exits 0 when it answers 200, 1 otherwise, so
//! that a container `HEALTHCHECK` needs no curl in the image. Every failure is exit 1, never
//! 2: Docker reserves exit code 2 of a health check.

use std::time::Duration;

use super::Outcome;

/// Longest wait for the answer; a healthy instance answers in milliseconds.
const LIMIT: Duration = Duration::from_secs(5);

pub async fn health() -> Outcome {
    // Environment only, like the runner reads it.
    let value = std::env::var("METRICS_ADDRESS").unwrap_or_default();
    if value.trim().is_empty() {
        eprintln!("error: METRICS_ADDRESS is not set: the runner serves no /healthz to ask");
        return Outcome::WorkFailed;
    }
    let address = match crate::config::parse_metrics_address(&value) {
        Ok(address) => address,
        Err(error) => {
            eprintln!("error: {error}");
            return Outcome::WorkFailed;
        }
    };
    match crate::metrics::probe(address, LIMIT).await {
        Ok(answer) => {
            println!("{}", answer.body.trim_end());
            if answer.healthy() {
                Outcome::Success
            } else {
                Outcome::WorkFailed
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            Outcome::WorkFailed
        }
    }
}
