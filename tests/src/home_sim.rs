//! Stand-ins for the devices home scenes drive: [`TplinkSim`], a TP-Link smart plug or bulb
//! on its local protocol, and [`HttpTarget`], a web endpoint a device of driver `http` GETs.
//! Both listen on a free port of 127.0.0.1, record what they receive and misbehave on demand
//! ([`Behaviour`], [`HttpTarget::set`]) so tests can make one leaf of a scene fail, stall or
//! succeed late.
//!
//! Written from the protocol's description (issue 11), not from the controller's code: an
//! implementation shared by the handler and its test would agree with itself whatever it did.
//! Not a full device emulation: only the requests a home scene sends, plus `get_sysinfo`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::WAIT;

/// The first key of the XOR autokey cipher.
const FIRST_KEY: u8 = 171;
/// Largest request the simulator reads; a longer length prefix closes the connection.
const MAX_FRAME_BYTES: usize = 64 * 1024;
/// The bulb service's module name.
const LIGHTING: &str = "smartlife.iot.smartbulb.lightingservice";

/// The TP-Link cipher: each output byte is the input byte XOR the key, and becomes the key.
pub fn encrypt(plain: &[u8]) -> Vec<u8> {
    let mut key = FIRST_KEY;
    plain
        .iter()
        .map(|p| {
            key ^= p;
            key
        })
        .collect()
}

/// The inverse of [`encrypt`]: each input byte is the key for the next one.
pub fn decrypt(cipher: &[u8]) -> Vec<u8> {
    let mut key = FIRST_KEY;
    cipher
        .iter()
        .map(|c| {
            let p = key ^ c;
            key = *c;
            p
        })
        .collect()
}

/// One request on the wire: the 4-byte big-endian length, then the encrypted JSON.
pub fn frame(request: &Value) -> Vec<u8> {
    let body = encrypt(request.to_string().as_bytes());
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

/// Reads one frame; `None` at a clean end of stream before its first byte.
async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// A client of the local protocol, for checking the simulator itself: sends `request` on a
/// new connection and returns the decrypted reply.
pub async fn tplink_call(addr: SocketAddr, request: &Value) -> std::io::Result<Value> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(&frame(request)).await?;
    let body = read_frame(&mut stream).await?.ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed without a reply")
    })?;
    serde_json::from_slice(&decrypt(&body))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// An address on which nothing listens (bound, then let go): connecting is refused.
pub fn stopped_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr")
}

/// What kind of device a [`TplinkSim`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// On or off (`system.set_relay_state`).
    Plug,
    /// On or off with a brightness (`transition_light_state` of the lighting service).
    Bulb,
}

impl Kind {
    /// The `kind` of the device in a home catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Plug => "plug",
            Kind::Bulb => "bulb",
        }
    }
}

/// How a [`TplinkSim`] answers from now on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Applies each request and answers `err_code: 0`, as a healthy device.
    Ok,
    /// Answers every method with this `err_code` (and an `err_msg`), changing nothing.
    ErrCode(i64),
    /// Waits this long after reading each request, then behaves as [`Behaviour::Ok`].
    Delay(Duration),
    /// Reads requests and never answers; each connection stays open until the peer closes it.
    Silent,
    /// Closes the next N connections as soon as they are accepted, reading nothing; then
    /// behaves as [`Behaviour::Ok`].
    CloseFirst(u32),
}

/// What a device is doing, as its requests left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceState {
    pub on: bool,
    /// 0-100; a plug is 100 (kept as is when it is switched off).
    pub brightness: u8,
}

/// One decrypted request, as the simulator read it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// When it was read (before any [`Behaviour::Delay`]).
    pub at: Instant,
    /// Which connection it came on, counting from 1 (closed ones included).
    pub connection: usize,
    /// The JSON request; a body that is not JSON is kept as a string.
    pub request: Value,
}

#[derive(Debug)]
struct Sim {
    kind: Kind,
    behaviour: Behaviour,
    /// Connections still to be closed unanswered ([`Behaviour::CloseFirst`]).
    to_close: u32,
    connections: usize,
    requests: Vec<Recorded>,
    device: DeviceState,
}

/// The simulator's state; a std mutex because it is only held for a few assignments, never
/// across an `.await`.
#[derive(Debug, Clone)]
struct Shared(Arc<Mutex<Sim>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Sim> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A TP-Link plug or bulb on 127.0.0.1, answering the local protocol (TCP, length-prefixed,
/// XOR autokey cipher). Stops when dropped, closing its connections.
#[derive(Debug)]
pub struct TplinkSim {
    addr: SocketAddr,
    shared: Shared,
    task: JoinHandle<()>,
}

impl Drop for TplinkSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TplinkSim {
    /// A plug (HS100-like), off.
    pub async fn plug() -> TplinkSim {
        Self::start(Kind::Plug).await
    }

    /// A dimmable bulb (LB100-like), off at full brightness.
    pub async fn bulb() -> TplinkSim {
        Self::start(Kind::Bulb).await
    }

    pub async fn start(kind: Kind) -> TplinkSim {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Shared(Arc::new(Mutex::new(Sim {
            kind,
            behaviour: Behaviour::Ok,
            to_close: 0,
            connections: 0,
            requests: Vec::new(),
            device: DeviceState {
                on: false,
                brightness: 100,
            },
        })));
        let task = tokio::spawn(accept(listener, shared.clone()));
        TplinkSim { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn kind(&self) -> Kind {
        self.shared.lock().kind
    }

    /// The device in a home catalog (JSON form of the import format).
    pub fn catalog_entry(&self) -> Value {
        json!({
            "driver": "tplink",
            "host": self.addr.ip().to_string(),
            "port": self.addr.port(),
            "kind": self.kind().as_str(),
        })
    }

    /// Changes how it answers from now on (a request already being delayed keeps its delay).
    pub fn set(&self, behaviour: Behaviour) {
        let mut sim = self.shared.lock();
        match behaviour {
            Behaviour::CloseFirst(n) => {
                sim.to_close = n;
                sim.behaviour = Behaviour::Ok;
            }
            b => {
                sim.to_close = 0;
                sim.behaviour = b;
            }
        }
    }

    /// Every request read so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// Connections accepted so far, including those closed unanswered.
    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    pub fn state(&self) -> DeviceState {
        self.shared.lock().device
    }

    /// Waits (at most [`WAIT`]) until at least `n` requests were read; returns them all.
    pub async fn wait_requests(&self, n: usize) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "TP-Link simulator on {}: {} requests, waited for {n}: {got:?}",
                self.addr,
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Accepts connections and serves each in a task of its own; those tasks end with this one.
async fn accept(listener: TcpListener, shared: Shared) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let number = {
                    let mut sim = shared.lock();
                    sim.connections += 1;
                    if sim.to_close > 0 {
                        sim.to_close -= 1;
                        None
                    } else {
                        Some(sim.connections)
                    }
                };
                match number {
                    Some(n) => {
                        conns.spawn(serve(stream, shared.clone(), n));
                    }
                    None => drop(stream),
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Answers the requests of one connection until the peer closes it.
async fn serve(mut stream: TcpStream, shared: Shared, connection: usize) {
    while let Ok(Some(body)) = read_frame(&mut stream).await {
        let plain = decrypt(&body);
        let request = serde_json::from_slice::<Value>(&plain)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&plain).into_owned()));
        let behaviour = {
            let mut sim = shared.lock();
            sim.requests.push(Recorded {
                at: Instant::now(),
                connection,
                request: request.clone(),
            });
            sim.behaviour.clone()
        };
        if !request.is_object() {
            return;
        }
        match behaviour {
            Behaviour::Silent => {
                // Hold the connection, answer nothing, until the peer gives up.
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Behaviour::Delay(d) => tokio::time::sleep(d).await,
            Behaviour::Ok | Behaviour::ErrCode(_) | Behaviour::CloseFirst(_) => {}
        }
        let err_code = match behaviour {
            Behaviour::ErrCode(n) => n,
            _ => 0,
        };
        let reply = {
            let mut sim = shared.lock();
            let kind = sim.kind;
            answer(kind, &mut sim.device, &request, err_code)
        };
        if stream.write_all(&frame(&reply)).await.is_err() {
            return;
        }
    }
}

/// The reply of a device of `kind` to `request`, applying it to `device` unless `err_code`
/// (the simulated failure) is not 0. Like the real devices: one reply object per module and
/// method asked, unknown modules and methods answered with their own error codes.
fn answer(kind: Kind, device: &mut DeviceState, request: &Value, err_code: i64) -> Value {
    let mut reply = Map::new();
    let Some(modules) = request.as_object() else {
        return json!({"err_code": -1, "err_msg": "not an object"});
    };
    for (module, methods) in modules {
        let supported = match module.as_str() {
            "system" => true,
            LIGHTING => kind == Kind::Bulb,
            _ => false,
        };
        if !supported {
            reply.insert(
                module.clone(),
                json!({"err_code": -1, "err_msg": "module not support"}),
            );
            continue;
        }
        let mut out = Map::new();
        for (method, args) in methods.as_object().into_iter().flatten() {
            let r = if err_code != 0 {
                json!({"err_code": err_code, "err_msg": "simulated failure"})
            } else {
                method_reply(kind, device, module, method, args)
            };
            out.insert(method.clone(), r);
        }
        reply.insert(module.clone(), Value::Object(out));
    }
    Value::Object(reply)
}

fn method_reply(
    kind: Kind,
    device: &mut DeviceState,
    module: &str,
    method: &str,
    args: &Value,
) -> Value {
    let bad_arg = json!({"err_code": -3, "err_msg": "invalid argument"});
    match (module, method) {
        ("system", "get_sysinfo") => {
            let mut info = json!({
                "alias": "sim",
                "model": match kind { Kind::Plug => "HS100(SIM)", Kind::Bulb => "LB100(SIM)" },
                "err_code": 0,
            });
            match kind {
                Kind::Plug => info["relay_state"] = json!(u8::from(device.on)),
                Kind::Bulb => {
                    info["light_state"] = json!({
                        "on_off": u8::from(device.on),
                        "brightness": device.brightness,
                    });
                }
            }
            info
        }
        ("system", "set_relay_state") if kind == Kind::Plug => {
            match args.get("state").and_then(Value::as_u64) {
                Some(s @ (0 | 1)) => {
                    device.on = s == 1;
                    json!({"err_code": 0})
                }
                _ => bad_arg,
            }
        }
        (LIGHTING, "transition_light_state") => {
            let on_off = args.get("on_off").map(Value::as_u64);
            let brightness = args.get("brightness").map(Value::as_u64);
            match (on_off, brightness) {
                (Some(Some(0 | 1)) | None, Some(Some(0..=100)) | None) => {
                    if let Some(Some(b)) = brightness {
                        device.brightness = b as u8;
                    }
                    if let Some(Some(o)) = on_off {
                        device.on = o == 1;
                    }
                    json!({
                        "on_off": u8::from(device.on),
                        "brightness": device.brightness,
                        "err_code": 0,
                    })
                }
                _ => bad_arg,
            }
        }
        (LIGHTING, "get_light_state") => json!({
            "on_off": u8::from(device.on),
            "brightness": device.brightness,
            "err_code": 0,
        }),
        _ => json!({"err_code": -2, "err_msg": "member not support"}),
    }
}

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
fn percent_decode(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    const PLUG_ON: &str = r#"{"system":{"set_relay_state":{"state":1}}}"#;

    #[test]
    fn cipher_known_vector_and_round_trip() {
        assert_eq!(encrypt(b"{\""), [0xd0, 0xf2]);
        assert_eq!(decrypt(&[0xd0, 0xf2]), b"{\"");
        let text = br#"{"system":{"get_sysinfo":{}}}"#;
        assert_eq!(decrypt(&encrypt(text)), text);
        // Autokey: the same plaintext byte encrypts differently further on.
        let e = encrypt(b"aa");
        assert_ne!(e[0], e[1]);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("/porch/dim%3A40"), "/porch/dim:40");
        assert_eq!(percent_decode("/a%2"), "/a%2");
        assert_eq!(percent_decode("/x%zz"), "/x%zz");
    }

    /// Sends raw bytes on a new connection; returns the decrypted reply, `None` if the
    /// connection closed without one.
    async fn raw_exchange(addr: SocketAddr, request: &str) -> Option<Value> {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut bytes = (request.len() as u32).to_be_bytes().to_vec();
        // By hand: key 171, each ciphertext byte the next key.
        let mut key = 171u8;
        for p in request.bytes() {
            key ^= p;
            bytes.push(key);
        }
        s.write_all(&bytes).await.unwrap();
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).await.is_err() {
            return None;
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).await.unwrap();
        Some(serde_json::from_slice(&decrypt(&body)).unwrap())
    }

    #[tokio::test]
    async fn a_plug_switches_and_answers_err_code_0() {
        let sim = TplinkSim::plug().await;
        let reply = raw_exchange(sim.addr(), PLUG_ON).await.unwrap();
        assert_eq!(
            reply,
            json!({"system": {"set_relay_state": {"err_code": 0}}})
        );
        assert!(sim.state().on);
        let reqs = sim.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].request["system"]["set_relay_state"]["state"], 1);
        assert_eq!(reqs[0].connection, 1);
        // Several requests on one connection, and get_sysinfo.
        let mut s = TcpStream::connect(sim.addr()).await.unwrap();
        for req in [
            json!({"system": {"set_relay_state": {"state": 0}}}),
            json!({"system": {"get_sysinfo": {}}}),
        ] {
            s.write_all(&frame(&req)).await.unwrap();
            let body = read_frame(&mut s).await.unwrap().unwrap();
            let reply: Value = serde_json::from_slice(&decrypt(&body)).unwrap();
            assert_eq!(reply["system"].as_object().unwrap().len(), 1, "{reply}");
        }
        assert!(!sim.state().on);
        assert_eq!(sim.connections(), 2);
        // A plug has no lighting service.
        let reply = tplink_call(
            sim.addr(),
            &json!({LIGHTING: {"transition_light_state": {"on_off": 1}}}),
        )
        .await
        .unwrap();
        assert_eq!(reply[LIGHTING]["err_code"], -1);
    }

    #[tokio::test]
    async fn a_bulb_dims_like_the_real_one() {
        let sim = TplinkSim::bulb().await;
        let reply = tplink_call(
            sim.addr(),
            &json!({LIGHTING: {"transition_light_state": {"on_off": 1, "brightness": 40}}}),
        )
        .await
        .unwrap();
        assert_eq!(
            reply,
            json!({LIGHTING: {"transition_light_state": {"on_off": 1, "brightness": 40, "err_code": 0}}})
        );
        assert_eq!(
            sim.state(),
            DeviceState {
                on: true,
                brightness: 40
            }
        );
        tplink_call(
            sim.addr(),
            &json!({LIGHTING: {"transition_light_state": {"on_off": 0}}}),
        )
        .await
        .unwrap();
        assert_eq!(
            sim.state(),
            DeviceState {
                on: false,
                brightness: 40
            }
        );
        let bad = tplink_call(
            sim.addr(),
            &json!({LIGHTING: {"transition_light_state": {"brightness": 400}}}),
        )
        .await
        .unwrap();
        assert_ne!(bad[LIGHTING]["transition_light_state"]["err_code"], 0);
        assert_eq!(sim.state().brightness, 40);
    }

    #[tokio::test]
    async fn behaviours_err_code_delay_silent_and_close_first() {
        let sim = TplinkSim::plug().await;
        let on: Value = serde_json::from_str(PLUG_ON).unwrap();

        sim.set(Behaviour::ErrCode(1));
        let reply = tplink_call(sim.addr(), &on).await.unwrap();
        assert_eq!(reply["system"]["set_relay_state"]["err_code"], 1);
        assert!(!sim.state().on, "a failed request changes nothing");

        sim.set(Behaviour::Delay(Duration::from_millis(300)));
        let t = Instant::now();
        let reply = tplink_call(sim.addr(), &on).await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(300));
        assert_eq!(reply["system"]["set_relay_state"]["err_code"], 0);
        assert!(sim.state().on);

        sim.set(Behaviour::Silent);
        let mut s = TcpStream::connect(sim.addr()).await.unwrap();
        s.write_all(&frame(&on)).await.unwrap();
        let mut buf = [0u8; 4];
        let r = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
        assert!(r.is_err(), "silent: no answer and no close, got {r:?}");
        sim.wait_requests(3).await;
        drop(s);

        sim.set(Behaviour::CloseFirst(2));
        let before = sim.connections();
        assert!(tplink_call(sim.addr(), &on).await.is_err());
        assert!(tplink_call(sim.addr(), &on).await.is_err());
        assert_eq!(
            tplink_call(sim.addr(), &on).await.unwrap()["system"]["set_relay_state"]["err_code"],
            0
        );
        assert_eq!(sim.connections(), before + 3);
        // Closed connections were never read: 3 earlier requests plus the one answered.
        assert_eq!(sim.requests().len(), 4);
    }

    #[tokio::test]
    async fn a_stopped_address_refuses() {
        let addr = stopped_addr();
        let e = TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test]
    async fn the_http_target_records_gets_and_answers_as_set() {
        let t = HttpTarget::start().await;
        let http = reqwest::Client::new();
        let r = http.get(t.url("/porch/dim%3A40")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(t.paths(), ["/porch/dim:40"]);
        assert_eq!(t.hits()[0].raw, "/porch/dim%3A40");

        t.set("/bad", 500, Duration::ZERO);
        t.set("/slow", 200, Duration::from_millis(300));
        assert_eq!(
            http.get(t.url("/bad/on")).send().await.unwrap().status(),
            500
        );
        assert_eq!(
            http.get(t.url("/porch/on")).send().await.unwrap().status(),
            200
        );
        let start = Instant::now();
        assert_eq!(
            http.get(t.url("/slow/x")).send().await.unwrap().status(),
            200
        );
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert_eq!(
            http.post(t.url("/porch/on")).send().await.unwrap().status(),
            405
        );
        assert_eq!(t.wait_hits(4).await.len(), 4, "POSTs are not recorded");
        assert_eq!(
            t.paths(),
            ["/porch/dim:40", "/bad/on", "/porch/on", "/slow/x"]
        );
    }
}
