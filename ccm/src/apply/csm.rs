//! The CCM's graph-API client over the [`BrokerHandle`] it is given (the embedded broker or
//! an external connection): requests on `iottalk/api/req/<client>/graph/<gid>` with a
//! `nonce`, replies from one subscription to `iottalk/api/res/<client>/graph/+` matched by
//! it. Also the `show` read op, sent as raw JSON and read into [`ShownGraph`].
//! Not here: what to send (see `diff`), the device API (see `devices`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use iot_broker::{BrokerHandle, Message, QoS};
use iot_proto::topics;
use iot_proto::wire::graph_api::{Digest, GraphOk, GraphOp, GraphReply, InputType, LinkRef};
use iot_proto::wire::Direction;
use iot_proto::DaId;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

/// How long a request waits for its reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a graph request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsmError {
    #[error("the CSM refused `{op}` on graph {gid}: {reason}")]
    Refused {
        op: String,
        gid: String,
        reason: String,
    },
    #[error("no reply from the CSM to `{op}` on graph {gid} within {timeout_s} s: is the CSM running on this broker?")]
    Timeout {
        op: String,
        gid: String,
        timeout_s: u64,
    },
    #[error("the broker refused a graph request: {0}")]
    Broker(String),
    #[error("the CSM's reply to `{op}` on graph {gid} is not understood: {why}")]
    BadReply {
        op: String,
        gid: String,
        why: String,
    },
}

impl CsmError {
    /// The CSM's own words for a refusal, else the whole message.
    pub fn reason(&self) -> String {
        match self {
            Self::Refused { reason, .. } => reason.clone(),
            other => other.to_string(),
        }
    }
}

/// Requests waiting for their reply, by nonce. A std mutex: held for an insert or a remove,
/// never across an `.await`.
type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<GraphReply>>>>;

fn lock(w: &Waiting) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<GraphReply>>> {
    w.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Aborts the reply task when the client is dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A graph-API client; cheap to clone.
#[derive(Debug, Clone)]
pub struct CsmClient {
    broker: BrokerHandle,
    client: String,
    waiting: Waiting,
    timeout: Duration,
    _task: Arc<AbortOnDrop>,
}

impl CsmClient {
    /// Subscribes to this client's graph replies (before anything is sent) and starts the
    /// task handing each reply to its request.
    pub async fn connect(
        broker: BrokerHandle,
        client: &str,
        timeout: Duration,
    ) -> Result<CsmClient, CsmError> {
        let mut sub = broker
            .subscribe(&topics::graph_res_filter(client), 256)
            .await
            .map_err(|e| CsmError::Broker(e.to_string()))?;
        let waiting: Waiting = Arc::default();
        let w = waiting.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.recv().await {
                let Some(reply) = GraphReply::from_json(&msg.payload) else {
                    continue;
                };
                let nonce = reply.fields.get("nonce").and_then(Value::as_str);
                if let Some(tx) = nonce.and_then(|n| lock(&w).remove(n)) {
                    let _ = tx.send(reply);
                }
            }
        });
        Ok(CsmClient {
            broker,
            client: client.to_owned(),
            waiting,
            timeout,
            _task: Arc::new(AbortOnDrop(task.abort_handle())),
        })
    }

    /// Sends a request body (a `nonce` is added) and returns the reply, whatever its state.
    pub async fn send(
        &self,
        gid: &str,
        mut body: Map<String, Value>,
    ) -> Result<GraphReply, CsmError> {
        let op = body
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        body.insert("nonce".into(), Value::String(nonce.clone()));
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(nonce.clone(), tx);
        let msg = Message::new(
            topics::graph_req(&self.client, gid),
            Value::Object(body).to_string(),
            QoS::ExactlyOnce,
            false,
        );
        if let Err(e) = self.broker.publish(msg).await {
            lock(&self.waiting).remove(&nonce);
            return Err(CsmError::Broker(e.to_string()));
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) | Err(_) => {
                lock(&self.waiting).remove(&nonce);
                Err(CsmError::Timeout {
                    op,
                    gid: gid.to_owned(),
                    timeout_s: self.timeout.as_secs(),
                })
            }
        }
    }

    /// Sends a typed op; its results, or why it failed.
    #[tracing::instrument(level = "debug", skip(self, op), fields(graph.id = %gid, graph.op = op.kind().as_str()))]
    pub async fn request(&self, gid: &str, op: GraphOp) -> Result<GraphOk, CsmError> {
        let kind = op.kind();
        let reply = self.send(gid, op.to_json()).await?;
        match reply.outcome {
            Ok(()) => Ok(reply.ok_for(kind)),
            Err(reason) => Err(CsmError::Refused {
                op: kind.as_str().to_owned(),
                gid: gid.to_owned(),
                reason,
            }),
        }
    }

    /// `show`: the graph as the CSM has it, `None` when it does not exist.
    pub async fn show(&self, gid: &str) -> Result<Option<ShownGraph>, CsmError> {
        let mut body = Map::new();
        body.insert("op".into(), "show".into());
        let reply = self.send(gid, body).await?;
        parse_show(gid, reply)
    }
}

/// Reads a `show` reply.
pub fn parse_show(gid: &str, reply: GraphReply) -> Result<Option<ShownGraph>, CsmError> {
    match reply.outcome {
        Ok(()) => {
            let graph = reply.fields.get("graph").cloned().unwrap_or(Value::Null);
            serde_json::from_value::<ShownGraph>(graph)
                .map(Some)
                .map_err(|e| CsmError::BadReply {
                    op: "show".into(),
                    gid: gid.to_owned(),
                    why: e.to_string(),
                })
        }
        Err(reason) if reason.starts_with("Unknown graph id") => Ok(None),
        Err(reason) => Err(CsmError::Refused {
            op: "show".into(),
            gid: gid.to_owned(),
            reason,
        }),
    }
}

/// A graph as `show` tells it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ShownGraph {
    #[serde(default)]
    pub funcs: Vec<Digest>,
    #[serde(default)]
    pub links: Vec<ShownLink>,
    #[serde(default)]
    pub join: Option<Digest>,
    #[serde(default)]
    pub join_depends: BTreeMap<String, Digest>,
    #[serde(default)]
    pub monitor: Option<String>,
}

/// One link of a [`ShownGraph`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ShownLink {
    pub da_id: DaId,
    #[serde(default)]
    pub idf: Option<String>,
    #[serde(default)]
    pub odf: Option<String>,
    #[serde(default)]
    pub func: Option<Digest>,
    #[serde(default)]
    pub input_type: Vec<InputType>,
    #[serde(default)]
    pub depends: BTreeMap<String, Digest>,
    #[serde(default)]
    pub param_no: Option<usize>,
    #[serde(default)]
    pub tag_param_no: Option<usize>,
}

impl ShownLink {
    /// The link's ends; `None` when its feature is not a valid name or both/neither side.
    pub fn link_ref(&self) -> Option<LinkRef> {
        let (direction, name) = match (&self.idf, &self.odf) {
            (Some(f), None) => (Direction::Idf, f),
            (None, Some(f)) => (Direction::Odf, f),
            _ => return None,
        };
        Some(LinkRef {
            da_id: self.da_id,
            direction,
            feature: name.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reply(v: Value) -> GraphReply {
        GraphReply::from_json(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn show_replies_are_read() {
        let da = "df682f01-7c3a-49fd-8f5f-72ce0b6e68c0";
        let r = reply(json!({"op": "show", "state": "ok", "graph": {
            "funcs": ["aa"], "links": [{"da_id": da, "idf": "Temp", "func": "aa",
            "input_type": ["variant"], "depends": {}, "param_no": null, "tag_param_no": null}],
            "join": null, "join_depends": {}, "monitor": "iottalk/monitor/x"}}));
        let g = parse_show("g", r).unwrap().unwrap();
        assert_eq!(g.funcs, vec!["aa".to_owned()]);
        assert_eq!(g.monitor.as_deref(), Some("iottalk/monitor/x"));
        let l = g.links[0].link_ref().unwrap();
        assert_eq!(l.direction, Direction::Idf);
        assert_eq!(l.feature.as_str(), "Temp");
        let r = reply(json!({"op": "show", "state": "error", "reason": "Unknown graph id g"}));
        assert_eq!(parse_show("g", r).unwrap(), None);
        let r = reply(json!({"op": "show", "state": "error", "reason": "unknown op: `show`"}));
        assert!(parse_show("g", r).is_err());
    }
}
