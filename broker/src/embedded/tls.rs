//! The embedded broker's TLS listeners: MQTT over TLS (`broker.tls_listen`, built by rmqtt) and
//! MQTT over WebSocket over TLS (`broker.wss_listen`, ours: `ws.rs`), from the files of
//! [`EmbeddedConfig::tls`] after [`TlsFiles::check`] has read them (so that a bad file is
//! reported by name before anything is bound), and their bound addresses
//! ([`EmbeddedBroker::tls_addr`], [`EmbeddedBroker::wss_addr`]).
//!
//! Not here: the plain listeners (`mod.rs`); client certificates (rmqtt could ask for them,
//! we do not).

use std::net::SocketAddr;
use std::path::Path;

use rmqtt::net::{Builder, Listener};
use rmqtt::server::MqttServerBuilder;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::config::Checked;
use super::{bind, local_addr, setup, EmbeddedBroker, EmbeddedConfig};
use crate::tls::TlsFiles;
use crate::BrokerError;

/// The bound TLS listeners, before the server (TLS) and the WebSocket bridge (WSS) take them.
pub(super) struct Secure {
    tls: Option<(Listener, SocketAddr)>,
    wss: Option<(TcpListener, SocketAddr, TlsAcceptor)>,
}

/// The addresses the TLS listeners are bound to, `None` when off.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SecureAddrs {
    pub tls: Option<SocketAddr>,
    pub wss: Option<SocketAddr>,
}

/// Binds the TLS listeners `checked` asks for with the settings of `builder`; fails when one
/// is asked for without `cfg.tls`, or when its files cannot be used.
pub(super) fn bind_secure(
    builder: &Builder,
    cfg: &EmbeddedConfig,
    checked: &Checked,
) -> Result<Secure, BrokerError> {
    let mut secure = Secure {
        tls: None,
        wss: None,
    };
    let Some(files) = checked.tls_files(cfg)? else {
        return Ok(secure);
    };
    let builder = with_files(builder.clone(), files)?;
    if let Some(addr) = checked.tls_listen {
        let what = "MQTT over TLS";
        let l = bind(
            builder.clone().name("iotctl/tls").laddr(addr),
            what,
            "broker.tls_listen",
        )?;
        let bound = local_addr(&l, what, "broker.tls_listen")?;
        let l = l.tls().map_err(setup("the TLS listener"))?;
        secure.tls = Some((l, bound));
    }
    if let Some(addr) = checked.wss_listen {
        let what = "MQTT over WebSocket over TLS";
        let (l, bound) = crate::net::bind_tcp(addr, what, "broker.wss_listen")?;
        let config = files.server_config(vec![b"http/1.1".to_vec()])?;
        secure.wss = Some((l, bound, TlsAcceptor::from(config)));
    }
    Ok(secure)
}

impl Secure {
    pub(super) fn addrs(&self) -> SecureAddrs {
        SecureAddrs {
            tls: self.tls.as_ref().map(|(_, a)| *a),
            wss: self.wss.as_ref().map(|(_, a, _)| *a),
        }
    }

    /// The bound `wss_listen` and its TLS acceptor, for the WebSocket bridge (`ws.rs`).
    pub(super) fn take_wss(&mut self) -> Option<(TcpListener, TlsAcceptor)> {
        self.wss.take().map(|(l, _, acceptor)| (l, acceptor))
    }

    /// Hands the MQTT-over-TLS listener to the server (identified by its port, like the
    /// others).
    pub(super) fn add_to(&mut self, mut server: MqttServerBuilder) -> MqttServerBuilder {
        if let Some((l, addr)) = self.tls.take() {
            server = server.listener_by_id(l, addr.port());
        }
        server
    }
}

/// rmqtt reads the files again by path, as UTF-8 strings.
fn with_files(builder: Builder, files: &TlsFiles) -> Result<Builder, BrokerError> {
    let utf8 = |p: &Path| {
        p.to_str().map(str::to_owned).ok_or(BrokerError::Setup {
            what: "the TLS listeners",
            reason: format!("the path {} is not UTF-8", p.display()),
        })
    };
    Ok(builder
        .tls_cert(Some(utf8(&files.cert_file)?))
        .tls_key(Some(utf8(&files.key_file)?)))
}

impl EmbeddedBroker {
    /// The bound MQTT-over-TLS address, if that listener is enabled (`broker.tls_listen`).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.inner.secure.tls
    }

    /// The bound MQTT-over-WebSocket-over-TLS address, if enabled (`broker.wss_listen`).
    /// Any path works (`wss://host:port/mqtt` is the usual).
    pub fn wss_addr(&self) -> Option<SocketAddr> {
        self.inner.secure.wss
    }
}
