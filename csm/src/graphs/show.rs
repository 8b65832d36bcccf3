//! `show`: `{}`. Reads a graph for a client that reconciles against it (the CCM): the reply
//! adds `graph` ([`GraphView`]: function digests, links with their settings as `add_link` and
//! `set_df_func` left them, the join, the monitor topic). It changes nothing, so it returns
//! no effect: nothing is persisted and the engine gets no new plan.

use iot_proto::wire::graph_api::{GraphOk, GraphView, LinkView};

use super::{Graph, GraphError, GraphStore};

pub(super) fn show(store: &GraphStore, gid: &str) -> Result<GraphOk, GraphError> {
    Ok(GraphOk::Graph(view(store.graph(gid)?)))
}

/// Graph `g` as `show` reports it: functions sorted, links in [`LinkRef`] order (both are
/// kept sorted).
///
/// [`LinkRef`]: iot_proto::wire::graph_api::LinkRef
fn view(g: &Graph) -> GraphView {
    GraphView {
        funcs: g.funcs.iter().cloned().collect(),
        links: g
            .links
            .iter()
            .map(|(link, l)| LinkView {
                link: link.clone(),
                spec: l.spec.clone(),
            })
            .collect(),
        join: g.join.clone(),
        join_depends: g.join_depends.clone(),
        monitor: g.monitor.clone(),
    }
}

#[cfg(test)]
mod tests {
    use iot_proto::wire::graph_api::{digest, reply, GraphOp, GraphRequest, LinkRef};
    use serde_json::json;

    use super::super::{CheckedFunc, GraphError, GraphStore, Links};
    use crate::effect::Effect;
    use crate::funcs::{Lang, Runtimes};

    /// Every DA has every feature, one value wide; a link's topic is named after it.
    struct AnyDa;

    impl Links for AnyDa {
        fn feature_width(&self, _: &LinkRef) -> Result<usize, GraphError> {
            Ok(1)
        }
        fn acquire(
            &mut self,
            link: &LinkRef,
            _: Option<&str>,
            _: &mut Vec<Effect>,
        ) -> Result<String, GraphError> {
            Ok(format!("{}/{}", link.da_id, link.feature))
        }
        fn release(&mut self, _: &LinkRef, _: &mut Vec<Effect>) {}
        fn odf_open(&self, _: &LinkRef) -> bool {
            true
        }
    }

    const IDF_DA: &str = "00000000-0000-4000-8000-0000000000aa";
    const ODF_DA: &str = "00000000-0000-4000-8000-000000000001";

    fn op(body: serde_json::Value) -> GraphOp {
        GraphRequest::parse(body.to_string().as_bytes()).unwrap().op
    }

    #[test]
    fn show_reports_funcs_links_and_join_and_changes_nothing() {
        let mut store = GraphStore::new(Runtimes::rhai_only(&Default::default()));
        let (inc, sq) = ("fn run(x) { x + 1 }", "fn run(x) { x * x }");
        let (d_inc, d_sq) = (digest(inc), digest(sq));
        let links = &mut AnyDa;
        let mut fx = Vec::new();
        let mut apply = |store: &mut GraphStore, op, checked, fx: &mut Vec<Effect>| {
            store.apply("g", op, checked, links, fx)
        };
        assert_eq!(
            apply(&mut store, GraphOp::Show, None, &mut fx),
            Err(GraphError::UnknownGraph("g".into()))
        );
        apply(&mut store, GraphOp::Attach, None, &mut fx).unwrap();
        let checked = [inc, sq]
            .map(|code| CheckedFunc {
                digest: digest(code),
                lang: Lang::Rhai,
                code: code.to_owned(),
            })
            .to_vec();
        apply(
            &mut store,
            GraphOp::add_funcs([inc, sq]),
            Some(checked),
            &mut fx,
        )
        .unwrap();
        let ops = [
            json!({"op": "add_link", "da_id": ODF_DA, "odf": "Show", "func": null}),
            json!({"op": "add_link", "da_id": IDF_DA, "idf": "Level", "func": d_inc,
                   "depends": {"sq": d_sq}, "input_type": ["variant"], "param_no": 1,
                   "tag_param_no": 1}),
            json!({"op": "set_join", "prev": null, "new": d_sq}),
        ];
        for body in ops {
            apply(&mut store, op(body.clone()), None, &mut fx)
                .unwrap_or_else(|e| panic!("{body}: {e}"));
        }

        let mut fx = Vec::new();
        let ok = apply(&mut store, GraphOp::Show, None, &mut fx).unwrap();
        assert!(fx.is_empty(), "show has no effects: {fx:?}");
        let body = reply(&serde_json::Map::new(), Ok(&ok));
        let mut funcs = [d_inc.clone(), d_sq.clone()];
        funcs.sort();
        // Links in LinkRef order: by DA id first (ODF_DA sorts before IDF_DA).
        assert_eq!(
            body,
            json!({"state": "ok", "graph": {
                "funcs": funcs,
                "links": [
                    {"da_id": ODF_DA, "odf": "Show", "func": null, "input_type": [],
                     "depends": {}, "param_no": null, "tag_param_no": null},
                    {"da_id": IDF_DA, "idf": "Level", "func": d_inc,
                     "input_type": ["variant"], "depends": {"sq": d_sq}, "param_no": 1,
                     "tag_param_no": 1},
                ],
                "join": d_sq,
                "join_depends": {},
                "monitor": null,
            }})
        );

        apply(&mut store, GraphOp::StartMonitor, None, &mut fx).unwrap();
        let ok = apply(&mut store, GraphOp::Show, None, &mut fx).unwrap();
        let body = reply(&serde_json::Map::new(), Ok(&ok));
        assert!(body["graph"]["monitor"]
            .as_str()
            .is_some_and(|t| t.starts_with("iottalk/monitor/")));
    }
}
