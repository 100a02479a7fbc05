//! The usage-file endpoints of `/public/v1` (`/usage/files`): request parsing as strict
//! as Connect's — JSON bodies must say `application/json`, uploads must be multipart with
//! exactly one file field named `usage_file` — in front of the state operations in `files.rs`.

use std::sync::Arc;

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Json;
use bytes::Bytes;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::listing::{self, detail, list};
use super::state::SimState;

/// Spreadsheets can be large; Connect documents no limit.
const UPLOAD_LIMIT: usize = 512 * 1024 * 1024;

type Handler = MethodRouter<Arc<SimState>>;

pub(crate) fn routes() -> Vec<(&'static str, Handler)> {
    vec![
        ("/usage/files", get(list_files).post(create_file)),
        ("/usage/files/{id}", get(file).put(update_file)),
        (
            "/usage/files/{id}/upload",
            post(upload).layer(DefaultBodyLimit::max(UPLOAD_LIMIT)),
        ),
        (
            "/usage/files/{id}/submit",
            action(|state, id, _| state.submit(id)),
        ),
        (
            "/usage/files/{id}/delete",
            action(|state, id, _| state.delete(id)),
        ),
        (
            "/usage/files/{id}/accept",
            action(|state, id, body| {
                let note = optional_text(&body, "acceptance_note")?;
                state.accept(id, note.as_deref())
            }),
        ),
        (
            "/usage/files/{id}/reject",
            action(|state, id, body| {
                let note = optional_text(&body, "rejection_note")?;
                state.reject(id, note.as_deref().unwrap_or(""))
            }),
        ),
        (
            "/usage/files/{id}/close",
            action(|state, id, _| state.close(id)),
        ),
        ("/usage/records", get(list_records)),
        ("/usage/records/{id}", get(record)),
    ]
}

async fn list_files(
    State(state): State<Arc<SimState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let query = listing::parse(q)?;
    Ok(state.with_file_list(&query, |files| listing::page(&state, &query, files)))
}

async fn file(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.file_json(&id).map(Json)
}

async fn create_file(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = json_body(&headers, &body, true)?;
    let created = state.create_file(&body)?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn update_file(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    state.require_file(&id)?;
    let body = json_body(&headers, &body, true)?;
    state.update_file(&id, &body).map(Json)
}

async fn upload(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<Value>, ApiError> {
    state.require_file(&id)?;
    let bytes = usage_file_part(multipart).await?;
    state.upload(&id, bytes).map(Json)
}

/// The one file part named `usage_file`; anything else in the form is refused.
async fn usage_file_part(
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Bytes, ApiError> {
    let refuse = |message: String| ApiError::validation(vec![message]);
    let mut multipart = multipart
        .map_err(|_| refuse("usage_file: the request must be multipart/form-data.".into()))?;
    let mut found = None;
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|error| refuse(format!("usage_file: malformed multipart body ({error}).")))?;
        let Some(field) = field else { break };
        let name = field.name().unwrap_or_default().to_string();
        if name != "usage_file" {
            return Err(refuse(format!(
                "{name}: unexpected field; send the workbook as usage_file."
            )));
        }
        if field.file_name().is_none() || found.is_some() {
            return Err(refuse("usage_file: expected exactly one file.".into()));
        }
        let bytes = field
            .bytes()
            .await
            .map_err(|error| refuse(format!("usage_file: the upload was cut short ({error}).")))?;
        found = Some(bytes);
    }
    match found {
        None => Err(refuse("usage_file: No file was submitted.".into())),
        Some(bytes) if bytes.is_empty() => {
            Err(refuse("usage_file: The submitted file is empty.".into()))
        }
        Some(bytes) => Ok(bytes),
    }
}

/// A file action (`POST …/{id}/{action}`): the file must exist (404) and the body, if any,
/// must be a JSON object declared as such; then `act` runs with that body.
fn action(act: fn(&SimState, &str, Value) -> Result<Value, ApiError>) -> Handler {
    post(
        move |State(state): State<Arc<SimState>>,
              Path(id): Path<String>,
              headers: HeaderMap,
              body: Bytes| async move {
            state.require_file(&id)?;
            let body = json_body(&headers, &body, false)?;
            act(&state, &id, body).map(Json)
        },
    )
}

async fn list_records(
    State(state): State<Arc<SimState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let records = state.record_list_json();
    list(&state, q, |_| &records)
}

async fn record(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let records = state.record_list_json();
    let found = records.iter().find(|record| record["id"] == id.as_str());
    detail(found, "Usage record", &id, q)
}

/// The JSON object of a request body. An empty body is `{}` unless `required`; a non-empty one
/// must be declared `application/json` and be an object.
fn json_body(headers: &HeaderMap, body: &Bytes, required: bool) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return match required {
            true => Err(ApiError::validation(vec![
                "non_field_errors: Expected a JSON object body.".into(),
            ])),
            false => Ok(Value::Object(Map::new())),
        };
    }
    let declared_json = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().starts_with("application/json"));
    if !declared_json {
        return Err(ApiError::unsupported_media_type("application/json"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(object @ Value::Object(_)) => Ok(object),
        Ok(_) => Err(ApiError::validation(vec![
            "non_field_errors: Invalid data. Expected a dictionary.".into(),
        ])),
        Err(error) => Err(ApiError::validation(vec![format!(
            "non_field_errors: JSON parse error - {error}"
        )])),
    }
}

fn optional_text(body: &Value, field: &str) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ApiError::validation(vec![format!(
            "{field}: Not a valid string."
        )])),
    }
}
