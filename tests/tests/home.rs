#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Home scenes (issue 11, docs/home.md) end to end: the real controller drives simulated
//! TP-Link plugs and bulbs and an HTTP target (`iot_tests::home_sim`, written apart from the
//! controller's own TP-Link code) on loopback, asked over MQTT (rumqttc 3.1.1 and 5,
//! `mosquitto_pub`), the CCM's REST API and `iotctl home`. Nested scenes with command
//! pass-down and overrides, command variants, substring lookup, partial failure, one
//! deadline for the whole tree, retries that stop on success, catalog refusals, the rate
//! limit, restart, retained state and catalog, malformed requests and `/metrics`.
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

/// A scene of scenes run over REST: the command passes down to every item without one of
/// its own; an item's own command wins, even over `off`.
#[tokio::test]
async fn nested_scenes_pass_the_command_down_and_an_items_own_command_wins() {
    let app = start("").await;
    let c = CcmClient::of(&app);
    let lamp = TplinkSim::bulb().await;
    let plug = TplinkSim::plug().await;
    let web = HttpTarget::start().await;
    let catalog = json!({
        "devices": {
            "lamp": lamp.catalog_entry(),
            "plug": plug.catalog_entry(),
            "porch": web.catalog_entry("/porch/{cmd}"),
        },
        "scenes": {
            "porch-lights": ["porch", "plug"],
            "evening": ["lamp:dim:30", "porch-lights"],
        },
    });
    put_catalog(&c, &catalog).await;
    let (s, stored) = c.get("/api/home").await;
    assert_eq!(s, 200, "{stored}");
    assert_eq!(stored["devices"]["lamp"]["driver"], "tplink");
    assert_eq!(stored["devices"]["lamp"]["port"], lamp.port());
    assert_eq!(stored["devices"]["porch"]["driver"], "http");
    assert_eq!(
        stored["scenes"]["evening"],
        json!(["lamp:dim:30", "porch-lights"])
    );

    let r = run_rest(
        &c,
        "evening",
        Some(&json!({"cmd": "dim:40", "deadline_ms": 5000})),
    )
    .await;
    assert!(r.ok, "{}", tree(&r));
    assert_eq!((r.target.as_str(), r.cmd.as_str()), ("evening", "dim:40"));
    assert_eq!(r.children.len(), 2, "{}", tree(&r));
    let l = child(&r, "lamp");
    assert!(l.ok && l.children.is_empty(), "{}", tree(&r));
    assert_eq!(l.cmd, "dim:30", "the item's own command: {}", tree(&r));
    let pl = child(&r, "porch-lights");
    assert_eq!(pl.cmd, "dim:40", "passed down: {}", tree(&r));
    assert_eq!(pl.children.len(), 2, "{}", tree(&r));
    for leaf in ["porch", "plug"] {
        let x = child(pl, leaf);
        assert!(x.ok, "{}", tree(&r));
        assert_eq!(x.cmd, "dim:40", "passed down two levels: {}", tree(&r));
    }
    let reqs = lamp.wait_requests(1).await;
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(light(&reqs[0].request)["on_off"], 1, "{reqs:?}");
    assert_eq!(light(&reqs[0].request)["brightness"], 30, "{reqs:?}");
    assert_eq!(
        lamp.state(),
        DeviceState {
            on: true,
            brightness: 30
        }
    );
    let reqs = plug.wait_requests(1).await;
    assert_eq!(relay(&reqs[0].request), 1, "a plug is on at 40 %: {reqs:?}");
    assert_eq!(web.paths(), ["/porch/dim:40"]);

    // No body: the command is `on`.
    let r = run_rest(&c, "porch-lights", None).await;
    assert!(r.ok, "{}", tree(&r));
    assert_eq!(r.cmd, "on", "{}", tree(&r));
    assert_eq!(web.wait_hits(2).await[1].path, "/porch/on");

    // `off` passes down, but `lamp:dim:30` keeps its own command.
    let r = run_rest(&c, "evening", Some(&json!({"cmd": "off"}))).await;
    assert!(r.ok, "{}", tree(&r));
    assert_eq!(child(&r, "lamp").cmd, "dim:30", "{}", tree(&r));
    assert_eq!(child(child(&r, "porch-lights"), "plug").cmd, "off");
    assert!(!plug.state().on);
    assert!(lamp.state().on, "the lamp's item says dim:30");
    assert_eq!(web.wait_hits(3).await[2].path, "/porch/off");

    // Commands by target and result, leaf latencies.
    let m = ccm_metrics(&app).await;
    assert!(
        sample_sum(&m, "iotctl_home_commands_total", &["target=\"evening\""]) >= 2.0,
        "{m}"
    );
    assert!(
        sample_sum(
            &m,
            "iotctl_home_commands_total",
            &["target=\"porch-lights\""]
        ) >= 1.0,
        "{m}"
    );
    assert!(m.contains("result=\""), "{m}");
    // Eight devices reached so far (3 + 2 + 3).
    assert!(
        sample_sum(&m, "iotctl_home_leaf_seconds_count", &[]) >= 8.0,
        "{m}"
    );
    assert!(m.contains("iotctl_home_leaf_seconds_bucket{"), "{m}");
}

/// `evening:off` is run for `off`; other commands run the plain `evening`.
#[tokio::test]
async fn command_variants_are_tried_before_the_plain_scene() {
    let app = start("").await;
    let c = CcmClient::of(&app);
    let lamp = TplinkSim::bulb().await;
    let web = HttpTarget::start().await;
    put_catalog(
        &c,
        &json!({
            "devices": {"lamp": lamp.catalog_entry(), "porch": web.catalog_entry("/porch/{cmd}")},
            "scenes": {"evening": ["lamp:dim:30", "porch"], "evening:off": ["lamp", "porch"]},
        }),
    )
    .await;
    let mut a = Asker::new(&app).await;

    let r = a.ok("evening", "on").await;
    assert_eq!(child(&r, "lamp").cmd, "dim:30", "{}", tree(&r));
    assert_eq!(
        lamp.state(),
        DeviceState {
            on: true,
            brightness: 30
        }
    );
    assert_eq!(web.wait_hits(1).await[0].path, "/porch/on");

    let r = a.ok("evening", "off").await;
    assert_eq!(r.cmd, "off", "{}", tree(&r));
    assert_eq!(r.children.len(), 2, "{}", tree(&r));
    assert_eq!(
        child(&r, "lamp").cmd,
        "off",
        "the variant's `lamp`: {}",
        tree(&r)
    );
    let reqs = lamp.wait_requests(2).await;
    assert_eq!(light(&reqs[1].request)["on_off"], 0, "{reqs:?}");
    assert!(!lamp.state().on);
    assert_eq!(web.wait_hits(2).await[1].path, "/porch/off");

    // No variant for dim:50: the plain scene, the lamp at its own 30 %.
    let r = a.ok("evening", "dim:50").await;
    assert_eq!(child(&r, "lamp").cmd, "dim:30", "{}", tree(&r));
    assert_eq!(
        lamp.state(),
        DeviceState {
            on: true,
            brightness: 30
        }
    );
    assert_eq!(web.wait_hits(3).await[2].path, "/porch/dim:50");
}

/// A name not found exactly is looked up as a unique substring; none or several refuse
/// with the candidates; an exact name wins over being a substring of others.
#[tokio::test]
async fn targets_are_found_by_a_unique_substring() {
    let app = start("").await;
    let c = CcmClient::of(&app);
    let kitchen_lamp = TplinkSim::bulb().await;
    let kitchen_plug = TplinkSim::plug().await;
    let hall_light = TplinkSim::plug().await;
    let light = TplinkSim::plug().await;
    put_catalog(
        &c,
        &json!({"devices": {
            "kitchen-lamp": kitchen_lamp.catalog_entry(),
            "kitchen-plug": kitchen_plug.catalog_entry(),
            "hall-light": hall_light.catalog_entry(),
            "light": light.catalog_entry(),
        }}),
    )
    .await;
    let mut a = Asker::new(&app).await;

    let r = a.ok("hall", "on").await;
    assert!(
        serde_json::to_string(&r).unwrap().contains("hall-light"),
        "the device run is named: {}",
        tree(&r)
    );
    assert_eq!(hall_light.wait_requests(1).await.len(), 1);
    assert!(hall_light.state().on);

    // `light` is a device and a substring of `hall-light`: the exact name wins.
    a.ok("light", "on").await;
    assert_eq!(light.wait_requests(1).await.len(), 1);
    assert_eq!(hall_light.requests().len(), 1, "hall-light not run again");

    let (r, _) = a.run("kitchen", "on", None).await;
    assert!(!r.ok, "{}", tree(&r));
    let detail = r.detail.clone().unwrap_or_default();
    assert!(
        detail.contains("kitchen-lamp") && detail.contains("kitchen-plug"),
        "both candidates listed: {}",
        tree(&r)
    );

    let (r, _) = a.run("garage", "on", None).await;
    assert!(!r.ok, "{}", tree(&r));
    assert!(
        r.detail.as_deref().is_some_and(|d| !d.is_empty()),
        "{}",
        tree(&r)
    );

    for sim in [&kitchen_lamp, &kitchen_plug] {
        assert!(sim.requests().is_empty(), "an ambiguous name runs nothing");
    }
    assert_eq!(light.requests().len() + hall_light.requests().len(), 2);
}

/// One failing leaf does not stop the others: `ok: false` at the top, each failing leaf
/// named with why, the rest run.
#[tokio::test]
async fn a_partial_failure_names_each_failing_leaf() {
    let app = start("").await;
    let c = CcmClient::of(&app);
    let good = TplinkSim::plug().await;
    let erring = TplinkSim::plug().await;
    erring.set(Behaviour::ErrCode(1));
    let web = HttpTarget::start().await;
    web.set("/bad", 500, Duration::ZERO);
    let refused = stopped_addr();
    put_catalog(
        &c,
        &json!({
            "devices": {
                "good": good.catalog_entry(),
                "refused": {"driver": "tplink", "host": "127.0.0.1", "port": refused.port(), "kind": "plug"},
                "erring": erring.catalog_entry(),
                "web500": web.catalog_entry("/bad/{cmd}"),
                "web200": web.catalog_entry("/fine/{cmd}"),
            },
            "scenes": {"all": ["good", "refused", "erring", "web500"], "outer": ["all", "web200"]},
        }),
    )
    .await;
    let mut a = Asker::new(&app).await;
    let (r, _) = a.run("outer", "on", None).await;
    assert!(!r.ok, "{}", tree(&r));
    assert!(child(&r, "web200").ok, "{}", tree(&r));
    let all = child(&r, "all");
    assert!(!all.ok, "{}", tree(&r));
    assert!(child(all, "good").ok, "{}", tree(&r));
    for (leaf, why) in [
        ("refused", "connection refused"),
        ("erring", "err_code 1"),
        ("web500", "HTTP 500"),
    ] {
        let x = child(all, leaf);
        assert!(!x.ok, "{}", tree(&r));
        assert!(
            x.detail.as_deref().is_some_and(|d| d.contains(why)),
            "`{leaf}` should say `{why}`: {}",
            tree(&r)
        );
    }
    assert_eq!(r.failures().len(), 3, "{:?}", r.failures());
    assert!(good.state().on);
    assert!(!erring.state().on);
    assert!(web.paths().contains(&"/fine/on".to_owned()));
    assert!(web.paths().contains(&"/bad/on".to_owned()));
}

/// One deadline for the whole tree: ten 1-second devices in one parallel scene take about one
/// second, not ten; a device that never answers is cut at the deadline (`deadline`), the
/// reply arriving then; `home.deadline_ms` is the default.
#[tokio::test]
async fn one_deadline_for_the_whole_tree() {
    let app = start("deadline_ms = 2000").await;
    let c = CcmClient::of(&app);
    let mut slow = Vec::new();
    for _ in 0..10 {
        let s = TplinkSim::plug().await;
        s.set(Behaviour::Delay(Duration::from_secs(1)));
        slow.push(s);
    }
    let quiet = TplinkSim::plug().await;
    quiet.set(Behaviour::Silent);
    let good = TplinkSim::plug().await;
    let mut devices = serde_json::Map::new();
    let mut items = Vec::new();
    for (i, s) in slow.iter().enumerate() {
        devices.insert(format!("slow{i}"), s.catalog_entry());
        items.push(format!("slow{i}"));
    }
    devices.insert("quiet".into(), quiet.catalog_entry());
    devices.insert("good".into(), good.catalog_entry());
    put_catalog(
        &c,
        &json!({"devices": devices, "scenes": {"slow": items, "hush": ["quiet", "good"]}}),
    )
    .await;
    let mut a = Asker::new(&app).await;

    let (r, took) = a.run("slow", "on", Some(5000)).await;
    assert!(r.ok, "{}", tree(&r));
    assert_eq!(r.children.len(), 10, "{}", tree(&r));
    assert!(
        took < Duration::from_secs(5),
        "ten 1 s devices in parallel took {took:?}"
    );
    for s in &slow {
        assert_eq!(s.requests().len(), 1);
        assert!(s.state().on);
    }

    // The request's deadline.
    let (r, took) = a.run("hush", "on", Some(1500)).await;
    assert!(!r.ok, "{}", tree(&r));
    let q = child(&r, "quiet");
    assert!(!q.ok, "{}", tree(&r));
    assert_eq!(q.detail.as_deref(), Some("deadline"), "{}", tree(&r));
    assert!(child(&r, "good").ok, "{}", tree(&r));
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(4500),
        "cut at the 1500 ms deadline, the reply came after {took:?}"
    );
    assert!((1400..4500).contains(&r.ms), "the run's ms: {}", tree(&r));
    assert!(!quiet.wait_requests(1).await.is_empty());

    // No deadline in the request: `home.deadline_ms` (2000).
    let (r, took) = a.run("quiet", "on", None).await;
    assert!(!r.ok, "{}", tree(&r));
    assert_eq!(r.detail.as_deref(), Some("deadline"), "{}", tree(&r));
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(5000),
        "cut at the configured 2000 ms, the reply came after {took:?}"
    );
}

/// Retries stop on the first success: a device that drops the first connection gets exactly
/// two; a healthy one exactly one; one that never recovers exactly `1 + retries`.
#[tokio::test]
async fn retries_stop_on_the_first_success() {
    let app = start("retries = 3").await;
    let c = CcmClient::of(&app);
    let flaky = TplinkSim::plug().await;
    flaky.set(Behaviour::CloseFirst(1));
    let steady = TplinkSim::plug().await;
    let broken = TplinkSim::plug().await;
    broken.set(Behaviour::CloseFirst(100));
    put_catalog(
        &c,
        &json!({"devices": {
            "flaky": flaky.catalog_entry(),
            "steady": steady.catalog_entry(),
            "broken": broken.catalog_entry(),
        }}),
    )
    .await;
    let mut a = Asker::new(&app).await;

    let r = a.ok("flaky", "on").await;
    assert!(flaky.state().on, "{}", tree(&r));
    assert_eq!(flaky.connections(), 2, "one refused, one answered, no more");
    assert_eq!(flaky.requests().len(), 1);

    a.ok("steady", "on").await;
    assert_eq!(steady.connections(), 1, "a success is not retried");

    let (r, _) = a.run("broken", "on", Some(20_000)).await;
    assert!(!r.ok, "{}", tree(&r));
    assert_eq!(
        broken.connections(),
        4,
        "the first attempt and 3 retries: {}",
        tree(&r)
    );
}

/// Saving refuses a cycle (named) and an item naming nothing, and keeps what was stored;
/// `PUT` merges, `?replace=true` replaces.
#[tokio::test]
async fn cycles_and_unknown_items_are_refused_over_rest() {
    let app = start("").await;
    let c = CcmClient::of(&app);
    let lamp = TplinkSim::bulb().await;
    let plug = TplinkSim::plug().await;
    put_catalog(
        &c,
        &json!({
            "devices": {"lamp": lamp.catalog_entry()},
            "scenes": {"evening": ["lamp", "porch-lights"], "porch-lights": ["lamp"]},
        }),
    )
    .await;
    let (_, before) = c.get("/api/home").await;

    let (s, v) = c
        .put(
            "/api/home",
            &json!({"scenes": {"porch-lights": ["evening"]}}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"], "invalid", "{v}");
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("scenes contain each other")
            && (reason.contains("evening -> porch-lights -> evening")
                || reason.contains("porch-lights -> evening -> porch-lights")),
        "the cycle is named: {v}"
    );

    let (s, v) = c
        .put("/api/home", &json!({"scenes": {"loop": ["lamp", "loop"]}}))
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("loop -> loop"),
        "{v}"
    );

    let (s, v) = c
        .put(
            "/api/home",
            &json!({"scenes": {"evening": ["lamp", "nosuch"]}}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"], "invalid", "{v}");
    assert!(
        v["reason"].as_str().unwrap_or_default().contains("nosuch"),
        "the unknown item is named: {v}"
    );

    let (_, after) = c.get("/api/home").await;
    assert_eq!(after, before, "refusals change nothing");

    // Merge: a new device joins the old ones.
    put_catalog(&c, &json!({"devices": {"plug": plug.catalog_entry()}})).await;
    let (_, merged) = c.get("/api/home").await;
    assert!(merged["devices"].get("lamp").is_some(), "{merged}");
    assert!(merged["devices"].get("plug").is_some(), "{merged}");
    assert!(merged["scenes"].get("evening").is_some(), "{merged}");

    // Replace: only what is sent.
    let (s, v) = c
        .put(
            "/api/home?replace=true",
            &json!({"devices": {"plug": plug.catalog_entry()}, "scenes": {"only": ["plug"]}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, replaced) = c.get("/api/home").await;
    assert_eq!(
        replaced["devices"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["plug"],
        "{replaced}"
    );
    assert_eq!(replaced["scenes"], json!({"only": ["plug"]}), "{replaced}");
}

/// `rate_limit = "2/60s"` per client and target: the third request is refused with when to
/// try again and reaches no device; another target, or another client, is not limited.
#[tokio::test]
async fn the_rate_limit_is_per_client_and_target() {
    let app = start("rate_limit = \"2/60s\"").await;
    let c = CcmClient::of(&app);
    let plug = TplinkSim::plug().await;
    let lamp = TplinkSim::bulb().await;
    put_catalog(
        &c,
        &json!({"devices": {"plug": plug.catalog_entry(), "lamp": lamp.catalog_entry()}}),
    )
    .await;
    let mut a = Asker::new(&app).await;
    a.ok("plug", "on").await;
    a.ok("plug", "off").await;
    let (r, _) = a.run("plug", "on", None).await;
    assert!(!r.ok, "{}", tree(&r));
    assert_eq!(r.detail.as_deref(), Some("rate limited"), "{}", tree(&r));
    assert!(
        r.retry_after_ms.is_some_and(|ms| ms > 0 && ms <= 60_000),
        "{}",
        tree(&r)
    );
    assert_eq!(
        plug.requests().len(),
        2,
        "a refused request reaches no device"
    );
    assert!(!plug.state().on);

    a.ok("lamp", "on").await;
    let mut b = Asker::new(&app).await;
    b.ok("plug", "on").await;
    assert!(plug.state().on);
}

/// The catalog is in the database: a restarted controller has the same devices and scenes
/// and runs them.
#[tokio::test]
async fn a_restart_keeps_devices_and_scenes() {
    let app = start("").await;
    let c = CcmClient::of(&app);
    let lamp = TplinkSim::bulb().await;
    let web = HttpTarget::start().await;
    put_catalog(
        &c,
        &json!({
            "devices": {
                "lamp": lamp.catalog_entry(),
                "porch": web.catalog_entry("/porch/{cmd}"),
                "pause": {"driver": "delay", "ms": 100},
            },
            "scenes": {
                "evening": ["lamp:dim:30", "porch"],
                "evening:off": ["lamp", "porch"],
                "wakeup": {"mode": "sequence", "items": ["lamp:dim:10", "pause", "lamp:full"]},
            },
        }),
    )
    .await;
    let (_, before) = c.get("/api/home").await;
    assert_eq!(before["scenes"]["wakeup"]["mode"], "sequence", "{before}");

    let app = app.restart().await;
    let c = CcmClient::of(&app);
    let (s, after) = c.get("/api/home").await;
    assert_eq!(s, 200, "{after}");
    assert_eq!(after, before);
    let r = run_rest(&c, "evening", Some(&json!({"cmd": "off"}))).await;
    assert!(r.ok, "{}", tree(&r));
    assert_eq!(web.wait_hits(1).await[0].path, "/porch/off");
    let r = run_rest(&c, "wakeup", None).await;
    assert!(r.ok, "{}", tree(&r));
    assert_eq!(
        lamp.state(),
        DeviceState {
            on: true,
            brightness: 100
        }
    );
}

/// A leaf that succeeded leaves its state retained on `iottalk/home/state/<device>`; one that
/// failed leaves nothing; the retained `iottalk/home/catalog` follows every change.
#[tokio::test]
async fn device_states_and_the_catalog_are_retained() {
    let app = start("").await;
    let c = CcmClient::of(&app);
    let plug = TplinkSim::plug().await;
    let dead = stopped_addr();
    put_catalog(
        &c,
        &json!({
            "devices": {
                "plug": plug.catalog_entry(),
                "dead": {"driver": "tplink", "host": "127.0.0.1", "port": dead.port(), "kind": "plug"},
            },
            "scenes": {"both": ["plug", "dead"]},
        }),
    )
    .await;
    let mut m = app.mqtt(None).await;
    m.retained_until("iottalk/home/catalog", "the catalog", |got| {
        got.len() == 1 && {
            let text = String::from_utf8_lossy(&got[0].payload);
            text.contains("plug") && text.contains("dead") && text.contains("both")
        }
    })
    .await;

    put_catalog(
        &c,
        &json!({"devices": {"extra": {"driver": "delay", "ms": 1}}}),
    )
    .await;
    m.retained_until("iottalk/home/catalog", "the catalog with `extra`", |got| {
        got.len() == 1 && String::from_utf8_lossy(&got[0].payload).contains("extra")
    })
    .await;

    let mut a = Asker::new(&app).await;
    let (r, _) = a.run("both", "dim:40", None).await;
    assert!(!r.ok, "{}", tree(&r));
    let got = m
        .retained_until("iottalk/home/state/plug", "the plug's state", |got| {
            got.len() == 1 && got[0].json()["cmd"] == "dim:40"
        })
        .await;
    let state = got[0].json();
    assert!(state.get("ts").is_some_and(|t| !t.is_null()), "{state}");
    assert!(
        m.retained("iottalk/home/state/dead").await.is_empty(),
        "a failed leaf leaves no state"
    );

    a.ok("plug", "off").await;
    m.retained_until("iottalk/home/state/plug", "the plug's new state", |got| {
        got.len() == 1 && got[0].json()["cmd"] == "off"
    })
    .await;
}

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
