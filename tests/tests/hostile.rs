//! The black-box hostile suite (issue "Security", "Bad input, fuzzed"): against the running
//! controller, with authentication on and off, malformed and oversized input on every
//! surface (HTTP registration, uplinks, graph and device APIs, MQTT sizes and topic depth),
//! a slowloris HTTP client, clients that send half a CONNECT, and (auth on) 1,000 clients
//! subscribing to `#`. Meanwhile a DA keeps routing numbered values through a graph to
//! another DA; the suite checks it kept flowing after every step and lost nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iot_tests::*;
use rumqttc::QoS;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Small limits, so that payloads at and over them are cheap.
const MAX_BODY: usize = 64 * 1024;
const MAX_PAYLOAD: usize = 64 * 1024;

fn options(auth: bool) -> AppOptions {
    AppOptions {
        auth,
        extra_toml: format!(
            "[csm]\nmax_body_bytes = {MAX_BODY}\nheader_timeout_ms = 1000\n[broker]\nmax_payload_bytes = {MAX_PAYLOAD}\nhandshake_timeout_ms = 1000\n"
        ),
        ..AppOptions::default()
    }
}

/// Hostile bodies for every JSON parser: not JSON, wrong shapes and types, invalid UTF-8,
/// 1,000 levels of nesting.
fn garbage() -> Vec<Vec<u8>> {
    let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(1000), "}".repeat(1000));
    vec![
        b"{".to_vec(),
        b"".to_vec(),
        b"null".to_vec(),
        b"[1,2,3]".to_vec(),
        b"\"text\"".to_vec(),
        b"{\"op\": 5}".to_vec(),
        b"{\"op\": \"no_such_op\"}".to_vec(),
        b"{\"op\": \"add_link\", \"da_id\": [], \"idf\": {}}".to_vec(),
        b"{\"idf_list\": 5, \"profile\": \"x\"}".to_vec(),
        b"\xff\xfe{\"op\": \"attach\"}".to_vec(),
        b"{\"op\": \"\xc3\x28\"}".to_vec(),
        deep.into_bytes(),
        deep_obj.into_bytes(),
    ]
}

/// IDF DA `a` publishes 1, 2, 3, ... (QoS 1) every 10 ms through a graph to ODF DA `b`, which
/// records what it receives.
struct Canary {
    sent: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<u64>>>,
    stop: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The ODF DA's credentials (the 1,000 `#` subscribers use them).
    b_id: String,
    b_password: String,
    /// a's own uplink, for garbage from a legitimate DA.
    a: Mqtt,
    a_id: String,
}

impl Canary {
    async fn start(app: &App) -> Canary {
        let LinkedPair {
            a,
            mut b,
            ta,
            tb,
            graph,
        } = LinkedPair::start(app, "canary").await;
        drop(graph);
        let (sent, seen) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(Mutex::new(Vec::new())),
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let publisher = {
            let (client, sent, stop) = (a.mqtt.client.clone(), sent.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let n = sent.load(Ordering::SeqCst) + 1;
                    client
                        .publish(&ta, QoS::AtLeastOnce, false, json!([n]).to_string())
                        .await
                        .unwrap();
                    sent.store(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        let (b_id, b_password) = (b.id.clone(), b.password.clone());
        let collector = {
            let seen = seen.clone();
            tokio::spawn(async move {
                loop {
                    let m = b.mqtt.recv_until("canary data", |r| r.topic == tb).await;
                    let n = m.json()[0].as_u64().unwrap();
                    seen.lock().unwrap().push(n);
                }
            })
        };
        let a_id = a.id.clone();
        Canary {
            sent,
            seen,
            stop,
            tasks: vec![publisher, collector],
            b_id,
            b_password,
            a: a.mqtt,
            a_id,
        }
    }

    /// Waits until the ODF DA received something it had not before `step` ran.
    async fn flowing(&self, step: &str) {
        let before = self.seen.lock().unwrap().last().copied().unwrap_or(0);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = self.seen.lock().unwrap().last().copied().unwrap_or(0);
            if now > before + 3 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "routing stalled after {step}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops publishing and checks every value arrived, once, in order.
    async fn finish(self) {
        self.stop.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent = self.sent.load(Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.seen.lock().unwrap().len() < sent as usize {
            assert!(tokio::time::Instant::now() < deadline, "values lost");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seen = self.seen.lock().unwrap().clone();
        let want: Vec<u64> = (1..=sent).collect();
        assert_eq!(
            seen, want,
            "the canary lost, duplicated or reordered values"
        );
        assert!(sent > 100, "the canary hardly ran ({sent})");
        for t in self.tasks {
            t.abort();
        }
    }
}

async fn hostile_http(app: &App) {
    let http = reqwest::Client::new();
    let mut bodies = garbage();
    // Valid, exactly at the limit (padding in the profile), and one byte over it.
    let mut at = register_body();
    at["profile"]["pad"] = json!("");
    let pad = MAX_BODY - at.to_string().len();
    at["profile"]["pad"] = json!("x".repeat(pad));
    let at = at.to_string().into_bytes();
    assert_eq!(at.len(), MAX_BODY);
    let mut over = at.clone();
    over.push(b' ');
    bodies.push(over);
    for body in bodies {
        let r = http
            .put(app.url(&new_id()))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        let reply: Value = r.json().await.unwrap_or(Value::Null);
        assert!(
            (400..500).contains(&code),
            "{code} for {:?}",
            String::from_utf8_lossy(&body[..body.len().min(40)])
        );
        assert!(
            reply["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{reply}"
        );
    }
    let r = http.put(app.url(&new_id())).body(at).send().await.unwrap();
    assert_eq!(r.status(), 200, "a body at the limit");
    for (method, path) in [
        ("GET", "/not-an-id"),
        ("DELETE", "/x/y/z"),
        ("POST", "/status"),
    ] {
        let m: reqwest::Method = method.parse().unwrap();
        let r = http
            .request(m, format!("{}{path}", app.csm))
            .body("{")
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_client_error(),
            "{method} {path}: {}",
            r.status()
        );
    }
}

async fn hostile_uplinks(app: &App, canary: &Canary) {
    let own = format!("{}/ctrl/i", canary.a_id);
    for body in garbage() {
        canary.a.publish(&own, body, QoS::AtLeastOnce, false).await;
    }
    canary
        .a
        .publish(&own, vec![b'{'; MAX_PAYLOAD - 64], QoS::AtLeastOnce, false)
        .await;
    let admin = app.mqtt(None).await;
    for topic in [format!("{}/ctrl/i", new_id()), "not-an-id/ctrl/i".into()] {
        admin
            .publish_json(&topic, &json!({"state": "online", "rev": "x"}), false)
            .await;
    }
    app.wait_status("garbage uplinks ignored", |s| {
        s["counters"]["uplink_garbage"].as_u64() >= Some(5)
    })
    .await;
    assert_eq!(app.status().await["online"], 2);
}

async fn hostile_apis(app: &App) {
    let mut m = app.mqtt(None).await;
    m.subscribe("iottalk/api/res/hostile/#", QoS::AtLeastOnce)
        .await;
    for (req, res) in [
        (
            "iottalk/api/req/hostile/graph/h1",
            "iottalk/api/res/hostile/graph/h1",
        ),
        (
            "iottalk/api/req/hostile/device",
            "iottalk/api/res/hostile/device",
        ),
    ] {
        for body in garbage() {
            m.publish(req, body.clone(), QoS::AtLeastOnce, false).await;
            let reply = m
                .recv_until(&format!("a reply on {res}"), |r| r.topic == res)
                .await
                .json();
            assert_eq!(
                reply["state"],
                "error",
                "{reply} for {:?}",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
            assert!(
                reply["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{reply}"
            );
        }
    }
}

async fn hostile_mqtt_sizes_and_depth(app: &App) {
    let mut m = app.mqtt(None).await;
    let big_topic = format!("iottalk/rpc/{}/req", new_id());
    m.subscribe(&big_topic, QoS::AtLeastOnce).await;
    m.publish(&big_topic, vec![b'x'; MAX_PAYLOAD], QoS::AtLeastOnce, false)
        .await;
    let got = m
        .recv_until("the payload at the limit", |r| r.topic == big_topic)
        .await;
    assert_eq!(got.payload.len(), MAX_PAYLOAD);
    // One byte over: dropped, the connection stays (what follows arrives, the big one not).
    m.publish(
        &big_topic,
        vec![b'x'; MAX_PAYLOAD + 1],
        QoS::AtLeastOnce,
        false,
    )
    .await;
    m.publish(&big_topic, "next", QoS::AtLeastOnce, false).await;
    let got = m
        .recv_until("the message after the oversized one", |r| {
            r.topic == big_topic
        })
        .await;
    assert_eq!(
        got.payload.as_ref(),
        b"next",
        "an oversized payload was delivered"
    );
    // Over the packet limit (the payload limit plus 64 KiB for headers): that client is
    // disconnected; others carry on.
    let (host, port) = app.mqtt.rsplit_once(':').unwrap();
    let mut opts =
        rumqttc::MqttOptions::new(format!("over-{}", new_id()), host, port.parse().unwrap());
    opts.set_max_packet_size(1 << 20, 1 << 20);
    if let Some((u, p)) = app.admin() {
        opts.set_credentials(u, p);
    }
    let (client, mut ev) = rumqttc::AsyncClient::new(opts, 10);
    client
        .publish(
            &big_topic,
            QoS::AtLeastOnce,
            false,
            vec![b'x'; MAX_PAYLOAD + 65 * 1024],
        )
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if ev.poll().await.is_err() {
                return;
            }
        }
    })
    .await
    .expect("the oversized publisher is disconnected");
    // 10,000 topic levels: refused filter (others of the SUBSCRIBE granted), dropped publish.
    let deep = vec!["a"; 10_000].join("/");
    assert_eq!(
        m.subscribe_many(&[&deep, &big_topic], QoS::AtLeastOnce)
            .await,
        [false, true]
    );
    m.publish(&deep, "x", QoS::AtLeastOnce, true).await;
    m.publish(&big_topic, "after", QoS::AtLeastOnce, false)
        .await;
    let got = m
        .recv_until("a small message after the deep one", |r| {
            r.payload.as_ref() == b"after"
        })
        .await;
    assert_eq!(got.topic, big_topic);
}

/// A slowloris client holds HTTP connections open by sending headers a byte at a time:
/// registrations from others go through meanwhile, and each slow connection is dropped once
/// `csm.header_timeout_ms` has passed.
async fn slowloris(app: &App) {
    let addr = app
        .csm
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut socks = Vec::new();
    for _ in 0..50 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"PUT /x HTTP/1.1\r\nHost: a\r\nX-Slow: ")
            .await
            .unwrap();
        socks.push(s);
    }
    for round in 0..5 {
        for s in &mut socks {
            let _ = s.write_all(b"a").await;
        }
        let (code, body) = app.put(&new_id(), &register_body()).await;
        assert_eq!(code, 200, "round {round}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for mut s in socks {
        let mut buf = [0u8; 256];
        tokio::time::timeout(WAIT, async {
            while let Ok(1..) = s.read(&mut buf).await {}
        })
        .await
        .expect("a slowloris connection is dropped in time");
    }
}

/// Clients that send part of a CONNECT and wait: closed after `broker.handshake_timeout_ms`
/// once the protocol version is in; the broker keeps serving everyone else.
async fn half_connects(app: &App) {
    // MQTT 3.1.1 CONNECT up to and including the protocol level, then nothing.
    let partial: &[u8] = &[
        0x10, 0x20, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00,
    ];
    let mut socks = Vec::new();
    for _ in 0..50 {
        let mut s = tokio::net::TcpStream::connect(&app.mqtt).await.unwrap();
        s.write_all(partial).await.unwrap();
        socks.push(s);
    }
    let fresh = app.mqtt(None).await;
    fresh
        .publish_json("iottalk/rpc/x/req", &json!({}), false)
        .await;
    // Each is answered (at most a refusing CONNACK) and closed.
    for mut s in socks {
        let mut buf = [0u8; 16];
        let mut answered = 0;
        tokio::time::timeout(WAIT, async {
            while let Ok(n @ 1..) = s.read(&mut buf).await {
                answered += n;
            }
        })
        .await
        .expect("a half CONNECT is closed in time");
        assert!(answered <= 4, "{answered} bytes for half a CONNECT");
    }
}

/// 1,000 clients connect with a DA's credentials and subscribe to `#`: every filter refused.
async fn thousand_hash_subscribers(app: &App, canary: &Canary) {
    let mut done = 0;
    for _batch in 0..10 {
        let mut joins = Vec::new();
        for _ in 0..100 {
            let (addr, id, pw) = (
                app.mqtt.clone(),
                canary.b_id.clone(),
                canary.b_password.clone(),
            );
            joins.push(tokio::spawn(async move {
                let mut m = Mqtt::connect_as(&addr, None, Some((&id, &pw))).await;
                let granted = m.subscribe_many(&["#"], QoS::AtMostOnce).await;
                m.disconnect().await;
                granted
            }));
        }
        for j in joins {
            assert_eq!(j.await.unwrap(), [false]);
            done += 1;
        }
    }
    assert_eq!(done, 1000);
    let m = app.metrics().await;
    let line = "iotctl_acl_denied_total{action=\"subscribe\"} ";
    let n: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(n >= 1000.0, "{n}");
}

/// 200 CONNECTs at once with a user's name and wrong passwords (each an Argon2 run): all
/// refused, and routing meanwhile is not starved (the checks run a few at a time off the
/// async threads).
async fn wrong_passwords(app: &App) {
    let mut joins = Vec::new();
    for i in 0..200 {
        let addr = app.mqtt.clone();
        joins.push(tokio::spawn(async move {
            connack_code(&addr, ADMIN_USER, &format!("wrong-{i}")).await
        }));
    }
    for j in joins {
        assert_eq!(j.await.unwrap(), 4);
    }
}

async fn hostile_suite(auth: bool) {
    let app = App::start(options(auth)).await;
    let canary = Canary::start(&app).await;
    canary.flowing("start").await;
    hostile_http(&app).await;
    canary.flowing("malformed and oversized HTTP").await;
    hostile_uplinks(&app, &canary).await;
    canary.flowing("garbage uplinks").await;
    hostile_apis(&app).await;
    canary
        .flowing("garbage graph and device API requests")
        .await;
    hostile_mqtt_sizes_and_depth(&app).await;
    canary.flowing("MQTT payload and topic limits").await;
    slowloris(&app).await;
    canary.flowing("slowloris").await;
    half_connects(&app).await;
    canary.flowing("half CONNECTs").await;
    if auth {
        thousand_hash_subscribers(&app, &canary).await;
        canary.flowing("1,000 # subscribers").await;
        wrong_passwords(&app).await;
        canary.flowing("a flood of wrong passwords").await;
    }
    canary.finish().await;
    assert!(!app.log_text().contains("panicked"), "{}", app.log_text());
}

#[tokio::test]
async fn hostile_input_with_auth_on() {
    hostile_suite(true).await;
}

#[tokio::test]
async fn hostile_input_with_auth_off() {
    hostile_suite(false).await;
}
