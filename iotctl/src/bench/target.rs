//! Which controller a bench talks to: the CSM's base URL, the MQTT broker's address and, when
//! it runs on this machine, its pid. Taken from `--csm`/`--mqtt`/`--pid`, else from the state
//! file of a controller running with this configuration (it has the bound ports and the pid),
//! else from the configuration itself.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::config::Config;
use crate::runfile::RunState;

/// Where the controller is (each overrides what the configuration says).
#[derive(Debug, Clone, Default, Args)]
pub struct TargetArgs {
    /// Base URL of the controller's HTTP API (default: from the running controller's state
    /// file, else `http://<csm.listen><csm.path_prefix>`).
    #[arg(long, value_name = "URL")]
    pub csm: Option<String>,
    /// MQTT broker `HOST:PORT` (default: the running controller's, else `broker.external` or
    /// `broker.listen`).
    #[arg(long, value_name = "HOST:PORT")]
    pub mqtt: Option<String>,
    /// Pid of the controller for CPU and memory figures (default: from the state file when
    /// the controller runs on this machine; without one they are reported as n/a).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
}

/// A controller to benchmark.
#[derive(Debug, Clone)]
pub struct Target {
    /// CSM base URL, without a trailing slash.
    pub csm: String,
    pub mqtt_host: String,
    pub mqtt_port: u16,
    pub pid: Option<u32>,
}

impl Target {
    pub fn mqtt(&self) -> String {
        format!("{}:{}", self.mqtt_host, self.mqtt_port)
    }
}

/// The state file of a controller running with `cfg`, if any.
fn running_state(cfg: &Config) -> Option<RunState> {
    crate::runfile::running_pid(&cfg.pidfile())?;
    let text = std::fs::read_to_string(cfg.statefile()).ok()?;
    serde_json::from_str(&text).ok()
}

/// `127.0.0.1` for an all-interfaces listen address: a client cannot connect to 0.0.0.0.
fn reachable_host(host: &str) -> String {
    match host {
        "0.0.0.0" | "" => "127.0.0.1".into(),
        "::" | "[::]" => "::1".into(),
        h => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
    }
}

/// Splits `HOST:PORT` (IPv6 hosts in brackets).
pub fn host_port(addr: &str) -> Result<(String, u16)> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("`{addr}` is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("bad port in `{addr}`"))?;
    Ok((reachable_host(host), port))
}

/// Resolves the controller from the overrides, the running controller and the configuration.
pub fn resolve(cfg: &Config, args: &TargetArgs) -> Result<Target> {
    let state = running_state(cfg);
    let hint = "start it (`iotctl -c CONFIG start`) with this configuration, or pass --csm URL and --mqtt HOST:PORT";
    let csm = match (&args.csm, state.as_ref().and_then(|s| s.csm.clone())) {
        (Some(url), _) => url.clone(),
        (None, Some(url)) => url,
        (None, None) => {
            let (host, port) = host_port(&cfg.csm.listen)?;
            if port == 0 {
                bail!(
                    "no running controller found for this configuration (data dir {}) and `csm.listen` has port 0: {hint}",
                    cfg.data_dir().display()
                );
            }
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            format!("http://{host}:{port}{}", cfg.csm.path_prefix)
        }
    };
    let (mqtt_host, mqtt_port) = match (&args.mqtt, state.as_ref().and_then(|s| s.mqtt.clone())) {
        (Some(addr), _) => host_port(addr)?,
        (None, Some(addr)) => host_port(&addr)?,
        (None, None) if !cfg.broker.external.is_empty() => {
            let url = iot_broker::MqttUrl::parse(&cfg.broker.external)?;
            (url.host, url.port)
        }
        (None, None) => {
            let (host, port) = host_port(&cfg.broker.embedded.listen)?;
            if port == 0 {
                bail!(
                    "no running controller found for this configuration (data dir {}) and `broker.listen` has port 0: {hint}",
                    cfg.data_dir().display()
                );
            }
            (host, port)
        }
    };
    // The state file's pid is the controller's only when the bench talks to that controller.
    let pid = args.pid.or_else(|| {
        state
            .filter(|_| args.csm.is_none() && args.mqtt.is_none())
            .map(|s| s.pid)
    });
    Ok(Target {
        csm: csm.trim_end_matches('/').to_owned(),
        mqtt_host,
        mqtt_port,
        pid,
    })
}

/// Checks that the CSM answers `GET /healthz`.
pub async fn check_csm(http: &reqwest::Client, csm: &str) -> Result<()> {
    let url = format!("{csm}/healthz");
    let r = http
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .with_context(|| format!("controller not reachable at {csm} (GET {url})"))?;
    if !r.status().is_success() {
        bail!(
            "controller at {csm} answered {} to GET /healthz: is this the CSM's URL (with csm.path_prefix)?",
            r.status()
        );
    }
    Ok(())
}

/// The CSM's `GET /status`.
pub async fn csm_status(http: &reqwest::Client, csm: &str) -> Result<serde_json::Value> {
    let url = format!("{csm}/status");
    http.get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("GET {url} failed"))?
        .json()
        .await
        .with_context(|| format!("GET {url}: not JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_config_without_a_running_controller() {
        let mut cfg = Config::default();
        cfg.paths.data_dir = "/nonexistent/iotctl-bench-test".into();
        cfg.csm.listen = "0.0.0.0:9992".into();
        cfg.csm.path_prefix = "/csm".into();
        let t = resolve(&cfg, &TargetArgs::default()).unwrap();
        assert_eq!(t.csm, "http://127.0.0.1:9992/csm");
        assert_eq!(t.mqtt(), "127.0.0.1:1883");
        assert_eq!(t.pid, None);
        cfg.broker.external = "mqtt://10.0.0.1:1884".into();
        assert_eq!(
            resolve(&cfg, &TargetArgs::default()).unwrap().mqtt(),
            "10.0.0.1:1884"
        );
        cfg.csm.listen = "127.0.0.1:0".into();
        let err = resolve(&cfg, &TargetArgs::default()).unwrap_err();
        assert!(err.to_string().contains("port 0"), "{err}");
        let args = TargetArgs {
            csm: Some("http://h:1/".into()),
            mqtt: Some("h:2".into()),
            pid: Some(7),
        };
        let t = resolve(&cfg, &args).unwrap();
        assert_eq!(
            (t.csm.as_str(), t.mqtt(), t.pid),
            ("http://h:1", "h:2".into(), Some(7))
        );
    }
}
