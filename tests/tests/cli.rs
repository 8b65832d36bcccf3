#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `iotctl` as an operator uses it: genconf, initdb, start, status, stop, and the errors a
//! wrong configuration or a busy port give.

use std::process::{Command, Output, Stdio};

use iot_tests::*;

fn iotctl(args: &[&str]) -> Output {
    Command::new(iotctl_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run iotctl")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A config with the documented keys, every listener on a free port.
fn config(dir: &std::path::Path, broker_listen: &str) -> String {
    let path = dir.join("iotctl.toml");
    std::fs::write(
        &path,
        format!(
            "[paths]\ndata_dir = \"{d}\"\n[broker]\nlisten = \"{broker_listen}\"\nws_listen = \"127.0.0.1:0\"\nexternal = \"\"\n[csm]\nlisten = \"127.0.0.1:0\"\n[ccm]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"sqlite://{d}/iotctl.db\"\n",
            d = dir.display()
        ),
    )
    .expect("write config");
    path.to_string_lossy().into_owned()
}

#[test]
fn genconf_writes_the_documented_default_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("c.toml");
    let d = dest.to_str().unwrap();
    let o = iotctl(&["genconf", d]);
    assert!(o.status.success(), "{}", text(&o));
    let written = std::fs::read_to_string(&dest).unwrap();
    for key in [
        "data_dir",
        "listen",
        "ws_listen",
        "external",
        "offline_expiry_seconds",
        "url",
    ] {
        assert!(written.contains(key), "{key} missing");
    }
    let o = iotctl(&["genconf", d]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--force"), "{}", text(&o));
    assert!(iotctl(&["genconf", "--force", d]).status.success());
    // The generated file is a valid config.
    let o = iotctl(&["-c", d, "status"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
}

#[test]
fn invalid_config_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[csm]\nlistn = \"127.0.0.1:1\"\n").unwrap();
    let o = iotctl(&["-c", path.to_str().unwrap(), "initdb"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("listn"), "{}", text(&o));
    std::fs::write(&path, "[broker]\nlisten = \"localhost\"\n").unwrap();
    let o = iotctl(&["-c", path.to_str().unwrap(), "initdb"]);
    assert!(text(&o).contains("broker.listen"), "{}", text(&o));
}

#[tokio::test]
async fn initdb_start_status_stop() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "127.0.0.1:0");
    let o = iotctl(&["-c", &cfg, "initdb"]);
    assert!(o.status.success(), "{}", text(&o));
    let applied = text(&o);
    assert!(
        applied.contains(" migration(s) applied") && !applied.contains(" 0 migration(s)"),
        "{applied}"
    );
    let o = iotctl(&["-c", &cfg, "initdb"]);
    assert!(text(&o).contains("0 migration(s) applied"), "{}", text(&o));
    assert_eq!(iotctl(&["-c", &cfg, "status"]).status.code(), Some(3));

    let mut opts = AppOptions {
        data_dir: Some(dir.path().to_owned()),
        ..Default::default()
    };
    opts.extra_toml = String::new();
    let mut app = App::start(opts).await;
    let id = new_id();
    app.register(&id).await;

    let o = iotctl(&["-c", &cfg, "status"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("broker  up"), "{out}");
    assert!(out.contains("csm     up"), "{out}");
    assert!(out.contains("registered 1, online 0"), "{out}");
    let o = iotctl(&["-c", &cfg, "status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["csm"]["status"]["registered"], 1);
    assert_eq!(v["broker"]["up"], true);

    // A second start on the same data dir is refused.
    let o = iotctl(&["-c", &cfg, "start"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("already running"), "{}", text(&o));

    let o = iotctl(&["-c", &cfg, "stop"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("stopped"), "{}", text(&o));
    let status = app.stop_waited().await;
    assert!(status.success(), "clean exit after stop: {status:?}");
    assert!(!dir.path().join("iotctl.pid").exists(), "pidfile removed");
    let o = iotctl(&["-c", &cfg, "status"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(text(&o).contains("not running"));
    let o = iotctl(&["-c", &cfg, "stop"]);
    assert!(o.status.success() && text(&o).contains("not running"));
}

#[test]
fn busy_broker_port_stops_startup_with_a_clear_message() {
    // Mosquitto already listens on 1883 on this machine.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "127.0.0.1:1883");
    let o = iotctl(&["-c", &cfg, "start"]);
    assert!(!o.status.success());
    let out = text(&o);
    assert!(
        out.contains("127.0.0.1:1883") && out.contains("broker.listen"),
        "{out}"
    );
    assert!(
        !dir.path().join("iotctl.pid").exists(),
        "no pidfile left behind"
    );
}

/// `iotctl start ccm` on its own: the configuration manager of another process's broker and
/// CSM, learning their DAs over the device API (MQTT) and applying a project over the graph API.
#[tokio::test]
async fn start_ccm_alone_drives_the_csm_of_a_running_controller() {
    use tokio::io::AsyncBufReadExt;
    let app = App::spawn().await;
    let da = new_id();
    app.register(&da).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &app.mqtt);
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("[ccm]\n", "[ccm]\napi_client = \"ccm-alone\"\n"),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(iotctl_bin())
        .args(["-c", &cfg, "start", "ccm"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(WAIT, async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l.starts_with("iotctl ready:") {
                return l;
            }
        }
        String::new()
    })
    .await
    .expect("iotctl start ccm never got ready");
    assert!(ready.contains("csm=- ccm=http://127.0.0.1:"), "{ready}");
    let base = ready
        .split(' ')
        .find_map(|w| w.strip_prefix("ccm="))
        .unwrap()
        .to_owned();
    let c = CcmClient {
        base,
        http: reqwest::Client::new(),
        basic: None,
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, session) = c.get("/api/session").await;
        let (_, devices) = c.get("/api/devices").await;
        let seen = devices
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x["id"] == da.as_str()));
        if session["csm"] == true && seen {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{session} {devices}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A project with one network application, on: its graph appears on the other process's CSM.
    let (s, p) = c
        .post("/api/projects", &serde_json::json!({"name": "alone"}))
        .await;
    assert_eq!(s, 201, "{p}");
    c.post("/api/projects/1/netapps", &serde_json::json!({"name": "j"}))
        .await;
    c.post("/api/projects/1/on", &serde_json::json!({})).await;
    let mut g = GraphClient::new(&app, "ccm-p1-n1").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = g.send(serde_json::json!({"op": "show"})).await;
        if r["state"] == "ok" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{r}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = child.kill().await;
}

#[tokio::test]
async fn shell_lists_shows_and_publishes() {
    let app = App::spawn().await;
    let id = new_id();
    app.register(&id).await;
    let mut sub = app.mqtt(None).await;
    sub.subscribe("shell-test/#", rumqttc::QoS::AtLeastOnce)
        .await;
    let script = format!("list\nshow {id}\nshow nope\npub shell-test/a hello world qos=1\nbogus\n");
    let mut child = tokio::process::Command::new(iotctl_bin())
        .args(["-c", app.config.to_str().unwrap(), "shell"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(script.as_bytes()).await.unwrap();
    stdin.flush().await.unwrap();
    // `pub` only queues the message: `quit` goes in once it has arrived.
    let m = sub
        .recv_until("shell publish", |m| m.topic == "shell-test/a")
        .await;
    assert_eq!(&m.payload[..], b"hello world");
    stdin.write_all(b"quit\n").await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 DA(s)"), "{text}");
    assert!(
        text.contains(&id) && text.contains("00.Dummy_Device"),
        "{text}"
    );
    assert!(text.contains("no DA nope"), "{text}");
    assert!(text.contains("published"), "{text}");
    assert!(text.contains("unknown command `bogus`"), "{text}");
}
