#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![doc = include_str!("../README.md")]
//!
//! Layout:
//! - [`ids`]: `DaId`, `Rev`, `FeatureName`, `MsgId` newtypes, parsed strictly at the edge.
//! - [`topics`]: every MQTT topic the protocol uses, built and parsed in one place.
//! - [`wire`]: JSON bodies of the HTTP registration API and of the MQTT control channel.
//! - [`rpc`]: JSON bodies of request/response between DAs and apps over MQTT.

pub mod ids;
pub mod qos;
pub mod rpc;
pub mod topics;
pub mod wire;

pub use ids::{DaId, FeatureName, IdError, MsgId, Rev};
pub use qos::QoS;
pub use wire::WireError;
