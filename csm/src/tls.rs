//! HTTPS for the CSM (`csm.tls`): a rustls acceptor in front of the same axum router the
//! plain listener serves, HTTP/1.1 on each connection, with the client's address in
//! `ConnectInfo<SocketAddr>` as `into_make_service_with_connect_info` gives it (the
//! registration rate limit reads it). Stops accepting when `shutdown` is cancelled and lets
//! open connections finish their request.
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
/// A client that has not sent a request's headers by then is dropped (slow clients).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (e.g. out of file descriptors) before the next one.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Serves `app` over TLS with `config` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    app: Router,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(config);
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "csm https: accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        connections.spawn(connection(
            acceptor.clone(),
            tcp,
            peer,
            app.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE * 2, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("csm https: some connections did not close in time");
    }
}

/// One client: the handshake, then HTTP/1.1 until it closes or shutdown.
async fn connection(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    shutdown: CancellationToken,
) {
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
    let app = app.map_request(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(peer = %peer, error = %e, "csm https: connection ended");
            }
        }
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}
