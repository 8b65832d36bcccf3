//! `iotctl bench`: load tests a user can point at any deployment. It is a client only: it
//! reaches the controller through its public HTTP API, MQTT broker and graph API, exactly as
//! DAs and the GUI do, and never reads the database or links the CSM.
//!
//! - `bench route`: IDF publishers -> one graph (join none, Rhai or Python) -> ODF subscribers;
//! - `bench connect`: N DAs register and go online;
//! - `bench broker`: plain publish -> subscribe against any MQTT broker.
//!
//! Layout: [`target`] (which controller: state file, config, overrides), [`payload`] (the
//! timestamped payload and how outputs are read back), [`stats`] (clock, window, recorders),
//! [`mqtt`] (one rumqttc connection whose loop only polls), [`rawpub`] (batched QoS 0
//! publishing), [`da`] (a bench DA), [`graph`]
//! (the graph API client and join functions), [`load`] (publishing, draining, figures),
//! [`procstat`] (CPU and memory from /proc), [`progress`] and [`report`] (output), and one
//! file per command: [`route`], [`connect`], [`broker`].
//!
//! Not here: anything that changes the controller's behaviour, or timing assertions (the
//! end-to-end tests in `tests/tests/bench.rs` check behaviour only).

mod broker;
mod connect;
mod da;
mod graph;
mod load;
mod mqtt;
mod payload;
mod procstat;
mod progress;
mod rawpub;
mod report;
mod route;
mod stats;
mod target;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use crate::config::Config;

/// `iotctl bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// IDF publishers -> one graph with a join function -> ODF subscribers, through the
    /// controller: throughput, loss, latency, controller CPU and memory.
    Route(route::RouteArgs),
    /// N DAs register over HTTP and go online over MQTT: registrations/s, time until all are
    /// online, controller memory per DA.
    Connect(connect::ConnectArgs),
    /// Plain publish -> subscribe against any MQTT broker (Mosquitto, the embedded one, a
    /// forwarding peer with --pub-topic/--sub-topic), measured by the same client.
    Broker(broker::BrokerArgs),
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
    fn seconds(what: &str, v: f64) -> Result<Duration> {
        if !v.is_finite() || !(0.0..=86_400.0).contains(&v) {
            bail!("--{what} must be between 0 and 86400 seconds, not {v}");
        }
        Ok(Duration::from_secs_f64(v))
    }

    pub fn duration(&self) -> Result<Duration> {
        let d = Self::seconds("duration", self.duration)?;
        if d < Duration::from_millis(100) {
            bail!("--duration must be at least 0.1 seconds");
        }
        Ok(d)
    }

    pub fn warmup(&self) -> Result<Duration> {
        Self::seconds("warmup", self.warmup)
    }

    pub fn drain_idle(&self) -> Result<Duration> {
        let d = Self::seconds("drain-idle", self.drain_idle)?;
        if d < Duration::from_millis(100) {
            bail!("--drain-idle must be at least 0.1 seconds");
        }
        Ok(d)
    }

    /// The longest drain: 30 s, or `--drain-idle` if longer.
    pub fn max_drain(&self) -> Result<Duration> {
        Ok(self.drain_idle()?.max(Duration::from_secs(30)))
    }

    /// The publisher count: as given, else one per topic, at least 2 at full rate (one
    /// rumqttc connection cannot saturate a broker on its own).
    pub fn publishers(&self, topics: usize) -> Result<usize> {
        let n = match self.publishers {
            0 if self.rate == 0 => topics.max(2),
            0 => topics.max(1),
            n => n,
        };
        if n > 1024 {
            bail!("--publishers must be at most 1024");
        }
        Ok(n)
    }
}

/// Exit code after Ctrl-C (128 + SIGINT), so that a calling script stops too.
const INTERRUPTED: u8 = 130;

/// The error a bench returns when Ctrl-C stopped it (after cleaning up).
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Waits for Ctrl-C and returns [`Interrupted`] as an error.
async fn ctrl_c() -> anyhow::Error {
    match tokio::signal::ctrl_c().await {
        Ok(()) => Interrupted.into(),
        Err(e) => anyhow::Error::new(e).context("cannot listen for Ctrl-C"),
    }
}

/// Runs one bench command.
pub async fn run(cfg: &Config, cmd: BenchCommand) -> Result<ExitCode> {
    let r = match cmd {
        BenchCommand::Route(a) => route::run(cfg, a).await,
        BenchCommand::Connect(a) => connect::run(cfg, a).await,
        BenchCommand::Broker(a) => broker::run(a).await,
    };
    match r {
        Err(e) if e.downcast_ref::<Interrupted>().is_some() => {
            eprintln!("iotctl bench: interrupted; what the run created was removed");
            Ok(ExitCode::from(INTERRUPTED))
        }
        r => r.map(|()| ExitCode::SUCCESS),
    }
}

/// A short random id that names this run's DAs, topics and graph.
fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}
