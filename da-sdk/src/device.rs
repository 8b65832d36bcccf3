//! A device behind a gateway ([`Device`]): its DA id, model, name, features and [`Tags`], all
//! validated when set, and a canonical hash that changes exactly when one of them does.
//!
//! The hash is SHA-256 over a length-prefixed encoding (every string preceded by its byte
//! length, every list by its count, tags sorted by key, units as canonical JSON with sorted
//! keys), so no two different devices share an encoding: `("ab", "c")` and `("a", "bc")`
//! differ, unlike a hash over concatenated fields.

use std::collections::BTreeMap;

use iot_proto::{DaId, FeatureName};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::Units;
use crate::error::Error;

/// Most tags a device may carry.
pub const MAX_TAGS: usize = 64;
/// Longest tag key, in bytes.
pub const MAX_TAG_KEY_BYTES: usize = 64;
/// Longest tag value, in bytes.
pub const MAX_TAG_VALUE_BYTES: usize = 256;
/// Longest device name or model, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

fn invalid(why: String) -> Error {
    Error::InvalidDevice(why)
}

/// Free-form labels of a device (`room = kitchen`). Keys are 1 to 64 characters out of
/// `A-Z a-z 0-9 _ . : -`; values at most 256 bytes without control characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags(BTreeMap<String, String>);

impl Tags {
    fn check(key: &str, value: &str) -> Result<(), Error> {
        if key.is_empty() || key.len() > MAX_TAG_KEY_BYTES {
            return Err(invalid(format!(
                "tag key `{key}` must be 1 to {MAX_TAG_KEY_BYTES} characters"
            )));
        }
        if !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
        {
            return Err(invalid(format!(
                "tag key `{key}` may only contain A-Z, a-z, 0-9, `_`, `.`, `:` and `-`"
            )));
        }
        if value.len() > MAX_TAG_VALUE_BYTES {
            return Err(invalid(format!(
                "tag `{key}`: the value is longer than {MAX_TAG_VALUE_BYTES} bytes"
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(invalid(format!(
                "tag `{key}`: the value contains a control character"
            )));
        }
        Ok(())
    }

    /// Adds a tag; fails if the key exists (use [`Tags::change`]) or the tag is invalid.
    pub fn add(&mut self, key: &str, value: &str) -> Result<(), Error> {
        Self::check(key, value)?;
        if self.0.contains_key(key) {
            return Err(invalid(format!("tag `{key}` exists already")));
        }
        if self.0.len() >= MAX_TAGS {
            return Err(invalid(format!("a device has at most {MAX_TAGS} tags")));
        }
        self.0.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    /// Changes an existing tag.
    pub fn change(&mut self, key: &str, value: &str) -> Result<(), Error> {
        Self::check(key, value)?;
        match self.0.get_mut(key) {
            Some(v) => {
                *v = value.to_owned();
                Ok(())
            }
            None => Err(invalid(format!("no tag `{key}` to change"))),
        }
    }

    /// Removes a tag; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.0.remove(key)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As a JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    }

    /// From a JSON object of strings, validating every tag.
    pub fn from_json(v: &Value) -> Result<Self, Error> {
        let Value::Object(m) = v else {
            return Err(invalid("tags must be a JSON object".into()));
        };
        let mut t = Tags::default();
        for (k, v) in m {
            let v = v
                .as_str()
                .ok_or_else(|| invalid(format!("tag `{k}`: the value must be a string")))?;
            t.add(k, v)?;
        }
        Ok(t)
    }
}

/// One device a gateway fronts; it becomes a DA of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    id: DaId,
    model: String,
    name: String,
    idfs: Vec<(FeatureName, Value)>,
    odfs: Vec<(FeatureName, Value)>,
    tags: Tags,
}

fn check_text(what: &str, s: &str) -> Result<(), Error> {
    if s.trim().is_empty() {
        return Err(invalid(format!("the {what} must not be empty")));
    }
    if s.len() > MAX_NAME_BYTES {
        return Err(invalid(format!(
            "the {what} is longer than {MAX_NAME_BYTES} bytes"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(format!("the {what} contains a control character")));
    }
    Ok(())
}

impl Device {
    /// A device with no features or tags yet.
    pub fn new(id: DaId, model: &str, name: &str) -> Result<Self, Error> {
        check_text("model", model)?;
        check_text("name", name)?;
        Ok(Self {
            id,
            model: model.to_owned(),
            name: name.to_owned(),
            idfs: Vec::new(),
            odfs: Vec::new(),
            tags: Tags::default(),
        })
    }

    /// A stable DA id for the device a gateway knows as `local_id` (a serial number, a MAC
    /// address): a name-based UUID (v5) in the gateway's namespace.
    pub fn derive_id(gateway: &DaId, local_id: &str) -> DaId {
        DaId::from_uuid(uuid::Uuid::new_v5(gateway.as_uuid(), local_id.as_bytes()))
    }

    fn feature(
        list: &mut Vec<(FeatureName, Value)>,
        kind: &str,
        name: &str,
        units: Units,
    ) -> Result<(), Error> {
        let f: FeatureName = name
            .parse()
            .map_err(|e| invalid(format!("{kind} `{name}`: {e}")))?;
        if list.iter().any(|(n, _)| *n == f) {
            return Err(invalid(format!("{kind} `{name}` is declared twice")));
        }
        list.push((f, units.0));
        Ok(())
    }

    /// Adds an input device feature.
    pub fn with_idf(mut self, name: &str, units: impl Into<Units>) -> Result<Self, Error> {
        Self::feature(&mut self.idfs, "IDF", name, units.into())?;
        Ok(self)
    }

    /// Adds an output device feature.
    pub fn with_odf(mut self, name: &str, units: impl Into<Units>) -> Result<Self, Error> {
        Self::feature(&mut self.odfs, "ODF", name, units.into())?;
        Ok(self)
    }

    /// Adds a tag.
    pub fn with_tag(mut self, key: &str, value: &str) -> Result<Self, Error> {
        self.tags.add(key, value)?;
        Ok(self)
    }

    pub fn id(&self) -> DaId {
        self.id
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn set_name(&mut self, name: &str) -> Result<(), Error> {
        check_text("name", name)?;
        self.name = name.to_owned();
        Ok(())
    }

    pub fn idfs(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.idfs.iter().map(|(n, u)| (n.as_str(), u))
    }

    pub fn odfs(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.odfs.iter().map(|(n, u)| (n.as_str(), u))
    }

    pub fn tags(&self) -> &Tags {
        &self.tags
    }

    /// The tags, to add, change or remove some.
    pub fn tags_mut(&mut self) -> &mut Tags {
        &mut self.tags
    }

    /// The canonical hash (lowercase hex SHA-256); see the module docs.
    pub fn hash(&self) -> String {
        let mut enc = Encoder(Sha256::new());
        enc.bytes(b"iottalk-device/v1");
        enc.str(&self.id.to_string());
        enc.str(&self.model);
        enc.str(&self.name);
        for list in [&self.idfs, &self.odfs] {
            enc.count(list.len());
            for (n, u) in list {
                enc.str(n.as_str());
                let mut json = String::new();
                canonical_json(u, &mut json);
                enc.str(&json);
            }
        }
        enc.count(self.tags.len());
        for (k, v) in self.tags.iter() {
            enc.str(k);
            enc.str(v);
        }
        hex::encode(enc.0.finalize())
    }

    /// Feature lists as JSON (`[[name, units], ...]`), for storage.
    pub(crate) fn features_json(list: &[(FeatureName, Value)]) -> Value {
        Value::Array(
            list.iter()
                .map(|(n, u)| Value::Array(vec![Value::String(n.to_string()), u.clone()]))
                .collect(),
        )
    }

    pub(crate) fn idf_json(&self) -> Value {
        Self::features_json(&self.idfs)
    }

    pub(crate) fn odf_json(&self) -> Value {
        Self::features_json(&self.odfs)
    }

    /// Rebuilds a device from its stored parts, validating everything again.
    pub(crate) fn from_parts(
        id: DaId,
        model: &str,
        name: &str,
        idfs: &Value,
        odfs: &Value,
        tags: &Value,
    ) -> Result<Self, Error> {
        let mut d = Device::new(id, model, name)?;
        for (list, kind) in [(idfs, "IDF"), (odfs, "ODF")] {
            let Value::Array(entries) = list else {
                return Err(invalid(format!("the {kind} list is not a list")));
            };
            for e in entries {
                match e.as_array().map(Vec::as_slice) {
                    Some([Value::String(n), u]) => {
                        let target = if kind == "IDF" {
                            &mut d.idfs
                        } else {
                            &mut d.odfs
                        };
                        Self::feature(target, kind, n, Units(u.clone()))?;
                    }
                    _ => return Err(invalid(format!("a malformed {kind} entry: {e}"))),
                }
            }
        }
        d.tags = Tags::from_json(tags)?;
        Ok(d)
    }
}

/// Feeds length-prefixed fields into the hash.
struct Encoder(Sha256);

impl Encoder {
    fn bytes(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_be_bytes());
        self.0.update(b);
    }

    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    fn count(&mut self, n: usize) {
        self.0.update((n as u64).to_be_bytes());
    }
}

/// JSON with object keys sorted and no whitespace, whatever order the `Value` keeps them in.
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(k) {
                    canonical_json(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id() -> DaId {
        "df682f01-7c3a-49fd-8f5f-72ce0b6e68c0".parse().unwrap()
    }

    #[test]
    fn tags_are_validated() {
        let mut t = Tags::default();
        t.add("room", "kitchen").unwrap();
        t.add("fw.version:major-1_x", "").unwrap();
        assert!(t.add("room", "hall").is_err(), "add does not overwrite");
        t.change("room", "hall").unwrap();
        assert_eq!(t.get("room"), Some("hall"));
        assert!(t.change("nope", "x").is_err());
        for (k, v) in [
            ("", "v"),
            ("has space", "v"),
            ("semi;colon", "v"),
            ("k", "line\nbreak"),
        ] {
            assert!(Tags::default().add(k, v).is_err(), "{k:?}={v:?}");
        }
        assert!(Tags::default().add(&"k".repeat(65), "v").is_err());
        assert!(Tags::default().add("k", &"v".repeat(257)).is_err());
        let mut many = Tags::default();
        for i in 0..MAX_TAGS {
            many.add(&format!("k{i}"), "v").unwrap();
        }
        assert!(many.add("one-more", "v").is_err());
        assert_eq!(t.remove("room"), Some("hall".into()));
        assert_eq!(Tags::from_json(&t.to_json()).unwrap(), t);
        assert!(Tags::from_json(&json!({"k": 1})).is_err());
    }

    #[test]
    fn hash_is_canonical_and_unambiguous() {
        let a = Device::new(id(), "M", "ab")
            .unwrap()
            .with_tag("x", "c")
            .unwrap();
        let b = Device::new(id(), "M", "a")
            .unwrap()
            .with_tag("x", "bc")
            .unwrap();
        assert_ne!(
            a.hash(),
            b.hash(),
            "field boundaries are part of the encoding"
        );
        let t1 = Device::new(id(), "M", "n")
            .unwrap()
            .with_tag("a", "1")
            .unwrap()
            .with_tag("b", "2")
            .unwrap();
        let t2 = Device::new(id(), "M", "n")
            .unwrap()
            .with_tag("b", "2")
            .unwrap()
            .with_tag("a", "1")
            .unwrap();
        assert_eq!(t1.hash(), t2.hash(), "tag order does not matter");
        let u1 = Device::new(id(), "M", "n")
            .unwrap()
            .with_idf("S", Units(json!({"a": 1, "b": 2})))
            .unwrap();
        let u2 = Device::new(id(), "M", "n")
            .unwrap()
            .with_idf(
                "S",
                Units(serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap()),
            )
            .unwrap();
        assert_eq!(u1.hash(), u2.hash(), "JSON key order does not matter");
        let idf = Device::new(id(), "M", "n")
            .unwrap()
            .with_idf("S", ())
            .unwrap();
        let odf = Device::new(id(), "M", "n")
            .unwrap()
            .with_odf("S", ())
            .unwrap();
        assert_ne!(idf.hash(), odf.hash(), "the side of a feature matters");
        assert_eq!(a.hash().len(), 64);
    }

    #[test]
    fn devices_are_validated_and_round_trip() {
        assert!(Device::new(id(), "", "n").is_err());
        assert!(Device::new(id(), "M", "a\tb").is_err());
        assert!(Device::new(id(), "M", &"n".repeat(300)).is_err());
        let d = Device::new(id(), "M", "n")
            .unwrap()
            .with_idf("S", ["dB"])
            .unwrap();
        assert!(d.clone().with_idf("S", ()).is_err());
        let d = d.with_odf("C", ()).unwrap().with_tag("room", "k").unwrap();
        let back = Device::from_parts(
            d.id(),
            d.model(),
            d.name(),
            &d.idf_json(),
            &d.odf_json(),
            &d.tags().to_json(),
        )
        .unwrap();
        assert_eq!(back, d);
        assert_eq!(back.hash(), d.hash());
    }

    #[test]
    fn derived_ids_are_stable_per_gateway() {
        let gw = id();
        let other: DaId = "0f682f01-7c3a-49fd-8f5f-72ce0b6e68c0".parse().unwrap();
        assert_eq!(
            Device::derive_id(&gw, "lamp-1"),
            Device::derive_id(&gw, "lamp-1")
        );
        assert_ne!(
            Device::derive_id(&gw, "lamp-1"),
            Device::derive_id(&gw, "lamp-2")
        );
        assert_ne!(
            Device::derive_id(&gw, "lamp-1"),
            Device::derive_id(&other, "lamp-1")
        );
    }
}
