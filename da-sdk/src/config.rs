//! The builder a program fills in to become a DA ([`DaBuilder`]), and the knobs it sets.
//! Nothing here does I/O: [`DaBuilder::connect`] (in `da.rs`) does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use iot_proto::wire::{Command, Direction, Feature, RegisterRequest};
use iot_proto::{DaId, FeatureName, QoS};
use serde_json::{Map, Value};

use crate::backoff::Backoff;
use crate::error::Error;

/// Which MQTT protocol version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MqttVersion {
    /// MQTT 5 when the broker accepts it, else 3.1.1 (decided at the first connection).
    #[default]
    Auto,
    V311,
    V5,
}

/// Whether to keep trying when the server is unreachable at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retry {
    /// Fail at once with a clear error.
    #[default]
    Never,
    /// Keep trying (with backoff) until it works or the registration is rejected.
    Forever,
    /// Keep trying for at most this long.
    For(Duration),
}

/// What a push does when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// The push fails with [`Error::OutboxFull`].
    #[default]
    Reject,
    /// The oldest undelivered push is dropped (and counted in `Status::outbox_dropped`).
    DropOldest,
}

/// Where pushes wait until the broker has them: in memory, or in an SQLite file that
/// survives a restart of the program (pushes left there are sent after the next start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConfig {
    pub(crate) path: Option<PathBuf>,
    pub(crate) capacity: usize,
    pub(crate) when_full: WhenFull,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self::memory(10_000)
    }
}

impl OutboxConfig {
    /// In memory, at most `capacity` undelivered pushes.
    pub fn memory(capacity: usize) -> Self {
        Self {
            path: None,
            capacity,
            when_full: WhenFull::Reject,
        }
    }

    /// In the SQLite file `path` (created if missing; several DAs may share one file), at most
    /// `capacity` undelivered pushes.
    pub fn sqlite(path: impl Into<PathBuf>, capacity: usize) -> Self {
        Self {
            path: Some(path.into()),
            capacity,
            when_full: WhenFull::Reject,
        }
    }

    /// What a push does when the outbox is full (default: fail).
    pub fn when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }
}

/// The `units` of a feature as registered: any JSON, usually a list of strings (`["dB"]`).
/// Its length is the number of values the feature carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Units(pub Value);

impl From<Value> for Units {
    fn from(v: Value) -> Self {
        Self(v)
    }
}

impl From<&[&str]> for Units {
    fn from(u: &[&str]) -> Self {
        Self(Value::Array(u.iter().map(|s| Value::from(*s)).collect()))
    }
}

impl<const N: usize> From<[&str; N]> for Units {
    fn from(u: [&str; N]) -> Self {
        Self::from(&u[..])
    }
}

impl From<Vec<String>> for Units {
    fn from(u: Vec<String>) -> Self {
        Self(Value::Array(u.into_iter().map(Value::from).collect()))
    }
}

impl From<()> for Units {
    /// `[null]`: one value without a unit (what the Python SDK sends for a bare name).
    fn from(_: ()) -> Self {
        Self(Value::Array(vec![Value::Null]))
    }
}

/// A CONNECT or DISCONNECT the server sent, as shown to [`DaBuilder::on_signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalInfo<'a> {
    pub command: Command,
    pub direction: Direction,
    pub feature: &'a str,
    /// The data topic (`"unused"` in DISCONNECT).
    pub topic: &'a str,
}

/// Decides whether to accept a signal: `Err(reason)` answers the server with an error.
pub type SignalHook = Arc<dyn Fn(&SignalInfo<'_>) -> Result<(), String> + Send + Sync>;

/// Settings shared by the DA's tasks.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub mqtt_version: MqttVersion,
    pub outbox: OutboxConfig,
    pub backoff: Backoff,
    pub retry: Retry,
    pub connect_timeout: Duration,
    pub http_timeout: Duration,
    pub keep_alive: Duration,
    pub push_qos: QoS,
    pub odf_qos: QoS,
    pub resume_timeout: Duration,
    pub call_timeout: Duration,
    pub odf_buffer: usize,
    pub max_handlers: usize,
    pub stop_timeout: Duration,
    pub window: usize,
    pub max_packet_bytes: usize,
    pub tls_roots_pem: Option<Vec<u8>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mqtt_version: MqttVersion::Auto,
            outbox: OutboxConfig::default(),
            backoff: Backoff::default(),
            retry: Retry::Never,
            connect_timeout: Duration::from_secs(10),
            http_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(30),
            push_qos: QoS::AtLeastOnce,
            odf_qos: QoS::AtLeastOnce,
            resume_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(10),
            odf_buffer: 1024,
            max_handlers: 64,
            stop_timeout: Duration::from_secs(5),
            window: 64,
            max_packet_bytes: 1024 * 1024 + 64 * 1024,
            tls_roots_pem: None,
        }
    }
}

/// Describes a DA; [`DaBuilder::connect`] registers it and brings it online.
///
/// ```no_run
/// # async fn run() -> Result<(), da_sdk::Error> {
/// let da = da_sdk::Da::builder("http://127.0.0.1:9992")
///     .model("Dummy_Device")
///     .idf("Dummy_Sensor", ["dB"])
///     .odf("Dummy_Control", ())
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DaBuilder {
    pub(crate) api_url: String,
    pub(crate) id: Option<DaId>,
    pub(crate) name: Option<String>,
    pub(crate) profile: Map<String, Value>,
    pub(crate) idfs: Vec<(String, Value)>,
    pub(crate) odfs: Vec<(String, Value)>,
    pub(crate) opts: Options,
    pub(crate) on_signal: Option<SignalHook>,
}

impl std::fmt::Debug for DaBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaBuilder")
            .field("api_url", &self.api_url)
            .field("id", &self.id)
            .field("name", &self.name)
            .field("profile", &self.profile)
            .field("idfs", &self.idfs)
            .field("odfs", &self.odfs)
            .field("opts", &self.opts)
            .field("on_signal", &self.on_signal.is_some())
            .finish()
    }
}

/// Longest timeout the builder accepts: deadlines are computed as "now + timeout", which
/// the clock cannot represent for durations like `Duration::MAX`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Most requests served at once and most samples buffered per ODF consumer (the async
/// runtime's semaphores and channels refuse anything near `usize::MAX`).
pub const MAX_QUEUE: usize = 1 << 20;

impl Options {
    /// Refuses settings that the MQTT client, the clock or the runtime cannot use, with an
    /// error naming the setting, instead of a panic when the DA starts.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let retry = match self.retry {
            Retry::For(d) => d,
            Retry::Never | Retry::Forever => Duration::ZERO,
        };
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("http_timeout", self.http_timeout),
            ("resume_timeout", self.resume_timeout),
            ("call_timeout", self.call_timeout),
            ("stop_timeout", self.stop_timeout),
            ("retry", retry),
        ] {
            if d > MAX_TIMEOUT {
                return Err(Error::Config(format!(
                    "`{name}` is {d:?}: it may be at most 365 days"
                )));
            }
        }
        let ka = self.keep_alive;
        if ka > Duration::from_secs(u64::from(u16::MAX)) {
            return Err(Error::Config(format!(
                "`keep_alive` is {ka:?}: MQTT allows at most 65535 s"
            )));
        }
        match self.mqtt_version {
            MqttVersion::V311 if !ka.is_zero() && ka < Duration::from_secs(1) => {
                return Err(Error::Config(format!(
                    "`keep_alive` is {ka:?}: use 0 (off) or at least 1 s"
                )))
            }
            MqttVersion::Auto | MqttVersion::V5 if ka < Duration::from_secs(5) => {
                return Err(Error::Config(format!(
                    "`keep_alive` is {ka:?}: with MQTT 5 (or `MqttVersion::Auto`) it must be \
                     at least 5 s; choose `MqttVersion::V311` for less"
                )))
            }
            _ => {}
        }
        for (name, n) in [
            ("odf_buffer", self.odf_buffer),
            ("max_handlers", self.max_handlers),
        ] {
            if n == 0 || n > MAX_QUEUE {
                return Err(Error::Config(format!(
                    "`{name}` is {n}: it must be between 1 and {MAX_QUEUE}"
                )));
            }
        }
        if self.outbox.capacity == 0 {
            return Err(Error::Config(
                "the outbox capacity is 0: it must hold at least one push".into(),
            ));
        }
        Ok(())
    }
}

impl DaBuilder {
    pub(crate) fn new(api_url: impl Into<String>) -> Self {
        Self {
            api_url: api_url.into(),
            id: None,
            name: None,
            profile: Map::new(),
            idfs: Vec::new(),
            odfs: Vec::new(),
            opts: Options::default(),
            on_signal: None,
        }
    }

    /// The DA's id; a random one is generated otherwise. Keep it to come back as the same DA.
    pub fn id(mut self, id: DaId) -> Self {
        self.id = Some(id);
        self
    }

    /// The DA's name; the server picks `NN.<model>` otherwise.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The device model (`profile.model`, required).
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.profile
            .insert("model".into(), Value::String(model.into()));
        self
    }

    /// Another profile key (free-form, e.g. `u_name`); `model` is set with [`Self::model`].
    pub fn profile(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.profile.insert(key.into(), value.into());
        self
    }

    /// Declares an input device feature (data this DA pushes) with its units.
    pub fn idf(mut self, name: impl Into<String>, units: impl Into<Units>) -> Self {
        self.idfs.push((name.into(), units.into().0));
        self
    }

    /// Declares an output device feature (data this DA receives) with its units.
    pub fn odf(mut self, name: impl Into<String>, units: impl Into<Units>) -> Self {
        self.odfs.push((name.into(), units.into().0));
        self
    }

    /// MQTT version (default [`MqttVersion::Auto`]).
    pub fn mqtt_version(mut self, v: MqttVersion) -> Self {
        self.opts.mqtt_version = v;
        self
    }

    /// Where undelivered pushes wait (default: memory, 10,000 entries).
    pub fn outbox(mut self, outbox: OutboxConfig) -> Self {
        self.opts.outbox = outbox;
        self
    }

    /// Delays between reconnect attempts (default 250 ms doubling to 10 s, jittered).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.opts.backoff = Backoff { min, max };
        self
    }

    /// Whether [`Self::connect`] keeps trying while the server is unreachable (default: no).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.opts.retry = retry;
        self
    }

    /// How long [`Self::connect`] waits for the broker after registering, when not retrying
    /// (default 10 s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.opts.connect_timeout = t;
        self
    }

    /// Timeout of each HTTP request to the server (default 10 s).
    pub fn http_timeout(mut self, t: Duration) -> Self {
        self.opts.http_timeout = t;
        self
    }

    /// MQTT keepalive (default 30 s): at least 5 s with MQTT 5 or [`MqttVersion::Auto`],
    /// 0 (off) or at least 1 s with [`MqttVersion::V311`], at most 65535 s.
    pub fn keep_alive(mut self, t: Duration) -> Self {
        self.opts.keep_alive = t;
        self
    }

    /// QoS of pushes (default at least once; the SDK tracks acknowledgements and resends
    /// what the broker did not acknowledge before a connection loss).
    pub fn push_qos(mut self, q: QoS) -> Self {
        self.opts.push_qos = q;
        self
    }

    /// QoS of ODF subscriptions (default at least once).
    pub fn odf_qos(mut self, q: QoS) -> Self {
        self.opts.odf_qos = q;
        self
    }

    /// After a reconnect, pushes wait until the server has re-sent CONNECT for every
    /// connected IDF (it does on every `online`), so that they go to the current data topic;
    /// after this long they go to the topics known before (default 5 s).
    pub fn resume_timeout(mut self, t: Duration) -> Self {
        self.opts.resume_timeout = t;
        self
    }

    /// Default deadline of [`crate::Da::call`] (default 10 s).
    pub fn call_timeout(mut self, t: Duration) -> Self {
        self.opts.call_timeout = t;
        self
    }

    /// How long [`crate::Da::deregister`] and [`crate::Da::shutdown`] wait for the broker to
    /// confirm the offline message before disconnecting anyway (default 5 s).
    pub fn stop_timeout(mut self, t: Duration) -> Self {
        self.opts.stop_timeout = t;
        self
    }

    /// Samples buffered per ODF consumer before new ones are dropped (default 1024).
    pub fn odf_buffer(mut self, n: usize) -> Self {
        self.opts.odf_buffer = n.max(1);
        self
    }

    /// Requests served at once; more are answered `busy` (default 64).
    pub fn max_handlers(mut self, n: usize) -> Self {
        self.opts.max_handlers = n.max(1);
        self
    }

    /// Extra root certificates (PEM) for `mqtts` brokers, instead of the system's roots.
    pub fn tls_roots_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.opts.tls_roots_pem = Some(pem.into());
        self
    }

    /// Called for every CONNECT/DISCONNECT before it is applied; `Err(reason)` refuses it
    /// (the server records the reason). Keep it fast: it runs on the DA's task.
    pub fn on_signal(
        mut self,
        hook: impl Fn(&SignalInfo<'_>) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.on_signal = Some(Arc::new(hook));
        self
    }

    /// The registration body, checked, after the settings ([`Options::check`]).
    pub(crate) fn request(&self) -> Result<RegisterRequest, Error> {
        self.opts.check()?;
        match self.profile.get("model") {
            Some(Value::String(m)) if !m.trim().is_empty() => {}
            _ => {
                return Err(Error::Config(
                    "a device model is required: call `.model(\"...\")`".into(),
                ))
            }
        }
        let feats = |list: &[(String, Value)], what: &str| -> Result<Vec<Feature>, Error> {
            let mut out: Vec<Feature> = Vec::with_capacity(list.len());
            for (name, units) in list {
                let name: FeatureName = name
                    .parse()
                    .map_err(|e| Error::Config(format!("{what} `{name}`: {e}")))?;
                if out.iter().any(|f| f.name == name) {
                    return Err(Error::Config(format!("{what} `{name}` is declared twice")));
                }
                out.push(Feature {
                    name,
                    units: units.clone(),
                });
            }
            Ok(out)
        };
        // A name or profile field with a control character (the server refuses those too)
        // is refused here, before anything is sent, with the server's reason.
        iot_proto::wire::register::refuse_control_chars(self.name.as_deref(), &self.profile)
            .map_err(|e| Error::Config(format!("registration body: {e}")))?;
        Ok(RegisterRequest {
            name: self.name.clone(),
            idf_list: feats(&self.idfs, "IDF")?,
            odf_list: feats(&self.odfs, "ODF")?,
            accept_protos: vec!["mqtt".into()],
            profile: self.profile.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_is_built_and_checked() {
        let b = DaBuilder::new("http://x")
            .model("M")
            .profile("u_name", Value::Null)
            .idf("A", ["dB"])
            .odf("B", ());
        let r = b.request().unwrap();
        assert_eq!(
            r.to_json(),
            json!({"idf_list": [["A", ["dB"]]], "odf_list": [["B", [null]]],
                   "accept_protos": ["mqtt"], "profile": {"model": "M", "u_name": null}})
        );
        let no_model = DaBuilder::new("http://x").idf("A", ());
        assert!(no_model
            .request()
            .unwrap_err()
            .to_string()
            .contains("model"));
        let twice = DaBuilder::new("http://x")
            .model("M")
            .idf("A", ())
            .idf("A", ());
        assert!(twice.request().unwrap_err().to_string().contains("twice"));
        let e = DaBuilder::new("http://x")
            .model("a\nFORGED")
            .request()
            .unwrap_err();
        assert!(
            matches!(&e, Error::Config(m) if m.contains("control characters")),
            "{e:?}"
        );
        let bad = DaBuilder::new("http://x").model("M").odf("", ());
        assert!(bad.request().unwrap_err().to_string().contains("empty"));
    }
}
