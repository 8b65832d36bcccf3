//! Requests over MQTT: what a client gets, and every refusal.

use iot_tests::CcmClient;
use rumqttc::QoS;
use serde_json::json;

use super::*;

#[tokio::test]
async fn a_client_gets_the_value_once_and_a_replay_or_an_older_request_is_refused() {
    let app = start("", false).await;
    let c = CcmClient::of(&app);
    provision(&c).await;
    let mut m = listener(&app, CLIENT, None).await;

    let req = request(CLIENT_PW, CLIENT, MID, "db", now());
    let reply = ask(&mut m, CLIENT, &req).await;
    assert!(!reply.to_string().contains(VALUE), "{reply}");
    assert_eq!(reply["iv"].as_str().unwrap().len(), 24, "{reply}");
    assert_eq!(open(&reply, CLIENT_PW, CLIENT, MID, &req), VALUE);

    // The captured request again: refused, and still exactly one reply per request (the
    // next message on the topic is the replay's answer, not a second copy of the first).
    let body = serde_json::to_vec(&req).unwrap();
    m.publish(&km::req(CLIENT), body, QoS::AtLeastOnce, false)
        .await;
    let next = m.recv_until("the replay's reply", |_| true).await.json();
    assert_eq!(next["nonce"], req.nonce.as_str());
    assert_eq!(code(&next), "replay");

    // A fresh nonce but a `ts` older than the newest accepted one: refused too.
    let older = request(CLIENT_PW, CLIENT, MID, "db", now() - 30);
    assert_eq!(code(&ask(&mut m, CLIENT, &older).await), "replay");
    // A newer one is fine, with a fresh iv.
    let again = request(CLIENT_PW, CLIENT, MID, "db", now() + 1);
    let r2 = ask(&mut m, CLIENT, &again).await;
    assert_eq!(open(&r2, CLIENT_PW, CLIENT, MID, &again), VALUE);
    assert_ne!(r2["iv"], reply["iv"]);
    assert_eq!(
        ccm_metric(&c, "iotctl_km_requests_total{result=\"ok\"}").await,
        2.0
    );
    assert_eq!(
        ccm_metric(&c, "iotctl_km_requests_total{result=\"replay\"}").await,
        2.0
    );
}

#[tokio::test]
async fn stale_future_forged_and_foreign_requests_are_refused_without_a_hint() {
    let app = start("clock_skew_seconds = 90", false).await;
    let c = CcmClient::of(&app);
    provision(&c).await;
    let mut m = listener(&app, CLIENT, None).await;

    let stale = request(CLIENT_PW, CLIENT, MID, "db", now() - 200);
    assert_eq!(code(&ask(&mut m, CLIENT, &stale).await), "clock");
    let future = request(CLIENT_PW, CLIENT, MID, "db", now() + 200);
    assert_eq!(code(&ask(&mut m, CLIENT, &future).await), "clock");

    // A wrong MAC; the right password on another machine; a key that does not exist; a key
    // this client may not read; a client that does not exist: one answer for all.
    let mut wrong_mac = request(CLIENT_PW, CLIENT, MID, "db", now());
    wrong_mac.mac = "0".repeat(64);
    let other_machine = request(CLIENT_PW, CLIENT, "another-machine", "db", now());
    let unknown_key = request(CLIENT_PW, CLIENT, MID, "nosuchkey", now());
    let forbidden_key = request(CLIENT_PW, CLIENT, MID, "other", now());
    let mut answers = Vec::new();
    for r in [&wrong_mac, &other_machine, &unknown_key, &forbidden_key] {
        let reply = ask(&mut m, CLIENT, r).await;
        assert_eq!(code(&reply), "denied");
        assert!(!reply.to_string().contains(&r.mac), "{reply}");
        let mut shown = reply.clone();
        shown["nonce"] = json!(null);
        answers.push(shown.to_string());
    }
    let mut nobody = listener(&app, "nobody", None).await;
    let reply = ask(
        &mut nobody,
        "nobody",
        &request("x", "nobody", MID, "db", now()),
    )
    .await;
    let mut shown = reply.clone();
    shown["nonce"] = json!(null);
    answers.push(shown.to_string());
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");

    // A forged request dated ahead (no valid MAC) changes nothing: the real client, with
    // an earlier `ts`, still gets its value.
    let mut forged = request("guess", CLIENT, MID, "db", now() + 60);
    forged.mac = "f".repeat(64);
    assert_eq!(code(&ask(&mut m, CLIENT, &forged).await), "denied");
    let real = request(CLIENT_PW, CLIENT, MID, "db", now());
    let reply = ask(&mut m, CLIENT, &real).await;
    assert_eq!(open(&reply, CLIENT_PW, CLIENT, MID, &real), VALUE);
    assert_eq!(
        ccm_metric(&c, "iotctl_km_requests_total{result=\"denied\"}").await,
        6.0
    );
    assert_eq!(
        ccm_metric(&c, "iotctl_km_requests_total{result=\"clock\"}").await,
        2.0
    );
}

#[tokio::test]
async fn malformed_requests_get_bad_request_and_non_json_no_reply() {
    let app = start("", false).await;
    let c = CcmClient::of(&app);
    provision(&c).await;
    let mut m = listener(&app, CLIENT, None).await;
    let n = "00112233445566778899aabbccddeeff";
    for body in [
        json!({"nonce": n}),
        json!({"key": "db", "ts": "soon", "nonce": n, "mac": "a".repeat(64)}),
        json!({"key": "db", "ts": now(), "nonce": "XYZ", "mac": "a".repeat(64)}),
        json!({"key": "a/b", "ts": now(), "nonce": n, "mac": "a".repeat(64)}),
        json!({"key": "db", "ts": now(), "nonce": n, "mac": "short"}),
    ] {
        let echoed = body["nonce"].as_str().unwrap();
        let reply = ask_raw(&mut m, CLIENT, body.to_string().as_bytes(), echoed).await;
        assert_eq!(code(&reply), "bad_request", "{body}");
    }
    // Not a JSON object: no reply at all (the next reply is the marker's).
    for junk in [&b"garbage"[..], b"[1,2]", b"", &[0xff, 0xfe]] {
        m.publish(&km::req(CLIENT), junk.to_vec(), QoS::AtLeastOnce, false)
            .await;
    }
    let marker = request(CLIENT_PW, CLIENT, MID, "db", now());
    m.publish(
        &km::req(CLIENT),
        serde_json::to_vec(&marker).unwrap(),
        QoS::AtLeastOnce,
        false,
    )
    .await;
    let next = m.recv_until("the marker's reply", |_| true).await.json();
    assert_eq!(next["nonce"], marker.nonce.as_str(), "{next}");
    assert_eq!(
        ccm_metric(&c, "iotctl_km_requests_total{result=\"ignored\"}").await,
        4.0
    );
}

#[tokio::test]
async fn the_rate_limit_answers_limited_with_a_wait() {
    let app = start("rate_limit = \"2/60s\"", false).await;
    let c = CcmClient::of(&app);
    provision(&c).await;
    let mut m = listener(&app, CLIENT, None).await;
    // Forged requests do not use the client's allowance.
    for _ in 0..3 {
        let mut forged = request(CLIENT_PW, CLIENT, MID, "db", now());
        forged.mac = "1".repeat(64);
        assert_eq!(code(&ask(&mut m, CLIENT, &forged).await), "denied");
    }
    for _ in 0..2 {
        let r = request(CLIENT_PW, CLIENT, MID, "db", now());
        let reply = ask(&mut m, CLIENT, &r).await;
        assert_eq!(open(&reply, CLIENT_PW, CLIENT, MID, &r), VALUE);
    }
    let third = ask(
        &mut m,
        CLIENT,
        &request(CLIENT_PW, CLIENT, MID, "db", now()),
    )
    .await;
    assert_eq!(code(&third), "limited");
    let wait = third["retry_after_ms"].as_u64().unwrap();
    assert!(wait > 0 && wait <= 60_000, "{third}");
}

#[tokio::test]
async fn panic_mode_seals_the_store_after_too_many_denials() {
    let app = start("panic_after_failures = 3\npanic_window_seconds = 60", false).await;
    let c = CcmClient::of(&app);
    provision(&c).await;
    let mut m = listener(&app, CLIENT, None).await;
    for i in 0..3 {
        let r = request("wrong password", CLIENT, MID, "db", now());
        assert_eq!(
            code(&ask(&mut m, CLIENT, &r).await),
            "denied",
            "attempt {i}"
        );
    }
    let status = api(&c, Method::GET, "/api/keys/status", None, 200).await;
    assert_eq!(status["sealed"], true, "{status}");
    let real = request(CLIENT_PW, CLIENT, MID, "db", now());
    assert_eq!(code(&ask(&mut m, CLIENT, &real).await), "sealed");
    assert_eq!(ccm_metric(&c, "iotctl_km_panics_total").await, 1.0);
    assert_eq!(ccm_metric(&c, "iotctl_km_sealed").await, 1.0);
    let log = app.log_text();
    assert!(log.contains("panic mode"), "{log}");
    // An operator unseals it again; the client is served.
    api(
        &c,
        Method::POST,
        "/api/keys/unseal",
        Some(json!({"password": UNSEAL})),
        200,
    )
    .await;
    let after = request(CLIENT_PW, CLIENT, MID, "db", now() + 1);
    let reply = ask(&mut m, CLIENT, &after).await;
    assert_eq!(open(&reply, CLIENT_PW, CLIENT, MID, &after), VALUE);
}
