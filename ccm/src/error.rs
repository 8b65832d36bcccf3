//! [`CcmError`]: every refusal of the CCM, with the HTTP status and the `{"error", "reason"}`
//! body the API answers with.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `invalid`, `not_found`, `conflict`, `unauthorized`, `forbidden`,
    /// `too_large`, `unavailable`, `internal`.
    pub error: String,
    /// What went wrong, in plain words.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CcmError {
    /// The request is malformed or a value is not acceptable (400).
    #[error("{0}")]
    Invalid(String),
    /// Something named does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with what is stored (409): a name taken, a model in use, ...
    #[error("{0}")]
    Conflict(String),
    /// No or wrong credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not an admin (403).
    #[error("{0}")]
    Forbidden(String),
    /// The body is larger than accepted (413).
    #[error("{0}")]
    TooLarge(String),
    /// The CSM or the database cannot be reached now (503).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a storage failure (500); the reason names no secret.
    #[error("{0}")]
    Internal(String),
}

impl CcmError {
    pub fn invalid(why: impl Into<String>) -> Self {
        Self::Invalid(why.into())
    }

    pub fn not_found(why: impl Into<String>) -> Self {
        Self::NotFound(why.into())
    }

    pub fn conflict(why: impl Into<String>) -> Self {
        Self::Conflict(why.into())
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::TooLarge(_) => "too_large",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<iot_migrations::DbError> for CcmError {
    fn from(e: iot_migrations::DbError) -> Self {
        tracing::error!(error = %e, "CCM database error");
        Self::Unavailable(format!("database: {e}"))
    }
}

impl IntoResponse for CcmError {
    fn into_response(self) -> Response {
        let status = self.status();
        // No `WWW-Authenticate` challenge: a browser would answer it with its own login
        // dialog instead of the GUI's page. Scripts send Basic credentials up front.
        (
            status,
            Json(ErrorBody {
                error: self.code().into(),
                reason: self.to_string(),
            }),
        )
            .into_response()
    }
}
