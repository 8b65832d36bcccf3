//! The CCM's Home page (docs/home.md, docs/ccm.md) in headless Chromium against the real
//! controller: the catalog put over REST is listed (devices with their driver and settings,
//! scenes with their mode, items and variants), a device and a scene are run with the page's
//! buttons and the result tree shows each device ok or FAILED with the reason, the devices'
//! states follow, and the catalog editor shows a refusal (scenes that contain each other)
//! without losing the text, then saves a fixed catalog. Devices need no network of their own:
//! `delay` and `mqtt` (the embedded broker) succeed, an `http` device on port 1 is refused.
//! Screenshots go to `target/gui-screenshots/` (`docs/img/ccm-home.png` comes from here).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use iot_tests::{App, AppOptions, Browser, CcmClient};
use serde_json::{json, Value};

/// The catalog the page starts from: a pause, a web device nobody answers (port 1 refuses
/// connections), a lamp driven over MQTT, a parallel scene with an `off` variant and a
/// sequence.
fn catalog() -> Value {
    json!({
        "devices": {
            "pause": {"driver": "delay", "ms": 10},
            "web": {"driver": "http", "url": "http://127.0.0.1:1/x/{cmd}"},
            "lamp": {"driver": "mqtt", "topic": "gui-home/lamp", "payload": "{cmd}"},
        },
        "scenes": {
            "evening": ["pause", "web", "lamp:dim:30"],
            "evening:off": ["lamp", "web"],
            "wakeup": {"mode": "sequence", "items": ["lamp:dim:10", "pause", "lamp:full"]},
        },
    })
}

/// The text of the first element matching `css` (null when there is none).
async fn text(b: &Browser, css: &str) -> Value {
    b.js(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
        vec![json!(css)],
    )
    .await
}

/// Waits until the result tree's root is `target` run with `cmd`.
async fn result_of(b: &Browser, target: &str, cmd: &str) {
    b.wait_js(
        &format!("the result of {target} {cmd}"),
        "const r = document.querySelector('#home-result .result-tree > li'); \
         return !!r && r.dataset.result === arguments[0] \
           && r.querySelector('.result-line .mono').textContent === arguments[1];",
        vec![json!(target), json!(cmd)],
    )
    .await;
}

/// `[ok badge text, data-ok, detail]` of `target`'s line in the result tree.
async fn result_line(b: &Browser, target: &str) -> Value {
    b.js(
        "const li = document.querySelector(`#home-result [data-result=\"${arguments[0]}\"]`); \
         if (!li) return null; \
         const line = li.querySelector('.result-line'); const d = line.querySelector('.detail'); \
         return [line.querySelector('.badge').textContent, li.dataset.ok, d ? d.textContent : null];",
        vec![json!(target)],
    )
    .await
}

/// Waits until the State cell of device `name` says `cmd`.
async fn state_is(b: &Browser, name: &str, cmd: &str) {
    b.wait_js(
        &format!("the state of {name} to be {cmd}"),
        "const td = document.querySelector(`[data-home-device=\"${arguments[0]}\"] td.state`); \
         return !!td && td.dataset.state === arguments[1];",
        vec![json!(name), json!(cmd)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_home_page_lists_runs_and_edits_the_catalog() {
    let app = App::start(AppOptions::default()).await;
    let c = CcmClient::of(&app);
    let (s, v) = c.put("/api/home?replace=true", &catalog()).await;
    assert_eq!(s, 200, "{v}");
    let b = Browser::start(&app.ccm).await;
    b.open("#/home").await;

    // The catalog: devices with driver and settings, scenes with mode and items.
    b.find("[data-home-device=\"pause\"]").await;
    assert_eq!(b.count("[data-home-device]").await, 3);
    assert_eq!(b.count("[data-home-scene]").await, 3);
    let row = |kind: &str, name: &str| format!("[data-home-{kind}=\"{name}\"]");
    assert_eq!(
        text(&b, &format!("{} td:nth-child(2)", row("device", "web"))).await,
        json!("http")
    );
    assert_eq!(
        text(&b, &format!("{} .settings", row("device", "web"))).await,
        json!("GET http://127.0.0.1:1/x/{cmd}")
    );
    assert_eq!(
        text(&b, &format!("{} .settings", row("device", "pause"))).await,
        json!("wait 10 ms")
    );
    assert_eq!(
        text(&b, &format!("{} .badge", row("scene", "wakeup"))).await,
        json!("sequence")
    );
    let items = b
        .js(
            "return [...document.querySelectorAll('[data-home-scene=\"evening\"] .chip')].map(e => e.textContent);",
            vec![],
        )
        .await;
    assert_eq!(items, json!(["pause", "web", "lamp:dim:30"]));
    // The variant says what it is and runs its scene with its command.
    b.wait_text(&row("scene", "evening:off"), "what evening runs for off")
        .await;
    b.wait_text(
        &format!("{} .run-variant", row("scene", "evening:off")),
        "Run evening off",
    )
    .await;
    b.wait_text(&row("device", "lamp"), "no command taken yet")
        .await;
    b.wait_text(&row("device", "pause"), "none (a pause keeps no state)")
        .await;

    // A device with a typed command: ok, and its state follows.
    b.type_into(&format!("{} .run-cmd", row("device", "lamp")), "dim:40")
        .await;
    b.click(&format!("{} .run-go", row("device", "lamp"))).await;
    result_of(&b, "lamp", "dim:40").await;
    assert_eq!(result_line(&b, "lamp").await, json!(["ok", "true", null]));
    state_is(&b, "lamp", "dim:40").await;

    // A scene: the pause and the lamp ok, the web device FAILED with the reason.
    b.click(&format!("{} .run-on", row("scene", "evening")))
        .await;
    result_of(&b, "evening", "on").await;
    assert_eq!(
        result_line(&b, "evening").await,
        json!(["FAILED", "false", null])
    );
    assert_eq!(result_line(&b, "pause").await, json!(["ok", "true", null]));
    assert_eq!(result_line(&b, "lamp").await, json!(["ok", "true", null]));
    let web = result_line(&b, "web").await;
    assert_eq!(web[0], json!("FAILED"), "{web}");
    assert!(
        web[2].as_str().unwrap_or("").contains("connection refused"),
        "{web}"
    );
    b.wait_text("#home-result .result-summary", "FAILED, 1 of 3 devices")
        .await;
    // The lamp took its own command; a pause keeps no state.
    state_is(&b, "lamp", "dim:30").await;
    b.wait_text(&row("device", "pause"), "none").await;
    b.screenshot("ccm-home").await;

    // The variant: `evening` run with `off` runs `evening:off`.
    b.click(&format!("{} .run-variant", row("scene", "evening:off")))
        .await;
    result_of(&b, "evening", "off").await;
    assert_eq!(result_line(&b, "lamp").await, json!(["ok", "true", null]));
    state_is(&b, "lamp", "off").await;

    // The editor: a catalog whose scenes contain each other is refused, the reason beside
    // the editor, the text kept, the catalog unchanged.
    let cycle = r#"{"devices": {"pause": {"driver": "delay", "ms": 10}}, "scenes": {"a": ["b"], "b": ["a", "pause"]}}"#;
    b.type_into("#home-catalog", cycle).await;
    b.click("#home-catalog-save").await;
    let shown = b
        .wait_text("#home-catalog-error", "scenes contain each other")
        .await;
    assert!(shown.contains("a -> b -> a"), "{shown}");
    assert!(shown.starts_with("Not saved: "), "{shown}");
    assert_eq!(
        b.find("#home-catalog").await.prop("value").await.unwrap(),
        Some(cycle.into())
    );
    assert_eq!(c.get("/api/home").await.1, catalog());
    assert_eq!(b.count("[data-home-device]").await, 3);
    b.js(
        "document.querySelector('.home-editor').scrollIntoView();",
        vec![],
    )
    .await;
    b.screenshot("ccm-home-refused").await;

    // Fixed, it is saved (replacing the catalog): the lists follow, the error goes.
    let fixed = r#"{"devices": {"pause": {"driver": "delay", "ms": 10}}, "scenes": {"a": ["b"], "b": ["pause"]}}"#;
    b.type_into("#home-catalog", fixed).await;
    b.click("#home-catalog-save").await;
    b.wait_toast("Saved the catalog: 1 device, 2 scenes").await;
    b.find("[data-home-scene=\"a\"]").await;
    assert_eq!(b.count("[data-home-device]").await, 1);
    assert_eq!(b.count("#home-catalog-error:not([hidden])").await, 0);
    assert_eq!(
        c.get("/api/home").await.1,
        json!({
            "devices": {"pause": {"driver": "delay", "ms": 10}},
            "scenes": {"a": ["b"], "b": ["pause"]},
        })
    );
    b.close().await;
}
