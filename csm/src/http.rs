//! The HTTP registration API (spec section 1): `PUT`, `GET`, `DELETE /{id}`, plus `/status`,
//! `/metrics`, `/varz`, `/logz` and `/healthz` for operators. Handlers parse input into wire types, ask
//! the actor, and map every failure to a JSON error body; no client mistake produces a 500.
//!
//! Who may do what (docs/security.md): registration is open to anyone (the IoTtalk SDKs cannot
//! authenticate) but rate limited per address, and re-registering an online DA needs its
//! credentials; with authentication on, the operator endpoints need an admin (HTTP Basic) and
//! `GET /{id}` shows a DA's `rev` (which lets one deregister it) to admins only.

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::{Json, Router};
use http_body_util::BodyExt;
use iot_auth::basic::{self, BasicCredentials};
use iot_auth::operator::{self, Denied};
use iot_auth::Refusal;
use iot_proto::auth::Role;
use iot_proto::wire::{DeregisterRequest, RegisterRequest, RegisterResponse};
use iot_proto::{topics, DaId};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Instant;
use zeroize::Zeroizing;

use crate::error::{ApiError, CsmError};
use crate::CsmHandle;

/// The router, with the API under `prefix` ("" for none, e.g. "/csm" behind a proxy).
pub fn router(handle: CsmHandle, prefix: &str) -> Router {
    let api = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/varz", get(varz))
        .route("/logz", get(logz))
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

/// How long a request body may take to arrive (a client trickling it holds a connection).
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a request body of at most `limit` bytes, within [`BODY_TIMEOUT`].
async fn read_body(body: Body, limit: usize) -> Result<Bytes, CsmError> {
    tokio::time::timeout(BODY_TIMEOUT, read_body_now(body, limit))
        .await
        .map_err(|_| CsmError::BodyUnreadable("the body took too long to arrive".into()))?
}

async fn read_body_now(body: Body, limit: usize) -> Result<Bytes, CsmError> {
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

/// The HTTP Basic credentials of a request, if it sent well-formed ones.
fn basic_of(headers: &HeaderMap) -> Option<BasicCredentials> {
    basic::parse(headers.get(header::AUTHORIZATION)?.as_bytes())
}

/// The role of the user whose credentials `headers` carry, counting refusals. A password
/// check is one Argon2 run: off the async threads, a few at a time (`Users::check_async`).
async fn user_role(h: &CsmHandle, headers: &HeaderMap) -> Result<Role, CsmError> {
    let Some(users) = h.users.as_ref() else {
        return Ok(Role::Admin);
    };
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    operator::role_of(users, &h.refusals, authorization)
        .await
        .map_err(denied)
}

/// Passes when the request carries an admin's credentials, or authentication is off and it
/// does not come from another site's web page ([`iot_auth::same_site`]).
async fn require_admin(h: &CsmHandle, headers: &HeaderMap) -> Result<(), CsmError> {
    if h.users.is_none() {
        let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
        if iot_auth::same_site::from_other_site(text(header::HOST), text(header::ORIGIN)) {
            return Err(CsmError::OtherSite);
        }
    }
    operator::admin(Ok(user_role(h, headers).await?), &h.refusals).map_err(denied)
}

fn denied(d: Denied) -> CsmError {
    match d {
        Denied::NoCredentials => CsmError::NoCredentials,
        Denied::BadCredentials => CsmError::BadCredentials,
        Denied::NotAdmin => CsmError::NotAdmin,
    }
}

async fn put_da(
    State(h): State<CsmHandle>,
    Path(raw): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    b: Body,
) -> Result<Json<RegisterResponse>, ApiError> {
    let register = async {
        if let (Some(limiter), Some(Extension(ConnectInfo(peer)))) = (&h.limiter, peer) {
            if let Err(wait) = limiter.take(peer.ip(), Instant::now()) {
                h.refusals.add(Refusal::RateLimited);
                return Err(CsmError::RateLimited(wait));
            }
        }
        let id = parse_id(&raw)?;
        let b = read_body(b, h.max_body_bytes).await?;
        let req = RegisterRequest::from_json(&b)?;
        // The DA's own credentials, which re-registering it while it is online needs.
        let password: Option<Zeroizing<Vec<u8>>> = basic_of(&headers)
            .filter(|c| c.username == raw)
            .map(|c| c.password);
        let reg = h.register(id, req, password).await.inspect_err(|e| {
            if matches!(e, CsmError::Online) {
                h.refusals.add(Refusal::Takeover);
            }
        })?;
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
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let get = async {
        let id = parse_id(&raw)?;
        let (record, _) = h.get(id).await?.ok_or(CsmError::NotFound)?;
        let mut v = serde_json::to_value(&record).unwrap_or(Value::Null);
        // With authentication on, the rev (enough to deregister the DA) is for admins only.
        let show_rev = match &h.users {
            None => true,
            Some(_) => {
                headers.contains_key(header::AUTHORIZATION)
                    && matches!(user_role(&h, &headers).await, Ok(Role::Admin))
            }
        };
        if let Value::Object(m) = &mut v {
            if !show_rev {
                m.remove("rev");
            }
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

async fn status(State(h): State<CsmHandle>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require_admin(&h, &headers).await?;
    let s = h.status().await?;
    let b = h.broker.stats();
    let mut v = serde_json::to_value(&s).unwrap_or(Value::Null);
    v["broker"] = serde_json::json!({
        "sessions": b.sessions, "dropped": b.dropped, "host_dropped": b.host_dropped
    });
    Ok(Json(v))
}

/// Prometheus text format.
async fn metrics(State(h): State<CsmHandle>, headers: HeaderMap) -> Result<Response, ApiError> {
    require_admin(&h, &headers).await?;
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

/// The recent log lines, newest first (`?format=text|json|html&level=warn&limit=N`).
async fn logz(
    State(h): State<CsmHandle>,
    headers: HeaderMap,
    q: Result<
        axum::extract::Query<iot_auth::logz::LogzQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Response, ApiError> {
    // Credentials first: an anonymous caller learns nothing, not even what the query takes.
    require_admin(&h, &headers).await?;
    let q = q.map_err(|e| CsmError::BadQuery(e.body_text()))?;
    let (content_type, body) = q.answer(&h.logz).map_err(CsmError::BadQuery)?;
    let mut res = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    for (k, v) in iot_auth::logz::HEADERS {
        res.headers_mut()
            .insert(k, axum::http::HeaderValue::from_static(v));
    }
    Ok(res)
}

/// `name: value` lines; `?name=X` for one value.
async fn varz(
    State(h): State<CsmHandle>,
    headers: HeaderMap,
    q: axum::extract::Query<VarzQuery>,
) -> Result<String, ApiError> {
    require_admin(&h, &headers).await?;
    let samples = crate::metrics::collect(&h).await?;
    let name = q.name.as_deref();
    crate::metrics::varz(&samples, name)
        .ok_or_else(|| CsmError::NoFigure(name.unwrap_or_default().to_owned()).into())
}
