//! The CCM's web GUI in headless Chromium, against the real controller and two unmodified
//! iottalk-py DAs: the seed walkthrough (BetaCat's `meow` -> a `square` join -> a display's
//! `show`) built entirely by clicking and typing, as a user would, and the data that flows
//! between the DAs checked at the DAs; then the same project exported with `iotctl project
//! export` and imported into a second controller. Screenshots of every page go to
//! `target/gui-screenshots/` (the ones in `docs/img/` come from here).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fantoccini::key::Key;
use iot_tests::browser::WINDOW;
use iot_tests::{free_addr, App, AppOptions, Browser, PyDa, WAIT};
use serde_json::{json, Value};

/// The walkthrough's models (the DAs register with them: `profile.model`) and features.
const SENSOR_MODEL: &str = "AI";
const DISPLAY_MODEL: &str = "Display";
const IDF: &str = "meow";
const ODF: &str = "show";
const PROJECT: &str = "meow";

/// The walkthrough's DAs registered at `app`: BetaCat (model `AI`, IDF `meow` in dB) and a
/// display (model `Display`, ODF `show`), both online.
async fn walkthrough_das(app: &App) -> (PyDa, PyDa) {
    let sensor = PyDa::of_model(
        app,
        SENSOR_MODEL,
        "BetaCat",
        json!([[IDF, ["dB"]]]),
        json!([]),
    )
    .await;
    let display = PyDa::of_model(
        app,
        DISPLAY_MODEL,
        "Display",
        json!([]),
        json!([[ODF, ["float"]]]),
    )
    .await;
    app.wait_online(2).await;
    (sensor, display)
}

/// A controller with fixed broker and CSM ports: its DAs reconnect by themselves after a
/// restart.
async fn start_app() -> App {
    App::start(AppOptions {
        csm_listen: Some(free_addr()),
        mqtt_listen: Some(free_addr()),
        ..Default::default()
    })
    .await
}

/// Runs `iotctl ARGS` against `app`; answers its standard output, panics when it fails.
async fn iotctl(app: &App, args: &[&str]) -> String {
    let out = app.iotctl(args, None).await;
    assert!(
        out.status.success(),
        "iotctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

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
async fn model_from_device(b: &Browser, id: &str, model: &str, feature: &str) {
    b.open("#/devices").await;
    device_online(b, id).await;
    b.click(&format!("[data-device=\"{id}\"] .model-from-device"))
        .await;
    b.find("#model-form").await;
    assert_eq!(
        b.find("#model-name").await.prop("value").await.unwrap(),
        Some(model.into())
    );
    // The device's feature is in the form, with one value.
    b.wait_js(
        "the device's feature in the model form",
        "return [...document.querySelectorAll('.feature-name')].some(i => i.value === arguments[0]);",
        vec![json!(feature)],
    )
    .await;
    b.click("#model-save").await;
    b.wait_toast(&format!("Saved model {model}")).await;
    b.wait_js(
        "the models list",
        "return location.hash === '#/models' && !!document.querySelector('#model-list');",
        vec![],
    )
    .await;
}

/// The ids of the device objects the editor shows on `side` (`in`: their input features,
/// `out`: their output features), in the order they were added.
async fn object_ids(b: &Browser, side: &str) -> Vec<u64> {
    let v = b
        .js(
            "return [...document.querySelectorAll(`[data-object][data-side=\"${arguments[0]}\"]`)].map(e => Number(e.dataset.object)).sort((a, b) => a - b);",
            vec![json!(side)],
        )
        .await;
    serde_json::from_value(v).expect("ids")
}

/// The project's input object (its only one on the left) and output object (its only one
/// on the right), once the editor shows both: the walkthrough's two objects of different
/// models each show on one side only, with only their model's feature.
async fn walkthrough_objects(b: &Browser) -> (u64, u64) {
    b.wait_count("[data-object][data-side=\"in\"]", 1).await;
    b.wait_count("[data-object][data-side=\"out\"]", 1).await;
    let (ins, outs) = (object_ids(b, "in").await, object_ids(b, "out").await);
    assert_eq!((ins.len(), outs.len()), (1, 1), "{ins:?} {outs:?}");
    let (src, dst) = (ins[0], outs[0]);
    assert_ne!(src, dst);
    let features = b
        .js(
            "return [...document.querySelectorAll('[data-feature]')].map(e => e.dataset.feature).sort();",
            vec![],
        )
        .await;
    assert_eq!(
        features,
        json!([format!("{src}:{IDF}"), format!("{dst}:{ODF}")])
    );
    (src, dst)
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
async fn the_seed_walkthrough_is_built_in_the_gui_and_imported_elsewhere() {
    let app = start_app().await;
    let (mut sensor, mut display) = walkthrough_das(&app).await;
    let mut b = Browser::start(&app.ccm).await;

    // Devices: both DAs online, live.
    b.open("#/devices").await;
    device_online(&b, &sensor.id).await;
    device_online(&b, &display.id).await;
    b.screenshot("devices").await;

    // Models: one model from each device, each with its device's feature only.
    model_from_device(&b, &sensor.id, SENSOR_MODEL, IDF).await;
    model_from_device(&b, &display.id, DISPLAY_MODEL, ODF).await;
    let row = b
        .wait_text(&format!("[data-model=\"{SENSOR_MODEL}\"]"), IDF)
        .await;
    assert!(!row.contains(ODF), "{row}");
    let row = b
        .wait_text(&format!("[data-model=\"{DISPLAY_MODEL}\"]"), ODF)
        .await;
    assert!(!row.contains(IDF), "{row}");
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
    b.type_into("#project-name", PROJECT).await;
    b.click("#project-create-button").await;
    b.wait_text("#project-title", PROJECT).await;
    let url = b.client.current_url().await.expect("url");
    let pid: u64 = url
        .fragment()
        .and_then(|f| f.strip_prefix("/projects/"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("project editor URL {url}"));

    // Two device objects, one of each model: the AI object shows `meow` on the left, the
    // Display object `show` on the right; each bound to its DA.
    b.choose("#object-model", SENSOR_MODEL).await;
    b.click("#object-add").await;
    b.wait_toast("Added").await;
    b.wait_count("[data-object][data-side=\"in\"]", 1).await;
    b.choose("#object-model", DISPLAY_MODEL).await;
    b.click("#object-add").await;
    let (src, dst) = walkthrough_objects(&b).await;
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

    // The monitor shows the rows of the join: the input, the join's result, the output.
    b.click(&format!("[data-join=\"{nid}\"]")).await;
    b.click("#join-monitor").await;
    b.find("#monitor").await;
    square_arrives(&mut sensor, &mut display, 5).await;
    b.wait_count("#monitor-rows tbody tr", 3).await;
    for kind in ["idf", "join", "odf"] {
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

    // The project exported with `iotctl project export` (the GUI's Export is a download).
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("meow-export.json");
    let path = file.to_str().expect("UTF-8 path");
    iotctl(&app, &["project", "export", PROJECT, "-o", path]).await;

    // The projects list; an import of that file (picked as a user picks it) under another
    // name.
    b.open("#/projects").await;
    b.wait_text(&format!("[data-project=\"{pid}\"]"), "on")
        .await;
    b.find("#project-import-file")
        .await
        .send_keys(&file.display().to_string())
        .await
        .expect("choose the file");
    b.type_into("#project-import-name", "meow copy").await;
    b.click("#project-import-button").await;
    b.wait_toast("Imported project meow copy").await;
    b.wait_text("#project-list", "meow copy").await;
    b.screenshot("projects").await;
    // The copy goes (Delete, confirmed): it would route the same DAs a second time.
    let copy: u64 = b
        .js(
            "return Number([...document.querySelectorAll('[data-project]')].find(r => r.textContent.includes('meow copy')).dataset.project);",
            vec![],
        )
        .await
        .as_u64()
        .expect("the copy's id");
    b.click(&format!("[data-project=\"{copy}\"] button.danger"))
        .await;
    b.wait_toast("Deleted project meow copy").await;
    b.wait_js(
        "the copy gone from the list",
        "return !document.querySelector(`[data-project=\"${arguments[0]}\"]`);",
        vec![json!(copy)],
    )
    .await;

    // Restart the controller: the project is still on, and data still flows.
    let app = app.restart().await;
    b.base = app.ccm.clone();
    app.wait_online(2).await;
    b.open(&format!("#/projects/{pid}")).await;
    b.wait_text("#project-title", PROJECT).await;
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
    drop((sensor, display, app));

    // A second, fresh controller with its own BetaCat and display: the exported file imported
    // with `iotctl project import` lands off, its objects still bound to the first
    // controller's DAs (shown as not registered). Bound to the new DAs with the editor's
    // selects, and turned on with `iotctl project on`: the new display gets the squares.
    let app = start_app().await;
    let (mut sensor, mut display) = walkthrough_das(&app).await;
    let said = iotctl(&app, &["project", "import", path]).await;
    assert!(
        said.contains(&format!("imported project `{PROJECT}`")) && said.contains("off"),
        "{said}"
    );
    b.base = app.ccm.clone();
    b.open("#/projects").await;
    let row = b.wait_text("#project-list", PROJECT).await;
    assert!(!row.contains("meow copy"), "{row}");
    b.click("#project-list .project-open").await;
    b.wait_text("#project-title", PROJECT).await;
    let (src, dst) = walkthrough_objects(&b).await;
    b.wait_count("[data-object-state=\"unknown\"]", 2).await;
    b.wait_text("[data-join]", "square v1").await;
    b.screenshot("project-imported").await;
    bind(&b, src, &sensor.id).await;
    bind(&b, dst, &display.id).await;
    iotctl(&app, &["project", "on", PROJECT]).await;
    b.wait_js(
        "the switch on after `iotctl project on`",
        "return document.getElementById('project-switch').getAttribute('aria-checked') === 'true';",
        vec![],
    )
    .await;
    wait_applied(&b).await;
    app.wait_links_acked().await;
    for n in [8, 9] {
        square_arrives(&mut sensor, &mut display, n).await;
    }
    b.screenshot("project-imported-on").await;
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
