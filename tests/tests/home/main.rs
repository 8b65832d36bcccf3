#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Home scenes (issue 11, docs/home.md) end to end: the real controller drives simulated
//! TP-Link plugs and bulbs and an HTTP target (`iot_tests::home_sim`, written apart from the
//! controller's own TP-Link code) on loopback, asked over MQTT (rumqttc 3.1.1 and 5,
//! `mosquitto_pub`), the CCM's REST API and `iotctl home`. Nested scenes with command
//! pass-down and overrides, command variants, substring lookup, partial failure, one
//! deadline for the whole tree, retries that stop on success, catalog refusals, the rate
//! limit, restart, retained state and catalog, malformed requests and `/metrics`.
//!
//! Files: `running.rs` (scenes, lookup, failures, the deadline, retries), `catalog.rs`
//! (refusals, the rate limit, restart, retained topics), `wire.rs` (MQTT 5, malformed
//! requests, `mosquitto_pub`, the mqtt, delay and da drivers, `iotctl home`).
//!
//! Timing: the only elapsed times checked are where the time is the behaviour (ten 1-second
//! devices in parallel must not take ten seconds; a silent device is cut at the deadline),
//! each with a wide margin.

use std::time::{Duration, Instant};

use iot_proto::home::HomeResult;
use iot_tests::home_sim::{stopped_addr, Behaviour, DeviceState};
use iot_tests::{new_id, App, AppOptions, CcmClient, HttpTarget, Mqtt, TplinkSim, WAIT};
use reqwest::Method;
use rumqttc::QoS;
use serde_json::{json, Value};

/// The bulb service of the TP-Link protocol.
const LIGHTING: &str = "smartlife.iot.smartbulb.lightingservice";

/// A controller with `[home]` set to `home` (TOML keys, one a line).
async fn start(home: &str) -> App {
    App::start(AppOptions {
        extra_toml: format!("[home]\n{home}\n"),
        ..AppOptions::default()
    })
    .await
}

/// `PUT /api/home` (merge), asserting 200.
async fn put_catalog(c: &CcmClient, catalog: &Value) {
    let (s, v) = c.put("/api/home", catalog).await;
    assert_eq!(s, 200, "PUT /api/home {catalog}: {v}");
}

/// `POST /api/home/run/<target>` with `body` (none: no body), asserting 200.
async fn run_rest(c: &CcmClient, target: &str, body: Option<&Value>) -> HomeResult {
    let (s, v) = c
        .call(Method::POST, &format!("/api/home/run/{target}"), body)
        .await;
    assert_eq!(s, 200, "POST /api/home/run/{target}: {v}");
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not a HomeResult ({e}): {v}"))
}

/// The child of `r` for `target`; panics with the tree when there is none.
fn child<'a>(r: &'a HomeResult, target: &str) -> &'a HomeResult {
    r.children
        .iter()
        .find(|c| c.target == target)
        .unwrap_or_else(|| panic!("no child `{target}` in {}", tree(r)))
}

fn tree(r: &HomeResult) -> String {
    serde_json::to_string_pretty(r).unwrap()
}

/// The `transition_light_state` arguments of a bulb request.
fn light(req: &Value) -> &Value {
    &req[LIGHTING]["transition_light_state"]
}

/// The `state` a plug request sets.
fn relay(req: &Value) -> &Value {
    &req["system"]["set_relay_state"]["state"]
}

/// A test MQTT client asking over MQTT with JSON requests, replies on a topic of its own.
struct Asker {
    m: Mqtt,
    reply_to: String,
}

impl Asker {
    async fn new(app: &App) -> Asker {
        let mut m = app.mqtt(None).await;
        let reply_to = format!("iottalk/home/res/t-{}", new_id());
        m.subscribe(&reply_to, QoS::AtLeastOnce).await;
        Asker { m, reply_to }
    }

    /// Sends `{"cmd", "id", "reply_to", "deadline_ms"?}` on `iottalk/home/cmd/<target>`;
    /// returns the reply and the time from the publish to its arrival.
    async fn run(
        &mut self,
        target: &str,
        cmd: &str,
        deadline_ms: Option<u64>,
    ) -> (HomeResult, Duration) {
        let id = new_id();
        let mut req = json!({"cmd": cmd, "id": id, "reply_to": self.reply_to});
        if let Some(d) = deadline_ms {
            req["deadline_ms"] = json!(d);
        }
        self.send(target, &req.to_string(), &id).await
    }

    /// Publishes `payload` as is; waits for the reply with `id` on this client's reply topic.
    async fn send(&mut self, target: &str, payload: &str, id: &str) -> (HomeResult, Duration) {
        let started = Instant::now();
        self.m
            .publish(
                &format!("iottalk/home/cmd/{target}"),
                payload,
                QoS::AtLeastOnce,
                false,
            )
            .await;
        let reply_to = self.reply_to.clone();
        let got = self
            .m
            .recv_until(&format!("the reply to {payload} on {reply_to}"), |r| {
                r.topic == reply_to && r.json()["id"] == id
            })
            .await;
        let r = serde_json::from_slice(&got.payload).unwrap_or_else(|e| {
            panic!(
                "not a HomeResult ({e}): {}",
                String::from_utf8_lossy(&got.payload)
            )
        });
        (r, started.elapsed())
    }

    async fn ok(&mut self, target: &str, cmd: &str) -> HomeResult {
        let (r, _) = self.run(target, cmd, None).await;
        assert!(r.ok, "{target} {cmd}: {}", tree(&r));
        r
    }
}

/// `GET {ccm}/metrics` (Prometheus text).
async fn ccm_metrics(app: &App) -> String {
    let r = app
        .operator(app.http.get(format!("{}/metrics", app.ccm)))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(r.status(), 200, "GET {}/metrics", app.ccm);
    r.text().await.unwrap()
}

/// The sum of the samples of `name` whose labels contain every one of `labels`.
fn sample_sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            (rest.is_empty() || rest.starts_with('{')).then_some(())?;
            labels
                .iter()
                .all(|want| rest.contains(want))
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

mod catalog;
mod running;
mod wire;
