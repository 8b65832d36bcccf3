//! What the supervisor reports to the DA's task ([`Input`]): a registration renewed, a
//! connection up or down, and what happened on it ([`NetEvent`], reduced from rumqttc's
//! events by `poller`). Plain data; nothing here does I/O.

use bytes::Bytes;
use iot_proto::wire::{BrokerUrl, RegisterResponse};
use iot_proto::Rev;

use super::link::{Link, Props};
use crate::status::Protocol;

/// What the server told us at registration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Registration {
    pub rev: Rev,
    pub name: String,
    pub broker: BrokerUrl,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl From<RegisterResponse> for Registration {
    fn from(r: RegisterResponse) -> Self {
        Self {
            rev: r.rev,
            name: r.name,
            broker: r.url,
            username: r.username,
            password: r.password,
        }
    }
}

impl Registration {
    pub fn broker_addr(&self) -> String {
        format!(
            "{}://{}:{}",
            self.broker.scheme, self.broker.host, self.broker.port
        )
    }
}

/// What happened on a connection, reduced to what the DA's task needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NetEvent {
    Publish {
        topic: String,
        payload: Bytes,
        retain: bool,
        props: Option<Props>,
    },
    /// A publish request was written (packet id 0 for QoS 0), in request order.
    OutPublish(u16),
    /// A publish request waits for a free packet id; it is written later (`OutPublish`).
    AwaitAck(u16),
    /// QoS 1 acknowledgement.
    PubAck(u16),
    /// QoS 2 completion.
    PubComp(u16),
    /// A subscribe request was written, in request order.
    OutSubscribe(u16),
    /// A subscribe was acknowledged; `refused`: the broker refused one of its filters.
    SubAck {
        pkid: u16,
        refused: bool,
    },
    OutDisconnect,
    /// Some other request was processed: room in rumqttc's queue.
    Progress,
}

/// Input of the DA's task from the supervisor.
#[derive(Debug)]
pub(crate) enum Input {
    /// The server registered us again (it had lost us): new rev, maybe new credentials.
    Registered(Registration),
    Connected {
        gen: u64,
        link: Link,
        protocol: Protocol,
    },
    Net {
        gen: u64,
        ev: NetEvent,
    },
    Disconnected {
        gen: u64,
        error: String,
    },
}
