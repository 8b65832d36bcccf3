//! How much load, for how long: the options of a run turned into what the publishers, the
//! receivers and the drain follow.

use std::time::Duration;

use rumqttc::QoS;

use crate::error::BenchError;
use crate::mqtt::qos;
use crate::options::LoadOptions;

/// How much load, for how long.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub qos: QoS,
    pub payload_bytes: usize,
    /// Messages per second over all publishers; 0 = as fast as they can.
    pub rate: u64,
    pub warmup: Duration,
    pub duration: Duration,
    /// Messages expected at the receivers per message sent (number of ODFs or subscribers).
    pub fanout: u64,
    /// After the last publish, the drain ends when nothing arrived for this long...
    pub drain_idle: Duration,
    /// ... or after this, at most.
    pub max_drain: Duration,
    /// Messages per write of a QoS 0 publisher.
    pub batch: usize,
    /// At full rate, how many messages may be on their way (sent, not received yet) over all
    /// publishers before they wait.
    pub max_inflight: u64,
}

impl LoadSpec {
    /// The spec of `opts`, with `fanout` receptions expected per message sent.
    pub fn new(opts: &LoadOptions, fanout: u64) -> Result<LoadSpec, BenchError> {
        Ok(LoadSpec {
            qos: qos(opts.qos)?,
            payload_bytes: opts.payload_bytes,
            rate: opts.rate,
            warmup: opts.warmup,
            duration: opts.duration,
            fanout,
            drain_idle: opts.drain_idle,
            max_drain: opts.max_drain(),
            batch: usize::try_from(opts.batch).unwrap_or(1),
            max_inflight: opts.max_inflight,
        })
    }
}
