//! Python functions, run out of process by a pool of `python3` workers speaking JSON lines
//! (`worker.py`). Each worker is driven by one task that writes every queued request before
//! flushing (so requests from many graphs are batched), matches answers by id, and enforces
//! the per-call timeout: a worker that does not answer in time, or dies, is killed and
//! replaced, and its pending calls fail with a clear error; routing goes on.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{FnError, FunctionsConfig, SetupError};
use iot_proto::log::Escaped;

const WORKER_SCRIPT: &str = include_str!("worker.py");
/// Where a call's result goes.
type Reply = oneshot::Sender<Result<Value, FnError>>;

const SHUTTING_DOWN: &str = "shutting down";
/// Most requests in one batch line.
const MAX_BATCH: usize = 512;
/// Requests queued per worker before callers wait.
const QUEUE: usize = 4096;
/// How long a new worker process may take to say it is ready (the interpreter's start-up,
/// which is not counted against any call: a loaded machine can take seconds for it).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A Python function bound to its dependencies.
#[derive(Debug, Clone)]
pub struct PyFn {
    pool: PythonPool,
    func: Arc<Loadable>,
    deps: Arc<Vec<(String, Arc<Loadable>)>>,
}

/// Code a worker must load before calling it.
#[derive(Debug)]
struct Loadable {
    digest: String,
    code: Arc<str>,
}

enum Job {
    Call {
        func: Arc<Loadable>,
        deps: Arc<Vec<(String, Arc<Loadable>)>>,
        args: Vec<Value>,
        reply: oneshot::Sender<Result<Value, FnError>>,
    },
    Check {
        code: String,
        reply: oneshot::Sender<Result<Value, FnError>>,
    },
}

/// The pool of worker processes.
#[derive(Debug, Clone)]
pub struct PythonPool {
    workers: Arc<Vec<mpsc::Sender<Job>>>,
    next: Arc<AtomicUsize>,
    /// Worker pids, for status and tests.
    pids: Arc<Vec<AtomicU64>>,
    pub restarts: Arc<AtomicU64>,
}

impl PythonPool {
    /// Starts the worker tasks; processes are spawned lazily, on first use.
    pub fn new(cfg: &FunctionsConfig) -> Self {
        let n = cfg.python_workers.max(1);
        let pids: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
        let restarts = Arc::new(AtomicU64::new(0));
        let workers = (0..n)
            .map(|i| {
                let (tx, rx) = mpsc::channel(QUEUE);
                let w = Worker {
                    python: cfg.python.clone(),
                    timeout: Duration::from_millis(cfg.python_timeout_ms.max(1)),
                    pids: pids.clone(),
                    index: i,
                    restarts: restarts.clone(),
                };
                tokio::spawn(w.run(rx));
                tx
            })
            .collect();
        Self {
            workers: Arc::new(workers),
            next: Arc::new(AtomicUsize::new(0)),
            pids,
            restarts,
        }
    }

    /// Current worker process ids (0 for a worker not started yet).
    pub fn pids(&self) -> Vec<u32> {
        self.pids
            .iter()
            .map(|p| p.load(Ordering::Relaxed) as u32)
            .collect()
    }

    async fn submit(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<Value, FnError>>) -> Job,
    ) -> Result<Value, FnError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let (reply, rx) = oneshot::channel();
        self.workers[i]
            .send(make(reply))
            .await
            .map_err(|_| FnError("the Python pool has stopped".into()))?;
        rx.await
            .map_err(|_| FnError("the Python worker stopped".into()))?
    }

    /// Compiles `code` in a worker.
    pub async fn check(&self, code: &str) -> Result<(), SetupError> {
        self.submit(|reply| Job::Check {
            code: code.to_owned(),
            reply,
        })
        .await
        .map(|_| ())
        .map_err(SetupError::Python)
    }

    pub fn bind(&self, digest: &str, code: &Arc<str>, deps: &[(String, String, Arc<str>)]) -> PyFn {
        PyFn {
            pool: self.clone(),
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
        self.pool
            .submit(|reply| Job::Call {
                func: self.func.clone(),
                deps: self.deps.clone(),
                args,
                reply,
            })
            .await
    }
}

struct Worker {
    python: String,
    timeout: Duration,
    pids: Arc<Vec<AtomicU64>>,
    index: usize,
    restarts: Arc<AtomicU64>,
}

struct Process {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    loaded: HashSet<String>,
    /// id -> (caller, deadline); loads have no caller.
    pending: HashMap<u64, (Option<Reply>, Instant)>,
    next_id: u64,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Job>) {
        // One process at a time; a new one after a crash or timeout, when work arrives.
        while let Some(job) = rx.recv().await {
            let mut proc = match self.spawn() {
                Ok(p) => p,
                Err(e) => {
                    fail(
                        job,
                        &format!(
                            "cannot start `{}`: {e} (is Python installed? see functions.python)",
                            self.python
                        ),
                    );
                    continue;
                }
            };
            if let Err(e) = ready(&mut proc).await {
                let _ = proc.child.start_kill();
                let _ = proc.child.wait().await;
                tracing::warn!(python.worker = self.index, reason = %Escaped(&e), "Python worker did not start");
                fail(job, &e);
                continue;
            }
            self.pids[self.index].store(proc.child.id().unwrap_or(0).into(), Ordering::Relaxed);
            let why = self.serve(&mut proc, job, &mut rx).await;
            let _ = proc.child.start_kill();
            let _ = proc.child.wait().await;
            self.pids[self.index].store(0, Ordering::Relaxed);
            for (_, (caller, _)) in proc.pending.drain() {
                if let Some(c) = caller {
                    let _ = c.send(Err(FnError(why.clone())));
                }
            }
            if why == SHUTTING_DOWN {
                break;
            }
            self.restarts.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(python.worker = self.index, reason = ?why, "Python worker replaced");
        }
    }

    fn spawn(&self) -> std::io::Result<Process> {
        let mut child = Command::new(&self.python)
            .arg("-u")
            .arg("-c")
            .arg(WORKER_SCRIPT)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        Ok(Process {
            child,
            stdin: BufWriter::new(stdin),
            stdout: BufReader::new(stdout).lines(),
            loaded: HashSet::new(),
            pending: HashMap::new(),
            next_id: 0,
        })
    }

    /// Serves jobs on one process until it fails; returns why. Requests queued together go
    /// out as one batch line, answered by one line: one write and one read per batch.
    async fn serve(&self, p: &mut Process, first: Job, rx: &mut mpsc::Receiver<Job>) -> String {
        let mut reqs = Vec::new();
        self.stage(p, first, &mut reqs);
        loop {
            while reqs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => self.stage(p, job, &mut reqs),
                    Err(_) => break,
                }
            }
            if !reqs.is_empty() {
                if let Err(e) = send(p, &mut reqs).await {
                    return e;
                }
            }
            let deadline = p.pending.values().map(|(_, d)| *d).min();
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => self.stage(p, job, &mut reqs),
                    None => return SHUTTING_DOWN.into(),
                },
                line = p.stdout.next_line() => match line {
                    Ok(Some(line)) => answer(p, &line),
                    Ok(None) | Err(_) => return "Python worker crashed (it exited)".into(),
                },
                _ = sleep_until(deadline) => {
                    return format!(
                        "timed out after {} ms (functions.python_timeout_ms); worker restarted",
                        self.timeout.as_millis()
                    );
                }
            }
        }
    }

    /// Adds a job's requests (loading code the process lacks first) to the next batch.
    fn stage(&self, p: &mut Process, job: Job, reqs: &mut Vec<Value>) {
        let deadline = Instant::now() + self.timeout;
        match job {
            Job::Check { code, reply } => {
                p.next_id += 1;
                reqs.push(json!({"id": p.next_id, "op": "check", "code": code}));
                p.pending.insert(p.next_id, (Some(reply), deadline));
            }
            Job::Call {
                func,
                deps,
                args,
                reply,
            } => {
                for l in std::iter::once(&func).chain(deps.iter().map(|(_, l)| l)) {
                    if p.loaded.insert(l.digest.clone()) {
                        p.next_id += 1;
                        reqs.push(json!({"id": p.next_id, "op": "load", "digest": l.digest, "code": &*l.code}));
                        p.pending.insert(p.next_id, (None, deadline));
                    }
                }
                p.next_id += 1;
                let deps: serde_json::Map<String, Value> = deps
                    .iter()
                    .map(|(a, l)| (a.clone(), Value::String(l.digest.clone())))
                    .collect();
                reqs.push(json!({"id": p.next_id, "op": "call", "digest": func.digest, "deps": deps, "args": args}));
                p.pending.insert(p.next_id, (Some(reply), deadline));
            }
        }
    }
}

/// Waits for a new process's `{"ready": true}` line, so that the interpreter's start-up is
/// not counted against the first calls' deadlines.
async fn ready(p: &mut Process) -> Result<(), String> {
    match tokio::time::timeout(STARTUP_TIMEOUT, p.stdout.next_line()).await {
        Ok(Ok(Some(line)))
            if serde_json::from_str::<Value>(&line)
                .is_ok_and(|v| v.get("ready") == Some(&Value::Bool(true))) =>
        {
            Ok(())
        }
        Ok(Ok(Some(_))) => Err("the Python worker did not start: unexpected first line".into()),
        Ok(Ok(None) | Err(_)) => Err("the Python worker exited while starting".into()),
        Err(_) => Err(format!(
            "the Python worker did not start within {} s",
            STARTUP_TIMEOUT.as_secs()
        )),
    }
}

/// Writes the staged requests as one line (a batch when there are several) and flushes.
async fn send(p: &mut Process, reqs: &mut Vec<Value>) -> Result<(), String> {
    let line = if reqs.len() == 1 {
        reqs.pop().unwrap_or(Value::Null)
    } else {
        json!({"op": "batch", "reqs": std::mem::take(reqs)})
    };
    reqs.clear();
    let mut bytes = serde_json::to_vec(&line).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    let crashed = |e: std::io::Error| format!("Python worker crashed ({e})");
    p.stdin.write_all(&bytes).await.map_err(crashed)?;
    p.stdin.flush().await.map_err(crashed)
}

fn answer(p: &mut Process, line: &str) {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return;
    };
    if let Some(Value::Array(replies)) = v.get("batch") {
        for r in replies {
            answer_one(p, r);
        }
    } else {
        answer_one(p, &v);
    }
}

fn answer_one(p: &mut Process, v: &Value) {
    let Some(id) = v.get("id").and_then(Value::as_u64) else {
        return;
    };
    let Some((caller, _)) = p.pending.remove(&id) else {
        return;
    };
    let result = match v.get("error").and_then(Value::as_str) {
        Some(e) => Err(FnError(format!("Python: {e}"))),
        None => Ok(v.get("value").cloned().unwrap_or(Value::Null)),
    };
    match caller {
        Some(c) => {
            let _ = c.send(result);
        }
        // A load failed: calls of that digest will fail with KeyError; say why once.
        None => {
            if let Err(e) = result {
                tracing::warn!(error = %Escaped(&e), "Python function failed to load");
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn fail(job: Job, why: &str) {
    let reply = match job {
        Job::Call { reply, .. } | Job::Check { reply, .. } => reply,
    };
    let _ = reply.send(Err(FnError(why.to_owned())));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(timeout_ms: u64) -> PythonPool {
        PythonPool::new(&FunctionsConfig {
            python_timeout_ms: timeout_ms,
            python_workers: 1,
            ..Default::default()
        })
    }

    fn f(p: &PythonPool, code: &str) -> PyFn {
        p.bind(&super::super::digest(code), &Arc::from(code), &[])
    }

    /// For pools whose calls are all expected to succeed: no deadline a loaded machine could
    /// reach (a worker's start-up is not counted anyway).
    const GENEROUS_MS: u64 = 120_000;

    #[tokio::test]
    async fn calls_check_and_dependencies() {
        let p = pool(GENEROUS_MS);
        assert_eq!(
            f(&p, "def run(x): return x ** 2\n")
                .call(vec![json!(3)])
                .await
                .unwrap(),
            json!(9)
        );
        assert!(p
            .check("def run(x) return")
            .await
            .unwrap_err()
            .to_string()
            .contains("SyntaxError"));
        assert!(p
            .check("x = 1")
            .await
            .unwrap_err()
            .to_string()
            .contains("no run()"));
        let sq: Arc<str> = Arc::from("def run(x): return x * x\n");
        let g = p.bind(
            "main",
            &Arc::from("def run(x): return iot.sq(x) + 1\n"),
            &[("sq".into(), "sqd".into(), sq)],
        );
        assert_eq!(g.call(vec![json!(4)]).await.unwrap(), json!(17));
        let e = f(&p, "def run(x): return object()\n")
            .call(vec![json!(1)])
            .await
            .unwrap_err();
        assert!(e.0.contains("wrong return type"), "{e}");
        let e = f(&p, "def run(x): raise ValueError('nope')\n")
            .call(vec![json!(1)])
            .await
            .unwrap_err();
        assert!(e.0.contains("ValueError: nope"), "{e}");
    }

    #[tokio::test]
    async fn a_runaway_call_times_out_and_the_worker_is_replaced() {
        let p = pool(1500);
        let e = f(&p, "def run(x):\n    while True: pass\n")
            .call(vec![json!(1)])
            .await
            .unwrap_err();
        assert!(e.0.contains("timed out"), "{e}");
        // The replacement answers. The short deadline is for the runaway call; should a loaded
        // machine make the good one miss it too, that is another timeout and another restart:
        // try again (for at most a minute), and count those.
        let good = f(&p, "def run(x): return x + 1\n");
        let give_up = Instant::now() + Duration::from_secs(60);
        let mut timeouts = 0;
        let value = loop {
            match good.call(vec![json!(1)]).await {
                Ok(v) => break v,
                Err(e) if e.0.contains("timed out") && Instant::now() < give_up => timeouts += 1,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(value, json!(2));
        assert_eq!(p.restarts.load(Ordering::Relaxed), 1 + timeouts);
    }

    #[tokio::test]
    async fn a_missing_interpreter_is_a_clear_error() {
        let p = PythonPool::new(&FunctionsConfig {
            python: "/nonexistent/python3".into(),
            ..Default::default()
        });
        let e = p.check("def run(x): return x\n").await.unwrap_err();
        assert!(e.to_string().contains("cannot start"), "{e}");
    }
}
