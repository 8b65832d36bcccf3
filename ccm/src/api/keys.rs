//! `/api/keys`: the keymanager's admin channel (`iotctl key ...`), answered only to an admin
//! (when authentication is on) connected from this machine, whatever `ccm.listen` is: from a
//! loopback address, or from the very address it connected to (a TCP connection from another
//! host cannot carry the server's own address as its source). Passwords and values come in the body, are wiped after use, and never
//! appear in an answer or a log line.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::serve::IncomingStream;
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use zeroize::Zeroizing;

use super::{empty, JsonBody, Path};
use crate::error::CcmError;
use crate::keys::service::{KeyError, Keys, Status};
use crate::keys::store::StoreError;
use crate::Ccm;

/// The largest value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// The most audit records one answer holds.
const MAX_AUDIT: i64 = 10_000;

pub fn routes() -> Router<Ccm> {
    Router::new()
        .route("/keys/status", get(status))
        .route("/keys/init", post(init))
        .route("/keys/unseal", post(unseal))
        .route("/keys/seal", post(seal))
        .route("/keys/rotate", post(rotate))
        .route("/keys/secrets", get(list))
        .route("/keys/secrets/{name}", put(put_key).delete(remove))
        .route("/keys/clients", get(clients))
        .route(
            "/keys/clients/{name}",
            put(add_client).delete(remove_client),
        )
        .route("/keys/audit", get(audit))
}

/// Both ends of an HTTP connection, as the CCM's server records them.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub remote: SocketAddr,
    /// The server's address the client connected to.
    pub local: Option<SocketAddr>,
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer {
            remote: *stream.remote_addr(),
            local: stream.io().local_addr().ok(),
        }
    }
}

impl Peer {
    /// Whether the client runs on this machine.
    pub fn is_local(&self) -> bool {
        let ip = self.remote.ip().to_canonical();
        ip.is_loopback() || self.local.is_some_and(|l| l.ip().to_canonical() == ip)
    }
}

/// Refuses every caller that is not on this machine, and web pages on it: a browser sends
/// `Origin` with a page's writes, and a rebound domain in `Host`. Refusals are counted
/// (`iotctl_km_admin_refused_total`).
pub async fn require_local(
    State(ccm): State<Ccm>,
    req: Request,
    next: Next,
) -> Result<Response, CcmError> {
    let local = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .is_some_and(|c| c.0.is_local());
    if !local {
        ccm.key_metrics().admin_refused();
        return Err(CcmError::Forbidden(
            "the keymanager is administered from the controller's machine only".into(),
        ));
    }
    let headers = req.headers();
    let host_ok = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(iot_auth::same_site::host_is_address);
    if headers.contains_key(axum::http::header::ORIGIN) || !host_ok {
        ccm.key_metrics().admin_refused();
        return Err(CcmError::Forbidden(
            "the keymanager is administered with `iotctl key`, not from a web page".into(),
        ));
    }
    Ok(next.run(req).await)
}

fn keys(ccm: &Ccm) -> Result<&std::sync::Arc<Keys>, CcmError> {
    ccm.keys()
        .ok_or_else(|| CcmError::Unavailable("the keymanager is not running".into()))
}

/// Who asked, for the audit trail: `api:<user>`, or `api` with authentication off.
fn who(user: Option<axum::Extension<super::session::User>>) -> String {
    user.map_or_else(|| "api".to_owned(), |u| format!("api:{}", u.0 .0))
}

impl From<KeyError> for CcmError {
    fn from(e: KeyError) -> Self {
        let why = e.to_string();
        match e {
            KeyError::Store(s) => match s {
                StoreError::NotInitialised | StoreError::AlreadyInitialised => {
                    CcmError::Conflict(why)
                }
                StoreError::Sealed => CcmError::Unavailable(why),
                StoreError::WrongPassword => CcmError::Forbidden(why),
                StoreError::NoKey(_) | StoreError::NoClient(_) => CcmError::NotFound(why),
                StoreError::Name(_) => CcmError::Invalid(why),
                StoreError::Crypto(_) => CcmError::Internal(why),
            },
            KeyError::Storage(_) => CcmError::Unavailable(why),
            KeyError::SealedMeanwhile => CcmError::Conflict(why),
        }
    }
}

/// A password in a body; wiped when dropped, never printed.
#[derive(Deserialize)]
struct Password {
    password: Zeroizing<String>,
}

fn nonempty(p: Zeroizing<String>) -> Result<Zeroizing<String>, CcmError> {
    if p.is_empty() {
        return Err(CcmError::invalid("the password is empty"));
    }
    Ok(p)
}

async fn status(State(ccm): State<Ccm>) -> Result<Json<Status>, CcmError> {
    Ok(Json(keys(&ccm)?.status()))
}

async fn init(
    State(ccm): State<Ccm>,
    user: Option<axum::Extension<super::session::User>>,
    JsonBody(b): JsonBody<Password>,
) -> Result<Json<Status>, CcmError> {
    let k = keys(&ccm)?;
    k.init(nonempty(b.password)?, &who(user)).await?;
    Ok(Json(k.status()))
}

async fn unseal(
    State(ccm): State<Ccm>,
    user: Option<axum::Extension<super::session::User>>,
    JsonBody(b): JsonBody<Password>,
) -> Result<Json<Status>, CcmError> {
    let k = keys(&ccm)?;
    k.unseal(nonempty(b.password)?, &who(user)).await?;
    Ok(Json(k.status()))
}

async fn seal(
    State(ccm): State<Ccm>,
    user: Option<axum::Extension<super::session::User>>,
) -> Result<Json<Status>, CcmError> {
    let k = keys(&ccm)?;
    k.seal(&who(user)).await;
    Ok(Json(k.status()))
}

#[derive(Deserialize)]
struct Rotate {
    password: Zeroizing<String>,
    new_password: Zeroizing<String>,
}

async fn rotate(
    State(ccm): State<Ccm>,
    user: Option<axum::Extension<super::session::User>>,
    JsonBody(b): JsonBody<Rotate>,
) -> Result<Json<Status>, CcmError> {
    let k = keys(&ccm)?;
    k.rotate(nonempty(b.password)?, nonempty(b.new_password)?, &who(user))
        .await?;
    Ok(Json(k.status()))
}

#[derive(Debug, Serialize)]
struct Named {
    name: String,
    /// Unix seconds of the last change.
    updated: f64,
}

async fn list(State(ccm): State<Ccm>) -> Result<Json<Vec<Named>>, CcmError> {
    let names = keys(&ccm)?.names();
    Ok(Json(
        names
            .into_iter()
            .map(|(name, updated)| Named { name, updated })
            .collect(),
    ))
}

/// A value: `value` (text) or `value_b64` (any bytes), not both.
#[derive(Deserialize)]
struct Value64 {
    #[serde(default)]
    value: Option<Zeroizing<String>>,
    #[serde(default)]
    value_b64: Option<Zeroizing<String>>,
}

fn value_bytes(v: Value64) -> Result<Zeroizing<Vec<u8>>, CcmError> {
    let bytes = match (v.value, v.value_b64) {
        (Some(t), None) => Zeroizing::new(t.as_bytes().to_vec()),
        (None, Some(b)) => Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b.as_bytes())
                .map_err(|_| CcmError::invalid("`value_b64` is not base64"))?,
        ),
        _ => {
            return Err(CcmError::invalid(
                "give the value as `value` (text) or `value_b64` (base64), one of them",
            ))
        }
    };
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(CcmError::TooLarge(format!(
            "a value is at most {MAX_VALUE_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

async fn put_key(
    State(ccm): State<Ccm>,
    user: Option<axum::Extension<super::session::User>>,
    Path(name): Path<String>,
    JsonBody(v): JsonBody<Value64>,
) -> Result<Json<Value>, CcmError> {
    let value = value_bytes(v)?;
    keys(&ccm)?.put(&name, value, &who(user)).await?;
    Ok(empty())
}

async fn remove(
    State(ccm): State<Ccm>,
    user: Option<axum::Extension<super::session::User>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, CcmError> {
    keys(&ccm)?.remove(&name, &who(user)).await?;
    Ok(empty())
}

#[derive(Debug, Serialize)]
struct ClientInfo {
    name: String,
    keys: BTreeSet<String>,
    updated: f64,
}

async fn clients(State(ccm): State<Ccm>) -> Result<Json<Vec<ClientInfo>>, CcmError> {
    let all = keys(&ccm)?.clients();
    Ok(Json(
        all.into_iter()
            .map(|(name, keys, updated)| ClientInfo {
                name,
                keys,
                updated,
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
struct NewClient {
    machine_id: String,
    keys: BTreeSet<String>,
    password: Zeroizing<String>,
}

async fn add_client(
    State(ccm): State<Ccm>,
    user: Option<axum::Extension<super::session::User>>,
    Path(name): Path<String>,
    JsonBody(c): JsonBody<NewClient>,
) -> Result<Json<Value>, CcmError> {
    let mid = c.machine_id.trim();
    if mid.is_empty() || mid.len() > 256 {
        return Err(CcmError::invalid(
            "`machine_id` must be 1 to 256 characters",
        ));
    }
    let password = nonempty(c.password)?;
    keys(&ccm)?
        .add_client(&name, mid, c.keys, password, &who(user))
        .await?;
    Ok(empty())
}

async fn remove_client(
    State(ccm): State<Ccm>,
    user: Option<axum::Extension<super::session::User>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, CcmError> {
    keys(&ccm)?.remove_client(&name, &who(user)).await?;
    Ok(empty())
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    limit: Option<i64>,
    client: Option<String>,
}

async fn audit(
    State(ccm): State<Ccm>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, CcmError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_AUDIT).contains(&limit) {
        return Err(CcmError::invalid(format!(
            "`limit` must be 1 to {MAX_AUDIT}"
        )));
    }
    let rows = keys(&ccm)?
        .audit_trail(limit, q.client)
        .await
        .map_err(CcmError::Unavailable)?;
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({"time": r.time, "action": r.action, "client": r.client,
                   "key": r.key_name, "result": r.result, "from": r.mqtt_client})
        })
        .collect();
    Ok(Json(Value::Array(rows)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(remote: &str, local: &str) -> Peer {
        Peer {
            remote: remote.parse().unwrap(),
            local: Some(local.parse().unwrap()),
        }
    }

    #[test]
    fn local_means_loopback_or_the_servers_own_address() {
        assert!(peer("127.0.0.1:5000", "127.0.0.1:7788").is_local());
        assert!(peer("[::1]:5000", "[::1]:7788").is_local());
        assert!(peer("[::ffff:127.0.0.1]:5000", "[::]:7788").is_local());
        assert!(peer("192.0.2.2:5000", "192.0.2.2:7788").is_local());
        assert!(!peer("192.0.2.9:5000", "192.0.2.2:7788").is_local());
        assert!(!peer("10.0.0.1:5000", "0.0.0.0:7788").is_local());
        let unknown = Peer {
            remote: "192.0.2.2:5000".parse().unwrap(),
            local: None,
        };
        assert!(!unknown.is_local());
    }
}
