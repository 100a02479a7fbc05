//! TLS for the websocket: rustls with the `ring` provider, the system trust store, and the
//! operator's extra CA bundle (`SSL_CERT_FILE`), so a TLS-intercepting proxy or a private CA
//! works the same for the websocket as for REST.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the CA bundle {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("no trusted root certificates found (system store empty and no SSL_CERT_FILE)")]
    NoRoots,
    #[error("TLS set-up failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the client configuration; blocking (reads the trust store), so call it off the
/// runtime.
pub(crate) fn client_config(extra_ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are skipped: one bad file must not stop the runner.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = extra_ca_file {
        let file = std::fs::File::open(path).map_err(|e| ca_error(path, e.to_string()))?;
        let certs = rustls_pemfile::certs(&mut BufReader::new(file))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ca_error(path, e.to_string()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(ca_error(path, "no PEM certificate in it".into()));
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn ca_error(path: &Path, reason: String) -> TlsError {
    TlsError::CaFile {
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = client_config(Some(&path)).unwrap_err().to_string();
        assert!(error.contains("empty.pem"), "{error}");
        let missing = client_config(Some(&dir.path().join("missing.pem")))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing.pem"), "{missing}");
    }
}
