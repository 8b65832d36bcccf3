//! `add_link`: `{"da_id", "idf"|"odf", "func", "input_type"?, "depends"?, "param_no"?,
//! "tag_param_no"?}`. Everything is checked (link, DA, feature, function, dependencies) before
//! the link is taken, so an error leaves nothing behind. The link is shared with other graphs:
//! CONNECT goes to the DA on its first use (now if online, else when it comes online).

use iot_proto::wire::graph_api::{GraphOk, LinkRef, LinkSpec};

use super::{GraphError, GraphLink, GraphStore, Links};
use crate::effect::Effect;

pub(super) fn add_link(
    store: &mut GraphStore,
    gid: &str,
    link: LinkRef,
    spec: LinkSpec,
    links: &mut dyn Links,
    fx: &mut Vec<Effect>,
) -> Result<GraphOk, GraphError> {
    if store.graph(gid)?.links.contains_key(&link) {
        return Err(GraphError::LinkExists);
    }
    let width = links.feature_width(&link)?;
    let callable = match &spec.func {
        Some(d) => Some(store.bind(gid, d, &spec.depends)?),
        None if !spec.depends.is_empty() => return Err(GraphError::DependsNeedsFunc),
        None => None,
    };
    // Checked: now change things.
    let topic = links.acquire(&link, None, fx)?;
    store.graph_mut(gid)?.links.insert(
        link,
        GraphLink {
            spec,
            topic,
            callable,
            width,
        },
    );
    store.changed(gid, links, fx);
    Ok(GraphOk::Done)
}
