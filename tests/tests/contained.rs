#![allow(clippy::unwrap_used, clippy::expect_used)]
//! User functions contained (docs/functions.md): a graph whose Python function loops forever
//! on every message costs another graph's Python function nothing: no message lost, its
//! shared worker never replaced; the runaway graph is suspended, and its failures are shown
//! for that graph in `/status`, `/metrics` and on its monitor topic. (Latency under the same
//! load is a benchmark: `iotctl bench route --join python --runaway`, docs/BENCHMARKS.md.)

use std::time::Duration;

use iot_tests::*;
use rumqttc::QoS;
use serde_json::json;

const LOOP: &str = "def run(*x):\n    while True:\n        pass\n";
const IDENTITY: &str = "def run(x):\n    return x\n";
/// Messages through the good graph, one every [`GAP`] (100 msgs/s).
const N: u64 = 1000;
const GAP: Duration = Duration::from_millis(10);

#[tokio::test]
async fn a_runaway_python_graph_costs_another_python_graph_nothing() {
    let app = App::start(AppOptions {
        // The runaway calls are cut after 5 s; a good call, counted from when it starts
        // running, takes microseconds.
        extra_toml: "[functions]\npython_timeout_ms = 5000\n".into(),
        ..Default::default()
    })
    .await;
    let mut good = LinkedPair::start(&app, "good").await;
    good.graph.add_funcs(&[IDENTITY]).await;
    good.graph
        .ok(json!({"op": "set_join", "prev": null, "new": digest(IDENTITY)}))
        .await;
    let bad = LinkedPair::start(&app, "bad").await;
    let mut bad_graph = bad.graph;
    bad_graph.add_funcs(&[LOOP]).await;
    bad_graph
        .ok(json!({"op": "set_join", "prev": null, "new": digest(LOOP)}))
        .await;
    let monitor = bad_graph.ok(json!({"op": "start_monitor"})).await["monitor_topics"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut mon = app.mqtt(None).await;
    mon.subscribe(&monitor, QoS::AtLeastOnce).await;

    // The good graph answers once (on probation), then runs on the shared worker.
    good.a
        .mqtt
        .publish(&good.ta, json!([0]).to_string(), QoS::AtLeastOnce, false)
        .await;
    let first = good
        .b
        .mqtt
        .recv_until("the first value", |m| m.topic == good.tb)
        .await;
    assert_eq!(first.json(), json!([0]));
    app.wait_status("the good graph on the shared worker", |s| {
        s["graphs"]["good"]["python"]["lane"] == "shared"
    })
    .await;

    // The runaway graph gets a message every 200 ms for as long as the good one runs.
    let stop = tokio_util::sync::CancellationToken::new();
    let runaway = {
        let (client, topic, stop) = (bad.a.mqtt.client.clone(), bad.ta.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                n += 1;
                let _ = client
                    .publish(&topic, QoS::AtLeastOnce, false, json!([n]).to_string())
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let sender = {
        let (client, topic) = (good.a.mqtt.client.clone(), good.ta.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(GAP);
            for i in 1..=N {
                tick.tick().await;
                client
                    .publish(&topic, QoS::AtLeastOnce, false, json!([i]).to_string())
                    .await
                    .unwrap();
            }
        })
    };
    let mut got = Vec::with_capacity(N as usize);
    while got.len() < N as usize {
        let m = good
            .b
            .mqtt
            .recv_until("the good graph's values", |m| m.topic == good.tb)
            .await;
        got.push(m.json()[0].as_u64().unwrap());
    }
    sender.await.unwrap();
    stop.cancel();
    runaway.await.unwrap();
    assert_eq!(got, (1..=N).collect::<Vec<_>>(), "every value, in order");

    // The runaway graph: timed out, suspended, and said so where an operator looks.
    let s = app
        .wait_status("the runaway graph's failure counted", |s| {
            s["graphs"]["bad"]["python"]["failures"].as_u64() >= Some(1)
        })
        .await;
    let bad_py = &s["graphs"]["bad"]["python"];
    assert!(bad_py["suspended_calls"].as_u64() >= Some(1), "{s}");
    assert_eq!(bad_py["lane"], "probation", "{s}");
    assert!(
        bad_py["last_failure"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{s}"
    );
    let good_py = &s["graphs"]["good"]["python"];
    assert_eq!(good_py["failures"], 0, "{s}");
    assert_eq!(good_py["suspended_calls"], 0, "{s}");
    assert_eq!(good_py["lane"], "shared", "{s}");
    assert_eq!(s["graphs"]["good"]["fn_errors"], 0, "{s}");
    // Every worker replaced was the probation worker, once per failure of the runaway
    // graph: the shared workers never were. (The two counters move one after the other.)
    app.wait_status("one restart per failure of the runaway graph", |s| {
        s["python_restarts"] == s["graphs"]["bad"]["python"]["failures"]
    })
    .await;
    assert!(
        app.metric("iotctl_graph_python_failures_total{graph=\"bad\"}")
            .await
            >= 1.0
    );
    assert!(
        app.metric("iotctl_graph_python_suspended_total{graph=\"bad\"}")
            .await
            >= 1.0
    );
    assert_eq!(
        app.metric("iotctl_graph_python_failures_total{graph=\"good\"}")
            .await,
        0.0
    );
    // Its monitor topic tells the timeout and then the suspension.
    for what in ["timed out", "suspended"] {
        let e = mon
            .recv_until(what, |m| {
                m.json()["op"] == "esm_error"
                    && m.json()["data"]["msg"]
                        .as_str()
                        .unwrap_or("")
                        .contains(what)
            })
            .await
            .json();
        assert_eq!(e["data"]["src"], "join", "{e}");
    }
}
