//! The database writer: one blocking thread owns the connection and applies writes in the
//! order they were sent, many per transaction when they queue up. Callers get a receiver that
//! resolves once their write is durable.

use iot_migrations::das::Write;
use iot_migrations::Db;
use iot_proto::log::Escaped;
use tokio::sync::{mpsc, oneshot};

/// Resolves when the write is stored, or with the database error.
pub type Persisted = oneshot::Receiver<Result<(), String>>;

type Job = (Write, oneshot::Sender<Result<(), String>>);

/// Most writes applied in one transaction.
const BATCH: usize = 512;

/// Handle to the writer thread.
#[derive(Debug, Clone)]
pub struct Store {
    tx: mpsc::Sender<Job>,
}

impl Store {
    /// Starts the writer thread with `db` (already migrated).
    pub fn spawn(mut db: Db) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(4096);
        tokio::task::spawn_blocking(move || {
            let mut batch: Vec<Job> = Vec::with_capacity(BATCH);
            while let Some(first) = rx.blocking_recv() {
                batch.push(first);
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let writes: Vec<Write> = batch.iter().map(|(w, _)| w.clone()).collect();
                let result = db.apply_writes(&writes).map_err(|e| e.to_string());
                if let Err(e) = &result {
                    tracing::error!(error = %Escaped(&e), db.writes = writes.len(), "database write failed");
                }
                for (_, done) in batch.drain(..) {
                    let _ = done.send(result.clone());
                }
            }
        });
        Self { tx }
    }

    /// Queues a write.
    pub async fn write(&self, w: Write) -> Persisted {
        let (done, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError((_, done))) = self.tx.send((w, done)).await {
            let _ = done.send(Err("the database writer has stopped".into()));
        }
        rx
    }
}
