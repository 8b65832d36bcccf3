//! What each idle MQTT connection costs the embedded broker: starts it in this process (with
//! jemalloc, as `iotctl` runs it), opens N plain TCP clients that CONNECT and SUBSCRIBE to a
//! topic of their own (as a DA does), and prints the process's resident memory before and
//! after, per connection. The clients are raw sockets: a few hundred bytes each on our side.
//!
//! ```sh
//! cargo run --release -p iot-broker --example connections -- 10000          # rmqtt core
//! cargo run --release -p iot-broker --example connections -- 10000 native   # native core
//! ```

#![allow(clippy::expect_used)] // a measuring tool: any failure ends the run with its reason

use std::time::{Duration, Instant};

use iot_broker::{BrokerCore, EmbeddedBroker, EmbeddedConfig, NativeBroker, Security};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

fn packet(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// CONNECT (MQTT 3.1.1, clean session, keepalive 0) and SUBSCRIBE `<id>/ctrl/o` at QoS 2.
fn hello(id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 0]);
    string(&mut body, id);
    let mut out = packet(0x10, &body);
    let mut sub = 1u16.to_be_bytes().to_vec();
    string(&mut sub, &format!("{id}/ctrl/o"));
    sub.push(2);
    out.extend(packet(0x82, &sub));
    out
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let core = match std::env::args().nth(2).as_deref() {
        Some("native") => BrokerCore::Native,
        _ => BrokerCore::Rmqtt,
    };
    let cfg = EmbeddedConfig {
        core,
        listen: "127.0.0.1:0".into(),
        ws_listen: String::new(),
        sys_interval_seconds: 0,
        ..EmbeddedConfig::default()
    };
    let shutdown = CancellationToken::new();
    let addr = match core {
        BrokerCore::Rmqtt => {
            let (broker, _task) = EmbeddedBroker::start(&cfg, None, shutdown.clone())
                .await
                .expect("broker starts");
            broker.mqtt_addr()
        }
        BrokerCore::Native => {
            let (broker, _task) = NativeBroker::start(&cfg, Security::default(), shutdown.clone())
                .await
                .expect("broker starts");
            broker.mqtt_addr()
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib();
    let started = Instant::now();
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(&hello(&format!("conn-{i}")))
            .await
            .expect("send");
        // CONNACK (4 bytes) and SUBACK (5 bytes).
        let mut acks = [0u8; 9];
        s.read_exact(&mut acks).await.expect("CONNACK and SUBACK");
        assert_eq!(
            (acks[0], acks[3], acks[4]),
            (0x20, 0, 0x90),
            "refused: {acks:?}"
        );
        clients.push(s);
    }
    let connected = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib();
    println!(
        "{core:?} core: {n} connections in {:.2} s: RSS {:.1} MiB -> {:.1} MiB, {:.2} KiB per connection",
        connected.as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / n as f64
    );
    // Exit with the connections open: `_RJEM_MALLOC_CONF=stats_print:true` then prints
    // jemalloc's statistics of what they hold (by size class).
    drop(shutdown);
    std::process::exit(if clients.len() == n { 0 } else { 1 });
}
