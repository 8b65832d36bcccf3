//! JSON bodies of the protocol. Inbound bodies are parsed by hand-written functions rather than
//! plain `serde` derives so that each mistake gets its own clear reason (the Python SDK shows
//! `reason` to its user verbatim), and so that the odd shapes real SDKs send are accepted.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{DaId, FeatureName, MsgId, Rev};

/// Why an inbound body was refused; the text is the `reason` sent back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("the body must be a JSON object")]
    NotObject,
    #[error("unknown field `{0}`")]
    UnknownField(String),
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}`: {why}")]
    Invalid { field: &'static str, why: String },
}

impl WireError {
    fn invalid(field: &'static str, why: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            why: why.into(),
        }
    }
}

/// One device feature as registered: its name and its `units` (any JSON, kept as sent).
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    pub name: FeatureName,
    pub units: Value,
}

impl Feature {
    /// Number of values the feature carries: the length of `units` when it is a list, else 1.
    pub fn width(&self) -> usize {
        match &self.units {
            Value::Array(a) if !a.is_empty() => a.len(),
            _ => 1,
        }
    }
}

impl Serialize for Feature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.name, &self.units).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Feature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        parse_feature(&v, "feature")
            .map_err(serde::de::Error::custom)?
            .ok_or_else(|| serde::de::Error::custom("null feature"))
    }
}

/// Parses one entry of `idf_list`/`odf_list`: `[name, units]`, `[name]`, a bare `"name"`,
/// or `null` (Java sends `[null]` for "none"), which yields `None`.
fn parse_feature(v: &Value, field: &'static str) -> Result<Option<Feature>, WireError> {
    let (name, units) = match v {
        Value::Null => return Ok(None),
        Value::String(s) => (s.as_str(), Value::Array(vec![Value::Null])),
        Value::Array(a) => match a.as_slice() {
            [Value::String(s)] => (s.as_str(), Value::Array(vec![Value::Null])),
            [Value::String(s), units] => (s.as_str(), units.clone()),
            _ => {
                return Err(WireError::invalid(
                    field,
                    format!("each entry must be [feature_name, units], got {}", brief(v)),
                ))
            }
        },
        other => {
            return Err(WireError::invalid(
                field,
                format!(
                    "each entry must be [feature_name, units], got {}",
                    brief(other)
                ),
            ))
        }
    };
    let name = name
        .parse()
        .map_err(|e| WireError::invalid(field, format!("{e}")))?;
    Ok(Some(Feature { name, units }))
}

fn parse_feature_list(v: Option<&Value>, field: &'static str) -> Result<Vec<Feature>, WireError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(WireError::invalid(
                field,
                format!("must be a list, got {}", brief(other)),
            ))
        }
    };
    let mut out: Vec<Feature> = Vec::with_capacity(list.len());
    for entry in list {
        if let Some(f) = parse_feature(entry, field)? {
            if out.iter().any(|o| o.name == f.name) {
                return Err(WireError::invalid(
                    field,
                    format!("duplicate feature `{}`", f.name),
                ));
            }
            out.push(f);
        }
    }
    Ok(out)
}

/// A short description of a JSON value for error messages (never the whole value).
fn brief(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        let cut = (0..=60).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        format!("{}...", &s[..cut])
    } else {
        s
    }
}

/// Longest DA name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Body of `PUT /{id}`.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterRequest {
    pub name: Option<String>,
    pub idf_list: Vec<Feature>,
    pub odf_list: Vec<Feature>,
    pub accept_protos: Vec<String>,
    /// Kept exactly as sent; contains a string `model`.
    pub profile: Map<String, Value>,
}

impl RegisterRequest {
    const FIELDS: [&'static str; 5] = ["name", "idf_list", "odf_list", "accept_protos", "profile"];

    /// Parses and validates a registration body.
    pub fn from_json(body: &[u8]) -> Result<Self, WireError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
        let Value::Object(obj) = v else {
            return Err(WireError::NotObject);
        };
        if let Some(unknown) = obj.keys().find(|k| !Self::FIELDS.contains(&k.as_str())) {
            return Err(WireError::UnknownField(brief(&Value::String(
                unknown.clone(),
            ))));
        }
        let name = match obj.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err(WireError::invalid("name", "must not be empty"))
            }
            Some(Value::String(s)) if s.len() > MAX_NAME_BYTES => {
                return Err(WireError::invalid("name", "must be at most 256 bytes"))
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(WireError::invalid(
                    "name",
                    format!("must be a string, got {}", brief(other)),
                ))
            }
        };
        let accept_protos = match obj.get("accept_protos") {
            None | Some(Value::Null) => return Err(WireError::Missing("accept_protos")),
            Some(Value::Array(a)) => a
                .iter()
                .map(|p| p.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| WireError::invalid("accept_protos", "must be a list of strings"))?,
            Some(other) => {
                return Err(WireError::invalid(
                    "accept_protos",
                    format!("must be a list of strings, got {}", brief(other)),
                ))
            }
        };
        if accept_protos.is_empty() {
            return Err(WireError::invalid("accept_protos", "must not be empty"));
        }
        if !accept_protos.iter().any(|p| p == "mqtt") {
            return Err(WireError::invalid(
                "accept_protos",
                "this server speaks only \"mqtt\"",
            ));
        }
        let profile = match obj.get("profile") {
            None | Some(Value::Null) => return Err(WireError::Missing("profile")),
            Some(Value::Object(p)) => p.clone(),
            Some(other) => {
                return Err(WireError::invalid(
                    "profile",
                    format!("must be an object, got {}", brief(other)),
                ))
            }
        };
        match profile.get("model") {
            Some(Value::String(m)) if !m.trim().is_empty() => {}
            Some(Value::String(_)) => {
                return Err(WireError::invalid("profile", "`model` must not be empty"))
            }
            None | Some(Value::Null) => return Err(WireError::Missing("profile.model")),
            Some(_) => return Err(WireError::invalid("profile", "`model` must be a string")),
        }
        Ok(Self {
            name,
            idf_list: parse_feature_list(obj.get("idf_list"), "idf_list")?,
            odf_list: parse_feature_list(obj.get("odf_list"), "odf_list")?,
            accept_protos,
            profile,
        })
    }

    /// The body as a DA sends it: `name` only when set, feature lists only when non-empty
    /// (as the Python SDK does), `accept_protos` and `profile` always.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(n) = &self.name {
            m.insert("name".into(), Value::String(n.clone()));
        }
        let list = |fs: &[Feature]| {
            Value::Array(
                fs.iter()
                    .map(|f| Value::Array(vec![Value::String(f.name.to_string()), f.units.clone()]))
                    .collect(),
            )
        };
        if !self.idf_list.is_empty() {
            m.insert("idf_list".into(), list(&self.idf_list));
        }
        if !self.odf_list.is_empty() {
            m.insert("odf_list".into(), list(&self.odf_list));
        }
        m.insert(
            "accept_protos".into(),
            Value::Array(
                self.accept_protos
                    .iter()
                    .map(|p| Value::String(p.clone()))
                    .collect(),
            ),
        );
        m.insert("profile".into(), Value::Object(self.profile.clone()));
        Value::Object(m)
    }

    /// The device model name (`profile.model`).
    pub fn model(&self) -> &str {
        self.profile
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// The broker address a DA must connect to, as sent in the registration reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerUrl {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub ws_scheme: String,
    pub ws_port: u16,
}

/// Body of a successful `PUT /{id}` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub id: DaId,
    pub state: String,
    pub rev: Rev,
    pub name: String,
    pub url: BrokerUrl,
    pub ctrl_chans: [String; 2],
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// A registered DA as `GET /{id}` and the device API show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaRecord {
    pub id: DaId,
    pub rev: Rev,
    /// Seconds since the Unix epoch.
    pub register_time: f64,
    pub name: String,
    pub accept_protos: Vec<String>,
    pub idf_list: Vec<Feature>,
    pub odf_list: Vec<Feature>,
    pub profile: Map<String, Value>,
}

impl DaRecord {
    /// The feature `name` in the IDF list (`idf == true`) or the ODF list.
    pub fn feature(&self, idf: bool, name: &FeatureName) -> Option<&Feature> {
        let list = if idf { &self.idf_list } else { &self.odf_list };
        list.iter().find(|f| &f.name == name)
    }
}

/// Body of `DELETE /{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeregisterRequest {
    pub rev: Rev,
}

impl DeregisterRequest {
    pub fn from_json(body: &[u8]) -> Result<Self, WireError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| WireError::Json(e.to_string()))?;
        let Value::Object(obj) = v else {
            return Err(WireError::NotObject);
        };
        if let Some(unknown) = obj.keys().find(|k| k.as_str() != "rev") {
            return Err(WireError::UnknownField(brief(&Value::String(
                unknown.clone(),
            ))));
        }
        match obj.get("rev") {
            Some(Value::String(r)) => Ok(Self {
                rev: Rev::from(r.clone()),
            }),
            None | Some(Value::Null) => Err(WireError::Missing("rev")),
            Some(_) => Err(WireError::invalid("rev", "must be a string")),
        }
    }
}

/// The error body of every failed HTTP request: `{"id", "state": "error", "reason"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub id: String,
    pub state: String,
    pub reason: String,
}

impl ErrorBody {
    pub fn new(id: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            state: "error".into(),
            reason: reason.into(),
        }
    }
}

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

    fn reg(body: &str) -> Result<RegisterRequest, WireError> {
        RegisterRequest::from_json(body.as_bytes())
    }

    #[test]
    fn python_dai_body_is_accepted() {
        let r = reg(r#"{"name":"IDF_DA","idf_list":[["Dummy_Sensor",["dB"]]],"accept_protos":["mqtt"],
            "profile":{"model":"Dummy_Device","u_name":null,"extra_setup_webpage":"","device_webpage":""}}"#)
        .unwrap();
        assert_eq!(r.name.as_deref(), Some("IDF_DA"));
        assert_eq!(r.idf_list[0].name.as_str(), "Dummy_Sensor");
        assert_eq!(r.idf_list[0].width(), 1);
        assert!(r.odf_list.is_empty());
        assert_eq!(r.model(), "Dummy_Device");
    }

    #[test]
    fn odd_feature_shapes_real_clients_send() {
        let r = reg(
            r#"{"idf_list":[null],"odf_list":["Bare",["Units","idf"],["Two",["a","b"]]],
            "accept_protos":["mqtt"],"profile":{"model":"M"}}"#,
        )
        .unwrap();
        assert!(r.idf_list.is_empty());
        assert_eq!(r.odf_list.len(), 3);
        assert_eq!(r.odf_list[2].width(), 2);
    }

    #[test]
    fn each_mistake_has_its_reason() {
        let cases = [
            ("{", "malformed JSON"),
            ("[]", "must be a JSON object"),
            (
                r#"{"profile":{"model":"M"}}"#,
                "missing field `accept_protos`",
            ),
            (r#"{"accept_protos":["mqtt"]}"#, "missing field `profile`"),
            (
                r#"{"accept_protos":["mqtt"],"profile":{}}"#,
                "missing field `profile.model`",
            ),
            (
                r#"{"accept_protos":["mqtt"],"profile":{"model":"M"},"bogus":1}"#,
                "unknown field `\"bogus\"`",
            ),
            (
                r#"{"accept_protos":["mqtt"],"profile":{"model":"M"},"idf_list":{"a":1}}"#,
                "idf_list",
            ),
            (
                r#"{"accept_protos":["mqtt"],"profile":{"model":"M"},"idf_list":[[1,2]]}"#,
                "[feature_name, units]",
            ),
            (
                r#"{"accept_protos":["mqtt"],"profile":{"model":"M"},"idf_list":["a","a"]}"#,
                "duplicate",
            ),
            (
                r#"{"accept_protos":[],"profile":{"model":"M"}}"#,
                "must not be empty",
            ),
            (
                r#"{"accept_protos":["http"],"profile":{"model":"M"}}"#,
                "only \"mqtt\"",
            ),
        ];
        for (body, want) in cases {
            let err = reg(body).unwrap_err().to_string();
            assert!(err.contains(want), "{body}: got `{err}`, want `{want}`");
        }
    }

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
    fn register_request_round_trips_through_to_json() {
        let r = reg(
            r#"{"name":"N","idf_list":[["A",["dB"]]],"accept_protos":["mqtt"],"profile":{"model":"M","k":1}}"#,
        )
        .unwrap();
        let v = r.to_json();
        assert!(v.get("odf_list").is_none(), "empty lists are left out: {v}");
        let back = RegisterRequest::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(back, r);
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
