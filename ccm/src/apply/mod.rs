//! The applier: keeps the CSM in line with the projects that are on (one graph per network
//! application, over the graph API), learns the registered DAs (device API), binds device
//! objects automatically where a project asks for it, and feeds each join's monitor rows to
//! [`Live`]. It reaches the CSM only through MQTT topics on the [`BrokerHandle`] it is given.
//!
//! Layout:
//! - [`csm`]: the graph-API client (nonce-matched replies, `show`).
//! - [`odf`]: the ODF-write client (a value handed to a DA's ODF, for home devices).
//! - `replies`: the nonce-matched replies both clients share.
//! - [`devices`]: the device API (`attach`, announcements) and the task keeping [`Live`]'s
//!   device list and CSM flag current.
//! - [`desired`]: the graphs wanted, object statuses and auto-bind, from the state (pure).
//! - [`wrapper`]: the generated range/normalization function of a link (pure).
//! - [`diff`]: desired graph vs the CSM's -> ordered graph ops (pure).
//! - [`reconcile`]: one pass, sending those ops and recording statuses.
//! - [`monitor`]: monitor topics -> [`MonitorRow`]s.
//! - `live`: [`Live`], the run-time view.

pub mod csm;
pub mod desired;
pub mod devices;
pub mod diff;
mod live;
pub mod monitor;
pub mod odf;
pub mod reconcile;
mod replies;
pub mod wrapper;

pub use live::{
    DeviceEvent, DeviceInfo, Live, MonitorEvent, MonitorRow, NetAppStatus, ObjectStatus,
    ProjectStatus, MONITOR_BACKLOG,
};

use std::sync::Arc;
use std::time::Duration;

use iot_broker::BrokerHandle;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Ccm;

/// A pass runs at least this often (a restarted CSM, a monitor topic that changed).
pub const RECONCILE_EVERY: Duration = Duration::from_secs(30);
/// Changes arriving within this time are applied in one pass.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// Runs until `shutdown`.
pub async fn run(ccm: Ccm, broker: BrokerHandle, shutdown: CancellationToken) {
    let client = ccm.config().api_client.clone();
    let csm = loop {
        match csm::CsmClient::connect(broker.clone(), &client, csm::REPLY_TIMEOUT).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to the graph API replies; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    };
    let reattach = Arc::new(Notify::new());
    let (monitors, targets) = watch::channel(monitor::MonitorMap::default());
    let device_task = tokio::spawn(devices::run(
        ccm.clone(),
        broker.clone(),
        reattach.clone(),
        shutdown.clone(),
    ));
    let monitor_task = tokio::spawn(monitor::run(
        broker,
        ccm.live().clone(),
        targets,
        shutdown.clone(),
    ));
    let mut applier = reconcile::Applier::new(ccm.clone(), csm, reattach, monitors);
    let mut tick = tokio::time::interval_at(Instant::now() + RECONCILE_EVERY, RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = ccm.kicked() => {}
            _ = tick.tick() => {}
        }
        // Let a burst of changes settle into one pass.
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(DEBOUNCE) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = applier.pass() => {}
        }
    }
    let _ = device_task.await;
    let _ = monitor_task.await;
}
