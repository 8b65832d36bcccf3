#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![doc = include_str!("../README.md")]
//!
//! Layout:
//! - [`route`], [`connect`], [`broker`]: one module per bench, each with a `run`.
//! - [`options`]: [`RouteOptions`], [`ConnectOptions`], [`BrokerOptions`], [`LoadOptions`],
//!   plain structs whose defaults are those of `iotctl bench`; [`Target`] (where the
//!   controller is, resolved by the caller).
//! - [`error`]: the error type, [`BenchError`].
//! - Internal: `csm` (the CSM's `/healthz` and `/status`), `payload` (the timestamped
//!   payload and how outputs are read back), `stats` (clock, window, recorders), `mqtt` (one
//!   rumqttc connection whose loop only polls), `rawpub` (batched QoS 0 publishing), `da` (a
//!   bench DA), `graph` (the bench's graph, through `iot-client`, and join functions),
//!   `spec` (a run's load), `publish` (publishers, priming, flow control), `load` (the
//!   measured run: window, drain, figures), `procstat` (CPU and memory from /proc),
//!   `progress`, `report` and `units` (output), `runaway` (the looping graph of `route`'s
//!   `runaway` option).
//!
//! Not here: anything that changes the controller's behaviour, how the controller is found
//! (the caller passes a [`Target`]), or timing assertions (the end-to-end tests in
//! `tests/tests/bench.rs` check behaviour only).

pub mod broker;
pub mod connect;
pub mod error;
pub mod options;
pub mod route;

mod csm;
mod da;
mod graph;
mod load;
mod mqtt;
mod payload;
mod procstat;
mod progress;
mod publish;
mod rawpub;
mod report;
mod runaway;
mod spec;
mod stats;
mod units;

pub use error::BenchError;
pub use graph::Join;
pub use options::{BrokerOptions, ConnectOptions, LoadOptions, RouteOptions, Target};

/// Waits for Ctrl-C and returns [`BenchError::Interrupted`].
async fn ctrl_c() -> BenchError {
    match tokio::signal::ctrl_c().await {
        Ok(()) => BenchError::Interrupted,
        Err(e) => BenchError::Signal(e),
    }
}

/// A short random id that names this run's DAs, topics and graph.
fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}
