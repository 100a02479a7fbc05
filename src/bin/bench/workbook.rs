//! Workbook writing: N usage rows to xlsx with the extension's writer against openpyxl's
//! write-only mode, each in its own process, on identical rows.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use connect_payg::usage::workbook::{write_workbook, Cell, UsageRow};

use crate::before;
use crate::measure::{self, ChildReport};

const NOTES: [&str; 4] = [
    "monthly usage",
    "tenant \"gold\", EU region",
    "spike, see ticket #42",
    "",
];

/// Row `n`; `bench_row` in benches/openpyxl_write.py builds the very same one.
pub fn bench_row(n: u64) -> UsageRow {
    let asset = n % 50_000;
    let mpn = n % 20;
    let note = NOTES[(n % 4) as usize];
    UsageRow {
        record_id: Cell::Text(format!(
            "CRD-{:05}-AS-{asset:06}-MPN-{mpn:03}-{n:08}",
            n % 100
        )),
        record_note: if note.is_empty() {
            Cell::Empty
        } else {
            Cell::Text(note.to_string())
        },
        item_search_criteria: Cell::Text("item.mpn".into()),
        item_search_value: Cell::Text(format!("MPN-{mpn:03}")),
        quantity: Cell::Number((n % 10_000) as f64 * 0.25),
        start_time_utc: Cell::Text("2024-01-01 00:00:00".into()),
        end_time_utc: Cell::Text("2024-01-31 23:59:59".into()),
        asset_search_criteria: Cell::Text("asset.id".into()),
        asset_search_value: Cell::Text(format!("AS-{asset:06}")),
        category_id: Cell::Text("generic_category".into()),
        ..UsageRow::default()
    }
}

/// Child side: writes `rows` rows to `path` and reports.
pub fn child(rows: u64, path: &Path) -> Result<ChildReport, String> {
    let started = Instant::now();
    let rows = u32::try_from(rows).map_err(|e| e.to_string())?;
    let stats = write_workbook(path, (0..rows).map(|n| bench_row(u64::from(n))))
        .map_err(|e| e.to_string())?;
    Ok(ChildReport {
        seconds: started.elapsed().as_secs_f64(),
        peak_rss_kb: measure::peak_rss_kb(),
        cpu_seconds: measure::cpu_seconds(),
        bytes: stats.bytes,
    })
}

pub struct Comparison {
    pub rows: u64,
    pub rust: ChildReport,
    pub python: ChildReport,
}

/// Rust children run per size; the median is reported. A 10k-row workbook takes ~11 ms, and
/// single runs of it measured 11–22 ms on this 2-core machine (most likely the slow ones met
/// a fresh binary's first loads or a build's disk writes): a median of three read 18 ms (a 51×
/// ratio) in a full run just after a build, where twelve runs by hand then read 11.3–11.6 ms
/// but the first (21.8 ms). So
/// workbooks under a second take [`SHORT_RUNS`] runs; openpyxl's second or more is one run.
const SHORT_RUNS: usize = 7;

/// Runs of a workbook of [`LONG_FROM`] rows or more (a second or more each).
const LONG_RUNS: usize = 3;
const LONG_FROM: u64 = 1_000_000;

fn rust_runs(rows: u64) -> usize {
    if rows < LONG_FROM {
        SHORT_RUNS
    } else {
        LONG_RUNS
    }
}

/// Parent side: [`rust_runs`] Rust children (the median kept) and one openpyxl child per size.
pub fn run(sizes: &[u64], python: &Path, dir: &Path) -> Result<Vec<Comparison>, String> {
    let mut comparisons = Vec::new();
    for &rows in sizes {
        let rust_path = dir.join(format!("rust-{rows}.xlsx"));
        let count = rust_runs(rows);
        let mut runs = Vec::with_capacity(count);
        for _ in 0..count {
            let child = measure::spawn_self(
                &["workbook", &rows.to_string(), &rust_path.to_string_lossy()],
                &BTreeMap::new(),
            )
            .map_err(|e| e.to_string())?;
            runs.push(measure::collect(child, "rust workbook")?);
            let _ = std::fs::remove_file(&rust_path);
        }
        runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        let rust = runs.swap_remove(count / 2);

        eprintln!("  {rows} rows: rust {:.3} s; openpyxl…", rust.seconds);
        let python_path = dir.join(format!("python-{rows}.xlsx"));
        let child = Command::new(python)
            .arg(crate::python::script())
            .arg(rows.to_string())
            .arg(&python_path)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let python_report = measure::collect(child, "openpyxl workbook")?;
        let _ = std::fs::remove_file(&python_path);
        comparisons.push(Comparison {
            rows,
            rust,
            python: python_report,
        });
    }
    Ok(comparisons)
}

pub fn table(comparisons: &[Comparison]) -> String {
    let mut out = format!(
        "| rows | Rust time, median of {SHORT_RUNS} ({LONG_RUNS} from {LONG_FROM} rows; before → now) | openpyxl time | ratio (Python/Rust; before → now) | Rust peak RSS | openpyxl peak RSS | Rust file | openpyxl file |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for c in comparisons {
        let before = before::workbook(c.rows);
        out.push_str(&format!(
            "| {} | {} | {:.3} s | {} | {} | {} | {} | {} |\n",
            c.rows,
            before::then_now(
                before.map(|(seconds, _)| format!("{seconds:.3} s")),
                format!("{:.3} s", c.rust.seconds)
            ),
            c.python.seconds,
            before::then_now(
                before.map(|(_, ratio)| format!("{ratio:.1}×")),
                format!("**{:.1}×**", c.python.seconds / c.rust.seconds)
            ),
            measure::mib(c.rust.peak_rss_kb),
            measure::mib(c.python.peak_rss_kb),
            measure::mib(c.rust.bytes / 1024),
            measure::mib(c.python.bytes / 1024),
        ));
    }
    out
}
