//! JSON bodies of request/response over MQTT between DAs and apps (topics in
//! [`crate::topics::rpc_req`] and [`crate::topics::rpc_res`]).
//!
//! A request names a `method` and carries `args`. MQTT 5 callers put the reply topic and the
//! correlation id in the PUBLISH properties (response topic, correlation data); every caller
//! also puts them in the body as `reply_to` and `id`, so a server connected with MQTT 3.1.1
//! can answer too. Every request that says where to reply gets exactly one reply:
//!
//! ```text
//! {"id": "...", "method": "set_level", "args": {"level": 3}, "reply_to": "iottalk/rpc/<caller>/res/<nonce>", "deadline_ms": 5000}
//! {"id": "...", "state": "ok", "result": ...}
//! {"id": "...", "state": "error", "code": "handler", "reason": "level out of range"}
//! ```
//!
//! This module does no I/O.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::wire::WireError;

/// One request.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcRequest {
    /// Correlation id, echoed in the reply (the MQTT 3.1.1 fallback for correlation data).
    pub id: Option<String>,
    pub method: String,
    /// Arguments, any JSON (`null` when the caller sent none).
    pub args: Value,
    /// Where to reply (the MQTT 3.1.1 fallback for the response topic).
    pub reply_to: Option<String>,
    /// How long the caller waits, in milliseconds from when it sent the request. A server may
    /// skip or cut short work that cannot finish in time.
    pub deadline_ms: Option<u64>,
    /// A streamed call ([`crate::rpc_stream`]): the window the caller asked for (`"stream":
    /// true` or `{"window": N}`); `None` for a call answered once.
    pub stream: Option<u32>,
}

impl RpcRequest {
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(id) = &self.id {
            m.insert("id".into(), Value::String(id.clone()));
        }
        m.insert("method".into(), Value::String(self.method.clone()));
        m.insert("args".into(), self.args.clone());
        if let Some(r) = &self.reply_to {
            m.insert("reply_to".into(), Value::String(r.clone()));
        }
        if let Some(d) = self.deadline_ms {
            m.insert("deadline_ms".into(), Value::from(d));
        }
        if let Some(w) = self.stream {
            m.insert("stream".into(), serde_json::json!({ "window": w }));
        }
        Value::Object(m)
    }

    /// Parses a request; unknown fields are ignored (room for later additions).
    pub fn from_json(body: &[u8]) -> Result<Self, WireError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
        let Value::Object(mut obj) = v else {
            return Err(WireError::NotObject);
        };
        let opt_str = |obj: &Map<String, Value>, field: &'static str| match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(WireError::Invalid {
                field,
                why: "must be a string".into(),
            }),
        };
        let id = opt_str(&obj, "id")?;
        let reply_to = opt_str(&obj, "reply_to")?;
        let method = opt_str(&obj, "method")?.ok_or(WireError::Missing("method"))?;
        let deadline_ms = match obj.get("deadline_ms") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| WireError::Invalid {
                field: "deadline_ms",
                why: "must be a non-negative integer".into(),
            })?),
        };
        let stream = requested_window(&obj).transpose()?;
        let args = obj.remove("args").unwrap_or(Value::Null);
        Ok(Self {
            id,
            method,
            args,
            reply_to,
            deadline_ms,
            stream,
        })
    }
}

/// Items a server sends ahead of the caller's acknowledgements when the request names none.
pub const DEFAULT_WINDOW: u32 = 16;
/// The largest window a request may ask for.
pub const MAX_WINDOW: u32 = 1024;

/// The window a stream request asks for (`"stream": {"window": N}`, or `"stream": true` for
/// the default); `None` when the request is not a stream request.
pub fn requested_window(request: &Map<String, Value>) -> Option<Result<u32, WireError>> {
    let invalid = |why: &str| WireError::Invalid {
        field: "stream",
        why: why.into(),
    };
    match request.get("stream")? {
        Value::Bool(true) => Some(Ok(DEFAULT_WINDOW)),
        Value::Bool(false) | Value::Null => None,
        Value::Object(o) => Some(match o.get("window") {
            None | Some(Value::Null) => Ok(DEFAULT_WINDOW),
            Some(w) => match w.as_u64() {
                Some(n @ 1..) if n <= u64::from(MAX_WINDOW) => Ok(n as u32),
                _ => Err(invalid("`window` must be 1 to 1024")),
            },
        }),
        _ => Some(Err(invalid("must be true or {\"window\": N}"))),
    }
}

/// Why a request failed, as the `code` of an error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RpcErrorCode {
    /// The target serves no such method.
    UnknownMethod,
    /// The request could not be parsed, or its arguments did not fit the method.
    BadRequest,
    /// The handler ran and failed; `reason` is its error.
    Handler,
    /// The target is running as many requests as it allows; try again later.
    Busy,
    /// The handler did not finish within the request's deadline.
    Deadline,
    /// A code this version does not know.
    #[serde(other)]
    Other,
}

impl RpcErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownMethod => "unknown_method",
            Self::BadRequest => "bad_request",
            Self::Handler => "handler",
            Self::Busy => "busy",
            Self::Deadline => "deadline",
            Self::Other => "other",
        }
    }
}

/// The outcome carried by a reply.
#[derive(Debug, Clone, PartialEq)]
pub enum RpcOutcome {
    Ok(Value),
    Error { code: RpcErrorCode, reason: String },
}

/// The `code` (unknown ones as [`RpcErrorCode::Other`]) and `reason` of an error body.
pub(crate) fn error_fields(obj: &Map<String, Value>) -> (RpcErrorCode, String) {
    let code = obj
        .get("code")
        .cloned()
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or(RpcErrorCode::Other);
    let reason = obj
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("no reason given")
        .to_owned();
    (code, reason)
}

/// One reply.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcReply {
    /// The request's id (or its correlation data, as UTF-8).
    pub id: String,
    pub outcome: RpcOutcome,
}

impl RpcReply {
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), Value::String(self.id.clone()));
        match &self.outcome {
            RpcOutcome::Ok(v) => {
                m.insert("state".into(), "ok".into());
                m.insert("result".into(), v.clone());
            }
            RpcOutcome::Error { code, reason } => {
                m.insert("state".into(), "error".into());
                m.insert("code".into(), code.as_str().into());
                m.insert("reason".into(), Value::String(reason.clone()));
            }
        }
        Value::Object(m)
    }

    /// Parses a reply. `id` may be absent when the caller matches replies by MQTT 5
    /// correlation data instead (the result then has an empty `id`).
    pub fn from_json(body: &[u8]) -> Result<Self, WireError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
        let Value::Object(mut obj) = v else {
            return Err(WireError::NotObject);
        };
        let id = match obj.get("id") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(WireError::Invalid {
                    field: "id",
                    why: "must be a string".into(),
                })
            }
        };
        let outcome = match obj.get("state").and_then(Value::as_str) {
            Some("ok") => RpcOutcome::Ok(obj.remove("result").unwrap_or(Value::Null)),
            Some("error") => {
                let (code, reason) = error_fields(&obj);
                RpcOutcome::Error { code, reason }
            }
            Some(other) => {
                return Err(WireError::Invalid {
                    field: "state",
                    why: format!("expected ok or error, got `{other}`"),
                })
            }
            None => return Err(WireError::Missing("state")),
        };
        Ok(Self { id, outcome })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_round_trips_and_tolerates_extras() {
        let r = RpcRequest {
            id: Some("c1:7".into()),
            method: "set".into(),
            args: json!({"level": 3}),
            reply_to: Some("iottalk/rpc/app/res/n".into()),
            deadline_ms: Some(5000),
            stream: Some(4),
        };
        let body = r.to_json().to_string();
        assert!(body.contains(r#""stream":{"window":4}"#), "{body}");
        assert_eq!(RpcRequest::from_json(body.as_bytes()).unwrap(), r);
        let minimal = RpcRequest::from_json(br#"{"method":"ping","future":1}"#).unwrap();
        assert_eq!(minimal.args, Value::Null);
        assert_eq!(minimal.id, None);
        for (bad, want) in [
            (&b"{"[..], "malformed JSON"),
            (b"[1]", "must be a JSON object"),
            (br#"{"args":1}"#, "missing field `method`"),
            (br#"{"method":1}"#, "field `method`"),
            (br#"{"method":"m","deadline_ms":-1}"#, "deadline_ms"),
        ] {
            let e = RpcRequest::from_json(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should contain {want}");
        }
    }

    #[test]
    fn replies_round_trip() {
        for outcome in [
            RpcOutcome::Ok(json!([1, 2])),
            RpcOutcome::Error {
                code: RpcErrorCode::Handler,
                reason: "boom".into(),
            },
        ] {
            let r = RpcReply {
                id: "x".into(),
                outcome,
            };
            let body = r.to_json().to_string();
            assert_eq!(RpcReply::from_json(body.as_bytes()).unwrap(), r);
        }
        let unknown = RpcReply::from_json(br#"{"state":"error","code":"teapot"}"#).unwrap();
        assert_eq!(
            unknown.outcome,
            RpcOutcome::Error {
                code: RpcErrorCode::Other,
                reason: "no reason given".into()
            }
        );
        assert!(RpcReply::from_json(br#"{"id":"x"}"#).is_err());
    }
}
