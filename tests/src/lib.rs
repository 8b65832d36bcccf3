#![allow(clippy::unwrap_used, clippy::expect_used)]
#![doc = include_str!("../README.md")]
//!
//! Layout: [`App`] (the controller under test, here), [`mqtt`] ([`Mqtt`], a rumqttc test
//! client that collects what it receives), [`pyda`] ([`PyDa`], an iottalk-py DA in a child
//! process), [`raw_da`] ([`RawDa`], a DA on raw MQTT), [`graph_client`] ([`GraphClient`]),
//! [`tls`] (certificates from `iotctl gencert`), [`ccm_client`] ([`CcmClient`], the CCM's REST API),
//! [`browser`] ([`Browser`], headless Chromium over WebDriver, for the CCM's GUI),
//! [`home_sim`] ([`TplinkSim`] and [`HttpTarget`], the devices home scenes drive).
//! Every wait is on a condition with a deadline, never a fixed sleep.

pub mod browser;
pub mod ccm_client;
pub mod graph_client;
pub mod home_sim;
pub mod mqtt;
pub mod pg;
pub mod pyda;
pub mod raw_da;
pub mod tls;

pub use browser::Browser;
pub use ccm_client::CcmClient;
pub use graph_client::GraphClient;
pub use home_sim::{HttpTarget, TplinkSim};
pub use iot_proto::wire::graph_api::digest;
pub use mqtt::{connack_code, connack_with, Mqtt, Received};
pub use pg::PgSchema;
pub use pyda::PyDa;
pub use raw_da::{LinkedPair, RawDa};

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rumqttc::QoS;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

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
    assert!(p.exists(), "{} is missing: run .ci/run once, or create it with `python3 -m venv .venv && .venv/bin/pip install iottalk-py==2.3.1 cryptography`", p.display());
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
    /// Fixed `host:port` for the CCM (REST API and GUI) instead of a free port.
    pub ccm_listen: Option<String>,
    /// Authentication on (`[auth] enabled = true`), with the admin user [`ADMIN_USER`]
    /// created before the start; operator requests, [`App::mqtt`] and graph clients use it.
    pub auth: bool,
    /// Extra environment for `iotctl`, e.g. `IOTCTL__BROKER__SCHEME=mqtts` to change a key
    /// of a section the generated config already has.
    pub env: Vec<(String, String)>,
    /// A CA certificate (PEM file) [`App::http`] trusts, for a controller serving HTTPS.
    pub ca_file: Option<PathBuf>,
}

/// The admin user of a controller started with [`AppOptions::auth`], and its password.
pub const ADMIN_USER: &str = "test-admin";
pub const ADMIN_PASSWORD: &str = "test-admin-password-5f1c";

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
    /// Base URL of the CCM (REST API under `/api/`, GUI at `/`).
    pub ccm: String,
    /// `host:port` of the MQTT broker DAs use.
    pub mqtt: String,
    pub ws: Option<String>,
    /// `host:port` of the MQTT-over-TLS listener, when on.
    pub mqtts: Option<String>,
    /// `host:port` of the MQTT-over-WebSocket-over-TLS listener, when on.
    pub wss: Option<String>,
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
            "[paths]\ndata_dir = \"{}\"\n[database]\nurl = \"{db}\"\n[broker]\nlisten = \"{}\"\nws_listen = \"127.0.0.1:0\"\nexternal = \"{}\"\nhost_send_timeout_ms = {TEST_HOST_SEND_TIMEOUT_MS}\n[csm]\nlisten = \"{}\"\noffline_expiry_seconds = {}\nodf_ack_wait_ms = {TEST_ODF_ACK_WAIT_MS}\n[functions]\npython_timeout_ms = {TEST_PYTHON_TIMEOUT_MS}\n[ccm]\nlisten = \"{}\"\n",
            data_dir.display(),
            opts.mqtt_listen.as_deref().unwrap_or("127.0.0.1:0"),
            opts.external.clone().unwrap_or_default(),
            opts.csm_listen.as_deref().unwrap_or("127.0.0.1:0"),
            opts.offline_expiry_seconds.unwrap_or(300),
            opts.ccm_listen.as_deref().unwrap_or("127.0.0.1:0"),
        );
        let mut config = merge_toml(&base, &opts.extra_toml);
        if opts.auth {
            config = merge_toml(&config, "[auth]\nenabled = true\n");
        }
        let config_path = data_dir.join("test-config.toml");
        std::fs::write(&config_path, config).expect("write config");
        if opts.auth {
            let out = iotctl_cli(
                &config_path,
                &[
                    "user",
                    "add",
                    ADMIN_USER,
                    "--role",
                    "admin",
                    "--password-stdin",
                ],
                Some(ADMIN_PASSWORD),
            )
            .await;
            let text = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() || text.contains("exists"),
                "iotctl user add: {text}"
            );
        }
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
            let fixed_port = opts.csm_listen.is_some()
                || opts.mqtt_listen.is_some()
                || opts.ccm_listen.is_some();
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
            ccm: field("ccm").expect("ccm url"),
            mqtt: field("mqtt").expect("mqtt addr"),
            ws: field("ws"),
            mqtts: field("mqtts"),
            wss: field("wss"),
            http: tls::http_client(opts.ca_file.as_deref()),
            opts,
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

    /// The admin's username and password when authentication is on.
    pub fn admin(&self) -> Option<(&'static str, &'static str)> {
        self.opts.auth.then_some((ADMIN_USER, ADMIN_PASSWORD))
    }

    /// `request` with the admin's HTTP Basic credentials when authentication is on.
    pub fn operator(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.admin() {
            Some((u, p)) => request.basic_auth(u, Some(p)),
            None => request,
        }
    }

    /// The value of the `/metrics` sample whose line starts with `sample` (name and labels,
    /// e.g. `iotctl_acl_denied_total{action="publish"}`); panics if there is none.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{sample}` in /metrics:\n{text}"))
    }

    /// Adds a controller user (`iotctl user add NAME --role ROLE --password-stdin`) and
    /// waits until the running controller knows it (it reloads its users every few seconds):
    /// until the broker accepts its CONNECT.
    pub async fn add_user(&self, name: &str, role: &str, password: &str) {
        let out = self
            .iotctl(
                &["user", "add", name, "--role", role, "--password-stdin"],
                Some(password),
            )
            .await;
        assert!(
            out.status.success(),
            "iotctl user add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = tokio::time::Instant::now() + WAIT;
        while connack_code(&self.mqtt, name, password).await != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "user {name} never accepted"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `iotctl -c <this config> ARGS` with `stdin` written to its standard input.
    pub async fn iotctl(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        iotctl_cli(&self.config, args, stdin).await
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
        self.operator(self.http.get(format!("{}/status", self.csm)))
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
            .operator(self.http.get(format!("{}/metrics", self.csm)))
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
    /// As the admin when authentication is on.
    pub async fn mqtt(&self, will: Option<(String, Value)>) -> Mqtt {
        Mqtt::connect_as(&self.mqtt, will, self.admin()).await
    }

    /// Attaches to the device API as `client`: the subscription (announcements follow on it)
    /// and the `da_list` of the attach reply (its pages put together when it came in pages).
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
        let mut pages = iot_proto::wire::paging::Pages::new("da_list");
        let reply = loop {
            let part = m
                .recv_until("attach reply", |r| r.json()["op"] == "attach")
                .await
                .json();
            if let Some(whole) = pages.add(part) {
                break whole;
            }
        };
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

/// Runs `iotctl -c CONFIG ARGS` with `stdin` written to its standard input.
pub async fn iotctl_cli(config: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new(iotctl_bin())
        .arg("-c")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn iotctl");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input
            .write_all(format!("{text}\n").as_bytes())
            .await
            .expect("write stdin");
    }
    drop(input);
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("iotctl finishes in time")
        .expect("iotctl output")
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
