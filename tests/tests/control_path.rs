#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The control path never waits on a graph: while one graph's Python function is stuck on
//! every message (until a timeout far beyond this test's deadlines), the controller keeps
//! answering that graph's requests, registers other DAs, brings them online, sends them
//! CONNECT, and routes their data through other graphs.

use iot_tests::*;
use serde_json::json;

#[tokio::test]
async fn a_stuck_python_function_stalls_only_its_own_graph() {
    // The stuck calls end only after 10 minutes: everything below must happen long before.
    let app = App::start(AppOptions {
        extra_toml: "[functions]\npython_timeout_ms = 600000\n".into(),
        ..Default::default()
    })
    .await;
    let mut src = PyDa::registered(&app, "SRC", json!([["Out", ["x"]]]), json!([])).await;
    app.wait_online(1).await;

    let mut stuck = GraphClient::new(&app, "stuck").await;
    stuck.ok(json!({"op": "attach"})).await;
    let py_loop = "def run(x):\n    while True:\n        pass\n";
    stuck.add_funcs(&[py_loop]).await;
    stuck
        .ok(json!({"op": "add_link", "da_id": src.id, "idf": "Out", "func": digest(py_loop)}))
        .await;
    app.wait_links_acked().await;
    // Messages for the stuck graph: its task waits for Python on the first batch.
    for v in 1..=3 {
        src.push("Out", json!(v)).await;
    }
    app.wait_status("the stuck graph took a message", |s| {
        s["graphs"]["stuck"]["msgs_in"].as_u64() >= Some(1)
    })
    .await;

    // Many changes to the stuck graph: each gives its task a new plan it cannot take yet.
    // Every request is answered all the same.
    for i in 0..40 {
        let op = if i % 2 == 0 {
            "start_monitor"
        } else {
            "stop_monitor"
        };
        stuck.ok(json!({"op": op})).await;
    }

    // Other DAs register, come online and get CONNECT; another graph routes their data.
    let mut a = PyDa::registered(&app, "A", json!([["Out", ["x"]]]), json!([])).await;
    let mut b = PyDa::registered(&app, "B", json!([]), json!([["In", ["x"]]])).await;
    app.wait_online(3).await;
    let mut other = GraphClient::new(&app, "other").await;
    other.ok(json!({"op": "attach"})).await;
    let inc = "fn run(x) { x + 1 }";
    other.add_funcs(&[inc]).await;
    other
        .ok(json!({"op": "add_link", "da_id": a.id, "idf": "Out", "func": digest(inc)}))
        .await;
    other.link(&b.id, "odf", "In").await;
    app.wait_links_acked().await;
    a.push("Out", json!(41)).await;
    assert_eq!(b.data().await, json!([42]));

    // A plain MQTT client sees the device API answer at once too.
    let (_api, list) = app.attach_device_api("watcher").await;
    assert_eq!(list.as_object().unwrap().len(), 3, "{list}");

    // And the stuck calls were still running: nothing above waited for their timeout.
    let s = app.status().await;
    assert_eq!(s["python_restarts"], 0, "{s}");
    assert_eq!(s["graphs"]["stuck"]["fn_errors"], 0, "{s}");
}

#[tokio::test]
async fn a_killed_controller_leaves_no_python_worker_running() {
    let mut app = App::start(AppOptions {
        extra_toml: "[functions]\npython_timeout_ms = 600000\npython_workers = 1\n".into(),
        ..Default::default()
    })
    .await;
    let mut src = PyDa::registered(&app, "SRC", json!([["Out", ["x"]]]), json!([])).await;
    app.wait_online(1).await;
    let mut g = GraphClient::attached(&app).await;
    let py_loop = "def run(x):\n    while True:\n        pass\n";
    g.add_funcs(&[py_loop]).await;
    g.ok(json!({"op": "add_link", "da_id": src.id, "idf": "Out", "func": digest(py_loop)}))
        .await;
    app.wait_links_acked().await;
    src.push("Out", json!(1)).await;
    // A function that never answered runs on the probation worker.
    let s = app
        .wait_status("the worker busy with the loop", |s| {
            s["python_probation_worker"].as_u64() > Some(0)
                && s["graphs"][&g.gid]["msgs_in"].as_u64() >= Some(1)
        })
        .await;
    let worker = nix::unistd::Pid::from_raw(s["python_probation_worker"].as_u64().unwrap() as i32);
    // SIGKILL: the controller cannot stop its workers; the worker notices and exits.
    app.kill();
    let deadline = tokio::time::Instant::now() + WAIT;
    while nix::sys::signal::kill(worker, None).is_ok() && !zombie(worker) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker {worker} still runs after the controller was killed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Whether `pid` has exited but not been reaped yet.
fn zombie(pid: nix::unistd::Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
