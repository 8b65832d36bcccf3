#![allow(clippy::unwrap_used, clippy::expect_used)]
#![doc = include_str!("../README.md")]
//!
//! Layout: [`App`] (the controller under test), [`Mqtt`] (a rumqttc test client that
//! collects what it receives), [`PyDa`] (an iottalk-py DA in a child process).
//! Every wait is on a condition with a deadline, never a fixed sleep.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use iot_proto::wire::graph_api::{GraphOk, GraphOp};
use rumqttc::{
    AsyncClient, ConnectionError, Event, LastWill, MqttOptions, NetworkOptions, Outgoing, Packet,
    QoS,
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// How long any single expected event may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// `functions.python_timeout_ms` in every test controller's configuration: a loaded CI machine
/// can take seconds for a call that takes milliseconds when idle. A test about timeouts sets
/// its own in [`AppOptions::extra_toml`], which wins.
pub const TEST_PYTHON_TIMEOUT_MS: u64 = 20_000;

/// `csm.odf_ack_wait_ms` in every test controller's configuration: 0, outputs for an ODF wait
/// for its DA's reply to CONNECT however long it takes. The default (3 s) would let them go
/// out, to nobody, when a slow DA subscribes late. The test about a DA that never replies
/// sets its own.
pub const TEST_ODF_ACK_WAIT_MS: u64 = 0;

/// `broker.host_send_timeout_ms` in every test controller's configuration: a device's publish
/// waits this long for a busy controller task before it is dropped (default 1 s).
pub const TEST_HOST_SEND_TIMEOUT_MS: u64 = 30_000;

/// `base` with the sections and keys of `extra` added, `extra` winning on a key both have.
fn merge_toml(base: &str, extra: &str) -> String {
    let mut base: toml::Table = base.parse().expect("generated test config is TOML");
    let extra: toml::Table = extra.parse().expect("AppOptions::extra_toml is TOML");
    for (section, value) in extra {
        match (base.get_mut(&section), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => b.extend(e),
            (_, value) => {
                base.insert(section, value);
            }
        }
    }
    toml::to_string(&base).expect("TOML")
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

/// The `iotctl` binary under test: `$IOTCTL_BIN`, else the one of this workspace, built (once
/// per test process; a no-op when up to date) in the profile of the tests so it is never stale.
pub fn iotctl_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("IOTCTL_BIN") {
            return PathBuf::from(p);
        }
        // target/<profile>/deps/<test-exe> -> target/<profile>/iotctl
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_owned();
        let mut build =
            std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        // The same selection as `.ci/run`'s build step, so that the binary is not rebuilt
        // with another feature set (which would relink it on every switch).
        build
            .args(["build", "--quiet", "--workspace", "--all-targets"])
            .current_dir(workspace());
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build failed");
        let bin = profile_dir.join("iotctl");
        assert!(
            bin.exists(),
            "{} is missing after the build (set IOTCTL_BIN)",
            bin.display()
        );
        bin
    })
    .clone()
}

/// Python with iottalk-py: `$IOTTALK_PYTHON`, else `.venv/bin/python` in the workspace.
pub fn python() -> PathBuf {
    let p = std::env::var_os("IOTTALK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv/bin/python"));
    assert!(p.exists(), "{} is missing: run .ci/run once, or create it with `python3 -m venv .venv && .venv/bin/pip install iottalk-py==2.3.1`", p.display());
    p
}

/// PostgreSQL for tests: `$IOT_TEST_PG_URL`, default the local server's `test` database.
pub fn pg_url() -> String {
    std::env::var("IOT_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh lowercase UUID string.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Options for [`App::start`].
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// Extra TOML appended to the generated config (sections and keys).
    pub extra_toml: String,
    /// Database URL; default an SQLite file in the data dir.
    pub db_url: Option<String>,
    /// Reuse this data dir (to restart a controller on its own state).
    pub data_dir: Option<PathBuf>,
    /// Offline expiry; default 300 s.
    pub offline_expiry_seconds: Option<u64>,
    /// Use this broker instead of the embedded one.
    pub external: Option<String>,
    /// Fixed `host:port` for the CSM's HTTP API instead of a free port (e.g. from
    /// [`free_addr`]), so that a restarted controller keeps the address DAs were given.
    pub csm_listen: Option<String>,
    /// Fixed `host:port` for the embedded broker's MQTT listener instead of a free port.
    pub mqtt_listen: Option<String>,
    /// Extra environment for `iotctl`, e.g. `IOTCTL__BROKER__SCHEME=mqtts` to change a key
    /// of a section the generated config already has.
    pub env: Vec<(String, String)>,
}

/// A `127.0.0.1:<port>` that was free a moment ago: binds port 0, reads the port, closes it.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").to_string()
}

/// The controller under test: the real `iotctl start` in a child process.
#[derive(Debug)]
pub struct App {
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Base URL of the CSM API.
    pub csm: String,
    /// `host:port` of the MQTT broker DAs use.
    pub mqtt: String,
    pub ws: Option<String>,
    pub opts: AppOptions,
    pub http: reqwest::Client,
}

impl App {
    pub async fn spawn() -> App {
        Self::start(AppOptions::default()).await
    }

    pub async fn start(opts: AppOptions) -> App {
        let (tmp, data_dir) = match &opts.data_dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                let d = t.path().to_owned();
                (Some(t), d)
            }
        };
        let db = opts
            .db_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}/iotctl.db", data_dir.display()));
        let base = format!(
            "[paths]\ndata_dir = \"{}\"\n[database]\nurl = \"{db}\"\n[broker]\nlisten = \"{}\"\nws_listen = \"127.0.0.1:0\"\nexternal = \"{}\"\nhost_send_timeout_ms = {TEST_HOST_SEND_TIMEOUT_MS}\n[csm]\nlisten = \"{}\"\noffline_expiry_seconds = {}\nodf_ack_wait_ms = {TEST_ODF_ACK_WAIT_MS}\n[functions]\npython_timeout_ms = {TEST_PYTHON_TIMEOUT_MS}\n",
            data_dir.display(),
            opts.mqtt_listen.as_deref().unwrap_or("127.0.0.1:0"),
            opts.external.clone().unwrap_or_default(),
            opts.csm_listen.as_deref().unwrap_or("127.0.0.1:0"),
            opts.offline_expiry_seconds.unwrap_or(300),
        );
        let config = merge_toml(&base, &opts.extra_toml);
        let config_path = data_dir.join("test-config.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = data_dir.join("iotctl.log");
        // A fixed port (a restarted controller's) can be taken for a moment by another test's
        // free port or outgoing connection: start again while the log says so, a few times.
        let mut attempts = 0;
        let (child, ready, mut lines) = loop {
            attempts += 1;
            let log_start = std::fs::metadata(&log).map_or(0, |m| m.len());
            let log_file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .expect("log file");
            let mut child = Command::new(iotctl_bin())
                .arg("-c")
                .arg(&config_path)
                .arg("start")
                .env(
                    "RUST_LOG",
                    "info,iot_csm=debug,rmqtt=warn,rmqtt_net=warn,ntex=warn",
                )
                .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdout(Stdio::piped())
                .stderr(log_file)
                .kill_on_drop(true)
                .spawn()
                .expect("spawn iotctl");
            let stdout = child.stdout.take().expect("stdout");
            let mut lines = BufReader::new(stdout).lines();
            let ready = tokio::time::timeout(WAIT, async {
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.starts_with("iotctl ready:") {
                        return Some(line);
                    }
                }
                None
            })
            .await
            .ok()
            .flatten();
            if let Some(ready) = ready {
                break (child, ready, lines);
            }
            let _ = child.kill().await;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let this_run = text.get(log_start as usize..).unwrap_or_default();
            let fixed_port = opts.csm_listen.is_some() || opts.mqtt_listen.is_some();
            if fixed_port && attempts < 20 && this_run.contains("Address already in use") {
                eprintln!("iotctl: a fixed port is in use; starting again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            panic!("iotctl did not start:\n{text}");
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let field = |k: &str| {
            ready
                .split(' ')
                .find_map(|w| w.strip_prefix(&format!("{k}=")))
                .filter(|v| *v != "-")
                .map(str::to_owned)
        };
        App {
            child: Some(child),
            _tmp: tmp,
            data_dir,
            config: config_path,
            log,
            csm: field("csm").expect("csm url"),
            mqtt: field("mqtt").expect("mqtt addr"),
            ws: field("ws"),
            opts,
            http: reqwest::Client::new(),
        }
    }

    /// Stops the controller with SIGTERM and waits for it to exit; returns its exit status.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("iotctl stops in time")
            .expect("wait")
    }

    /// Kills the controller with SIGKILL (no clean stop) and reaps it.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.start_kill();
        let _ = child.try_wait();
    }

    /// Waits for a controller stopped from outside (e.g. `iotctl stop`) to exit.
    pub async fn stop_waited(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("iotctl exits in time")
            .expect("wait")
    }

    /// Stops (unless already stopped with [`App::stop`]) and starts the controller again on
    /// the same data dir and database.
    pub async fn restart(mut self) -> App {
        if self.child.is_some() {
            self.stop().await;
        }
        let mut opts = self.opts.clone();
        opts.data_dir = Some(self.data_dir.clone());
        let mut next = App::start(opts).await;
        next._tmp = self._tmp.take();
        next
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, id: &str) -> String {
        format!("{}/{id}", self.csm)
    }

    /// `PUT /{id}` with a JSON body; returns status and JSON reply.
    pub async fn put(&self, id: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .put(self.url(id))
            .json(body)
            .send()
            .await
            .expect("PUT");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn put_raw(&self, id: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self
            .http
            .put(self.url(id))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("PUT");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, id: &str) -> (u16, Value) {
        let r = self.http.get(self.url(id)).send().await.expect("GET");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, id: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .delete(self.url(id))
            .json(body)
            .send()
            .await
            .expect("DELETE");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// `/status` of the CSM.
    pub async fn status(&self) -> Value {
        self.http
            .get(format!("{}/status", self.csm))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json")
    }

    /// `/metrics` of the CSM (Prometheus text), checked to be served as text.
    pub async fn metrics(&self) -> String {
        let r = self
            .http
            .get(format!("{}/metrics", self.csm))
            .send()
            .await
            .expect("metrics");
        assert_eq!(r.status(), 200);
        let kind = r.headers()["content-type"].to_str().unwrap_or_default();
        assert!(kind.starts_with("text/plain"), "{kind}");
        r.text().await.expect("metrics text")
    }

    /// Registers a DA with one IDF and one ODF by HTTP; returns the reply.
    pub async fn register(&self, id: &str) -> Value {
        let (code, body) = self.put(id, &register_body()).await;
        assert_eq!(code, 200, "{body}");
        body
    }

    /// A test MQTT client connected to this controller's broker.
    pub async fn mqtt(&self, will: Option<(String, Value)>) -> Mqtt {
        Mqtt::connect(&self.mqtt, will).await
    }

    /// Attaches to the device API as `client`: the subscription (announcements follow on it)
    /// and the `da_list` of the attach reply.
    pub async fn attach_device_api(&self, client: &str) -> (Mqtt, Value) {
        let mut m = self.mqtt(None).await;
        m.subscribe(
            &format!("iottalk/api/res/{client}/device"),
            QoS::ExactlyOnce,
        )
        .await;
        m.publish_json(
            &format!("iottalk/api/req/{client}/device"),
            &json!({"op": "attach"}),
            false,
        )
        .await;
        let reply = m
            .recv_until("attach reply", |r| r.json()["op"] == "attach")
            .await
            .json();
        assert_eq!(reply["state"], "ok", "{reply}");
        (m, reply["da_list"].clone())
    }

    /// Waits until at least `n` DAs are online.
    pub async fn wait_online(&self, n: u64) {
        self.wait_status(&format!("{n} DAs online"), |s| {
            s["online"].as_u64() >= Some(n)
        })
        .await;
    }

    /// Waits until every link's DA acknowledged its CONNECT (an ODF DA subscribes to its data
    /// topic before it acks, so from then on nothing sent to it is lost).
    pub async fn wait_links_acked(&self) {
        self.wait_status("links acknowledged", |s| {
            s["unacked_links"] == 0 && s["failed_links"] == json!([])
        })
        .await;
    }

    /// Polls `/status` until `f` holds.
    pub async fn wait_status(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let s = self.status().await;
            if f(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last status {s}\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- iotctl log ({}) ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// Connects to the broker at `addr` with a username and password; returns the CONNACK code
/// (0 = accepted). While nothing listens on `addr` yet it tries again every few milliseconds
/// (up to [`WAIT`]), so it can be started before the broker to hit its first moments.
pub async fn connack_code(addr: &str, user: &str, password: &str) -> u8 {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let mut opts = MqttOptions::new(
        format!("cred-{}", new_id()),
        host,
        port.parse().expect("port"),
    );
    opts.set_credentials(user, password);
    let (_client, mut ev) = AsyncClient::new(opts, 10);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = tokio::time::timeout_at(deadline, ev.poll())
            .await
            .expect("an answer to CONNECT");
        match r {
            Ok(Event::Incoming(Packet::ConnAck(a))) => return a.code as u8,
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return code as u8,
            Err(rumqttc::ConnectionError::Io(e))
                if e.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A typical registration body (one IDF, one ODF).
pub fn register_body() -> Value {
    json!({
        "idf_list": [["Dummy_Sensor", ["dB"]]],
        "odf_list": [["Dummy_Control", [null]]],
        "accept_protos": ["mqtt"],
        "profile": {"model": "Dummy_Device"},
    })
}

/// What a [`Mqtt`] client receives.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
    pub qos: QoS,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
}

/// A rumqttc client for tests: its event loop runs in a task that forwards publishes and
/// SUBACKs; [`Mqtt::kill`] drops the socket without DISCONNECT, so the will fires.
#[derive(Debug)]
pub struct Mqtt {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Received>,
    subacks: mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Mqtt {
    pub async fn connect(addr: &str, will: Option<(String, Value)>) -> Mqtt {
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        let client_id = format!("test-{}", new_id());
        let mut opts = MqttOptions::new(client_id.clone(), host, port.parse().expect("port"));
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
        if let Some((topic, payload)) = will {
            opts.set_last_will(LastWill::new(
                topic,
                payload.to_string(),
                QoS::AtMostOnce,
                true,
            ));
        }
        let (client, mut ev) = AsyncClient::new(opts, 100);
        // rumqttc's default of 5 s for the TCP connect, the CONNACK and each flush is a time
        // limit a loaded machine can exceed.
        let mut net = NetworkOptions::new();
        net.set_connection_timeout(WAIT.as_secs());
        ev.set_network_options(net);
        let (tx, rx) = mpsc::unbounded_channel();
        let (stx, subacks) = mpsc::unbounded_channel();
        let (ctx, mut connected) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut up = false;
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Received {
                            topic: p.topic.clone(),
                            payload: p.payload.clone(),
                            retain: p.retain,
                            qos: p.qos,
                        });
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = stx.send(());
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        up = true;
                        let _ = ctx.send(());
                    }
                    // `disconnect` waits for this: everything queued before it is written.
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    // Before the first CONNACK nothing is subscribed: trying again is harmless.
                    Err(e) if !up => {
                        eprintln!("test MQTT client {client_id}: cannot connect yet ({e})");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(ConnectionError::RequestsDone) => return,
                    // rumqttc would connect again with a clean session, without the
                    // subscriptions: the client stops instead, so that a test waiting for a
                    // message fails with "connection closed" rather than a silent timeout.
                    Err(e) => {
                        eprintln!("test MQTT client {client_id}: connection lost ({e}); it stops");
                        return;
                    }
                }
            }
        });
        tokio::time::timeout(WAIT, connected.recv())
            .await
            .expect("CONNACK in time");
        Mqtt {
            client,
            rx,
            subacks,
            task,
        }
    }

    /// Subscribes and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        tokio::time::timeout(WAIT, self.subacks.recv())
            .await
            .expect("SUBACK in time")
            .expect("the connection is up (see the test MQTT client's message above)");
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, qos: QoS, retain: bool) {
        self.client
            .publish(topic, qos, retain, payload.into())
            .await
            .expect("publish");
    }

    pub async fn publish_json(&self, topic: &str, v: &Value, retain: bool) {
        self.publish(topic, v.to_string(), QoS::ExactlyOnce, retain)
            .await;
    }

    /// The next message matching `pred`, skipping others.
    pub async fn recv_until(&mut self, what: &str, pred: impl Fn(&Received) -> bool) -> Received {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) if pred(&m) => return m,
                Ok(Some(_)) => {}
                Ok(None) => panic!("connection closed while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// Everything received from now until the connection closes (e.g. the controller stops),
    /// at most [`WAIT`]: what reached this client before a restart, read after it.
    pub async fn until_closed(&mut self) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => out.push(m),
                Ok(None) => return out,
                Err(_) => panic!("the connection did not close; received {out:?}"),
            }
        }
    }

    /// The next device API announcement `kind` (`register`, `online`, ...) about DA `id`.
    pub async fn announcement(&mut self, kind: &str, id: &str) -> Value {
        self.recv_until(&format!("{kind} announcement of {id}"), |r| {
            let v = r.json();
            v["op"] == "anno" && v["type"] == kind && (v["da"]["id"] == id || v["da"] == id)
        })
        .await
        .json()
    }

    /// The retained messages currently stored for `filter`: subscribes to it, then to a
    /// marker topic with a retained message of its own; once the marker arrives, every
    /// retained message of `filter` has been delivered before it.
    pub async fn retained(&mut self, filter: &str) -> Vec<Received> {
        let marker = format!("test-marker/{}", new_id());
        self.publish(&marker, "m", QoS::AtLeastOnce, true).await;
        self.subscribe(filter, QoS::AtLeastOnce).await;
        self.subscribe(&marker, QoS::AtLeastOnce).await;
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) if m.topic == marker => break,
                Ok(Some(m)) if m.retain => out.push(m),
                Ok(Some(_)) => {}
                _ => panic!("marker not received"),
            }
        }
        let _ = self.client.unsubscribe(filter).await;
        let _ = self.client.unsubscribe(&marker).await;
        self.publish(&marker, "", QoS::AtLeastOnce, true).await;
        out
    }

    /// Polls [`Mqtt::retained`] until `done` holds for what it returns, at most [`WAIT`]: the
    /// broker sends each SUBSCRIBE's retained messages from a task of its own, so the marker
    /// of one call can overtake a message that is stored. For where a message is expected.
    pub async fn retained_until(
        &mut self,
        filter: &str,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.retained(filter).await;
            if done(&got) {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what} retained on {filter}; last {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Drops the connection without DISCONNECT: the broker publishes the will.
    pub fn kill(self) {
        self.task.abort();
    }

    /// Sends DISCONNECT (after everything queued before it) and waits until it is written.
    pub async fn disconnect(mut self) {
        if self.client.disconnect().await.is_ok() {
            let _ = tokio::time::timeout(WAIT, &mut self.task).await;
        }
        self.task.abort();
    }
}

/// An unmodified iottalk-py DA (`py/da.py`) in a child process.
#[derive(Debug)]
pub struct PyDa {
    child: Child,
    stdin: ChildStdin,
    events: mpsc::UnboundedReceiver<Value>,
    pub id: String,
    /// The SDK's log (paho's packets at debug level), printed when a test fails.
    log: tempfile::NamedTempFile,
}

impl PyDa {
    /// Starts a DA registering at `api_url` with the given features (JSON lists as the SDK
    /// takes them, e.g. `[["Dummy_Sensor", ["int"]]]`).
    pub async fn spawn(api_url: &str, id: &str, name: &str, idf: Value, odf: Value) -> PyDa {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let stderr = log.reopen().expect("log file");
        let mut child = Command::new(python())
            .arg(workspace().join("tests/py/da.py"))
            .args([api_url, id, name, &idf.to_string(), &odf.to_string()])
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn python DA");
        let stdin = child.stdin.take().expect("stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        PyDa {
            child,
            stdin,
            events,
            id: id.to_owned(),
            log,
        }
    }

    /// A DA of a fresh id registered at `app` (see [`PyDa::spawn`]).
    pub async fn registered(app: &App, name: &str, idf: Value, odf: Value) -> PyDa {
        let mut da = PyDa::spawn(&app.csm, &new_id(), name, idf, odf).await;
        da.expect("registered").await;
        da
    }

    /// The next data event, as its list.
    pub async fn data(&mut self) -> Value {
        self.expect("data").await["data"].clone()
    }

    /// Pushes `value` on `idf` until the push succeeds (the IDF is connected).
    pub async fn push(&mut self, idf: &str, value: Value) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            self.send(&format!("push {idf} {value}")).await;
            if self.expect("pushed").await["ok"] == true {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "IDF {idf} never connected"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The next event named `name` (others are skipped); panics on an `error` event.
    pub async fn expect(&mut self, name: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(v)) if v["event"] == name => return v,
                Ok(Some(v)) if v["event"] == "error" && name != "error" => panic!("DA error: {v}"),
                Ok(Some(_)) => {}
                Ok(None) => panic!("DA exited while waiting for {name}"),
                Err(_) => panic!("timed out waiting for DA event {name}"),
            }
        }
    }

    /// Every event up to and including the first one named `name`.
    pub async fn events_until(&mut self, name: &str) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(v)) => {
                    let done = v["event"] == name;
                    seen.push(v);
                    if done {
                        return seen;
                    }
                }
                Ok(None) => panic!("DA exited while waiting for {name}; saw {seen:?}"),
                Err(_) => panic!("timed out waiting for DA event {name}; saw {seen:?}"),
            }
        }
    }

    pub async fn send(&mut self, cmd: &str) {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .expect("write to DA");
        self.stdin.flush().await.expect("flush");
    }

    /// Deregisters as the SDK does on Ctrl-C (offline, then DELETE) and waits for the exit.
    pub async fn deregister(mut self) {
        self.send("deregister").await;
        self.expect("deregistered").await;
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }

    /// Exits without deregistering.
    pub async fn exit(mut self) {
        self.send("exit").await;
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }
}

impl Drop for PyDa {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
            eprintln!("---- iottalk-py DA {} log ----\n{text}", self.id);
        }
    }
}

/// A graph API client for one graph: the shared [`iot_client::GraphClient`] under a fresh
/// client name, with the assertions tests make on replies.
#[derive(Debug)]
pub struct GraphClient {
    pub api: iot_client::GraphClient,
    pub gid: String,
}

impl GraphClient {
    /// A client of a fresh name for graph `gid` (not attached yet).
    pub async fn new(app: &App, gid: &str) -> GraphClient {
        let (host, port) = app.mqtt.rsplit_once(':').expect("host:port");
        let mut opts = iot_client::GraphClientOptions::new(
            host,
            port.parse().expect("port"),
            format!("t{}", &new_id()[..8]),
        );
        opts.reply_timeout = WAIT;
        opts.connect_timeout = WAIT;
        let api = iot_client::GraphClient::connect(opts)
            .await
            .expect("graph API client connects");
        GraphClient {
            api,
            gid: gid.to_owned(),
        }
    }

    /// A fresh graph, attached.
    pub async fn attached(app: &App) -> GraphClient {
        let mut g = Self::new(app, &new_id()).await;
        g.ok(json!({"op": "attach"})).await;
        g
    }

    /// The `<client>` level of this client's topics.
    pub fn client(&self) -> &str {
        self.api.name()
    }

    /// Sends a request and returns its reply (any state).
    pub async fn send(&mut self, req: Value) -> Value {
        let Value::Object(body) = req.clone() else {
            panic!("a request is a JSON object: {req}");
        };
        let reply = self
            .api
            .send(&self.gid, body)
            .await
            .unwrap_or_else(|e| panic!("request {req}: {e}"));
        Value::Object(reply.fields)
    }

    /// Sends a request that must succeed.
    pub async fn ok(&mut self, req: Value) -> Value {
        let r = self.send(req.clone()).await;
        assert_eq!(r["state"], "ok", "request {req} failed: {r}");
        r
    }

    /// Sends a request that must fail; returns the reason.
    pub async fn err(&mut self, req: Value) -> String {
        let r = self.send(req.clone()).await;
        assert_eq!(r["state"], "error", "request {req} should fail: {r}");
        r["reason"].as_str().unwrap_or_default().to_owned()
    }

    /// Adds functions (digests computed by the client).
    pub async fn add_funcs(&mut self, codes: &[&str]) {
        let op = GraphOp::add_funcs(codes.iter().copied());
        let ok = self
            .api
            .request(&self.gid, op)
            .await
            .unwrap_or_else(|e| panic!("add_funcs: {e}"));
        let digests: Vec<String> = codes.iter().map(|c| digest(c)).collect();
        assert_eq!(ok, GraphOk::Digests(digests));
    }

    /// Links a DA's feature (`side` is `idf` or `odf`) with no function.
    pub async fn link(&mut self, da: &str, side: &str, feature: &str) {
        let mut body = json!({"op": "add_link", "da_id": da, "func": null});
        body[side] = json!(feature);
        self.ok(body).await;
    }
}

pub use iot_proto::wire::graph_api::digest;
