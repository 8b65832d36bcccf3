//! MQTT 5 details of the native core, each failing before its fix: a PUBREC that refuses a
//! message ends its exchange, No Local on a shared subscription is a protocol error, a
//! DISCONNECT cannot keep a session that was to end, and shutdown does not wait for clients
//! that never send their CONNECT.

use std::time::Duration;

use iot_broker::{Broker, BrokerCore, EmbeddedConfig, Message, QoS};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::raw;
use crate::{spawn_broker_with, TestBroker, WAIT};

fn native_config() -> EmbeddedConfig {
    EmbeddedConfig {
        core: BrokerCore::Native,
        ..crate::test_config()
    }
}

async fn native() -> TestBroker {
    spawn_broker_with(native_config()).await
}

/// An MQTT 5 client connected with `props` (CONNACK checked: success).
async fn v5(b: &TestBroker, id: &str, clean: bool, props: &[u8]) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(b.addr()).await.unwrap();
    s.write_all(&raw::connect_v5(id, clean, props))
        .await
        .unwrap();
    let ack = raw::expect(&mut s, WAIT, "CONNACK").await;
    assert_eq!(raw::connack_code(&ack), 0, "{ack:?}");
    (s, ack.1)
}

/// The next packet is DISCONNECT with `reason`, then the connection closes.
async fn disconnected_with(s: &mut TcpStream, reason: u8) {
    let p = raw::expect(s, WAIT, "DISCONNECT").await;
    assert_eq!((p.0, p.1.first().copied()), (0xE0, Some(reason)), "{p:?}");
    closed(s).await;
}

/// The broker closes the connection (whatever it sends before).
async fn closed(s: &mut TcpStream) {
    assert!(raw::expect_or_closed(s, WAIT, "the close").await.is_none());
}

/// MQTT 5, 4.3.3: a PUBREC with a reason of 0x80 or more ends the QoS 2 exchange: no PUBREL
/// follows, and the message no longer holds the client's Receive Maximum (here 1), so the
/// next message comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pubrec_that_refuses_ends_the_exchange() {
    let _beside = crate::qos_resume::HEAVY.read().await;
    let b = native().await;
    // Receive Maximum (0x21) 1.
    let (mut s, _) = v5(&b, "refuser", true, &[0x21, 0, 1]).await;
    s.write_all(&raw::subscribe_v5_with(1, "rf/#", 2, &[]))
        .await
        .unwrap();
    raw::expect(&mut s, WAIT, "SUBACK").await;
    for n in ["one", "two"] {
        let m = Message::new(format!("rf/{n}"), n, QoS::ExactlyOnce, false);
        b.broker.publish(m).await.unwrap();
    }
    let first = raw::parse_publish_v5(&raw::expect(&mut s, WAIT, "the first PUBLISH").await);
    assert_eq!(first.payload, b"one");
    // PUBREC, reason 0x80 (unspecified error).
    let [hi, lo] = first.pkid.to_be_bytes();
    s.write_all(&[0x50, 3, hi, lo, 0x80]).await.unwrap();
    let next = raw::expect(&mut s, WAIT, "the second PUBLISH").await;
    assert_eq!(
        next.0 & 0xF0,
        0x30,
        "a PUBREL for a refused message: {next:?}"
    );
    assert_eq!(raw::parse_publish_v5(&next).payload, b"two");
}

/// MQTT-3.8.3-4: No Local on a shared subscription is a protocol error: DISCONNECT 0x82, and
/// nothing of that SUBSCRIBE is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    let _beside = crate::qos_resume::HEAVY.read().await;
    let b = native().await;
    let (mut s, _) = v5(&b, "shared-nl", true, &[]).await;
    // Options: QoS 1, No Local (0x04).
    s.write_all(&raw::subscribe_v5_with(1, "$share/g/nl/#", 0x05, &[]))
        .await
        .unwrap();
    disconnected_with(&mut s, 0x82).await;
}

/// MQTT 5, 3.14.2.2.2: a session whose expiry was 0 ends with its connection even if the
/// DISCONNECT names an expiry (a protocol error, answered with DISCONNECT 0x82): the next
/// CONNECT finds no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_cannot_keep_a_session_that_was_to_end() {
    let _beside = crate::qos_resume::HEAVY.read().await;
    let b = native().await;
    let (mut s, _) = v5(&b, "short-lived", true, &[]).await;
    s.write_all(&raw::subscribe_v5_with(1, "sl/#", 1, &[]))
        .await
        .unwrap();
    raw::expect(&mut s, WAIT, "SUBACK").await;
    // DISCONNECT, reason 0, Session Expiry Interval (0x11) 600 s: refused with 0x82.
    s.write_all(&[0xE0, 7, 0x00, 5, 0x11, 0, 0, 0x02, 0x58])
        .await
        .unwrap();
    disconnected_with(&mut s, 0x82).await;
    // Clean start 0: session present (CONNACK flags bit 0) must be 0.
    let (_again, ack) = v5(&b, "short-lived", false, &[0x11, 0, 0, 0x02, 0x58]).await;
    assert_eq!(ack[0] & 1, 0, "the session was kept: {ack:?}");
}

/// Shutdown ends connections still waiting for their CONNECT (here with a handshake timeout
/// of a minute) instead of waiting for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_connect() {
    let _beside = crate::qos_resume::HEAVY.read().await;
    let mut b = spawn_broker_with(EmbeddedConfig {
        handshake_timeout_ms: 60_000,
        ..native_config()
    })
    .await;
    let ws = b.broker.ws_addr().unwrap();
    let mut silent = Vec::new();
    for addr in [b.addr(), ws] {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // Half a CONNECT on the TCP one.
    silent[0].write_all(&[0x10, 20, 0, 4]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.shutdown.cancel();
    let task = b.task.take().unwrap();
    // SHUTDOWN_WAIT is 5 s; the handshake timeout 60 s.
    tokio::time::timeout(Duration::from_secs(4), task)
        .await
        .expect("shutdown waited for connections that sent no CONNECT")
        .unwrap();
    for mut s in silent {
        closed(&mut s).await;
    }
}

/// A WebSocket client's close is answered with a close (not a dropped connection, which
/// browsers report as 1006), once the broker has handled what came before it; without a
/// DISCONNECT first, its will is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_close_is_answered_and_publishes_the_will() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    let _beside = crate::qos_resume::HEAVY.read().await;
    let b = native().await;
    let mut wills = b.broker.subscribe("ws-will/#", 4).await.unwrap();
    let (mut ws, _) = crate::websocket::ws_connect(b.broker.ws_addr().unwrap()).await;
    let conn =
        crate::reliability::connect_with_will("ws-closer", raw::Proto::V311, "ws-will/a", b"gone");
    ws.send(WsMessage::Binary(conn.into())).await.unwrap();
    // CONNACK.
    match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(WsMessage::Binary(b))) => assert_eq!(&b[..], &[0x20, 2, 0, 0]),
        other => panic!("no CONNACK: {other:?}"),
    }
    ws.send(WsMessage::Close(None)).await.unwrap();
    let reply = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    assert!(
        matches!(reply, Some(Ok(WsMessage::Close(_))) | None),
        "no close in reply: {reply:?}"
    );
    let will = tokio::time::timeout(WAIT, wills.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&will.payload[..], b"gone");
}

/// The same with messages still queued for the client when its close arrives (the broker
/// blocked writing to a client that does not read): nothing more may be sent after a close,
/// but the close reply still goes out once the client reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_close_is_answered_with_messages_queued() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    let _beside = crate::qos_resume::HEAVY.read().await;
    let b = native().await;
    let (mut ws, _) = crate::websocket::ws_connect(b.broker.ws_addr().unwrap()).await;
    let conn = raw::connect("ws-busy", raw::Proto::V311, 0, None);
    ws.send(WsMessage::Binary(conn.into())).await.unwrap();
    ws.send(WsMessage::Binary(raw::subscribe(1, "busy/#", 0).into()))
        .await
        .unwrap();
    // CONNACK and SUBACK (possibly in one message).
    let mut got = 0;
    while got < 9 {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(WsMessage::Binary(b))) => got += b.len(),
            other => panic!("no CONNACK and SUBACK: {other:?}"),
        }
    }
    // 16 MiB for a client that does not read: more than the kernel buffers, so some of it
    // still waits in the broker when the close arrives.
    let payload = vec![b'x'; 32 * 1024];
    for _ in 0..512 {
        let m = Message::new("busy/a", payload.clone(), QoS::AtMostOnce, false);
        b.broker.publish(m).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send(WsMessage::Close(None)).await.unwrap();
    let end = close_reply(&mut ws).await;
    assert!(end, "the connection ended without a close reply");
}

/// Reads (and drops) data until the close reply (`true`) or an error or end (`false`).
async fn close_reply(
    ws: &mut (impl futures::Stream<
        Item = Result<
            tokio_tungstenite::tungstenite::Message,
            tokio_tungstenite::tungstenite::Error,
        >,
    > + Unpin),
) -> bool {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Close(_))) => return true,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}
