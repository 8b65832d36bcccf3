//! The MQTT connection of one DA: a supervisor task that owns the rumqttc event loop, polls
//! it and forwards what happens to the DA's task (`core.rs`), and nothing else.
//!
//! Every connection gets a fresh `AsyncClient`/`EventLoop` pair and a generation number.
//! rumqttc would otherwise replay requests queued before a connection loss onto the next
//! connection, ahead of our re-subscription and `online`; with a fresh pair the DA's task
//! knows exactly what reached which connection, and events of an old generation are ignored.
//! Between attempts the supervisor waits a jittered backoff (rumqttc has none), and before
//! each reconnect it asks the server whether the registration still stands (`GET /{id}`):
//! after a 404 it registers again (`PUT`) and connects with the new rev and credentials.
//!
//! The DA's task never awaits on rumqttc: it uses the `try_*` calls and keeps its own queue,
//! so the bounded hand-off from this task to it can never deadlock.

use std::sync::Arc;

use bytes::Bytes;
use iot_proto::topics;
use iot_proto::wire::{BrokerUrl, Presence, RegisterRequest, RegisterResponse, Uplink};
use iot_proto::{DaId, QoS, Rev};
use rumqttc::v5::mqttbytes as m5;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{MqttVersion, Options};
use crate::http::Registrar;
use crate::status::Protocol;

/// Capacity of rumqttc's request channel per connection.
const REQUEST_CAPACITY: usize = 256;

/// What the server told us at registration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Registration {
    pub rev: Rev,
    pub name: String,
    pub broker: BrokerUrl,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl From<RegisterResponse> for Registration {
    fn from(r: RegisterResponse) -> Self {
        Self {
            rev: r.rev,
            name: r.name,
            broker: r.url,
            username: r.username,
            password: r.password,
        }
    }
}

impl Registration {
    pub fn broker_addr(&self) -> String {
        format!(
            "{}://{}:{}",
            self.broker.scheme, self.broker.host, self.broker.port
        )
    }
}

/// MQTT 5 properties of a request or reply.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Props {
    pub response_topic: Option<String>,
    pub correlation: Option<Bytes>,
    pub expiry_secs: Option<u32>,
}

/// What a publish was for, so its acknowledgement can be acted upon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tag {
    /// An outbox entry.
    Data(i64),
    Online,
    Offline,
    /// A request of `Da::call`: kept across reconnects until its deadline.
    Call,
    Other,
}

/// A request for the connection, queued by the DA's task.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Out {
    Publish {
        topic: String,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        tag: Tag,
        props: Option<Props>,
        /// Dropped instead of sent after this instant (call requests).
        expires: Option<tokio::time::Instant>,
    },
    /// Filters, and a token to resolve when the broker acknowledges them.
    Subscribe(Vec<(String, QoS)>, Option<u64>),
    Unsubscribe(String),
    Disconnect,
}

/// [`QoS`] as rumqttc's MQTT 3.1.1 type.
fn q4(q: QoS) -> rumqttc::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

/// [`QoS`] as rumqttc's MQTT 5 type.
fn q5(q: QoS) -> m5::QoS {
    match q {
        QoS::AtMostOnce => m5::QoS::AtMostOnce,
        QoS::AtLeastOnce => m5::QoS::AtLeastOnce,
        QoS::ExactlyOnce => m5::QoS::ExactlyOnce,
    }
}

/// The request side of one connection.
#[derive(Debug, Clone)]
pub(crate) enum Link {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl Link {
    /// Hands `out` to rumqttc without waiting; `false` when its queue is full (or the
    /// connection is gone), in which case the caller keeps `out` and tries again later.
    pub fn try_send(&self, out: &Out) -> bool {
        let r = match (self, out) {
            (
                Self::V4(c),
                Out::Publish {
                    topic,
                    payload,
                    qos,
                    retain,
                    ..
                },
            ) => c
                .try_publish(topic.as_str(), q4(*qos), *retain, payload.to_vec())
                .is_ok(),
            (
                Self::V5(c),
                Out::Publish {
                    topic,
                    payload,
                    qos,
                    retain,
                    props,
                    ..
                },
            ) => {
                let r = match props {
                    None => c.try_publish(topic.as_str(), q5(*qos), *retain, payload.clone()),
                    Some(p) => c.try_publish_with_properties(
                        topic.as_str(),
                        q5(*qos),
                        *retain,
                        payload.clone(),
                        m5::v5::PublishProperties {
                            response_topic: p.response_topic.clone(),
                            correlation_data: p.correlation.clone(),
                            message_expiry_interval: p.expiry_secs,
                            ..Default::default()
                        },
                    ),
                };
                r.is_ok()
            }
            (Self::V4(c), Out::Subscribe(filters, _)) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| rumqttc::SubscribeFilter::new(f.clone(), q4(*q))),
                )
                .is_ok(),
            (Self::V5(c), Out::Subscribe(filters, _)) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| m5::v5::Filter::new(f.clone(), q5(*q))),
                )
                .is_ok(),
            (Self::V4(c), Out::Unsubscribe(f)) => c.try_unsubscribe(f.as_str()).is_ok(),
            (Self::V5(c), Out::Unsubscribe(f)) => c.try_unsubscribe(f.as_str()).is_ok(),
            (Self::V4(c), Out::Disconnect) => c.try_disconnect().is_ok(),
            (Self::V5(c), Out::Disconnect) => c.try_disconnect().is_ok(),
        };
        r
    }
}

/// What happened on a connection, reduced to what the DA's task needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NetEvent {
    Publish {
        topic: String,
        payload: Bytes,
        retain: bool,
        props: Option<Props>,
    },
    /// A publish request was written (packet id 0 for QoS 0), in request order.
    OutPublish(u16),
    /// A publish request waits for a free packet id; it is written later (`OutPublish`).
    AwaitAck(u16),
    /// QoS 1 acknowledgement.
    PubAck(u16),
    /// QoS 2 completion.
    PubComp(u16),
    /// A subscribe request was written, in request order.
    OutSubscribe(u16),
    SubAck(u16),
    OutDisconnect,
    /// Some other request was processed: room in rumqttc's queue.
    Progress,
}

/// Input of the DA's task from the supervisor.
#[derive(Debug)]
pub(crate) enum Input {
    /// The server registered us again (it had lost us): new rev, maybe new credentials.
    Registered(Registration),
    Connected {
        gen: u64,
        link: Link,
        protocol: Protocol,
    },
    Net {
        gen: u64,
        ev: NetEvent,
    },
    Disconnected {
        gen: u64,
        error: String,
    },
}

/// A failed poll: its message, and whether it looks like the broker refusing the protocol
/// version (then `Auto` tries the other one).
struct PollError {
    message: String,
    version_refused: bool,
}

enum Polled {
    ConnAck,
    Event(NetEvent),
    Skip,
}

enum Poller {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

impl Poller {
    async fn poll(&mut self) -> Result<Polled, PollError> {
        match self {
            Self::V4(ev) => match ev.poll().await {
                Ok(e) => Ok(map_v4(e)),
                Err(e) => Err(PollError {
                    version_refused: matches!(
                        &e,
                        rumqttc::ConnectionError::ConnectionRefused(
                            rumqttc::ConnectReturnCode::RefusedProtocolVersion
                        )
                    ),
                    message: e.to_string(),
                }),
            },
            Self::V5(ev) => match ev.poll().await {
                Ok(e) => Ok(map_v5(e)),
                Err(e) => Err(PollError {
                    version_refused: v5_refused(&e),
                    message: e.to_string(),
                }),
            },
        }
    }
}

/// A v5 CONNECT answered in a way only a 3.1.1-only broker answers: a refusal code for the
/// version, or a CONNACK that does not parse as v5, or the connection closed before CONNACK.
fn v5_refused(e: &rumqttc::v5::ConnectionError) -> bool {
    use rumqttc::v5::ConnectionError as E;
    use rumqttc::v5::StateError as S;
    match e {
        E::ConnectionRefused(
            m5::v5::ConnectReturnCode::UnsupportedProtocolVersion
            | m5::v5::ConnectReturnCode::RefusedProtocolVersion
            | m5::v5::ConnectReturnCode::ProtocolError
            | m5::v5::ConnectReturnCode::MalformedPacket,
        ) => true,
        E::MqttState(S::ConnFail {
            reason:
                m5::v5::ConnectReturnCode::UnsupportedProtocolVersion
                | m5::v5::ConnectReturnCode::RefusedProtocolVersion,
        }) => true,
        E::MqttState(S::Deserialization(_)) | E::NotConnAck(_) => true,
        E::Io(io) => io.kind() == std::io::ErrorKind::UnexpectedEof,
        _ => false,
    }
}

fn map_v4(e: rumqttc::Event) -> Polled {
    use rumqttc::{Event, Outgoing, Packet};
    match e {
        Event::Incoming(Packet::ConnAck(_)) => Polled::ConnAck,
        Event::Incoming(Packet::Publish(p)) => Polled::Event(NetEvent::Publish {
            topic: p.topic,
            payload: p.payload,
            retain: p.retain,
            props: None,
        }),
        Event::Incoming(Packet::PubAck(a)) => Polled::Event(NetEvent::PubAck(a.pkid)),
        Event::Incoming(Packet::PubComp(c)) => Polled::Event(NetEvent::PubComp(c.pkid)),
        Event::Incoming(Packet::SubAck(s)) => {
            if s.return_codes
                .iter()
                .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
            {
                tracing::warn!("the broker refused a subscription");
            }
            Polled::Event(NetEvent::SubAck(s.pkid))
        }
        Event::Incoming(_) => Polled::Skip,
        Event::Outgoing(Outgoing::Publish(pkid)) => Polled::Event(NetEvent::OutPublish(pkid)),
        Event::Outgoing(Outgoing::AwaitAck(pkid)) => Polled::Event(NetEvent::AwaitAck(pkid)),
        Event::Outgoing(Outgoing::Disconnect) => Polled::Event(NetEvent::OutDisconnect),
        Event::Outgoing(Outgoing::Subscribe(pkid)) => Polled::Event(NetEvent::OutSubscribe(pkid)),
        Event::Outgoing(Outgoing::PingReq | Outgoing::PingResp) => Polled::Skip,
        Event::Outgoing(_) => Polled::Event(NetEvent::Progress),
    }
}

fn map_v5(e: rumqttc::v5::Event) -> Polled {
    use m5::v5::Packet;
    use rumqttc::v5::Event;
    use rumqttc::Outgoing;
    match e {
        Event::Incoming(Packet::ConnAck(_)) => Polled::ConnAck,
        Event::Incoming(Packet::Publish(p)) => {
            let props = p.properties.map(|pp| Props {
                response_topic: pp.response_topic,
                correlation: pp.correlation_data,
                expiry_secs: pp.message_expiry_interval,
            });
            Polled::Event(NetEvent::Publish {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload,
                retain: p.retain,
                props,
            })
        }
        Event::Incoming(Packet::PubAck(a)) => Polled::Event(NetEvent::PubAck(a.pkid)),
        Event::Incoming(Packet::PubComp(c)) => Polled::Event(NetEvent::PubComp(c.pkid)),
        Event::Incoming(Packet::SubAck(s)) => {
            if s.return_codes
                .iter()
                .any(|c| !matches!(c, m5::v5::SubscribeReasonCode::Success(_)))
            {
                tracing::warn!(codes = ?s.return_codes, "the broker refused a subscription");
            }
            Polled::Event(NetEvent::SubAck(s.pkid))
        }
        Event::Incoming(_) => Polled::Skip,
        Event::Outgoing(Outgoing::Publish(pkid)) => Polled::Event(NetEvent::OutPublish(pkid)),
        Event::Outgoing(Outgoing::AwaitAck(pkid)) => Polled::Event(NetEvent::AwaitAck(pkid)),
        Event::Outgoing(Outgoing::Disconnect) => Polled::Event(NetEvent::OutDisconnect),
        Event::Outgoing(Outgoing::Subscribe(pkid)) => Polled::Event(NetEvent::OutSubscribe(pkid)),
        Event::Outgoing(Outgoing::PingReq | Outgoing::PingResp) => Polled::Skip,
        Event::Outgoing(_) => Polled::Event(NetEvent::Progress),
    }
}

/// The supervisor of one DA's connection.
pub(crate) struct Supervisor {
    pub id: DaId,
    /// Stable for the life of the process, so a reconnect takes over our previous session
    /// (and its will fires before we go online again).
    pub client_id: String,
    pub reg: Registration,
    pub registrar: Registrar,
    pub request: Arc<RegisterRequest>,
    pub opts: Arc<Options>,
    pub tx: mpsc::Sender<Input>,
    pub stop: CancellationToken,
}

impl Supervisor {
    pub async fn run(mut self) {
        let mut gen: u64 = 0;
        let mut failures: u32 = 0;
        let mut fixed: Option<Protocol> = match self.opts.mqtt_version {
            MqttVersion::V311 => Some(Protocol::V311),
            MqttVersion::V5 => Some(Protocol::V5),
            MqttVersion::Auto => None,
        };
        let mut protocol = fixed.unwrap_or(Protocol::V5);
        loop {
            if gen > 0 && !self.check_registration().await {
                return;
            }
            gen += 1;
            let (link, mut poller) = match self.build(protocol) {
                Ok(p) => p,
                Err(message) => {
                    // A configuration problem (e.g. TLS roots); report it and retry slowly.
                    if self
                        .tx
                        .send(Input::Disconnected {
                            gen,
                            error: message,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    failures = failures.saturating_add(1);
                    if !self.pause(failures).await {
                        return;
                    }
                    continue;
                }
            };
            let mut connected = false;
            loop {
                let polled = tokio::select! {
                    p = poller.poll() => p,
                    () = self.stop.cancelled() => return,
                };
                let input = match polled {
                    Ok(Polled::ConnAck) => {
                        connected = true;
                        failures = 0;
                        fixed = Some(protocol);
                        Input::Connected {
                            gen,
                            link: link.clone(),
                            protocol,
                        }
                    }
                    Ok(Polled::Event(ev)) => Input::Net { gen, ev },
                    Ok(Polled::Skip) => continue,
                    Err(e) => {
                        if !connected && fixed.is_none() && e.version_refused {
                            protocol = match protocol {
                                Protocol::V5 => Protocol::V311,
                                Protocol::V311 => Protocol::V5,
                            };
                            tracing::info!(
                                da.id = %self.id,
                                error = %e.message,
                                "the broker refused this MQTT version; trying {protocol:?}"
                            );
                        }
                        if self
                            .tx
                            .send(Input::Disconnected {
                                gen,
                                error: e.message,
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                        break;
                    }
                };
                if self.tx.send(input).await.is_err() {
                    return;
                }
            }
            failures = failures.saturating_add(1);
            if !self.pause(failures).await {
                return;
            }
        }
    }

    /// Waits the backoff delay; `false` when stopped meanwhile.
    async fn pause(&self, failures: u32) -> bool {
        let delay = self.opts.backoff.delay(failures);
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = self.stop.cancelled() => false,
        }
    }

    /// Before a reconnect: is our registration still the server's? Registers again when the
    /// server lost it (404) or holds another rev. `false` when stopped or the DA's task is gone.
    async fn check_registration(&mut self) -> bool {
        let current = tokio::select! {
            r = self.registrar.current_rev(&self.id) => r,
            () = self.stop.cancelled() => return false,
        };
        let why = match current {
            Ok(Some(rev)) if rev == self.reg.rev => return true,
            Ok(Some(_)) => "the server holds another revision",
            Ok(None) => "the server no longer knows this DA",
            Err(e) => {
                // The broker may still be reachable: connect with what we have.
                tracing::debug!(da.id = %self.id, error = %e, "cannot check the registration");
                return true;
            }
        };
        let put = tokio::select! {
            r = self.registrar.register(&self.id, &self.request) => r,
            () = self.stop.cancelled() => return false,
        };
        match put {
            Ok(resp) => {
                tracing::info!(da.id = %self.id, rev = %resp.rev, "{why}: registered again");
                self.reg = Registration::from(resp);
                self.tx
                    .send(Input::Registered(self.reg.clone()))
                    .await
                    .is_ok()
            }
            Err(e) => {
                tracing::warn!(da.id = %self.id, error = %e, "{why}, and registering again failed");
                true
            }
        }
    }

    /// A fresh client and event loop for one connection attempt.
    fn build(&self, protocol: Protocol) -> Result<(Link, Poller), String> {
        let reg = &self.reg;
        let will = serde_json::to_vec(&Uplink::presence_json(Presence::Offline, &reg.rev))
            .map_err(|e| e.to_string())?;
        let ctrl_i = topics::ctrl_i(&self.id);
        let tls = match reg.broker.scheme.as_str() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => {
                return Err(format!(
                "the server named a broker with scheme `{other}`; this SDK speaks mqtt and mqtts"
            ))
            }
        };
        let opts = &self.opts;
        match protocol {
            Protocol::V311 => {
                let mut o = rumqttc::MqttOptions::new(
                    self.client_id.clone(),
                    reg.broker.host.clone(),
                    reg.broker.port,
                );
                o.set_keep_alive(opts.keep_alive)
                    .set_clean_session(true)
                    .set_max_packet_size(opts.max_packet_bytes, opts.max_packet_bytes)
                    .set_inflight(inflight(opts))
                    .set_last_will(rumqttc::LastWill::new(
                        ctrl_i,
                        will,
                        rumqttc::QoS::ExactlyOnce,
                        true,
                    ));
                if let Some(u) = &reg.username {
                    o.set_credentials(u.clone(), reg.password.clone().unwrap_or_default());
                }
                if tls {
                    o.set_transport(tls_transport(opts)?);
                }
                let (client, mut ev) = rumqttc::AsyncClient::new(o, REQUEST_CAPACITY);
                ev.network_options.set_tcp_nodelay(true);
                ev.network_options
                    .set_connection_timeout(opts.connect_timeout.as_secs().max(1));
                Ok((Link::V4(client), Poller::V4(Box::new(ev))))
            }
            Protocol::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(
                    self.client_id.clone(),
                    reg.broker.host.clone(),
                    reg.broker.port,
                );
                let mut net = rumqttc::NetworkOptions::new();
                net.set_tcp_nodelay(true);
                net.set_connection_timeout(opts.connect_timeout.as_secs().max(1));
                o.set_keep_alive(opts.keep_alive)
                    .set_clean_start(true)
                    .set_max_packet_size(Some(
                        u32::try_from(opts.max_packet_bytes).unwrap_or(u32::MAX),
                    ))
                    .set_outgoing_inflight_upper_limit(inflight(opts))
                    .set_network_options(net)
                    .set_connection_timeout(opts.connect_timeout.as_secs().max(1))
                    .set_last_will(m5::v5::LastWill::new(
                        ctrl_i,
                        will,
                        m5::QoS::ExactlyOnce,
                        true,
                        None,
                    ));
                if let Some(u) = &reg.username {
                    o.set_credentials(u.clone(), reg.password.clone().unwrap_or_default());
                }
                if tls {
                    o.set_transport(tls_transport(opts)?);
                }
                let (client, ev) = rumqttc::v5::AsyncClient::new(o, REQUEST_CAPACITY);
                Ok((Link::V5(client), Poller::V5(Box::new(ev))))
            }
        }
    }
}

/// rumqttc's in-flight window: room for the data window plus control messages.
fn inflight(opts: &Options) -> u16 {
    u16::try_from(opts.window + 64).unwrap_or(u16::MAX)
}

#[cfg(feature = "tls")]
fn tls_transport(opts: &Options) -> Result<rumqttc::Transport, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    match &opts.tls_roots_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("TLS roots: {e}"))?;
                roots.add(cert).map_err(|e| format!("TLS roots: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A malformed system certificate is skipped, like browsers do.
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err("TLS: no root certificates (install the system's CA bundle, or pass them with `tls_roots_pem`)".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
    ))
}

#[cfg(not(feature = "tls"))]
fn tls_transport(_: &Options) -> Result<rumqttc::Transport, String> {
    Err("the server named an mqtts broker: enable the `tls` feature of da-sdk".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_version_refusals_switch_protocols() {
        use m5::v5::ConnectReturnCode as C;
        use rumqttc::v5::ConnectionError as E;
        assert!(v5_refused(&E::ConnectionRefused(
            C::UnsupportedProtocolVersion
        )));
        assert!(v5_refused(&E::MqttState(
            rumqttc::v5::StateError::ConnFail {
                reason: C::UnsupportedProtocolVersion
            }
        )));
        assert!(v5_refused(&E::Io(std::io::ErrorKind::UnexpectedEof.into())));
        assert!(!v5_refused(&E::Io(
            std::io::ErrorKind::ConnectionRefused.into()
        )));
        assert!(!v5_refused(&E::ConnectionRefused(C::BadUserNamePassword)));
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_needs_root_certificates() {
        let mut opts = Options {
            tls_roots_pem: Some(Vec::new()),
            ..Options::default()
        };
        let e = tls_transport(&opts).map(|_| ()).unwrap_err();
        assert!(e.contains("no root certificates"), "{e}");
        opts.tls_roots_pem =
            Some(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".to_vec());
        assert!(tls_transport(&opts).is_err());
        if std::path::Path::new("/etc/ssl/certs").exists() {
            opts.tls_roots_pem = None;
            assert!(tls_transport(&opts).is_ok(), "the system's roots load");
        }
    }
}
