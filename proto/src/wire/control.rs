//! The control channel of one DA (spec section 2): signals on `<id>/ctrl/o`, and replies and
//! presence on `<id>/ctrl/i`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::WireError;
use crate::ids::{FeatureName, MsgId, Rev};

/// Online/offline state a DA announces on its uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Online,
    Offline,
}

/// Which side of a DA a feature is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Idf,
    Odf,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idf => "idf",
            Self::Odf => "odf",
        }
    }
}

/// Signal command sent to a DA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    Connect,
    Disconnect,
}

/// A signal on `<id>/ctrl/o`: `{"msg_id", "idf"|"odf", "command", "topic"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub msg_id: MsgId,
    pub direction: Direction,
    pub feature: FeatureName,
    pub command: Command,
    pub topic: String,
}

impl Signal {
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("msg_id".into(), Value::String(self.msg_id.to_string()));
        m.insert(
            self.direction.as_str().into(),
            Value::String(self.feature.to_string()),
        );
        m.insert(
            "command".into(),
            Value::String(match self.command {
                Command::Connect => "CONNECT".into(),
                Command::Disconnect => "DISCONNECT".into(),
            }),
        );
        m.insert("topic".into(), Value::String(self.topic.clone()));
        Value::Object(m)
    }

    /// Parses a signal as a DA receives it (used by the SDK).
    pub fn from_json(body: &[u8]) -> Result<Self, WireError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
        let Value::Object(obj) = v else {
            return Err(WireError::NotObject);
        };
        let msg_id = obj
            .get("msg_id")
            .and_then(Value::as_str)
            .ok_or(WireError::Missing("msg_id"))?;
        let command = match obj.get("command").and_then(Value::as_str) {
            Some("CONNECT") => Command::Connect,
            Some("DISCONNECT") => Command::Disconnect,
            Some(other) => {
                return Err(WireError::invalid(
                    "command",
                    format!("unknown command `{other}`"),
                ))
            }
            None => return Err(WireError::Missing("command")),
        };
        let (direction, feature) = match (obj.get("idf"), obj.get("odf")) {
            (Some(Value::String(f)), None) => (Direction::Idf, f),
            (None, Some(Value::String(f))) => (Direction::Odf, f),
            _ => {
                return Err(WireError::invalid(
                    "idf",
                    "exactly one of `idf` and `odf` is required",
                ))
            }
        };
        let feature = feature
            .parse()
            .map_err(|e| WireError::invalid("idf", format!("{e}")))?;
        let topic = obj
            .get("topic")
            .and_then(Value::as_str)
            .ok_or(WireError::Missing("topic"))?;
        Ok(Self {
            msg_id: MsgId::from(msg_id.to_owned()),
            direction,
            feature,
            command,
            topic: topic.to_owned(),
        })
    }
}

/// Outcome of a signal as reported by the DA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Ack {
    Ok,
    Error { reason: String },
}

/// A message on a DA's uplink `<id>/ctrl/i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uplink {
    /// `{"state": "online"|"offline", "rev"}`
    Presence { state: Presence, rev: Rev },
    /// `{"msg_id", "state": "ok"}` or `{"msg_id", "state": "error", "reason"}`
    Reply { msg_id: MsgId, ack: Ack },
}

impl Uplink {
    pub fn from_json(body: &[u8]) -> Result<Self, WireError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
        let Value::Object(obj) = v else {
            return Err(WireError::NotObject);
        };
        let state = obj
            .get("state")
            .and_then(Value::as_str)
            .ok_or(WireError::Missing("state"))?;
        if let Some(msg_id) = obj.get("msg_id") {
            let msg_id = msg_id
                .as_str()
                .ok_or_else(|| WireError::invalid("msg_id", "must be a string"))?;
            let ack = match state {
                "ok" => Ack::Ok,
                "error" => Ack::Error {
                    reason: obj
                        .get("reason")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given")
                        .to_owned(),
                },
                other => {
                    return Err(WireError::invalid(
                        "state",
                        format!("expected ok or error, got `{other}`"),
                    ))
                }
            };
            return Ok(Self::Reply {
                msg_id: MsgId::from(msg_id.to_owned()),
                ack,
            });
        }
        let state = match state {
            "online" => Presence::Online,
            "offline" => Presence::Offline,
            other => {
                return Err(WireError::invalid(
                    "state",
                    format!("expected online or offline, got `{other}`"),
                ))
            }
        };
        let rev = obj
            .get("rev")
            .and_then(Value::as_str)
            .ok_or(WireError::Missing("rev"))?;
        Ok(Self::Presence {
            state,
            rev: Rev::from(rev.to_owned()),
        })
    }

    /// `{"state": ..., "rev": ...}` as a DA publishes it.
    pub fn presence_json(state: Presence, rev: &Rev) -> Value {
        serde_json::json!({ "state": state, "rev": rev })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uplink_messages_parse() {
        assert_eq!(
            Uplink::from_json(br#"{"state":"online","rev":"r1"}"#).unwrap(),
            Uplink::Presence {
                state: Presence::Online,
                rev: Rev::from("r1".to_owned())
            }
        );
        assert_eq!(
            Uplink::from_json(br#"{"msg_id":"m","state":"error","reason":"nope"}"#).unwrap(),
            Uplink::Reply {
                msg_id: MsgId::from("m".to_owned()),
                ack: Ack::Error {
                    reason: "nope".into()
                }
            }
        );
        assert!(Uplink::from_json(b"garbage").is_err());
        assert!(Uplink::from_json(br#"{"state":"sleeping","rev":"r"}"#).is_err());
    }

    #[test]
    fn signal_round_trips() {
        let s = Signal {
            msg_id: MsgId::generate(),
            direction: Direction::Odf,
            feature: "Dummy_Control".parse().unwrap(),
            command: Command::Connect,
            topic: "iottalk/esm/x".into(),
        };
        let json = serde_json::to_vec(&s.to_json()).unwrap();
        assert_eq!(Signal::from_json(&json).unwrap(), s);
    }
}
