#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Rust SDK against a controller serving TLS with `iotctl gencert`'s certificates:
//! registration over HTTPS, the `mqtts` broker of the reply (`broker.advertise_tls`), data
//! routed over it; and the clear error without the CA.
//!
//! The SDK's HTTPS client trusts the system's roots, which rustls-native-certs reads from
//! `SSL_CERT_FILE` when set: this test binary sets it to the gencert CA once, before any
//! client exists (every test here uses the same CA).

mod common;

use std::sync::OnceLock;

use common::*;
use da_sdk::Error;
use iot_tests::tls::{gencert, Certs};
use iot_tests::*;
use serde_json::json;

fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let c = gencert();
        std::env::set_var("SSL_CERT_FILE", &c.ca);
        c
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_over_https_and_pushes_over_mqtts() {
    let certs = certs();
    let app = App::start(AppOptions {
        extra_toml: certs.toml(),
        env: vec![("IOTCTL__BROKER__ADVERTISE_TLS".into(), "true".into())],
        ca_file: Some(certs.ca.clone()),
        ..Default::default()
    })
    .await;
    assert!(app.csm.starts_with("https://"), "{}", app.csm);
    let ca = std::fs::read(&certs.ca).unwrap();
    let da = builder(&app)
        .idf("Dummy_Sensor", ["int"])
        .tls_roots_pem(ca)
        .connect()
        .await
        .unwrap();
    assert!(da.status().is_online());
    let t = data_topic();
    let mut reader = data_reader(&app, &t).await;
    Csm::new(&app, da.id())
        .await
        .connect("idf", "Dummy_Sensor", &t)
        .await;
    da.push("Dummy_Sensor", 1).await.unwrap();
    assert_eq!(take(&mut reader, 1).await, vec![json!([1])]);

    // The broker of the reply is the TLS one: trusting another CA, a clear error.
    let other_ca = std::fs::read(workspace().join("broker/tests/data/tls/ca.pem")).unwrap();
    let err = builder(&app)
        .tls_roots_pem(other_ca)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Broker { broker, reason } if broker.starts_with("mqtts://") && reason.contains("certificate")),
        "{err}"
    );
    da.deregister().await.unwrap();
}
