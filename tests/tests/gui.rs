//! The CCM's web GUI in headless Chromium, against the real controller and two unmodified
//! iottalk-py DAs: everything is done by clicking and typing, as a user would, and the data
//! that flows between the DAs is checked at the DAs. Screenshots of every page go to
//! `target/gui-screenshots/` (the ones in `docs/img/` come from here).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fantoccini::key::Key;
use iot_tests::browser::WINDOW;
use iot_tests::{free_addr, App, AppOptions, Browser, PyDa, WAIT};
use serde_json::{json, Value};

/// The model both DAs register with (`tests/py/da.py` sets `profile.model`).
const MODEL: &str = "Dummy_Device";
const IDF: &str = "Temp-I";
const ODF: &str = "Show-O";

/// Waits until the Devices page shows `id` online.
async fn device_online(b: &Browser, id: &str) {
    b.wait_js(
        &format!("device {id} online"),
        "const c = document.querySelector(`[data-device=\"${arguments[0]}\"] [data-online]`); return !!c && c.dataset.online === 'true';",
        vec![json!(id)],
    )
    .await;
}

/// "Create model from this device" on the Devices page, then "Save model".
async fn model_from_device(b: &Browser, id: &str, feature: &str) {
    b.open("#/devices").await;
    device_online(b, id).await;
    b.click(&format!("[data-device=\"{id}\"] .model-from-device"))
        .await;
    b.find("#model-form").await;
    assert_eq!(
        b.find("#model-name").await.prop("value").await.unwrap(),
        Some(MODEL.into())
    );
    // The device's feature is in the form, with one value.
    b.wait_js(
        "the device's feature in the model form",
        "return [...document.querySelectorAll('.feature-name')].some(i => i.value === arguments[0]);",
        vec![json!(feature)],
    )
    .await;
    b.click("#model-save").await;
    b.wait_toast(&format!("Saved model {MODEL}")).await;
    b.wait_js(
        "the models list",
        "return location.hash === '#/models' && !!document.querySelector('#model-list');",
        vec![],
    )
    .await;
}

/// The ids of the project's device objects, in the order they were added.
async fn object_ids(b: &Browser) -> Vec<u64> {
    let v = b
        .js(
            "return [...new Set([...document.querySelectorAll('[data-object]')].map(e => Number(e.dataset.object)))].sort((a, b) => a - b);",
            vec![],
        )
        .await;
    serde_json::from_value(v).expect("ids")
}

/// Binds device object `oid` to DA `da` with the editor's select and button, and waits until
/// the object shows its DA online.
async fn bind(b: &Browser, oid: u64, da: &str) {
    let sel = format!("select[data-bind-select=\"{oid}\"]");
    b.choose(&sel, da).await;
    b.click(&format!("[data-bind=\"{oid}\"]")).await;
    b.wait_js(
        &format!("object {oid} bound and online"),
        "return !!document.querySelector(`[data-object=\"${arguments[0]}\"] [data-object-state=\"online\"]`);",
        vec![json!(oid)],
    )
    .await;
}

/// Waits until the editor shows every network application `applied` (shown as "running").
async fn wait_applied(b: &Browser) {
    b.wait_js(
        "the network application running",
        "const s = [...document.querySelectorAll('[data-join-card] [data-state]')]; return s.length > 0 && s.every(e => e.dataset.state === 'applied');",
        vec![],
    )
    .await;
}

/// Pushes `n` from the sensor until the display gets `n * n` (values pushed before the
/// applier connected the graph may be dropped by the CSM, as IoTtalk's are).
async fn square_arrives(sensor: &mut PyDa, display: &mut PyDa, n: i64) {
    sensor.push(IDF, json!(n)).await;
    let want = json!([n * n]);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got: Value = tokio::time::timeout_at(deadline, display.data())
            .await
            .unwrap_or_else(|_| panic!("the display never got {want}"));
        if got == want {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_links_two_devices_in_the_gui_and_data_flows() {
    let opts = AppOptions {
        // Fixed broker and CSM ports: the DAs reconnect by themselves after the restart.
        csm_listen: Some(free_addr()),
        mqtt_listen: Some(free_addr()),
        ..Default::default()
    };
    let app = App::start(opts).await;
    let mut sensor = PyDa::registered(&app, "Sensor", json!([[IDF, ["float"]]]), json!([])).await;
    let mut display = PyDa::registered(&app, "Display", json!([]), json!([[ODF, ["float"]]])).await;
    app.wait_online(2).await;
    let b = Browser::start(&app.ccm).await;

    // Devices: both DAs online, live.
    b.open("#/devices").await;
    device_online(&b, &sensor.id).await;
    device_online(&b, &display.id).await;
    b.screenshot("devices").await;

    // Models: one model from each device; the second keeps the first one's feature.
    model_from_device(&b, &sensor.id, IDF).await;
    model_from_device(&b, &display.id, ODF).await;
    let row = b.wait_text(&format!("[data-model=\"{MODEL}\"]"), ODF).await;
    assert!(row.contains(IDF), "{row}");
    b.screenshot("models").await;

    // Functions: the join function, written in the editor.
    b.open("#/functions").await;
    b.type_into("#function-name", "square").await;
    // Tab in the editor indents by four spaces.
    let tab = char::from(Key::Tab);
    b.type_into("#function-code", &format!("fn run(x) {{\n{tab}x * x\n}}"))
        .await;
    let code = b.find("#function-code").await.prop("value").await.unwrap();
    assert_eq!(code.as_deref(), Some("fn run(x) {\n    x * x\n}"));
    b.wait_text(".code-editor .gutter", "3").await;
    b.click("#function-save").await;
    b.wait_toast("Saved square version 1").await;
    b.find("[data-function=\"square\"][aria-current=\"page\"]")
        .await;
    b.find("[data-version=\"1\"] .code-view").await;
    b.screenshot("functions").await;

    // Projects: create one; the editor opens.
    b.open("#/projects").await;
    b.type_into("#project-name", "Greenhouse").await;
    b.click("#project-create-button").await;
    b.wait_text("#project-title", "Greenhouse").await;
    let url = b.client.current_url().await.expect("url");
    let pid: u64 = url
        .fragment()
        .and_then(|f| f.strip_prefix("/projects/"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("project editor URL {url}"));

    // Two device objects of the model (each shows on both sides: the model has an input and
    // an output feature); each bound to its DA.
    b.choose("#object-model", MODEL).await;
    b.click("#object-add").await;
    b.wait_toast("Added").await;
    b.wait_count("[data-object][data-side=\"in\"]", 1).await;
    b.click("#object-add").await;
    b.wait_count("[data-object][data-side=\"in\"]", 2).await;
    b.wait_count("[data-object][data-side=\"out\"]", 2).await;
    let ids = object_ids(&b).await;
    assert_eq!(ids.len(), 2, "{ids:?}");
    let (src, dst) = (ids[0], ids[1]);
    bind(&b, src, &sensor.id).await;
    bind(&b, dst, &display.id).await;

    // Link by clicking: the sensor object's input feature, then the display object's output
    // feature: a network application with both links, drawn as two lines.
    b.click(&format!("[data-feature=\"{src}:{IDF}\"]")).await;
    b.wait_text("#link-hint", "selected").await;
    b.click(&format!("[data-feature=\"{dst}:{ODF}\"]")).await;
    b.wait_toast("Linked").await;
    b.wait_count("[data-join]", 1).await;
    b.wait_count("#link-lines .link-line", 2).await;
    let nid = b.attr("[data-join]", "data-join").await.expect("join id");

    // The join function, chosen in the join's panel.
    b.click(&format!("[data-join=\"{nid}\"]")).await;
    b.find("[data-panel=\"join\"]").await;
    b.choose("#join-func", "square@1").await;
    b.click("#join-save").await;
    b.wait_toast("Saved the join").await;
    b.wait_text(&format!("[data-join=\"{nid}\"]"), "square v1")
        .await;

    // On: the network application runs, and the display gets the squares.
    b.click("#project-switch").await;
    b.wait_toast("Project turned on").await;
    b.wait_js(
        "the switch on",
        "return document.getElementById('project-switch').getAttribute('aria-checked') === 'true';",
        vec![],
    )
    .await;
    wait_applied(&b).await;
    app.wait_links_acked().await;
    for n in [2, 3, 4] {
        square_arrives(&mut sensor, &mut display, n).await;
    }

    // The monitor shows the rows of the join.
    b.click(&format!("[data-join=\"{nid}\"]")).await;
    b.click("#join-monitor").await;
    b.find("#monitor").await;
    square_arrives(&mut sensor, &mut display, 5).await;
    b.wait_count("#monitor-rows tbody tr", 3).await;
    for kind in ["idf", "odf"] {
        b.wait_count(&format!("#monitor-rows tbody tr[data-kind=\"{kind}\"]"), 1)
            .await;
    }
    b.wait_js(
        "a line in the monitor's chart",
        "return document.querySelectorAll('#monitor .chart polyline').length > 0;",
        vec![],
    )
    .await;
    b.click(&format!("[data-join=\"{nid}\"]")).await;
    b.find("[data-panel=\"join\"]").await;
    b.screenshot("project-monitor").await;
    // A link's panel: its function, input type, range.
    b.click(&format!(".link-chip[data-link^=\"{nid}:\"]")).await;
    b.find("[data-panel=\"link\"]").await;
    b.js("window.scrollTo(0, 0)", vec![]).await;
    b.screenshot("project-link-panel").await;
    b.js(
        "document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}))",
        vec![],
    )
    .await;
    b.wait_js(
        "the panel closed by Escape",
        "return document.getElementById('panel').hidden;",
        vec![],
    )
    .await;

    // The editor on a 1024x768 tablet: the panel stays beside the canvas.
    b.click(&format!("[data-join=\"{nid}\"]")).await;
    b.find("[data-panel=\"join\"]").await;
    b.client.set_window_size(1024, 768).await.expect("resize");
    b.wait_js(
        "no horizontal scrolling at 1024 px",
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth;",
        vec![],
    )
    .await;
    b.js("window.scrollTo(0, 0)", vec![]).await;
    b.screenshot("project-tablet").await;
    b.client
        .set_window_size(WINDOW.0, WINDOW.1)
        .await
        .expect("resize");

    // The projects list; an import of the project's export document (from a file, as a user
    // picks it) under another name.
    let export: Value = app
        .http
        .get(format!("{}/api/projects/{pid}/export", app.ccm))
        .send()
        .await
        .expect("export")
        .json()
        .await
        .expect("export JSON");
    let file = app.data_dir.join("greenhouse-export.json");
    std::fs::write(&file, export.to_string()).expect("write export");
    b.open("#/projects").await;
    b.wait_text(&format!("[data-project=\"{pid}\"]"), "on")
        .await;
    b.find("#project-import-file")
        .await
        .send_keys(&file.display().to_string())
        .await
        .expect("choose the file");
    b.type_into("#project-import-name", "Greenhouse copy").await;
    b.click("#project-import-button").await;
    b.wait_toast("Imported project Greenhouse copy").await;
    b.wait_text("#project-list", "Greenhouse copy").await;
    b.screenshot("projects").await;
    // The copy goes (Delete, confirmed): it would route the same DAs a second time.
    let copy: u64 = b
        .js(
            "return Number([...document.querySelectorAll('[data-project]')].find(r => r.textContent.includes('Greenhouse copy')).dataset.project);",
            vec![],
        )
        .await
        .as_u64()
        .expect("the copy's id");
    b.click(&format!("[data-project=\"{copy}\"] button.danger"))
        .await;
    b.wait_toast("Deleted project Greenhouse copy").await;
    b.wait_js(
        "the copy gone from the list",
        "return !document.querySelector(`[data-project=\"${arguments[0]}\"]`);",
        vec![json!(copy)],
    )
    .await;

    // Restart the controller: the project is still on, and data still flows.
    let app = app.restart().await;
    let b = {
        let mut b = b;
        b.base = app.ccm.clone();
        b
    };
    app.wait_online(2).await;
    b.open(&format!("#/projects/{pid}")).await;
    b.wait_text("#project-title", "Greenhouse").await;
    b.wait_js(
        "the switch still on after the restart",
        "return document.getElementById('project-switch').getAttribute('aria-checked') === 'true';",
        vec![],
    )
    .await;
    wait_applied(&b).await;
    app.wait_links_acked().await;
    for n in [6, 7] {
        square_arrives(&mut sensor, &mut display, n).await;
    }
    b.screenshot("project-after-restart").await;

    // A link function written in the panel's quick editor: the input is doubled before the
    // join squares it.
    b.click(&format!(".link-chip[data-link^=\"{nid}:\"].in"))
        .await;
    b.find("[data-panel=\"link\"]").await;
    b.click("[data-panel=\"link\"] .new-fn summary").await;
    b.type_into(".quick-fn-name", "double").await;
    b.type_into(".quick-fn-code", "fn run(x) { x * 2 }").await;
    b.click(".quick-fn-save").await;
    b.wait_toast("Saved double v1").await;
    b.wait_js(
        "the new function chosen for the link",
        "return document.getElementById('link-func').value === 'double@1';",
        vec![],
    )
    .await;
    b.click("#link-save").await;
    b.wait_toast("Saved the link").await;
    b.wait_text(&format!(".link-chip[data-link^=\"{nid}:\"].in"), "double")
        .await;
    wait_applied(&b).await;
    sensor.push(IDF, json!(3)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // 3 * 2 = 6, squared: 36 (a 9 may still come from before the link's function).
        let got = tokio::time::timeout_at(deadline, display.data())
            .await
            .expect("the display never got 36");
        if got == json!([36]) {
            break;
        }
        sensor.push(IDF, json!(3)).await;
    }
    b.close().await;
}

/// With authentication on, the GUI asks for a login first (a wrong password is refused in
/// plain words), then works; a DA's name is shown as text, never as markup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gui_logs_in_and_shows_names_as_text() {
    let app = App::start(AppOptions {
        auth: true,
        ..Default::default()
    })
    .await;
    let (user, password) = app.admin().expect("admin");
    let name = "<img src=x onerror=\"window.injected=1\">";
    let da = PyDa::registered(&app, name, json!([[IDF, ["float"]]]), json!([])).await;
    app.wait_online(1).await;
    let b = Browser::start(&app.ccm).await;
    b.open("#/devices").await;
    b.find("#login-form").await;
    b.type_into("#login-form [name=username]", user).await;
    b.type_into("#login-form [name=password]", "not the password")
        .await;
    b.click("#login-form [type=submit]").await;
    b.wait_toast("wrong user name or password").await;
    b.find("#toast[data-kind=\"error\"]").await;
    b.type_into("#login-form [name=password]", password).await;
    b.click("#login-form [type=submit]").await;
    b.wait_toast("Logged in").await;
    b.wait_text("#user-name", user).await;
    device_online(&b, &da.id).await;
    let shown = b
        .js(
            "const h = document.querySelector(`[data-device=\"${arguments[0]}\"] h2`); return [h.textContent, h.children.length, window.injected === undefined];",
            vec![json!(da.id)],
        )
        .await;
    assert_eq!(shown, json!([name, 0, true]));
    // Logging out shows the form again.
    b.click("#logout").await;
    b.find("#login-form").await;
    b.close().await;
}
