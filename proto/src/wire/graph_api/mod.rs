//! The graph API (spec section 4): requests on `iottalk/api/req/<client>/graph/<gid>`, each
//! answered on `iottalk/api/res/<client>/graph/<gid>` with the request's own fields plus
//! `"state": "ok"` (and the op's results) or `"state": "error"` and a `reason`.
//!
//! The server parses a request once, here, into a [`GraphRequest`] (its fields, kept to be
//! echoed, and a typed [`GraphOp`]); a client builds the same [`GraphOp`] and sends
//! [`GraphOp::to_json`]. Every refusal of a malformed request is a [`GraphApiError`] whose
//! text is the `reason` the caller reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::Direction;
use crate::ids::{DaId, FeatureName};

mod reply;
mod view;

pub use reply::{reply, GraphOk, GraphReply};
pub use view::{GraphView, LinkView};

/// A function's identity: `sha256(code)` in lowercase hex.
pub type Digest = String;

/// The digest of `code`: `sha256` of its UTF-8 bytes, in lowercase hex.
pub fn digest(code: &str) -> Digest {
    hex::encode(Sha256::digest(code.as_bytes()))
}

/// Largest `param_no`/`tag_param_no` accepted.
pub const MAX_PARAMS: usize = 1024;

/// How an IDF input is fed to its function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// The value as sent.
    Sample,
    /// The difference from the previous value of the same input.
    Variant,
}

/// One side of a link: a DA's input or output feature.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LinkRef {
    pub da_id: DaId,
    pub direction: Direction,
    pub feature: FeatureName,
}

/// A link's settings, as `add_link` sets them and `set_df_func` changes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSpec {
    pub func: Option<Digest>,
    #[serde(default)]
    pub input_type: Vec<InputType>,
    #[serde(default)]
    pub depends: BTreeMap<String, Digest>,
    /// Data values per message; `None` = the feature's width from its registration.
    pub param_no: Option<usize>,
    /// Tag values after the data values; `None` = 0.
    pub tag_param_no: Option<usize>,
}

/// The ops of the graph API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Attach,
    Detach,
    AddFuncs,
    RmFuncs,
    AddLink,
    RmLink,
    SetJoin,
    SetDfFunc,
    StartMonitor,
    StopMonitor,
    Show,
}

impl OpKind {
    const ALL: [OpKind; 11] = [
        Self::Attach,
        Self::Detach,
        Self::AddFuncs,
        Self::RmFuncs,
        Self::AddLink,
        Self::RmLink,
        Self::SetJoin,
        Self::SetDfFunc,
        Self::StartMonitor,
        Self::StopMonitor,
        Self::Show,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attach => "attach",
            Self::Detach => "detach",
            Self::AddFuncs => "add_funcs",
            Self::RmFuncs => "rm_funcs",
            Self::AddLink => "add_link",
            Self::RmLink => "rm_link",
            Self::SetJoin => "set_join",
            Self::SetDfFunc => "set_df_func",
            Self::StartMonitor => "start_monitor",
            Self::StopMonitor => "stop_monitor",
            Self::Show => "show",
        }
    }

    pub fn parse(name: &str) -> Option<OpKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// One graph-API request, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphOp {
    /// Creates the graph if it does not exist; every other op needs it.
    Attach,
    /// Destroys the graph.
    Detach,
    /// Adds functions; `digests[i]` must be `sha256(codes[i])` (checked by the server).
    AddFuncs {
        codes: Vec<String>,
        digests: Vec<Digest>,
    },
    RmFuncs {
        digests: Vec<Digest>,
    },
    AddLink {
        link: LinkRef,
        spec: LinkSpec,
    },
    RmLink {
        link: LinkRef,
    },
    /// Replaces the join function; `prev` must be the current one (optimistic concurrency).
    SetJoin {
        prev: Option<Digest>,
        new: Option<Digest>,
        depends: BTreeMap<String, Digest>,
    },
    /// Replaces one link's function, with the same `prev` check; `input_type` when given.
    SetDfFunc {
        link: LinkRef,
        prev: Option<Digest>,
        new: Option<Digest>,
        depends: BTreeMap<String, Digest>,
        input_type: Option<Vec<InputType>>,
    },
    StartMonitor,
    StopMonitor,
    /// Reads the graph: changes nothing; the reply adds `graph` ([`GraphView`]).
    Show,
}

/// Why a graph-API request was refused before anything was looked up; the text is the
/// `reason` of the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphApiError {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("the request must be a JSON object")]
    NotObject,
    #[error("missing field `op`")]
    MissingOp,
    #[error("unknown op: `{0}`")]
    UnknownOp(String),
    #[error("Unknown graph id {0}")]
    UnknownGraph(String),
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("missing field `digests` (a list of function digests)")]
    MissingDigests,
    #[error("`{0}` must be a string")]
    NotString(&'static str),
    #[error("`{0}` must be a list of strings")]
    NotStringList(&'static str),
    #[error("`{0}` must be a function digest or null")]
    NotDigest(&'static str),
    #[error("`depends` must be an object {{alias: digest}}")]
    DependsNotObject,
    #[error("`depends.{0}` must be a function digest")]
    DependsEntry(String),
    #[error("`input_type` must be a list of \"sample\" or \"variant\"")]
    InputType,
    #[error("`da_id`: {0}")]
    DaId(String),
    #[error("exactly one of `idf` and `odf` (a feature name) is required")]
    LinkSide,
    #[error("`{side}`: {why}")]
    Feature { side: &'static str, why: String },
    #[error("`{name}` must be an integer from {min} to {MAX_PARAMS}")]
    Count { name: &'static str, min: usize },
    #[error("`codes` has {codes} entries but `digests` has {digests}")]
    CountMismatch { codes: usize, digests: usize },
}

/// A request as received: its fields (echoed in the reply) and its op.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphRequest {
    pub fields: Map<String, Value>,
    pub op: GraphOp,
}

/// A request that could not be parsed: what to echo (nothing when the body was not a JSON
/// object), the op it named if any, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedRequest {
    pub fields: Map<String, Value>,
    pub kind: Option<OpKind>,
    pub error: GraphApiError,
}

impl GraphRequest {
    /// Parses a request body. Callers answer an op other than `attach` on a graph that does
    /// not exist with [`GraphApiError::UnknownGraph`] before its own errors (`kind` says which
    /// op a refused request named).
    pub fn parse(payload: &[u8]) -> Result<GraphRequest, Box<RefusedRequest>> {
        let refuse = |fields, kind, error| {
            Box::new(RefusedRequest {
                fields,
                kind,
                error,
            })
        };
        let fields = match serde_json::from_slice(payload) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(refuse(Map::new(), None, GraphApiError::NotObject)),
            Err(e) => return Err(refuse(Map::new(), None, GraphApiError::Json(e.to_string()))),
        };
        let kind = match fields.get("op") {
            Some(Value::String(name)) => match OpKind::parse(name) {
                Some(k) => k,
                None => {
                    let e = GraphApiError::UnknownOp(name.clone());
                    return Err(refuse(fields, None, e));
                }
            },
            Some(_) | None => return Err(refuse(fields, None, GraphApiError::MissingOp)),
        };
        match GraphOp::from_fields(kind, &fields) {
            Ok(op) => Ok(GraphRequest { fields, op }),
            Err(e) => Err(refuse(fields, Some(kind), e)),
        }
    }
}

type Fields = Map<String, Value>;

fn string(req: &Fields, name: &'static str) -> Result<String, GraphApiError> {
    match req.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(GraphApiError::NotString(name)),
        None => Err(GraphApiError::Missing(name)),
    }
}

fn string_list(req: &Fields, name: &'static str) -> Result<Vec<String>, GraphApiError> {
    match req.get(name) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(GraphApiError::NotStringList(name)),
        Some(_) => Err(GraphApiError::NotStringList(name)),
        None => Err(GraphApiError::Missing(name)),
    }
}

fn opt_digest(req: &Fields, name: &'static str) -> Result<Option<Digest>, GraphApiError> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(GraphApiError::NotDigest(name)),
    }
}

fn depends(req: &Fields) -> Result<BTreeMap<String, Digest>, GraphApiError> {
    match req.get("depends") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(d) => Ok((k.clone(), d.clone())),
                _ => Err(GraphApiError::DependsEntry(k.clone())),
            })
            .collect(),
        Some(_) => Err(GraphApiError::DependsNotObject),
    }
}

fn input_type(req: &Fields) -> Result<Vec<InputType>, GraphApiError> {
    match req.get("input_type") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => Vec::<InputType>::deserialize(v).map_err(|_| GraphApiError::InputType),
    }
}

fn count(req: &Fields, name: &'static str, min: usize) -> Result<Option<usize>, GraphApiError> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (min..=MAX_PARAMS).contains(n))
            .map(Some)
            .ok_or(GraphApiError::Count { name, min }),
    }
}

fn link(req: &Fields) -> Result<LinkRef, GraphApiError> {
    let da_id: DaId = string(req, "da_id")?
        .parse()
        .map_err(|e: crate::IdError| GraphApiError::DaId(e.to_string()))?;
    let (direction, name) = match (req.get("idf"), req.get("odf")) {
        (Some(Value::String(f)), None | Some(Value::Null)) => (Direction::Idf, f),
        (None | Some(Value::Null), Some(Value::String(f))) => (Direction::Odf, f),
        _ => return Err(GraphApiError::LinkSide),
    };
    let feature = name
        .parse()
        .map_err(|e: crate::IdError| GraphApiError::Feature {
            side: direction.as_str(),
            why: e.to_string(),
        })?;
    Ok(LinkRef {
        da_id,
        direction,
        feature,
    })
}

impl GraphOp {
    pub fn kind(&self) -> OpKind {
        match self {
            Self::Attach => OpKind::Attach,
            Self::Detach => OpKind::Detach,
            Self::AddFuncs { .. } => OpKind::AddFuncs,
            Self::RmFuncs { .. } => OpKind::RmFuncs,
            Self::AddLink { .. } => OpKind::AddLink,
            Self::RmLink { .. } => OpKind::RmLink,
            Self::SetJoin { .. } => OpKind::SetJoin,
            Self::SetDfFunc { .. } => OpKind::SetDfFunc,
            Self::StartMonitor => OpKind::StartMonitor,
            Self::StopMonitor => OpKind::StopMonitor,
            Self::Show => OpKind::Show,
        }
    }

    /// The op `kind` from a request's fields.
    pub fn from_fields(kind: OpKind, req: &Fields) -> Result<GraphOp, GraphApiError> {
        Ok(match kind {
            OpKind::Attach => Self::Attach,
            OpKind::Detach => Self::Detach,
            OpKind::StartMonitor => Self::StartMonitor,
            OpKind::StopMonitor => Self::StopMonitor,
            OpKind::Show => Self::Show,
            OpKind::AddFuncs => {
                let codes = string_list(req, "codes")?;
                let digests = string_list(req, "digests")?;
                if codes.len() != digests.len() {
                    return Err(GraphApiError::CountMismatch {
                        codes: codes.len(),
                        digests: digests.len(),
                    });
                }
                Self::AddFuncs { codes, digests }
            }
            OpKind::RmFuncs => match req.get("digests") {
                Some(Value::Array(_)) => Self::RmFuncs {
                    digests: string_list(req, "digests")?,
                },
                _ => return Err(GraphApiError::MissingDigests),
            },
            OpKind::AddLink => {
                let link = link(req)?;
                let spec = LinkSpec {
                    func: opt_digest(req, "func")?,
                    depends: depends(req)?,
                    input_type: input_type(req)?,
                    param_no: count(req, "param_no", 1)?,
                    tag_param_no: count(req, "tag_param_no", 0)?,
                };
                Self::AddLink { link, spec }
            }
            OpKind::RmLink => Self::RmLink { link: link(req)? },
            OpKind::SetJoin => Self::SetJoin {
                prev: opt_digest(req, "prev")?,
                new: opt_digest(req, "new")?,
                depends: depends(req)?,
            },
            OpKind::SetDfFunc => Self::SetDfFunc {
                link: link(req)?,
                prev: opt_digest(req, "prev")?,
                new: opt_digest(req, "new")?,
                depends: depends(req)?,
                input_type: req
                    .contains_key("input_type")
                    .then(|| input_type(req))
                    .transpose()?,
            },
        })
    }

    /// The request body a client sends (without the fields it adds itself, like a nonce).
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("op".into(), self.kind().as_str().into());
        let digest_or_null = |d: &Option<Digest>| d.clone().map_or(Value::Null, Value::String);
        let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
        let deps = |d: &BTreeMap<String, Digest>| {
            Value::Object(
                d.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )
        };
        let put_link = |m: &mut Map<String, Value>, l: &LinkRef| {
            m.insert("da_id".into(), l.da_id.to_string().into());
            m.insert(l.direction.as_str().into(), l.feature.to_string().into());
        };
        match self {
            Self::Attach | Self::Detach | Self::StartMonitor | Self::StopMonitor | Self::Show => {}
            Self::AddFuncs { codes, digests } => {
                m.insert("codes".into(), strings(codes));
                m.insert("digests".into(), strings(digests));
            }
            Self::RmFuncs { digests } => {
                m.insert("digests".into(), strings(digests));
            }
            Self::AddLink { link, spec } => {
                put_link(&mut m, link);
                m.insert("func".into(), digest_or_null(&spec.func));
                if !spec.input_type.is_empty() {
                    m.insert("input_type".into(), serde_json::json!(spec.input_type));
                }
                if !spec.depends.is_empty() {
                    m.insert("depends".into(), deps(&spec.depends));
                }
                if let Some(n) = spec.param_no {
                    m.insert("param_no".into(), n.into());
                }
                if let Some(n) = spec.tag_param_no {
                    m.insert("tag_param_no".into(), n.into());
                }
            }
            Self::RmLink { link } => put_link(&mut m, link),
            Self::SetJoin { prev, new, depends } => {
                m.insert("prev".into(), digest_or_null(prev));
                m.insert("new".into(), digest_or_null(new));
                if !depends.is_empty() {
                    m.insert("depends".into(), deps(depends));
                }
            }
            Self::SetDfFunc {
                link,
                prev,
                new,
                depends,
                input_type,
            } => {
                put_link(&mut m, link);
                m.insert("prev".into(), digest_or_null(prev));
                m.insert("new".into(), digest_or_null(new));
                if !depends.is_empty() {
                    m.insert("depends".into(), deps(depends));
                }
                if let Some(t) = input_type {
                    m.insert("input_type".into(), serde_json::json!(t));
                }
            }
        }
        m
    }

    /// `add_funcs` for `codes`, with their digests computed here.
    pub fn add_funcs<S: Into<String>>(codes: impl IntoIterator<Item = S>) -> GraphOp {
        let codes: Vec<String> = codes.into_iter().map(Into::into).collect();
        let digests = codes.iter().map(|c| digest(c)).collect();
        Self::AddFuncs { codes, digests }
    }
}

#[cfg(test)]
mod tests;
