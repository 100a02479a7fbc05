//! Real database servers, started by the test (or the bench) itself: Debian's PostgreSQL and
//! MariaDB, each in its own temporary directory, listening on a free loopback port (and a unix
//! socket inside that directory), with a user `payg` whose password is [`PASSWORD`] and a
//! database `payg`. No system service and no fixed port, so tests run side by side.
//!
//! One set-up for both users: the tests include this file as `#[path = "support/servers.rs"]`,
//! the bench (`src/bin/bench/main.rs`) by its path too. It is development code, so it lives
//! outside the library: the product binary never holds it.
//!
//! A missing binary is an error naming the package to install: the tests' [`postgres`] and
//! [`mariadb`] fail with it (never a skip: a suite that silently skipped its database tests
//! would pass without having tested anything), the bench prints it in the row. Servers refuse to
//! run as root, so when run as root (CI does) the servers run as `nobody`, owning their
//! directory. A server is stopped when its handle is dropped. [`certificates`] makes a throwaway
//! CA and a server certificate for 127.0.0.1 with the `openssl` program (which Debian's
//! PostgreSQL depends on), for a server with TLS.

#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The password of the `payg` user on every test server (distinctive, so a test can look for
/// it in error texts).
pub const PASSWORD: &str = "Pw-7f3c-Secret-Sql";

/// How long a server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How the administrator's client reaches a server, for [`Server::sql`].
enum Client {
    /// `psql` over the socket as `payg` (a superuser).
    Psql(PathBuf),
    /// `mariadb` over the socket as `root`.
    MariaDb { program: PathBuf, socket: PathBuf },
}

/// A running server; stopped and its directory removed when dropped.
pub struct Server {
    pub port: u16,
    /// The directory holding the unix socket.
    pub socket_dir: PathBuf,
    child: Child,
    /// How the server is asked to stop at once (PostgreSQL cleans its shared memory on SIGQUIT).
    stop_signal: &'static str,
    client: Client,
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

    /// The server's process id (PostgreSQL's postmaster, the parent of every backend).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `sql` in database `payg` as the administrator (statements separated by `;`), with
    /// `stdin` as its input (PostgreSQL's `COPY … FROM STDIN`; MariaDB reads `LOAD DATA LOCAL
    /// INFILE` itself); returns the output, unaligned and without headers.
    pub fn sql(&self, sql: &str, stdin: Option<&Path>) -> Result<String, String> {
        let mut command = match &self.client {
            Client::Psql(bin) => {
                let mut psql = Command::new(bin.join("psql"));
                psql.env("PGPASSWORD", PASSWORD)
                    .arg("-h")
                    .arg(&self.socket_dir)
                    .args(["-p", &self.port.to_string(), "-U", "payg", "-d", "payg"])
                    .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]);
                psql
            }
            Client::MariaDb { program, socket } => {
                let mut mariadb = Command::new(program);
                mariadb
                    .arg("--no-defaults")
                    .arg(format!("--socket={}", socket.display()))
                    .args([
                        "-u",
                        "root",
                        "--local-infile=1",
                        "-N",
                        "-B",
                        "payg",
                        "-e",
                        sql,
                    ]);
                mariadb
            }
        };
        if let Some(path) = stdin {
            let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            command.stdin(file);
        }
        output(command, "the SQL client")
    }
}

/// The user the servers run as: ourselves, or `nobody` when we are root.
fn server_user() -> Result<Option<(u32, u32)>, String> {
    let id = |args: &[&str]| -> Result<u32, String> {
        let output = Command::new("id")
            .args(args)
            .output()
            .map_err(|e| format!("id: {e}"))?;
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| format!("id {args:?} printed no number"))
    };
    Ok(match id(&["-u"])? {
        0 => Some((id(&["-u", "nobody"])?, id(&["-g", "nobody"])?)),
        _ => None,
    })
}

/// A command run as the server user.
fn as_server_user(program: &Path, user: Option<(u32, u32)>) -> Command {
    let mut command = Command::new(program);
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}

fn chown(path: &Path, user: Option<(u32, u32)>) -> Result<(), String> {
    match user {
        Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", path.display())),
        None => Ok(()),
    }
}

/// A private directory the server user owns.
fn server_dir(user: Option<(u32, u32)>) -> Result<tempfile::TempDir, String> {
    let dir = tempfile::Builder::new()
        .prefix("payg-db")
        .tempdir()
        .map_err(|e| format!("a temporary directory: {e}"))?;
    chown(dir.path(), user)?;
    Ok(dir)
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// Runs `command` to its end; its output, or an error with everything it printed.
fn output(mut command: Command, what: &str) -> Result<String, String> {
    let output = command
        .output()
        .map_err(|e| format!("{what} could not be started: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn run(mut command: Command, what: &str) -> Result<(), String> {
    command.stdin(Stdio::null());
    output(command, what).map(drop)
}

/// Starts `command` with its output in `log`, waits until the log says `ready`. `Ok(None)` when
/// it exited because its port was taken (the caller tries another).
fn start(
    mut command: Command,
    log: &Path,
    ready: &str,
    what: &str,
) -> Result<Option<Child>, String> {
    let file = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().map_err(|e| e.to_string())?)
        .stderr(file)
        .spawn()
        .map_err(|e| format!("{what} could not be started: {e}"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(ready) {
            return Ok(Some(child));
        }
        if let Ok(Some(status)) = child.try_wait() {
            if text.contains("already in use") || text.contains("Do you already have another") {
                return Ok(None);
            }
            return Err(format!(
                "{what} exited ({status}) before it was ready:\n{text}"
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{what} was not ready within {START_TIMEOUT:?}:\n{text}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A throwaway CA and a certificate it signed for `127.0.0.1` and `localhost`, as PEM files.
pub struct Certificates {
    /// The CA's certificate: what a client trusts (`sslrootcert=`, `ssl-ca=`).
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes a new CA named `name` and a server certificate signed by it in `dir` (P-256 keys,
/// valid for a day; a certificate carries the extensions rustls requires of it).
pub fn certificates(dir: &Path, name: &str) -> Result<Certificates, String> {
    let openssl = which("openssl", "openssl")?;
    let config = dir.join("openssl.cnf");
    std::fs::write(
        &config,
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n\
         [ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\n\
         [server]\nbasicConstraints = critical,CA:FALSE\n\
         keyUsage = critical,digitalSignature,keyEncipherment\nextendedKeyUsage = serverAuth\n\
         subjectAltName = IP:127.0.0.1,DNS:localhost\nsubjectKeyIdentifier = hash\n\
         authorityKeyIdentifier = keyid\n",
    )
    .map_err(|e| format!("{}: {e}", config.display()))?;
    let files = Certificates {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    let (ca_key, request) = (dir.join("ca.key"), dir.join("server.csr"));
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = Command::new(&openssl);
    ca.args(["req", "-x509", "-config"])
        .arg(&config)
        .args([
            "-extensions",
            "ca",
            "-days",
            "1",
            "-subj",
            &format!("/CN={name}"),
        ])
        .args(new_key)
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&files.ca);
    run(ca, "openssl (the CA)")?;
    let mut csr = Command::new(&openssl);
    csr.args(["req", "-new", "-config"])
        .arg(&config)
        .args(["-subj", "/CN=127.0.0.1"])
        .args(new_key)
        .arg("-keyout")
        .arg(&files.key)
        .arg("-out")
        .arg(&request);
    run(csr, "openssl (the server's request)")?;
    let mut sign = Command::new(&openssl);
    sign.args(["x509", "-req", "-days", "1", "-set_serial", "2", "-in"])
        .arg(&request)
        .arg("-CA")
        .arg(&files.ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-extfile")
        .arg(&config)
        .args(["-extensions", "server", "-out"])
        .arg(&files.cert);
    run(sign, "openssl (signing the server's certificate)")?;
    Ok(files)
}

/// The server's own copies of its certificate and key, in its directory, owned by the server
/// user with the key private (PostgreSQL refuses a key others can read).
fn install_certificates(
    certificates: &Certificates,
    dir: &Path,
    user: Option<(u32, u32)>,
) -> Result<(PathBuf, PathBuf), String> {
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    for (from, to, mode) in [
        (&certificates.cert, &cert, 0o644),
        (&certificates.key, &key, 0o600),
    ] {
        std::fs::copy(from, to).map_err(|e| format!("{}: {e}", from.display()))?;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{}: {e}", to.display()))?;
        chown(to, user)?;
    }
    Ok((cert, key))
}

/// The newest installed PostgreSQL's programs directory.
fn postgres_bin() -> Result<PathBuf, String> {
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
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): \
         apt-get install postgresql"
            .to_string()
    })
}

/// A throwaway PostgreSQL (see [`start_postgres`]); panics when it cannot start.
pub fn postgres() -> Server {
    start_postgres(None).unwrap_or_else(|e| panic!("{e}"))
}

/// A throwaway PostgreSQL with TLS by `certificates` (connections without TLS are still
/// accepted: the client chooses); panics when it cannot start.
pub fn postgres_tls(certificates: &Certificates) -> Server {
    start_postgres(Some(certificates)).unwrap_or_else(|e| panic!("{e}"))
}

/// A throwaway PostgreSQL: superuser `payg` with [`PASSWORD`] (SCRAM, on TCP and the socket),
/// database `payg`; with TLS when given certificates.
pub fn start_postgres(tls: Option<&Certificates>) -> Result<Server, String> {
    let bin = postgres_bin()?;
    let user = server_user()?;
    let dir = server_dir(user)?;
    let data = dir.path().join("data");
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, PASSWORD).map_err(|e| format!("password file: {e}"))?;
    chown(&password_file, user)?;
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
    run(initdb, "initdb")?;
    let tls_settings = match tls {
        Some(certificates) => {
            let (cert, key) = install_certificates(certificates, dir.path(), user)?;
            vec![
                "ssl=on".to_string(),
                format!("ssl_cert_file={}", cert.display()),
                format!("ssl_key_file={}", key.display()),
            ]
        }
        None => Vec::new(),
    };
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
        for setting in &tls_settings {
            server.args(["-c", setting]);
        }
        if let Some(child) = start(
            server,
            &log,
            "database system is ready to accept connections",
            "postgres",
        )? {
            let server = Server {
                port,
                socket_dir: dir.path().to_path_buf(),
                child,
                stop_signal: "-QUIT",
                client: Client::Psql(bin.clone()),
                log,
                dir,
            };
            let mut psql = Command::new(bin.join("psql"));
            psql.env("PGPASSWORD", PASSWORD)
                .arg("-h")
                .arg(&server.socket_dir)
                .args(["-p", &port.to_string(), "-U", "payg", "-d", "postgres"])
                .args(["-X", "-v", "ON_ERROR_STOP=1", "-c", "CREATE DATABASE payg"]);
            run(psql, "psql (creating the database)")?;
            return Ok(server);
        }
    }
    Err("postgres found no free port in five tries".into())
}

fn which(name: &str, package: &str) -> Result<PathBuf, String> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists())
        .ok_or_else(|| format!("{name} is not installed: apt-get install {package}"))
}

/// A throwaway MariaDB (see [`start_mariadb`]); panics when it cannot start.
pub fn mariadb() -> Server {
    start_mariadb(None).unwrap_or_else(|e| panic!("{e}"))
}

/// A throwaway MariaDB with TLS by `certificates`; panics when it cannot start.
pub fn mariadb_tls(certificates: &Certificates) -> Server {
    start_mariadb(Some(certificates)).unwrap_or_else(|e| panic!("{e}"))
}

/// A throwaway MariaDB: user `payg`@`%` with [`PASSWORD`], owning database `payg`; with TLS
/// when given certificates.
pub fn start_mariadb(tls: Option<&Certificates>) -> Result<Server, String> {
    let install = which("mariadb-install-db", "mariadb-server")?;
    let daemon = which("mariadbd", "mariadb-server")?;
    let client = which("mariadb", "mariadb-client")?;
    let user = server_user()?;
    let dir = server_dir(user)?;
    let data = dir.path().join("data");
    // Its own directory for temporary tables: in a shared /tmp, servers started side by side
    // (or by others on the machine) have been seen to trip over each other's files.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    chown(&tmp, user)?;
    let mut initialise = as_server_user(&install, user);
    initialise
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .arg("--skip-name-resolve");
    run(initialise, "mariadb-install-db")?;
    let tls_settings = match tls {
        Some(certificates) => {
            let (cert, key) = install_certificates(certificates, dir.path(), user)?;
            vec![
                format!("--ssl-cert={}", cert.display()),
                format!("--ssl-key={}", key.display()),
            ]
        }
        None => Vec::new(),
    };
    let log = dir.path().join("server.log");
    let socket = dir.path().join("mysqld.sock");
    for _ in 0..5 {
        let port = free_port();
        let mut server = as_server_user(&daemon, user);
        server
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .args([&format!("--port={port}"), "--bind-address=127.0.0.1"])
            .args(["--skip-name-resolve", "--innodb-buffer-pool-size=16M"])
            .args(["--innodb-flush-log-at-trx-commit=0", "--skip-log-bin"])
            .args(&tls_settings);
        if let Some(child) = start(server, &log, "ready for connections", "mariadbd")? {
            let server = Server {
                port,
                socket_dir: dir.path().to_path_buf(),
                child,
                stop_signal: "-TERM",
                client: Client::MariaDb {
                    program: client.clone(),
                    socket: socket.clone(),
                },
                log,
                dir,
            };
            let mut setup = Command::new(&client);
            setup
                .arg("--no-defaults")
                .arg(format!("--socket={}", socket.display()))
                .args(["-u", "root", "-e"])
                .arg(format!(
                    "DROP USER IF EXISTS ''@'localhost'; CREATE DATABASE payg; CREATE USER 'payg'@'%' IDENTIFIED BY '{PASSWORD}'; \
                     GRANT ALL ON payg.* TO 'payg'@'%';"
                ));
            run(setup, "mariadb (creating the test user)")?;
            return Ok(server);
        }
    }
    Err("mariadbd found no free port in five tries".into())
}
