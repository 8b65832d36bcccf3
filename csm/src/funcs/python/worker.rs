//! One worker: a task that runs one `worker.py` process at a time and a new one after a
//! failure. It writes every queued request before flushing (requests from many graphs go
//! out as one batch line) and the process answers each request on a line of its own, in
//! order, so the first request not answered yet is the one running. That is how a failure is
//! put on the right graph: when the running request outlives `functions.python_timeout_ms`
//! (counted from when it started, not from when it was queued) or the process dies, the
//! graph it belongs to is suspended (see [`Owner`]) and its requests fail, while the
//! requests of other graphs that were waiting behind it are written again to the next
//! process: they are not lost.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::owner::Owner;
use super::sandbox::{Sandbox, WorkDir};
use crate::funcs::FnError;

/// Where a call's result goes.
pub type Reply = oneshot::Sender<Result<Value, FnError>>;

const SHUTTING_DOWN: &str = "shutting down";
/// Most requests in one batch line.
const MAX_BATCH: usize = 512;
/// How many times a request that waited behind another graph's failing call is written
/// again before it fails too.
const MAX_TRIES: u8 = 3;
/// How long a new worker process may take to say it is ready (the interpreter's start-up,
/// which is not counted against any call: a loaded machine can take seconds for it).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Code a worker must load before calling it.
#[derive(Debug)]
pub struct Loadable {
    pub digest: String,
    pub code: Arc<str>,
}

pub type Deps = Arc<Vec<(String, Arc<Loadable>)>>;

pub enum Job {
    Call {
        owner: Arc<Owner>,
        func: Arc<Loadable>,
        deps: Deps,
        args: Vec<Value>,
        reply: Reply,
    },
    Check {
        code: String,
        reply: Reply,
    },
}

/// A request, serialised once; written again as is when it has to be.
struct Request {
    id: u64,
    line: Vec<u8>,
    what: What,
}

enum What {
    /// Loading code, on behalf of the graph whose call needs it.
    Load(Option<Arc<Owner>>),
    Call {
        owner: Arc<Owner>,
        func: Arc<Loadable>,
        deps: Deps,
        reply: Reply,
        tries: u8,
    },
    Check {
        reply: Reply,
        tries: u8,
    },
}

impl What {
    fn owner(&self) -> Option<&Arc<Owner>> {
        match self {
            What::Load(o) => o.as_ref(),
            What::Call { owner, .. } => Some(owner),
            What::Check { .. } => None,
        }
    }
}

/// How a process's service ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Shutdown,
    /// The running request failed the process: timed out, or the process died under it.
    Failed(String),
    /// The process ended after answering everything it had started: a MemoryError it
    /// reported (already put on its graph) or its CPU budget spent.
    Ended(String),
}

pub struct Worker {
    pub sandbox: Arc<Sandbox>,
    pub timeout: Duration,
    pub pid: Arc<AtomicU64>,
    pub restarts: Arc<AtomicU64>,
    /// Shown in logs: `shared 0`, `probation`.
    pub name: String,
    /// How much lower than the controller's this worker's CPU priority is.
    pub nice: u8,
    next_id: u64,
    /// Requests to write to the next process, in order.
    todo: VecDeque<Request>,
}

struct Process {
    child: Child,
    _dir: WorkDir,
    stdin: BufWriter<ChildStdin>,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    loaded: HashSet<String>,
    /// Written and not answered yet, in the order written.
    in_flight: VecDeque<Request>,
    /// When the request the process is busy with started.
    busy_since: Option<Instant>,
    /// Set when the process said it will exit after its answer.
    ending: Option<String>,
}

impl Worker {
    pub fn new(sandbox: Arc<Sandbox>, timeout: Duration, name: String, nice: u8) -> Self {
        Self {
            sandbox,
            timeout,
            pid: Arc::default(),
            restarts: Arc::default(),
            name,
            nice,
            next_id: 0,
            todo: VecDeque::new(),
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        // One process at a time; a new one when work arrives after a failure.
        loop {
            if self.todo.is_empty() {
                match rx.recv().await {
                    Some(job) => self.prepare(job),
                    None => return,
                }
            }
            let mut p = match self.start().await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(python.worker = %self.name, reason = ?e, "Python worker did not start");
                    for r in std::mem::take(&mut self.todo) {
                        fail(r.what, &e);
                    }
                    continue;
                }
            };
            self.pid
                .store(p.child.id().unwrap_or(0).into(), Ordering::Relaxed);
            let end = self.serve(&mut p, &mut rx).await;
            let _ = p.child.start_kill();
            let _ = p.child.wait().await;
            self.pid.store(0, Ordering::Relaxed);
            match &end {
                End::Shutdown => {
                    for r in p.in_flight.drain(..).chain(self.todo.drain(..)) {
                        fail(r.what, SHUTTING_DOWN);
                    }
                    return;
                }
                End::Failed(why) => {
                    self.restarts.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(python.worker = %self.name, reason = ?why, "Python worker replaced");
                    self.settle(p.in_flight, Some(why));
                }
                End::Ended(why) => {
                    self.restarts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(python.worker = %self.name, reason = ?why, "Python worker replaced");
                    self.settle(p.in_flight, None);
                }
            }
        }
    }

    /// After a process ended: the running request's graph is suspended and its requests
    /// fail (when `failed`); every other request is written again to the next process.
    fn settle(&mut self, mut in_flight: VecDeque<Request>, failed: Option<&String>) {
        let now = Instant::now();
        let mut blamed: Option<Arc<Owner>> = None;
        if let Some(why) = failed {
            if let Some(culprit) = in_flight.pop_front() {
                blamed = culprit.what.owner().cloned();
                if let Some(o) = &blamed {
                    o.failed(why, now);
                }
                fail(culprit.what, why);
            }
        }
        let mut again = VecDeque::new();
        for r in in_flight {
            let same = blamed
                .as_ref()
                .is_some_and(|b| r.what.owner().is_some_and(|o| Arc::ptr_eq(o, b)));
            match r.what {
                What::Load(_) => {}
                what if same => fail(what, failed.map_or("", |s| s.as_str())),
                What::Call {
                    owner,
                    func,
                    deps,
                    reply,
                    tries,
                } if tries < MAX_TRIES => again.push_back(Request {
                    what: What::Call {
                        owner,
                        func,
                        deps,
                        reply,
                        tries: tries + 1,
                    },
                    ..r
                }),
                What::Check { reply, tries } if tries < MAX_TRIES => again.push_back(Request {
                    what: What::Check {
                        reply,
                        tries: tries + 1,
                    },
                    ..r
                }),
                what => fail(
                    what,
                    &format!(
                        "the Python worker failed {MAX_TRIES} times while this call waited \
                         behind other graphs' calls"
                    ),
                ),
            }
        }
        // Before whatever was queued meanwhile: the order of calls is kept.
        again.extend(self.todo.drain(..));
        self.todo = again;
    }

    async fn start(&self) -> Result<Process, String> {
        let (mut cmd, dir) = self.sandbox.command(self.nice)?;
        let mut child = cmd.spawn().map_err(|e| {
            let user = self
                .sandbox
                .user()
                .map(|u| format!(" as user {u}"))
                .unwrap_or_default();
            format!("cannot start the Python interpreter{user}: {e} (is Python installed? see functions.python)")
        })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the Python worker has no pipes".into());
        };
        let mut p = Process {
            child,
            _dir: dir,
            stdin: BufWriter::new(stdin),
            stdout: BufReader::new(stdout).lines(),
            loaded: HashSet::new(),
            in_flight: VecDeque::new(),
            busy_since: None,
            ending: None,
        };
        if let Err(e) = ready(&mut p).await {
            let _ = p.child.start_kill();
            let _ = p.child.wait().await;
            return Err(e);
        }
        Ok(p)
    }

    /// Serves requests on one process until it ends; says how.
    async fn serve(&mut self, p: &mut Process, rx: &mut mpsc::Receiver<Job>) -> End {
        loop {
            while self.todo.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => self.prepare(job),
                    Err(_) => break,
                }
            }
            if !self.todo.is_empty() && p.ending.is_none() {
                if let Err(e) = self.write(p).await {
                    return End::Failed(e);
                }
            }
            let deadline = p.busy_since.map(|t| t + self.timeout);
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => self.prepare(job),
                    None => return End::Shutdown,
                },
                line = p.stdout.next_line() => match line {
                    Ok(Some(line)) => answer(p, &line),
                    Ok(None) | Err(_) => return match p.ending.take() {
                        Some(why) => End::Ended(why),
                        None => End::Failed("Python worker crashed (it exited)".into()),
                    },
                },
                _ = sleep_until(deadline) => {
                    return End::Failed(format!(
                        "timed out after {} ms (functions.python_timeout_ms); worker restarted",
                        self.timeout.as_millis()
                    ));
                }
            }
        }
    }

    /// A job as a request with its id, serialised once.
    fn prepare(&mut self, job: Job) {
        self.next_id += 1;
        let id = self.next_id;
        let (line, what) = match job {
            Job::Check { code, reply } => (
                json!({"id": id, "op": "check", "code": code}),
                What::Check { reply, tries: 0 },
            ),
            Job::Call {
                owner,
                func,
                deps,
                args,
                reply,
            } => {
                let aliases: serde_json::Map<String, Value> = deps
                    .iter()
                    .map(|(a, l)| (a.clone(), Value::String(l.digest.clone())))
                    .collect();
                (
                    json!({"id": id, "op": "call", "digest": func.digest, "deps": aliases, "args": args}),
                    What::Call {
                        owner,
                        func,
                        deps,
                        reply,
                        tries: 0,
                    },
                )
            }
        };
        match serde_json::to_vec(&line) {
            Ok(line) => self.todo.push_back(Request { id, line, what }),
            Err(e) => fail(what, &format!("cannot encode the call: {e}")),
        }
    }

    /// Writes every queued request (with the code the process has not loaded yet) as one
    /// line and flushes.
    async fn write(&mut self, p: &mut Process) -> Result<(), String> {
        let mut batch: Vec<Request> = Vec::with_capacity(self.todo.len());
        for r in self.todo.drain(..) {
            if let What::Call {
                owner, func, deps, ..
            } = &r.what
            {
                for l in std::iter::once(func).chain(deps.iter().map(|(_, l)| l)) {
                    if p.loaded.insert(l.digest.clone()) {
                        self.next_id += 1;
                        let load = json!({"id": self.next_id, "op": "load", "digest": l.digest, "code": &*l.code});
                        batch.push(Request {
                            id: self.next_id,
                            line: serde_json::to_vec(&load).unwrap_or_default(),
                            what: What::Load(Some(owner.clone())),
                        });
                    }
                }
            }
            batch.push(r);
        }
        let mut bytes =
            Vec::with_capacity(batch.iter().map(|r| r.line.len() + 1).sum::<usize>() + 32);
        if batch.len() == 1 {
            bytes.extend_from_slice(&batch[0].line);
        } else {
            bytes.extend_from_slice(br#"{"op":"batch","reqs":["#);
            for (i, r) in batch.iter().enumerate() {
                if i > 0 {
                    bytes.push(b',');
                }
                bytes.extend_from_slice(&r.line);
            }
            bytes.extend_from_slice(b"]}");
        }
        bytes.push(b'\n');
        if p.in_flight.is_empty() {
            p.busy_since = Some(Instant::now());
        }
        p.in_flight.extend(batch);
        let crashed = |e: std::io::Error| format!("Python worker crashed ({e})");
        p.stdin.write_all(&bytes).await.map_err(crashed)?;
        p.stdin.flush().await.map_err(crashed)
    }
}

/// Waits for a new process's `{"ready": true}` line, so that the interpreter's start-up is
/// not counted against the first calls' deadlines.
async fn ready(p: &mut Process) -> Result<(), String> {
    match tokio::time::timeout(STARTUP_TIMEOUT, p.stdout.next_line()).await {
        Ok(Ok(Some(line))) => match serde_json::from_str::<Value>(&line) {
            Ok(v) if v.get("ready") == Some(&Value::Bool(true)) => {
                tracing::debug!(limits = %v["limits"], "Python worker ready");
                Ok(())
            }
            _ => Err("the Python worker did not start: unexpected first line".into()),
        },
        Ok(Ok(None) | Err(_)) => Err("the Python worker exited while starting (see functions.python and the functions.python_max_* limits)".into()),
        Err(_) => Err(format!(
            "the Python worker did not start within {} s",
            STARTUP_TIMEOUT.as_secs()
        )),
    }
}

/// One answer line.
fn answer(p: &mut Process, line: &str) {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return;
    };
    if v.get("retire") == Some(&Value::Bool(true)) {
        p.ending = Some("its CPU budget is spent (functions.python_max_cpu_seconds)".into());
        return;
    }
    let Some(id) = v.get("id").and_then(Value::as_u64) else {
        return;
    };
    let Some(pos) = p.in_flight.iter().position(|r| r.id == id) else {
        return;
    };
    let Some(r) = p.in_flight.remove(pos) else {
        return;
    };
    p.busy_since = (!p.in_flight.is_empty()).then(Instant::now);
    let result = match v.get("error").and_then(Value::as_str) {
        // The controller's own refusals (data nested too deep) read the same in every language.
        Some(e) if v.get("plain") == Some(&Value::Bool(true)) => Err(FnError(e.to_owned())),
        Some(e) => Err(FnError(format!("Python: {e}"))),
        None => Ok(v.get("value").cloned().unwrap_or(Value::Null)),
    };
    if v.get("fatal") == Some(&Value::Bool(true)) {
        let why = "ran out of memory (functions.python_max_memory_mb); worker restarted";
        if let Some(o) = r.what.owner() {
            o.failed(why, Instant::now());
        }
        p.ending = Some(why.into());
    } else if let What::Call { owner, .. } = &r.what {
        // Only a call's answer shows the function returns: loading code only runs its
        // top level.
        owner.answered();
    }
    match r.what {
        What::Call { reply, .. } | What::Check { reply, .. } => {
            let _ = reply.send(result);
        }
        // A load failed: calls of that digest will fail with KeyError; say why once.
        What::Load(_) => {
            if let Err(e) = result {
                tracing::warn!(error = ?e.0, "Python function failed to load");
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

fn fail(what: What, why: &str) {
    match what {
        What::Call { reply, .. } | What::Check { reply, .. } => {
            let _ = reply.send(Err(FnError(why.to_owned())));
        }
        What::Load(_) => {}
    }
}
