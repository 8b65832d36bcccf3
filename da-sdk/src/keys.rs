//! The keymanager client (docs/sdk.md, "Keymanager client"): [`KeyClient`] asks the
//! controller's keymanager for a secret over MQTT (a request on `iottalk/km/req/<CLIENT>`, the
//! reply on `iottalk/km/res/<CLIENT>`), opens the reply, and retries what may pass later
//! (no reply, `limited`, `sealed`, `replay`) with a new nonce and time.
//!
//! Not here: the formulas (`iot_proto::km`, shared with the server), the server (the CCM's
//! `keys`), the blocking form ([`crate::blocking::KeyClient`]), the TLS transport (`transport`).
//!
//! Each [`KeyClient::get`] runs on an MQTT connection of its own (a unique client id), so one
//! client can be cloned into many tasks; replies on the shared reply topic (other requests,
//! other processes of the same client) are told apart by their nonce. The client's secret `S`
//! is derived once, kept in a buffer wiped on drop, and never printed (`Debug` included).

use std::ffi::OsString;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iot_proto::km::{self, KmReply, KmRequest};
use iot_proto::url::MqttUrl;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS};
use tracing::Instrument as _;
use zeroize::Zeroizing;

use crate::backoff::Backoff;
use crate::config::Options;
use crate::transport::{scheme_is_tls, tls_transport};

/// The file the machine id is read from, unless [`MACHINE_ID_ENV`] is set.
pub const MACHINE_ID_FILE: &str = "/etc/machine-id";
/// The environment variable that, when set, is the machine id.
pub const MACHINE_ID_ENV: &str = "IOTCTL_MACHINE_ID";

/// Retries after the first attempt, by default.
pub const DEFAULT_RETRIES: u32 = 3;
/// How long one attempt waits for its reply (and a connection for its SUBACK), by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait a `limited` reply's `retry_after_ms` can impose.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

const DEFAULT_BACKOFF: Backoff = Backoff {
    min: Duration::from_millis(500),
    max: Duration::from_secs(8),
};
/// The largest MQTT packet accepted: a reply holds up to 64 KiB of value, in base64 and JSON.
const MAX_PACKET_BYTES: usize = 256 * 1024;
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// rumqttc's request channel: one subscription, one publish per attempt, a disconnect.
const REQUEST_CAPACITY: usize = 16;
/// How long a finished `get` waits for its DISCONNECT to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a key could not be had. No message holds the password, `S` or a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key or client name the keymanager cannot have; nothing was sent.
    #[error("invalid name {0:?}: use 1 to 64 ASCII letters, digits, `-`, `_` or `.`")]
    BadName(String),
    /// The client's settings cannot be used (broker url, machine id, password, TLS roots).
    #[error("keymanager client: {0}")]
    Config(String),
    /// No MQTT connection: the broker is unreachable, or refused the credentials or TLS.
    #[error("cannot connect to the MQTT broker: {0}")]
    Connect(String),
    /// The broker refused the subscription to the reply topic (authentication on, and the
    /// MQTT user is neither the app user named like the client nor an admin).
    #[error("the broker refused the subscription to `{topic}`: with authentication on, connect as the app user named like the keymanager client (or as an admin)")]
    NotAllowed { topic: String },
    /// No reply within the per-attempt timeout, on the last attempt.
    #[error("no reply from the keymanager within {timeout_ms} ms: check that the controller runs on this broker")]
    Timeout { timeout_ms: u64 },
    /// The keymanager answered with an error code: `sealed`, `denied`, `clock`, `replay`,
    /// `limited` (with `retry_after_ms`) or `bad_request`.
    #[error("the keymanager refused the request ({code}): {}", explain(code, *retry_after_ms))]
    Refused {
        code: String,
        retry_after_ms: Option<u64>,
    },
    /// A reply with our nonce that does not open: altered, or not meant for this client.
    #[error(
        "the keymanager's reply could not be opened: it was altered, or not meant for this client"
    )]
    Decrypt,
}

impl KeyError {
    /// The keymanager's error code, for [`KeyError::Refused`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

fn explain(code: &str, retry_after_ms: Option<u64>) -> String {
    let why = match code {
        "sealed" => "the key store is sealed; an operator must unseal it (`iotctl key unseal`)",
        "denied" => "unknown client, wrong password or machine id, or no such key granted to it",
        "clock" => "this machine's clock is too far from the controller's; synchronise it",
        "replay" => "a replay? another process of this client asked with a newer time",
        "limited" => "too many requests from this client",
        "bad_request" => "the keymanager could not read the request",
        _ => "an error this client does not know",
    };
    match retry_after_ms {
        Some(ms) => format!("{why}; try again in {ms} ms"),
        None => why.to_owned(),
    }
}

/// This machine's id as the keymanager knows it: `$IOTCTL_MACHINE_ID` when set, else the
/// content of `/etc/machine-id`; surrounding whitespace removed either way (as the controller
/// does when a client is added).
pub fn machine_id() -> Result<String, KeyError> {
    machine_id_from(std::env::var_os(MACHINE_ID_ENV), Path::new(MACHINE_ID_FILE))
}

fn machine_id_from(env: Option<OsString>, file: &Path) -> Result<String, KeyError> {
    let raw = match env {
        Some(v) => v
            .into_string()
            .map_err(|_| KeyError::Config(format!("${MACHINE_ID_ENV} is not UTF-8")))?,
        None => std::fs::read_to_string(file).map_err(|e| {
            let f = file.display();
            KeyError::Config(format!("cannot read {f} ({e}): set ${MACHINE_ID_ENV}"))
        })?,
    };
    match raw.trim() {
        "" => Err(KeyError::Config("the machine id is empty".into())),
        id => Ok(id.to_owned()),
    }
}

/// The host, port and whether TLS, of `mqtt://host[:port]` or `mqtts://host[:port]` (also
/// `tcp://` and `ssl://`, as for a DA's broker); the port defaults to 1883, or 8883 with TLS.
fn parse_broker(url: &str) -> Result<(String, u16, bool), KeyError> {
    let shown = if url.contains('@') {
        "(not shown)"
    } else {
        url
    };
    let bad = || {
        KeyError::Config(format!("invalid broker url `{shown}`: expected mqtt://host:port or mqtts://host:port (credentials go in `credentials`)"))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let tls = scheme_is_tls(scheme).ok_or_else(bad)?;
    let parsed = MqttUrl::parse(&format!("mqtt://{rest}")).map_err(|_| bad())?;
    let explicit_port = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']'));
    let port = if tls && !explicit_port {
        8883
    } else {
        parsed.port
    };
    Ok((parsed.host, port, tls))
}

/// Describes a [`KeyClient`]; [`KeyClientBuilder::build`] checks it and derives the secret.
#[derive(Clone)]
pub struct KeyClientBuilder {
    broker: String,
    client: String,
    password: Zeroizing<String>,
    credentials: Option<(String, Zeroizing<String>)>,
    machine_id: Option<String>,
    retries: u32,
    timeout: Duration,
    backoff: Backoff,
    tls_roots_pem: Option<Vec<u8>>,
}

impl fmt::Debug for KeyClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyClientBuilder")
            .field("client", &self.client)
            .field("username", &self.credentials.as_ref().map(|c| &c.0))
            .field("machine_id", &self.machine_id)
            .field("retries", &self.retries)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl KeyClientBuilder {
    /// MQTT username and password, needed when the controller has authentication on: the
    /// app user named like the keymanager client (or an admin).
    pub fn credentials(mut self, username: impl Into<String>, password: Zeroizing<String>) -> Self {
        self.credentials = Some((username.into(), password));
        self
    }

    /// The machine id the client was added with (default: [`machine_id`]).
    pub fn machine_id(mut self, id: impl Into<String>) -> Self {
        self.machine_id = Some(id.into());
        self
    }

    /// Retries after the first attempt (default 3: at most 4 attempts).
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// How long one attempt waits for its reply, and a connection for its SUBACK (default
    /// 5 s, at least 1 ms).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t.max(Duration::from_millis(1));
        self
    }

    /// Waits between attempts: from `min`, doubling, at most `max` (default 500 ms to 8 s),
    /// each drawn from the upper half; a `limited` reply's `retry_after_ms` is waited at least.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = Backoff { min, max };
        self
    }

    /// Root certificates (PEM) for an `mqtts` broker, instead of the system's roots.
    pub fn tls_roots_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_roots_pem = Some(pem.into());
        self
    }

    /// Checks the settings, reads the machine id (unless given) and derives the secret `S`;
    /// connects to nothing yet.
    pub fn build(self) -> Result<KeyClient, KeyError> {
        if !km::valid_name(&self.client) {
            return Err(bad_name(&self.client));
        }
        if self.password.is_empty() {
            return Err(KeyError::Config("the client's password is empty".into()));
        }
        let (host, port, tls) = parse_broker(&self.broker)?;
        let transport = if tls {
            let opts = Options {
                tls_roots_pem: self.tls_roots_pem,
                ..Options::default()
            };
            tls_transport(&opts).map_err(|e| KeyError::Config(e.to_string()))?
        } else {
            rumqttc::Transport::Tcp
        };
        let mid = match self.machine_id {
            Some(m) => machine_id_from(Some(m.into()), Path::new(""))?,
            None => machine_id()?,
        };
        let secret = km::client_secret(&self.password, &self.client, &mid);
        Ok(KeyClient {
            inner: Arc::new(Inner {
                host,
                port,
                transport,
                credentials: self.credentials,
                req_topic: km::req(&self.client),
                res_topic: km::res(&self.client),
                client: self.client,
                secret,
                retries: self.retries,
                timeout: self.timeout,
                backoff: self.backoff,
            }),
        })
    }
}

fn bad_name(name: &str) -> KeyError {
    KeyError::BadName(name.chars().take(80).collect())
}

/// A keymanager client: [`KeyClient::get`] fetches a key. Clone it freely (one `Arc`).
///
/// ```no_run
/// # async fn run() -> Result<(), da_sdk::KeyError> {
/// use da_sdk::Zeroizing;
/// let keys = da_sdk::KeyClient::builder(
///     "mqtt://127.0.0.1:1883",
///     "backup",
///     Zeroizing::new("the client's password".to_owned()),
/// )
/// .build()?;
/// let db_password = keys.get("db").await?; // Zeroizing<Vec<u8>>, wiped on drop
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KeyClient {
    inner: Arc<Inner>,
}

struct Inner {
    host: String,
    port: u16,
    transport: rumqttc::Transport,
    credentials: Option<(String, Zeroizing<String>)>,
    client: String,
    req_topic: String,
    res_topic: String,
    secret: km::Key,
    retries: u32,
    timeout: Duration,
    backoff: Backoff,
}

impl fmt::Debug for KeyClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("KeyClient")
            .field("broker", &format!("{}:{}", i.host, i.port))
            .field("client", &i.client)
            .field("username", &i.credentials.as_ref().map(|c| &c.0))
            .field("retries", &i.retries)
            .field("timeout", &i.timeout)
            .finish_non_exhaustive()
    }
}

/// How an attempt failed: for good, or worth another attempt after at least some time.
enum Failure {
    Final(KeyError),
    Again(KeyError, Duration),
}

fn again(e: KeyError) -> Failure {
    Failure::Again(e, Duration::ZERO)
}

/// A connection failure: refused credentials and TLS failures are final, the rest transient.
fn connection_failure(e: ConnectionError) -> Failure {
    match e {
        ConnectionError::ConnectionRefused(code) => Failure::Final(KeyError::Connect(format!(
            "the broker refused the connection ({code:?}): check the MQTT username and password"
        ))),
        #[cfg(feature = "tls")]
        ConnectionError::Tls(e) => Failure::Final(KeyError::Connect(format!("TLS: {e}"))),
        other => again(KeyError::Connect(other.to_string())),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An error code as shown: the server's, kept to plain characters.
fn clean_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(32)
        .collect()
}

/// One `get`'s MQTT connection, subscribed to the reply topic.
struct Conn {
    client: AsyncClient,
    events: EventLoop,
}

impl Conn {
    /// Polls until the reply to the last nonce of `sent` arrives on `topic`, or a late success
    /// to an earlier one (an earlier attempt of the same `get`); anything else is skipped
    /// (other requests, other processes of the same client, stale failures).
    async fn reply(&mut self, topic: &str, sent: &[String]) -> Result<KmReply, ConnectionError> {
        loop {
            let Event::Incoming(Packet::Publish(p)) = self.events.poll().await? else {
                continue;
            };
            let r = match serde_json::from_slice::<KmReply>(&p.payload) {
                Ok(r) if p.topic == topic => r,
                _ => continue,
            };
            let Some(i) = sent.iter().position(|n| r.nonce.as_ref() == Some(n)) else {
                continue;
            };
            if i + 1 == sent.len() || r.ok {
                return Ok(r);
            }
        }
    }

    /// Sends DISCONNECT, waiting a moment for it to go out.
    async fn close(mut self) {
        if self.client.try_disconnect().is_err() {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            loop {
                match self.events.poll().await {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
}

impl KeyClient {
    /// A client for keymanager client `client` with its `password`, through the broker at
    /// `broker` (`mqtt://host:port` or `mqtts://host:port`).
    pub fn builder(
        broker: impl Into<String>,
        client: impl Into<String>,
        password: Zeroizing<String>,
    ) -> KeyClientBuilder {
        KeyClientBuilder {
            broker: broker.into(),
            client: client.into(),
            password,
            credentials: None,
            machine_id: None,
            retries: DEFAULT_RETRIES,
            timeout: DEFAULT_TIMEOUT,
            backoff: DEFAULT_BACKOFF,
            tls_roots_pem: None,
        }
    }

    /// The keymanager client name.
    pub fn client(&self) -> &str {
        &self.inner.client
    }

    /// The value of key `name`, in a buffer wiped on drop. Connects, subscribes to the reply
    /// topic, sends the request and opens the reply; on no reply, `limited`, `sealed` or
    /// `replay` it tries again (new nonce and time) up to the retries, after the backoff.
    /// `denied`, `clock`, `bad_request`, a refused connection or subscription, and a reply
    /// that does not open are returned at once. An invalid `name` is refused unsent.
    pub async fn get(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if !km::valid_name(name) {
            return Err(bad_name(name));
        }
        let span = tracing::debug_span!("km_get", km.client = %self.inner.client, km.key = %name);
        self.inner.get(name).instrument(span).await
    }
}

impl Inner {
    async fn get(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let (mut conn, mut sent, mut failures) = (None, Vec::new(), 0u32);
        let result = loop {
            let (e, at_least) = match self.attempt(&mut conn, &mut sent, name).await {
                Ok(v) => break Ok(v),
                Err(Failure::Final(e)) => break Err(e),
                Err(Failure::Again(e, at_least)) => (e, at_least),
            };
            failures += 1;
            if failures > self.retries {
                break Err(e);
            }
            let wait = self
                .backoff
                .delay(failures)
                .max(at_least.min(MAX_RETRY_AFTER));
            tracing::debug!(
                km.attempt = failures,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = %e,
                "keymanager request failed; trying again"
            );
            tokio::time::sleep(wait).await;
        };
        if let Some(c) = conn {
            c.close().await;
        }
        result
    }

    /// One request: connects first when `conn` is `None` (and forgets a connection that
    /// failed), then sends with a fresh nonce and time and waits for the reply.
    async fn attempt(
        &self,
        conn: &mut Option<Conn>,
        sent: &mut Vec<String>,
        name: &str,
    ) -> Result<Zeroizing<Vec<u8>>, Failure> {
        let c = match conn {
            Some(c) => c,
            None => conn.insert(self.connect().await?),
        };
        let nonce: [u8; 16] = rand::random();
        let req = KmRequest::new(&self.secret, &self.client, name, unix_now(), nonce);
        let body = serde_json::to_vec(&req)
            .map_err(|e| Failure::Final(KeyError::Config(format!("encoding a request: {e}"))))?;
        if let Err(e) = c
            .client
            .try_publish(&self.req_topic, QoS::AtLeastOnce, false, body)
        {
            *conn = None;
            return Err(again(KeyError::Connect(e.to_string())));
        }
        sent.push(req.nonce);
        let waited = tokio::time::timeout(self.timeout, c.reply(&self.res_topic, sent)).await;
        match waited {
            Ok(Ok(reply)) => self.open(name, reply),
            Ok(Err(e)) => {
                *conn = None;
                Err(again(KeyError::Connect(format!(
                    "the connection was lost: {e}"
                ))))
            }
            Err(_) => Err(again(KeyError::Timeout {
                timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            })),
        }
    }

    fn options(&self) -> MqttOptions {
        let id = format!("km-{}-{}", self.client, uuid::Uuid::new_v4().simple());
        let mut o = MqttOptions::new(id, self.host.clone(), self.port);
        o.set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
            .set_transport(self.transport.clone());
        if let Some((user, password)) = &self.credentials {
            o.set_credentials(user.clone(), password.as_str());
        }
        o
    }

    /// A connection subscribed to the reply topic, within the timeout. A refused
    /// subscription is final.
    async fn connect(&self) -> Result<Conn, Failure> {
        let (client, mut events) = AsyncClient::new(self.options(), REQUEST_CAPACITY);
        events
            .network_options
            .set_connection_timeout(self.timeout.as_secs().max(1));
        let ready = async {
            while !matches!(
                events.poll().await.map_err(connection_failure)?,
                Event::Incoming(Packet::ConnAck(_))
            ) {}
            client
                .try_subscribe(&self.res_topic, QoS::AtLeastOnce)
                .map_err(|e| again(KeyError::Connect(e.to_string())))?;
            loop {
                if let Event::Incoming(Packet::SubAck(ack)) =
                    events.poll().await.map_err(connection_failure)?
                {
                    let refused = ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                    if refused {
                        return Err(Failure::Final(KeyError::NotAllowed {
                            topic: self.res_topic.clone(),
                        }));
                    }
                    return Ok(());
                }
            }
        };
        match tokio::time::timeout(self.timeout, ready).await {
            Ok(Ok(())) => Ok(Conn { client, events }),
            Ok(Err(f)) => Err(f),
            Err(_) => Err(again(KeyError::Connect(format!(
                "no CONNACK and SUBACK from {}:{} within {} ms",
                self.host,
                self.port,
                self.timeout.as_millis()
            )))),
        }
    }

    /// The value in a reply, or how it failed.
    fn open(&self, name: &str, r: KmReply) -> Result<Zeroizing<Vec<u8>>, Failure> {
        if r.ok {
            let (Some(nonce), Some(iv), Some(value)) =
                (r.nonce.as_deref(), r.iv.as_deref(), r.value.as_deref())
            else {
                return Err(Failure::Final(KeyError::Decrypt));
            };
            return km::decrypt_reply(&self.secret, &self.client, name, nonce, iv, value)
                .map_err(|_| Failure::Final(KeyError::Decrypt));
        }
        let code = r
            .error
            .as_deref()
            .map_or_else(|| "unknown".to_owned(), clean_code);
        let retry_after_ms = r.retry_after_ms;
        let after = match code.as_str() {
            "limited" => Some(Duration::from_millis(retry_after_ms.unwrap_or(0))),
            "sealed" | "replay" => Some(Duration::ZERO),
            _ => None,
        };
        let e = KeyError::Refused {
            code,
            retry_after_ms,
        };
        Err(match after {
            Some(d) => Failure::Again(e, d),
            None => Failure::Final(e),
        })
    }
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
