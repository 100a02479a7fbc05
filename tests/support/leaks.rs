//! The leak detector of the secrets tests: fresh random credentials for one run, and every form
//! in which one of them could leak (in clear, base64 or percent-encoded, whole or just the
//! secret part), looked for in whatever the product wrote — its output, its files, the log
//! lines it shipped; a simulator that knows those credentials, and the binary at its most talkative.

#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use connect_sim::vendor_usage::UsageFormat;
use connect_sim::{BadRowSpec, SeedSpec, SimConfig, Simulator};
use payg_shared::period::Period;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

/// Fresh random text, so a secret cannot turn up by coincidence.
pub fn random() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                text.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                text.push('=');
            }
        }
    }
    text
}

/// The credentials of one run, and every form in which one of them could leak.
pub struct Secrets {
    pub api_key: String,
    pub usage_auth: String,
    pub source_token: String,
    pub webhook_token: String,
    /// (what, needle)
    pub needles: Vec<(String, String)>,
}

impl Secrets {
    pub fn new() -> Secrets {
        let api_key = format!("ApiKey SU-{}:{}", &random()[..12], random());
        let password = random();
        let usage_auth = format!("Basic {}", base64(format!("vendor:{password}").as_bytes()));
        let source_token = random();
        let webhook_token = random();
        let mut secrets = Secrets {
            api_key: api_key.clone(),
            usage_auth: usage_auth.clone(),
            source_token: source_token.clone(),
            webhook_token: webhook_token.clone(),
            needles: Vec::new(),
        };
        secrets.add("API key", &api_key);
        secrets.add("API key secret part", api_key.rsplit(':').next().unwrap());
        secrets.add("USAGE_SOURCE_AUTH", &usage_auth);
        secrets.add("USAGE_SOURCE_AUTH password", &password);
        secrets.add("USAGE_SOURCE token", &source_token);
        secrets.add("ALERT_WEBHOOK_URL token", &webhook_token);
        secrets
    }

    /// Looks for `secret` too, in each of its forms.
    pub fn add(&mut self, what: &str, secret: &str) {
        self.needles.push((what.to_string(), secret.to_string()));
        self.needles
            .push((format!("{what} (base64)"), base64(secret.as_bytes())));
        self.needles.push((
            format!("{what} (percent-encoded)"),
            utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string(),
        ));
    }

    /// Asserts no secret in `bytes`, which came from `place`.
    pub fn assert_absent(&self, place: &str, bytes: &[u8]) {
        for (what, needle) in &self.needles {
            let found = bytes
                .windows(needle.len())
                .position(|window| window == needle.as_bytes());
            if let Some(at) = found {
                let context = String::from_utf8_lossy(&bytes[at.saturating_sub(200)..]);
                let context: String = context.chars().take(600).collect();
                panic!("{what} leaked into {place}: …{context}…");
            }
        }
    }
}

pub fn period() -> Period {
    Period::parse("2024-01").unwrap()
}

/// A simulator that knows `secrets.api_key`, with the month's vendor usage served over HTTP
/// behind `secrets.usage_auth`.
pub async fn simulator(secrets: &Secrets) -> Simulator {
    let sim = Simulator::start(SimConfig {
        api_key: secrets.api_key.clone(),
        processing_delay: Duration::from_millis(5),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    sim.state().seed(&SeedSpec::default());
    let usage = sim
        .state()
        .vendor_usage(period(), &BadRowSpec::default())
        .unwrap();
    sim.state()
        .serve_usage(Some(period()), usage.csv, UsageFormat::Csv);
    sim.state()
        .require_usage_auth(Some(secrets.usage_auth.clone()));
    sim
}

/// The binary with nothing from this environment but `env`, logging everything (TRACE) as
/// JSON, and its scratch files under `dir`.
pub fn binary(dir: &Path, env: &[(&str, String)]) -> Command {
    let scratch = dir.join("tmp");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_connect-payg"));
    command
        .env_clear()
        .env("RUST_LOG", "trace")
        .env("LOG_FORMAT", "json")
        .env("TMPDIR", &scratch)
        .env("READY_POLL_INTERVAL_MS", "10")
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// `connect-payg run --unsecure` ([`binary`] with `env`) against `sim`, its output drained from
/// the start (a full pipe would stall the chatty runner), once both of its connections are
/// handshaken; the handle gives its output when it ends.
pub async fn run_connected(
    dir: &Path,
    env: &[(&str, String)],
    sim: &Simulator,
) -> tokio::task::JoinHandle<std::io::Result<std::process::Output>> {
    let child = binary(dir, env)
        .args(["run", "--unsecure"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let finished = tokio::spawn(child.wait_with_output());
    assert!(
        sim.devops()
            .wait_until(Duration::from_secs(30), |s| s.handshakes >= 2
                && s.open >= 2)
            .await,
        "the runner connected"
    );
    finished
}
