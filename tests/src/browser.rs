//! [`Browser`]: headless Chromium driven over WebDriver (a `chromedriver` child process and
//! the `fantoccini` client), for the tests of the CCM's web GUI. Every helper waits on a
//! condition with the [`WAIT`] deadline: an element that is re-rendered under the test (the
//! project editor polls) is looked up again, never waited for with a fixed sleep.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian `chromium` and
//! `chromium-driver`; `.ci/run` installs them), or `$CHROMEDRIVER` and `$CHROMIUM`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::{free_addr, workspace, WAIT};

/// Window size of every test browser: a 1366 px laptop screen less the browser's chrome.
pub const WINDOW: (u32, u32) = (1366, 900);

/// A headless Chromium session with the chromedriver it runs under (killed on drop).
#[derive(Debug)]
pub struct Browser {
    pub client: Client,
    /// Base URL pages are opened under (the CCM's), without a trailing `/`.
    pub base: String,
    _driver: Child,
}

fn env_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session in it.
    pub async fn start(base: &str) -> Browser {
        let driver_bin = env_path("CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = env_path("CHROMIUM", "/usr/bin/chromium");
        assert!(
            driver_bin.exists() && chromium.exists(),
            "{} or {} is missing: `apt-get install chromium chromium-driver` (.ci/run does)",
            driver_bin.display(),
            chromium.display()
        );
        let port = free_addr()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .expect("free port");
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let caps = json!({
            "browserName": "chrome",
            // confirm() before a delete is answered OK.
            "unhandledPromptBehavior": "accept",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                ],
            },
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "no WebDriver session at {url}: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        Browser {
            client,
            base: base.trim_end_matches('/').to_owned(),
            _driver: driver,
        }
    }

    /// Opens `{base}/{path}`, e.g. `#/devices`.
    pub async fn open(&self, path: &str) {
        self.client
            .goto(&format!("{}/{path}", self.base))
            .await
            .expect("goto");
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and answers its result.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.expect("execute")
    }

    /// Waits until `script` answers something other than `null`, `false`, `0` or `""`.
    pub async fn wait_js(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.client.execute(script, args.clone()).await;
            if let Ok(v) = &v {
                let truthy = match v {
                    Value::Null | Value::Bool(false) => false,
                    Value::Number(n) => n.as_f64() != Some(0.0),
                    Value::String(s) => !s.is_empty(),
                    _ => true,
                };
                if truthy {
                    return v.clone();
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let toast = self.toast().await;
                panic!("timed out waiting for {what} (last answer {v:?}; status line {toast:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The displayed element matching `css`, once there is one.
    pub async fn find(&self, css: &str) -> Element {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                if e.is_displayed().await.unwrap_or(false) {
                    return e;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "no element `{css}` displayed (status line {:?})",
                    self.toast().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |v| v.len())
    }

    /// Waits until `css` matches at least `n` elements.
    pub async fn wait_count(&self, css: &str, n: usize) {
        let script = "return document.querySelectorAll(arguments[0]).length >= arguments[1]";
        self.wait_js(
            &format!("{n} of `{css}`"),
            script,
            vec![json!(css), json!(n)],
        )
        .await;
    }

    /// Clicks the element matching `css` as a user does (a real pointer click). A click that
    /// fails because the page re-rendered the element, or something covers it for a moment,
    /// is tried again on the element found anew.
    pub async fn click(&self, css: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let e = self.find(css).await;
            match e.click().await {
                Ok(()) => return,
                Err(err) if retryable(&err) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("click `{css}`: {err}"),
            }
        }
    }

    /// Replaces the text of the input or textarea matching `css` with `text`, typed.
    pub async fn type_into(&self, css: &str, text: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let e = self.find(css).await;
            let r = async {
                e.clear().await?;
                e.send_keys(text).await
            }
            .await;
            match r {
                Ok(()) => return,
                Err(err) if retryable(&err) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("type into `{css}`: {err}"),
            }
        }
    }

    /// Chooses the option of value `value` in the select matching `css`.
    pub async fn choose(&self, css: &str, value: &str) {
        // The option must exist first (a list the page fills asynchronously).
        self.wait_js(
            &format!("option `{value}` in `{css}`"),
            "const s = document.querySelector(arguments[0]); return !!s && [...s.options].some(o => o.value === arguments[1]);",
            vec![json!(css), json!(value)],
        )
        .await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let e = self.find(css).await;
            match e.select_by_value(value).await {
                Ok(()) => return,
                Err(err) if retryable(&err) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("choose `{value}` in `{css}`: {err}"),
            }
        }
    }

    /// Waits until the text of the element matching `css` contains `part`; answers the text.
    pub async fn wait_text(&self, css: &str, part: &str) -> String {
        let v = self
            .wait_js(
                &format!("`{css}` to say {part:?}"),
                "const e = document.querySelector(arguments[0]); const t = e ? e.textContent : ''; return t.includes(arguments[1]) ? t : null;",
                vec![json!(css), json!(part)],
            )
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the status line (toast) says `part`.
    pub async fn wait_toast(&self, part: &str) -> String {
        self.wait_text("#toast", part).await
    }

    /// The status line's text (empty when hidden).
    pub async fn toast(&self) -> String {
        self.client
            .execute(
                "const t = document.getElementById('toast'); return t && !t.hidden ? t.textContent : '';",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// An attribute of the element matching `css` (null when absent).
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.find(css).await.attr(name).await.expect("attr")
    }

    /// Saves a PNG of the window as `target/gui-screenshots/NAME.png`; answers its path. The
    /// status line (a passing "Saved ...") is hidden first: the pictures are for the docs.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = workspace().join("target/gui-screenshots");
        std::fs::create_dir_all(&dir).expect("create target/gui-screenshots");
        // Nothing half-drawn: wait for the next two frames.
        let _ = self
            .client
            .execute_async(
                "const done = arguments[0]; const t = document.getElementById('toast'); if (t) t.hidden = true; requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
                vec![],
            )
            .await;
        let png = self.client.screenshot().await.expect("screenshot");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Ends the session (chromedriver goes on drop).
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

fn retryable(e: &CmdError) -> bool {
    let text = e.to_string();
    [
        "stale element",
        "not interactable",
        "click intercepted",
        "no such element",
    ]
    .iter()
    .any(|s| text.contains(s))
}
