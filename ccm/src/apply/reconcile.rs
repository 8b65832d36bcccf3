//! One reconciliation pass: auto-bind, then for every network application of a project that
//! is on, read its graph from the CSM (`show`), send the ops [`diff`] lists, and record the
//! outcome in [`Live`]'s status; detach the graphs no longer wanted; hand the monitor topics
//! to the monitor task. A graph request that gets no reply ends the pass (the CSM is gone).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use iot_proto::wire::graph_api::{GraphOk, GraphOp};
use tokio::sync::{watch, Notify};

use super::csm::{CsmClient, CsmError, ShownGraph};
use super::desired::{auto_binds, desired_graphs, graph_id, object_statuses, DesiredGraph};
use super::diff::{diff, Concern};
use super::live::{NetAppStatus, ProjectStatus};
use super::monitor::{MonitorMap, MonitorTarget};
use crate::Ccm;

/// `reconciled` sentences kept per project.
pub const RECONCILED_KEPT: usize = 20;

/// The applier's memory between passes.
#[derive(Debug)]
pub struct Applier {
    ccm: Ccm,
    csm: CsmClient,
    reattach: Arc<Notify>,
    monitors: watch::Sender<MonitorMap>,
    /// Graphs this CCM created or found and has not detached.
    owned: BTreeSet<String>,
    /// The desired graph last applied without a refusal, by graph id.
    last_applied: HashMap<String, DesiredGraph>,
    /// Monitor topic by graph id.
    topics: HashMap<String, String>,
    /// Projects with a status in [`crate::Live`].
    known: BTreeSet<u32>,
    /// Whether a pass has completed since start-up.
    started: bool,
}

/// Whether a failure means the CSM did not answer (the pass stops).
fn unanswered(e: &CsmError) -> bool {
    matches!(e, CsmError::Timeout { .. } | CsmError::Broker(_))
}

impl Applier {
    pub fn new(
        ccm: Ccm,
        csm: CsmClient,
        reattach: Arc<Notify>,
        monitors: watch::Sender<MonitorMap>,
    ) -> Self {
        Self {
            ccm,
            csm,
            reattach,
            monitors,
            owned: BTreeSet::new(),
            last_applied: HashMap::new(),
            topics: HashMap::new(),
            known: BTreeSet::new(),
            started: false,
        }
    }

    /// One pass; skipped while the CSM does not answer the device API.
    pub async fn pass(&mut self) {
        let live = self.ccm.live().clone();
        if !live.csm_connected() {
            return;
        }
        match self.try_pass().await {
            Ok(()) => self.started = true,
            Err(e) => {
                tracing::warn!(error = %e, "applying stopped: the CSM does not answer");
                live.set_csm_connected(false);
                self.reattach.notify_one();
            }
        }
    }

    async fn try_pass(&mut self) -> Result<(), CsmError> {
        let live = self.ccm.live().clone();
        let devices: BTreeMap<_, _> = live.devices().into_iter().map(|d| (d.id, d)).collect();
        for (pid, oid, da) in self.ccm.read(|s| auto_binds(s, &devices)) {
            match self.ccm.mutate(move |s| s.bind(pid, oid, Some(da))).await {
                Ok(()) => {
                    tracing::info!(project.id = pid, object.id = oid, da.id = %da, "auto-bound a device object")
                }
                Err(e) => {
                    tracing::debug!(project.id = pid, object.id = oid, error = %e, "auto-bind refused")
                }
            }
        }
        let (desired, projects) = self.ccm.read(|s| {
            let projects: Vec<(u32, bool, Vec<u32>, _)> = s
                .projects
                .values()
                .map(|p| {
                    let nets = p.netapps.iter().map(|n| n.id).collect();
                    (p.id, p.on, nets, object_statuses(p, &devices))
                })
                .collect();
            (desired_graphs(s), projects)
        });
        let mut results: BTreeMap<(u32, u32), (NetAppStatus, Option<String>)> = BTreeMap::new();
        for g in &desired {
            let old = live
                .status(g.project)
                .netapps
                .get(&g.netapp)
                .cloned()
                .unwrap_or_default();
            let r = self.apply_graph(g, old).await?;
            results.insert((g.project, g.netapp), r);
        }
        let wanted: BTreeSet<String> = desired.iter().map(|g| g.gid.clone()).collect();
        let mut stale: Vec<String> = self.owned.difference(&wanted).cloned().collect();
        if !self.started {
            for (pid, on, nets, _) in &projects {
                if !on {
                    for nid in nets {
                        let gid = graph_id(*pid, *nid);
                        if !stale.contains(&gid)
                            && self.csm.show(&gid).await.ok().flatten().is_some()
                        {
                            stale.push(gid);
                        }
                    }
                }
            }
        }
        for gid in stale {
            self.detach(&gid).await?;
        }
        // Statuses.
        for (pid, on, nets, objects) in projects {
            let old = live.status(pid);
            let mut st = ProjectStatus {
                objects,
                netapps: BTreeMap::new(),
                reconciled: old.reconciled,
            };
            for nid in nets {
                let n = match results.remove(&(pid, nid)) {
                    Some((n, note)) => {
                        st.reconciled.extend(note);
                        n
                    }
                    None => NetAppStatus {
                        graph: graph_id(pid, nid),
                        state: if on { "applying" } else { "off" }.into(),
                        ..NetAppStatus::default()
                    },
                };
                st.netapps.insert(nid, n);
            }
            let extra = st.reconciled.len().saturating_sub(RECONCILED_KEPT);
            st.reconciled.drain(..extra);
            live.set_status(pid, st);
            self.known.insert(pid);
        }
        let exist: BTreeSet<u32> = self.ccm.read(|s| s.projects.keys().copied().collect());
        for gone in self.known.iter().filter(|p| !exist.contains(p)) {
            live.forget_project(*gone);
        }
        self.known.retain(|p| exist.contains(p));
        let map: HashMap<String, MonitorTarget> = desired
            .iter()
            .filter_map(|g| {
                let topic = self.topics.get(&g.gid)?;
                let ends = g
                    .links
                    .iter()
                    .map(|(r, l)| {
                        let key = (r.direction, r.da_id.to_string(), r.feature.to_string());
                        (key, (l.object, l.id))
                    })
                    .collect();
                let t = MonitorTarget {
                    project: g.project,
                    netapp: g.netapp,
                    ends,
                };
                Some((topic.clone(), t))
            })
            .collect();
        self.monitors.send_replace(Arc::new(map));
        Ok(())
    }

    async fn detach(&mut self, gid: &str) -> Result<(), CsmError> {
        match self.csm.request(gid, GraphOp::Detach).await {
            Ok(_) => tracing::info!(graph.id = %gid, "detached a graph no longer wanted"),
            Err(e) if unanswered(&e) => return Err(e),
            Err(e) => tracing::debug!(graph.id = %gid, error = %e, "detach refused"),
        }
        self.owned.remove(gid);
        self.topics.remove(gid);
        self.last_applied.remove(gid);
        Ok(())
    }

    /// Brings one graph in line; its status and, when the CSM's graph had drifted from
    /// what was applied before, a sentence saying what was changed.
    async fn apply_graph(
        &mut self,
        g: &DesiredGraph,
        old: NetAppStatus,
    ) -> Result<(NetAppStatus, Option<String>), CsmError> {
        let gid = g.gid.as_str();
        let mut st = NetAppStatus {
            graph: g.gid.clone(),
            state: "applied".into(),
            detail: String::new(),
            link_errors: old.link_errors,
            join_error: old.join_error,
        };
        // Errors of links that no longer exist go; those that cannot be built are renewed.
        st.link_errors
            .retain(|id, _| g.links.values().any(|l| l.id == *id));
        st.link_errors.extend(g.link_errors.clone());
        if g.join.is_none() {
            st.join_error = None;
        }
        if let Some(e) = &g.join_error {
            st.join_error = Some(e.clone());
        }
        let shown: Option<ShownGraph> = match self.csm.show(gid).await {
            Ok(s) => s,
            Err(e) if unanswered(&e) => return Err(e),
            Err(e) => {
                st.state = "error".into();
                st.detail = format!("cannot read the graph from the CSM: {}", e.reason());
                return Ok((st, None));
            }
        };
        if shown.is_some() {
            self.owned.insert(g.gid.clone());
        }
        let steps = diff(g, shown.as_ref());
        // Drift: the CSM differs from what was applied last time (or, at start-up, from
        // what the CCM wants); a change the user just made is no drift.
        let drift = !steps.is_empty() && (self.last_applied.get(gid) == Some(g) || !self.started);
        let mut clean = true;
        let mut done = Vec::new();
        let mut errors = Vec::new();
        // Links and the join the CSM refused in this pass: the graph does not run as drawn.
        let mut refused = Vec::new();
        for step in steps {
            match self.csm.request(gid, step.op.clone()).await {
                Ok(_) => {
                    match &step.concern {
                        Concern::Graph => {
                            self.owned.insert(g.gid.clone());
                        }
                        Concern::Link(id) => {
                            st.link_errors.remove(id);
                        }
                        Concern::Join => st.join_error = None,
                        _ => {}
                    }
                    done.push(step.what);
                }
                Err(e) if unanswered(&e) => return Err(e),
                Err(e) => {
                    clean = false;
                    let reason = e.reason();
                    tracing::warn!(graph.id = %gid, graph.op = step.op.kind().as_str(), reason = %iot_proto::log::Escaped(&reason), "the CSM refused an op");
                    match step.concern {
                        Concern::Graph => {
                            st.state = "error".into();
                            st.detail = format!("the CSM refused to create the graph: {reason}");
                            return Ok((st, None));
                        }
                        Concern::Func(label) => errors.push(format!("{label}: {reason}")),
                        Concern::Link(id) => {
                            refused.push(format!("link {id}: {reason}"));
                            st.link_errors.insert(id, reason);
                        }
                        Concern::Join => {
                            refused.push(format!("join: {reason}"));
                            st.join_error = Some(reason);
                        }
                        Concern::Stale | Concern::Cleanup => {}
                    }
                }
            }
        }
        if clean && g.link_errors.is_empty() && g.join_error.is_none() {
            self.last_applied.insert(g.gid.clone(), g.clone());
        } else {
            self.last_applied.remove(gid);
        }
        // The monitor: its topic changes when the CSM restarts.
        match shown.as_ref().and_then(|s| s.monitor.clone()) {
            Some(t) => {
                self.topics.insert(g.gid.clone(), t);
            }
            None => match self.csm.request(gid, GraphOp::StartMonitor).await {
                Ok(GraphOk::Monitor { topic }) if !topic.is_empty() => {
                    self.topics.insert(g.gid.clone(), topic);
                }
                Ok(_) => {}
                Err(e) if unanswered(&e) => return Err(e),
                Err(e) => tracing::warn!(graph.id = %gid, error = %e, "start_monitor refused"),
            },
        }
        errors.extend(refused);
        if !errors.is_empty() {
            st.state = "error".into();
            st.detail = errors.join("; ");
        } else if !g.waiting.is_empty() {
            st.state = "waiting".into();
            st.detail = g.waiting.join("; ");
        } else if !st.link_errors.is_empty() {
            st.detail = format!("{} link(s) in error", st.link_errors.len());
        }
        let note = (drift && !done.is_empty()).then(|| {
            let s = format!(
                "network application {} (graph {gid}) differed on the CSM: {}",
                g.netapp,
                done.join("; ")
            );
            tracing::info!(project.id = g.project, netapp.id = g.netapp, graph.id = %gid, changes = %s, "reconciled a graph with the CSM");
            s
        });
        Ok((st, note))
    }
}
