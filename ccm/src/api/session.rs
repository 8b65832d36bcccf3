//! Who may use the API. Authentication off (every listener on loopback, checked by `iotctl
//! start`): everyone. On: an admin, by a session cookie from `POST /api/login` (the GUI) or
//! HTTP Basic credentials on each request (scripts, `iotctl project`). Every refusal is
//! counted in the controller's `/metrics` (`iotctl_auth_refused_total`).
//!
//! A session token is 32 random bytes; the server keeps only its SHA-256, so a lookup's
//! timing tells nothing about a valid token, and a copy of memory holds no usable cookie.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use iot_auth::operator::{self, Denied};
use iot_proto::wire::graph_api::digest;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::JsonBody;
use crate::error::CcmError;
use crate::Ccm;

/// The session cookie's name.
pub const COOKIE: &str = "iotctl_ccm";

/// Most sessions kept at once; the least recently used go first.
const MAX_SESSIONS: usize = 1000;

#[derive(Debug)]
struct Session {
    user: String,
    last_used: Instant,
}

/// The live sessions of one CCM, by the SHA-256 of their token.
#[derive(Debug, Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub fn routes() -> Router<Ccm> {
    Router::new()
        .route("/session", get(session))
        .route("/login", post(login))
        .route("/logout", post(logout))
}

/// Who is logged in.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionInfo {
    /// Whether the API needs a login.
    pub auth: bool,
    /// The logged-in user; with authentication off, `null`.
    pub user: Option<String>,
    /// Whether the CSM answers the CCM (the device API).
    pub csm: bool,
}

#[derive(Deserialize, ToSchema)]
pub struct Login {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The user of a live session, renewing it.
fn session_user(ccm: &Ccm, headers: &HeaderMap) -> Option<String> {
    let token = cookie_token(headers)?;
    let idle = Duration::from_secs(ccm.config().session_idle_seconds);
    let mut s = ccm.sessions().lock();
    let key = digest(&token);
    let live = s.get_mut(&key)?;
    if live.last_used.elapsed() > idle {
        s.remove(&key);
        return None;
    }
    live.last_used = Instant::now();
    Some(live.user.clone())
}

#[utoipa::path(get, path = "/api/session", tag = "session", security(()),
    responses((status = 200, body = SessionInfo)))]
pub async fn session(State(ccm): State<Ccm>, headers: HeaderMap) -> Json<SessionInfo> {
    let auth = ccm.users().is_some();
    Json(SessionInfo {
        auth,
        user: if auth {
            session_user(&ccm, &headers)
        } else {
            None
        },
        csm: ccm.live().csm_connected(),
    })
}

#[utoipa::path(post, path = "/api/login", tag = "session", request_body = Login, security(()),
    responses((status = 200, body = SessionInfo), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody)))]
pub async fn login(
    State(ccm): State<Ccm>,
    JsonBody(body): JsonBody<Login>,
) -> Result<Response, CcmError> {
    let password = Zeroizing::new(body.password.into_bytes());
    let Some(users) = ccm.users() else {
        return Ok(Json(SessionInfo {
            auth: false,
            user: None,
            csm: ccm.live().csm_connected(),
        })
        .into_response());
    };
    let role = operator::role(users, ccm.refusals(), &body.username, &password).await;
    if let Err(d) = operator::admin(role, ccm.refusals()) {
        tracing::info!(user = ?body.username, "CCM login refused");
        return Err(denied(d));
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    {
        let mut s = ccm.sessions().lock();
        if s.len() >= MAX_SESSIONS {
            if let Some(oldest) = s
                .iter()
                .min_by_key(|(_, v)| v.last_used)
                .map(|(k, _)| k.clone())
            {
                s.remove(&oldest);
            }
        }
        s.insert(
            digest(&token),
            Session {
                user: body.username.clone(),
                last_used: Instant::now(),
            },
        );
    }
    tracing::info!(user = ?body.username, "CCM login");
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    let mut res = Json(SessionInfo {
        auth: true,
        user: Some(body.username),
        csm: ccm.live().csm_connected(),
    })
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}

#[utoipa::path(post, path = "/api/logout", tag = "session", security(()),
    responses((status = 200, description = "logged out (also without a session)")))]
pub async fn logout(State(ccm): State<Ccm>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie_token(&headers) {
        ccm.sessions().lock().remove(&digest(&token));
    }
    let mut res = super::empty().into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("iotctl_ccm=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    res
}

/// The admin a request came from (authentication on), as a request extension.
#[derive(Debug, Clone)]
pub struct User(pub String);

/// Lets a request through when authentication is off, or it carries an admin's session
/// cookie or Basic credentials; then the request carries the admin's [`User`].
pub async fn require_admin(
    State(ccm): State<Ccm>,
    mut req: Request,
    next: Next,
) -> Result<Response, CcmError> {
    let Some(users) = ccm.users() else {
        return Ok(next.run(req).await);
    };
    if let Some(user) = session_user(&ccm, req.headers()) {
        req.extensions_mut().insert(User(user));
        return Ok(next.run(req).await);
    }
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|h| h.as_bytes());
    let role = operator::role_of(users, ccm.refusals(), authorization).await;
    operator::admin(role, ccm.refusals()).map_err(denied)?;
    if let Some(c) = authorization.and_then(iot_auth::basic::parse) {
        req.extensions_mut().insert(User(c.username));
    }
    Ok(next.run(req).await)
}

/// The answer to a refused login or request, in plain words.
fn denied(d: Denied) -> CcmError {
    match d {
        Denied::NoCredentials => CcmError::Unauthorized(
            "log in first (POST /api/login), or send an admin's HTTP Basic credentials".into(),
        ),
        Denied::BadCredentials => CcmError::Unauthorized("wrong user name or password".into()),
        Denied::NotAdmin => CcmError::Forbidden(
            "this user is not an admin: the configuration manager needs one".into(),
        ),
    }
}
