//! [`BrokerError`]: every way the broker layer fails, one variant per failure, each message
//! saying what was wrong and, where it helps, what to change. Not here: logging (the caller
//! decides whether a failure is worth a log line).

use iot_proto::url::UrlError;

/// Errors of the broker layer.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A listen address in [`EmbeddedConfig`](crate::EmbeddedConfig) is not `ip:port`.
    #[error("`{key}` = \"{value}\" is not an ip:port address (e.g. 127.0.0.1:1883)")]
    ListenAddr { key: &'static str, value: String },
    /// A number in [`EmbeddedConfig`](crate::EmbeddedConfig) outside what works.
    #[error("`{key}` = {value} is out of range: it must be between {min} and {max}{why}")]
    OutOfRange {
        key: &'static str,
        value: u64,
        min: u64,
        max: u64,
        /// Why the bound is there, with a leading separator, or empty.
        why: &'static str,
    },
    #[error("cannot listen on {addr} ({what}): {source}. Is another MQTT broker (e.g. Mosquitto) already using it? Change `{key}` in the config.")]
    Bind {
        what: &'static str,
        key: &'static str,
        addr: String,
        source: std::io::Error,
    },
    /// rmqtt refused to set up a listener or a plugin of the embedded broker.
    #[error("the embedded MQTT broker cannot set up {what}: {reason}")]
    Setup { what: &'static str, reason: String },
    /// A broker url that is not `mqtt://host:port`.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The first connection to the external broker failed.
    #[error("cannot connect to the external MQTT broker at {url}: {error}. Is it running, and are the url and credentials right?")]
    Connect {
        url: String,
        // Boxed: rumqttc's error is large, and every `Result` of this crate would carry its size.
        error: Box<rumqttc::ConnectionError>,
    },
    /// The external broker answered the CONNECT with something other than a CONNACK.
    #[error(
        "the external MQTT broker at {url} answered CONNECT with {event} instead of a CONNACK"
    )]
    Handshake { url: String, event: String },
    #[error("invalid topic filter `{0}`")]
    Filter(String),
    #[error("invalid topic name `{0}`: it must not be empty nor contain `+`, `#` or NUL")]
    Topic(String),
    /// A host publish larger than the broker accepts.
    #[error("payload of {bytes} bytes does not fit `{key}` = {limit}")]
    PayloadTooLarge {
        bytes: usize,
        key: &'static str,
        limit: usize,
    },
    /// A host publish on a topic deeper than the broker accepts.
    #[error("topic of {levels} levels does not fit `{key}` = {limit}")]
    TopicLevels {
        levels: usize,
        key: &'static str,
        limit: usize,
    },
    /// The embedded broker could not route a host publish.
    #[error("publishing to `{topic}` failed: {reason}")]
    Publish { topic: String, reason: String },
    /// The embedded broker could not read its retained messages.
    #[error("reading the retained messages of `{filter}` failed: {reason}")]
    Retained { filter: String, reason: String },
    /// The external connection's request queue stayed full, so a SUBSCRIBE could not be queued.
    #[error("cannot subscribe to `{filter}`: the external broker's request queue stays full")]
    QueueFull { filter: String },
    /// The external broker did not acknowledge a SUBSCRIBE in time.
    #[error("no SUBACK from {url} for `{filter}`")]
    NoSuback { url: String, filter: String },
    #[error("the broker connection is closed")]
    Closed,
    /// A TLS listener is configured without a certificate and key.
    #[error("`{key}` is set but there is no certificate: set `tls.cert_file` and `tls.key_file` (`iotctl gencert DIR` makes a pair to try it out)")]
    NoCertificate { key: &'static str },
    /// The certificate or key of the TLS listeners cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}
