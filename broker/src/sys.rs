//! `$SYS/broker/...`: the embedded broker's own figures, published retained every
//! `sys_interval_seconds` under Mosquitto's names, so the usual dashboards and
//! `mosquitto_sub -t '$SYS/#' -v` work. Each core counts in its own way (rmqtt's hooks in
//! `embedded/sys.rs`, the native core's counters) and hands [`Figures`] to [`spawn`].

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{Broker, Message, QoS};

/// One round of figures.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Figures {
    /// Clients connected now.
    pub connected: u64,
    /// Sessions, connected or kept offline.
    pub sessions: u64,
    /// PUBLISH packets from clients, and their topic and payload bytes.
    pub received: u64,
    pub received_bytes: u64,
    /// PUBLISH packets to clients, and their topic and payload bytes.
    pub sent: u64,
    pub sent_bytes: u64,
}

/// Publishes `figures()` every `every` until `shutdown`; `version` is
/// `$SYS/broker/version`.
pub(crate) fn spawn<B, F>(
    broker: B,
    version: String,
    figures: F,
    every: Duration,
    shutdown: CancellationToken,
) where
    B: Broker + 'static,
    F: Fn() -> Figures + Send + 'static,
{
    let started = tokio::time::Instant::now();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let f = figures();
            let list = [
                ("version", version.clone()),
                ("uptime", format!("{} seconds", started.elapsed().as_secs())),
                ("clients/connected", f.connected.to_string()),
                ("clients/total", f.sessions.to_string()),
                ("messages/received", f.received.to_string()),
                ("messages/sent", f.sent.to_string()),
                ("publish/messages/received", f.received.to_string()),
                ("publish/messages/sent", f.sent.to_string()),
                ("bytes/received", f.received_bytes.to_string()),
                ("bytes/sent", f.sent_bytes.to_string()),
            ];
            for (name, value) in list {
                let msg = Message::new(format!("$SYS/broker/{name}"), value, QoS::AtMostOnce, true);
                if let Err(e) = broker.publish(msg).await {
                    tracing::debug!(error = %e, "cannot publish $SYS/broker/{name}");
                }
            }
        }
    });
}
