//! [`Status`]: a snapshot of one DA, published by its task on a `watch` channel after every
//! change, so programs (and tests) wait on conditions instead of sleeping.

use std::collections::BTreeSet;

use iot_proto::{DaId, Rev};

/// Where the DA's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Connecting to the broker (first time, or after re-registering), not online yet.
    Connecting,
    /// Connected, and the server has our `online`.
    Online,
    /// The connection was lost; retrying with backoff. Pushes go to the outbox.
    Reconnecting,
    /// Stopped by `deregister`/`shutdown` or because every handle was dropped.
    Stopped,
}

/// The MQTT version of a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V311,
    V5,
}

/// A snapshot of one DA.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    pub id: DaId,
    /// The name the server gave or kept.
    pub name: String,
    /// The current registration's revision.
    pub rev: Rev,
    pub state: ConnState,
    /// MQTT version of the current (or last) connection.
    pub protocol: Option<Protocol>,
    /// MQTT connections established so far.
    pub sessions: u64,
    /// Successful registrations (`PUT`) so far: 1 at start, +1 per re-registration.
    pub registrations: u64,
    /// Why the last connection attempt or connection failed.
    pub last_error: Option<String>,
    /// IDFs the server has connected (pushes to them are accepted).
    pub connected_idfs: BTreeSet<String>,
    /// ODFs the server has connected (their data is delivered to consumers).
    pub connected_odfs: BTreeSet<String>,
    /// Pushes accepted but not yet acknowledged by the broker.
    pub outbox_len: usize,
    /// Pushes dropped from the outbox: their IDF was disconnected before they could be sent,
    /// or the outbox was full with [`crate::WhenFull::DropOldest`].
    pub outbox_dropped: u64,
    /// ODF samples dropped because a consumer was too slow.
    pub odf_dropped: u64,
    /// Signals answered with an error (unknown feature or command, refused by the hook).
    pub signals_refused: u64,
}

impl Status {
    pub(crate) fn new(id: DaId, name: String, rev: Rev) -> Self {
        Self {
            id,
            name,
            rev,
            state: ConnState::Connecting,
            protocol: None,
            sessions: 0,
            registrations: 1,
            last_error: None,
            connected_idfs: BTreeSet::new(),
            connected_odfs: BTreeSet::new(),
            outbox_len: 0,
            outbox_dropped: 0,
            odf_dropped: 0,
            signals_refused: 0,
        }
    }

    /// Whether the DA is online.
    pub fn is_online(&self) -> bool {
        self.state == ConnState::Online
    }
}
