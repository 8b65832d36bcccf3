//! `rm_link`: `{"da_id", "idf"|"odf"}`. DISCONNECT goes to the DA when no graph uses the
//! link any more.

use serde_json::Map;

use super::{link_key, unknown_graph, OpResult, Request};
use crate::state::{Effect, State};

impl State {
    pub(super) fn graph_rm_link(
        &mut self,
        gid: &str,
        req: &Request,
        fx: &mut Vec<Effect>,
    ) -> OpResult {
        let key = link_key(req)?;
        let g = self.graphs.get_mut(gid).ok_or_else(|| unknown_graph(gid))?;
        if g.links.remove(&key).is_none() {
            return Err("link unknown".into());
        }
        // The DA may be gone already (its links went with it); nothing else to release then.
        let _ = self.link_release(&key.da_id, &(key.direction, key.feature.clone()), fx);
        self.graph_changed(gid, fx);
        Ok(Map::new())
    }
}
