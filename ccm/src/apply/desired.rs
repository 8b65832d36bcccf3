//! What the CSM should run, computed from the [`State`] and the registered DAs, without I/O:
//! one [`DesiredGraph`] per network application of a project that is on
//! ([`desired_graphs`]), the device objects' status ([`object_statuses`]), and the bindings
//! auto-bind makes ([`auto_binds`]). Not here: comparing with the CSM (see `diff`).

use std::collections::{BTreeMap, BTreeSet};

use iot_proto::wire::graph_api::{digest, Digest, LinkRef, LinkSpec};
use iot_proto::wire::Direction;
use iot_proto::DaId;

use super::live::{DeviceInfo, ObjectStatus};
use super::wrapper::{self, Lang, USER_ALIAS};
use crate::model::{FeatureDirection, Link, NetApp, Project};
use crate::state::State;

/// The CSM graph id of network application `nid` of project `pid`.
pub fn graph_id(pid: u32, nid: u32) -> String {
    format!("ccm-p{pid}-n{nid}")
}

/// `(project, netapp)` of a graph id made by [`graph_id`].
pub fn parse_graph_id(gid: &str) -> Option<(u32, u32)> {
    let (p, n) = gid.strip_prefix("ccm-p")?.split_once("-n")?;
    Some((p.parse().ok()?, n.parse().ok()?))
}

/// A function the graph needs, and how to name it in an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuncSource {
    pub code: String,
    /// `function `f` version 2`, or `the range wrapper of link 3`.
    pub label: String,
}

/// One link the graph should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredLink {
    /// The CCM's link id (errors are shown there).
    pub id: u32,
    pub object: u32,
    pub spec: LinkSpec,
}

/// The graph one network application should be on the CSM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredGraph {
    pub gid: String,
    pub project: u32,
    pub netapp: u32,
    pub links: BTreeMap<LinkRef, DesiredLink>,
    pub join: Option<Digest>,
    /// Every function used (links, their dependencies, the join), by digest.
    pub funcs: BTreeMap<Digest, FuncSource>,
    /// Why some links are left out (an unbound device object), in plain words.
    pub waiting: Vec<String>,
    /// Links that cannot be built at all, by link id.
    pub link_errors: BTreeMap<u32, String>,
    /// The join cannot be built.
    pub join_error: Option<String>,
}

/// The graphs of every network application of every project that is on.
pub fn desired_graphs(state: &State) -> Vec<DesiredGraph> {
    state
        .projects
        .values()
        .filter(|p| p.on)
        .flat_map(|p| p.netapps.iter().map(move |n| desired_graph(state, p, n)))
        .collect()
}

/// The graph of network application `n` of project `p`.
pub fn desired_graph(state: &State, p: &Project, n: &NetApp) -> DesiredGraph {
    let mut g = DesiredGraph {
        gid: graph_id(p.id, n.id),
        project: p.id,
        netapp: n.id,
        links: BTreeMap::new(),
        join: None,
        funcs: BTreeMap::new(),
        waiting: Vec::new(),
        link_errors: BTreeMap::new(),
        join_error: None,
    };
    if let Some(j) = &n.join {
        match state.func_version(j) {
            Ok(v) => {
                g.funcs.insert(
                    v.digest.clone(),
                    FuncSource {
                        code: v.code.clone(),
                        label: format!("function `{}` version {}", j.name, j.version),
                    },
                );
                g.join = Some(v.digest.clone());
            }
            Err(e) => g.join_error = Some(e.to_string()),
        }
    }
    for l in &n.links {
        match desired_link(state, p, l, &mut g.funcs) {
            Ok(Some((r, d))) => {
                g.links.insert(r, d);
            }
            Ok(None) => {}
            Err(Unbuilt::Waiting(why)) => g.waiting.push(why),
            Err(Unbuilt::Error(why)) => {
                g.link_errors.insert(l.id, why);
            }
        }
    }
    g
}

enum Unbuilt {
    Waiting(String),
    Error(String),
}

fn desired_link(
    state: &State,
    p: &Project,
    l: &Link,
    funcs: &mut BTreeMap<Digest, FuncSource>,
) -> Result<Option<(LinkRef, DesiredLink)>, Unbuilt> {
    let err = |e: crate::CcmError| Unbuilt::Error(e.to_string());
    let o = p
        .objects
        .iter()
        .find(|o| o.id == l.object)
        .ok_or_else(|| Unbuilt::Error(format!("no device object {}", l.object)))?;
    let Some(da_id) = o.da_id else {
        return Err(Unbuilt::Waiting(format!(
            "device object {} ({}) is not bound to a DA",
            o.id, o.model
        )));
    };
    let f = state.model_feature(&o.model, &l.feature).map_err(err)?;
    let feature = l
        .feature
        .parse()
        .map_err(|e| Unbuilt::Error(format!("feature `{}`: {e}", l.feature)))?;
    let direction = match f.direction {
        FeatureDirection::Input => Direction::Idf,
        FeatureDirection::Output => Direction::Odf,
    };
    let user = match &l.func {
        Some(r) => {
            let v = state.func_version(r).map_err(err)?;
            let lang = crate::model::lang_of(&v.code).unwrap_or("rhai");
            funcs.insert(
                v.digest.clone(),
                FuncSource {
                    code: v.code.clone(),
                    label: format!("function `{}` version {}", r.name, r.version),
                },
            );
            Some((v.digest.clone(), Lang::of(lang)))
        }
        None => None,
    };
    let mut spec = LinkSpec {
        func: user.as_ref().map(|(d, _)| d.clone()),
        input_type: l.input_type.clone(),
        ..LinkSpec::default()
    };
    if wrapper::needed(&l.params) {
        let lang = user.as_ref().map_or(Lang::Rhai, |(_, lang)| *lang);
        let code = wrapper::wrapper(lang, f.params.len(), &l.params, user.is_some());
        let d = digest(&code);
        funcs.insert(
            d.clone(),
            FuncSource {
                code,
                label: format!("the range wrapper of link {}", l.id),
            },
        );
        if let Some((u, _)) = user {
            spec.depends.insert(USER_ALIAS.to_owned(), u);
        }
        spec.func = Some(d);
    }
    let r = LinkRef {
        da_id,
        direction,
        feature,
    };
    Ok(Some((
        r,
        DesiredLink {
            id: l.id,
            object: o.id,
            spec,
        },
    )))
}

/// How each device object of `p` stands, from the registered DAs.
pub fn object_statuses(
    p: &Project,
    devices: &BTreeMap<DaId, DeviceInfo>,
) -> BTreeMap<u32, ObjectStatus> {
    p.objects
        .iter()
        .map(|o| {
            let s = match o.da_id {
                None => ObjectStatus::default(),
                Some(da) => match devices.get(&da) {
                    Some(d) => ObjectStatus {
                        online: Some(d.online),
                        da_name: Some(d.name.clone()),
                        error: (d.model != o.model).then(|| {
                            format!(
                                "DA {} ({}) is of model `{}`, not `{}`",
                                da, d.name, d.model, o.model
                            )
                        }),
                    },
                    None => ObjectStatus {
                        online: None,
                        da_name: None,
                        error: Some(format!(
                            "bound to DA {da}, which the CSM does not know (deregistered?)"
                        )),
                    },
                },
            };
            (o.id, s)
        })
        .collect()
}

/// The bindings auto-bind makes: `(project, object, DA)` for each unbound device object of
/// a project with `auto_bind` when exactly one online DA of its model is bound to no object
/// of that project.
pub fn auto_binds(state: &State, devices: &BTreeMap<DaId, DeviceInfo>) -> Vec<(u32, u32, DaId)> {
    let mut out = Vec::new();
    for p in state.projects.values().filter(|p| p.auto_bind) {
        let mut bound: BTreeSet<DaId> = p.objects.iter().filter_map(|o| o.da_id).collect();
        for o in p.objects.iter().filter(|o| o.da_id.is_none()) {
            let mut free = devices
                .values()
                .filter(|d| d.online && d.model == o.model && !bound.contains(&d.id));
            if let (Some(d), None) = (free.next(), free.next()) {
                bound.insert(d.id);
                out.push((p.id, o.id, d.id));
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{Feature, FuncRef, LinkParam, Model, Param};
    use crate::state::NewLink;

    pub const SENSOR: &str = "df682f01-7c3a-49fd-8f5f-72ce0b6e68c0";
    pub const DISPLAY: &str = "0a1b2c3d-0000-4000-8000-000000000001";

    pub fn da(s: &str) -> DaId {
        s.parse().unwrap()
    }

    /// A project 1 (on) with a sensor object 1 bound to SENSOR, a display object 2 unbound,
    /// and network application 1 linking both, the sensor through function `sq` v1.
    pub fn state() -> State {
        let mut s = State::default();
        for (name, dir) in [
            ("Temp", FeatureDirection::Input),
            ("Show", FeatureDirection::Output),
        ] {
            s.put_feature(Feature {
                name: name.into(),
                direction: dir,
                params: vec![Param::default()],
                comment: String::new(),
            })
            .unwrap();
        }
        for (m, f) in [("Dummy_Sensor", "Temp"), ("Dummy_Display", "Show")] {
            s.put_model(Model {
                name: m.into(),
                features: vec![f.into()],
                comment: String::new(),
            })
            .unwrap();
        }
        s.add_function_version("sq", "fn run(x) { x * x }", "t", 0.0)
            .unwrap();
        let p = s.create_project("p", true).unwrap();
        s.add_object(p.id, "Dummy_Sensor").unwrap();
        s.add_object(p.id, "Dummy_Display").unwrap();
        s.bind(p.id, 1, Some(da(SENSOR))).unwrap();
        let link = |object, feature: &str, func| NewLink {
            object,
            feature: feature.into(),
            func,
            input_type: vec![],
            params: vec![],
        };
        s.add_netapp(
            p.id,
            "n",
            vec![
                link(
                    1,
                    "Temp",
                    Some(FuncRef {
                        name: "sq".into(),
                        version: 1,
                    }),
                ),
                link(2, "Show", None),
            ],
        )
        .unwrap();
        s.update_project(p.id, None, None, Some(true)).unwrap();
        s
    }

    pub fn device(id: &str, model: &str, online: bool) -> DeviceInfo {
        DeviceInfo {
            id: da(id),
            name: format!("{model}-dev"),
            model: model.into(),
            idf: vec![],
            odf: vec![],
            online,
        }
    }

    #[test]
    fn graph_ids_round_trip() {
        assert_eq!(graph_id(3, 12), "ccm-p3-n12");
        assert_eq!(parse_graph_id("ccm-p3-n12"), Some((3, 12)));
        assert_eq!(parse_graph_id("ccm-p3"), None);
        assert_eq!(parse_graph_id("gui-1"), None);
    }

    #[test]
    fn bound_links_are_desired_and_unbound_ones_wait() {
        let s = state();
        let gs = desired_graphs(&s);
        assert_eq!(gs.len(), 1);
        let g = &gs[0];
        assert_eq!(g.gid, "ccm-p1-n1");
        assert_eq!(g.links.len(), 1);
        let (r, l) = g.links.iter().next().unwrap();
        assert_eq!(r.direction, Direction::Idf);
        assert_eq!(r.da_id, da(SENSOR));
        assert_eq!(l.spec.func, Some(digest("fn run(x) { x * x }")));
        assert_eq!(g.funcs.len(), 1);
        assert_eq!(
            g.waiting,
            vec!["device object 2 (Dummy_Display) is not bound to a DA".to_owned()]
        );
        let mut off = s.clone();
        off.update_project(1, None, None, Some(false)).unwrap();
        assert!(desired_graphs(&off).is_empty());
    }

    #[test]
    fn a_link_with_a_range_gets_a_wrapper_depending_on_the_user_function() {
        let mut s = state();
        s.update_link(
            1,
            1,
            1,
            Some(FuncRef {
                name: "sq".into(),
                version: 1,
            }),
            vec![],
            vec![LinkParam {
                min: Some(0.0),
                max: Some(10.0),
                normalize: true,
            }],
        )
        .unwrap();
        let g = &desired_graphs(&s)[0];
        let l = g.links.values().next().unwrap();
        let user = digest("fn run(x) { x * x }");
        assert_eq!(l.spec.depends.get("user"), Some(&user));
        let w = l.spec.func.clone().unwrap();
        assert_ne!(w, user);
        assert_eq!(g.funcs.len(), 2);
        assert_eq!(g.funcs[&w].label, "the range wrapper of link 1");
        assert_eq!(digest(&g.funcs[&w].code), w);
    }

    #[test]
    fn auto_bind_takes_the_only_free_online_da_of_the_model() {
        let s = state();
        let mut devs: BTreeMap<DaId, DeviceInfo> = BTreeMap::new();
        let d = device(DISPLAY, "Dummy_Display", true);
        devs.insert(d.id, d);
        assert_eq!(auto_binds(&s, &devs), vec![(1, 2, da(DISPLAY))]);
        // Two candidates: none is chosen.
        let other = device(
            "0a1b2c3d-0000-4000-8000-000000000002",
            "Dummy_Display",
            true,
        );
        devs.insert(other.id, other);
        assert!(auto_binds(&s, &devs).is_empty());
        // Offline ones do not count; the sensor DA is bound already.
        devs.retain(|id, _| *id == da(DISPLAY));
        devs.get_mut(&da(DISPLAY)).unwrap().online = false;
        let sensor2 = device("0a1b2c3d-0000-4000-8000-000000000003", "Dummy_Sensor", true);
        devs.insert(sensor2.id, sensor2);
        assert!(auto_binds(&s, &devs).is_empty());
        let mut manual = s.clone();
        manual.update_project(1, None, Some(false), None).unwrap();
        devs.get_mut(&da(DISPLAY)).unwrap().online = true;
        assert!(auto_binds(&manual, &devs).is_empty());
    }

    #[test]
    fn objects_show_their_da() {
        let s = state();
        let p = s.project(1).unwrap();
        let mut devs = BTreeMap::new();
        let st = object_statuses(p, &devs);
        assert!(st[&1].error.as_deref().unwrap().contains("does not know"));
        assert_eq!(st[&2], ObjectStatus::default());
        let d = device(SENSOR, "Dummy_Sensor", true);
        devs.insert(d.id, d);
        let st = object_statuses(p, &devs);
        assert_eq!(st[&1].online, Some(true));
        assert_eq!(st[&1].da_name.as_deref(), Some("Dummy_Sensor-dev"));
        assert_eq!(st[&1].error, None);
    }
}
