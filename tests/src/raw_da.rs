//! [`RawDa`], a DA on raw MQTT (registered over HTTP, connected with the credentials of its
//! registration reply) that answers control signals by hand, for tests that need to do what
//! an SDK would not.

use rumqttc::QoS;
use serde_json::{json, Value};

use crate::{new_id, App, Mqtt};

/// A DA on raw MQTT with the credentials of its registration reply: online, subscribed to
/// its downlink.
#[derive(Debug)]
pub struct RawDa {
    pub mqtt: Mqtt,
    pub id: String,
    pub password: String,
}

impl RawDa {
    pub async fn online(app: &App) -> RawDa {
        let id = new_id();
        let reply = app.register(&id).await;
        let password = reply["password"].as_str().unwrap().to_owned();
        let ctrl_i = format!("{id}/ctrl/i");
        let will = json!({"state": "offline", "rev": reply["rev"]});
        let mut mqtt = Mqtt::connect_as(
            &app.mqtt,
            Some((ctrl_i.clone(), will)),
            Some((&id, &password)),
        )
        .await;
        mqtt.subscribe(&format!("{id}/ctrl/o"), QoS::AtLeastOnce)
            .await;
        mqtt.publish_json(
            &ctrl_i,
            &json!({"state": "online", "rev": reply["rev"]}),
            true,
        )
        .await;
        RawDa { mqtt, id, password }
    }

    /// Takes the next CONNECT or DISCONNECT; for a CONNECT of an ODF, subscribes to the
    /// topic first; acknowledges; returns the signal.
    pub async fn signal(&mut self, command: &str) -> Value {
        let ctrl_o = format!("{}/ctrl/o", self.id);
        let s = self
            .mqtt
            .recv_until(command, |r| {
                r.topic == ctrl_o && r.json()["command"] == command
            })
            .await
            .json();
        if command == "CONNECT" && s.get("odf").is_some() {
            self.mqtt
                .subscribe(s["topic"].as_str().unwrap(), QoS::AtLeastOnce)
                .await;
        }
        self.mqtt
            .publish_json(
                &format!("{}/ctrl/i", self.id),
                &json!({"msg_id": s["msg_id"], "state": "ok"}),
                false,
            )
            .await;
        s
    }
}

/// Two DAs on raw MQTT, `a`'s IDF `Dummy_Sensor` linked to `b`'s ODF `Dummy_Control` in graph
/// `gid` (by the admin when authentication is on), both CONNECTs acknowledged.
#[derive(Debug)]
pub struct LinkedPair {
    pub a: RawDa,
    pub b: RawDa,
    /// a's IDF data topic (a publishes there).
    pub ta: String,
    /// b's ODF data topic (b reads there).
    pub tb: String,
    pub graph: crate::GraphClient,
}

impl LinkedPair {
    pub async fn start(app: &App, gid: &str) -> LinkedPair {
        let mut a = RawDa::online(app).await;
        let mut b = RawDa::online(app).await;
        app.wait_online(2).await;
        let mut graph = crate::GraphClient::new(app, gid).await;
        graph.ok(json!({"op": "attach"})).await;
        graph.link(&a.id, "idf", "Dummy_Sensor").await;
        graph.link(&b.id, "odf", "Dummy_Control").await;
        let topic = |s: Value| s["topic"].as_str().unwrap_or_default().to_owned();
        let ta = topic(a.signal("CONNECT").await);
        let tb = topic(b.signal("CONNECT").await);
        app.wait_links_acked().await;
        LinkedPair {
            a,
            b,
            ta,
            tb,
            graph,
        }
    }
}
