//! `start_monitor` / `stop_monitor`: while on, the engine publishes the graph's traffic and
//! function errors (`{"op": "esm_error", "data": {"msg", "src"}}`) on a monitor topic, given
//! in the reply as `monitor_topics`.

use iot_proto::wire::graph_api::GraphOk;

use super::{GraphError, GraphStore, Links};
use crate::effect::Effect;

pub(super) fn start(
    store: &mut GraphStore,
    gid: &str,
    links: &dyn Links,
    fx: &mut Vec<Effect>,
) -> Result<GraphOk, GraphError> {
    let topic = store
        .graph_mut(gid)?
        .monitor
        .get_or_insert_with(iot_proto::topics::new_monitor_topic)
        .clone();
    fx.extend(store.plan_effect(gid, links));
    Ok(GraphOk::Monitor { topic })
}

pub(super) fn stop(
    store: &mut GraphStore,
    gid: &str,
    links: &dyn Links,
    fx: &mut Vec<Effect>,
) -> Result<GraphOk, GraphError> {
    store.graph_mut(gid)?.monitor = None;
    fx.extend(store.plan_effect(gid, links));
    Ok(GraphOk::Done)
}
