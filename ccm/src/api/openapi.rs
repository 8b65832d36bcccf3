//! `/api/openapi.json`: the OpenAPI 3 document, generated from the handlers' annotations and
//! the Rust types of their bodies (utoipa), so it cannot drift from the code.
//!
//! What every handler shares is added here, once, rather than on each annotation
//! ([`Common`]): the path parameters (`{name}` a name, `{id}`/`{oid}`/`{nid}`/`{lid}`
//! numbers), the 400 of an unreadable path or body, the 413 of an oversized body, and the
//! 401/403 of the admin check on every operation that does not say `security(())`.
//! `scripts/fuzz-ccm-api.sh` holds the API to this document.

use axum::Json;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{home, library, live, projects, session};
use crate::apply::{
    DeviceEvent, DeviceInfo, MonitorRow, NetAppStatus, ObjectStatus, ProjectStatus,
};
use crate::error::ErrorBody;
use crate::model::{
    DeviceObject, Feature, FeatureDirection, FuncRef, Function, FunctionVersion, InputTypeName,
    Link, LinkParam, Model, Name, NetApp, Param, Project, ProjectExport,
};
use crate::state::NewLink;

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "iotctl configuration manager",
        description = "Device models, functions and projects of the controller (docs/ccm.md), and home scenes (docs/home.md). With authentication on, every path but /api/session, /api/login, /api/logout and this document needs an admin: a session cookie from /api/login, or HTTP Basic.",
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
        home::get_catalog, home::put_catalog, home::get_devices, home::put_devices,
        home::get_scenes, home::put_scenes, home::get_states, home::run,
    ),
    components(schemas(
        ErrorBody, Name, InputTypeName, Feature, FeatureDirection, Param, Model, Function,
        FunctionVersion, FuncRef, Project, DeviceObject, NetApp, Link, LinkParam, ProjectExport, NewLink,
        DeviceInfo, DeviceEvent, MonitorRow, ProjectStatus, NetAppStatus, ObjectStatus,
        session::SessionInfo, session::Login, library::NewVersion,
        projects::ProjectSummary, projects::NewProject, projects::ProjectView,
        projects::ProjectChange, projects::NewObject, projects::Bind, projects::NewNetApp,
        projects::NetAppChange, projects::LinkChange,
    )),
    modifiers(&BasicAuth, &Common),
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

/// What the handlers share: path parameters, and the refusals of the extractors and of the
/// admin check (see the module doc).
#[derive(Debug)]
struct Common;

impl Modify for Common {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // A model lists a feature once (no derive attribute says `uniqueItems`).
        if let Some(RefOr::T(Schema::Object(model))) = openapi
            .components
            .as_mut()
            .and_then(|c| c.schemas.get_mut("Model"))
        {
            if let Some(RefOr::T(Schema::Array(features))) = model.properties.get_mut("features") {
                features.unique_items = true;
            }
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let names: Vec<&str> = path
                .split('/')
                .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                let params = op.parameters.get_or_insert_with(Vec::new);
                params.retain(|p| p.parameter_in != ParameterIn::Path);
                params.splice(0..0, names.iter().map(|n| path_param(n)));
                let body = op.request_body.is_some();
                if body || !names.is_empty() {
                    add_error(
                        op,
                        "400",
                        "`invalid`: a malformed body, a value refused, or a path parameter that cannot be read",
                    );
                }
                if body {
                    add_error(
                        op,
                        "413",
                        "`too_large`: the body is larger than `ccm.max_body_bytes`",
                    );
                }
                // `security(())` on the annotation: the operation needs no login.
                if op.security.is_none() {
                    add_error(
                        op,
                        "401",
                        "`unauthorized` (authentication on): no or wrong credentials",
                    );
                    add_error(
                        op,
                        "403",
                        "`forbidden` (authentication on): the user is not an admin",
                    );
                }
            }
        }
    }
}

/// `{name}`: a name ([`crate::model::validate_name`]); anything else an id (a `u32`).
fn path_param(name: &str) -> Parameter {
    let (schema, what) = if name == "name" {
        (
            <crate::model::Name as utoipa::PartialSchema>::schema(),
            "the name",
        )
    } else {
        (
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(0))
                .maximum(Some(u32::MAX))
                .into(),
            match name {
                "id" => "the project id",
                "oid" => "the device object id",
                "nid" => "the network application id",
                "lid" => "the link id",
                _ => "an id",
            },
        )
    };
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(what))
        .schema(Some(schema))
        .build()
}

fn add_error(op: &mut Operation, status: &str, description: &str) {
    if op.responses.responses.contains_key(status) {
        return;
    }
    let res = ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    op.responses.responses.insert(status.to_owned(), res.into());
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_parts_are_in_the_document() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        let features = &doc["components"]["schemas"]["Model"]["properties"]["features"];
        assert_eq!(features["uniqueItems"], true, "{features}");
        let op = &doc["paths"]["/api/projects/{id}/netapps/{nid}/links/{lid}"]["put"];
        let names: Vec<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(names, ["id", "nid", "lid"], "{op}");
        assert_eq!(op["parameters"][2]["schema"]["type"], "integer", "{op}");
        for status in ["200", "400", "401", "403", "404", "413"] {
            assert!(op["responses"][status].is_object(), "{status}: {op}");
        }
        let login = &doc["paths"]["/api/login"]["post"];
        assert!(login["responses"]["401"].is_object(), "{login}");
        assert_eq!(login["security"], serde_json::json!([{}]), "{login}");
    }
}
