//! A graph API client (docs/graph-api.md): requests on `iottalk/api/req/<client>/graph/<gid>`,
//! each answered on `iottalk/api/res/<client>/graph/<gid>`; replies are matched by a `nonce`
//! field the controller echoes. Also the join functions the route bench installs.

use std::sync::Arc;
use std::time::Duration;

use iot_proto::topics;
use rumqttc::QoS;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::BenchError;
use crate::mqtt::{Conn, ConnCounters, ConnEvent, ConnSpec};
use crate::payload::WIDTH;

/// How long a graph request may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// The join function of the route bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// No join function: one IDF passes its value through, several pass the list of theirs.
    None,
    /// A Rhai join that returns its arguments.
    Rhai,
    /// A Python join that returns its arguments (runs in the controller's Python workers).
    Python,
}

impl Join {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Rhai => "rhai",
            Self::Python => "python",
        }
    }

    /// The join's code for `idfs` IDFs of the bench's width: it returns its (flattened)
    /// arguments as one list, so each IDF's `[pub, seq, ts, pad]` reaches the ODFs.
    pub fn code(self, idfs: usize) -> Option<String> {
        match self {
            Self::None => None,
            Self::Rhai => {
                // Rhai has no variadic functions: name every argument.
                let args: Vec<String> = (0..idfs * WIDTH).map(|i| format!("a{i}")).collect();
                let args = args.join(", ");
                Some(format!("fn run({args}) {{ [{args}] }}\n"))
            }
            Self::Python => Some("def run(*args):\n    return list(args)\n".to_owned()),
        }
    }
}

/// `sha256(code)` in hex: the id of a function in the graph API.
pub fn digest(code: &str) -> String {
    hex::encode(Sha256::digest(code.as_bytes()))
}

/// A connection that sends graph requests for one graph and waits for their replies.
#[derive(Debug)]
pub struct GraphClient {
    conn: Conn,
    req_topic: String,
    gid: String,
    next: u64,
}

impl GraphClient {
    pub async fn connect(
        host: &str,
        port: u16,
        client: &str,
        gid: &str,
        counters: Arc<ConnCounters>,
    ) -> Result<GraphClient, BenchError> {
        let res_topic = topics::graph_res(client, gid);
        let mut spec = ConnSpec::new(host, port, format!("iotctl-bench-{client}"));
        spec.forward = vec![res_topic.clone()];
        let mut conn = Conn::connect(spec, counters).await?;
        conn.subscribe(&res_topic, QoS::ExactlyOnce).await?;
        Ok(GraphClient {
            conn,
            req_topic: topics::graph_req(client, gid),
            gid: gid.to_owned(),
            next: 0,
        })
    }

    /// Sends one request; returns the reply if its state is `ok`, else fails with its reason.
    pub async fn request(&mut self, mut req: Value) -> Result<Value, BenchError> {
        let op = req["op"].as_str().unwrap_or("?").to_owned();
        self.next += 1;
        let nonce = format!("bench-{}", self.next);
        req["nonce"] = json!(nonce);
        self.conn
            .client
            .publish(
                self.req_topic.clone(),
                QoS::ExactlyOnce,
                false,
                req.to_string(),
            )
            .await
            .map_err(|_| BenchError::Publish {
                topic: self.req_topic.clone(),
            })?;
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.conn.events.recv()).await {
                Ok(Some(ConnEvent::Message { payload, .. })) => {
                    let Ok(reply) = serde_json::from_slice::<Value>(&payload) else {
                        continue;
                    };
                    if reply["nonce"] != nonce.as_str() {
                        continue;
                    }
                    if reply["state"] == "ok" {
                        return Ok(reply);
                    }
                    return Err(BenchError::GraphRefused {
                        op,
                        graph: self.gid.clone(),
                        reason: reply["reason"]
                            .as_str()
                            .unwrap_or("no reason given")
                            .to_owned(),
                    });
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err(BenchError::GraphClosed { op }),
                Err(_) => {
                    return Err(BenchError::GraphNoReply {
                        op,
                        seconds: REPLY_TIMEOUT.as_secs(),
                    })
                }
            }
        }
    }

    pub async fn close(self) {
        self.conn.disconnect().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_codes() {
        assert_eq!(Join::None.code(3), None);
        assert_eq!(
            Join::Rhai.code(1).unwrap(),
            "fn run(a0, a1, a2, a3) { [a0, a1, a2, a3] }\n"
        );
        assert!(Join::Rhai.code(2).unwrap().contains("a7]"));
        assert!(Join::Python.code(5).unwrap().starts_with("def run(*args)"));
        assert_eq!(
            digest("def run(x): return x ** 2\n"),
            "70e3d32f1c6abde67d607e3ce77dc286ecf5d0f42fcd18e6336fac5e19a6e07c"
        );
    }
}
