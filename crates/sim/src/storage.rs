//! Connect's file storage: the uploaded workbook (`usage_file_uri`) and the platform's annotated
//! copy (`processed_file_uri`) of a usage file, served at short-lived signed links, as Connect
//! serves them from its blob storage.
//!
//! A link is what the file's detail answer carries: `…/storage/usage-files/{id}/{upload}/{name}`
//! with `se` (when it expires, Unix seconds) and `sig` (a keyed hash of the path and `se`) in
//! its query. The link is the credential: a request with a wrong signature or past its expiry is
//! refused (403), and so is one that also carries an `Authorization` header, since the API key
//! must never travel to the storage host. Each upload has its own link, so a link read before
//! a re-upload does not serve the newer workbook. Only the file's detail hands out links (list
//! answers carry none), and every download is counted under [`STORAGE_ROUTE`].

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use serde::Deserialize;

use super::error::ApiError;
use super::state::SimState;

/// The route downloads are counted under in [`crate::RequestCounts`] (method `GET`).
pub const STORAGE_ROUTE: &str = "/storage/usage-files/{id}/{upload}/{name}";

const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// Which of a file's workbooks a link names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// What the vendor uploaded.
    Upload,
    /// The platform's annotated copy (the simulator annotates nothing: the upload itself).
    Processed,
}

impl Stored {
    fn name(self) -> &'static str {
        match self {
            Stored::Upload => "usage_file.xlsx",
            Stored::Processed => "processed.xlsx",
        }
    }

    fn from_name(name: &str) -> Option<Stored> {
        [Stored::Upload, Stored::Processed]
            .into_iter()
            .find(|stored| stored.name() == name)
    }
}

/// Signs and checks links. The key is drawn at random for each simulator.
pub(crate) struct Storage {
    origin: String,
    key: std::collections::hash_map::RandomState,
    ttl: Duration,
}

impl Storage {
    pub fn new(origin: String, ttl: Duration) -> Storage {
        Storage {
            origin,
            key: std::collections::hash_map::RandomState::new(),
            ttl,
        }
    }

    fn path(file_id: &str, upload: u64, stored: Stored) -> String {
        format!("/storage/usage-files/{file_id}/{upload}/{}", stored.name())
    }

    fn signature(&self, path: &str, expires: i64) -> String {
        format!("{:016x}", self.key.hash_one((path, expires)))
    }

    /// A link to `stored` of upload number `upload` of `file_id`, valid for the configured time.
    pub fn link(&self, file_id: &str, upload: u64, stored: Stored) -> String {
        let path = Storage::path(file_id, upload, stored);
        let expires = Utc::now().timestamp() + self.ttl.as_secs().max(1) as i64;
        let signature = self.signature(&path, expires);
        format!("{}{path}?se={expires}&sig={signature}", self.origin)
    }

    /// Whether `path` with this `se` and `sig` is a link this storage signed and still honours.
    fn check(&self, path: &str, expires: i64, signature: &str) -> Result<(), ApiError> {
        if self.signature(path, expires) != signature {
            return Err(refused("the signature does not match the link"));
        }
        if Utc::now().timestamp() > expires {
            return Err(refused(
                "the link has expired; read the file again for a new one",
            ));
        }
        Ok(())
    }
}

fn refused(reason: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "AuthenticationFailed",
        vec![reason.to_string()],
    )
}

pub(crate) fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route(STORAGE_ROUTE, get(download))
        .with_state(state)
}

#[derive(Deserialize)]
struct Signed {
    se: Option<String>,
    sig: Option<String>,
}

async fn download(
    State(state): State<Arc<SimState>>,
    Path((file_id, upload, name)): Path<(String, u64, String)>,
    Query(signed): Query<Signed>,
    request: Request,
) -> Result<Response, ApiError> {
    state.count_request("GET", STORAGE_ROUTE);
    if request.headers().contains_key(AUTHORIZATION) {
        return Err(refused(
            "a signed link takes no Authorization header; the link itself is the credential",
        ));
    }
    let stored =
        Stored::from_name(&name).ok_or_else(|| ApiError::not_found("Stored file", &name))?;
    let expires = signed.se.as_deref().and_then(|se| se.parse::<i64>().ok());
    let (Some(expires), Some(signature)) = (expires, signed.sig.as_deref()) else {
        return Err(refused("the link is not signed (se and sig are required)"));
    };
    state
        .storage()
        .check(&Storage::path(&file_id, upload, stored), expires, signature)?;
    let (bytes, processed) = state
        .stored_upload(&file_id, upload)
        .ok_or_else(|| ApiError::not_found("Stored workbook of usage file", &file_id))?;
    if stored == Stored::Processed && !processed {
        return Err(ApiError::not_found(
            "Processed workbook of usage file",
            &file_id,
        ));
    }
    Ok(([(CONTENT_TYPE, XLSX)], bytes).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_checked_by_signature_and_expiry() {
        let storage = Storage::new("http://127.0.0.1:1".into(), Duration::from_secs(60));
        let link = storage.link("UF-1", 2, Stored::Upload);
        let url = url::Url::parse(&link).unwrap();
        assert_eq!(url.path(), "/storage/usage-files/UF-1/2/usage_file.xlsx");
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        let expires: i64 = query["se"].parse().unwrap();
        let signature = &query["sig"];
        assert!(storage.check(url.path(), expires, signature).is_ok());
        let tampered = "/storage/usage-files/UF-2/2/usage_file.xlsx";
        assert!(storage.check(tampered, expires, signature).is_err());
        assert!(storage.check(url.path(), expires + 1, signature).is_err());
        let past = Utc::now().timestamp() - 1;
        let stale = storage.signature(url.path(), past);
        let refused = storage.check(url.path(), past, &stale).unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(refused.errors[0].contains("expired"));
        let other = Storage::new("http://127.0.0.1:1".into(), Duration::from_secs(60));
        assert!(
            other.check(url.path(), expires, signature).is_err(),
            "each simulator signs with its own key"
        );
    }
}
