//! The binary as a person uses it: `sandbox`, `validate`, and the exit codes (0 success, 1 the
//! work failed, 2 bad configuration or arguments).

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use connect_payg::usage::workbook::{write_workbook, Cell, UsageRow, COLUMNS};

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_connect-payg"))
}

#[test]
fn sandbox_walks_the_whole_life_cycle() {
    let dir = tempfile::tempdir().unwrap();
    // A previous run's workbook must not be mistaken for this run's.
    let stale = dir.path().join("sandbox-out/workbooks");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("CTR-stale_PRD-stale_2000-01.xlsx"), "old").unwrap();
    let output = binary()
        .args(["sandbox", "--subscriptions", "80"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let file_lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("CRD-")).collect();
    assert!(file_lines.len() >= 2, "{stdout}");
    assert!(
        file_lines.iter().all(|l| l.ends_with("→ accepted")),
        "{stdout}"
    );
    let resubmitted: Vec<&&str> = file_lines
        .iter()
        .filter(|l| l.contains("pending → rejected → processing → ready → pending → accepted"))
        .collect();
    assert_eq!(resubmitted.len(), 1, "{stdout}");
    assert!(
        stdout.contains("rebuilt from the corrected source with the corrected quantity"),
        "{stdout}"
    );
    // The catch-up: one run filed the month before last (never filed) and last month.
    assert!(
        stdout.contains("Catch-up run's result: 2 periods, oldest first: "),
        "{stdout}"
    );
    let periods: std::collections::BTreeSet<&str> = file_lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|p| !p.contains(":late-"))
        .collect();
    assert_eq!(periods.len(), 2, "{stdout}");
    // The late record: filed alone in one supplemental file.
    let late: Vec<&&str> = file_lines
        .iter()
        .filter(|l| l.contains(":late-1 "))
        .collect();
    assert_eq!(late.len(), 1, "{stdout}");
    assert_eq!(
        late[0].split_whitespace().nth(4),
        Some("1"),
        "one row: {stdout}"
    );
    assert!(
        stdout.contains("Late record: late-record-1 of "),
        "{stdout}"
    );
    assert!(stdout.contains("0 protocol errors"), "{stdout}");
    assert!(stdout.contains("failed 0"), "{stdout}");
    let workbooks = dir.path().join("sandbox-out/workbooks");
    let xlsx = std::fs::read_dir(&workbooks)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "xlsx")
        })
        .count();
    assert_eq!(xlsx, file_lines.len(), "one workbook per file");
    assert!(
        !workbooks.join("CTR-stale_PRD-stale_2000-01.xlsx").exists(),
        "the previous run's workbooks are cleared"
    );
    let bad = std::fs::read_dir(&workbooks).unwrap().find(|e| {
        e.as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("bad-records-")
    });
    assert!(bad.is_some(), "bad-records CSV written");
}

fn row(record_id: &str, quantity: f64) -> UsageRow {
    let mut cells: [Cell; 17] = Default::default();
    let text = |s: &str| Cell::Text(s.into());
    for (cell, column) in cells.iter_mut().zip(COLUMNS) {
        *cell = match column {
            "record_id" => text(record_id),
            "item_search_criteria" => text("item.mpn"),
            "item_search_value" => text("MPN-A"),
            "quantity" => Cell::Number(quantity),
            "start_time_utc" => text("2024-01-01 00:00:00"),
            "end_time_utc" => text("2024-01-31 23:59:59"),
            "asset_search_criteria" => text("asset.id"),
            "asset_search_value" => text("AS-1"),
            _ => Cell::Empty,
        };
    }
    UsageRow::from_cells(cells)
}

#[test]
fn validate_accepts_a_good_workbook_and_lists_every_problem_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.xlsx");
    write_workbook(&good, [row("r-1", 1.0), row("r-2", 2.5)].into_iter()).unwrap();
    let output = binary()
        .args(["validate", good.to_str().unwrap(), "--period", "2024-01"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("VALID"), "{stdout}");
    assert!(
        stdout.contains("Not checked offline"),
        "says what it skipped: {stdout}"
    );

    let bad = dir.path().join("bad.xlsx");
    write_workbook(&bad, [row("r-1", 1.0), row("r-1", -2.0)].into_iter()).unwrap();
    let output = binary()
        .args(["validate", bad.to_str().unwrap(), "--period", "2023-12"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("row 3"), "names the row: {stdout}");
    assert!(stdout.contains("record_id"), "names the column: {stdout}");
    assert!(stdout.contains("quantity"), "{stdout}");
    assert!(
        stdout.contains("end_time_utc: is after the reporting period"),
        "outside the period: {stdout}"
    );
    assert!(stdout.contains("INVALID"), "{stdout}");
}

#[test]
fn validate_checks_every_file_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.xlsx");
    write_workbook(&good, [row("r-1", 1.0)].into_iter()).unwrap();
    let bad = dir.path().join("bad.xlsx");
    write_workbook(&bad, [row("r-1", -2.0)].into_iter()).unwrap();
    let output = binary()
        .args(["validate", "--period", "2024-01"])
        .args([&good, &bad])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("good.xlsx") && stdout.contains("bad.xlsx"),
        "{stdout}"
    );
    assert!(stdout.contains("quantity"), "{stdout}");
    // A directory among them is said, and the others are still checked.
    let output = binary()
        .args(["validate", "--period", "2024-01"])
        .args([dir.path(), &bad])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("not a file"), "{stdout}");
    assert!(
        stdout.contains("bad.xlsx") && stdout.contains("quantity"),
        "{stdout}"
    );
}

#[test]
fn bad_arguments_and_settings_exit_2_naming_the_culprit() {
    let output = binary()
        .args(["validate", "/nonexistent.xlsx"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent.xlsx"));

    let output = binary()
        .args(["report", "--period", "2024-01"])
        .env_clear()
        .env("USAGE_SOURCE", "file:///tmp/x.csv")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("API_KEY"));

    let output = binary()
        .args(["run"])
        .env_clear()
        .env("API_KEY", "ApiKey SU-1:secret-value")
        .env("API_CONCURRENCY", "lots")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("API_CONCURRENCY"), "{stderr}");
    assert!(!stderr.contains("secret-value"), "{stderr}");

    let output = binary()
        .args(["report", "--period", "2024-13"])
        .env_clear()
        .env("API_KEY", "ApiKey SU-1:x")
        .env("USAGE_SOURCE", "file:///tmp/x.csv")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--period"));
}

/// Runs `command` to its end, or kills it after `limit` and fails: a start-up check that
/// is missing would otherwise leave the runner retrying forever.
fn output_within(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
            panic!("still running after {limit:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// `run` against a loopback port nothing listens on, with `env` on top.
fn run_with(env: &[(&str, &str)]) -> Output {
    let mut command = binary();
    command
        .args(["run", "--unsecure"])
        .env_clear()
        .env("API_KEY", "ApiKey SU-1:secret-value")
        .env("ENVIRONMENT_ID", "ENV-1")
        .env("SERVER_ADDRESS", "127.0.0.1:1");
    for (name, value) in env {
        command.env(name, value);
    }
    output_within(&mut command, Duration::from_secs(30))
}

#[test]
fn the_runner_refuses_at_start_what_would_fail_later() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    let under_a_file = blocker.join("workbooks");
    let empty_pem = dir.path().join("empty.pem");
    std::fs::write(&empty_pem, "").unwrap();
    for (name, value) in [
        ("BACKGROUND_TASK_MAX_EXECUTION_TIME", "18446744073709551615"),
        ("SCHEDULED_TASK_MAX_EXECUTION_TIME", "18446744073709551615"),
        ("SERVER_ADDRESS", ""),
        ("SERVER_ADDRESS", "127.0.0.1:port"),
        ("WORKBOOK_DIR", under_a_file.to_str().unwrap()),
        ("SSL_CERT_FILE", empty_pem.to_str().unwrap()),
        ("HTTP_PROXY", "socks5://127.0.0.1:1080"),
    ] {
        let output = run_with(&[(name, value)]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}={value:?}: {stderr}");
        assert!(stderr.contains(name), "{name}={value:?}: {stderr}");
        assert!(!stderr.contains("secret-value"), "{stderr}");
    }
}

#[test]
fn no_configuration_file_is_read_unless_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("connect-payg.toml"),
        "api_concurrency = \"lots\"\n",
    )
    .unwrap();
    let report = |extra: &[&str]| {
        binary()
            .args(["report", "--period", "2024-01"])
            .args(extra)
            .current_dir(dir.path())
            .env_clear()
            .env("USAGE_SOURCE", "file:///tmp/x.csv")
            .output()
            .unwrap()
    };
    let output = report(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("API_KEY"), "{stderr}");
    assert!(
        !stderr.contains("API_CONCURRENCY"),
        "the file was read: {stderr}"
    );

    let output = report(&["--config", "connect-payg.toml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("API_CONCURRENCY"), "{stderr}");

    std::fs::write(dir.path().join("typo.toml"), "api_concurency = 3\n").unwrap();
    let output = report(&["--config", "typo.toml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("\"api_concurency\""), "{stderr}");
    assert!(stderr.contains("\"api_concurrency\""), "{stderr}");
}

#[test]
fn a_usage_source_that_does_not_parse_is_refused_without_its_password() {
    let mut command = binary();
    command
        .args(["report", "--unsecure", "--period", "2024-01", "--dry-run"])
        .arg("--out")
        .arg(tempfile::tempdir().unwrap().path())
        .env_clear()
        .env("API_KEY", "ApiKey SU-1:x")
        .env("SERVER_ADDRESS", "127.0.0.1:1")
        .env("API_RETRY_BASE_MS", "1")
        .env("API_RETRY_MAX_MS", "2")
        .env(
            "USAGE_SOURCE",
            "https://vendor:hunter2@ven dor.example/{period}.csv",
        );
    let output = output_within(&mut command, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("USAGE_SOURCE"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn sandbox_refuses_sizes_it_cannot_use_or_hold() {
    for (subscriptions, says) in [("0", "at least 10"), ("10000000", "at most 1000000")] {
        let dir = tempfile::tempdir().unwrap();
        let output = binary()
            .args(["sandbox", "--subscriptions", subscriptions])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(!dir.path().join("sandbox-out").exists(), "nothing started");
    }
}

/// Every variable the README's configuration tables name, in backquotes.
fn readme_settings() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("\n## Configuration")
        .nth(1)
        .unwrap()
        .split("\n### ")
        .next()
        .unwrap();
    let mut names = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = line.split('|').nth(1).unwrap();
        for (i, piece) in first_cell.split('`').enumerate() {
            let is_name = !piece.is_empty()
                && piece
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if i % 2 == 1 && is_name {
                names.push(piece.to_string());
            }
        }
    }
    names
}

#[test]
fn help_lists_every_environment_variable_of_the_readme() {
    let names = readme_settings();
    assert!(names.len() > 20, "{names:?}");
    let output = binary().arg("--help").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for name in &names {
        assert!(help.contains(name.as_str()), "--help lacks {name}:\n{help}");
    }
}
