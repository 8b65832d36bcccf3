//! `start_monitor` / `stop_monitor`: while on, the engine publishes the graph's traffic and
//! function errors (`{"op": "esm_error", "data": {"msg", "src"}}`) on a monitor topic, given
//! in the reply as `monitor_topics`.

use serde_json::{Map, Value};

use super::{unknown_graph, OpResult};
use crate::state::{Effect, State};

impl State {
    pub(super) fn graph_start_monitor(&mut self, gid: &str, fx: &mut Vec<Effect>) -> OpResult {
        let g = self.graphs.get_mut(gid).ok_or_else(|| unknown_graph(gid))?;
        let topic = g
            .monitor
            .get_or_insert_with(iot_proto::topics::new_monitor_topic)
            .clone();
        fx.extend(self.plan_effect(gid));
        let mut extra = Map::new();
        extra.insert("monitor_topics".into(), Value::String(topic));
        Ok(extra)
    }

    pub(super) fn graph_stop_monitor(&mut self, gid: &str, fx: &mut Vec<Effect>) -> OpResult {
        let g = self.graphs.get_mut(gid).ok_or_else(|| unknown_graph(gid))?;
        g.monitor = None;
        fx.extend(self.plan_effect(gid));
        Ok(Map::new())
    }
}
