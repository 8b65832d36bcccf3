//! A key request on `iottalk/km/req/<CLIENT>` and the checks it goes through, in the order
//! docs/keymanager.md gives: parse; sealed; the MAC in constant time (unknown client, unknown
//! key and forbidden key all answer `denied`, after the same work); clock; replay; rate.
//! Only a request that passed every check changes the replay state, so a forged request
//! (any `ts`, any nonce) cannot lock the real client out. Pure: the store lends the client's
//! secret and the value, the caller sends the reply.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use iot_auth::rate::{Limiter, Rate};
use serde_json::{json, Value};

use super::crypto::{self, Key};
pub use iot_proto::km::KmRequest;

/// The error codes of a failure reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Sealed,
    Denied,
    Clock,
    Replay,
    Limited { retry_after_ms: u64 },
    BadRequest,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sealed => "sealed",
            Self::Denied => "denied",
            Self::Clock => "clock",
            Self::Replay => "replay",
            Self::Limited { .. } => "limited",
            Self::BadRequest => "bad_request",
        }
    }
}

pub use iot_proto::km::parse_request as parse_or_ignore;

/// What the store knows of a client, lent for one check.
#[derive(Debug)]
pub struct ClientView<'a> {
    pub secret: &'a Key,
    /// Whether the client may read the requested key, and the key exists.
    pub may_read: bool,
}

/// Settings of the checks (`[keymanager]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub clock_skew: Duration,
    pub rate: Rate,
    /// `denied` answers that seal the store (0: never) within `panic_window`.
    pub panic_after: u32,
    pub panic_window: Duration,
}

/// The state the checks keep: replay memory, the rate limiter, recent denials.
#[derive(Debug)]
pub struct Guard {
    limits: Limits,
    /// Newest accepted `ts` per (client, key).
    newest: HashMap<(String, String), i64>,
    /// Accepted nonces and the Unix second after which they may be forgotten.
    seen: HashMap<String, i64>,
    limiter: Limiter<String>,
    denials: VecDeque<Instant>,
    /// Requests with an earlier `ts` are `replay` (the start of this process).
    not_before: i64,
}

/// A secret used when the client is unknown, so the work done is the same.
fn decoy() -> Key {
    crypto::client_secret("", "", "")
}

impl Guard {
    pub fn new(limits: Limits) -> Guard {
        Guard {
            limits,
            newest: HashMap::new(),
            seen: HashMap::new(),
            limiter: Limiter::new(limits.rate),
            denials: VecDeque::new(),
            not_before: i64::MIN,
        }
    }

    /// Refuses requests made before `unix` as `replay`: what was accepted before it (in an
    /// earlier process) is not remembered.
    pub fn not_before(mut self, unix: i64) -> Guard {
        self.not_before = unix;
        self
    }

    /// Runs the checks after parsing. `client` is `None` when no such client is stored;
    /// `sealed` when the store is sealed. `Ok(())`: answer with the value.
    pub fn check(
        &mut self,
        name: &str,
        req: &KmRequest,
        client: Option<ClientView<'_>>,
        sealed: bool,
        now_unix: i64,
        now: Instant,
    ) -> Result<(), Code> {
        if sealed {
            return Err(Code::Sealed);
        }
        let fallback = decoy();
        let (secret, may_read) = match &client {
            Some(c) => (c.secret, c.may_read),
            None => (&fallback, false),
        };
        let mac_ok = crypto::verify_mac(secret, name, &req.key, req.ts, &req.nonce, &req.mac);
        if !(mac_ok && may_read && client.is_some()) {
            return Err(Code::Denied);
        }
        let skew = i64::try_from(self.limits.clock_skew.as_secs()).unwrap_or(i64::MAX);
        if now_unix.saturating_sub(req.ts).abs() > skew {
            return Err(Code::Clock);
        }
        let pair = (name.to_owned(), req.key.clone());
        if req.ts < self.not_before
            || self.seen.contains_key(&req.nonce)
            || self.newest.get(&pair).is_some_and(|n| req.ts < *n)
        {
            return Err(Code::Replay);
        }
        if let Err(wait) = self.limiter.take(name.to_owned(), now) {
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
            return Err(Code::Limited { retry_after_ms: ms });
        }
        // Accepted: remember it. A nonce can be forgotten once its `ts` is out of the clock
        // window (a replay then fails on `clock`).
        self.seen.retain(|_, until| *until >= now_unix);
        self.seen
            .insert(req.nonce.clone(), req.ts.saturating_add(skew));
        let newest = self.newest.entry(pair).or_insert(req.ts);
        *newest = (*newest).max(req.ts);
        Ok(())
    }

    /// Counts a `denied` answer; `true` when it is the one that must seal the store.
    pub fn denied(&mut self, now: Instant) -> bool {
        if self.limits.panic_after == 0 {
            return false;
        }
        self.denials.push_back(now);
        while self
            .denials
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > self.limits.panic_window)
        {
            self.denials.pop_front();
        }
        if self.denials.len() >= self.limits.panic_after as usize {
            self.denials.clear();
            return true;
        }
        false
    }
}

/// A failure reply.
pub fn failure(nonce: Option<&str>, code: Code) -> Value {
    let mut v = json!({"nonce": nonce, "ok": false, "error": code.as_str()});
    if let Code::Limited { retry_after_ms } = code {
        v["retry_after_ms"] = json!(retry_after_ms);
    }
    v
}

/// A success reply.
pub fn success(nonce: &str, iv: &str, value: &str) -> Value {
    json!({"nonce": nonce, "ok": true, "iv": iv, "value": value})
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
