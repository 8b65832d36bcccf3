//! `rm_link`: `{"da_id", "idf"|"odf"}`. DISCONNECT goes to the DA when no graph uses the
//! link any more.

use iot_proto::wire::graph_api::{GraphOk, LinkRef};

use super::{GraphError, GraphStore, Links};
use crate::effect::Effect;

pub(super) fn rm_link(
    store: &mut GraphStore,
    gid: &str,
    link: &LinkRef,
    links: &mut dyn Links,
    fx: &mut Vec<Effect>,
) -> Result<GraphOk, GraphError> {
    if store.graph_mut(gid)?.links.remove(link).is_none() {
        return Err(GraphError::LinkUnknown);
    }
    links.release(link, fx);
    store.changed(gid, links, fx);
    Ok(GraphOk::Done)
}
