//! `add_funcs`: `{"codes": [str], "digests": [hex]}`. Every digest must be `sha256(code)` and
//! every function must compile; otherwise nothing is added. The reply adds `digests`.
//! Checking compiles Python in a worker, so it runs outside the store ([`check`], async),
//! before [`add`] changes anything.

use std::sync::Arc;

use iot_migrations::das::Write;
use iot_migrations::graphs::FunctionRow;
use iot_proto::wire::graph_api::GraphOk;

use super::{FuncEntry, GraphError, GraphStore, Links};
use crate::effect::Effect;
use crate::funcs::{digest, Digest, Lang, Runtimes};

/// Largest function accepted, in bytes of code.
pub const MAX_CODE_BYTES: usize = 256 * 1024;

/// A function that passed the checks of `add_funcs`.
#[derive(Debug, Clone)]
pub struct CheckedFunc {
    pub digest: Digest,
    pub lang: Lang,
    pub code: String,
}

/// Checks the functions of an `add_funcs` request (size, digest, language, compilation).
pub async fn check(
    codes: Vec<String>,
    digests: Vec<Digest>,
    runtimes: &Runtimes,
) -> Result<Vec<CheckedFunc>, GraphError> {
    let mut out = Vec::with_capacity(codes.len());
    for (index, (code, want)) in codes.into_iter().zip(digests).enumerate() {
        if code.len() > MAX_CODE_BYTES {
            return Err(GraphError::CodeTooLarge {
                index,
                max: MAX_CODE_BYTES,
            });
        }
        let got = digest(&code);
        if got != want.to_ascii_lowercase() {
            return Err(GraphError::DigestMismatch { index, got, want });
        }
        let lang = runtimes
            .check(&code)
            .await
            .map_err(|error| GraphError::Code { index, error })?;
        out.push(CheckedFunc {
            digest: got,
            lang,
            code,
        });
    }
    Ok(out)
}

/// Adds checked functions to graph `gid` (and to the store when new).
pub(super) fn add(
    store: &mut GraphStore,
    gid: &str,
    funcs: Vec<CheckedFunc>,
    links: &dyn Links,
    fx: &mut Vec<Effect>,
) -> Result<GraphOk, GraphError> {
    let g = store.graph_mut(gid)?;
    let mut digests = Vec::with_capacity(funcs.len());
    let mut new = Vec::new();
    for f in funcs {
        digests.push(f.digest.clone());
        if g.funcs.insert(f.digest.clone()) {
            new.push(f);
        }
    }
    for f in new {
        match store.functions.get_mut(&f.digest) {
            Some(e) => e.refs += 1,
            None => {
                fx.push(Effect::Persist(Write::FunctionUpsert(FunctionRow {
                    digest: f.digest.clone(),
                    code: f.code.clone(),
                })));
                store.functions.insert(
                    f.digest,
                    FuncEntry {
                        lang: f.lang,
                        code: Arc::from(f.code),
                        refs: 1,
                    },
                );
            }
        }
    }
    store.changed(gid, links, fx);
    Ok(GraphOk::Digests(digests))
}
