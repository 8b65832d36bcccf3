//! `bench broker`: plain publish -> subscribe against any MQTT broker, so that
//! Mosquitto, the embedded broker and a forwarding peer (e.g. a Node-RED flow from
//! `--pub-topic` to `--sub-topic`) are all measured by the same client.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use iot_proto::url::MqttUrl;

use crate::error::BenchError;
use crate::load::{self, LoadResult};
use crate::mqtt::{qos, Conn, ConnCounters, ConnSpec};
use crate::options::BrokerOptions;
use crate::progress::Progress;
use crate::publish::{self, Publisher};
use crate::report;
use crate::spec::LoadSpec;
use crate::stats::{Clock, Recorder, SharedRecorder};
use crate::{ctrl_c, run_id};

#[derive(Debug, Serialize)]
struct BrokerReport {
    bench: &'static str,
    url: String,
    pub_topic: String,
    sub_topic: String,
    publishers: usize,
    subscribers: usize,
    qos: u8,
    payload_bytes: usize,
    rate: u64,
    batch: u64,
    max_inflight: u64,
    #[serde(flatten)]
    result: LoadResult,
}

/// `(host, port)` of `mqtt://HOST:PORT` (or `tcp://`, or a bare `HOST:PORT`).
fn parse_url(url: &str) -> Result<(String, u16), BenchError> {
    let full = if url.contains("://") {
        url.to_owned()
    } else {
        format!("mqtt://{url}")
    };
    let u = MqttUrl::parse(&full)
        .map_err(|e| BenchError::InvalidOption(format!("--url {url}: {e}")))?;
    Ok((u.host, u.port))
}

fn check_topic(what: &str, t: &str) -> Result<(), BenchError> {
    if t.is_empty() || t.contains(['+', '#']) {
        return Err(BenchError::InvalidOption(format!(
            "--{what} `{t}` must be a topic name without wildcards"
        )));
    }
    Ok(())
}

/// Runs `bench broker` and prints its report (a table, or JSON).
pub async fn run(args: &BrokerOptions) -> Result<(), BenchError> {
    let (host, port) = parse_url(&args.url)?;
    args.check()?;
    let run = run_id();
    let pub_topic = args
        .pub_topic
        .clone()
        .unwrap_or_else(|| format!("iotctl-bench/{run}"));
    let sub_topic = args.sub_topic.clone().unwrap_or_else(|| pub_topic.clone());
    check_topic("pub-topic", &pub_topic)?;
    check_topic("sub-topic", &sub_topic)?;
    let publishers = args.load.publishers(1)?;
    let spec = LoadSpec::new(&args.load, args.subscribers as u64)?;
    let progress = Progress::new(args.load.json);
    let mut subs: Vec<Conn> = Vec::new();
    let mut pubs: Vec<Publisher> = Vec::new();
    let outcome = tokio::select! {
        r = measure(args, &host, port, &run, &pub_topic, &sub_topic, publishers, &spec, &progress, &mut subs, &mut pubs) => r,
        e = ctrl_c() => Err(e),
    };
    progress.phase("disconnecting");
    for p in pubs {
        p.disconnect().await;
    }
    for s in subs {
        s.disconnect().await;
    }
    progress.finish();
    let result = outcome?;
    let title = format!(
        "bench broker: {} -> {} on {}:{}, {} publishers, {} subscribers, QoS {}, {} B payloads, rate {}",
        pub_topic,
        sub_topic,
        host,
        port,
        publishers,
        args.subscribers,
        args.load.qos,
        args.load.payload_bytes,
        report::rate(args.load.rate, args.load.max_inflight)
    );
    let report = BrokerReport {
        bench: "broker",
        url: args.url.clone(),
        pub_topic,
        sub_topic,
        publishers,
        subscribers: args.subscribers,
        qos: args.load.qos,
        payload_bytes: args.load.payload_bytes,
        rate: args.load.rate,
        batch: args.load.batch,
        max_inflight: args.load.max_inflight,
        result,
    };
    let mut rows = report::load_rows(&report.result);
    if args.pid.is_some() {
        if let Some(r) = rows.iter_mut().find(|(k, _)| k == "controller") {
            r.0 = "broker".into();
        }
    }
    report::print(args.load.json, &report, &title, &rows)
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &BrokerOptions,
    host: &str,
    port: u16,
    run: &str,
    pub_topic: &str,
    sub_topic: &str,
    publishers: usize,
    spec: &LoadSpec,
    progress: &Progress,
    subs: &mut Vec<Conn>,
    pubs: &mut Vec<Publisher>,
) -> Result<LoadResult, BenchError> {
    let clock = Clock::new();
    let counters = Arc::new(ConnCounters::default());
    let seen = Arc::new(AtomicU64::new(0));
    progress.phase(format!("connecting {} subscribers", args.subscribers));
    let mut recorders: Vec<SharedRecorder> = Vec::new();
    for k in 0..args.subscribers {
        let r = Arc::new(Mutex::new(Recorder::new(clock, seen.clone())?));
        let mut spec = ConnSpec::new(host, port, format!("iotctl-bench-{run}-sub{k}"));
        spec.recorder = Some(r.clone());
        let mut conn = Conn::connect(spec, counters.clone()).await?;
        let qos = qos(args.load.qos)?;
        conn.subscribe(sub_topic, qos).await?;
        subs.push(conn);
        recorders.push(r);
    }
    progress.phase(format!("connecting {publishers} publishers"));
    let topics = vec![pub_topic.to_owned()];
    *pubs = publish::connect_publishers(host, port, publishers, &topics, spec.qos, run, &counters)
        .await?;
    progress.phase(format!(
        "checking that messages on {pub_topic} arrive on {sub_topic}"
    ));
    publish::prime(
        &format!("nothing published on {pub_topic} arrived on {sub_topic}"),
        &mut pubs[0],
        &topics,
        &recorders,
        clock,
        spec.payload_bytes,
        Duration::from_secs(15),
    )
    .await?;
    load::run(
        spec, pubs, &recorders, seen, clock, args.pid, &counters, progress,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1884").unwrap(),
            ("127.0.0.1".into(), 1884)
        );
        assert_eq!(parse_url("localhost").unwrap(), ("localhost".into(), 1883));
        assert_eq!(parse_url("mqtt://[::1]:9/").unwrap(), ("::1".into(), 9));
        assert!(parse_url("mqtts://h:1").is_err());
        assert!(parse_url("mqtt://h:x").is_err());
        assert!(parse_url("mqtt://").is_err());
    }
}
