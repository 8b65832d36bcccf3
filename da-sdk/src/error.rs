//! The SDK's error types: [`Error`] for every fallible call, [`DecodeError`] for data that
//! does not fit the type the caller asked for. Messages say what was wrong and what to do.

use iot_proto::rpc::RpcErrorCode;

/// Everything that can go wrong in the SDK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder was given something unusable (a missing model, a bad feature name, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The API URL cannot be used.
    #[error("invalid API URL `{url}`: {why}")]
    InvalidUrl { url: String, why: String },
    /// The IoTtalk server did not answer (connection refused, DNS failure, timeout).
    #[error("cannot reach the IoTtalk server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered with an error; `reason` is its own explanation.
    #[error("the server refused the request (HTTP {status}): {reason}")]
    Rejected { status: u16, reason: String },
    /// The server answered something that is not the IoTtalk protocol.
    #[error("unexpected reply from {url}: {why}")]
    Protocol { url: String, why: String },
    /// The MQTT broker named in the registration reply could not be used.
    #[error("cannot connect to the MQTT broker at {broker}: {reason}")]
    Broker { broker: String, reason: String },
    /// A feature name this DA did not declare.
    #[error("unknown {direction} `{feature}`: declare it on the builder first")]
    UnknownFeature {
        direction: &'static str,
        feature: String,
    },
    /// The IDF exists but no link uses it: the server has not sent CONNECT for it (or has
    /// sent DISCONNECT). Push again once [`crate::Status::connected_idfs`] contains it.
    #[error("IDF `{0}` is not connected: no graph links it yet")]
    NotConnected(String),
    /// The outbox holds as many undelivered pushes as it may.
    #[error("the outbox is full ({capacity} undelivered pushes): the broker has been unreachable for too long")]
    OutboxFull { capacity: usize },
    /// The outbox or device store (SQLite) failed.
    #[error("storage: {0}")]
    Storage(String),
    /// A value could not be encoded as JSON.
    #[error("cannot encode the value as JSON: {0}")]
    Encode(String),
    /// Data or a reply did not decode into the requested type.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A request/response name that cannot be a topic level.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// No reply arrived before the call's deadline (the target may not exist).
    #[error("`{method}` on `{target}` got no reply within {timeout_ms} ms")]
    Timeout {
        target: String,
        method: String,
        timeout_ms: u64,
    },
    /// The target answered with an error reply.
    #[error("`{target}` answered `{method}` with an error ({}): {reason}", code.as_str())]
    Remote {
        target: String,
        method: String,
        code: RpcErrorCode,
        reason: String,
    },
    /// A home command ([`crate::Da::home_run`]) got no result in time: no controller runs
    /// home scenes on this broker, or authentication is on and the broker dropped the
    /// request because the controller does not let DAs run them (`home.allow_das`).
    #[error("home target `{target}` sent no result within {timeout_ms} ms: check that the controller runs home scenes and, when authentication is on, sets `home.allow_das = true` (else the broker drops a DA's home commands)")]
    HomeTimeout { target: String, timeout_ms: u64 },
    /// The broker refused this DA's subscription to its home results: authentication is on
    /// and the controller does not let DAs run home scenes.
    #[error("the broker refused this DA the home results (`{filter}`): with authentication on, DAs may run home scenes only when the controller sets `home.allow_das = true`")]
    HomeRefused { filter: String },
    /// A device description that cannot be used (bad tag, name, feature...).
    #[error("invalid device: {0}")]
    InvalidDevice(String),
    /// The device manager has no device with this id.
    #[error("unknown device {0}")]
    UnknownDevice(iot_proto::DaId),
    /// The device manager already has a device with this id.
    #[error("device {0} already exists")]
    DeviceExists(iot_proto::DaId),
    /// A file transfer ([`crate::Da::send_file`], [`crate::Da::fetch_file`]) failed on this
    /// side: a local file, the SHA-256 check, or resumptions used up.
    #[error("file transfer of `{name}`: {reason}")]
    Transfer { name: String, reason: String },
    /// The DA has been stopped (deregistered, shut down, or every handle dropped).
    #[error("the DA is stopped")]
    Closed,
}

/// Data that did not decode into the type the caller asked for. The SDK never crashes on
/// it: streams yield it as an item, calls return it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {what} as `{expected}`: {reason}; payload: {payload}")]
pub struct DecodeError {
    /// What was being decoded, e.g. "data of ODF `Dummy_Control`".
    pub what: String,
    /// The Rust type asked for.
    pub expected: &'static str,
    pub reason: String,
    /// The start of the payload (at most 120 characters).
    pub payload: String,
}

/// The start of a payload for error messages.
pub(crate) fn brief(payload: &[u8]) -> String {
    let s = String::from_utf8_lossy(payload);
    let mut out: String = s.chars().take(120).collect();
    if s.chars().count() > 120 {
        out.push_str("...");
    }
    out
}
