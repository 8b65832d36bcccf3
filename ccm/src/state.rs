//! [`State`]: everything the CCM stores, in memory, and every change to it as a method that
//! checks the change first and records which documents it touched. Nothing here does I/O:
//! [`crate::Ccm::mutate`] persists the touched documents and tells the applier.

use std::collections::{BTreeMap, BTreeSet};

use iot_proto::wire::graph_api::{digest, InputType};
use iot_proto::DaId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::CcmError;
use crate::model::{
    check_code, validate_name, DeviceObject, Feature, FeatureDirection, FuncRef, Function,
    FunctionVersion, Link, LinkParam, Model, NetApp, Project,
};

/// A document kind, as stored in `ccm_docs.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Feature,
    Model,
    Function,
    Project,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Feature => "feature",
            Self::Model => "model",
            Self::Function => "function",
            Self::Project => "project",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [Self::Feature, Self::Model, Self::Function, Self::Project]
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
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[\\p{L}\\p{N}_.-]([\\p{L}\\p{N} _.-]*[\\p{L}\\p{N}_.-])?$"
    )]
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

    // ---- projects ----

    pub fn project(&self, id: u32) -> Result<&Project, CcmError> {
        self.projects
            .get(&id)
            .ok_or_else(|| CcmError::not_found(format!("no project {id}")))
    }

    /// Project `id` for a change: the change is recorded and its `rev` incremented.
    pub fn project_mut(&mut self, id: u32) -> Result<&mut Project, CcmError> {
        if !self.projects.contains_key(&id) {
            return Err(CcmError::not_found(format!("no project {id}")));
        }
        self.touch(Kind::Project, id.to_string());
        let p = self
            .projects
            .get_mut(&id)
            .ok_or_else(|| CcmError::not_found(format!("no project {id}")))?;
        p.rev += 1;
        Ok(p)
    }

    fn check_project_name(&self, name: &str, except: Option<u32>) -> Result<(), CcmError> {
        validate_name("project", name)?;
        if self
            .projects
            .values()
            .any(|p| p.name == name && Some(p.id) != except)
        {
            return Err(CcmError::conflict(format!(
                "a project named `{name}` exists"
            )));
        }
        Ok(())
    }

    pub fn create_project(&mut self, name: &str, auto_bind: bool) -> Result<Project, CcmError> {
        self.check_project_name(name, None)?;
        let id = self.projects.keys().next_back().map_or(1, |k| k + 1);
        let p = Project {
            id,
            name: name.to_owned(),
            on: false,
            auto_bind,
            objects: Vec::new(),
            netapps: Vec::new(),
            rev: 1,
        };
        self.projects.insert(id, p.clone());
        self.touch(Kind::Project, id.to_string());
        Ok(p)
    }

    pub fn update_project(
        &mut self,
        id: u32,
        name: Option<&str>,
        auto_bind: Option<bool>,
        on: Option<bool>,
    ) -> Result<(), CcmError> {
        if let Some(n) = name {
            self.check_project_name(n, Some(id))?;
        }
        let p = self.project_mut(id)?;
        if let Some(n) = name {
            n.clone_into(&mut p.name);
        }
        if let Some(a) = auto_bind {
            p.auto_bind = a;
        }
        if let Some(o) = on {
            p.on = o;
        }
        Ok(())
    }

    pub fn delete_project(&mut self, id: u32) -> Result<Project, CcmError> {
        let p = self
            .projects
            .remove(&id)
            .ok_or_else(|| CcmError::not_found(format!("no project {id}")))?;
        self.touch(Kind::Project, id.to_string());
        Ok(p)
    }

    pub fn add_object(&mut self, pid: u32, model: &str) -> Result<DeviceObject, CcmError> {
        // A project that does not exist is a 404 whatever the body says.
        self.project(pid)?;
        if !self.models.contains_key(model) {
            return Err(CcmError::invalid(format!("no model `{model}`")));
        }
        let p = self.project_mut(pid)?;
        if p.objects.len() >= MAX_ITEMS {
            return Err(CcmError::conflict(format!(
                "project has {MAX_ITEMS} device objects already"
            )));
        }
        let id = p.objects.iter().map(|o| o.id).max().map_or(1, |m| m + 1);
        let o = DeviceObject {
            id,
            model: model.to_owned(),
            da_id: None,
        };
        p.objects.push(o.clone());
        Ok(o)
    }

    /// Removes a device object and every link to it.
    pub fn delete_object(&mut self, pid: u32, oid: u32) -> Result<(), CcmError> {
        let p = self.project_mut(pid)?;
        let before = p.objects.len();
        p.objects.retain(|o| o.id != oid);
        if p.objects.len() == before {
            return Err(CcmError::not_found(format!("no device object {oid}")));
        }
        for n in &mut p.netapps {
            n.links.retain(|l| l.object != oid);
        }
        Ok(())
    }

    /// Binds a device object to a DA (`None`: unbinds it). A DA stands for at most one
    /// object of a project.
    pub fn bind(&mut self, pid: u32, oid: u32, da: Option<DaId>) -> Result<(), CcmError> {
        let p = self.project_mut(pid)?;
        if !p.objects.iter().any(|o| o.id == oid) {
            return Err(CcmError::not_found(format!("no device object {oid}")));
        }
        if let Some(da) = da {
            if let Some(o) = p
                .objects
                .iter()
                .find(|o| o.da_id == Some(da) && o.id != oid)
            {
                return Err(CcmError::conflict(format!(
                    "DA {da} is bound to device object {} of this project",
                    o.id
                )));
            }
        }
        let o = p
            .objects
            .iter_mut()
            .find(|o| o.id == oid)
            .ok_or_else(|| CcmError::not_found(format!("no device object {oid}")))?;
        o.da_id = da;
        Ok(())
    }

    pub fn add_netapp(
        &mut self,
        pid: u32,
        name: &str,
        links: Vec<NewLink>,
    ) -> Result<NetApp, CcmError> {
        validate_name("network application", name)?;
        let p = self.project(pid)?;
        if p.netapps.len() >= MAX_ITEMS {
            return Err(CcmError::conflict(format!(
                "project has {MAX_ITEMS} network applications already"
            )));
        }
        let id = p.netapps.iter().map(|n| n.id).max().map_or(1, |m| m + 1);
        let mut n = NetApp {
            id,
            name: name.to_owned(),
            join: None,
            links: Vec::new(),
        };
        for l in links {
            let link = self.check_link(p, &n, l)?;
            n.links.push(link);
        }
        self.project_mut(pid)?.netapps.push(n.clone());
        Ok(n)
    }

    pub fn update_netapp(
        &mut self,
        pid: u32,
        nid: u32,
        name: Option<&str>,
        join: Option<Option<FuncRef>>,
    ) -> Result<NetApp, CcmError> {
        // What the path names first: a missing project or network application is a 404
        // whatever the body says.
        if !self.project(pid)?.netapps.iter().any(|n| n.id == nid) {
            return Err(CcmError::not_found(format!("no network application {nid}")));
        }
        if let Some(n) = name {
            validate_name("network application", n)?;
        }
        if let Some(Some(j)) = &join {
            self.func_version(j)?;
        }
        let p = self.project_mut(pid)?;
        let n = netapp_mut(p, nid)?;
        if let Some(name) = name {
            name.clone_into(&mut n.name);
        }
        if let Some(j) = join {
            n.join = j;
        }
        Ok(n.clone())
    }

    pub fn delete_netapp(&mut self, pid: u32, nid: u32) -> Result<(), CcmError> {
        let p = self.project_mut(pid)?;
        let before = p.netapps.len();
        p.netapps.retain(|n| n.id != nid);
        if p.netapps.len() == before {
            return Err(CcmError::not_found(format!("no network application {nid}")));
        }
        Ok(())
    }

    /// Checks a new or changed link of network application `n` of project `p`.
    fn check_link(&self, p: &Project, n: &NetApp, l: NewLink) -> Result<Link, CcmError> {
        let o = p
            .objects
            .iter()
            .find(|o| o.id == l.object)
            .ok_or_else(|| CcmError::invalid(format!("no device object {}", l.object)))?;
        let f = self.model_feature(&o.model, &l.feature)?;
        if let Some(r) = &l.func {
            self.func_version(r)?;
        }
        let width = f.params.len();
        if !l.input_type.is_empty() {
            if f.direction != FeatureDirection::Input {
                return Err(CcmError::invalid(format!(
                    "`input_type` is for input features; `{}` is an output",
                    f.name
                )));
            }
            if l.input_type.len() > width {
                return Err(CcmError::invalid(format!(
                    "`input_type` has {} entries; `{}` has {width} values",
                    l.input_type.len(),
                    f.name
                )));
            }
        }
        if l.params.len() > width {
            return Err(CcmError::invalid(format!(
                "`params` has {} entries; `{}` has {width} values",
                l.params.len(),
                f.name
            )));
        }
        for (i, lp) in l.params.iter().enumerate() {
            lp.check(&format!("`params[{i}]`"))?;
        }
        if n.links
            .iter()
            .any(|x| x.object == l.object && x.feature == l.feature)
        {
            return Err(CcmError::conflict(format!(
                "feature `{}` of device object {} is linked to this network application already",
                l.feature, l.object
            )));
        }
        if n.links.len() >= MAX_ITEMS {
            return Err(CcmError::conflict(format!(
                "network application has {MAX_ITEMS} links already"
            )));
        }
        Ok(Link {
            id: n.links.iter().map(|x| x.id).max().map_or(1, |m| m + 1),
            object: l.object,
            feature: l.feature,
            func: l.func,
            input_type: l.input_type,
            params: l.params,
        })
    }

    pub fn add_link(&mut self, pid: u32, nid: u32, l: NewLink) -> Result<Link, CcmError> {
        let p = self.project(pid)?;
        let n = p
            .netapps
            .iter()
            .find(|n| n.id == nid)
            .ok_or_else(|| CcmError::not_found(format!("no network application {nid}")))?;
        let link = self.check_link(p, n, l)?;
        netapp_mut(self.project_mut(pid)?, nid)?
            .links
            .push(link.clone());
        Ok(link)
    }

    /// Replaces a link's function, input type and params (its ends stay).
    pub fn update_link(
        &mut self,
        pid: u32,
        nid: u32,
        lid: u32,
        func: Option<FuncRef>,
        input_type: Vec<InputType>,
        params: Vec<LinkParam>,
    ) -> Result<Link, CcmError> {
        let p = self.project(pid)?;
        let n = p
            .netapps
            .iter()
            .find(|n| n.id == nid)
            .ok_or_else(|| CcmError::not_found(format!("no network application {nid}")))?;
        let old = n
            .links
            .iter()
            .find(|l| l.id == lid)
            .ok_or_else(|| CcmError::not_found(format!("no link {lid}")))?;
        let mut others = n.clone();
        others.links.retain(|l| l.id != lid);
        let mut checked = self.check_link(
            p,
            &others,
            NewLink {
                object: old.object,
                feature: old.feature.clone(),
                func,
                input_type,
                params,
            },
        )?;
        checked.id = lid;
        let n = netapp_mut(self.project_mut(pid)?, nid)?;
        if let Some(l) = n.links.iter_mut().find(|l| l.id == lid) {
            *l = checked.clone();
        }
        Ok(checked)
    }

    pub fn delete_link(&mut self, pid: u32, nid: u32, lid: u32) -> Result<(), CcmError> {
        let n = netapp_mut(self.project_mut(pid)?, nid)?;
        let before = n.links.len();
        n.links.retain(|l| l.id != lid);
        if n.links.len() == before {
            return Err(CcmError::not_found(format!("no link {lid}")));
        }
        Ok(())
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
