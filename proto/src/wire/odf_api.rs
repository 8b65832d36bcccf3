//! The ODF-write API: requests on `iottalk/api/req/<client>/odf`, replies on
//! `iottalk/api/res/<client>/odf`. A request `{"da": "<id>", "odf": "<name>", "data": [..]}`
//! hands `data` to that ODF of that DA as if a graph had routed it there; the reply is the
//! request's fields (a `nonce` among them) with `"state": "ok"`, or `"state": "error"` and a
//! `reason`. Admin-only (docs/security.md). Not here: the checks against the registry (DA
//! known, online, ODF linked), which the CSM makes, though their reasons are listed here.

use serde_json::{Map, Value};

use super::{brief, check_depth, MAX_DEPTH};
use crate::{DaId, FeatureName};

/// Why an ODF write was refused; the text is the `reason` of the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OdfApiError {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("the request must be a JSON object")]
    NotObject,
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `da` must be a DA id (a lowercase hyphenated UUID), not {0}")]
    BadDa(String),
    #[error("field `odf` must be a feature name (1 to 256 bytes, no control characters), not {0}")]
    BadOdf(String),
    #[error(
        "field `data` must be a JSON array, as routed data (e.g. [1] or [0.5, \"on\"]), not {0}"
    )]
    DataNotArray(String),
    #[error("field `data` is nested deeper than {MAX_DEPTH} levels")]
    DataTooDeep,
    #[error("data too large ({bytes} bytes > broker.max_payload_bytes {limit})")]
    TooLarge { bytes: usize, limit: usize },
    #[error("DA {0} is not registered")]
    UnknownDa(DaId),
    #[error("DA {da} has no ODF `{odf}`")]
    NoOdf { da: DaId, odf: FeatureName },
    #[error("DA {0} is offline: nothing would receive the value")]
    Offline(DaId),
    #[error("ODF `{odf}` of DA {da} is in no graph: link it in a project first")]
    Unlinked { da: DaId, odf: FeatureName },
    #[error("ODF `{odf}` of DA {da} is linked but its DA has not subscribed yet (no reply to CONNECT): try again in a moment")]
    NotSubscribed { da: DaId, odf: FeatureName },
}

/// A request as received: its fields (echoed in the reply), the target ODF and the data.
#[derive(Debug, Clone, PartialEq)]
pub struct OdfWrite {
    pub fields: Map<String, Value>,
    pub da: DaId,
    pub odf: FeatureName,
    /// A JSON array, published as it is on the ODF's data topic.
    pub data: Value,
}

impl OdfWrite {
    /// Parses a request body; a refusal carries the fields to echo (none when the body was
    /// not a JSON object).
    pub fn parse(payload: &[u8]) -> Result<Self, (Map<String, Value>, OdfApiError)> {
        let fields = match serde_json::from_slice(payload) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err((Map::new(), OdfApiError::NotObject)),
            Err(e) => return Err((Map::new(), OdfApiError::Json(e.to_string()))),
        };
        match Self::check(&fields) {
            Ok((da, odf, data)) => Ok(Self {
                fields,
                da,
                odf,
                data,
            }),
            Err(e) => Err((fields, e)),
        }
    }

    fn check(fields: &Map<String, Value>) -> Result<(DaId, FeatureName, Value), OdfApiError> {
        let da = match fields.get("da") {
            None => return Err(OdfApiError::Missing("da")),
            Some(Value::String(s)) => s.parse().map_err(|_| OdfApiError::BadDa(brief_str(s)))?,
            Some(other) => return Err(OdfApiError::BadDa(brief(other))),
        };
        let odf = match fields.get("odf") {
            None => return Err(OdfApiError::Missing("odf")),
            Some(Value::String(s)) => s.parse().map_err(|_| OdfApiError::BadOdf(brief_str(s)))?,
            Some(other) => return Err(OdfApiError::BadOdf(brief(other))),
        };
        let data = match fields.get("data") {
            None => return Err(OdfApiError::Missing("data")),
            Some(v @ Value::Array(_)) => v.clone(),
            Some(other) => return Err(OdfApiError::DataNotArray(brief(other))),
        };
        check_depth(&data).map_err(|_| OdfApiError::DataTooDeep)?;
        Ok((da, odf, data))
    }

    /// The body a client sends (it adds its correlation `nonce`).
    pub fn request_body(da: &DaId, odf: &str, data: Value) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("da".into(), da.to_string().into());
        m.insert("odf".into(), odf.into());
        m.insert("data".into(), data);
        m
    }
}

/// A string shown in a reason: quoted, at most 60 characters.
fn brief_str(s: &str) -> String {
    brief(&Value::String(s.to_owned()))
}

/// A success: the request's fields and `"state": "ok"`.
pub fn reply_ok(fields: &Map<String, Value>) -> Value {
    let mut body = fields.clone();
    body.insert("state".into(), "ok".into());
    Value::Object(body)
}

/// A refusal: the request's fields (if any), `"state": "error"` and the reason.
pub fn reply_error(fields: &Map<String, Value>, error: &OdfApiError) -> Value {
    let mut body = fields.clone();
    body.insert("state".into(), "error".into());
    body.insert("reason".into(), error.to_string().into());
    Value::Object(body)
}

/// A reply as a client reads it: its `nonce` and its outcome (the reason of a refusal).
/// `None` when the body is not a reply (not an object, or no `state`).
pub fn read_reply(payload: &[u8]) -> Option<(Option<String>, Result<(), String>)> {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(payload) else {
        return None;
    };
    let nonce = m.get("nonce").and_then(Value::as_str).map(str::to_owned);
    let outcome = match m.get("state").and_then(Value::as_str)? {
        "ok" => Ok(()),
        _ => Err(m
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("refused without a reason")
            .to_owned()),
    };
    Some((nonce, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DA: &str = "df682f01-7c3a-49fd-8f5f-72ce0b6e68c0";

    fn reason(body: Value) -> (Map<String, Value>, String) {
        let (fields, e) = OdfWrite::parse(body.to_string().as_bytes()).unwrap_err();
        (fields, e.to_string())
    }

    #[test]
    fn a_request_parses_and_its_reply_echoes_it() {
        let body = json!({"da": DA, "odf": "Switch", "data": [1, "on"], "nonce": "n1", "x": 2});
        let w = OdfWrite::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(w.da.to_string(), DA);
        assert_eq!(w.odf.as_str(), "Switch");
        assert_eq!(w.data, json!([1, "on"]));
        let mut ok = body.clone();
        ok["state"] = json!("ok");
        assert_eq!(reply_ok(&w.fields), ok);
        assert_eq!(
            read_reply(ok.to_string().as_bytes()),
            Some((Some("n1".into()), Ok(())))
        );
        let sent = Value::Object(OdfWrite::request_body(&w.da, "Switch", json!([0])));
        let back = OdfWrite::parse(sent.to_string().as_bytes()).unwrap();
        assert_eq!((back.da, back.data), (w.da, json!([0])));
    }

    #[test]
    fn refusals_say_what_was_wrong() {
        assert!(OdfWrite::parse(b"{")
            .unwrap_err()
            .1
            .to_string()
            .starts_with("malformed JSON: "));
        assert_eq!(reason(json!([1])).1, "the request must be a JSON object");
        let (fields, why) = reason(json!({"odf": "S", "data": [1], "nonce": "n"}));
        assert_eq!(why, "missing field `da`");
        assert_eq!(fields["nonce"], "n");
        assert_eq!(
            reason(json!({"da": "lamp", "odf": "S", "data": [1]})).1,
            "field `da` must be a DA id (a lowercase hyphenated UUID), not \"lamp\""
        );
        assert!(reason(json!({"da": 7, "odf": "S", "data": [1]}))
            .1
            .ends_with("not 7"));
        assert_eq!(
            reason(json!({"da": DA, "data": [1]})).1,
            "missing field `odf`"
        );
        assert!(reason(json!({"da": DA, "odf": "", "data": [1]}))
            .1
            .starts_with("field `odf` must be a feature name"));
        assert_eq!(
            reason(json!({"da": DA, "odf": "S"})).1,
            "missing field `data`"
        );
        assert_eq!(
            reason(json!({"da": DA, "odf": "S", "data": 5})).1,
            "field `data` must be a JSON array, as routed data (e.g. [1] or [0.5, \"on\"]), not 5"
        );
        let deep = (0..=MAX_DEPTH).fold(json!(1), |v, _| json!([v]));
        assert_eq!(
            reason(json!({"da": DA, "odf": "S", "data": deep})).1,
            format!("field `data` is nested deeper than {MAX_DEPTH} levels")
        );
        let e = OdfApiError::Unlinked {
            da: DA.parse().unwrap(),
            odf: "Switch".parse().unwrap(),
        };
        assert_eq!(
            e.to_string(),
            format!("ODF `Switch` of DA {DA} is in no graph: link it in a project first")
        );
        let refused = reply_error(&fields, &e);
        assert_eq!(refused["state"], "error");
        assert_eq!(refused["nonce"], "n");
        assert_eq!(
            read_reply(refused.to_string().as_bytes()),
            Some((Some("n".into()), Err(e.to_string())))
        );
        assert_eq!(read_reply(b"[]"), None);
        assert_eq!(read_reply(br#"{"nonce": "n"}"#), None);
    }
}
