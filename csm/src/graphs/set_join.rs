//! `set_join`: `{"prev", "new", "depends"?}` with optimistic concurrency: `prev` must be the
//! current join function (null the first time), else `` `prev` field mismatch ``. The reply
//! adds the join as it now is.

use std::collections::BTreeMap;

use iot_proto::wire::graph_api::GraphOk;

use super::{GraphError, GraphStore, Links};
use crate::effect::Effect;
use crate::funcs::Digest;

pub(super) fn set_join(
    store: &mut GraphStore,
    gid: &str,
    prev: Option<Digest>,
    new: Option<Digest>,
    depends: BTreeMap<String, Digest>,
    links: &dyn Links,
    fx: &mut Vec<Effect>,
) -> Result<GraphOk, GraphError> {
    if store.graph(gid)?.join != prev {
        return Err(GraphError::PrevMismatch);
    }
    let callable = match &new {
        Some(d) => Some(store.bind(gid, d, &depends)?),
        None => None,
    };
    let g = store.graph_mut(gid)?;
    g.join = new.clone();
    g.join_depends = if new.is_some() {
        depends.clone()
    } else {
        BTreeMap::new()
    };
    g.join_callable = callable;
    store.changed(gid, links, fx);
    Ok(GraphOk::Join { prev, new, depends })
}
