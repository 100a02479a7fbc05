//! A real S3 server for the tests: `s3s-fs` (an S3 implementation backed by a directory),
//! started in a temporary directory on a free loopback port with one access key, and killed
//! when dropped. Objects are written through the S3 protocol, never into its directory.
//!
//! A missing binary fails the test with the command that installs it (`.ci/run` installs it);
//! a test that cannot start its server never passes by skipping.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

/// The version `.ci/run` installs (the newest that builds with the project's toolchain).
pub const INSTALL: &str = "cargo install --locked s3s-fs@0.14.1 --features binary";

pub const ACCESS_KEY: &str = "test-access-key";
pub const SECRET_KEY: &str = "test-secret-key-Zq81vX";
pub const REGION: &str = "us-east-1";

pub struct S3Server {
    child: Child,
    root: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

/// The binary: `S3S_FS` when set, else `s3s-fs` on the PATH.
fn binary() -> String {
    std::env::var("S3S_FS").unwrap_or_else(|_| "s3s-fs".to_string())
}

impl S3Server {
    /// Starts a server with the buckets given (bucket names are directories of its root).
    pub fn start(buckets: &[&str]) -> S3Server {
        let root = tempfile::tempdir().unwrap();
        for bucket in buckets {
            std::fs::create_dir(root.path().join(bucket)).unwrap();
        }
        let mut child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start the S3 server {:?} ({error}); install it with `{INSTALL}` \
                     (or set S3S_FS to its path)",
                    binary()
                )
            });
        // It logs the address it bound; the rest of its log is drained so it never blocks.
        let stdout = child.stdout.take().unwrap();
        let (found, address) = mpsc::channel();
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("server is running at http://") {
                    let endpoint = line[at + "server is running at ".len()..]
                        .trim()
                        .to_string();
                    if let Some(found) = found.take() {
                        let _ = found.send(endpoint);
                    }
                }
            }
        });
        let endpoint = match address.recv_timeout(Duration::from_secs(30)) {
            Ok(endpoint) => endpoint,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!("the S3 server did not say where it listens within 30 s (exit: {status:?})");
            }
        };
        S3Server {
            child,
            root,
            endpoint,
        }
    }

    /// The variables a source reads this server with.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_REGION", REGION.to_string()),
        ]
    }

    /// Writes an object through the S3 protocol.
    pub async fn put(&self, bucket: &str, key: &str, data: impl Into<bytes::Bytes>) {
        let store = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_region(REGION)
            .with_bucket_name(bucket)
            .build()
            .unwrap();
        let data: bytes::Bytes = data.into();
        store
            .put(&Path::parse(key).unwrap(), PutPayload::from(data))
            .await
            .unwrap_or_else(|error| panic!("putting s3://{bucket}/{key}: {error}"));
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
