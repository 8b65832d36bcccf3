//! A fresh rumqttc client and event loop for one connection attempt: MQTT options, the
//! will, credentials, and TLS (rustls with the system's roots or the caller's). Why a
//! fresh pair per attempt is in the `transport` docs. Not here: polling it (`poller`),
//! sending on it (`link`), when to connect (the supervisor). The scheme rule and the TLS
//! transport are shared with the keymanager client (`crate::keys`).

use iot_proto::topics;
use iot_proto::wire::{Presence, Uplink};
use iot_proto::DaId;
use rumqttc::v5::mqttbytes as m5;

use super::events::Registration;
use super::link::Link;
use super::poller::Poller;
use crate::config::Options;
use crate::status::Protocol;

/// Capacity of rumqttc's request channel per connection.
const REQUEST_CAPACITY: usize = 256;

/// Why no client could be built: a configuration problem, reported as the connection's
/// error (`Status::last_error`) and retried after the backoff.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error("the server named a broker with scheme `{0}`; this SDK speaks mqtt and mqtts")]
    Scheme(String),
    /// The will (a JSON presence) did not encode; never expected.
    #[error(transparent)]
    Will(serde_json::Error),
    #[cfg(feature = "tls")]
    #[error("TLS roots: {0}")]
    TlsRootsPem(rustls::pki_types::pem::Error),
    #[cfg(feature = "tls")]
    #[error("TLS roots: {0}")]
    TlsRootRefused(rustls::Error),
    #[cfg(feature = "tls")]
    #[error("TLS: no root certificates (install the system's CA bundle, or pass them with `tls_roots_pem`)")]
    NoTlsRoots,
    #[cfg(feature = "tls")]
    #[error("TLS: {0}")]
    Tls(rustls::Error),
    #[cfg(not(feature = "tls"))]
    #[error("the server named an mqtts broker: enable the `tls` feature of da-sdk")]
    TlsDisabled,
}

/// A fresh client and event loop for one connection attempt of DA `id` (MQTT client id
/// `client_id`) to the broker and with the credentials of `reg`.
pub(super) fn build(
    id: &DaId,
    client_id: &str,
    reg: &Registration,
    opts: &Options,
    protocol: Protocol,
) -> Result<(Link, Poller), BuildError> {
    let will = serde_json::to_vec(&Uplink::presence_json(Presence::Offline, &reg.rev))
        .map_err(BuildError::Will)?;
    let ctrl_i = topics::ctrl_i(id);
    let tls = scheme_is_tls(&reg.broker.scheme)
        .ok_or_else(|| BuildError::Scheme(reg.broker.scheme.clone()))?;
    match protocol {
        Protocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(
                client_id.to_owned(),
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
                client_id.to_owned(),
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

/// Whether a broker scheme means TLS (`mqtts`, `ssl`) or plain TCP (`mqtt`, `tcp`); `None`
/// for any other scheme.
pub(crate) fn scheme_is_tls(scheme: &str) -> Option<bool> {
    match scheme {
        "mqtt" | "tcp" => Some(false),
        "mqtts" | "ssl" => Some(true),
        _ => None,
    }
}

/// rumqttc's in-flight window: room for the data window plus control messages.
fn inflight(opts: &Options) -> u16 {
    u16::try_from(opts.window + 64).unwrap_or(u16::MAX)
}

/// The TLS transport, trusting `opts.tls_roots_pem` or else the system's roots.
#[cfg(feature = "tls")]
pub(crate) fn tls_transport(opts: &Options) -> Result<rumqttc::Transport, BuildError> {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    match &opts.tls_roots_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(BuildError::TlsRootsPem)?;
                roots.add(cert).map_err(BuildError::TlsRootRefused)?;
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
        return Err(BuildError::NoTlsRoots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(BuildError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
    ))
}

#[cfg(not(feature = "tls"))]
pub(crate) fn tls_transport(_: &Options) -> Result<rumqttc::Transport, BuildError> {
    Err(BuildError::TlsDisabled)
}

#[cfg(test)]
mod tests {
    use iot_proto::wire::BrokerUrl;
    use iot_proto::Rev;

    use super::*;

    #[test]
    fn only_mqtt_and_mqtts_brokers_are_spoken() {
        let mut reg = Registration {
            rev: Rev::generate(),
            name: "t".into(),
            broker: BrokerUrl {
                scheme: "ws".into(),
                host: "127.0.0.1".into(),
                port: 1883,
                ws_scheme: "ws".into(),
                ws_port: 8083,
            },
            username: None,
            password: None,
        };
        let opts = Options::default();
        let id = DaId::new_v4();
        let e = build(&id, "c", &reg, &opts, Protocol::V5)
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(&e, BuildError::Scheme(s) if s == "ws"), "{e:?}");
        assert_eq!(
            e.to_string(),
            "the server named a broker with scheme `ws`; this SDK speaks mqtt and mqtts"
        );
        reg.broker.scheme = "mqtt".into();
        for protocol in [Protocol::V311, Protocol::V5] {
            assert!(build(&id, "c", &reg, &opts, protocol).is_ok());
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_needs_root_certificates() {
        let mut opts = Options {
            tls_roots_pem: Some(Vec::new()),
            ..Options::default()
        };
        let e = tls_transport(&opts).map(|_| ()).unwrap_err().to_string();
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
