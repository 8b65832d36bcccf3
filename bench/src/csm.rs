//! The CSM's HTTP API as a bench needs it around a run: `GET /healthz` to check that the
//! [`Target`](crate::Target) is a CSM, `GET /status` for its counts. Registration is in
//! `da`. Not here: where the controller is (the caller resolves that).

use std::time::Duration;

use crate::error::BenchError;

/// Checks that the CSM answers `GET /healthz`.
pub async fn check(http: &reqwest::Client, csm: &str) -> Result<(), BenchError> {
    let url = format!("{csm}/healthz");
    let r = http
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|source| BenchError::Unreachable {
            csm: csm.to_owned(),
            url: url.clone(),
            source,
        })?;
    if !r.status().is_success() {
        return Err(BenchError::NotCsm {
            csm: csm.to_owned(),
            status: r.status(),
        });
    }
    Ok(())
}

/// The CSM's `GET /status`.
pub async fn status(http: &reqwest::Client, csm: &str) -> Result<serde_json::Value, BenchError> {
    let url = format!("{csm}/status");
    let r = http
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|source| BenchError::Request {
            method: "GET",
            url: url.clone(),
            source,
        })?;
    let status = r.status();
    if !status.is_success() {
        return Err(BenchError::Refused {
            method: "GET",
            url,
            status,
            reason: status.canonical_reason().unwrap_or("no reason").to_owned(),
        });
    }
    r.json().await.map_err(|e| BenchError::Reply {
        method: "GET",
        url,
        reason: format!("not JSON: {e}"),
    })
}
