//! [`TplinkSim`]: a TP-Link plug or bulb on its local protocol (see the parent module).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
pub(super) const LIGHTING: &str = "smartlife.iot.smartbulb.lightingservice";

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
pub(super) async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
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
