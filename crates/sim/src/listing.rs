//! How the simulated list and detail endpoints answer, as Connect's do: the RQL query parsed
//! (a malformed one is Connect's 400), the matching objects ordered and paged at most the page
//! cap with `Content-Range`, and `select(-…)` projections applied. The catalogue endpoints
//! (`rest`) and the usage-file endpoints (`usage_api`) both answer through it.

use axum::http::header::CONTENT_RANGE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::rql::{ListRequest, Listed, Page};
use super::state::SimState;

/// A list answer: `candidates` (all the objects the parsed query can match) filtered,
/// ordered, paged (at most the page cap) with `Content-Range`.
pub(crate) fn list<'a, O: Listed<'a>, I: IntoIterator<Item = O>>(
    state: &SimState,
    raw_query: Option<String>,
    candidates: impl FnOnce(&ListRequest) -> I,
) -> Result<Response, ApiError> {
    let query = parse(raw_query)?;
    Ok(page(state, &query, candidates(&query)))
}

/// One page of `query` over `candidates`, with `Content-Range`.
pub(crate) fn page<'a, O: Listed<'a>>(
    state: &SimState,
    query: &ListRequest,
    candidates: impl IntoIterator<Item = O>,
) -> Response {
    respond(query.apply(candidates, state.config().page_cap))
}

/// The answer carrying `page`, with `Content-Range`.
pub(crate) fn respond<T: Serialize>(page: Page<T>) -> Response {
    let range = page.content_range();
    ([(CONTENT_RANGE, range)], Json(page.items)).into_response()
}

pub(crate) fn parse(raw_query: Option<String>) -> Result<ListRequest, ApiError> {
    ListRequest::parse(raw_query.as_deref().unwrap_or("")).map_err(ApiError::rql)
}

/// A detail answer: the object found for `id` (404 when none), `select(-…)` applied.
pub(crate) fn detail<'a>(
    found: Option<impl Listed<'a>>,
    kind: &str,
    id: &str,
    raw_query: Option<String>,
) -> Result<Response, ApiError> {
    let query = parse(raw_query)?;
    found
        .map(|object| Json(query.project(object)).into_response())
        .ok_or_else(|| ApiError::not_found(kind, id))
}
