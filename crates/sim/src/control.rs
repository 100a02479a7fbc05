//! The HTTP control API under `/_sim/` — the same controls `SimState` offers in-process, for
//! driving a simulator that runs in another process (`connect-payg sandbox --serve`): seeding,
//! provider actions, faults, request counts, state dump, uploaded rows and files, a webhook sink
//! and the vendor usage source. No API key; only loopback peers are served.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::faults::Faults;
use super::records::cell_json;
use super::seed::SeedSpec;
use super::state::SimState;
use super::vendor_usage::UsageFormat;
use payg_shared::period::Period;
use payg_shared::workbook::COLUMNS;

const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

type Shared = State<Arc<SimState>>;

pub(crate) fn router(state: Arc<SimState>) -> Router {
    let routes = Router::new()
        .route("/seed", post(seed))
        .route("/catalogue", get(catalogue))
        .route("/state", get(dump))
        .route("/files/{id}/accept", post(accept))
        .route("/files/{id}/reject", post(reject))
        .route("/files/{id}/close", post(close))
        .route("/files/{id}/rows", get(rows))
        .route("/files/{id}/usage_file.xlsx", get(uploaded_file))
        .route("/files/{id}/processed.xlsx", get(processed_file))
        .route("/faults", get(faults).put(set_faults).delete(clear_faults))
        .route("/requests", get(requests).delete(reset_requests))
        .route("/webhook", post(webhook))
        .route("/webhooks", get(webhooks))
        .route("/usage", get(usage).put(set_usage))
        .route("/usage-auth", put(set_usage_auth))
        .layer(middleware::from_fn(loopback_only));
    Router::new().nest("/_sim", routes).with_state(state)
}

pub(crate) async fn loopback_only(request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>();
    if peer.is_some_and(|ConnectInfo(addr)| !addr.ip().is_loopback()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "SIM_403",
            vec!["the control API serves loopback only".into()],
        )
        .into_response();
    }
    next.run(request).await
}

/// A JSON body, `{}` when empty.
fn body_or_empty<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|error| ApiError::validation(vec![format!("body: {error}")]))
}

async fn seed(State(state): Shared, body: bytes::Bytes) -> Result<Response, ApiError> {
    let spec: SeedSpec = body_or_empty(&body)?;
    Ok(Json(state.seed(&spec)).into_response())
}

async fn catalogue(State(state): Shared) -> Response {
    Json(state.catalogue()).into_response()
}

async fn dump(State(state): Shared) -> Json<Value> {
    Json(state.dump())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NoteBody {
    note: Option<String>,
}

async fn accept(
    State(state): Shared,
    Path(id): Path<String>,
    body: bytes::Bytes,
) -> Result<Json<Value>, ApiError> {
    let NoteBody { note } = body_or_empty(&body)?;
    state.accept(&id, note.as_deref()).map(Json)
}

async fn reject(
    State(state): Shared,
    Path(id): Path<String>,
    body: bytes::Bytes,
) -> Result<Json<Value>, ApiError> {
    let NoteBody { note } = body_or_empty(&body)?;
    state.reject(&id, note.as_deref().unwrap_or("")).map(Json)
}

async fn close(State(state): Shared, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    state.close(&id).map(Json)
}

/// The rows of the last processed upload, one object per row keyed by column.
async fn rows(State(state): Shared, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let rows = state
        .uploaded_rows(&id)
        .ok_or_else(|| ApiError::not_found("Processed upload of usage file", &id))?;
    let rows = rows
        .iter()
        .map(|row| {
            let object: Map<String, Value> = COLUMNS
                .iter()
                .zip(row.cells())
                .map(|(column, cell)| (column.to_string(), cell_json(cell)))
                .collect();
            Value::Object(object)
        })
        .collect();
    Ok(Json(Value::Array(rows)))
}

async fn uploaded_file(State(state): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (bytes, _) = state
        .uploaded_bytes(&id)
        .ok_or_else(|| ApiError::not_found("Upload of usage file", &id))?;
    Ok(([(CONTENT_TYPE, XLSX)], bytes).into_response())
}

/// The platform's annotated copy; the simulator annotates nothing, so it is the upload itself.
async fn processed_file(
    State(state): Shared,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match state.uploaded_bytes(&id) {
        Some((bytes, true)) => Ok(([(CONTENT_TYPE, XLSX)], bytes).into_response()),
        _ => Err(ApiError::not_found("Processed file of usage file", &id)),
    }
}

async fn faults(State(state): Shared) -> Json<Faults> {
    Json(state.faults())
}

async fn set_faults(State(state): Shared, body: bytes::Bytes) -> Result<Json<Faults>, ApiError> {
    let faults: Faults = body_or_empty(&body)?;
    state.set_faults(faults.clone());
    Ok(Json(faults))
}

async fn clear_faults(State(state): Shared) -> StatusCode {
    state.clear_faults();
    StatusCode::NO_CONTENT
}

async fn requests(State(state): Shared) -> Json<Value> {
    Json(state.request_counts().to_json())
}

async fn reset_requests(State(state): Shared) -> StatusCode {
    state.reset_request_counts();
    StatusCode::NO_CONTENT
}

async fn webhook(State(state): Shared, body: bytes::Bytes) -> Result<StatusCode, ApiError> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|error| ApiError::validation(vec![format!("body: not JSON ({error})")]))?;
    state.record_webhook(value);
    Ok(StatusCode::OK)
}

async fn webhooks(State(state): Shared) -> Json<Vec<Value>> {
    Json(state.webhooks())
}

#[derive(Deserialize)]
struct UsageBody {
    /// `YYYY-MM`; absent: served for any period without its own entry.
    period: Option<String>,
    format: UsageFormat,
    body: String,
}

async fn set_usage(State(state): Shared, body: bytes::Bytes) -> Result<StatusCode, ApiError> {
    let UsageBody {
        period,
        format,
        body,
    } = body_or_empty(&body)?;
    let period = period
        .map(|text| Period::parse(&text))
        .transpose()
        .map_err(|reason| ApiError::validation(vec![format!("period: {reason}")]))?;
    state.serve_usage(period, body, format);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UsageAuthBody {
    authorization: Option<String>,
}

async fn set_usage_auth(State(state): Shared, body: bytes::Bytes) -> Result<StatusCode, ApiError> {
    let UsageAuthBody { authorization } = body_or_empty(&body)?;
    state.require_usage_auth(authorization);
    Ok(StatusCode::NO_CONTENT)
}

/// The vendor's usage API: `?from=YYYY-MM-DD&to=YYYY-MM-DD` within one month.
async fn usage(
    State(state): Shared,
    Query(params): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(required) = state.usage_auth() {
        let given = headers.get(AUTHORIZATION).map(|v| v.as_bytes());
        if given != Some(required.as_bytes()) {
            return Err(ApiError::unauthorized());
        }
    }
    let date = |name: &str| {
        params
            .get(name)
            .and_then(|text| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
            .ok_or_else(|| {
                ApiError::validation(vec![format!("{name}: expected a YYYY-MM-DD date")])
            })
    };
    let (from, to) = (date("from")?, date("to")?);
    let period = Period::covering(from, to).ok_or_else(|| {
        ApiError::validation(vec![
            "to: from and to must span one whole month or be one day".into(),
        ])
    })?;
    let served = state
        .served_usage(period)
        .ok_or_else(|| ApiError::not_found("Vendor usage for", &period.to_string()))?;
    Ok(([(CONTENT_TYPE, served.format.content_type())], served.body).into_response())
}
