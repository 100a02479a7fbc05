//! Files this program leaves on disk for a person: workbooks, the bad-records CSV, the
//! sandbox's exports. Parts of their names come from the platform (contract and product ids),
//! so a name is checked before it is used, and files are written so that nothing already on
//! disk is followed or exposed:
//!
//! * [`file_name`] lets through only `[A-Za-z0-9._-]`, never a leading `.` (no `..`, no path).
//! * [`replace_with`] writes a new file exclusively (`O_EXCL`, mode 0600) beside the target
//!   and renames it over the target once complete: a re-run replaces its earlier workbook
//!   atomically, and a symlink planted at the target is replaced, never written through.
//! * [`create_dir`] creates missing directories with mode 0700.

use std::fs::{File, Permissions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of every file written here: the owner only.
const FILE_MODE: u32 = 0o600;
/// Mode of every directory created here: the owner only.
const DIR_MODE: u32 = 0o700;

/// A file name that would leave its directory or hide in it.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing the file name {name:?}: only letters, digits, '.', '_' and '-' are allowed, not first '.'"
)]
pub struct UnsafeName {
    pub name: String,
}

/// A file or directory that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// `name` when it is safe as one file name inside an output directory.
pub fn file_name(name: String) -> Result<String, UnsafeName> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.starts_with('.') || !name.chars().all(allowed) {
        return Err(UnsafeName { name });
    }
    Ok(name)
}

/// Creates `path` and its missing parents, each new one with mode 0700; existing ones are kept
/// as they are.
pub fn create_dir(path: &Path) -> Result<(), WriteError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(|source| WriteError {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes `bytes` as `path` (see [`replace_with`]); returns the size written.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<u64, WriteError> {
    replace_with(
        path,
        |mut file| {
            file.write_all(bytes).map_err(|source| WriteError {
                path: path.to_path_buf(),
                source,
            })?;
            Ok(file)
        },
        |error| error,
    )
}

/// Saves what `write` writes as `path`: into a new file created exclusively (mode 0600) in the
/// same directory, renamed over `path` once complete, removed if anything fails. I/O failures
/// of the file itself become `E` through `io`. Returns the file's size.
pub fn replace_with<E>(
    path: &Path,
    write: impl FnOnce(BufWriter<File>) -> Result<BufWriter<File>, E>,
    io: impl FnOnce(WriteError) -> E,
) -> Result<u64, E> {
    let failed = |source| WriteError {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let temp = match tempfile::Builder::new()
        .prefix(".connect-payg-")
        .suffix(".partial")
        .permissions(Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)
    {
        Ok(temp) => temp,
        Err(source) => return Err(io(failed(source))),
    };
    // Dropping `temp_path` on any early return removes the partial file.
    let (file, temp_path) = temp.into_parts();
    let written = write(BufWriter::new(file))?;
    let saved = (|| {
        let file = written.into_inner().map_err(|e| e.into_error())?;
        let size = file.metadata()?.len();
        drop(file);
        temp_path.persist(path).map_err(|e| e.error)?;
        Ok(size)
    })();
    saved.map_err(|source| io(failed(source)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn only_plain_names_pass() {
        for good in ["CRD-1_PRD-2_2024-01.xlsx", "bad-records-2024-01.csv", "a.b"] {
            assert_eq!(file_name(good.to_string()).unwrap(), good);
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "../../../pwned",
            "a/b",
            "a\\b",
            "a b",
            "a\0b",
            "CRD-1_é.xlsx",
            "x:y",
        ] {
            let error = file_name(bad.to_string()).unwrap_err();
            assert_eq!(error.name, bad);
        }
    }

    #[test]
    fn files_are_private_and_directories_too() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_dir(&nested).unwrap();
        for created in [dir.path().join("a"), nested.clone()] {
            let mode = std::fs::metadata(&created).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", created.display());
        }
        let path = nested.join("w.xlsx");
        assert_eq!(write_bytes(&path, b"hello").unwrap(), 5);
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_dir(&nested).unwrap().count(),
            1,
            "no leftovers"
        );
    }

    #[test]
    fn a_rerun_replaces_its_earlier_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.xlsx");
        write_bytes(&path, b"first run, longer").unwrap();
        write_bytes(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        let path = dir.path().join("w.xlsx");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_bytes(&path, b"workbook").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(std::fs::read(&path).unwrap(), b"workbook");
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.xlsx");
        let result: Result<u64, String> = replace_with(
            &path,
            |mut file| {
                file.write_all(b"half").unwrap();
                Err("stopped".to_string())
            },
            |e| e.to_string(),
        );
        assert_eq!(result.unwrap_err(), "stopped");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
