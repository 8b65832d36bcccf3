//! Rhai functions: compiled once (per function and set of dependencies), run in-process in a
//! sandbox: operation, call-depth and size limits, no file or module access, no `eval`, no
//! output. `fn run(x) { loop {} }` stops at `functions.rhai_max_operations` with an error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use rhai::module_resolvers::DummyModuleResolver;
use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, FnPtr, Map, Scope, AST};
use serde_json::Value;

use super::{FnError, FunctionsConfig, SetupError};

/// The shared, sandboxed Rhai engine.
pub struct RhaiRuntime {
    engine: Engine,
    max_operations: u64,
    /// Compiled functions by source (a function with its dependencies), so linking the same
    /// function again reuses its AST. A std mutex: held only for a lookup or an insert.
    cache: Mutex<HashMap<String, Weak<RhaiFn>>>,
}

impl std::fmt::Debug for RhaiRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RhaiRuntime")
            .field("max_operations", &self.max_operations)
            .finish_non_exhaustive()
    }
}

/// One Rhai function with its dependencies merged in.
pub struct RhaiFn {
    runtime: Arc<RhaiRuntime>,
    ast: AST,
    /// `iot`: alias -> function pointer, when the function has dependencies.
    iot: Option<Dynamic>,
}

impl std::fmt::Debug for RhaiFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RhaiFn").finish_non_exhaustive()
    }
}

impl RhaiRuntime {
    pub fn new(cfg: &FunctionsConfig) -> Self {
        let mut engine = Engine::new();
        engine
            .set_max_operations(cfg.rhai_max_operations)
            .set_max_call_levels(cfg.rhai_max_call_levels)
            .set_max_string_size(cfg.rhai_max_string_bytes)
            .set_max_array_size(cfg.rhai_max_array_len)
            .set_max_map_size(cfg.rhai_max_map_len)
            .set_max_expr_depths(128, 64)
            .set_module_resolver(DummyModuleResolver::new());
        engine.on_print(|_| {});
        engine.on_debug(|_, _, _| {});
        engine.disable_symbol("eval");
        Self {
            engine,
            max_operations: cfg.rhai_max_operations,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn compile(&self, code: &str) -> Result<AST, SetupError> {
        let ast = self
            .engine
            .compile(code)
            .map_err(|e| SetupError::RhaiSyntax(e.to_string()))?;
        if !ast.iter_functions().any(|f| f.name == "run") {
            return Err(SetupError::NoRhaiRun);
        }
        Ok(ast)
    }

    /// Compiles `code` to check it.
    pub fn check(&self, code: &str) -> Result<(), SetupError> {
        self.compile(code).map(|_| ())
    }

    /// Compiles `code` with its dependencies `(alias, digest, code)`: each dependency's `run`
    /// becomes `__iot_<alias>` in one merged script, and `iot.<alias>(...)` calls it.
    pub fn bind(
        self: &Arc<Self>,
        code: &str,
        deps: &[(String, String, Arc<str>)],
    ) -> Result<Arc<RhaiFn>, SetupError> {
        let mut source = code.to_owned();
        let mut iot = Map::new();
        for (alias, _, dep_code) in deps {
            let name = format!("__iot_{alias}");
            source.push('\n');
            source.push_str(&rename_run(dep_code, &name));
            let ptr = FnPtr::new(name.as_str()).map_err(|e| SetupError::RhaiDependency {
                alias: alias.clone(),
                why: e.to_string(),
            })?;
            iot.insert(alias.as_str().into(), Dynamic::from(ptr));
        }
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = cache.get(&source).and_then(Weak::upgrade) {
            return Ok(f);
        }
        let ast = self.compile(&source)?;
        let f = Arc::new(RhaiFn {
            runtime: self.clone(),
            ast,
            iot: (!deps.is_empty()).then(|| Dynamic::from_map(iot)),
        });
        cache.retain(|_, w| w.strong_count() > 0);
        cache.insert(source, Arc::downgrade(&f));
        Ok(f)
    }
}

impl RhaiFn {
    /// Calls `run(*args)`.
    pub fn call(&self, args: Vec<Value>) -> Result<Value, FnError> {
        let rt = &self.runtime;
        let args = args
            .iter()
            .map(rhai::serde::to_dynamic)
            .collect::<Result<Vec<Dynamic>, _>>()
            .map_err(|e| FnError(format!("cannot pass the input to Rhai: {e}")))?;
        let mut scope = Scope::new();
        if let Some(iot) = &self.iot {
            scope.push_constant("iot", iot.clone());
        }
        let options = CallFnOptions::new().eval_ast(false).rewind_scope(true);
        let out: Dynamic = rt
            .engine
            .call_fn_with_options(options, &mut scope, &self.ast, "run", args)
            .map_err(|e| FnError(describe(&e, rt.max_operations)))?;
        if out.is::<FnPtr>() {
            return Err(FnError(
                "wrong return type: a function pointer is not data".into(),
            ));
        }
        rhai::serde::from_dynamic::<Value>(&out)
            .map_err(|e| FnError(format!("wrong return type: {e}")))
    }
}

fn describe(e: &EvalAltResult, max_operations: u64) -> String {
    match e {
        EvalAltResult::ErrorTooManyOperations(_) => {
            format!("stopped after {max_operations} operations (functions.rhai_max_operations): a runaway loop?")
        }
        EvalAltResult::ErrorFunctionNotFound(sig, _) if sig.starts_with("run") => {
            format!("`run` does not take these arguments: {sig}")
        }
        other => format!("Rhai error: {other}"),
    }
}

/// Renames the function `run` (its definition and calls) in `code` to `name`.
fn rename_run(code: &str, name: &str) -> String {
    let bytes = code.as_bytes();
    let mut out = String::with_capacity(code.len() + 16);
    let mut i = 0;
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    while i < bytes.len() {
        if code[i..].starts_with("run") && (i == 0 || !ident(bytes[i - 1])) {
            let rest = code[i + 3..].trim_start();
            if rest.starts_with('(') {
                out.push_str(name);
                i += 3;
                continue;
            }
        }
        let ch = code[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rt(max_operations: u64) -> Arc<RhaiRuntime> {
        Arc::new(RhaiRuntime::new(&FunctionsConfig {
            rhai_max_operations: max_operations,
            ..Default::default()
        }))
    }

    #[test]
    fn calls_run_with_json_values() {
        let rt = rt(100_000);
        let f = rt.bind("fn run(x) { x * x }", &[]).unwrap();
        assert_eq!(f.call(vec![json!(3)]).unwrap(), json!(9));
        let f = rt.bind("fn run(a, b) { [a + b, \"tag\"] }", &[]).unwrap();
        assert_eq!(
            f.call(vec![json!(1.5), json!(2.5)]).unwrap(),
            json!([4.0, "tag"])
        );
        let f = rt.bind("fn run(m) { m.x }", &[]).unwrap();
        assert_eq!(f.call(vec![json!({"x": "y"})]).unwrap(), json!("y"));
        let f = rt
            .bind("fn run(x) { if x == () { \"none\" } else { x } }", &[])
            .unwrap();
        assert_eq!(f.call(vec![Value::Null]).unwrap(), json!("none"));
    }

    #[test]
    fn runaway_loops_and_errors_are_reported() {
        let rt = rt(10_000);
        let f = rt.bind("fn run(x) { loop {} }", &[]).unwrap();
        assert!(f.call(vec![json!(1)]).unwrap_err().0.contains("operations"));
        let f = rt.bind("fn run(x) { run(x) }", &[]).unwrap();
        assert!(f.call(vec![json!(1)]).is_err());
        let f = rt.bind("fn run(x) { x.foo() }", &[]).unwrap();
        assert!(f.call(vec![json!(1)]).unwrap_err().0.contains("Rhai error"));
        let f = rt.bind("fn run(x) { x }", &[]).unwrap();
        assert!(f
            .call(vec![json!(1), json!(2)])
            .unwrap_err()
            .0
            .contains("does not take"));
        let f = rt.bind("fn run(x) { Fn(\"run\") }", &[]).unwrap();
        assert!(f
            .call(vec![json!(1)])
            .unwrap_err()
            .0
            .contains("wrong return type"));
        assert!(rt
            .check("fn run(x) { ")
            .unwrap_err()
            .to_string()
            .contains("syntax"));
        assert!(rt
            .check("fn other(x) { x }")
            .unwrap_err()
            .to_string()
            .contains("no `fn run"));
        assert!(rt.check("fn run(x) { eval(\"1\") }").is_err());
        assert!(rt.check("import \"x\" as y; fn run(x) { x }").is_ok());
        let f = rt
            .bind("import \"x\" as y; fn run(x) { y::f(x) }", &[])
            .unwrap();
        assert!(f.call(vec![json!(1)]).is_err());
    }

    #[test]
    fn dependencies_are_reachable_as_iot_alias() {
        let rt = rt(100_000);
        let deps = vec![
            (
                "sq".to_owned(),
                "d1".to_owned(),
                Arc::from("fn run(x) { x * x }"),
            ),
            (
                "inc".to_owned(),
                "d2".to_owned(),
                Arc::from("fn run(x) { x + 1 }"),
            ),
        ];
        let f = rt.bind("fn run(x) { iot.inc(iot.sq(x)) }", &deps).unwrap();
        assert_eq!(f.call(vec![json!(3)]).unwrap(), json!(10));
    }

    #[test]
    fn a_function_is_compiled_once() {
        let rt = rt(1000);
        let a = rt.bind("fn run(x) { x }", &[]).unwrap();
        let b = rt.bind("fn run(x) { x }", &[]).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        let c = rt.bind("fn run(x) { x }", &[]).unwrap();
        assert_eq!(c.call(vec![json!(1)]).unwrap(), json!(1));
    }

    #[test]
    fn rename_only_touches_run_calls() {
        assert_eq!(
            rename_run("fn run(x) { run (x) + runner(x) + prun(x) }", "f"),
            "fn f(x) { f (x) + runner(x) + prun(x) }"
        );
    }
}
