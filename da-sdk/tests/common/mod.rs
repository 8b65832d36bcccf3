//! Helpers shared by the SDK's end-to-end tests: a stand-in for the controller's routing
//! side (it sends CONNECT/DISCONNECT like the CSM and reads data topics), and the example
//! binaries.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use da_sdk::{Da, DaBuilder, DaId, Status};
use iot_tests::{free_addr, new_id, App, AppOptions, Mqtt, Received, WAIT};
use rumqttc::QoS;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// A builder for `app` with test-friendly timings.
pub fn builder(app: &App) -> DaBuilder {
    patient(Da::builder(&app.csm).model("Dummy_Device"))
        .backoff(Duration::from_millis(50), Duration::from_millis(400))
}

/// `b` with deadlines fit for a loaded machine (the SDK's defaults are 10 s, and 5 s to stop):
/// the broker's CONNACK, each HTTP request, calls and the offline confirmation may take
/// seconds there. A test about a deadline sets its own.
pub fn patient(b: DaBuilder) -> DaBuilder {
    b.connect_timeout(WAIT)
        .http_timeout(WAIT)
        .call_timeout(WAIT)
        .stop_timeout(WAIT)
}

/// Waits (at most [`WAIT`]) until `f` holds for the DA's status.
pub async fn wait(da: &Da, what: &str, f: impl FnMut(&Status) -> bool) -> Status {
    match tokio::time::timeout(WAIT, da.wait_for(f)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => panic!("{what}: {e}; status {:?}", da.status()),
        Err(_) => panic!("timed out waiting for {what}; status {:?}", da.status()),
    }
}

/// Plays the CSM's part for links: sends signals on a DA's downlink and reads its acks.
pub struct Csm {
    pub m: Mqtt,
    da: DaId,
}

impl Csm {
    pub async fn new(app: &App, da: DaId) -> Csm {
        let mut m = app.mqtt(None).await;
        m.subscribe(&format!("{da}/ctrl/i"), QoS::ExactlyOnce).await;
        Csm { m, da }
    }

    /// Sends a raw signal body and returns the DA's reply to its `msg_id`.
    pub async fn send(&mut self, body: Value) -> Value {
        let msg_id = body["msg_id"].clone();
        self.m
            .publish_json(&format!("{}/ctrl/o", self.da), &body, false)
            .await;
        self.m
            .recv_until(&format!("reply to {body}"), |r| {
                !r.retain && r.json()["msg_id"] == msg_id
            })
            .await
            .json()
    }

    pub async fn signal(&mut self, side: &str, feature: &str, command: &str, topic: &str) -> Value {
        let mut body = json!({"msg_id": new_id(), "command": command, "topic": topic});
        body[side] = json!(feature);
        self.send(body).await
    }

    /// CONNECTs a feature to `topic` and checks the DA accepted.
    pub async fn connect(&mut self, side: &str, feature: &str, topic: &str) {
        let r = self.signal(side, feature, "CONNECT", topic).await;
        assert_eq!(r["state"], "ok", "CONNECT {side} {feature}: {r}");
    }

    /// Waits for the DA's `online` with any rev other than `not` (a live message).
    pub async fn online(&mut self, not: Option<&str>) -> String {
        let not = not.map(str::to_owned);
        let r = self
            .m
            .recv_until("online", |r| {
                let v = r.json();
                v["state"] == "online" && Some(v["rev"].as_str().unwrap_or("")) != not.as_deref()
            })
            .await;
        r.json()["rev"].as_str().unwrap().to_owned()
    }
}

/// A subscriber to one data topic.
pub async fn data_reader(app: &App, topic: &str) -> Mqtt {
    let mut m = app.mqtt(None).await;
    m.subscribe(topic, QoS::AtLeastOnce).await;
    m
}

/// The next `n` messages on `m`, as JSON.
pub async fn take(m: &mut Mqtt, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let r: Received = m.recv_until("data", |_| true).await;
        out.push(r.json());
    }
    out
}

/// A fresh data topic like the controller's.
pub fn data_topic() -> String {
    format!("iottalk/esm/{}", new_id())
}

/// The example binaries: in `$IOT_EXAMPLES_DIR` when set (`.ci/run` builds them once), else
/// built once per test process.
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        if let Some(d) = std::env::var_os("IOT_EXAMPLES_DIR") {
            return PathBuf::from(d);
        }
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
        let mut build =
            std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        // The same selection as `.ci/run` and the harness (`--workspace --all-targets`), so
        // the examples are not rebuilt with another feature set.
        build
            .args(["build", "--quiet", "--workspace", "--all-targets"])
            .current_dir(iot_tests::workspace());
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        assert!(
            build.status().unwrap().success(),
            "building the examples failed"
        );
        profile_dir.join("examples")
    });
    dir.join(name)
}

/// A running example: its stdout lines arrive on `lines`.
pub struct Example {
    pub child: Child,
    pub lines: mpsc::UnboundedReceiver<String>,
}

impl Example {
    pub fn spawn(name: &str, args: &[&str]) -> Example {
        let mut child = Command::new(example(name))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(l)) = out.next_line().await {
                let _ = tx.send(l);
            }
        });
        Example { child, lines }
    }

    pub async fn line(&mut self, what: &str) -> String {
        tokio::time::timeout(WAIT, self.lines.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("the example exited while waiting for {what}"))
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn terminate(mut self) {
        let pid = self.child.id().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the example exits after SIGTERM")
            .unwrap();
        assert!(status.success(), "the example failed: {status}");
    }
}

/// A file of `len` pseudo-random bytes (not compressible, not repeating in chunk-sized runs).
pub fn random_file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ len as u64;
    let mut left = len;
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        let n = left.min(8);
        f.write_all(&b[..n]).unwrap();
        left -= n;
    }
    f.flush().unwrap();
    path
}

pub fn same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(x.len(), y.len(), "{} and {}", a.display(), b.display());
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}

/// A controller with fixed ports, so that a restarted one is where DAs were told it is.
pub async fn fixed_app() -> App {
    App::start(AppOptions {
        csm_listen: Some(free_addr()),
        mqtt_listen: Some(free_addr()),
        ..Default::default()
    })
    .await
}
