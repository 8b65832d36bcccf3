//! Users, roles and authentication (issue "Security"): `iotctl user`, CONNECT checks with
//! authentication on, the operator endpoints for admins only, the takeover guard of online
//! DAs, the registration rate limit and the public-bind refusal. Real binary, real clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use iot_tests::*;
use serde_json::{json, Value};

fn auth_on() -> AppOptions {
    AppOptions {
        auth: true,
        ..AppOptions::default()
    }
}

/// `iotctl_auth_refused_total{reason=...}` now.
async fn refused(app: &App, reason: &str) -> f64 {
    app.metric(&format!("iotctl_auth_refused_total{{reason=\"{reason}\"}}"))
        .await
}

/// Polls until `connack_code(user, password)` is `want` (users are reloaded every 2 s).
async fn until_connack(app: &App, user: &str, password: &str, accepted: bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let code = connack_code(&app.mqtt, user, password).await;
        if (code == 0) == accepted {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user}: CONNACK {code}, wanted accepted={accepted}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn users_are_managed_from_the_cli_and_checked_at_connect() {
    let app = App::start(auth_on()).await;
    // The admin created before the start connects; a wrong password, an unknown user and an
    // anonymous client are refused (3.1.1: 4 bad username or password, 5 not authorized).
    assert_eq!(connack_code(&app.mqtt, ADMIN_USER, ADMIN_PASSWORD).await, 0);
    assert!(matches!(
        connack_code(&app.mqtt, ADMIN_USER, "wrong").await,
        4 | 5
    ));
    assert!(matches!(
        connack_code(&app.mqtt, "nobody", "x").await,
        4 | 5
    ));
    assert_eq!(connack_with(&app.mqtt, None, None).await, 5);

    // A user added while the controller runs: generated password printed once.
    let out = app
        .iotctl(&["user", "add", "app1", "--role", "app"], None)
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let password = text
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap_or_else(|| panic!("no generated password in {text}"))
        .to_owned();
    assert!(password.len() >= 20, "{password}");
    until_connack(&app, "app1", &password, true).await;

    // Listed with roles, never with a hash.
    let out = app.iotctl(&["user", "list", "--json"], None).await;
    let list: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let roles: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["name"].as_str().unwrap(), u["role"].as_str().unwrap()))
        .collect();
    assert_eq!(roles, [("app1", "app"), (ADMIN_USER, "admin")]);
    assert!(!stdout(&out).contains("argon2"), "{}", stdout(&out));

    // A second user of the same name, a bad role, a name of a DA id's form: refused.
    let out = app
        .iotctl(&["user", "add", "app1", "--role", "app"], None)
        .await;
    assert!(
        !out.status.success() && stderr(&out).contains("exists"),
        "{}",
        stderr(&out)
    );
    let out = app
        .iotctl(&["user", "add", "x", "--role", "root"], None)
        .await;
    assert!(!out.status.success(), "{}", stdout(&out));
    let out = app
        .iotctl(&["user", "add", &new_id(), "--role", "app"], None)
        .await;
    assert!(stderr(&out).contains("DA id"), "{}", stderr(&out));

    // passwd: the old password stops working, the new one works.
    let out = app
        .iotctl(
            &["user", "passwd", "app1", "--password-stdin"],
            Some("second-password"),
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    until_connack(&app, "app1", "second-password", true).await;
    assert_ne!(connack_code(&app.mqtt, "app1", &password).await, 0);

    // A client id is its session's user's: app1 cannot take the admin's over (refused and
    // counted), and the admin stays connected.
    let (host, port) = app.mqtt.rsplit_once(':').unwrap();
    let with_id = |user: &str, password: &str| {
        let mut o = rumqttc::MqttOptions::new("owned-client-id", host, port.parse().unwrap());
        o.set_credentials(user, password);
        o
    };
    let (admin, mut admin_ev) = rumqttc::AsyncClient::new(with_id(ADMIN_USER, ADMIN_PASSWORD), 10);
    match tokio::time::timeout(WAIT, admin_ev.poll()).await {
        Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a)))) => {
            assert_eq!(a.code, rumqttc::ConnectReturnCode::Success)
        }
        other => panic!("admin CONNECT: {other:?}"),
    }
    let before = refused(&app, "mqtt_client_id_taken").await;
    let (_thief, mut thief_ev) = rumqttc::AsyncClient::new(with_id("app1", "second-password"), 10);
    match tokio::time::timeout(WAIT, thief_ev.poll()).await {
        Ok(Err(rumqttc::ConnectionError::ConnectionRefused(code))) => {
            assert_eq!(code, rumqttc::ConnectReturnCode::NotAuthorized)
        }
        other => panic!("app1 with the admin's client id: {other:?}"),
    }
    assert_eq!(refused(&app, "mqtt_client_id_taken").await, before + 1.0);
    admin
        .subscribe("owned/#", rumqttc::QoS::AtMostOnce)
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(WAIT, admin_ev.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("the admin's connection after the refused take-over: {other:?}"),
        }
    }

    // rm: refused from then on.
    let out = app.iotctl(&["user", "rm", "app1"], None).await;
    assert!(out.status.success(), "{}", stderr(&out));
    until_connack(&app, "app1", "second-password", false).await;

    // Every refusal is counted.
    assert!(refused(&app, "mqtt_bad_credentials").await >= 3.0);
    assert!(refused(&app, "mqtt_anonymous").await >= 1.0);
    // Passwords never reach the log.
    let log = app.log_text();
    for secret in [ADMIN_PASSWORD, password.as_str(), "second-password"] {
        assert!(!log.contains(secret), "a password in the log");
    }
}

#[tokio::test]
async fn das_connect_with_their_registration_credentials_when_auth_is_on() {
    let app = App::start(auth_on()).await;
    let mut da = PyDa::registered(
        &app,
        "Sensor",
        json!([["Dummy_Sensor", ["int"]]]),
        json!([]),
    )
    .await;
    app.wait_online(1).await;
    let id = da.id.clone();
    let reply = app.register(&new_id()).await;
    let (user, password) = (
        reply["username"].as_str().unwrap(),
        reply["password"].as_str().unwrap(),
    );
    assert_eq!(connack_code(&app.mqtt, user, password).await, 0);
    assert_ne!(connack_code(&app.mqtt, user, "wrong").await, 0);
    assert_ne!(
        connack_code(&app.mqtt, &id, password).await,
        0,
        "another DA's password"
    );
    da.send("deregister").await;
    da.expect("deregistered").await;
}

#[tokio::test]
async fn operator_endpoints_need_an_admin() {
    let app = App::start(auth_on()).await;
    let out = app
        .iotctl(
            &["user", "add", "viewer", "--role", "app", "--password-stdin"],
            Some("viewer-pw"),
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let id = new_id();
    app.register(&id).await;
    let http = reqwest::Client::new();
    for path in ["/status", "/metrics", "/varz"] {
        let url = format!("{}{path}", app.csm);
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without credentials");
        assert!(r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"));
        let r = http
            .get(&url)
            .basic_auth(ADMIN_USER, Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} wrong password");
        // The app user is loaded within the reload period.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = http
                .get(&url)
                .basic_auth("viewer", Some("viewer-pw"))
                .send()
                .await
                .unwrap();
            if r.status() == 403 {
                let body: Value = r.json().await.unwrap();
                assert!(body["reason"].as_str().unwrap().contains("admin"), "{body}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path}: {}",
                r.status()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let r = http
            .get(&url)
            .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} as admin");
    }
    let r = http
        .get(format!("{}/healthz", app.csm))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A DA's rev (which deregisters it) is shown to admins only.
    let (code, body) = app.get(&id).await;
    assert_eq!(code, 200);
    assert!(body.get("rev").is_none(), "{body}");
    let body: Value = app
        .operator(http.get(app.url(&id)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body["rev"].is_string(), "{body}");

    // `iotctl status` says what it needs, and shows everything with an admin.
    let out = app.iotctl(&["status"], None).await;
    assert!(stdout(&out).contains("need an admin"), "{}", stdout(&out));
    let out = tokio::process::Command::new(iotctl_bin())
        .args(["-c", app.config.to_str().unwrap(), "status"])
        .env("IOTCTL_USER", ADMIN_USER)
        .env("IOTCTL_PASSWORD", ADMIN_PASSWORD)
        .output()
        .await
        .unwrap();
    assert!(stdout(&out).contains("registered 1"), "{}", stdout(&out));

    assert!(refused(&app, "http_no_credentials").await >= 3.0);
    assert!(refused(&app, "http_bad_credentials").await >= 3.0);
    assert!(refused(&app, "http_not_admin").await >= 3.0);
}

/// Re-registering a DA that is online needs its credentials (with authentication off too);
/// once it is offline, a re-registration works as before (a device restarting).
#[tokio::test]
async fn an_online_da_cannot_be_taken_over_by_re_registering_it() {
    let app = App::spawn().await;
    let id = new_id();
    let reply = app.register(&id).await;
    let (user, password) = (
        reply["username"].as_str().unwrap().to_owned(),
        reply["password"].as_str().unwrap().to_owned(),
    );
    let ctrl_i = format!("{id}/ctrl/i");
    let offline = json!({"state": "offline", "rev": reply["rev"]});
    let da = Mqtt::connect_as(
        &app.mqtt,
        Some((ctrl_i.clone(), offline)),
        Some((&user, &password)),
    )
    .await;
    da.publish_json(
        &ctrl_i,
        &json!({"state": "online", "rev": reply["rev"]}),
        true,
    )
    .await;
    app.wait_online(1).await;

    let (code, body) = app.put(&id, &register_body()).await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("online"),
        "{body}"
    );
    let http = reqwest::Client::new();
    let r = http
        .put(app.url(&id))
        .basic_auth(&id, Some("wrong"))
        .json(&register_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // The DA itself may (its credentials, as HTTP Basic).
    let r = http
        .put(app.url(&id))
        .basic_auth(&id, Some(&password))
        .json(&register_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let second: Value = r.json().await.unwrap();
    assert_ne!(second["rev"], reply["rev"]);

    // Offline (the will fires): anyone may register the id again, as a restarting device does.
    let again = Mqtt::connect_as(
        &app.mqtt,
        None,
        Some((&user, second["password"].as_str().unwrap())),
    )
    .await;
    again
        .publish_json(
            &ctrl_i,
            &json!({"state": "online", "rev": second["rev"]}),
            true,
        )
        .await;
    app.wait_online(1).await;
    assert_eq!(app.put(&id, &register_body()).await.0, 409);
    again
        .publish_json(
            &ctrl_i,
            &json!({"state": "offline", "rev": second["rev"]}),
            true,
        )
        .await;
    app.wait_status("offline", |s| s["online"] == 0).await;
    assert_eq!(app.put(&id, &register_body()).await.0, 200);
    da.kill();
    assert!(refused(&app, "takeover").await >= 3.0);
}

/// An iottalk-py DA that exits without deregistering comes back under the same id.
#[tokio::test]
async fn a_restarting_iottalk_py_da_registers_again() {
    let app = App::spawn().await;
    let id = new_id();
    let mut da = PyDa::spawn(
        &app.csm,
        &id,
        "Sensor",
        json!([["Dummy_Sensor", ["int"]]]),
        json!([]),
    )
    .await;
    da.expect("registered").await;
    app.wait_online(1).await;
    da.exit().await;
    app.wait_status("the will", |s| s["online"] == 0).await;
    let mut back = PyDa::spawn(
        &app.csm,
        &id,
        "Sensor",
        json!([["Dummy_Sensor", ["int"]]]),
        json!([]),
    )
    .await;
    back.expect("registered").await;
    app.wait_online(1).await;
    back.send("deregister").await;
    back.expect("deregistered").await;
}

#[tokio::test]
async fn registration_is_rate_limited_per_address() {
    let app = App::start(AppOptions {
        extra_toml: "[csm]\nregistration_rate = \"3/1m\"\n".into(),
        ..AppOptions::default()
    })
    .await;
    for _ in 0..3 {
        app.register(&new_id()).await;
    }
    let r = reqwest::Client::new()
        .put(app.url(&new_id()))
        .json(&register_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["reason"].as_str().unwrap().contains("too many"),
        "{body}"
    );
    // Other requests are not limited.
    assert_eq!(app.status().await["registered"], 3);
    assert_eq!(refused(&app, "rate_limited").await, 1.0);
}

/// `iotctl start` will not expose a listener beyond loopback without authentication, and says
/// how to fix it; authentication needs `start all` and the embedded broker.
#[tokio::test]
async fn start_refuses_to_expose_listeners_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[csm]\nlisten = \"0.0.0.0:0\"\n",
            &["start"][..],
            "refusing to start",
        ),
        (
            "[broker]\nws_listen = \"0.0.0.0:0\"\n",
            &["start"][..],
            "broker.ws_listen",
        ),
        (
            "[ccm]\nlisten = \"0.0.0.0:0\"\n",
            &["start", "ccm"][..],
            "ccm.listen",
        ),
        (
            "[auth]\nenabled = true\n",
            &["start", "broker"][..],
            "start all",
        ),
        (
            "[auth]\nenabled = true\n[broker]\nexternal = \"mqtt://127.0.0.1:1883\"\n",
            &["start"][..],
            "embedded broker",
        ),
    ];
    for (i, (toml, args, want)) in cases.into_iter().enumerate() {
        let cfg = dir.path().join(format!("c{i}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[paths]\ndata_dir = \"{}\"\n{toml}",
                dir.path().join(format!("d{i}")).display()
            ),
        )
        .unwrap();
        let out = iotctl_cli(&cfg, args, None).await;
        assert!(!out.status.success(), "{toml}: started");
        let err = stderr(&out);
        assert!(err.contains(want), "{toml}: {err}");
        if i == 0 {
            assert!(
                err.contains("auth.insecure_allow_public") && err.contains("iotctl user add"),
                "{err}"
            );
        }
    }
}

/// Users live in PostgreSQL as well as in SQLite, as Argon2id hashes.
#[tokio::test]
async fn users_are_stored_as_argon2id_hashes_in_postgresql() {
    let pg = PgSchema::create();
    let app = App::start(AppOptions {
        auth: true,
        db_url: Some(pg.url()),
        ..AppOptions::default()
    })
    .await;
    assert_eq!(connack_code(&app.mqtt, ADMIN_USER, ADMIN_PASSWORD).await, 0);
    let stored = pg.psql(&format!(
        "SELECT role, password_hash FROM {}.users",
        pg.name
    ));
    assert!(stored.starts_with("admin|$argon2id$"), "{stored}");
    assert!(!stored.contains(ADMIN_PASSWORD));
}
