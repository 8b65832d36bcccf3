//! `add_funcs`: `{"codes": [str], "digests": [hex]}`. Every digest must be `sha256(code)` and
//! every function must compile; otherwise nothing is added. The reply adds `digests`.

use std::sync::Arc;

use iot_migrations::das::Write;
use iot_migrations::graphs::FunctionRow;
use serde_json::{Map, Value};

use super::{unknown_graph, FuncEntry, OpResult};
use crate::funcs::{digest, Digest, Lang, Runtimes};
use crate::state::{Effect, State};

/// Largest function accepted, in bytes of code.
pub const MAX_CODE_BYTES: usize = 256 * 1024;

/// A function that passed the checks of `add_funcs`.
#[derive(Debug, Clone)]
pub struct CheckedFunc {
    pub digest: Digest,
    pub lang: Lang,
    pub code: String,
}

fn string_list(req: &Map<String, Value>, name: &str) -> Result<Vec<String>, String> {
    match req.get(name) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("`{name}` must be a list of strings")),
        Some(_) => Err(format!("`{name}` must be a list of strings")),
        None => Err(format!("missing field `{name}`")),
    }
}

/// Checks the functions of an `add_funcs` request (digests, language, compilation) before
/// the state is touched. Compiling Python needs a worker, hence async.
pub async fn check(payload: &[u8], runtimes: &Runtimes) -> Result<Vec<CheckedFunc>, String> {
    let req: Map<String, Value> = match serde_json::from_slice(payload) {
        Ok(Value::Object(m)) => m,
        _ => return Err("the request must be a JSON object".into()),
    };
    let codes = string_list(&req, "codes")?;
    let digests = string_list(&req, "digests")?;
    if codes.len() != digests.len() {
        return Err(format!(
            "`codes` has {} entries but `digests` has {}",
            codes.len(),
            digests.len()
        ));
    }
    let mut out = Vec::with_capacity(codes.len());
    for (i, (code, want)) in codes.into_iter().zip(digests).enumerate() {
        if code.len() > MAX_CODE_BYTES {
            return Err(format!("code #{i} is larger than {MAX_CODE_BYTES} bytes"));
        }
        let got = digest(&code);
        if got != want.to_ascii_lowercase() {
            return Err(format!("digest mismatch for code #{i}: sha256 of the code is {got}, the request says {want}"));
        }
        let lang = runtimes
            .check(&code)
            .await
            .map_err(|e| format!("code #{i}: {e}"))?;
        out.push(CheckedFunc {
            digest: got,
            lang,
            code,
        });
    }
    Ok(out)
}

impl State {
    pub(super) fn graph_add_funcs(
        &mut self,
        gid: &str,
        checked: Result<Vec<CheckedFunc>, String>,
        fx: &mut Vec<Effect>,
    ) -> OpResult {
        let funcs = checked?;
        let g = self.graphs.get_mut(gid).ok_or_else(|| unknown_graph(gid))?;
        let mut digests = Vec::with_capacity(funcs.len());
        for f in funcs {
            digests.push(Value::String(f.digest.clone()));
            if !g.funcs.insert(f.digest.clone()) {
                continue;
            }
            match self.functions.get_mut(&f.digest) {
                Some(e) => e.refs += 1,
                None => {
                    fx.push(Effect::Persist(Write::FunctionUpsert(FunctionRow {
                        digest: f.digest.clone(),
                        code: f.code.clone(),
                    })));
                    self.functions.insert(
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
        self.graph_changed(gid, fx);
        let mut extra = Map::new();
        extra.insert("digests".into(), Value::Array(digests));
        Ok(extra)
    }
}
