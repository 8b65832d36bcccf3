//! The REST API under `/api/` (docs/ccm.md), its OpenAPI document, and the GUI's files at
//! `/`. Handlers take typed bodies ([`JsonBody`], which answers a malformed or oversized body
//! with a clear error), call [`Ccm::mutate`] or [`Ccm::read`], and answer JSON; every refusal
//! is a [`CcmError`].
//!
//! Files: [`session`] (logins and the admin check), [`library`] (features, models,
//! functions), [`projects`] (projects and everything in them, export/import), [`live`]
//! (devices and the event streams), [`home`] (home scenes and `/metrics`), [`keys`] (the
//! keymanager's admin channel, local only), [`origin`] (no other site's page with
//! authentication off), [`openapi`].

pub mod home;
pub mod keys;
pub mod library;
pub mod live;
pub mod openapi;
pub mod origin;
pub mod projects;
pub mod session;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::error::CcmError;
use crate::Ccm;

/// A JSON request body; a malformed one is a 400 that says what is wrong, an oversized one a
/// 413 naming the limit.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = CcmError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(CcmError::TooLarge(
                    "the request body is larger than ccm.max_body_bytes".into(),
                ))
            }
            Err(JsonRejection::MissingJsonContentType(_)) => Err(CcmError::invalid(
                "send the body as JSON with `Content-Type: application/json`",
            )),
            Err(e) => Err(CcmError::invalid(format!(
                "malformed JSON body: {}",
                e.body_text()
            ))),
        }
    }
}

/// The parameters of a path (`{name}`, `{id}`, ...), as [`axum::extract::Path`] reads them;
/// a path it cannot read (a segment that is not UTF-8 once percent-decoded) is a 400 with the
/// usual error body rather than axum's plain-text answer.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = CcmError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => Err(CcmError::invalid(format!(
                "the path cannot be read: {}",
                e.body_text()
            ))),
        }
    }
}

/// `{}`: the answer of a change that has nothing to return.
pub fn empty() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({}))
}

/// The whole router: the API (behind the admin check when authentication is on) and the GUI.
pub fn router(ccm: Ccm) -> Router {
    let limit = ccm.config().max_body_bytes;
    let protected = Router::new()
        .merge(library::routes())
        .merge(projects::routes())
        .merge(live::routes())
        .merge(home::routes())
        .route_layer(middleware::from_fn_with_state(
            ccm.clone(),
            session::require_admin,
        ));
    // The keymanager's admin channel: an admin, and from this machine only (the local check
    // runs first, so a remote caller learns nothing about credentials).
    let key_admin = keys::routes()
        .route_layer(middleware::from_fn_with_state(
            ccm.clone(),
            session::require_admin,
        ))
        .route_layer(middleware::from_fn_with_state(
            ccm.clone(),
            keys::require_local,
        ));
    let api = Router::new()
        .merge(session::routes())
        .route("/openapi.json", get(openapi::document))
        .merge(protected)
        .merge(key_admin)
        .fallback(|| async { CcmError::not_found("no such API endpoint") });
    let metrics = Router::new()
        .route("/metrics", get(home::metrics))
        .route("/logz", get(logz))
        .route_layer(middleware::from_fn_with_state(
            ccm.clone(),
            session::require_admin,
        ));
    Router::new()
        .nest("/api", api)
        .merge(metrics)
        .route(
            "/",
            get(|| asset(axum::extract::Path("index.html".to_owned()))),
        )
        .route("/{*path}", get(asset))
        .layer(middleware::from_fn_with_state(
            ccm.clone(),
            origin::same_site_only,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(ccm)
}

const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'";

/// A file of the GUI; unknown paths under `/` that look like a page get `index.html` (the GUI
/// routes with `#` fragments, so this is only for bookmarks of `/`).
async fn asset(axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    if path.starts_with("api/") {
        return CcmError::not_found("no such API endpoint").into_response();
    }
    match crate::assets::get(&path) {
        Some((content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                // Only the GUI's own files run: an injected script or a framing page cannot.
                (header::CONTENT_SECURITY_POLICY, CSP),
            ],
            bytes,
        )
            .into_response(),
        None => CcmError::not_found(format!(
            "no file `{}` in the GUI",
            crate::model::shorten(&path)
        ))
        .into_response(),
    }
}

/// `GET /logz`: the recent log lines, newest first (`?format=text|json|html&level=warn&limit=N`).
async fn logz(
    axum::extract::State(ccm): axum::extract::State<Ccm>,
    q: Result<
        axum::extract::Query<iot_auth::logz::LogzQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Response, CcmError> {
    let q = q.map_err(|e| CcmError::invalid(e.body_text()))?;
    let ring = ccm
        .logz()
        .ok_or_else(|| CcmError::Unavailable("no log lines are kept here".into()))?;
    let (content_type, body) = q.answer(ring).map_err(CcmError::Invalid)?;
    let mut res = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    for (k, v) in iot_auth::logz::HEADERS {
        res.headers_mut()
            .insert(k, axum::http::HeaderValue::from_static(v));
    }
    Ok(res)
}

/// Serves until `shutdown`.
pub async fn serve(ccm: Ccm, listener: tokio::net::TcpListener, shutdown: CancellationToken) {
    let app = router(ccm);
    // The peer's address reaches the handlers (the keymanager's admin channel is local only).
    let app = app.into_make_service_with_connect_info::<keys::Peer>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "CCM HTTP server failed");
    }
}
