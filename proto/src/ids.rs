//! Identifier newtypes. Each one is validated when it is built, so code holding a `DaId` knows
//! it is a lowercase hyphenated UUID and can put it in a topic without further checks.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("invalid id `{0}`: expected a lowercase hyphenated UUID such as 4f2c1d8e-6b7a-4c3d-9e8f-0a1b2c3d4e5f")]
    DaId(String),
    #[error("invalid feature name: {0}")]
    Feature(&'static str),
}

/// A device application id: a UUID in its canonical lowercase hyphenated form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DaId(Uuid);

impl DaId {
    pub fn new_v4() -> Self {
        Self(Uuid::new_v4())
    }

    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// Any UUID is a valid id: it is always printed in the canonical form.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl FromStr for DaId {
    type Err = IdError;

    /// Accepts only the canonical form (36 characters, lowercase, hyphenated): SDKs build
    /// topics from the id as they sent it, so an uppercase or braced id would name other topics.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let uuid = Uuid::try_parse(s).map_err(|_| IdError::DaId(truncate(s)))?;
        let canonical = uuid.hyphenated().to_string();
        if canonical != s {
            return Err(IdError::DaId(truncate(s)));
        }
        Ok(Self(uuid))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

impl fmt::Display for DaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl Serialize for DaId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DaId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The revision token of one registration session (a UUID v4 string issued by the CSM).
/// Online/offline messages carry it; the CSM ignores those with another rev.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Rev(String);

impl Rev {
    pub fn generate() -> Self {
        Self(Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for Rev {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Display for Rev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of one signal (CONNECT/DISCONNECT) so the DA's reply can be matched to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MsgId(String);

impl MsgId {
    pub fn generate() -> Self {
        Self(Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for MsgId {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest feature name accepted, in bytes.
pub const MAX_FEATURE_NAME_BYTES: usize = 256;

/// A device feature name (`Dummy_Sensor`). Non-empty, at most 256 bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FeatureName(String);

impl FeatureName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for FeatureName {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(IdError::Feature("it is empty"));
        }
        if s.len() > MAX_FEATURE_NAME_BYTES {
            return Err(IdError::Feature("it is longer than 256 bytes"));
        }
        if s.chars().any(char::is_control) {
            return Err(IdError::Feature("it contains a control character"));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for FeatureName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for FeatureName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for FeatureName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn da_id_accepts_only_canonical_uuid() {
        let ok = "df682f01-7c3a-49fd-8f5f-72ce0b6e68c0";
        assert_eq!(ok.parse::<DaId>().map(|d| d.to_string()), Ok(ok.to_owned()));
        for bad in [
            "DF682F01-7C3A-49FD-8F5F-72CE0B6E68C0",
            "df682f017c3a49fd8f5f72ce0b6e68c0",
            "{df682f01-7c3a-49fd-8f5f-72ce0b6e68c0}",
            "not-a-uuid",
            "",
        ] {
            assert!(bad.parse::<DaId>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn feature_names_are_checked() {
        assert!("Dummy_Sensor".parse::<FeatureName>().is_ok());
        assert!("".parse::<FeatureName>().is_err());
        assert!("a\nb".parse::<FeatureName>().is_err());
        assert!("x".repeat(257).parse::<FeatureName>().is_err());
    }
}
