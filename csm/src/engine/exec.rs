//! One graph's execution step (spec section 5), independent of the broker so it is tested
//! directly: for a message on IDF `i`, parse it into data and tags, apply `variant` inputs,
//! run the IDF function, the join over every IDF's latest value, and each ODF function.

use serde_json::Value;

use std::sync::atomic::Ordering;

use futures::future::join_all;
use std::sync::Arc;

use super::GraphStats;
use crate::funcs::{Callable, FnError};
use crate::plan::Plan;
use iot_proto::wire::{check_depth, DepthError};

/// Why a message produced no output; goes to the monitor topic as `esm_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsmError {
    pub msg: String,
    /// What failed: `idf <da>/<feature>`, `join`, `odf <da>/<feature>`.
    pub src: String,
}

/// One message after step 1: its IDF index, data values and tags.
type Parsed = (usize, Vec<Value>, Vec<Value>);
/// One message's join arguments and its tags.
type JoinInput<'a> = (Vec<Value>, &'a [Value]);

/// The values one message produced: (ODF index, payload to publish).
pub type Outputs = Vec<(usize, Value)>;

/// Per-graph execution state kept between messages.
#[derive(Debug, Default)]
pub struct Exec {
    /// The latest value of each IDF (after its function); null until it sends.
    buf: Vec<Value>,
    /// Previous data values of each IDF, for `variant` inputs.
    prev: Vec<Option<Vec<Value>>>,
    /// `(da, feature)` of each slot, to carry values over when the plan changes.
    keys: Vec<String>,
    /// Function call counters.
    stats: Arc<GraphStats>,
    /// While the graph is monitored: the join's result for each message of the last batch
    /// (`None` where it failed), taken by [`Exec::take_joined`].
    joined: Vec<Option<Value>>,
}

fn key_of(plan: &Plan, i: usize) -> String {
    plan.idfs
        .get(i)
        .map(|p| format!("{}/{}", p.da, p.feature))
        .unwrap_or_default()
}

impl Exec {
    pub fn new(plan: &Plan) -> Self {
        Self::with_stats(plan, Arc::default())
    }

    /// An `Exec` that counts its function calls in `stats`.
    pub fn with_stats(plan: &Plan, stats: Arc<GraphStats>) -> Self {
        let mut e = Self {
            stats,
            ..Self::default()
        };
        e.adapt(plan);
        e
    }

    /// Follows a new plan, keeping the state of IDFs that are still there.
    pub fn adapt(&mut self, plan: &Plan) {
        let mut buf = vec![Value::Null; plan.idfs.len()];
        let mut prev = vec![None; plan.idfs.len()];
        let keys: Vec<String> = (0..plan.idfs.len()).map(|i| key_of(plan, i)).collect();
        for (new_i, k) in keys.iter().enumerate() {
            if let Some(old_i) = self.keys.iter().position(|o| o == k) {
                buf[new_i] = std::mem::take(&mut self.buf[old_i]);
                prev[new_i] = self.prev[old_i].take();
            }
        }
        self.buf = buf;
        self.prev = prev;
        self.keys = keys;
    }

    /// Runs the graph for one message on IDF `i`.
    pub async fn on_idf(
        &mut self,
        plan: &Plan,
        i: usize,
        payload: &[u8],
    ) -> Result<Outputs, EsmError> {
        let mut r = self.on_batch(plan, &[(i, payload)]).await;
        r.pop().unwrap_or_else(|| Ok(Vec::new()))
    }

    /// Runs the graph for consecutive messages `(IDF index, payload)`, with the same results
    /// as one at a time, in order. Calls of one stage (IDF functions, then joins, then ODF
    /// functions) are issued together, so out-of-process (Python) calls are pipelined
    /// instead of waiting one round trip per message.
    pub async fn on_batch(
        &mut self,
        plan: &Plan,
        msgs: &[(usize, &[u8])],
    ) -> Vec<Result<Outputs, EsmError>> {
        // 1. Parse, check widths, split tags, apply variant inputs (in order: stateful).
        let inputs: Vec<Result<Parsed, EsmError>> = msgs
            .iter()
            .map(|(i, payload)| self.parse(plan, *i, payload))
            .collect();
        // 2. IDF functions, all issued at once.
        let mut inputs = inputs;
        let stats = &self.stats;
        let idf_out = join_all(inputs.iter_mut().map(|r| async move {
            let (i, values, _) = r.as_mut().map_err(|e| e.clone())?;
            let values = std::mem::take(values);
            let idf = &plan.idfs[*i];
            match &idf.func {
                Some(f) => call(stats, f, values, || idf_src(plan, *i)).await,
                None => Ok(Value::Array(values)),
            }
        }))
        .await;
        // 3. Update the join buffer in order; gather each message's join input.
        let mut staged: Vec<Result<JoinInput<'_>, EsmError>> = Vec::with_capacity(msgs.len());
        for (input, out) in inputs.iter().zip(idf_out) {
            staged.push(match (input, out) {
                (Ok((i, _, tags)), Ok(v)) => {
                    self.buf[*i] = v;
                    Ok((self.join_input(plan), tags.as_slice()))
                }
                (_, Err(e)) => Err(e),
                (Err(e), _) => Err(e.clone()),
            });
        }
        // 4. Joins.
        let joined = join_all(staged.iter_mut().map(|r| async move {
            let (args, _) = r.as_mut().map_err(|e| e.clone())?;
            let mut args = std::mem::take(args);
            match &plan.join {
                Some(f) => call(stats, f, args, || "join".into()).await,
                None if plan.idfs.len() == 1 => Ok(args.pop().unwrap_or(Value::Null)),
                None => Ok(Value::Array(args)),
            }
        }))
        .await;
        // The join results, kept for the monitor only while there is one.
        let shown: Vec<Option<Value>> = if plan.monitor.is_some() {
            joined.iter().map(|r| r.as_ref().ok().cloned()).collect()
        } else {
            Vec::new()
        };
        // 5. ODF functions, then the outputs with the triggering message's tags.
        let out = join_all(staged.iter().zip(joined).map(|(st, joined)| async move {
            let (_, tags) = st.as_ref().map_err(Clone::clone)?;
            let joined = joined?;
            let mut out = Vec::with_capacity(plan.odfs.len());
            for (j, odf) in plan.odfs.iter().enumerate() {
                let v = match &odf.func {
                    Some(f) => {
                        call(stats, f, spread(&joined), || {
                            format!("odf {}/{}", odf.da, odf.feature)
                        })
                        .await?
                    }
                    None => joined.clone(),
                };
                let mut list = match v {
                    Value::Array(a) => a,
                    scalar => vec![scalar],
                };
                list.extend(tags.iter().cloned());
                out.push((j, Value::Array(list)));
            }
            Ok(out)
        }))
        .await;
        self.joined = shown;
        out
    }

    /// The join's result for each message of the last [`Exec::on_batch`], when the plan
    /// has a monitor (empty otherwise).
    pub fn take_joined(&mut self) -> Vec<Option<Value>> {
        std::mem::take(&mut self.joined)
    }

    /// The join's input: with a join function, every IDF's latest value flattened into one
    /// argument list; without one, the latest values themselves.
    fn join_input(&self, plan: &Plan) -> Vec<Value> {
        if plan.join.is_none() {
            return self.buf.clone();
        }
        let mut flat = Vec::with_capacity(self.buf.len());
        for v in &self.buf {
            match v {
                Value::Array(a) => flat.extend(a.iter().cloned()),
                other => flat.push(other.clone()),
            }
        }
        flat
    }

    /// Step 1 for one message: its data values (variant inputs applied) and its tags.
    fn parse(&mut self, plan: &Plan, i: usize, payload: &[u8]) -> Result<Parsed, EsmError> {
        let idf = &plan.idfs[i];
        let err = |msg: String| EsmError {
            msg,
            src: idf_src(plan, i),
        };
        let value = match serde_json::from_slice::<Value>(payload) {
            Ok(v) => v,
            // Past serde_json's own limit (128 levels): the same error as past ours.
            Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
                return Err(err(DepthError.to_string()))
            }
            Err(e) => return Err(err(format!("not JSON: {e}"))),
        };
        check_depth(&value).map_err(|e| err(e.to_string()))?;
        let mut values = match value {
            Value::Array(a) => a,
            scalar => vec![scalar],
        };
        let width = idf.param_no + idf.tag_param_no;
        if values.len() != width {
            return Err(err(format!(
                "expected {width} values (param_no {} + tag_param_no {}), got {}",
                idf.param_no,
                idf.tag_param_no,
                values.len()
            )));
        }
        let tags = values.split_off(idf.param_no);
        if idf.variant.iter().any(|v| *v) {
            let previous = self.prev[i].replace(values.clone());
            for (k, v) in values.iter_mut().enumerate() {
                if !idf.variant.get(k).copied().unwrap_or(false) {
                    continue;
                }
                let before = previous.as_ref().and_then(|p| p.get(k)).unwrap_or(v);
                *v = difference(v, before)
                    .ok_or_else(|| err(format!("variant input {k} needs numbers, got {v}")))?;
            }
        }
        Ok((i, values, tags))
    }
}

fn idf_src(plan: &Plan, i: usize) -> String {
    let idf = &plan.idfs[i];
    format!("idf {}/{}", idf.da, idf.feature)
}

async fn call(
    stats: &GraphStats,
    f: &Callable,
    args: Vec<Value>,
    src: impl Fn() -> String,
) -> Result<Value, EsmError> {
    let start = std::time::Instant::now();
    // Whatever a function returns obeys the same nesting limit as data entering the graph
    // (Python's worker checks it itself, before encoding).
    let result = f.call(args).await.and_then(|v| match check_depth(&v) {
        Ok(()) => Ok(v),
        Err(e) => Err(FnError(e.to_string())),
    });
    let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    stats.fn_time_ns.fetch_add(ns, Ordering::Relaxed);
    stats.fn_calls.fetch_add(1, Ordering::Relaxed);
    result.map_err(|e| {
        stats.fn_errors.fetch_add(1, Ordering::Relaxed);
        EsmError {
            msg: e.0,
            src: src(),
        }
    })
}

/// `run(*v)`: a list is spread into arguments, anything else is the one argument.
fn spread(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

fn difference(now: &Value, before: &Value) -> Option<Value> {
    match (now.as_i64(), before.as_i64()) {
        (Some(a), Some(b)) => Some(Value::from(a.wrapping_sub(b))),
        _ => {
            let d = now.as_f64()? - before.as_f64()?;
            serde_json::Number::from_f64(d).map(Value::Number)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::funcs::{FunctionsConfig, RhaiRuntime};
    use crate::plan::{IdfPlan, OdfPlan};

    fn rhai(code: &str) -> Option<Callable> {
        let rt = Arc::new(RhaiRuntime::new(&FunctionsConfig::default()));
        Some(Callable::Rhai(rt.bind(code, &[]).unwrap()))
    }

    fn idf(n: u8, func: Option<Callable>) -> IdfPlan {
        IdfPlan {
            da: format!("00000000-0000-4000-8000-0000000000{n:02}")
                .parse()
                .unwrap(),
            feature: "In".parse().unwrap(),
            topic: format!("in/{n}"),
            func,
            variant: vec![],
            param_no: 1,
            tag_param_no: 0,
        }
    }

    fn odf(n: u8, func: Option<Callable>) -> OdfPlan {
        OdfPlan {
            da: format!("00000000-0000-4000-8000-0000000001{n:02}")
                .parse()
                .unwrap(),
            feature: "Out".parse().unwrap(),
            topic: format!("out/{n}"),
            func,
            open: true,
        }
    }

    fn plan(idfs: Vec<IdfPlan>, join: Option<Callable>, odfs: Vec<OdfPlan>) -> Plan {
        Plan {
            gid: "g".into(),
            monitor: None,
            idfs,
            join,
            odfs,
        }
    }

    #[tokio::test]
    async fn single_idf_passes_through_and_scalars_are_wrapped() {
        let p = plan(vec![idf(1, None)], None, vec![odf(1, None)]);
        let mut e = Exec::new(&p);
        assert_eq!(
            e.on_idf(&p, 0, b"[7]").await.unwrap(),
            vec![(0, json!([7]))]
        );
        assert_eq!(e.on_idf(&p, 0, b"8").await.unwrap(), vec![(0, json!([8]))]);
    }

    #[tokio::test]
    async fn idf_join_and_odf_functions() {
        let p = plan(
            vec![idf(1, rhai("fn run(x) { x + 0 }"))],
            rhai("fn run(x) { x * x }"),
            vec![odf(1, None), odf(2, rhai("fn run(x) { [x, x + 1] }"))],
        );
        let mut e = Exec::new(&p);
        for n in 1..=3 {
            let out = e.on_idf(&p, 0, format!("[{n}]").as_bytes()).await.unwrap();
            assert_eq!(
                out,
                vec![(0, json!([n * n])), (1, json!([n * n, n * n + 1]))]
            );
        }
    }

    #[tokio::test]
    async fn join_over_two_idfs_with_nulls_until_heard() {
        let p = plan(
            vec![idf(1, None), idf(2, None)],
            rhai("fn run(a, b) { if b == () { a } else { a + b } }"),
            vec![odf(1, None)],
        );
        let mut e = Exec::new(&p);
        assert_eq!(
            e.on_idf(&p, 0, b"[1]").await.unwrap(),
            vec![(0, json!([1]))]
        );
        assert_eq!(
            e.on_idf(&p, 1, b"[10]").await.unwrap(),
            vec![(0, json!([11]))]
        );
        assert_eq!(
            e.on_idf(&p, 0, b"[2]").await.unwrap(),
            vec![(0, json!([12]))]
        );
        // Without a join function, several IDFs pass the list of their values.
        let p = plan(vec![idf(1, None), idf(2, None)], None, vec![odf(1, None)]);
        let mut e = Exec::new(&p);
        assert_eq!(
            e.on_idf(&p, 1, b"[5]").await.unwrap(),
            vec![(0, json!([null, [5]]))]
        );
    }

    #[tokio::test]
    async fn variant_inputs_and_tags() {
        let mut i = idf(1, None);
        i.variant = vec![true];
        i.tag_param_no = 1;
        let p = plan(vec![i], None, vec![odf(1, None)]);
        let mut e = Exec::new(&p);
        assert_eq!(
            e.on_idf(&p, 0, br#"[10, "a"]"#).await.unwrap(),
            vec![(0, json!([0, "a"]))]
        );
        assert_eq!(
            e.on_idf(&p, 0, br#"[15, "b"]"#).await.unwrap(),
            vec![(0, json!([5, "b"]))]
        );
        assert_eq!(
            e.on_idf(&p, 0, br#"[14.5, "c"]"#).await.unwrap(),
            vec![(0, json!([-0.5, "c"]))]
        );
        let err = e.on_idf(&p, 0, br#"["x", "c"]"#).await.unwrap_err();
        assert!(err.msg.contains("needs numbers"), "{err:?}");
    }

    /// `n` levels of lists around 1, as an IDF payload.
    fn nested(n: usize) -> Vec<u8> {
        format!("{}1{}", "[".repeat(n), "]".repeat(n)).into_bytes()
    }

    #[tokio::test]
    async fn one_nesting_limit_whatever_the_function() {
        use iot_proto::wire::{DepthError, MAX_DEPTH};
        let python = crate::funcs::PythonPool::new(&FunctionsConfig::default());
        let py = |code: &str| {
            let code: Arc<str> = Arc::from(code);
            Some(Callable::Python(python.bind(
                "g",
                &crate::funcs::digest(&code),
                &code,
                &[],
            )))
        };
        let limit = DepthError.to_string();
        let joins = [
            ("no function", None),
            ("Rhai", rhai("fn run(x) { x }")),
            ("Python", py("def run(x): return x\n")),
        ];
        for (what, join) in joins {
            let p = plan(vec![idf(1, None)], join, vec![odf(1, None)]);
            let mut e = Exec::new(&p);
            assert!(e.on_idf(&p, 0, &nested(MAX_DEPTH)).await.is_ok(), "{what}");
            for n in [MAX_DEPTH + 1, 127, 500] {
                let err = e.on_idf(&p, 0, &nested(n)).await.unwrap_err();
                assert_eq!(err.msg, limit, "{what}, {n} levels");
                assert!(err.src.starts_with("idf "), "{what}: {err:?}");
            }
        }
        // What a function builds obeys the same limit, with the same error.
        let builders = [
            (
                "Rhai",
                rhai("fn run(x) { let v = x; for i in 0..100 { v = [v]; } v }"),
            ),
            (
                "Python",
                py("def run(x):\n    for _ in range(100): x = [x]\n    return x\n"),
            ),
        ];
        for (what, join) in builders {
            let p = plan(vec![idf(1, None)], join, vec![odf(1, None)]);
            let mut e = Exec::new(&p);
            let err = e.on_idf(&p, 0, b"[1]").await.unwrap_err();
            assert_eq!(
                (err.msg.as_str(), err.src.as_str()),
                (limit.as_str(), "join"),
                "{what}"
            );
        }
    }

    #[tokio::test]
    async fn bad_messages_and_failing_functions_are_errors() {
        let p = plan(
            vec![idf(1, rhai("fn run(x) { x.nope() }"))],
            None,
            vec![odf(1, None)],
        );
        let mut e = Exec::new(&p);
        let err = e.on_idf(&p, 0, b"[1]").await.unwrap_err();
        assert!(err.src.starts_with("idf "), "{err:?}");
        assert!(e
            .on_idf(&p, 0, b"[1, 2]")
            .await
            .unwrap_err()
            .msg
            .contains("expected 1 values"));
        assert!(e
            .on_idf(&p, 0, b"{oops")
            .await
            .unwrap_err()
            .msg
            .contains("not JSON"));
        let p = plan(
            vec![idf(1, None)],
            rhai("fn run(x) { loop {} }"),
            vec![odf(1, None)],
        );
        let mut e = Exec::new(&p);
        let err = e.on_idf(&p, 0, b"[1]").await.unwrap_err();
        assert_eq!(err.src, "join");
    }

    #[tokio::test]
    async fn a_batch_gives_what_messages_one_at_a_time_give() {
        let p = plan(
            vec![idf(1, rhai("fn run(x) { x * 10 }")), idf(2, None)],
            rhai("fn run(a, b) { if b == () { a } else { a + b } }"),
            vec![odf(1, None), odf(2, rhai("fn run(x) { x + 1 }"))],
        );
        let msgs: Vec<(usize, &[u8])> = vec![
            (0, b"[1]"),
            (1, b"[2]"),
            (0, b"bad"),
            (0, b"[3]"),
            (1, b"[4, 5]"),
            (1, b"[6]"),
        ];
        let mut one = Exec::new(&p);
        let mut want = Vec::new();
        for (i, m) in &msgs {
            want.push(one.on_idf(&p, *i, m).await);
        }
        let mut batch = Exec::new(&p);
        assert_eq!(batch.on_batch(&p, &msgs).await, want);
        assert_eq!(want[3], Ok(vec![(0, json!([32])), (1, json!([33]))]));
    }

    #[tokio::test]
    async fn state_survives_plan_changes() {
        let p = plan(vec![idf(1, None), idf(2, None)], None, vec![odf(1, None)]);
        let mut e = Exec::new(&p);
        e.on_idf(&p, 0, b"[1]").await.unwrap();
        // IDF 2 removed, IDF 1 kept: its value stays.
        let p2 = plan(vec![idf(3, None), idf(1, None)], None, vec![odf(1, None)]);
        e.adapt(&p2);
        assert_eq!(
            e.on_idf(&p2, 0, b"[3]").await.unwrap(),
            vec![(0, json!([[3], [1]]))]
        );
    }
}
