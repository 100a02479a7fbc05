//! Measuring one workload in its own process: peak RSS is per process, so each measured
//! workload runs in a child (this binary re-invoked with `child …`), which reports its figures
//! as one JSON line on stdout.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};

use serde::{Deserialize, Serialize};

/// What a child reports when its workload is done.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChildReport {
    /// Time of the workload itself (process start-up excluded); 0 when the parent times it.
    pub seconds: f64,
    /// VmHWM of the child (Python: `ru_maxrss`), in KiB.
    pub peak_rss_kb: u64,
    /// Size of what was written, when something was.
    #[serde(default)]
    pub bytes: u64,
    /// User + system CPU time of the whole child process.
    #[serde(default)]
    pub cpu_seconds: f64,
}

/// User + system CPU time of this process so far (all threads, finished ones included).
pub fn cpu_seconds() -> f64 {
    // /proc/self/stat: fields 14 and 15 (utime, stime) after the parenthesised command name,
    // in clock ticks of 1/100 s on Linux.
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

/// The peak resident set size of this process so far, in KiB (VmHWM).
pub fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Prints the report a parent reads back.
pub fn report(report: &ChildReport) {
    println!(
        "{}",
        serde_json::to_string(report).expect("a report serializes")
    );
}

/// This binary, re-invoked with `child <args…>` and the given environment; stdout is piped
/// for the report. The child's logs (stderr) are discarded unless `BENCH_CHILD_LOG` names a
/// file to append them to; `BENCH_CHILD_WRAP` is a command line to run the child under
/// (e.g. `valgrind --tool=callgrind`), for profiling.
pub fn spawn_self(args: &[&str], env: &BTreeMap<String, String>) -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    let wrap = std::env::var("BENCH_CHILD_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(exe);
            command
        }
        None => Command::new(exe),
    };
    let stderr = match std::env::var_os("BENCH_CHILD_LOG") {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        None => Stdio::null(),
    };
    command
        .arg("child")
        .args(args)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
}

/// Waits for a child and parses the last JSON line it printed.
pub fn collect(child: Child, what: &str) -> Result<ChildReport, String> {
    let output = child
        .wait_with_output()
        .map_err(|error| format!("{what}: {error}"))?;
    parse_report(&output.stdout)
        .filter(|_| output.status.success())
        .ok_or_else(|| {
            format!(
                "{what} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stdout).trim()
            )
        })
}

pub fn parse_report(stdout: &[u8]) -> Option<ChildReport> {
    String::from_utf8_lossy(stdout)
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
}

/// Cores, memory and CPU model, for the record.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    format!(
        "{cores} cores ({model}), {:.1} GiB memory, {} {}",
        memory_kb as f64 / 1024.0 / 1024.0,
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

pub fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}
