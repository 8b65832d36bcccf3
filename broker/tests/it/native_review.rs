//! The native core's answers to the defects a review of it found (each failed before its fix):
//! QoS 2 packet ids, the receive maximum, stale connections after a take-over, shared
//! subscriptions under the ACL, the payload limit, sessions left attached, resends that no
//! longer fit, and keep-alive for a slow reader.

use std::sync::Arc;
use std::time::Duration;

use iot_broker::{Broker, BrokerCore, ClientRef, EmbeddedConfig, Security, TopicAcl};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::raw::{self, Proto};
use crate::{start_any, TestBroker, WAIT};

fn cfg(core: BrokerCore) -> EmbeddedConfig {
    let mut cfg = crate::test_config();
    cfg.core = core;
    if core == BrokerCore::Native {
        cfg.ws_listen = String::new();
    }
    cfg
}

async fn start(cfg: EmbeddedConfig, security: Security) -> TestBroker {
    let shutdown = CancellationToken::new();
    let (broker, task) = start_any(&cfg, security, shutdown.clone()).await.unwrap();
    TestBroker {
        broker,
        shutdown,
        task: Some(task),
    }
}

const SHORT: Duration = Duration::from_millis(700);

async fn maybe(s: &mut tokio::net::TcpStream, wait: Duration) -> Option<(u8, Vec<u8>)> {
    tokio::time::timeout(wait, raw::read(s))
        .await
        .ok()
        .flatten()
}

/// MQTT 5: a QoS 2 PUBLISH refused with PUBREC >= 0x80 ends the exchange (4.3.3), so the
/// client may reuse its packet id at once: the next QoS 2 PUBLISH with that id is routed
/// (the id of a refused message is not held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_qos2_publish_holds_no_packet_id() {
    let _beside = crate::qos_resume::HEAVY.read().await;
    let b = start(cfg(BrokerCore::Native), Security::default()).await;
    let (mut sub, code) =
        raw::connect_with(b.addr(), &raw::connect("r1-sub", Proto::V311, 30, None)).await;
    assert_eq!(code, 0);
    sub.write_all(&raw::subscribe(1, "r1/t", 0)).await.unwrap();
    raw::expect(&mut sub, WAIT, "SUBACK").await;

    let (mut p, code) =
        raw::connect_with(b.addr(), &raw::connect("r1-pub", Proto::V5, 30, None)).await;
    assert_eq!(code, 0);
    p.write_all(&raw::publish_v5("$x/y", 2, 7, &[], b"refused"))
        .await
        .unwrap();
    let rec = raw::expect(&mut p, WAIT, "PUBREC").await;
    eprintln!("PUBREC for the $ topic: {rec:x?}");
    assert_eq!(rec.0, 0x50);
    assert!(rec.1.len() >= 3 && rec.1[2] >= 0x80, "refused: {rec:?}");
    // Exchange over for the client (no PUBREL). Id 7 is free again: reuse it.
    p.write_all(&raw::publish_v5("r1/t", 2, 7, &[], b"good"))
        .await
        .unwrap();
    let rec = raw::expect(&mut p, WAIT, "PUBREC").await;
    eprintln!("PUBREC for the good one: {rec:x?}");
    p.write_all(&raw::pubrel(7)).await.unwrap();
    let comp = raw::expect(&mut p, WAIT, "PUBCOMP").await;
    eprintln!("PUBCOMP: {comp:x?}");
    let got = maybe(&mut sub, Duration::from_secs(2)).await;
    assert!(
        got.is_some(),
        "the second QoS 2 message (id 7 reused) was never routed"
    );
}

/// The QoS 2 PUBLISH that exceeds the receive maximum closes the connection (0x93) without
/// being recorded: its resend after the reconnect is routed, not taken for a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_over_the_receive_maximum_is_routed_when_resent() {
    let _beside = crate::qos_resume::HEAVY.read().await;
    let mut c = cfg(BrokerCore::Native);
    c.max_inflight = 64;
    let b = start(c, Security::default()).await;
    let (mut sub, code) =
        raw::connect_with(b.addr(), &raw::connect("r2-sub", Proto::V311, 30, None)).await;
    assert_eq!(code, 0);
    sub.write_all(&raw::subscribe(1, "r2/#", 0)).await.unwrap();
    raw::expect(&mut sub, WAIT, "SUBACK").await;

    let (mut p, code) = raw::connect_with(b.addr(), &raw::connect_persistent("r2-pub")).await;
    assert_eq!(code, 0);
    let mut all = Vec::new();
    for id in 1..=65u16 {
        all.extend(raw::publish(&format!("r2/{id}"), 2, id, b"x"));
    }
    p.write_all(&all).await.unwrap();
    let mut recs = 0;
    while let Some(pk) = maybe(&mut p, Duration::from_secs(2)).await {
        if pk.0 == 0x50 {
            recs += 1;
        }
    }
    eprintln!("PUBRECs before the close: {recs}");
    drop(p);
    // Reconnect, resend the unacknowledged PUBLISH (DUP) and release everything.
    let (mut p, code) = raw::connect_with(b.addr(), &raw::connect_persistent("r2-pub")).await;
    assert_eq!(code, 0);
    for id in 1..=64u16 {
        p.write_all(&raw::pubrel(id)).await.unwrap();
    }
    let mut dup = raw::publish("r2/65", 2, 65, b"x");
    dup[0] |= 0x08;
    p.write_all(&dup).await.unwrap();
    loop {
        let pk = raw::expect(&mut p, WAIT, "PUBREC of 65").await;
        if pk.0 == 0x50 && pk.1[..2] == [0, 65] {
            break;
        }
    }
    p.write_all(&raw::pubrel(65)).await.unwrap();
    let mut n = 0;
    let mut topics = std::collections::BTreeSet::new();
    while let Some(pk) = maybe(&mut sub, Duration::from_secs(2)).await {
        if pk.0 & 0xF0 == 0x30 {
            n += 1;
            let tl = usize::from(u16::from_be_bytes([pk.1[0], pk.1[1]]));
            topics.insert(String::from_utf8(pk.1[2..2 + tl].to_vec()).unwrap());
        }
    }
    eprintln!(
        "subscriber got {n}; r2/65 present: {}",
        topics.contains("r2/65")
    );
    assert!(
        topics.contains("r2/65"),
        "r2/65 was never delivered ({n} received)"
    );
}

/// A clean take-over while the old connection is still handling a pipelined batch: the old
/// connection's SUBSCRIBE, handled after its session was ended, must not replace the new
/// session's subscription (same key: the client id): the new session keeps receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_over_connection_cannot_touch_the_new_sessions_subscriptions() {
    let _beside = crate::qos_resume::HEAVY.read().await;
    let mut c = cfg(BrokerCore::Native);
    c.host_send_timeout_ms = 1500;
    let b = start(c, Security::default()).await;
    // A full host subscription makes `route` wait host_send_timeout_ms for each message.
    let _slow = b.broker.subscribe("slow/#", 1).await.unwrap();

    let (mut old, code) =
        raw::connect_with(b.addr(), &raw::connect("r3", Proto::V311, 30, None)).await;
    assert_eq!(code, 0);
    let mut batch = Vec::new();
    batch.extend(raw::publish("slow/1", 0, 0, b"1"));
    batch.extend(raw::publish("slow/2", 0, 0, b"2")); // blocks ~1.5 s in route()
    batch.extend(raw::subscribe(9, "r3/t", 0));
    old.write_all(&batch).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Same client id, clean session: a new session that subscribes r3/t.
    let (mut new, code) =
        raw::connect_with(b.addr(), &raw::connect("r3", Proto::V311, 30, None)).await;
    assert_eq!(code, 0);
    new.write_all(&raw::subscribe(1, "r3/t", 0)).await.unwrap();
    let ack = raw::expect(&mut new, WAIT, "SUBACK").await;
    assert_eq!(ack.0, 0x90);
    // Wait for the old connection's batch to finish.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    b.broker
        .publish(iot_broker::Message::new(
            "r3/t",
            bytes::Bytes::from_static(b"hello"),
            iot_broker::QoS::AtMostOnce,
            false,
        ))
        .await
        .unwrap();
    let got = maybe(&mut new, Duration::from_secs(2)).await;
    eprintln!(
        "new connection got: {got:x?}; dropped = {}",
        b.broker.stats().dropped
    );
    assert!(
        got.is_some(),
        "the new session's subscription was replaced by the old connection's"
    );
}

/// A deny-list ACL: no subscription to `secret/...`.
#[derive(Debug)]
struct DenySecret;

impl TopicAcl for DenySecret {
    fn may_publish(&self, _: &ClientRef<'_>, _: &str, _: bool) -> bool {
        true
    }
    fn may_subscribe(&self, _: &ClientRef<'_>, filter: &str) -> bool {
        eprintln!("ACL asked about {filter:?}");
        !filter.starts_with("secret") && !filter.starts_with('#') && !filter.starts_with('+')
    }
}

async fn share_acl(core: BrokerCore) -> bool {
    let sec = Security {
        auth: None,
        acl: Some(Arc::new(DenySecret)),
    };
    let b = start(cfg(core), sec).await;
    let (mut s, code) =
        raw::connect_with(b.addr(), &raw::connect("r4", Proto::V311, 30, None)).await;
    assert_eq!(code, 0);
    s.write_all(&raw::subscribe(1, "$share/g/secret/#", 0))
        .await
        .unwrap();
    let ack = raw::expect(&mut s, WAIT, "SUBACK").await;
    eprintln!("{core:?}: SUBACK {ack:x?}");
    ack.1[2] != 0x80
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscriptions_are_checked_without_their_share_prefix() {
    let _beside = crate::qos_resume::HEAVY.read().await;
    let native = share_acl(BrokerCore::Native).await;
    let rmqtt = share_acl(BrokerCore::Rmqtt).await;
    eprintln!("granted: native {native}, rmqtt {rmqtt}");
    assert_eq!(native, rmqtt, "the cores disagree on $share/g/secret/#");
}

async fn big_payload(core: BrokerCore) -> (Vec<u8>, bool) {
    let mut c = cfg(core);
    c.max_payload_bytes = 1000;
    let b = start(c, Security::default()).await;
    let mut host = b.broker.subscribe("r5/#", 10).await.unwrap();
    let (mut p, code) = raw::connect_with(b.addr(), &raw::connect("r5", Proto::V5, 30, None)).await;
    assert_eq!(code, 0);
    p.write_all(&raw::publish_v5("r5/t", 1, 1, &[], &[7u8; 5000]))
        .await
        .unwrap();
    let ack = raw::expect(&mut p, WAIT, "PUBACK").await;
    let got = tokio::time::timeout(SHORT, host.recv())
        .await
        .ok()
        .flatten()
        .is_some();
    (ack.1, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_over_max_payload_bytes_are_refused_as_on_rmqtt() {
    let _beside = crate::qos_resume::HEAVY.read().await;
    let n = big_payload(BrokerCore::Native).await;
    let r = big_payload(BrokerCore::Rmqtt).await;
    eprintln!(
        "native: PUBACK {:x?} routed {}; rmqtt: PUBACK {:x?} routed {}",
        n.0, n.1, r.0, r.1
    );
    assert_eq!(
        n.1, r.1,
        "the cores disagree on a 5000-byte payload with max_payload_bytes 1000"
    );
}

/// A CONNACK that does not fit the client's Maximum Packet Size ends the connection, and its
/// session is released like any other's: it does not count towards `max_sessions` for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connack_that_does_not_fit_leaves_no_session_attached() {
    let _beside = crate::qos_resume::HEAVY.read().await;
    let mut c = cfg(BrokerCore::Native);
    c.max_sessions = 3;
    let b = start(c, Security::default()).await;
    // Maximum Packet Size (0x27) = 6 bytes.
    let props = [0x27, 0, 0, 0, 6];
    for i in 0..3 {
        let mut s = tokio::net::TcpStream::connect(b.addr()).await.unwrap();
        s.write_all(&raw::connect_v5(&format!("r7-{i}"), true, &props))
            .await
            .unwrap();
        let got = maybe(&mut s, Duration::from_secs(1)).await;
        eprintln!("tiny max packet size {i}: {got:x?}");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // an expiry tick
    eprintln!("stats: {:?}", b.broker.stats());
    let (_s, code) =
        raw::connect_with(b.addr(), &raw::connect("r7-real", Proto::V311, 30, None)).await;
    eprintln!("a real client: CONNACK code {code}");
    assert_eq!(
        code, 0,
        "refused: max_sessions used up by sessions with no connection"
    );
}

/// A persistent MQTT 5 session with a message in flight reconnects with a smaller Maximum
/// Packet Size: the message that no longer fits is discarded, so it does not hold its window
/// slot (Receive Maximum 1) and later messages are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_that_no_longer_fits_frees_the_window() {
    let _beside = crate::qos_resume::HEAVY.read().await;
    let b = start(cfg(BrokerCore::Native), Security::default()).await;
    // Session Expiry Interval (0x11) 60 s, Receive Maximum (0x21) 1.
    let first = [0x11, 0, 0, 0, 60, 0x21, 0, 1];
    let (mut s, code) = raw::connect_with(b.addr(), &raw::connect_v5("r6", true, &first)).await;
    assert_eq!(code, 0);
    s.write_all(&raw::subscribe_v5(1, "r6/#", 1)).await.unwrap();
    raw::expect(&mut s, WAIT, "SUBACK").await;
    b.broker
        .publish(iot_broker::Message::new(
            "r6/big",
            bytes::Bytes::from(vec![1u8; 500]),
            iot_broker::QoS::AtLeastOnce,
            false,
        ))
        .await
        .unwrap();
    let p = raw::expect(&mut s, WAIT, "PUBLISH").await;
    assert_eq!(p.0 & 0xF0, 0x30);
    drop(s); // not acknowledged
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Resume with Maximum Packet Size (0x27) 200 and Receive Maximum 1.
    let second = [0x11, 0, 0, 0, 60, 0x21, 0, 1, 0x27, 0, 0, 0, 200];
    let (mut s, code) = raw::connect_with(b.addr(), &raw::connect_v5("r6", false, &second)).await;
    assert_eq!(code, 0);
    b.broker
        .publish(iot_broker::Message::new(
            "r6/small",
            bytes::Bytes::from_static(b"s"),
            iot_broker::QoS::AtLeastOnce,
            false,
        ))
        .await
        .unwrap();
    let got = maybe(&mut s, Duration::from_secs(2)).await;
    eprintln!("after resume: {got:x?}");
    assert!(
        got.is_some(),
        "the small message is stuck behind the unsendable one"
    );
}

/// A slow but live reader: while more than 256 KiB waits to be written the connection stops
/// reading, and the PINGREQs it sends meanwhile, unread, still keep it alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_that_pings_is_not_closed_for_keep_alive() {
    let _beside = crate::qos_resume::HEAVY.read().await;
    use tokio::io::AsyncReadExt;
    let b = start(cfg(BrokerCore::Native), Security::default()).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(16 * 1024).unwrap();
    let mut s = sock.connect(b.addr()).await.unwrap();
    // keep-alive 2 s: closed after 3 s without a packet read.
    s.write_all(&raw::connect("r8", Proto::V5, 2, None))
        .await
        .unwrap();
    raw::expect(&mut s, WAIT, "CONNACK").await;
    s.write_all(&raw::subscribe_v5(1, "r8/#", 0)).await.unwrap();
    raw::expect(&mut s, WAIT, "SUBACK").await;
    for i in 0..2 {
        b.broker
            .publish(iot_broker::Message::new(
                format!("r8/{i}"),
                bytes::Bytes::from(vec![0u8; 1_000_000]),
                iot_broker::QoS::AtMostOnce,
                false,
            ))
            .await
            .unwrap();
    }
    let (mut rd, mut wr) = s.into_split();
    let pinger = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if wr.write_all(&raw::pingreq()).await.is_err() {
                break;
            }
        }
    });
    // Read ~200 KB/s.
    let start = std::time::Instant::now();
    let mut total = 0usize;
    let mut last = Vec::new();
    let mut buf = vec![0u8; 20_000];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                total += n;
                last = buf[..n].to_vec();
            }
        }
        if total >= 2_000_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pinger.abort();
    let tail: Vec<u8> = last.iter().rev().take(8).rev().copied().collect();
    eprintln!(
        "read {total} bytes in {:?}; last bytes {tail:x?}",
        start.elapsed()
    );
    assert!(total >= 2_000_000, "closed while reading and pinging");
}
