//! Graphs and functions loaded from the database at start: links are taken again (CONNECT goes
//! out when their DAs come online, on the data topics they had) and functions bound. A link or
//! function that cannot be restored (its DA or feature is gone) is left out with a warning;
//! a document that cannot be read stops the start.

use std::sync::Arc;

use iot_proto::wire::graph_api::{Digest, LinkRef};

use super::{FuncEntry, Graph, GraphDoc, GraphLink, GraphStore, Links};
use crate::effect::Effect;
use crate::funcs::{Lang, SetupError};
use iot_proto::log::Escaped;

/// A stored graph or function that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("function {digest}: {error}")]
    Function { digest: Digest, error: SetupError },
    #[error("graph {gid}: {error}")]
    Doc {
        gid: String,
        error: serde_json::Error,
    },
}

impl GraphStore {
    /// Restores `functions` (digest, code) and `graphs` (gid, stored document).
    pub fn restore(
        &mut self,
        functions: Vec<(Digest, String)>,
        graphs: Vec<(String, String)>,
        links: &mut dyn Links,
        fx: &mut Vec<Effect>,
    ) -> Result<(), RestoreError> {
        for (digest, code) in functions {
            let lang = Lang::detect(&code).map_err(|error| RestoreError::Function {
                digest: digest.clone(),
                error,
            })?;
            self.functions.insert(
                digest,
                FuncEntry {
                    lang,
                    code: Arc::from(code),
                    refs: 0,
                },
            );
        }
        for (gid, doc) in graphs {
            let doc: GraphDoc = serde_json::from_str(&doc).map_err(|error| RestoreError::Doc {
                gid: gid.clone(),
                error,
            })?;
            self.restore_graph(&gid, doc, links, fx);
        }
        Ok(())
    }

    fn restore_graph(
        &mut self,
        gid: &str,
        doc: GraphDoc,
        links: &mut dyn Links,
        fx: &mut Vec<Effect>,
    ) {
        for d in &doc.funcs {
            if let Some(f) = self.functions.get_mut(d) {
                f.refs += 1;
            }
        }
        // The graph must exist (with its functions) for its functions to be bound.
        self.graphs.insert(
            gid.to_owned(),
            Graph {
                funcs: doc.funcs.clone(),
                join_depends: doc.join_depends.clone(),
                ..Graph::default()
            },
        );
        let join = doc.join.as_ref().and_then(|j| {
            self.bind(gid, j, &doc.join_depends)
                .map(|c| (j.clone(), c))
                .map_err(
                    |e| tracing::warn!(graph.id = ?gid, error = %Escaped(&e), "join function not restored"),
                )
                .ok()
        });
        let mut restored: Vec<(LinkRef, GraphLink)> = Vec::new();
        for (link, spec, topic) in doc.links {
            let Ok(width) = links.feature_width(&link) else {
                tracing::warn!(graph.id = ?gid, da.id = ?link.da_id, "link not restored: DA or feature gone");
                continue;
            };
            let callable = match &spec.func {
                Some(d) => match self.bind(gid, d, &spec.depends) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!(graph.id = ?gid, error = %Escaped(&e), "link function not restored");
                        continue;
                    }
                },
                None => None,
            };
            let topic = match links.acquire(&link, topic.as_deref(), fx) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(graph.id = ?gid, error = %Escaped(&e), "link not restored");
                    continue;
                }
            };
            restored.push((
                link,
                GraphLink {
                    spec,
                    topic,
                    callable,
                    width,
                },
            ));
        }
        if let Some(g) = self.graphs.get_mut(gid) {
            if let Some((j, c)) = join {
                g.join = Some(j);
                g.join_callable = Some(c);
            }
            g.links.extend(restored);
        }
        fx.extend(self.plan_effect(gid, links));
    }
}
