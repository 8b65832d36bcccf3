//! `/api/devices` (the registered DAs, as the CSM's device API tells them), and the event
//! streams the GUI listens to (Server-Sent Events): device changes, and a join's monitor.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use futures::stream::{self, Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;

use super::Path;
use crate::apply::{DeviceInfo, MonitorRow};
use crate::error::{CcmError, ErrorBody};
use crate::Ccm;

pub fn routes() -> Router<Ccm> {
    Router::new()
        .route("/devices", get(devices))
        .route("/devices/events", get(device_events))
        .route("/projects/{id}/monitor/{nid}", get(monitor))
}

#[utoipa::path(get, path = "/api/devices", tag = "devices",
    responses((status = 200, body = Vec<DeviceInfo>)))]
pub async fn devices(State(ccm): State<Ccm>) -> Json<Vec<DeviceInfo>> {
    Json(ccm.live().devices())
}

fn event(name: &str, data: &impl serde::Serialize) -> Option<Result<Event, Infallible>> {
    Event::default().event(name).json_data(data).ok().map(Ok)
}

#[utoipa::path(get, path = "/api/devices/events", tag = "devices",
    responses((status = 200, content_type = "text/event-stream",
        description = "`event: device`, data `{\"kind\", \"device\"}`; `event: lagged` when events were missed (reload the list)")))]
pub async fn device_events(
    State(ccm): State<Ccm>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = ccm.live().subscribe_devices();
    let s = BroadcastStream::new(rx).filter_map(|e| async move {
        match e {
            Ok(e) => event("device", &e),
            Err(_) => event("lagged", &serde_json::json!({})),
        }
    });
    Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[utoipa::path(get, path = "/api/projects/{id}/monitor/{nid}", tag = "projects",
    responses((status = 200, content_type = "text/event-stream",
        description = "`event: row`, data a MonitorRow; the recent rows first"),
        (status = 404, body = ErrorBody)))]
pub async fn monitor(
    State(ccm): State<Ccm>,
    Path((raw, rawn)): Path<(String, String)>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, CcmError> {
    let bad = |what: &str, v: &str| {
        CcmError::invalid(format!(
            "{what} `{}` is not a number",
            crate::model::shorten(v)
        ))
    };
    let pid: u32 = raw.parse().map_err(|_| bad("project id", &raw))?;
    let nid: u32 = rawn
        .parse()
        .map_err(|_| bad("network application id", &rawn))?;
    ccm.read(|s| {
        s.project(pid)?
            .netapps
            .iter()
            .any(|n| n.id == nid)
            .then_some(())
            .ok_or_else(|| CcmError::not_found(format!("no network application {nid}")))
    })?;
    let (backlog, rx) = ccm.live().monitor(pid, nid);
    let first = stream::iter(backlog).filter_map(|r: MonitorRow| async move { event("row", &r) });
    let next = BroadcastStream::new(rx).filter_map(move |e| async move {
        match e {
            Ok(e) if e.project == pid && e.netapp == nid => event("row", &e.row),
            Ok(_) => None,
            Err(_) => event("lagged", &serde_json::json!({})),
        }
    });
    Ok(Sse::new(first.chain(next)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
