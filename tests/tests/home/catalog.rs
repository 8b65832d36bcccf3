//! The catalog and around it: refusals, the rate limit, restart, retained states and catalog.

use super::*;

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
