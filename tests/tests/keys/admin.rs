//! The store's life: sealed at start and after `key seal`, restart, unseal, rotate, the
//! audit trail, nothing readable on disk, the CLI, and authentication with the topic ACL.

use iot_tests::{CcmClient, Mqtt, ADMIN_PASSWORD, ADMIN_USER};
use rumqttc::QoS;
use serde_json::json;

use super::*;

/// Every file under `dir` (the database and its journal, the log), as bytes.
fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_file() {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn sealed_at_start_and_after_seal_unsealed_only_by_the_password_and_nothing_on_disk() {
    let app = start("", false).await;
    let c = CcmClient::of(&app);
    let status = api(&c, Method::GET, "/api/keys/status", None, 200).await;
    assert_eq!(status["initialised"], false, "{status}");
    // Not from a web page: a cross-site request (Origin) or a rebound domain (Host).
    for (header, value) in [
        ("Origin", "http://evil.example"),
        ("Host", "evil.example:80"),
    ] {
        let r = c
            .http
            .post(format!("{}/api/keys/seal", c.base))
            .header(header, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{header}: {value}");
    }
    assert_eq!(ccm_metric(&c, "iotctl_km_admin_refused_total").await, 2.0);
    let mut m = listener(&app, CLIENT, None).await;
    // Not initialised: sealed to a client.
    let r = request(CLIENT_PW, CLIENT, MID, "db", now());
    assert_eq!(code(&ask(&mut m, CLIENT, &r).await), "sealed");
    provision(&c).await;
    let again = api(
        &c,
        Method::POST,
        "/api/keys/init",
        Some(json!({"password": "x"})),
        409,
    )
    .await;
    assert!(
        again["reason"].as_str().unwrap().contains("already"),
        "{again}"
    );

    api(&c, Method::POST, "/api/keys/seal", None, 200).await;
    let r = request(CLIENT_PW, CLIENT, MID, "db", now());
    assert_eq!(code(&ask(&mut m, CLIENT, &r).await), "sealed");
    let refused = api(
        &c,
        Method::PUT,
        "/api/keys/secrets/x",
        Some(json!({"value": "v"})),
        503,
    )
    .await;
    assert!(
        refused["reason"].as_str().unwrap().contains("sealed"),
        "{refused}"
    );
    let wrong = api(
        &c,
        Method::POST,
        "/api/keys/unseal",
        Some(json!({"password": "guess"})),
        403,
    )
    .await;
    assert_eq!(wrong["reason"], "wrong unseal password");
    assert_eq!(ccm_metric(&c, "iotctl_km_unseal_failures_total").await, 1.0);
    api(
        &c,
        Method::POST,
        "/api/keys/unseal",
        Some(json!({"password": UNSEAL})),
        200,
    )
    .await;
    let r = request(CLIENT_PW, CLIENT, MID, "db", now());
    assert_eq!(
        open(&ask(&mut m, CLIENT, &r).await, CLIENT_PW, CLIENT, MID, &r),
        VALUE
    );

    // Restart: the store is there, sealed; the password opens it again.
    drop(m);
    let app = app.restart().await;
    let c = CcmClient::of(&app);
    let status = api(&c, Method::GET, "/api/keys/status", None, 200).await;
    assert_eq!(
        (status["initialised"].clone(), status["sealed"].clone()),
        (json!(true), json!(true))
    );
    let mut m = listener(&app, CLIENT, None).await;
    let r = request(CLIENT_PW, CLIENT, MID, "db", now() + 1);
    assert_eq!(code(&ask(&mut m, CLIENT, &r).await), "sealed");
    api(
        &c,
        Method::POST,
        "/api/keys/unseal",
        Some(json!({"password": UNSEAL})),
        200,
    )
    .await;
    let r = request(CLIENT_PW, CLIENT, MID, "db", now() + 2);
    assert_eq!(
        open(&ask(&mut m, CLIENT, &r).await, CLIENT_PW, CLIENT, MID, &r),
        VALUE
    );

    // Neither the value nor a password, in any encoding, is in the database or the log.
    let mut app = app;
    app.stop().await;
    let b64 = "aHVudGVyMi12YWx1ZS1jMGZmZWUtNWUxZg"; // VALUE in base64, without padding
    for (name, bytes) in files(&app.data_dir) {
        for needle in [VALUE, UNSEAL, CLIENT_PW, b64, &hex_of(VALUE)] {
            assert!(
                !contains(&bytes, needle.as_bytes()),
                "{name} holds {needle}"
            );
        }
    }
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_cli_rotates_the_password_and_shows_names_clients_and_the_audit_never_values() {
    let app = start("", false).await;
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&app
        .iotctl(&["key", "init", "--password-stdin"], Some("first-pw\n"))
        .await);
    ok(&app
        .iotctl(&["key", "put", "db", "--value-stdin"], Some(VALUE))
        .await);
    let add = [
        "key",
        "client",
        "add",
        CLIENT,
        "--machine-id",
        MID,
        "--keys",
        "db,other",
        "--password-stdin",
    ];
    ok(&app.iotctl(&add, Some(CLIENT_PW)).await);
    let list = ok(&app.iotctl(&["key", "list"], None).await);
    assert!(list.contains(" db") && !list.contains(VALUE), "{list}");
    let clients = ok(&app.iotctl(&["key", "client", "list"], None).await);
    assert!(clients.contains("backup: db, other"), "{clients}");

    // `iotctl key get`, the client side: the value as it is on stdout; a wrong password
    // fails at once with the code; the machine id from the environment works too.
    let get = ["key", "get", "db", "--client", CLIENT, "--password-stdin"];
    let with_mid = [&get[..], &["--machine-id", MID]].concat();
    assert_eq!(ok(&app.iotctl(&with_mid, Some(CLIENT_PW)).await), VALUE);
    let started = std::time::Instant::now();
    let wrong = app.iotctl(&with_mid, Some("not the password")).await;
    assert!(!wrong.status.success());
    let why = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        why.contains("(denied)") && !why.contains("not the password"),
        "{why}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "denied is not retried"
    );
    let out = tokio::process::Command::new(iot_tests::iotctl_bin())
        .arg("-c")
        .arg(&app.config)
        .args(get)
        .env("IOTCTL_MACHINE_ID", format!("  {MID}\n"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = feed(out, CLIENT_PW).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), VALUE, "{out:?}");

    // The value kept its bytes (the newline ending stdin removed).
    let mut m = listener(&app, CLIENT, None).await;
    let r = request(CLIENT_PW, CLIENT, MID, "db", now());
    assert_eq!(
        open(&ask(&mut m, CLIENT, &r).await, CLIENT_PW, CLIENT, MID, &r),
        VALUE
    );

    // Rotate: a wrong current password is refused; then the new one unseals, the old not.
    let bad = app
        .iotctl(
            &["key", "rotate", "--password-stdin"],
            Some("nope\nsecond-pw\n"),
        )
        .await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("wrong unseal password"));
    ok(&app
        .iotctl(
            &["key", "rotate", "--password-stdin"],
            Some("first-pw\nsecond-pw\n"),
        )
        .await);
    ok(&app.iotctl(&["key", "seal"], None).await);
    assert!(ok(&app.iotctl(&["key", "status"], None).await).starts_with("sealed"));
    let old = app
        .iotctl(&["key", "unseal", "--password-stdin"], Some("first-pw\n"))
        .await;
    assert!(!old.status.success());
    ok(&app
        .iotctl(&["key", "unseal", "--password-stdin"], Some("second-pw\n"))
        .await);
    let r = request(CLIENT_PW, CLIENT, MID, "db", now() + 1);
    assert_eq!(
        open(&ask(&mut m, CLIENT, &r).await, CLIENT_PW, CLIENT, MID, &r),
        VALUE
    );

    ok(&app.iotctl(&["key", "rm", "db"], None).await);
    let r = request(CLIENT_PW, CLIENT, MID, "db", now() + 2);
    assert_eq!(code(&ask(&mut m, CLIENT, &r).await), "denied");
    ok(&app.iotctl(&["key", "client", "rm", CLIENT], None).await);

    // The audit trail: requests with the MQTT client they came from, admin actions, the
    // failed unseal; newest first; never a value. (Written in the background: read until the
    // last action is there.)
    let c = CcmClient::of(&app);
    audit_until(&c, "", |rows| {
        rows.first().is_some_and(|r| r["action"] == "client_rm")
    })
    .await;
    let out = ok(&app
        .iotctl(&["key", "audit", "--json", "--limit", "100"], None)
        .await);
    assert!(!out.contains(VALUE) && !out.contains("second-pw"), "{out}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    let actions: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().into(),
                r["result"].as_str().unwrap().into(),
            )
        })
        .collect();
    let has = |a: &str, res: &str| actions.contains(&(a.into(), res.into()));
    for (a, res) in [
        ("init", "ok"),
        ("put", "ok"),
        ("client_add", "ok"),
        ("request", "ok"),
        ("request", "denied"),
        ("rotate", "wrong_password"),
        ("rotate", "ok"),
        ("seal", "ok"),
        ("unseal", "wrong_password"),
        ("unseal", "ok"),
        ("rm", "ok"),
        ("client_rm", "ok"),
    ] {
        assert!(has(a, res), "no {a}/{res} in {actions:?}");
    }
    assert_eq!(
        actions[0],
        ("client_rm".into(), "ok".into()),
        "newest first"
    );
    let req = rows.iter().find(|r| r["action"] == "request").unwrap();
    assert!(req["from"].as_str().unwrap().starts_with("test-"), "{req}");
    assert_eq!(req["client"], CLIENT);
    let of_client = ok(&app
        .iotctl(&["key", "audit", "--client", CLIENT], None)
        .await);
    assert!(of_client.lines().count() >= 4, "{of_client}");
    assert!(
        of_client.lines().all(|l| l.contains("client=backup")),
        "{of_client}"
    );
}

#[tokio::test]
async fn with_authentication_only_admins_administer_and_only_the_named_user_reads_replies() {
    let app = start("", true).await;
    let c = CcmClient::of(&app);
    let anonymous = CcmClient::anonymous(&app);
    api(&anonymous, Method::GET, "/api/keys/status", None, 401).await;
    api(
        &anonymous,
        Method::POST,
        "/api/keys/unseal",
        Some(json!({"password": "x"})),
        401,
    )
    .await;
    // Even an admin's request from a web page (with authentication on the rest of the API
    // takes it; the keymanager does not), counted.
    let from_page = c
        .http
        .post(format!("{}/api/keys/seal", c.base))
        .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
        .header("Origin", c.base.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(from_page.status().as_u16(), 403);
    assert_eq!(ccm_metric(&c, "iotctl_km_admin_refused_total").await, 1.0);
    provision(&c).await;
    for (user, pw) in [(CLIENT, "backup-broker-pw"), ("snoop", "snoop-broker-pw")] {
        app.add_user(user, "app", pw).await;
    }
    // An app user may not administer.
    let app_user = CcmClient {
        basic: Some((CLIENT.into(), "backup-broker-pw".into())),
        ..CcmClient::of(&app)
    };
    api(&app_user, Method::GET, "/api/keys/secrets", None, 403).await;

    // The broker user named like the client reads its replies; another app user may not.
    let mut snoop = Mqtt::connect_as(&app.mqtt, None, Some(("snoop", "snoop-broker-pw"))).await;
    let granted = snoop
        .subscribe_many(
            &[&km::res(CLIENT), "iottalk/km/res/+", "iottalk/km/#"],
            QoS::AtLeastOnce,
        )
        .await;
    assert_eq!(granted, [false, false, false]);
    let mut m = listener(&app, CLIENT, Some((CLIENT, "backup-broker-pw"))).await;
    let r = request(CLIENT_PW, CLIENT, MID, "db", now());
    assert_eq!(
        open(&ask(&mut m, CLIENT, &r).await, CLIENT_PW, CLIENT, MID, &r),
        VALUE
    );
    // An admin may watch every reply.
    let mut admin = listener(&app, "+", Some((ADMIN_USER, ADMIN_PASSWORD))).await;
    let r = request(CLIENT_PW, CLIENT, MID, "db", now() + 1);
    m.publish(
        &km::req(CLIENT),
        serde_json::to_vec(&r).unwrap(),
        QoS::AtLeastOnce,
        false,
    )
    .await;
    let seen = admin
        .recv_until("the reply, seen by the admin", |_| true)
        .await;
    assert_eq!(seen.topic, km::res(CLIENT));
}

#[tokio::test]
async fn on_postgresql_the_store_and_every_audit_record_are_kept() {
    let pg = iot_tests::PgSchema::create();
    let schema = pg.name.clone();
    let psql = |sql: String| pg.psql(&sql);
    let app = App::start(AppOptions {
        db_url: Some(pg.url()),
        ..AppOptions::default()
    })
    .await;
    let c = CcmClient::of(&app);
    provision(&c).await;
    api(
        &c,
        Method::POST,
        "/api/keys/init",
        Some(json!({"password": "again"})),
        409,
    )
    .await;
    let mut m = listener(&app, CLIENT, None).await;
    let r = request(CLIENT_PW, CLIENT, MID, "db", now());
    assert_eq!(
        open(&ask(&mut m, CLIENT, &r).await, CLIENT_PW, CLIENT, MID, &r),
        VALUE
    );
    // A client name longer than any column, from the topic: recorded, cut to fit.
    let long = "x".repeat(300);
    let mut lm = listener(&app, &long, None).await;
    let r = request("pw", &long, MID, "db", now());
    assert_eq!(code(&ask(&mut lm, &long, &r).await), "denied");
    let rows = audit_until(&c, "?limit=50", |rows| {
        rows.iter().any(|r| r["result"] == "denied")
    })
    .await;
    let has = |action: &str, result: &str| {
        rows.iter()
            .any(|r| r["action"] == action && r["result"] == result)
    };
    assert!(has("init", "already_init"), "{rows:?}");
    assert!(has("request", "ok"), "{rows:?}");
    assert!(
        rows.iter()
            .any(|r| r["result"] == "denied" && r["client"] == "x".repeat(64)),
        "{rows:?}"
    );
    assert_eq!(psql(format!("SELECT count(*) FROM {schema}.km_store")), "1");
    let doc = psql(format!("SELECT doc FROM {schema}.km_store"));
    assert!(
        !doc.contains(VALUE) && !doc.contains(&hex_of(VALUE)),
        "{doc}"
    );
}

/// The audit trail (`GET /api/keys/audit{query}`) once `done` says it is complete; records are
/// written in the background.
async fn audit_until(c: &CcmClient, query: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + iot_tests::WAIT;
    loop {
        let v = api(
            c,
            Method::GET,
            &format!("/api/keys/audit{query}"),
            None,
            200,
        )
        .await;
        let rows = v.as_array().unwrap().clone();
        if done(&rows) {
            return rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "audit trail incomplete: {rows:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Writes `line` to the child's stdin, then waits for it.
async fn feed(mut child: tokio::process::Child, line: &str) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    drop(input);
    tokio::time::timeout(iot_tests::WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap()
}
