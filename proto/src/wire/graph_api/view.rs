//! What `show` answers: a graph's current state as its `graph` reply field ([`GraphView`]),
//! for a client that reconciles against it. Only what the graph API sets appears (digests,
//! links and their settings, the join, the monitor topic); no code, no data topics.
//!
//! ```json
//! {"funcs": ["<digest>", ...], "links": [{"da_id": "<uuid>", "idf": "<feature>",
//!  "func": "<digest>"|null, "input_type": ["sample"|"variant", ...], "depends": {"alias": "<digest>"},
//!  "param_no": 1|null, "tag_param_no": 0|null}, ...],
//!  "join": "<digest>"|null, "join_depends": {"alias": "<digest>"}, "monitor": "<topic>"|null}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Digest, InputType, LinkRef, LinkSpec};
use crate::ids::{DaId, FeatureName};
use crate::wire::Direction;

/// A graph as `show` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphView {
    /// The digests of the graph's functions, sorted.
    #[serde(default)]
    pub funcs: Vec<Digest>,
    /// Every link with its settings, in the order of [`LinkRef`] (DA, direction, feature).
    #[serde(default)]
    pub links: Vec<LinkView>,
    pub join: Option<Digest>,
    #[serde(default)]
    pub join_depends: BTreeMap<String, Digest>,
    /// The monitor topic while monitoring is on.
    pub monitor: Option<String>,
}

/// One link of a [`GraphView`]: on the wire `{"da_id", "idf"|"odf", "func", "input_type",
/// "depends", "param_no", "tag_param_no"}`, the fields of `add_link`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "LinkWire", try_from = "LinkWire")]
pub struct LinkView {
    pub link: LinkRef,
    /// As `add_link` and `set_df_func` set it: `param_no`/`tag_param_no` are `None` when not
    /// given (the feature's width, and 0).
    pub spec: LinkSpec,
}

/// [`LinkView`] as it is sent.
#[derive(Serialize, Deserialize)]
struct LinkWire {
    da_id: DaId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idf: Option<FeatureName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    odf: Option<FeatureName>,
    #[serde(default)]
    func: Option<Digest>,
    #[serde(default)]
    input_type: Vec<InputType>,
    #[serde(default)]
    depends: BTreeMap<String, Digest>,
    #[serde(default)]
    param_no: Option<usize>,
    #[serde(default)]
    tag_param_no: Option<usize>,
}

impl From<LinkView> for LinkWire {
    fn from(v: LinkView) -> Self {
        let LinkView { link, spec } = v;
        let (idf, odf) = match link.direction {
            Direction::Idf => (Some(link.feature), None),
            Direction::Odf => (None, Some(link.feature)),
        };
        LinkWire {
            da_id: link.da_id,
            idf,
            odf,
            func: spec.func,
            input_type: spec.input_type,
            depends: spec.depends,
            param_no: spec.param_no,
            tag_param_no: spec.tag_param_no,
        }
    }
}

impl TryFrom<LinkWire> for LinkView {
    type Error = &'static str;

    fn try_from(w: LinkWire) -> Result<Self, Self::Error> {
        let (direction, feature) = match (w.idf, w.odf) {
            (Some(f), None) => (Direction::Idf, f),
            (None, Some(f)) => (Direction::Odf, f),
            _ => return Err("a link has exactly one of `idf` and `odf`"),
        };
        Ok(LinkView {
            link: LinkRef {
                da_id: w.da_id,
                direction,
                feature,
            },
            spec: LinkSpec {
                func: w.func,
                input_type: w.input_type,
                depends: w.depends,
                param_no: w.param_no,
                tag_param_no: w.tag_param_no,
            },
        })
    }
}
