//! `iotctl bench`: the command line of the load tests in `iot-bench`. Its clap arguments are
//! converted into the library's option structs here, and the controller to measure is found
//! here: `--csm`/`--mqtt`/`--pid`, else the state file of a controller running with this
//! configuration (it has the bound ports and the pid), else the configuration itself.
//!
//! Not here: anything that measures (the `iot-bench` crate).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use iot_bench::{
    BenchError, BrokerOptions, ConnectOptions, Join, LoadOptions, RouteOptions, Target,
};

use crate::config::Config;
use crate::runfile::RunState;

/// `iotctl bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// IDF publishers -> one graph with a join function -> ODF subscribers, through the
    /// controller: throughput, loss, latency, controller CPU and memory.
    Route(RouteArgs),
    /// N DAs register over HTTP and go online over MQTT: registrations/s, time until all are
    /// online, controller memory per DA.
    Connect(ConnectArgs),
    /// Plain publish -> subscribe against any MQTT broker (Mosquitto, the embedded one, a
    /// forwarding peer with --pub-topic/--sub-topic), measured by the same client.
    Broker(BrokerArgs),
}

/// Load options shared by `route` and `broker`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// QoS of the publishes and subscriptions (the controller sends ODF data at QoS 0).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Size of each payload in bytes (a JSON list `[pub, seq, ts_ns, "padding"]`; at least
    /// the size of its numbers).
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    pub payload_bytes: usize,
    /// Messages per second over all publishers; 0 = as fast as the path takes them (closed
    /// loop: see --max-inflight).
    #[arg(long, default_value_t = 0, value_name = "MSGS_PER_S")]
    pub rate: u64,
    /// Length of the measurement, in seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub duration: f64,
    /// Load before the measurement starts (not counted), in seconds.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    pub warmup: f64,
    /// Publisher connections (0 = automatic: one per IDF, at least 2 at full rate).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub publishers: usize,
    /// QoS 0 messages a publisher writes to its socket at once (1 = one write per message,
    /// as a small device does). At a fixed rate, what is due each millisecond, up to this.
    #[arg(long, default_value_t = 16, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch: u64,
    /// With --rate 0: messages on their way (sent, not received yet) at most, over all
    /// publishers; they wait for the rest. Bounds the backlog, hence the latency, at full rate.
    #[arg(long, default_value_t = 5000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_inflight: u64,
    /// After the last publish, the drain ends once every expected message has arrived, or
    /// when nothing arrived for this long (what is missing then is counted lost), or after
    /// 30 s (or this, if longer). Raise it on a loaded machine where a slow path is not loss.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    pub drain_idle: f64,
    /// Print one JSON object on stdout instead of the table (no progress display).
    #[arg(long)]
    pub json: bool,
}

impl LoadArgs {
    fn options(&self) -> Result<LoadOptions> {
        Ok(LoadOptions {
            qos: self.qos,
            payload_bytes: self.payload_bytes,
            rate: self.rate,
            duration: seconds("duration", self.duration)?,
            warmup: seconds("warmup", self.warmup)?,
            publishers: self.publishers,
            batch: self.batch,
            max_inflight: self.max_inflight,
            drain_idle: seconds("drain-idle", self.drain_idle)?,
            json: self.json,
        })
    }
}

/// `--what V` as a duration of at most a day.
fn seconds(what: &str, v: f64) -> Result<Duration> {
    if !v.is_finite() || !(0.0..=86_400.0).contains(&v) {
        bail!("--{what} must be between 0 and 86400 seconds, not {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

/// The join function of the route bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JoinArg {
    /// No join function: one IDF passes its value through, several pass the list of theirs.
    None,
    /// A Rhai join that returns its arguments.
    Rhai,
    /// A Python join that returns its arguments (runs in the controller's Python workers).
    Python,
}

impl From<JoinArg> for Join {
    fn from(j: JoinArg) -> Join {
        match j {
            JoinArg::None => Join::None,
            JoinArg::Rhai => Join::Rhai,
            JoinArg::Python => Join::Python,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RouteArgs {
    /// The join function of the graph.
    #[arg(long, value_enum, default_value_t = JoinArg::Rhai)]
    pub join: JoinArg,
    /// IDF DAs (one input feature each), each fed by the publishers.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub idfs: usize,
    /// ODF DAs (one output feature each), each receiving every output.
    #[arg(long, default_value_t = 1, value_name = "M")]
    pub odfs: usize,
    /// Also run a second graph whose Python join loops forever, fed 5 msgs/s for the whole
    /// run; its failures (from the controller's /status) are reported.
    #[arg(long)]
    pub runaway: bool,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// How many DAs.
    #[arg(short = 'n', long = "das", default_value_t = 1000, value_name = "N")]
    pub n: usize,
    /// Registrations and connections in flight at once.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub concurrency: usize,
    /// How long to wait for all DAs to be online, in seconds.
    #[arg(long, default_value_t = 300.0, value_name = "SECONDS")]
    pub timeout: f64,
    /// Print one JSON object on stdout instead of the table (no progress display).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// The broker, `mqtt://HOST:PORT`.
    #[arg(long, value_name = "mqtt://HOST:PORT")]
    pub url: String,
    /// Topic to publish to (default: a fresh `iotctl-bench/<run>`).
    #[arg(long, value_name = "TOPIC")]
    pub pub_topic: Option<String>,
    /// Topic to subscribe to (default: the publish topic); a different one measures a peer
    /// that forwards from one to the other.
    #[arg(long, value_name = "TOPIC")]
    pub sub_topic: Option<String>,
    /// Subscriber connections, each receiving every message.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub subscribers: usize,
    /// Pid of the broker (or forwarding peer) for CPU and memory figures, when it runs here.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    #[command(flatten)]
    pub load: LoadArgs,
}

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

/// Exit code after Ctrl-C (128 + SIGINT), so that a calling script stops too.
const INTERRUPTED: u8 = 130;

/// Runs one bench command: options checked, then the controller found, then the run.
pub async fn run(cfg: &Config, cmd: BenchCommand) -> Result<ExitCode> {
    let r = match cmd {
        BenchCommand::Route(a) => {
            let options = RouteOptions {
                join: a.join.into(),
                idfs: a.idfs,
                odfs: a.odfs,
                runaway: a.runaway,
                load: a.load.options()?,
            };
            options.check()?;
            let target = resolve(cfg, &a.target)?;
            iot_bench::route::run(&target, &options).await
        }
        BenchCommand::Connect(a) => {
            let options = ConnectOptions {
                das: a.n,
                concurrency: a.concurrency,
                timeout: Duration::try_from_secs_f64(a.timeout)
                    .ok()
                    .filter(|t| !t.is_zero())
                    .context("--timeout must be a positive number of seconds")?,
                json: a.json,
            };
            options.check()?;
            let target = resolve(cfg, &a.target)?;
            iot_bench::connect::run(&target, &options).await
        }
        BenchCommand::Broker(a) => {
            let options = BrokerOptions {
                url: a.url,
                pub_topic: a.pub_topic,
                sub_topic: a.sub_topic,
                subscribers: a.subscribers,
                pid: a.pid,
                load: a.load.options()?,
            };
            iot_bench::broker::run(&options).await
        }
    };
    match r {
        Err(BenchError::Interrupted) => {
            eprintln!("iotctl bench: interrupted; what the run created was removed");
            Ok(ExitCode::from(INTERRUPTED))
        }
        r => Ok(r.map(|()| ExitCode::SUCCESS)?),
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
fn host_port(addr: &str) -> Result<(String, u16)> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("`{addr}` is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("bad port in `{addr}`"))?;
    Ok((reachable_host(host), port))
}

/// Resolves the controller from the overrides, the running controller and the configuration.
pub(crate) fn resolve(cfg: &Config, args: &TargetArgs) -> Result<Target> {
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
