//! In-process fan-out of messages to host subscriptions, shared by both broker modes.
//!
//! A [`LocalRouter`] maps MQTT filters to bounded channels. Exact filters are indexed in a
//! `HashMap` (one lookup per message); only filters with `+`/`#` are matched one by one.
//! It is not a broker: it never talks to the network and keeps no retained messages.
//!
//! Two delivery policies:
//! - [`LocalRouter::dispatch`] (embedded broker): `try_send`, and for a full channel wait at most
//!   the configured timeout, then drop and count `host_dropped`.
//! - [`LocalRouter::try_dispatch`] (external broker): `try_send` only, never waits, so the
//!   rumqttc event loop that calls it never blocks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use iot_proto::topics;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;

use crate::{locks, BrokerError, Message};

/// Whether `topic` can be published to: not empty, no wildcard, no NUL.
pub(crate) fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// Number of levels of an MQTT topic or filter: one more than its `/` count.
pub(crate) fn levels(topic: &str) -> usize {
    topic.bytes().filter(|b| *b == b'/').count() + 1
}

/// The checks of a host publish, whichever core: a topic clients could publish to, a payload
/// within `broker.max_payload_bytes`, levels within `broker.max_topic_levels`.
pub(crate) fn check_host_publish(
    msg: &Message,
    max_payload: usize,
    max_levels: usize,
) -> Result<(), BrokerError> {
    if !valid_topic(&msg.topic) {
        return Err(BrokerError::Topic(msg.topic.clone()));
    }
    if msg.payload.len() > max_payload {
        return Err(BrokerError::PayloadTooLarge {
            bytes: msg.payload.len(),
            key: "broker.max_payload_bytes",
            limit: max_payload,
        });
    }
    let levels = levels(&msg.topic);
    if levels > max_levels {
        return Err(BrokerError::TopicLevels {
            levels,
            key: "broker.max_topic_levels",
            limit: max_levels,
        });
    }
    Ok(())
}

/// The registry of host subscriptions. Cheap to clone.
#[derive(Clone)]
pub struct LocalRouter {
    inner: Arc<Inner>,
}

struct Inner {
    // A std lock: it is only held to look up or edit the table, never across an `.await`.
    table: RwLock<Table>,
    next_id: AtomicU64,
    host_dropped: AtomicU64,
    send_timeout: Duration,
}

#[derive(Default)]
struct Table {
    /// Filters without wildcards, by topic.
    exact: HashMap<String, Vec<Entry>>,
    /// Filters with `+` or `#`.
    wildcard: Vec<(String, Entry)>,
    /// Registrations in both.
    len: usize,
}

struct Entry {
    id: u64,
    tx: mpsc::Sender<Message>,
}

fn is_wildcard(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

impl LocalRouter {
    /// A router whose [`dispatch`](Self::dispatch) waits at most `send_timeout` for a full
    /// subscription channel.
    pub fn new(send_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                table: RwLock::new(Table::default()),
                next_id: AtomicU64::new(1),
                host_dropped: AtomicU64::new(0),
                send_timeout,
            }),
        }
    }

    /// Registers `filter`; matching messages go to the returned receiver, bounded to
    /// `capacity` (at least 1). Dropping the guard removes the registration.
    pub fn subscribe(
        &self,
        filter: &str,
        capacity: usize,
    ) -> Result<(mpsc::Receiver<Message>, LocalGuard), BrokerError> {
        if !topics::valid_filter(filter) {
            return Err(BrokerError::Filter(filter.to_owned()));
        }
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Entry { id, tx };
        let mut table = self.inner.write();
        table.len += 1;
        if is_wildcard(filter) {
            table.wildcard.push((filter.to_owned(), entry));
        } else {
            table
                .exact
                .entry(filter.to_owned())
                .or_default()
                .push(entry);
        }
        drop(table);
        let guard = LocalGuard {
            router: Arc::downgrade(&self.inner),
            id,
            filter: filter.to_owned(),
            armed: true,
        };
        Ok((rx, guard))
    }

    /// Whether at least one host subscription uses exactly this filter.
    pub fn contains_filter(&self, filter: &str) -> bool {
        let table = self.inner.read();
        if is_wildcard(filter) {
            table.wildcard.iter().any(|(f, _)| f == filter)
        } else {
            table.exact.contains_key(filter)
        }
    }

    /// The distinct filters in use, e.g. to subscribe again after a reconnect.
    pub fn filters(&self) -> Vec<String> {
        let table = self.inner.read();
        let mut out: Vec<String> = table.exact.keys().cloned().collect();
        out.extend(table.wildcard.iter().map(|(f, _)| f.clone()));
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Number of host subscriptions.
    pub fn len(&self) -> usize {
        self.inner.read().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages dropped because a subscription's channel stayed full.
    pub fn host_dropped(&self) -> u64 {
        self.inner.host_dropped.load(Ordering::Relaxed)
    }

    /// Delivers `msg` to every matching subscription. A full channel gets up to the
    /// configured timeout (shared by all full channels of this message), then the message is
    /// dropped for it and counted.
    pub async fn dispatch(&self, msg: &Message) {
        let full = self.deliver_now(msg);
        if full.is_empty() {
            return;
        }
        let deadline = Instant::now() + self.inner.send_timeout;
        for (tx, msg) in full {
            match tokio::time::timeout_at(deadline, tx.send(msg)).await {
                Ok(_) => {} // delivered, or the subscription went away meanwhile
                Err(_) => self.count_drop(),
            }
        }
    }

    /// Delivers `msg` to every matching subscription without waiting: a full channel loses
    /// the message (counted in `host_dropped`).
    pub fn try_dispatch(&self, msg: &Message) {
        for _ in self.deliver_now(msg) {
            self.count_drop();
        }
    }

    /// `try_send` to every match; returns the (sender, message) pairs whose channel was full.
    fn deliver_now(&self, msg: &Message) -> Vec<(mpsc::Sender<Message>, Message)> {
        let targets = self.matching(&msg.topic);
        let mut full = Vec::new();
        for tx in targets {
            match tx.try_send(msg.clone()) {
                Ok(()) | Err(TrySendError::Closed(_)) => {}
                Err(TrySendError::Full(m)) => full.push((tx, m)),
            }
        }
        full
    }

    fn matching(&self, topic: &str) -> Vec<mpsc::Sender<Message>> {
        let table = self.inner.read();
        let mut out = Vec::new();
        if let Some(entries) = table.exact.get(topic) {
            out.extend(entries.iter().map(|e| e.tx.clone()));
        }
        for (filter, e) in &table.wildcard {
            if topics::matches(filter, topic) {
                out.push(e.tx.clone());
            }
        }
        out
    }

    fn count_drop(&self) {
        let n = self.inner.host_dropped.fetch_add(1, Ordering::Relaxed);
        // Log the first drop and then every 1000th, not every one.
        if n.is_multiple_of(1000) {
            tracing::warn!(
                host_dropped = n + 1,
                "a host subscription is not keeping up; messages dropped"
            );
        }
    }
}

impl std::fmt::Debug for LocalRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRouter")
            .field("subscriptions", &self.len())
            .field("host_dropped", &self.host_dropped())
            .finish()
    }
}

impl Inner {
    fn read(&self) -> RwLockReadGuard<'_, Table> {
        locks::read(&self.table)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        locks::write(&self.table)
    }

    /// Removes one registration; returns whether `filter` is now unused.
    fn remove(&self, id: u64, filter: &str) -> bool {
        let mut table = self.write();
        let table = &mut *table;
        if is_wildcard(filter) {
            let before = table.wildcard.len();
            table.wildcard.retain(|(_, e)| e.id != id);
            table.len -= before - table.wildcard.len();
            !table.wildcard.iter().any(|(f, _)| f == filter)
        } else {
            let Some(entries) = table.exact.get_mut(filter) else {
                return true;
            };
            let before = entries.len();
            entries.retain(|e| e.id != id);
            table.len -= before - entries.len();
            if entries.is_empty() {
                table.exact.remove(filter);
                true
            } else {
                false
            }
        }
    }
}

/// Keeps one host subscription registered; dropping it unregisters.
pub struct LocalGuard {
    router: Weak<Inner>,
    id: u64,
    filter: String,
    armed: bool,
}

impl LocalGuard {
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// Unregisters now and says whether the filter is no longer used by any host
    /// subscription (the external broker then unsubscribes from it).
    pub fn release(mut self) -> bool {
        self.armed = false;
        match self.router.upgrade() {
            Some(inner) => inner.remove(self.id, &self.filter),
            None => true,
        }
    }
}

impl Drop for LocalGuard {
    fn drop(&mut self) {
        if self.armed {
            if let Some(inner) = self.router.upgrade() {
                inner.remove(self.id, &self.filter);
            }
        }
    }
}

impl std::fmt::Debug for LocalGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalGuard")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QoS;

    fn msg(topic: &str) -> Message {
        Message::new(topic, "x", QoS::AtMostOnce, false)
    }

    #[tokio::test]
    async fn exact_and_wildcard_filters_match() {
        let r = LocalRouter::new(Duration::from_millis(10));
        let (mut exact, _g1) = r.subscribe("a/b", 10).unwrap();
        let (mut plus, _g2) = r.subscribe("a/+", 10).unwrap();
        let (mut hash, _g3) = r.subscribe("#", 10).unwrap();
        r.dispatch(&msg("a/b")).await;
        r.dispatch(&msg("a/c")).await;
        r.dispatch(&msg("$SYS/x")).await;
        assert_eq!(exact.try_recv().unwrap().topic, "a/b");
        assert!(exact.try_recv().is_err());
        assert_eq!(plus.try_recv().unwrap().topic, "a/b");
        assert_eq!(plus.try_recv().unwrap().topic, "a/c");
        assert_eq!(hash.try_recv().unwrap().topic, "a/b");
        assert_eq!(hash.try_recv().unwrap().topic, "a/c");
        assert!(hash.try_recv().is_err(), "`#` must not match $-topics");
        assert_eq!(r.filters(), vec!["#", "a/+", "a/b"]);
        assert!(matches!(
            r.subscribe("a/#/b", 1),
            Err(BrokerError::Filter(_))
        ));
    }

    #[test]
    fn dropping_or_releasing_the_guard_unregisters() {
        let r = LocalRouter::new(Duration::ZERO);
        let (_rx1, g1) = r.subscribe("t", 1).unwrap();
        let (_rx2, g2) = r.subscribe("t", 1).unwrap();
        let (_rx3, g3) = r.subscribe("w/#", 1).unwrap();
        assert_eq!(r.len(), 3);
        drop(g1);
        assert!(r.contains_filter("t"));
        assert!(g2.release(), "last subscription of `t`");
        assert!(!r.contains_filter("t"));
        drop(g3);
        assert!(r.is_empty());
    }

    #[test]
    fn try_dispatch_never_waits_and_counts_drops() {
        let r = LocalRouter::new(Duration::from_secs(3600));
        let (mut rx, _g) = r.subscribe("t", 1).unwrap();
        r.try_dispatch(&msg("t"));
        r.try_dispatch(&msg("t"));
        assert_eq!(r.host_dropped(), 1);
        assert!(rx.try_recv().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn dispatch_waits_for_room_then_drops() {
        let r = LocalRouter::new(Duration::from_secs(1));
        let (mut rx, _g) = r.subscribe("t", 1).unwrap();
        r.dispatch(&msg("t")).await;
        // Full: room appears within the timeout, so nothing is lost.
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let first = rx.recv().await;
            (first, rx)
        });
        r.dispatch(&msg("t")).await;
        assert_eq!(r.host_dropped(), 0);
        let (first, mut rx) = reader.await.unwrap();
        assert!(first.is_some());
        // Full and nobody reads: dropped after the timeout.
        let start = Instant::now();
        r.dispatch(&msg("t")).await;
        assert_eq!(r.host_dropped(), 1);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert!(rx.try_recv().is_ok());
    }
}
