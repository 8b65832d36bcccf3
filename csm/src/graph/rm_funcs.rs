//! `rm_funcs`: `{"digests": [hex]}`. A function still used by a link or the join of this
//! graph is not removed (error); a function no graph uses any more is deleted.

use iot_migrations::das::Write;
use serde_json::{Map, Value};

use super::{unknown_graph, OpResult, Request};
use crate::state::{Effect, State};

impl State {
    pub(super) fn graph_rm_funcs(
        &mut self,
        gid: &str,
        req: &Request,
        fx: &mut Vec<Effect>,
    ) -> OpResult {
        let digests: Vec<String> = match req.get("digests") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or("`digests` must be a list of strings")?,
            _ => return Err("missing field `digests` (a list of function digests)".into()),
        };
        let g = self.graphs.get(gid).ok_or_else(|| unknown_graph(gid))?;
        for d in &digests {
            if !g.funcs.contains(d) {
                return Err(format!("function {d} is not in this graph"));
            }
            let used = g.join.as_ref() == Some(d)
                || g.join_depends.values().any(|x| x == d)
                || g.links.values().any(|l| {
                    l.spec.func.as_ref() == Some(d) || l.spec.depends.values().any(|x| x == d)
                });
            if used {
                return Err(format!("function {d} is in use"));
            }
        }
        if let Some(g) = self.graphs.get_mut(gid) {
            for d in &digests {
                g.funcs.remove(d);
            }
        }
        for d in digests {
            self.release_function(&d, fx);
        }
        self.graph_changed(gid, fx);
        Ok(Map::new())
    }

    /// One graph less uses function `d`; the last one deletes it.
    pub(crate) fn release_function(&mut self, d: &str, fx: &mut Vec<Effect>) {
        if let Some(e) = self.functions.get_mut(d) {
            e.refs = e.refs.saturating_sub(1);
            if e.refs == 0 {
                self.functions.remove(d);
                fx.push(Effect::Persist(Write::FunctionDelete(d.to_owned())));
            }
        }
    }
}
