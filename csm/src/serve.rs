//! The CSM's HTTP server loop: HTTP/1.1 on each accepted connection, over TLS when `csm.tls`
//! (a rustls acceptor in front of the same axum router), with the client's address in
//! `ConnectInfo<SocketAddr>` as `into_make_service_with_connect_info` gives it (the
//! registration rate limit reads it). A client that takes longer than `csm.header_timeout_ms`
//! to send a request's headers (a slowloris) is dropped. Stops accepting when `shutdown` is
//! cancelled and lets open connections finish their request.
//!
//! Not here: the certificate (read and checked by `iot_broker::TlsFiles`, handed over in
//! [`Wiring::tls`](crate::Wiring)); the routes (`http`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// A client that has not finished the TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (e.g. out of file descriptors) before the next one.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` is cancelled; a client
/// that does not send a request's headers within `header_timeout` is dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    header_timeout: Duration,
    app: Router,
    shutdown: CancellationToken,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "csm http: accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let client = Client {
            peer,
            app: app.clone(),
            header_timeout,
            shutdown: shutdown.clone(),
        };
        match acceptor.clone() {
            Some(acceptor) => connections.spawn(tls_connection(acceptor, tcp, client)),
            None => connections.spawn(client.http(tcp)),
        };
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE * 2, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("csm http: some connections did not close in time");
    }
}

/// One accepted client.
struct Client {
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
}

/// One TLS client: the handshake, then HTTP/1.1.
async fn tls_connection(acceptor: TlsAcceptor, tcp: tokio::net::TcpStream, client: Client) {
    let peer = client.peer;
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            // A client without our CA, or plain HTTP to this port: its problem, not ours.
            tracing::debug!(peer = %peer, error = %e, "csm https: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %peer, "csm https: TLS handshake timed out");
            return;
        }
    };
    client.http(stream).await;
}

impl Client {
    /// HTTP/1.1 on `io` until the client closes, times out, or shutdown.
    async fn http<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Client {
            peer,
            app,
            header_timeout,
            shutdown,
        } = self;
        let app = app.map_request(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let conn = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
        tokio::pin!(conn);
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(peer = %peer, error = %e, "csm http: connection ended");
                }
            }
            () = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
            }
        }
    }
}
