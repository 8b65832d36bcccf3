//! The CCM's graph-API client over the [`BrokerHandle`] it is given (the embedded broker or
//! an external connection): requests on `iottalk/api/req/<client>/graph/<gid>` with a
//! `nonce`, replies from one subscription to `iottalk/api/res/<client>/graph/+` matched by
//! it (see [`replies`](super::replies)). Also the `show` read op, sent as raw JSON and read
//! into [`ShownGraph`].
//! Not here: what to send (see `diff`), the device API (see `devices`).

use std::collections::BTreeMap;
use std::time::Duration;

use iot_broker::BrokerHandle;
use iot_proto::topics;
use iot_proto::wire::graph_api::{Digest, GraphOk, GraphOp, GraphReply, InputType, LinkRef};
use iot_proto::wire::Direction;
use iot_proto::DaId;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::replies::{NoReply, Replies};

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

/// A graph-API client; cheap to clone.
#[derive(Debug, Clone)]
pub struct CsmClient {
    broker: BrokerHandle,
    client: String,
    replies: Replies<GraphReply>,
    timeout: Duration,
}

impl CsmClient {
    /// Subscribes to this client's graph replies (before anything is sent) and starts the
    /// task handing each reply to its request.
    pub async fn connect(
        broker: BrokerHandle,
        client: &str,
        timeout: Duration,
    ) -> Result<CsmClient, CsmError> {
        let replies = Replies::subscribe(&broker, &topics::graph_res_filter(client), |p| {
            let reply = GraphReply::from_json(p)?;
            let nonce = reply.fields.get("nonce")?.as_str()?.to_owned();
            Some((nonce, reply))
        })
        .await
        .map_err(CsmError::Broker)?;
        Ok(CsmClient {
            broker,
            client: client.to_owned(),
            replies,
            timeout,
        })
    }

    /// Sends a request body (a `nonce` is added) and returns the reply, whatever its state.
    pub async fn send(&self, gid: &str, body: Map<String, Value>) -> Result<GraphReply, CsmError> {
        let op = body
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let topic = topics::graph_req(&self.client, gid);
        match self
            .replies
            .request(&self.broker, topic, body, self.timeout)
            .await
        {
            Ok(reply) => Ok(reply),
            Err(NoReply::Broker(e)) => Err(CsmError::Broker(e)),
            Err(NoReply::Timeout) => Err(CsmError::Timeout {
                op,
                gid: gid.to_owned(),
                timeout_s: self.timeout.as_secs(),
            }),
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
