#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The CCM applies projects to the CSM over the graph API, end to end: the seed walkthrough
//! (a sensor's `Meow-I` -> square join -> a display's `Show-O`) with two unmodified iottalk-py
//! DAs, built through the CCM's REST API; automatic binding; the CSM's refusals shown on the
//! object they concern; the live monitor; restart and reconciliation; off; and the same
//! project exported and imported.

use std::time::Duration;

use iot_tests::{free_addr, App, AppOptions, CcmClient, GraphClient, PyDa, WAIT};
use reqwest::Method;
use serde_json::{json, Value};

const SQUARE: &str = "fn run(x) { x * x }";

/// The two DAs of the walkthrough, registered as models `Sensor` and `Display`.
async fn das(app: &App) -> (PyDa, PyDa) {
    let sensor = PyDa::of_model(app, "Sensor", "cat", json!([["Meow-I", ["x"]]]), json!([])).await;
    let display = PyDa::of_model(
        app,
        "Display",
        "screen",
        json!([]),
        json!([["Show-O", ["x"]]]),
    )
    .await;
    app.wait_online(2).await;
    (sensor, display)
}

/// The library and the project, through the API: returns (project id, netapp id).
async fn walkthrough(c: &CcmClient) -> (u64, u64) {
    c.model("Sensor", &[("Meow-I", "input", 1)]).await;
    c.model("Display", &[("Show-O", "output", 1)]).await;
    c.ok(
        Method::POST,
        "/api/functions/square",
        Some(&json!({"code": SQUARE})),
    )
    .await;
    let p = c
        .ok(
            Method::POST,
            "/api/projects",
            Some(&json!({"name": "meow"})),
        )
        .await;
    let pid = p["id"].as_u64().unwrap();
    for model in ["Sensor", "Display"] {
        c.ok(
            Method::POST,
            &format!("/api/projects/{pid}/objects"),
            Some(&json!({"model": model})),
        )
        .await;
    }
    let n = c
        .ok(
            Method::POST,
            &format!("/api/projects/{pid}/netapps"),
            Some(&json!({"name": "square", "links": [
                {"object": 1, "feature": "Meow-I"}, {"object": 2, "feature": "Show-O"}]})),
        )
        .await;
    let nid = n["id"].as_u64().unwrap();
    c.ok(
        Method::PATCH,
        &format!("/api/projects/{pid}/netapps/{nid}"),
        Some(&json!({"join": {"name": "square", "version": 1}})),
    )
    .await;
    (pid, nid)
}

/// Polls the project until `f` holds for it; returns it.
async fn wait_project(c: &CcmClient, pid: u64, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (s, v) = c.get(&format!("/api/projects/{pid}")).await;
        if s == 200 && f(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waiting for {what}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn netapp_state(v: &Value, nid: u64) -> &str {
    v["status"]["netapps"][nid.to_string()]["state"]
        .as_str()
        .unwrap_or_default()
}

/// Pushes `x` from the sensor until the display receives `x * x`.
async fn flows(sensor: &mut PyDa, display: &mut PyDa, x: i64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        sensor.push("Meow-I", json!(x)).await;
        if let Ok(data) = tokio::time::timeout(Duration::from_secs(2), display.data()).await {
            if data == json!([x * x]) {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{x} never arrived squared"
        );
    }
}

/// Reads the monitor's event stream until a row of `kind` with `value` arrives.
async fn monitor_shows(app: &App, pid: u64, nid: u64, kind: &str, value: Value) {
    let url = format!("{}/api/projects/{pid}/monitor/{nid}", app.ccm);
    let mut res = reqwest::get(&url).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
            let row: Value = serde_json::from_str(line).unwrap_or_default();
            if row["kind"] == kind && row["value"] == value {
                return;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, res.chunk()).await;
        match chunk {
            Ok(Ok(Some(b))) => text.push_str(&String::from_utf8_lossy(&b)),
            _ => panic!("the monitor never showed a {kind} row {value}: {text}"),
        }
    }
}

#[tokio::test]
async fn the_walkthrough_built_through_the_api_routes_survives_a_restart_and_is_reconciled() {
    // Fixed ports: the DAs reconnect to the restarted controller where they were told.
    let app = App::start(AppOptions {
        csm_listen: Some(free_addr()),
        mqtt_listen: Some(free_addr()),
        ..AppOptions::default()
    })
    .await;
    let c = CcmClient::of(&app);
    let (mut sensor, mut display) = das(&app).await;
    let (pid, nid) = walkthrough(&c).await;
    // One online DA of each model and nobody bound: auto-bind binds them.
    let v = wait_project(&c, pid, "auto-bind", |v| {
        v["project"]["objects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["da_id"].is_string())
    })
    .await;
    assert_eq!(v["project"]["objects"][0]["da_id"], sensor.id.as_str());
    assert_eq!(v["project"]["objects"][1]["da_id"], display.id.as_str());
    assert_eq!(netapp_state(&v, nid), "off");

    c.ok(Method::POST, &format!("/api/projects/{pid}/on"), None)
        .await;
    let v = wait_project(&c, pid, "applied", |v| netapp_state(v, nid) == "applied").await;
    assert_eq!(v["status"]["objects"]["1"]["online"], true, "{v}");
    assert_eq!(
        v["status"]["netapps"][nid.to_string()]["graph"],
        format!("ccm-p{pid}-n{nid}")
    );
    flows(&mut sensor, &mut display, 3).await;
    monitor_shows(&app, pid, nid, "idf", json!([3])).await;
    monitor_shows(&app, pid, nid, "join", json!(9)).await;
    monitor_shows(&app, pid, nid, "odf", json!([9])).await;

    // After a restart: still on, still flowing, nothing to change.
    let app = app.restart().await;
    app.wait_online(2).await;
    let c = CcmClient::of(&app);
    let v = wait_project(&c, pid, "applied after restart", |v| {
        netapp_state(v, nid) == "applied"
    })
    .await;
    assert_eq!(v["project"]["on"], true);
    flows(&mut sensor, &mut display, 4).await;

    // Someone removes a link behind the CCM's back: the next reconciliation restores it and
    // says so.
    let gid = format!("ccm-p{pid}-n{nid}");
    let mut g = GraphClient::new(&app, &gid).await;
    g.ok(json!({"op": "rm_link", "da_id": display.id, "odf": "Show-O"}))
        .await;
    c.ok(
        Method::PATCH,
        &format!("/api/projects/{pid}"),
        Some(&json!({"auto_bind": true})),
    )
    .await;
    let v = wait_project(&c, pid, "reconciled", |v| {
        !v["status"]["reconciled"].as_array().unwrap().is_empty()
    })
    .await;
    let said = v["status"]["reconciled"].to_string();
    assert!(said.contains("Show-O") || said.contains("link"), "{said}");
    flows(&mut sensor, &mut display, 5).await;

    // Off detaches the graph.
    c.ok(Method::POST, &format!("/api/projects/{pid}/off"), None)
        .await;
    wait_project(&c, pid, "off", |v| netapp_state(v, nid) == "off").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = g.send(json!({"op": "rm_funcs", "digests": []})).await;
        if r["state"] == "error" && r["reason"].as_str().unwrap().contains("Unknown graph id") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "graph still there: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Exported, deleted, imported and turned on again: the same routing.
    let (_, doc) = c.get(&format!("/api/projects/{pid}/export")).await;
    c.ok(Method::DELETE, &format!("/api/projects/{pid}"), None)
        .await;
    let file = app.data_dir.join("meow.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = app
        .iotctl(&["project", "import", file.to_str().unwrap()], None)
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = app.iotctl(&["project", "on", "meow"], None).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    flows(&mut sensor, &mut display, 6).await;
}

#[tokio::test]
async fn refusals_of_the_csm_are_shown_on_the_object_they_concern() {
    let app = App::spawn().await;
    let c = CcmClient::of(&app);
    let (_sensor, _display) = das(&app).await;
    let (pid, nid) = walkthrough(&c).await;
    // A join whose code the CSM refuses (a Rhai syntax error).
    let v = c
        .ok(
            Method::POST,
            "/api/functions/broken",
            Some(&json!({"code": "fn run(x) { x * }"})),
        )
        .await;
    assert_eq!(v["version"], 1);
    c.ok(
        Method::PATCH,
        &format!("/api/projects/{pid}/netapps/{nid}"),
        Some(&json!({"join": {"name": "broken", "version": 1}})),
    )
    .await;
    c.ok(Method::POST, &format!("/api/projects/{pid}/on"), None)
        .await;
    let v = wait_project(&c, pid, "error", |v| netapp_state(v, nid) == "error").await;
    let st = &v["status"]["netapps"][nid.to_string()];
    let said = format!("{} {}", st["detail"], st["join_error"]);
    assert!(
        said.contains("broken") && said.to_lowercase().contains("syntax"),
        "{st}"
    );

    // Fixed: applied.
    c.ok(
        Method::PATCH,
        &format!("/api/projects/{pid}/netapps/{nid}"),
        Some(&json!({"join": {"name": "square", "version": 1}})),
    )
    .await;
    wait_project(&c, pid, "applied", |v| netapp_state(v, nid) == "applied").await;

    // An object bound to a DA the CSM does not know: its links wait, the object says why.
    c.ok(
        Method::POST,
        &format!("/api/projects/{pid}/objects/2/unbind"),
        None,
    )
    .await;
    c.ok(
        Method::PATCH,
        &format!("/api/projects/{pid}"),
        Some(&json!({"auto_bind": false})),
    )
    .await;
    let ghost = iot_tests::new_id();
    c.ok(
        Method::POST,
        &format!("/api/projects/{pid}/objects/2/bind"),
        Some(&json!({"da_id": ghost})),
    )
    .await;
    let v = wait_project(&c, pid, "object error", |v| {
        v["status"]["objects"]["2"]["error"].is_string()
    })
    .await;
    let st = &v["status"]["netapps"][nid.to_string()];
    assert_ne!(st["state"], "applied", "{v}");
    let said = st.to_string();
    assert!(said.contains(&ghost) || said.contains("object 2"), "{v}");
}

/// A link's range: the value after the link's function is clamped into [min, max] and mapped
/// onto [0, 1] (a wrapper function the CCM generates around the user's).
#[tokio::test]
async fn a_link_range_clamps_and_normalizes_after_the_link_function() {
    let app = App::spawn().await;
    let c = CcmClient::of(&app);
    let (mut sensor, mut display) = das(&app).await;
    let (pid, nid) = walkthrough(&c).await;
    let double = "fn run(x) { x * 2 }";
    c.ok(
        Method::POST,
        "/api/functions/double",
        Some(&json!({"code": double})),
    )
    .await;
    // No join function: the IDF link's result goes through.
    c.ok(
        Method::PATCH,
        &format!("/api/projects/{pid}/netapps/{nid}"),
        Some(&json!({"join": null})),
    )
    .await;
    c.ok(
        Method::PUT,
        &format!("/api/projects/{pid}/netapps/{nid}/links/1"),
        Some(&json!({"func": {"name": "double", "version": 1},
            "params": [{"min": 0.0, "max": 10.0, "normalize": true}]})),
    )
    .await;
    c.ok(Method::POST, &format!("/api/projects/{pid}/on"), None)
        .await;
    wait_project(&c, pid, "applied", |v| netapp_state(v, nid) == "applied").await;
    for (x, want) in [(2, json!([0.4])), (50, json!([1.0])), (-3, json!([0.0]))] {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            sensor.push("Meow-I", json!(x)).await;
            if let Ok(data) = tokio::time::timeout(Duration::from_secs(2), display.data()).await {
                if data == want {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{x} never became {want}"
            );
        }
    }
}
