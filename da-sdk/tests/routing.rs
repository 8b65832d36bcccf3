#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Data routed by the controller's graphs (spec section 4), between SDK DAs and unmodified
//! iottalk-py DAs: a graph with one IDF link and one ODF link, no functions anywhere, passes
//! each IDF value through unchanged to the ODF.

mod common;

use std::time::Duration;

use common::*;
use da_sdk::{ConnState, Da, OutboxConfig};
use iot_tests::*;
use serde_json::json;

async fn sensor(app: &App) -> Da {
    builder(app)
        .idf("Dummy_Sensor", ["int"])
        .connect()
        .await
        .unwrap()
}

async fn display(app: &App) -> Da {
    builder(app)
        .odf("Dummy_Control", ["int"])
        .connect()
        .await
        .unwrap()
}

async fn idf_linked(da: &Da) {
    wait(da, "IDF connected", |s| {
        s.connected_idfs.contains("Dummy_Sensor")
    })
    .await;
}

async fn odf_linked(da: &Da) {
    wait(da, "ODF connected", |s| {
        s.connected_odfs.contains("Dummy_Control")
    })
    .await;
}

/// Every DA has answered its CONNECTs (a DA answers once it can take data).
/// Waits until the graphs have sent `n` messages in all; on a timeout the panic shows the
/// graphs' counters (`msgs_in` says whether the controller received the pushes at all).
async fn routed(app: &App, n: u64) {
    app.wait_status(&format!("{n} messages routed"), |s| {
        s["graphs"]
            .as_object()
            .map(|g| {
                g.values()
                    .filter_map(|v| v["msgs_out"].as_u64())
                    .sum::<u64>()
            })
            .unwrap_or(0)
            >= n
    })
    .await;
}

#[tokio::test]
async fn sdk_idf_to_sdk_odf_through_a_graph() {
    let app = App::spawn().await;
    let (s, d) = (sensor(&app).await, display(&app).await);
    let mut values = d.odf::<i64>("Dummy_Control").await.unwrap();
    let mut g = GraphClient::attached(&app).await;
    g.link(&s.id().to_string(), "idf", "Dummy_Sensor").await;
    g.link(&d.id().to_string(), "odf", "Dummy_Control").await;
    idf_linked(&s).await;
    odf_linked(&d).await;
    app.wait_links_acked().await;
    for i in 1..=5 {
        s.push("Dummy_Sensor", i).await.unwrap();
    }
    routed(&app, 5).await;
    for i in 1..=5 {
        let got = tokio::time::timeout(WAIT, values.recv()).await.unwrap();
        assert_eq!(got, Some(Ok(i)));
    }
    s.deregister().await.unwrap();
    d.deregister().await.unwrap();
}

#[tokio::test]
async fn sdk_idf_to_iottalk_py_odf_through_a_graph() {
    let app = App::spawn().await;
    let s = sensor(&app).await;
    let py_id = new_id();
    let mut py = PyDa::spawn(
        &app.csm,
        &py_id,
        "PY_DISPLAY",
        json!([]),
        json!([["Dummy_Control", ["int"]]]),
    )
    .await;
    py.expect("registered").await;
    let mut g = GraphClient::attached(&app).await;
    g.link(&s.id().to_string(), "idf", "Dummy_Sensor").await;
    g.link(&py_id, "odf", "Dummy_Control").await;
    let sig = py.expect("signal").await;
    assert_eq!(
        (sig["command"].clone(), sig["df"].clone()),
        (json!("CONNECT"), json!("Dummy_Control"))
    );
    idf_linked(&s).await;
    // iottalk-py reports the signal before it subscribes; its answer comes after.
    app.wait_links_acked().await;
    for i in 1..=3 {
        s.push("Dummy_Sensor", i).await.unwrap();
        routed(&app, i).await;
        let d = py.expect("data").await;
        assert_eq!(d["data"], json!([i]));
    }
    py.deregister().await;
    s.deregister().await.unwrap();
}

#[tokio::test]
async fn iottalk_py_idf_to_sdk_odf_through_a_graph() {
    let app = App::spawn().await;
    let d = display(&app).await;
    let mut values = d.odf::<i64>("Dummy_Control").await.unwrap();
    let py_id = new_id();
    let mut py = PyDa::spawn(
        &app.csm,
        &py_id,
        "PY_SENSOR",
        json!([["Dummy_Sensor", ["int"]]]),
        json!([]),
    )
    .await;
    py.expect("registered").await;
    let mut g = GraphClient::attached(&app).await;
    g.link(&py_id, "idf", "Dummy_Sensor").await;
    g.link(&d.id().to_string(), "odf", "Dummy_Control").await;
    py.expect("signal").await;
    odf_linked(&d).await;
    app.wait_links_acked().await;
    for i in 1..=3i64 {
        py.send(&format!("push Dummy_Sensor {i}")).await;
        assert_eq!(py.expect("pushed").await["ok"], true);
        routed(&app, i as u64).await;
        let got = tokio::time::timeout(WAIT, values.recv()).await.unwrap();
        assert_eq!(got, Some(Ok(i)));
    }
    py.deregister().await;
    d.deregister().await.unwrap();
}

#[tokio::test]
async fn a_graph_keeps_routing_after_a_controller_restart_and_the_outbox_is_delivered() {
    let mut app = App::start(AppOptions {
        csm_listen: Some(free_addr()),
        mqtt_listen: Some(free_addr()),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let s = builder(&app)
        .idf("Dummy_Sensor", ["int"])
        .outbox(OutboxConfig::sqlite(dir.path().join("outbox.db"), 1000))
        .resume_timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    let d = display(&app).await;
    let mut values = d.odf::<i64>("Dummy_Control").await.unwrap();
    let mut g = GraphClient::attached(&app).await;
    g.link(&s.id().to_string(), "idf", "Dummy_Sensor").await;
    g.link(&d.id().to_string(), "odf", "Dummy_Control").await;
    idf_linked(&s).await;
    odf_linked(&d).await;
    app.wait_links_acked().await;
    let mut next = async || tokio::time::timeout(WAIT, values.recv()).await.unwrap();
    for i in 1..=3 {
        s.push("Dummy_Sensor", i).await.unwrap();
        routed(&app, i as u64).await;
        assert_eq!(next().await, Some(Ok(i)));
    }
    app.stop().await;
    wait(&s, "sensor reconnecting", |st| {
        st.state == ConnState::Reconnecting
    })
    .await;
    for i in 4..=8 {
        s.push("Dummy_Sensor", i).await.unwrap();
    }
    let app = app.restart().await;
    for who in [&s, &d] {
        wait(who, "online again", |st| st.is_online() && st.sessions == 2).await;
    }
    app.wait_links_acked().await;
    for i in 4..=8 {
        assert_eq!(
            next().await,
            Some(Ok(i)),
            "pushes made while the controller was down"
        );
    }
    s.push("Dummy_Sensor", 9).await.unwrap();
    assert_eq!(next().await, Some(Ok(9)));
    s.deregister().await.unwrap();
    d.deregister().await.unwrap();
}
