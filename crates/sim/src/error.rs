//! Connect's error answer: an HTTP status with the JSON body
//! `{"error_code": "...", "errors": ["..."]}`, field-prefixed for validation errors.
//!
//! Every refusal of the simulator goes through [`ApiError`], so clients are tested against the
//! body shape they will meet in production, never against a framework's default text.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// A refused request, as the HTTP answer Connect would give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {}", errors.join("; "))]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub errors: Vec<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, errors: Vec<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            errors,
        }
    }

    /// 400 `VAL_001`: field-prefixed validation messages.
    pub fn validation(errors: Vec<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "VAL_001", errors)
    }

    /// 400 `UFS_001`: the action is not allowed in the file's current status.
    pub fn transition(file_id: &str, action: &str, status: &str) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "UFS_001",
            vec![format!(
                "usage file {file_id}: cannot {action} a file in status {status}"
            )],
        )
    }

    /// 400 `RQL_001`: the query string is not valid RQL.
    pub fn rql(reason: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "RQL_001",
            vec![format!("rql: {reason}")],
        )
    }

    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "AUTH_001",
            vec!["API key is not valid.".into()],
        )
    }

    pub fn not_found(kind: &str, id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "GEN_404",
            vec![format!("{kind} {id} not found.")],
        )
    }

    pub fn unsupported_media_type(expected: &str) -> Self {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "VAL_002",
            vec![format!("Content-Type must be {expected}.")],
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error_code": self.code, "errors": self.errors});
        (self.status, Json(body)).into_response()
    }
}
