//! The topic ACL with authentication on (issue "Security"): DAs confined to their control
//! channels and the data topics of their links (following links as they change and across a
//! restart), app users to request/response and the read-only device API, admins everywhere;
//! refused publishes dropped and counted, refused filters failed alone in their SUBSCRIBE,
//! wills checked at CONNECT. Real binary; rumqttc (3.1.1 and 5) and mosquitto_sub.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use iot_tests::*;
use rumqttc::QoS;
use serde_json::json;

fn auth_on() -> AppOptions {
    AppOptions {
        auth: true,
        ..AppOptions::default()
    }
}

/// `iotctl_acl_denied_total{action=...}` now.
async fn denied(app: &App, action: &str) -> f64 {
    app.metric(&format!("iotctl_acl_denied_total{{action=\"{action}\"}}"))
        .await
}

/// Waits until the `action` refusal counter reaches `n`.
async fn until_denied(app: &App, action: &str, n: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while denied(app, action).await < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{action} refusals never reached {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_da_uses_only_its_own_channels_and_the_topics_of_its_links() {
    let mut app = App::start(auth_on()).await;
    let LinkedPair {
        mut a,
        mut b,
        ta,
        tb,
        graph: mut g,
    } = LinkedPair::start(&app, "acl").await;

    // Routing works through the ACL.
    a.mqtt.publish_json(&ta, &json!([1]), false).await;
    let got = b.mqtt.recv_until("routed [1]", |r| r.topic == tb).await;
    assert_eq!(got.json(), json!([1]));

    // b may not read a's input, nor everything; the other filter of the same SUBSCRIBE works.
    assert_eq!(
        b.mqtt.subscribe_many(&[&ta], QoS::AtMostOnce).await,
        [false]
    );
    let own_rpc = format!("iottalk/rpc/{}/req", b.id);
    assert_eq!(
        b.mqtt
            .subscribe_many(&["#", &own_rpc, "+/ctrl/i"], QoS::AtMostOnce)
            .await,
        [false, true, false]
    );
    until_denied(&app, "subscribe", 3.0).await;

    // b may not write as a: a forged value on a's topic, a forged offline on a's uplink and a
    // graph-API request are dropped (the forged value never reaches b's ODF; a stays online).
    let before = denied(&app, "publish").await;
    b.mqtt.publish_json(&ta, &json!([99]), false).await;
    b.mqtt
        .publish_json(
            &format!("{}/ctrl/i", a.id),
            &json!({"state": "offline", "rev": "x"}),
            true,
        )
        .await;
    b.mqtt
        .publish_json(
            "iottalk/api/req/evil/graph/g",
            &json!({"op": "attach"}),
            false,
        )
        .await;
    until_denied(&app, "publish", before + 3.0).await;
    a.mqtt.publish_json(&ta, &json!([2]), false).await;
    let got = b.mqtt.recv_until("routed [2]", |r| r.topic == tb).await;
    assert_eq!(got.json(), json!([2]), "the forged value was routed");
    let s = app.status().await;
    assert_eq!(s["online"], 2, "{s}");
    assert!(s["graphs"].get("g").is_none(), "{s}");

    // A will on another DA's uplink is refused at CONNECT; its own is fine.
    let other = format!("{}/ctrl/i", b.id);
    assert_eq!(
        connack_with(&app.mqtt, Some((&a.id, &a.password)), Some(&other)).await,
        5
    );
    let own = format!("{}/ctrl/i", a.id);
    assert_eq!(
        connack_with(&app.mqtt, Some((&a.id, &a.password)), Some(&own)).await,
        0
    );
    // The will is looked at only once the credentials are good: a stranger's forbidden will
    // is a bad password (4), not an ACL refusal (nothing to count or log for it).
    let before = denied(&app, "publish").await;
    assert_eq!(
        connack_with(&app.mqtt, Some((&a.id, "wrong")), Some(&other)).await,
        4
    );
    assert_eq!(denied(&app, "publish").await, before);

    // mosquitto_sub with a DA's credentials cannot read everything.
    let (host, port) = app.mqtt.rsplit_once(':').unwrap();
    let out = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            host,
            "-p",
            port,
            "-u",
            &b.id,
            "-P",
            &b.password,
            "-t",
            "#",
            "-C",
            "1",
            "-W",
            "10",
        ])
        .output()
        .await
        .expect("mosquitto_sub");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("denied"), "{text}");
    assert!(out.stdout.is_empty(), "mosquitto_sub read something");

    // Permissions follow links: once the link is gone (DISCONNECT), a's old topic is closed.
    g.ok(json!({"op": "rm_link", "da_id": a.id, "idf": "Dummy_Sensor"}))
        .await;
    a.signal("DISCONNECT").await;
    let before = denied(&app, "publish").await;
    a.mqtt.publish_json(&ta, &json!([3]), false).await;
    until_denied(&app, "publish", before + 1.0).await;

    // ... and survive a restart: b's ODF topic is still its own (grants rebuilt from the
    // database), a's removed one is still closed.
    drop(g);
    app.stop().await;
    let app2 = app.restart().await;
    let mut b2 = Mqtt::connect_as(&app2.mqtt, None, Some((&b.id, &b.password))).await;
    assert_eq!(
        b2.subscribe_many(&[&tb, &ta], QoS::AtMostOnce).await,
        [true, false]
    );
    app = app2;
    drop(app);
}

#[tokio::test]
async fn an_app_user_uses_request_response_and_the_device_api_only() {
    let app = App::start(auth_on()).await;
    let out = app
        .iotctl(
            &["user", "add", "app1", "--role", "app", "--password-stdin"],
            Some("app1-pw"),
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while connack_code(&app.mqtt, "app1", "app1-pw").await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "app1 never accepted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut da = RawDa::online(&app).await;
    let mut user = Mqtt::connect_as(&app.mqtt, None, Some(("app1", "app1-pw"))).await;
    let granted = user
        .subscribe_many(
            &[
                "iottalk/rpc/app1/res/+",
                "+/ctrl/i",
                "#",
                "iottalk/api/res/app1/device",
                "iottalk/api/res/gui/graph/+",
                &format!("iottalk/rpc/{}/req", da.id),
            ],
            QoS::AtLeastOnce,
        )
        .await;
    assert_eq!(granted, [true, false, false, true, false, false]);

    // Device announcements, read-only, under its own name.
    user.publish_json(
        "iottalk/api/req/app1/device",
        &json!({"op": "attach"}),
        false,
    )
    .await;
    let reply = user
        .recv_until("attach reply", |r| r.topic == "iottalk/api/res/app1/device")
        .await
        .json();
    assert_eq!(reply["state"], "ok", "{reply}");
    assert!(reply["da_list"].to_string().contains(&da.id), "{reply}");
    // Without the DAs' revs (enough to deregister one).
    assert!(reply["da_list"][&da.id]["name"].is_string(), "{reply}");
    assert!(reply["da_list"][&da.id].get("rev").is_none(), "{reply}");

    // Request/response with a DA.
    let req_topic = format!("iottalk/rpc/{}/req", da.id);
    da.mqtt.subscribe(&req_topic, QoS::AtLeastOnce).await;
    let request =
        json!({"id": "1", "method": "ping", "args": null, "reply_to": "iottalk/rpc/app1/res/n1"});
    user.publish_json(&req_topic, &request, false).await;
    da.mqtt
        .recv_until("the request", |r| r.topic == req_topic)
        .await;
    da.mqtt
        .publish_json(
            "iottalk/rpc/app1/res/n1",
            &json!({"id": "1", "state": "ok", "result": "pong"}),
            false,
        )
        .await;
    let got = user
        .recv_until("the reply", |r| r.topic == "iottalk/rpc/app1/res/n1")
        .await;
    assert_eq!(got.json()["result"], "pong");

    // No graph API, no DA topic.
    user.publish_json(
        "iottalk/api/req/app1/graph/g",
        &json!({"op": "attach"}),
        false,
    )
    .await;
    user.publish_json(
        &format!("{}/ctrl/i", da.id),
        &json!({"state": "offline", "rev": "x"}),
        true,
    )
    .await;
    // Nor a retained request (the broker would keep it for ever).
    user.publish(&req_topic, "{}", QoS::AtLeastOnce, true).await;
    until_denied(&app, "publish", 3.0).await;
    let s = app.status().await;
    assert!(s["graphs"].get("g").is_none() && s["online"] == 1, "{s}");
}

/// MQTT 5 clients are told why: PUBACK reason 0x87 for a refused publish, SUBACK 0x87 for a
/// refused filter; the connection stays up.
#[tokio::test]
async fn mqtt5_clients_get_not_authorized_reason_codes() {
    use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, SubscribeReasonCode};
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let app = App::start(auth_on()).await;
    let id = new_id();
    let reply = app.register(&id).await;
    let (host, port) = app.mqtt.rsplit_once(':').unwrap();
    let mut opts = MqttOptions::new(format!("v5-{}", new_id()), host, port.parse().unwrap());
    opts.set_credentials(id.clone(), reply["password"].as_str().unwrap());
    let (client, mut ev) = AsyncClient::new(opts, 10);
    client.subscribe("#", QoS5::AtLeastOnce).await.unwrap();
    client
        .publish("iottalk/api/req/x/graph/g", QoS5::AtLeastOnce, false, "{}")
        .await
        .unwrap();
    client
        .publish(format!("{id}/ctrl/i"), QoS5::AtLeastOnce, false, "{}")
        .await
        .unwrap();
    let (mut suback, mut pubacks) = (None, Vec::new());
    while suback.is_none() || pubacks.len() < 2 {
        match tokio::time::timeout(WAIT, ev.poll())
            .await
            .expect("acks")
            .expect("connection")
        {
            Event::Incoming(Packet::SubAck(a)) => suback = Some(a.return_codes),
            Event::Incoming(Packet::PubAck(a)) => pubacks.push(a.reason),
            _ => {}
        }
    }
    assert_eq!(suback.unwrap(), [SubscribeReasonCode::NotAuthorized]);
    assert_eq!(pubacks[0], PubAckReason::NotAuthorized);
    assert!(
        matches!(
            pubacks[1],
            PubAckReason::Success | PubAckReason::NoMatchingSubscribers
        ),
        "its own uplink: {:?}",
        pubacks[1]
    );
}

/// With an external broker the controller cannot enforce the ACL: `iotctl acl export` writes
/// it for Mosquitto. Here the export, loaded by a real Mosquitto, gives the same answers.
#[tokio::test]
async fn the_mosquitto_export_enforces_the_same_rules_in_mosquitto() {
    let app = App::start(auth_on()).await;
    let LinkedPair {
        a,
        b,
        ta,
        tb,
        graph,
        ..
    } = LinkedPair::start(&app, "export").await;
    drop(graph);
    let out = app
        .iotctl(
            &["user", "add", "app1", "--role", "app", "--password-stdin"],
            Some("app1-pw"),
        )
        .await;
    assert!(out.status.success());

    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    let out = app
        .iotctl(
            &[
                "acl",
                "export",
                "--format",
                "mosquitto",
                "--out",
                acl.to_str().unwrap(),
            ],
            None,
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, "").unwrap();
    for (user, password) in [
        (ADMIN_USER, ADMIN_PASSWORD),
        ("app1", "app1-pw"),
        (a.id.as_str(), a.password.as_str()),
        (b.id.as_str(), b.password.as_str()),
    ] {
        let out = std::process::Command::new("mosquitto_passwd")
            .args(["-b", passwd.to_str().unwrap(), user, password])
            .output()
            .expect("mosquitto_passwd");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let addr = free_addr();
    let port = addr.rsplit_once(':').unwrap().1;
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n",
            passwd.display(),
            acl.display()
        ),
    )
    .unwrap();
    let _mosquitto = tokio::process::Command::new("mosquitto")
        .args(["-c", conf.to_str().unwrap()])
        .kill_on_drop(true)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto");
    assert_eq!(connack_code(&addr, ADMIN_USER, ADMIN_PASSWORD).await, 0);

    let mut admin = Mqtt::connect_as(&addr, None, Some((ADMIN_USER, ADMIN_PASSWORD))).await;
    admin.subscribe("#", QoS::AtLeastOnce).await;
    // Mosquitto grants every SUBSCRIBE and checks read access per message it delivers.
    let da_a = Mqtt::connect_as(&addr, None, Some((&a.id, &a.password))).await;
    let mut da_b = Mqtt::connect_as(&addr, None, Some((&b.id, &b.password))).await;
    da_b.subscribe_many(&[&tb, &ta, "#"], QoS::AtLeastOnce)
        .await;
    // a writes its own topic (the admin reads it), b does not read it (the admin's marker on
    // b's own topic, sent after, is the first thing b gets).
    da_a.publish_json(&ta, &json!([1]), false).await;
    let got = admin.recv_until("a's value", |r| r.topic == ta).await;
    assert_eq!(got.json(), json!([1]));
    admin.publish_json(&tb, &json!(["marker"]), false).await;
    let first = da_b
        .recv_until("b's messages", |r| r.topic == ta || r.topic == tb)
        .await;
    assert_eq!(first.topic, tb, "b read a's topic through Mosquitto");

    // b's forged value on a's topic never arrives; its own uplink message, sent after, does.
    da_b.publish_json(&ta, &json!([99]), false).await;
    let b_ctrl = format!("{}/ctrl/i", b.id);
    da_b.publish_json(&b_ctrl, &json!({"marker": 1}), false)
        .await;
    let first = admin
        .recv_until("b's messages", |r| r.topic == ta || r.topic == b_ctrl)
        .await;
    assert_eq!(first.topic, b_ctrl, "the forged value passed Mosquitto");

    // app1 reads its replies, not the DAs' data.
    let mut app1 = Mqtt::connect_as(&addr, None, Some(("app1", "app1-pw"))).await;
    app1.subscribe_many(&["#"], QoS::AtLeastOnce).await;
    admin
        .publish_json(&tb, &json!(["not for apps"]), false)
        .await;
    admin
        .publish_json("iottalk/rpc/app1/res/x", &json!({"id": "1"}), false)
        .await;
    let first = app1
        .recv_until("app1's messages", |r| {
            r.topic == tb || r.topic.starts_with("iottalk/rpc/")
        })
        .await;
    assert_eq!(
        first.topic, "iottalk/rpc/app1/res/x",
        "app1 read a DA's data"
    );
}

/// Home scenes: an app user may send commands (`iottalk/home/cmd/+`) and read replies; a DA
/// may neither (without `home_das`): its command is dropped and counted, its filter refused.
#[tokio::test]
async fn an_app_user_sends_home_commands_and_a_da_may_not() {
    let app = App::start(auth_on()).await;
    let out = app
        .iotctl(
            &["user", "add", "app1", "--role", "app", "--password-stdin"],
            Some("app1-pw"),
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while connack_code(&app.mqtt, "app1", "app1-pw").await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "app1 never accepted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut admin = Mqtt::connect_as(&app.mqtt, None, Some((ADMIN_USER, ADMIN_PASSWORD))).await;
    admin
        .subscribe("iottalk/home/cmd/#", QoS::AtLeastOnce)
        .await;
    let mut user = Mqtt::connect_as(&app.mqtt, None, Some(("app1", "app1-pw"))).await;
    let mut da = RawDa::online(&app).await;

    // The app reads replies (not commands); the DA reads neither.
    assert_eq!(
        user.subscribe_many(
            &["iottalk/home/res/#", "iottalk/home/cmd/+"],
            QoS::AtLeastOnce
        )
        .await,
        [true, false]
    );
    assert_eq!(
        da.mqtt
            .subscribe_many(&["iottalk/home/res/#"], QoS::AtLeastOnce)
            .await,
        [false]
    );
    until_denied(&app, "subscribe", 2.0).await;

    // The DA's command is dropped (counted); the app's, sent after, is the first one through.
    let before = denied(&app, "publish").await;
    da.mqtt
        .publish("iottalk/home/cmd/x", "on", QoS::AtLeastOnce, false)
        .await;
    until_denied(&app, "publish", before + 1.0).await;
    user.publish("iottalk/home/cmd/x", "off", QoS::AtLeastOnce, false)
        .await;
    let got = admin
        .recv_until("a home command", |r| {
            r.topic.starts_with("iottalk/home/cmd/")
        })
        .await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("iottalk/home/cmd/x", &b"off"[..]),
        "the DA's command passed the ACL"
    );
    // A retained command is refused even to the app.
    let before = denied(&app, "publish").await;
    user.publish("iottalk/home/cmd/x", "on", QoS::AtLeastOnce, true)
        .await;
    until_denied(&app, "publish", before + 1.0).await;

    // A reply reaches the app.
    admin
        .publish("iottalk/home/res/app1/e2e", "done", QoS::AtLeastOnce, false)
        .await;
    let got = user
        .recv_until("the reply", |r| r.topic == "iottalk/home/res/app1/e2e")
        .await;
    assert_eq!(&got.payload[..], b"done");
}
