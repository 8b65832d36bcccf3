//! `set_df_func`: `{"da_id", "idf"|"odf", "prev", "new", "input_type"?, "depends"?}` replaces
//! one link's function, with the same `prev` check as `set_join`.

use serde_json::Map;

use super::{
    depends_field, input_type_field, link_key, opt_digest, unknown_graph, OpResult, Request,
};
use crate::state::{Effect, State};

impl State {
    pub(super) fn graph_set_df_func(
        &mut self,
        gid: &str,
        req: &Request,
        fx: &mut Vec<Effect>,
    ) -> OpResult {
        let key = link_key(req)?;
        let prev = opt_digest(req, "prev")?;
        let new = opt_digest(req, "new")?;
        let depends = depends_field(req)?;
        let input_type = req
            .contains_key("input_type")
            .then(|| input_type_field(req))
            .transpose()?;
        let g = self.graphs.get(gid).ok_or_else(|| unknown_graph(gid))?;
        let link = g.links.get(&key).ok_or("link unknown")?;
        if link.spec.func != prev {
            return Err("`prev` field mismatch".into());
        }
        let callable = match &new {
            Some(d) => Some(self.bind(gid, d, &depends)?),
            None if !depends.is_empty() => return Err("`depends` needs a function in `new`".into()),
            None => None,
        };
        if let Some(link) = self.graphs.get_mut(gid).and_then(|g| g.links.get_mut(&key)) {
            link.spec.func = new;
            link.spec.depends = depends;
            if let Some(t) = input_type {
                link.spec.input_type = t;
            }
            link.callable = callable;
        }
        self.graph_changed(gid, fx);
        Ok(Map::new())
    }
}
