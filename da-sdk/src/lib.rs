#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![doc = include_str!("../README.md")]
//!
//! Layout:
//! - [`config`]: [`DaBuilder`] and its settings (outbox, retry, QoS, MQTT version).
//! - [`da`]: [`Da`], the handle of a running DA: push, ODF streams, serve/call, home scenes
//!   ([`Da::home_run`], results as [`HomeResult`]), deregister.
//! - [`streams`]: streamed replies, [`Da::serve_stream`] and [`Da::call_stream`] ([`CallStream`]).
//! - [`files`]: file transfer, [`Da::serve_files`], [`Da::send_file`], [`Da::fetch_file`].
//! - [`odf`]: [`OdfStream`] and how ODF data decodes into the caller's type.
//! - [`status`]: [`Status`], a snapshot published after every change.
//! - [`device`], [`manager`], [`gateway`]: devices behind a gateway, their store, and
//!   the [`Gateway`] that keeps them registered.
//! - [`keys`]: [`KeyClient`], a client of the controller's keymanager (secrets over MQTT).
//! - [`blocking`]: the same API for programs without an async runtime.
//! - [`error`]: [`Error`] and [`DecodeError`].
//! - Internal: `core` (the DA's task, owner of its state; its handlers by concern in
//!   `core::{connection, delivery, control, requests, streams, home}`), `transport` (the MQTT connection
//!   supervisor; `transport::{client, link, poller, events}` build a connection, send on
//!   it, read it, and report to `core`), `features` (signal handling), `outbox`, `rpc`
//!   (handlers), `produce` (a served stream's task and the messages between the DA's task
//!   and a reader), `http` (the registration API client), `backoff`, `sqlite`.
//! - Test-only: `proptests`, property tests of every parser of outside input in the SDK.
//! - Logging: the DA's tasks run in a span named `da` with the field `da.id`; their events
//!   do not repeat it.

pub mod blocking;
pub mod config;
pub mod da;
pub mod device;
pub mod error;
pub mod files;
pub mod gateway;
pub mod keys;
pub mod manager;
pub mod odf;
pub mod status;
pub mod streams;

mod backoff;
mod core;
mod features;
mod http;
mod outbox;
mod produce;
#[cfg(test)]
mod proptests;
mod rpc;
mod sqlite;
mod transport;

pub use config::{DaBuilder, MqttVersion, OutboxConfig, Retry, SignalInfo, Units, WhenFull};
pub use da::{Da, HOME_REPLY_MARGIN, MAX_PAYLOAD_BYTES};
pub use device::{Device, Tags};
pub use error::{DecodeError, Error};
pub use files::{FileOptions, Progress, ServeFiles};
pub use gateway::{Gateway, Reconciled};
pub use iot_proto::home::HomeResult;
pub use iot_proto::rpc::RpcErrorCode;
pub use iot_proto::wire::{Command, Direction};
pub use iot_proto::{DaId, QoS, Rev};
pub use keys::{machine_id, KeyClient, KeyClientBuilder, KeyError};
pub use manager::{
    DeviceManager, DeviceState, MemoryDeviceManager, SqliteDeviceManager, StoredDevice,
};
pub use odf::OdfStream;
pub use status::{ConnState, Protocol, Status};
pub use streams::{CallStream, StreamOptions};
/// The wiped-on-drop buffer of passwords and key values ([`KeyClient`]).
pub use zeroize::Zeroizing;

/// The public futures can be spawned on a multi-threaded runtime.
#[cfg(test)]
mod send_check {
    fn is_send<T: Send>(_: &T) {}

    #[allow(dead_code)]
    fn futures_are_send(da: crate::Da) {
        is_send(&crate::Da::builder("http://x").connect());
        is_send(&da.push("x", 1));
        is_send(&da.flush());
        is_send(&da.odf::<i64>("x"));
        is_send(&da.call::<_, i64>("t", "m", ()));
        is_send(&da.serve("m", |x: i64| async move { Ok::<_, String>(x) }));
        is_send(&da.home_run("t", "on"));
        is_send(&da.call_stream::<_, i64>("t", "m", ()));
        is_send(&da.serve_stream("m", |n: i64| futures::stream::iter([Ok::<_, String>(n)])));
        is_send(&da.deregister());
        is_send(&da.wait_for(|_| true));
    }

    #[allow(dead_code)]
    fn key_futures_are_send(keys: crate::KeyClient) {
        is_send(&keys.get("x"));
    }
}
