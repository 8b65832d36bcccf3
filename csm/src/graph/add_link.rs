//! `add_link`: `{"da_id", "idf"|"odf", "func", "input_type"?, "depends"?, "param_no"?,
//! "tag_param_no"?}`. Everything is checked (graph, DA, feature, function, dependencies,
//! numbers) before the link is taken, so an error leaves nothing behind. The link is shared
//! with other graphs: CONNECT goes to the DA on its first use (now if online, else later).

use serde_json::{Map, Value};

use super::{
    depends_field, input_type_field, link_key, opt_digest, unknown_graph, GraphLink, LinkSpec,
    OpResult, Request,
};
use crate::state::{Effect, State};

/// A count field: absent/null or a positive integer.
fn count(req: &Request, name: &str, min: u64) -> Result<Option<usize>, String> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= min && n <= 1024 => Ok(Some(n as usize)),
            _ => Err(format!("`{name}` must be an integer from {min} to 1024")),
        },
    }
}

impl State {
    pub(super) fn graph_add_link(
        &mut self,
        gid: &str,
        req: &Request,
        fx: &mut Vec<Effect>,
    ) -> OpResult {
        let key = link_key(req)?;
        let g = self.graphs.get(gid).ok_or_else(|| unknown_graph(gid))?;
        if g.links.contains_key(&key) {
            return Err("link already exists".into());
        }
        let func = opt_digest(req, "func")?;
        let depends = depends_field(req)?;
        let spec = LinkSpec {
            input_type: input_type_field(req)?,
            param_no: count(req, "param_no", 1)?,
            tag_param_no: count(req, "tag_param_no", 0)?,
            func,
            depends,
        };
        let width = self.require_feature(&key)?;
        let callable = match &spec.func {
            Some(d) => Some(self.bind(gid, d, &spec.depends)?),
            None if !spec.depends.is_empty() => return Err("`depends` needs a `func`".into()),
            None => None,
        };
        // Checked: now change things.
        let topic = self
            .link_acquire(&key.da_id, (key.direction, key.feature.clone()), fx)
            .map_err(|e| e.to_string())?;
        if let Some(g) = self.graphs.get_mut(gid) {
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
        self.graph_changed(gid, fx);
        Ok(Map::new())
    }
}
