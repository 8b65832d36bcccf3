//! `set_df_func`: `{"da_id", "idf"|"odf", "prev", "new", "input_type"?, "depends"?}` replaces
//! one link's function, with the same `prev` check as `set_join`.

use std::collections::BTreeMap;

use iot_proto::wire::graph_api::{GraphOk, InputType, LinkRef};

use super::{GraphError, GraphStore, Links};
use crate::effect::Effect;
use crate::funcs::Digest;

/// The change `set_df_func` asks for.
pub(super) struct Change {
    pub link: LinkRef,
    pub prev: Option<Digest>,
    pub new: Option<Digest>,
    pub depends: BTreeMap<String, Digest>,
    pub input_type: Option<Vec<InputType>>,
}

pub(super) fn set_df_func(
    store: &mut GraphStore,
    gid: &str,
    c: Change,
    links: &dyn Links,
    fx: &mut Vec<Effect>,
) -> Result<GraphOk, GraphError> {
    let link = store
        .graph(gid)?
        .links
        .get(&c.link)
        .ok_or(GraphError::LinkUnknown)?;
    if link.spec.func != c.prev {
        return Err(GraphError::PrevMismatch);
    }
    let callable = match &c.new {
        Some(d) => Some(store.bind(gid, d, &c.depends)?),
        None if !c.depends.is_empty() => return Err(GraphError::DependsNeedsNew),
        None => None,
    };
    let link = store
        .graph_mut(gid)?
        .links
        .get_mut(&c.link)
        .ok_or(GraphError::LinkUnknown)?;
    link.spec.func = c.new;
    link.spec.depends = c.depends;
    if let Some(t) = c.input_type {
        link.spec.input_type = t;
    }
    link.callable = callable;
    store.changed(gid, links, fx);
    Ok(GraphOk::Done)
}
