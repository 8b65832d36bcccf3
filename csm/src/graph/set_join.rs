//! `set_join`: `{"prev", "new", "depends"?}` with optimistic concurrency: `prev` must be the
//! current join function (null the first time), else `` `prev` field mismatch ``.

use serde_json::{Map, Value};

use super::{depends_field, opt_digest, unknown_graph, OpResult, Request};
use crate::state::{Effect, State};

impl State {
    pub(super) fn graph_set_join(
        &mut self,
        gid: &str,
        req: &Request,
        fx: &mut Vec<Effect>,
    ) -> OpResult {
        let prev = opt_digest(req, "prev")?;
        let new = opt_digest(req, "new")?;
        let depends = depends_field(req)?;
        let g = self.graphs.get(gid).ok_or_else(|| unknown_graph(gid))?;
        if g.join != prev {
            return Err("`prev` field mismatch".into());
        }
        let callable = match &new {
            Some(d) => Some(self.bind(gid, d, &depends)?),
            None => None,
        };
        if let Some(g) = self.graphs.get_mut(gid) {
            g.join = new.clone();
            g.join_depends = if new.is_some() {
                depends.clone()
            } else {
                Default::default()
            };
            g.join_callable = callable;
        }
        self.graph_changed(gid, fx);
        let mut extra = Map::new();
        extra.insert("prev".into(), prev.map_or(Value::Null, Value::String));
        extra.insert("new".into(), new.map_or(Value::Null, Value::String));
        extra.insert(
            "depends".into(),
            Value::Object(
                depends
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            ),
        );
        Ok(extra)
    }
}
