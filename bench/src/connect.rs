//! `bench connect`: N DAs register over HTTP (many requests in flight), then connect
//! over MQTT and go online as SDKs do; measures registrations/s, the time until the CSM counts
//! them all online (its `/status`), and the controller's memory before, during and after.
//! The DAs are disconnected and deleted at the end, also after an error or Ctrl-C.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use iot_proto::{DaId, Rev};
use rumqttc::QoS;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::da::{self, BenchDa, DaConnect};
use crate::error::BenchError;
use crate::mqtt::ConnCounters;
use crate::options::{ConnectOptions, Target};
use crate::procstat;
use crate::progress::Progress;
use crate::report::{self, or_na};
use crate::units::{group, kb_to_mb};
use crate::{csm, ctrl_c, run_id};

#[derive(Debug, Serialize)]
struct ConnectReport {
    bench: &'static str,
    csm: String,
    mqtt: String,
    das: usize,
    concurrency: usize,
    registration_s: f64,
    registrations_per_s: f64,
    /// From the first MQTT connection until the last DA published online.
    connect_s: f64,
    /// From the first MQTT connection until the CSM's `/status` counted every DA online.
    online_s: f64,
    online_per_s: f64,
    deregistration_s: f64,
    deregistrations_per_s: f64,
    controller_pid: Option<u32>,
    controller_rss_before_mb: Option<f64>,
    controller_rss_registered_mb: Option<f64>,
    controller_rss_online_mb: Option<f64>,
    controller_rss_after_mb: Option<f64>,
    /// The controller's peak RSS since it started (VmHWM), read when all were online.
    controller_rss_peak_mb: Option<f64>,
    /// (online − before) / N.
    controller_rss_per_da_kb: Option<f64>,
    client_rss_mb: Option<f64>,
    reconnects: u64,
}

#[derive(Debug, Default)]
struct Created {
    registered: Vec<(DaId, Rev)>,
    das: Vec<BenchDa>,
}

#[derive(Debug, Default)]
struct Timings {
    registration_s: f64,
    connect_s: f64,
    online_s: f64,
    rss_before_kb: Option<u64>,
    rss_registered_kb: Option<u64>,
    rss_online_kb: Option<u64>,
    rss_peak_kb: Option<u64>,
    client_rss_kb: Option<u64>,
}

/// Runs `bench connect` against `target` and prints its report (a table, or JSON).
pub async fn run(target: &Target, args: &ConnectOptions) -> Result<(), BenchError> {
    args.check()?;
    let progress = Progress::new(args.json);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .map_err(BenchError::HttpClient)?;
    csm::check(&http, &target.csm).await?;
    let counters = Arc::new(ConnCounters::default());
    let mut created = Created::default();
    let mut t = Timings::default();
    let outcome = tokio::select! {
        r = measure(args, target, &http, &progress, &counters, &mut created, &mut t) => r,
        e = ctrl_c() => Err(e),
    };

    let n_reg = created.registered.len();
    // A second Ctrl-C stops the cleanup too.
    let deregistration_s = tokio::select! {
        d = cleanup(created, &http, &target.csm, args.concurrency, &progress) => d,
        _ = tokio::signal::ctrl_c() => {
            progress.finish();
            eprintln!("iotctl bench: interrupted again: cleanup stopped; DAs of model {} may remain", da::MODEL);
            return Err(BenchError::Interrupted);
        }
    };
    let rss_after = target.pid.and_then(|p| procstat::sample(p).ok());
    progress.finish();
    outcome?;

    let n = args.das as f64;
    let report = ConnectReport {
        bench: "connect",
        csm: target.csm.clone(),
        mqtt: target.mqtt(),
        das: args.das,
        concurrency: args.concurrency,
        registration_s: t.registration_s,
        registrations_per_s: n / t.registration_s.max(1e-9),
        connect_s: t.connect_s,
        online_s: t.online_s,
        online_per_s: n / t.online_s.max(1e-9),
        deregistration_s,
        deregistrations_per_s: n_reg as f64 / deregistration_s.max(1e-9),
        controller_pid: target.pid,
        controller_rss_before_mb: t.rss_before_kb.map(kb_to_mb),
        controller_rss_registered_mb: t.rss_registered_kb.map(kb_to_mb),
        controller_rss_online_mb: t.rss_online_kb.map(kb_to_mb),
        controller_rss_after_mb: rss_after.map(|s| kb_to_mb(s.rss_kb)),
        controller_rss_peak_mb: t.rss_peak_kb.map(kb_to_mb),
        controller_rss_per_da_kb: t
            .rss_before_kb
            .zip(t.rss_online_kb)
            .map(|(a, b)| (b as f64 - a as f64) / n),
        client_rss_mb: t.client_rss_kb.map(kb_to_mb),
        reconnects: counters
            .reconnects
            .load(std::sync::atomic::Ordering::Relaxed),
    };
    let mb = |v: Option<f64>| or_na(v.map(|m| format!("{m:.1} MB")));
    let rows = vec![
        (
            "registration".to_owned(),
            format!(
                "{} DAs in {:.2} s: {} DAs/s ({} in flight)",
                group(args.das as u64),
                report.registration_s,
                group(report.registrations_per_s.round() as u64),
                args.concurrency
            ),
        ),
        (
            "all online".to_owned(),
            format!(
                "{:.2} s after the first connection ({} DAs/s); connections made in {:.2} s",
                report.online_s,
                group(report.online_per_s.round() as u64),
                report.connect_s
            ),
        ),
        (
            "controller rss".to_owned(),
            format!(
                "before {}   registered {}   online {}   after cleanup {}   peak {}",
                mb(report.controller_rss_before_mb),
                mb(report.controller_rss_registered_mb),
                mb(report.controller_rss_online_mb),
                mb(report.controller_rss_after_mb),
                mb(report.controller_rss_peak_mb),
            ),
        ),
        (
            "per DA".to_owned(),
            or_na(
                report
                    .controller_rss_per_da_kb
                    .map(|k| format!("{k:.1} kB of controller memory (registered and online)")),
            ),
        ),
        (
            "deregistration".to_owned(),
            format!(
                "{:.2} s: {} DAs/s",
                report.deregistration_s,
                group(report.deregistrations_per_s.round() as u64)
            ),
        ),
        (
            "bench client".to_owned(),
            format!(
                "rss {}; {} reconnects",
                mb(report.client_rss_mb),
                report.reconnects
            ),
        ),
    ];
    let title = format!(
        "bench connect: {} DAs\n  controller {} (mqtt {}{})",
        group(args.das as u64),
        target.csm,
        target.mqtt(),
        target
            .pid
            .map(|p| format!(", pid {p}"))
            .unwrap_or_else(|| ", not local: memory n/a".into())
    );
    report::print(args.json, &report, &title, &rows)
}

/// Disconnects and deletes the DAs; returns how long the deletions took.
async fn cleanup(
    created: Created,
    http: &reqwest::Client,
    csm: &str,
    concurrency: usize,
    progress: &Progress,
) -> f64 {
    progress.steps(created.das.len() as u64, "disconnecting");
    let mut closing = futures::stream::iter(created.das)
        .map(BenchDa::close)
        .buffer_unordered(concurrency);
    let mut closed = 0;
    while closing.next().await.is_some() {
        closed += 1;
        progress.set_position(closed);
    }
    progress.steps(created.registered.len() as u64, "deleting the bench DAs");
    let started = Instant::now();
    let mut deleting = futures::stream::iter(created.registered)
        .map(|(id, rev)| async move { da::deregister(http, csm, &id, &rev).await })
        .buffer_unordered(concurrency);
    let (mut deleted, mut failures, mut first_failure) = (0u64, 0u64, None);
    while let Some(r) = deleting.next().await {
        deleted += 1;
        progress.set_position(deleted);
        if let Err(e) = r {
            failures += 1;
            first_failure.get_or_insert(e.chain());
        }
    }
    if let Some(f) = first_failure {
        eprintln!("iotctl bench: cleanup: {failures} DELETE requests failed, the first: {f}");
    }
    started.elapsed().as_secs_f64()
}

async fn measure(
    args: &ConnectOptions,
    target: &Target,
    http: &reqwest::Client,
    progress: &Progress,
    counters: &Arc<ConnCounters>,
    created: &mut Created,
    t: &mut Timings,
) -> Result<(), BenchError> {
    let run = run_id();
    let rss = || {
        target
            .pid
            .and_then(|p| procstat::sample(p).ok())
            .map(|s| s.rss_kb)
    };
    let online0 = online(http, &target.csm).await?;
    t.rss_before_kb = rss();

    progress.steps(args.das as u64, "registering");
    let started = Instant::now();
    let csm = target.csm.as_str();
    let run_ref = run.as_str();
    let mut registering = futures::stream::iter(0..args.das)
        .map(|i| async move {
            let id = DaId::new_v4();
            let body = da::register_body(&format!("bench-{run_ref}-{i}"), true, true);
            da::register(http, csm, &id, &body)
                .await
                .map(|r| (id, r.rev))
        })
        .buffer_unordered(args.concurrency);
    while let Some(r) = registering.next().await {
        let (id, rev) = r?;
        created.registered.push((id, rev));
        progress.set_position(created.registered.len() as u64);
    }
    drop(registering);
    t.registration_s = started.elapsed().as_secs_f64();
    t.rss_registered_kb = rss();

    progress.steps(args.das as u64, "connecting");
    // Bench DAs of this command have no links; the channel only has to exist.
    let (links_tx, _links) = mpsc::channel(16);
    let how = DaConnect {
        host: target.mqtt_host.clone(),
        port: target.mqtt_port,
        data_qos: QoS::AtMostOnce,
        keep_alive: Duration::from_secs(300),
    };
    let started = Instant::now();
    let registered = created.registered.clone();
    let (how_ref, links_ref) = (&how, &links_tx);
    let mut connecting = futures::stream::iter(registered.into_iter().enumerate())
        .map(|(i, (id, rev))| async move {
            BenchDa::connect(
                i,
                id,
                rev,
                how_ref,
                None,
                links_ref.clone(),
                counters.clone(),
            )
            .await
        })
        .buffer_unordered(args.concurrency);
    while let Some(d) = connecting.next().await {
        created.das.push(d?);
        progress.set_position(created.das.len() as u64);
    }
    drop(connecting);
    t.connect_s = started.elapsed().as_secs_f64();

    progress.steps(
        args.das as u64,
        "waiting until the controller counts them online",
    );
    let deadline = Instant::now() + args.timeout;
    loop {
        let now_online = online(http, &target.csm).await?.saturating_sub(online0);
        progress.set_position(now_online);
        if now_online >= args.das as u64 {
            break;
        }
        if Instant::now() > deadline {
            return Err(BenchError::NotOnline {
                online: now_online,
                total: args.das,
                seconds: args.timeout.as_secs_f64(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.online_s = started.elapsed().as_secs_f64();
    let s = target.pid.and_then(|p| procstat::sample(p).ok());
    t.rss_online_kb = s.map(|s| s.rss_kb);
    t.rss_peak_kb = s.map(|s| s.hwm_kb);
    t.client_rss_kb = procstat::sample(std::process::id()).ok().map(|s| s.rss_kb);
    Ok(())
}

async fn online(http: &reqwest::Client, base: &str) -> Result<u64, BenchError> {
    let s = csm::status(http, base).await?;
    s["online"].as_u64().ok_or_else(|| BenchError::Reply {
        method: "GET",
        url: format!("{base}/status"),
        reason: "no `online` count".into(),
    })
}
