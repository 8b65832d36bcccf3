#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `show` end to end: a graph built over the graph API (a function, links between two DAs on
//! raw MQTT, a join) read back as the `graph` field of the reply, raw and through
//! `iot_client::GraphClient::show`; in order behind an `add_funcs`; refused on an unknown gid.

use iot_proto::wire::graph_api::{GraphOk, GraphOp};
use iot_tests::*;
use serde_json::json;

#[tokio::test]
async fn show_reports_the_graph_as_the_other_ops_left_it() {
    // Authentication on: the graph API is the admin's, `show` included.
    let app = App::start(AppOptions {
        auth: true,
        ..Default::default()
    })
    .await;
    let mut a = RawDa::online(&app).await;
    let mut b = RawDa::online(&app).await;
    app.wait_online(2).await;
    let mut g = GraphClient::attached(&app).await;
    let inc = "fn run(x) { x + 1 }";
    let sq = "fn run(x) { x * x }";
    g.add_funcs(&[inc]).await;
    g.ok(
        json!({"op": "add_link", "da_id": a.id, "idf": "Dummy_Sensor", "func": digest(inc),
                "param_no": 1, "input_type": ["variant"]}),
    )
    .await;
    g.link(&b.id, "odf", "Dummy_Control").await;
    a.signal("CONNECT").await;
    b.signal("CONNECT").await;
    app.wait_links_acked().await;

    // Sent right behind an add_funcs on the same connection: show waits for its check and
    // sees the function it adds.
    let (added, shown) = tokio::join!(
        g.api.request(&g.gid, GraphOp::add_funcs([sq])),
        g.api.show(&g.gid)
    );
    assert_eq!(added.unwrap(), GraphOk::Digests(vec![digest(sq)]));
    let view = shown.unwrap();
    assert_eq!(view.funcs.len(), 2, "{view:?}");
    g.ok(json!({"op": "set_join", "prev": null, "new": digest(sq)}))
        .await;

    let reply = g.ok(json!({"op": "show", "mine": [1, 2]})).await;
    eprintln!("show reply: {reply}");
    let mut funcs = vec![digest(inc), digest(sq)];
    funcs.sort();
    let idf = json!({"da_id": a.id, "idf": "Dummy_Sensor", "func": digest(inc),
                     "input_type": ["variant"], "depends": {}, "param_no": 1,
                     "tag_param_no": null});
    let odf = json!({"da_id": b.id, "odf": "Dummy_Control", "func": null, "input_type": [],
                     "depends": {}, "param_no": null, "tag_param_no": null});
    // Links in LinkRef order: by DA id.
    let links = if a.id < b.id { [idf, odf] } else { [odf, idf] };
    assert_eq!(
        reply,
        json!({
            "op": "show", "mine": [1, 2], "nonce": reply["nonce"], "state": "ok",
            "graph": {
                "funcs": funcs, "links": links, "join": digest(sq), "join_depends": {},
                "monitor": null,
            },
        })
    );
    // The typed view says the same.
    let view = g.api.show(&g.gid).await.unwrap();
    assert_eq!(serde_json::to_value(&view).unwrap(), reply["graph"]);

    // A monitor topic shows while monitoring is on.
    let started = g.ok(json!({"op": "start_monitor"})).await;
    let view = g.api.show(&g.gid).await.unwrap();
    assert_eq!(view.monitor.as_deref(), started["monitor_topics"].as_str());

    // An unknown gid: refused like any op but attach, and nothing is created.
    let mut unknown = GraphClient::new(&app, "no-such-graph").await;
    assert_eq!(
        unknown.err(json!({"op": "show"})).await,
        "Unknown graph id no-such-graph"
    );
    let e = unknown.api.show("no-such-graph").await.unwrap_err();
    assert!(
        e.to_string().ends_with("Unknown graph id no-such-graph"),
        "{e}"
    );
    let status = app.status().await;
    assert!(status["graphs"].get("no-such-graph").is_none(), "{status}");
}
