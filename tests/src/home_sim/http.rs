//! [`HttpTarget`]: a web endpoint a device of driver `http` GETs (see the parent module).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::WAIT;

/// One GET an [`HttpTarget`] received.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at: Instant,
    /// The path, percent-decoded (`/porch/dim:40` whether `:` came encoded or not).
    pub path: String,
    /// The path and query as received.
    pub raw: String,
}

#[derive(Debug, Clone)]
struct Rule {
    prefix: String,
    status: u16,
    delay: Duration,
}

#[derive(Debug, Default)]
struct Target {
    /// Longest matching prefix wins; none: 200 at once.
    rules: Vec<Rule>,
    hits: Vec<Hit>,
}

/// The target's state; a std mutex held for a push or a lookup, never across an `.await`.
#[derive(Debug, Clone, Default)]
struct TargetShared(Arc<Mutex<Target>>);

impl TargetShared {
    fn lock(&self) -> MutexGuard<'_, Target> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A web server on 127.0.0.1 that records the path of every GET and answers 200 (`ok`), or,
/// for paths under a prefix given to [`HttpTarget::set`], that status after that delay.
/// Stops when dropped.
#[derive(Debug)]
pub struct HttpTarget {
    addr: SocketAddr,
    shared: TargetShared,
    task: JoinHandle<()>,
}

impl Drop for HttpTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpTarget {
    pub async fn start() -> HttpTarget {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = TargetShared::default();
        let app = axum::Router::new()
            .fallback(respond)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpTarget { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A device of driver `http` that GETs `{path}` here (`path` may contain `{cmd}`).
    pub fn catalog_entry(&self, path: &str) -> Value {
        json!({"driver": "http", "url": self.url(path)})
    }

    /// Answers GETs of paths starting with `prefix` with `status` after `delay`.
    pub fn set(&self, prefix: &str, status: u16, delay: Duration) {
        let mut t = self.shared.lock();
        t.rules.retain(|r| r.prefix != prefix);
        t.rules.push(Rule {
            prefix: prefix.to_owned(),
            status,
            delay,
        });
    }

    /// Every GET so far, oldest first.
    pub fn hits(&self) -> Vec<Hit> {
        self.shared.lock().hits.clone()
    }

    /// The decoded paths of every GET so far.
    pub fn paths(&self) -> Vec<String> {
        self.hits().into_iter().map(|h| h.path).collect()
    }

    /// Waits (at most [`WAIT`]) until at least `n` GETs arrived; returns them all.
    pub async fn wait_hits(&self, n: usize) -> Vec<Hit> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.hits();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "HTTP target on {}: {} GETs, waited for {n}: {got:?}",
                self.addr,
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn respond(
    State(shared): State<TargetShared>,
    method: Method,
    uri: Uri,
) -> (StatusCode, &'static str) {
    if method != Method::GET {
        return (StatusCode::METHOD_NOT_ALLOWED, "GET only");
    }
    let path = percent_decode(uri.path());
    let rule = {
        let mut t = shared.lock();
        t.hits.push(Hit {
            at: Instant::now(),
            path: path.clone(),
            raw: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
        });
        t.rules
            .iter()
            .filter(|r| path.starts_with(&r.prefix))
            .max_by_key(|r| r.prefix.len())
            .cloned()
    };
    let Some(rule) = rule else {
        return (StatusCode::OK, "ok");
    };
    tokio::time::sleep(rule.delay).await;
    let status = StatusCode::from_u16(rule.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, if status.is_success() { "ok" } else { "failed" })
}

/// `%XX` sequences decoded (a malformed one is kept as is), as UTF-8 (lossy).
pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|c| hex(*c)),
            b.get(i + 2).and_then(|c| hex(*c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
