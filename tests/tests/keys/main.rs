#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The keymanager (issue 12, docs/keymanager.md) end to end: the real controller, its store
//! set up with `iotctl key` and the CCM's `/api/keys`, and requests from real MQTT clients
//! (rumqttc here, paho from Python in `python.rs`) built with the formulas of
//! `iot_proto::km`. The Python client is written from the document alone.
//!
//! Files: `requests.rs` (the happy path, replay, clock, wrong MAC, another machine, one
//! `denied` for every unknown or forbidden thing, a forged future request, malformed
//! requests, the rate limit, panic mode), `admin.rs` (sealed at start and after `key seal`,
//! restart, wrong unseal password, rotate, the audit trail, no plaintext on disk, the CLI,
//! authentication and the topic ACL), `python.rs`.

mod admin;
mod python;
mod requests;

use std::time::{SystemTime, UNIX_EPOCH};

use iot_proto::km;
use iot_tests::{App, AppOptions, CcmClient, Mqtt};
use reqwest::Method;
use rumqttc::QoS;
use serde_json::{json, Value};

pub const UNSEAL: &str = "unseal-pw-7d2e";
pub const CLIENT: &str = "backup";
pub const CLIENT_PW: &str = "client-pw-41aa";
pub const MID: &str = "0f3a9c1e5b7d4e2f8a6c0b1d3e5f7a9c";
/// The value of `db`, unique enough to be searched for on disk.
pub const VALUE: &str = "hunter2-value-c0ffee-5e1f";

/// A controller with `[keymanager]` set to `km` (TOML keys, one a line).
pub async fn start(km: &str, auth: bool) -> App {
    App::start(AppOptions {
        extra_toml: format!("[keymanager]\n{km}\n"),
        auth,
        ..AppOptions::default()
    })
    .await
}

/// `method path body` on the CCM, asserting `status`.
pub async fn api(
    c: &CcmClient,
    method: Method,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> Value {
    let (s, v) = c.call(method.clone(), path, body.as_ref()).await;
    assert_eq!(s, status, "{method} {path}: {v}");
    v
}

/// The store created and unsealed, the keys `db` and `other`, the client [`CLIENT`] on
/// machine [`MID`] allowed `db` only.
pub async fn provision(c: &CcmClient) {
    api(
        c,
        Method::POST,
        "/api/keys/init",
        Some(json!({"password": UNSEAL})),
        200,
    )
    .await;
    api(
        c,
        Method::PUT,
        "/api/keys/secrets/db",
        Some(json!({"value": VALUE})),
        200,
    )
    .await;
    let other = json!({"value": "not-for-backup"});
    api(c, Method::PUT, "/api/keys/secrets/other", Some(other), 200).await;
    let client = json!({"machine_id": MID, "keys": ["db"], "password": CLIENT_PW});
    api(
        c,
        Method::PUT,
        &format!("/api/keys/clients/{CLIENT}"),
        Some(client),
        200,
    )
    .await;
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn nonce() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}

/// A request of `client` with `password` on machine `mid` for `key` at `ts`.
pub fn request(password: &str, client: &str, mid: &str, key: &str, ts: i64) -> km::KmRequest {
    let s = km::client_secret(password, client, mid);
    km::KmRequest::new(&s, client, key, ts, nonce())
}

/// A client that reads `client`'s replies (as `credentials` when given).
pub async fn listener(app: &App, client: &str, credentials: Option<(&str, &str)>) -> Mqtt {
    let mut m = Mqtt::connect_as(&app.mqtt, None, credentials).await;
    m.subscribe(&km::res(client), QoS::AtLeastOnce).await;
    m
}

/// Publishes `body` as `client`'s request and waits for the reply carrying `nonce`.
pub async fn ask_raw(m: &mut Mqtt, client: &str, body: &[u8], nonce: &str) -> Value {
    m.publish(&km::req(client), body.to_vec(), QoS::AtLeastOnce, false)
        .await;
    let n = nonce.to_owned();
    m.recv_until(&format!("the reply to {nonce}"), move |r| {
        r.json()["nonce"].as_str() == Some(n.as_str())
    })
    .await
    .json()
}

/// Sends `req` as `client` and waits for its reply.
pub async fn ask(m: &mut Mqtt, client: &str, req: &km::KmRequest) -> Value {
    let body = serde_json::to_vec(req).unwrap();
    ask_raw(m, client, &body, &req.nonce).await
}

/// The value in a success reply, opened as the client does.
pub fn open(reply: &Value, password: &str, client: &str, mid: &str, req: &km::KmRequest) -> String {
    assert_eq!(reply["ok"], true, "{reply}");
    let s = km::client_secret(password, client, mid);
    let v = km::decrypt_reply(
        &s,
        client,
        &req.key,
        &req.nonce,
        reply["iv"].as_str().unwrap(),
        reply["value"].as_str().unwrap(),
    )
    .unwrap();
    String::from_utf8(v.to_vec()).unwrap()
}

/// The error code of a failure reply, checking it says nothing else.
pub fn code(reply: &Value) -> String {
    assert_eq!(reply["ok"], false, "{reply}");
    let keys: Vec<&String> = reply.as_object().unwrap().keys().collect();
    let allowed = ["nonce", "ok", "error", "retry_after_ms"];
    assert!(
        keys.iter().all(|k| allowed.contains(&k.as_str())),
        "{reply}"
    );
    reply["error"].as_str().unwrap().to_owned()
}

/// A sample of the CCM's `/metrics` (0 when absent).
pub async fn ccm_metric(c: &CcmClient, sample: &str) -> f64 {
    let (s, _) = c.call(Method::GET, "/api/keys/status", None).await;
    assert_eq!(s, 200);
    let mut req = c.http.get(format!("{}/metrics", c.base));
    if let Some((u, p)) = &c.basic {
        req = req.basic_auth(u, Some(p));
    }
    let text = req.send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
