//! The native core's listeners: MQTT over TCP (`broker.listen`), over WebSocket
//! (`ws_listen`), over TLS (`tls_listen`) and over WebSocket over TLS (`wss_listen`), each
//! with an accept loop that hands every connection, once its TLS handshake and WebSocket
//! upgrade are done, to `conn.rs` as one [`Io`].
//!
//! TLS handshakes and WebSocket upgrades run in the connection's own task, at most
//! `MAX_HANDSHAKING` at once (more wait in the kernel's accept queue), each within
//! `handshake_timeout_ms`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::conn;
use super::core::Core;
use super::io::{Io, WsBytes};
use crate::embedded::config::Checked;
use crate::{BrokerError, EmbeddedConfig};

/// Connections in their TLS handshake or WebSocket upgrade at once.
const MAX_HANDSHAKING: usize = 1000;

/// How a listener's connections reach MQTT.
#[derive(Clone)]
enum Kind {
    Tcp,
    Ws,
    Tls(TlsAcceptor),
    Wss(TlsAcceptor),
}

/// The bound listeners.
pub(super) struct Listeners {
    bound: Vec<(TcpListener, Kind)>,
    pub addrs: Addrs,
}

/// The addresses the listeners are bound to (`None`: off).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Addrs {
    pub mqtt: SocketAddr,
    pub ws: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
    pub wss: Option<SocketAddr>,
}

/// Connections being served, for shutdown to wait on.
#[derive(Default)]
pub(super) struct Live {
    count: AtomicUsize,
    gone: Notify,
}

impl Live {
    /// Waits until no connection is left.
    pub(super) async fn drained(&self) {
        loop {
            let notified = self.gone.notified();
            if self.count.load(Ordering::Relaxed) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Listeners {
    /// Binds every listener `checked` names; a TLS one needs `cfg.tls`, whose files are
    /// checked first (so a bad file is reported by name before anything is bound).
    pub(super) fn bind(cfg: &EmbeddedConfig, checked: &Checked) -> Result<Listeners, BrokerError> {
        let (tls, wss) = acceptors(cfg, checked)?;
        let mut bound = Vec::new();
        let mqtt = bind(
            checked.listen,
            "MQTT over TCP",
            "broker.listen",
            &mut bound,
            Kind::Tcp,
        )?;
        let mut addrs = Addrs {
            mqtt,
            ws: None,
            tls: None,
            wss: None,
        };
        if let Some(a) = checked.ws_listen {
            let what = "MQTT over WebSocket";
            addrs.ws = Some(bind(a, what, "broker.ws_listen", &mut bound, Kind::Ws)?);
        }
        if let (Some(a), Some(acceptor)) = (checked.tls_listen, tls) {
            let kind = Kind::Tls(acceptor);
            addrs.tls = Some(bind(
                a,
                "MQTT over TLS",
                "broker.tls_listen",
                &mut bound,
                kind,
            )?);
        }
        if let (Some(a), Some(acceptor)) = (checked.wss_listen, wss) {
            let what = "MQTT over WebSocket over TLS";
            let kind = Kind::Wss(acceptor);
            addrs.wss = Some(bind(a, what, "broker.wss_listen", &mut bound, kind)?);
        }
        Ok(Listeners { bound, addrs })
    }

    /// Starts each accept loop; they end (and close their listener) at `shutdown`.
    pub(super) fn spawn(
        self,
        core: &Arc<Core>,
        live: &Arc<Live>,
        shutdown: &CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let handshaking = Arc::new(Semaphore::new(MAX_HANDSHAKING));
        self.bound
            .into_iter()
            .map(|(listener, kind)| {
                let accept = Accept {
                    core: core.clone(),
                    live: live.clone(),
                    shutdown: shutdown.clone(),
                    handshaking: handshaking.clone(),
                    kind,
                };
                tokio::spawn(accept.run(listener))
            })
            .collect()
    }
}

/// The TLS acceptors of `tls_listen` (no ALPN) and `wss_listen` (`http/1.1`).
fn acceptors(
    cfg: &EmbeddedConfig,
    checked: &Checked,
) -> Result<(Option<TlsAcceptor>, Option<TlsAcceptor>), BrokerError> {
    let Some(files) = checked.tls_files(cfg)? else {
        return Ok((None, None));
    };
    let tls = match checked.tls_listen {
        Some(_) => Some(TlsAcceptor::from(files.server_config(Vec::new())?)),
        None => None,
    };
    let wss = match checked.wss_listen {
        Some(_) => Some(TlsAcceptor::from(
            files.server_config(vec![b"http/1.1".to_vec()])?,
        )),
        None => None,
    };
    Ok((tls, wss))
}

/// Binds `addr` and adds it to `bound` as a listener of `kind`.
fn bind(
    addr: SocketAddr,
    what: &'static str,
    key: &'static str,
    bound: &mut Vec<(TcpListener, Kind)>,
    kind: Kind,
) -> Result<SocketAddr, BrokerError> {
    let (listener, local) = crate::net::bind_tcp(addr, what, key)?;
    bound.push((listener, kind));
    Ok(local)
}

/// One listener's accept loop.
struct Accept {
    core: Arc<Core>,
    live: Arc<Live>,
    shutdown: CancellationToken,
    handshaking: Arc<Semaphore>,
    kind: Kind,
}

impl Accept {
    async fn run(self, listener: TcpListener) {
        loop {
            // Plain TCP needs no permit: its CONNECT is read within the handshake timeout.
            let permit = match self.kind {
                Kind::Tcp => None,
                _ => tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    p = self.handshaking.clone().acquire_owned() => p.ok(),
                },
            };
            let accepted = tokio::select! {
                () = self.shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    self.live.count.fetch_add(1, Ordering::Relaxed);
                    let (core, live) = (self.core.clone(), self.live.clone());
                    let (kind, shutdown) = (self.kind.clone(), self.shutdown.clone());
                    tokio::spawn(connection(
                        core,
                        live,
                        kind,
                        shutdown,
                        (stream, peer),
                        permit,
                    ));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "MQTT accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// One connection's task, from the accept to its end. Its size is what every connection
/// costs for its life (a test bounds it).
async fn connection(
    core: Arc<Core>,
    live: Arc<Live>,
    kind: Kind,
    shutdown: CancellationToken,
    (stream, peer): (TcpStream, SocketAddr),
    permit: Option<OwnedSemaphorePermit>,
) {
    let deadline = Instant::now() + core.limits.handshake;
    let max = core.limits.max_packet as usize;
    // Boxed: the TLS handshake and WebSocket upgrade would otherwise size every connection's
    // task, plain TCP ones included, for its life (7 kB more per idle DA).
    let opened = tokio::select! {
        o = Box::pin(open(stream, kind, deadline, max, permit)) => o,
        () = shutdown.cancelled() => Err("shutting down".into()),
    };
    match opened {
        Ok(io) => conn::serve(core, io, peer, shutdown, deadline).await,
        Err(e) => {
            tracing::debug!(client.addr = %peer, error = %e, "MQTT connection not opened");
        }
    }
    if live.count.fetch_sub(1, Ordering::Relaxed) == 1 {
        live.gone.notify_waiters();
    }
}

/// The TLS handshake and the WebSocket upgrade `kind` needs, by `deadline`.
async fn open(
    stream: TcpStream,
    kind: Kind,
    deadline: Instant,
    max_packet: usize,
    permit: Option<OwnedSemaphorePermit>,
) -> Result<Io, String> {
    let late = |what: &str| format!("no {what} in time");
    let max = max_packet;
    let opened = tokio::time::timeout_at(deadline, async {
        Ok::<Io, String>(match kind {
            Kind::Tcp => Io::Tcp(stream),
            Kind::Ws => Io::stream(WsBytes::new(crate::websocket::upgrade(stream, max).await?)),
            Kind::Tls(acceptor) => Io::stream(
                acceptor
                    .accept(stream)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?,
            ),
            Kind::Wss(acceptor) => {
                let tls = acceptor
                    .accept(stream)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                Io::stream(WsBytes::new(crate::websocket::upgrade(tls, max).await?))
            }
        })
    })
    .await
    .map_err(|_| late("TLS handshake or WebSocket upgrade"))?;
    drop(permit);
    opened
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalRouter;
    use crate::Security;

    /// A connection's task is what every idle DA costs besides its socket and session: it
    /// stays small (an unboxed TLS handshake and WebSocket upgrade once made it 7 kB larger).
    #[tokio::test]
    async fn a_connections_task_stays_small() {
        let cfg = EmbeddedConfig::default();
        let checked = cfg.checked().unwrap();
        let limits = super::super::limits(&cfg, &checked);
        let core = Arc::new(Core::new(
            limits,
            Security::default(),
            LocalRouter::new(Duration::ZERO),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let accepted = listener.accept().await.unwrap();
        let task = connection(
            core,
            Arc::new(Live::default()),
            Kind::Tcp,
            CancellationToken::new(),
            accepted,
            None,
        );
        let size = std::mem::size_of_val(&task);
        assert!(size <= 2048, "a connection's task takes {size} bytes");
    }
}
