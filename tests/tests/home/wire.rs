//! The wire: MQTT 5 properties, malformed requests, `mosquitto_pub`, drivers, `iotctl home`.

use super::*;
use iot_tests::LinkedPair;

/// An MQTT 5 request's response topic and correlation data are honoured: the one reply goes
/// to that topic, the correlation data echoed in its properties and as the reply's `id`.
#[tokio::test]
async fn mqtt5_response_topic_and_correlation_data_are_honoured() {
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    let app = start("").await;
    let c = CcmClient::of(&app);
    let plug = TplinkSim::plug().await;
    let marker = TplinkSim::plug().await;
    put_catalog(
        &c,
        &json!({"devices": {"plug": plug.catalog_entry(), "marker": marker.catalog_entry()}}),
    )
    .await;
    let (host, port) = app.mqtt.rsplit_once(':').unwrap();
    let opts = MqttOptions::new(format!("v5-{}", new_id()), host, port.parse().unwrap());
    let (client, mut ev) = AsyncClient::new(opts, 10);
    client
        .subscribe("iottalk/home/res/#", QoS5::AtLeastOnce)
        .await
        .unwrap();
    let mut next = async || loop {
        match tokio::time::timeout(WAIT, ev.poll())
            .await
            .expect("an MQTT 5 event in time")
            .expect("connection")
        {
            Event::Incoming(Packet::Publish(p)) => return Some(p),
            Event::Incoming(Packet::SubAck(_)) => return None,
            _ => {}
        }
    };
    while next().await.is_some() {}

    let response_topic = format!("iottalk/home/res/v5-{}", new_id());
    let corr = format!("corr-{}", new_id());
    client
        .publish_with_properties(
            "iottalk/home/cmd/plug",
            QoS5::AtLeastOnce,
            false,
            "on",
            PublishProperties {
                response_topic: Some(response_topic.clone()),
                correlation_data: Some(corr.clone().into_bytes().into()),
                ..PublishProperties::default()
            },
        )
        .await
        .unwrap();
    let mut replies = Vec::new();
    let reply = loop {
        let Some(p) = next().await else { continue };
        let topic = String::from_utf8_lossy(&p.topic).into_owned();
        replies.push(topic.clone());
        if topic == response_topic {
            break p;
        }
    };
    let r: HomeResult = serde_json::from_slice(&reply.payload).unwrap();
    assert!(r.ok, "{}", tree(&r));
    assert_eq!(r.id, corr, "{}", tree(&r));
    let props = reply.properties.clone().unwrap_or_default();
    assert_eq!(
        props.correlation_data.as_deref(),
        Some(corr.as_bytes()),
        "correlation data echoed"
    );
    assert!(plug.state().on);

    // Exactly one reply: nothing else came for `plug` by the time a later request's reply
    // (on its default topic) arrives.
    client
        .publish("iottalk/home/cmd/marker", QoS5::AtLeastOnce, false, "on")
        .await
        .unwrap();
    loop {
        let Some(p) = next().await else { continue };
        let topic = String::from_utf8_lossy(&p.topic).into_owned();
        if topic == "iottalk/home/res/marker" {
            break;
        }
        replies.push(topic);
    }
    assert_eq!(
        replies,
        [response_topic],
        "one reply, on the response topic"
    );
}

/// Malformed requests get `ok: false` with a reason (on `reply_to` when it could be read),
/// and run nothing; a `reply_to` outside `iottalk/home/res/` is not used.
#[tokio::test]
async fn malformed_requests_get_a_reason() {
    let app = start("").await;
    let c = CcmClient::of(&app);
    let plug = TplinkSim::plug().await;
    put_catalog(&c, &json!({"devices": {"plug": plug.catalog_entry()}})).await;
    let mut a = Asker::new(&app).await;
    a.m.subscribe("iottalk/home/res/plug", QoS::AtLeastOnce)
        .await;
    a.m.subscribe("elsewhere/#", QoS::AtLeastOnce).await;

    a.m.publish(
        "iottalk/home/cmd/plug",
        "{\"cmd\": ",
        QoS::AtLeastOnce,
        false,
    )
    .await;
    let got =
        a.m.recv_until("the refusal of broken JSON", |r| {
            r.topic == "iottalk/home/res/plug"
        })
        .await;
    let r: HomeResult = serde_json::from_slice(&got.payload).unwrap();
    assert!(!r.ok, "{}", tree(&r));
    assert!(
        r.detail.as_deref().is_some_and(|d| d.contains("malformed")),
        "{}",
        tree(&r)
    );

    let reply_to = a.reply_to.clone();
    for (id, payload, why) in [
        (
            "m2",
            json!({"id": "m2", "reply_to": reply_to, "bogus": 1}),
            "bogus",
        ),
        (
            "m3",
            json!({"id": "m3", "reply_to": reply_to, "deadline_ms": 60_001}),
            "deadline_ms",
        ),
        (
            "m4",
            json!({"id": "m4", "reply_to": reply_to, "cmd": "sparkle"}),
            "sparkle",
        ),
        (
            "m5",
            json!({"id": "m5", "reply_to": reply_to, "cmd": "dim:140"}),
            "dim:140",
        ),
    ] {
        let (r, _) = a.send("plug", &payload.to_string(), id).await;
        assert!(!r.ok, "{payload}: {}", tree(&r));
        assert!(
            r.detail.as_deref().is_some_and(|d| d.contains(why)),
            "{payload}: the reason names `{why}`: {}",
            tree(&r)
        );
    }
    assert!(plug.requests().is_empty(), "{:?}", plug.requests());

    // A reply topic outside iottalk/home/res/: the reply goes to the default topic.
    a.m.publish(
        "iottalk/home/cmd/plug",
        json!({"id": "m6", "reply_to": "elsewhere/x", "cmd": "on"}).to_string(),
        QoS::AtLeastOnce,
        false,
    )
    .await;
    let got =
        a.m.recv_until("the reply to m6", |r| {
            r.topic.starts_with("elsewhere/") || r.json()["id"] == "m6"
        })
        .await;
    assert_eq!(got.topic, "iottalk/home/res/plug", "{got:?}");
}

/// The plainest client: `mosquitto_pub -m on` (and an empty message, which means `on`).
#[tokio::test]
async fn a_plain_mosquitto_pub_runs_a_target() {
    let app = start("").await;
    let c = CcmClient::of(&app);
    let plug = TplinkSim::plug().await;
    put_catalog(&c, &json!({"devices": {"plug": plug.catalog_entry()}})).await;
    let mut m = app.mqtt(None).await;
    m.subscribe("iottalk/home/res/plug", QoS::AtLeastOnce).await;
    let (host, port) = app.mqtt.rsplit_once(':').unwrap();
    let pub_ = |msg: &[&str]| {
        let mut args = vec![
            "-h",
            host,
            "-p",
            port,
            "-q",
            "1",
            "-t",
            "iottalk/home/cmd/plug",
        ];
        args.extend_from_slice(msg);
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        async move {
            let out = tokio::time::timeout(
                WAIT,
                tokio::process::Command::new("mosquitto_pub")
                    .args(&args)
                    .output(),
            )
            .await
            .expect("mosquitto_pub in time")
            .expect("mosquitto_pub");
            assert!(
                out.status.success(),
                "mosquitto_pub: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    for (msg, cmd, on) in [
        (&["-m", "on"][..], "on", true),
        (&["-m", "off"][..], "off", false),
        (&["-n"][..], "on", true),
    ] {
        pub_(msg).await;
        let got = m
            .recv_until(&format!("the reply to {msg:?}"), |r| {
                r.topic == "iottalk/home/res/plug"
            })
            .await;
        let r: HomeResult = serde_json::from_slice(&got.payload).unwrap();
        assert!(r.ok, "{msg:?}: {}", tree(&r));
        assert_eq!(r.cmd, cmd, "{}", tree(&r));
        assert_eq!(plug.state().on, on, "{msg:?}");
    }
}

/// Devices of driver `mqtt` and `delay` in a sequence: the pause comes first, then the
/// message with `{cmd}` replaced.
#[tokio::test]
async fn mqtt_and_delay_devices_in_a_sequence() {
    let app = start("").await;
    let c = CcmClient::of(&app);
    let topic = format!("home-test/{}", new_id());
    put_catalog(
        &c,
        &json!({
            "devices": {
                "notify": {"driver": "mqtt", "topic": topic, "payload": "light {cmd}"},
                "pause": {"driver": "delay", "ms": 300},
            },
            "scenes": {"seq": {"mode": "sequence", "items": ["pause", "notify:dim:20"]}},
        }),
    )
    .await;
    let mut m = app.mqtt(None).await;
    m.subscribe(&topic, QoS::AtLeastOnce).await;
    let mut a = Asker::new(&app).await;
    let (r, took) = a.run("seq", "", None).await;
    assert!(r.ok, "{}", tree(&r));
    assert!(took >= Duration::from_millis(300), "{took:?}");
    let got = m
        .recv_until("the mqtt device's message", |r| r.topic == topic)
        .await;
    assert_eq!(&got.payload[..], b"light dim:20");
    assert!(
        child(&r, "notify").ms >= 300,
        "after the pause: {}",
        tree(&r)
    );
}

/// `iotctl home import|export|list|run` with the issue's example (its ports replaced by the
/// simulators'): exit 0 only when the run is ok.
#[tokio::test]
async fn the_cli_imports_the_issue_example_and_runs_it() {
    let app = start("").await;
    let lamp = TplinkSim::bulb().await;
    let web = HttpTarget::start().await;
    let example = format!(
        r#"[devices.lamp]
driver = "tplink"
host = "127.0.0.1"
port = {port}
kind = "bulb"

[devices.porch]
driver = "http"
url = "{url}"

[devices.pause]
driver = "delay"
ms = 500

[scenes]
evening = ["lamp:dim:30", "porch"]
"evening:off" = ["lamp", "porch"]

[scenes.wakeup]
mode = "sequence"
items = ["lamp:dim:10", "pause", "lamp:full"]
"#,
        port = lamp.port(),
        url = web.url("/porch/{cmd}"),
    );
    let file = app.data_dir.join("home.toml");
    std::fs::write(&file, example).unwrap();
    let file = file.to_str().unwrap();
    let text = |o: &std::process::Output| {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    let o = app.iotctl(&["home", "import", file], None).await;
    assert!(o.status.success(), "{}", text(&o));
    let o = app.iotctl(&["home", "list"], None).await;
    assert!(o.status.success(), "{}", text(&o));
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    for name in ["lamp", "porch", "pause", "evening", "wakeup"] {
        assert!(listed.contains(name), "`{name}` listed: {}", text(&o));
    }
    let o = app.iotctl(&["home", "export"], None).await;
    assert!(o.status.success(), "{}", text(&o));
    let exported: toml::Table = String::from_utf8_lossy(&o.stdout)
        .parse()
        .unwrap_or_else(|e| panic!("export is TOML ({e}): {}", text(&o)));
    assert_eq!(
        exported["devices"]["lamp"]["port"].as_integer(),
        Some(i64::from(lamp.port())),
        "{exported}"
    );
    assert!(
        exported["scenes"].get("evening:off").is_some(),
        "{exported}"
    );

    let o = app.iotctl(&["home", "run", "evening"], None).await;
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("lamp") && out.contains("porch"),
        "the tree: {}",
        text(&o)
    );
    assert_eq!(
        lamp.state(),
        DeviceState {
            on: true,
            brightness: 30
        }
    );
    assert_eq!(web.wait_hits(1).await[0].path, "/porch/on");

    let o = app
        .iotctl(
            &["home", "run", "evening", "off", "--deadline-ms", "3000"],
            None,
        )
        .await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(!lamp.state().on);
    assert_eq!(web.wait_hits(2).await[1].path, "/porch/off");

    // A sequence: 10 %, the 500 ms pause, then full.
    let before = lamp.requests().len();
    let o = app.iotctl(&["home", "run", "wakeup"], None).await;
    assert!(o.status.success(), "{}", text(&o));
    let reqs = lamp.wait_requests(before + 2).await;
    let (first, second) = (&reqs[before], &reqs[before + 1]);
    assert_eq!(light(&first.request)["brightness"], 10, "{reqs:?}");
    assert_eq!(light(&second.request)["brightness"], 100, "{reqs:?}");
    assert!(
        second.at.duration_since(first.at) >= Duration::from_millis(450),
        "the pause between: {:?}",
        second.at.duration_since(first.at)
    );
    assert_eq!(
        lamp.state(),
        DeviceState {
            on: true,
            brightness: 100
        }
    );

    // A failing leaf: exit status not 0, the failure in the tree.
    web.set("/porch", 500, Duration::ZERO);
    let o = app.iotctl(&["home", "run", "evening"], None).await;
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("HTTP 500"), "{}", text(&o));
    let o = app.iotctl(&["home", "run", "nosuch"], None).await;
    assert!(!o.status.success(), "{}", text(&o));

    // --replace: only the new file's targets remain.
    let small = app.data_dir.join("small.toml");
    std::fs::write(
        &small,
        format!(
            "[devices.lamp]\ndriver = \"tplink\"\nhost = \"127.0.0.1\"\nport = {}\nkind = \"bulb\"\n",
            lamp.port()
        ),
    )
    .unwrap();
    let o = app
        .iotctl(
            &["home", "import", small.to_str().unwrap(), "--replace"],
            None,
        )
        .await;
    assert!(o.status.success(), "{}", text(&o));
    let o = app.iotctl(&["home", "list"], None).await;
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(listed.contains("lamp"), "{}", text(&o));
    for gone in ["porch", "evening", "wakeup"] {
        assert!(
            !listed.contains(gone),
            "`{gone}` replaced away: {}",
            text(&o)
        );
    }

    // A file with a cycle is refused, naming it.
    let bad = app.data_dir.join("bad.toml");
    std::fs::write(&bad, "[scenes]\na = [\"b\"]\nb = [\"a\"]\n").unwrap();
    let o = app
        .iotctl(&["home", "import", bad.to_str().unwrap()], None)
        .await;
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("a -> b -> a"), "{}", text(&o));
}

/// A device of driver `da` sends `[cmd]` to a DA's linked ODF through the CSM, as routed
/// data would reach it; an ODF in no graph and a DA gone offline fail with the CSM's reason.
#[tokio::test]
async fn a_da_device_reaches_a_linked_odf() {
    let app = start("").await;
    let c = CcmClient::of(&app);
    let mut pair = LinkedPair::start(&app, &new_id()).await;
    let (a, b) = (pair.a.id.clone(), pair.b.id.clone());
    put_catalog(
        &c,
        &json!({"devices": {
            "fan": {"driver": "da", "da": b, "odf": "Dummy_Control"},
            "unlinked": {"driver": "da", "da": a, "odf": "Dummy_Control"},
        }}),
    )
    .await;
    let r = run_rest(&c, "fan", Some(&json!({"cmd": "dim:40"}))).await;
    assert!(r.ok, "{}", tree(&r));
    let got = pair
        .b
        .mqtt
        .recv_until("the fan's value", |m| m.topic == pair.tb)
        .await;
    assert_eq!(got.json(), json!(["dim:40"]));

    let r = run_rest(&c, "unlinked", None).await;
    assert_eq!(
        r.detail.as_deref(),
        Some(
            format!("ODF `Dummy_Control` of DA {a} is in no graph: link it in a project first")
                .as_str()
        ),
        "{}",
        tree(&r)
    );
    // Its will fires: offline, refused.
    pair.b.mqtt.kill();
    app.wait_status("b offline", |s| s["online"] == 1).await;
    let r = run_rest(&c, "fan", Some(&json!({"cmd": "off"}))).await;
    assert_eq!(
        r.detail,
        Some(format!(
            "DA {b} is offline: nothing would receive the value"
        )),
        "{}",
        tree(&r)
    );
}
