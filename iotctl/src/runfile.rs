//! The files a running controller leaves in its data dir: the pidfile (`iotctl.pid`, which
//! also keeps a second `start` on the same data dir out) and the state file
//! (`iotctl.state.json`, [`RunState`]: what runs and on which addresses). `start` writes and
//! removes them; `stop`, `status`, `shell` and `bench` read them. Not here: starting or
//! signalling anything.

use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// What a running controller writes to `<data_dir>/iotctl.state.json` for `status`/`stop`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub pid: u32,
    pub components: Vec<String>,
    /// `host:port` of the MQTT listener (embedded) or the external broker in use.
    pub mqtt: Option<String>,
    pub ws: Option<String>,
    /// Base URL of the CSM HTTP API.
    pub csm: Option<String>,
    /// Base URL of the CCM (REST API and web GUI).
    #[serde(default)]
    pub ccm: Option<String>,
    pub started: f64,
    /// `host:port` of the embedded broker's MQTT-over-TLS listener, when on.
    #[serde(default)]
    pub mqtts: Option<String>,
    /// `host:port` of its MQTT-over-WebSocket-over-TLS listener, when on.
    #[serde(default)]
    pub wss: Option<String>,
}

impl RunState {
    /// This process, starting now, with nothing running yet.
    pub fn starting() -> Self {
        Self {
            pid: std::process::id(),
            components: Vec::new(),
            mqtt: None,
            ws: None,
            csm: None,
            ccm: None,
            started: iot_csm::now_epoch(),
            mqtts: None,
            wss: None,
        }
    }
}

/// The pid in `pidfile` if that process is alive.
pub fn running_pid(pidfile: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

/// Whether `pid` is a live process (not a zombie waiting to be reaped).
pub fn alive(pid: i32) -> bool {
    pid > 0 && kill(Pid::from_raw(pid), None).is_ok() && !zombie(pid)
}

/// Whether `pid` has exited but not been reaped by its parent yet (Linux `/proc`).
fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Writes this process's pid to the pidfile of `cfg`, unless a live controller already holds it.
pub fn write_pid(cfg: &Config) -> Result<()> {
    let pidfile = cfg.pidfile();
    if let Some(pid) = running_pid(&pidfile) {
        bail!("iotctl is already running with this data dir (pid {pid}); `iotctl stop` first");
    }
    std::fs::write(&pidfile, format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write pidfile {}", pidfile.display()))
}

pub fn write_state(cfg: &Config, state: &RunState) -> Result<()> {
    let json = serde_json::to_string_pretty(state)?;
    std::fs::write(cfg.statefile(), json)
        .with_context(|| format!("cannot write {}", cfg.statefile().display()))
}

/// The state file of `cfg`, whether or not its controller still runs.
pub fn read_state(cfg: &Config) -> Option<RunState> {
    let text = std::fs::read_to_string(cfg.statefile()).ok()?;
    serde_json::from_str(&text).ok()
}

/// Removes the pidfile and the state file (best effort: they may be gone already).
pub fn remove(cfg: &Config) {
    let _ = std::fs::remove_file(cfg.pidfile());
    let _ = std::fs::remove_file(cfg.statefile());
}
