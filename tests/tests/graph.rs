#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The graph API and the execution engine end to end: unmodified iottalk-py DAs (the DAI
//! runner and `dan.Client`), graph requests over MQTT (`mosquitto_pub` and rumqttc), and the
//! real controller, with Rhai and Python functions.

use std::process::Stdio;

use iot_tests::*;
use rumqttc::QoS;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

// ---- The spec's walkthrough (section 6): DAI runner + mosquitto_pub ----

/// `python -m iottalkpy.dai SA` in its own process group, so SIGINT reaches it like Ctrl-C.
/// What it prints is kept, and shown (with its stderr) if the test fails.
struct Dai {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stderr: tempfile::NamedTempFile,
}

impl Dai {
    fn spawn(sa: &std::path::Path) -> Dai {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut child = tokio::process::Command::new(python())
            .arg("-m")
            .arg("iottalkpy.dai")
            .arg(sa)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn DAI");
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = out.next_line().await {
                keep.lock().unwrap().push(l.clone());
                let _ = tx.send(l);
            }
        });
        Dai {
            child,
            lines,
            seen,
            stderr,
        }
    }

    async fn line_starting(&mut self, prefix: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) if l.starts_with(prefix) => return l,
                Ok(Some(_)) => {}
                _ => panic!("no line starting with {prefix}"),
            }
        }
    }

    /// Ctrl-C: the DAI deregisters (offline, then DELETE) and exits.
    async fn interrupt(mut self) {
        let pid = self.child.id().unwrap() as i32;
        nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let status = tokio::time::timeout(WAIT, self.child.wait()).await;
        if status.is_err() {
            // Every Python thread of the DAI's processes prints its stack (faulthandler, see
            // SA_PRELUDE) before the test fails and shows it.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGUSR1,
            );
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        assert!(
            status.is_ok_and(|s| s.is_ok()),
            "the DAI did not exit within {WAIT:?} after Ctrl-C"
        );
    }
}

impl Drop for Dai {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let out = self.seen.lock().map(|v| v.join("\n")).unwrap_or_default();
            let err = std::fs::read_to_string(self.stderr.path()).unwrap_or_default();
            eprintln!("---- DAI stdout ----\n{out}\n---- DAI stderr ----\n{err}");
        }
    }
}

/// Publishes with `mosquitto_pub`, as the admin when authentication is on.
async fn mosquitto_pub(app: &App, topic: &str, msg: &str) {
    let (host, port) = app.mqtt.rsplit_once(':').unwrap();
    let mut cmd = tokio::process::Command::new("mosquitto_pub");
    cmd.args(["-h", host, "-p", port, "-q", "2", "-t", topic, "-m", msg]);
    if let Some((user, password)) = app.admin() {
        cmd.args(["-u", user, "-P", password]);
    }
    let out = cmd
        .output()
        .await
        .expect("mosquitto_pub (apt-get install mosquitto-clients)");
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The start of both SA files (the SDK itself stays unmodified): Ctrl-C restored (see the
/// comment inside), the log and stack dumps kept for a failing test, and a patient queue for
/// iottalk-py's `register()`, which waits at most 5 s for the broker's CONNACK
/// (`ctx._mqueue.get(timeout=5)`), a limit a loaded machine can exceed (the test has its own
/// deadline).
const SA_PRELUDE: &str = "\
import faulthandler
import logging
import queue
import signal
from iottalkpy import dan

# Ctrl-C must work even when the test suite itself runs as a background job (nohup, a CI
# runner): such a job starts with SIGINT ignored, children inherit that, and Python then
# installs no KeyboardInterrupt handler, so the DAI would never deregister nor exit.
signal.signal(signal.SIGINT, signal.default_int_handler)
# What the test shows if the DAI does not exit: its log, and on SIGUSR1 every thread's stack.
logging.basicConfig(level=logging.DEBUG)
faulthandler.register(signal.SIGUSR1, all_threads=True)


class PatientQueue(queue.Queue):
    def get(self, block=True, timeout=None):
        if timeout is not None:
            timeout = max(timeout, 60)
        return super().get(block, timeout)


_context_init = dan.Context.__init__


def _patient_context_init(self):
    _context_init(self)
    self._mqueue = PatientQueue()


dan.Context.__init__ = _patient_context_init
";

/// The IDF's SA after [`SA_PRELUDE`] (`{api_url}`, `{id}`, `{go}`, `{stop}` filled in): it
/// pushes 1, 2, 3, ... every 0.1 s from when the file `go` exists until the file `stop` does,
/// then prints `IDF stopped` once.
///
/// It must be quiet before Ctrl-C: iottalk-py's `deregister()` makes `on_publish` disconnect
/// (meant for its QoS 2 offline message) and waits for that message without a deadline. paho
/// calls `on_publish` for a QoS 0 push as soon as it is written, so a push written before the
/// offline message is acknowledged would disconnect too early and the DAI would never exit.
/// Each push here waits until it is written, so once `IDF stopped` is printed no push is left.
const SA_IDF: &str = "\
import os
from iottalkpy.dan import NoData
api_url = '{api_url}'
device_model = 'Dummy_Device'
device_addr = '{id}'
device_name = 'IDF_DA'
idf_list = ['Dummy_Sensor']
push_interval = 0.1
n = 0
stopped = False
_push = dan.Client.push


def _push_written(self, idf, data, block=False):
    return _push(self, idf, data, block=True)


dan.Client.push = _push_written


def Dummy_Sensor():
    global n, stopped
    if os.path.exists({stop}):
        if not stopped:
            stopped = True
            print('IDF stopped', flush=True)
        return NoData
    if not os.path.exists({go}):
        return NoData
    n += 1
    return n
";

async fn walkthrough(opts: AppOptions, idf_code: &str, join_code: &str) {
    let app = App::start(opts).await;
    let dir = tempfile::tempdir().unwrap();
    let (idf_id, odf_id) = (new_id(), new_id());
    let flag = dir.path().join("go");
    let stop = dir.path().join("stop");
    std::fs::write(
        dir.path().join("sa_odf.py"),
        format!(
            "{SA_PRELUDE}import json\napi_url = '{}'\ndevice_model = 'Dummy_Device'\ndevice_addr = '{odf_id}'\ndevice_name = 'ODF_DA'\nodf_list = ['Dummy_Control']\n\ndef Dummy_Control(data):\n    print('ODF', json.dumps(data), flush=True)\n",
            app.csm
        ),
    )
    .unwrap();
    // The IDF pushes 1, 2, 3, ... once the graph is ready (the test creates the flag file).
    let sa_idf = SA_IDF
        .replace("{api_url}", &app.csm)
        .replace("{id}", &idf_id)
        .replace("{go}", &format!("{:?}", flag.display().to_string()))
        .replace("{stop}", &format!("{:?}", stop.display().to_string()));
    std::fs::write(
        dir.path().join("sa_idf.py"),
        format!("{SA_PRELUDE}{sa_idf}"),
    )
    .unwrap();
    let mut odf = Dai::spawn(&dir.path().join("sa_odf.py"));
    let mut idf = Dai::spawn(&dir.path().join("sa_idf.py"));
    app.wait_online(2).await;

    if app.admin().is_some() {
        // Without credentials, nobody reaches the graph API.
        let (host, port) = app.mqtt.rsplit_once(':').unwrap();
        let out = tokio::process::Command::new("mosquitto_pub")
            .args([
                "-h",
                host,
                "-p",
                port,
                "-t",
                "iottalk/api/req/gui/graph/1",
                "-m",
                "{}",
            ])
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "anonymous mosquitto_pub accepted");
    }

    // Replies are read by a subscriber; the requests go out with mosquitto_pub -q 2.
    let mut res = app.mqtt(None).await;
    res.subscribe("iottalk/api/res/gui/graph/1", QoS::ExactlyOnce)
        .await;
    let topic = "iottalk/api/req/gui/graph/1";
    let (idf_sig, join_sig) = (digest(idf_code), digest(join_code));
    let ops = [
        json!({"op": "attach"}),
        json!({"op": "add_funcs", "codes": [idf_code, join_code], "digests": [idf_sig, join_sig]}),
        json!({"op": "add_link", "da_id": idf_id, "idf": "Dummy_Sensor", "func": idf_sig}),
        json!({"op": "add_link", "da_id": odf_id, "odf": "Dummy_Control", "func": null}),
        json!({"op": "set_join", "prev": null, "new": join_sig}),
    ];
    for op in &ops {
        mosquitto_pub(&app, topic, &op.to_string()).await;
        let name = op["op"].as_str().unwrap();
        let reply = res
            .recv_until(&format!("{name} reply"), |m| m.json()["op"] == name)
            .await
            .json();
        assert_eq!(reply["state"], "ok", "{op} -> {reply}");
    }
    app.wait_links_acked().await;
    std::fs::write(&flag, "").unwrap();
    for want in ["[1]", "[4]", "[9]"] {
        assert_eq!(odf.line_starting("ODF").await, format!("ODF {want}"));
    }

    // Ctrl-C both DAIs (the IDF once it has stopped pushing): both DAs gone, no link left in
    // the graph, nothing retained.
    std::fs::write(&stop, "").unwrap();
    idf.line_starting("IDF stopped").await;
    idf.interrupt().await;
    odf.interrupt().await;
    let s = app
        .wait_status("both DAs gone", |s| s["registered"] == 0)
        .await;
    assert_eq!(s["graphs"]["1"]["links"], 0, "{s}");
    assert_eq!(app.get(&idf_id).await.0, 404);
    assert_eq!(app.get(&odf_id).await.0, 404);
    let mut m = app.mqtt(None).await;
    for filter in [
        format!("{idf_id}/#"),
        format!("{odf_id}/#"),
        "iottalk/esm/#".to_owned(),
    ] {
        assert!(
            m.retained(&filter).await.is_empty(),
            "retained messages left on {filter}"
        );
    }
}

#[tokio::test]
async fn spec_walkthrough_with_python_functions() {
    walkthrough(
        AppOptions::default(),
        "def run(x): return int(x)\n",
        "def run(x): return x ** 2\n",
    )
    .await;
}

/// The same walkthrough with authentication on: the graph ops are published by an admin user
/// (`mosquitto_pub -u -P`), the unmodified iottalk-py DAs connect with the credentials of
/// their registration replies; a client without credentials is refused.
#[tokio::test]
async fn spec_walkthrough_with_auth_on() {
    let opts = AppOptions {
        auth: true,
        ..AppOptions::default()
    };
    walkthrough(
        opts,
        "def run(x): return int(x)\n",
        "def run(x): return x ** 2\n",
    )
    .await;
}

#[tokio::test]
async fn spec_walkthrough_with_rhai_functions() {
    walkthrough(
        AppOptions::default(),
        "fn run(x) { if type_of(x) == \"f64\" { x.to_int() } else { x } }\n",
        "fn run(x) { x * x }\n",
    )
    .await;
}

// ---- Routing ----

#[tokio::test]
async fn join_over_two_idfs_two_odfs_variant_and_tags() {
    let app = App::spawn().await;
    let mut a = PyDa::registered(&app, "A", json!([["Temp", ["C"]]]), json!([])).await;
    let mut b = PyDa::registered(&app, "B", json!([["Level", ["int", "tag"]]]), json!([])).await;
    let mut out1 = PyDa::registered(&app, "O1", json!([]), json!([["Show", ["x"]]])).await;
    let mut out2 = PyDa::registered(&app, "O2", json!([]), json!([["Show", ["x"]]])).await;
    app.wait_online(4).await;
    let mut g = GraphClient::new(&app, "sum").await;
    g.ok(json!({"op": "attach"})).await;
    let sum = "fn run(a, b) { if a == () || b == () { \"waiting\" } else { a + b } }";
    let double = "fn run(x) { [x, x] }";
    g.add_funcs(&[sum, double]).await;
    g.ok(json!({"op": "add_link", "da_id": a.id, "idf": "Temp", "func": null}))
        .await;
    // B sends [value, tag]: one data value, one tag, as a variant (difference) input.
    g.ok(json!({"op": "add_link", "da_id": b.id, "idf": "Level", "func": null, "param_no": 1, "tag_param_no": 1, "input_type": ["variant"]})).await;
    g.ok(json!({"op": "add_link", "da_id": out1.id, "odf": "Show", "func": null}))
        .await;
    g.ok(json!({"op": "add_link", "da_id": out2.id, "odf": "Show", "func": digest(double)}))
        .await;
    g.ok(json!({"op": "set_join", "prev": null, "new": digest(sum)}))
        .await;
    app.wait_links_acked().await;

    a.push("Temp", json!(20)).await;
    assert_eq!(out1.data().await, json!(["waiting"]));
    assert_eq!(out2.data().await, json!(["waiting", "waiting"]));
    b.push("Level", json!([100, "first"])).await; // variant: 0 on the first sample
    assert_eq!(out1.data().await, json!([20, "first"]));
    assert_eq!(out2.data().await, json!([20, 20, "first"]));
    b.push("Level", json!([105, "second"])).await; // +5
    assert_eq!(out1.data().await, json!([25, "second"]));
    a.push("Temp", json!(1)).await;
    assert_eq!(out1.data().await, json!([6]));
}

#[tokio::test]
async fn shared_links_disconnect_only_when_the_last_graph_lets_go() {
    let app = App::spawn().await;
    let mut src = PyDa::registered(&app, "SRC", json!([["Out", ["x"]]]), json!([])).await;
    let mut d1 = PyDa::registered(&app, "D1", json!([]), json!([["In", ["x"]]])).await;
    let mut d2 = PyDa::registered(&app, "D2", json!([]), json!([["In", ["x"]]])).await;
    app.wait_online(3).await;
    let mut g1 = GraphClient::new(&app, "g1").await;
    let mut g2 = GraphClient::new(&app, "g2").await;
    for (g, d) in [(&mut g1, &d1), (&mut g2, &d2)] {
        g.ok(json!({"op": "attach"})).await;
        g.ok(json!({"op": "add_link", "da_id": src.id, "idf": "Out", "func": null}))
            .await;
        g.ok(json!({"op": "add_link", "da_id": d.id, "odf": "In", "func": null}))
            .await;
    }
    app.wait_links_acked().await;
    // One CONNECT for the shared IDF link.
    let seen = src.events_until("signal").await;
    assert_eq!(seen.last().unwrap()["command"], "CONNECT");
    src.push("Out", json!(1)).await;
    assert_eq!(d1.data().await, json!([1]));
    assert_eq!(d2.data().await, json!([1]));

    // g1 drops the link: g2 still uses it, so no DISCONNECT and data still flows to d2.
    g1.ok(json!({"op": "rm_link", "da_id": src.id, "idf": "Out"}))
        .await;
    assert_eq!(
        g1.err(json!({"op": "rm_link", "da_id": src.id, "idf": "Out"}))
            .await,
        "link unknown"
    );
    src.send("push Out 2").await;
    let seen = src.events_until("pushed").await;
    assert!(
        seen.iter().all(|e| e["command"] != "DISCONNECT"),
        "early DISCONNECT: {seen:?}"
    );
    assert_eq!(d2.data().await, json!([2]));

    // g2 lets go: now the DA is told.
    g2.ok(json!({"op": "rm_link", "da_id": src.id, "idf": "Out"}))
        .await;
    let seen = src.events_until("signal").await;
    assert_eq!(seen.last().unwrap()["command"], "DISCONNECT");
    assert_eq!(seen.last().unwrap()["df"], "Out");
    // The ODF link of d1 goes with detach.
    g1.ok(json!({"op": "detach"})).await;
    let seen = d1.events_until("signal").await;
    assert_eq!(seen.last().unwrap()["command"], "DISCONNECT");
    assert_eq!(
        g1.err(json!({"op": "add_link", "da_id": d1.id, "odf": "In"}))
            .await,
        "Unknown graph id g1"
    );
}

#[tokio::test]
async fn graph_api_errors_are_replies_and_change_nothing() {
    let app = App::spawn().await;
    let da = PyDa::registered(&app, "E", json!([["Out", ["x"]]]), json!([["In", ["x"]]])).await;
    app.wait_online(1).await;
    let mut g = GraphClient::new(&app, "err").await;
    assert_eq!(
        g.err(json!({"op": "add_link", "da_id": da.id, "idf": "Out"}))
            .await,
        "Unknown graph id err"
    );
    g.ok(json!({"op": "attach"})).await;
    assert_eq!(
        g.err(json!({"op": "frobnicate"})).await,
        "unknown op: `frobnicate`"
    );
    // Wrong digest, count mismatch, unknown language, syntax errors: nothing added.
    let code = "fn run(x) { x }";
    let reason = g
        .err(json!({"op": "add_funcs", "codes": [code], "digests": ["00"]}))
        .await;
    assert!(reason.contains("digest mismatch"), "{reason}");
    let reason = g
        .err(json!({"op": "add_funcs", "codes": [code], "digests": []}))
        .await;
    assert!(reason.contains("entries"), "{reason}");
    let reason = g.err(json!({"op": "add_funcs", "codes": ["function run() {}"], "digests": [digest("function run() {}")]})).await;
    assert!(reason.contains("cannot tell the language"), "{reason}");
    let bad_rhai = "fn run(x) { x + }";
    let reason = g.err(json!({"op": "add_funcs", "codes": [code, bad_rhai], "digests": [digest(code), digest(bad_rhai)]})).await;
    assert!(reason.contains("Rhai syntax error"), "{reason}");
    let bad_py = "def run(x) return x\n";
    let reason = g
        .err(json!({"op": "add_funcs", "codes": [bad_py], "digests": [digest(bad_py)]}))
        .await;
    assert!(reason.contains("SyntaxError"), "{reason}");
    // The valid function of the refused batch was not added either.
    assert_eq!(
        g.err(json!({"op": "add_link", "da_id": da.id, "idf": "Out", "func": digest(code)}))
            .await,
        "Function unknown. Please add it first."
    );
    // Links: bad shapes, unknown DA and feature, unknown dependency, duplicates.
    assert!(g
        .err(json!({"op": "add_link", "da_id": da.id, "idf": "Out", "odf": "In"}))
        .await
        .contains("exactly one"));
    assert!(g
        .err(json!({"op": "add_link", "da_id": new_id(), "idf": "Out"}))
        .await
        .contains("not found"));
    assert!(g
        .err(json!({"op": "add_link", "da_id": da.id, "idf": "Nope"}))
        .await
        .contains("has no idf"));
    assert!(g
        .err(json!({"op": "add_link", "da_id": da.id, "idf": "Out", "param_no": 0}))
        .await
        .contains("param_no"));
    g.add_funcs(&[code]).await;
    assert_eq!(
        g.err(json!({"op": "add_link", "da_id": da.id, "idf": "Out", "func": digest(code), "depends": {"f": "beef"}})).await,
        "dependency f not found"
    );
    g.ok(json!({"op": "add_link", "da_id": da.id, "idf": "Out", "func": digest(code)}))
        .await;
    assert_eq!(
        g.err(json!({"op": "add_link", "da_id": da.id, "idf": "Out"}))
            .await,
        "link already exists"
    );
    // Joins and link functions with a stale prev.
    assert_eq!(
        g.err(json!({"op": "set_join", "prev": digest(code), "new": null}))
            .await,
        "`prev` field mismatch"
    );
    let r = g
        .ok(json!({"op": "set_join", "prev": null, "new": digest(code)}))
        .await;
    assert_eq!(
        (r["prev"].clone(), r["new"].clone(), r["depends"].clone()),
        (Value::Null, json!(digest(code)), json!({}))
    );
    assert_eq!(
        g.err(json!({"op": "set_join", "prev": null, "new": null}))
            .await,
        "`prev` field mismatch"
    );
    assert_eq!(
        g.err(
            json!({"op": "set_df_func", "da_id": da.id, "idf": "Out", "prev": null, "new": null})
        )
        .await,
        "`prev` field mismatch"
    );
    g.ok(json!({"op": "set_df_func", "da_id": da.id, "idf": "Out", "prev": digest(code), "new": null})).await;
    assert!(g
        .err(json!({"op": "rm_funcs", "digests": [digest(code)]}))
        .await
        .contains("in use"));
    // Malformed JSON still gets a reply.
    let mut raw = app.mqtt(None).await;
    raw.subscribe(
        &format!("iottalk/api/res/{}/graph/err", g.client()),
        QoS::ExactlyOnce,
    )
    .await;
    let topic = format!("iottalk/api/req/{}/graph/err", g.client());
    raw.publish(&topic, "{not json", QoS::ExactlyOnce, false)
        .await;
    let r = raw
        .recv_until("error reply", |m| {
            m.json()["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("malformed JSON"))
        })
        .await;
    assert_eq!(r.json()["state"], "error");
    // The controller still serves the graph.
    let s = app.status().await;
    assert_eq!(s["graphs"]["err"]["links"], 1, "{s}");
}

#[tokio::test]
async fn runaway_functions_are_bounded_and_other_graphs_keep_flowing() {
    let app = App::start(AppOptions {
        // Short enough for the runaway loop to be cut soon. A worker's start-up is not counted,
        // and the only other Python work is compiling `py_loop` (milliseconds), which is
        // retried below in the unlikely case a loaded machine took longer than this.
        extra_toml: "[functions]\nrhai_max_operations = 100000\npython_timeout_ms = 5000\n".into(),
        ..Default::default()
    })
    .await;
    let mut src = PyDa::registered(&app, "SRC", json!([["Out", ["x"]]]), json!([])).await;
    let mut good_in = PyDa::registered(&app, "GOODIN", json!([["Out", ["x"]]]), json!([])).await;
    let mut sink = PyDa::registered(&app, "SINK", json!([]), json!([["In", ["x"]]])).await;
    app.wait_online(3).await;

    let mut bad = GraphClient::new(&app, "bad").await;
    bad.ok(json!({"op": "attach"})).await;
    let rhai_loop = "fn run(x) { loop { } }";
    let py_loop = "def run(x):\n    while True:\n        pass\n";
    let digests = [digest(rhai_loop), digest(py_loop)];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = bad
            .send(json!({"op": "add_funcs", "codes": [rhai_loop, py_loop], "digests": digests}))
            .await;
        if r["state"] == "ok" {
            assert_eq!(r["digests"], json!(digests));
            break;
        }
        // Only the compile check's own deadline may have been too short on a loaded machine.
        let reason = r["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("timed out") && tokio::time::Instant::now() < deadline,
            "add_funcs failed: {r}"
        );
    }
    let monitor = bad.ok(json!({"op": "start_monitor"})).await["monitor_topics"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut mon = app.mqtt(None).await;
    mon.subscribe(&monitor, QoS::AtLeastOnce).await;
    bad.ok(json!({"op": "add_link", "da_id": src.id, "idf": "Out", "func": digest(rhai_loop)}))
        .await;

    let mut good = GraphClient::new(&app, "good").await;
    good.ok(json!({"op": "attach"})).await;
    good.ok(json!({"op": "add_link", "da_id": good_in.id, "idf": "Out", "func": null}))
        .await;
    good.ok(json!({"op": "add_link", "da_id": sink.id, "odf": "In", "func": null}))
        .await;
    app.wait_links_acked().await;

    for (func, what) in [(rhai_loop, "operations"), (py_loop, "timed out")] {
        if func == py_loop {
            bad.ok(json!({"op": "set_df_func", "da_id": src.id, "idf": "Out", "prev": digest(rhai_loop), "new": digest(py_loop)})).await;
        }
        src.push("Out", json!(1)).await;
        let e = mon
            .recv_until("esm_error", |m| m.json()["op"] == "esm_error")
            .await
            .json();
        assert!(e["data"]["msg"].as_str().unwrap().contains(what), "{e}");
        assert!(
            e["data"]["src"].as_str().unwrap().starts_with("idf "),
            "{e}"
        );
        // The other graph keeps flowing.
        good_in.push("Out", json!(7)).await;
        assert_eq!(sink.data().await, json!([7]));
    }
    let s = app.status().await;
    assert!(s["graphs"]["bad"]["errors"].as_u64().unwrap() >= 2, "{s}");
    assert!(s["python_restarts"].as_u64().unwrap() >= 1, "{s}");
}

#[tokio::test]
async fn a_killed_python_worker_is_replaced_and_routing_resumes() {
    let app = App::start(AppOptions {
        extra_toml: "[functions]\npython_workers = 1\n".into(),
        ..Default::default()
    })
    .await;
    let mut src = PyDa::registered(&app, "SRC", json!([["Out", ["x"]]]), json!([])).await;
    let mut sink = PyDa::registered(&app, "SINK", json!([]), json!([["In", ["x"]]])).await;
    app.wait_online(2).await;
    let mut g = GraphClient::new(&app, "py").await;
    g.ok(json!({"op": "attach"})).await;
    let sq = "def run(x): return x * x\n";
    g.add_funcs(&[sq]).await;
    g.ok(json!({"op": "add_link", "da_id": src.id, "idf": "Out", "func": null}))
        .await;
    g.ok(json!({"op": "add_link", "da_id": sink.id, "odf": "In", "func": null}))
        .await;
    g.ok(json!({"op": "set_join", "prev": null, "new": digest(sq)}))
        .await;
    app.wait_links_acked().await;
    // The first call runs on the probation worker; once answered, the graph's calls go to
    // the shared worker.
    src.push("Out", json!(3)).await;
    assert_eq!(sink.data().await, json!([9]));
    src.push("Out", json!(5)).await;
    assert_eq!(sink.data().await, json!([25]));

    let pid = app.status().await["python_workers"][0].as_u64().unwrap();
    assert!(pid > 0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Once the controller has seen the worker die, the next message starts a new worker and
    // is routed through it.
    app.wait_status("the killed worker noticed", |s| {
        s["python_workers"][0].as_u64() != Some(pid)
    })
    .await;
    src.push("Out", json!(4)).await;
    assert_eq!(sink.data().await, json!([16]));
    let s = app.status().await;
    let now = s["python_workers"][0].as_u64().unwrap();
    assert!(now > 0 && now != pid, "{s}");
    assert!(s["python_restarts"].as_u64().unwrap() >= 1, "{s}");
}

#[tokio::test]
async fn graphs_survive_a_controller_restart_mid_stream() {
    let opts = AppOptions {
        csm_listen: Some(free_addr()),
        mqtt_listen: Some(free_addr()),
        ..Default::default()
    };
    let app = App::start(opts).await;
    let mut src = PyDa::registered(&app, "SRC", json!([["Out", ["x"]]]), json!([])).await;
    let mut sink = PyDa::registered(&app, "SINK", json!([]), json!([["In", ["x"]]])).await;
    app.wait_online(2).await;
    let mut g = GraphClient::new(&app, "persist").await;
    g.ok(json!({"op": "attach"})).await;
    let inc = "fn run(x) { x + 1 }";
    g.add_funcs(&[inc]).await;
    g.ok(json!({"op": "add_link", "da_id": src.id, "idf": "Out", "func": digest(inc)}))
        .await;
    g.ok(json!({"op": "add_link", "da_id": sink.id, "odf": "In", "func": null}))
        .await;
    app.wait_links_acked().await;
    src.push("Out", json!(1)).await;
    assert_eq!(sink.data().await, json!([2]));
    drop(g);

    // Restart: same ports, same database. The DAs reconnect by themselves (paho), go online,
    // CONNECT is re-sent, and routing resumes without any graph op being sent again. Nothing
    // pushed once both are back is lost: the sink's outputs are held until it acks CONNECT.
    let app = app.restart().await;
    app.wait_online(2).await;
    let s = app.status().await;
    assert_eq!(s["graphs"]["persist"]["links"], 2, "{s}");
    for n in 10..13 {
        src.push("Out", json!(n)).await;
    }
    for n in 10..13 {
        assert_eq!(sink.data().await, json!([n + 1]));
    }
}

/// A hand-written ODF DA on raw MQTT (registered over HTTP): it comes online, and on each
/// CONNECT subscribes to the data topic and acknowledges.
struct RawOdf {
    mqtt: Mqtt,
    id: String,
}

impl RawOdf {
    async fn online(app: &App, id: &str, rev: &Value) -> RawOdf {
        let ctrl_i = format!("{id}/ctrl/i");
        let offline = json!({"state": "offline", "rev": rev});
        let mut mqtt = app.mqtt(Some((ctrl_i.clone(), offline))).await;
        mqtt.subscribe(&format!("{id}/ctrl/o"), QoS::AtLeastOnce)
            .await;
        mqtt.publish_json(&ctrl_i, &json!({"state": "online", "rev": rev}), true)
            .await;
        RawOdf {
            mqtt,
            id: id.to_owned(),
        }
    }

    /// Answers the next CONNECT: subscribes to its topic, then acks.
    async fn accept_connect(&mut self) {
        self.take_connect(true).await;
    }

    /// Takes the next CONNECT: subscribes to its topic, and acks if `reply`.
    async fn take_connect(&mut self, reply: bool) {
        let ctrl_o = format!("{}/ctrl/o", self.id);
        let signal = self
            .mqtt
            .recv_until("CONNECT", |r| {
                r.topic == ctrl_o && r.json()["command"] == "CONNECT"
            })
            .await
            .json();
        let topic = signal["topic"].as_str().unwrap().to_owned();
        self.mqtt.subscribe(&topic, QoS::AtLeastOnce).await;
        if !reply {
            return;
        }
        self.mqtt
            .publish_json(
                &format!("{}/ctrl/i", self.id),
                &json!({"msg_id": signal["msg_id"], "state": "ok"}),
                false,
            )
            .await;
    }

    async fn data(&mut self) -> Value {
        let ctrl = format!("{}/ctrl/", self.id);
        self.mqtt
            .recv_until("data", |r| !r.topic.starts_with(&ctrl))
            .await
            .json()
    }
}

/// Graph `gid`: an iottalk-py IDF `Out` linked to the ODF `Dummy_Control` of a [`RawOdf`]
/// (online, its CONNECT not yet answered). Returns both and the sink's rev.
async fn py_to_raw_odf(app: &App, gid: &str) -> (PyDa, RawOdf, Value) {
    let src = PyDa::registered(app, "SRC", json!([["Out", ["x"]]]), json!([])).await;
    let sink_id = new_id();
    let rev = app.register(&sink_id).await["rev"].clone();
    let sink = RawOdf::online(app, &sink_id, &rev).await;
    app.wait_online(2).await;
    let mut g = GraphClient::new(app, gid).await;
    g.ok(json!({"op": "attach"})).await;
    g.ok(json!({"op": "add_link", "da_id": src.id, "idf": "Out", "func": null}))
        .await;
    g.ok(json!({"op": "add_link", "da_id": sink_id, "odf": "Dummy_Control", "func": null}))
        .await;
    (src, sink, rev)
}

#[tokio::test]
async fn outputs_to_an_offline_odf_are_held_and_delivered_in_order_when_it_is_back() {
    let app = App::spawn().await;
    let (mut src, mut sink, rev) = py_to_raw_odf(&app, "hold").await;
    sink.accept_connect().await;
    app.wait_links_acked().await;
    src.push("Out", json!(1)).await;
    assert_eq!(sink.data().await, json!([1]));

    // The sink's connection drops (its will says offline); the source goes on pushing.
    let RawOdf { mqtt, id: sink_id } = sink;
    mqtt.kill();
    app.wait_status("sink offline", |s| s["online"] == 1).await;
    for v in 2..=4 {
        src.push("Out", json!(v)).await;
    }
    let s = app
        .wait_status("3 outputs held", |s| s["graphs"]["hold"]["held"] == 3)
        .await;
    assert_eq!(s["graphs"]["hold"]["held_dropped"], 0, "{s}");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("iotctl_graph_held_messages{graph=\"hold\"} 3\n"),
        "{metrics}"
    );

    // Back online: CONNECT again; once acknowledged, the held outputs arrive, in order,
    // before anything new.
    let mut sink = RawOdf::online(&app, &sink_id, &rev).await;
    sink.accept_connect().await;
    for v in 2..=4 {
        assert_eq!(sink.data().await, json!([v]));
    }
    src.push("Out", json!(5)).await;
    assert_eq!(sink.data().await, json!([5]));
    let s = app.status().await;
    assert_eq!(s["graphs"]["hold"]["held"], 0, "{s}");
}

#[tokio::test]
async fn an_odf_da_that_never_replies_to_connect_still_gets_its_data() {
    let app = App::start(AppOptions {
        env: vec![("IOTCTL__CSM__ODF_ACK_WAIT_MS".into(), "300".into())],
        ..Default::default()
    })
    .await;
    let (mut src, mut sink, _) = py_to_raw_odf(&app, "silent").await;
    // Like a DA written for IoTtalk v2, which ignored replies: it subscribes, never acks.
    sink.take_connect(false).await;
    src.push("Out", json!(1)).await;
    src.push("Out", json!(2)).await;
    assert_eq!(sink.data().await, json!([1]));
    assert_eq!(sink.data().await, json!([2]));
    // The link is still reported as not acknowledged.
    app.wait_status("the link reported unacknowledged", |s| {
        s["unacked_links"] == 1
    })
    .await;
}
