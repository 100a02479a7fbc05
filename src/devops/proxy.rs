//! Tunnelling the websocket through an HTTP proxy: `HTTPS_PROXY` for
//! `wss://`, `HTTP_PROXY` for `ws://` (lower-case spellings too), unless the server's host is
//! listed in `NO_PROXY`. The tunnel is an HTTP `CONNECT` to the server's host and port; TLS
//! then runs over it with the server's name, exactly as without a proxy.
//!
//! Credentials in the proxy URL (`http://user:pass@proxy:3128`) are sent as Basic
//! `Proxy-Authorization`. SOCKS proxies are not supported and refused at start-up, so a
//! misconfiguration is reported instead of silently bypassing the proxy.

use percent_encoding::percent_decode_str;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Secret;

/// Longest proxy answer header accepted.
const MAX_ANSWER: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("setting {name} is invalid: {reason}")]
pub struct ProxyError {
    name: &'static str,
    reason: String,
}

pub(crate) struct Proxy {
    /// `host:port` of the proxy.
    address: String,
    /// `Basic …` for `Proxy-Authorization`.
    authorization: Option<Secret>,
}

/// The proxy to use for a connection to `target_host`, from the given variables.
pub(crate) fn select(
    lookup: &dyn Fn(&str) -> Option<String>,
    secure: bool,
    target_host: &str,
) -> Result<Option<Proxy>, ProxyError> {
    let names: [&'static str; 2] = if secure {
        ["HTTPS_PROXY", "https_proxy"]
    } else {
        ["HTTP_PROXY", "http_proxy"]
    };
    let Some((name, value)) = names
        .iter()
        .find_map(|name| Some((*name, lookup(name).filter(|v| !v.trim().is_empty())?)))
    else {
        return Ok(None);
    };
    let no_proxy = lookup("NO_PROXY").or_else(|| lookup("no_proxy"));
    if bypassed(target_host, no_proxy.as_deref().unwrap_or("")) {
        return Ok(None);
    }
    parse(name, value.trim()).map(Some)
}

fn parse(name: &'static str, value: &str) -> Result<Proxy, ProxyError> {
    let invalid = |reason: String| ProxyError { name, reason };
    // A bare `host:port` means an HTTP proxy, as curl and reqwest read it.
    let with_scheme = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    let url =
        url::Url::parse(&with_scheme).map_err(|e| invalid(format!("not a proxy URL: {e}")))?;
    if url.scheme() != "http" {
        return Err(invalid(format!(
            "{}:// proxies are not supported for the websocket (use an http:// proxy)",
            url.scheme()
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| invalid("the proxy URL names no host".into()))?;
    let port = url.port().unwrap_or(80);
    let authorization = (!url.username().is_empty()).then(|| {
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let credentials = format!(
            "{}:{}",
            decode(url.username()),
            decode(url.password().unwrap_or(""))
        );
        Secret::new(format!("Basic {}", base64(credentials.as_bytes())))
    });
    Ok(Proxy {
        address: format!("{host}:{port}"),
        authorization,
    })
}

/// `NO_PROXY`: comma-separated host names or domain suffixes, or `*` for everything.
fn bypassed(host: &str, no_proxy: &str) -> bool {
    let host = host.to_ascii_lowercase();
    no_proxy
        .split(',')
        .map(|entry| entry.trim().to_ascii_lowercase())
        .filter(|entry| !entry.is_empty())
        .any(|entry| {
            let domain = entry.trim_start_matches('.');
            entry == "*" || host == domain || host.ends_with(&format!(".{domain}"))
        })
}

/// Opens a TCP connection to `target` (`host:port`) through the proxy.
pub(crate) async fn tunnel(proxy: &Proxy, target: &str) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(&proxy.address)
        .await
        .map_err(|e| format!("cannot reach the proxy {}: {e}", proxy.address))?;
    // Small frames (pings, results) must not wait for Nagle, as on a direct connection.
    let _ = stream.set_nodelay(true);
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(authorization) = &proxy.authorization {
        request.push_str(&format!(
            "Proxy-Authorization: {}\r\n",
            authorization.expose()
        ));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("proxy {}: {e}", proxy.address))?;
    // The server says nothing before we do, so everything read here is the proxy's answer.
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() >= MAX_ANSWER {
            return Err(format!("proxy {} sent an oversized answer", proxy.address));
        }
        let byte = stream
            .read_u8()
            .await
            .map_err(|e| format!("proxy {} closed the tunnel: {e}", proxy.address))?;
        answer.push(byte);
    }
    let answer = String::from_utf8_lossy(&answer);
    let status_line = answer.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(stream),
        _ => Err(format!(
            "proxy {} refused the tunnel: {status_line}",
            proxy.address
        )),
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn the_variable_follows_the_scheme() {
        let vars = lookup(&[
            ("HTTPS_PROXY", "http://secure-proxy:3128"),
            ("http_proxy", "plain-proxy:8080"),
        ]);
        let secure = select(&vars, true, "api.example.com").unwrap().unwrap();
        assert_eq!(secure.address, "secure-proxy:3128");
        let plain = select(&vars, false, "api.example.com").unwrap().unwrap();
        assert_eq!(plain.address, "plain-proxy:8080");
        assert!(select(&lookup(&[]), true, "api.example.com")
            .unwrap()
            .is_none());
    }

    #[test]
    fn no_proxy_bypasses_hosts_and_domains() {
        for no_proxy in ["api.example.com", ".example.com", "other, example.com", "*"] {
            let vars = lookup(&[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", no_proxy)]);
            assert!(
                select(&vars, true, "api.example.com").unwrap().is_none(),
                "{no_proxy}"
            );
        }
        let vars = lookup(&[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "ample.com")]);
        assert!(select(&vars, true, "api.example.com").unwrap().is_some());
    }

    #[test]
    fn credentials_become_basic_authorization() {
        let vars = lookup(&[("HTTPS_PROXY", "http://user%40corp:p%3Ass@proxy:3128")]);
        let proxy = select(&vars, true, "h").unwrap().unwrap();
        assert_eq!(
            proxy.authorization.unwrap().expose(),
            format!("Basic {}", base64(b"user@corp:p:ss"))
        );
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn socks_and_garbage_are_refused_by_name() {
        for value in ["socks5://proxy:1080", "http://"] {
            let vars = lookup(&[("HTTPS_PROXY", value)]);
            let error = select(&vars, true, "h").err().unwrap().to_string();
            assert!(error.contains("HTTPS_PROXY"), "{error}");
        }
    }
}
