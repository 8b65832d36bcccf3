//! `rm_funcs`: `{"digests": [hex]}`. A function still used by a link or the join of this
//! graph is not removed (error); a function no graph uses any more is deleted.

use iot_migrations::das::Write;
use iot_proto::wire::graph_api::GraphOk;

use super::{GraphError, GraphStore, Links};
use crate::effect::Effect;
use crate::funcs::Digest;

pub(super) fn rm_funcs(
    store: &mut GraphStore,
    gid: &str,
    digests: Vec<Digest>,
    links: &dyn Links,
    fx: &mut Vec<Effect>,
) -> Result<GraphOk, GraphError> {
    let g = store.graph(gid)?;
    for d in &digests {
        if !g.funcs.contains(d) {
            return Err(GraphError::NotInGraph(d.clone()));
        }
        let used = g.join.as_ref() == Some(d)
            || g.join_depends.values().any(|x| x == d)
            || g.links.values().any(|l| {
                l.spec.func.as_ref() == Some(d) || l.spec.depends.values().any(|x| x == d)
            });
        if used {
            return Err(GraphError::InUse(d.clone()));
        }
    }
    let g = store.graph_mut(gid)?;
    for d in &digests {
        g.funcs.remove(d);
    }
    for d in digests {
        release_function(store, &d, fx);
    }
    store.changed(gid, links, fx);
    Ok(GraphOk::Done)
}

/// One graph less uses function `d`; the last one deletes it.
pub(super) fn release_function(store: &mut GraphStore, d: &str, fx: &mut Vec<Effect>) {
    if let Some(e) = store.functions.get_mut(d) {
        e.refs = e.refs.saturating_sub(1);
        if e.refs == 0 {
            store.functions.remove(d);
            fx.push(Effect::Persist(Write::FunctionDelete(d.to_owned())));
        }
    }
}
