//! [`PyDa`], an unmodified iottalk-py DA in a child process.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::{new_id, python, workspace, App, WAIT};

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
        Self::spawn_with_env(api_url, id, name, idf, odf, &[]).await
    }

    /// [`PyDa::spawn`] with extra environment, e.g. `REQUESTS_CA_BUNDLE` for an `https` URL.
    pub async fn spawn_with_env(
        api_url: &str,
        id: &str,
        name: &str,
        idf: Value,
        odf: Value,
        env: &[(&str, &str)],
    ) -> PyDa {
        Self::spawn_full(api_url, id, name, idf, odf, "Dummy_Device", env).await
    }

    /// [`PyDa::spawn_with_env`] as a DA of device model `model`.
    pub async fn spawn_full(
        api_url: &str,
        id: &str,
        name: &str,
        idf: Value,
        odf: Value,
        model: &str,
        env: &[(&str, &str)],
    ) -> PyDa {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let stderr = log.reopen().expect("log file");
        let mut child = Command::new(python())
            .arg(workspace().join("tests/py/da.py"))
            .args([api_url, id, name, &idf.to_string(), &odf.to_string(), model])
            .env("PYTHONUNBUFFERED", "1")
            .envs(env.iter().copied())
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

    /// [`PyDa::registered`] as a DA of device model `model` (its profile's `model`).
    pub async fn of_model(app: &App, model: &str, name: &str, idf: Value, odf: Value) -> PyDa {
        let mut da = PyDa::spawn_full(&app.csm, &new_id(), name, idf, odf, model, &[]).await;
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
