#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The ODF-write API end to end: a value sent by an admin on `iottalk/api/req/<client>/odf`
//! reaches the linked ODF of an online DA on its data topic, as routed data does, and is
//! answered `ok`; each refusal (malformed, unknown DA, unknown ODF, unlinked, not yet
//! subscribed, offline) says why. Also through the CCM's `OdfClient` on a broker connection.

use std::sync::Arc;

use iot_broker::{BrokerHandle, ExternalBroker, ExternalConfig};
use iot_ccm::apply::odf::OdfClient;
use iot_tests::*;
use rumqttc::QoS;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// An admin's raw MQTT client of the ODF-write API under the name `client`.
struct Writer {
    mqtt: Mqtt,
    client: String,
}

impl Writer {
    async fn new(app: &App, client: &str) -> Writer {
        let mut mqtt = app.mqtt(None).await;
        mqtt.subscribe(&format!("iottalk/api/res/{client}/odf"), QoS::ExactlyOnce)
            .await;
        Writer {
            mqtt,
            client: client.to_owned(),
        }
    }

    /// Sends `body` as it is; the next reply.
    async fn send(&mut self, body: impl Into<Vec<u8>>) -> Value {
        let req = format!("iottalk/api/req/{}/odf", self.client);
        let res = format!("iottalk/api/res/{}/odf", self.client);
        self.mqtt.publish(&req, body, QoS::ExactlyOnce, false).await;
        self.mqtt
            .recv_until("an ODF-write reply", |r| r.topic == res)
            .await
            .json()
    }

    /// Writes `data` to `odf` of `da`; `Ok` or the reason of the refusal. Every field of
    /// the request comes back in the reply.
    async fn write(&mut self, da: &str, odf: &str, data: Value) -> Result<(), String> {
        let body = json!({"da": da, "odf": odf, "data": data, "nonce": new_id(), "mine": 1});
        let reply = self.send(body.to_string()).await;
        for (k, v) in body.as_object().unwrap() {
            assert_eq!(&reply[k], v, "{k} echoed in {reply}");
        }
        match reply["state"].as_str() {
            Some("ok") => Ok(()),
            _ => Err(reply["reason"].as_str().unwrap().to_owned()),
        }
    }
}

/// The next value on the data topic `topic` (the ODF's link topic).
async fn next_on(da: &mut RawDa, topic: &str) -> Received {
    da.mqtt.recv_until(topic, |r| r.topic == topic).await
}

#[tokio::test]
async fn a_value_reaches_a_linked_odf_and_refusals_say_why() {
    let app = App::start(AppOptions {
        auth: true,
        ..Default::default()
    })
    .await;
    let mut pair = LinkedPair::start(&app, &new_id()).await;
    let (a, b) = (pair.a.id.clone(), pair.b.id.clone());
    let mut w = Writer::new(&app, "home").await;

    // Delivered on b's ODF topic exactly as routed data: the list, QoS 0, not retained.
    w.write(&b, "Dummy_Control", json!([42, "on"]))
        .await
        .unwrap();
    let got = next_on(&mut pair.b, &pair.tb).await;
    assert_eq!(got.json(), json!([42, "on"]));
    assert_eq!((got.qos, got.retain), (QoS::AtMostOnce, false));
    // Routed data still flows beside it.
    pair.a.mqtt.publish_json(&pair.ta, &json!([7]), false).await;
    assert_eq!(next_on(&mut pair.b, &pair.tb).await.json(), json!([7]));

    // The CCM's client, on its own broker connection as the admin.
    let (user, password) = app.admin().unwrap();
    let shutdown = CancellationToken::new();
    let cfg = ExternalConfig {
        url: format!("mqtt://{}", app.mqtt),
        username: Some(user.to_owned()),
        password: Some(password.to_owned()),
        ..ExternalConfig::default()
    };
    let (ext, _task) = ExternalBroker::connect(&cfg, shutdown.clone())
        .await
        .unwrap();
    let broker: BrokerHandle = Arc::new(ext);
    let odf = OdfClient::connect(broker, "ccm-test", WAIT).await.unwrap();
    let b_id = b.parse().unwrap();
    odf.write(&b_id, "Dummy_Control", json!([0.5]))
        .await
        .unwrap();
    assert_eq!(next_on(&mut pair.b, &pair.tb).await.json(), json!([0.5]));
    let unlinked =
        format!("ODF `Dummy_Control` of DA {a} is in no graph: link it in a project first");
    let a_id = a.parse().unwrap();
    assert_eq!(
        odf.write(&a_id, "Dummy_Control", json!([1])).await,
        Err(unlinked.clone())
    );

    // Refusals, each with its reason.
    let nobody = new_id();
    let refused = [
        (
            nobody.as_str(),
            "Dummy_Control",
            json!([1]),
            format!("DA {nobody} is not registered"),
        ),
        (&b, "Nope", json!([1]), format!("DA {b} has no ODF `Nope`")),
        (
            &b,
            "Dummy_Sensor",
            json!([1]),
            format!("DA {b} has no ODF `Dummy_Sensor`"),
        ),
        (&a, "Dummy_Control", json!([1]), unlinked),
        (
            &b,
            "Dummy_Control",
            json!(1),
            "field `data` must be a JSON array, as routed data (e.g. [1] or [0.5, \"on\"]), not 1"
                .into(),
        ),
        (
            "lamp",
            "Dummy_Control",
            json!([1]),
            "field `da` must be a DA id (a lowercase hyphenated UUID), not \"lamp\"".into(),
        ),
    ];
    for (da, feature, data, why) in refused {
        assert_eq!(w.write(da, feature, data).await, Err(why));
    }
    let reply = w.send("{not json").await;
    assert_eq!(reply["state"], "error");
    assert!(
        reply["reason"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON: "),
        "{reply}"
    );
    let reply = w
        .send(json!({"odf": "Dummy_Control", "nonce": "n"}).to_string())
        .await;
    assert_eq!(
        (&reply["reason"], &reply["nonce"]),
        (&json!("missing field `da`"), &json!("n"))
    );

    // Linked, CONNECT not acknowledged yet: the DA is not subscribed, nothing is sent.
    pair.graph.link(&a, "odf", "Dummy_Control").await;
    let why = w.write(&a, "Dummy_Control", json!([1])).await.unwrap_err();
    assert_eq!(
        why,
        format!("ODF `Dummy_Control` of DA {a} is linked but its DA has not subscribed yet (no reply to CONNECT): try again in a moment")
    );

    // Offline (its will fired): refused.
    pair.b.mqtt.kill();
    app.wait_status("b offline", |s| s["online"] == 1).await;
    assert_eq!(
        w.write(&b, "Dummy_Control", json!([1])).await,
        Err(format!(
            "DA {b} is offline: nothing would receive the value"
        ))
    );

    // Counted: 2 delivered; every other request refused.
    assert_eq!(
        app.metric("iotctl_odf_writes_total{result=\"ok\"}").await,
        2.0
    );
    assert_eq!(
        app.metric("iotctl_odf_writes_total{result=\"refused\"}")
            .await,
        11.0
    );
    shutdown.cancel();
}
