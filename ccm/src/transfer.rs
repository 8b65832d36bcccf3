//! A project exported as one JSON document ([`ProjectExport`]) with the models, features and
//! function versions it uses, and imported back on this or another controller. An import is
//! replayed through the same checked changes as the API's, in one [`crate::Ccm::mutate`]:
//! it lands whole or not at all.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::CcmError;
use crate::model::{FuncRef, Function, Project, ProjectExport, EXPORT_FORMAT};
use crate::state::{project_funcs, NewLink, State};

impl State {
    /// Project `id` with everything it uses.
    pub fn export(&self, id: u32) -> Result<ProjectExport, CcmError> {
        let p = self.project(id)?.clone();
        let model_names: BTreeSet<&str> = p.objects.iter().map(|o| o.model.as_str()).collect();
        let models: Vec<_> = model_names
            .iter()
            .filter_map(|m| self.models.get(*m).cloned())
            .collect();
        let feature_names: BTreeSet<&str> = models
            .iter()
            .flat_map(|m| m.features.iter().map(String::as_str))
            .collect();
        let features = feature_names
            .iter()
            .filter_map(|f| self.features.get(*f).cloned())
            .collect();
        let mut used: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
        for r in project_funcs(&p) {
            used.entry(r.name.as_str()).or_default().insert(r.version);
        }
        let functions = used
            .iter()
            .filter_map(|(name, versions)| {
                let f = self.functions.get(*name)?;
                Some(Function {
                    name: f.name.clone(),
                    lang: f.lang.clone(),
                    versions: f
                        .versions
                        .iter()
                        .filter(|v| versions.contains(&v.version))
                        .cloned()
                        .collect(),
                })
            })
            .collect();
        Ok(ProjectExport {
            format: EXPORT_FORMAT.into(),
            project: p,
            models,
            features,
            functions,
        })
    }

    /// Imports an exported project as a new project named `name` (default: its own name),
    /// off, with the document's bindings.
    /// Features and models must be absent or identical here; function versions are matched
    /// by their code (a version with the same code is reused, else a new version is added).
    pub fn import(
        &mut self,
        doc: ProjectExport,
        name: Option<&str>,
        now: f64,
    ) -> Result<Project, CcmError> {
        if doc.format != EXPORT_FORMAT {
            return Err(CcmError::invalid(format!(
                "`format` is `{}`, expected `{EXPORT_FORMAT}`",
                crate::model::shorten(&doc.format)
            )));
        }
        for f in doc.features {
            match self.features.get(&f.name) {
                Some(have) if *have == f => {}
                Some(_) => {
                    return Err(CcmError::conflict(format!(
                        "feature `{}` exists here with other settings: rename one of them",
                        f.name
                    )))
                }
                None => self.put_feature(f)?,
            }
        }
        for m in doc.models {
            match self.models.get(&m.name) {
                Some(have) if *have == m => {}
                Some(_) => {
                    return Err(CcmError::conflict(format!(
                        "model `{}` exists here with other features: rename one of them",
                        m.name
                    )))
                }
                None => self.put_model(m)?,
            }
        }
        // (name, exported version) -> the version here with the same code.
        let mut versions: BTreeMap<FuncRef, FuncRef> = BTreeMap::new();
        for f in doc.functions {
            for v in f.versions {
                let existing = self.functions.get(&f.name).and_then(|have| {
                    have.versions
                        .iter()
                        .find(|h| h.digest == v.digest && h.code == v.code)
                        .map(|h| h.version)
                });
                let here = match existing {
                    Some(version) => version,
                    None => {
                        self.add_function_version(&f.name, &v.code, &v.author, now)?
                            .version
                    }
                };
                versions.insert(
                    FuncRef {
                        name: f.name.clone(),
                        version: v.version,
                    },
                    FuncRef {
                        name: f.name.clone(),
                        version: here,
                    },
                );
            }
        }
        let map = |r: Option<FuncRef>| -> Result<Option<FuncRef>, CcmError> {
            match r {
                None => Ok(None),
                Some(r) => versions.get(&r).cloned().map(Some).ok_or_else(|| {
                    CcmError::invalid(format!(
                        "the project uses function `{}` version {}, which the document does not contain",
                        r.name, r.version
                    ))
                }),
            }
        };
        let src = doc.project;
        let p = self.create_project(name.unwrap_or(&src.name), src.auto_bind)?;
        let mut objects = BTreeMap::new();
        for o in &src.objects {
            let new = self.add_object(p.id, &o.model)?;
            if o.da_id.is_some() {
                self.bind(p.id, new.id, o.da_id)?;
            }
            objects.insert(o.id, new.id);
        }
        for n in src.netapps {
            let mut links = Vec::with_capacity(n.links.len());
            for l in n.links {
                let object = *objects.get(&l.object).ok_or_else(|| {
                    CcmError::invalid(format!(
                        "a link of `{}` names device object {}, which the project does not have",
                        n.name, l.object
                    ))
                })?;
                links.push(NewLink {
                    object,
                    feature: l.feature,
                    func: map(l.func)?,
                    input_type: l.input_type,
                    params: l.params,
                });
            }
            let new = self.add_netapp(p.id, &n.name, links)?;
            if n.join.is_some() {
                self.update_netapp(p.id, new.id, None, Some(map(n.join)?))?;
            }
        }
        // Imported off, whatever the document says: turning it on is a decision of its own
        // (a copy on the same controller would route the same DAs a second time).
        Ok(self.project(p.id)?.clone())
    }
}
