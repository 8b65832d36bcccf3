#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Replies that do not fit the broker's payload limit (`broker.max_payload_bytes`, 1 MiB by
//! default) and log lines that clients cannot forge, end to end on the real controller.

use iot_tests::*;
use rumqttc::QoS;
use serde_json::{json, Value};

/// The default `broker.max_payload_bytes`.
const LIMIT: usize = 1024 * 1024;

/// A registration body with `n` IDFs of long names: about 45 bytes each in the record.
fn many_features(n: usize) -> Value {
    let idfs: Vec<Value> = (0..n)
        .map(|i| json!([format!("Feature_with_a_longer_name_{i:05}"), ["dB"]]))
        .collect();
    json!({"idf_list": idfs, "accept_protos": ["mqtt"], "profile": {"model": "Big"}})
}

#[tokio::test]
async fn an_attach_reply_over_the_payload_limit_comes_in_pages() {
    let app = App::spawn().await;
    let ids: Vec<String> = (0..3).map(|_| new_id()).collect();
    for id in &ids {
        let (code, body) = app.put(id, &many_features(10_000)).await;
        assert_eq!(code, 200, "{body}");
    }

    // Raw: every page fits, carries the request's fields, and says which of how many it is.
    let mut m = app.mqtt(None).await;
    m.subscribe("iottalk/api/res/pager/device", QoS::ExactlyOnce)
        .await;
    m.publish_json(
        "iottalk/api/req/pager/device",
        &json!({"op": "attach", "nonce": "n-1"}),
        false,
    )
    .await;
    let first = m
        .recv_until("attach page", |r| r.json()["op"] == "attach")
        .await;
    let n = first.json()["pages"].as_u64().expect("paged") as usize;
    assert!(n >= 2, "{n} pages");
    let mut got = vec![first];
    while got.len() < n {
        got.push(
            m.recv_until("attach page", |r| r.json()["op"] == "attach")
                .await,
        );
    }
    let mut seen = std::collections::BTreeMap::new();
    for (k, page) in got.iter().enumerate() {
        assert!(
            page.payload.len() <= LIMIT,
            "page {k}: {} bytes",
            page.payload.len()
        );
        let v = page.json();
        assert_eq!(v["page"], k + 1, "pages arrive in order");
        assert_eq!(v["pages"], n);
        assert_eq!(v["state"], "ok");
        assert_eq!(v["nonce"], "n-1");
        for (id, da) in v["da_list"].as_object().unwrap() {
            assert!(seen.insert(id.clone(), da.clone()).is_none(), "{id} twice");
        }
    }
    assert_eq!(seen.len(), 3);
    for id in &ids {
        assert_eq!(seen[id]["idf_list"].as_array().unwrap().len(), 10_000);
    }
    let total: usize = got.iter().map(|p| p.payload.len()).sum();
    assert!(
        total > LIMIT,
        "the whole reply would not fit: {total} bytes"
    );

    // The harness puts the pages together; announcements follow as usual.
    let (mut dev, list) = app.attach_device_api("pager2").await;
    assert_eq!(list.as_object().unwrap().len(), 3);
    let small = new_id();
    app.register(&small).await;
    dev.announcement("register", &small).await;
}

#[tokio::test]
async fn a_graph_reply_that_cannot_fit_is_an_error_saying_so() {
    let app = App::spawn().await;
    let g = GraphClient::attached(&app).await;
    let mut m = app.mqtt(None).await;
    let res = format!("iottalk/api/res/big/graph/{}", g.gid);
    let req = format!("iottalk/api/req/big/graph/{}", g.gid);
    m.subscribe(&res, QoS::ExactlyOnce).await;
    let pad = "x".repeat(LIMIT - 200);

    // Its reply would echo more than fits: refused before it changes anything.
    let code = format!("fn run(x) {{ x }} // {pad}");
    let body = json!({"op": "add_funcs", "nonce": "n-2", "codes": [code],
        "digests": [digest(&code)]});
    assert!(body.to_string().len() <= LIMIT);
    m.publish_json(&req, &body, false).await;
    let r = m
        .recv_until("add_funcs reply", |r| r.json()["nonce"] == "n-2")
        .await;
    assert!(r.payload.len() <= LIMIT, "{} bytes", r.payload.len());
    let v = r.json();
    assert!(v.get("codes").is_none(), "the large field is left out");
    assert_eq!(v["op"], "add_funcs");
    assert_eq!(v["state"], "error");
    let why = v["reason"].as_str().unwrap();
    assert!(why.contains("request too large"), "{why}");
    assert!(why.contains("broker.max_payload_bytes"), "{why}");

    // Any other reply over the limit (an error echoing a huge field) is cut down to fit.
    // The request fits; its reply, which adds `state` and `reason`, does not.
    let body = json!({"op": "frobnicate", "nonce": "n-3", "pad": "y".repeat(LIMIT - 50)});
    assert!(body.to_string().len() <= LIMIT);
    m.publish_json(&req, &body, false).await;
    let v = m
        .recv_until("frobnicate reply", |r| r.json()["nonce"] == "n-3")
        .await
        .json();
    assert_eq!(v["op"], "frobnicate");
    assert_eq!(v["state"], "error");
    assert!(v.get("pad").is_none(), "the large field is left out");
    let why = v["reason"].as_str().unwrap();
    assert!(why.contains("broker.max_payload_bytes"), "{why}");
}

/// No line of the controller's log starts with `marker` (a forged line would).
fn assert_no_forged_line(app: &App, marker: &str) {
    let log = app.log_text();
    for line in log.lines() {
        assert!(
            !line.trim_start().starts_with(marker),
            "forged log line: {line:?}\n---- log ----\n{log}"
        );
    }
}

#[tokio::test]
async fn control_characters_are_refused_at_registration_and_escaped_in_logs() {
    let app = App::spawn().await;
    let id = new_id();
    let mut body = register_body();
    for (field, value) in [
        ("name", json!("evil\nFORGED line")),
        ("name", json!("nul\u{0}name")),
    ] {
        body[field] = value;
        let (code, reply) = app.put(&id, &body).await;
        assert_eq!(code, 400, "{reply}");
        let why = reply["reason"].as_str().unwrap();
        assert!(why.contains("field `name`"), "{why}");
        assert!(why.contains("control characters"), "{why}");
    }
    let mut body = register_body();
    body["profile"]["model"] = json!("M\r\nFORGED model");
    let (code, reply) = app.put(&id, &body).await;
    assert_eq!(code, 400, "{reply}");
    assert!(
        reply["reason"].as_str().unwrap().contains("`model`"),
        "{reply}"
    );
    let mut body = register_body();
    body["profile"]["u_name"] = json!("u\nFORGED profile");
    let (code, reply) = app.put(&id, &body).await;
    assert_eq!(code, 400, "{reply}");
    assert!(
        reply["reason"].as_str().unwrap().contains("`u_name`"),
        "{reply}"
    );
    assert_eq!(app.get(&id).await.0, 404, "nothing registered");

    // Strings clients may send and the controller logs: a graph id (logged when the graph is
    // created) and an uplink topic (logged as garbage).
    let mut m = app.mqtt(None).await;
    let gid = "g\nFORGED graph line";
    m.subscribe("iottalk/api/res/forger/graph/+", QoS::ExactlyOnce)
        .await;
    m.publish_json(
        &format!("iottalk/api/req/forger/graph/{gid}"),
        &json!({"op": "attach"}),
        false,
    )
    .await;
    let r = m.recv_until("graph attach", |_| true).await.json();
    assert_eq!(r["state"], "ok", "{r}");
    m.publish(
        "x\nFORGED uplink line/ctrl/i",
        r#"{"state":"online","rev":"r"}"#,
        QoS::ExactlyOnce,
        false,
    )
    .await;
    app.wait_status("the garbage uplink counted", |s| {
        s["counters"]["uplink_garbage"].as_u64() >= Some(1)
    })
    .await;

    let log = app.log_text();
    assert!(
        log.contains("g\\nFORGED graph line"),
        "the graph id is logged, escaped:\n{log}"
    );
    assert!(
        log.contains("x\\nFORGED uplink line"),
        "the uplink topic is logged, escaped:\n{log}"
    );
    assert_no_forged_line(&app, "FORGED");
}
