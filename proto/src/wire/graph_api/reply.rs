//! Replies of the graph API: what a successful op adds ([`GraphOk`]), the reply body the
//! server sends ([`reply`]: the request's fields, `state`, and the results or the `reason`),
//! and the same reply as a client reads it ([`GraphReply`]).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Digest, GraphView, OpKind};

/// What a successful op adds to its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphOk {
    /// Nothing beyond `"state": "ok"`.
    Done,
    /// `add_funcs`: the digests of the functions, in request order.
    Digests(Vec<Digest>),
    /// `set_join`: the join as it now is.
    Join {
        prev: Option<Digest>,
        new: Option<Digest>,
        depends: BTreeMap<String, Digest>,
    },
    /// `start_monitor`: where the graph's traffic and errors are published.
    Monitor { topic: String },
    /// `show`: the graph as it is, sent as the field `graph`.
    Graph(GraphView),
}

/// The reply to a request: its `fields` with the outcome added (`reason` is the error's text).
pub fn reply(fields: &Map<String, Value>, outcome: Result<&GraphOk, &str>) -> Value {
    let mut body = fields.clone();
    match outcome {
        Ok(ok) => {
            match ok {
                GraphOk::Done => {}
                GraphOk::Digests(d) => {
                    body.insert(
                        "digests".into(),
                        Value::Array(d.iter().cloned().map(Value::String).collect()),
                    );
                }
                GraphOk::Join { prev, new, depends } => {
                    let d = |x: &Option<Digest>| x.clone().map_or(Value::Null, Value::String);
                    body.insert("prev".into(), d(prev));
                    body.insert("new".into(), d(new));
                    body.insert(
                        "depends".into(),
                        Value::Object(
                            depends
                                .iter()
                                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                                .collect(),
                        ),
                    );
                }
                GraphOk::Monitor { topic } => {
                    body.insert("monitor_topics".into(), Value::String(topic.clone()));
                }
                GraphOk::Graph(view) => {
                    // Plain strings, numbers and maps: serializing cannot fail.
                    let graph = serde_json::to_value(view).unwrap_or(Value::Null);
                    body.insert("graph".into(), graph);
                }
            }
            body.insert("state".into(), "ok".into());
        }
        Err(reason) => {
            body.insert("state".into(), "error".into());
            body.insert("reason".into(), reason.into());
        }
    }
    Value::Object(body)
}

/// A reply as a client reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphReply {
    /// Every field of the reply (the request's echoed, and the results).
    pub fields: Map<String, Value>,
    /// `Ok` for `"state": "ok"`, else the `reason`.
    pub outcome: Result<(), String>,
}

impl GraphReply {
    /// Parses a reply body; `None` when it is not a reply (no `state` ok/error).
    pub fn from_json(payload: &[u8]) -> Option<GraphReply> {
        let Ok(Value::Object(fields)) = serde_json::from_slice(payload) else {
            return None;
        };
        let outcome = match fields.get("state").and_then(Value::as_str) {
            Some("ok") => Ok(()),
            Some("error") => Err(fields
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("no reason given")
                .to_owned()),
            _ => return None,
        };
        Some(GraphReply { fields, outcome })
    }

    /// The results of a successful `op` as the server sent them. For `show`, a `graph` field
    /// that is missing or not a graph gives [`GraphOk::Done`], never a graph it is not.
    pub fn ok_for(&self, op: OpKind) -> GraphOk {
        let f = &self.fields;
        let digest = |k: &str| f.get(k).and_then(Value::as_str).map(str::to_owned);
        match op {
            OpKind::AddFuncs => GraphOk::Digests(
                f.get("digests")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            OpKind::SetJoin => GraphOk::Join {
                prev: digest("prev"),
                new: digest("new"),
                depends: f
                    .get("depends")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| v.as_str().map(|d| (k.clone(), d.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            OpKind::StartMonitor => GraphOk::Monitor {
                topic: digest("monitor_topics").unwrap_or_default(),
            },
            OpKind::Show => f
                .get("graph")
                .and_then(|g| GraphView::deserialize(g).ok())
                .map_or(GraphOk::Done, GraphOk::Graph),
            _ => GraphOk::Done,
        }
    }
}
