//! The binary as a person uses it: `sandbox`, `validate`, and the exit codes of spec §2.

use std::process::Command;

use connect_payg::usage::template::{Cell, UsageRow, COLUMNS};
use connect_payg::usage::workbook::write_workbook;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_connect-payg"))
}

#[test]
fn sandbox_walks_the_whole_life_cycle() {
    let dir = tempfile::tempdir().unwrap();
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
