//! What can go wrong talking to Connect, typed so callers can react (a 400 on submit is a
//! different story from a timeout), and worded so the message alone says which request failed
//! and why. No variant ever carries the API key: error bodies are scrubbed of it before they
//! are stored.

use std::fmt;

/// Longest slice of a non-JSON error body kept in an error (gateways answer with whole HTML
/// pages).
const RAW_BODY_LIMIT: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Connect answered with an error status (its `{error_code, errors}` body decoded when
    /// present, the raw text otherwise).
    #[error("{method} {path}: HTTP {status}{}", describe(.code, .errors))]
    Api {
        method: String,
        path: String,
        status: u16,
        code: Option<String>,
        errors: Vec<String>,
    },
    /// The request did not complete: connection refused, reset, timed out, … `host` is the
    /// `host:port` asked, `message` the cause an operator can act on, then the error chain.
    #[error("{method} {path}: {kind} {host}: {message}")]
    Transport {
        method: String,
        path: String,
        host: String,
        kind: TransportKind,
        message: String,
    },
    /// A 2xx answer whose body is not what the endpoint documents.
    #[error("{method} {path}: unexpected response: {message}")]
    Decode {
        method: String,
        path: String,
        message: String,
    },
    /// The client cannot be built or used as configured (the message names the setting).
    #[error("Connect client configuration: {0}")]
    Config(String),
}

/// How far a failed request got, which decides whether repeating it is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No connection was made: the server never saw the request.
    Connect,
    /// No complete answer in time: the server may or may not have acted.
    Timeout,
    /// The connection broke mid-way: the server may or may not have acted.
    Other,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "cannot connect to",
            TransportKind::Timeout => "timed out talking to",
            TransportKind::Other => "connection failed with",
        })
    }
}

impl ConnectError {
    /// The HTTP status of an [`ConnectError::Api`] error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ConnectError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Connect's `error_code` (`AUTH_001`, `VAL_001`, …) when the body carried one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ConnectError::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// True when the request may or may not have taken effect on the server (a 5xx gateway or
    /// server failure, a timeout or a broken connection after sending).
    pub fn is_ambiguous(&self) -> bool {
        match self {
            ConnectError::Api { status, .. } => matches!(status, 500 | 502 | 503 | 504),
            ConnectError::Transport { kind, .. } => *kind != TransportKind::Connect,
            ConnectError::Decode { .. } | ConnectError::Config(_) => false,
        }
    }

    /// Builds an [`ConnectError::Api`] from an error response body.
    pub(crate) fn api(
        method: &str,
        path: &str,
        status: u16,
        body: &[u8],
        api_key: &str,
    ) -> ConnectError {
        let (code, errors) = parse_error_body(body, api_key);
        ConnectError::Api {
            method: method.to_string(),
            path: path.to_string(),
            status,
            code,
            errors,
        }
    }

    pub(crate) fn transport(
        method: &str,
        path: &str,
        host: &str,
        error: reqwest::Error,
    ) -> ConnectError {
        let error = error.without_url();
        let kind = if error.is_connect() {
            TransportKind::Connect
        } else if error.is_timeout() {
            TransportKind::Timeout
        } else {
            TransportKind::Other
        };
        ConnectError::Transport {
            method: method.to_string(),
            path: path.to_string(),
            host: host.to_string(),
            kind,
            message: network_error_text(&error),
        }
    }

    pub(crate) fn decode(method: &str, path: &str, message: impl fmt::Display) -> ConnectError {
        ConnectError::Decode {
            method: method.to_string(),
            path: path.to_string(),
            message: message.to_string(),
        }
    }
}

fn describe(code: &Option<String>, errors: &[String]) -> String {
    let mut text = String::new();
    if let Some(code) = code {
        text.push_str(&format!(" {code}"));
    }
    if !errors.is_empty() {
        text.push_str(": ");
        text.push_str(&errors.join("; "));
    }
    text
}

/// Reads Connect's `{error_code, errors, params}` body, or keeps the (truncated) raw text.
fn parse_error_body(body: &[u8], api_key: &str) -> (Option<String>, Vec<String>) {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error_code: Option<String>,
        #[serde(default)]
        errors: Option<serde_json::Value>,
    }
    let scrub = |text: &str| {
        if api_key.is_empty() {
            text.to_string()
        } else {
            text.replace(api_key, "***")
        }
    };
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        if parsed.error_code.is_some() || parsed.errors.is_some() {
            let errors = match parsed.errors {
                Some(serde_json::Value::Array(items)) => items.iter().map(json_text).collect(),
                Some(serde_json::Value::Null) | None => Vec::new(),
                Some(other) => vec![json_text(&other)],
            };
            return (
                parsed.error_code.map(|c| scrub(&c)),
                errors.iter().map(|e| scrub(e)).collect(),
            );
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return (None, Vec::new());
    }
    (None, vec![scrub(&truncate(text, RAW_BODY_LIMIT))])
}

fn json_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn truncate(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// A network error on one line: first the cause an operator can act on when it is a known
/// one (refused, DNS, plain HTTP against TLS or the reverse, untrusted certificate), then the
/// error and its causes, each text once (an I/O error's text is often repeated by its wrapper).
pub(crate) fn network_error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let chain = error_chain(error);
    match known_cause(error, &chain) {
        Some(cause) => format!("{cause} ({chain})"),
        None => chain,
    }
}

/// The error and its causes, `: `-separated, skipping a cause whose text is already shown.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !line.is_empty() && !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

fn known_cause(error: &(dyn std::error::Error + 'static), chain: &str) -> Option<&'static str> {
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return Some("connection refused: nothing listens there; check SERVER_ADDRESS");
            }
        }
        source = cause.source();
    }
    const HINTS: [(&[&str], &str); 4] = [
        (
            &["InvalidContentType", "corrupt message"],
            "the server answered plain HTTP to TLS: check SERVER_ADDRESS, or use --unsecure \
             only for a plain-HTTP server",
        ),
        (
            &[
                "invalid HTTP version",
                "HTTP format error",
                "invalid HTTP status",
            ],
            "the server did not answer plain HTTP (a TLS server?): drop --unsecure, or check \
             SERVER_ADDRESS",
        ),
        (
            &[
                "dns error",
                "failed to lookup address",
                "Name or service not known",
            ],
            "the host name does not resolve (DNS): check SERVER_ADDRESS",
        ),
        (
            &["UnknownIssuer", "invalid peer certificate"],
            "the server's certificate is not trusted: set SSL_CERT_FILE to its CA bundle",
        ),
    ];
    HINTS
        .iter()
        .find(|(needles, _)| needles.iter().any(|needle| chain.contains(needle)))
        .map(|(_, hint)| *hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_error_bodies_are_decoded() {
        let body = br#"{"error_code": "VAL_001", "errors": ["status: only ready files can be submitted"], "params": {}}"#;
        let error = ConnectError::api("POST", "usage/files/UF-1/submit", 400, body, "secret");
        assert_eq!(error.status(), Some(400));
        assert_eq!(error.code(), Some("VAL_001"));
        assert_eq!(
            error.to_string(),
            "POST usage/files/UF-1/submit: HTTP 400 VAL_001: status: only ready files can be submitted"
        );
        assert!(!error.is_ambiguous());
    }

    #[test]
    fn non_json_bodies_fall_back_to_truncated_text() {
        let page = format!("<html>{}</html>", "x".repeat(1000));
        let error = ConnectError::api("GET", "contracts", 502, page.as_bytes(), "secret");
        let ConnectError::Api { code, errors, .. } = &error else {
            panic!("{error:?}")
        };
        assert!(code.is_none());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].chars().count() <= RAW_BODY_LIMIT + 1);
        assert!(error.is_ambiguous());

        let empty = ConnectError::api("GET", "contracts", 404, b"", "secret");
        assert_eq!(empty.to_string(), "GET contracts: HTTP 404");
    }

    #[test]
    fn the_api_key_is_scrubbed_from_echoed_bodies() {
        let key = "ApiKey SU-1:topsecret";
        let body = format!(r#"{{"error_code": "AUTH_001", "errors": ["bad key {key}"]}}"#);
        let error = ConnectError::api("GET", "accounts", 401, body.as_bytes(), key);
        assert!(!error.to_string().contains("topsecret"), "{error}");
        let raw = ConnectError::api("GET", "accounts", 401, key.as_bytes(), key);
        assert!(!format!("{raw:?}").contains("topsecret"));
    }
}
