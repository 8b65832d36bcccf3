//! Changes to projects: the project itself, its device objects and their bindings, its
//! network applications and their links. Each checks the change first (the same checks an
//! import goes through) and records the touched document.

use iot_proto::wire::graph_api::InputType;
use iot_proto::DaId;

use super::{netapp_mut, Kind, NewLink, State, MAX_ITEMS};
use crate::error::CcmError;
use crate::model::{
    validate_name, DeviceObject, FeatureDirection, FuncRef, Link, LinkParam, NetApp, Project,
};

impl State {
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
        remove(
            &mut p.objects,
            |o| o.id == oid,
            || format!("no device object {oid}"),
        )?;
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
        remove(
            &mut p.netapps,
            |n| n.id == nid,
            || format!("no network application {nid}"),
        )?;
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
        remove(&mut n.links, |l| l.id == lid, || format!("no link {lid}"))
    }
}

/// Removes the items of `v` that `matches`; none is a 404 that says `missing()`.
fn remove<T>(
    v: &mut Vec<T>,
    matches: impl Fn(&T) -> bool,
    missing: impl FnOnce() -> String,
) -> Result<(), CcmError> {
    let before = v.len();
    v.retain(|x| !matches(x));
    if v.len() == before {
        return Err(CcmError::not_found(missing()));
    }
    Ok(())
}
