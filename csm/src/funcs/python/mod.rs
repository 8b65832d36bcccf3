//! Python functions, run out of process by `python3` workers speaking JSON lines
//! (`worker.py`), started by [`Sandbox`] (private directory, scrubbed environment, OS
//! limits, an unprivileged user when the controller is root).
//!
//! The pool has `functions.python_workers` shared workers and one probation worker. A
//! graph's calls go to the shared workers (in turn) only once its functions have shown they
//! answer; new functions, and functions whose call timed out or brought a worker down, run
//! on the probation worker, and after such a failure the graph's calls are refused for a
//! backoff ([`owner`]). So a function that loops forever holds up the probation worker now
//! and then, never a shared one, and the other graphs' calls keep their workers.

mod owner;
mod sandbox;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{FnError, FunctionsConfig, SetupError};
#[cfg(test)]
use owner::MIN_BACKOFF;
use owner::{Lane, Owner};
use sandbox::Sandbox;
use worker::{Deps, Job, Loadable, Worker};

/// How much the probation worker lowers its CPU priority: a function spinning there until
/// its timeout yields the CPU to the controller and the shared workers.
const PROBATION_NICE: u8 = 10;
/// Requests queued per worker before callers wait.
const QUEUE: usize = 4096;

/// A Python function bound to its dependencies, on behalf of one graph.
#[derive(Debug, Clone)]
pub struct PyFn {
    pool: PythonPool,
    owner: Arc<Owner>,
    func: Arc<Loadable>,
    deps: Deps,
}

/// The pool of worker processes.
#[derive(Debug, Clone)]
pub struct PythonPool {
    shared: Arc<Vec<mpsc::Sender<Job>>>,
    probation: mpsc::Sender<Job>,
    next: Arc<AtomicUsize>,
    /// Process ids of the shared workers, then of the probation worker (0: not running).
    pids: Arc<Vec<Arc<AtomicU64>>>,
    restarts: Arc<Vec<Arc<AtomicU64>>>,
    owners: Arc<Mutex<HashMap<String, Weak<Owner>>>>,
}

impl PythonPool {
    /// Starts the worker tasks; processes are spawned lazily, on first use.
    pub fn new(cfg: &FunctionsConfig) -> Self {
        let sandbox = Arc::new(Sandbox::new(cfg));
        let timeout = Duration::from_millis(cfg.python_timeout_ms.max(1));
        let n = cfg.python_workers.max(1);
        let mut pids = Vec::with_capacity(n + 1);
        let mut restarts = Vec::with_capacity(n + 1);
        let mut spawn = |name: String, nice: u8| {
            let w = Worker::new(sandbox.clone(), timeout, name, nice);
            pids.push(w.pid.clone());
            restarts.push(w.restarts.clone());
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(w.run(rx));
            tx
        };
        let shared = (0..n).map(|i| spawn(format!("shared {i}"), 0)).collect();
        let probation = spawn("probation".into(), PROBATION_NICE);
        Self {
            shared: Arc::new(shared),
            probation,
            next: Arc::new(AtomicUsize::new(0)),
            pids: Arc::new(pids),
            restarts: Arc::new(restarts),
            owners: Arc::default(),
        }
    }

    /// Process ids of the shared workers (0 for one not started yet).
    pub fn pids(&self) -> Vec<u32> {
        let n = self.shared.len();
        self.pids[..n]
            .iter()
            .map(|p| p.load(Ordering::Relaxed) as u32)
            .collect()
    }

    /// Process id of the probation worker (0 when not running).
    pub fn probation_pid(&self) -> u32 {
        self.pids
            .last()
            .map_or(0, |p| p.load(Ordering::Relaxed) as u32)
    }

    /// Workers replaced after a failure, over all workers.
    pub fn restarts(&self) -> u64 {
        self.restarts
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .sum()
    }

    /// The standing of graph `graph`'s Python functions, for `/status`; `None` when it has
    /// none bound.
    pub fn graph_json(&self, graph: &str) -> Option<Value> {
        let owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        owners
            .get(graph)
            .and_then(Weak::upgrade)
            .map(|o| o.json(Instant::now()))
    }

    /// The record of graph `graph`, shared by all its functions.
    fn owner(&self, graph: &str) -> Arc<Owner> {
        let mut owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(o) = owners.get(graph).and_then(Weak::upgrade) {
            return o;
        }
        owners.retain(|_, o| o.strong_count() > 0);
        let o = Arc::new(Owner::new(graph));
        owners.insert(graph.to_owned(), Arc::downgrade(&o));
        o
    }

    async fn submit(
        &self,
        lane: Lane,
        make: impl FnOnce(oneshot::Sender<Result<Value, FnError>>) -> Job,
    ) -> Result<Value, FnError> {
        let worker = match lane {
            Lane::Probation => &self.probation,
            Lane::Shared => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % self.shared.len();
                &self.shared[i]
            }
        };
        let (reply, rx) = oneshot::channel();
        worker
            .send(make(reply))
            .await
            .map_err(|_| FnError("the Python pool has stopped".into()))?;
        rx.await
            .map_err(|_| FnError("the Python worker stopped".into()))?
    }

    /// Compiles `code` (on the probation worker: it is code nobody has run yet).
    pub async fn check(&self, code: &str) -> Result<(), SetupError> {
        self.submit(Lane::Probation, |reply| Job::Check {
            code: code.to_owned(),
            reply,
        })
        .await
        .map(|_| ())
        .map_err(SetupError::Python)
    }

    /// Binds a function of graph `graph` to its dependencies; the graph's functions start
    /// afresh on probation.
    pub fn bind(
        &self,
        graph: &str,
        digest: &str,
        code: &Arc<str>,
        deps: &[(String, String, Arc<str>)],
    ) -> PyFn {
        let owner = self.owner(graph);
        owner.reset();
        PyFn {
            pool: self.clone(),
            owner,
            func: Arc::new(Loadable {
                digest: digest.to_owned(),
                code: code.clone(),
            }),
            deps: Arc::new(
                deps.iter()
                    .map(|(a, d, c)| {
                        (
                            a.clone(),
                            Arc::new(Loadable {
                                digest: d.clone(),
                                code: c.clone(),
                            }),
                        )
                    })
                    .collect(),
            ),
        }
    }
}

impl PyFn {
    pub async fn call(&self, args: Vec<Value>) -> Result<Value, FnError> {
        let lane = self.owner.admit(Instant::now())?;
        self.pool
            .submit(lane, |reply| Job::Call {
                owner: self.owner.clone(),
                func: self.func.clone(),
                deps: self.deps.clone(),
                args,
                reply,
            })
            .await
    }
}

#[cfg(test)]
mod tests;
