#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Registration, control channels and the device API, end to end: the real controller, the
//! unmodified iottalk-py SDK, rumqttc clients and plain HTTP.

use iot_tests::*;
use rumqttc::QoS;
use serde_json::{json, Value};

#[tokio::test]
async fn iottalk_py_registers_goes_online_and_deregisters() {
    let app = App::spawn().await;
    let (mut dev, list) = app.attach_device_api("it-dev").await;
    assert_eq!(list, json!({}));

    let id = new_id();
    let mut da = PyDa::spawn(
        &app.csm,
        &id,
        "IDF_DA",
        json!([["Dummy_Sensor", ["dB"]]]),
        json!([]),
    )
    .await;
    let reg = da.expect("registered").await;
    assert_eq!(reg["name"], "IDF_DA");

    let a = dev.announcement("register", &id).await;
    assert_eq!(a["da"]["name"], "IDF_DA");
    let a = dev.announcement("online", &id).await;
    assert_eq!(a["da"]["state"], "online");

    let (code, rec) = app.get(&id).await;
    assert_eq!(code, 200);
    assert_eq!(rec["state"], "ok");
    assert_eq!(rec["rev"], reg["rev"]);
    assert_eq!(rec["idf_list"], json!([["Dummy_Sensor", ["dB"]]]));
    assert_eq!(rec["profile"]["model"], "Dummy_Device");
    assert!(rec["register_time"].as_f64().unwrap() > 1.7e9);

    // A second device API client sees the DA online in its list.
    let (_, list) = app.attach_device_api("it-dev2").await;
    assert_eq!(list[&id]["state"], "online");
    app.wait_status("one online DA", |s| {
        s["online"] == 1 && s["registered"] == 1
    })
    .await;

    da.deregister().await;
    dev.announcement("offline", &id).await;
    dev.announcement("deregister", &id).await;
    assert_eq!(app.get(&id).await.0, 404);
    let mut m = app.mqtt(None).await;
    assert!(
        m.retained(&format!("{id}/#")).await.is_empty(),
        "no retained state left on the DA's topics"
    );
}

#[tokio::test]
async fn registration_reply_has_broker_url_and_channels() {
    let app = App::spawn().await;
    let id = new_id();
    let body = app.register(&id).await;
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["state"], "ok");
    assert_eq!(body["name"], "00.Dummy_Device");
    assert_eq!(
        body["ctrl_chans"],
        json!([format!("{id}/ctrl/i"), format!("{id}/ctrl/o")])
    );
    let (host, port) = app.mqtt.rsplit_once(':').unwrap();
    assert_eq!(body["url"]["scheme"], "mqtt");
    assert_eq!(body["url"]["host"], host);
    assert_eq!(body["url"]["port"].as_u64().unwrap().to_string(), port);
    assert_eq!(body["url"]["ws_scheme"], "ws");
    let ws_port = app.ws.as_ref().unwrap().rsplit_once(':').unwrap().1;
    assert_eq!(
        body["url"]["ws_port"].as_u64().unwrap().to_string(),
        ws_port
    );
    // Per-DA credentials, checked by the embedded broker.
    assert_eq!(body["username"], id.as_str());
    assert_eq!(body["password"].as_str().map(str::len), Some(32));

    // Re-PUT: new rev, record updated.
    let mut changed = register_body();
    changed["name"] = json!("Renamed");
    changed["odf_list"] = json!([["Other", ["x"]]]);
    let (code, again) = app.put(&id, &changed).await;
    assert_eq!(code, 200);
    assert_ne!(again["rev"], body["rev"]);
    let (_, rec) = app.get(&id).await;
    assert_eq!(rec["name"], "Renamed");
    assert_eq!(rec["odf_list"], json!([["Other", ["x"]]]));
    assert_eq!(rec["rev"], again["rev"]);
}

#[tokio::test]
async fn stale_retained_will_does_not_flip_a_reregistered_da() {
    let app = App::spawn().await;
    let id = new_id();
    let ctrl = format!("{id}/ctrl/i");
    let reply1 = app.register(&id).await;
    let rev1 = reply1["rev"].clone();
    // First session: online with rev1, will = offline rev1.
    let first = app
        .mqtt(Some((
            ctrl.clone(),
            json!({"state": "offline", "rev": rev1}),
        )))
        .await;
    first
        .publish_json(&ctrl, &json!({"state": "online", "rev": rev1}), true)
        .await;
    app.wait_status("DA online", |s| s["online"] == 1).await;

    // Re-registration while online (so with the DA's credentials): rev2, a second session
    // goes online.
    let reply2: Value = app
        .http
        .put(app.url(&id))
        .basic_auth(&id, reply1["password"].as_str())
        .json(&register_body())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rev2 = reply2["rev"].clone();
    assert_ne!(rev1, rev2);
    let second = app
        .mqtt(Some((
            ctrl.clone(),
            json!({"state": "offline", "rev": rev2}),
        )))
        .await;
    second
        .publish_json(&ctrl, &json!({"state": "online", "rev": rev2}), true)
        .await;
    app.wait_status("DA online with rev2", |s| s["online"] == 1)
        .await;

    // The first session dies: its will (offline, rev1) is published and must be ignored.
    first.kill();
    app.wait_status("stale will counted", |s| {
        s["counters"]["uplink_stale"].as_u64() >= Some(1)
    })
    .await;
    let (_, list) = app.attach_device_api("it-stale").await;
    assert_eq!(
        list[&id]["state"], "online",
        "a stale will must not flip the DA offline"
    );
    // A stale online does not flip an offline DA either.
    second.kill();
    app.wait_status("DA offline", |s| s["online"] == 0).await;
    let m = app.mqtt(None).await;
    m.publish_json(&ctrl, &json!({"state": "online", "rev": rev1}), false)
        .await;
    app.wait_status("second stale message counted", |s| {
        s["counters"]["uplink_stale"].as_u64() >= Some(2)
    })
    .await;
    assert_eq!(app.status().await["online"], 0);
}

#[tokio::test]
async fn deregistration_offline_then_delete_leaves_nothing() {
    let app = App::spawn().await;
    let id = new_id();
    let ctrl = format!("{id}/ctrl/i");
    let rev = app.register(&id).await["rev"].clone();
    let da = app
        .mqtt(Some((
            ctrl.clone(),
            json!({"state": "offline", "rev": rev}),
        )))
        .await;
    da.publish_json(&ctrl, &json!({"state": "online", "rev": rev}), true)
        .await;
    app.wait_status("online", |s| s["online"] == 1).await;
    // Python order: retained offline, then DELETE.
    da.publish_json(&ctrl, &json!({"state": "offline", "rev": rev}), true)
        .await;
    app.wait_status("offline", |s| s["online"] == 0).await;
    let (code, body) = app.delete(&id, &json!({"rev": rev})).await;
    assert_eq!((code, body), (200, json!({"id": id, "state": "ok"})));
    da.disconnect().await;
    let mut m = app.mqtt(None).await;
    assert!(m.retained(&format!("{id}/#")).await.is_empty());
    assert_eq!(app.get(&id).await.0, 404);
}

#[tokio::test]
async fn deregistration_delete_then_offline_leaves_nothing() {
    let app = App::spawn().await;
    let id = new_id();
    let ctrl = format!("{id}/ctrl/i");
    let rev = app.register(&id).await["rev"].clone();
    let da = app.mqtt(None).await;
    da.publish_json(&ctrl, &json!({"state": "online", "rev": rev}), true)
        .await;
    app.wait_status("online", |s| s["online"] == 1).await;
    // JS order: DELETE first, the retained offline arrives afterwards.
    assert_eq!(app.delete(&id, &json!({"rev": rev})).await.0, 200);
    da.publish_json(&ctrl, &json!({"state": "offline", "rev": rev}), true)
        .await;
    app.wait_status("late offline seen", |s| {
        s["counters"]["uplink_unknown"].as_u64() >= Some(1)
    })
    .await;
    let mut m = app.mqtt(None).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = m.retained(&format!("{id}/#")).await;
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retained state left: {:?}",
            left
        );
    }
}

#[tokio::test]
async fn offline_expiry_deregisters_and_delete_cancels_it() {
    // Long enough that nothing the test does on purpose (bring `kept` online after its PUT,
    // DELETE it once offline) can be overtaken by the expiry on a loaded machine.
    let app = App::start(AppOptions {
        offline_expiry_seconds: Some(10),
        ..Default::default()
    })
    .await;
    let expiring = new_id();
    let kept = new_id();
    // `kept` is connected before it registers, and online before `expiring` registers.
    let da = app.mqtt(None).await;
    let rev = app.register(&kept).await["rev"].clone();
    da.publish_json(
        &format!("{kept}/ctrl/i"),
        &json!({"state": "online", "rev": rev}),
        true,
    )
    .await;
    app.wait_status("kept online", |s| s["online"] == 1).await;
    app.register(&expiring).await;
    // The DA that never comes online expires; the online one stays.
    app.wait_status("expiry", |s| s["counters"]["expirations"] == 1)
        .await;
    assert_eq!(app.get(&expiring).await.0, 404);
    assert_eq!(app.get(&kept).await.0, 200);
    // Offline starts the expiry; DELETE before it fires ends clean (no double deregistration).
    da.publish_json(
        &format!("{kept}/ctrl/i"),
        &json!({"state": "offline", "rev": rev}),
        true,
    )
    .await;
    app.wait_status("offline", |s| s["online"] == 0).await;
    assert_eq!(app.delete(&kept, &json!({"rev": rev})).await.0, 200);
    let s = app
        .wait_status("deregistered", |s| s["registered"] == 0)
        .await;
    assert_eq!(s["counters"]["expirations"], 1);
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_breaks_nothing() {
    let app = App::spawn().await;
    let id = new_id();
    let cases: Vec<(&str, String, Value, u16, &str)> = vec![
        (
            "uppercase id",
            id.to_uppercase(),
            register_body(),
            400,
            "invalid id",
        ),
        (
            "not a uuid",
            "not-a-uuid".into(),
            register_body(),
            400,
            "invalid id",
        ),
        (
            "missing accept_protos",
            id.clone(),
            json!({"profile": {"model": "M"}}),
            400,
            "missing field `accept_protos`",
        ),
        (
            "missing profile.model",
            id.clone(),
            json!({"accept_protos": ["mqtt"], "profile": {}}),
            400,
            "missing field `profile.model`",
        ),
        (
            "missing profile",
            id.clone(),
            json!({"accept_protos": ["mqtt"]}),
            400,
            "missing field `profile`",
        ),
        (
            "unknown field",
            id.clone(),
            json!({"accept_protos": ["mqtt"], "profile": {"model": "M"}, "colour": 1}),
            400,
            "unknown field `\"colour\"`",
        ),
        (
            "features not a list",
            id.clone(),
            json!({"accept_protos": ["mqtt"], "profile": {"model": "M"}, "idf_list": {"a": 1}}),
            400,
            "idf_list",
        ),
        (
            "feature entry shape",
            id.clone(),
            json!({"accept_protos": ["mqtt"], "profile": {"model": "M"}, "odf_list": [[1, 2, 3]]}),
            400,
            "[feature_name, units]",
        ),
    ];
    for (what, id, body, code, reason) in cases {
        let (got, reply) = app.put(&id, &body).await;
        assert_eq!(got, code, "{what}: {reply}");
        assert_eq!(reply["state"], "error", "{what}");
        assert_eq!(reply["id"], id.as_str(), "{what}");
        assert!(
            reply["reason"].as_str().unwrap().contains(reason),
            "{what}: {reply}"
        );
    }
    // Malformed JSON.
    let (code, reply) = app.put_raw(&id, "{\"accept_protos\": [").await;
    assert_eq!(code, 400);
    assert!(
        reply["reason"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON"),
        "{reply}"
    );
    // 10 MB body. The server answers before reading it all and closes the connection, so a
    // client of its own keeps the pooled connection of `app.http` out of it.
    let r = reqwest::Client::new()
        .put(app.url(&id))
        .body(vec![b' '; 10 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    let reply: Value = r.json().await.unwrap();
    assert_eq!(code, 413);
    assert_eq!(reply["state"], "error");
    assert!(
        reply["reason"].as_str().unwrap().contains("too large"),
        "{reply}"
    );
    // DELETE: unknown id, wrong rev, malformed body.
    let (code, reply) = app.delete(&id, &json!({"rev": "x"})).await;
    assert_eq!(
        (code, reply["reason"].as_str()),
        (404, Some("id not found"))
    );
    let rev = app.register(&id).await["rev"].clone();
    let (code, reply) = app.delete(&id, &json!({"rev": "not-the-rev"})).await;
    assert_eq!(
        (code, reply["reason"].as_str()),
        (400, Some("revision out-of-date or unknown"))
    );
    let r = app
        .http
        .delete(app.url(&id))
        .body("rev?")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // GET unknown id.
    let (code, reply) = app.get(&new_id()).await;
    assert_eq!(
        (code, reply["reason"].as_str()),
        (404, Some("id not found"))
    );

    // Garbage on the DA's uplink and on a non-UUID uplink: counted, nothing breaks.
    let m = app.mqtt(None).await;
    for garbage in [
        &b"\xff\xfe"[..],
        b"{\"state\": 5}",
        b"[]",
        b"{\"state\":\"online\"}",
    ] {
        m.publish(
            &format!("{id}/ctrl/i"),
            garbage.to_vec(),
            QoS::AtLeastOnce,
            false,
        )
        .await;
    }
    m.publish("NOT-A-UUID/ctrl/i", "{}", QoS::AtLeastOnce, false)
        .await;
    app.wait_status("garbage counted", |s| {
        s["counters"]["uplink_garbage"].as_u64() >= Some(5)
    })
    .await;
    // Online with a stale rev is ignored.
    m.publish_json(
        &format!("{id}/ctrl/i"),
        &json!({"state": "online", "rev": "stale"}),
        false,
    )
    .await;
    app.wait_status("stale counted", |s| {
        s["counters"]["uplink_stale"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(app.status().await["online"], 0);
    // Still fully working.
    m.publish_json(
        &format!("{id}/ctrl/i"),
        &json!({"state": "online", "rev": rev}),
        false,
    )
    .await;
    app.wait_status("online", |s| s["online"] == 1).await;
    assert_eq!(app.delete(&id, &json!({"rev": rev})).await.0, 200);
}

#[tokio::test]
async fn registrations_survive_a_restart_sqlite() {
    let app = App::spawn().await;
    persistence(app).await;
}

#[tokio::test]
async fn registrations_survive_a_restart_postgresql() {
    // A schema of its own so parallel runs do not see each other.
    let pg = PgSchema::create();
    let app = App::start(AppOptions {
        db_url: Some(pg.url()),
        ..Default::default()
    })
    .await;
    persistence(app).await;
}

async fn persistence(app: App) {
    let id = new_id();
    let mut body = register_body();
    body["profile"] = json!({"model": "Dummy_Device", "u_name": null, "extra": {"nested": [1, 2]}});
    let (code, reg) = app.put(&id, &body).await;
    assert_eq!(code, 200);
    let (_, before) = app.get(&id).await;
    let gone = new_id();
    let rev = app.register(&gone).await["rev"].clone();
    assert_eq!(app.delete(&gone, &json!({"rev": rev})).await.0, 200);

    let app = app.restart().await;
    let (code, after) = app.get(&id).await;
    assert_eq!(code, 200, "{after}");
    assert_eq!(after, before);
    assert_eq!(after["rev"], reg["rev"]);
    assert_eq!(app.get(&gone).await.0, 404);
    // The restored DA can go online with its rev and deregister.
    let m = app.mqtt(None).await;
    m.publish_json(
        &format!("{id}/ctrl/i"),
        &json!({"state": "online", "rev": reg["rev"]}),
        true,
    )
    .await;
    app.wait_status("restored DA online", |s| s["online"] == 1)
        .await;
    assert_eq!(app.delete(&id, &json!({"rev": reg["rev"]})).await.0, 200);
}

#[tokio::test]
async fn csm_on_external_mosquitto() {
    let app = App::start(AppOptions {
        external: Some("mqtt://127.0.0.1:1883".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(app.mqtt, "127.0.0.1:1883");
    let client = format!("ext-{}", &new_id()[..8]);
    let (mut dev, _) = app.attach_device_api(&client).await;
    let id = new_id();
    let mut da = PyDa::spawn(
        &app.csm,
        &id,
        "EXT_DA",
        json!([["Dummy_Sensor", ["dB"]]]),
        json!([["Dummy_Control", ["dB"]]]),
    )
    .await;
    let reg = da.expect("registered").await;
    dev.announcement("online", &id).await;
    // No per-DA credentials with an external broker: it does its own authentication.
    let other = app.put(&new_id(), &register_body()).await.1;
    assert_eq!(other["state"], "ok");
    assert!(other.get("username").is_none(), "{other}");
    assert_eq!(app.get(&id).await.1["rev"], reg["rev"]);
    da.deregister().await;
    dev.announcement("deregister", &id).await;
    assert_eq!(app.get(&id).await.0, 404);
    let mut m = app.mqtt(None).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !m.retained(&format!("{id}/#")).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retained state left on Mosquitto"
        );
    }
}

#[tokio::test]
async fn per_da_credentials_are_checked_by_the_embedded_broker() {
    let app = App::spawn().await;
    let id = new_id();
    let reply = app.register(&id).await;
    let password = reply["password"].as_str().unwrap().to_owned();
    assert_eq!(connack_code(&app.mqtt, &id, &password).await, 0);
    assert_ne!(connack_code(&app.mqtt, &id, "wrong").await, 0);
    assert_ne!(connack_code(&app.mqtt, &new_id(), &password).await, 0);
    // Anonymous clients (mosquitto_pub, the test clients) are still accepted.
    app.mqtt(None).await;
    // A re-registration issues a new password; after DELETE the credentials are gone.
    let again = app.register(&id).await;
    let new_password = again["password"].as_str().unwrap().to_owned();
    assert_ne!(new_password, password);
    assert_eq!(connack_code(&app.mqtt, &id, &new_password).await, 0);
    assert_eq!(app.delete(&id, &json!({"rev": again["rev"]})).await.0, 200);
    assert_ne!(connack_code(&app.mqtt, &id, &new_password).await, 0);
}

/// The embedded broker checks credentials from its first connection: a client that connects
/// with a DA's username and a wrong password the moment the port opens (before the CSM has
/// loaded the stored DAs) is refused, and once the controller is ready the DA's real password
/// (issued by a registration before the restart) is accepted.
#[tokio::test]
async fn credentials_are_checked_from_the_first_connection() {
    let mqtt = free_addr();
    let mut app = App::start(AppOptions {
        mqtt_listen: Some(mqtt.clone()),
        ..Default::default()
    })
    .await;
    let id = new_id();
    let password = app.register(&id).await["password"]
        .as_str()
        .unwrap()
        .to_owned();
    app.stop().await;

    // Knocks until the restarted broker's port opens, then sends CONNECT at once.
    let early = tokio::spawn({
        let (mqtt, id) = (mqtt.clone(), id.clone());
        async move { connack_code(&mqtt, &id, "wrong").await }
    });
    let app = app.restart().await;
    assert_eq!(app.mqtt, mqtt);
    assert_ne!(
        early.await.unwrap(),
        0,
        "a wrong password was accepted while the controller started"
    );
    // The restored credentials are in place once the CSM's task has loaded the stored DAs,
    // which may be a moment after the ready line; until then the DA is refused and retries.
    let deadline = tokio::time::Instant::now() + WAIT;
    while connack_code(&app.mqtt, &id, &password).await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restored DA's password is still refused"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_ne!(connack_code(&app.mqtt, &id, "wrong").await, 0);
}
