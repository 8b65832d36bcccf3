//! A client session of the native core: what outlives a connection (subscriptions, queued and
//! in-flight messages, QoS 2 packet ids held in both directions) and the state machine over it.
//!
//! The session, not the connection, owns every message from the moment it is routed to the
//! client until the client acknowledges it. A connection only borrows the session while it is
//! attached; a new connection (a resume) attaches to the same state and resends what is in
//! flight, so a reset or a take-over loses nothing (the failures of rmqtt's design in
//! docs/broker-upstream.md, report 4). The state functions do no I/O and are tested here.

use std::collections::VecDeque;
use std::num::{NonZeroU16, NonZeroU32};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytestring::ByteString;
use rmqtt_codec::types::{Publish, QoS};
use tokio::sync::{oneshot, Notify};

use crate::Publisher;

/// One application message as routed: the PUBLISH (topic, payload, MQTT 5 properties) and who
/// sent it. Shared by every session it is delivered to.
#[derive(Debug)]
pub(crate) struct Routed {
    pub publish: Publish,
    pub from: Option<Arc<Publisher>>,
}

/// A message for one session: the routed message and how this subscription receives it.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub msg: Arc<Routed>,
    pub qos: QoS,
    pub retain: bool,
    pub sub_id: Option<NonZeroU32>,
}

impl Delivery {
    /// The PUBLISH packet for it: `pid` for QoS 1/2, `dup` on a resend.
    pub(crate) fn packet(&self, pid: Option<NonZeroU16>, dup: bool) -> Box<Publish> {
        let src = &self.msg.publish;
        let properties = src.properties.as_ref().map(|p| {
            let mut p = p.clone();
            p.topic_alias = None;
            p.subscription_ids = self.sub_id.into_iter().collect();
            p
        });
        let properties = match (properties, self.sub_id) {
            (None, Some(id)) => Some(rmqtt_codec::v5::PublishProperties {
                subscription_ids: vec![id],
                ..Default::default()
            }),
            (p, _) => p,
        };
        Box::new(Publish {
            dup,
            retain: self.retain,
            qos: self.qos,
            topic: src.topic.clone(),
            packet_id: pid,
            payload: src.payload.clone(),
            properties,
        })
    }
}

/// A QoS 1/2 message sent (or about to be) and not yet acknowledged, by packet id.
#[derive(Debug, Clone)]
enum Pending {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Publish(NonZeroU16, Delivery),
    /// QoS 2: PUBREL sent; waiting for PUBCOMP. The id stays taken until then.
    Released(NonZeroU16),
}

impl Pending {
    fn pid(&self) -> NonZeroU16 {
        match self {
            Pending::Publish(pid, _) | Pending::Released(pid) => *pid,
        }
    }
}

/// Why an attached connection is told to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kick {
    /// Another connection with this client id took the session over (or started clean).
    TakenOver,
    /// The broker is shutting down.
    Shutdown,
}

/// The connection a session is attached to.
#[derive(Debug)]
pub(crate) struct Attached {
    pub gen: u64,
    pub kick: oneshot::Sender<Kick>,
}

/// A session's subscription, kept to remove it from the tree when the session ends.
#[derive(Debug, Clone)]
pub(crate) struct OwnSub {
    /// The filter as subscribed (`$share/<group>/...` included).
    pub filter: ByteString,
}

/// The mutable part of a session.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub attached: Option<Attached>,
    queue: VecDeque<Delivery>,
    inflight: VecDeque<Pending>,
    /// QoS 2 packet ids received (PUBREC sent) and not yet released by the client.
    incoming: Vec<NonZeroU16>,
    last_id: u16,
    pub subs: Vec<OwnSub>,
    /// How long the session is kept once offline; zero: removed with its connection.
    pub expiry: Duration,
    pub offline_since: Option<Instant>,
    /// Unacknowledged QoS 1/2 messages sent at most (the client's Receive Maximum, capped).
    pub window: u16,
    /// Messages queued behind the window at most.
    pub max_queue: usize,
    /// Whether the session was ended (clean start elsewhere, expiry): deliveries are refused.
    pub ended: bool,
}

/// What [`State::push`] did with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// QoS 0 for an offline session: not kept (as Mosquitto does by default).
    Skipped,
    /// The queue is full, or the session has ended: dropped and counted.
    Dropped,
}

impl State {
    /// A new session's state, attached to its first connection.
    pub(crate) fn new(attached: Attached, expiry: Duration, window: u16, max_queue: usize) -> Self {
        Self {
            attached: Some(attached),
            expiry,
            window,
            max_queue,
            ..State::default()
        }
    }

    /// Queues `d` for sending.
    pub(crate) fn push(&mut self, d: Delivery) -> Pushed {
        if self.ended {
            return Pushed::Dropped;
        }
        if self.attached.is_none() && d.qos == QoS::AtMostOnce {
            return Pushed::Skipped;
        }
        if self.queue.len() >= self.max_queue {
            return Pushed::Dropped;
        }
        self.queue.push_back(d);
        Pushed::Queued
    }

    /// The next message the window allows, recorded in flight before it is written (so a
    /// failed write leaves it to be resent), with its packet id for QoS 1/2.
    pub(crate) fn next_out(&mut self) -> Option<Box<Publish>> {
        if self.inflight.len() >= usize::from(self.window.max(1)) {
            return None;
        }
        let d = self.queue.pop_front()?;
        if self.queue.is_empty() && self.queue.capacity() > 8 {
            // An idle session does not keep the room a burst needed.
            self.queue = VecDeque::new();
        }
        if d.qos == QoS::AtMostOnce {
            return Some(d.packet(None, false));
        }
        let pid = self.next_id()?;
        let packet = d.packet(Some(pid), false);
        self.inflight.push_back(Pending::Publish(pid, d));
        Some(packet)
    }

    /// A free packet id (one not held by an unacknowledged message).
    fn next_id(&mut self) -> Option<NonZeroU16> {
        for _ in 0..=u16::MAX {
            self.last_id = self.last_id.checked_add(1).unwrap_or(1);
            let id = NonZeroU16::new(self.last_id)?;
            if !self.inflight.iter().any(|p| p.pid() == id) {
                return Some(id);
            }
        }
        None
    }

    /// PUBACK: whether it acknowledged a QoS 1 message in flight.
    pub(crate) fn puback(&mut self, pid: NonZeroU16) -> bool {
        self.remove_publish(pid, QoS::AtLeastOnce)
    }

    /// Removes the PUBLISH of `qos` in flight under `pid`; whether there was one.
    fn remove_publish(&mut self, pid: NonZeroU16, qos: QoS) -> bool {
        let at = self
            .inflight
            .iter()
            .position(|p| matches!(p, Pending::Publish(id, d) if *id == pid && d.qos == qos));
        let found = at.and_then(|i| self.inflight.remove(i)).is_some();
        self.shrink();
        found
    }

    /// Forgets the message in flight under `pid` (one the client can never receive).
    pub(crate) fn discard(&mut self, pid: NonZeroU16) {
        self.inflight.retain(|p| p.pid() != pid);
    }

    /// PUBREC: the QoS 2 message becomes released (its id stays taken until PUBCOMP). The
    /// caller answers PUBREL either way (a repeated PUBREC after a resume included).
    pub(crate) fn pubrec(&mut self, pid: NonZeroU16) {
        for p in &mut self.inflight {
            if let Pending::Publish(id, d) = p {
                if *id == pid && d.qos == QoS::ExactlyOnce {
                    *p = Pending::Released(pid);
                    return;
                }
            }
        }
    }

    /// PUBREC with a reason of 0x80 or more: the client refused the QoS 2 message, which ends
    /// the exchange (MQTT 5, 4.3.3: no PUBREL) and frees its id.
    pub(crate) fn pubrec_refused(&mut self, pid: NonZeroU16) -> bool {
        self.remove_publish(pid, QoS::ExactlyOnce)
    }

    /// PUBCOMP: frees the id of a released QoS 2 message.
    pub(crate) fn pubcomp(&mut self, pid: NonZeroU16) -> bool {
        let at = self
            .inflight
            .iter()
            .position(|p| matches!(p, Pending::Released(id) if *id == pid));
        let found = at.and_then(|i| self.inflight.remove(i)).is_some();
        self.shrink();
        found
    }

    /// Gives back the in-flight list's room once it is empty.
    fn shrink(&mut self) {
        if self.inflight.is_empty() && self.inflight.capacity() > 8 {
            self.inflight = VecDeque::new();
        }
    }

    /// What a resumed connection sends first: every PUBLISH in flight again (DUP) and every
    /// PUBREL owed, in their order.
    pub(crate) fn resend(&self) -> Vec<Resend> {
        self.inflight
            .iter()
            .map(|p| match p {
                Pending::Publish(pid, d) => Resend::Publish(d.packet(Some(*pid), true)),
                Pending::Released(pid) => Resend::Release(*pid),
            })
            .collect()
    }

    /// An incoming QoS 2 PUBLISH: `true` if it is new (to be routed), `false` if its id is
    /// still held (a repeat, not routed again). Either way the caller answers PUBREC.
    pub(crate) fn incoming(&mut self, pid: NonZeroU16) -> bool {
        if self.incoming.contains(&pid) {
            return false;
        }
        self.incoming.push(pid);
        true
    }

    /// Whether an incoming QoS 2 id is held (routed, not yet released).
    pub(crate) fn holds(&self, pid: NonZeroU16) -> bool {
        self.incoming.contains(&pid)
    }

    /// PUBREL from the client: frees the id; `false` if it was not held.
    pub(crate) fn release(&mut self, pid: NonZeroU16) -> bool {
        let before = self.incoming.len();
        self.incoming.retain(|id| *id != pid);
        self.incoming.len() != before
    }

    /// QoS 2 messages received and not yet released.
    pub(crate) fn incoming_len(&self) -> usize {
        self.incoming.len()
    }
}

/// What [`State::resend`] gives back.
#[derive(Debug)]
pub(crate) enum Resend {
    Publish(Box<Publish>),
    Release(NonZeroU16),
}

/// A client session.
#[derive(Debug)]
pub(crate) struct Session {
    pub client_id: Arc<str>,
    pub username: Option<Arc<str>>,
    state: Mutex<State>,
    /// Wakes the attached connection when a delivery is queued.
    pub wake: Notify,
}

impl Session {
    pub(crate) fn new(client_id: Arc<str>, username: Option<Arc<str>>, state: State) -> Self {
        Self {
            client_id,
            username,
            state: Mutex::new(state),
            wake: Notify::new(),
        }
    }

    /// The state, for a short, synchronous update (never held across an `.await`).
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `d` and wakes the connection.
    pub(crate) fn deliver(&self, d: Delivery) -> Pushed {
        let pushed = self.state().push(d);
        if pushed == Pushed::Queued {
            self.wake.notify_one();
        }
        pushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn delivery(n: u8, qos: QoS) -> Delivery {
        Delivery {
            msg: Arc::new(Routed {
                publish: Publish {
                    dup: false,
                    retain: false,
                    qos,
                    topic: ByteString::from_static("t"),
                    packet_id: None,
                    payload: Bytes::from(vec![n]),
                    properties: None,
                },
                from: None,
            }),
            qos,
            retain: false,
            sub_id: None,
        }
    }

    fn online(window: u16) -> State {
        let (kick, _) = oneshot::channel();
        State {
            attached: Some(Attached { gen: 1, kick }),
            window,
            max_queue: 10,
            ..State::default()
        }
    }

    /// QoS 1: the window bounds what is in flight; an ack frees a slot; what is in flight is
    /// resent with DUP and the same ids.
    #[test]
    fn window_ack_and_resend() {
        let mut s = online(2);
        for n in 0..3 {
            assert_eq!(s.push(delivery(n, QoS::AtLeastOnce)), Pushed::Queued);
        }
        let a = s.next_out().unwrap();
        let b = s.next_out().unwrap();
        assert!(s.next_out().is_none(), "window of 2");
        let resent = s.resend();
        assert_eq!(resent.len(), 2);
        let Resend::Publish(r) = &resent[0] else {
            panic!("a PUBLISH")
        };
        assert!(r.dup && r.packet_id == a.packet_id && r.payload == a.payload);
        assert!(s.puback(a.packet_id.unwrap()));
        assert!(!s.puback(a.packet_id.unwrap()), "acked once");
        let c = s.next_out().unwrap();
        assert_ne!(c.packet_id, b.packet_id);
        assert_eq!(c.payload, Bytes::from(vec![2]));
    }

    /// QoS 2: an id stays taken from PUBLISH to PUBCOMP, through PUBREC; the owed PUBREL is
    /// resent on resume; ids never repeat while held, even across wrap-around.
    #[test]
    fn qos2_ids_are_held_until_pubcomp() {
        let mut s = online(3);
        s.max_queue = 100_000;
        s.push(delivery(0, QoS::ExactlyOnce));
        let held = s.next_out().unwrap().packet_id.unwrap();
        s.pubrec(held);
        assert!(matches!(s.resend()[..], [Resend::Release(id)] if id == held));
        for n in 0..=u16::MAX {
            s.push(delivery(1, QoS::ExactlyOnce));
            let p = s.next_out().unwrap().packet_id.unwrap();
            assert_ne!(p, held, "round {n}");
            s.pubrec(p);
            assert!(s.pubcomp(p));
        }
        assert!(s.pubcomp(held));
        assert!(s.resend().is_empty());
    }

    /// Offline: QoS 0 is skipped, QoS 1 queued up to the limit, then dropped.
    #[test]
    fn offline_queue_limits() {
        let mut s = State {
            window: 10,
            max_queue: 2,
            ..State::default()
        };
        assert_eq!(s.push(delivery(0, QoS::AtMostOnce)), Pushed::Skipped);
        assert_eq!(s.push(delivery(1, QoS::AtLeastOnce)), Pushed::Queued);
        assert_eq!(s.push(delivery(2, QoS::AtLeastOnce)), Pushed::Queued);
        assert_eq!(s.push(delivery(3, QoS::AtLeastOnce)), Pushed::Dropped);
        s.ended = true;
        assert_eq!(s.push(delivery(4, QoS::AtLeastOnce)), Pushed::Dropped);
    }

    /// Incoming QoS 2: a repeat of a held id is not routed again; PUBREL frees it.
    #[test]
    fn incoming_qos2_repeats() {
        let mut s = online(1);
        let id = NonZeroU16::new(7).unwrap();
        assert!(s.incoming(id));
        assert!(!s.incoming(id));
        assert_eq!(s.incoming_len(), 1);
        assert!(s.release(id));
        assert!(!s.release(id));
        assert!(s.incoming(id));
    }
}
