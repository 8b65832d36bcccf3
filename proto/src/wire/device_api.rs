//! The device API: requests on `iottalk/api/req/<client>/device`, replies and announcements on
//! `iottalk/api/res/<client>/device`. `attach` answers the list of DAs and subscribes the
//! client to announcements (register, online, offline, deregister); `detach` stops them.
//! An `attach` reply too large for one message is sent in pages ([`attach_replies`]).

use serde_json::{Map, Value};

use super::paging;

/// The ops of the device API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceOp {
    Attach,
    Detach,
}

impl DeviceOp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attach => "attach",
            Self::Detach => "detach",
        }
    }
}

/// Why a device-API request was refused; the text is the `reason` of the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceApiError {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("the request must be a JSON object")]
    NotObject,
    #[error("missing field `op`")]
    MissingOp,
    #[error("unknown op: `{0}`")]
    UnknownOp(String),
}

/// A request as received: its fields (echoed in the reply) and its op.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRequest {
    pub fields: Map<String, Value>,
    pub op: DeviceOp,
}

impl DeviceRequest {
    /// Parses a request body; a refusal carries the fields to echo (none when the body was
    /// not a JSON object).
    pub fn parse(payload: &[u8]) -> Result<Self, (Map<String, Value>, DeviceApiError)> {
        let fields = match serde_json::from_slice(payload) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err((Map::new(), DeviceApiError::NotObject)),
            Err(e) => return Err((Map::new(), DeviceApiError::Json(e.to_string()))),
        };
        let op = match fields.get("op").and_then(Value::as_str) {
            Some("attach") => DeviceOp::Attach,
            Some("detach") => DeviceOp::Detach,
            Some(other) => {
                let e = DeviceApiError::UnknownOp(other.to_owned());
                return Err((fields, e));
            }
            None => return Err((fields, DeviceApiError::MissingOp)),
        };
        Ok(Self { fields, op })
    }
}

/// A successful reply: the request's fields, `"state": "ok"`, and for `attach` the DAs
/// (`{<id>: {...record, "state": "online"|"offline"|"nothing"}}`).
pub fn reply_ok(fields: &Map<String, Value>, da_list: Option<Map<String, Value>>) -> Value {
    let mut body = fields.clone();
    body.insert("state".into(), "ok".into());
    if let Some(list) = da_list {
        body.insert("da_list".into(), Value::Object(list));
    }
    Value::Object(body)
}

/// The reply to `attach`: one message when it fits in `limit` bytes, else pages of
/// `da_list` split by DA (see [`paging`](super::paging)). `Err` is the error reply when one
/// DA's record alone does not fit in a page.
pub fn attach_replies(
    fields: &Map<String, Value>,
    da_list: Map<String, Value>,
    limit: usize,
) -> Result<Vec<Value>, Value> {
    let mut head = fields.clone();
    head.insert("state".into(), "ok".into());
    paging::paginate(&head, "da_list", da_list, limit).map_err(|e| {
        paging::too_large_reply(
            &Value::Object(fields.clone()),
            e.bytes,
            limit,
            "a DA's record alone does not fit in one message",
        )
    })
}

/// A refusal: the request's fields (if any), `"state": "error"` and the reason.
pub fn reply_error(fields: &Map<String, Value>, error: &DeviceApiError) -> Value {
    let mut body = fields.clone();
    body.insert("state".into(), "error".into());
    body.insert("reason".into(), error.to_string().into());
    Value::Object(body)
}

/// What an announcement tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnoKind {
    Register,
    Online,
    Offline,
    Deregister,
}

impl AnnoKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Deregister => "deregister",
        }
    }
}

/// `{"op": "anno", "type", "timestamp", "da"}`: `da` is the DA's record with its state, or its
/// id for `deregister`.
pub fn announcement(kind: AnnoKind, timestamp: f64, da: Value) -> Value {
    serde_json::json!({"op": "anno", "type": kind.as_str(), "timestamp": timestamp, "da": da})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reason(body: &[u8]) -> (Map<String, Value>, String) {
        let (fields, e) = DeviceRequest::parse(body).unwrap_err();
        (fields, e.to_string())
    }

    #[test]
    fn requests_parse_and_refusals_say_why() {
        let r = DeviceRequest::parse(br#"{"op":"attach","n":1}"#).unwrap();
        assert_eq!(r.op, DeviceOp::Attach);
        let ok = reply_ok(&r.fields, Some(Map::new()));
        assert_eq!(
            ok,
            json!({"op": "attach", "n": 1, "state": "ok", "da_list": {}})
        );
        assert_eq!(reason(b"[]").1, "the request must be a JSON object");
        assert!(reason(b"{").1.starts_with("malformed JSON: "));
        let (fields, why) = reason(br#"{"op":"fly"}"#);
        assert_eq!(why, "unknown op: `fly`");
        assert_eq!(
            reply_error(&fields, &DeviceApiError::UnknownOp("fly".into())),
            json!({"op": "fly", "state": "error", "reason": "unknown op: `fly`"})
        );
        assert_eq!(reason(b"{}").1, "missing field `op`");
    }

    #[test]
    fn a_long_attach_reply_goes_in_pages_and_a_huge_da_is_an_error() {
        let fields = DeviceRequest::parse(br#"{"op":"attach"}"#).unwrap().fields;
        let list: Map<String, Value> = (0..30)
            .map(|i| (format!("id-{i:02}"), json!({"name": "n".repeat(100)})))
            .collect();
        let one = attach_replies(&fields, list.clone(), 1 << 20).unwrap();
        assert_eq!(one, vec![reply_ok(&fields, Some(list.clone()))]);
        let pages = attach_replies(&fields, list, 1000).unwrap();
        assert!(pages.len() > 3, "{pages:?}");
        assert!(pages
            .iter()
            .all(|p| p["op"] == "attach" && p["state"] == "ok"));
        let mut huge = Map::new();
        huge.insert("big".into(), json!({"name": "n".repeat(2000)}));
        let err = attach_replies(&fields, huge, 1000).unwrap_err();
        assert_eq!(err["op"], "attach");
        assert_eq!(err["state"], "error");
        let why = err["reason"].as_str().unwrap();
        assert!(why.starts_with("reply too large ("), "{why}");
        assert!(why.contains("does not fit in one message"), "{why}");
    }
}
