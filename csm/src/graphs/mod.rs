//! The graph store: graphs ("network applications", spec section 4), the functions they added,
//! and each link's function bound to its dependencies. A graph is a set of IDF links and ODF
//! links joined through one join function.
//!
//! It knows nothing of the registry: what a graph op needs from the DAs' side (a feature's
//! width, taking and releasing a DA's link, whether an ODF is open) it asks through [`Links`],
//! which the coordinator implements. Each op is one file here, a function of its typed request
//! ([`GraphOp`], parsed at the edge by `iot_proto`) and what it needs, that validates
//! everything first and only then changes the store (so an error leaves nothing half-applied),
//! and returns effects: persistence of the graph document and a new [`Plan`] for the engine.

pub mod add_funcs;
mod add_link;
mod detach;
mod error;
mod funcs;
mod monitor;
mod restore;
mod rm_link;
mod set_df_func;
mod set_join;
mod show;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use iot_migrations::das::Write;
use iot_migrations::graphs::GraphRow;
use iot_proto::wire::graph_api::{Digest, GraphOk, GraphOp, InputType, LinkRef, LinkSpec};
use iot_proto::wire::Direction;
use iot_proto::DaId;
use serde::{Deserialize, Serialize};

use crate::effect::Effect;
use crate::funcs::{Callable, Lang, Runtimes};
use crate::plan::{IdfPlan, OdfPlan, Plan};

pub use add_funcs::CheckedFunc;
pub use error::GraphError;
pub use restore::RestoreError;

/// What graph ops need from the DAs' side, given by the coordinator.
pub trait Links {
    /// The registered width of `link`'s feature, or why it cannot be linked.
    fn feature_width(&self, link: &LinkRef) -> Result<usize, GraphError>;
    /// Takes a reference on the DA's link (CONNECT goes out on its first use) and returns its
    /// data topic; `topic` is reused when the link is created.
    fn acquire(
        &mut self,
        link: &LinkRef,
        topic: Option<&str>,
        fx: &mut Vec<Effect>,
    ) -> Result<String, GraphError>;
    /// Drops the reference (DISCONNECT when no graph uses the link any more). A link whose DA
    /// is gone already is nothing to release.
    fn release(&mut self, link: &LinkRef, fx: &mut Vec<Effect>);
    /// Whether outputs to an ODF link go out now (its DA is subscribed).
    fn odf_open(&self, link: &LinkRef) -> bool;
}

/// The stored form of a graph (the `doc` column).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GraphDoc {
    pub funcs: BTreeSet<Digest>,
    /// Each link with its settings and its data topic (kept across restarts).
    pub links: Vec<(LinkRef, LinkSpec, Option<String>)>,
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
    pub links: BTreeMap<LinkRef, GraphLink>,
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
    pub fn plan(&self, gid: &str, links: &dyn Links) -> Arc<Plan> {
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
                open: links.odf_open(k),
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

/// Every graph and every function.
#[derive(Debug)]
pub struct GraphStore {
    graphs: BTreeMap<String, Graph>,
    /// Functions by digest, with the number of graphs that added them.
    functions: HashMap<Digest, FuncEntry>,
    runtimes: Runtimes,
}

impl GraphStore {
    pub fn new(runtimes: Runtimes) -> Self {
        Self {
            graphs: BTreeMap::new(),
            functions: HashMap::new(),
            runtimes,
        }
    }

    pub fn runtimes(&self) -> &Runtimes {
        &self.runtimes
    }

    pub fn exists(&self, gid: &str) -> bool {
        self.graphs.contains_key(gid)
    }

    pub fn len(&self) -> usize {
        self.graphs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.graphs.is_empty()
    }

    /// Every graph, by gid.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Graph)> {
        self.graphs.iter()
    }

    fn graph(&self, gid: &str) -> Result<&Graph, GraphError> {
        self.graphs
            .get(gid)
            .ok_or_else(|| GraphError::UnknownGraph(gid.to_owned()))
    }

    fn graph_mut(&mut self, gid: &str) -> Result<&mut Graph, GraphError> {
        self.graphs
            .get_mut(gid)
            .ok_or_else(|| GraphError::UnknownGraph(gid.to_owned()))
    }

    /// Carries out one op on graph `gid`. `checked` carries the functions of an `add_funcs`,
    /// compiled beforehand by the caller (compiling Python needs a worker, hence async).
    pub fn apply(
        &mut self,
        gid: &str,
        op: GraphOp,
        checked: Option<Vec<CheckedFunc>>,
        links: &mut dyn Links,
        fx: &mut Vec<Effect>,
    ) -> Result<GraphOk, GraphError> {
        if !matches!(op, GraphOp::Attach) && !self.exists(gid) {
            return Err(GraphError::UnknownGraph(gid.to_owned()));
        }
        match op {
            GraphOp::Attach => {
                if !self.exists(gid) {
                    self.graphs.insert(gid.to_owned(), Graph::default());
                    self.changed(gid, links, fx);
                    tracing::info!(graph.id = ?gid, "graph created");
                }
                Ok(GraphOk::Done)
            }
            GraphOp::Detach => detach::detach(self, gid, links, fx),
            GraphOp::AddFuncs { .. } => {
                let funcs = checked.ok_or(GraphError::NotChecked)?;
                add_funcs::add(self, gid, funcs, links, fx)
            }
            GraphOp::RmFuncs { digests } => funcs::rm_funcs(self, gid, digests, links, fx),
            GraphOp::AddLink { link, spec } => add_link::add_link(self, gid, link, spec, links, fx),
            GraphOp::RmLink { link } => rm_link::rm_link(self, gid, &link, links, fx),
            GraphOp::SetJoin { prev, new, depends } => {
                set_join::set_join(self, gid, prev, new, depends, links, fx)
            }
            GraphOp::SetDfFunc {
                link,
                prev,
                new,
                depends,
                input_type,
            } => set_df_func::set_df_func(
                self,
                gid,
                set_df_func::Change {
                    link,
                    prev,
                    new,
                    depends,
                    input_type,
                },
                links,
                fx,
            ),
            GraphOp::StartMonitor => monitor::start(self, gid, links, fx),
            GraphOp::StopMonitor => monitor::stop(self, gid, links, fx),
            GraphOp::Show => show::show(self, gid),
        }
    }

    /// The plan effect of graph `gid` as it stands.
    fn plan_effect(&self, gid: &str, links: &dyn Links) -> Option<Effect> {
        let g = self.graphs.get(gid)?;
        Some(Effect::Plan(gid.to_owned(), Some(g.plan(gid, links))))
    }

    /// Persists the graph and hands the engine its new plan.
    fn changed(&self, gid: &str, links: &dyn Links, fx: &mut Vec<Effect>) {
        let Some(g) = self.graphs.get(gid) else {
            return;
        };
        let doc = serde_json::to_string(&g.doc()).unwrap_or_else(|_| "{}".into());
        fx.push(Effect::Persist(Write::GraphUpsert(GraphRow {
            gid: gid.to_owned(),
            doc,
        })));
        fx.extend(self.plan_effect(gid, links));
    }

    /// Binds a function to its depends with the functions graph `gid` knows.
    fn bind(
        &self,
        gid: &str,
        digest: &str,
        depends: &BTreeMap<String, Digest>,
    ) -> Result<Callable, GraphError> {
        let g = self.graph(gid)?;
        if !g.funcs.contains(digest) {
            return Err(GraphError::FunctionUnknown);
        }
        if let Some((alias, _)) = depends.iter().find(|(_, d)| !g.funcs.contains(*d)) {
            return Err(GraphError::DependencyNotFound(alias.clone()));
        }
        let lookup = |d: &str| self.functions.get(d).map(|f| (f.lang, f.code.clone()));
        self.runtimes
            .bind(gid, digest, depends, &lookup)
            .map_err(GraphError::Bind)
    }

    /// Removes every link of DA `id` (restricted to those `only` accepts, when given) from
    /// every graph, e.g. when the DA is deregistered. The DA's links themselves are the
    /// registry's to tear down.
    pub fn drop_da(
        &mut self,
        id: &DaId,
        only: Option<&dyn Fn(&LinkRef) -> bool>,
        links: &dyn Links,
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
            self.changed(&gid, links, fx);
        }
    }

    /// After a re-registration of DA `id`: its links whose features are gone are dropped from
    /// every graph (the registry dropped the links themselves), the others take the features'
    /// new widths.
    pub fn refresh_da(&mut self, id: &DaId, links: &dyn Links, fx: &mut Vec<Effect>) {
        let widths: Vec<(LinkRef, Option<usize>)> = self
            .graphs
            .values()
            .flat_map(|g| g.links.keys())
            .filter(|k| k.da_id == *id)
            .map(|k| (k.clone(), links.feature_width(k).ok()))
            .collect();
        if widths.is_empty() {
            return;
        }
        let gone = |k: &LinkRef| widths.iter().any(|(w, width)| w == k && width.is_none());
        self.drop_da(id, Some(&gone), links, fx);
        let mut touched = Vec::new();
        for (gid, g) in self.graphs.iter_mut() {
            let mut any = false;
            for (k, l) in g.links.iter_mut() {
                if let Some((_, Some(w))) = widths.iter().find(|(w, _)| w == k) {
                    l.width = *w;
                    any = true;
                }
            }
            if any {
                touched.push(gid.clone());
            }
        }
        for gid in touched {
            self.changed(&gid, links, fx);
        }
    }
}
