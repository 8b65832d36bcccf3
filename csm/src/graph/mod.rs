//! The graph API (spec section 4): requests on `iottalk/api/req/<client>/graph/<gid>`, each
//! answered on `iottalk/api/res/<client>/graph/<gid>` with the request's fields plus
//! `"state": "ok"` or `"state": "error"` and a `reason`.
//!
//! A graph ("network application") is a set of IDF links and ODF links joined through one
//! join function. Graphs live in the CSM [`State`]; each op is one file here, a function of
//! the request and the state that validates everything first and only then changes the state
//! (so an error leaves nothing half-applied) and returns effects: link CONNECT/DISCONNECT,
//! persistence of the graph document, and a new execution [`Plan`] for the engine.

pub mod add_funcs;
mod add_link;
mod detach;
mod monitor;
mod rm_funcs;
mod rm_link;
mod set_df_func;
mod set_join;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use iot_migrations::das::Write;
use iot_migrations::graphs::GraphRow;
use iot_proto::wire::Direction;
use iot_proto::{topics, DaId, FeatureName};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::{IdfPlan, OdfPlan, Plan};
use crate::funcs::{Callable, Digest, Lang};
use crate::state::{Effect, State};

pub use add_funcs::CheckedFunc;

/// How an IDF input is fed to its function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// The value as sent.
    Sample,
    /// The difference from the previous value of the same input.
    Variant,
}

/// One link's settings in a graph, as configured through `add_link`/`set_df_func`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSpec {
    pub func: Option<Digest>,
    #[serde(default)]
    pub input_type: Vec<InputType>,
    #[serde(default)]
    pub depends: BTreeMap<String, Digest>,
    /// Data values per message; `None` = the feature's width from its registration.
    pub param_no: Option<usize>,
    /// Tag values after the data values; `None` = 0.
    pub tag_param_no: Option<usize>,
}

/// Identifies a link within a graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GraphLinkKey {
    pub da_id: DaId,
    pub direction: Direction,
    pub feature: FeatureName,
}

/// The stored form of a graph (the `doc` column).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GraphDoc {
    pub funcs: BTreeSet<Digest>,
    /// Each link with its settings and its data topic (kept across restarts).
    pub links: Vec<(GraphLinkKey, LinkSpec, Option<String>)>,
    pub join: Option<Digest>,
    #[serde(default)]
    pub join_depends: BTreeMap<String, Digest>,
}

/// A link of a graph: its settings, its data topic, and its function bound to its depends.
#[derive(Debug, Clone)]
pub struct GraphLink {
    pub spec: LinkSpec,
    pub topic: String,
    pub callable: Option<Callable>,
    /// The feature's registered width.
    pub width: usize,
}

/// One graph.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub funcs: BTreeSet<Digest>,
    pub links: BTreeMap<GraphLinkKey, GraphLink>,
    pub join: Option<Digest>,
    pub join_depends: BTreeMap<String, Digest>,
    pub join_callable: Option<Callable>,
    /// Monitor topic while monitoring is on.
    pub monitor: Option<String>,
}

impl Graph {
    pub fn doc(&self) -> GraphDoc {
        GraphDoc {
            funcs: self.funcs.clone(),
            links: self
                .links
                .iter()
                .map(|(k, l)| (k.clone(), l.spec.clone(), Some(l.topic.clone())))
                .collect(),
            join: self.join.clone(),
            join_depends: self.join_depends.clone(),
        }
    }

    /// The immutable snapshot the engine routes with.
    /// `open` tells whether an ODF's DA is subscribed to its data topic.
    pub fn plan(&self, gid: &str, open: &dyn Fn(&DaId, &FeatureName) -> bool) -> Arc<Plan> {
        let idfs = self
            .links
            .iter()
            .filter(|(k, _)| k.direction == Direction::Idf)
            .map(|(k, l)| IdfPlan {
                da: k.da_id,
                feature: k.feature.clone(),
                topic: l.topic.clone(),
                func: l.callable.clone(),
                variant: l
                    .spec
                    .input_type
                    .iter()
                    .map(|t| *t == InputType::Variant)
                    .collect(),
                param_no: l.spec.param_no.unwrap_or(l.width),
                tag_param_no: l.spec.tag_param_no.unwrap_or(0),
            })
            .collect();
        let odfs = self
            .links
            .iter()
            .filter(|(k, _)| k.direction == Direction::Odf)
            .map(|(k, l)| OdfPlan {
                da: k.da_id,
                feature: k.feature.clone(),
                topic: l.topic.clone(),
                func: l.callable.clone(),
                open: open(&k.da_id, &k.feature),
            })
            .collect();
        Arc::new(Plan {
            gid: gid.to_owned(),
            monitor: self.monitor.clone(),
            idfs,
            join: self.join_callable.clone(),
            odfs,
        })
    }
}

/// A function known to the CSM.
#[derive(Debug, Clone)]
pub struct FuncEntry {
    pub lang: Lang,
    pub code: Arc<str>,
    /// Graphs that added it.
    pub refs: usize,
}

/// A parsed request: its fields, kept to echo them in the reply.
pub type Request = Map<String, Value>;

/// What an op handler returns: extra reply fields, or the error reason.
pub type OpResult = Result<Map<String, Value>, String>;

/// The reply topic and body for a request.
fn reply(client: &str, gid: &str, req: &Request, result: OpResult) -> Effect {
    let mut body = req.clone();
    match result {
        Ok(extra) => {
            body.extend(extra);
            body.insert("state".into(), "ok".into());
        }
        Err(reason) => {
            body.insert("state".into(), "error".into());
            body.insert("reason".into(), reason.into());
        }
    }
    crate::state::publish(topics::graph_res(client, gid), &Value::Object(body), false)
}

/// A field that must be a string.
pub(crate) fn str_field<'a>(req: &'a Request, name: &str) -> Result<&'a str, String> {
    match req.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("`{name}` must be a string")),
        None => Err(format!("missing field `{name}`")),
    }
}

/// A field that is a digest or null/absent.
pub(crate) fn opt_digest(req: &Request, name: &str) -> Result<Option<Digest>, String> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{name}` must be a function digest or null")),
    }
}

/// `depends`: {alias: digest}, absent = none.
pub(crate) fn depends_field(req: &Request) -> Result<BTreeMap<String, Digest>, String> {
    match req.get("depends") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(d) => Ok((k.clone(), d.clone())),
                _ => Err(format!("`depends.{k}` must be a function digest")),
            })
            .collect(),
        Some(_) => Err("`depends` must be an object {alias: digest}".into()),
    }
}

/// `input_type`: a list of "sample"/"variant", absent = all samples.
pub(crate) fn input_type_field(req: &Request) -> Result<Vec<InputType>, String> {
    match req.get("input_type") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| "`input_type` must be a list of \"sample\" or \"variant\"".to_string()),
    }
}

/// The link a request names: `da_id` and exactly one of `idf`/`odf`.
pub(crate) fn link_key(req: &Request) -> Result<GraphLinkKey, String> {
    let da_id: DaId = str_field(req, "da_id")?
        .parse()
        .map_err(|e| format!("`da_id`: {e}"))?;
    let (direction, name) = match (req.get("idf"), req.get("odf")) {
        (Some(Value::String(f)), None | Some(Value::Null)) => (Direction::Idf, f),
        (None | Some(Value::Null), Some(Value::String(f))) => (Direction::Odf, f),
        _ => return Err("exactly one of `idf` and `odf` (a feature name) is required".into()),
    };
    let feature = name
        .parse()
        .map_err(|e| format!("`{}`: {e}", direction.as_str()))?;
    Ok(GraphLinkKey {
        da_id,
        direction,
        feature,
    })
}

pub(crate) fn unknown_graph(gid: &str) -> String {
    format!("Unknown graph id {gid}")
}

pub(crate) const FUNCTION_UNKNOWN: &str = "Function unknown. Please add it first.";

impl State {
    /// Handles one graph API request. `checked` carries the functions of an `add_funcs`
    /// request, compiled beforehand by the caller (compiling Python needs a worker).
    pub fn graph_request(
        &mut self,
        client: &str,
        gid: &str,
        payload: &[u8],
        checked: Option<Result<Vec<CheckedFunc>, String>>,
        fx: &mut Vec<Effect>,
    ) {
        let req: Request = match serde_json::from_slice(payload) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                fx.push(reply(
                    client,
                    gid,
                    &Request::new(),
                    Err("the request must be a JSON object".into()),
                ));
                return;
            }
            Err(e) => {
                fx.push(reply(
                    client,
                    gid,
                    &Request::new(),
                    Err(format!("malformed JSON: {e}")),
                ));
                return;
            }
        };
        let result = match req.get("op").and_then(Value::as_str) {
            None => Err("missing field `op`".into()),
            Some("attach") => Ok(self.graph_attach(gid, fx)),
            Some(_) if !self.graphs.contains_key(gid) => Err(unknown_graph(gid)),
            Some("detach") => self.graph_detach(gid, fx),
            Some("add_funcs") => self.graph_add_funcs(
                gid,
                checked.unwrap_or_else(|| Err("internal: not checked".into())),
                fx,
            ),
            Some("rm_funcs") => self.graph_rm_funcs(gid, &req, fx),
            Some("add_link") => self.graph_add_link(gid, &req, fx),
            Some("rm_link") => self.graph_rm_link(gid, &req, fx),
            Some("set_join") => self.graph_set_join(gid, &req, fx),
            Some("set_df_func") => self.graph_set_df_func(gid, &req, fx),
            Some("start_monitor") => self.graph_start_monitor(gid, fx),
            Some("stop_monitor") => self.graph_stop_monitor(gid, fx),
            Some(other) => Err(format!("unknown op: `{other}`")),
        };
        if let Err(reason) = &result {
            tracing::debug!(graph.id = %gid, %reason, "graph request refused");
        }
        fx.push(reply(client, gid, &req, result));
    }

    pub fn graph_exists(&self, gid: &str) -> bool {
        self.graphs.contains_key(gid)
    }

    fn graph_attach(&mut self, gid: &str, fx: &mut Vec<Effect>) -> Map<String, Value> {
        if !self.graphs.contains_key(gid) {
            self.graphs.insert(gid.to_owned(), Graph::default());
            self.graph_changed(gid, fx);
            tracing::info!(graph.id = %gid, "graph created");
        }
        Map::new()
    }

    /// Persists the graph and hands the engine its new plan.
    pub(crate) fn graph_changed(&mut self, gid: &str, fx: &mut Vec<Effect>) {
        let Some(g) = self.graphs.get(gid) else {
            return;
        };
        let doc = serde_json::to_string(&g.doc()).unwrap_or_else(|_| "{}".into());
        fx.push(Effect::Persist(Write::GraphUpsert(GraphRow {
            gid: gid.to_owned(),
            doc,
        })));
        fx.extend(self.plan_effect(gid));
    }

    /// Binds a function to its depends with the functions this graph knows.
    pub(crate) fn bind(
        &self,
        gid: &str,
        digest: &str,
        depends: &BTreeMap<String, Digest>,
    ) -> Result<Callable, String> {
        let g = self.graphs.get(gid).ok_or_else(|| unknown_graph(gid))?;
        if !g.funcs.contains(digest) {
            return Err(FUNCTION_UNKNOWN.into());
        }
        for (alias, d) in depends {
            if !g.funcs.contains(d) {
                return Err(format!("dependency {alias} not found"));
            }
        }
        let lookup = |d: &str| self.functions.get(d).map(|f| (f.lang, f.code.clone()));
        self.runtimes.bind(digest, depends, &lookup)
    }

    /// Removes every link of DA `id` (restricted to `only` features when given) from every
    /// graph, e.g. when the DA is deregistered. The links themselves are torn down by the caller.
    pub(crate) fn graphs_drop_da(
        &mut self,
        id: &DaId,
        only: Option<&dyn Fn(&GraphLinkKey) -> bool>,
        fx: &mut Vec<Effect>,
    ) {
        let mut changed = Vec::new();
        for (gid, g) in self.graphs.iter_mut() {
            let before = g.links.len();
            g.links
                .retain(|k, _| !(k.da_id == *id && only.is_none_or(|f| f(k))));
            if g.links.len() != before {
                changed.push(gid.clone());
            }
        }
        for gid in changed {
            self.graph_changed(&gid, fx);
        }
    }

    /// Restores graphs and functions loaded from the database: links are acquired again
    /// (CONNECT goes out when their DAs come online) and functions bound.
    pub fn restore_graphs(
        &mut self,
        functions: Vec<(Digest, String)>,
        graphs: Vec<(String, String)>,
        fx: &mut Vec<Effect>,
    ) -> Result<(), String> {
        for (digest, code) in functions {
            let lang = Lang::detect(&code)?;
            self.functions.insert(
                digest,
                FuncEntry {
                    lang,
                    code: Arc::from(code),
                    refs: 0,
                },
            );
        }
        for (gid, doc) in graphs {
            let doc: GraphDoc =
                serde_json::from_str(&doc).map_err(|e| format!("graph {gid}: {e}"))?;
            let mut g = Graph {
                funcs: doc.funcs.clone(),
                join_depends: doc.join_depends.clone(),
                ..Graph::default()
            };
            for d in &doc.funcs {
                if let Some(f) = self.functions.get_mut(d) {
                    f.refs += 1;
                }
            }
            self.graphs.insert(gid.clone(), g.clone());
            if let Some(j) = &doc.join {
                match self.bind(&gid, j, &doc.join_depends) {
                    Ok(c) => {
                        g.join = Some(j.clone());
                        g.join_callable = Some(c);
                    }
                    Err(e) => {
                        tracing::warn!(graph.id = %gid, error = %e, "join function not restored")
                    }
                }
            }
            for (key, spec, topic) in doc.links {
                let Some(width) = self.feature_width(&key) else {
                    tracing::warn!(graph.id = %gid, da.id = %key.da_id, "link not restored: DA or feature gone");
                    continue;
                };
                let callable = match &spec.func {
                    Some(d) => match self.bind(&gid, d, &spec.depends) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            tracing::warn!(graph.id = %gid, error = %e, "link function not restored");
                            continue;
                        }
                    },
                    None => None,
                };
                let topic = self
                    .link_acquire_at(
                        &key.da_id,
                        (key.direction, key.feature.clone()),
                        topic.as_deref(),
                        fx,
                    )
                    .map_err(|e| e.to_string())?;
                g.links.insert(
                    key,
                    GraphLink {
                        spec,
                        topic,
                        callable,
                        width,
                    },
                );
            }
            self.graphs.insert(gid.clone(), g);
            fx.extend(self.plan_effect(&gid));
        }
        Ok(())
    }
}
