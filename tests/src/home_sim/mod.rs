//! Stand-ins for the devices home scenes drive: [`TplinkSim`], a TP-Link smart plug or bulb
//! on its local protocol, and [`HttpTarget`], a web endpoint a device of driver `http` GETs.
//! Both listen on a free port of 127.0.0.1, record what they receive and misbehave on demand
//! ([`Behaviour`], [`HttpTarget::set`]) so tests can make one leaf of a scene fail, stall or
//! succeed late.
//!
//! Written from the protocol's description (issue 11), not from the controller's code: an
//! implementation shared by the handler and its test would agree with itself whatever it did.
//! Not a full device emulation: only the requests a home scene sends, plus `get_sysinfo`.

mod http;
mod tplink;

pub use http::{Hit, HttpTarget};
pub use tplink::*;

#[cfg(test)]
mod tests;
