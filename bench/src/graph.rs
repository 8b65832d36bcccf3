//! The route bench's graph (through the shared graph-API client, `iot-client`) and the join
//! functions it installs.

use std::time::Duration;

use iot_proto::wire::graph_api::{GraphOk, GraphOp};

use crate::error::BenchError;
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

/// The bench's graph: the shared graph-API client, for one graph.
#[derive(Debug)]
pub struct GraphClient {
    api: iot_client::GraphClient,
    gid: String,
}

impl GraphClient {
    pub async fn connect(
        host: &str,
        port: u16,
        client: &str,
        gid: &str,
    ) -> Result<GraphClient, BenchError> {
        let mut opts = iot_client::GraphClientOptions::new(host, port, client);
        opts.reply_timeout = REPLY_TIMEOUT;
        let api = iot_client::GraphClient::connect(opts).await?;
        Ok(GraphClient {
            api,
            gid: gid.to_owned(),
        })
    }

    /// Sends one op; its results if the controller carried it out, else why not.
    pub async fn request(&self, op: GraphOp) -> Result<GraphOk, BenchError> {
        Ok(self.api.request(&self.gid, op).await?)
    }

    /// Links the first `idfs` of `das` by their IDF, the rest by their ODF (the bench DAs'
    /// features), with default link specs.
    pub async fn link_all(
        &self,
        das: &[(iot_proto::DaId, iot_proto::Rev)],
        idfs: usize,
    ) -> Result<(), BenchError> {
        use iot_proto::wire::graph_api::{LinkRef, LinkSpec};
        use iot_proto::wire::Direction;
        for (i, (id, _)) in das.iter().enumerate() {
            let (direction, feature) = if i < idfs {
                (Direction::Idf, crate::da::IDF)
            } else {
                (Direction::Odf, crate::da::ODF)
            };
            let link = LinkRef {
                da_id: *id,
                direction,
                feature: feature
                    .parse()
                    .map_err(|_| BenchError::Setup("bad feature name"))?,
            };
            self.request(GraphOp::AddLink {
                link,
                spec: LinkSpec::default(),
            })
            .await?;
        }
        Ok(())
    }

    pub async fn close(self) {
        self.api.close().await;
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
    }
}
