//! Home scenes (issue "Home scenes as an MQTT topic handler"; docs/home.md once it runs).
//! So far the parts that need no network: [`command`] (on/off/dim... as a brightness),
//! [`tplink`] (the TP-Link local protocol's cipher, framing, requests and replies) and
//! [`catalog`] (devices and scenes from the TOML import format, with cycle and unknown-item
//! refusals). The MQTT handler, the drivers and the deadline tree follow.

pub mod catalog;
pub mod command;
pub mod tplink;
