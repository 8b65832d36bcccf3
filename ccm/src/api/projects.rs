//! `/api/projects`: projects, their device objects (and bindings), network applications,
//! links, on/off, export and import.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use iot_proto::wire::graph_api::InputType;
use iot_proto::DaId;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{empty, JsonBody, Path};
use crate::apply::ProjectStatus;
use crate::error::{CcmError, ErrorBody};
use crate::model::{DeviceObject, FuncRef, Link, LinkParam, NetApp, Project, ProjectExport};
use crate::state::NewLink;
use crate::Ccm;

pub fn routes() -> Router<Ccm> {
    Router::new()
        .route("/projects", get(list).post(create))
        .route("/projects/import", post(import))
        .route("/projects/{id}", get(show).patch(update).delete(remove))
        .route("/projects/{id}/on", post(turn_on))
        .route("/projects/{id}/off", post(turn_off))
        .route("/projects/{id}/export", get(export))
        .route("/projects/{id}/objects", post(add_object))
        .route("/projects/{id}/objects/{oid}", delete(delete_object))
        .route("/projects/{id}/objects/{oid}/bind", post(bind))
        .route("/projects/{id}/objects/{oid}/unbind", post(unbind))
        .route("/projects/{id}/netapps", post(add_netapp))
        .route(
            "/projects/{id}/netapps/{nid}",
            axum::routing::patch(update_netapp).delete(delete_netapp),
        )
        .route("/projects/{id}/netapps/{nid}/links", post(add_link))
        .route(
            "/projects/{id}/netapps/{nid}/links/{lid}",
            put(update_link).delete(delete_link),
        )
}

/// A number from the path; anything else is a 400 that says which.
fn id(what: &str, raw: &str) -> Result<u32, CcmError> {
    raw.parse().map_err(|_| {
        CcmError::invalid(format!(
            "{what} `{}` is not a number",
            crate::model::shorten(raw)
        ))
    })
}

fn created<T: Serialize>(v: T) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

/// One line of the project list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectSummary {
    pub id: u32,
    pub name: String,
    pub on: bool,
    /// How many device objects and network applications it has.
    pub objects: usize,
    pub netapps: usize,
}

#[utoipa::path(get, path = "/api/projects", tag = "projects",
    responses((status = 200, body = Vec<ProjectSummary>)))]
pub async fn list(State(ccm): State<Ccm>) -> Json<Vec<ProjectSummary>> {
    Json(ccm.read(|s| {
        s.projects
            .values()
            .map(|p| ProjectSummary {
                id: p.id,
                name: p.name.clone(),
                on: p.on,
                objects: p.objects.len(),
                netapps: p.netapps.len(),
            })
            .collect()
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    #[schema(value_type = crate::model::Name)]
    pub name: String,
    /// Default `true`.
    #[serde(default)]
    pub auto_bind: Option<bool>,
}

#[utoipa::path(post, path = "/api/projects", tag = "projects", request_body = NewProject,
    responses((status = 201, body = Project), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn create(
    State(ccm): State<Ccm>,
    JsonBody(b): JsonBody<NewProject>,
) -> Result<Response, CcmError> {
    let p = ccm
        .mutate(move |s| s.create_project(&b.name, b.auto_bind.unwrap_or(true)))
        .await?;
    Ok(created(p))
}

/// A project and how it stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectView {
    pub project: Project,
    pub status: ProjectStatus,
}

#[utoipa::path(get, path = "/api/projects/{id}", tag = "projects",
    responses((status = 200, body = ProjectView), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(ccm): State<Ccm>,
    Path(raw): Path<String>,
) -> Result<Json<ProjectView>, CcmError> {
    let pid = id("project id", &raw)?;
    let project = ccm.read(|s| s.project(pid).cloned())?;
    Ok(Json(ProjectView {
        project,
        status: ccm.live().status(pid),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectChange {
    #[schema(value_type = crate::model::Name)]
    pub name: Option<String>,
    pub auto_bind: Option<bool>,
    pub on: Option<bool>,
}

#[utoipa::path(patch, path = "/api/projects/{id}", tag = "projects", request_body = ProjectChange,
    responses((status = 200, body = Project), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update(
    State(ccm): State<Ccm>,
    Path(raw): Path<String>,
    JsonBody(b): JsonBody<ProjectChange>,
) -> Result<Json<Project>, CcmError> {
    let pid = id("project id", &raw)?;
    let p = ccm
        .mutate(move |s| {
            s.update_project(pid, b.name.as_deref(), b.auto_bind, b.on)?;
            s.project(pid).cloned()
        })
        .await?;
    Ok(Json(p))
}

#[utoipa::path(delete, path = "/api/projects/{id}", tag = "projects",
    responses((status = 200), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(ccm): State<Ccm>,
    Path(raw): Path<String>,
) -> Result<Json<serde_json::Value>, CcmError> {
    let pid = id("project id", &raw)?;
    ccm.mutate(move |s| s.delete_project(pid)).await?;
    Ok(empty())
}

async fn switch(ccm: Ccm, raw: String, on: bool) -> Result<Json<Project>, CcmError> {
    let pid = id("project id", &raw)?;
    let p = ccm
        .mutate(move |s| {
            s.update_project(pid, None, None, Some(on))?;
            s.project(pid).cloned()
        })
        .await?;
    tracing::info!(ccm.project = pid, on, "project switched");
    Ok(Json(p))
}

#[utoipa::path(post, path = "/api/projects/{id}/on", tag = "projects",
    responses((status = 200, body = Project), (status = 404, body = ErrorBody)))]
pub async fn turn_on(
    State(ccm): State<Ccm>,
    Path(raw): Path<String>,
) -> Result<Json<Project>, CcmError> {
    switch(ccm, raw, true).await
}

#[utoipa::path(post, path = "/api/projects/{id}/off", tag = "projects",
    responses((status = 200, body = Project), (status = 404, body = ErrorBody)))]
pub async fn turn_off(
    State(ccm): State<Ccm>,
    Path(raw): Path<String>,
) -> Result<Json<Project>, CcmError> {
    switch(ccm, raw, false).await
}

#[utoipa::path(get, path = "/api/projects/{id}/export", tag = "projects",
    responses((status = 200, body = ProjectExport), (status = 404, body = ErrorBody)))]
pub async fn export(State(ccm): State<Ccm>, Path(raw): Path<String>) -> Result<Response, CcmError> {
    let pid = id("project id", &raw)?;
    let doc = ccm.read(|s| s.export(pid))?;
    let file = format!(
        "attachment; filename=\"project-{}.json\"",
        doc.project
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
    );
    Ok(([(axum::http::header::CONTENT_DISPOSITION, file)], Json(doc)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ImportQuery {
    /// Import under this name instead of the document's.
    #[param(value_type = Option<crate::model::Name>)]
    pub name: Option<String>,
}

#[utoipa::path(post, path = "/api/projects/import", tag = "projects", request_body = ProjectExport,
    params(ImportQuery),
    responses((status = 201, body = Project), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn import(
    State(ccm): State<Ccm>,
    Query(q): Query<ImportQuery>,
    JsonBody(doc): JsonBody<ProjectExport>,
) -> Result<Response, CcmError> {
    let now = crate::now();
    let p = ccm
        .mutate(move |s| s.import(doc, q.name.as_deref(), now))
        .await?;
    tracing::info!(ccm.project = p.id, name = ?p.name, "project imported");
    Ok(created(p))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewObject {
    #[schema(value_type = crate::model::Name)]
    pub model: String,
}

#[utoipa::path(post, path = "/api/projects/{id}/objects", tag = "projects", request_body = NewObject,
    responses((status = 201, body = DeviceObject), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn add_object(
    State(ccm): State<Ccm>,
    Path(raw): Path<String>,
    JsonBody(b): JsonBody<NewObject>,
) -> Result<Response, CcmError> {
    let pid = id("project id", &raw)?;
    let o = ccm.mutate(move |s| s.add_object(pid, &b.model)).await?;
    Ok(created(o))
}

#[utoipa::path(delete, path = "/api/projects/{id}/objects/{oid}", tag = "projects",
    responses((status = 200), (status = 404, body = ErrorBody)))]
pub async fn delete_object(
    State(ccm): State<Ccm>,
    Path((raw, rawo)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, CcmError> {
    let (pid, oid) = (id("project id", &raw)?, id("device object id", &rawo)?);
    ccm.mutate(move |s| s.delete_object(pid, oid)).await?;
    Ok(empty())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    #[schema(value_type = String, format = "uuid")]
    pub da_id: DaId,
}

async fn set_binding(
    ccm: Ccm,
    raw: String,
    rawo: String,
    da: Option<DaId>,
) -> Result<Json<DeviceObject>, CcmError> {
    let (pid, oid) = (id("project id", &raw)?, id("device object id", &rawo)?);
    let o = ccm
        .mutate(move |s| {
            s.bind(pid, oid, da)?;
            s.project(pid)?
                .objects
                .iter()
                .find(|o| o.id == oid)
                .cloned()
                .ok_or_else(|| CcmError::not_found(format!("no device object {oid}")))
        })
        .await?;
    Ok(Json(o))
}

#[utoipa::path(post, path = "/api/projects/{id}/objects/{oid}/bind", tag = "projects",
    request_body = Bind,
    responses((status = 200, body = DeviceObject), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn bind(
    State(ccm): State<Ccm>,
    Path((raw, rawo)): Path<(String, String)>,
    JsonBody(b): JsonBody<Bind>,
) -> Result<Json<DeviceObject>, CcmError> {
    set_binding(ccm, raw, rawo, Some(b.da_id)).await
}

#[utoipa::path(post, path = "/api/projects/{id}/objects/{oid}/unbind", tag = "projects",
    responses((status = 200, body = DeviceObject), (status = 404, body = ErrorBody)))]
pub async fn unbind(
    State(ccm): State<Ccm>,
    Path((raw, rawo)): Path<(String, String)>,
) -> Result<Json<DeviceObject>, CcmError> {
    set_binding(ccm, raw, rawo, None).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNetApp {
    #[schema(value_type = crate::model::Name)]
    pub name: String,
    #[serde(default)]
    pub links: Vec<NewLink>,
}

#[utoipa::path(post, path = "/api/projects/{id}/netapps", tag = "projects", request_body = NewNetApp,
    responses((status = 201, body = NetApp), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add_netapp(
    State(ccm): State<Ccm>,
    Path(raw): Path<String>,
    JsonBody(b): JsonBody<NewNetApp>,
) -> Result<Response, CcmError> {
    let pid = id("project id", &raw)?;
    let n = ccm
        .mutate(move |s| s.add_netapp(pid, &b.name, b.links))
        .await?;
    Ok(created(n))
}

/// `Some(None)` for an explicit `null`, `None` when the field is absent.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetAppChange {
    #[schema(value_type = crate::model::Name)]
    pub name: Option<String>,
    /// The join function; `null` removes it; absent leaves it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<FuncRef>)]
    pub join: Option<Option<FuncRef>>,
}

#[utoipa::path(patch, path = "/api/projects/{id}/netapps/{nid}", tag = "projects",
    request_body = NetAppChange,
    responses((status = 200, body = NetApp), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn update_netapp(
    State(ccm): State<Ccm>,
    Path((raw, rawn)): Path<(String, String)>,
    JsonBody(b): JsonBody<NetAppChange>,
) -> Result<Json<NetApp>, CcmError> {
    let (pid, nid) = (
        id("project id", &raw)?,
        id("network application id", &rawn)?,
    );
    let n = ccm
        .mutate(move |s| s.update_netapp(pid, nid, b.name.as_deref(), b.join))
        .await?;
    Ok(Json(n))
}

#[utoipa::path(delete, path = "/api/projects/{id}/netapps/{nid}", tag = "projects",
    responses((status = 200), (status = 404, body = ErrorBody)))]
pub async fn delete_netapp(
    State(ccm): State<Ccm>,
    Path((raw, rawn)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, CcmError> {
    let (pid, nid) = (
        id("project id", &raw)?,
        id("network application id", &rawn)?,
    );
    ccm.mutate(move |s| s.delete_netapp(pid, nid)).await?;
    Ok(empty())
}

#[utoipa::path(post, path = "/api/projects/{id}/netapps/{nid}/links", tag = "projects",
    request_body = NewLink,
    responses((status = 201, body = Link), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add_link(
    State(ccm): State<Ccm>,
    Path((raw, rawn)): Path<(String, String)>,
    JsonBody(b): JsonBody<NewLink>,
) -> Result<Response, CcmError> {
    let (pid, nid) = (
        id("project id", &raw)?,
        id("network application id", &rawn)?,
    );
    let l = ccm.mutate(move |s| s.add_link(pid, nid, b)).await?;
    Ok(created(l))
}

/// A link's settings (its ends cannot change: delete it and add another).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkChange {
    #[serde(default)]
    pub func: Option<FuncRef>,
    #[serde(default)]
    #[schema(value_type = Vec<crate::model::InputTypeName>)]
    pub input_type: Vec<InputType>,
    #[serde(default)]
    pub params: Vec<LinkParam>,
}

#[utoipa::path(put, path = "/api/projects/{id}/netapps/{nid}/links/{lid}", tag = "projects",
    request_body = LinkChange,
    responses((status = 200, body = Link), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn update_link(
    State(ccm): State<Ccm>,
    Path((raw, rawn, rawl)): Path<(String, String, String)>,
    JsonBody(b): JsonBody<LinkChange>,
) -> Result<Json<Link>, CcmError> {
    let (pid, nid, lid) = (
        id("project id", &raw)?,
        id("network application id", &rawn)?,
        id("link id", &rawl)?,
    );
    let l = ccm
        .mutate(move |s| s.update_link(pid, nid, lid, b.func, b.input_type, b.params))
        .await?;
    Ok(Json(l))
}

#[utoipa::path(delete, path = "/api/projects/{id}/netapps/{nid}/links/{lid}", tag = "projects",
    responses((status = 200), (status = 404, body = ErrorBody)))]
pub async fn delete_link(
    State(ccm): State<Ccm>,
    Path((raw, rawn, rawl)): Path<(String, String, String)>,
) -> Result<Json<serde_json::Value>, CcmError> {
    let (pid, nid, lid) = (
        id("project id", &raw)?,
        id("network application id", &rawn)?,
        id("link id", &rawl)?,
    );
    ccm.mutate(move |s| s.delete_link(pid, nid, lid)).await?;
    Ok(empty())
}
