//! `/api/features`, `/api/models`, `/api/functions`: the library projects draw from.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{empty, JsonBody, Path};
use crate::error::{CcmError, ErrorBody};
use crate::model::{Feature, Function, FunctionVersion, Model};
use crate::Ccm;

pub fn routes() -> Router<Ccm> {
    Router::new()
        .route("/features", get(list_features))
        .route(
            "/features/{name}",
            get(get_feature).put(put_feature).delete(delete_feature),
        )
        .route("/models", get(list_models))
        .route(
            "/models/{name}",
            get(get_model).put(put_model).delete(delete_model),
        )
        .route("/functions", get(list_functions))
        .route(
            "/functions/{name}",
            get(get_function).post(add_version).delete(delete_function),
        )
}

/// The name in the path and the one in the body must agree (a body may leave it out).
fn same_name(path: &str, body: &mut String) -> Result<(), CcmError> {
    if body.is_empty() {
        path.clone_into(body);
    }
    if body != path {
        return Err(CcmError::invalid(format!(
            "the name in the path (`{}`) and in the body (`{}`) differ",
            crate::model::shorten(path),
            crate::model::shorten(body)
        )));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/features", tag = "library",
    responses((status = 200, body = Vec<Feature>)))]
pub async fn list_features(State(ccm): State<Ccm>) -> Json<Vec<Feature>> {
    Json(ccm.read(|s| s.features.values().cloned().collect()))
}

#[utoipa::path(get, path = "/api/features/{name}", tag = "library",
    responses((status = 200, body = Feature), (status = 404, body = ErrorBody)))]
pub async fn get_feature(
    State(ccm): State<Ccm>,
    Path(name): Path<String>,
) -> Result<Json<Feature>, CcmError> {
    ccm.read(|s| s.features.get(&name).cloned())
        .map(Json)
        .ok_or_else(|| CcmError::not_found(format!("no feature `{name}`")))
}

#[utoipa::path(put, path = "/api/features/{name}", tag = "library", request_body = Feature,
    responses((status = 200, body = Feature), (status = 400, body = ErrorBody)))]
pub async fn put_feature(
    State(ccm): State<Ccm>,
    Path(name): Path<String>,
    JsonBody(mut f): JsonBody<Feature>,
) -> Result<Json<Feature>, CcmError> {
    same_name(&name, &mut f.name)?;
    let out = f.clone();
    ccm.mutate(move |s| s.put_feature(f)).await?;
    Ok(Json(out))
}

#[utoipa::path(delete, path = "/api/features/{name}", tag = "library",
    responses((status = 200), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_feature(
    State(ccm): State<Ccm>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, CcmError> {
    ccm.mutate(move |s| s.delete_feature(&name)).await?;
    Ok(empty())
}

#[utoipa::path(get, path = "/api/models", tag = "library",
    responses((status = 200, body = Vec<Model>)))]
pub async fn list_models(State(ccm): State<Ccm>) -> Json<Vec<Model>> {
    Json(ccm.read(|s| s.models.values().cloned().collect()))
}

#[utoipa::path(get, path = "/api/models/{name}", tag = "library",
    responses((status = 200, body = Model), (status = 404, body = ErrorBody)))]
pub async fn get_model(
    State(ccm): State<Ccm>,
    Path(name): Path<String>,
) -> Result<Json<Model>, CcmError> {
    ccm.read(|s| s.models.get(&name).cloned())
        .map(Json)
        .ok_or_else(|| CcmError::not_found(format!("no model `{name}`")))
}

#[utoipa::path(put, path = "/api/models/{name}", tag = "library", request_body = Model,
    responses((status = 200, body = Model), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn put_model(
    State(ccm): State<Ccm>,
    Path(name): Path<String>,
    JsonBody(mut m): JsonBody<Model>,
) -> Result<Json<Model>, CcmError> {
    same_name(&name, &mut m.name)?;
    let out = m.clone();
    ccm.mutate(move |s| s.put_model(m)).await?;
    Ok(Json(out))
}

#[utoipa::path(delete, path = "/api/models/{name}", tag = "library",
    responses((status = 200), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_model(
    State(ccm): State<Ccm>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, CcmError> {
    ccm.mutate(move |s| s.delete_model(&name)).await?;
    Ok(empty())
}

#[utoipa::path(get, path = "/api/functions", tag = "library",
    responses((status = 200, body = Vec<Function>)))]
pub async fn list_functions(State(ccm): State<Ccm>) -> Json<Vec<Function>> {
    Json(ccm.read(|s| s.functions.values().cloned().collect()))
}

#[utoipa::path(get, path = "/api/functions/{name}", tag = "library",
    responses((status = 200, body = Function), (status = 404, body = ErrorBody)))]
pub async fn get_function(
    State(ccm): State<Ccm>,
    Path(name): Path<String>,
) -> Result<Json<Function>, CcmError> {
    ccm.read(|s| s.functions.get(&name).cloned())
        .map(Json)
        .ok_or_else(|| CcmError::not_found(format!("no function `{name}`")))
}

/// A new version of a function.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVersion {
    /// Rhai (a line `fn run(...)`) or Python (`def run(...):`), at most 256 KiB, no NUL.
    #[schema(pattern = "^([^\\x00]*\\n)?[^\\S\\n]*(fn|def) [^\\S\\n]*run[^\\S\\n]*\\([^\\x00]*$")]
    pub code: String,
    #[serde(default)]
    #[schema(max_length = 1024, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub author: String,
}

#[utoipa::path(post, path = "/api/functions/{name}", tag = "library", request_body = NewVersion,
    responses((status = 201, body = FunctionVersion, description = "a new version"),
        (status = 200, body = FunctionVersion, description = "the code is the latest version's"),
        (status = 400, body = ErrorBody)))]
pub async fn add_version(
    State(ccm): State<Ccm>,
    Path(name): Path<String>,
    JsonBody(v): JsonBody<NewVersion>,
) -> Result<Response, CcmError> {
    let now = crate::now();
    let (version, created) = ccm
        .mutate(move |s| {
            let before = s.functions.get(&name).map_or(0, |f| f.versions.len());
            let v = s.add_function_version(&name, &v.code, &v.author, now)?;
            let after = s.functions.get(&name).map_or(0, |f| f.versions.len());
            Ok((v, after > before))
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(version)).into_response())
}

#[utoipa::path(delete, path = "/api/functions/{name}", tag = "library",
    responses((status = 200), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_function(
    State(ccm): State<Ccm>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, CcmError> {
    ccm.mutate(move |s| s.delete_function(&name)).await?;
    Ok(empty())
}
