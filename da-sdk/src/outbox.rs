//! The outbox: every accepted push waits here until the broker acknowledges it, in memory or
//! in SQLite. Entries are numbered (`seq` grows), read in order from a cursor, and removed
//! one by one on acknowledgement, so a connection loss only moves the cursor back and what
//! was not acknowledged is sent again, in the same order. Bounded: see [`WhenFull`].
//!
//! It knows nothing about MQTT or topics; the DA's task (`core`) decides when to send.

use std::collections::{BTreeSet, VecDeque};

use bytes::Bytes;
use diesel::prelude::*;
use iot_proto::DaId;

use crate::config::{OutboxConfig, WhenFull};
use crate::error::Error;
use crate::sqlite::{self, outbox, Shared};

/// One undelivered push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub seq: i64,
    pub feature: String,
    pub payload: Bytes,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    pub seq: i64,
    /// The oldest entry, dropped to make room ([`WhenFull::DropOldest`]).
    pub dropped: Option<i64>,
}

#[derive(Debug)]
enum Backend {
    Memory { entries: VecDeque<Entry>, next: i64 },
    Sqlite { conn: Shared, da: String },
}

/// The outbox of one DA.
#[derive(Debug)]
pub(crate) struct Outbox {
    backend: Backend,
    len: usize,
    capacity: usize,
    when_full: WhenFull,
}

impl Outbox {
    /// Opens the outbox of `da`; an SQLite outbox starts with what a previous run left.
    pub async fn open(cfg: &OutboxConfig, da: &DaId) -> Result<Self, Error> {
        let (backend, len) = match &cfg.path {
            None => (
                Backend::Memory {
                    entries: VecDeque::new(),
                    next: 1,
                },
                0,
            ),
            Some(path) => {
                let conn = sqlite::open(path).await?;
                let da = da.to_string();
                let d = da.clone();
                let len = sqlite::run(&conn, move |c| {
                    outbox::table
                        .filter(outbox::da_id.eq(d))
                        .count()
                        .get_result::<i64>(c)
                })
                .await?;
                (
                    Backend::Sqlite { conn, da },
                    usize::try_from(len).unwrap_or(0),
                )
            }
        };
        Ok(Self {
            backend,
            len,
            capacity: cfg.capacity.max(1),
            when_full: cfg.when_full,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Adds a push at the end.
    pub async fn append(&mut self, feature: &str, payload: Bytes) -> Result<Appended, Error> {
        let mut dropped = None;
        if self.len >= self.capacity {
            match self.when_full {
                WhenFull::Reject => {
                    return Err(Error::OutboxFull {
                        capacity: self.capacity,
                    })
                }
                WhenFull::DropOldest => {
                    if let Some(first) = self.after(0, 1).await?.first() {
                        self.remove(first.seq).await?;
                        dropped = Some(first.seq);
                    }
                }
            }
        }
        let seq = match &mut self.backend {
            Backend::Memory { entries, next } => {
                let seq = *next;
                *next += 1;
                entries.push_back(Entry {
                    seq,
                    feature: feature.to_owned(),
                    payload,
                });
                seq
            }
            Backend::Sqlite { conn, da } => {
                let (da, feature) = (da.clone(), feature.to_owned());
                sqlite::run(conn, move |c| {
                    c.transaction(|c| {
                        diesel::insert_into(outbox::table)
                            .values((
                                outbox::da_id.eq(da),
                                outbox::feature.eq(feature),
                                outbox::payload.eq(payload.to_vec()),
                            ))
                            .execute(c)?;
                        diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                            "last_insert_rowid()",
                        ))
                        .get_result::<i64>(c)
                    })
                })
                .await?
            }
        };
        self.len += 1;
        Ok(Appended { seq, dropped })
    }

    /// Up to `limit` entries with `seq > after`, oldest first.
    pub async fn after(&self, after: i64, limit: usize) -> Result<Vec<Entry>, Error> {
        match &self.backend {
            Backend::Memory { entries, .. } => {
                let start = entries.partition_point(|e| e.seq <= after);
                Ok(entries.iter().skip(start).take(limit).cloned().collect())
            }
            Backend::Sqlite { conn, da } => {
                let da = da.clone();
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                let rows = sqlite::run(conn, move |c| {
                    outbox::table
                        .filter(outbox::da_id.eq(da))
                        .filter(outbox::seq.gt(after))
                        .order(outbox::seq.asc())
                        .limit(limit)
                        .select((outbox::seq, outbox::feature, outbox::payload))
                        .load::<(i64, String, Vec<u8>)>(c)
                })
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(seq, feature, payload)| Entry {
                        seq,
                        feature,
                        payload: Bytes::from(payload),
                    })
                    .collect())
            }
        }
    }

    /// The features that have entries.
    pub async fn features(&self) -> Result<BTreeSet<String>, Error> {
        match &self.backend {
            Backend::Memory { entries, .. } => {
                Ok(entries.iter().map(|e| e.feature.clone()).collect())
            }
            Backend::Sqlite { conn, da } => {
                let da = da.clone();
                let rows = sqlite::run(conn, move |c| {
                    outbox::table
                        .filter(outbox::da_id.eq(da))
                        .select(outbox::feature)
                        .distinct()
                        .load::<String>(c)
                })
                .await?;
                Ok(rows.into_iter().collect())
            }
        }
    }

    /// Removes an acknowledged (or abandoned) entry; unknown seqs are ignored.
    pub async fn remove(&mut self, seq: i64) -> Result<(), Error> {
        let removed = match &mut self.backend {
            Backend::Memory { entries, .. } => {
                if entries.front().is_some_and(|e| e.seq == seq) {
                    entries.pop_front();
                    1
                } else if let Ok(i) = entries.binary_search_by_key(&seq, |e| e.seq) {
                    entries.remove(i);
                    1
                } else {
                    0
                }
            }
            Backend::Sqlite { conn, da } => {
                let da = da.clone();
                sqlite::run(conn, move |c| {
                    diesel::delete(
                        outbox::table
                            .filter(outbox::da_id.eq(da))
                            .filter(outbox::seq.eq(seq)),
                    )
                    .execute(c)
                })
                .await?
            }
        };
        self.len = self.len.saturating_sub(removed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exercise(cfg: OutboxConfig) {
        let da = DaId::new_v4();
        let mut ob = Outbox::open(&cfg, &da).await.unwrap();
        assert_eq!(ob.len(), 0);
        let mut seqs = Vec::new();
        for i in 0..5 {
            let a = ob.append("A", Bytes::from(format!("[{i}]"))).await.unwrap();
            assert_eq!(a.dropped, None);
            seqs.push(a.seq);
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        let first = ob.after(0, 2).await.unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].payload, Bytes::from("[0]"));
        let rest = ob.after(first[1].seq, 10).await.unwrap();
        assert_eq!(
            rest.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
            ["[2]", "[3]", "[4]"].map(Bytes::from)
        );
        // Acks may come out of order.
        ob.remove(seqs[1]).await.unwrap();
        ob.remove(seqs[0]).await.unwrap();
        ob.remove(12345).await.unwrap();
        assert_eq!(ob.len(), 3);
        assert_eq!(ob.after(0, 1).await.unwrap()[0].payload, Bytes::from("[2]"));
        ob.append("B", Bytes::from("[5]")).await.unwrap();
        assert_eq!(
            ob.features().await.unwrap(),
            BTreeSet::from(["A".to_owned(), "B".to_owned()])
        );
    }

    #[tokio::test]
    async fn memory_outbox_keeps_order() {
        exercise(OutboxConfig::memory(100)).await;
    }

    #[tokio::test]
    async fn sqlite_outbox_keeps_order_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        exercise(OutboxConfig::sqlite(&path, 100)).await;

        let da = DaId::new_v4();
        let other = DaId::new_v4();
        {
            let cfg = OutboxConfig::sqlite(&path, 100);
            let mut ob = Outbox::open(&cfg, &da).await.unwrap();
            let mut o2 = Outbox::open(&cfg, &other).await.unwrap();
            ob.append("A", Bytes::from("[1]")).await.unwrap();
            ob.append("B", Bytes::from("['it''s; DROP TABLE outbox; --']"))
                .await
                .unwrap();
            o2.append("A", Bytes::from("[9]")).await.unwrap();
        }
        let ob = Outbox::open(&OutboxConfig::sqlite(&path, 100), &da)
            .await
            .unwrap();
        assert_eq!(ob.len(), 2, "each DA sees only its own entries");
        let all = ob.after(0, 10).await.unwrap();
        assert_eq!(all[0].feature, "A");
        assert_eq!(
            all[1].payload,
            Bytes::from("['it''s; DROP TABLE outbox; --']")
        );
    }

    #[tokio::test]
    async fn full_outbox_rejects_or_drops_the_oldest() {
        let da = DaId::new_v4();
        let mut ob = Outbox::open(&OutboxConfig::memory(2), &da).await.unwrap();
        ob.append("A", Bytes::from("[1]")).await.unwrap();
        ob.append("A", Bytes::from("[2]")).await.unwrap();
        assert_eq!(
            ob.append("A", Bytes::from("[3]")).await.unwrap_err(),
            Error::OutboxFull { capacity: 2 }
        );
        let dir = tempfile::tempdir().unwrap();
        let cfg = OutboxConfig::sqlite(dir.path().join("o.db"), 2).when_full(WhenFull::DropOldest);
        let mut ob = Outbox::open(&cfg, &da).await.unwrap();
        let a = ob.append("A", Bytes::from("[1]")).await.unwrap();
        ob.append("A", Bytes::from("[2]")).await.unwrap();
        let c = ob.append("A", Bytes::from("[3]")).await.unwrap();
        assert_eq!(c.dropped, Some(a.seq));
        assert_eq!(ob.len(), 2);
        let left: Vec<_> = ob.after(0, 5).await.unwrap();
        assert_eq!(left[0].payload, Bytes::from("[2]"));
    }
}
