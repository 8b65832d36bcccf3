//! Outputs held for the ODFs of one graph whose DA is not subscribed (not yet acknowledged
//! CONNECT, offline, reconnecting after a restart), delivered in order once it is; bounded in
//! count, bytes and age (see [`Hold`]), and counted when dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use super::{Gates, GraphStats, Hold};
use crate::plan::Plan;

/// Outputs held for closed ODF topics of one graph.
pub(super) struct Held {
    cfg: Hold,
    stats: Arc<GraphStats>,
    /// Closed ODF topics of the plan.
    closed: HashSet<Arc<str>>,
    queues: HashMap<Arc<str>, HeldQueue>,
}

#[derive(Default)]
struct HeldQueue {
    msgs: VecDeque<(Instant, Bytes)>,
    bytes: usize,
}

impl HeldQueue {
    fn pop(&mut self) {
        if let Some((_, p)) = self.msgs.pop_front() {
            self.bytes -= p.len();
        }
    }
}

impl Held {
    pub(super) fn new(cfg: Hold, stats: Arc<GraphStats>) -> Self {
        Self {
            cfg,
            stats,
            closed: HashSet::new(),
            queues: HashMap::new(),
        }
    }

    /// Takes the plan's ODFs and which of them are open (`gates`, by topic; a topic not in
    /// it is as the plan says); drops what was held for ODFs the plan no longer has, and
    /// returns what was held for ODFs that are open now.
    pub(super) fn follow(&mut self, plan: &Plan, gates: &Gates) -> Vec<(Arc<str>, Vec<Bytes>)> {
        self.closed = plan
            .odfs
            .iter()
            .filter(|o| !gates.get(o.topic.as_str()).copied().unwrap_or(o.open))
            .map(|o| Arc::from(o.topic.as_str()))
            .collect();
        let mut gone = 0;
        self.queues.retain(|t, q| {
            let keep = plan.odfs.iter().any(|o| *o.topic == **t);
            if !keep {
                gone += q.msgs.len() as u64;
            }
            keep
        });
        self.dropped(gone);
        let opened: Vec<Arc<str>> = self
            .queues
            .keys()
            .filter(|t| !self.closed.contains(*t))
            .cloned()
            .collect();
        opened
            .into_iter()
            .map(|t| (t.clone(), self.gate(t, true)))
            .collect()
    }

    fn dropped(&self, n: u64) {
        if n > 0 {
            self.stats.held.fetch_sub(n, Ordering::Relaxed);
            self.stats.held_dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Keeps `payload` for `topic` if the topic is closed; gives it back otherwise.
    pub(super) fn hold(&mut self, topic: &str, payload: Bytes) -> Option<Bytes> {
        if self.cfg.max == 0 || self.closed.is_empty() || !self.closed.contains(topic) {
            return Some(payload);
        }
        let now = Instant::now();
        if !self.queues.contains_key(topic) {
            self.queues.insert(Arc::from(topic), HeldQueue::default());
        }
        // Present: inserted just above if it was not.
        let q = self.queues.get_mut(topic)?;
        let mut stale = 0;
        while q
            .msgs
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > self.cfg.ttl)
        {
            q.pop();
            stale += 1;
        }
        q.bytes += payload.len();
        q.msgs.push_back((now, payload));
        while q.msgs.len() > self.cfg.max || q.bytes > self.cfg.max_bytes {
            q.pop();
            stale += 1;
        }
        self.stats.held.fetch_add(1, Ordering::Relaxed);
        self.dropped(stale);
        None
    }

    /// Opens or closes `topic`; on opening, returns what was held for it that is still fresh.
    fn gate(&mut self, topic: Arc<str>, open: bool) -> Vec<Bytes> {
        if !open {
            self.closed.insert(topic);
            return Vec::new();
        }
        self.closed.remove(&topic);
        let Some(q) = self.queues.remove(&topic) else {
            return Vec::new();
        };
        let total = q.msgs.len() as u64;
        let fresh: Vec<Bytes> = q
            .msgs
            .into_iter()
            .filter(|(at, _)| at.elapsed() <= self.cfg.ttl)
            .map(|(_, p)| p)
            .collect();
        self.stats
            .held
            .fetch_sub(fresh.len() as u64, Ordering::Relaxed);
        self.dropped(total - fresh.len() as u64);
        fresh
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use super::*;
    use crate::plan::OdfPlan;

    fn plan(open: bool) -> Plan {
        Plan {
            gid: "g".into(),
            monitor: None,
            idfs: Vec::new(),
            join: None,
            odfs: vec![OdfPlan {
                da: "00000000-0000-4000-8000-000000000001".parse().unwrap(),
                feature: "Out".parse().unwrap(),
                topic: "out".into(),
                func: None,
                open,
            }],
        }
    }

    fn held(max: usize, ttl: Duration) -> (Held, Arc<GraphStats>) {
        let stats = Arc::new(GraphStats::default());
        let hold = Hold {
            max,
            max_bytes: 1000,
            ttl,
        };
        (Held::new(hold, stats.clone()), stats)
    }

    fn n(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn closed_odfs_hold_in_order_up_to_max_and_release_on_open() {
        let (mut h, stats) = held(3, Duration::from_secs(60));
        assert!(h.follow(&plan(false), &Gates::new()).is_empty());
        for i in 0..5u8 {
            assert_eq!(h.hold("out", Bytes::from(vec![i])), None);
        }
        // Another topic (not in the plan's closed set) passes through.
        assert!(h.hold("other", Bytes::from_static(b"x")).is_some());
        assert_eq!((n(&stats.held), n(&stats.held_dropped)), (3, 2));
        let out = h.gate(Arc::from("out"), true);
        assert_eq!(out, vec![vec![2u8], vec![3], vec![4]]);
        assert_eq!((n(&stats.held), n(&stats.held_dropped)), (0, 2));
        // Open: passes through; closed again: held again.
        assert!(h.hold("out", Bytes::from_static(b"y")).is_some());
        assert!(h.gate(Arc::from("out"), false).is_empty());
        assert_eq!(h.hold("out", Bytes::from_static(b"z")), None);
        // A plan without the ODF drops what was held for it.
        let mut other = plan(false);
        other.odfs.clear();
        assert!(h.follow(&other, &Gates::new()).is_empty());
        assert_eq!((n(&stats.held), n(&stats.held_dropped)), (0, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn stale_held_outputs_are_dropped_not_delivered() {
        let (mut h, stats) = held(10, Duration::from_secs(5));
        let _ = h.follow(&plan(false), &Gates::new());
        assert_eq!(h.hold("out", Bytes::from_static(b"old")), None);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(h.hold("out", Bytes::from_static(b"new")), None);
        assert_eq!(n(&stats.held_dropped), 1);
        tokio::time::advance(Duration::from_secs(4)).await;
        // A new plan that finds the ODF open delivers what is fresh.
        let out = h.follow(&plan(true), &Gates::new());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, vec![Bytes::from_static(b"new")]);
        assert_eq!(n(&stats.held), 0);
    }

    #[tokio::test]
    async fn held_bytes_are_bounded_per_odf() {
        let (mut h, stats) = held(100, Duration::from_secs(60));
        let _ = h.follow(&plan(false), &Gates::new());
        for i in 0..5u8 {
            assert_eq!(h.hold("out", Bytes::from(vec![i; 300])), None);
        }
        // 1000 bytes hold three of 300.
        assert_eq!((n(&stats.held), n(&stats.held_dropped)), (3, 2));
        let out = h.gate(Arc::from("out"), true);
        assert_eq!(out.iter().map(|b| b[0]).collect::<Vec<_>>(), vec![2, 3, 4]);
        // One payload larger than the bound is not held at all.
        let _ = h.gate(Arc::from("out"), false);
        assert_eq!(h.hold("out", Bytes::from(vec![9; 2000])), None);
        assert!(h.gate(Arc::from("out"), true).is_empty());
        assert_eq!((n(&stats.held), n(&stats.held_dropped)), (0, 3));
    }

    #[tokio::test]
    async fn holding_disabled_passes_everything() {
        let (mut h, _) = held(0, Duration::from_secs(60));
        let _ = h.follow(&plan(false), &Gates::new());
        assert!(h.hold("out", Bytes::from_static(b"x")).is_some());
    }
}
