//! `detach`: destroys the graph. Its links are released (DISCONNECT where no other graph
//! uses them), its functions too (deleted when no graph uses them), and its runner stops.

use iot_migrations::das::Write;
use iot_proto::wire::graph_api::GraphOk;

use super::funcs::release_function;
use super::{GraphError, GraphStore, Links};
use crate::effect::Effect;

pub(super) fn detach(
    store: &mut GraphStore,
    gid: &str,
    links: &mut dyn Links,
    fx: &mut Vec<Effect>,
) -> Result<GraphOk, GraphError> {
    let g = store
        .graphs
        .remove(gid)
        .ok_or_else(|| GraphError::UnknownGraph(gid.to_owned()))?;
    for link in g.links.keys() {
        links.release(link, fx);
    }
    for d in &g.funcs {
        release_function(store, d, fx);
    }
    fx.push(Effect::Persist(Write::GraphDelete(gid.to_owned())));
    fx.push(Effect::Plan(gid.to_owned(), None));
    tracing::info!(graph.id = ?gid, "graph destroyed");
    Ok(GraphOk::Done)
}
