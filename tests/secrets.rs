//! Secrets stay secret: the real binary runs against an in-process simulator at the most
//! talkative log level, and neither its output, its logs, its errors nor any file it writes
//! holds the API key, `USAGE_SOURCE_AUTH`, or the credentials in `USAGE_SOURCE` and
//! `ALERT_WEBHOOK_URL` — in clear, base64 or percent-encoded, whole or just the secret part.
//! Runs that go well are checked, and so are the ones that fail on exactly those credentials.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use connect_payg::connect::FileStatus;
use connect_sim::{SimConfig, Simulator};
use payg_shared::protocol::{ResultCode, Variable};

#[path = "support/leaks.rs"]
mod leaks;

use leaks::{base64, binary, period, random, run_connected, simulator, Secrets};

impl Secrets {
    /// Asserts no secret in the output nor in any file under `dir` (workbooks unpacked).
    fn assert_nowhere(&self, output: &Output, dir: &Path) -> usize {
        self.assert_absent("stdout", &output.stdout);
        self.assert_absent("stderr", &output.stderr);
        let mut files = 0;
        for path in files_under(dir) {
            let bytes = std::fs::read(&path).unwrap();
            let place = path.display().to_string();
            self.assert_absent(&place, &bytes);
            if bytes.starts_with(b"PK") {
                for (name, content) in unzip(&bytes) {
                    self.assert_absent(&format!("{place}:{name}"), &content);
                }
            }
            files += 1;
        }
        files
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let Ok(mut archive) = zip::ZipArchive::new(std::io::Cursor::new(bytes)) else {
        return Vec::new();
    };
    (0..archive.len())
        .filter_map(|index| {
            let mut part = archive.by_index(index).ok()?;
            let mut content = Vec::new();
            part.read_to_end(&mut content).ok()?;
            Some((part.name().unwrap().to_string(), content))
        })
        .collect()
}

fn usage_source(sim: &Simulator, secrets: &Secrets) -> String {
    format!(
        "http://{}/_sim/usage?from={{from}}&to={{to}}&token={}",
        sim.server_address(),
        secrets.source_token
    )
}

fn webhook(sim: &Simulator, secrets: &Secrets) -> String {
    format!(
        "http://{}/_sim/webhook?token={}",
        sim.server_address(),
        secrets.webhook_token
    )
}

/// `connect-payg report` for the month, with `overrides` on top of working settings.
async fn report(
    sim: &Simulator,
    secrets: &Secrets,
    dir: &Path,
    overrides: &[(&str, String)],
) -> Output {
    let mut env = vec![
        ("API_KEY", secrets.api_key.clone()),
        ("SERVER_ADDRESS", sim.server_address()),
        ("USAGE_SOURCE", usage_source(sim, secrets)),
        ("USAGE_SOURCE_AUTH", secrets.usage_auth.clone()),
        ("ALERT_WEBHOOK_URL", webhook(sim, secrets)),
    ];
    for (name, value) in overrides {
        env.retain(|(n, _)| n != name);
        env.push((name, value.clone()));
    }
    let out = dir.join("out");
    binary(dir, &env)
        .args(["report", "--unsecure", "--period", &period().to_string()])
        .arg("--out")
        .arg(&out)
        .output()
        .await
        .unwrap()
}

fn show(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// How many log lines were written at DEBUG or TRACE (proof the run was talkative).
fn debug_lines(output: &Output) -> usize {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| line.contains("\"level\":\"DEBUG\"") || line.contains("\"level\":\"TRACE\""))
        .count()
}

#[tokio::test]
async fn a_report_at_trace_level_leaks_nothing() {
    let secrets = Secrets::new();
    let sim = simulator(&secrets).await;
    let dir = tempfile::tempdir().unwrap();
    let output = report(&sim, &secrets, dir.path(), &[]).await;
    assert!(output.status.success(), "{}", show(&output));
    assert!(!sim.state().files().is_empty(), "files were filed");
    assert!(debug_lines(&output) > 10, "{}", show(&output));
    let files = secrets.assert_nowhere(&output, dir.path());
    assert!(files >= 2, "workbooks and the bad-records CSV were checked");
    sim.shutdown().await;
}

#[tokio::test]
async fn failing_on_the_credentials_leaks_nothing() {
    let secrets = Secrets::new();
    let sim = simulator(&secrets).await;

    // The vendor refuses the source credentials.
    let dir = tempfile::tempdir().unwrap();
    sim.state()
        .require_usage_auth(Some(format!("Bearer {}", random())));
    let output = report(&sim, &secrets, dir.path(), &[]).await;
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("401"),
        "{}",
        show(&output)
    );
    secrets.assert_nowhere(&output, dir.path());
    sim.state()
        .require_usage_auth(Some(secrets.usage_auth.clone()));

    // Connect refuses the key (a wrong one, but the one this run was given).
    let dir = tempfile::tempdir().unwrap();
    let wrong = Secrets::new();
    let output = report(
        &sim,
        &secrets,
        dir.path(),
        &[("API_KEY", wrong.api_key.clone())],
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    secrets.assert_nowhere(&output, dir.path());
    wrong.assert_nowhere(&output, dir.path());

    // An API key HTTP cannot carry is refused by name, not by value.
    let dir = tempfile::tempdir().unwrap();
    let output = report(
        &sim,
        &secrets,
        dir.path(),
        &[("API_KEY", format!("{}\u{7}", secrets.api_key))],
    )
    .await;
    assert_ne!(output.status.code(), Some(0), "{}", show(&output));
    secrets.assert_nowhere(&output, dir.path());
    sim.shutdown().await;
}

#[tokio::test]
async fn the_extension_at_trace_level_leaks_nothing() {
    let secrets = Secrets::new();
    let sim = simulator(&secrets).await;
    let devops = sim.devops();
    let variable = |name: &str, value: String, secure: bool| Variable {
        name: name.into(),
        value: Some(value),
        secure,
    };
    devops.set_variables(vec![
        variable("USAGE_SOURCE", usage_source(&sim, &secrets), false),
        variable("USAGE_SOURCE_AUTH", secrets.usage_auth.clone(), true),
        variable("ALERT_WEBHOOK_URL", webhook(&sim, &secrets), true),
        variable("REPORT_PERIOD", period().to_string(), false),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let workbooks = dir.path().join("workbooks");
    let finished = run_connected(
        dir.path(),
        &[
            ("API_KEY", secrets.api_key.clone()),
            ("ENVIRONMENT_ID", sim.environment_id().to_string()),
            ("SERVER_ADDRESS", sim.server_address()),
            ("WORKBOOK_DIR", workbooks.display().to_string()),
        ],
        &sim,
    )
    .await;

    // The monthly report, then the usage-file events it causes, all the way to pending.
    let task_id = devops.fire_schedule(connect_payg::handlers::MONTHLY_REPORT_METHOD);
    let deadline = Instant::now() + Duration::from_secs(60);
    let result = loop {
        if let Some(result) = devops.result(&task_id) {
            break result;
        }
        assert!(Instant::now() < deadline, "the schedule was answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(result.output.result, ResultCode::Success, "{result:?}");
    while !sim
        .state()
        .files()
        .iter()
        .all(|file| file.status == FileStatus::Pending || file.status == FileStatus::Deleted)
    {
        assert!(Instant::now() < deadline, "{:#?}", sim.state().files());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A task that fails on the source credentials: the alert path.
    sim.state()
        .require_usage_auth(Some(format!("Bearer {}", random())));
    let failing = devops.fire_schedule(connect_payg::handlers::MONTHLY_REPORT_METHOD);
    let failed = loop {
        if let Some(result) = devops.result(&failing) {
            break result;
        }
        assert!(
            Instant::now() < deadline,
            "the failing schedule was answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(failed.output.result, ResultCode::Success, "{failed:?}");
    assert!(
        !sim.state().webhooks().is_empty(),
        "the failure was alerted"
    );

    devops.send_shutdown();
    let output = tokio::time::timeout(Duration::from_secs(30), finished)
        .await
        .expect("the runner stops when the platform asks")
        .unwrap()
        .unwrap();
    assert!(output.status.success(), "{}", show(&output));
    assert!(debug_lines(&output) > 10, "{}", show(&output));
    // What the platform was told (task results) is output too.
    for result in devops.results() {
        secrets.assert_absent("a task result", format!("{result:?}").as_bytes());
    }
    for webhook in sim.state().webhooks() {
        secrets.assert_absent("an alert", webhook.to_string().as_bytes());
    }
    let files = secrets.assert_nowhere(&output, dir.path());
    assert!(files >= 2, "workbooks and the bad-records CSV were checked");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_sandbox_at_trace_level_shows_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = binary(dir.path(), &[])
        .args(["sandbox", "--subscriptions", "40"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", show(&output));
    // The sandbox's simulator key is printed on purpose by `--serve` only.
    let key = SimConfig::default().api_key;
    let secret = key.rsplit(':').next().unwrap();
    for (place, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(secret), "the sandbox key is in {place}");
    }
    for path in files_under(dir.path()) {
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(secret),
            "the sandbox key is in {}",
            path.display()
        );
    }
}

#[test]
fn the_leak_detector_finds_every_form() {
    let secrets = Secrets::new();
    for (what, needle) in &secrets.needles {
        let text = format!("{{\"message\": \"…{needle}…\"}}");
        let found = std::panic::catch_unwind(|| secrets.assert_absent("a test", text.as_bytes()));
        assert!(found.is_err(), "{what} was not found");
    }
    assert!(secrets
        .needles
        .iter()
        .any(|(_, needle)| *needle == base64(secrets.api_key.as_bytes())));
    assert_eq!(base64(b"vendor:pw"), "dmVuZG9yOnB3");
    assert_eq!(base64(b"ab"), "YWI=");
}
