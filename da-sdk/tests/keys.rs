#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The SDK's keymanager client against the real controller over real MQTT: the store set up
//! through the CCM's `/api/keys`, values fetched (async and blocking), which refusals are
//! retried and which are returned at once (checked on the clock and in the audit trail),
//! sealed then unsealed during the retries, the rate limit's `retry_after_ms`, names refused
//! unsent, the broker's topic ACL with authentication on, and `mqtts` with the controller's CA.

use std::time::{Duration, Instant};

use da_sdk::{KeyClient, KeyClientBuilder, KeyError, Zeroizing};
use iot_tests::{App, AppOptions, CcmClient, WAIT};
use reqwest::Method;
use serde_json::{json, Value};

const UNSEAL: &str = "unseal-pw-sdk-31b7";
const CLIENT: &str = "backup";
const CLIENT_PW: &str = "client-pw-sdk-9c04";
const MID: &str = "5d0c9e1f3a7b4c2d8e6f0a1b3c5d7e9f";
const VALUE: &str = "hunter2-sdk-value-77aa";

async fn start(extra_toml: &str, auth: bool) -> App {
    App::start(AppOptions {
        extra_toml: extra_toml.into(),
        auth,
        ..AppOptions::default()
    })
    .await
}

/// `method /api/keys/<path>` as the admin, asserting success.
async fn api(app: &App, method: Method, path: &str, body: Option<Value>) -> Value {
    let (s, v) = CcmClient::of(app)
        .call(method.clone(), &format!("/api/keys/{path}"), body.as_ref())
        .await;
    assert_eq!(s, 200, "{method} {path}: {v}");
    v
}

/// The store created (unsealed), the key `db`, the client [`CLIENT`] on [`MID`] allowed `keys`.
async fn provision(app: &App, keys: &[&str]) {
    api(app, Method::POST, "init", Some(json!({"password": UNSEAL}))).await;
    api(
        app,
        Method::PUT,
        "secrets/db",
        Some(json!({"value": VALUE})),
    )
    .await;
    let client = json!({"machine_id": MID, "keys": keys, "password": CLIENT_PW});
    api(app, Method::PUT, &format!("clients/{CLIENT}"), Some(client)).await;
}

/// A client of [`CLIENT`] with `password`, with test timings: 3 s per attempt, short waits.
fn client(app: &App, password: &str) -> KeyClientBuilder {
    KeyClient::builder(
        format!("mqtt://{}", app.mqtt),
        CLIENT,
        Zeroizing::new(password.to_owned()),
    )
    .machine_id(MID)
    .timeout(Duration::from_secs(3))
    .backoff(Duration::from_millis(100), Duration::from_millis(200))
}

/// `c.get(name)`, bounded.
async fn get(c: &KeyClient, name: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    tokio::time::timeout(WAIT, c.get(name))
        .await
        .expect("get returns in time")
}

/// The `request` records of [`CLIENT`] in the audit trail, newest first.
async fn requests(app: &App) -> Vec<Value> {
    let trail = api(app, Method::GET, &format!("audit?client={CLIENT}"), None).await;
    let all = trail.as_array().expect("audit records").clone();
    all.into_iter()
        .filter(|r| r["action"] == "request")
        .collect()
}

/// Waits until the audit trail holds at least `n` requests of [`CLIENT`] (written in batches).
async fn wait_requests(app: &App, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = requests(app).await;
        if r.len() >= n {
            return r;
        }
        assert!(Instant::now() < deadline, "{n} requests audited: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn results(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_value_comes_back_async_and_blocking() {
    let app = start("", false).await;
    provision(&app, &["db", "big"]).await;
    // The largest value the store takes, so the reply is bigger than rumqttc's default limit.
    let big = hex::encode(rand::random::<[u8; 32]>()).repeat(1024);
    assert_eq!(big.len(), 64 * 1024);
    api(
        &app,
        Method::PUT,
        "secrets/big",
        Some(json!({"value": big})),
    )
    .await;

    let c = client(&app, CLIENT_PW).build().unwrap();
    assert_eq!(get(&c, "db").await.unwrap().as_slice(), VALUE.as_bytes());
    assert_eq!(get(&c, "big").await.unwrap().as_slice(), big.as_bytes());

    let blocking = client(&app, CLIENT_PW);
    let v = tokio::task::spawn_blocking(move || blocking.build_blocking().unwrap().get("db"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.as_slice(), VALUE.as_bytes());

    let audited = wait_requests(&app, 3).await;
    assert_eq!(results(&audited), ["ok", "ok", "ok"]);
    assert!(audited.iter().all(|r| r["from"]
        .as_str()
        .unwrap()
        .starts_with(&format!("km-{CLIENT}-"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_denied_at_once() {
    let app = start("", false).await;
    provision(&app, &["db"]).await;
    // Retries with a 5 s wait: returning sooner means no retry.
    let c = client(&app, "not-the-password")
        .retries(3)
        .backoff(Duration::from_secs(5), Duration::from_secs(5))
        .build()
        .unwrap();
    let t = Instant::now();
    let e = get(&c, "db").await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(
        e,
        KeyError::Refused {
            code: "denied".into(),
            retry_after_ms: None
        }
    );
    let text = e.to_string();
    assert!(text.contains("denied") && !text.contains("not-the-password"));
    // A key not granted is the same `denied`, also at once.
    let ungranted = client(&app, CLIENT_PW).build().unwrap();
    assert_eq!(
        get(&ungranted, "big").await.unwrap_err().code(),
        Some("denied")
    );
    let audited = wait_requests(&app, 2).await;
    assert_eq!(results(&audited), ["denied", "denied"], "one request each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_is_retried_then_fails_or_passes_once_unsealed() {
    let app = start("", false).await;
    provision(&app, &["db"]).await;
    api(&app, Method::POST, "seal", None).await;

    let c = client(&app, CLIENT_PW).retries(2).build().unwrap();
    let e = get(&c, "db").await.unwrap_err();
    assert_eq!(e.code(), Some("sealed"), "{e}");
    assert!(e.to_string().contains("unseal"), "{e}");
    let audited = wait_requests(&app, 3).await;
    assert_eq!(results(&audited), ["sealed"; 3], "three attempts");

    // Unsealed while a patient client is still trying: its next attempt gets the value.
    let patient = client(&app, CLIENT_PW)
        .retries(100)
        .backoff(Duration::from_millis(200), Duration::from_millis(200))
        .build()
        .unwrap();
    let pending = tokio::spawn(async move { get(&patient, "db").await });
    wait_requests(&app, 4).await;
    api(
        &app,
        Method::POST,
        "unseal",
        Some(json!({"password": UNSEAL})),
    )
    .await;
    let v = pending.await.unwrap().unwrap();
    assert_eq!(v.as_slice(), VALUE.as_bytes());
    let audited = wait_requests(&app, 5).await;
    assert_eq!(audited[0]["result"], "ok");
    assert!(results(&audited[1..]).iter().all(|r| *r == "sealed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_waits_the_retry_after_then_passes() {
    let app = start("[keymanager]\nrate_limit = \"1/2s\"\n", false).await;
    provision(&app, &["db"]).await;
    let c = client(&app, CLIENT_PW).build().unwrap();
    get(&c, "db").await.unwrap();

    // No retry: the code and the wait the keymanager asked for.
    let once = client(&app, CLIENT_PW).retries(0).build().unwrap();
    match get(&once, "db").await.unwrap_err() {
        KeyError::Refused {
            code,
            retry_after_ms: Some(ms),
        } if code == "limited" => assert!((1..=2000).contains(&ms), "{ms}"),
        other => panic!("{other:?}"),
    }
    // With retries: waits as asked (the backoff alone is 100-200 ms) and gets the value.
    let t = Instant::now();
    assert_eq!(get(&c, "db").await.unwrap().as_slice(), VALUE.as_bytes());
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    let audited = wait_requests(&app, 4).await;
    assert_eq!(audited[0]["result"], "ok");
    assert!(audited[1..].iter().any(|r| r["result"] == "limited"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_name_is_refused_unsent() {
    let app = start("", false).await;
    provision(&app, &["db"]).await;
    let c = client(&app, CLIENT_PW).build().unwrap();
    let long = "k".repeat(65);
    for name in ["", "a/b", "db/#", "+", "db key", long.as_str()] {
        let e = get(&c, name).await.unwrap_err();
        assert!(matches!(e, KeyError::BadName(_)), "{name}: {e}");
    }
    let bad_client = KeyClient::builder(
        format!("mqtt://{}", app.mqtt),
        "a/+",
        Zeroizing::new(CLIENT_PW.to_owned()),
    );
    assert!(matches!(
        bad_client.machine_id(MID).build(),
        Err(KeyError::BadName(_))
    ));
    // The one request audited is the valid one that follows.
    get(&c, "db").await.unwrap();
    let audited = wait_requests(&app, 1).await;
    assert_eq!(results(&audited), ["ok"]);
    assert_eq!(audited[0]["key"], "db");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_only_the_clients_app_user_or_an_admin_reads_the_replies() {
    let app = start("", true).await;
    provision(&app, &["db"]).await;
    for (user, pw) in [(CLIENT, "backup-mqtt-pw"), ("other", "other-mqtt-pw")] {
        app.add_user(user, "app", pw).await;
    }
    let as_user = |user: &str, pw: &str| {
        client(&app, CLIENT_PW)
            .retries(3)
            .backoff(Duration::from_secs(5), Duration::from_secs(5))
            .credentials(user, Zeroizing::new(pw.to_owned()))
            .build()
            .unwrap()
    };
    let once_known = |user: &'static str, pw: &'static str| {
        let c = as_user(user, pw);
        async move { get(&c, "db").await }
    };

    // The client's own app user.
    let own = once_known(CLIENT, "backup-mqtt-pw").await.unwrap();
    assert_eq!(own.as_slice(), VALUE.as_bytes());
    // Another app user: the broker refuses the reply topic, at once and without a request.
    let e = once_known("other", "other-mqtt-pw").await.unwrap_err();
    let refused = KeyError::NotAllowed {
        topic: format!("iottalk/km/res/{CLIENT}"),
    };
    assert_eq!(e, refused);
    assert!(e.to_string().contains("app user named like"), "{e}");
    let t = Instant::now();
    let again = get(&as_user("other", "other-mqtt-pw"), "db").await;
    assert_eq!(again.unwrap_err(), refused);
    // A wrong MQTT password, or none: the broker refuses the connection, also at once.
    let wrong = get(&as_user(CLIENT, "wrong"), "db").await.unwrap_err();
    assert!(matches!(wrong, KeyError::Connect(_)), "{wrong}");
    let anonymous = client(&app, CLIENT_PW)
        .retries(3)
        .backoff(Duration::from_secs(5), Duration::from_secs(5));
    let none = get(&anonymous.build().unwrap(), "db").await.unwrap_err();
    assert!(matches!(none, KeyError::Connect(_)), "{none}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // An admin may read any reply topic.
    let admin = as_user(iot_tests::ADMIN_USER, iot_tests::ADMIN_PASSWORD);
    assert_eq!(
        get(&admin, "db").await.unwrap().as_slice(),
        VALUE.as_bytes()
    );
    let audited = wait_requests(&app, 2).await;
    assert_eq!(results(&audited), ["ok", "ok"], "nothing sent when refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mqtts_with_the_controllers_ca() {
    let certs = iot_tests::tls::gencert();
    let app = App::start(AppOptions {
        extra_toml: certs.toml(),
        ca_file: Some(certs.ca.clone()),
        ..AppOptions::default()
    })
    .await;
    provision(&app, &["db"]).await;
    let url = format!("mqtts://{}", app.mqtts.as_deref().expect("a TLS listener"));
    let over_tls = |ca: Vec<u8>| {
        KeyClient::builder(&url, CLIENT, Zeroizing::new(CLIENT_PW.to_owned()))
            .machine_id(MID)
            .timeout(Duration::from_secs(3))
            .backoff(Duration::from_secs(5), Duration::from_secs(5))
            .tls_roots_pem(ca)
            .build()
            .unwrap()
    };
    let c = over_tls(std::fs::read(&certs.ca).unwrap());
    assert_eq!(get(&c, "db").await.unwrap().as_slice(), VALUE.as_bytes());
    // Another CA: a TLS error, at once (no retry).
    let other_ca = iot_tests::workspace().join("broker/tests/data/tls/ca.pem");
    let t = Instant::now();
    let e = get(&over_tls(std::fs::read(other_ca).unwrap()), "db")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, KeyError::Connect(m) if m.contains("TLS")),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
