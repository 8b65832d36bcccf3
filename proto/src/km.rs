//! The keymanager's wire contract (docs/keymanager.md), shared by the server (in the CCM) and
//! every client (the Rust SDK, `iotctl key get`); other implementations must match it byte
//! for byte:
//!
//! - topics: requests on `iottalk/km/req/<CLIENT>`, replies on `iottalk/km/res/<CLIENT>`;
//! - the client secret `S = HMAC-SHA256(password, "iotctl-km-v1|" + CLIENT + "|" + MID)`;
//! - a request's `mac = HMAC-SHA256(S, "v1\n" + CLIENT + "\n" + NAME + "\n" + ts + "\n" + nonce)`,
//!   lowercase hex;
//! - a reply's value: ChaCha20-Poly1305 under `HMAC-SHA256(S, "reply")`, a 12-byte iv, with
//!   associated data `"v1\n" + CLIENT + "\n" + NAME + "\n" + nonce`; iv in hex, value base64.
//!
//! Keys live in [`Zeroizing`] buffers. Pure functions: the caller brings the randomness.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// A 32-byte key, wiped when dropped.
pub type Key = Zeroizing<[u8; 32]>;

/// The filter the keymanager subscribes to.
pub const REQ_FILTER: &str = "iottalk/km/req/+";
const REQ_PREFIX: &str = "iottalk/km/req/";
const RES_PREFIX: &str = "iottalk/km/res/";

/// The request topic of `client`.
pub fn req(client: &str) -> String {
    format!("{REQ_PREFIX}{client}")
}

/// The reply topic of `client`.
pub fn res(client: &str) -> String {
    format!("{RES_PREFIX}{client}")
}

/// The client a request topic names (`None`: not a request topic).
pub fn client_of_req(topic: &str) -> Option<&str> {
    topic
        .strip_prefix(REQ_PREFIX)
        .filter(|c| !c.is_empty() && !c.contains('/'))
}

/// Whether `n` may name a key or a client: 1 to 64 ASCII letters, digits, `-`, `_` or `.` (it
/// appears in topics and in the MAC and reply formulas).
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A request as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmRequest {
    pub key: String,
    /// Unix seconds.
    pub ts: i64,
    /// 32 lowercase hex characters, random.
    pub nonce: String,
    /// 64 lowercase hex characters.
    pub mac: String,
}

impl KmRequest {
    /// A request for `key` by `client` with secret `s`, at `ts`, with `nonce` (16 random
    /// bytes from the caller).
    pub fn new(s: &Key, client: &str, key: &str, ts: i64, nonce: [u8; 16]) -> KmRequest {
        let nonce = hex::encode(nonce);
        KmRequest {
            mac: request_mac(s, client, key, ts, &nonce),
            key: key.to_owned(),
            ts,
            nonce,
        }
    }
}

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Reads a request payload. `None`: not a JSON object, which gets no reply.
/// `Some(Err(nonce))`: a JSON object with a missing or malformed field (`bad_request`),
/// with its `nonce` to echo when it has a string of at most 64 characters there.
pub fn parse_request(payload: &[u8]) -> Option<Result<KmRequest, Option<String>>> {
    let v: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => return None,
    };
    let nonce = v
        .get("nonce")
        .and_then(serde_json::Value::as_str)
        .filter(|n| n.len() <= 64)
        .map(str::to_owned);
    let r: KmRequest = match serde_json::from_value(v) {
        Ok(r) => r,
        Err(_) => return Some(Err(nonce)),
    };
    if !valid_name(&r.key) || !lower_hex(&r.nonce, 32) || !lower_hex(&r.mac, 64) {
        return Some(Err(nonce));
    }
    Some(Ok(r))
}

/// A reply: `ok` with `iv` and `value`, or an `error` code (`sealed`, `denied`, `clock`,
/// `replay`, `limited` with `retry_after_ms`, `bad_request`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmReply {
    pub nonce: Option<String>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// Why a reply could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("decryption failed: wrong key, or the data was altered")]
    Open,
    #[error("malformed {0}")]
    Malformed(&'static str),
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Key {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        m.update(p);
    }
    Zeroizing::new(m.finalize().into_bytes().into())
}

/// `S`, the secret a client and the server share.
pub fn client_secret(password: &str, client: &str, machine_id: &str) -> Key {
    hmac(
        password.as_bytes(),
        &[
            b"iotctl-km-v1|",
            client.as_bytes(),
            b"|",
            machine_id.as_bytes(),
        ],
    )
}

/// The text a request's MAC covers.
fn mac_input(client: &str, key: &str, ts: i64, nonce: &str) -> String {
    format!("v1\n{client}\n{key}\n{ts}\n{nonce}")
}

/// A request's MAC, lowercase hex.
pub fn request_mac(s: &Key, client: &str, key: &str, ts: i64, nonce: &str) -> String {
    hex::encode(hmac(s.as_ref(), &[mac_input(client, key, ts, nonce).as_bytes()]).as_ref())
}

/// Whether `mac_hex` is the request's MAC, compared in constant time. A MAC that is not hex
/// is simply wrong.
pub fn verify_mac(s: &Key, client: &str, key: &str, ts: i64, nonce: &str, mac_hex: &str) -> bool {
    let Ok(given) = hex::decode(mac_hex) else {
        return false;
    };
    let mut m = <HmacSha256 as Mac>::new_from_slice(s.as_ref()).unwrap_or_else(|_| unreachable!());
    m.update(mac_input(client, key, ts, nonce).as_bytes());
    m.verify_slice(&given).is_ok()
}

fn reply_cipher(s: &Key) -> ChaCha20Poly1305 {
    let k = hmac(s.as_ref(), &[b"reply"]);
    ChaCha20Poly1305::new(k.as_ref().into())
}

fn reply_aad(client: &str, key: &str, nonce: &str) -> String {
    format!("v1\n{client}\n{key}\n{nonce}")
}

/// A reply's `iv` (24 hex characters) and `value` (base64) for `secret`; `iv` must be fresh
/// and random for every reply.
pub fn encrypt_reply(
    s: &Key,
    client: &str,
    key: &str,
    nonce: &str,
    secret: &[u8],
    iv: [u8; 12],
) -> Result<(String, String), OpenError> {
    let aad = reply_aad(client, key, nonce);
    let ct = reply_cipher(s)
        .encrypt(
            (&iv).into(),
            Payload {
                msg: secret,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| OpenError::Open)?;
    Ok((
        hex::encode(iv),
        base64::engine::general_purpose::STANDARD.encode(ct),
    ))
}

/// The client's side: the secret in a reply.
pub fn decrypt_reply(
    s: &Key,
    client: &str,
    key: &str,
    nonce: &str,
    iv_hex: &str,
    value_b64: &str,
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let iv: [u8; 12] = hex::decode(iv_hex)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or(OpenError::Malformed("iv"))?;
    let ct = base64::engine::general_purpose::STANDARD
        .decode(value_b64)
        .map_err(|_| OpenError::Malformed("value"))?;
    let aad = reply_aad(client, key, nonce);
    reply_cipher(s)
        .decrypt(
            (&iv).into(),
            Payload {
                msg: &ct,
                aad: aad.as_bytes(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| OpenError::Open)
}

#[cfg(test)]
#[path = "km_tests.rs"]
mod tests;
