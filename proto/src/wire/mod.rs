//! JSON bodies of the protocol, one module per subject. Inbound bodies are parsed by
//! hand-written functions rather than plain `serde` derives so that each mistake gets its own
//! clear reason (the Python SDK shows `reason` to its user verbatim), and so that the odd
//! shapes real SDKs send are accepted. The same types encode on the client side.
//!
//! - [`register`]: the HTTP registration API (`PUT`/`GET`/`DELETE /{id}`).
//! - [`control`]: the per-DA control channel (signals, replies, presence).
//! - [`graph_api`]: the graph API (spec section 4): typed requests and replies, `digest()`.
//! - [`device_api`]: the device API: attach/detach and announcements.
//! - [`odf_api`]: the ODF-write API: a value handed to a DA's ODF as routed data would be.
//! - [`paging`]: replies larger than the broker's payload limit: pages, or an error.

pub mod control;
mod depth;
pub mod device_api;
pub mod graph_api;
pub mod odf_api;
pub mod paging;
pub mod register;

use serde_json::Value;

pub use control::{Ack, Command, Direction, Presence, Signal, Uplink};
pub use depth::{check_depth, json_depth, DepthError, MAX_DEPTH};
pub use register::{
    BrokerUrl, DaRecord, DeregisterRequest, ErrorBody, Feature, RegisterRequest, RegisterResponse,
    MAX_NAME_BYTES,
};

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
    pub(crate) fn invalid(field: &'static str, why: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            why: why.into(),
        }
    }
}

/// A short description of a JSON value for error messages (never the whole value).
pub(crate) fn brief(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        let cut = (0..=60).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        format!("{}...", &s[..cut])
    } else {
        s
    }
}
