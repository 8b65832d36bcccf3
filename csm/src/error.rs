//! The CSM's error type. Each variant maps to one HTTP status and a clear `reason`; the JSON
//! body is always `{"id", "state": "error", "reason"}` (the Python SDK shows `reason`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use iot_proto::wire::ErrorBody;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsmError {
    /// Malformed or invalid input; the text says what was wrong.
    #[error("{0}")]
    BadRequest(String),
    #[error("id not found")]
    NotFound,
    #[error("revision out-of-date or unknown")]
    StaleRev,
    #[error("{0}")]
    Conflict(String),
    #[error("request body too large: the limit is {0} bytes")]
    TooLarge(usize),
    /// The server cannot complete the request now (database down, shutting down).
    #[error("{0}")]
    Unavailable(String),
}

impl CsmError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::StaleRev => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The error as an HTTP response about `id` (as the client wrote it).
    pub fn respond(self, id: &str) -> Response {
        (self.status(), Json(ErrorBody::new(id, self.to_string()))).into_response()
    }
}
