//! Real database servers for the tests, started by the test itself: Debian's PostgreSQL and
//! MariaDB, each in its own temporary directory, listening on a free loopback port (and a unix
//! socket inside that directory), with a user `payg` whose password is [`PASSWORD`] and a
//! database `payg`. No system service and no fixed port, so tests run side by side.
//!
//! A missing binary fails the test with the package to install (never a skip): a suite that
//! silently skipped its database tests would pass without having tested anything. Servers
//! refuse to run as root, so when the tests run as root (CI does) the servers run as `nobody`,
//! owning their directory. A server is stopped when its handle is dropped.

#![allow(dead_code)]

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The password of the `payg` user on every test server (distinctive, so a test can look for
/// it in error texts).
pub const PASSWORD: &str = "Pw-7f3c-Secret-Sql";

/// How long a server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A running server; stopped and its directory removed when dropped.
pub struct Server {
    pub port: u16,
    /// The directory holding the unix socket.
    pub socket_dir: PathBuf,
    child: Child,
    /// How the server is asked to stop at once (PostgreSQL cleans its shared memory on SIGQUIT).
    stop_signal: &'static str,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args([self.stop_signal, &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The server's log so far, for a failing assertion.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The user the servers run as: ourselves, or `nobody` when we are root.
fn server_user() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> u32 {
        let output = Command::new("id").args(args).output().expect("id runs");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("id {args:?} printed a number"))
    };
    (id(&["-u"]) == 0).then(|| (id(&["-u", "nobody"]), id(&["-g", "nobody"])))
}

/// A command run as the server user.
fn as_server_user(program: &Path, user: Option<(u32, u32)>) -> Command {
    let mut command = Command::new(program);
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}

/// A private directory the server user owns.
fn server_dir(user: Option<(u32, u32)>) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("payg-db")
        .tempdir()
        .expect("a temporary directory");
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
    }
    dir
}

fn chown(path: &Path, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// Runs `command` to its end; panics with its output when it fails.
fn run(mut command: Command, what: &str) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what} could not be started: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts `command` with its output in `log`, waits until the log says `ready`. `None` when it
/// exited because its port was taken (the caller tries another); panics on any other failure.
fn start(mut command: Command, log: &Path, ready: &str, what: &str) -> Option<Child> {
    let file = File::create(log).expect("a log file");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("{what} could not be started: {e}"));
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(ready) {
            return Some(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            if text.contains("already in use") || text.contains("Do you already have another") {
                return None;
            }
            panic!("{what} exited ({status}) before it was ready:\n{text}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} was not ready within {START_TIMEOUT:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The newest installed PostgreSQL's programs directory.
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): \
             apt-get install postgresql"
        )
    })
}

/// A throwaway PostgreSQL: superuser `payg` with [`PASSWORD`] (SCRAM, on TCP and the socket),
/// database `payg`.
pub fn postgres() -> Server {
    let bin = postgres_bin();
    let user = server_user();
    let dir = server_dir(user);
    let data = dir.path().join("data");
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, PASSWORD).expect("password file");
    chown(&password_file, user);
    let mut initdb = as_server_user(&bin.join("initdb"), user);
    initdb
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "payg",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .args(["--no-sync", "--no-instructions"])
        .arg(format!("--pwfile={}", password_file.display()));
    run(initdb, "initdb");
    let log = dir.path().join("server.log");
    for _ in 0..5 {
        let port = free_port();
        let mut server = as_server_user(&bin.join("postgres"), user);
        server
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"]);
        if let Some(child) = start(
            server,
            &log,
            "database system is ready to accept connections",
            "postgres",
        ) {
            run_sql_postgres(&bin, dir.path(), port, "CREATE DATABASE payg");
            return Server {
                port,
                socket_dir: dir.path().to_path_buf(),
                child,
                stop_signal: "-QUIT",
                log,
                dir,
            };
        }
    }
    panic!("postgres found no free port in five tries");
}

/// Runs one statement as `payg` with psql over the socket.
fn run_sql_postgres(bin: &Path, socket_dir: &Path, port: u16, sql: &str) {
    let mut psql = Command::new(bin.join("psql"));
    psql.env("PGPASSWORD", PASSWORD)
        .arg("-h")
        .arg(socket_dir)
        .args(["-p", &port.to_string(), "-U", "payg", "-d", "postgres"])
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql]);
    run(psql, "psql");
}

fn which(name: &str, package: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("{name} is not installed: apt-get install {package}"))
}

/// A throwaway MariaDB: user `payg`@`%` with [`PASSWORD`], owning database `payg`.
pub fn mariadb() -> Server {
    let install = which("mariadb-install-db", "mariadb-server");
    let daemon = which("mariadbd", "mariadb-server");
    let client = which("mariadb", "mariadb-client");
    let user = server_user();
    let dir = server_dir(user);
    let data = dir.path().join("data");
    // Temporary tables in a directory of the server's own, not the shared /tmp: CI once saw
    // the bootstrap abort because a temporary table it made in /tmp was gone when it dropped it.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).expect("the server's temporary directory");
    chown(&tmp, user);
    let mut initialise = as_server_user(&install, user);
    initialise
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .arg("--skip-name-resolve");
    run(initialise, "mariadb-install-db");
    let log = dir.path().join("server.log");
    let socket = dir.path().join("mysqld.sock");
    for _ in 0..5 {
        let port = free_port();
        let mut server = as_server_user(&daemon, user);
        server
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .args([&format!("--port={port}"), "--bind-address=127.0.0.1"])
            .args(["--skip-name-resolve", "--innodb-buffer-pool-size=16M"])
            .args(["--innodb-flush-log-at-trx-commit=0", "--skip-log-bin"]);
        if let Some(child) = start(server, &log, "ready for connections", "mariadbd") {
            let mut setup = Command::new(&client);
            setup
                .arg("--no-defaults")
                .arg(format!("--socket={}", socket.display()))
                .args(["-u", "root", "-e"])
                .arg(format!(
                    "DROP USER IF EXISTS ''@'localhost'; CREATE DATABASE payg; CREATE USER 'payg'@'%' IDENTIFIED BY '{PASSWORD}'; \
                     GRANT ALL ON payg.* TO 'payg'@'%';"
                ));
            run(setup, "mariadb (creating the test user)");
            return Server {
                port,
                socket_dir: dir.path().to_path_buf(),
                child,
                stop_signal: "-TERM",
                log,
                dir,
            };
        }
    }
    panic!("mariadbd found no free port in five tries");
}
