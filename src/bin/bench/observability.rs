//! What an operator's view costs: the 10k-subscription month through the runner with log
//! shipping and `/metrics` off, then on (a logging key in the setup response, the lines shipped
//! to the simulator's log service, `/metrics` scraped every second), alternating so that the
//! machine's drift falls on both sides alike. The medians and their difference are the figure;
//! the issue asks for it to be within noise, which the spread of the off runs shows.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::month::{self, Outcome, Size};

/// One figure of a run.
type Figure = fn(&Outcome) -> f64;

pub struct Pair {
    pub off: Outcome,
    pub on: Outcome,
}

/// `pairs` off/on runs of the month at `size`, 0 ms latency.
pub async fn run(
    size: Size,
    pairs: usize,
    processing_delay: Duration,
    dir: &Path,
) -> Result<Vec<Pair>, String> {
    let mut runs = Vec::new();
    for at in 0..pairs {
        eprintln!("observability: pair {} of {pairs}…", at + 1);
        let run = |observed: bool| {
            let dir = dir.join(format!("{}-{at}", if observed { "on" } else { "off" }));
            async move {
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                let outcome =
                    month::run_observed(size, Duration::ZERO, processing_delay, &dir, observed)
                        .await;
                let _ = std::fs::remove_dir_all(&dir);
                outcome
            }
        };
        let off = run(false).await?;
        let on = run(true).await?;
        runs.push(Pair { off, on });
    }
    Ok(runs)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The runs, then the medians and the change.
pub fn table(pairs: &[Pair]) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "| run | shipping + metrics | task wall time | all files submitted | runner CPU | runner peak RSS | lines shipped | /metrics scrapes |"
    );
    let _ = writeln!(text, "|---:|---|---:|---:|---:|---:|---:|---:|");
    for (at, pair) in pairs.iter().enumerate() {
        for (label, outcome) in [("off", &pair.off), ("on", &pair.on)] {
            let _ = writeln!(
                text,
                "| {} | {label} | {:.3} s | {:.3} s | {:.2} s | {:.1} MiB | {} | {} |",
                at + 1,
                outcome.seconds,
                outcome.submitted_seconds,
                outcome.runner.cpu_seconds,
                outcome.runner.peak_rss_kb as f64 / 1024.0,
                outcome.shipped_lines,
                outcome.scrapes,
            );
        }
    }
    let of = |pick: fn(&Pair) -> &Outcome, value: fn(&Outcome) -> f64| {
        median(pairs.iter().map(|p| value(pick(p))).collect())
    };
    let off = |value: fn(&Outcome) -> f64| of(|p| &p.off, value);
    let on = |value: fn(&Outcome) -> f64| of(|p| &p.on, value);
    let spread = |value: fn(&Outcome) -> f64| {
        let values: Vec<f64> = pairs.iter().map(|p| value(&p.off)).collect();
        let (low, high) = values
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
        match off(value) {
            m if m > 0.0 && values.len() > 1 => format!("±{:.1}%", (high - low) / 2.0 / m * 100.0),
            _ => "-".to_string(),
        }
    };
    let change = |value: fn(&Outcome) -> f64| {
        let (a, b) = (off(value), on(value));
        match a > 0.0 {
            true => format!("{:+.1}%", (b - a) / a * 100.0),
            false => "-".to_string(),
        }
    };
    let _ = writeln!(
        text,
        "\n| median of {} | off | on | change | spread of the off runs |",
        pairs.len()
    );
    let _ = writeln!(text, "|---|---:|---:|---:|---:|");
    let rows: [(&str, Figure, &str); 4] = [
        ("task wall time", |o| o.seconds, "s"),
        ("all files submitted", |o| o.submitted_seconds, "s"),
        ("runner CPU", |o| o.runner.cpu_seconds, "s"),
        (
            "runner peak RSS",
            |o| o.runner.peak_rss_kb as f64 / 1024.0,
            "MiB",
        ),
    ];
    for (name, value, unit) in rows {
        let _ = writeln!(
            text,
            "| {name} | {:.3} {unit} | {:.3} {unit} | {} | {} |",
            off(value),
            on(value),
            change(value),
            spread(value)
        );
    }
    text
}
