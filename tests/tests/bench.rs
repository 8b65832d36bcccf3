#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `iotctl bench` end to end against the real controller: each command runs briefly at a low
//! rate and must report what happened (every message routed, nothing lost, a latency, the
//! controller's memory) and leave nothing behind. These tests check behaviour, not speed.

use std::process::Output;
use std::time::Duration;

use iot_tests::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

/// Runs `iotctl ARGS` and returns its output.
async fn iotctl(args: &[&str]) -> Output {
    tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(iotctl_bin())
            .args(args)
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("iotctl bench finishes within 120 s")
    .expect("run iotctl")
}

/// Runs a bench with `--json` against `app`'s configuration; returns its one JSON object.
async fn bench_json(app: &App, args: &[&str]) -> Value {
    let config = app.config.to_str().unwrap();
    let mut all = vec!["-c", config, "bench"];
    all.extend_from_slice(args);
    if matches!(args.first(), Some(&"route" | &"broker")) {
        // On a loaded machine a message can take seconds: only a silence this long ends the
        // drain, so what is slow is not mistaken for loss.
        all.extend_from_slice(&["--drain-idle", "20"]);
    }
    all.push("--json");
    let o = iotctl(&all).await;
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "iotctl {all:?} failed\nstdout: {stdout}\nstderr: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        app.log_text()
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one JSON line on stdout: {stdout}");
    serde_json::from_str(lines[0]).expect("stdout is JSON")
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("`{k}` missing in {v}"))
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("`{k}` missing in {v}"))
}

/// Every message sent in the window arrived at every receiver, once, and the report has its
/// figures. Rates and latencies are reported, not checked: they depend on the machine's load.
fn assert_all_delivered(r: &Value, fanout: u64) {
    let sent = u(r, "sent");
    assert!(sent > 0, "nothing sent: {r}");
    assert_eq!(u(r, "expected"), sent * fanout, "{r}");
    assert_eq!(u(r, "received"), sent * fanout, "{r}");
    assert_eq!(u(r, "lost"), 0, "{r}");
    assert_eq!(u(r, "duplicates") + u(r, "malformed"), 0, "{r}");
    // A latency was measured for the messages (quantiles are ordered).
    assert!(
        f(r, "p50_ms") > 0.0 && f(r, "p99_ms") >= f(r, "p50_ms"),
        "{r}"
    );
    for k in ["in_msgs_per_s", "out_msgs_per_s"] {
        assert!(f(r, k) > 0.0, "`{k}`: {r}");
    }
}

/// A controller for a bench whose test asserts that nothing is lost: the embedded broker
/// drops what is queued for a subscriber beyond `broker.max_mqueue_len` (1,000 by default), and
/// a bench subscriber stalled for a second or two on a loaded machine falls that far behind
/// while the publishers keep their rate.
async fn bench_app() -> App {
    App::start(AppOptions {
        extra_toml: "[broker]\nmax_mqueue_len = 1000000\n".into(),
        ..Default::default()
    })
    .await
}

/// The controller is back to where it was: no DA, no graph.
async fn assert_clean(app: &App) {
    let s = app
        .wait_status("bench DAs deleted", |s| {
            s["registered"] == 0 && s["graphs"] == json!({})
        })
        .await;
    assert_eq!(s["online"], 0, "{s}");
}

#[tokio::test]
async fn route_with_a_rhai_join_delivers_everything_and_cleans_up() {
    let app = bench_app().await;
    let r = bench_json(
        &app,
        &[
            "route",
            "--join",
            "rhai",
            "--duration",
            "2",
            "--rate",
            "500",
        ],
    )
    .await;
    assert_eq!(r["bench"], "route");
    assert_eq!(r["join"], "rhai");
    assert_all_delivered(&r, 1);
    assert_eq!(
        (u(&r, "rate"), u(&r, "idfs"), u(&r, "odfs")),
        (500, 1, 1),
        "{r}"
    );
    // The controller is local (its state file has the pid): CPU and memory are measured.
    assert!(u(&r, "controller_pid") > 0, "{r}");
    assert!(f(&r, "controller_rss_mb") > 1.0, "{r}");
    assert!(f(&r, "controller_cpu_percent") >= 0.0, "{r}");
    assert_clean(&app).await;
}

#[tokio::test]
async fn route_fans_out_to_every_odf_with_python_and_without_a_join() {
    let app = bench_app().await;
    for join in ["python", "none"] {
        let r = bench_json(
            &app,
            &[
                "route",
                "--join",
                join,
                "--idfs",
                "2",
                "--odfs",
                "3",
                "--duration",
                "1",
                "--warmup",
                "0.5",
                "--rate",
                "300",
                "--payload-bytes",
                "200",
                "--batch",
                "1",
            ],
        )
        .await;
        assert_eq!(r["join"], join);
        assert!(
            r.get("runaway").is_none() && r.get("runaway_graph").is_none(),
            "{r}"
        );
        assert_eq!((u(&r, "idfs"), u(&r, "odfs")), (2, 3));
        assert_all_delivered(&r, 3);
        assert_clean(&app).await;
    }
}

/// `--runaway`: beside the measured graph, another graph whose Python join loops forever is
/// fed for the whole run. The measured Python graph still gets every one of its 1,000
/// messages (100 msgs/s for 10 s), the runaway graph's failure is reported from `/status`,
/// and both graphs and all four DAs are gone afterwards.
#[tokio::test]
async fn route_with_a_runaway_graph_delivers_everything_and_reports_its_failures() {
    let app = App::start(AppOptions {
        // A runaway call is cut after 3 s, so it fails within the run.
        extra_toml: "[broker]\nmax_mqueue_len = 1000000\n[functions]\npython_timeout_ms = 3000\n"
            .into(),
        ..Default::default()
    })
    .await;
    let r = bench_json(
        &app,
        &[
            "route",
            "--join",
            "python",
            "--runaway",
            "--rate",
            "100",
            "--duration",
            "10",
        ],
    )
    .await;
    assert_eq!(r["join"], "python");
    assert_eq!(r["runaway"], true, "{r}");
    // About 1,000 in the window (those sent inside it are counted, on a loaded machine a few
    // more or fewer): every one of them arrived, once.
    assert_all_delivered(&r, 1);
    let gid = r["runaway_graph"].as_str().expect("runaway_graph");
    assert!(
        gid.starts_with("bench-") && gid.ends_with("-runaway"),
        "{r}"
    );
    assert!(u(&r, "runaway_sent") >= 1, "{r}");
    assert!(u(&r, "runaway_failures") >= 1, "{r}");
    u(&r, "runaway_suspended_calls");
    u(&r, "python_restarts");
    assert_clean(&app).await;
}

#[tokio::test]
async fn connect_registers_and_brings_online_then_deletes() {
    let app = App::spawn().await;
    let r = bench_json(&app, &["connect", "-n", "50", "--concurrency", "8"]).await;
    assert_eq!(r["bench"], "connect");
    assert_eq!(u(&r, "das"), 50);
    assert!(f(&r, "registrations_per_s") > 0.0, "{r}");
    assert!(f(&r, "online_s") > 0.0, "{r}");
    assert!(f(&r, "controller_rss_online_mb") > 1.0, "{r}");
    assert!(r["controller_rss_per_da_kb"].is_number(), "{r}");
    assert_clean(&app).await;
    let s = app.status().await;
    assert!(u(&s["counters"], "registrations") >= 50, "{s}");
    assert!(u(&s["counters"], "deregistrations") >= 50, "{s}");
}

#[tokio::test]
async fn broker_bench_against_the_embedded_broker() {
    let app = bench_app().await;
    let url = format!("mqtt://{}", app.mqtt);
    // Fixed rate, QoS 1 (rumqttc publishers): everything arrives, at each of two subscribers.
    let r = bench_json(
        &app,
        &[
            "broker",
            "--url",
            &url,
            "--duration",
            "1",
            "--warmup",
            "0.5",
            "--rate",
            "1000",
            "--subscribers",
            "2",
            "--qos",
            "1",
        ],
    )
    .await;
    assert_eq!(r["bench"], "broker");
    assert_eq!(r["qos"], 1);
    assert_all_delivered(&r, 2);
    assert!(r["controller_cpu_percent"].is_null(), "no --pid: n/a: {r}");
    // Full rate, QoS 0 (batched raw publishers): messages go through, the figures are there.
    let r = bench_json(&app, &["broker", "--url", &url, "--duration", "1"]).await;
    assert!(u(&r, "sent") > 0 && u(&r, "received") > 0, "{r}");
    assert!(f(&r, "p99_ms") > 0.0, "{r}");
    for k in [
        "in_msgs_per_s",
        "out_msgs_per_s",
        "lost",
        "p50_ms",
        "p99_ms",
    ] {
        assert!(r[k].is_number(), "`{k}` missing: {r}");
    }
}

#[tokio::test]
async fn broker_bench_through_a_forwarding_peer() {
    let app = bench_app().await;
    // A peer that forwards bench/in to bench/out, as the Node-RED flow of
    // scripts/bench-compare.sh does.
    let (host, port) = app.mqtt.rsplit_once(':').unwrap();
    let mut opts = MqttOptions::new(format!("fwd-{}", new_id()), host, port.parse().unwrap());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut ev) = AsyncClient::new(opts, 1000);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_connection_timeout(WAIT.as_secs());
    ev.set_network_options(net);
    client.subscribe("bench/in", QoS::AtMostOnce).await.unwrap();
    // The event loop only hands messages over; another task republishes them, waiting when
    // the request queue is full (a publish that waits must not block the event loop).
    let (to_forward, mut forward) = tokio::sync::mpsc::unbounded_channel();
    let (subscribed, suback) = tokio::sync::oneshot::channel();
    let mut subscribed = Some(subscribed);
    let events = tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = to_forward.send(p.payload);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("forwarding peer: connection lost ({e})"),
            }
        }
    });
    let fwd = tokio::spawn(async move {
        while let Some(payload) = forward.recv().await {
            client
                .publish("bench/out", QoS::AtMostOnce, false, payload)
                .await
                .unwrap();
        }
    });
    tokio::time::timeout(WAIT, suback)
        .await
        .expect("the forwarding peer's SUBACK in time")
        .unwrap();
    let url = format!("mqtt://{}", app.mqtt);
    let r = bench_json(
        &app,
        &[
            "broker",
            "--url",
            &url,
            "--pub-topic",
            "bench/in",
            "--sub-topic",
            "bench/out",
            "--duration",
            "1",
            "--warmup",
            "0.5",
            "--rate",
            "500",
        ],
    )
    .await;
    events.abort();
    fwd.abort();
    assert_eq!(r["sub_topic"], "bench/out");
    assert_all_delivered(&r, 1);
}

#[tokio::test]
async fn a_controller_that_is_not_running_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let free = free_addr();
    std::fs::write(
        &config,
        format!(
            "[paths]\ndata_dir = \"{}\"\n[csm]\nlisten = \"{free}\"\n[broker]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let o = iotctl(&["-c", c, "bench", "route", "--duration", "1"]).await;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("port 0"), "{err}");
    let o = iotctl(&[
        "-c",
        c,
        "bench",
        "connect",
        "-n",
        "1",
        "--mqtt",
        "127.0.0.1:1",
    ])
    .await;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("controller not reachable at http://{free}")),
        "{err}"
    );
    assert!(o.stdout.is_empty(), "nothing on stdout on error");
}
