#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `/metrics` (Prometheus), `/varz` and `/healthz`, scraped as a monitoring system would,
//! with counters that move with traffic.

use iot_tests::*;
use rumqttc::QoS;
use serde_json::{json, Value};

/// The value of one Prometheus sample line, e.g. `iotctl_das_online` or
/// `iotctl_graph_messages_in_total{graph="m"}`.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_and_varz_move_with_traffic() {
    let app = App::spawn().await;
    assert_eq!(
        app.http
            .get(format!("{}/healthz", app.csm))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    let before = app.metrics().await;
    assert_eq!(value(&before, "iotctl_das_registered"), 0.0);
    assert!(
        before.contains("# TYPE iotctl_registrations_total counter"),
        "{before}"
    );

    // Two raw MQTT DAs: an IDF and an ODF, with a graph and a Rhai join between them.
    let (src, dst) = (new_id(), new_id());
    let rev_src = app.register(&src).await["rev"].clone();
    let rev_dst = app.register(&dst).await["rev"].clone();
    let mut s = app.mqtt(None).await;
    let mut d = app.mqtt(None).await;
    s.subscribe(&format!("{src}/ctrl/o"), QoS::ExactlyOnce)
        .await;
    d.subscribe(&format!("{dst}/ctrl/o"), QoS::ExactlyOnce)
        .await;
    s.publish_json(
        &format!("{src}/ctrl/i"),
        &json!({"state": "online", "rev": rev_src}),
        true,
    )
    .await;
    d.publish_json(
        &format!("{dst}/ctrl/i"),
        &json!({"state": "online", "rev": rev_dst}),
        true,
    )
    .await;
    app.wait_status("online", |s| s["online"] == 2).await;

    let mut g = app.mqtt(None).await;
    g.subscribe("iottalk/api/res/m/graph/m", QoS::ExactlyOnce)
        .await;
    let join = "fn run(x) { x * 2 }";
    let sig = digest(join);
    for req in [
        json!({"op": "attach"}),
        json!({"op": "add_funcs", "codes": [join], "digests": [sig]}),
        json!({"op": "add_link", "da_id": src, "idf": "Dummy_Sensor", "func": null}),
        json!({"op": "add_link", "da_id": dst, "odf": "Dummy_Control", "func": null}),
        json!({"op": "set_join", "prev": null, "new": sig}),
    ] {
        g.publish_json("iottalk/api/req/m/graph/m", &req, false)
            .await;
        let op = req["op"].clone();
        let r = g.recv_until("reply", |m| m.json()["op"] == op).await.json();
        assert_eq!(r["state"], "ok", "{r}");
    }
    // CONNECT signals carry the data topics; ack them as a DA would.
    let mut topics = Vec::new();
    for (m, id) in [(&mut s, &src), (&mut d, &dst)] {
        let sig = m
            .recv_until("CONNECT", |r| r.json()["command"] == "CONNECT")
            .await
            .json();
        topics.push(sig["topic"].as_str().unwrap().to_owned());
        m.publish_json(
            &format!("{id}/ctrl/i"),
            &json!({"msg_id": sig["msg_id"], "state": "ok"}),
            false,
        )
        .await;
    }
    d.subscribe(&topics[1], QoS::AtMostOnce).await;
    app.wait_status("links acked", |s| s["unacked_links"] == 0)
        .await;

    for n in 1..=5 {
        s.publish(&topics[0], json!([n]).to_string(), QoS::AtMostOnce, false)
            .await;
        let out = d
            .recv_until("routed value", |r| r.topic == topics[1])
            .await
            .json();
        assert_eq!(out, json!([n * 2]));
    }
    s.publish(&topics[0], "not json", QoS::AtMostOnce, false)
        .await;
    app.wait_status("error counted", |s| s["graphs"]["m"]["errors"] == 1)
        .await;

    let after = app.metrics().await;
    assert_eq!(value(&after, "iotctl_das_registered"), 2.0);
    assert_eq!(value(&after, "iotctl_das_online"), 2.0);
    assert_eq!(value(&after, "iotctl_registrations_total"), 2.0);
    assert_eq!(
        value(&after, "iotctl_graph_messages_in_total{graph=\"m\"}"),
        6.0
    );
    assert_eq!(
        value(&after, "iotctl_graph_messages_out_total{graph=\"m\"}"),
        5.0
    );
    assert_eq!(value(&after, "iotctl_graph_errors_total{graph=\"m\"}"), 1.0);
    assert_eq!(
        value(&after, "iotctl_function_calls_total{graph=\"m\"}"),
        5.0
    );
    assert!(value(&after, "iotctl_function_seconds_total{graph=\"m\"}") > 0.0);
    assert!(value(&after, "iotctl_broker_sessions") >= 3.0, "{after}");
    assert_eq!(value(&after, "iotctl_broker_dropped_total"), 0.0);

    let varz = app
        .http
        .get(format!("{}/varz", app.csm))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(varz.contains("das_online: 2\n"), "{varz}");
    assert!(varz.contains("graph_messages_out_total.m: 5\n"), "{varz}");
    let one = app
        .http
        .get(format!("{}/varz?name=das_online", app.csm))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(one, "2\n");
    let r = app
        .http
        .get(format!("{}/varz?name=nope", app.csm))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert!(body["reason"].as_str().unwrap().contains("nope"));
}
