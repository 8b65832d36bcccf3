//! MQTT over WebSocket: the framing cases real clients produce (empty frames, pings with data,
//! fragmented messages, several packets in one message, one packet over several), text frames,
//! the subprotocol. rmqtt's own WebSocket adapter ended the connection on an empty frame and
//! fed ping payloads into the MQTT stream (docs/broker-upstream.md, report 6).

use futures::{SinkExt, StreamExt};
use iot_broker::{Broker, Message, QoS};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::raw::{self, Proto};
use crate::{eventually, spawn_broker, within, WAIT};

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A WebSocket connection to `ws` on `/mqtt` offering `protocols`, and the upgrade response.
async fn ws_connect_offering(
    ws: std::net::SocketAddr,
    protocols: &str,
) -> Result<
    (
        Ws,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let mut req = format!("ws://{ws}/mqtt").into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    let tcp = TcpStream::connect(ws).await.unwrap();
    tokio_tungstenite::client_async(req, tcp).await
}

/// A WebSocket connection to `ws` on `/mqtt` with the `mqtt` subprotocol, as MQTT.js makes
/// it, and the server's upgrade response.
pub async fn ws_connect(
    ws: std::net::SocketAddr,
) -> (
    Ws,
    tokio_tungstenite::tungstenite::handshake::client::Response,
) {
    ws_connect_offering(ws, "mqtt").await.unwrap()
}

/// MQTT packets read from binary WebSocket messages, whatever their framing.
struct Packets {
    ws: Ws,
    buf: Vec<u8>,
}

impl Packets {
    /// The next complete packet: (first byte, body).
    async fn next(&mut self, what: &str) -> (u8, Vec<u8>) {
        within(WAIT, what, async {
            loop {
                if let Some(p) = self.take() {
                    return p;
                }
                match self.ws.next().await {
                    Some(Ok(WsMessage::Binary(b))) => self.buf.extend_from_slice(&b),
                    Some(Ok(WsMessage::Pong(_) | WsMessage::Ping(_))) => {}
                    other => panic!("waiting for {what}: {other:?}"),
                }
            }
        })
        .await
    }

    fn take(&mut self) -> Option<(u8, Vec<u8>)> {
        let (mut len, mut shift, mut i) = (0usize, 0, 1);
        loop {
            let b = *self.buf.get(i)?;
            len |= usize::from(b & 0x7F) << shift;
            shift += 7;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        if self.buf.len() < i + len {
            return None;
        }
        let header = self.buf[0];
        let body = self.buf[i..i + len].to_vec();
        self.buf.drain(..i + len);
        Some((header, body))
    }

    async fn send(&mut self, data: Vec<u8>) {
        self.ws.send(WsMessage::binary(data)).await.unwrap();
    }
}

/// MQTT over WebSocket on `/mqtt` with the `mqtt` subprotocol, as the JS SDK connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_listener_speaks_mqtt() {
    let b = spawn_broker().await;
    let ws = b.broker.ws_addr().unwrap();
    let (wsock, resp) = ws_connect(ws).await;
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["Sec-WebSocket-Protocol"], "mqtt");
    let mut c = Packets {
        ws: wsock,
        buf: Vec::new(),
    };
    let mut host = b.broker.subscribe("ws/#", 10).await.unwrap();
    c.send(raw::connect("ws-client", Proto::V311, 30, None))
        .await;
    let ack = c.next("CONNACK").await;
    assert_eq!((ack.0, ack.1[1]), (raw::CONNACK, 0));
    c.send(raw::publish("ws/1", 0, 0, b"hi")).await;
    let got = within(WAIT, "ws publish", host.recv()).await.unwrap();
    assert_eq!(got.payload, "hi");
}

/// Empty binary frames, pings with and without data, a fragmented message, several packets
/// in one message and one packet over several messages: the MQTT stream goes on unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_framing_of_real_clients_is_understood() {
    let b = spawn_broker().await;
    let (wsock, _) = ws_connect(b.broker.ws_addr().unwrap()).await;
    let mut c = Packets {
        ws: wsock,
        buf: Vec::new(),
    };

    // An empty frame first, then CONNECT in three messages with empty ones between (MQTT.js
    // writes an empty password or payload as a frame of its own).
    let conn = raw::connect("frames", Proto::V311, 30, Some(("user", "")));
    c.send(Vec::new()).await;
    c.send(conn[..3].to_vec()).await;
    c.send(Vec::new()).await;
    c.send(conn[3..10].to_vec()).await;
    c.send(Vec::new()).await;
    c.send(conn[10..].to_vec()).await;
    let ack = c.next("CONNACK").await;
    assert_eq!((ack.0, ack.1[1]), (raw::CONNACK, 0), "{ack:?}");

    // A ping with data is answered with a pong carrying it, and is not MQTT data.
    c.ws.send(WsMessage::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = within(WAIT, "pong", c.ws.next()).await.unwrap().unwrap();
    assert_eq!(pong, WsMessage::Pong(b"are you there".to_vec().into()));
    c.ws.send(WsMessage::Ping(Vec::new().into())).await.unwrap();
    c.send(raw::pingreq()).await;
    assert_eq!(c.next("PINGRESP after pings").await.0, raw::PINGRESP);

    // SUBSCRIBE as one message in three fragments.
    let sub = raw::subscribe(1, "frames/#", 0);
    let parts = [
        Frame::message(sub[..2].to_vec(), OpCode::Data(Data::Binary), false),
        Frame::message(sub[2..5].to_vec(), OpCode::Data(Data::Continue), false),
        Frame::message(sub[5..].to_vec(), OpCode::Data(Data::Continue), true),
    ];
    for f in parts {
        c.ws.send(WsMessage::Frame(f)).await.unwrap();
    }
    assert_eq!(c.next("SUBACK").await.0, raw::SUBACK);

    // Two PUBLISHes and a PINGREQ in one message.
    let mut batch = raw::publish("frames/a", 0, 0, b"one");
    batch.extend(raw::publish("frames/b", 0, 0, b"two"));
    batch.extend(raw::pingreq());
    c.send(batch).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(c.next("the batch's replies").await);
    }
    let payloads: Vec<&[u8]> = got
        .iter()
        .filter(|p| p.0 & 0xF0 == 0x30)
        .map(|p| raw::publish_parts(p).1)
        .collect();
    assert_eq!(payloads, [&b"one"[..], &b"two"[..]], "{got:?}");
    assert!(got.iter().any(|p| p.0 == raw::PINGRESP), "{got:?}");

    // One PUBLISH of 10 kB over five messages.
    let big = vec![b'x'; 10_000];
    let publish = raw::publish("frames/big", 0, 0, &big);
    for chunk in publish.chunks(publish.len() / 5 + 1) {
        c.send(chunk.to_vec()).await;
    }
    let p = c.next("the big PUBLISH").await;
    assert_eq!(raw::publish_parts(&p).1, &big[..]);

    // And the host sees the same stream.
    b.broker
        .publish(Message::new(
            "frames/host",
            "from host",
            QoS::AtMostOnce,
            false,
        ))
        .await
        .unwrap();
    let p = c.next("the host's PUBLISH").await;
    assert_eq!(raw::publish_parts(&p).1, b"from host");
}

/// MQTT 6.0: MQTT packets travel in binary frames; a text frame closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_text_frame_closes_the_connection() {
    let b = spawn_broker().await;
    let (wsock, _) = ws_connect(b.broker.ws_addr().unwrap()).await;
    let mut c = Packets {
        ws: wsock,
        buf: Vec::new(),
    };
    c.send(raw::connect("texter", Proto::V311, 30, None)).await;
    assert_eq!(c.next("CONNACK").await.0, raw::CONNACK);
    c.ws.send(WsMessage::text("hello")).await.unwrap();
    within(WAIT, "the connection to close", async {
        loop {
            match c.ws.next().await {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    eventually(WAIT, "the session to end", || {
        b.broker.stats().sessions == 0
    })
    .await;
}

/// The subprotocol may be offered in a list; without `mqtt` (or `mqttv3.1`) the upgrade is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_subprotocol_is_negotiated() {
    let b = spawn_broker().await;
    let ws = b.broker.ws_addr().unwrap();
    let (_, resp) = ws_connect_offering(ws, "wamp, mqtt").await.unwrap();
    assert_eq!(resp.headers()["Sec-WebSocket-Protocol"], "mqtt");
    let (_, resp) = ws_connect_offering(ws, "mqttv3.1").await.unwrap();
    assert_eq!(resp.headers()["Sec-WebSocket-Protocol"], "mqttv3.1");
    assert!(ws_connect_offering(ws, "wamp").await.is_err());
}

/// Several packets in one WebSocket message may add up to more than the largest packet (MQTT.js
/// in a browser joins what it buffered): two PUBLISHes of 700 kB in one 1.4 MB message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_one_packet_is_fine() {
    let b = spawn_broker().await;
    let mut host = b.broker.subscribe("batch/#", 10).await.unwrap();
    let (wsock, _) = ws_connect(b.broker.ws_addr().unwrap()).await;
    let mut c = Packets {
        ws: wsock,
        buf: Vec::new(),
    };
    let mut batch = raw::connect("batcher", Proto::V311, 30, None);
    let big = vec![b'z'; 700_000];
    batch.extend(raw::publish("batch/1", 0, 0, &big));
    batch.extend(raw::publish("batch/2", 0, 0, &big));
    c.send(batch).await;
    assert_eq!(c.next("CONNACK").await.0, raw::CONNACK);
    for topic in ["batch/1", "batch/2"] {
        let m = within(WAIT, topic, host.recv()).await.unwrap();
        assert_eq!((m.topic.as_str(), m.payload.len()), (topic, big.len()));
    }
}

/// DISCONNECT then a WebSocket close: a normal end, no will; a close without DISCONNECT: the
/// will.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_after_disconnect_sends_no_will() {
    let b = spawn_broker().await;
    let mut wills = b.broker.subscribe("wills/#", 10).await.unwrap();
    for (id, disconnect) in [("polite", true), ("abrupt", false)] {
        let (wsock, _) = ws_connect(b.broker.ws_addr().unwrap()).await;
        let mut c = Packets {
            ws: wsock,
            buf: Vec::new(),
        };
        let topic = format!("wills/{id}");
        c.send(crate::reliability::connect_with_will(
            id,
            Proto::V311,
            &topic,
            b"gone",
        ))
        .await;
        assert_eq!(c.next("CONNACK").await.0, raw::CONNACK);
        if disconnect {
            c.send(vec![0xE0, 0]).await;
        }
        c.ws.close(None).await.unwrap();
        crate::eventually(WAIT, "the session to end", || {
            b.broker.stats().sessions == 0
        })
        .await;
    }
    let m = within(WAIT, "the abrupt client's will", wills.recv())
        .await
        .unwrap();
    assert_eq!(m.topic, "wills/abrupt", "a will after DISCONNECT: {m:?}");
}
