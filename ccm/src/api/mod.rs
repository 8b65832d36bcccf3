//! The REST API under `/api/` and the GUI's files at `/`.

use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::Ccm;

pub fn router(ccm: Ccm) -> Router {
    Router::new().with_state(ccm)
}

/// Serves until `shutdown`.
pub async fn serve(ccm: Ccm, listener: tokio::net::TcpListener, shutdown: CancellationToken) {
    let app = router(ccm);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "CCM HTTP server failed");
    }
}
