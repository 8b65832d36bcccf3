//! `/api/openapi.json`: the OpenAPI 3 document, generated from the handlers' annotations and
//! the Rust types of their bodies (utoipa), so it cannot drift from the code.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{library, live, projects, session};
use crate::apply::{
    DeviceEvent, DeviceInfo, MonitorRow, NetAppStatus, ObjectStatus, ProjectStatus,
};
use crate::error::ErrorBody;
use crate::model::{
    DeviceObject, Feature, FeatureDirection, FuncRef, Function, FunctionVersion, Link, LinkParam,
    Model, NetApp, Param, Project, ProjectExport,
};
use crate::state::NewLink;

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "iotctl configuration manager",
        description = "Device models, functions and projects of the controller (docs/ccm.md). With authentication on, every path but /api/session, /api/login, /api/logout and this document needs an admin: a session cookie from /api/login, or HTTP Basic.",
        version = "1"
    ),
    paths(
        session::session, session::login, session::logout,
        library::list_features, library::get_feature, library::put_feature, library::delete_feature,
        library::list_models, library::get_model, library::put_model, library::delete_model,
        library::list_functions, library::get_function, library::add_version, library::delete_function,
        live::devices, live::device_events, live::monitor,
        projects::list, projects::create, projects::show, projects::update, projects::remove,
        projects::turn_on, projects::turn_off, projects::export, projects::import,
        projects::add_object, projects::delete_object, projects::bind, projects::unbind,
        projects::add_netapp, projects::update_netapp, projects::delete_netapp,
        projects::add_link, projects::update_link, projects::delete_link,
    ),
    components(schemas(
        ErrorBody, Feature, FeatureDirection, Param, Model, Function, FunctionVersion, FuncRef,
        Project, DeviceObject, NetApp, Link, LinkParam, ProjectExport, NewLink,
        DeviceInfo, DeviceEvent, MonitorRow, ProjectStatus, NetAppStatus, ObjectStatus,
        session::SessionInfo, session::Login, library::NewVersion,
        projects::ProjectSummary, projects::NewProject, projects::ProjectView,
        projects::ProjectChange, projects::NewObject, projects::Bind, projects::NewNetApp,
        projects::NetAppChange, projects::LinkChange,
    )),
    modifiers(&BasicAuth),
    security(("basic" = []))
)]
pub struct ApiDoc;

#[derive(Debug)]
struct BasicAuth;

impl Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
