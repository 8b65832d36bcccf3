//! The TLS listeners with real clients: `mosquitto_pub` over MQTT/TLS (with the CA, and
//! refused without it), a WebSocket client over TLS, and the errors of a bad configuration.
//! The certificates are the test ones of `tests/data/tls` (see its README).

use std::path::PathBuf;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use iot_broker::{Broker, BrokerError, EmbeddedBroker, EmbeddedConfig, TlsFiles};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use crate::raw::{self, Proto};
use crate::{spawn_broker_with, test_config, within, WAIT};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/tls")
        .join(name)
}

fn tls_config() -> EmbeddedConfig {
    EmbeddedConfig {
        tls_listen: "127.0.0.1:0".into(),
        wss_listen: "127.0.0.1:0".into(),
        tls: Some(TlsFiles::new(data("cert.pem"), data("key.pem"))),
        ..test_config()
    }
}

async fn mosquitto_pub(port: u16, extra: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &port.to_string(), "-t", "tls/1"])
        .args(["-m", "over tls", "-q", "1"])
        .args(extra)
        .output();
    within(WAIT, "mosquitto_pub", run)
        .await
        .expect("run mosquitto_pub")
}

/// `mosquitto_pub --cafile ca.pem` publishes over `tls_listen` (port 0 bound and reported);
/// without the CA (the system's roots) the handshake fails and nothing arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_over_tls_need_the_ca() {
    let b = spawn_broker_with(tls_config()).await;
    let port = b.broker.tls_addr().expect("tls listener").port();
    assert_ne!(port, 0);
    let mut host = b.broker.subscribe("tls/#", 10).await.unwrap();

    let ca = data("ca.pem");
    let out = mosquitto_pub(port, &["--cafile", ca.to_str().unwrap()]).await;
    assert!(out.status.success(), "{out:?}");
    let m = within(WAIT, "the publish over TLS", host.recv())
        .await
        .unwrap();
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("tls/1", &b"over tls"[..])
    );

    let out = mosquitto_pub(port, &["--capath", "/etc/ssl/certs"]).await;
    assert!(!out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("TLS error"), "{text}");
    // Plain MQTT on the TLS port is not MQTT to it either.
    let out = mosquitto_pub(port, &[]).await;
    assert!(!out.status.success(), "{out:?}");
    assert!(host.try_recv().is_none());
    b.stop().await;
}

/// MQTT over WebSocket over TLS: the handshake with the test CA, the `mqtt` subprotocol, a
/// CONNECT and a PUBLISH that reaches a host subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_tls_speaks_mqtt() {
    let b = spawn_broker_with(tls_config()).await;
    let wss = b.broker.wss_addr().expect("wss listener");
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(data("ca.pem")).unwrap())
        .unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(wss).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let mut req = format!("wss://localhost:{}/mqtt", wss.port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (mut wsock, resp) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    assert_eq!(resp.status(), 101);
    let mut host = b.broker.subscribe("wss/#", 10).await.unwrap();
    let connect = raw::connect("wss-client", Proto::V311, 30, None);
    wsock.send(WsMessage::binary(connect)).await.unwrap();
    let frame = within(WAIT, "CONNACK", wsock.next())
        .await
        .unwrap()
        .unwrap();
    let data = frame.into_data();
    assert_eq!((data[0], data[3]), (raw::CONNACK, 0));
    let publish = raw::publish("wss/1", 0, 0, b"hi");
    wsock.send(WsMessage::binary(publish)).await.unwrap();
    let m = within(WAIT, "the publish over wss", host.recv())
        .await
        .unwrap();
    assert_eq!(&m.payload[..], b"hi");
    b.stop().await;
}

async fn start_err(cfg: EmbeddedConfig) -> String {
    let shutdown = CancellationToken::new();
    let err = EmbeddedBroker::start(&cfg, None, shutdown)
        .await
        .unwrap_err();
    err.to_string()
}

/// A TLS listener without a certificate, or with files that cannot be used, stops the start
/// with an error naming the key or the file.
#[tokio::test]
async fn bad_tls_settings_are_refused_by_name() {
    let text = start_err(EmbeddedConfig {
        tls: None,
        wss_listen: String::new(),
        ..tls_config()
    })
    .await;
    assert!(
        text.contains("`broker.tls_listen` is set but there is no certificate"),
        "{text}"
    );
    let text = start_err(EmbeddedConfig {
        tls: Some(TlsFiles::new(data("cert.pem"), data("other-key.pem"))),
        ..tls_config()
    })
    .await;
    assert!(
        text.contains("does not belong") && text.contains("other-key.pem"),
        "{text}"
    );
    let err = EmbeddedConfig {
        tls_listen: "8883".into(),
        ..tls_config()
    }
    .validate()
    .unwrap_err();
    assert!(matches!(
        err,
        BrokerError::ListenAddr {
            key: "broker.tls_listen",
            ..
        }
    ));
}
