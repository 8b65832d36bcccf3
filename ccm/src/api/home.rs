//! `/api/home`: the home catalog (devices and scenes, in the JSON shape of the TOML import
//! format), running a target, and the devices' last states; `/metrics`: the home figures.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use iot_proto::home::{HomeRequest, HomeResult, MAX_DEADLINE_MS};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{JsonBody, Path};
use crate::error::{CcmError, ErrorBody};
use crate::home::catalog::{Catalog, Driver, SceneDoc};
use crate::home::request::{resolve, Plan};
use crate::Ccm;

pub fn routes() -> Router<Ccm> {
    Router::new()
        .route("/home", get(get_catalog).put(put_catalog))
        .route("/home/devices", get(get_devices).put(put_devices))
        .route("/home/scenes", get(get_scenes).put(put_scenes))
        .route("/home/states", get(get_states))
        .route("/home/run/{target}", post(run))
}

/// `?replace=true`: the body becomes the whole catalog instead of being merged into it.
#[derive(Debug, Deserialize)]
pub struct Replace {
    #[serde(default)]
    replace: bool,
}

#[utoipa::path(get, path = "/api/home", tag = "home",
    responses((status = 200, description = "`{devices, scenes}` as in the TOML import format", body = Object)))]
pub async fn get_catalog(State(ccm): State<Ccm>) -> Json<Catalog> {
    Json((*ccm.read(|s| s.home.clone())).clone())
}

#[utoipa::path(put, path = "/api/home", tag = "home",
    params(("replace" = Option<bool>, Query, description = "replace the whole catalog instead of merging by name")),
    request_body(content = Object, description = "`{devices, scenes}`"),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)))]
pub async fn put_catalog(
    State(ccm): State<Ccm>,
    Query(q): Query<Replace>,
    JsonBody(c): JsonBody<Catalog>,
) -> Result<Json<Catalog>, CcmError> {
    let next = ccm.mutate(move |s| s.put_home(c, q.replace)).await?;
    Ok(Json((*next).clone()))
}

#[utoipa::path(get, path = "/api/home/devices", tag = "home",
    responses((status = 200, body = Object)))]
pub async fn get_devices(State(ccm): State<Ccm>) -> Json<BTreeMap<String, Driver>> {
    Json(ccm.read(|s| s.home.devices.clone()))
}

#[utoipa::path(put, path = "/api/home/devices", tag = "home",
    request_body(content = Object, description = "every device by name; the ones left out are removed"),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)))]
pub async fn put_devices(
    State(ccm): State<Ccm>,
    JsonBody(d): JsonBody<BTreeMap<String, Driver>>,
) -> Result<Json<BTreeMap<String, Driver>>, CcmError> {
    let next = ccm.mutate(move |s| s.put_home_devices(d)).await?;
    Ok(Json(next.devices.clone()))
}

#[utoipa::path(get, path = "/api/home/scenes", tag = "home",
    responses((status = 200, body = Object)))]
pub async fn get_scenes(State(ccm): State<Ccm>) -> Json<BTreeMap<String, SceneDoc>> {
    Json(ccm.read(|s| s.home.scenes.clone()))
}

#[utoipa::path(put, path = "/api/home/scenes", tag = "home",
    request_body(content = Object, description = "every scene by name; the ones left out are removed"),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)))]
pub async fn put_scenes(
    State(ccm): State<Ccm>,
    JsonBody(sc): JsonBody<BTreeMap<String, SceneDoc>>,
) -> Result<Json<BTreeMap<String, SceneDoc>>, CcmError> {
    let next = ccm.mutate(move |s| s.put_home_scenes(sc)).await?;
    Ok(Json(next.scenes.clone()))
}

#[utoipa::path(get, path = "/api/home/states", tag = "home",
    responses((status = 200, description = "`{device: {cmd, ts}}`, the last command each device took", body = Object),
        (status = 503, body = ErrorBody)))]
pub async fn get_states(State(ccm): State<Ccm>) -> Result<Json<Map<String, Value>>, CcmError> {
    let home = ccm.home().ok_or_else(not_running)?;
    Ok(Json(home.states().await.map_err(CcmError::Internal)?))
}

#[utoipa::path(post, path = "/api/home/run/{target}", tag = "home",
    params(("target" = String, Path, description = "a device or scene, or a unique part of its name")),
    request_body(content = Object, description = "optional `{cmd, deadline_ms}`"),
    responses((status = 200, description = "the result tree, `ok` or not", body = Object),
        (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn run(
    State(ccm): State<Ccm>,
    Path(target): Path<String>,
    body: Bytes,
) -> Result<Json<HomeResult>, CcmError> {
    let home = ccm.home().ok_or_else(not_running)?;
    let req: HomeRequest = if body.iter().all(u8::is_ascii_whitespace) {
        HomeRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| CcmError::invalid(format!("malformed JSON body: {e}")))?
    };
    if req.reply_to.is_some() {
        return Err(CcmError::invalid(
            "`reply_to` has no meaning here: the result is the answer",
        ));
    }
    let deadline_ms = req.deadline_ms.unwrap_or(home.config().deadline_ms);
    if deadline_ms == 0 || deadline_ms > MAX_DEADLINE_MS {
        return Err(CcmError::invalid(format!(
            "`deadline_ms` must be 1 to {MAX_DEADLINE_MS}"
        )));
    }
    let cmd_text = crate::model::shorten(req.cmd.as_deref().unwrap_or(""));
    let what = ccm.read(|s| resolve(&s.home, &target, &cmd_text));
    let plan = Plan {
        asked: target.clone(),
        id: req.id.unwrap_or_default(),
        reply_topic: iot_proto::home::res(&target),
        correlation: None,
        deadline: std::time::Duration::from_millis(deadline_ms),
        cmd_text,
        what,
    };
    Ok(Json(home.run(&plan, "api").await))
}

fn not_running() -> CcmError {
    CcmError::Unavailable("the home scenes handler is not running".into())
}

/// `GET /metrics`: the home figures as Prometheus text.
pub async fn metrics(State(ccm): State<Ccm>) -> impl IntoResponse {
    let mut out = String::new();
    ccm.home_metrics().render(&mut out);
    ccm.key_metrics().render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
