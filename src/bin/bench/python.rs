//! The Python baseline's interpreter: a venv at `benches/.venv` with openpyxl from PyPI,
//! created on first use so the bench runs from a fresh clone.

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn benches_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches")
}

pub fn script() -> PathBuf {
    benches_dir().join("openpyxl_write.py")
}

/// The venv's python with openpyxl importable, and openpyxl's version.
pub fn ensure_openpyxl() -> Result<(PathBuf, String), String> {
    let venv = benches_dir().join(".venv");
    let python = venv.join("bin").join("python");
    if openpyxl_version(&python).is_none() {
        eprintln!("setting up {} with openpyxl from PyPI…", venv.display());
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        run(Command::new(venv.join("bin").join("pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "openpyxl",
        ]))?;
    }
    let version = openpyxl_version(&python).ok_or("openpyxl is not importable in the venv")?;
    Ok((python, version))
}

fn openpyxl_version(python: &PathBuf) -> Option<String> {
    let output = Command::new(python)
        .args(["-c", "import openpyxl; print(openpyxl.__version__)"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn run(command: &mut Command) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|error| format!("{command:?}: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed: {status}"))
    }
}
