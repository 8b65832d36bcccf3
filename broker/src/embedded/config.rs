//! [`EmbeddedConfig`]: the embedded broker's settings, `[broker]` in the controller's config
//! (which flattens it into that section), with their defaults and the one place they are
//! validated ([`EmbeddedConfig::validate`]). Not here: the controller's own `[broker]` keys
//! (`external`, `advertise_*`, `scheme`), which are iotctl's.

use std::net::SocketAddr;
use std::num::NonZeroU16;

use serde::{Deserialize, Serialize};

use crate::BrokerError;

/// Room for the fixed header, topic (up to 64 KiB) and MQTT 5 properties on top of the payload.
const PACKET_HEADER_ROOM_BYTES: usize = 64 * 1024;
/// Largest `max_payload_bytes`: 256 MiB (with the header room it stays far below u32::MAX,
/// rmqtt's packet size type).
const MAX_PAYLOAD_BYTES: usize = 256 * 1024 * 1024;
/// Smallest `max_inflight`: a paho client sends up to 20 QoS 2 messages without waiting, and
/// rmqtt disconnects a client that overflows the window (logged only at debug).
const MIN_INFLIGHT: u16 = 64;
/// Largest `max_topic_levels`: a topic is at most 65,535 bytes, so at most 32,768 levels.
const MAX_TOPIC_LEVELS: usize = 32_768;

/// Settings of the embedded broker (`[broker]` in the controller's config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmbeddedConfig {
    /// Which MQTT implementation serves clients: `native` (the default), this crate's own
    /// core (`broker/src/native/`), or `rmqtt`.
    pub core: BrokerCore,
    /// MQTT over TCP, `host:port`.
    pub listen: String,
    /// MQTT over WebSocket (any path, e.g. `/mqtt`), `host:port`; empty disables it.
    pub ws_listen: String,
    /// Largest application payload accepted, in bytes.
    pub max_payload_bytes: usize,
    /// Unacknowledged QoS 1/2 messages per client and direction.
    pub max_inflight: u16,
    /// Client sessions (connected or persisted); further CONNECTs are refused.
    pub max_sessions: usize,
    /// Messages queued per session beyond the inflight window before the broker drops them.
    pub max_mqueue_len: usize,
    /// Whether clients without a username are accepted.
    pub allow_anonymous: bool,
    /// How long a client publish waits for a full host subscription before it is dropped.
    pub host_send_timeout_ms: u64,
    /// Most levels (`a/b/c` has 3) of a topic filter a client may subscribe to (SUBACK failure
    /// for deeper ones) or of a topic it may publish on (deeper publishes are dropped, counted).
    pub max_topic_levels: usize,
    /// How long a new connection may take to send its CONNECT (and, for WebSocket, its
    /// upgrade) before it is closed.
    pub handshake_timeout_ms: u64,
    /// How long an MQTT 3.1.1 persistent session (clean session 0) is kept while its client
    /// is offline; MQTT 5 clients name their own expiry.
    pub session_expiry_seconds: u64,
    /// How often the `$SYS/broker/...` topics are published (retained), in seconds; 0: never.
    pub sys_interval_seconds: u64,
    /// MQTT 5 topic aliases per connection and direction (the Topic Alias Maximum the broker
    /// announces, and the most it uses towards a client that allows them); 0: none.
    pub max_topic_aliases: u16,
    /// MQTT over TLS, `host:port` (8883 by convention); empty disables it. Needs `tls`.
    pub tls_listen: String,
    /// MQTT over WebSocket over TLS (any path, e.g. `/mqtt`), `host:port`; empty disables it.
    /// Needs `tls`.
    pub wss_listen: String,
    /// The certificate and key of the TLS listeners (`[tls]` of the controller's config, not
    /// a `[broker]` key).
    #[serde(skip)]
    pub tls: Option<crate::tls::TlsFiles>,
}

/// The MQTT implementation of the embedded broker (`broker.core`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerCore {
    /// rmqtt 0.24 with our hooks and listeners (`embedded/`).
    Rmqtt,
    /// Our own connection and session layer (`native/`): sessions own their messages, idle
    /// connections hold no I/O buffer.
    #[default]
    Native,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            core: BrokerCore::Native,
            listen: "127.0.0.1:1883".to_owned(),
            ws_listen: "127.0.0.1:1884".to_owned(),
            max_payload_bytes: 1024 * 1024,
            max_inflight: 128,
            max_sessions: 50_000,
            max_mqueue_len: 1000,
            allow_anonymous: true,
            host_send_timeout_ms: 1000,
            max_topic_levels: 128,
            handshake_timeout_ms: 10_000,
            session_expiry_seconds: 7_200,
            sys_interval_seconds: 10,
            max_topic_aliases: 10,
            tls_listen: String::new(),
            wss_listen: String::new(),
            tls: None,
        }
    }
}

/// The values [`EmbeddedBroker::start`](crate::EmbeddedBroker::start) needs, checked.
#[derive(Debug)]
pub(crate) struct Checked {
    pub listen: SocketAddr,
    pub ws_listen: Option<SocketAddr>,
    pub max_packet_bytes: u32,
    pub inflight: NonZeroU16,
    pub max_topic_levels: usize,
    pub session_expiry: std::time::Duration,
    pub sys_interval: Option<std::time::Duration>,
    pub tls_listen: Option<SocketAddr>,
    pub wss_listen: Option<SocketAddr>,
}

impl Checked {
    /// The certificate and key of the TLS listeners, read and checked, when `tls_listen` or
    /// `wss_listen` is on (`None` otherwise); an error names the key that needs them.
    pub(crate) fn tls_files<'a>(
        &self,
        cfg: &'a EmbeddedConfig,
    ) -> Result<Option<&'a crate::tls::TlsFiles>, BrokerError> {
        let key = match (self.tls_listen, self.wss_listen) {
            (None, None) => return Ok(None),
            (Some(_), _) => "broker.tls_listen",
            (None, Some(_)) => "broker.wss_listen",
        };
        let files = cfg.tls.as_ref().ok_or(BrokerError::NoCertificate { key })?;
        files.check()?;
        Ok(Some(files))
    }
}

impl EmbeddedConfig {
    /// Checks values that parse but cannot work; the error names the key (`broker.<key>`) and
    /// what it allows. [`EmbeddedBroker::start`](crate::EmbeddedBroker::start) checks too, but
    /// a caller should call this before starting anything.
    pub fn validate(&self) -> Result<(), BrokerError> {
        self.checked().map(|_| ())
    }

    pub(crate) fn checked(&self) -> Result<Checked, BrokerError> {
        let listen = parse_addr(&self.listen, "broker.listen")?;
        let ws_listen = optional_addr(&self.ws_listen, "broker.ws_listen")?;
        Ok(Checked {
            listen,
            ws_listen,
            max_packet_bytes: self.max_packet_bytes()?,
            inflight: self.inflight()?,
            max_topic_levels: self.topic_levels()?,
            session_expiry: self.session_expiry()?,
            sys_interval: self.sys_interval()?,
            tls_listen: optional_addr(&self.tls_listen, "broker.tls_listen")?,
            wss_listen: optional_addr(&self.wss_listen, "broker.wss_listen")?,
        })
    }

    /// `session_expiry_seconds`: 0 (not kept) to 4294967295 (MQTT 5's largest, about 136 years).
    pub(super) fn session_expiry(&self) -> Result<std::time::Duration, BrokerError> {
        Some(self.session_expiry_seconds)
            .filter(|s| *s <= u64::from(u32::MAX))
            .map(std::time::Duration::from_secs)
            .ok_or(BrokerError::OutOfRange {
                key: "broker.session_expiry_seconds",
                value: self.session_expiry_seconds,
                min: 0,
                max: u64::from(u32::MAX),
                why: " (MQTT 5's largest session expiry, about 136 years)",
            })
    }

    /// `sys_interval_seconds`: 0 (no `$SYS` topics) to 86400 (a day).
    pub(super) fn sys_interval(&self) -> Result<Option<std::time::Duration>, BrokerError> {
        match self.sys_interval_seconds {
            0 => Ok(None),
            s @ 1..=86_400 => Ok(Some(std::time::Duration::from_secs(s))),
            s => Err(BrokerError::OutOfRange {
                key: "broker.sys_interval_seconds",
                value: s,
                min: 0,
                max: 86_400,
                why: " (0 turns the $SYS topics off)",
            }),
        }
    }

    pub(super) fn topic_levels(&self) -> Result<usize, BrokerError> {
        Some(self.max_topic_levels)
            .filter(|n| (1..=MAX_TOPIC_LEVELS).contains(n))
            .ok_or(BrokerError::OutOfRange {
                key: "broker.max_topic_levels",
                value: self.max_topic_levels as u64,
                min: 1,
                max: MAX_TOPIC_LEVELS as u64,
                why: " (a topic of thousands of levels could exhaust the broker's stack)",
            })
    }

    /// The listener's packet limit: `max_payload_bytes` plus room for the header.
    pub(super) fn max_packet_bytes(&self) -> Result<u32, BrokerError> {
        (1..=MAX_PAYLOAD_BYTES)
            .contains(&self.max_payload_bytes)
            .then(|| u32::try_from(self.max_payload_bytes + PACKET_HEADER_ROOM_BYTES).ok())
            .flatten()
            .ok_or(BrokerError::OutOfRange {
                key: "broker.max_payload_bytes",
                value: self.max_payload_bytes as u64,
                min: 1,
                max: MAX_PAYLOAD_BYTES as u64,
                why: "",
            })
    }

    pub(super) fn inflight(&self) -> Result<NonZeroU16, BrokerError> {
        NonZeroU16::new(self.max_inflight)
            .filter(|n| n.get() >= MIN_INFLIGHT)
            .ok_or(BrokerError::OutOfRange {
                key: "broker.max_inflight",
                value: self.max_inflight.into(),
                min: MIN_INFLIGHT.into(),
                max: u16::MAX.into(),
                why: " (paho clients send up to 20 QoS 2 messages at once, and a client that overflows the window is disconnected)",
            })
    }
}

/// An address, or `None` for "" (the listener is off).
fn optional_addr(addr: &str, key: &'static str) -> Result<Option<SocketAddr>, BrokerError> {
    match addr.trim() {
        "" => Ok(None),
        addr => parse_addr(addr, key).map(Some),
    }
}

fn parse_addr(addr: &str, key: &'static str) -> Result<SocketAddr, BrokerError> {
    addr.parse().map_err(|_| BrokerError::ListenAddr {
        key,
        value: addr.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_key_and_the_range() {
        EmbeddedConfig::default().validate().unwrap();
        let check = |cfg: EmbeddedConfig| cfg.validate().unwrap_err().to_string();
        let zero = EmbeddedConfig {
            max_inflight: 0,
            ..EmbeddedConfig::default()
        };
        let text = check(zero);
        assert!(
            text.contains("`broker.max_inflight` = 0") && text.contains("between 64 and 65535"),
            "{text}"
        );
        let small = EmbeddedConfig {
            max_inflight: 63,
            ..EmbeddedConfig::default()
        };
        assert!(small.validate().is_err());
        for bytes in [0, usize::MAX, MAX_PAYLOAD_BYTES + 1] {
            let text = check(EmbeddedConfig {
                max_payload_bytes: bytes,
                ..EmbeddedConfig::default()
            });
            assert!(
                text.contains("`broker.max_payload_bytes`")
                    && text.contains("between 1 and 268435456"),
                "{text}"
            );
        }
        let text = check(EmbeddedConfig {
            ws_listen: "localhost".into(),
            ..EmbeddedConfig::default()
        });
        assert!(
            text.contains("broker.ws_listen") && text.contains("localhost"),
            "{text}"
        );
        let text = check(EmbeddedConfig {
            session_expiry_seconds: u64::from(u32::MAX) + 1,
            ..EmbeddedConfig::default()
        });
        assert!(
            text.contains("`broker.session_expiry_seconds`")
                && text.contains("between 0 and 4294967295"),
            "{text}"
        );
        let text = check(EmbeddedConfig {
            sys_interval_seconds: u64::MAX,
            ..EmbeddedConfig::default()
        });
        assert!(
            text.contains("`broker.sys_interval_seconds`") && text.contains("between 0 and 86400"),
            "{text}"
        );
        for levels in [0, MAX_TOPIC_LEVELS + 1] {
            let text = check(EmbeddedConfig {
                max_topic_levels: levels,
                ..EmbeddedConfig::default()
            });
            assert!(
                text.contains("`broker.max_topic_levels`") && text.contains("between 1 and 32768"),
                "{text}"
            );
        }
        let off = EmbeddedConfig {
            ws_listen: String::new(),
            ..EmbeddedConfig::default()
        };
        assert_eq!(off.checked().unwrap().ws_listen, None);
    }
}
