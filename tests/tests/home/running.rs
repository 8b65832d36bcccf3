//! Running targets: nested scenes, variants, lookup, partial failure, one deadline, retries.

use super::*;

/// A scene of scenes run over REST: the command passes down to every item without one of
/// its own; an item's own command wins, even over `off`.
#[tokio::test]
async fn nested_scenes_pass_the_command_down_and_an_items_own_command_wins() {
    let app = start("").await;
    let c = CcmClient::of(&app);
    let lamp = TplinkSim::bulb().await;
    let plug = TplinkSim::plug().await;
    let web = HttpTarget::start().await;
    let catalog = json!({
        "devices": {
            "lamp": lamp.catalog_entry(),
            "plug": plug.catalog_entry(),
            "porch": web.catalog_entry("/porch/{cmd}"),
        },
        "scenes": {
            "porch-lights": ["porch", "plug"],
            "evening": ["lamp:dim:30", "porch-lights"],
        },
    });
    put_catalog(&c, &catalog).await;
    let (s, stored) = c.get("/api/home").await;
    assert_eq!(s, 200, "{stored}");
    assert_eq!(stored["devices"]["lamp"]["driver"], "tplink");
    assert_eq!(stored["devices"]["lamp"]["port"], lamp.port());
    assert_eq!(stored["devices"]["porch"]["driver"], "http");
    assert_eq!(
        stored["scenes"]["evening"],
        json!(["lamp:dim:30", "porch-lights"])
    );

    let r = run_rest(
        &c,
        "evening",
        Some(&json!({"cmd": "dim:40", "deadline_ms": 5000})),
    )
    .await;
    assert!(r.ok, "{}", tree(&r));
    assert_eq!((r.target.as_str(), r.cmd.as_str()), ("evening", "dim:40"));
    assert_eq!(r.children.len(), 2, "{}", tree(&r));
    let l = child(&r, "lamp");
    assert!(l.ok && l.children.is_empty(), "{}", tree(&r));
    assert_eq!(l.cmd, "dim:30", "the item's own command: {}", tree(&r));
    let pl = child(&r, "porch-lights");
    assert_eq!(pl.cmd, "dim:40", "passed down: {}", tree(&r));
    assert_eq!(pl.children.len(), 2, "{}", tree(&r));
    for leaf in ["porch", "plug"] {
        let x = child(pl, leaf);
        assert!(x.ok, "{}", tree(&r));
        assert_eq!(x.cmd, "dim:40", "passed down two levels: {}", tree(&r));
    }
    let reqs = lamp.wait_requests(1).await;
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(light(&reqs[0].request)["on_off"], 1, "{reqs:?}");
    assert_eq!(light(&reqs[0].request)["brightness"], 30, "{reqs:?}");
    assert_eq!(
        lamp.state(),
        DeviceState {
            on: true,
            brightness: 30
        }
    );
    let reqs = plug.wait_requests(1).await;
    assert_eq!(relay(&reqs[0].request), 1, "a plug is on at 40 %: {reqs:?}");
    assert_eq!(web.paths(), ["/porch/dim:40"]);

    // No body: the command is `on`.
    let r = run_rest(&c, "porch-lights", None).await;
    assert!(r.ok, "{}", tree(&r));
    assert_eq!(r.cmd, "on", "{}", tree(&r));
    assert_eq!(web.wait_hits(2).await[1].path, "/porch/on");

    // `off` passes down, but `lamp:dim:30` keeps its own command.
    let r = run_rest(&c, "evening", Some(&json!({"cmd": "off"}))).await;
    assert!(r.ok, "{}", tree(&r));
    assert_eq!(child(&r, "lamp").cmd, "dim:30", "{}", tree(&r));
    assert_eq!(child(child(&r, "porch-lights"), "plug").cmd, "off");
    assert!(!plug.state().on);
    assert!(lamp.state().on, "the lamp's item says dim:30");
    assert_eq!(web.wait_hits(3).await[2].path, "/porch/off");

    // Commands by target and result, leaf latencies.
    let m = ccm_metrics(&app).await;
    assert!(
        sample_sum(&m, "iotctl_home_commands_total", &["target=\"evening\""]) >= 2.0,
        "{m}"
    );
    assert!(
        sample_sum(
            &m,
            "iotctl_home_commands_total",
            &["target=\"porch-lights\""]
        ) >= 1.0,
        "{m}"
    );
    assert!(m.contains("result=\""), "{m}");
    // Eight devices reached so far (3 + 2 + 3).
    assert!(
        sample_sum(&m, "iotctl_home_leaf_seconds_count", &[]) >= 8.0,
        "{m}"
    );
    assert!(m.contains("iotctl_home_leaf_seconds_bucket{"), "{m}");
}

/// `evening:off` is run for `off`; other commands run the plain `evening`.
#[tokio::test]
async fn command_variants_are_tried_before_the_plain_scene() {
    let app = start("").await;
    let c = CcmClient::of(&app);
    let lamp = TplinkSim::bulb().await;
    let web = HttpTarget::start().await;
    put_catalog(
        &c,
        &json!({
            "devices": {"lamp": lamp.catalog_entry(), "porch": web.catalog_entry("/porch/{cmd}")},
            "scenes": {"evening": ["lamp:dim:30", "porch"], "evening:off": ["lamp", "porch"]},
        }),
    )
    .await;
    let mut a = Asker::new(&app).await;

    let r = a.ok("evening", "on").await;
    assert_eq!(child(&r, "lamp").cmd, "dim:30", "{}", tree(&r));
    assert_eq!(
        lamp.state(),
        DeviceState {
            on: true,
            brightness: 30
        }
    );
    assert_eq!(web.wait_hits(1).await[0].path, "/porch/on");

    let r = a.ok("evening", "off").await;
    assert_eq!(r.cmd, "off", "{}", tree(&r));
    assert_eq!(r.children.len(), 2, "{}", tree(&r));
    assert_eq!(
        child(&r, "lamp").cmd,
        "off",
        "the variant's `lamp`: {}",
        tree(&r)
    );
    let reqs = lamp.wait_requests(2).await;
    assert_eq!(light(&reqs[1].request)["on_off"], 0, "{reqs:?}");
    assert!(!lamp.state().on);
    assert_eq!(web.wait_hits(2).await[1].path, "/porch/off");

    // No variant for dim:50: the plain scene, the lamp at its own 30 %.
    let r = a.ok("evening", "dim:50").await;
    assert_eq!(child(&r, "lamp").cmd, "dim:30", "{}", tree(&r));
    assert_eq!(
        lamp.state(),
        DeviceState {
            on: true,
            brightness: 30
        }
    );
    assert_eq!(web.wait_hits(3).await[2].path, "/porch/dim:50");
}

/// A name not found exactly is looked up as a unique substring; none or several refuse
/// with the candidates; an exact name wins over being a substring of others.
#[tokio::test]
async fn targets_are_found_by_a_unique_substring() {
    let app = start("").await;
    let c = CcmClient::of(&app);
    let kitchen_lamp = TplinkSim::bulb().await;
    let kitchen_plug = TplinkSim::plug().await;
    let hall_light = TplinkSim::plug().await;
    let light = TplinkSim::plug().await;
    put_catalog(
        &c,
        &json!({"devices": {
            "kitchen-lamp": kitchen_lamp.catalog_entry(),
            "kitchen-plug": kitchen_plug.catalog_entry(),
            "hall-light": hall_light.catalog_entry(),
            "light": light.catalog_entry(),
        }}),
    )
    .await;
    let mut a = Asker::new(&app).await;

    let r = a.ok("hall", "on").await;
    assert!(
        serde_json::to_string(&r).unwrap().contains("hall-light"),
        "the device run is named: {}",
        tree(&r)
    );
    assert_eq!(hall_light.wait_requests(1).await.len(), 1);
    assert!(hall_light.state().on);

    // `light` is a device and a substring of `hall-light`: the exact name wins.
    a.ok("light", "on").await;
    assert_eq!(light.wait_requests(1).await.len(), 1);
    assert_eq!(hall_light.requests().len(), 1, "hall-light not run again");

    let (r, _) = a.run("kitchen", "on", None).await;
    assert!(!r.ok, "{}", tree(&r));
    let detail = r.detail.clone().unwrap_or_default();
    assert!(
        detail.contains("kitchen-lamp") && detail.contains("kitchen-plug"),
        "both candidates listed: {}",
        tree(&r)
    );

    let (r, _) = a.run("garage", "on", None).await;
    assert!(!r.ok, "{}", tree(&r));
    assert!(
        r.detail.as_deref().is_some_and(|d| !d.is_empty()),
        "{}",
        tree(&r)
    );

    for sim in [&kitchen_lamp, &kitchen_plug] {
        assert!(sim.requests().is_empty(), "an ambiguous name runs nothing");
    }
    assert_eq!(light.requests().len() + hall_light.requests().len(), 2);
}

/// One failing leaf does not stop the others: `ok: false` at the top, each failing leaf
/// named with why, the rest run.
#[tokio::test]
async fn a_partial_failure_names_each_failing_leaf() {
    let app = start("").await;
    let c = CcmClient::of(&app);
    let good = TplinkSim::plug().await;
    let erring = TplinkSim::plug().await;
    erring.set(Behaviour::ErrCode(1));
    let web = HttpTarget::start().await;
    web.set("/bad", 500, Duration::ZERO);
    let refused = stopped_addr();
    put_catalog(
        &c,
        &json!({
            "devices": {
                "good": good.catalog_entry(),
                "refused": {"driver": "tplink", "host": "127.0.0.1", "port": refused.port(), "kind": "plug"},
                "erring": erring.catalog_entry(),
                "web500": web.catalog_entry("/bad/{cmd}"),
                "web200": web.catalog_entry("/fine/{cmd}"),
            },
            "scenes": {"all": ["good", "refused", "erring", "web500"], "outer": ["all", "web200"]},
        }),
    )
    .await;
    let mut a = Asker::new(&app).await;
    let (r, _) = a.run("outer", "on", None).await;
    assert!(!r.ok, "{}", tree(&r));
    assert!(child(&r, "web200").ok, "{}", tree(&r));
    let all = child(&r, "all");
    assert!(!all.ok, "{}", tree(&r));
    assert!(child(all, "good").ok, "{}", tree(&r));
    for (leaf, why) in [
        ("refused", "connection refused"),
        ("erring", "err_code 1"),
        ("web500", "HTTP 500"),
    ] {
        let x = child(all, leaf);
        assert!(!x.ok, "{}", tree(&r));
        assert!(
            x.detail.as_deref().is_some_and(|d| d.contains(why)),
            "`{leaf}` should say `{why}`: {}",
            tree(&r)
        );
    }
    assert_eq!(r.failures().len(), 3, "{:?}", r.failures());
    assert!(good.state().on);
    assert!(!erring.state().on);
    assert!(web.paths().contains(&"/fine/on".to_owned()));
    assert!(web.paths().contains(&"/bad/on".to_owned()));
}

/// One deadline for the whole tree: ten 1-second devices in one parallel scene take about one
/// second, not ten; a device that never answers is cut at the deadline (`deadline`), the
/// reply arriving then; `home.deadline_ms` is the default.
#[tokio::test]
async fn one_deadline_for_the_whole_tree() {
    let app = start("deadline_ms = 2000").await;
    let c = CcmClient::of(&app);
    let mut slow = Vec::new();
    for _ in 0..10 {
        let s = TplinkSim::plug().await;
        s.set(Behaviour::Delay(Duration::from_secs(1)));
        slow.push(s);
    }
    let quiet = TplinkSim::plug().await;
    quiet.set(Behaviour::Silent);
    let good = TplinkSim::plug().await;
    let mut devices = serde_json::Map::new();
    let mut items = Vec::new();
    for (i, s) in slow.iter().enumerate() {
        devices.insert(format!("slow{i}"), s.catalog_entry());
        items.push(format!("slow{i}"));
    }
    devices.insert("quiet".into(), quiet.catalog_entry());
    devices.insert("good".into(), good.catalog_entry());
    put_catalog(
        &c,
        &json!({"devices": devices, "scenes": {"slow": items, "hush": ["quiet", "good"]}}),
    )
    .await;
    let mut a = Asker::new(&app).await;

    let (r, took) = a.run("slow", "on", Some(5000)).await;
    assert!(r.ok, "{}", tree(&r));
    assert_eq!(r.children.len(), 10, "{}", tree(&r));
    assert!(
        took < Duration::from_secs(5),
        "ten 1 s devices in parallel took {took:?}"
    );
    for s in &slow {
        assert_eq!(s.requests().len(), 1);
        assert!(s.state().on);
    }

    // The request's deadline.
    let (r, took) = a.run("hush", "on", Some(1500)).await;
    assert!(!r.ok, "{}", tree(&r));
    let q = child(&r, "quiet");
    assert!(!q.ok, "{}", tree(&r));
    assert_eq!(q.detail.as_deref(), Some("deadline"), "{}", tree(&r));
    assert!(child(&r, "good").ok, "{}", tree(&r));
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(4500),
        "cut at the 1500 ms deadline, the reply came after {took:?}"
    );
    assert!((1400..4500).contains(&r.ms), "the run's ms: {}", tree(&r));
    assert!(!quiet.wait_requests(1).await.is_empty());

    // No deadline in the request: `home.deadline_ms` (2000).
    let (r, took) = a.run("quiet", "on", None).await;
    assert!(!r.ok, "{}", tree(&r));
    assert_eq!(r.detail.as_deref(), Some("deadline"), "{}", tree(&r));
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(5000),
        "cut at the configured 2000 ms, the reply came after {took:?}"
    );
}

/// Retries stop on the first success: a device that drops the first connection gets exactly
/// two; a healthy one exactly one; one that never recovers exactly `1 + retries`.
#[tokio::test]
async fn retries_stop_on_the_first_success() {
    let app = start("retries = 3").await;
    let c = CcmClient::of(&app);
    let flaky = TplinkSim::plug().await;
    flaky.set(Behaviour::CloseFirst(1));
    let steady = TplinkSim::plug().await;
    let broken = TplinkSim::plug().await;
    broken.set(Behaviour::CloseFirst(100));
    put_catalog(
        &c,
        &json!({"devices": {
            "flaky": flaky.catalog_entry(),
            "steady": steady.catalog_entry(),
            "broken": broken.catalog_entry(),
        }}),
    )
    .await;
    let mut a = Asker::new(&app).await;

    let r = a.ok("flaky", "on").await;
    assert!(flaky.state().on, "{}", tree(&r));
    assert_eq!(flaky.connections(), 2, "one refused, one answered, no more");
    assert_eq!(flaky.requests().len(), 1);

    a.ok("steady", "on").await;
    assert_eq!(steady.connections(), 1, "a success is not retried");

    let (r, _) = a.run("broken", "on", Some(20_000)).await;
    assert!(!r.ok, "{}", tree(&r));
    assert_eq!(
        broken.connections(),
        4,
        "the first attempt and 3 retries: {}",
        tree(&r)
    );
}
