#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The IoTtalk JavaScript SDK's traffic over the embedded broker's WebSocket listener, with
//! MQTT.js from npm (`tests/js`, installed by `.ci/run`): `tests/js/sdk_da.mjs` replays what
//! iottalk-js's `dan2.js` does (the SDK is a browser bundle published on GitHub only). With
//! `csm.da_credentials = false` the registration reply has no credentials and the SDK sends
//! an empty username and password: MQTT.js writes each empty field as an empty WebSocket
//! frame, which rmqtt's own WebSocket adapter took for the end of the connection.

use std::process::Stdio;

use iot_tests::*;
use rumqttc::QoS;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

/// `node tests/js/sdk_da.mjs <csm> <id>`; its stdout lines arrive on the returned channel.
fn spawn_js_da(
    app: &App,
    id: &str,
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let dir = workspace().join("tests/js");
    assert!(
        dir.join("node_modules/mqtt").exists(),
        "MQTT.js is missing: run .ci/run once, or `npm ci --prefix tests/js`"
    );
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join("sdk_da.mjs"))
        .arg(app.csm.trim_end_matches('/'))
        .arg(id)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node (Node.js 18 or later)");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(l)) = out.next_line().await {
            let _ = tx.send(l);
        }
    });
    (child, rx)
}

async fn line(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, want: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(l)) if l == want => return,
            Ok(Some(_)) => {}
            other => panic!("no line {want:?} from the JS DA: {other:?}"),
        }
    }
}

/// Registered without credentials, the JS DA connects over WebSocket with an empty username
/// and password, goes online (QoS 2, retained), answers a control signal, and its will marks
/// it offline when its connection drops.
#[tokio::test]
async fn js_sdk_works_without_da_credentials() {
    let app = App::start(AppOptions {
        extra_toml: "[csm]\nda_credentials = false\n".into(),
        ..Default::default()
    })
    .await;
    let id = new_id();
    let (ctrl_i, ctrl_o) = (format!("{id}/ctrl/i"), format!("{id}/ctrl/o"));
    let mut watcher = app.mqtt(None).await;
    watcher.subscribe(&ctrl_i, QoS::AtLeastOnce).await;

    let (mut child, mut lines) = spawn_js_da(&app, &id);
    line(&mut lines, "connected").await;
    app.wait_online(1).await;
    watcher
        .recv_until("online", |r| {
            r.topic == ctrl_i && r.json()["state"] == "online"
        })
        .await;
    // Kept as the retained state of its control channel (what the CSM reads on a restart).
    let mut late = app.mqtt(None).await;
    late.subscribe(&ctrl_i, QoS::AtLeastOnce).await;
    let kept = late
        .recv_until("the retained state", |r| r.topic == ctrl_i)
        .await;
    assert!(kept.retain && kept.json()["state"] == "online", "{kept:?}");

    // A signal on its control channel reaches it and its answer comes back.
    let signal = json!({"command": "PING_TEST", "msg_id": "m-1"});
    watcher.publish_json(&ctrl_o, &signal, false).await;
    line(&mut lines, "signal PING_TEST").await;
    let answer = watcher
        .recv_until("the answer", |r| {
            r.topic == ctrl_i && r.json()["msg_id"] == "m-1"
        })
        .await;
    assert_eq!(answer.json()["state"], "ok");

    // Killed: the will (offline, retained) is published.
    child.kill().await.unwrap();
    watcher
        .recv_until("the will", |r| {
            r.topic == ctrl_i && r.json()["state"] == "offline"
        })
        .await;
}
