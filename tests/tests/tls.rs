#![allow(clippy::unwrap_used, clippy::expect_used)]
//! TLS end to end, with certificates from the real `iotctl gencert`: `mosquitto_pub` and
//! `mosquitto_sub` with `--cafile` over `broker.tls_listen` (refused without the CA),
//! registration over HTTPS (also by the unmodified iottalk-py), what DAs are told with and
//! without `broker.advertise_tls`, iottalk-py over mqtts (with the opt-in CA shim of
//! `py/da.py`), and authentication over TLS. The Rust SDK over HTTPS + mqtts is in
//! `da-sdk/tests/tls.rs`.

use std::time::Duration;

use iot_tests::tls::{gencert, http_client, Certs};
use iot_tests::*;
use serde_json::json;
use tokio::process::Command;

/// A controller with every TLS listener on, `env` overriding keys (`IOTCTL__...`).
async fn tls_app(certs: &Certs, env: &[(&str, &str)], auth: bool) -> App {
    App::start(AppOptions {
        extra_toml: certs.toml(),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ca_file: Some(certs.ca.clone()),
        auth,
        ..Default::default()
    })
    .await
}

/// Runs mosquitto_pub on `addr` (host:port, reached as `localhost`) with `args`.
async fn mosquitto_pub(addr: &str, args: &[&str]) -> std::process::Output {
    let port = addr.rsplit_once(':').unwrap().1;
    let run = Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", port, "-q", "1"])
        .args(args)
        .output();
    tokio::time::timeout(WAIT, run).await.unwrap().unwrap()
}

/// gencert's files, used as printed: the broker serves MQTT over TLS to `mosquitto_sub` and
/// `mosquitto_pub` with `--cafile ca.pem` and refuses clients without it; the CSM serves
/// HTTPS (and only to clients trusting the CA); the ready line, the state file and `iotctl
/// status` show the TLS listeners; DAs registering over HTTPS are told the plain broker by
/// default (iottalk-py cannot do TLS), and the unmodified iottalk-py registers over HTTPS
/// and comes online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gencert_files_serve_mqtts_and_https() {
    let certs = gencert();
    assert!(
        certs
            .stdout
            .contains(&format!("cert_file = \"{}\"", certs.cert.display())),
        "{}",
        certs.stdout
    );
    let app = tls_app(&certs, &[], false).await;
    assert!(app.csm.starts_with("https://"), "{}", app.csm);
    let mqtts = app.mqtts.clone().expect("mqtts= on the ready line");
    assert!(app.wss.is_some(), "wss= on the ready line");
    let ca = certs.ca.to_str().unwrap();

    // mosquitto_sub over TLS receives what mosquitto_pub sends over TLS.
    let port = mqtts.rsplit_once(':').unwrap().1.to_owned();
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "localhost", "-p", &port, "--cafile", ca])
        .args([
            "-t", "tls/test", "-C", "1", "-W", "30", "-q", "1", "-i", "tls-sub",
        ])
        .kill_on_drop(true)
        .output();
    let sub = tokio::spawn(sub);
    // Publish until the subscriber (connecting in parallel) has its message.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !sub.is_finished() {
        let out = mosquitto_pub(&mqtts, &["--cafile", ca, "-t", "tls/test", "-m", "hello"]).await;
        assert!(out.status.success(), "{out:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "mosquitto_sub got nothing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = sub.await.unwrap().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");

    // Without our CA: the handshake fails.
    let out = mosquitto_pub(
        &mqtts,
        &["--capath", "/etc/ssl/certs", "-t", "x", "-m", "x"],
    )
    .await;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TLS error"),
        "{out:?}"
    );

    // HTTPS: a client without the CA is refused; with it, registration works and the reply
    // names the plain broker (advertise_tls is off).
    let plain = http_client(None)
        .get(format!("{}/healthz", app.csm))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    let reply = app.register(&new_id()).await;
    let url = &reply["url"];
    assert_eq!(url["scheme"], "mqtt", "{reply}");
    assert_eq!(format!("127.0.0.1:{}", url["port"]), app.mqtt, "{reply}");

    // The unmodified iottalk-py over HTTPS (requests trusts REQUESTS_CA_BUNDLE).
    let mut da = PyDa::spawn_with_env(
        &app.csm,
        &new_id(),
        "",
        json!([["Dummy_Sensor", ["int"]]]),
        json!([]),
        &[("REQUESTS_CA_BUNDLE", ca)],
    )
    .await;
    da.expect("registered").await;
    app.wait_online(1).await;
    da.deregister().await;

    let status = app.iotctl(&["status", "--json"], None).await;
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["broker"]["mqtts"], json!(mqtts), "{v}");
    assert_eq!(v["broker"]["wss"], json!(app.wss), "{v}");
}

/// `broker.advertise_tls`: DAs are told `mqtts`/`wss` and the TLS ports, and iottalk-py
/// (with the opt-in CA shim of `py/da.py`, since it ignores the scheme) registers over
/// HTTPS, connects over TLS and has its data routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertise_tls_tells_das_mqtts_and_iottalk_py_uses_it() {
    let certs = gencert();
    let app = tls_app(&certs, &[("IOTCTL__BROKER__ADVERTISE_TLS", "true")], false).await;
    let reply = app.register(&new_id()).await;
    let url = &reply["url"];
    let port = |a: &Option<String>| a.as_ref().unwrap().rsplit_once(':').unwrap().1.to_owned();
    assert_eq!(url["scheme"], "mqtts", "{reply}");
    assert_eq!(url["port"].to_string(), port(&app.mqtts), "{reply}");
    assert_eq!(url["ws_scheme"], "wss", "{reply}");
    assert_eq!(url["ws_port"].to_string(), port(&app.wss), "{reply}");

    let ca = certs.ca.to_str().unwrap();
    let env = [("REQUESTS_CA_BUNDLE", ca), ("IOTTALK_TEST_MQTT_CAFILE", ca)];
    let mut da = PyDa::spawn_with_env(
        &app.csm,
        &new_id(),
        "",
        json!([["Dummy_Sensor", ["int"]]]),
        json!([]),
        &env,
    )
    .await;
    da.expect("registered").await;
    app.wait_online(1).await;
    // Its data reaches a subscriber of its IDF's topic once the CSM connects it.
    let topic = format!("iottalk/esm/{}", new_id());
    let mut reader = app.mqtt(None).await;
    reader.subscribe(&topic, rumqttc::QoS::AtLeastOnce).await;
    let csm = app.mqtt(None).await;
    csm.publish_json(
        &format!("{}/ctrl/o", da.id),
        &json!({"msg_id": new_id(), "command": "CONNECT", "idf": "Dummy_Sensor", "topic": topic}),
        false,
    )
    .await;
    da.push("Dummy_Sensor", json!(7)).await;
    let got = reader.recv_until("pushed value", |_| true).await;
    assert_eq!(got.json(), json!([7]));
    da.deregister().await;
}

/// Authentication over TLS: anonymous and wrong-password clients are refused on the TLS
/// listener like on the plain one, the admin is let in; `/status` over HTTPS needs the
/// admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_applies_over_tls() {
    let certs = gencert();
    let app = tls_app(&certs, &[], true).await;
    let mqtts = app.mqtts.clone().unwrap();
    let ca = certs.ca.to_str().unwrap();
    let base = ["--cafile", ca, "-t", "tls/auth", "-m", "x"];
    let out = mosquitto_pub(&mqtts, &base).await;
    assert!(!out.status.success(), "anonymous: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not authori"),
        "{out:?}"
    );
    let wrong = [&base[..], &["-u", ADMIN_USER, "-P", "wrong"]].concat();
    let out = mosquitto_pub(&mqtts, &wrong).await;
    assert!(!out.status.success(), "wrong password: {out:?}");
    let admin = [&base[..], &["-u", ADMIN_USER, "-P", ADMIN_PASSWORD]].concat();
    let out = mosquitto_pub(&mqtts, &admin).await;
    assert!(out.status.success(), "admin: {out:?}");

    let anon = app
        .http
        .get(format!("{}/status", app.csm))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    let s = app.status().await;
    assert!(s["registered"].is_u64(), "{s}");
}
