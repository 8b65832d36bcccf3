//! What the examples share: the command line (`--api-url URL`, `--id UUID`, and a few
//! example-specific options) and waiting for Ctrl-C or SIGTERM.

#![allow(dead_code)]

use std::collections::HashMap;

use da_sdk::DaId;

/// Parsed `--key value` options.
pub struct Args {
    pub api_url: String,
    pub id: Option<DaId>,
    rest: HashMap<String, String>,
}

impl Args {
    /// Parses `std::env::args()`; `extra` lists the other accepted options (without `--`).
    pub fn parse(usage: &str, extra: &[&str]) -> Result<Args, String> {
        let mut api_url = "http://127.0.0.1:9992".to_owned();
        let mut id = None;
        let mut rest = HashMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "-h" || flag == "--help" {
                return Err(usage.to_owned());
            }
            let key = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument `{flag}`\n{usage}"))?;
            let value = it
                .next()
                .ok_or_else(|| format!("`{flag}` needs a value\n{usage}"))?;
            match key {
                "api-url" => api_url = value,
                "id" => id = Some(value.parse().map_err(|e| format!("--id: {e}"))?),
                k if extra.contains(&k) => {
                    rest.insert(k.to_owned(), value);
                }
                _ => return Err(format!("unknown option `{flag}`\n{usage}")),
            }
        }
        Ok(Args { api_url, id, rest })
    }

    /// An example-specific option, parsed, or `default`.
    pub fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.rest.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{key}: cannot use `{v}`")),
        }
    }
}

/// A future that resolves on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when
/// this is called, so call it first thing: a signal that arrives before is not lost.
pub fn terminated() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(term.take()) => {}
            () = wait(int.take()) => {}
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
