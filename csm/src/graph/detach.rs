//! `detach`: destroys the graph. Its links are released (DISCONNECT where no other graph
//! uses them), its functions too (deleted when no graph uses them), and its runner stops.

use iot_migrations::das::Write;
use serde_json::Map;

use super::{unknown_graph, OpResult};
use crate::state::{Effect, State};

impl State {
    pub(super) fn graph_detach(&mut self, gid: &str, fx: &mut Vec<Effect>) -> OpResult {
        let g = self.graphs.remove(gid).ok_or_else(|| unknown_graph(gid))?;
        for key in g.links.keys() {
            let _ = self.link_release(&key.da_id, &(key.direction, key.feature.clone()), fx);
        }
        for d in &g.funcs {
            self.release_function(d, fx);
        }
        fx.push(Effect::Persist(Write::GraphDelete(gid.to_owned())));
        fx.push(Effect::Plan(gid.to_owned(), None));
        tracing::info!(graph.id = %gid, "graph destroyed");
        Ok(Map::new())
    }
}
