//! User functions (IDF, join and ODF functions) in two languages, told apart by the code:
//! Rhai (`fn run(x) { x * x }`) runs in-process in a sandbox; Python (`def run(x): ...`) runs
//! in a pool of `python3` worker processes. Functions are content-addressed by
//! `sha256(code)`; a [`Callable`] is one function bound to its `depends` (`iot.<alias>`),
//! prepared once when a graph is configured so the routing path only calls it.

mod python;
mod rhai_fn;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use python::PythonPool;
pub use rhai_fn::{RhaiFn, RhaiRuntime};

/// `[functions]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FunctionsConfig {
    /// Rhai: operations one call may run before it is stopped (a runaway loop hits this).
    pub rhai_max_operations: u64,
    /// Rhai: nested function calls.
    pub rhai_max_call_levels: usize,
    /// Rhai: largest string, array and map a function may build.
    pub rhai_max_string_bytes: usize,
    pub rhai_max_array_len: usize,
    pub rhai_max_map_len: usize,
    /// Python functions run code sent over MQTT in worker processes: enable only when every
    /// client that can reach the graph API is trusted.
    pub python_enabled: bool,
    /// The interpreter to run.
    pub python: String,
    /// Worker processes.
    pub python_workers: usize,
    /// A call not answered within this (counted from when it starts running) is failed,
    /// its worker killed and replaced, and its graph's calls suspended for a backoff.
    pub python_timeout_ms: u64,
    /// Address space of a worker (`RLIMIT_AS`): a function allocating more gets a
    /// `MemoryError` and its worker is replaced.
    pub python_max_memory_mb: u64,
    /// CPU seconds a worker may use in all (`RLIMIT_CPU`); then it is replaced.
    pub python_max_cpu_seconds: u64,
    /// Files a worker may have open at once (`RLIMIT_NOFILE`).
    pub python_max_open_files: u64,
    /// Largest file a worker may write (`RLIMIT_FSIZE`).
    pub python_max_file_mb: u64,
    /// The user workers run as when the controller runs as root (`root` keeps root: not
    /// recommended).
    pub python_user: String,
}

impl Default for FunctionsConfig {
    fn default() -> Self {
        Self {
            rhai_max_operations: 1_000_000,
            rhai_max_call_levels: 32,
            rhai_max_string_bytes: 1024 * 1024,
            rhai_max_array_len: 100_000,
            rhai_max_map_len: 10_000,
            python_enabled: true,
            python: "python3".into(),
            python_workers: 2,
            python_timeout_ms: 1000,
            python_max_memory_mb: 256,
            python_max_cpu_seconds: 3600,
            python_max_open_files: 64,
            python_max_file_mb: 16,
            python_user: "nobody".into(),
        }
    }
}

pub use iot_proto::wire::graph_api::{digest, Digest};

/// The language of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Rhai,
    Python,
}

impl Lang {
    /// Tells the language from the code: a line `def run(` is Python, `fn run(` is Rhai.
    pub fn detect(code: &str) -> Result<Lang, SetupError> {
        let defines = |kw: &str| {
            code.lines().any(|l| {
                let l = l.trim_start();
                l.strip_prefix(kw)
                    .filter(|r| r.starts_with(char::is_whitespace))
                    .map(|r| r.trim_start())
                    .and_then(|r| r.strip_prefix("run"))
                    .is_some_and(|r| r.trim_start().starts_with('('))
            })
        };
        if defines("def") {
            Ok(Lang::Python)
        } else if defines("fn") {
            Ok(Lang::Rhai)
        } else {
            Err(SetupError::UnknownLanguage)
        }
    }
}

/// Why a function cannot be added or bound to its dependencies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    #[error("cannot tell the language: define `fn run(...)` (Rhai) or `def run(...)` (Python)")]
    UnknownLanguage,
    #[error("Rhai syntax error: {0}")]
    RhaiSyntax(String),
    #[error("the code defines no `fn run(...)`")]
    NoRhaiRun,
    #[error("dependency {alias}: {why}")]
    RhaiDependency { alias: String, why: String },
    /// The worker's answer (e.g. `Python: SyntaxError: ...`) or why no worker could run.
    #[error("{0}")]
    Python(FnError),
    #[error("Python functions are disabled on this controller (functions.python_enabled = false)")]
    PythonDisabled,
    #[error("function {0} unknown")]
    Unknown(Digest),
    #[error("invalid dependency alias `{0}`: use letters, digits and _")]
    BadAlias(String),
    #[error("dependency {0} not found")]
    DependencyNotFound(String),
    #[error("dependency {0} is written in another language than the function")]
    LanguageMismatch(String),
}

/// Why a function call failed; reported on the graph's monitor topic as `esm_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FnError(pub String);

/// One function bound to its dependencies, ready to call.
#[derive(Debug, Clone)]
pub enum Callable {
    Rhai(Arc<RhaiFn>),
    Python(python::PyFn),
    /// Panics when called: how the engine's tests make a graph task die.
    #[cfg(test)]
    Panic,
}

impl Callable {
    /// Calls `run(*args)`.
    pub async fn call(&self, args: Vec<Value>) -> Result<Value, FnError> {
        match self {
            Callable::Rhai(f) => f.call(args),
            Callable::Python(f) => f.call(args).await,
            #[cfg(test)]
            Callable::Panic => panic!("a test function panicked"),
        }
    }

    pub fn lang(&self) -> Lang {
        match self {
            Callable::Rhai(_) => Lang::Rhai,
            Callable::Python(_) => Lang::Python,
            #[cfg(test)]
            Callable::Panic => Lang::Rhai,
        }
    }
}

/// Finds a function's language and code by digest.
pub type CodeLookup<'a> = dyn Fn(&str) -> Option<(Lang, Arc<str>)> + 'a;

/// Both runtimes, and the code of every known function.
#[derive(Debug, Clone)]
pub struct Runtimes {
    pub rhai: Arc<RhaiRuntime>,
    pub python: Option<PythonPool>,
}

impl Runtimes {
    /// Both runtimes; the Python pool's tasks start on the current tokio runtime.
    pub fn new(cfg: &FunctionsConfig) -> Self {
        Self {
            rhai: Arc::new(RhaiRuntime::new(cfg)),
            python: cfg.python_enabled.then(|| PythonPool::new(cfg)),
        }
    }

    /// Rhai only (no Python pool).
    pub fn rhai_only(cfg: &FunctionsConfig) -> Self {
        Self {
            rhai: Arc::new(RhaiRuntime::new(cfg)),
            python: None,
        }
    }

    /// Compiles `code` to check it (syntax, a `run` function); returns its language.
    pub async fn check(&self, code: &str) -> Result<Lang, SetupError> {
        let lang = Lang::detect(code)?;
        match lang {
            Lang::Rhai => self.rhai.check(code)?,
            Lang::Python => match &self.python {
                None => return Err(SetupError::PythonDisabled),
                Some(p) => p.check(code).await?,
            },
        }
        Ok(lang)
    }

    /// Binds function `digest` (whose code and language are in `codes`) to its dependencies,
    /// on behalf of graph `graph` (whose Python functions share one standing with the pool).
    pub fn bind(
        &self,
        graph: &str,
        digest: &str,
        depends: &BTreeMap<String, Digest>,
        codes: &CodeLookup<'_>,
    ) -> Result<Callable, SetupError> {
        let (lang, code) = codes(digest).ok_or_else(|| SetupError::Unknown(digest.to_owned()))?;
        let mut deps = Vec::with_capacity(depends.len());
        for (alias, d) in depends {
            if !valid_alias(alias) {
                return Err(SetupError::BadAlias(alias.clone()));
            }
            let (dl, dc) = codes(d).ok_or_else(|| SetupError::DependencyNotFound(alias.clone()))?;
            if dl != lang {
                return Err(SetupError::LanguageMismatch(alias.clone()));
            }
            deps.push((alias.clone(), d.clone(), dc));
        }
        match lang {
            Lang::Rhai => Ok(Callable::Rhai(self.rhai.bind(&code, &deps)?)),
            Lang::Python => match &self.python {
                Some(p) => Ok(Callable::Python(p.bind(graph, digest, &code, &deps))),
                None => Err(SetupError::PythonDisabled),
            },
        }
    }
}

fn valid_alias(a: &str) -> bool {
    let mut chars = a.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_is_told_from_the_code() {
        assert_eq!(
            Lang::detect("def run(x): return x ** 2\n"),
            Ok(Lang::Python)
        );
        assert_eq!(
            Lang::detect("import math\ndef  run (x, y):\n    return x\n"),
            Ok(Lang::Python)
        );
        assert_eq!(Lang::detect("fn run(x) { x * x }"), Ok(Lang::Rhai));
        assert_eq!(
            Lang::detect("// square\nfn helper(a) { a }\nfn run(x) { helper(x) }"),
            Ok(Lang::Rhai)
        );
        assert!(Lang::detect("function run(x) { return x }").is_err());
        assert!(Lang::detect("def runner(x): pass").is_err());
    }

    #[test]
    fn aliases() {
        assert!(valid_alias("sq"));
        assert!(valid_alias("_f2"));
        assert!(!valid_alias("2f"));
        assert!(!valid_alias("a-b"));
        assert!(!valid_alias(""));
    }
}
