//! The CSM's errors. [`CsmError`] has a variant per distinct failure; each maps to one HTTP
//! status and a clear `reason`. [`ApiError`] is a `CsmError` about one id, the error of every
//! HTTP handler: its body is always `{"id", "state": "error", "reason"}` (the Python SDK shows
//! `reason`), and no internal detail beyond the reason leaks.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use iot_proto::wire::{ErrorBody, WireError};
use iot_proto::IdError;

#[derive(Debug, thiserror::Error)]
pub enum CsmError {
    /// A request body that is not what the API takes; the text says what was wrong.
    #[error(transparent)]
    Body(#[from] WireError),
    /// A DA id that is not a canonical UUID.
    #[error(transparent)]
    Id(#[from] IdError),
    #[error("cannot read the request body: {0}")]
    BodyUnreadable(String),
    #[error("no such endpoint: use PUT, GET or DELETE /{{id}}")]
    NoEndpoint,
    #[error("no figure named `{0}`; GET /varz lists them")]
    NoFigure(String),
    /// A query string the endpoint cannot use; the text says what it takes.
    #[error("{0}")]
    BadQuery(String),
    #[error("id not found")]
    NotFound,
    #[error("revision out-of-date or unknown")]
    StaleRev,
    #[error("no free default name for model `{0}`: 00..99 are taken; send a `name`")]
    NoFreeName(String),
    #[error("request body too large: the limit is {0} bytes")]
    TooLarge(usize),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("could not store the change: {0}")]
    Store(String),
    #[error("the database writer has stopped")]
    WriterStopped,
    #[error("this DA is online: re-registering it needs its credentials (HTTP Basic with the username and password of its registration reply)")]
    Online,
    #[error("authentication required: HTTP Basic with an admin user")]
    NoCredentials,
    #[error("wrong username or password")]
    BadCredentials,
    #[error("this needs an admin user")]
    NotAdmin,
    #[error("with authentication off, operator endpoints answer only requests for an address (http://127.0.0.1:PORT), not a domain name, and not from another site's page")]
    OtherSite,
    #[error("too many registrations from this address: retry in {0} s")]
    RateLimited(u64),
}

impl CsmError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Body(_)
            | Self::Id(_)
            | Self::BodyUnreadable(_)
            | Self::StaleRev
            | Self::BadQuery(_) => StatusCode::BAD_REQUEST,
            Self::NotFound | Self::NoEndpoint | Self::NoFigure(_) => StatusCode::NOT_FOUND,
            Self::NoFreeName(_) | Self::Online => StatusCode::CONFLICT,
            Self::NoCredentials | Self::BadCredentials => StatusCode::UNAUTHORIZED,
            Self::NotAdmin | Self::OtherSite => StatusCode::FORBIDDEN,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ShuttingDown | Self::Store(_) | Self::WriterStopped => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

/// A [`CsmError`] about the id a client named (as it wrote it; "" for none).
#[derive(Debug)]
pub struct ApiError {
    pub id: String,
    pub error: CsmError,
}

impl ApiError {
    /// A function turning errors into `ApiError`s about `id`, for `map_err`.
    pub fn about(id: &str) -> impl Fn(CsmError) -> ApiError + '_ {
        move |error| ApiError {
            id: id.to_owned(),
            error,
        }
    }
}

impl From<CsmError> for ApiError {
    /// An error about no id in particular.
    fn from(error: CsmError) -> Self {
        ApiError {
            id: String::new(),
            error,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody::new(self.id, self.error.to_string());
        let mut resp = (self.error.status(), Json(body)).into_response();
        let headers = resp.headers_mut();
        match self.error {
            CsmError::NoCredentials | CsmError::BadCredentials => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"iotctl\", charset=\"UTF-8\""),
                );
            }
            CsmError::RateLimited(secs) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            _ => {}
        }
        resp
    }
}
