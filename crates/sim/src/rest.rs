//! The `/public/v1` REST API: routing (with and without a trailing slash), the gate every
//! request passes (Connect-Version header, request counting, injected faults, Authorization),
//! and the read-only catalogue endpoints. Usage-file endpoints are in `usage_api.rs`.

use std::sync::Arc;

use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;

use super::catalogue::Rendered;
use super::error::ApiError;
use super::faults::Injection;
use super::listing::{detail, list, parse, respond};
use super::state::SimState;
use super::usage_api;

/// Mount point of the API.
pub const PREFIX: &str = "/public/v1";
/// The `Connect-Version` every answer carries.
pub const CONNECT_VERSION: &str = "27.0.0-sim";

type SimRouter = Router<Arc<SimState>>;

pub(crate) fn router(state: Arc<SimState>) -> Router {
    let routes = [
        ("/accounts", get(accounts)),
        ("/marketplaces", get(marketplaces)),
        ("/marketplaces/{id}", get(marketplace)),
        ("/contracts", get(contracts)),
        ("/contracts/{id}", get(contract)),
        ("/products", get(products)),
        ("/products/{id}", get(product)),
        ("/products/{id}/items", get(product_items)),
        ("/assets", get(assets)),
        ("/assets/{id}", get(asset)),
    ];
    let api = routes
        .into_iter()
        .chain(usage_api::routes())
        .fold(SimRouter::new(), |router, (path, method_router)| {
            with_trailing_slash(router, path, method_router)
        })
        .fallback(unknown_path)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state.clone(), inject_faults))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .layer(middleware::map_response(connect_version));
    Router::new().nest(PREFIX, api).with_state(state)
}

fn with_trailing_slash(
    router: SimRouter,
    path: &str,
    method_router: MethodRouter<Arc<SimState>>,
) -> SimRouter {
    router
        .route(path, method_router.clone())
        .route(&format!("{path}/"), method_router)
}

async fn connect_version(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("connect-version", HeaderValue::from_static(CONNECT_VERSION));
    response
}

async fn count(State(state): State<Arc<SimState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|matched| route_template(matched.as_str()))
        .unwrap_or_else(|| "(unknown)".into());
    state.count_request(request.method().as_str(), &route);
    next.run(request).await
}

/// `/public/v1/usage/files/{id}/` → `/usage/files/{id}`.
fn route_template(matched: &str) -> String {
    let relative = matched.strip_prefix(PREFIX).unwrap_or(matched);
    match relative.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed.into(),
        _ => relative.into(),
    }
}

/// The `Authorization` header must equal the configured key exactly.
async fn authorize(State(state): State<Arc<SimState>>, request: Request, next: Next) -> Response {
    let given = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    if given != Some(state.config().api_key.as_bytes()) {
        return ApiError::unauthorized().into_response();
    }
    next.run(request).await
}

async fn unknown_path() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "GEN_404", vec!["Not found.".into()])
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "GEN_405",
        vec!["Method not allowed.".into()],
    )
}

async fn accounts(
    State(state): State<Arc<SimState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let world = state.world();
    list(&state, q, |_| &world.rendered.accounts)
}

async fn marketplaces(
    State(state): State<Arc<SimState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let world = state.world();
    list(&state, q, |query| {
        world.rendered.marketplaces.candidates(query)
    })
}

async fn marketplace(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    detail(
        state.world().rendered.marketplaces.get(&id),
        "Marketplace",
        &id,
        q,
    )
}

async fn contracts(
    State(state): State<Arc<SimState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let world = state.world();
    list(&state, q, |query| {
        world.rendered.contracts.candidates(query)
    })
}

async fn contract(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    detail(
        state.world().rendered.contracts.get(&id),
        "Contract",
        &id,
        q,
    )
}

async fn products(
    State(state): State<Arc<SimState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let world = state.world();
    list(&state, q, |query| world.rendered.products.candidates(query))
}

async fn product(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    detail(state.world().rendered.products.get(&id), "Product", &id, q)
}

async fn product_items(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let world = state.world();
    let items = world
        .rendered
        .items
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Product", &id))?;
    list(&state, q, |_| items)
}

/// Assets are rendered as they are looked at: the candidates the query's pinned fields allow
/// are rendered and checked one by one, and only the page's objects are kept.
async fn assets(
    State(state): State<Arc<SimState>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let world = state.world();
    let catalogue = &world.catalogue;
    let query = parse(q)?;
    let (page, total) = query.select(
        world.rendered.assets.candidates(&query),
        |at, wanted| Rendered::asset(catalogue, at as usize, wanted),
        state.config().page_cap,
    );
    let shown = page
        .into_iter()
        .map(|at| Rendered::shown_asset(catalogue, at as usize, &query))
        .collect();
    Ok(respond(query.page_of(shown, total)))
}

async fn asset(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let world = state.world();
    let found = world
        .rendered
        .assets
        .find(&world.catalogue, &id)
        .map(|at| Rendered::asset(&world.catalogue, at, &|_| true));
    detail(found.as_ref(), "Asset", &id, q)
}

/// The injected faults, drawn per request (see `faults`).
async fn inject_faults(
    State(state): State<Arc<SimState>>,
    request: Request,
    next: Next,
) -> Response {
    let (latency, retry_after, injection) = state.fault_injector().draw();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match injection {
        Injection::Pass => next.run(request).await,
        Injection::Throttle => {
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "SYS_429",
                vec!["Too many requests (injected by the simulator).".into()],
            )
            .into_response();
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(retry_after));
            response
        }
        Injection::FailBefore => server_error(),
        Injection::FailAfter => {
            drop(next.run(request).await);
            server_error()
        }
    }
}

fn server_error() -> Response {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "SYS_001",
        vec!["Internal server error (injected by the simulator).".into()],
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates_drop_the_prefix_and_trailing_slash() {
        assert_eq!(
            route_template("/public/v1/usage/files/{id}/"),
            "/usage/files/{id}"
        );
        assert_eq!(route_template("/public/v1/assets"), "/assets");
    }
}
