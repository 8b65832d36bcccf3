//! The HTTP registration API (spec section 1): the body of `PUT /{id}` and its reply, the
//! record `GET /{id}` shows, the body of `DELETE /{id}`, and the error body of every failure.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{brief, WireError};
use crate::ids::{DaId, FeatureName, Rev};

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

/// Why a string with a control character is refused. Every `char::is_control` counts: C0
/// (NUL, `\t`, `\n`, `\r`, ...), DEL and C1; names, models and profile fields are shown in
/// logs and GUIs, where one could forge a line (feature names are refused the same way).
const CONTROL_CHARS: &str = "must not contain control characters (such as newline, tab or NUL)";

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// The server's refusal of control characters in a registration's `name` and `profile`, for
/// a client that wants to refuse such a body before sending it (same reasons).
pub fn refuse_control_chars(
    name: Option<&str>,
    profile: &serde_json::Map<String, Value>,
) -> Result<(), WireError> {
    if name.is_some_and(has_control) {
        return Err(WireError::invalid("name", CONTROL_CHARS));
    }
    profile_without_control(profile)
}

fn profile_without_control(profile: &serde_json::Map<String, Value>) -> Result<(), WireError> {
    match control_in(&Value::Object(profile.clone()), "") {
        None => Ok(()),
        Some(path) if path.is_empty() => Err(WireError::invalid("profile", CONTROL_CHARS)),
        Some(path) => Err(WireError::invalid(
            "profile",
            format!("`{path}` {CONTROL_CHARS}"),
        )),
    }
}

/// Where in `v` a string (a value or an object key) has a control character: the dotted
/// path below `at` (`model`, `extra.0`), the key itself shown escaped when it is the culprit.
pub(crate) fn control_in(v: &Value, at: &str) -> Option<String> {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_owned()
        } else {
            format!("{at}.{k}")
        }
    };
    match v {
        Value::String(s) if has_control(s) => Some(at.to_owned()),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| control_in(x, &join(&i.to_string()))),
        Value::Object(m) => m.iter().find_map(|(k, x)| {
            if has_control(k) {
                Some(join(&format!("{k:?}")))
            } else {
                control_in(x, &join(k))
            }
        }),
        _ => None,
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
            Some(Value::String(s)) if has_control(s) => {
                return Err(WireError::invalid("name", CONTROL_CHARS))
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
            // The IoTtalk JavaScript SDK sends its default as a bare string (`'mqtt'`).
            Some(Value::String(s)) => vec![s.clone()],
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
        if accept_protos.iter().any(|p| has_control(p)) {
            return Err(WireError::invalid("accept_protos", CONTROL_CHARS));
        }
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
        profile_without_control(&profile)?;
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

    /// iottalk-js's default: `accept_protos: 'mqtt'`; a string that is not "mqtt" is still
    /// refused.
    #[test]
    fn a_bare_protocol_string_is_a_list_of_one() {
        let r = reg(r#"{"accept_protos":"mqtt","profile":{"model":"M"}}"#).unwrap();
        assert_eq!(r.accept_protos, ["mqtt"]);
        assert!(reg(r#"{"accept_protos":"http","profile":{"model":"M"}}"#).is_err());
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
    fn control_characters_are_refused_in_every_string_field() {
        let cases = [
            (r#""name":"a\nFORGED","#, "", "field `name`"),
            (r#""name":"a\u0000b","#, "", "field `name`"),
            (r#""name":"a\tb","#, "", "field `name`"),
            (r#""name":"a\u0085b","#, "", "field `name`"),
            ("", r#""model":"M\r\nX""#, "field `profile`: `model`"),
            ("", r#""model":"M","u_name":"u\u007f""#, "`u_name`"),
            ("", r#""model":"M","x":{"y":["ok","b\nad"]}"#, "`x.y.1`"),
            ("", r#""model":"M","k\nK":1"#, r#"`"k\nK"`"#),
        ];
        for (top, profile, want) in cases {
            let body = format!(
                r#"{{{top}"accept_protos":["mqtt"],"profile":{{{}}}}}"#,
                if profile.is_empty() {
                    r#""model":"M""#
                } else {
                    profile
                }
            );
            let err = reg(&body).unwrap_err().to_string();
            assert!(err.contains(want), "{body}: got `{err}`, want `{want}`");
            assert!(err.contains("control characters"), "{body}: `{err}`");
            assert!(
                !err.contains('\n'),
                "the reason itself has no newline: {err:?}"
            );
        }
        let err = reg(r#"{"accept_protos":["mqtt","x\n"],"profile":{"model":"M"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `accept_protos`"), "{err}");
        // Non-ASCII that is not a control character is fine.
        reg(r#"{"name":"感測器 ü","accept_protos":["mqtt"],"profile":{"model":"Ω","u_name":"é"}}"#)
            .unwrap();
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
}
