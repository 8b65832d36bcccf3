//! [`State`]: everything the CCM stores, in memory, and every change to it as a method that
//! checks the change first and records which documents it touched. Nothing here does I/O:
//! [`crate::Ccm::mutate`] persists the touched documents and tells the applier.

mod home;
mod projects;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use iot_proto::wire::graph_api::{digest, InputType};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::CcmError;
use crate::home::catalog::Catalog;
use crate::model::{
    check_code, validate_name, Feature, FuncRef, Function, FunctionVersion, LinkParam, Model,
    NetApp, Project,
};

/// A document kind, as stored in `ccm_docs.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Feature,
    Model,
    Function,
    Project,
    /// The home catalog: one document named `catalog`.
    Home,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Feature => "feature",
            Self::Model => "model",
            Self::Function => "function",
            Self::Project => "project",
            Self::Home => "home",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [
            Self::Feature,
            Self::Model,
            Self::Function,
            Self::Project,
            Self::Home,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// What a new link names; the rest of [`Link`] is given by [`State::add_link`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLink {
    #[serde(deserialize_with = "crate::model::whole")]
    pub object: u32,
    #[schema(value_type = crate::model::Name)]
    pub feature: String,
    #[serde(default)]
    pub func: Option<FuncRef>,
    #[serde(default)]
    #[schema(value_type = Vec<crate::model::InputTypeName>)]
    pub input_type: Vec<InputType>,
    #[serde(default)]
    pub params: Vec<LinkParam>,
}

/// The stored data.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub features: BTreeMap<String, Feature>,
    pub models: BTreeMap<String, Model>,
    pub functions: BTreeMap<String, Function>,
    pub projects: BTreeMap<u32, Project>,
    /// Home devices and scenes (shared with running commands, replaced on every change).
    pub home: Arc<Catalog>,
    /// Documents changed since the last [`State::take_touched`].
    touched: BTreeSet<(Kind, String)>,
}

/// The most device objects, network applications or links one project holds.
pub const MAX_ITEMS: usize = 1000;

impl State {
    fn touch(&mut self, kind: Kind, name: impl Into<String>) {
        self.touched.insert((kind, name.into()));
    }

    /// The documents changed since the last call: each is written again (or deleted when it
    /// no longer exists).
    pub fn take_touched(&mut self) -> BTreeSet<(Kind, String)> {
        std::mem::take(&mut self.touched)
    }

    /// The JSON of one document, `None` when it no longer exists.
    pub fn doc(&self, kind: Kind, name: &str) -> Option<String> {
        let json = match kind {
            Kind::Feature => serde_json::to_string(self.features.get(name)?),
            Kind::Model => serde_json::to_string(self.models.get(name)?),
            Kind::Function => serde_json::to_string(self.functions.get(name)?),
            Kind::Project => serde_json::to_string(self.projects.get(&name.parse().ok()?)?),
            Kind::Home => serde_json::to_string(&*self.home),
        };
        json.ok()
    }

    /// Loads one stored document; a corrupt one is an error naming it.
    pub fn load(&mut self, kind: &str, name: &str, doc: &str) -> Result<(), String> {
        let bad = |e: serde_json::Error| format!("stored {kind} `{name}` is corrupt: {e}");
        match Kind::parse(kind) {
            Some(Kind::Feature) => {
                let f: Feature = serde_json::from_str(doc).map_err(bad)?;
                self.features.insert(f.name.clone(), f);
            }
            Some(Kind::Model) => {
                let m: Model = serde_json::from_str(doc).map_err(bad)?;
                self.models.insert(m.name.clone(), m);
            }
            Some(Kind::Function) => {
                let f: Function = serde_json::from_str(doc).map_err(bad)?;
                self.functions.insert(f.name.clone(), f);
            }
            Some(Kind::Project) => {
                let p: Project = serde_json::from_str(doc).map_err(bad)?;
                self.projects.insert(p.id, p);
            }
            Some(Kind::Home) => {
                let c: Catalog = serde_json::from_str(doc).map_err(bad)?;
                self.home = Arc::new(c);
            }
            None => return Err(format!("unknown stored document kind `{kind}`")),
        }
        Ok(())
    }

    // ---- features and models ----

    pub fn put_feature(&mut self, f: Feature) -> Result<(), CcmError> {
        f.check()?;
        self.touch(Kind::Feature, &f.name);
        self.features.insert(f.name.clone(), f);
        Ok(())
    }

    pub fn delete_feature(&mut self, name: &str) -> Result<(), CcmError> {
        if !self.features.contains_key(name) {
            return Err(CcmError::not_found(format!("no feature `{name}`")));
        }
        if let Some(m) = self
            .models
            .values()
            .find(|m| m.features.iter().any(|f| f == name))
        {
            return Err(CcmError::conflict(format!(
                "feature `{name}` is used by model `{}`",
                m.name
            )));
        }
        self.features.remove(name);
        self.touch(Kind::Feature, name);
        Ok(())
    }

    pub fn put_model(&mut self, m: Model) -> Result<(), CcmError> {
        m.check()?;
        if let Some(f) = m.features.iter().find(|f| !self.features.contains_key(*f)) {
            return Err(CcmError::invalid(format!(
                "model `{}`: no feature `{f}` (create it first)",
                m.name
            )));
        }
        // A feature still linked in a project cannot be taken away from its model.
        if let Some(old) = self.models.get(&m.name) {
            for gone in old.features.iter().filter(|f| !m.features.contains(f)) {
                if let Some(p) = self.project_linking(&m.name, gone) {
                    return Err(CcmError::conflict(format!(
                        "feature `{gone}` of model `{}` is linked in project `{p}`",
                        m.name
                    )));
                }
            }
        }
        self.touch(Kind::Model, &m.name);
        self.models.insert(m.name.clone(), m);
        Ok(())
    }

    fn project_linking(&self, model: &str, feature: &str) -> Option<String> {
        self.projects.values().find_map(|p| {
            let objs: BTreeSet<u32> = p
                .objects
                .iter()
                .filter(|o| o.model == model)
                .map(|o| o.id)
                .collect();
            p.netapps
                .iter()
                .flat_map(|n| &n.links)
                .any(|l| objs.contains(&l.object) && l.feature == feature)
                .then(|| p.name.clone())
        })
    }

    pub fn delete_model(&mut self, name: &str) -> Result<(), CcmError> {
        if !self.models.contains_key(name) {
            return Err(CcmError::not_found(format!("no model `{name}`")));
        }
        if let Some(p) = self
            .projects
            .values()
            .find(|p| p.objects.iter().any(|o| o.model == name))
        {
            return Err(CcmError::conflict(format!(
                "model `{name}` is used in project `{}`",
                p.name
            )));
        }
        self.models.remove(name);
        self.touch(Kind::Model, name);
        Ok(())
    }

    /// The feature `feature` of model `model`.
    pub fn model_feature(&self, model: &str, feature: &str) -> Result<&Feature, CcmError> {
        let m = self
            .models
            .get(model)
            .ok_or_else(|| CcmError::invalid(format!("no model `{model}`")))?;
        if !m.features.iter().any(|f| f == feature) {
            return Err(CcmError::invalid(format!(
                "model `{model}` has no feature `{feature}`"
            )));
        }
        self.features
            .get(feature)
            .ok_or_else(|| CcmError::invalid(format!("no feature `{feature}`")))
    }

    // ---- functions ----

    /// Adds a version of function `name` (creating the function); when `code` is the latest
    /// version's code already, that version is returned and nothing changes.
    pub fn add_function_version(
        &mut self,
        name: &str,
        code: &str,
        author: &str,
        now: f64,
    ) -> Result<FunctionVersion, CcmError> {
        validate_name("function", name)?;
        let lang = check_code(code)?;
        if author.chars().count() > crate::model::MAX_TEXT || author.chars().any(char::is_control) {
            return Err(CcmError::invalid(
                "author: at most 1024 characters, no control characters",
            ));
        }
        let d = digest(code);
        let f = self
            .functions
            .entry(name.to_owned())
            .or_insert_with(|| Function {
                name: name.to_owned(),
                lang: lang.into(),
                versions: Vec::new(),
            });
        if let Some(last) = f.versions.last().filter(|v| v.digest == d) {
            return Ok(last.clone());
        }
        let v = FunctionVersion {
            version: f.versions.last().map_or(1, |v| v.version + 1),
            code: code.to_owned(),
            digest: d,
            author: author.to_owned(),
            created: now,
        };
        f.lang = lang.into();
        f.versions.push(v.clone());
        self.touch(Kind::Function, name);
        Ok(v)
    }

    pub fn delete_function(&mut self, name: &str) -> Result<(), CcmError> {
        if !self.functions.contains_key(name) {
            return Err(CcmError::not_found(format!("no function `{name}`")));
        }
        for p in self.projects.values() {
            if project_funcs(p).any(|r| r.name == name) {
                return Err(CcmError::conflict(format!(
                    "function `{name}` is used in project `{}`",
                    p.name
                )));
            }
        }
        self.functions.remove(name);
        self.touch(Kind::Function, name);
        Ok(())
    }

    /// The version a link or join refers to.
    pub fn func_version(&self, r: &FuncRef) -> Result<&FunctionVersion, CcmError> {
        self.functions
            .get(&r.name)
            .and_then(|f| f.versions.iter().find(|v| v.version == r.version))
            .ok_or_else(|| {
                CcmError::invalid(format!("no function `{}` version {}", r.name, r.version))
            })
    }
}

fn netapp_mut(p: &mut Project, nid: u32) -> Result<&mut NetApp, CcmError> {
    p.netapps
        .iter_mut()
        .find(|n| n.id == nid)
        .ok_or_else(|| CcmError::not_found(format!("no network application {nid}")))
}

/// Every function version a project uses (links and joins).
pub fn project_funcs(p: &Project) -> impl Iterator<Item = &FuncRef> {
    p.netapps.iter().flat_map(|n| {
        n.join
            .iter()
            .chain(n.links.iter().filter_map(|l| l.func.as_ref()))
    })
}
