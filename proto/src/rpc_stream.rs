//! Streamed replies (issue 13; the SDK's `serve_stream`/`call_stream` build on it): a served
//! method may answer one request with many numbered messages on the caller's reply topic,
//! flow-controlled by the caller's acknowledgements on the server's request topic:
//!
//! ```text
//! caller -> iottalk/rpc/<target>/req   {"id", "method", "args", "reply_to", "stream": {"window": 16}}
//! server -> reply_to                   {"id", "seq": 0, "item": ...}
//! server -> reply_to                   {"id", "seq": 1, "item": ...}
//! caller -> iottalk/rpc/<target>/req   {"id", "ack": 1}            (every item up to 1 arrived)
//! server -> reply_to                   {"id", "seq": 2, "state": "end"}
//!                                      {"id", "seq": 2, "state": "error", "code", "reason"}
//! caller -> iottalk/rpc/<target>/req   {"id", "cancel": true}      (the caller stopped reading)
//! ```
//!
//! The server sends item `n` only while `n <= acked + window` ([`Window`]); the caller hands
//! items on in order, each once, whatever order or repetition the broker delivers them in
//! ([`Reorder`]). This module does no I/O.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

// The request's `stream` field is read with the request (`crate::rpc`).
use crate::rpc::RpcErrorCode;
pub use crate::rpc::{requested_window, DEFAULT_WINDOW, MAX_WINDOW};
use crate::wire::WireError;

/// A message of a stream, server to caller.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamMsg {
    Item {
        id: String,
        seq: u64,
        item: Value,
    },
    /// The stream ended after `seq` items.
    End {
        id: String,
        seq: u64,
    },
    /// The stream failed after `seq` items.
    Failed {
        id: String,
        seq: u64,
        code: RpcErrorCode,
        reason: String,
    },
}

impl StreamMsg {
    pub fn id(&self) -> &str {
        match self {
            Self::Item { id, .. } | Self::End { id, .. } | Self::Failed { id, .. } => id,
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            Self::Item { seq, .. } | Self::End { seq, .. } | Self::Failed { seq, .. } => *seq,
        }
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), self.id().into());
        m.insert("seq".into(), self.seq().into());
        match self {
            Self::Item { item, .. } => {
                m.insert("item".into(), item.clone());
            }
            Self::End { .. } => {
                m.insert("state".into(), "end".into());
            }
            Self::Failed { code, reason, .. } => {
                m.insert("state".into(), "error".into());
                m.insert("code".into(), code.as_str().into());
                m.insert("reason".into(), reason.as_str().into());
            }
        }
        Value::Object(m)
    }

    /// Parses a stream message; `Ok(None)` for a JSON object without `seq` (a plain reply).
    pub fn from_json(body: &[u8]) -> Result<Option<Self>, WireError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
        let Value::Object(mut obj) = v else {
            return Err(WireError::NotObject);
        };
        let Some(seq) = obj.get("seq") else {
            return Ok(None);
        };
        let seq = seq.as_u64().ok_or_else(|| WireError::Invalid {
            field: "seq",
            why: "must be a non-negative integer".into(),
        })?;
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
        if let Some(item) = obj.remove("item") {
            return Ok(Some(Self::Item { id, seq, item }));
        }
        match obj.get("state").and_then(Value::as_str) {
            Some("end") => Ok(Some(Self::End { id, seq })),
            Some("error") => {
                let (code, reason) = crate::rpc::error_fields(&obj);
                Ok(Some(Self::Failed {
                    id,
                    seq,
                    code,
                    reason,
                }))
            }
            _ => Err(WireError::Invalid {
                field: "state",
                why: "a stream message has `item`, or `state` end or error".into(),
            }),
        }
    }
}

/// A caller's message about a stream, on the server's request topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamControl {
    /// Every item up to `seq` arrived.
    Ack { id: String, seq: u64 },
    /// The caller stopped reading: stop producing.
    Cancel { id: String },
}

impl StreamControl {
    pub fn to_json(&self) -> Value {
        match self {
            Self::Ack { id, seq } => serde_json::json!({"id": id, "ack": seq}),
            Self::Cancel { id } => serde_json::json!({"id": id, "cancel": true}),
        }
    }

    /// Reads a message on a request topic: `None` when it is not a stream control (it has a
    /// `method`, or neither `ack` nor `cancel`), so it goes on as a request.
    pub fn parse(body: &[u8]) -> Option<Result<Self, WireError>> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let obj = v.as_object()?;
        if obj.contains_key("method") || !(obj.contains_key("ack") || obj.contains_key("cancel")) {
            return None;
        }
        let Some(id) = obj.get("id").and_then(Value::as_str).map(str::to_owned) else {
            return Some(Err(WireError::Missing("id")));
        };
        Some(match (obj.get("ack"), obj.get("cancel")) {
            (Some(a), None) => {
                a.as_u64()
                    .map(|seq| Self::Ack { id, seq })
                    .ok_or_else(|| WireError::Invalid {
                        field: "ack",
                        why: "must be a non-negative integer".into(),
                    })
            }
            (None, Some(Value::Bool(true))) => Ok(Self::Cancel { id }),
            (None, Some(_)) => Err(WireError::Invalid {
                field: "cancel",
                why: "must be true".into(),
            }),
            _ => Err(WireError::Invalid {
                field: "ack",
                why: "`ack` and `cancel` do not go together".into(),
            }),
        })
    }
}

/// The server's side of flow control: which item may go out next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    window: u64,
    /// The next item's number.
    next: u64,
    /// Items below this arrived (acknowledged).
    acked: u64,
}

impl Window {
    pub fn new(window: u32) -> Window {
        Window {
            window: u64::from(window.clamp(1, MAX_WINDOW)),
            next: 0,
            acked: 0,
        }
    }

    /// Whether item [`next`](Self::next) may be sent now.
    pub fn may_send(&self) -> bool {
        self.next < self.acked + self.window
    }

    /// The number of the next item.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Counts an item sent; returns its number.
    pub fn sent(&mut self) -> u64 {
        let n = self.next;
        self.next += 1;
        n
    }

    /// An acknowledgement of every item up to `seq`; one for an item not sent yet, or older
    /// than the last, changes nothing. Returns whether it opened the window.
    pub fn ack(&mut self, seq: u64) -> bool {
        if seq >= self.next || seq < self.acked {
            return false;
        }
        self.acked = seq + 1;
        true
    }

    /// Items sent and not yet acknowledged.
    pub fn in_flight(&self) -> u64 {
        self.next - self.acked
    }
}

/// Why [`Reorder::push`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stream message {seq} is beyond the window (expected {next} to {last})")]
pub struct BeyondWindow {
    pub seq: u64,
    pub next: u64,
    pub last: u64,
}

/// The caller's side: messages handed on in order, each once.
#[derive(Debug)]
pub struct Reorder<T> {
    window: u64,
    next: u64,
    waiting: BTreeMap<u64, T>,
}

impl<T> Reorder<T> {
    pub fn new(window: u32) -> Reorder<T> {
        Reorder {
            window: u64::from(window.clamp(1, MAX_WINDOW)),
            next: 0,
            waiting: BTreeMap::new(),
        }
    }

    /// Takes message `seq`: a repeat of one handed on is dropped (`Ok`), one past what the
    /// server may send ahead (the window, and the end message after it) is refused.
    pub fn push(&mut self, seq: u64, msg: T) -> Result<(), BeyondWindow> {
        let last = self.next + self.window;
        if seq < self.next {
            return Ok(());
        }
        if seq > last {
            return Err(BeyondWindow {
                seq,
                next: self.next,
                last,
            });
        }
        self.waiting.entry(seq).or_insert(msg);
        Ok(())
    }

    /// The next message in order, if it arrived.
    pub fn pop(&mut self) -> Option<T> {
        let m = self.waiting.remove(&self.next)?;
        self.next += 1;
        Some(m)
    }

    /// The number of the next message to hand on; everything before it was handed on.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Messages held for a gap before them.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
#[path = "rpc_stream_tests.rs"]
mod tests;
