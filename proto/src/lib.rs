#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![doc = include_str!("../README.md")]
//!
//! Layout:
//! - [`auth`]: the roles of controller users (`admin`, `app`) and the [`auth::Roles`] lookup.
//! - [`ids`]: `DaId`, `Rev`, `FeatureName`, `MsgId` newtypes, parsed strictly at the edge.
//! - [`topics`]: every MQTT topic the protocol uses, built and parsed in one place.
//! - [`wire`]: JSON bodies of the HTTP registration API, the MQTT control channel, and the
//!   graph and device APIs (typed requests and replies).
//! - [`rpc`]: JSON bodies of request/response between DAs and apps over MQTT; [`rpc_stream`]:
//!   streamed replies (numbered items, acknowledgements, the window, reordering).
//! - [`qos`]: the one MQTT quality-of-service type of the workspace.
//! - [`url`]: broker urls (`mqtt://host:port`), parsed in one place.
//! - [`log`]: [`log::Escaped`], client-supplied text made safe for log lines.
//! - [`home`]: home scene requests, results and topics (`iottalk/home/...`).
//! - [`km`]: the keymanager's topics, request and reply, and the formulas a client shares.

pub mod auth;
pub mod home;
pub mod ids;
pub mod km;
pub mod log;
pub mod qos;
pub mod rpc;
pub mod rpc_stream;
pub mod topics;
pub mod url;
pub mod wire;

#[cfg(test)]
mod proptests;

pub use ids::{DaId, FeatureName, IdError, MsgId, Rev};
pub use qos::QoS;
pub use wire::WireError;
