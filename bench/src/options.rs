//! What a bench is asked to do: plain option structs whose `Default`s are those of
//! `iotctl bench` (the command line converts its flags into them), their checks, and the
//! [`Target`]. Not here: parsing command lines, or finding the controller (the caller
//! resolves it, e.g. from a state file).

use std::time::Duration;

use crate::error::BenchError;
use crate::graph::Join;

/// A controller to benchmark, as the caller resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The CSM's base URL (with its path prefix), without a trailing slash.
    pub csm: String,
    /// The MQTT broker's host (an IPv6 address without brackets).
    pub mqtt_host: String,
    pub mqtt_port: u16,
    /// The controller's pid when it runs on this machine, for CPU and memory figures; without
    /// one they are reported as n/a.
    pub pid: Option<u32>,
}

impl Target {
    /// `HOST:PORT` of the broker, as reports show it.
    pub fn mqtt(&self) -> String {
        format!("{}:{}", self.mqtt_host, self.mqtt_port)
    }
}

/// How much load, shared by the `route` and `broker` benches.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// QoS of the publishes and subscriptions, 0 to 2 (the controller sends ODF data at QoS 0).
    pub qos: u8,
    /// Size of each payload (a JSON list `[pub, seq, ts_ns, "padding"]`; at least the size of
    /// its numbers).
    pub payload_bytes: usize,
    /// Messages per second over all publishers; 0 = as fast as the path takes them (closed
    /// loop: see `max_inflight`).
    pub rate: u64,
    /// Length of the measurement; at least 0.1 s.
    pub duration: Duration,
    /// Load before the measurement starts, not counted.
    pub warmup: Duration,
    /// Publisher connections; 0 = one per topic, at least 2 at full rate.
    pub publishers: usize,
    /// QoS 0 messages a publisher writes to its socket at once (1 = one write per message).
    pub batch: u64,
    /// At full rate, messages on their way (sent, not received yet) at most, over all
    /// publishers.
    pub max_inflight: u64,
    /// After the last publish, the drain ends when nothing arrived for this long (at least
    /// 0.1 s), or after 30 s (or this, if longer).
    pub drain_idle: Duration,
    /// One JSON object on stdout instead of the table, and no progress display.
    pub json: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            qos: 0,
            payload_bytes: 64,
            rate: 0,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            publishers: 0,
            batch: 16,
            max_inflight: 5000,
            drain_idle: Duration::from_secs(1),
            json: false,
        }
    }
}

impl LoadOptions {
    /// Checks what the fields' types do not (`run` checks again).
    pub fn check(&self) -> Result<(), BenchError> {
        if self.duration < Duration::from_millis(100) {
            return Err(invalid("--duration must be at least 0.1 seconds"));
        }
        if self.drain_idle < Duration::from_millis(100) {
            return Err(invalid("--drain-idle must be at least 0.1 seconds"));
        }
        Ok(())
    }

    /// The longest drain: 30 s, or `drain_idle` if longer.
    pub(crate) fn max_drain(&self) -> Duration {
        self.drain_idle.max(Duration::from_secs(30))
    }

    /// The publisher count: as given, else one per topic, at least 2 at full rate (one
    /// rumqttc connection cannot saturate a broker on its own).
    pub(crate) fn publishers(&self, topics: usize) -> Result<usize, BenchError> {
        let n = match self.publishers {
            0 if self.rate == 0 => topics.max(2),
            0 => topics.max(1),
            n => n,
        };
        if n > 1024 {
            return Err(invalid("--publishers must be at most 1024"));
        }
        Ok(n)
    }
}

/// `bench route`: IDF DAs -> one graph -> ODF DAs, through a controller.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteOptions {
    /// The join function of the graph.
    pub join: Join,
    /// IDF DAs (one input feature each), 1 to 64, each fed by the publishers.
    pub idfs: usize,
    /// ODF DAs (one output feature each), 1 to 1024, each receiving every output.
    pub odfs: usize,
    /// Also run a second graph whose Python join loops forever, fed 5 msgs/s from before
    /// the window until the end, and report its failures from the controller's `/status`.
    pub runaway: bool,
    pub load: LoadOptions,
}

impl Default for RouteOptions {
    fn default() -> Self {
        Self {
            join: Join::Rhai,
            idfs: 1,
            odfs: 1,
            runaway: false,
            load: LoadOptions::default(),
        }
    }
}

impl RouteOptions {
    /// Checks what the fields' types do not (`run` checks again), before any connection.
    pub fn check(&self) -> Result<(), BenchError> {
        if self.idfs == 0 || self.odfs == 0 {
            return Err(invalid("--idfs and --odfs must be at least 1"));
        }
        if self.idfs > 64 || self.odfs > 1024 {
            return Err(invalid("--idfs must be at most 64 and --odfs at most 1024"));
        }
        self.load.check()
    }
}

/// `bench connect`: N DAs register and go online.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// How many DAs, 1 to 1,000,000.
    pub das: usize,
    /// Registrations and connections in flight at once, 1 to 4096.
    pub concurrency: usize,
    /// How long to wait for all DAs to be online.
    pub timeout: Duration,
    /// One JSON object on stdout instead of the table, and no progress display.
    pub json: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            das: 1000,
            concurrency: 64,
            timeout: Duration::from_secs(300),
            json: false,
        }
    }
}

impl ConnectOptions {
    /// Checks what the fields' types do not (`run` checks again), before any connection.
    pub fn check(&self) -> Result<(), BenchError> {
        if self.das == 0 || self.das > 1_000_000 {
            return Err(invalid("-n must be between 1 and 1000000"));
        }
        if self.concurrency == 0 || self.concurrency > 4096 {
            return Err(invalid("--concurrency must be between 1 and 4096"));
        }
        if self.timeout.is_zero() {
            return Err(invalid("--timeout must be a positive number of seconds"));
        }
        Ok(())
    }
}

/// `bench broker`: plain publish -> subscribe against any MQTT broker.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerOptions {
    /// The broker, `mqtt://HOST:PORT` (or `tcp://`, or a bare `HOST:PORT`).
    pub url: String,
    /// Topic to publish to (default: a fresh `iotctl-bench/<run>`).
    pub pub_topic: Option<String>,
    /// Topic to subscribe to (default: the publish topic); a different one measures a peer
    /// that forwards from one to the other.
    pub sub_topic: Option<String>,
    /// Subscriber connections, 1 to 1024, each receiving every message.
    pub subscribers: usize,
    /// Pid of the broker (or forwarding peer) for CPU and memory figures, when it runs here.
    pub pid: Option<u32>,
    pub load: LoadOptions,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            url: "mqtt://127.0.0.1:1883".into(),
            pub_topic: None,
            sub_topic: None,
            subscribers: 1,
            pid: None,
            load: LoadOptions::default(),
        }
    }
}

impl BrokerOptions {
    /// Checks what the fields' types do not (`run` checks again), before any connection.
    pub fn check(&self) -> Result<(), BenchError> {
        if self.subscribers == 0 || self.subscribers > 1024 {
            return Err(invalid("--subscribers must be between 1 and 1024"));
        }
        self.load.check()
    }
}

fn invalid(msg: &str) -> BenchError {
    BenchError::InvalidOption(msg.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_limits_are_checked() {
        assert!(RouteOptions::default().check().is_ok());
        assert!(ConnectOptions::default().check().is_ok());
        assert!(BrokerOptions::default().check().is_ok());
        let load = LoadOptions {
            duration: Duration::from_millis(50),
            ..LoadOptions::default()
        };
        assert!(load.check().is_err());
        let route = RouteOptions {
            idfs: 65,
            ..RouteOptions::default()
        };
        assert!(route.check().is_err());
        let load = LoadOptions::default();
        assert_eq!(load.publishers(1).unwrap(), 2);
        assert_eq!(load.max_drain(), Duration::from_secs(30));
        let load = LoadOptions {
            rate: 100,
            ..LoadOptions::default()
        };
        assert_eq!(load.publishers(3).unwrap(), 3);
    }
}
