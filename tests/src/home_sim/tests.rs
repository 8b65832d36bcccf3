use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::http::percent_decode;

use super::tplink::{read_frame, LIGHTING};
use super::*;

const PLUG_ON: &str = r#"{"system":{"set_relay_state":{"state":1}}}"#;

#[test]
fn cipher_known_vector_and_round_trip() {
    assert_eq!(encrypt(b"{\""), [0xd0, 0xf2]);
    assert_eq!(decrypt(&[0xd0, 0xf2]), b"{\"");
    let text = br#"{"system":{"get_sysinfo":{}}}"#;
    assert_eq!(decrypt(&encrypt(text)), text);
    // Autokey: the same plaintext byte encrypts differently further on.
    let e = encrypt(b"aa");
    assert_ne!(e[0], e[1]);
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("/porch/dim%3A40"), "/porch/dim:40");
    assert_eq!(percent_decode("/a%2"), "/a%2");
    assert_eq!(percent_decode("/x%zz"), "/x%zz");
}

/// Sends raw bytes on a new connection; returns the decrypted reply, `None` if the
/// connection closed without one.
async fn raw_exchange(addr: SocketAddr, request: &str) -> Option<Value> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut bytes = (request.len() as u32).to_be_bytes().to_vec();
    // By hand: key 171, each ciphertext byte the next key.
    let mut key = 171u8;
    for p in request.bytes() {
        key ^= p;
        bytes.push(key);
    }
    s.write_all(&bytes).await.unwrap();
    let mut len = [0u8; 4];
    if s.read_exact(&mut len).await.is_err() {
        return None;
    }
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.unwrap();
    Some(serde_json::from_slice(&decrypt(&body)).unwrap())
}

#[tokio::test]
async fn a_plug_switches_and_answers_err_code_0() {
    let sim = TplinkSim::plug().await;
    let reply = raw_exchange(sim.addr(), PLUG_ON).await.unwrap();
    assert_eq!(
        reply,
        json!({"system": {"set_relay_state": {"err_code": 0}}})
    );
    assert!(sim.state().on);
    let reqs = sim.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].request["system"]["set_relay_state"]["state"], 1);
    assert_eq!(reqs[0].connection, 1);
    // Several requests on one connection, and get_sysinfo.
    let mut s = TcpStream::connect(sim.addr()).await.unwrap();
    for req in [
        json!({"system": {"set_relay_state": {"state": 0}}}),
        json!({"system": {"get_sysinfo": {}}}),
    ] {
        s.write_all(&frame(&req)).await.unwrap();
        let body = read_frame(&mut s).await.unwrap().unwrap();
        let reply: Value = serde_json::from_slice(&decrypt(&body)).unwrap();
        assert_eq!(reply["system"].as_object().unwrap().len(), 1, "{reply}");
    }
    assert!(!sim.state().on);
    assert_eq!(sim.connections(), 2);
    // A plug has no lighting service.
    let reply = tplink_call(
        sim.addr(),
        &json!({LIGHTING: {"transition_light_state": {"on_off": 1}}}),
    )
    .await
    .unwrap();
    assert_eq!(reply[LIGHTING]["err_code"], -1);
}

#[tokio::test]
async fn a_bulb_dims_like_the_real_one() {
    let sim = TplinkSim::bulb().await;
    let reply = tplink_call(
        sim.addr(),
        &json!({LIGHTING: {"transition_light_state": {"on_off": 1, "brightness": 40}}}),
    )
    .await
    .unwrap();
    assert_eq!(
        reply,
        json!({LIGHTING: {"transition_light_state": {"on_off": 1, "brightness": 40, "err_code": 0}}})
    );
    assert_eq!(
        sim.state(),
        DeviceState {
            on: true,
            brightness: 40
        }
    );
    tplink_call(
        sim.addr(),
        &json!({LIGHTING: {"transition_light_state": {"on_off": 0}}}),
    )
    .await
    .unwrap();
    assert_eq!(
        sim.state(),
        DeviceState {
            on: false,
            brightness: 40
        }
    );
    let bad = tplink_call(
        sim.addr(),
        &json!({LIGHTING: {"transition_light_state": {"brightness": 400}}}),
    )
    .await
    .unwrap();
    assert_ne!(bad[LIGHTING]["transition_light_state"]["err_code"], 0);
    assert_eq!(sim.state().brightness, 40);
}

#[tokio::test]
async fn behaviours_err_code_delay_silent_and_close_first() {
    let sim = TplinkSim::plug().await;
    let on: Value = serde_json::from_str(PLUG_ON).unwrap();

    sim.set(Behaviour::ErrCode(1));
    let reply = tplink_call(sim.addr(), &on).await.unwrap();
    assert_eq!(reply["system"]["set_relay_state"]["err_code"], 1);
    assert!(!sim.state().on, "a failed request changes nothing");

    sim.set(Behaviour::Delay(Duration::from_millis(300)));
    let t = Instant::now();
    let reply = tplink_call(sim.addr(), &on).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(reply["system"]["set_relay_state"]["err_code"], 0);
    assert!(sim.state().on);

    sim.set(Behaviour::Silent);
    let mut s = TcpStream::connect(sim.addr()).await.unwrap();
    s.write_all(&frame(&on)).await.unwrap();
    let mut buf = [0u8; 4];
    let r = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
    assert!(r.is_err(), "silent: no answer and no close, got {r:?}");
    sim.wait_requests(3).await;
    drop(s);

    sim.set(Behaviour::CloseFirst(2));
    let before = sim.connections();
    assert!(tplink_call(sim.addr(), &on).await.is_err());
    assert!(tplink_call(sim.addr(), &on).await.is_err());
    assert_eq!(
        tplink_call(sim.addr(), &on).await.unwrap()["system"]["set_relay_state"]["err_code"],
        0
    );
    assert_eq!(sim.connections(), before + 3);
    // Closed connections were never read: 3 earlier requests plus the one answered.
    assert_eq!(sim.requests().len(), 4);
}

#[tokio::test]
async fn a_stopped_address_refuses() {
    let addr = stopped_addr();
    let e = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn the_http_target_records_gets_and_answers_as_set() {
    let t = HttpTarget::start().await;
    let http = reqwest::Client::new();
    let r = http.get(t.url("/porch/dim%3A40")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(t.paths(), ["/porch/dim:40"]);
    assert_eq!(t.hits()[0].raw, "/porch/dim%3A40");

    t.set("/bad", 500, Duration::ZERO);
    t.set("/slow", 200, Duration::from_millis(300));
    assert_eq!(
        http.get(t.url("/bad/on")).send().await.unwrap().status(),
        500
    );
    assert_eq!(
        http.get(t.url("/porch/on")).send().await.unwrap().status(),
        200
    );
    let start = Instant::now();
    assert_eq!(
        http.get(t.url("/slow/x")).send().await.unwrap().status(),
        200
    );
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        http.post(t.url("/porch/on")).send().await.unwrap().status(),
        405
    );
    assert_eq!(t.wait_hits(4).await.len(), 4, "POSTs are not recorded");
    assert_eq!(
        t.paths(),
        ["/porch/dim:40", "/bad/on", "/porch/on", "/slow/x"]
    );
}
