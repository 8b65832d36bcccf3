//! MQTT over WebSocket (`broker.ws_listen`, and over TLS `broker.wss_listen`), served by our
//! own listeners: each WebSocket
//! connection is bridged, as a byte stream, to a TCP connection to a listener of rmqtt bound
//! on 127.0.0.1 for this alone.
//!
//! Why not rmqtt's WebSocket listener: its adapter (rmqtt-net 0.5 `WsStream`) turns every
//! WebSocket message into bytes of the MQTT stream, control frames included, and reads an
//! empty message as the end of the stream. An empty binary frame (MQTT.js sends one for an
//! empty password or payload) ended the connection, and a ping's payload was read as MQTT
//! bytes (docs/broker-upstream.md, report 6). rmqtt's session layer takes streams only from
//! its own listeners, so the bridge hands it bytes over a loopback socket: binary messages
//! (empty ones ignored, fragments joined by tungstenite) are written to it in order, what
//! rmqtt writes is sent back as binary messages, pings are answered, anything else (text,
//! a close) ends the connection as MQTT 6.0 says.
//!
//! rmqtt sees WebSocket clients as coming from 127.0.0.1 (the bridge logs the real address
//! with its local port at debug level). The loopback listener takes the same settings and
//! the same authentication as the others, so it offers nothing the TCP listener does not.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use rmqtt::net::{Builder, Listener};
use rmqtt::server::MqttServerBuilder;

use super::config::Checked;
use super::{local_addr, setup};
use crate::{BrokerError, EmbeddedConfig};

/// Bytes read from rmqtt's side at a time (the buffer grows only while a read is pending).
const READ_CHUNK: usize = crate::websocket::READ_CHUNK;
/// How long a message to the client may take to go out (rmqtt's own send timeout): a client
/// that stops reading is disconnected, as over TCP.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// After the client's close, how long rmqtt has to read what came before it and close.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Connections in their TLS handshake or WebSocket upgrade at once (rmqtt's
/// `max_handshaking_limit` default); more wait in the kernel's accept queue.
const MAX_HANDSHAKING: usize = 1000;

/// What the bridge needs to know.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bridge {
    /// rmqtt's loopback listener.
    pub inner: SocketAddr,
    /// The largest MQTT packet the broker takes: also the largest WebSocket message.
    pub max_packet_bytes: usize,
    /// Time for the WebSocket upgrade.
    pub handshake_timeout: Duration,
}

/// The WebSocket listeners of `broker.ws_listen` and `broker.wss_listen`, bound, and rmqtt's
/// loopback listener they bridge to, before the server takes it.
pub(super) struct Fronts {
    /// rmqtt's loopback listener, until the server takes it.
    loopback: Option<Listener>,
    /// What the bridge needs (none without WebSocket).
    bridge: Option<Bridge>,
    /// Each public listener, with its TLS acceptor for `wss_listen`.
    public: Vec<(TcpListener, Option<TlsAcceptor>)>,
    /// The address `ws_listen` is bound to.
    pub ws_addr: Option<SocketAddr>,
}

impl Fronts {
    /// Binds `ws_listen` (from `checked`), takes `wss` (the bound `wss_listen` and its TLS
    /// acceptor, from `tls.rs`), and binds the loopback listener with the settings of
    /// `builder` when either is on.
    pub(super) fn bind(
        builder: Builder,
        cfg: &EmbeddedConfig,
        checked: &Checked,
        wss: Option<(TcpListener, TlsAcceptor)>,
    ) -> Result<Fronts, BrokerError> {
        let mut public = Vec::new();
        let mut ws_addr = None;
        if let Some(addr) = checked.ws_listen {
            let what = "MQTT over WebSocket";
            let (l, bound) = crate::net::bind_tcp(addr, what, "broker.ws_listen")?;
            public.push((l, None));
            ws_addr = Some(bound);
        }
        if let Some((l, acceptor)) = wss {
            public.push((l, Some(acceptor)));
        }
        let mut fronts = Fronts {
            loopback: None,
            bridge: None,
            public,
            ws_addr,
        };
        if fronts.public.is_empty() {
            return Ok(fronts);
        }
        let key = if ws_addr.is_some() {
            "broker.ws_listen"
        } else {
            "broker.wss_listen"
        };
        let what = "the WebSocket bridge's loopback listener";
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let l = super::bind(builder.name("iotctl/ws").laddr(loopback), what, key)?;
        let inner = local_addr(&l, what, key)?;
        let l = l.tcp().map_err(setup(what))?;
        let bridge = Bridge {
            inner,
            max_packet_bytes: checked.max_packet_bytes as usize,
            handshake_timeout: Duration::from_millis(cfg.handshake_timeout_ms.max(1)),
        };
        fronts.loopback = Some(l);
        fronts.bridge = Some(bridge);
        Ok(fronts)
    }

    /// Hands the loopback listener to the server (identified by its port).
    pub(super) fn add_to(&mut self, server: MqttServerBuilder) -> MqttServerBuilder {
        match (self.loopback.take(), &self.bridge) {
            (Some(l), Some(bridge)) => server.listener_by_id(l, bridge.inner.port()),
            _ => server,
        }
    }

    /// Starts accepting on every public listener (see [`spawn`]).
    pub(super) fn spawn(
        self,
        stop: &CancellationToken,
        close: &CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(bridge) = self.bridge else {
            return Vec::new();
        };
        self.public
            .into_iter()
            .map(|(l, tls)| spawn(l, tls, bridge, stop.clone(), close.clone()))
            .collect()
    }
}

/// Accepts WebSocket clients (over TLS with `tls`) until `stop`; the task ends (and the
/// listener closes) then. Connections end at `close` (after the broker has disconnected its
/// clients, so each still gets rmqtt's last words).
fn spawn(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    bridge: Bridge,
    stop: CancellationToken,
    close: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let bridge = Arc::new(bridge);
    let handshaking = Arc::new(Semaphore::new(MAX_HANDSHAKING));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                () = stop.cancelled() => return,
                p = handshaking.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let (bridge, tls) = (bridge.clone(), tls.clone());
                    let close = close.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            () = close.cancelled() => {}
                            r = accept(stream, peer, tls, &bridge, permit) => {
                                if let Err(e) = r {
                                    tracing::debug!(client.addr = %peer, error = %e, "MQTT over WebSocket connection ended");
                                }
                            }
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "MQTT over WebSocket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// The TLS handshake (with `tls`) and the WebSocket upgrade, both within one
/// `handshake_timeout` and holding a `handshaking` permit, then the bridge.
async fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    bridge: &Bridge,
    handshaking: OwnedSemaphorePermit,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + bridge.handshake_timeout;
    match tls {
        None => serve(stream, peer, bridge, deadline, handshaking).await,
        Some(tls) => {
            let stream = tokio::time::timeout_at(deadline, tls.accept(stream))
                .await
                .map_err(|_| "no TLS handshake in time".to_string())?
                .map_err(|e| format!("TLS handshake: {e}"))?;
            serve(stream, peer, bridge, deadline, handshaking).await
        }
    }
}

async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    bridge: &Bridge,
    deadline: tokio::time::Instant,
    handshaking: OwnedSemaphorePermit,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let upgrade = crate::websocket::upgrade(stream, bridge.max_packet_bytes);
    let ws = tokio::time::timeout_at(deadline, upgrade)
        .await
        .map_err(|_| "no WebSocket upgrade in time".to_string())??;
    drop(handshaking);
    let inner = TcpStream::connect(bridge.inner)
        .await
        .map_err(|e| format!("cannot reach the broker's loopback listener: {e}"))?;
    let _ = inner.set_nodelay(true);
    if let Ok(local) = inner.local_addr() {
        tracing::debug!(client.addr = %peer, bridge.port = local.port(), "MQTT over WebSocket connection");
    }
    let (from_broker, to_broker) = inner.into_split();
    let (ws_tx, ws_rx) = ws.split();
    // Each direction on its own, so that neither waits for the other. When the client is
    // done, rmqtt gets the end of the stream and a moment to read what came before it (a
    // DISCONNECT: no will) and to close; when rmqtt closes, the client gets a close.
    let up = upstream(ws_rx, to_broker);
    let down = downstream(from_broker, ws_tx);
    tokio::pin!(up, down);
    tokio::select! {
        r = &mut up => {
            if r.is_ok() {
                let _ = tokio::time::timeout(CLOSE_WAIT, &mut down).await;
            }
            r
        }
        r = &mut down => r,
    }
}

/// Client to broker: binary messages in order, empty ones skipped. tungstenite answers pings
/// (and a close) on its next read.
async fn upstream<S>(
    mut ws_rx: futures::stream::SplitStream<WebSocketStream<S>>,
    mut to_broker: tokio::net::tcp::OwnedWriteHalf,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match ws_rx.next().await {
            Some(Ok(Message::Binary(data))) => {
                if !data.is_empty() {
                    to_broker
                        .write_all(&data)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            // MQTT 6.0: anything but binary data closes the network connection.
            Some(Ok(Message::Text(_))) => {
                return Err("a text frame (MQTT needs binary frames)".into());
            }
            Some(Ok(Message::Close(_))) | None => {
                // The client is done: rmqtt sees the end of the stream (a will unless the
                // client sent DISCONNECT first). The read side stays open (`serve`).
                let _ = to_broker.shutdown().await;
                return Ok(());
            }
            Some(Err(e)) => return Err(e.to_string()),
        }
    }
}

/// Broker to client: what rmqtt writes, as binary messages; a close when rmqtt closes
/// (DISCONNECT, take-over, keep-alive).
async fn downstream<S>(
    mut from_broker: tokio::net::tcp::OwnedReadHalf,
    mut ws_tx: futures::stream::SplitSink<WebSocketStream<S>, Message>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::new();
    loop {
        if buf.capacity() < READ_CHUNK {
            buf.reserve(READ_CHUNK);
        }
        match from_broker.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = tokio::time::timeout(SEND_TIMEOUT, ws_tx.close()).await;
                return Ok(());
            }
            Ok(_) => {
                let data = buf.split().freeze();
                tokio::time::timeout(SEND_TIMEOUT, ws_tx.send(Message::Binary(data)))
                    .await
                    .map_err(|_| "the client reads nothing: disconnected".to_string())?
                    .map_err(|e| e.to_string())?;
            }
        }
    }
}
