//! The HTTP registration API (spec section 1): `PUT`, `GET`, `DELETE /{id}`, plus `/status`
//! and `/healthz` for operators. Handlers parse input into wire types, ask the actor, and map
//! every failure to a JSON error body; no client mistake produces a 500.

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::BodyExt;
use iot_proto::wire::{DeregisterRequest, RegisterRequest, RegisterResponse};
use iot_proto::{topics, DaId};
use serde_json::Value;

use crate::error::{ApiError, CsmError};
use crate::CsmHandle;

/// The router, with the API under `prefix` ("" for none, e.g. "/csm" behind a proxy).
pub fn router(handle: CsmHandle, prefix: &str) -> Router {
    let api = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/varz", get(varz))
        .route("/{id}", get(get_da).put(put_da).delete(delete_da))
        .fallback(not_found)
        // Bodies are limited by `read_body`, which answers 413 in a way clients can read.
        .layer(DefaultBodyLimit::disable())
        .with_state(handle);
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        api
    } else {
        Router::new().nest(prefix, api).fallback(not_found)
    }
}

async fn not_found() -> ApiError {
    CsmError::NoEndpoint.into()
}

fn parse_id(raw: &str) -> Result<DaId, CsmError> {
    Ok(raw.parse()?)
}

/// How much of an oversized body is still read (and dropped) before answering 413: a
/// client that is still sending when the server closes gets a broken pipe instead of the
/// answer, so bodies up to this size are drained first.
const DRAIN_LIMIT_BYTES: usize = 64 * 1024 * 1024;

/// Reads a request body of at most `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, CsmError> {
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CsmError::BodyUnreadable(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen <= limit {
            buf.extend_from_slice(&data);
        } else if seen > DRAIN_LIMIT_BYTES {
            break;
        }
    }
    if seen > limit {
        return Err(CsmError::TooLarge(limit));
    }
    Ok(buf.freeze())
}

async fn put_da(
    State(h): State<CsmHandle>,
    Path(raw): Path<String>,
    b: Body,
) -> Result<Json<RegisterResponse>, ApiError> {
    let register = async {
        let id = parse_id(&raw)?;
        let b = read_body(b, h.max_body_bytes).await?;
        let req = RegisterRequest::from_json(&b)?;
        let reg = h.register(id, req).await?;
        Ok(RegisterResponse {
            id,
            state: "ok".into(),
            rev: reg.record.rev,
            name: reg.record.name,
            url: h.broker_url.clone(),
            ctrl_chans: topics::ctrl_chans(&id),
            username: reg.username,
            password: reg.password,
        })
    };
    register.await.map(Json).map_err(ApiError::about(&raw))
}

async fn get_da(
    State(h): State<CsmHandle>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let get = async {
        let id = parse_id(&raw)?;
        let (record, _) = h.get(id).await?.ok_or(CsmError::NotFound)?;
        let mut v = serde_json::to_value(&record).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("state".into(), "ok".into());
        }
        Ok(v)
    };
    get.await.map(Json).map_err(ApiError::about(&raw))
}

async fn delete_da(
    State(h): State<CsmHandle>,
    Path(raw): Path<String>,
    b: Body,
) -> Result<Json<Value>, ApiError> {
    let delete = async {
        let id = parse_id(&raw)?;
        let b = read_body(b, h.max_body_bytes).await?;
        let req = DeregisterRequest::from_json(&b)?;
        h.deregister(id, req.rev).await?;
        Ok(serde_json::json!({"id": id, "state": "ok"}))
    };
    delete.await.map(Json).map_err(ApiError::about(&raw))
}

async fn status(State(h): State<CsmHandle>) -> Result<Json<Value>, ApiError> {
    let s = h.status().await?;
    let b = h.broker.stats();
    let mut v = serde_json::to_value(&s).unwrap_or(Value::Null);
    v["broker"] = serde_json::json!({
        "sessions": b.sessions, "dropped": b.dropped, "host_dropped": b.host_dropped
    });
    Ok(Json(v))
}

/// Prometheus text format.
async fn metrics(State(h): State<CsmHandle>) -> Result<Response, ApiError> {
    let samples = crate::metrics::collect(&h).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::prometheus(&samples),
    )
        .into_response())
}

#[derive(Debug, serde::Deserialize)]
struct VarzQuery {
    name: Option<String>,
}

/// `name: value` lines; `?name=X` for one value.
async fn varz(
    State(h): State<CsmHandle>,
    q: axum::extract::Query<VarzQuery>,
) -> Result<String, ApiError> {
    let samples = crate::metrics::collect(&h).await?;
    let name = q.name.as_deref();
    crate::metrics::varz(&samples, name)
        .ok_or_else(|| CsmError::NoFigure(name.unwrap_or_default().to_owned()).into())
}
