//! Compares a [`DesiredGraph`] with the graph the CSM shows and returns the graph-API ops
//! that make them equal, in the order they must run: attach, add the missing functions,
//! remove links, change links, add links, set the join, remove unused functions. Pure: the
//! ops are sent by `reconcile`.

use std::collections::BTreeMap;

use iot_proto::wire::graph_api::{Digest, GraphOp, LinkRef, LinkSpec};

use super::csm::ShownGraph;
use super::desired::DesiredGraph;

/// What a step concerns: where its refusal is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Concern {
    /// The graph as a whole (`attach`): the network application's state.
    Graph,
    /// A function to add, named like `function `f` version 2`.
    Func(String),
    /// A link, by the CCM's link id.
    Link(u32),
    /// A link the CCM no longer wants.
    Stale,
    /// The join function.
    Join,
    /// Removing functions nothing uses any more.
    Cleanup,
}

/// One op to send, what it concerns, and what it changes in plain words.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub op: GraphOp,
    pub concern: Concern,
    pub what: String,
}

fn link_words(r: &LinkRef) -> String {
    format!("{} `{}` of DA {}", r.direction.as_str(), r.feature, r.da_id)
}

/// The ops that turn `shown` (`None`: no such graph) into `d`.
pub fn diff(d: &DesiredGraph, shown: Option<&ShownGraph>) -> Vec<Step> {
    let mut steps = Vec::new();
    let empty = ShownGraph::default();
    let shown = match shown {
        Some(s) => s,
        None => {
            steps.push(Step {
                op: GraphOp::Attach,
                concern: Concern::Graph,
                what: format!("created graph {}", d.gid),
            });
            &empty
        }
    };
    for (digest, src) in &d.funcs {
        if !shown.funcs.contains(digest) {
            steps.push(Step {
                op: GraphOp::AddFuncs {
                    codes: vec![src.code.clone()],
                    digests: vec![digest.clone()],
                },
                concern: Concern::Func(src.label.clone()),
                what: format!("added {}", src.label),
            });
        }
    }
    let current: BTreeMap<LinkRef, (LinkSpec, Option<Digest>)> = shown
        .links
        .iter()
        .filter_map(|l| {
            let spec = LinkSpec {
                func: l.func.clone(),
                input_type: l.input_type.clone(),
                depends: l.depends.clone(),
                param_no: l.param_no,
                tag_param_no: l.tag_param_no,
            };
            Some((l.link_ref()?, (spec, l.func.clone())))
        })
        .collect();
    for r in current.keys().filter(|r| !d.links.contains_key(*r)) {
        steps.push(Step {
            op: GraphOp::RmLink { link: r.clone() },
            concern: Concern::Stale,
            what: format!(
                "removed link {} (not in the network application)",
                link_words(r)
            ),
        });
    }
    let mut adds = Vec::new();
    for (r, want) in &d.links {
        let add = Step {
            op: GraphOp::AddLink {
                link: r.clone(),
                spec: want.spec.clone(),
            },
            concern: Concern::Link(want.id),
            what: format!("added link {} ({})", want.id, link_words(r)),
        };
        let Some((have, prev)) = current.get(r) else {
            adds.push(add);
            continue;
        };
        let counts_differ = (want.spec.param_no.is_some() && want.spec.param_no != have.param_no)
            || (want.spec.tag_param_no.is_some() && want.spec.tag_param_no != have.tag_param_no);
        if counts_differ {
            steps.push(Step {
                op: GraphOp::RmLink { link: r.clone() },
                concern: Concern::Link(want.id),
                what: format!("removed link {} to add it again", want.id),
            });
            adds.push(add);
        } else if want.spec.func != have.func
            || want.spec.input_type != have.input_type
            || want.spec.depends != have.depends
        {
            steps.push(Step {
                op: GraphOp::SetDfFunc {
                    link: r.clone(),
                    prev: prev.clone(),
                    new: want.spec.func.clone(),
                    depends: want.spec.depends.clone(),
                    input_type: Some(want.spec.input_type.clone()),
                },
                concern: Concern::Link(want.id),
                what: format!(
                    "changed the function of link {} ({})",
                    want.id,
                    link_words(r)
                ),
            });
        }
    }
    steps.extend(adds);
    if d.join != shown.join || !shown.join_depends.is_empty() {
        steps.push(Step {
            op: GraphOp::SetJoin {
                prev: shown.join.clone(),
                new: d.join.clone(),
                depends: BTreeMap::new(),
            },
            concern: Concern::Join,
            what: "set the join function".to_owned(),
        });
    }
    let unused: Vec<Digest> = shown
        .funcs
        .iter()
        .filter(|f| !d.funcs.contains_key(*f))
        .cloned()
        .collect();
    if !unused.is_empty() {
        steps.push(Step {
            what: format!("removed {} unused function(s)", unused.len()),
            op: GraphOp::RmFuncs { digests: unused },
            concern: Concern::Cleanup,
        });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::csm::ShownLink;
    use crate::apply::desired::desired_graphs;
    use crate::apply::desired::tests::{da, state, SENSOR};
    use iot_proto::wire::graph_api::{digest, OpKind};

    fn kinds(steps: &[Step]) -> Vec<OpKind> {
        steps.iter().map(|s| s.op.kind()).collect()
    }

    fn sq() -> Digest {
        digest("fn run(x) { x * x }")
    }

    fn shown_link(func: Option<Digest>) -> ShownLink {
        ShownLink {
            da_id: da(SENSOR),
            idf: Some("Temp".into()),
            odf: None,
            func,
            input_type: vec![],
            depends: BTreeMap::new(),
            param_no: None,
            tag_param_no: None,
        }
    }

    #[test]
    fn a_missing_graph_is_built_from_scratch() {
        let d = &desired_graphs(&state())[0];
        let steps = diff(d, None);
        assert_eq!(
            kinds(&steps),
            vec![OpKind::Attach, OpKind::AddFuncs, OpKind::AddLink]
        );
        assert_eq!(steps[2].concern, Concern::Link(1));
        assert_eq!(
            steps[1].concern,
            Concern::Func("function `sq` version 1".into())
        );
    }

    #[test]
    fn an_equal_graph_needs_nothing() {
        let d = &desired_graphs(&state())[0];
        let shown = ShownGraph {
            funcs: vec![sq()],
            links: vec![shown_link(Some(sq()))],
            ..ShownGraph::default()
        };
        assert!(diff(d, Some(&shown)).is_empty());
    }

    #[test]
    fn differences_are_fixed_in_order() {
        let d = &desired_graphs(&state())[0];
        let mut stale = shown_link(None);
        stale.idf = Some("Other".into());
        let shown = ShownGraph {
            funcs: vec!["old".into()],
            links: vec![shown_link(Some("old".into())), stale],
            join: Some("old".into()),
            ..ShownGraph::default()
        };
        let steps = diff(d, Some(&shown));
        assert_eq!(
            kinds(&steps),
            vec![
                OpKind::AddFuncs,
                OpKind::RmLink,
                OpKind::SetDfFunc,
                OpKind::SetJoin,
                OpKind::RmFuncs
            ]
        );
        let GraphOp::SetDfFunc { prev, new, .. } = &steps[2].op else {
            panic!()
        };
        assert_eq!(prev.as_deref(), Some("old"));
        assert_eq!(new, &Some(sq()));
        let GraphOp::SetJoin { prev, new, .. } = &steps[3].op else {
            panic!()
        };
        assert_eq!((prev.as_deref(), new), (Some("old"), &None));
        assert_eq!(
            steps[4].op,
            GraphOp::RmFuncs {
                digests: vec!["old".into()]
            }
        );
    }

    #[test]
    fn a_different_param_count_re_adds_the_link() {
        let mut d = desired_graphs(&state())[0].clone();
        for l in d.links.values_mut() {
            l.spec.param_no = Some(2);
        }
        let shown = ShownGraph {
            funcs: vec![sq()],
            links: vec![shown_link(Some(sq()))],
            ..ShownGraph::default()
        };
        assert_eq!(
            kinds(&diff(&d, Some(&shown))),
            vec![OpKind::RmLink, OpKind::AddLink]
        );
    }
}
