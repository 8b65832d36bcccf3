//! `iotctl stop` and `iotctl status`: find the running controller through its pidfile and
//! state file in the data dir (`runfile`), signal it, or ask each component how it is.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::Config;
use crate::runfile::{self, alive, running_pid, RunState};

pub async fn stop(cfg: &Config) -> Result<ExitCode> {
    let pidfile = cfg.pidfile();
    let Some(pid) = running_pid(&pidfile) else {
        let _ = std::fs::remove_file(&pidfile);
        println!("iotctl is not running");
        return Ok(ExitCode::SUCCESS);
    };
    kill(Pid::from_raw(pid), Signal::SIGTERM)
        .with_context(|| format!("cannot signal pid {pid}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while alive(pid) {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("pid {pid} did not stop within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("iotctl stopped (pid {pid})");
    Ok(ExitCode::SUCCESS)
}

/// Exit code when the controller is not running (as LSB init scripts do).
const NOT_RUNNING: u8 = 3;

/// How long `status` waits for the broker's TCP accept and for the CSM's `/status` before it
/// reports them down: a busy controller can take seconds to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// An operator's credentials for the CSM's `/status` when authentication is on.
#[derive(Clone)]
pub struct Login {
    user: String,
    password: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Login {
    /// `--user`/`IOTCTL_USER` with the password in `IOTCTL_PASSWORD` (never on the command
    /// line, where other users of the machine could read it).
    pub fn from_env(user: Option<String>) -> Result<Option<Login>> {
        let Some(user) = user else { return Ok(None) };
        let password = std::env::var("IOTCTL_PASSWORD").map_err(|_| {
            anyhow::anyhow!(
                "--user {user} needs the password in the IOTCTL_PASSWORD environment variable"
            )
        })?;
        Ok(Some(Login {
            user,
            password: zeroize::Zeroizing::new(password),
        }))
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn password(&self) -> &str {
        &self.password
    }
}

pub async fn status(cfg: &Config, json: bool, login: Option<&Login>) -> Result<ExitCode> {
    let state: Option<RunState> =
        running_pid(&cfg.pidfile()).and_then(|_| runfile::read_state(cfg));
    let Some(state) = state else {
        if json {
            println!("{}", serde_json::json!({"running": false}));
        } else {
            println!(
                "iotctl is not running (data dir {})",
                cfg.data_dir().display()
            );
        }
        return Ok(ExitCode::from(NOT_RUNNING));
    };
    let broker_up = match &state.mqtt {
        Some(addr) => tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false),
        None => false,
    };
    let (csm, refused) = match &state.csm {
        Some(base) => match csm_status(base, login).await {
            Ok(Ok(v)) => (Some(v), None),
            Ok(Err(code)) => (None, Some(code)),
            Err(_) => (None, None),
        },
        None => (None, None),
    };
    let embedded = state.components.iter().any(|c| c == "broker");
    if json {
        println!(
            "{}",
            serde_json::json!({
                "running": true, "pid": state.pid, "components": state.components,
                "broker": {"up": broker_up, "address": state.mqtt, "ws": state.ws, "mqtts": state.mqtts, "wss": state.wss, "embedded": embedded},
                "csm": {"up": csm.is_some() || refused.is_some(), "url": state.csm, "status": csm, "refused": refused},
            })
        );
    } else {
        println!("iotctl running (pid {})", state.pid);
        let updown = |b: bool| if b { "up" } else { "down" };
        let kind = if embedded { "embedded" } else { "external" };
        println!(
            "  broker  {:<5} {kind} mqtt://{}{}",
            updown(broker_up),
            state.mqtt.as_deref().unwrap_or("-"),
            state
                .ws
                .as_deref()
                .map(|w| format!("  ws://{w}/mqtt"))
                .unwrap_or_default()
        );
        if state.mqtts.is_some() || state.wss.is_some() {
            let (mqtts, wss) = (state.mqtts.as_deref(), state.wss.as_deref());
            println!(
                "          tls   mqtts://{}  wss://{}/mqtt",
                mqtts.unwrap_or("-"),
                wss.unwrap_or("-")
            );
        }
        match (&state.csm, &csm) {
            (Some(url), Some(s)) => {
                println!(
                    "  csm     up    {url}  registered {}, online {}, failed links {}",
                    s["registered"],
                    s["online"],
                    s["failed_links"].as_array().map_or(0, Vec::len)
                );
                let graphs = s["graphs"].as_object().cloned().unwrap_or_default();
                let total = |k: &str| graphs.values().filter_map(|g| g[k].as_u64()).sum::<u64>();
                println!(
                    "  graphs  {}     messages in {}, out {}, dropped {}, held for offline ODFs {}",
                    graphs.len(),
                    total("msgs_in"),
                    total("msgs_out"),
                    total("errors"),
                    total("held")
                );
                println!(
                    "  mqtt    sessions {}, dropped {} (broker) + {} (controller queues)",
                    s["broker"]["sessions"], s["broker"]["dropped"], s["broker"]["host_dropped"]
                );
            }
            (Some(url), None) if refused.is_some() => println!(
                "  csm     up    {url}  (details need an admin: --user NAME or IOTCTL_USER, with IOTCTL_PASSWORD; HTTP {})",
                refused.unwrap_or_default()
            ),
            (Some(url), None) => println!("  csm     down  {url}"),
            (None, _) => println!("  csm     not started"),
        }
        match &state.ccm {
            Some(url) => {
                let up = reqwest::get(format!("{url}/api/session"))
                    .await
                    .is_ok_and(|r| r.status().is_success());
                println!(
                    "  ccm     {}  {url}  (web GUI)",
                    if up { "up  " } else { "down" }
                );
            }
            None => println!("  ccm     not started"),
        }
    }
    let all_up = broker_up && (state.csm.is_none() || csm.is_some() || refused.is_some());
    Ok(if all_up {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The CSM's `/status`, or the HTTP status of a refusal (401, 403) when it needs an admin.
async fn csm_status(
    base: &str,
    login: Option<&Login>,
) -> Result<std::result::Result<serde_json::Value, u16>> {
    let client = reqwest::Client::builder().timeout(PROBE_TIMEOUT).build()?;
    let mut req = client.get(format!("{base}/status"));
    if let Some(l) = login {
        req = req.basic_auth(&l.user, Some(l.password.as_str()));
    }
    let resp = req.send().await?;
    let code = resp.status().as_u16();
    if code == 401 || code == 403 {
        return Ok(Err(code));
    }
    Ok(Ok(resp.error_for_status()?.json().await?))
}
