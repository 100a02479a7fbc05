//! `connect-payg health`: asks the running instance's `/healthz` at `METRICS_ADDRESS` (on
//! loopback when it is `0.0.0.0` or `[::]`, never through a proxy) and exits 0 when it answers
//! 200, 1 otherwise, so that a container `HEALTHCHECK` needs no curl in the image. Every failure
//! is exit 1, never 2: Docker reserves exit code 2 of a health check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
        Ok(address) => probe_address(address),
        Err(error) => {
            eprintln!("error: {error}");
            return Outcome::WorkFailed;
        }
    };
    match probe(address).await {
        Ok((status, body)) => {
            println!("{}", body.trim_end());
            if status == 200 {
                Outcome::Success
            } else {
                Outcome::WorkFailed
            }
        }
        Err(reason) => {
            eprintln!("error: no answer from http://{address}/healthz: {reason}");
            Outcome::WorkFailed
        }
    }
}

/// The address to ask for `address`: loopback in place of the unspecified address.
fn probe_address(address: SocketAddr) -> SocketAddr {
    let ip = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, address.port())
}

/// `GET /healthz` at `address`: the status and body, or why there was no answer.
async fn probe(address: SocketAddr) -> Result<(u16, String), String> {
    // Loopback only: an HTTP_PROXY in the container's environment must not be used.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(LIMIT)
        .build()
        .map_err(|e| e.to_string())?;
    let no_answer = |error: reqwest::Error| crate::connect::network_error_text(&error);
    let response = client
        .get(format!("http://{address}/healthz"))
        .send()
        .await
        .map_err(no_answer)?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(no_answer)?;
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_address_is_an_ip_and_port() {
        let parse = |text: &str| crate::config::parse_metrics_address(text).map(|a| a.to_string());
        assert_eq!(parse("0.0.0.0:9464").unwrap(), "0.0.0.0:9464");
        assert_eq!(parse(" :9464 ").unwrap(), "0.0.0.0:9464");
        assert_eq!(parse("[::]:9464").unwrap(), "[::]:9464");
        assert_eq!(parse("127.0.0.1:0").unwrap(), "127.0.0.1:0");
        for bad in [
            "localhost:9464",
            "9464",
            "0.0.0.0",
            ":http",
            "0.0.0.0:70000",
        ] {
            let error = parse(bad).unwrap_err().to_string();
            assert!(error.contains("METRICS_ADDRESS"), "{bad}: {error}");
        }
        // Environment only: a configuration file cannot set it.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "metrics_address = \"0.0.0.0:9464\"\n").unwrap();
        let sources = crate::config::SettingsSources {
            file: Some(file),
            env: Some(Default::default()),
            ..Default::default()
        };
        assert!(sources.load().is_err());
    }

    #[test]
    fn the_unspecified_address_is_asked_on_loopback() {
        let probe = |text: &str| probe_address(text.parse().unwrap()).to_string();
        assert_eq!(probe("0.0.0.0:9464"), "127.0.0.1:9464");
        assert_eq!(probe("[::]:9464"), "[::1]:9464");
        assert_eq!(probe("127.0.0.2:80"), "127.0.0.2:80");
        assert_eq!(probe("[::1]:9464"), "[::1]:9464");
    }
}
