//! The coordinator owns the registry and the graph store and does what concerns both: a
//! graph op takes and releases DA links through the registry; a (re-)registration, a
//! deregistration or an expiry changes the graphs that link the DA. Everything else goes
//! straight to the one it concerns. Like both, it only returns effects.

use iot_migrations::das::DaRow;
use iot_proto::topics;
use iot_proto::wire::graph_api::{self, GraphApiError, GraphOk, GraphRequest, LinkRef, OpKind};
use iot_proto::wire::{paging, RegisterRequest};
use iot_proto::{DaId, MsgId, Rev};

use crate::effect::{publish, Effect};
use crate::error::CsmError;
use crate::funcs::Runtimes;
use crate::graphs::{self, CheckedFunc, GraphError, GraphStore, Links};
use crate::registry::{LinkError, Registered, Registry, RegistryConfig};
use iot_proto::log::Escaped;

/// What a successful graph op's reply adds to the request's echoed fields, at most:
/// `state`, `monitor_topics`, the join's `prev`/`new`/`depends` (`add_funcs` replaces its
/// `digests` with as many). Not `show`'s `graph`, which grows with the graph: a reply too large
/// for the broker becomes an error reply that says so (the actor's `fit_reply`).
const REPLY_ROOM_BYTES: usize = 1024;

/// The registry seen from the graph store.
struct RegistryLinks<'a>(&'a mut Registry);

impl From<LinkError> for GraphError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::NoDa(id) => GraphError::NoDa(id),
            LinkError::NoFeature(link) => GraphError::NoFeature(link),
            LinkError::Unknown => GraphError::LinkUnknown,
        }
    }
}

impl Links for RegistryLinks<'_> {
    fn feature_width(&self, link: &LinkRef) -> Result<usize, GraphError> {
        Ok(self.0.feature_width(link)?)
    }

    fn acquire(
        &mut self,
        link: &LinkRef,
        topic: Option<&str>,
        fx: &mut Vec<Effect>,
    ) -> Result<String, GraphError> {
        let key = (link.direction, link.feature.clone());
        Ok(self.0.link_acquire(&link.da_id, key, topic, fx)?)
    }

    fn release(&mut self, link: &LinkRef, fx: &mut Vec<Effect>) {
        let key = (link.direction, link.feature.clone());
        // The DA may be gone already (its links went with it): nothing else to release then.
        let _ = self.0.link_release(&link.da_id, &key, fx);
    }

    fn odf_open(&self, link: &LinkRef) -> bool {
        self.0.odf_open(&link.da_id, &link.feature)
    }
}

/// A graph-API request waiting for its `add_funcs` functions to be checked.
#[derive(Debug)]
pub struct PendingCheck {
    pub codes: Vec<String>,
    pub digests: Vec<graph_api::Digest>,
}

/// The CSM's whole state.
#[derive(Debug)]
pub struct Coordinator {
    pub registry: Registry,
    pub graphs: GraphStore,
}

impl Default for Coordinator {
    /// Rhai functions only (no Python pool), for tests.
    fn default() -> Self {
        Self::new(
            RegistryConfig::default(),
            Runtimes::rhai_only(&Default::default()),
        )
    }
}

/// A stored DA, graph or function that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Da(#[from] crate::registry::RestoreError),
    #[error(transparent)]
    Graph(#[from] graphs::RestoreError),
}

impl Coordinator {
    pub fn new(cfg: RegistryConfig, runtimes: Runtimes) -> Self {
        Self {
            registry: Registry::new(cfg),
            graphs: GraphStore::new(runtimes),
        }
    }

    /// Restores what the database holds: DAs (never online, expiry armed), then functions and
    /// graphs (links taken again).
    pub fn restore(
        &mut self,
        das: Vec<DaRow>,
        functions: Vec<(graph_api::Digest, String)>,
        graphs: Vec<(String, String)>,
    ) -> Result<Vec<Effect>, RestoreError> {
        let mut fx = self.registry.restore(das)?;
        let links = &mut RegistryLinks(&mut self.registry);
        self.graphs.restore(functions, graphs, links, &mut fx)?;
        Ok(fx)
    }

    /// `PUT /{id}`: the registry registers; graphs follow the DA's new features.
    pub fn register(
        &mut self,
        id: DaId,
        req: RegisterRequest,
        now: f64,
        fx: &mut Vec<Effect>,
    ) -> Result<Registered, CsmError> {
        let r = self.registry.register(id, req, now, fx)?;
        let links = RegistryLinks(&mut self.registry);
        self.graphs.refresh_da(&id, &links, fx);
        Ok(r)
    }

    /// `DELETE /{id}`: the DA and its links go, and with them its links in every graph.
    pub fn deregister(
        &mut self,
        id: &DaId,
        rev: &Rev,
        now: f64,
        fx: &mut Vec<Effect>,
    ) -> Result<(), CsmError> {
        self.registry.deregister(id, rev, now, fx)?;
        let links = RegistryLinks(&mut self.registry);
        self.graphs.drop_da(id, None, &links, fx);
        Ok(())
    }

    /// The expiry timer of `id` fired for `rev`; true if the DA was removed.
    pub fn expire(&mut self, id: &DaId, rev: &Rev, now: f64, fx: &mut Vec<Effect>) -> bool {
        let gone = self.registry.expire(id, rev, now, fx);
        if gone {
            let links = RegistryLinks(&mut self.registry);
            self.graphs.drop_da(id, None, &links, fx);
        }
        gone
    }

    /// No reply to CONNECT `msg_id` of an ODF link came in time.
    pub fn ack_wait_over(&mut self, link: &LinkRef, msg_id: &MsgId, fx: &mut Vec<Effect>) {
        let key = (link.direction, link.feature.clone());
        self.registry.ack_wait_over(&link.da_id, &key, msg_id, fx);
    }

    /// A request on `iottalk/api/req/<client>/graph/<gid>`, parsed. An `add_funcs` on an
    /// existing graph is not carried out but returned: its functions must be checked first
    /// (Python compiles in a worker), then [`Self::graph_checked`] finishes it.
    pub fn graph_request(
        &mut self,
        client: &str,
        gid: &str,
        payload: &[u8],
        fx: &mut Vec<Effect>,
    ) -> Option<(GraphRequest, PendingCheck)> {
        let req = match GraphRequest::parse(payload) {
            Ok(req) => req,
            Err(refused) => {
                // As IoTtalk: on a graph that does not exist, every op but attach is refused
                // for that before its own mistakes.
                let unknown = matches!(refused.kind, Some(k) if k != OpKind::Attach)
                    && !self.graphs.exists(gid);
                let error = if unknown {
                    GraphApiError::UnknownGraph(gid.to_owned())
                } else {
                    refused.error
                };
                self.reply(
                    client,
                    gid,
                    &refused.fields,
                    Err(GraphError::Request(error)),
                    fx,
                );
                return None;
            }
        };
        // Every field is echoed: a request whose reply would not fit is refused before it
        // changes anything (its error reply is shortened by the actor to fit).
        let bytes = paging::json_len(&req.fields) + REPLY_ROOM_BYTES;
        let limit = self.registry.max_reply_bytes();
        if bytes > limit {
            let error = GraphError::ReplyTooLarge { bytes, limit };
            self.reply(client, gid, &req.fields, Err(error), fx);
            return None;
        }
        if let graph_api::GraphOp::AddFuncs { codes, digests } = &req.op {
            if self.graphs.exists(gid) {
                let pending = PendingCheck {
                    codes: codes.clone(),
                    digests: digests.clone(),
                };
                return Some((req, pending));
            }
        }
        let result = {
            let links = &mut RegistryLinks(&mut self.registry);
            self.graphs.apply(gid, req.op, None, links, fx)
        };
        self.reply(client, gid, &req.fields, result, fx);
        None
    }

    /// Finishes an `add_funcs` whose functions were checked (or refused).
    pub fn graph_checked(
        &mut self,
        client: &str,
        gid: &str,
        req: GraphRequest,
        checked: Result<Vec<CheckedFunc>, GraphError>,
        fx: &mut Vec<Effect>,
    ) {
        let result = checked.and_then(|funcs| {
            let links = &mut RegistryLinks(&mut self.registry);
            self.graphs.apply(gid, req.op, Some(funcs), links, fx)
        });
        self.reply(client, gid, &req.fields, result, fx);
    }

    /// Refuses a request without carrying it out.
    pub fn refuse_graph_request(
        &self,
        client: &str,
        gid: &str,
        payload: &[u8],
        error: GraphError,
        fx: &mut Vec<Effect>,
    ) {
        let fields = match serde_json::from_slice(payload) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        self.reply(client, gid, &fields, Err(error), fx);
    }

    fn reply(
        &self,
        client: &str,
        gid: &str,
        fields: &serde_json::Map<String, serde_json::Value>,
        result: Result<GraphOk, GraphError>,
        fx: &mut Vec<Effect>,
    ) {
        let body = match &result {
            Ok(ok) => graph_api::reply(fields, Ok(ok)),
            Err(e) => {
                tracing::debug!(graph.id = ?gid, reason = %Escaped(&e), "graph request refused");
                graph_api::reply(fields, Err(&e.to_string()))
            }
        };
        fx.push(publish(topics::graph_res(client, gid), &body, false));
    }
}
