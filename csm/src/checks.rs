//! `add_funcs` checks in flight. Checking compiles each function, which for Python means a
//! round trip to a worker that may be busy for as long as `functions.python_timeout_ms`; the
//! actor must not wait for that. So a check runs in a task of its own, and the requests for the
//! same graph that arrive meanwhile wait in order behind it (they may use the functions it
//! adds); requests for other graphs, registrations and control messages go on.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use iot_proto::wire::graph_api::GraphRequest;
use tokio::task::{Id, JoinError, JoinSet};

use crate::coordinator::Coordinator;
use crate::effect::Effect;
use crate::graphs::{add_funcs, CheckedFunc, GraphError};
use iot_proto::log::Escaped;

/// Requests that may wait behind a check, per graph; more are refused (retry later).
const MAX_WAITING: usize = 1024;

/// The outcome of a check.
pub type Checked = Result<Vec<CheckedFunc>, GraphError>;

/// The request whose functions a task checks.
#[derive(Debug)]
struct Running {
    client: String,
    gid: String,
    req: GraphRequest,
}

#[derive(Debug, Default)]
pub struct Checks {
    running: JoinSet<Checked>,
    by_task: HashMap<Id, Running>,
    /// Graphs with a check running, and the requests for them that came in since, in order.
    waiting: HashMap<String, VecDeque<(String, Bytes)>>,
}

impl Checks {
    /// A graph-API request: carried out now, unless a check for its graph is running (then it
    /// waits its turn), or it is an `add_funcs` (then its check starts).
    pub fn request(
        &mut self,
        c: &mut Coordinator,
        client: &str,
        gid: &str,
        payload: Bytes,
        fx: &mut Vec<Effect>,
    ) {
        match self.waiting.get_mut(gid) {
            Some(q) if q.len() >= MAX_WAITING => {
                let busy = GraphError::Busy(MAX_WAITING);
                c.refuse_graph_request(client, gid, &payload, busy, fx);
            }
            Some(q) => q.push_back((client.to_owned(), payload)),
            None => {
                self.run(c, client, gid, &payload, fx);
            }
        }
    }

    /// Carries out a request; true if it started a check (later ones must wait for it).
    fn run(
        &mut self,
        c: &mut Coordinator,
        client: &str,
        gid: &str,
        payload: &[u8],
        fx: &mut Vec<Effect>,
    ) -> bool {
        let Some((req, pending)) = c.graph_request(client, gid, payload, fx) else {
            return false;
        };
        let runtimes = c.graphs.runtimes().clone();
        let handle = self.running.spawn(async move {
            add_funcs::check(pending.codes, pending.digests, &runtimes).await
        });
        self.by_task.insert(
            handle.id(),
            Running {
                client: client.to_owned(),
                gid: gid.to_owned(),
                req,
            },
        );
        self.waiting.entry(gid.to_owned()).or_default();
        true
    }

    /// The next finished check; pending while none runs.
    pub async fn next(&mut self) -> Result<(Id, Checked), JoinError> {
        match self.running.join_next_with_id().await {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }

    /// Finishes a check: its `add_funcs` is carried out (or refused), then the requests that
    /// waited for it, in order, until one of them starts a check again.
    pub fn finish(
        &mut self,
        c: &mut Coordinator,
        done: Result<(Id, Checked), JoinError>,
        fx: &mut Vec<Effect>,
    ) {
        let (id, result) = match done {
            Ok((id, result)) => (id, result),
            Err(e) => {
                tracing::error!(error = %Escaped(&e), "an add_funcs check failed");
                (e.id(), Err(GraphError::CheckFailed))
            }
        };
        let Some(done) = self.by_task.remove(&id) else {
            return;
        };
        c.graph_checked(&done.client, &done.gid, done.req, result, fx);
        let mut queue = self.waiting.remove(&done.gid).unwrap_or_default();
        while let Some((client, payload)) = queue.pop_front() {
            if self.run(c, &client, &done.gid, &payload, fx) {
                // A new check: the rest waits for it.
                if let Some(q) = self.waiting.get_mut(&done.gid) {
                    q.extend(queue);
                }
                return;
            }
        }
    }
}
