//! A client's DISCONNECT closes its connection (within one `TICK`, 200 ms).
//!
//! rmqtt 0.24 records a DISCONNECT and goes on reading the connection
//! (`process_mqtt_message`: the return that would end the session's loop is commented out),
//! so a client that sends DISCONNECT and leaves its socket open stays online, keeps getting
//! deliveries while reported disconnected, and with keepalive 0 is never closed. No hook
//! fires on DISCONNECT. This task looks for sessions whose DISCONNECT is recorded and tells
//! each connection's task to close (`Message::Closed`, which its loop turns into an exit),
//! once per connection: the loop ends as if the client had closed after its DISCONNECT (no
//! will: rmqtt never sends one after a DISCONNECT, even an MQTT 5 one with reason 0x04). See
//! docs/broker-upstream.md.
//!
//! Cost: one pass over the sessions per tick: per session a few map lookups and clones, and
//! for one not yet told an async read lock; the upstream fix (one line) would cost nothing.

use std::collections::HashSet;
use std::time::Duration;

use rmqtt::context::ServerContext;
use rmqtt::types::{Id, Message, Reason};
use tokio_util::sync::CancellationToken;

/// How often sessions are checked.
const TICK: Duration = Duration::from_millis(200);

/// Runs until `shutdown`.
pub(super) fn spawn(scx: ServerContext, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Connections told to close (each connection has an `Id` of its own).
        let mut told: HashSet<Id> = HashSet::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let entries: Vec<_> = {
                let shared = scx.extends.shared().await;
                shared
                    .iter()
                    .filter_map(|e| Some((e.session()?, e.tx()?)))
                    .collect()
            };
            let mut present = HashSet::with_capacity(told.len());
            for (session, tx) in entries {
                if tx.is_closed() {
                    continue;
                }
                // A recorded DISCONNECT stays recorded: no need to read it again.
                if told.contains(&session.id) {
                    present.insert(session.id.clone());
                    continue;
                }
                let disconnected = matches!(session.disconnect().await, Ok(Some(_)));
                if !disconnected {
                    continue;
                }
                present.insert(session.id.clone());
                let closed = Message::Closed(Reason::ConnectDisconnect(None));
                if tx.unbounded_send(closed).is_ok() {
                    tracing::debug!(client.id = %session.id.client_id, "closing a connection after its DISCONNECT");
                }
                told.insert(session.id.clone());
            }
            // Forget connections that are gone (or connected again: a new `Id`).
            told.retain(|id| present.contains(id));
        }
    });
}
